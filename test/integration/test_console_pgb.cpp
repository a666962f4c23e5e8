// PgBouncer 1.25's console surface that its own test suite (test_admin.py,
// test_limits.py) checks: SHOW SOCKETS / ACTIVE_SOCKETS / FDS / PEERS / PEER_POOLS
// and the 1.25 SHOW STATS columns, KILL_CLIENT's answers, RELOAD's error report,
// console clients counted against the client limits, and the pool behaviours those
// files need (server_lifetime 0, max_db_connections eviction, min_pool_size of a
// forced user, the reserve pool's log line).
#include <catch2/catch.hpp>

#include <libpq-fe.h>

#include <set>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

std::string admin_conninfo(const Pooler& p) { return p.conninfo("admin", "admin", "pgbouncer"); }

const std::vector<std::string> kConnColumns = {
    "type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
    "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
    "application_name", "prepared_statements", "id"};

// Backends of `user` in appdb, counted directly on PostgreSQL.
int backends_of(const std::string& user) {
  Conn direct(direct_conninfo());
  if (!direct.ok()) return -1;
  return std::atoi(direct.value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' AND usename = '" +
                                user + "' AND pid <> pg_backend_pid()")
                       .c_str());
}

}  // namespace

TEST_CASE("SHOW SOCKETS and ACTIVE_SOCKETS list clients and servers with PgBouncer's columns and ids", "[console125]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn busy(p.conninfo() + " application_name=busy");
  REQUIRE(busy.ok());
  busy.exec_ok("BEGIN");
  std::string backend = busy.value("SELECT pg_backend_pid()");

  Result sockets = console_show(admin, "SOCKETS");
  INFO("SHOW SOCKETS:\n" << dump(sockets));
  std::vector<std::string> want = kConnColumns;
  for (const char* n : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"})
    want.push_back(n);
  CHECK(column_names(sockets) == want);
  // The client in its transaction, the server that runs it, and the console itself.
  int crow = find_row(sockets, {{"type", "C"}, {"application_name", "busy"}});
  REQUIRE(crow >= 0);
  CHECK(sockets.value(crow, column(sockets, "state")) == "cl_active");
  CHECK(sockets.value(crow, column(sockets, "database")) == "appdb");
  int srow = find_row(sockets, {{"type", "S"}, {"remote_pid", backend}});
  REQUIRE(srow >= 0);
  CHECK(sockets.value(srow, column(sockets, "state")) == "sv_active");
  CHECK(sockets.value(crow, column(sockets, "link")) == sockets.value(srow, column(sockets, "ptr")));
  CHECK(find_row(sockets, {{"type", "C"}, {"database", "pgbouncer"}, {"user", "admin"}}) >= 0);
  // Ids are those of SHOW CLIENTS / SERVERS: one sequence for both kinds.
  Result clients = console_show(admin, "CLIENTS");
  CHECK(cell(clients, {{"application_name", "busy"}}, "id") == sockets.value(crow, column(sockets, "id")));
  Result servers = console_show(admin, "SERVERS");
  CHECK(cell(servers, {{"remote_pid", backend}}, "id") == sockets.value(srow, column(sockets, "id")));
  CHECK(sockets.value(crow, column(sockets, "id")) != sockets.value(srow, column(sockets, "id")));

  // Nothing is buffered on an idle connection: ACTIVE_SOCKETS has the columns, not the rows.
  Result active = console_show(admin, "ACTIVE_SOCKETS");
  INFO("SHOW ACTIVE_SOCKETS:\n" << dump(active));
  CHECK(column_names(active) == want);
  CHECK(find_row(active, {{"type", "S"}, {"remote_pid", backend}}) < 0);
  busy.exec_ok("COMMIT");
}

TEST_CASE("SHOW CLIENTS: a client without a server is idle, one in a transaction active", "[console125]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn idler(p.conninfo() + " application_name=idler");
  REQUIRE(idler.ok());
  Conn busy(p.conninfo() + " application_name=busy");
  REQUIRE(busy.ok());
  busy.exec_ok("BEGIN");
  Result clients = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(clients));
  CHECK(column_names(clients) == kConnColumns);
  CHECK(cell(clients, {{"application_name", "idler"}}, "state") == "idle");
  CHECK(cell(clients, {{"application_name", "busy"}}, "state") == "active");
  CHECK(cell(clients, {{"application_name", "busy"}}, "replication") == "none");
  busy.exec_ok("COMMIT");
}

TEST_CASE("SHOW FDS, PEERS, PEER_POOLS, DNS_HOSTS and DNS_ZONES have PgBouncer's columns", "[console125]") {
  PoolerConfig cfg;
  cfg.users["watcher"] = "watcher";
  cfg.stats_users = {"watcher"};
  Pooler p(cfg);
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn client(p.conninfo() + " application_name=fdclient");
  REQUIRE(client.ok());
  client.exec_ok("SELECT 1");

  Result fds = console_show(admin, "FDS");
  INFO("SHOW FDS:\n" << dump(fds));
  CHECK(column_names(fds) == std::vector<std::string>{"fd", "task", "user", "database", "addr", "port", "cancel",
                                                      "link", "client_encoding", "std_strings", "datestyle",
                                                      "timezone", "password", "scram_client_key",
                                                      "scram_server_key"});
  // The listening socket, and the client with its own port.
  CHECK(find_row(fds, {{"task", "pooler"}, {"port", std::to_string(p.port())}}) >= 0);
  int crow = find_row(fds, {{"task", "client"}, {"user", "app"}, {"database", "appdb"}});
  REQUIRE(crow >= 0);
  CHECK(std::atoi(fds.value(crow, column(fds, "fd")).c_str()) > 2);
  CHECK_FALSE(fds.value(crow, column(fds, "client_encoding")).empty());
  CHECK(find_row(fds, {{"task", "server"}, {"database", "appdb"}, {"port", std::to_string(env().pg_port)}}) >= 0);

  // Cancel keys of everybody: admin_users only.
  Conn stats(p.conninfo("watcher", "watcher", "pgbouncer"));
  REQUIRE(stats.ok());
  Result refused = stats.exec("SHOW FDS");
  CHECK_FALSE(refused.ok());
  CHECK(refused.sqlstate() == "42501");
  CHECK(stats.exec("SHOW SOCKETS").ok());

  Result peers = console_show(admin, "PEERS");
  CHECK(column_names(peers) == std::vector<std::string>{"peer_id", "host", "port", "pool_size"});
  CHECK(peers.rows() == 0);
  Result peer_pools = console_show(admin, "PEER_POOLS");
  CHECK(column_names(peer_pools) == std::vector<std::string>{"peer_id", "cl_active_cancel_req",
                                                             "cl_waiting_cancel_req", "sv_active_cancel", "sv_login"});
  CHECK(peer_pools.rows() == 0);
  CHECK(column_names(console_show(admin, "DNS_HOSTS")) == std::vector<std::string>{"hostname", "ttl", "addrs"});
  CHECK(column_names(console_show(admin, "DNS_ZONES")) == std::vector<std::string>{"zonename", "serial", "count"});
}

TEST_CASE("KILL_CLIENT closes a real client; a bad id and an unknown one are 08P01 errors", "[console125]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn victim(p.conninfo() + " application_name=victim");
  REQUIRE(victim.ok());
  Conn bystander(p.conninfo() + " application_name=bystander");
  REQUIRE(bystander.ok());
  std::string id = cell(console_show(admin, "CLIENTS"), {{"application_name", "victim"}}, "id");
  REQUIRE(id.find('<') == std::string::npos);

  Result bad = admin.exec("KILL_CLIENT not_a_client_id");
  CHECK_FALSE(bad.ok());
  CHECK(bad.sqlstate() == "08P01");
  CHECK(bad.message().find("invalid client pointer supplied") != std::string::npos);
  Result unknown = admin.exec("KILL_CLIENT 999999");
  CHECK_FALSE(unknown.ok());
  CHECK(unknown.sqlstate() == "08P01");
  CHECK(unknown.message().find("client not found") != std::string::npos);
  // Neither touched anybody.
  CHECK(find_row(console_show(admin, "CLIENTS"), {{"application_name", "victim"}}) >= 0);

  Result kill = admin.exec("KILL_CLIENT " + id);
  INFO(kill.message());
  REQUIRE(kill.ok());
  CHECK_FALSE(victim.exec("SELECT 1").ok());
  Result after = console_show(admin, "CLIENTS");
  CHECK(find_row(after, {{"application_name", "victim"}}) < 0);
  CHECK(find_row(after, {{"application_name", "bystander"}}) >= 0);
  CHECK(bystander.value("SELECT 1") == "1");
}

TEST_CASE("RELOAD of a bad file answers PgBouncer's F0000 text, with the problem in DETAIL, and keeps the config",
          "[console125]") {
  PoolerConfig cfg;
  Pooler p(cfg);
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  PoolerConfig bad = cfg;
  bad.extra["server_lifetime"] = "\"invalid_server_lifetime\"";
  p.rewrite_config(bad);
  Result r = admin.exec("RELOAD");
  CHECK_FALSE(r.ok());
  CHECK(r.sqlstate() == "F0000");
  CHECK(r.message().find("RELOAD failed, see logs for additional details") != std::string::npos);
  const char* detail = r.get() ? PQresultErrorField(r.get(), PG_DIAG_MESSAGE_DETAIL) : nullptr;
  REQUIRE(detail != nullptr);
  CHECK(std::string(detail).find("server_lifetime") != std::string::npos);
  CHECK(p.log().find("RELOAD failed") != std::string::npos);
  // The running configuration is kept: clients still get in.
  Conn client(p.conninfo());
  CHECK(client.ok());
  CHECK(admin.value("SHOW VERSION").find("pgpivot") != std::string::npos);
}

TEST_CASE("console clients count against max_db_client_connections and max_user_client_connections",
          "[console125]") {
  PoolerConfig cfg;
  cfg.users["watcher"] = "watcher";
  cfg.stats_users = {"watcher"};
  cfg.extra["max_db_client_connections"] = "2";
  cfg.extra["max_user_client_connections"] = "1";
  Pooler p(cfg);
  std::string watcher = p.conninfo("watcher", "watcher", "pgbouncer");
  Conn w1(watcher);
  REQUIRE(w1.ok());
  // The second console login of the same stats user passes the database limit (2)
  // but not the user's (1).
  Conn w2(watcher);
  INFO("second watcher: " << w2.error());
  CHECK_FALSE(w2.ok());
  CHECK(w2.error().find("max_user_client_connections") != std::string::npos);
  // admin_users are never refused by the console, and are counted.
  Conn a1(admin_conninfo(p));
  REQUIRE(a1.ok());
  Conn a2(admin_conninfo(p));
  REQUIRE(a2.ok());
  Result dbs = console_show(a1, "DATABASES");
  INFO("SHOW DATABASES:\n" << dump(dbs));
  CHECK(cell(dbs, {{"name", "pgbouncer"}}, "max_client_connections") == "2");
  CHECK(cell(dbs, {{"name", "pgbouncer"}}, "current_client_connections") == "3");
  Result users = console_show(a1, "USERS");
  INFO("SHOW USERS:\n" << dump(users));
  CHECK(cell(users, {{"name", "watcher"}}, "current_client_connections") == "1");
  CHECK(cell(users, {{"name", "admin"}}, "current_client_connections") == "2");
  // The console's database is full (3 > 2): a stats user is refused for it now.
  a1.exec_ok("SET max_user_client_connections = 0");
  Conn w3(watcher);
  INFO("watcher with the database full: " << w3.error());
  CHECK_FALSE(w3.ok());
  CHECK(w3.error().find("max_db_client_connections") != std::string::npos);
  // A closed console client gives its place back.
  a2.finish();
  w1.finish();
  CHECK(wait_for([&] { return cell(console_show(a1, "DATABASES"), {{"name", "pgbouncer"}}, "current_client_connections") == "1"; },
                 10));
  Conn w4(watcher);
  INFO("watcher after others left: " << w4.error());
  CHECK(w4.ok());
}

TEST_CASE("client limits count the login user where the database forces another", "[console125]") {
  PoolerConfig cfg;
  cfg.extra_databases["forced"] = "cluster = \"main\"\ndbname = \"appdb\"\nuser = \"app\"\npassword = \"app\"";
  cfg.extra["max_user_client_connections"] = "1";
  Pooler p(cfg);
  Conn one(p.conninfo("md5user", "md5pass", "forced"));
  REQUIRE(one.ok());
  Conn two(p.conninfo("md5user", "md5pass", "forced"));
  INFO("second md5user client: " << two.error());
  CHECK_FALSE(two.ok());
  CHECK(two.error().find("max_user_client_connections") != std::string::npos);
  // The forced user's own count is untouched: app still gets in.
  Conn app(p.conninfo());
  INFO("app: " << app.error());
  CHECK(app.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Result users = console_show(admin, "USERS");
  INFO("SHOW USERS:\n" << dump(users));
  CHECK(cell(users, {{"name", "md5user"}}, "current_client_connections") == "1");
  CHECK(cell(users, {{"name", "app"}}, "current_client_connections") == "1");
  // SHOW USERS: pool_size is text, empty when the user sets none.
  CHECK(cell(users, {{"name", "md5user"}}, "pool_size").empty());
}

TEST_CASE("SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS have PgBouncer 1.25's columns; console queries count",
          "[console125]") {
  Pooler p;
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn client(p.conninfo());
  REQUIRE(client.ok());
  client.exec_ok("SELECT 1");
  const std::vector<std::string> base = {"server_assignment_count", "xact_count", "query_count", "received", "sent",
                                         "xact_time", "query_time", "wait_time", "client_parse_count",
                                         "server_parse_count", "bind_count", "client_login_count"};
  std::vector<std::string> stats = {"database"};
  for (const auto& n : base) stats.push_back("total_" + n);
  for (const auto& n : base) stats.push_back("avg_" + (n == "received" ? std::string("recv") : n));
  Result s = console_show(admin, "STATS");
  CHECK(column_names(s) == stats);
  std::vector<std::string> totals = {"database", "server_assignment_count", "xact_count", "query_count",
                                     "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
                                     "client_parse_count", "server_parse_count", "bind_count", "client_login_count"};
  CHECK(column_names(console_show(admin, "STATS_TOTALS")) == totals);
  std::vector<std::string> averages = {"database", "server_assignment_count", "xact_count", "query_count",
                                       "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
                                       "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
                                       "avg_client_login_count"};
  CHECK(column_names(console_show(admin, "STATS_AVERAGES")) == averages);
  Result t = console_show(admin, "TOTALS");
  INFO("SHOW TOTALS:\n" << dump(t));
  std::vector<std::string> names;
  for (int r = 0; r < t.rows(); ++r) names.push_back(t.value(r, 0));
  CHECK(names == std::vector<std::string>{
                     "total_server_assignment_count", "total_xact_count", "total_query_count",
                     "total_client_bytes", "total_server_bytes", "total_xact_time", "total_query_time",
                     "total_wait_time", "total_ps_client_parse_count", "total_ps_server_parse_count",
                     "total_ps_bind_count", "total_client_login_count", "avg_server_assignment_count",
                     "avg_xact_count", "avg_query_count", "avg_client_bytes", "avg_server_bytes", "avg_xact_time",
                     "avg_query_time", "avg_wait_time", "avg_ps_client_parse_count", "avg_ps_server_parse_count",
                     "avg_ps_bind_count", "avg_client_login_count"});
  // Each console query is a transaction and a query of the console's database:
  // SHOW STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS and this one.
  Result again = console_show(admin, "STATS_TOTALS");
  CHECK(cell(again, {{"database", "pgbouncer"}}, "query_count") == "5");
  CHECK(cell(again, {{"database", "pgbouncer"}}, "xact_count") == "5");
  CHECK(cell(again, {{"database", "appdb"}}, "query_count") == "1");
}

TEST_CASE("server_lifetime = 0 uses each server connection once", "[console125]") {
  PoolerConfig cfg;
  cfg.pool_mode = "session";
  cfg.extra["server_lifetime"] = "0";
  Pooler p(cfg);
  std::set<std::string> pids;
  for (int i = 0; i < 3; ++i) {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    pids.insert(c.value("SELECT pg_backend_pid()"));
  }
  CHECK(pids.size() == 3);
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  CHECK(wait_for([&] { return console_show(admin, "SERVERS").rows() == 0; }, 10));
}

TEST_CASE("max_db_connections: waiting clients of one user evict another user's idle server", "[console125]") {
  PoolerConfig cfg;
  cfg.extra_databases["narrow"] = "cluster = \"main\"\ndbname = \"appdb\"\nmax_db_connections = 1";
  Pooler p(cfg);
  Conn app(p.conninfo("app", "app", "narrow"));
  REQUIRE(app.ok());
  CHECK(app.value("SELECT 1") == "1");  // app's server is idle now, and holds the only slot
  Conn other(p.conninfo("md5user", "md5pass", "narrow"));
  INFO("md5user: " << other.error());
  REQUIRE(other.ok());
  CHECK(other.value("SELECT current_user", 15) == "md5user");
  CHECK(p.log().find("closing because: evicted") != std::string::npos);
  // And back: app's next query evicts md5user's idle server.
  CHECK(app.value("SELECT current_user", 15) == "app");
}

TEST_CASE("min_pool_size of a forced-user database opens servers before any client", "[console125]") {
  PoolerConfig cfg;
  cfg.extra_databases["warm"] =
      "cluster = \"main\"\ndbname = \"appdb\"\nuser = \"md5user\"\npassword = \"md5pass\"\nmin_pool_size = 2";
  int before = backends_of("md5user");
  Pooler p(cfg);
  INFO("md5user backends before: " << before);
  CHECK(wait_for([&] { return backends_of("md5user") >= before + 2; }, 15));
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  CHECK(wait_for([&] { return cell(console_show(admin, "POOLS"), {{"database", "warm"}, {"user", "md5user"}}, "sv_idle") == "2"; },
                 10));
}

TEST_CASE("a server beyond pool_size from the reserve is logged as PgBouncer logs it", "[console125]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 1;
  cfg.extra["reserve_pool_size"] = "1";
  cfg.extra["reserve_pool_timeout"] = "0.5";
  Pooler p(cfg);
  Conn holder(p.conninfo());
  REQUIRE(holder.ok());
  holder.exec_ok("BEGIN");
  holder.exec_ok("SELECT 1");
  Conn waiter(p.conninfo());
  REQUIRE(waiter.ok());
  // It waits for the reserve_pool_timeout, then gets the reserve server.
  CHECK(waiter.value("SELECT 2", 15) == "2");
  CHECK(p.log().find("taking connection from reserve_pool") != std::string::npos);
  holder.exec_ok("COMMIT");
}

TEST_CASE("prepared statements: a lowered max_prepared_statements evicts the surplus; counters count tracked ones",
          "[console125][prepared]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 1;  // one server: the statements all live on it
  cfg.extra["max_prepared_statements"] = "5";
  Pooler p(cfg);
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  auto prepare_and_run = [&](int i) {
    std::string name = "s" + std::to_string(i), sql = "SELECT " + std::to_string(i);
    PGresult* r = PQprepare(c, name.c_str(), sql.c_str(), 0, nullptr);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = PQexecPrepared(c, name.c_str(), 0, nullptr, nullptr, nullptr, 0);
    ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK && std::string(PQgetvalue(r, 0, 0)) == std::to_string(i);
    PQclear(r);
    return ok;
  };
  for (int i = 0; i < 5; ++i) CHECK(prepare_and_run(i));
  CHECK(c.value("SELECT count(*) FROM pg_prepared_statements") == "5");
  admin.exec_ok("SET max_prepared_statements = 2");
  CHECK(prepare_and_run(5));
  CHECK(c.value("SELECT count(*) FROM pg_prepared_statements") == "2");
  Result totals = console_show(admin, "STATS_TOTALS");
  INFO("SHOW STATS_TOTALS:\n" << dump(totals));
  CHECK(cell(totals, {{"database", "appdb"}}, "client_parse_count") == "6");
  CHECK(cell(totals, {{"database", "appdb"}}, "bind_count") == "6");

  // Untracked (max_prepared_statements = 0): the unnamed statements of
  // PQexecParams pass through uncounted.
  admin.exec_ok("SET max_prepared_statements = 0");
  PGresult* r = PQexecParams(c, "SELECT $1::int", 1, nullptr, std::vector<const char*>{"7"}.data(), nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  CHECK(cell(console_show(admin, "STATS_TOTALS"), {{"database", "appdb"}}, "client_parse_count") == "6");
}
