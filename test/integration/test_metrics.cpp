// The stats endpoint (stats_listen): /metrics in the Prometheus text format, checked
// with `promtool check metrics` and against SHOW POOLS / SHOW STATS / SHOW CLUSTERS
// (at rest and under pgbench load); the /stats page, rendered by headless Chromium;
// hostile HTTP clients (bad requests, slowloris, too many connections) that must not
// stall the pooler; and a failover (primary + standby from scripts/lib.sh, kill -9 of
// the primary) showing up in both.
//
// Needs /usr/bin/promtool (Debian package prometheus) and /usr/bin/chromium (package
// chromium); scripts/lib.sh installs both. The screenshots are kept in
// PGPIVOT_TEST_SCRATCH/metrics-*.png.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;

namespace {

double mono_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string read_text(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

// ---------------------------------------------------------------------------
// A raw HTTP client

struct HttpReply {
  int status = 0;  // 0: no status line arrived
  std::string head, body;
  bool closed = false;  // the server closed the connection (EOF or reset)
  double seconds = 0;   // from sending until the close (or the deadline)
};

// Reads until the server closes the connection or `timeout_s` passes.
HttpReply read_reply(int fd, double timeout_s) {
  HttpReply r;
  std::string all;
  double t0 = mono_s(), deadline = t0 + timeout_s;
  char buf[16384];
  for (;;) {
    double left = deadline - mono_s();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (pr <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    all.append(buf, static_cast<size_t>(n));
  }
  r.seconds = mono_s() - t0;
  size_t sep = all.find("\r\n\r\n");
  r.head = all.substr(0, sep);
  if (sep != std::string::npos) r.body = all.substr(sep + 4);
  if (all.rfind("HTTP/1.1 ", 0) == 0 && all.size() >= 12) r.status = std::atoi(all.substr(9, 3).c_str());
  return r;
}

HttpReply http_raw(int port, const std::string& request, double timeout_s = 10) {
  int fd = connect_tcp(port);
  if (fd < 0) return {};
  send_all_fd(fd, request);
  HttpReply r = read_reply(fd, timeout_s);
  ::close(fd);
  return r;
}

HttpReply http_get(int port, const std::string& path) {
  return http_raw(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pgpivot-itest\r\n\r\n");
}

std::string header(const HttpReply& r, const std::string& name) {
  std::istringstream in(r.head);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > name.size() && contains_icase(line.substr(0, name.size() + 1), name + ":"))
      return line.substr(line.find(':') + 2);
  }
  return "";
}

// ---------------------------------------------------------------------------
// Metrics

// "name{labels}" -> value, as the exposition has them.
using Metrics = std::map<std::string, std::string>;

Metrics parse_metrics(const std::string& text) {
  Metrics m;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    m[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return m;
}

std::string pool_key(const std::string& name, const std::string& db, const std::string& user) {
  return name + "{database=\"" + db + "\",user=\"" + user + "\"}";
}

// The metric's value; "<missing>" when the series is absent.
std::string mval(const Metrics& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "<missing>" : it->second;
}

double mnum(const Metrics& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : std::atof(it->second.c_str());
}

struct Scrape {
  HttpReply reply;
  Metrics metrics;
};

Scrape scrape(int port) {
  Scrape s;
  s.reply = http_get(port, "/metrics");
  s.metrics = parse_metrics(s.reply.body);
  return s;
}

// `promtool check metrics` on an exposition: exit status 0 and no lint findings.
void check_promtool(const std::string& text, const std::string& what) {
  INFO("promtool (package prometheus) must be installed: ./scripts/test installs it");
  REQUIRE(::access("/usr/bin/promtool", X_OK) == 0);
  static int n = 0;
  std::string path = env().scratch + "/metrics-promtool-" + std::to_string(::getpid()) + "-" + std::to_string(++n) + ".txt";
  write_text(path, text);
  auto r = run_command("/usr/bin/promtool check metrics < " + sh_quote(path));
  INFO("promtool check metrics on " << what << " (" << path << "):\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find_first_not_of(" \n") == std::string::npos);
  if (r.exit_code == 0) ::unlink(path.c_str());
}

// ---------------------------------------------------------------------------
// The admin console

using Row = std::map<std::string, std::string>;

std::vector<Row> rows_of(const Result& r) {
  std::vector<Row> out;
  if (!r.get()) return out;
  for (int i = 0; i < r.rows(); ++i) {
    Row row;
    for (int j = 0; j < PQnfields(r.get()); ++j) row[PQfname(r.get(), j)] = r.value(i, j);
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<Row> show(Conn& admin, const std::string& what) {
  Result r = admin.exec("SHOW " + what, 10);
  INFO("SHOW " << what << ": " << r.message());
  REQUIRE(r.ok());
  return rows_of(r);
}

Row find_row(const std::vector<Row>& rows, const std::string& key, const std::string& value) {
  for (const auto& r : rows)
    if (r.count(key) && r.at(key) == value) return r;
  return {};
}

std::string row_text(const Row& row) {
  std::string s;
  for (const auto& [k, v] : row) s += (s.empty() ? "" : ", ") + k + "=" + v;
  return "{" + s + "}";
}

PoolerConfig stats_pooler(int http_port, int pool_size = 3) {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = pool_size;
  cfg.extra["stats_listen"] = "\"127.0.0.1:" + std::to_string(http_port) + "\"";
  return cfg;
}

bool skip_for_pgbouncer() {
  if (!env().use_pgbouncer) return false;
  WARN("stats_listen is pgpivot's own: skipped against PgBouncer");
  return true;
}

// SHOW POOLS' columns and the metric that mirrors each.
const std::pair<const char*, const char*> kPoolColumns[] = {
    {"cl_active", "pgpivot_pool_client_active"}, {"cl_waiting", "pgpivot_pool_client_waiting"},
    {"sv_active", "pgpivot_pool_server_active"}, {"sv_idle", "pgpivot_pool_server_idle"},
    {"sv_used", "pgpivot_pool_server_used"},     {"sv_tested", "pgpivot_pool_server_tested"},
    {"sv_login", "pgpivot_pool_server_login"},
};

// ---------------------------------------------------------------------------
// Headless Chromium

struct Png {
  bool ok = false;
  size_t bytes = 0;
  unsigned width = 0, height = 0;
  std::string output;  // chromium's
};

Png screenshot(const std::string& url, const std::string& png_path) {
  Png p;
  INFO("chromium (package chromium) must be installed: ./scripts/test installs it");
  REQUIRE(::access("/usr/bin/chromium", X_OK) == 0);
  std::string profile = png_path + ".profile";
  run_command("rm -rf " + sh_quote(profile) + " " + sh_quote(png_path));
  ::mkdir(profile.c_str(), 0700);
  auto r = run_command("timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic "
                       "--no-first-run --disable-background-networking --disable-component-update --disable-sync "
                       "--user-data-dir=" + sh_quote(profile) + " --screenshot=" + sh_quote(png_path) +
                       " --window-size=1280,900 " + sh_quote(url));
  p.output = r.output;
  run_command("rm -rf " + sh_quote(profile));
  std::string data = read_text(png_path);
  p.bytes = data.size();
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (data.size() >= 24 && std::memcmp(data.data(), sig, 8) == 0 && data.compare(12, 4, "IHDR") == 0) {
    auto be32 = [&](size_t off) {
      const auto* u = reinterpret_cast<const unsigned char*>(data.data() + off);
      return (unsigned(u[0]) << 24) | (unsigned(u[1]) << 16) | (unsigned(u[2]) << 8) | unsigned(u[3]);
    };
    p.width = be32(16);
    p.height = be32(20);
    p.ok = true;
  }
  return p;
}

void check_screenshot(const Png& png, const std::string& path) {
  INFO("chromium output:\n" << png.output);
  INFO("screenshot " << path << ": " << png.bytes << " bytes, " << png.width << "x" << png.height);
  REQUIRE(png.ok);
  CHECK(png.width == 1280);
  CHECK(png.height == 900);
  // A blank 1280x900 page compresses to a few KB; tables and text take far more.
  CHECK(png.bytes > 20000);
}

// The <tr ...> element of the page whose opening tag contains `marker`.
std::string html_row(const std::string& html, const std::string& marker) {
  size_t at = html.find(marker);
  if (at == std::string::npos) return "";
  size_t start = html.rfind("<tr", at);
  size_t end = html.find("</tr>", at);
  if (start == std::string::npos || end == std::string::npos) return "";
  return html.substr(start, end + 5 - start);
}

// The page has no way to load anything from elsewhere.
void check_self_contained(const std::string& html) {
  for (const char* bad : {"<script", "<link", "<img", "<iframe", "src=", "url(", "@import", "http://", "https://"}) {
    INFO("the page contains " << bad);
    CHECK(html.find(bad) == std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// A primary and its streaming standby (scripts/lib.sh), as in test_failover.cpp.

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

CommandResult lib_sh(const std::string& script) {
  return run_command("bash -c " + sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") + " && " + script));
}

std::string pg_ctl(const std::string& args) { return "runuser -u postgres -- " + kPgBin + "/pg_ctl " + args; }

std::string node_value(int port, const std::string& sql) {
  Conn c("host=127.0.0.1 port=" + std::to_string(port) + " dbname=appdb user=postgres connect_timeout=5", 5);
  if (!c.ok()) return "";
  Result r = c.exec(sql, 10);
  return r.ok() ? r.value() : "";
}

class PgPair {
 public:
  PgPair(int primary_port, int standby_port) : primary_port(primary_port), standby_port(standby_port) {
    std::string root = env().scratch;
    if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0)
      root = "/tmp/pgpivot-metrics-tests";
    ::mkdir(root.c_str(), 0755);
    base = root + "/metrics-failover";
    primary_dir = base + "/primary";
    standby_dir = base + "/standby";
    stop_all();
    run_command("rm -rf " + sh_quote(base));
    ::mkdir(base.c_str(), 0755);
  }
  ~PgPair() {
    stop_all();
    if (!g_current_test_failed) run_command("rm -rf " + sh_quote(base));
  }
  PgPair(const PgPair&) = delete;
  PgPair& operator=(const PgPair&) = delete;

  void start() {
    auto r = lib_sh("pg_start_primary " + sh_quote(primary_dir) + " " + std::to_string(primary_port) +
                    " && pg_start_standby " + sh_quote(standby_dir) + " " + std::to_string(primary_port) + " " +
                    std::to_string(standby_port));
    INFO("lib.sh output:\n" << r.output);
    REQUIRE(r.exit_code == 0);
    std::string last;
    bool streaming = wait_for([&] {
      last = node_value(primary_port, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'");
      return last == "1";
    }, 20);
    INFO("streaming standbys: " << last);
    REQUIRE(streaming);
  }

  // promote_command: promotes whichever node is a standby.
  std::string promote_script() {
    std::string path = base + "/promote.sh";
    std::ofstream out(path);
    out << "#!/bin/sh\nrc=0\n"
        << "for d in " << sh_quote(primary_dir) << " " << sh_quote(standby_dir) << "; do\n"
        << "  if [ -f \"$d/standby.signal\" ] && [ -f \"$d/postmaster.pid\" ]; then\n"
        << "    runuser -u postgres -- " << kPgBin << "/pg_ctl promote -w -D \"$d\" >>" << sh_quote(base + "/promote.log")
        << " 2>&1 || rc=$?\n"
        << "  fi\ndone\nexit $rc\n";
    out.close();
    ::chmod(path.c_str(), 0755);
    return path;
  }

  void kill_primary() {
    auto r = run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(primary_dir)));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }

  void stop_all() {
    for (const auto& d : {primary_dir, standby_dir})
      if (file_exists(d + "/postmaster.pid")) run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(d)));
  }

  int primary_port, standby_port;
  std::string base, primary_dir, standby_dir;
};

int failover_port_base() {
  const char* v = std::getenv("PGPIVOT_TEST_METRICS_PORT");
  return v && *v ? std::atoi(v) : 61570;
}

}  // namespace

// ---------------------------------------------------------------------------

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

TEST_CASE("metrics: the /stats page shows the pools and renders in headless Chromium", "[metrics]") {
  if (skip_for_pgbouncer()) return;
  int hport = free_port();
  Pooler p(stats_pooler(hport, 4));
  Conn a(p.conninfo()), b(p.conninfo());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  a.exec_ok("BEGIN");
  a.exec_ok("SELECT 1");
  b.exec_ok("SELECT 1");
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Row app = find_row(show(admin, "POOLS"), "user", "app");
  INFO("SHOW POOLS appdb/app: " << row_text(app));

  HttpReply r = http_get(hport, "/stats");
  INFO("/stats:\n" << r.head << "\n\n" << r.body);
  REQUIRE(r.status == 200);
  CHECK(header(r, "Content-Type") == "text/html; charset=utf-8");
  CHECK(header(r, "Content-Security-Policy").find("default-src 'none'") != std::string::npos);
  const std::string& html = r.body;
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<meta http-equiv=\"refresh\" content=\"5\">") != std::string::npos);
  check_self_contained(html);
  CHECK(html.find("<h2>Pools</h2>") != std::string::npos);
  CHECK(html.find("<h2>Clusters</h2>") != std::string::npos);
  CHECK(html.find("<h2>Recent failovers</h2>") != std::string::npos);
  // The pool rows, with SHOW POOLS' numbers: cl_active, cl_waiting, sv_active, sv_idle.
  std::string row = html_row(html, "data-pool=\"appdb/app\"");
  INFO("appdb/app row: " << row);
  CHECK(row.find("<td class=\"t\">appdb</td><td class=\"t\">app</td><td class=\"t\">transaction</td><td>" +
                 app["cl_active"] + "</td><td>" + app["cl_waiting"] + "</td><td>" + app["sv_active"] + "</td><td>" +
                 app["sv_idle"] + "</td>") != std::string::npos);
  CHECK(app["cl_active"] == "2");
  CHECK(app["sv_active"] == "1");
  CHECK(!html_row(html, "data-pool=\"pgbouncer/pgbouncer\"").empty());
  CHECK(html_row(html, "data-cluster=\"main\"").find("127.0.0.1:" + std::to_string(env().pg_port)) !=
        std::string::npos);
  CHECK(html.find("no failovers since pgpivot started") != std::string::npos);

  std::string png = env().scratch + "/metrics-stats.png";
  Png shot = screenshot("http://127.0.0.1:" + std::to_string(hport) + "/stats", png);
  check_screenshot(shot, png);
  a.exec_ok("COMMIT");
  CHECK(p.running());
}

// The text of each <td> of an HTML table row.
std::vector<std::string> td_texts(const std::string& row) {
  std::vector<std::string> out;
  for (size_t at = row.find("<td"); at != std::string::npos; at = row.find("<td", at + 1)) {
    size_t open = row.find('>', at), close = row.find("</td>", at);
    if (open == std::string::npos || close == std::string::npos) break;
    out.push_back(row.substr(open + 1, close - open - 1));
  }
  return out;
}

// Issue 18: /stats added each worker's average times (0.75 ms on the page against
// 355 us in SHOW STATS_AVERAGES under the same pgbench with workers = 2). One stats
// model now serves both: the page's averages are SHOW STATS_AVERAGES' own.
TEST_CASE("metrics: /stats averages equal SHOW STATS_AVERAGES with two workers", "[metrics][workers]") {
  if (skip_for_pgbouncer()) return;
  int hport = free_port();
  PoolerConfig cfg = stats_pooler(hport, 4);
  cfg.extra["workers"] = "2";
  cfg.extra["stats_period"] = "2";
  Pooler p(cfg);
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  std::atomic<bool> bench_done{false};
  CommandResult bench;
  std::thread t([&] {
    bench = run_pgbench(p, "-n -S -c 8 -j 2 -T 9");
    bench_done = true;
  });
  // Two full periods of load, then compare while the averages stand still (a SHOW
  // before and after the page read that agree).
  sleep_s(4.5);
  std::string page_row, show_xact, show_query, show_rate;
  bool same = false;
  for (int i = 0; i < 20 && !bench_done && !same; i++) {
    Row before = find_row(show(admin, "STATS_AVERAGES"), "database", "appdb");
    HttpReply r = http_get(hport, "/stats");
    Row after = find_row(show(admin, "STATS_AVERAGES"), "database", "appdb");
    REQUIRE(r.status == 200);
    page_row = html_row(r.body, "<tr class=\"stats\"><td class=\"t\">appdb</td>");
    show_xact = after["xact_time"];
    show_query = after["query_time"];
    show_rate = after["xact_count"];
    same = before["xact_time"] == after["xact_time"] && before["xact_count"] == after["xact_count"];
    if (!same) sleep_s(0.2);
  }
  t.join();
  INFO("pgbench:\n" << bench.output);
  REQUIRE(bench.exit_code == 0);
  REQUIRE(same);
  INFO("/stats row: " << page_row << "\nSHOW STATS_AVERAGES: xact_time " << show_xact << " us, query_time "
                      << show_query << " us, " << show_rate << " xacts/s");
  auto cells = td_texts(page_row);
  REQUIRE(cells.size() == 11);
  REQUIRE(std::atoll(show_rate.c_str()) > 100);
  // Columns: database, transactions, queries, xacts/s, queries/s, avg xact (ms), avg query (ms), ...
  char want_xact[32], want_query[32];
  std::snprintf(want_xact, sizeof want_xact, "%.2f", std::atof(show_xact.c_str()) / 1000.0);
  std::snprintf(want_query, sizeof want_query, "%.2f", std::atof(show_query.c_str()) / 1000.0);
  CHECK(cells[3] == show_rate);
  CHECK(cells[5] == want_xact);
  CHECK(cells[6] == want_query);
  // And SHOW's average is a real one: no more than pgbench's own latency, which adds
  // the network and the wait for a server to it.
  double latency_ms = 0;
  if (auto at = bench.output.find("latency average = "); at != std::string::npos)
    latency_ms = std::atof(bench.output.c_str() + at + 18);
  REQUIRE(latency_ms > 0);
  CHECK(std::atof(show_xact.c_str()) / 1000.0 <= latency_ms);
  CHECK(p.running());
}

TEST_CASE("metrics: a failover shows up in /metrics and on /stats", "[metrics]") {
  if (skip_for_pgbouncer()) return;
  int base = failover_port_base();
  PgPair pair(base, base + 1);
  pair.start();
  int hport = free_port();
  PoolerConfig cfg = stats_pooler(hport, 5);
  cfg.main_cluster = "primary = { host = \"127.0.0.1\", port = " + std::to_string(pair.primary_port) + " }\n" +
                     "standby = { host = \"127.0.0.1\", port = " + std::to_string(pair.standby_port) + " }";
  cfg.failover = "health_check_interval = 0.5\nhealth_check_timeout = 2\nfailure_threshold = 3\n"
                 "promote_command = \"" + pair.promote_script() + "\"\nfailover_timeout = 30";
  Pooler p(cfg);
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());

  const std::string up_primary = "pgpivot_cluster_node_up{cluster=\"main\",node=\"primary\",state=\"up\"}";
  const std::string ro_standby = "pgpivot_cluster_node_up{cluster=\"main\",node=\"standby\",state=\"read-only\"}";
  Scrape before;
  bool healthy = wait_for([&] {
    before = scrape(hport);
    return mval(before.metrics, up_primary) == "1" && mval(before.metrics, ro_standby) == "1";
  }, 15);
  INFO("/metrics before:\n" << before.reply.body);
  REQUIRE(healthy);
  check_promtool(before.reply.body, "a cluster with a standby");
  CHECK(mval(before.metrics, "pgpivot_failovers_total{cluster=\"main\"}") == "0");
  CHECK(mval(before.metrics, "pgpivot_cluster_node_active{cluster=\"main\",node=\"standby\"}") == "0");
  CHECK(mnum(before.metrics, "pgpivot_cluster_health_check_duration_seconds{cluster=\"main\",node=\"standby\"}") > 0);
  {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT inet_server_port()") == std::to_string(pair.primary_port));
  }

  pair.kill_primary();
  Row cl;
  bool moved = wait_for([&] {
    cl = find_row(show(admin, "CLUSTERS"), "name", "main");
    return cl["failovers"] == "1" && cl["mode"] == "normal";
  }, 30, 0.2);
  INFO("SHOW CLUSTERS: " << row_text(cl));
  REQUIRE(moved);
  {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT inet_server_port()") == std::to_string(pair.standby_port));
  }
  // The promoted standby answers as writable at the next health checks.
  Scrape after;
  bool settled = wait_for([&] {
    after = scrape(hport);
    return mval(after.metrics, "pgpivot_cluster_node_up{cluster=\"main\",node=\"standby\",state=\"up\"}") == "1";
  }, 10);
  cl = find_row(show(admin, "CLUSTERS"), "name", "main");
  INFO("SHOW CLUSTERS: " << row_text(cl));
  INFO("/metrics after:\n" << after.reply.body);
  CHECK(settled);
  check_promtool(after.reply.body, "a cluster after a failover");
  CHECK(cl["active"] == "standby");
  CHECK(mval(after.metrics, "pgpivot_failovers_total{cluster=\"main\"}") == cl["failovers"]);
  CHECK(mval(after.metrics, "pgpivot_cluster_node_up{cluster=\"main\",node=\"primary\",state=\"" +
                                cl["primary_state"] + "\"}") == "0");
  CHECK(cl["primary_state"] == "down");
  CHECK(mval(after.metrics, "pgpivot_cluster_node_active{cluster=\"main\",node=\"standby\"}") == "1");
  CHECK(mval(after.metrics, "pgpivot_cluster_node_active{cluster=\"main\",node=\"primary\"}") == "0");
  double dur = mnum(after.metrics, "pgpivot_last_failover_duration_seconds{cluster=\"main\"}");
  CHECK(std::llround(dur * 1000) == std::atoll(cl["last_failover_ms"].c_str()));
  CHECK(dur > 0);
  double ts = mnum(after.metrics, "pgpivot_last_failover_timestamp_seconds{cluster=\"main\"}");
  CHECK(std::fabs(ts - double(std::time(nullptr))) < 120);

  auto events = show(admin, "FAILOVERS");
  REQUIRE(events.size() == 1);
  INFO("SHOW FAILOVERS: " << row_text(events[0]));
  HttpReply page = http_get(hport, "/stats");
  INFO("/stats:\n" << page.body);
  REQUIRE(page.status == 200);
  std::string ev = html_row(page.body, "class=\"failover\"");
  CHECK(ev.find("<td class=\"t\">main</td><td class=\"t\">failover</td><td class=\"t\">" + events[0]["started"] +
                "</td><td class=\"t\">standby</td><td class=\"t\">ok</td>") != std::string::npos);
  std::string crow = html_row(page.body, "data-cluster=\"main\"");
  INFO("cluster row: " << crow);
  CHECK(crow.find("<td class=\"t\">standby</td>") != std::string::npos);  // active
  CHECK(crow.find("<span class=\"b down\">down</span>") != std::string::npos);
  CHECK(crow.find("<td>1</td>") != std::string::npos);  // failovers
  CHECK(page.body.find("no failovers since pgpivot started") == std::string::npos);
  check_self_contained(page.body);

  std::string png = env().scratch + "/metrics-failover.png";
  check_screenshot(screenshot("http://127.0.0.1:" + std::to_string(hport) + "/stats", png), png);
  CHECK(p.running());
}
