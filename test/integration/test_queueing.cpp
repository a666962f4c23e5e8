// Clients waiting for a server connection: served first come, first served, and
// given up on with an error after query_wait_timeout.
#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include "harness.hpp"

using namespace itest;

TEST_CASE("clients waiting for a full pool are served in FIFO order", "[queue]") {
  {
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    d.exec_ok("CREATE SEQUENCE IF NOT EXISTS itest_fifo_seq");
    d.exec_ok("GRANT ALL ON SEQUENCE itest_fifo_seq TO app");
  }
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 1;
  Pooler p(cfg);

  Conn holder(p.conninfo());
  REQUIRE(holder.ok());
  std::vector<Conn> waiters;
  for (int i = 0; i < 5; ++i) {
    waiters.emplace_back(p.conninfo());
    REQUIRE(waiters.back().ok());
  }
  holder.exec_ok("BEGIN");
  holder.exec_ok("SELECT 1");  // the only server connection is now held

  for (auto& w : waiters) {
    w.send("SELECT nextval('itest_fifo_seq')");
    sleep_s(0.1);
  }
  sleep_s(0.2);
  for (auto& w : waiters) {
    PQconsumeInput(w);
    CHECK(PQisBusy(w) == 1);  // all of them wait
  }
  holder.exec_ok("COMMIT");

  std::vector<long> order;
  for (auto& w : waiters) {
    Result r = w.next_result(10);
    INFO("waiter: " << r.message());
    REQUIRE(r.ok());
    order.push_back(std::stol(r.value()));
    w.next_result(5);
  }
  for (size_t i = 1; i < order.size(); ++i) {
    INFO("nextval of waiter " << i - 1 << " = " << order[i - 1] << ", of waiter " << i << " = "
                              << order[i]);
    CHECK(order[i] > order[i - 1]);
  }
}

TEST_CASE("query_wait_timeout ends a wait for a busy pool with an error", "[queue]") {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 1;
  cfg.extra["query_wait_timeout"] = "1";
  Pooler p(cfg);

  Conn busy(p.conninfo());
  Conn waiter(p.conninfo());
  REQUIRE(busy.ok());
  REQUIRE(waiter.ok());
  busy.send("SELECT pg_sleep(3)");
  sleep_s(0.2);

  auto t0 = std::chrono::steady_clock::now();
  Result r = waiter.exec("SELECT 'should not run'", 10);
  double waited = seconds_since(t0);
  std::string error = r.message().empty() ? waiter.error() : r.message();
  INFO("waiter after " << waited << " s: " << error);
  CHECK_FALSE(r.ok());
  CHECK(contains_icase(error, "timeout"));
  CHECK(waited > 0.7);
  CHECK(waited < 2.5);

  Result slow = busy.next_result(10);
  INFO("busy client: " << slow.message());
  CHECK(slow.ok());
}
