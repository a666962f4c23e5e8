// Protocol-level (named) prepared statements in transaction and statement mode:
// a client's Parse/Bind/Describe/Close keep working although consecutive
// transactions run on different server connections. pgpivot maps each client's
// statement names to pooler-wide statements (PGPIVOT_<n>), prepares them on the
// server a transaction lands on when that server lacks them (hiding the extra
// ParseComplete), bounds each server's set with an LRU (max_prepared_statements)
// and answers errors for unknown names as PostgreSQL does.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;

namespace {

// PgBouncer 1.18 (PGPIVOT_TEST_USE_PGBOUNCER=1 comparison runs) has no prepared
// statement support in transaction mode.
bool skip_for_pgbouncer() {
  if (!env().use_pgbouncer) return false;
  WARN("PgBouncer 1.18 has no protocol-level prepared statements: not checked");
  return true;
}

PoolerConfig cfg_for(const std::string& mode, int pool_size, int max_prepared = -1,
                     const std::string& auth = "scram-sha-256") {
  PoolerConfig cfg;
  cfg.pool_mode = mode;
  cfg.default_pool_size = pool_size;
  cfg.auth_type = auth;
  if (max_prepared >= 0) cfg.extra["max_prepared_statements"] = std::to_string(max_prepared);
  return cfg;
}

// Collects every result of what was sent (like PQexec: an error wins), with a deadline.
Result collect(Conn& c, double timeout_s = 10) {
  Result last;
  double deadline = now_s() + timeout_s;
  for (;;) {
    bool timed_out = false;
    Result r = c.next_result(std::max(0.0, deadline - now_s()), &timed_out);
    if (timed_out) return r;
    if (!r.get()) break;
    if (!last.get() || last.status() != PGRES_FATAL_ERROR) last = std::move(r);
    if (PQstatus(c) == CONNECTION_BAD) break;
  }
  if (!last.get()) return Result(nullptr, PQerrorMessage(c));
  return last;
}

// PQprepare / PQexecPrepared / PQdescribePrepared, but never blocking past a deadline.
Result prepare(Conn& c, const std::string& name, const std::string& sql) {
  if (!PQsendPrepare(c, name.c_str(), sql.c_str(), 0, nullptr)) return Result(nullptr, PQerrorMessage(c));
  return collect(c);
}

Result exec_prepared(Conn& c, const std::string& name, const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  if (!PQsendQueryPrepared(c, name.c_str(), int(values.size()), values.empty() ? nullptr : values.data(),
                           nullptr, nullptr, 0))
    return Result(nullptr, PQerrorMessage(c));
  return collect(c);
}

Result describe_prepared(Conn& c, const std::string& name) {
  if (!PQsendDescribePrepared(c, name.c_str())) return Result(nullptr, PQerrorMessage(c));
  return collect(c);
}

void prepare_ok(Conn& c, const std::string& name, const std::string& sql) {
  Result r = prepare(c, name, sql);
  INFO("PQprepare(" << name << ", " << sql << "): " << r.message());
  REQUIRE(r.status() == PGRES_COMMAND_OK);
}

std::string run_prepared(Conn& c, const std::string& name, const std::vector<std::string>& params = {}) {
  Result r = exec_prepared(c, name, params);
  INFO("PQexecPrepared(" << name << "): " << r.message());
  REQUIRE(r.status() == PGRES_TUPLES_OK);
  return r.value();
}

// ---------------------------------------------------------------------------
// The admin console (database pgbouncer, admin_users = ["admin"]).

std::string admin_conninfo(const Pooler& p) { return p.conninfo("admin", "admin", "pgbouncer"); }

int column(const Result& r, const std::string& name) {
  return r.get() ? PQfnumber(r.get(), ("\"" + name + "\"").c_str()) : -1;
}

std::string dump(const Result& r) {
  if (!r.ok()) return "error: " + r.message();
  std::string out;
  for (int c = 0; c < PQnfields(r.get()); ++c) out += std::string(PQfname(r.get(), c)) + "|";
  out += "\n";
  for (int row = 0; row < r.rows(); ++row) {
    for (int c = 0; c < PQnfields(r.get()); ++c) out += r.value(row, c) + "|";
    out += "\n";
  }
  return out;
}

Result show(Conn& admin, const std::string& what) {
  Result r = admin.exec("SHOW " + what);
  INFO("SHOW " << what << ": " << r.message());
  REQUIRE(r.ok());
  return r;
}

// Rows of `r` whose column `name` equals `value`.
std::vector<int> rows_where(const Result& r, const std::string& name, const std::string& value) {
  std::vector<int> out;
  int c = column(r, name);
  for (int row = 0; c >= 0 && row < r.rows(); ++row)
    if (r.value(row, c) == value) out.push_back(row);
  return out;
}

long long to_ll(const std::string& s) { return std::atoll(s.c_str()); }

struct PsStats {
  long long client_parse = -1, server_parse = -1, bind = -1;
};

// SHOW STATS of appdb: total_client_parse_count, total_server_parse_count, total_bind_count.
PsStats ps_stats(Conn& admin) {
  Result r = show(admin, "STATS");
  INFO("SHOW STATS:\n" << dump(r));
  auto rows = rows_where(r, "database", "appdb");
  REQUIRE(rows.size() == 1);
  int cp = column(r, "total_client_parse_count"), sp = column(r, "total_server_parse_count"),
      b = column(r, "total_bind_count");
  REQUIRE(cp >= 0);
  REQUIRE(sp >= 0);
  REQUIRE(b >= 0);
  return {to_ll(r.value(rows[0], cp)), to_ll(r.value(rows[0], sp)), to_ll(r.value(rows[0], b))};
}

// SHOW CLIENTS prepared_statements of the client connected from this Conn
// (matched by its local port: DISCARD ALL resets application_name).
std::string client_prepared(Conn& admin, const Conn& client) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(PQsocket(client.get()), reinterpret_cast<sockaddr*>(&a), &len) == 0);
  Result r = show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(r));
  auto rows = rows_where(r, "port", std::to_string(ntohs(a.sin_port)));
  REQUIRE(rows.size() == 1);
  REQUIRE(column(r, "prepared_statements") >= 0);
  return r.value(rows[0], column(r, "prepared_statements"));
}

// SHOW SERVERS prepared_statements of every appdb server connection.
std::vector<long long> server_prepared(Conn& admin) {
  Result r = show(admin, "SERVERS");
  INFO("SHOW SERVERS:\n" << dump(r));
  REQUIRE(column(r, "prepared_statements") >= 0);
  std::vector<long long> out;
  for (int row : rows_where(r, "database", "appdb"))
    out.push_back(to_ll(r.value(row, column(r, "prepared_statements"))));
  return out;
}

bool eventually(const std::function<bool()>& cond, double seconds = 5) {
  double deadline = now_s() + seconds;
  for (;;) {
    if (cond()) return true;
    if (now_s() > deadline) return false;
    sleep_s(0.02);
  }
}

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

// Direct superuser connection for watching pg_stat_activity and holding locks.
std::string lock_waiters(Conn& direct, const std::string& query_prefix) {
  return direct.value("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '" +
                      query_prefix + "%'");
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
  // it, so s4 does not exist.
  types = rc.roundtrip(bind_msg("s4", {"2"}) + execute_msg() + sync_msg());
  INFO("Bind of s4 (its Parse was skipped after an error): " << describe_error(rc));
  CHECK(types == "EZ");
  CHECK(describe_error(rc) == "26000: prepared statement \"s4\" does not exist");
  // ... and a fresh Parse of s4 must really prepare it.
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
    REQUIRE(eventually([&] { return show(admin, "CLIENTS").rows() == 1; }));  // the console only
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
// transaction, or a Parse skipped after an earlier error): the next Parse of that
// name must really be sent, and the name must be unknown meanwhile.
TEST_CASE("a Parse that fails on the server leaves no statement behind", "[prepared]") {
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
    CHECK(e.sqlstate() == "26000");
    CHECK(contains_icase(e.message(), "prepared statement \"bad\" does not exist"));
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
    CHECK(e.sqlstate() == "26000");
    CHECK(contains_icase(e.message(), "prepared statement \"late\" does not exist"));
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
    CHECK(e.sqlstate() == "26000");
    CHECK(contains_icase(e.message(), "prepared statement \"skipped\" does not exist"));
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
