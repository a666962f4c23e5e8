// PgBouncer settings beyond the basics: session reset, client limits, idle
// transactions, the Unix socket.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <vector>

#include "harness.hpp"

using namespace itest;

TEST_CASE("session mode resets a server connection before the next client gets it", "[settings]") {
  PoolerConfig cfg;
  cfg.pool_mode = "session";
  cfg.default_pool_size = 1;
  Pooler p(cfg);

  std::string pid;
  {
    Conn a(p.conninfo());
    REQUIRE(a.ok());
    pid = a.value("SELECT pg_backend_pid()");
    a.exec_ok("SET statement_timeout = '4321ms'");
    a.exec_ok("PREPARE itest_stmt AS SELECT 1");
  }
  sleep_s(0.3);
  Conn b(p.conninfo());
  REQUIRE(b.ok());
  CHECK(b.value("SELECT pg_backend_pid()") == pid);  // the same server connection, reused
  CHECK(b.value("SHOW statement_timeout") == "0");
  CHECK(b.value("SELECT count(*) FROM pg_prepared_statements") == "0");
}

TEST_CASE("max_client_conn refuses clients beyond the limit", "[settings]") {
  PoolerConfig cfg;
  cfg.max_client_conn = 3;
  Pooler p(cfg);
  std::vector<Conn> conns;
  for (int i = 0; i < 3; ++i) {
    conns.emplace_back(p.conninfo());
    INFO("client " << i << ": " << conns.back().error());
    REQUIRE(conns.back().ok());
  }
  Conn extra(p.conninfo());
  INFO("4th client: " << extra.error());
  CHECK_FALSE(extra.ok());
  CHECK(extra.error().find("53300") != std::string::npos);  // too_many_connections

  conns.pop_back();
  sleep_s(0.3);
  Conn again(p.conninfo());
  INFO("after one left: " << again.error());
  REQUIRE(again.ok());
  CHECK(again.value("SELECT 1") == "1");
}

TEST_CASE("idle_transaction_timeout closes a client idle inside a transaction", "[settings]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 2;
  cfg.extra["idle_transaction_timeout"] = "1";
  Pooler p(cfg);
  Conn c(p.conninfo("app", "app") + " application_name=itest_idle_tx");
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  c.exec_ok("SELECT 1");
  sleep_s(2.5);
  Result r = c.exec("SELECT 2", 5);
  INFO("after 2.5 s idle in transaction: " << r.message());
  CHECK_FALSE(r.ok());

  Conn d(direct_conninfo());
  REQUIRE(d.ok());
  CHECK(d.value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                "AND state LIKE 'idle in transaction%'") == "0");
}

TEST_CASE("clients can connect over the Unix socket", "[settings]") {
  std::string dir = env().scratch + "/sock";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  PoolerConfig cfg;
  cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
  Pooler p(cfg);
  Conn c("host=" + dir + " port=" + std::to_string(p.port()) +
         " dbname=appdb user=app password=app connect_timeout=10");
  INFO("connection error: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT current_user") == "app");
}
