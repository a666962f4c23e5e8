// Protocol-level (named) prepared statements, the edge cases ([prepared]): an
// unknown statement name (PostgreSQL's error, the connection stays usable), errors
// inside extended-protocol sequences (a failing execution, a Parse the server
// refuses, a hidden Parse refused in an aborted transaction), statement mode,
// pipelines that mix new and already-prepared statements, the prepared-statement
// counts of SHOW CLIENTS / SERVERS / STATS, and max_prepared_statements = 0 and
// session mode, where named statements pass through unchanged. The main cases are in
// test_prepared.cpp; the helpers both use in prepared_fixture.hpp.
#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "prepared_fixture.hpp"

namespace {

// Direct superuser connection for watching pg_stat_activity and holding locks.
std::string lock_waiters(Conn& direct, const std::string& query_prefix) {
  return direct.value("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '" +
                      query_prefix + "%'");
}

}  // namespace

// ---------------------------------------------------------------------------
// 6. Unknown statements

TEST_CASE("an unknown statement name gives PostgreSQL's error and the connection stays usable", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 2));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  prepare_ok(c, "known", "SELECT $1::text");

  for (int i = 0; i < 3; ++i) {
    Result r = exec_prepared(c, "nosuch");
    INFO("PQexecPrepared(nosuch): " << r.message());
    CHECK(r.status() == PGRES_FATAL_ERROR);
    CHECK(r.sqlstate() == "26000");
    CHECK(contains_icase(r.message(), "prepared statement \"nosuch\" does not exist"));
    CHECK(PQstatus(c) == CONNECTION_OK);
    CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);

    Result d = describe_prepared(c, "nosuch");
    INFO("PQdescribePrepared(nosuch): " << d.message());
    CHECK(d.sqlstate() == "26000");

    CHECK(c.value("SELECT 'simple'") == "simple");
    CHECK(run_prepared(c, "known", {"still works"}) == "still works");
  }
}

// ---------------------------------------------------------------------------
// 7. Errors inside extended-protocol sequences

TEST_CASE("a prepared statement that fails does not disturb the next executions", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 2));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  prepare_ok(c, "div", "SELECT 100 / $1::int");
  prepare_ok(c, "echo", "SELECT $1::text");

  for (int i = 0; i < 5; ++i) {
    Result bad = exec_prepared(c, "div", {"0"});
    INFO("division by zero: " << bad.message());
    CHECK(bad.sqlstate() == "22012");
    CHECK(run_prepared(c, "div", {"4"}) == "25");
    CHECK(run_prepared(c, "echo", {"ok " + std::to_string(i)}) == "ok " + std::to_string(i));
  }

  // Inside a transaction: the error aborts it, ROLLBACK, and on we go.
  c.exec_ok("BEGIN");
  CHECK(run_prepared(c, "div", {"5"}) == "20");
  CHECK(exec_prepared(c, "div", {"0"}).sqlstate() == "22012");
  CHECK(exec_prepared(c, "echo", {"x"}).sqlstate() == "25P02");
  c.exec_ok("ROLLBACK");
  CHECK(run_prepared(c, "div", {"10"}) == "10");

  // In a pipeline: the error skips the rest up to the Sync; the next pipeline works.
  REQUIRE(PQenterPipelineMode(c) == 1);
  const char* zero[1] = {"0"};
  const char* two[1] = {"2"};
  const char* word[1] = {"after"};
  REQUIRE(PQsendQueryPrepared(c, "div", 1, two, nullptr, nullptr, 0) == 1);
  REQUIRE(PQsendQueryPrepared(c, "div", 1, zero, nullptr, nullptr, 0) == 1);
  REQUIRE(PQsendQueryPrepared(c, "echo", 1, word, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  REQUIRE(PQsendQueryPrepared(c, "echo", 1, word, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  CHECK(c.next_result(10).value() == "50");
  REQUIRE_FALSE(c.next_result(10).get());
  CHECK(c.next_result(10).sqlstate() == "22012");
  REQUIRE_FALSE(c.next_result(10).get());
  CHECK(c.next_result(10).status() == PGRES_PIPELINE_ABORTED);
  REQUIRE_FALSE(c.next_result(10).get());
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
  Result after = c.next_result(10);
  INFO("after the error: " << after.message());
  CHECK(after.value() == "after");
  REQUIRE_FALSE(c.next_result(10).get());
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(c) == 1);
  CHECK(run_prepared(c, "div", {"1"}) == "100");
}

// PostgreSQL creates no statement when its Parse fails (syntax error, aborted
// transaction, or a Parse skipped after an earlier error). As in PgBouncer the
// client's name still counts: a Bind of it prepares it again (so it fails again
// with the Parse's own error, or works once the cause is gone: psycopg's pipelines
// rely on that), and a new Parse of the name really reaches the server.
TEST_CASE("a Parse that fails on the server is prepared again when its name is used", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1));
  Conn c(p.conninfo());
  Conn other(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(other.ok());

  SECTION("syntax error") {
    for (int attempt = 0; attempt < 2; ++attempt) {
      Result r = prepare(c, "bad", "SELEC 1");
      INFO("attempt " << attempt << ": PQprepare(bad, SELEC 1): " << r.message());
      CHECK(r.sqlstate() == "42601");
    }
    Result o = prepare(other, "other_bad", "SELEC 1");
    INFO("another client, same query: " << o.message());
    CHECK(o.sqlstate() == "42601");
    Result e = exec_prepared(c, "bad");
    INFO("PQexecPrepared(bad): " << e.message());
    CHECK(e.sqlstate() == "42601");  // the Parse sent again fails as the first did
    prepare_ok(c, "bad", "SELECT 'fixed'::text");
    CHECK(run_prepared(c, "bad") == "fixed");
  }

  SECTION("Parse inside an aborted transaction") {
    c.exec_ok("BEGIN");
    CHECK(c.exec("SELECT 1 / 0").sqlstate() == "22012");
    Result r = prepare(c, "late", "SELECT 'late'::text");
    INFO("PQprepare in an aborted transaction: " << r.message());
    CHECK(r.sqlstate() == "25P02");
    c.exec_ok("ROLLBACK");
    Result e = exec_prepared(c, "late");
    INFO("PQexecPrepared(late) after ROLLBACK: " << e.message());
    CHECK(e.value() == "late");  // prepared again ahead of the Bind
    prepare_ok(c, "late", "SELECT 'late'::text");
    Result ok = exec_prepared(c, "late");
    INFO("PQexecPrepared(late) after a successful PQprepare: " << ok.message());
    CHECK(ok.value() == "late");
    // Another client preparing the same query on that server.
    prepare_ok(other, "o_late", "SELECT 'late'::text");
    Result o = exec_prepared(other, "o_late");
    INFO("other client: " << o.message());
    CHECK(o.value() == "late");
  }

  SECTION("Parse skipped after an error in the same pipeline") {
    REQUIRE(PQenterPipelineMode(c) == 1);
    REQUIRE(PQsendQueryParams(c, "SELECT 1 / 0", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
    REQUIRE(PQsendPrepare(c, "skipped", "SELECT 'skipped'::text", 0, nullptr) == 1);
    REQUIRE(PQpipelineSync(c) == 1);
    CHECK(c.next_result(10).sqlstate() == "22012");
    REQUIRE_FALSE(c.next_result(10).get());
    CHECK(c.next_result(10).status() == PGRES_PIPELINE_ABORTED);
    REQUIRE_FALSE(c.next_result(10).get());
    REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
    REQUIRE(PQexitPipelineMode(c) == 1);

    Result e = exec_prepared(c, "skipped");
    INFO("PQexecPrepared(skipped): " << e.message());
    CHECK(e.value() == "skipped");
    prepare_ok(c, "skipped", "SELECT 'skipped'::text");
    Result ok = exec_prepared(c, "skipped");
    INFO("PQexecPrepared(skipped) after a successful PQprepare: " << ok.message());
    CHECK(ok.value() == "skipped");
    prepare_ok(other, "o_skipped", "SELECT 'skipped'::text");
    Result o = exec_prepared(other, "o_skipped");
    INFO("other client: " << o.message());
    CHECK(o.value() == "skipped");
  }
  CHECK(c.value("SELECT 'in sync'") == "in sync");
  CHECK(p.running());
}

// The same for the Parse pgpivot sends ahead of a Bind: inside an aborted
// transaction the server refuses it (25P02, as PostgreSQL answers the Bind), and
// after ROLLBACK the statement must still be prepared when it is executed.
TEST_CASE("a hidden Parse refused in an aborted transaction is sent again later", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1, 1));  // one statement per server: s2 evicts s1
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  prepare_ok(c, "s1", "SELECT $1::int + 1");
  prepare_ok(c, "s2", "SELECT $1::int + 2");
  c.exec_ok("BEGIN");
  CHECK(c.exec("SELECT 1 / 0").sqlstate() == "22012");
  Result aborted = exec_prepared(c, "s1", {"1"});
  INFO("s1 in the aborted transaction: " << aborted.message());
  CHECK(aborted.sqlstate() == "25P02");
  c.exec_ok("ROLLBACK");
  Result r = exec_prepared(c, "s1", {"1"});
  INFO("s1 after ROLLBACK: " << r.message());
  CHECK(r.value() == "2");
  Result r2 = exec_prepared(c, "s2", {"1"});
  INFO("s2 after ROLLBACK: " << r2.message());
  CHECK(r2.value() == "3");
}

// psycopg's pipelines: a Parse sent after an error of the same pipeline is skipped
// by the server, yet the driver later sends only a Bind of that name. The name
// counts, so pgpivot prepares it ahead of the Bind (what PgBouncer does); against
// PostgreSQL itself this Bind would fail with 26000.
TEST_CASE("a Bind of a name whose Parse an aborted pipeline skipped prepares it first", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("statement", 2));
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(PQenterPipelineMode(c) == 1);
  REQUIRE(PQsendPrepare(c, "one", "SELECT 1", 0, nullptr) == 1);
  REQUIRE(PQsendPrepare(c, "missing", "SELECT * FROM no_such_table_pp", 0, nullptr) == 1);
  REQUIRE(PQsendPrepare(c, "two", "SELECT 'two'::text", 0, nullptr) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  CHECK(c.next_result(10).status() == PGRES_COMMAND_OK);
  REQUIRE_FALSE(c.next_result(10).get());
  CHECK(c.next_result(10).sqlstate() == "42P01");
  REQUIRE_FALSE(c.next_result(10).get());
  CHECK(c.next_result(10).status() == PGRES_PIPELINE_ABORTED);
  REQUIRE_FALSE(c.next_result(10).get());
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(c) == 1);

  Result two = exec_prepared(c, "two");
  INFO("Bind of the skipped statement: " << two.message());
  CHECK(two.value() == "two");
  Result missing = exec_prepared(c, "missing");
  INFO("Bind of the rejected statement: " << missing.message());
  CHECK(missing.sqlstate() == "42P01");  // its Parse sent again, failing as before
  c.exec_ok("CREATE TABLE no_such_table_pp (a int)");
  c.exec_ok("INSERT INTO no_such_table_pp VALUES (7)");
  Result found = exec_prepared(c, "missing");
  INFO("after CREATE TABLE: " << found.message());
  CHECK(found.value() == "7");
  c.exec_ok("DROP TABLE no_such_table_pp");
  // A new Parse of a name whose Parse failed replaces it (no "already prepared").
  Conn d(p.conninfo());
  REQUIRE(d.ok());
  CHECK(prepare(d, "x", "SELEC 1").sqlstate() == "42601");
  prepare_ok(d, "x", "SELECT 'fixed'::text");
  CHECK(run_prepared(d, "x") == "fixed");
  CHECK(prepare(d, "x", "SELECT 2").sqlstate() == "42P05");  // a working name is not replaced
}

// Transaction mode: messages the client sent after a Sync are already on the
// server when that Sync's ReadyForQuery comes back, so the server must stay with
// the client (PgBouncer's test_pause_before_last_sync). Were it released, another
// client could take it and the rest of the pipeline would run on a server without
// the unnamed statement.
TEST_CASE("the server stays with a pipeline whose next messages came before the ReadyForQuery",
          "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 2));
  Conn c(p.conninfo());
  Conn other(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(other.ok());
  REQUIRE(PQenterPipelineMode(c) == 1);
  const char* a[1] = {"a"};
  REQUIRE(PQsendPrepare(c, "", "SELECT pg_backend_pid()::text || $1::text", 0, nullptr) == 1);
  REQUIRE(PQsendQueryPrepared(c, "", 1, a, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  REQUIRE(PQsendPrepare(c, "", "SELECT pg_backend_pid()::text || $1::text", 0, nullptr) == 1);
  REQUIRE(PQflush(c) == 0);
  CHECK(c.next_result(10).status() == PGRES_COMMAND_OK);
  REQUIRE_FALSE(c.next_result(10).get());
  Result first = c.next_result(10);
  REQUIRE(first.status() == PGRES_TUPLES_OK);
  std::string pid = first.value();
  REQUIRE(pid.size() > 1);
  pid.pop_back();  // the "a"
  REQUIRE_FALSE(c.next_result(10).get());
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);

  sleep_s(0.5);  // time for a wrongly released server to be taken
  other.exec_ok("BEGIN");
  std::string other_pid = other.value("SELECT pg_backend_pid()::text");
  CHECK(other_pid != pid);

  const char* b[1] = {"b"};
  REQUIRE(PQsendQueryPrepared(c, "", 1, b, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  Result parsed = c.next_result(10);
  INFO("the second Parse: " << parsed.message());
  CHECK(parsed.status() == PGRES_COMMAND_OK);
  REQUIRE_FALSE(c.next_result(10).get());
  Result second = c.next_result(10);
  INFO("the Bind after the Sync: " << second.message());
  CHECK(second.value() == pid + "b");
  REQUIRE_FALSE(c.next_result(10).get());
  REQUIRE(c.next_result(10).status() == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(c) == 1);
  other.exec_ok("COMMIT");
  // Released after the last Sync: the other client's server is free again, and
  // with pool_size 2 a new transaction of each still runs.
  CHECK(c.value("SELECT 'free'") == "free");
  CHECK(other.value("SELECT 'free'") == "free");
}

// ---------------------------------------------------------------------------
// 8. Statement mode

TEST_CASE("prepared statements work across statements in statement mode", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("statement", 2));
  Conn a(p.conninfo());
  Conn b(p.conninfo());
  Conn direct(direct_conninfo());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(direct.ok());
  prepare_ok(a, "pid", "SELECT pg_backend_pid()");
  prepare_ok(a, "add", "SELECT $1::int + $2::int");

  // B's statement waits for a lock held by `direct`, keeping the server A used
  // last busy (the pool has only that one yet), so A's next statement runs on
  // the other server.
  std::set<std::string> pids;
  const std::string blocker = "SELECT pg_advisory_xact_lock(914271)";
  for (int i = 0; i < 3; ++i) {
    pids.insert(run_prepared(a, "pid"));
    direct.exec_ok("SELECT pg_advisory_lock(914271)");
    b.send(blocker);
    REQUIRE(eventually([&] { return lock_waiters(direct, blocker) == "1"; }));
    pids.insert(run_prepared(a, "pid"));
    CHECK(run_prepared(a, "add", {std::to_string(i), "40"}) == std::to_string(i + 40));
    direct.exec_ok("SELECT pg_advisory_unlock(914271)");
    Result r = collect(b);
    INFO("blocker: " << r.message());
    CHECK(r.ok());
  }
  INFO("backend pids seen by A: " << pids.size());
  CHECK(pids.size() >= 2);
  for (int i = 0; i < 10; ++i) CHECK(run_prepared(a, "add", {std::to_string(i), "1"}) == std::to_string(i + 1));
}

// ---------------------------------------------------------------------------
// 9. Pipelines

TEST_CASE("a pipeline mixes new and already-prepared statements with one Sync", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 2));
  Conn a(p.conninfo());
  Conn b(p.conninfo());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  prepare_ok(a, "old", "SELECT $1::int * 10");
  std::string old_pid = a.value("SELECT pg_backend_pid()");
  // B holds the only server so far: the pipeline runs on a new one, where "old"
  // has to be prepared first.
  b.exec_ok("BEGIN");
  REQUIRE(b.value("SELECT pg_backend_pid()") == old_pid);

  REQUIRE(PQenterPipelineMode(a) == 1);
  const char* one[1] = {"1"};
  const char* two[1] = {"2"};
  const char* three[1] = {"3"};
  REQUIRE(PQsendQueryPrepared(a, "old", 1, one, nullptr, nullptr, 0) == 1);                 // 10
  REQUIRE(PQsendPrepare(a, "new1", "SELECT $1::int + 1000", 0, nullptr) == 1);              // prepared
  REQUIRE(PQsendQueryPrepared(a, "new1", 1, two, nullptr, nullptr, 0) == 1);                // 1002
  REQUIRE(PQsendPrepare(a, "old_alias", "SELECT $1::int * 10", 0, nullptr) == 1);           // on the server now
  REQUIRE(PQsendQueryPrepared(a, "old_alias", 1, three, nullptr, nullptr, 0) == 1);         // 30
  REQUIRE(PQsendQueryPrepared(a, "old", 1, two, nullptr, nullptr, 0) == 1);                 // 20
  REQUIRE(PQsendPrepare(a, "new2", "SELECT pg_backend_pid()", 0, nullptr) == 1);            // prepared
  REQUIRE(PQsendQueryPrepared(a, "new2", 0, nullptr, nullptr, nullptr, 0) == 1);            // pid
  REQUIRE(PQsendDescribePrepared(a, "new1") == 1);                                          // 1 param
  REQUIRE(PQpipelineSync(a) == 1);

  struct Want {
    ExecStatusType status;
    std::string value;  // "" = not checked
  };
  std::vector<Want> wants = {{PGRES_TUPLES_OK, "10"},  {PGRES_COMMAND_OK, ""}, {PGRES_TUPLES_OK, "1002"},
                             {PGRES_COMMAND_OK, ""},   {PGRES_TUPLES_OK, "30"}, {PGRES_TUPLES_OK, "20"},
                             {PGRES_COMMAND_OK, ""},   {PGRES_TUPLES_OK, ""},  {PGRES_COMMAND_OK, ""}};
  std::string pipeline_pid;
  for (std::size_t i = 0; i < wants.size(); ++i) {
    Result r = a.next_result(10);
    INFO("pipeline result " << i << ": " << PQresStatus(r.status()) << " " << r.message());
    CHECK(r.status() == wants[i].status);
    if (!wants[i].value.empty()) CHECK(r.value() == wants[i].value);
    if (i == 7) pipeline_pid = r.value();
    if (i == 8) CHECK((r.get() && PQnparams(r.get()) == 1));
    REQUIRE_FALSE(a.next_result(10).get());
  }
  REQUIRE(a.next_result(10).status() == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(a) == 1);
  CHECK(pipeline_pid != old_pid);
  b.exec_ok("COMMIT");

  // Everything prepared in the pipeline works afterwards, wherever it runs.
  for (int i = 0; i < 4; ++i) {
    CHECK(run_prepared(a, "new1", {std::to_string(i)}) == std::to_string(1000 + i));
    CHECK(run_prepared(a, "old_alias", {std::to_string(i)}) == std::to_string(10 * i));
  }
}

// ---------------------------------------------------------------------------
// 10. SHOW CLIENTS / SERVERS / STATS

TEST_CASE("SHOW CLIENTS, SERVERS and STATS count prepared statements, parses and binds", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1));
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  Conn a(p.conninfo());
  REQUIRE(a.ok());
  PsStats s0 = ps_stats(admin);

  // Three names for two distinct queries.
  prepare_ok(a, "x", "SELECT $1::int + 1");
  prepare_ok(a, "y", "SELECT $1::int + 2");
  prepare_ok(a, "x_again", "SELECT $1::int + 1");
  CHECK(client_prepared(admin, a) == "3");
  auto per_server = server_prepared(admin);
  REQUIRE(per_server.size() == 1);
  CHECK(per_server[0] == 2);
  PsStats s1 = ps_stats(admin);
  CHECK(s1.client_parse - s0.client_parse == 3);
  CHECK(s1.server_parse - s0.server_parse == 2);
  CHECK(s1.bind == s0.bind);

  const int executions = 7;
  for (int i = 0; i < executions; ++i) {
    const char* name = i % 3 == 0 ? "x" : i % 3 == 1 ? "y" : "x_again";
    CHECK(!run_prepared(a, name, {std::to_string(i)}).empty());
  }
  PsStats s2 = ps_stats(admin);
  CHECK(s2.bind - s1.bind == executions);
  CHECK(s2.client_parse == s1.client_parse);
  CHECK(s2.server_parse == s1.server_parse);

  a.exec_ok("DEALLOCATE ALL");
  CHECK(client_prepared(admin, a) == "0");
  per_server = server_prepared(admin);
  REQUIRE(per_server.size() == 1);
  CHECK(per_server[0] == 0);
}

// ---------------------------------------------------------------------------
// 11. max_prepared_statements = 0, and session mode

TEST_CASE("without tracking, named statements pass through unchanged", "[prepared]") {
  if (skip_for_pgbouncer()) return;

  SECTION("session mode, max_prepared_statements = 0") {
    Pooler p(cfg_for("session", 2, 0));
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    prepare_ok(c, "s1", "SELECT $1::int + 1");
    for (int i = 0; i < 5; ++i) {
      c.exec_ok("BEGIN");
      CHECK(run_prepared(c, "s1", {std::to_string(i)}) == std::to_string(i + 1));
      c.exec_ok("COMMIT");
    }
    CHECK(c.value("SELECT string_agg(name, ',') FROM pg_prepared_statements") == "s1");
  }

  SECTION("session mode with the default max_prepared_statements: not rewritten either") {
    Pooler p(cfg_for("session", 2));
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    prepare_ok(c, "s1", "SELECT $1::int + 1");
    CHECK(run_prepared(c, "s1", {"1"}) == "2");
    CHECK(c.value("SELECT string_agg(name, ',') FROM pg_prepared_statements") == "s1");
  }

  // In transaction mode with tracking off, a statement exists only on the server
  // it was prepared on: a later transaction on another server fails with 26000
  // (as with PgBouncer before 1.21). With a pool of one server it keeps working.
  SECTION("transaction mode, max_prepared_statements = 0, one server") {
    Pooler p(cfg_for("transaction", 1, 0));
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    prepare_ok(c, "s1", "SELECT $1::int + 1");
    for (int i = 0; i < 3; ++i) CHECK(run_prepared(c, "s1", {std::to_string(i)}) == std::to_string(i + 1));
    CHECK(c.value("SELECT string_agg(name, ',') FROM pg_prepared_statements") == "s1");
  }
}
