// Transaction pooling keeps clients apart on shared server connections: session
// settings do not leak, a vanished client's transaction is rolled back, and a
// cancel request reaches the right backend.
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <chrono>

#include "harness.hpp"

using namespace itest;

namespace {

PoolerConfig transaction_pool(int size) {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = size;
  return cfg;
}

}  // namespace

TEST_CASE("SET by one client does not leak to another client on the same server", "[transaction]") {
  Pooler p(transaction_pool(1));  // one server connection: A and B must share it
  Conn a(p.conninfo() + " application_name=start_a");
  Conn b(p.conninfo() + " application_name=start_b");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  const char* reported = PQparameterStatus(b, "TimeZone");
  REQUIRE(reported != nullptr);
  std::string b_timezone = reported;
  REQUIRE(b_timezone != "Asia/Tokyo");

  // Same backend for both, so anything not undone would be visible to B.
  std::string a_pid = a.value("SELECT pg_backend_pid()");
  REQUIRE(b.value("SELECT pg_backend_pid()") == a_pid);

  a.exec_ok("SET application_name = 'leak_a'");
  a.exec_ok("SET statement_timeout = '1234ms'");
  a.exec_ok("SET TimeZone = 'Asia/Tokyo'");

  CHECK(b.value("SHOW statement_timeout") == "0");
  CHECK(b.value("SHOW application_name") == "start_b");
  CHECK(b.value("SHOW TimeZone") == b_timezone);

  // A's tracked parameters are re-applied for A's next statement.
  CHECK(a.value("SHOW TimeZone") == "Asia/Tokyo");
  CHECK(a.value("SHOW application_name") == "leak_a");
}

TEST_CASE("a client that disappears inside a transaction releases its row locks", "[transaction]") {
  {
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    d.exec_ok("CREATE TABLE IF NOT EXISTS itest_lock (id int PRIMARY KEY, v int)");
    d.exec_ok("GRANT ALL ON itest_lock TO app");
    d.exec_ok("INSERT INTO itest_lock VALUES (1, 0) ON CONFLICT DO NOTHING");
  }
  Pooler p(transaction_pool(2));
  const std::string lock_sql = "SELECT v FROM itest_lock WHERE id = 1 FOR UPDATE NOWAIT";

  Conn a(p.conninfo());
  REQUIRE(a.ok());
  a.exec_ok("BEGIN");
  a.exec_ok("SELECT v FROM itest_lock WHERE id = 1 FOR UPDATE");

  Conn b(p.conninfo());
  REQUIRE(b.ok());
  {
    Result held = b.exec(lock_sql);  // proves A really holds the lock
    INFO("while A holds the lock: " << held.message());
    REQUIRE(held.sqlstate() == "55P03");
  }

  SECTION("the client closes its connection with Terminate") { a.finish(); }
  SECTION("the client's socket is shut down without Terminate") {
    ::shutdown(PQsocket(a), SHUT_RDWR);
    a.finish();
  }

  auto t0 = std::chrono::steady_clock::now();
  std::string last_error;
  bool acquired = false;
  while (seconds_since(t0) < 5) {
    Result r = b.exec(lock_sql);
    if (r.ok()) {
      acquired = true;
      break;
    }
    last_error = r.message();
    REQUIRE(r.sqlstate() == "55P03");
    sleep_s(0.1);
  }
  INFO("last error: " << last_error);
  CHECK(acquired);
  CHECK(seconds_since(t0) < 5);
}

TEST_CASE("PQcancel cancels a running query through the pooler", "[transaction]") {
  Pooler p(transaction_pool(5));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.send("SELECT pg_sleep(30)");
  sleep_s(0.3);

  PGcancel* cancel = PQgetCancel(c);
  REQUIRE(cancel != nullptr);
  char err[256] = {0};
  auto t0 = std::chrono::steady_clock::now();
  int sent = PQcancel(cancel, err, sizeof err);
  PQfreeCancel(cancel);
  INFO("PQcancel: " << err);
  REQUIRE(sent == 1);

  Result r = c.next_result(10);
  double elapsed = seconds_since(t0);
  INFO("result: " << r.message());
  CHECK(r.sqlstate() == "57014");
  CHECK(elapsed < 1.5);
  for (int i = 0; i < 5; ++i) {  // drain up to the end of the query's results
    Result more = c.next_result(5);
    if (!more.get()) break;
  }
  CHECK(c.value("SELECT 'still usable'") == "still usable");
}

TEST_CASE("a cancel request only cancels its own client's query", "[transaction]") {
  Pooler p(transaction_pool(2));
  Conn sleeper(p.conninfo());
  Conn idle(p.conninfo());
  REQUIRE(sleeper.ok());
  REQUIRE(idle.ok());
  REQUIRE(idle.value("SELECT 1") == "1");
  sleeper.send("SELECT pg_sleep(1.5)");
  sleep_s(0.3);

  PGcancel* cancel = PQgetCancel(idle);
  REQUIRE(cancel != nullptr);
  char err[256] = {0};
  PQcancel(cancel, err, sizeof err);  // nothing of idle's is running: must be a no-op
  PQfreeCancel(cancel);

  Result r = sleeper.next_result(10);
  INFO("sleeper: " << r.message());
  CHECK(r.ok());
}
