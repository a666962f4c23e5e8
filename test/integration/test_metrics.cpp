// The stats endpoint (stats_listen), /metrics: the Prometheus text format, checked
// with `promtool check metrics` and against SHOW POOLS / SHOW STATS (at rest and
// under pgbench load); and hostile HTTP clients (bad requests, slowloris, too many
// connections) that must not stall the pooler. The /stats page and a failover are in
// test_metrics_stats.cpp; the helpers both use in metrics_fixture.hpp.
//
// Needs /usr/bin/promtool (Debian package prometheus); scripts/lib.sh installs it.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "metrics_fixture.hpp"

TEST_CASE("metrics: /metrics passes promtool and matches SHOW POOLS and SHOW STATS, at rest and under load",
          "[metrics]") {
  if (skip_for_pgbouncer()) return;
  int hport = free_port();
  Pooler p(stats_pooler(hport, 3));
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());

  // A fixed picture: 3 clients hold the 3 servers in open transactions, 2 wait for
  // one, 1 is connected and idle.
  std::vector<std::unique_ptr<Conn>> holders, waiters;
  for (int i = 0; i < 3; i++) {
    holders.push_back(std::make_unique<Conn>(p.conninfo()));
    REQUIRE(holders.back()->ok());
    holders.back()->exec_ok("BEGIN");
    holders.back()->exec_ok("SELECT 1");
  }
  for (int i = 0; i < 2; i++) {
    waiters.push_back(std::make_unique<Conn>(p.conninfo()));
    REQUIRE(waiters.back()->ok());
    waiters.back()->send("SELECT 2");
  }
  Conn idle(p.conninfo());
  REQUIRE(idle.ok());
  REQUIRE(wait_for([&] { return find_row(show(admin, "POOLS"), "user", "app")["cl_waiting"] == "2"; }, 10));
  sleep_s(0.3);  // so that maxwait is clearly above 0

  auto pools = show(admin, "POOLS");
  Scrape s = scrape(hport);
  INFO("/metrics:\n" << s.reply.body);
  REQUIRE(s.reply.status == 200);
  CHECK(header(s.reply, "Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(std::atoi(header(s.reply, "Content-Length").c_str()) == static_cast<int>(s.reply.body.size()));
  check_promtool(s.reply.body, "the pooler at rest");

  Row app = find_row(pools, "user", "app");
  INFO("SHOW POOLS appdb/app: " << row_text(app));
  CHECK(app["cl_active"] == "4");
  CHECK(app["cl_waiting"] == "2");
  CHECK(app["sv_active"] == "3");
  // Every pool SHOW POOLS lists (the console's own included), every column.
  for (const Row& row : pools) {
    for (auto [col, metric] : kPoolColumns) {
      std::string key = pool_key(metric, row.at("database"), row.at("user"));
      INFO(key << " vs SHOW POOLS " << col << " in " << row_text(row));
      CHECK(mval(s.metrics, key) == row.at(col));
    }
    double show_wait = std::atof(row.at("maxwait").c_str()) + std::atof(row.at("maxwait_us").c_str()) / 1e6;
    double metric_wait = mnum(s.metrics, pool_key("pgpivot_pool_maxwait_seconds", row.at("database"), row.at("user")));
    INFO("maxwait: SHOW POOLS " << show_wait << " s, metric " << metric_wait << " s");
    CHECK(metric_wait >= show_wait);
    CHECK(metric_wait < show_wait + 1);
  }
  CHECK(mnum(s.metrics, pool_key("pgpivot_pool_maxwait_seconds", "appdb", "app")) >= 0.3);
  CHECK(mval(s.metrics, pool_key("pgpivot_pool_size", "appdb", "app")) == "3");
  CHECK(mval(s.metrics, "pgpivot_database_current_connections{database=\"appdb\"}") == "3");
  CHECK(mval(s.metrics, "pgpivot_failovers_total{cluster=\"main\"}") == "0");
  CHECK(mval(s.metrics, "pgpivot_cluster_node_active{cluster=\"main\",node=\"primary\"}") == "1");
  CHECK(mval(s.metrics, "pgpivot_cluster_mode{cluster=\"main\",mode=\"normal\"}") == "1");

  for (auto& h : holders) h->exec_ok("COMMIT");
  for (auto& w : waiters) {
    Result r = w->next_result(10);
    CHECK(r.ok());
    while (w->next_result(5).get()) {
    }
  }
  holders.clear();
  waiters.clear();
  idle.finish();

  // Under load: pgbench's 20 clients on 3 servers. Whatever moment a scrape catches,
  // the clients of the pool add up to 20 and the servers to 3, as in SHOW POOLS;
  // counters never go down; every scrape passes promtool.
  std::atomic<bool> bench_done{false};
  CommandResult bench;
  double bench_start = mono_s();
  std::thread t([&] {
    bench = run_pgbench(p, "-n -S -c 20 -j 2 -T 6");
    bench_done = true;
  });
  int scrapes = 0, full = 0;
  std::string seen;  // time:clients of each scrape
  double last_xacts = 0;
  // promtool runs after pgbench: run_command's fflush(nullptr) would wait for the
  // pgbench thread's popen stream.
  std::string under_load;
  while (!bench_done) {
    Scrape ls = scrape(hport);
    REQUIRE(ls.reply.status == 200);
    scrapes++;
    double cl = mnum(ls.metrics, pool_key("pgpivot_pool_client_active", "appdb", "app")) +
                mnum(ls.metrics, pool_key("pgpivot_pool_client_waiting", "appdb", "app"));
    double xacts = mnum(ls.metrics, "pgpivot_stats_xact_count_total{database=\"appdb\"}");
    CHECK(xacts >= last_xacts);
    last_xacts = xacts;
    // Away from pgbench's start (servers still being opened) and end (clients leaving).
    double at = mono_s() - bench_start;
    seen += " " + std::to_string(at).substr(0, 4) + ":" + std::to_string(int(cl));
    if (cl == 20 && at > 1 && at < 4.5) {
      full++;
      double sv = 0;
      for (auto [col, metric] : kPoolColumns)
        if (std::string(col).rfind("sv_", 0) == 0) sv += mnum(ls.metrics, pool_key(metric, "appdb", "app"));
      CHECK(sv == 3);
      auto row = find_row(show(admin, "POOLS"), "user", "app");
      INFO("SHOW POOLS under load: " << row_text(row));
      int show_cl = std::atoi(row["cl_active"].c_str()) + std::atoi(row["cl_waiting"].c_str());
      int show_sv = 0;
      for (const char* col : {"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"})
        show_sv += std::atoi(row[col].c_str());
      CHECK(show_cl == 20);
      CHECK(show_sv == 3);
      if (under_load.empty()) under_load = ls.reply.body;
    }
    sleep_s(0.1);
  }
  t.join();
  INFO("pgbench:\n" << bench.output);
  REQUIRE(bench.exit_code == 0);
  INFO(scrapes << " scrapes during the run, " << full << " with all 20 clients connected:" << seen);
  CHECK(full >= 5);
  REQUIRE(!under_load.empty());
  check_promtool(under_load, "the pooler under pgbench load");

  // At rest again: the counters equal SHOW STATS' totals exactly (times in µs there, s here).
  sleep_s(0.3);
  auto stats = show(admin, "STATS");
  Scrape after = scrape(hport);
  Row st = find_row(stats, "database", "appdb");
  INFO("SHOW STATS appdb: " << row_text(st));
  REQUIRE(!st.empty());
  CHECK(std::atoll(st["total_xact_count"].c_str()) > 100);
  const std::pair<const char*, const char*> counters[] = {
      {"total_xact_count", "pgpivot_stats_xact_count_total"},
      {"total_query_count", "pgpivot_stats_query_count_total"},
      {"total_server_assignment_count", "pgpivot_stats_server_assignment_count_total"},
      {"total_received", "pgpivot_stats_received_bytes_total"},
      {"total_sent", "pgpivot_stats_sent_bytes_total"},
      {"total_client_login_count", "pgpivot_stats_client_login_count_total"},
      {"total_bind_count", "pgpivot_stats_bind_count_total"},
  };
  for (auto [col, metric] : counters) {
    INFO(metric << " vs SHOW STATS " << col);
    CHECK(mval(after.metrics, std::string(metric) + "{database=\"appdb\"}") == st[col]);
  }
  for (auto [col, metric] : {std::pair{"total_xact_time", "pgpivot_stats_xact_time_seconds_total"},
                             {"total_query_time", "pgpivot_stats_query_time_seconds_total"},
                             {"total_wait_time", "pgpivot_stats_wait_time_seconds_total"}}) {
    double secs = mnum(after.metrics, std::string(metric) + "{database=\"appdb\"}");
    INFO(metric << " = " << secs << " vs SHOW STATS " << col << " = " << st[col] << " us");
    CHECK(std::llround(secs * 1e6) == std::atoll(st[col].c_str()));
  }
  check_promtool(after.reply.body, "the pooler after the load");
  CHECK(p.running());
}

TEST_CASE("metrics: bad requests get 4xx; slow, silent and surplus HTTP clients do not stall the pooler",
          "[metrics]") {
  if (skip_for_pgbouncer()) return;
  int hport = free_port();
  Pooler p(stats_pooler(hport, 3));
  Conn c(p.conninfo());
  REQUIRE(c.ok());

  struct Case {
    const char* what;
    std::string request;
    int status;
  };
  const Case cases[] = {
      {"POST /metrics", "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405},
      {"HEAD /stats", "HEAD /stats HTTP/1.1\r\n\r\n", 405},
      {"DELETE /stats", "DELETE /stats HTTP/1.0\r\n\r\n", 405},
      {"GET /", "GET / HTTP/1.1\r\n\r\n", 404},
      {"GET /metrics/x", "GET /metrics/x HTTP/1.1\r\n\r\n", 404},
      {"GET /../etc/passwd", "GET /../etc/passwd HTTP/1.1\r\n\r\n", 404},
      {"a TLS ClientHello", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), 400},
      {"a PostgreSQL startup packet", std::string("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8), 400},
      {"HTTP/0.9", "GET /metrics\r\n\r\n", 400},
      {"a lower-case method", "get /metrics HTTP/1.1\r\n\r\n", 400},
      {"a header without a colon", "GET /metrics HTTP/1.1\r\nnonsense\r\n\r\n", 400},
      {"a NUL in the head", std::string("GET /metrics HTTP/1.1\r\nX: a") + '\0' + "b\r\n\r\n", 400},
      {"a relative target", "GET metrics HTTP/1.1\r\n\r\n", 400},
      {"9 KB of headers", "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n", 431},
      {"a query string", "GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200},
      {"HTTP/1.0 and the absolute form", "GET http://127.0.0.1/stats HTTP/1.0\r\n\r\n", 200},
  };
  for (const auto& k : cases) {
    HttpReply r = http_raw(hport, k.request, 5);
    INFO(k.what << ": " << r.head);
    CHECK(r.status == k.status);
    CHECK(r.closed);  // one response, then the connection is closed
    CHECK(r.seconds < 3);
    if (k.status == 405) CHECK(header(r, "Allow") == "GET");
  }

  // 64 slowloris connections (a request line, then nothing) and one that dribbles a
  // byte every 200 ms: the pooler serves SQL as before, the connection beyond the
  // cap is refused, and every one of them is answered 408 after the 5 s read timeout.
  const int kCap = 64;
  sleep_s(0.5);  // the connections above are all closed on the server side too
  std::vector<int> slow;
  for (int i = 0; i < kCap; i++) {
    int fd = connect_tcp(hport);
    REQUIRE(fd >= 0);
    REQUIRE(send_all_fd(fd, "GET /metrics HTTP/1.1\r\n"));
    slow.push_back(fd);
  }
  double t_slow = mono_s();
  sleep_s(0.3);
  {
    HttpReply extra = http_raw(hport, "GET /metrics HTTP/1.1\r\n\r\n", 3);
    INFO("connection 65: " << extra.head);
    CHECK(extra.closed);
    CHECK(extra.status != 200);  // 503, or reset before it could be read
    if (extra.status) CHECK(extra.status == 503);
  }
  for (int i = 0; i < 5; i++) {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(c.value("SELECT " + std::to_string(i)) == std::to_string(i));
    CHECK(seconds_since(t0) < 0.5);
  }
  {
    Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
    REQUIRE(admin.ok());
    CHECK(admin.exec("SHOW POOLS", 5).ok());
  }
  for (int fd : slow) {
    HttpReply r = read_reply(fd, 10 - (mono_s() - t_slow));
    ::close(fd);
    INFO("slowloris connection: " << r.head << " after " << mono_s() - t_slow << " s");
    CHECK(r.status == 408);
    CHECK(r.closed);
  }
  double took = mono_s() - t_slow;
  CHECK(took > 4.5);
  CHECK(took < 8);

  {
    int fd = connect_tcp(hport);
    REQUIRE(fd >= 0);
    std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(200, 'z') + "\r\n\r\n";
    double t0 = mono_s();
    bool refused = false;
    for (char ch : req) {
      if (!send_all_fd(fd, std::string(1, ch))) {
        refused = true;
        break;
      }
      pollfd pf{fd, POLLIN, 0};
      if (::poll(&pf, 1, 200) > 0) break;  // the server answered (or closed)
    }
    HttpReply r = read_reply(fd, 5);
    ::close(fd);
    INFO("dribbling client: " << r.head << (refused ? " (send failed)" : ""));
    CHECK(r.status == 408);
    CHECK(mono_s() - t0 < 7);
  }

  // Clients that send a request and never read: the pooler does not care.
  std::vector<int> deaf;
  for (int i = 0; i < 20; i++) {
    int fd = connect_tcp(hport);
    REQUIRE(fd >= 0);
    int small = 1024;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    send_all_fd(fd, "GET /stats HTTP/1.1\r\n\r\n");
    deaf.push_back(fd);
  }
  CHECK(c.value("SELECT 'still fine'") == "still fine");
  HttpReply ok = http_get(hport, "/metrics");
  CHECK(ok.status == 200);
  for (int fd : deaf) ::close(fd);
  CHECK(http_get(hport, "/stats").status == 200);
  CHECK(p.running());
}
