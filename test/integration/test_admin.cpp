// The admin console: the virtual databases "pgbouncer" and "pgpivot", who may open
// them, the SHOW commands with live values, and the control commands (PAUSE,
// RESUME, KILL, RELOAD, SET, SHUTDOWN, ...) and their signal equivalents.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

std::string admin_conninfo(const Pooler& p, const std::string& db = "pgbouncer") {
  return p.conninfo("admin", "admin", db);
}

long long to_ll(const std::string& s) { return std::atoll(s.c_str()); }

// Polls `cond` every 50 ms until it holds or `seconds` pass.
bool eventually(const std::function<bool()>& cond, double seconds = 5) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    if (cond()) return true;
    if (seconds_since(t0) > seconds) return false;
    sleep_s(0.05);
  }
}

// The local port of a client's socket: the "port" SHOW CLIENTS reports for it.
int local_port(const Conn& c) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(PQsocket(c.get()), reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
  return ntohs(a.sin_port);
}

// Sends a query that should stay unanswered for `hold_s` (PAUSE, SUSPEND ...).
void expect_held(Conn& c, const std::string& sql, double hold_s = 0.7) {
  c.send(sql);
  bool timed_out = false;
  Result r = c.next_result(hold_s, &timed_out);
  INFO("\"" << sql << "\" answered while it should wait: " << r.message());
  REQUIRE(timed_out);
}

// Collects the rest of a query sent earlier; the first result must be OK.
Result finish_query(Conn& c, double timeout_s = 5) {
  Result r = c.next_result(timeout_s);
  Result end = c.next_result(timeout_s);
  INFO("unexpected extra result after the query");
  CHECK(end.get() == nullptr);
  return r;
}

}  // namespace

TEST_CASE("the console answers on pgbouncer and pgpivot; keywords are case-insensitive", "[admin]") {
  Pooler p;
  for (std::string db : {"pgbouncer", "pgpivot"}) {
    Conn admin(admin_conninfo(p, db));
    INFO("console database " << db << ": " << admin.error());
    REQUIRE(admin.ok());
    std::string version = admin.value("SHOW VERSION");
    INFO("SHOW VERSION: " << version);
    CHECK(std::regex_match(version, std::regex(R"(pgpivot \d+\.\d+\.\d+)")));
    CHECK(admin.value("show version;") == version);
    CHECK(admin.value("  Show Version ;  ") == version);
    Result pools = admin.exec("sHoW pOoLs;");
    INFO(pools.message());
    CHECK(pools.ok());
  }

  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  for (std::string bad : {"FROBNICATE", "SHOW NONSENSE", "PAUS"}) {
    Result r = admin.exec(bad);
    INFO(bad << " -> " << r.message());
    CHECK(r.status() == PGRES_FATAL_ERROR);
    CHECK(contains_icase(r.message(), "SHOW HELP"));
  }
  // The console is still usable after errors.
  CHECK(admin.exec("SHOW STATE").ok());

  // SHOW HELP answers with notices listing the commands.
  std::string notices;
  PQsetNoticeProcessor(
      admin.get(), [](void* arg, const char* msg) { *static_cast<std::string*>(arg) += msg; }, &notices);
  Result help = admin.exec("SHOW HELP");
  INFO("SHOW HELP: " << help.message() << "\nnotices:\n" << notices);
  CHECK(help.ok());
  for (std::string word : {"SHOW", "PAUSE", "RESUME", "RELOAD", "KILL", "SHUTDOWN", "SET", "WAIT_CLOSE"})
    CHECK(contains_icase(notices, word));
}

TEST_CASE("SHOW POOLS, CLIENTS, SERVERS, DATABASES, USERS and CONFIG report live values", "[admin]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 5;
  Pooler p(cfg);
  Conn idle(p.conninfo() + " application_name=idler");
  REQUIRE(idle.ok());
  REQUIRE(idle.value("SELECT 1") == "1");
  Conn busy(p.conninfo() + " application_name=alpha");
  REQUIRE(busy.ok());
  busy.exec_ok("BEGIN");
  std::string backend_pid = busy.value("SELECT pg_backend_pid()");

  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  const std::vector<std::pair<std::string, std::string>> app_pool{{"database", "appdb"}, {"user", "app"}};

  Result pools = console_show(admin, "POOLS");
  INFO("SHOW POOLS:\n" << dump(pools));
  CHECK(cell(pools, app_pool, "cl_active") == "2");  // idle and in-transaction clients
  CHECK(cell(pools, app_pool, "cl_waiting") == "0");
  CHECK(cell(pools, app_pool, "sv_active") == "1");
  CHECK(cell(pools, app_pool, "sv_idle") == "0");
  CHECK(cell(pools, app_pool, "sv_used") == "0");
  CHECK(cell(pools, app_pool, "sv_login") == "0");
  CHECK(cell(pools, app_pool, "maxwait") == "0");
  CHECK(cell(pools, app_pool, "pool_mode") == "transaction");

  Result servers = console_show(admin, "SERVERS");
  INFO("SHOW SERVERS:\n" << dump(servers));
  int srow = find_row(servers, {{"database", "appdb"}, {"remote_pid", backend_pid}});
  REQUIRE(srow >= 0);
  CHECK(servers.value(srow, column(servers, "type")) == "S");
  CHECK(servers.value(srow, column(servers, "user")) == "app");
  CHECK(servers.value(srow, column(servers, "state")) == "active");
  CHECK(servers.value(srow, column(servers, "addr")) == "127.0.0.1");
  CHECK(servers.value(srow, column(servers, "port")) == std::to_string(env().pg_port));
  CHECK_FALSE(servers.value(srow, column(servers, "link")).empty());

  Result clients = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(clients));
  int crow = find_row(clients, {{"application_name", "alpha"}});
  REQUIRE(crow >= 0);
  CHECK(clients.value(crow, column(clients, "type")) == "C");
  CHECK(clients.value(crow, column(clients, "user")) == "app");
  CHECK(clients.value(crow, column(clients, "database")) == "appdb");
  CHECK(clients.value(crow, column(clients, "state")) == "active");
  CHECK(clients.value(crow, column(clients, "addr")) == "127.0.0.1");
  CHECK(clients.value(crow, column(clients, "port")) == std::to_string(local_port(busy)));
  CHECK(clients.value(crow, column(clients, "local_port")) == std::to_string(p.port()));
  // The busy client is linked to the server that runs its transaction.
  CHECK(clients.value(crow, column(clients, "link")) == servers.value(srow, column(servers, "ptr")));
  CHECK(find_row(clients, {{"application_name", "idler"}, {"state", "idle"}}) >= 0);  // PgBouncer: no server, idle

  Result dbs = console_show(admin, "DATABASES");
  INFO("SHOW DATABASES:\n" << dump(dbs));
  CHECK(cell(dbs, {{"name", "appdb"}}, "host") == "127.0.0.1");
  CHECK(cell(dbs, {{"name", "appdb"}}, "port") == std::to_string(env().pg_port));
  CHECK(cell(dbs, {{"name", "appdb"}}, "database") == "appdb");
  CHECK(cell(dbs, {{"name", "appdb"}}, "pool_size") == "5");
  CHECK(cell(dbs, {{"name", "appdb"}}, "current_connections") == "1");
  CHECK(cell(dbs, {{"name", "appdb"}}, "current_client_connections") == "2");
  CHECK(cell(dbs, {{"name", "appdb"}}, "paused") == "0");
  CHECK(cell(dbs, {{"name", "appdb"}}, "disabled") == "0");
  CHECK(find_row(dbs, {{"name", "pgbouncer"}}) >= 0);

  Result users = console_show(admin, "USERS");
  INFO("SHOW USERS:\n" << dump(users));
  CHECK(find_row(users, {{"name", "app"}}) >= 0);
  CHECK(cell(users, {{"name", "app"}}, "current_client_connections") == "2");

  Result config = console_show(admin, "CONFIG");
  INFO("SHOW CONFIG:\n" << dump(config));
  CHECK(cell(config, {{"key", "default_pool_size"}}, "value") == "5");
  CHECK(cell(config, {{"key", "pool_mode"}}, "value") == "transaction");
  CHECK(cell(config, {{"key", "listen_port"}}, "value") == std::to_string(p.port()));
  CHECK(cell(config, {{"key", "listen_port"}}, "changeable") == "no");
  CHECK(cell(config, {{"key", "default_pool_size"}}, "changeable") == "yes");

  Result lists = console_show(admin, "LISTS");
  INFO("SHOW LISTS:\n" << dump(lists));
  CHECK(to_ll(cell(lists, {{"list", "used_clients"}}, "items")) >= 2);
  CHECK(to_ll(cell(lists, {{"list", "used_servers"}}, "items")) >= 1);

  Result state = console_show(admin, "STATE");
  INFO("SHOW STATE:\n" << dump(state));
  CHECK(cell(state, {{"key", "paused"}}, "value") == "no");

  for (std::string what : {"MEM", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS"}) {
    Result r = admin.exec("SHOW " + what);
    INFO("SHOW " << what << ": " << r.message());
    CHECK(r.ok());
    CHECK(r.rows() > 0);
  }
  busy.exec_ok("COMMIT");
}

TEST_CASE("SHOW STATS counts queries, transactions and bytes", "[admin]") {
  Pooler p;
  const int n = 25;
  {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    for (int i = 0; i < n; ++i) REQUIRE(c.value("SELECT " + std::to_string(i)) == std::to_string(i));
  }
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result stats = console_show(admin, "STATS");
  INFO("SHOW STATS:\n" << dump(stats));
  const std::vector<std::pair<std::string, std::string>> appdb{{"database", "appdb"}};
  CHECK(to_ll(cell(stats, appdb, "total_query_count")) >= n);
  CHECK(to_ll(cell(stats, appdb, "total_xact_count")) >= n);
  CHECK(to_ll(cell(stats, appdb, "total_received")) > 0);
  CHECK(to_ll(cell(stats, appdb, "total_sent")) > 0);
  CHECK(to_ll(cell(stats, appdb, "total_query_time")) > 0);

  // SHOW TOTALS sums over databases: at least the appdb figures.
  Result totals = console_show(admin, "TOTALS");
  INFO("SHOW TOTALS:\n" << dump(totals));
  CHECK(to_ll(cell(totals, {{"name", "total_query_count"}}, "value")) >= n);
  CHECK(to_ll(cell(totals, {{"name", "total_xact_count"}}, "value")) >= n);
}

TEST_CASE("PAUSE holds new queries and RESUME releases them without an error", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(c.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());

  Result pause = admin.exec("PAUSE", 10);
  INFO("PAUSE: " << pause.message());
  REQUIRE(pause.ok());
  Result dbs = console_show(admin, "DATABASES");
  CHECK(cell(dbs, {{"name", "appdb"}}, "paused") == "1");
  Result pools = console_show(admin, "POOLS");
  INFO("SHOW POOLS while paused:\n" << dump(pools));
  CHECK(cell(pools, {{"database", "appdb"}, {"user", "app"}}, "sv_idle") == "0");  // servers released

  expect_held(c, "SELECT 'after resume'");
  Result resume = admin.exec("RESUME");
  INFO("RESUME: " << resume.message());
  REQUIRE(resume.ok());
  Result r = finish_query(c);
  INFO("query issued during PAUSE: " << r.message());
  CHECK(r.status() == PGRES_TUPLES_OK);
  CHECK(r.value() == "after resume");
  CHECK(c.value("SELECT 2") == "2");
}

TEST_CASE("PAUSE answers only once the transaction in flight has ended", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  REQUIRE(c.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());

  expect_held(admin, "PAUSE", 1.0);
  // The transaction itself goes on while PAUSE waits.
  CHECK(c.value("SELECT 'inside'") == "inside");
  auto t0 = std::chrono::steady_clock::now();
  c.exec_ok("COMMIT");
  Result pause = finish_query(admin);
  INFO("PAUSE: " << pause.message());
  CHECK(pause.status() == PGRES_COMMAND_OK);
  CHECK(seconds_since(t0) < 2);

  expect_held(c, "SELECT 'held'", 0.5);
  admin.exec_ok("RESUME");
  Result r = finish_query(c);
  CHECK(r.value() == "held");
}

TEST_CASE("PAUSE db holds only that database", "[admin]") {
  PoolerConfig cfg;
  cfg.extra_databases["postgres"] = "cluster = \"main\"";
  Pooler p(cfg);
  Conn a(p.conninfo());
  Conn b(p.conninfo("app", "app", "postgres"));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result pause = admin.exec("PAUSE appdb", 10);
  INFO("PAUSE appdb: " << pause.message());
  REQUIRE(pause.ok());
  CHECK(b.value("SELECT current_database()") == "postgres");
  expect_held(a, "SELECT current_database()");
  admin.exec_ok("RESUME appdb");
  CHECK(finish_query(a).value() == "appdb");
}

TEST_CASE("SUSPEND stops traffic until RESUME", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(c.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result suspend = admin.exec("SUSPEND", 10);
  INFO("SUSPEND: " << suspend.message());
  REQUIRE(suspend.ok());
  Result state = console_show(admin, "STATE");
  CHECK(cell(state, {{"key", "suspended"}}, "value") == "yes");
  expect_held(c, "SELECT 'after suspend'");
  admin.exec_ok("RESUME");
  Result r = finish_query(c);
  INFO("query issued during SUSPEND: " << r.message());
  CHECK(r.value() == "after suspend");
}

TEST_CASE("KILL db drops that database's clients and leaves it paused until RESUME", "[admin]") {
  PoolerConfig cfg;
  cfg.extra_databases["postgres"] = "cluster = \"main\"";
  Pooler p(cfg);
  Conn victim(p.conninfo());
  Conn other(p.conninfo("app", "app", "postgres"));
  REQUIRE(victim.ok());
  REQUIRE(other.ok());
  REQUIRE(victim.value("SELECT 1") == "1");
  REQUIRE(other.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());

  Result kill = admin.exec("KILL appdb");
  INFO("KILL appdb: " << kill.message());
  REQUIRE(kill.ok());
  Result after = victim.exec("SELECT 1", 5);
  INFO("killed client: " << after.message());
  CHECK_FALSE(after.ok());
  CHECK(PQstatus(victim.get()) == CONNECTION_BAD);
  CHECK(other.value("SELECT current_database()") == "postgres");
  Result clients = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(clients));
  CHECK(find_row(clients, {{"database", "appdb"}}) < 0);

  // As in PgBouncer, new clients of a killed database wait for RESUME.
  Conn late(p.conninfo());
  INFO("login to the killed database: " << late.error());
  REQUIRE(late.ok());
  expect_held(late, "SELECT 'late'");
  admin.exec_ok("RESUME appdb");
  CHECK(finish_query(late).value() == "late");
}

TEST_CASE("KILL_CLIENT drops exactly the client with that id", "[admin]") {
  Pooler p;
  Conn victim(p.conninfo() + " application_name=victim");
  Conn survivor(p.conninfo() + " application_name=survivor");
  REQUIRE(victim.ok());
  REQUIRE(survivor.ok());
  REQUIRE(victim.value("SELECT 1") == "1");
  REQUIRE(survivor.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result clients = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(clients));
  std::string id = cell(clients, {{"application_name", "victim"}}, "id");
  std::string other_id = cell(clients, {{"application_name", "survivor"}}, "id");
  REQUIRE(to_ll(id) > 0);
  REQUIRE(id != other_id);

  Result kill = admin.exec("KILL_CLIENT " + id);
  INFO("KILL_CLIENT " << id << ": " << kill.message());
  REQUIRE(kill.ok());
  Result r = victim.exec("SELECT 1", 5);
  CHECK_FALSE(r.ok());
  CHECK(PQstatus(victim.get()) == CONNECTION_BAD);
  CHECK(survivor.value("SELECT 'alive'") == "alive");
  Result after = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS after KILL_CLIENT:\n" << dump(after));
  CHECK(find_row(after, {{"id", id}}) < 0);
  CHECK(find_row(after, {{"id", other_id}}) >= 0);

  Result unknown = admin.exec("KILL_CLIENT 999999999");
  INFO("KILL_CLIENT of an unknown id: " << unknown.message());
  CHECK(unknown.status() == PGRES_FATAL_ERROR);
}

TEST_CASE("DISABLE db refuses new logins to it and ENABLE lets them in again", "[admin]") {
  Pooler p;
  Conn existing(p.conninfo());
  REQUIRE(existing.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  admin.exec_ok("DISABLE appdb");
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "disabled") == "1");

  Conn refused(p.conninfo());
  INFO("login while disabled: " << refused.error());
  CHECK_FALSE(refused.ok());
  CHECK(contains_icase(refused.error(), "appdb"));
  CHECK(existing.value("SELECT 'still served'") == "still served");

  admin.exec_ok("ENABLE appdb");
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "disabled") == "0");
  Conn welcome(p.conninfo());
  INFO("login after ENABLE: " << welcome.error());
  REQUIRE(welcome.ok());
  CHECK(welcome.value("SELECT 1") == "1");

  Result missing = admin.exec("DISABLE");
  CHECK(missing.status() == PGRES_FATAL_ERROR);
  Result unknown = admin.exec("DISABLE nosuchdb");
  CHECK(unknown.status() == PGRES_FATAL_ERROR);
}

TEST_CASE("RELOAD picks up a new pool size; a broken config is reported and the old one kept", "[admin]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 5;
  Pooler p(cfg);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  REQUIRE(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "pool_size") == "5");

  cfg.default_pool_size = 7;
  p.rewrite_config(cfg);
  Result reload = admin.exec("RELOAD");
  INFO("RELOAD: " << reload.message());
  REQUIRE(reload.ok());
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "pool_size") == "7");
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "7");

  PoolerConfig broken = cfg;
  broken.default_pool_size = 9;
  broken.extra["pool_mdoe"] = "\"session\"";
  p.rewrite_config(broken);
  Result bad = admin.exec("RELOAD");
  INFO("RELOAD of a broken config: " << bad.message());
  CHECK(bad.status() == PGRES_FATAL_ERROR);
  CHECK(contains_icase(bad.message(), "pool_mdoe"));
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "pool_size") == "7");
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "7");
  CHECK(c.value("SELECT 'old config works'") == "old config works");
  Conn fresh(p.conninfo());
  INFO("login after the failed RELOAD: " << fresh.error());
  REQUIRE(fresh.ok());
  CHECK(fresh.value("SELECT 1") == "1");
  REQUIRE(p.running());
}

TEST_CASE("SET default_pool_size changes SHOW CONFIG; bad SETs are refused", "[admin]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  REQUIRE(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "5");
  Result set = admin.exec("SET default_pool_size = 12");
  INFO("SET: " << set.message());
  REQUIRE(set.ok());
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "12");
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "pool_size") == "12");
  admin.exec_ok("set default_pool_size to '3';");
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "3");

  Result unknown = admin.exec("SET no_such_key = 1");
  INFO("unknown key: " << unknown.message());
  CHECK(unknown.status() == PGRES_FATAL_ERROR);
  Result invalid = admin.exec("SET default_pool_size = lots");
  INFO("invalid value: " << invalid.message());
  CHECK(invalid.status() == PGRES_FATAL_ERROR);
  Result fixed = admin.exec("SET listen_port = 1");
  INFO("unchangeable key: " << fixed.message());
  CHECK(fixed.status() == PGRES_FATAL_ERROR);
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "3");
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "listen_port"}}, "value") == std::to_string(p.port()));
}

// Issue 18: SET went through a copy of the settings table that only refused negative
// numbers, so values the file loader refuses were taken and broke every new login.
TEST_CASE("SET refuses what the config file refuses; new logins keep working", "[admin]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  struct Bad {
    const char* sql;
    const char* key;
    const char* message;
  };
  for (const Bad& b : {Bad{"SET max_packet_size = 0", "max_packet_size", "must be >= 1024, got 0"},
                       Bad{"SET max_client_conn = 0", "max_client_conn", "must be >= 1, got 0"},
                       Bad{"SET server_tls_sslmode = 'bogus'", "server_tls_sslmode", "expected one of: disable"},
                       Bad{"SET default_pool_size = 99999999999", "default_pool_size", "got 99999999999"}}) {
    INFO(b.sql);
    std::string before = cell(console_show(admin, "CONFIG"), {{"key", b.key}}, "value");
    Result r = admin.exec(b.sql);
    INFO("answer: " << r.message());
    CHECK(r.status() == PGRES_FATAL_ERROR);
    CHECK(r.sqlstate() == "22023");
    CHECK(r.message().find(b.message) != std::string::npos);
    CHECK(cell(console_show(admin, "CONFIG"), {{"key", b.key}}, "value") == before);
    // A new client and a new console login are still served.
    Conn app(p.conninfo());
    INFO("app login: " << app.error());
    REQUIRE(app.ok());
    CHECK(app.value("SELECT 1") == "1");
    Conn again(admin_conninfo(p));
    INFO("console login: " << again.error());
    REQUIRE(again.ok());
  }
  // Settings a reload applies are refused by SET with the way to change them.
  Result logfile = admin.exec("SET logfile = '/tmp/elsewhere.log'");
  CHECK(logfile.sqlstate() == "55P02");
  CHECK(logfile.message().find("RELOAD") != std::string::npos);
  // A good value is still taken.
  admin.exec_ok("SET max_packet_size = 65536");
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "max_packet_size"}}, "value") == "65536");
  Conn app(p.conninfo());
  REQUIRE(app.ok());
  CHECK(app.value("SELECT repeat('x', 1000)").size() == 1000);
}

TEST_CASE("RECONNECT replaces server connections; WAIT_CLOSE waits for it", "[admin]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 1;
  Pooler p(cfg);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  std::string before = c.value("SELECT pg_backend_pid()");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  admin.exec_ok("RECONNECT appdb");
  Result wait = admin.exec("WAIT_CLOSE appdb", 10);
  INFO("WAIT_CLOSE: " << wait.message());
  CHECK(wait.ok());
  std::string after = c.value("SELECT pg_backend_pid()");
  CHECK(after != before);
  CHECK(c.value("SELECT 1") == "1");
}

TEST_CASE("a stats user may SHOW but not control; other users cannot open the console", "[admin]") {
  PoolerConfig cfg;
  cfg.users["watcher"] = "watcher";
  cfg.stats_users = {"watcher"};
  Pooler p(cfg);

  Conn stats(p.conninfo("watcher", "watcher", "pgbouncer"));
  INFO("stats user login: " << stats.error());
  REQUIRE(stats.ok());
  for (std::string what : {"POOLS", "STATS", "CLIENTS", "SERVERS", "DATABASES", "CONFIG", "VERSION"}) {
    Result r = stats.exec("SHOW " + what);
    INFO("stats user SHOW " << what << ": " << r.message());
    CHECK(r.ok());
  }
  for (std::string cmd : {"PAUSE", "RESUME", "RELOAD", "KILL appdb", "SET default_pool_size = 9", "SHUTDOWN"}) {
    Result r = stats.exec(cmd, 5);
    INFO("stats user " << cmd << ": " << r.message());
    CHECK(r.status() == PGRES_FATAL_ERROR);
  }
  REQUIRE(p.running());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  CHECK(cell(console_show(admin, "CONFIG"), {{"key", "default_pool_size"}}, "value") == "5");
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "paused") == "0");

  for (std::string db : {"pgbouncer", "pgpivot"}) {
    Conn normal(p.conninfo("app", "app", db));
    INFO("normal user on " << db << ": " << normal.error());
    CHECK_FALSE(normal.ok());
    CHECK(contains_icase(normal.error(), "not allowed"));
  }
  Conn wrong_pw(p.conninfo("admin", "wrong", "pgbouncer"));
  CHECK_FALSE(wrong_pw.ok());
}

TEST_CASE("user pgbouncer opens the console over the Unix socket without a password", "[admin]") {
  std::string dir = env().scratch + "/adm-sock";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  PoolerConfig cfg;  // auth_type scram-sha-256; "pgbouncer" is not a configured user
  cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
  Pooler p(cfg);
  std::string port = std::to_string(p.port());
  for (std::string db : {"pgbouncer", "pgpivot"}) {
    Conn local("host=" + dir + " port=" + port + " dbname=" + db + " user=pgbouncer connect_timeout=10");
    INFO("pgbouncer over the Unix socket to " << db << ": " << local.error());
    REQUIRE(local.ok());
    CHECK(std::regex_match(local.value("SHOW VERSION"), std::regex(R"(pgpivot \d+\.\d+\.\d+)")));
    // Full admin rights.
    local.exec_ok("RESUME");
  }
  // Over TCP the same login needs a password and there is none.
  Conn tcp(p.conninfo("pgbouncer", "", "pgbouncer"));
  INFO("pgbouncer over TCP: " << tcp.error());
  CHECK_FALSE(tcp.ok());
  // Over the socket, only the console is open to it.
  Conn data("host=" + dir + " port=" + port + " dbname=appdb user=pgbouncer connect_timeout=10");
  CHECK_FALSE(data.ok());
}

TEST_CASE("SHUTDOWN WAIT_FOR_CLIENTS waits for the connected clients to leave", "[admin]") {
  Pooler p;
  auto c = std::make_unique<Conn>(p.conninfo());
  REQUIRE(c->ok());
  REQUIRE(c->value("SELECT 1") == "1");
  {
    Conn admin(admin_conninfo(p));
    REQUIRE(admin.ok());
    p.expect_exit();
    Result r = admin.exec("SHUTDOWN WAIT_FOR_CLIENTS");
    INFO("SHUTDOWN WAIT_FOR_CLIENTS: " << r.message());
    REQUIRE(r.ok());
  }
  sleep_s(0.7);
  CHECK(p.running());
  CHECK(c->value("SELECT 'still served'") == "still served");
  Conn late(p.conninfo());
  CHECK_FALSE(late.ok());  // no new clients
  CHECK(p.running());
  c.reset();
  CHECK(p.wait_exit(5));
}

TEST_CASE("SHUTDOWN WAIT_FOR_SERVERS lets the transaction in flight finish", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  REQUIRE(c.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  p.expect_exit();
  Result r = admin.exec("SHUTDOWN WAIT_FOR_SERVERS");
  INFO("SHUTDOWN WAIT_FOR_SERVERS: " << r.message());
  CHECK(r.ok());
  sleep_s(0.5);
  CHECK(p.running());
  CHECK(c.value("SELECT 'in flight'") == "in flight");
  Result commit = c.exec("COMMIT");
  INFO("COMMIT: " << commit.message());
  CHECK(commit.ok());
  CHECK(p.wait_exit(5));
}

TEST_CASE("SHUTDOWN exits at once", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  p.expect_exit();
  admin.exec("SHUTDOWN", 5);  // the answer may or may not arrive before the close
  CHECK(p.wait_exit(5));
  CHECK_FALSE(c.exec("SELECT 1", 5).ok());
}

TEST_CASE("SIGUSR1 pauses and SIGUSR2 resumes", "[admin]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(c.value("SELECT 1") == "1");
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());

  p.signal(SIGUSR1);
  CHECK(eventually([&] { return cell(console_show(admin, "STATE"), {{"key", "paused"}}, "value") == "yes"; }));
  CHECK(cell(console_show(admin, "DATABASES"), {{"name", "appdb"}}, "paused") == "1");
  expect_held(c, "SELECT 'after SIGUSR2'");

  p.signal(SIGUSR2);
  Result r = finish_query(c);
  INFO("query issued while paused by SIGUSR1: " << r.message());
  CHECK(r.status() == PGRES_TUPLES_OK);
  CHECK(r.value() == "after SIGUSR2");
  CHECK(cell(console_show(admin, "STATE"), {{"key", "paused"}}, "value") == "no");
  REQUIRE(p.running());
}

TEST_CASE("SHOW MEM: idle connections hold no read buffer and no output state", "[admin][memory]") {
  Pooler p;
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(std::make_unique<Conn>(p.conninfo()));
    REQUIRE(clients.back()->ok());
    // A result larger than pkt_buf makes the server connection stream (64 kB buffers).
    REQUIRE(clients.back()->value("SELECT repeat('x', " + std::to_string(10000 + i * 1000) + ")").size() ==
            std::size_t(10000 + i * 1000));
  }
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result mem = console_show(admin, "MEM");
  INFO("SHOW MEM:\n" << dump(mem));
  CHECK(to_ll(cell(mem, {{"name", "client"}}, "used")) == 41);
  // Only the admin client's own SHOW request is being read while the rows are built.
  CHECK(to_ll(cell(mem, {{"name", "iobuf"}}, "used")) <= 1);
  CHECK(to_ll(cell(mem, {{"name", "stream_iobuf"}}, "used")) == 0);
  CHECK(to_ll(cell(mem, {{"name", "stream_iobuf"}}, "free")) >= 1);  // used for the large results, given back
  CHECK(to_ll(cell(mem, {{"name", "outq"}}, "used")) == 0);
  CHECK(to_ll(cell(mem, {{"name", "outq"}}, "free")) >= 1);  // the answers went out through one
  // The process rows agree with what /proc says from outside (within what the
  // answer itself allocates), and private memory is less than the resident size.
  long long priv = to_ll(cell(mem, {{"name", "process_private"}}, "memtotal"));
  long long rss = to_ll(cell(mem, {{"name", "process_rss"}}, "memtotal"));
  long outside = private_kb(p.pid());
  CHECK(priv > 0);
  CHECK(priv < rss);
  CHECK(std::llabs(priv - outside * 1024LL) < 2LL * 1024 * 1024);
}
