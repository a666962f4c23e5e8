// The stats endpoint (stats_listen), /stats: the page shows the pools and renders in
// headless Chromium, its averages equal SHOW STATS_AVERAGES with two workers, and a
// failover (primary + standby from scripts/lib.sh, kill -9 of the primary) shows up
// in /metrics (against SHOW CLUSTERS) and on /stats. /metrics itself and hostile HTTP
// clients are in test_metrics.cpp; the helpers both use in metrics_fixture.hpp.
//
// Needs /usr/bin/promtool (Debian package prometheus) and /usr/bin/chromium (package
// chromium); scripts/lib.sh installs both. The screenshots are kept in
// PGPIVOT_TEST_SCRATCH/metrics-*.png.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "metrics_fixture.hpp"

namespace {

std::string read_text(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
  return fixture_port("PGPIVOT_TEST_METRICS_PORT", 61600);  // 61570 is the frozen failover pair
}

}  // namespace

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
