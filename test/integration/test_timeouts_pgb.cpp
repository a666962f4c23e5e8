// PgBouncer 1.24/1.25's timeouts against the real PostgreSQL: transaction_timeout
// (global and per user, simple and extended protocol), the [users] section's own
// query_timeout / idle_transaction_timeout / client_idle_timeout over [pooler]'s,
// a database's query_wait_timeout (and a user's over it), and query_timeout bounding
// a wait for a server that cannot be reached. The texts are PgBouncer's.
#include <catch2/catch.hpp>

#include <chrono>
#include <sstream>
#include <string>

#include "harness.hpp"

using namespace itest;

namespace {

// A whole TOML config: users app/app and md5user/md5pass, each with more inline-table
// keys (`app_keys`, `md5_keys`, e.g. "query_timeout = 1"), [pooler] keys `pooler`,
// database appdb plus `more_dbs` (whole [databases.X] sections).
std::string config(const std::string& pooler, const std::string& app_keys, const std::string& md5_keys = "",
                   const std::string& more_dbs = "") {
  std::ostringstream o;
  o << "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = 6432\nunix_socket_dir = \"\"\n"
    << "pool_mode = \"transaction\"\ndefault_pool_size = 5\nauth_type = \"scram-sha-256\"\n"
    << "admin_users = [\"admin\"]\n"
    << pooler << "\n[users]\n"
    << "app = { password = \"app\"" << (app_keys.empty() ? "" : ", " + app_keys) << " }\n"
    << "md5user = { password = \"md5pass\"" << (md5_keys.empty() ? "" : ", " + md5_keys) << " }\n"
    << "admin = { password = \"admin\" }\n"
    << "\n[clusters.main]\nprimary = { host = \"127.0.0.1\", port = " << env().pg_port << " }\n"
    << "\n[databases.appdb]\ncluster = \"main\"\n"
    << more_dbs;
  return o.str();
}

PoolerConfig raw(const std::string& toml) {
  PoolerConfig c;
  c.raw_toml = toml;
  return c;
}

// The error a statement got, or the connection's when the server side closed it.
std::string error_of(const Result& r, const Conn& c) {
  return r.message().empty() ? c.error() : r.message() + " | " + c.error();
}

// Backends of `user` PostgreSQL still has in a transaction or running a query.
std::string busy_backends(const std::string& user) {
  Conn d(direct_conninfo());
  REQUIRE(d.ok());
  return d.value("SELECT count(*) FROM pg_stat_activity WHERE usename = '" + user +
                 "' AND state <> 'idle' AND pid <> pg_backend_pid()");
}

Result exec_params(Conn& c, const std::string& sql) {
  // Parse/Bind/Execute/Sync: the extended protocol.
  return Result(PQexecParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0));
}

}  // namespace

TEST_CASE("transaction_timeout closes a transaction that lasts too long (simple protocol)", "[timeouts125]") {
  if (env().use_pgbouncer) return;  // Debian's PgBouncer 1.18 has no transaction_timeout
  Pooler p(raw(config("transaction_timeout = 2", "")));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  c.exec_ok("SELECT 1");
  sleep_s(0.8);
  CHECK(c.value("SELECT 2") == "2");  // inside the limit: works, and does not restart the clock
  sleep_s(2.5);
  Result r = c.exec("SELECT 3", 10);
  std::string err = error_of(r, c);
  INFO("after 3.3 s in a transaction: " << err);
  CHECK_FALSE(r.ok());
  CHECK(err.find("transaction timeout") != std::string::npos);
  CHECK(err.find("25P04") != std::string::npos);
  CHECK(p.log().find("closing because: transaction timeout") != std::string::npos);
  // The transaction is gone on the server too, and the pool still serves.
  CHECK(wait_for([] { return busy_backends("app") == "0"; }, 10));
  Conn again(p.conninfo());
  REQUIRE(again.ok());
  CHECK(again.value("SELECT 4") == "4");

  SECTION("short transactions, one after another, are not affected") {
    Conn s(p.conninfo());
    REQUIRE(s.ok());
    for (int i = 0; i < 4; i++) {
      s.exec_ok("BEGIN");
      s.exec_ok("SELECT 1");
      s.exec_ok("COMMIT");
      sleep_s(0.8);  // 3.2 s in all, idle between transactions
    }
    CHECK(s.value("SELECT 5") == "5");
  }
}

TEST_CASE("transaction_timeout (extended protocol): a transaction, and an autocommit statement running too long",
          "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("transaction_timeout = 2", "")));
  SECTION("a transaction opened and used through Parse/Bind/Execute/Sync") {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    REQUIRE(exec_params(c, "BEGIN").ok());
    REQUIRE(exec_params(c, "SELECT 1").ok());
    sleep_s(3);
    Result r = exec_params(c, "SELECT 2");
    std::string err = error_of(r, c);
    INFO("after 3 s in a transaction: " << err);
    CHECK_FALSE(r.ok());
    CHECK(err.find("transaction timeout") != std::string::npos);
  }
  SECTION("a statement outside a transaction is a transaction of its own") {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    double t0 = now_s();
    Result r = exec_params(c, "SELECT pg_sleep(30)");
    double took = now_s() - t0;
    std::string err = error_of(r, c);
    INFO("pg_sleep(30) ended after " << took << " s: " << err);
    CHECK_FALSE(r.ok());
    CHECK(err.find("transaction timeout") != std::string::npos);
    CHECK(took < 15);
    // The backend was cancelled, not left sleeping.
    CHECK(wait_for([] { return busy_backends("app") == "0"; }, 10));
  }
}

TEST_CASE("a user's transaction_timeout overrides [pooler]'s", "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("transaction_timeout = 100", "transaction_timeout = 2")));
  Conn c(p.conninfo());
  Conn other(p.conninfo("md5user", "md5pass"));
  REQUIRE(c.ok());
  REQUIRE(other.ok());
  c.exec_ok("BEGIN");
  other.exec_ok("BEGIN");
  c.exec_ok("SELECT 1");
  other.exec_ok("SELECT 1");
  sleep_s(3);
  Result r = c.exec("SELECT 2", 10);
  std::string err = error_of(r, c);
  INFO("app (transaction_timeout 2) after 3 s: " << err);
  CHECK_FALSE(r.ok());
  CHECK(err.find("transaction timeout") != std::string::npos);
  // md5user has [pooler]'s 100 s.
  CHECK(other.value("SELECT 3") == "3");
  other.exec_ok("COMMIT");
}

TEST_CASE("a user's query_timeout overrides [pooler]'s; the client hears 57014 and keeps its connection",
          "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("query_timeout = 100", "query_timeout = 1")));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  double t0 = now_s();
  Result r = c.exec("SELECT pg_sleep(20)", 30);
  double took = now_s() - t0;
  INFO("pg_sleep(20) as app ended after " << took << " s: " << error_of(r, c));
  CHECK_FALSE(r.ok());
  CHECK(r.sqlstate() == "57014");
  CHECK(r.message().find("57014: query timeout") != std::string::npos);
  CHECK(took < 10);
  CHECK(p.log().find("closing because: query timeout") != std::string::npos);
  CHECK(c.value("SELECT 1") == "1");  // pgpivot keeps the client
  CHECK(wait_for([] { return busy_backends("app") == "0"; }, 10));  // the statement was cancelled
  // md5user: [pooler]'s 100 s.
  Conn other(p.conninfo("md5user", "md5pass"));
  REQUIRE(other.ok());
  Result slow = other.exec("SELECT pg_sleep(2)", 30);
  INFO("pg_sleep(2) as md5user: " << error_of(slow, other));
  CHECK(slow.ok());
}

TEST_CASE("a user's idle_transaction_timeout overrides [pooler]'s", "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("idle_transaction_timeout = 100", "idle_transaction_timeout = 1")));
  Conn c(p.conninfo());
  Conn other(p.conninfo("md5user", "md5pass"));
  REQUIRE(c.ok());
  REQUIRE(other.ok());
  c.exec_ok("BEGIN");
  other.exec_ok("BEGIN");
  c.exec_ok("SELECT 1");
  other.exec_ok("SELECT 1");
  sleep_s(2.5);
  Result r = c.exec("SELECT 2", 10);
  std::string err = error_of(r, c);
  INFO("app idle in a transaction for 2.5 s: " << err);
  CHECK_FALSE(r.ok());
  CHECK(err.find("idle transaction timeout") != std::string::npos);
  CHECK(err.find("25P03") != std::string::npos);
  CHECK(p.log().find("closing because: idle transaction timeout") != std::string::npos);
  CHECK(wait_for([] { return busy_backends("app") == "0"; }, 10));
  CHECK(other.value("SELECT 3") == "3");
  other.exec_ok("COMMIT");
}

TEST_CASE("a user's client_idle_timeout overrides [pooler]'s", "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("client_idle_timeout = 100", "client_idle_timeout = 1")));
  Conn c(p.conninfo());
  Conn other(p.conninfo("md5user", "md5pass"));
  REQUIRE(c.ok());
  REQUIRE(other.ok());
  c.exec_ok("SELECT 1");
  other.exec_ok("SELECT 1");
  sleep_s(2.5);
  Result r = c.exec("SELECT 2", 10);
  std::string err = error_of(r, c);
  INFO("app idle for 2.5 s: " << err);
  CHECK_FALSE(r.ok());
  CHECK(err.find("client_idle_timeout") != std::string::npos);
  CHECK(other.value("SELECT 3") == "3");
}

TEST_CASE("a database's query_wait_timeout overrides [pooler]'s, and a user's overrides the database's",
          "[timeouts125]") {
  if (env().use_pgbouncer) return;
  Pooler p(raw(config("query_wait_timeout = 100", "", "query_wait_timeout = 20",
                      "\n[databases.narrow]\ncluster = \"main\"\ndbname = \"appdb\"\npool_size = 1\n"
                      "query_wait_timeout = 1\n")));
  SECTION("the database's 1 s") {
    Conn busy(p.conninfo("app", "app", "narrow"));
    Conn waiter(p.conninfo("app", "app", "narrow"));
    REQUIRE(busy.ok());
    REQUIRE(waiter.ok());
    busy.send("SELECT pg_sleep(4)");
    sleep_s(0.3);
    double t0 = now_s();
    Result r = waiter.exec("SELECT 'should not run'", 20);
    double waited = now_s() - t0;
    std::string err = error_of(r, waiter);
    INFO("waiter after " << waited << " s: " << err);
    CHECK_FALSE(r.ok());
    CHECK(err.find("query_wait_timeout") != std::string::npos);
    CHECK(err.find("57014") != std::string::npos);
    CHECK(waited < 3.5);  // well before the busy client's server is free
    Result slow = busy.next_result(20);
    INFO("busy client: " << slow.message());
    CHECK(slow.ok());
  }
  SECTION("md5user's own 20 s: it waits for the server") {
    Conn busy(p.conninfo("md5user", "md5pass", "narrow"));
    Conn waiter(p.conninfo("md5user", "md5pass", "narrow"));
    REQUIRE(busy.ok());
    REQUIRE(waiter.ok());
    busy.send("SELECT pg_sleep(2.5)");
    sleep_s(0.3);
    Result r = waiter.exec("SELECT 'ran'", 30);
    INFO("waiter: " << error_of(r, waiter));
    CHECK(r.ok());
    CHECK(r.value() == "ran");
  }
}

TEST_CASE("query_timeout bounds a login's wait for a server that cannot be reached; the server is retried",
          "[timeouts125]") {
  if (env().use_pgbouncer) return;
  int dead = free_port();
  Pooler p(raw(config("query_timeout = 3\nserver_login_retry = 1", "",  "",
                      "\n[clusters.dead]\nprimary = { host = \"127.0.0.1\", port = " + std::to_string(dead) +
                          " }\n\n[databases.deaddb]\ncluster = \"dead\"\ndbname = \"appdb\"\n")));
  double t0 = now_s();
  Conn c(p.conninfo("app", "app", "deaddb"), 20);
  double took = now_s() - t0;
  INFO("login to deaddb failed after " << took << " s: " << c.error());
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().find("query_timeout") != std::string::npos);
  CHECK(c.error().find("could not connect") != std::string::npos);  // why no server came
  CHECK(took > 2);
  CHECK(took < 10);
  // It was retried every server_login_retry while the client waited.
  std::string log = p.log();
  std::size_t fails = 0;
  for (std::size_t at = log.find("closing because: connect failed"); at != std::string::npos;
       at = log.find("closing because: connect failed", at + 1))
    fails++;
  INFO(log);
  CHECK(fails >= 2);
  // The other databases are unaffected.
  Conn ok(p.conninfo());
  REQUIRE(ok.ok());
  CHECK(ok.value("SELECT 1") == "1");
}

namespace {

void collect_notice(void* arg, const PGresult* r) {
  static_cast<std::vector<std::string>*>(arg)->push_back(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
}

}  // namespace

TEST_CASE("query_wait_notify: a client queued that long is told so, once per wait", "[timeouts125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.25's key
  Pooler p(raw(config("query_wait_notify = 1", "", "",
                      "\n[databases.narrow]\ncluster = \"main\"\ndbname = \"appdb\"\npool_size = 1\n")));
  Conn busy(p.conninfo("app", "app", "narrow"));
  Conn waiter(p.conninfo("app", "app", "narrow"));
  REQUIRE(busy.ok());
  REQUIRE(waiter.ok());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(waiter, collect_notice, &notices);
  const std::string text = "No server connection available in postgres backend, client being queued";
  for (int round = 1; round <= 2; round++) {
    busy.send("SELECT pg_sleep(2.5)");
    sleep_s(0.3);
    Result r = waiter.exec("SELECT 'ran'", 30);
    INFO("round " << round << ": " << error_of(r, waiter));
    CHECK(r.ok());
    REQUIRE(notices.size() == std::size_t(round));  // one per wait, however long it lasts
    CHECK(notices.back() == text);
    while (busy.next_result(10).get()) {
    }
  }
  // A short wait (or none) is not worth a notice.
  CHECK(waiter.value("SELECT 1") == "1");
  CHECK(notices.size() == 2);
}

TEST_CASE("pool_idle_timeout frees a pool left without clients and servers", "[timeouts125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.25's key
  Pooler p(raw(config("pool_idle_timeout = 1\nserver_idle_timeout = 1", "", "",
                      "\n[databases.kept]\ncluster = \"main\"\ndbname = \"appdb\"\nmin_pool_size = 1\n")));
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  auto pools = [&] {
    Result r = admin.exec("SHOW POOLS");
    REQUIRE(r.ok());
    std::string names;
    for (int i = 0; i < r.rows(); i++) names += r.value(i, 0) + "/" + r.value(i, 1) + " ";
    return names;
  };
  {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT 1") == "1");
    Conn k(p.conninfo("app", "app", "kept"));
    REQUIRE(k.ok());
    CHECK(k.value("SELECT 1") == "1");
    sleep_s(2.5);  // a connected client keeps its pool, idle or not
    CHECK(pools().find("appdb/app") != std::string::npos);
  }
  // Both clients gone: appdb's server closes after server_idle_timeout, then the pool
  // goes after pool_idle_timeout; kept's stays for its min_pool_size.
  bool freed = wait_for([&] { return pools().find("appdb/app") == std::string::npos; }, 15, 0.25);
  INFO("SHOW POOLS: " << pools());
  CHECK(freed);
  CHECK(pools().find("kept/app") != std::string::npos);
  CHECK(p.log().find("cleaning up idle pool for user app on db appdb") != std::string::npos);
  // A new client makes the pool again.
  Conn again(p.conninfo());
  REQUIRE(again.ok());
  CHECK(again.value("SELECT 2") == "2");
  CHECK(pools().find("appdb/app") != std::string::npos);
}
