// Protocol-level (named) prepared statements in transaction and statement mode:
// a client's Parse/Bind/Describe/Close keep working although consecutive
// transactions run on different server connections. pgpivot maps each client's
// statement names to pooler-wide statements (PGPIVOT_<n>), prepares them on the
// server a transaction lands on when that server lacks them (hiding the extra
// ParseComplete), bounds each server's set with an LRU (max_prepared_statements)
// and answers errors for unknown names as PostgreSQL does.
//
// This file: pgbench -M prepared, consecutive transactions on different servers,
// eviction (max_prepared_statements), Close and the Parse pgpivot adds, and
// DEALLOCATE ALL / DISCARD ALL. Unknown names, errors inside extended-protocol
// sequences, statement mode, pipelines, SHOW counts and tracking turned off are in
// test_prepared_edge_cases.cpp; the helpers both use in prepared_fixture.hpp.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "prepared_fixture.hpp"

namespace {

// ---------------------------------------------------------------------------
// A raw protocol-3 client: libpq 15 has no API for the Close message, and some
// checks need the exact message sequence the client receives.

std::string be16(unsigned v) { return {char((v >> 8) & 0xff), char(v & 0xff)}; }
std::string be32(unsigned v) {
  return {char((v >> 24) & 0xff), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}
std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }
std::string parse_msg(const std::string& name, const std::string& sql) {
  return message('P', cstr(name) + cstr(sql) + be16(0));
}
std::string bind_msg(const std::string& stmt, const std::vector<std::string>& params, const std::string& portal = "") {
  std::string b = cstr(portal) + cstr(stmt) + be16(0) + be16(unsigned(params.size()));
  for (const auto& p : params) b += be32(unsigned(p.size())) + p;
  return message('B', b + be16(0));
}
std::string execute_msg(const std::string& portal = "") { return message('E', cstr(portal) + be32(0)); }
std::string close_msg(char kind, const std::string& name) { return message('C', std::string(1, kind) + cstr(name)); }
std::string describe_msg(char kind, const std::string& name) {
  return message('D', std::string(1, kind) + cstr(name));
}
std::string sync_msg() { return message('S', ""); }

struct Msg {
  char type = 0;  // 0: nothing arrived in time, or the connection closed
  std::string body;
};

// Field `code` ('C' SQLSTATE, 'M' message) of an ErrorResponse.
std::string error_field(const Msg& m, char code) { return itest::error_field(m.body, code); }

// First column of a DataRow.
std::string datarow_value(const Msg& m) {
  if (m.body.size() < 6) return "<bad DataRow>";
  auto u = [&](std::size_t at) { return static_cast<unsigned char>(m.body[at]); };
  long len = long((u(2) << 24) | (u(3) << 16) | (u(4) << 8) | u(5));
  if (len < 0) return "<null>";
  return m.body.substr(6, std::size_t(len));
}

class RawConn {
 public:
  RawConn(int port, const std::string& user, const std::string& db) : fd_(connect_tcp(port)) {
    if (fd_ >= 0) send(startup_packet({{"user", user}, {"database", db}}));
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool connected() const { return fd_ >= 0; }

  void send(const std::string& bytes) {
    if (fd_ >= 0) send_all_fd(fd_, bytes);
  }

  Msg next(double timeout_s = 10) {
    double deadline = now_s() + timeout_s;
    for (;;) {
      if (in_.size() >= 5) {
        auto u = [&](std::size_t at) { return static_cast<unsigned char>(in_[at]); };
        std::size_t len = (std::size_t(u(1)) << 24) | (u(2) << 16) | (u(3) << 8) | u(4);
        if (in_.size() >= len + 1) {
          Msg m{in_[0], in_.substr(5, len - 4)};
          in_.erase(0, len + 1);
          return m;
        }
      }
      int left_ms = int((deadline - now_s()) * 1000);
      if (fd_ < 0 || left_ms <= 0) return {};
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, left_ms) <= 0) return {};
      char buf[8192];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return {};
      in_.append(buf, std::size_t(n));
    }
  }

  // Every message up to and including the next ReadyForQuery (stops early on timeout/EOF).
  std::vector<Msg> until_ready(double timeout_s = 10) {
    std::vector<Msg> out;
    for (;;) {
      Msg m = next(timeout_s);
      if (m.type == 0) {
        out.push_back(m);
        return out;
      }
      out.push_back(m);
      if (m.type == 'Z') return out;
    }
  }

  // Sends `bytes` and returns the types of the messages received up to ReadyForQuery,
  // e.g. "12DCZ" ('\0' shows as '?'), keeping the messages in `last`.
  std::string roundtrip(const std::string& bytes) {
    send(bytes);
    last = until_ready();
    std::string types;
    for (const auto& m : last) types += m.type ? m.type : '?';
    return types;
  }

  const Msg* find(char type) const {
    for (const auto& m : last)
      if (m.type == type) return &m;
    return nullptr;
  }

  std::vector<Msg> last;

 private:
  int fd_ = -1;
  std::string in_;
};

// Logs in (trust) and checks the login reached ReadyForQuery.
void raw_login(RawConn& rc) {
  REQUIRE(rc.connected());
  auto msgs = rc.until_ready();
  std::string types;
  for (const auto& m : msgs) types += m.type ? m.type : '?';
  INFO("login messages: " << types);
  REQUIRE(!msgs.empty());
  REQUIRE(msgs.front().type == 'R');
  REQUIRE(msgs.back().type == 'Z');
}

// First column of the first DataRow of the last roundtrip.
std::string row_value(const RawConn& rc) {
  const Msg* d = rc.find('D');
  return d ? datarow_value(*d) : "<no DataRow>";
}

std::string describe_error(const RawConn& rc) {
  const Msg* e = rc.find('E');
  return e ? error_field(*e, 'C') + ": " + error_field(*e, 'M') : "(no ErrorResponse)";
}

}  // namespace

// ---------------------------------------------------------------------------
// 1. pgbench -M prepared

namespace {

long pgbench_processed(const std::string& output) {
  std::smatch m;
  static const std::regex re("number of transactions actually processed: ([0-9]+)");
  return std::regex_search(output, m, re) ? std::stol(m[1]) : -1;
}

void require_clean_pgbench(const CommandResult& r) {
  INFO("pgbench output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("number of failed transactions: 0 ") != std::string::npos);
  CHECK(pgbench_processed(r.output) > 0);
}

}  // namespace

// pgbench 15's -M prepared prepares each command the first time a client runs it
// with a *blocking* PQprepare, stalling its whole thread. With the default TPC-B
// script (BEGIN; ...; END) the other clients of that thread may hold every server
// connection inside their open transactions, and they cannot go on while their
// thread is blocked: a deadlock against ANY transaction pooler (PgBouncer too),
// broken only by query_wait_timeout. Scripts without explicit transactions never
// hold a server between statements, so -S and the custom script below are safe.
TEST_CASE("pgbench -M prepared -S with 100 clients on a transaction pool of 5", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 5));
  require_clean_pgbench(run_pgbench(p, "-n -M prepared -S -c 100 -j 2 -T 5"));
  CHECK(p.running());

  // Every client prepared the one statement; the servers prepared it once each.
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  PsStats st = ps_stats(admin);
  CHECK(st.client_parse >= 100);
  CHECK(st.server_parse <= 5);
  CHECK(st.bind > 100);
}

TEST_CASE("pgbench -M prepared with a two-statement script on a transaction pool of 5", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 5));
  std::string script = env().scratch + "/prepared-two-statements.sql";
  {
    std::ofstream out(script, std::ios::trunc);
    out << "\\set aid random(1, 100000)\n"
           "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
           "UPDATE pgbench_accounts SET abalance = abalance WHERE aid = :aid;\n";
    REQUIRE(out.good());
  }
  require_clean_pgbench(run_pgbench(p, "-n -M prepared -f " + script + " -c 50 -j 2 -T 3"));
  CHECK(p.running());

  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  PsStats st = ps_stats(admin);
  CHECK(st.client_parse >= 100);  // 50 clients x 2 statements
  CHECK(st.server_parse <= 10);   // 5 servers x 2 distinct statements
}

// ---------------------------------------------------------------------------
// 2. Consecutive transactions on different servers

TEST_CASE("a prepared statement works on every server consecutive transactions land on", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 2));
  Conn a(p.conninfo());
  Conn b(p.conninfo());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  prepare_ok(a, "s1", "SELECT pg_backend_pid()");
  prepare_ok(a, "s2", "SELECT $1::int * 2 + $2::int");

  // Between two executions of A, B holds the server A used last inside a
  // transaction, so A's next transaction must run on another server.
  std::set<std::string> pids;
  for (int i = 0; i < 6; ++i) {
    std::string before = run_prepared(a, "s1");
    pids.insert(before);
    b.exec_ok("BEGIN");
    std::string held = b.value("SELECT pg_backend_pid()");
    std::string during = run_prepared(a, "s1");
    pids.insert(during);
    CHECK(during != held);
    CHECK(run_prepared(a, "s2", {std::to_string(i), "1"}) == std::to_string(2 * i + 1));
    Result d = describe_prepared(a, "s2");
    INFO("PQdescribePrepared(s2): " << d.message());
    REQUIRE(d.status() == PGRES_COMMAND_OK);
    CHECK(PQnparams(d.get()) == 2);
    CHECK(PQnfields(d.get()) == 1);
    b.exec_ok("COMMIT");
  }
  INFO("backend pids seen by A: " << pids.size());
  CHECK(pids.size() >= 2);

  // Inside one transaction every execution runs on the same server.
  a.exec_ok("BEGIN");
  std::string first = run_prepared(a, "s1");
  CHECK(run_prepared(a, "s1") == first);
  CHECK(run_prepared(a, "s2", {"20", "2"}) == "42");
  a.exec_ok("COMMIT");
  CHECK(p.running());
}

// ---------------------------------------------------------------------------
// 3. Eviction

TEST_CASE("max_prepared_statements = 2 evicts the least recently used statement", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1, 2));
  Conn a(p.conninfo());
  REQUIRE(a.ok());
  for (int k = 1; k <= 5; ++k)
    prepare_ok(a, "s" + std::to_string(k), "SELECT $1::int + " + std::to_string(100 * k));
  for (int round = 0; round < 20; ++round) {
    for (int k = 1; k <= 5; ++k) {
      INFO("round " << round << ", s" << k);
      CHECK(run_prepared(a, "s" + std::to_string(k), {std::to_string(round)}) ==
            std::to_string(100 * k + round));
    }
  }

  // The same through pipelines: evictions between statements of one pipeline.
  REQUIRE(PQenterPipelineMode(a) == 1);
  for (int rep = 0; rep < 2; ++rep) {
    for (int k = 1; k <= 5; ++k) {
      std::string arg = std::to_string(rep);
      const char* v[1] = {arg.c_str()};
      REQUIRE(PQsendQueryPrepared(a, ("s" + std::to_string(k)).c_str(), 1, v, nullptr, nullptr, 0) == 1);
    }
  }
  REQUIRE(PQpipelineSync(a) == 1);
  for (int rep = 0; rep < 2; ++rep) {
    for (int k = 1; k <= 5; ++k) {
      Result r = a.next_result(10);
      INFO("pipeline s" << k << ": " << r.message());
      CHECK(r.value() == std::to_string(100 * k + rep));
      REQUIRE_FALSE(a.next_result(10).get());
    }
  }
  REQUIRE(a.next_result(10).status() == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(a) == 1);

  // The one server holds at most 2 statements (pool of 1: this query runs there).
  CHECK(to_ll(a.value("SELECT count(*) FROM pg_prepared_statements")) <= 2);
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  auto per_server = server_prepared(admin);
  REQUIRE(per_server.size() == 1);
  CHECK(per_server[0] <= 2);
  CHECK(client_prepared(admin, a) == "5");
  // Round-robin over 5 statements with room for 2: every execution re-prepares.
  CHECK(ps_stats(admin).server_parse >= 100);
}

// ---------------------------------------------------------------------------
// 4. Close, and Parse answered without the server (raw protocol)

TEST_CASE("Close of a statement, Bind after Close, and Parse of a statement the server has", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1, -1, "trust"));
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  RawConn rc(p.port(), "app", "appdb");
  raw_login(rc);

  PsStats s0 = ps_stats(admin);
  CHECK(rc.roundtrip(parse_msg("s1", "SELECT $1::int + 1") + sync_msg()) == "1Z");
  CHECK(rc.roundtrip(bind_msg("s1", {"41"}) + execute_msg() + sync_msg()) == "2DCZ");
  CHECK(row_value(rc) == "42");
  // Another name for the same query: the server has it, so pgpivot answers
  // ParseComplete itself and the server sees no Parse.
  CHECK(rc.roundtrip(parse_msg("s1_again", "SELECT $1::int + 1") + sync_msg()) == "1Z");
  PsStats s1 = ps_stats(admin);
  CHECK(s1.client_parse == s0.client_parse + 2);
  CHECK(s1.server_parse == s0.server_parse + 1);

  // Close: CloseComplete, then the name is gone, with PostgreSQL's error.
  CHECK(rc.roundtrip(close_msg('S', "s1") + sync_msg()) == "3Z");
  std::string types = rc.roundtrip(bind_msg("s1", {"1"}) + execute_msg() + sync_msg());
  INFO("Bind after Close: " << describe_error(rc));
  CHECK(types == "EZ");
  CHECK(describe_error(rc) == "26000: prepared statement \"s1\" does not exist");
  // Describe of the closed name: the same error.
  types = rc.roundtrip(describe_msg('S', "s1") + sync_msg());
  INFO("Describe after Close: " << describe_error(rc));
  CHECK(types == "EZ");
  CHECK(describe_error(rc) == "26000: prepared statement \"s1\" does not exist");
  // Closing a name that does not exist is not an error in PostgreSQL.
  CHECK(rc.roundtrip(close_msg('S', "never_prepared") + sync_msg()) == "3Z");
  // The other name of the query is unaffected.
  CHECK(rc.roundtrip(bind_msg("s1_again", {"19"}) + execute_msg() + sync_msg()) == "2DCZ");
  CHECK(row_value(rc) == "20");

  // Parse s1 again: the server still has the statement (only the client's name
  // was forgotten), so again no Parse reaches the server.
  CHECK(rc.roundtrip(parse_msg("s1", "SELECT $1::int + 1") + sync_msg()) == "1Z");
  PsStats s2 = ps_stats(admin);
  CHECK(s2.client_parse == s1.client_parse + 1);
  CHECK(s2.server_parse == s1.server_parse);
  CHECK(rc.roundtrip(bind_msg("s1", {"9"}) + execute_msg() + sync_msg()) == "2DCZ");
  CHECK(row_value(rc) == "10");

  // One Sync for a Parse (sent to the server), Bind, Execute, a Close (answered
  // by pgpivot) and a Bind of the closed name: the answers keep their order, and
  // everything after the error is skipped up to the Sync.
  types = rc.roundtrip(parse_msg("s3", "SELECT $1::int * 3") + bind_msg("s3", {"5"}) + execute_msg() +
                       close_msg('S', "s3") + bind_msg("s3", {"6"}) + execute_msg() +
                       parse_msg("s4", "SELECT $1::int * 4") + sync_msg());
  INFO("pipeline: " << describe_error(rc));
  CHECK(types == "12DC3EZ");
  CHECK(describe_error(rc) == "26000: prepared statement \"s3\" does not exist");
  CHECK(rc.roundtrip(bind_msg("s1", {"0"}) + execute_msg() + sync_msg()) == "2DCZ");

  // The Parse of s4 came after the error and before the Sync: PostgreSQL ignored
  // it, but the client's name counts (PgBouncer's rule, which psycopg's pipelines
  // rely on): a Bind prepares it first, unseen by the client.
  types = rc.roundtrip(bind_msg("s4", {"2"}) + execute_msg() + sync_msg());
  INFO("Bind of s4 (its Parse was skipped after an error): " << describe_error(rc));
  CHECK(types == "2DCZ");
  CHECK(row_value(rc) == "8");
  // ... and a fresh Parse of s4 replaces it.
  types = rc.roundtrip(parse_msg("s4", "SELECT $1::int * 4") + bind_msg("s4", {"2"}) + execute_msg() +
                       sync_msg());
  INFO("Parse + Bind of s4: " << describe_error(rc));
  CHECK(types == "12DCZ");
  CHECK(row_value(rc) == "8");

  // The connection is still in sync.
  CHECK(rc.roundtrip(message('Q', cstr("SELECT 'still here'"))) == "TDCZ");
  CHECK(p.running());
}

TEST_CASE("the Parse and Close pgpivot adds for a statement are never seen by the client", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  // Room for one statement per server: each switch evicts with a hidden Close and
  // re-prepares with a hidden Parse.
  Pooler p(cfg_for("transaction", 1, 1, "trust"));
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  RawConn rc(p.port(), "app", "appdb");
  raw_login(rc);

  CHECK(rc.roundtrip(parse_msg("a", "SELECT $1::int + 1000") + parse_msg("b", "SELECT $1::text || '!'") +
                     sync_msg()) == "11Z");
  PsStats before = ps_stats(admin);
  for (int i = 0; i < 3; ++i) {
    CHECK(rc.roundtrip(bind_msg("a", {"1"}) + execute_msg() + sync_msg()) == "2DCZ");
    CHECK(row_value(rc) == "1001");
    CHECK(rc.roundtrip(bind_msg("b", {"hi"}) + execute_msg() + sync_msg()) == "2DCZ");
    CHECK(row_value(rc) == "hi!");
    CHECK(rc.roundtrip(describe_msg('S', "a") + sync_msg()) == "tTZ");
  }
  // Both statements in one Sync, twice.
  CHECK(rc.roundtrip(bind_msg("a", {"2"}) + execute_msg() + bind_msg("b", {"x"}) + execute_msg() +
                     bind_msg("a", {"3"}) + execute_msg() + sync_msg()) == "2DC2DC2DCZ");
  PsStats after = ps_stats(admin);
  CHECK(after.server_parse - before.server_parse >= 9);
  CHECK(after.bind - before.bind == 9);
  CHECK(rc.roundtrip(message('Q', cstr("SELECT count(*) FROM pg_prepared_statements"))) == "TDCZ");
  CHECK(row_value(rc) == "1");
}

// The server keeps a statement after the last client name for it is gone (Close,
// disconnect): the next client preparing the same query must reuse it, not make
// the server prepare a duplicate under a new name.
TEST_CASE("a statement stays shared after the last client name for it is gone", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1, -1, "trust"));
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());
  const std::string query = "SELECT $1::int + 5";

  SECTION("after a Close") {
    RawConn rc(p.port(), "app", "appdb");
    raw_login(rc);
    CHECK(rc.roundtrip(parse_msg("only", query) + bind_msg("only", {"1"}) + execute_msg() + sync_msg()) == "12DCZ");
    PsStats s0 = ps_stats(admin);
    CHECK(rc.roundtrip(close_msg('S', "only") + sync_msg()) == "3Z");
    CHECK(rc.roundtrip(parse_msg("only", query) + bind_msg("only", {"2"}) + execute_msg() + sync_msg()) == "12DCZ");
    CHECK(row_value(rc) == "7");
    PsStats s1 = ps_stats(admin);
    CHECK(s1.client_parse == s0.client_parse + 1);
    CHECK(s1.server_parse == s0.server_parse);
    CHECK(server_prepared(admin) == std::vector<long long>{1});
    CHECK(rc.roundtrip(message('Q', cstr("SELECT count(*) FROM pg_prepared_statements"))) == "TDCZ");
    CHECK(row_value(rc) == "1");
  }

  SECTION("after the client disconnected") {
    {
      Conn first(p.conninfo());
      REQUIRE(first.ok());
      prepare_ok(first, "q", query);
      CHECK(run_prepared(first, "q", {"1"}) == "6");
    }
    REQUIRE(eventually([&] { return console_show(admin, "CLIENTS").rows() == 1; }));  // the console only
    PsStats s0 = ps_stats(admin);
    Conn second(p.conninfo());
    REQUIRE(second.ok());
    prepare_ok(second, "q2", query);
    CHECK(run_prepared(second, "q2", {"2"}) == "7");
    PsStats s1 = ps_stats(admin);
    CHECK(s1.client_parse == s0.client_parse + 1);
    CHECK(s1.server_parse == s0.server_parse);
    CHECK(server_prepared(admin) == std::vector<long long>{1});
    CHECK(second.value("SELECT count(*) FROM pg_prepared_statements") == "1");
  }
}

// ---------------------------------------------------------------------------
// 5. DEALLOCATE ALL and DISCARD ALL

TEST_CASE("DEALLOCATE ALL and DISCARD ALL drop the client's statements only", "[prepared]") {
  if (skip_for_pgbouncer()) return;
  Pooler p(cfg_for("transaction", 1));
  Conn a(p.conninfo());
  Conn b(p.conninfo());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  Conn admin(admin_conninfo(p));
  REQUIRE(admin.ok());

  prepare_ok(b, "b1", "SELECT $1::int + 7");
  for (std::string cmd : {"DEALLOCATE ALL", "deallocate prepare all;", "DISCARD ALL"}) {
    INFO("command: " << cmd);
    prepare_ok(a, "s1", "SELECT $1::int + 7");
    prepare_ok(a, "s2", "SELECT $1::int + 8");
    CHECK(run_prepared(a, "s1", {"1"}) == "8");
    CHECK(run_prepared(b, "b1", {"2"}) == "9");
    CHECK(client_prepared(admin, a) == "2");

    a.exec_ok(cmd);
    CHECK(client_prepared(admin, a) == "0");
    for (std::string name : {"s1", "s2"}) {
      Result r = exec_prepared(a, name, {"1"});
      INFO(name << " after " << cmd << ": " << r.message());
      CHECK(r.sqlstate() == "26000");
      CHECK(contains_icase(r.message(), "prepared statement \"" + name + "\" does not exist"));
    }
    // B's statement (the same query, on the same server) was dropped on the
    // server too, but B still has its name: it is prepared again.
    CHECK(run_prepared(b, "b1", {"3"}) == "10");
    CHECK(run_prepared(b, "b1", {"4"}) == "11");
  }
  // The names can be prepared again.
  prepare_ok(a, "s1", "SELECT $1::int + 70");
  CHECK(run_prepared(a, "s1", {"1"}) == "71");
}
