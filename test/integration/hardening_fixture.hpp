// The hardening tests' helpers (issue #6), shared by test_hardening_clients.cpp,
// test_hardening_servers.cpp and test_soak.cpp: raw trust logins and the
// ErrorResponse-then-close check, SHOW POOLS rows, and the checks that a pool
// settles and that the pooler still serves a fresh client.
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;  // NOLINT

namespace {

[[maybe_unused]] int open_fds(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') n++;
  }
  ::closedir(d);
  return n;
}

std::string app_startup(const std::string& user = "app", const std::string& db = "appdb") {
  return startup_packet({{"user", user}, {"database", db}});
}

// The first ErrorResponse in `bytes` (as received before a close): SQLSTATE or "".
[[maybe_unused]] std::string first_error_sqlstate(const std::string& bytes) {
  size_t i = 0;
  while (i + 5 <= bytes.size()) {
    char type = bytes[i];
    uint32_t len = get_u32(bytes, i + 1);
    if (len < 4 || i + 1 + len > bytes.size()) break;
    if (type == 'E') return error_field(bytes.substr(i + 5, len - 4), 'C');
    i += 1 + len;
  }
  return "";
}

// Sends `bytes` on `s` and expects an ErrorResponse with `sqlstate`, then the close.
[[maybe_unused]] void expect_error_then_close(RawSocket& s, const std::string& bytes, const std::string& sqlstate,
                             double timeout_s = 5) {
  REQUIRE(s.fd >= 0);
  REQUIRE(s.send_all(bytes));
  std::string payload;
  char type = s.read_until('E', payload, timeout_s);
  INFO("message type '" << (type ? type : '0') << "', message: " << error_field(payload, 'M'));
  REQUIRE(type == 'E');
  CHECK(error_field(payload, 'C') == sqlstate);
  CHECK_FALSE(error_field(payload, 'M').empty());
  CHECK(s.wait_closed(5));
}

// A client logged in with trust up to its first ReadyForQuery ("" or what went wrong).
[[maybe_unused]] std::string trust_login(RawSocket& s, const std::string& db = "appdb", double timeout_s = 10) {
  if (s.fd < 0) return "connect failed";
  if (!s.send_all(app_startup("app", db))) return "send failed";
  std::string payload;
  char t = s.read_until('Z', payload, timeout_s);
  if (t == 'Z') return "";
  if (t == 'E') return "error " + error_field(payload, 'C') + ": " + error_field(payload, 'M');
  return "no ReadyForQuery";
}

// SHOW POOLS row of database `db` as column -> value ({} when absent).
std::map<std::string, std::string> pool_row(const Pooler& p, const std::string& db) {
  Conn a(p.conninfo("admin", "admin", "pgbouncer"));
  if (!a.ok()) return {};
  Result r = a.exec("SHOW POOLS");
  if (!r.ok()) return {};
  for (int row = 0; row < r.rows(); row++) {
    std::map<std::string, std::string> m;
    for (int c = 0; c < PQnfields(r.get()); c++) m[PQfname(r.get(), c)] = r.value(row, c);
    if (m["database"] == db) return m;
  }
  return {};
}

std::string row_text(const std::map<std::string, std::string>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += k + "=" + v + " ";
  return s;
}

int as_int(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() || it->second.empty() ? -1 : std::atoi(it->second.c_str());
}

// Nothing active or logging in stays behind in the pool of `db`.
[[maybe_unused]] void require_pool_settles(const Pooler& p, const std::string& db, double timeout_s = 10) {
  std::map<std::string, std::string> last;
  bool settled = wait_for([&] {
    last = pool_row(p, db);
    if (last.empty()) return true;  // no pool (yet): nothing stuck
    // (cl_active counts idle logged-in clients too, as in PgBouncer.)
    return as_int(last, "sv_active") == 0 && as_int(last, "sv_login") == 0 && as_int(last, "cl_waiting") == 0;
  }, timeout_s, 0.2);
  INFO("SHOW POOLS " << db << ": " << row_text(last));
  CHECK(settled);
}

[[maybe_unused]] void require_serving(const Pooler& p) {
  Conn c(p.conninfo());
  INFO("a fresh client: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 'still serving'") == "still serving");
  REQUIRE(const_cast<Pooler&>(p).running());
}

}  // namespace
