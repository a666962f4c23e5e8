// Failover of a cluster (a PostgreSQL primary and its streaming standby) under load:
// kill -9 of the primary, SWITCHOVER from the console, fencing of the old primary and
// FAILBACK, a dead standby, a black-holed primary, and `pgpivot ctl`.
//
// Every test builds its own primary + standby with scripts/lib.sh (pg_start_primary /
// pg_start_standby) under PGPIVOT_TEST_SCRATCH/failover-NAME on ports 61530.. (base
// overridable with PGPIVOT_TEST_FAILOVER_PORT) and removes them at the end. The
// promote_command is a script that logs when it ran (and its PGPIVOT_* environment)
// and promotes, as postgres with `pg_ctl promote -w`, whichever of the pair's data
// directories is currently a standby.
//
// Client load: threads, each with its own libpq connection through pgpivot, looping
// either autocommit INSERTs or BEGIN; INSERT; INSERT; COMMIT into fo_log. Every
// INSERT returns inet_server_port(), so each client knows which server took its
// write; every acknowledged write is remembered and looked for afterwards.
#include <catch2/catch.hpp>

#include "failover_fixture.hpp"

using namespace itest;

// ---------------------------------------------------------------------------

TEST_CASE("failover: kill -9 of the primary under load, clients carry on on the promoted standby",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("kill", port_base(), port_base() + 1);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

  Load load(p, 20, 20);
  load.start();
  sleep_s(2);
  REQUIRE(load.error_count() == 0);

  load.event(pair.standby_port);
  double kill_wall = wall_s();
  pair.kill(pair.primary_dir);
  bool all_moved = load.wait_all_on_target(30);
  double slowest = load.slowest_on_target();
  sleep_s(1);
  load.stop();

  auto runs = pair.promote_runs();
  INFO("promote_command runs: " << runs.size());
  REQUIRE(runs.size() == 1);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  double bound = kThreshold * kInterval + promote_s + 2;
  INFO("promote_command env: " << runs[0].env_line << "; " << runs[0].end_line);
  INFO("promote_command started " << runs[0].start_wall - kill_wall << " s after the kill and took " << promote_s
                                  << " s; the last client wrote on the new primary " << slowest
                                  << " s after the kill (bound " << bound << " s)");
  CHECK(contains_icase(runs[0].env_line, "cluster=main primary=127.0.0.1:" + std::to_string(pair.primary_port) +
                                             " standby=127.0.0.1:" + std::to_string(pair.standby_port)));
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  check_clients(load, 1);
  check_acked_present(load, pair.standby_port);

  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["primary_state"] == "down");
  CHECK(row["failovers"] == "1");
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  INFO("SHOW FAILOVERS: " << ev.message());
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]) << "; errors the clients saw: " << load.error_count());
  CHECK(events[0]["clients_held"] == "40");
  CHECK(events[0]["client_errors"] == std::to_string(load.error_count()));
  CHECK(p.running());
}

TEST_CASE("failover: SWITCHOVER from the console under load causes no client errors", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("switchover", port_base() + 2, port_base() + 3);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

  Load load(p, 20, 20);
  load.start();
  sleep_s(2);

  load.event(pair.standby_port);
  auto t0 = std::chrono::steady_clock::now();
  Result sw = admin_exec(p, "SWITCHOVER main", 60);
  double took = seconds_since(t0);
  INFO("SWITCHOVER main: " << (sw.ok() ? std::string(PQcmdStatus(sw.get())) : sw.message()) << " after " << took
                           << " s");
  CHECK(sw.ok());
  bool all_moved = load.wait_all_on_target(10);
  INFO("last client on the new primary " << load.slowest_on_target() << " s after SWITCHOVER was sent");
  CHECK(all_moved);

  // Repointed: nothing reaches the old primary (still running) any more.
  load.event(pair.standby_port);
  sleep_s(1.5);
  auto ports = load.ports_since_event();
  load.stop();
  INFO("writes in the 1.5 s after the switchover: old primary " << ports[pair.primary_port] << ", new primary "
                                                                 << ports[pair.standby_port]);
  CHECK(ports[pair.primary_port] == 0);
  CHECK(ports[pair.standby_port] > 0);

  check_clients(load, 0);
  check_acked_present(load, pair.standby_port);
  auto runs = pair.promote_runs();
  CHECK(runs.size() == 1);

  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]));
  CHECK(events[0]["client_errors"] == "0");
  CHECK(p.running());
}

// Fencing and failback, for real: after the failover the old primary is started
// again (a diverged, writable primary: exactly what must get no traffic). Then it is
// replaced by what an operator would do: a fresh standby of the new primary, taken
// with pg_basebackup into the old primary's directory and serving on the old
// primary's port, with synchronous replication from the new primary. FAILBACK then
// runs the promote_command (which promotes whichever node is a standby: the fresh
// one), waits until it is writable and moves the clients back, without errors and
// without losing an acknowledged write.
TEST_CASE("failover: the restarted old primary is fenced; FAILBACK to a fresh primary under load", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("failback", port_base() + 4, port_base() + 5);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

  Load load(p, 5, 5);
  load.start();
  sleep_s(1.5);

  // 1. Failover.
  load.event(pair.standby_port);
  pair.kill(pair.primary_dir);
  {
    bool moved = load.wait_all_on_target(30);
    INFO("last client on the new primary " << load.slowest_on_target() << " s after the kill");
    REQUIRE(moved);
  }
  size_t errors_after_failover = load.error_count();

  // 2. Fencing: the old primary comes back as a writable primary.
  pair.start_again(pair.primary_dir);
  Row row = wait_cluster(p, "primary_state", "up", 10);
  {
    INFO("SHOW CLUSTERS after the old primary restarted: " << row_text(row));
    CHECK(row["primary_state"] == "up");
    CHECK(row["active"] == "standby");
  }
  std::string rows_before = node_value(pair.primary_port, "SELECT count(*) FROM fo_log");
  load.event(pair.standby_port);
  long app_backends_seen = 0;
  double fence_end = mono_s() + 3;
  while (mono_s() < fence_end) {
    app_backends_seen += std::atol(
        node_value(pair.primary_port, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'").c_str());
    sleep_s(0.1);
  }
  auto ports = load.ports_since_event();
  std::string rows_after = node_value(pair.primary_port, "SELECT count(*) FROM fo_log");
  {
    INFO("during 3 s with the old primary up again: its app backends seen " << app_backends_seen
         << ", its fo_log rows " << rows_before << " -> " << rows_after << ", client writes there "
         << ports[pair.primary_port] << ", on the new primary " << ports[pair.standby_port]);
    CHECK(app_backends_seen == 0);
    CHECK(rows_before == rows_after);
    CHECK(ports[pair.primary_port] == 0);
    CHECK(ports[pair.standby_port] > 0);
    CHECK(cluster_row(p)["active"] == "standby");
  }

  // 3. The old primary is replaced by a fresh standby of the new primary, same port.
  pair.kill(pair.primary_dir);
  {
    auto r = lib_sh("rm -rf " + sh_quote(pair.primary_dir) + " && pg_start_standby " + sh_quote(pair.primary_dir) +
                    " " + std::to_string(pair.standby_port) + " " + std::to_string(pair.primary_port));
    INFO("lib.sh output:\n" << r.output);
    REQUIRE(r.exit_code == 0);
  }
  PgPair::require_streaming(pair.standby_port, pair.primary_port);
  PgPair::enable_sync_rep(pair.standby_port);
  row = wait_cluster(p, "primary_state", "read-only", 10);
  {
    INFO("SHOW CLUSTERS with a fresh standby at the primary's address: " << row_text(row));
    CHECK(row["primary_state"] == "read-only");
  }

  // 4. FAILBACK under load.
  size_t errors_before_failback = load.error_count();
  load.event(pair.primary_port);
  auto t0 = std::chrono::steady_clock::now();
  Result fb = admin_exec(p, "FAILBACK main", 60);
  double took = seconds_since(t0);
  {
    INFO("FAILBACK main: " << (fb.ok() ? std::string(PQcmdStatus(fb.get())) : fb.message()) << " after " << took
                           << " s");
    CHECK(fb.ok());
  }
  bool back = load.wait_all_on_target(15);
  {
    INFO("last client back on the primary address " << load.slowest_on_target() << " s after FAILBACK was sent");
    CHECK(back);
  }
  load.event(pair.primary_port);
  sleep_s(1);
  ports = load.ports_since_event();
  load.stop();
  INFO("errors: " << errors_after_failover << " by the failover, "
                  << errors_before_failback - errors_after_failover << " while fenced, "
                  << load.error_count() - errors_before_failback << " by the failback");
  CHECK(errors_before_failback == errors_after_failover);
  CHECK(load.error_count() == errors_before_failback);
  CHECK(ports[pair.standby_port] == 0);
  check_clients(load, 1);
  check_acked_present(load, pair.primary_port);
  row = cluster_row(p);
  INFO("SHOW CLUSTERS after FAILBACK: " << row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "2");
  CHECK(pair.promote_runs().size() == 2);
  CHECK(p.running());
}

TEST_CASE("failover: a dead standby leaves the traffic on the primary alone", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("standby-down", port_base() + 6, port_base() + 7);
  pair.start(/*sync_rep=*/false);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");
  check_show_clusters_columns(p);

  Load load(p, 5, 5);
  load.start();
  sleep_s(1);
  load.event(pair.primary_port);
  pair.kill(pair.standby_dir);
  Row row = wait_cluster(p, "standby_state", "down", kThreshold * kInterval + 5);
  sleep_s(1);
  bool all_wrote = load.wait_all_on_target(1);
  auto ports = load.ports_since_event();
  load.stop();

  INFO("SHOW CLUSTERS with the standby down: " << row_text(row));
  CHECK(row["standby_state"] == "down");
  CHECK(row["primary_state"] == "up");
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  INFO("writes on the primary after the standby died: " << ports[pair.primary_port]);
  CHECK(all_wrote);
  check_clients(load, 0);
  CHECK(pair.promote_runs().empty());
  Row later = cluster_row(p);
  INFO("SHOW CLUSTERS at the end: " << row_text(later));
  CHECK(later["active"] == "primary");
  CHECK(p.running());
}

TEST_CASE("failover: a black-holed primary fails over in bounded time; another pool keeps its latency",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("blackhole", port_base() + 8, port_base() + 9);
  pair.start(/*sync_rep=*/false);
  int proxy_port = port_base() + 10;
  BlackHoleProxy proxy(proxy_port, pair.primary_port);
  const double check_timeout = 1;
  PoolerConfig cfg = failover_pooler(pair, 5, proxy_port, check_timeout);
  // An unrelated cluster: the harness' PostgreSQL, no standby.
  cfg.extra_clusters["other"] = "primary = { host = \"127.0.0.1\", port = " + std::to_string(env().pg_port) + " }";
  cfg.extra_databases["otherdb"] = "cluster = \"other\"\ndbname = \"appdb\"";
  Pooler p(cfg);
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

  Conn other(p.conninfo("app", "app", "otherdb"));
  INFO(other.error());
  REQUIRE(other.ok());
  REQUIRE(other.value("SELECT inet_server_port()") == std::to_string(env().pg_port));

  Load load(p, 5, 5);
  load.start();
  sleep_s(1.5);

  // SELECT 1 on the other pool, every 5 ms, while the checks of main hang.
  std::atomic<bool> measuring{true};
  std::vector<double> latencies_ms;
  std::vector<std::string> other_errors;
  std::thread prober([&] {
    while (measuring) {
      auto t = std::chrono::steady_clock::now();
      Result r = other.exec("SELECT 1", 10);
      double ms = seconds_since(t) * 1000;
      if (!r.ok()) other_errors.push_back(r.message());
      latencies_ms.push_back(ms);
      sleep_s(0.005);
    }
  });

  load.event(pair.standby_port);
  double hole_wall = wall_s();
  proxy.blackhole();
  bool swallowed = proxy.swallows_syn(0.5);
  bool all_moved = load.wait_all_on_target(40);
  double slowest = load.slowest_on_target();
  sleep_s(0.5);
  measuring = false;
  prober.join();
  load.stop();

  INFO("the black hole swallows new connections: " << swallowed);
  CHECK(swallowed);
  auto runs = pair.promote_runs();
  REQUIRE(runs.size() == 1);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  // Each failed check takes up to the timeout, and they come every interval.
  double bound = kThreshold * (kInterval + check_timeout) + promote_s + 2;
  INFO("promote_command started " << runs[0].start_wall - hole_wall << " s after the black hole, took " << promote_s
                                  << " s; the last client wrote on the new primary " << slowest
                                  << " s after the black hole (bound " << bound << " s)");
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  check_clients(load, 1);

  std::vector<double> sorted = latencies_ms;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(sorted.size() > 20);
  double p99 = sorted[std::min(sorted.size() - 1, static_cast<size_t>(sorted.size() * 0.99))];
  INFO("other pool during the black hole: " << sorted.size() << " x SELECT 1, median "
                                            << sorted[sorted.size() / 2] << " ms, p99 " << p99 << " ms, max "
                                            << sorted.back() << " ms, errors " << other_errors.size()
                                            << (other_errors.empty() ? "" : ": " + other_errors[0]));
  CHECK(other_errors.empty());
  CHECK(p99 < 50);
  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["primary_state"] == "down");
  CHECK(p.running());
}

TEST_CASE("failover: pgpivot ctl status prints the clusters; ctl failover of an unknown cluster fails clearly",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("ctl", port_base() + 11, port_base() + 12);
  pair.start(/*sync_rep=*/false);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");
  check_show_clusters_columns(p);

  std::string admin = "host=127.0.0.1 port=" + std::to_string(p.port()) +
                      " user=admin password=admin dbname=pgbouncer connect_timeout=5";
  std::string bin = env().pgpivot_bin;

  auto status = run_command(bin + " ctl status --admin " + sh_quote(admin));
  {
    INFO("pgpivot ctl status:\n" << status.output);
    CHECK(status.exit_code == 0);
    CHECK(status.output.find("main") != std::string::npos);
    CHECK(status.output.find(std::to_string(pair.primary_port)) != std::string::npos);
    CHECK(status.output.find(std::to_string(pair.standby_port)) != std::string::npos);
    CHECK(status.output.find("read-only") != std::string::npos);
  }
  auto url = run_command(bin + " ctl status --cluster main --admin " +
                         sh_quote("postgresql://admin:admin@127.0.0.1:" + std::to_string(p.port()) + "/pgbouncer"));
  {
    INFO("pgpivot ctl status --cluster main with a URL:\n" << url.output);
    CHECK(url.exit_code == 0);
    CHECK(url.output.find("main") != std::string::npos);
  }

  auto nosuch = run_command(bin + " ctl failover --cluster nosuch --admin " + sh_quote(admin));
  {
    INFO("pgpivot ctl failover --cluster nosuch:\n" << nosuch.output);
    CHECK(nosuch.exit_code != 0);
    CHECK(nosuch.output.find("nosuch") != std::string::npos);
  }
  auto unreachable = run_command(bin + " ctl status --admin " +
                                 sh_quote("host=127.0.0.1 port=" + std::to_string(pair.primary_port + 100) +
                                          " user=admin password=admin dbname=pgbouncer connect_timeout=3"));
  {
    INFO("pgpivot ctl status against nothing:\n" << unreachable.output);
    CHECK(unreachable.exit_code != 0);
    CHECK(!unreachable.output.empty());
  }
  // Nothing moved.
  Row row = cluster_row(p);
  {
    INFO("SHOW CLUSTERS: " << row_text(row));
    CHECK(row["active"] == "primary");
    CHECK(row["failovers"] == "0");
  }

  // The real commands: FAILOVER now (the promote_command promotes the standby),
  // then FAILBACK and SWITCHOVER between the two (now both writable) nodes.
  Conn client(p.conninfo());
  REQUIRE(client.ok());
  int n = 0;
  for (auto [cmd, active, port] : {std::tuple{"failover", "standby", pair.standby_port},
                                   std::tuple{"failback", "primary", pair.primary_port},
                                   std::tuple{"switchover", "standby", pair.standby_port}}) {
    ++n;
    auto r = run_command(bin + " ctl " + cmd + " --cluster main --admin " + sh_quote(admin));
    row = cluster_row(p);
    INFO("pgpivot ctl " << cmd << " --cluster main:\n" << r.output << "\nSHOW CLUSTERS: " << row_text(row));
    CHECK(r.exit_code == 0);
    CHECK(row["active"] == active);
    CHECK(row["failovers"] == std::to_string(n));
    Result w = client.exec("SELECT inet_server_port()", 30);
    INFO("client after it: " << w.message());
    CHECK(w.value() == std::to_string(port));
  }
  CHECK(pair.promote_runs().size() == 3);
  CHECK(p.running());
}

// Deterministic states at the moment the primary dies, one client each: idle; idle
// inside a transaction; an autocommit statement in flight; a statement in flight
// inside a transaction; a COMMIT in flight (a deferred constraint trigger sleeps in
// it); and, in session mode, an idle client with settings of its own.
TEST_CASE("failover: what a client sees depends on what it was doing when the primary died", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("states", port_base() + 13, port_base() + 14);
  pair.start(/*sync_rep=*/false);
  create_slow_commit_table(pair);
  PoolerConfig cfg = failover_pooler(pair, 10);
  cfg.extra_databases["sessdb"] = "cluster = \"main\"\ndbname = \"appdb\"\npool_mode = \"session\"";
  Pooler p(cfg);
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

  auto connect = [&](const std::string& db = "appdb") {
    auto c = std::make_unique<Conn>(p.conninfo("app", "app", db));
    INFO(c->error());
    REQUIRE(c->ok());
    REQUIRE(c->value("SELECT inet_server_port()") == std::to_string(pair.primary_port));
    return c;
  };
  auto idle = connect();
  auto idle_tx = connect();
  auto stmt = connect();
  auto stmt_tx = connect();
  auto commit = connect();
  auto session = connect("sessdb");

  idle_tx->exec_ok("BEGIN");
  idle_tx->exec_ok("INSERT INTO fo_log VALUES (1, 1, 0, 0)");
  stmt_tx->exec_ok("BEGIN");
  stmt_tx->exec_ok("INSERT INTO fo_log VALUES (2, 1, 0, 0)");
  commit->exec_ok("BEGIN");
  commit->exec_ok("INSERT INTO fo_slow VALUES (1)");
  session->exec_ok("SET application_name = 'fo_session'");
  session->exec_ok("SET TimeZone = 'Asia/Tokyo'");
  stmt->send("SELECT pg_sleep(20)");
  stmt_tx->send("SELECT pg_sleep(20)");
  commit->send("COMMIT");
  sleep_s(0.5);
  pair.kill(pair.primary_dir);
  auto t0 = std::chrono::steady_clock::now();

  Result r_stmt = stmt->next_result(20);
  Result r_stmt_tx = stmt_tx->next_result(20);
  Result r_commit = commit->next_result(20);
  for (Conn* c : {stmt.get(), stmt_tx.get(), commit.get()}) c->next_result(5);  // the end of each query
  {
    INFO("autocommit statement in flight: " << r_stmt.message());
    CHECK(r_stmt.sqlstate() == "40003");
  }
  {
    INFO("statement in flight inside a transaction: " << r_stmt_tx.message());
    CHECK(r_stmt_tx.sqlstate() == "40001");
  }
  {
    INFO("COMMIT in flight: " << r_commit.message());
    CHECK(r_commit.sqlstate() == "40003");
  }
  Result r_idle_tx = idle_tx->exec("INSERT INTO fo_log VALUES (1, 2, 0, 0)", 30);
  {
    INFO("next statement of the client idle in a transaction: " << r_idle_tx.message());
    CHECK(r_idle_tx.sqlstate() == "40001");
  }
  Result r_idle = idle->exec("SELECT inet_server_port()", 30);
  double idle_wait = seconds_since(t0);
  {
    INFO("idle client's next query, " << idle_wait << " s after the kill: " << r_idle.message());
    CHECK(r_idle.ok());
    CHECK(r_idle.value() == std::to_string(pair.standby_port));
  }
  Result r_session = session->exec(
      "SELECT inet_server_port() || ' ' || current_setting('application_name') || ' ' || current_setting('TimeZone')",
      30);
  {
    INFO("idle session-mode client's next query: " << r_session.message());
    CHECK(r_session.ok());
    CHECK(r_session.value() == std::to_string(pair.standby_port) + " fo_session Asia/Tokyo");
  }
  // Every one of them is still connected and works on the new primary, after a
  // ROLLBACK where the pooler says a transaction is still open.
  int n = 0;
  for (Conn* c : {idle.get(), idle_tx.get(), stmt.get(), stmt_tx.get(), commit.get(), session.get()}) {
    ++n;
    INFO("client " << n << " (idle, idle in tx, statement, statement in tx, commit, session)");
    CHECK(PQstatus(c->get()) == CONNECTION_OK);
    if (PQtransactionStatus(c->get()) != PQTRANS_IDLE) {
      Result rb = c->exec("ROLLBACK", 10);
      INFO("ROLLBACK: " << rb.message());
      CHECK(rb.ok());
    }
    Result w = c->exec("INSERT INTO fo_log VALUES (100, " + std::to_string(n) + ", 0, inet_server_port()) RETURNING port", 10);
    INFO("write afterwards: " << w.message());
    CHECK(w.ok());
    CHECK(w.value() == std::to_string(pair.standby_port));
  }
  // Four clients were told 40001/40003; the session-mode and idle ones nothing.
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]));
  CHECK(events[0]["client_errors"] == "4");
  CHECK(events[0]["clients_held"] == "6");
  CHECK(p.running());
}
