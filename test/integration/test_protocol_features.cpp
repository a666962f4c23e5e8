// Protocol features through the pooler: pipelined extended queries, errors inside
// transactions, notices, LISTEN/NOTIFY, and statement-mode rules.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

PoolerConfig mode(const std::string& pool_mode, int size = 5) {
  PoolerConfig cfg;
  cfg.pool_mode = pool_mode;
  cfg.default_pool_size = size;
  return cfg;
}

void send_param_query(Conn& c, const char* sql, const std::string& arg) {
  const char* values[1] = {arg.c_str()};
  INFO("error: " << PQerrorMessage(c));
  REQUIRE(PQsendQueryParams(c, sql, 1, nullptr, values, nullptr, nullptr, 0) == 1);
}

void notice_collector(void* arg, const PGresult* res) {
  auto* notices = static_cast<std::vector<std::string>*>(arg);
  const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  notices->push_back(primary ? primary : "");
}

}  // namespace

TEST_CASE("a pipeline of extended-protocol queries with one Sync works in transaction mode", "[protocol]") {
  Pooler p(mode("transaction"));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(PQenterPipelineMode(c) == 1);

  for (int i = 1; i <= 3; ++i) send_param_query(c, "SELECT $1::int * 2", std::to_string(i));
  REQUIRE(PQpipelineSync(c) == 1);
  for (int i = 1; i <= 3; ++i) {
    Result r = c.next_result(10);
    INFO("query " << i << ": " << r.message());
    REQUIRE(r.status() == PGRES_TUPLES_OK);
    CHECK(r.value() == std::to_string(2 * i));
    REQUIRE_FALSE(c.next_result(10).get());
  }
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);

  SECTION("an error aborts the rest of the pipeline up to Sync, and the next pipeline works") {
    send_param_query(c, "SELECT $1::int", "7");
    send_param_query(c, "SELECT 1 / $1::int", "0");
    send_param_query(c, "SELECT $1::int", "8");
    REQUIRE(PQpipelineSync(c) == 1);

    Result first = c.next_result(10);
    CHECK(first.value() == "7");
    REQUIRE_FALSE(c.next_result(10).get());
    Result failed = c.next_result(10);
    CHECK(failed.sqlstate() == "22012");
    REQUIRE_FALSE(c.next_result(10).get());
    Result skipped = c.next_result(10);
    CHECK(skipped.status() == PGRES_PIPELINE_ABORTED);
    REQUIRE_FALSE(c.next_result(10).get());
    REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);

    send_param_query(c, "SELECT $1::text", "after the error");
    REQUIRE(PQpipelineSync(c) == 1);
    Result again = c.next_result(10);
    INFO("after the error: " << again.message());
    CHECK(again.value() == "after the error");
    REQUIRE_FALSE(c.next_result(10).get());
    REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
  }

  REQUIRE(PQexitPipelineMode(c) == 1);
  CHECK(c.value("SELECT 'simple again'") == "simple again");
}

TEST_CASE("an error inside a transaction is reported and the session goes on", "[protocol]") {
  Pooler p(mode("transaction", 1));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  Result div = c.exec("SELECT 1 / 0");
  INFO("error: " << div.message());
  CHECK(div.sqlstate() == "22012");
  CHECK(PQtransactionStatus(c) == PQTRANS_INERROR);
  Result blocked = c.exec("SELECT 1");
  CHECK(blocked.sqlstate() == "25P02");
  c.exec_ok("ROLLBACK");
  CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);
  CHECK(c.value("SELECT 42") == "42");

  // The server connection went back to the pool clean: another client can use it.
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  CHECK(other.value("SELECT 'other'") == "other");
}

TEST_CASE("NOTICE messages reach the client", "[protocol]") {
  Pooler p(mode("transaction"));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(c, notice_collector, &notices);
  c.exec_ok("DO $$ BEGIN RAISE NOTICE 'hello from %', 'pgpivot'; END $$");
  REQUIRE(notices.size() == 1);
  CHECK(notices[0] == "hello from pgpivot");
}

TEST_CASE("LISTEN/NOTIFY works in session mode", "[protocol]") {
  Pooler p(mode("session"));
  Conn listener(p.conninfo());
  Conn notifier(p.conninfo());
  REQUIRE(listener.ok());
  REQUIRE(notifier.ok());
  listener.exec_ok("LISTEN itest_channel");
  notifier.exec_ok("NOTIFY itest_channel, 'payload-1'");

  PGnotify* n = nullptr;
  auto t0 = std::chrono::steady_clock::now();
  while (!(n = PQnotifies(listener)) && seconds_since(t0) < 5) listener.wait_readable(0.2);
  REQUIRE(n != nullptr);
  CHECK(std::string(n->relname) == "itest_channel");
  CHECK(std::string(n->extra) == "payload-1");
  CHECK(n->be_pid > 0);
  PQfreemem(n);
}

TEST_CASE("statement mode refuses multi-statement transactions and runs single statements", "[protocol]") {
  Pooler p(mode("statement", 2));

  SECTION("BEGIN; SELECT 1; COMMIT as separate statements fails with a clear error") {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    std::string first_error;
    for (const char* sql : {"BEGIN", "SELECT 1", "COMMIT"}) {
      Result r = c.exec(sql, 10);
      if (!r.ok()) {
        first_error = r.message().empty() ? c.error() : r.message();
        break;
      }
    }
    INFO("error: " << first_error);
    REQUIRE_FALSE(first_error.empty());
    CHECK(contains_icase(first_error, "transaction"));
    c.finish();

    // No server connection may be left inside that transaction.
    sleep_s(0.5);
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    CHECK(d.value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' "
                  "AND state LIKE 'idle in transaction%'") == "0");
  }

  SECTION("single autocommit statements work") {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    for (int i = 0; i < 20; ++i) CHECK(c.value("SELECT " + std::to_string(i)) == std::to_string(i));
    auto r = run_psql(p, "SELECT 'via psql'");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("via psql") != std::string::npos);
  }
}
