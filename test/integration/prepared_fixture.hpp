// The prepared-statement tests' helpers, shared by test_prepared.cpp and
// test_prepared_edge_cases.cpp: libpq's extended protocol with deadlines
// (prepare, exec_prepared, describe_prepared), the admin console's SHOW CLIENTS /
// SERVERS / STATS counts of prepared statements.
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;  // NOLINT

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
  Result r = console_show(admin, "STATS");
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
  Result r = console_show(admin, "CLIENTS");
  INFO("SHOW CLIENTS:\n" << dump(r));
  auto rows = rows_where(r, "port", std::to_string(ntohs(a.sin_port)));
  REQUIRE(rows.size() == 1);
  REQUIRE(column(r, "prepared_statements") >= 0);
  return r.value(rows[0], column(r, "prepared_statements"));
}

// SHOW SERVERS prepared_statements of every appdb server connection.
std::vector<long long> server_prepared(Conn& admin) {
  Result r = console_show(admin, "SERVERS");
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

}  // namespace
