// The stats endpoint tests' helpers, shared by test_metrics.cpp and
// test_metrics_stats.cpp: a raw HTTP client, /metrics parsed into series,
// `promtool check metrics`, and the admin console's SHOW rows.
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;  // NOLINT

namespace {

double mono_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void write_text(const std::string& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

// ---------------------------------------------------------------------------
// A raw HTTP client

struct HttpReply {
  int status = 0;  // 0: no status line arrived
  std::string head, body;
  bool closed = false;  // the server closed the connection (EOF or reset)
  double seconds = 0;   // from sending until the close (or the deadline)
};

// Reads until the server closes the connection or `timeout_s` passes.
HttpReply read_reply(int fd, double timeout_s) {
  HttpReply r;
  std::string all;
  double t0 = mono_s(), deadline = t0 + timeout_s;
  char buf[16384];
  for (;;) {
    double left = deadline - mono_s();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (pr <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    all.append(buf, static_cast<size_t>(n));
  }
  r.seconds = mono_s() - t0;
  size_t sep = all.find("\r\n\r\n");
  r.head = all.substr(0, sep);
  if (sep != std::string::npos) r.body = all.substr(sep + 4);
  if (all.rfind("HTTP/1.1 ", 0) == 0 && all.size() >= 12) r.status = std::atoi(all.substr(9, 3).c_str());
  return r;
}

HttpReply http_raw(int port, const std::string& request, double timeout_s = 10) {
  int fd = connect_tcp(port);
  if (fd < 0) return {};
  send_all_fd(fd, request);
  HttpReply r = read_reply(fd, timeout_s);
  ::close(fd);
  return r;
}

HttpReply http_get(int port, const std::string& path) {
  return http_raw(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pgpivot-itest\r\n\r\n");
}

std::string header(const HttpReply& r, const std::string& name) {
  std::istringstream in(r.head);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > name.size() && contains_icase(line.substr(0, name.size() + 1), name + ":"))
      return line.substr(line.find(':') + 2);
  }
  return "";
}

// ---------------------------------------------------------------------------
// Metrics

// "name{labels}" -> value, as the exposition has them.
using Metrics = std::map<std::string, std::string>;

Metrics parse_metrics(const std::string& text) {
  Metrics m;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    m[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return m;
}

[[maybe_unused]] std::string pool_key(const std::string& name, const std::string& db, const std::string& user) {
  return name + "{database=\"" + db + "\",user=\"" + user + "\"}";
}

// The metric's value; "<missing>" when the series is absent.
std::string mval(const Metrics& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "<missing>" : it->second;
}

double mnum(const Metrics& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : std::atof(it->second.c_str());
}

struct Scrape {
  HttpReply reply;
  Metrics metrics;
};

Scrape scrape(int port) {
  Scrape s;
  s.reply = http_get(port, "/metrics");
  s.metrics = parse_metrics(s.reply.body);
  return s;
}

// `promtool check metrics` on an exposition: exit status 0 and no lint findings.
void check_promtool(const std::string& text, const std::string& what) {
  INFO("promtool (package prometheus) must be installed: ./scripts/test installs it");
  REQUIRE(::access("/usr/bin/promtool", X_OK) == 0);
  static int n = 0;
  std::string path = env().scratch + "/metrics-promtool-" + std::to_string(::getpid()) + "-" + std::to_string(++n) + ".txt";
  write_text(path, text);
  auto r = run_command("/usr/bin/promtool check metrics < " + sh_quote(path));
  INFO("promtool check metrics on " << what << " (" << path << "):\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find_first_not_of(" \n") == std::string::npos);
  if (r.exit_code == 0) ::unlink(path.c_str());
}

// ---------------------------------------------------------------------------
// The admin console

using Row = std::map<std::string, std::string>;

std::vector<Row> rows_of(const Result& r) {
  std::vector<Row> out;
  if (!r.get()) return out;
  for (int i = 0; i < r.rows(); ++i) {
    Row row;
    for (int j = 0; j < PQnfields(r.get()); ++j) row[PQfname(r.get(), j)] = r.value(i, j);
    out.push_back(std::move(row));
  }
  return out;
}

std::vector<Row> show(Conn& admin, const std::string& what) {
  Result r = admin.exec("SHOW " + what, 10);
  INFO("SHOW " << what << ": " << r.message());
  REQUIRE(r.ok());
  return rows_of(r);
}

Row find_row(const std::vector<Row>& rows, const std::string& key, const std::string& value) {
  for (const auto& r : rows)
    if (r.count(key) && r.at(key) == value) return r;
  return {};
}

std::string row_text(const Row& row) {
  std::string s;
  for (const auto& [k, v] : row) s += (s.empty() ? "" : ", ") + k + "=" + v;
  return "{" + s + "}";
}

PoolerConfig stats_pooler(int http_port, int pool_size = 3) {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = pool_size;
  cfg.extra["stats_listen"] = "\"127.0.0.1:" + std::to_string(http_port) + "\"";
  return cfg;
}

bool skip_for_pgbouncer() {
  if (!env().use_pgbouncer) return false;
  WARN("stats_listen is pgpivot's own: skipped against PgBouncer");
  return true;
}

// SHOW POOLS' columns and the metric that mirrors each.
const std::pair<const char*, const char*> kPoolColumns[] = {
    {"cl_active", "pgpivot_pool_client_active"}, {"cl_waiting", "pgpivot_pool_client_waiting"},
    {"sv_active", "pgpivot_pool_server_active"}, {"sv_idle", "pgpivot_pool_server_idle"},
    {"sv_used", "pgpivot_pool_server_used"},     {"sv_tested", "pgpivot_pool_server_tested"},
    {"sv_login", "pgpivot_pool_server_login"},
};

}  // namespace
