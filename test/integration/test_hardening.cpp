// Hardening (issue #6): one test per bad-input case that the other files do not
// cover yet. Slow and silent clients (client_login_timeout), a client that stops
// reading a large result (backpressure), sick servers played by a fake TCP server in
// this process (garbage, a close in the middle of a message, no answer at all:
// server_connect_timeout, server_login_retry, query_timeout), descriptor exhaustion,
// malformed messages and forged SCRAM/md5 answers from clients, malformed startup
// packets, and a bounded soak under pgbench with client kills and a PostgreSQL
// restart ([soak]).
//
// Covered elsewhere: startup packets that are too short, protocol 2.0, no user and
// SSLRequest (test_core_extra.cpp), max_client_conn (test_settings.cpp), wrong
// password vs unknown user (test_auth.cpp), servers dying under idle clients and a
// 50 MB row with bounded memory (test_core_extra.cpp), hostile HTTP clients
// (test_metrics.cpp).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;

namespace {

int open_fds(pid_t pid) {
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
std::string first_error_sqlstate(const std::string& bytes) {
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
void expect_error_then_close(RawSocket& s, const std::string& bytes, const std::string& sqlstate,
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
std::string trust_login(RawSocket& s, const std::string& db = "appdb", double timeout_s = 10) {
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
void require_pool_settles(const Pooler& p, const std::string& db, double timeout_s = 10) {
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

void require_serving(const Pooler& p) {
  Conn c(p.conninfo());
  INFO("a fresh client: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 'still serving'") == "still serving");
  REQUIRE(const_cast<Pooler&>(p).running());
}

// ---------------------------------------------------------------------------
// A fake PostgreSQL server on 127.0.0.1: accepts connections and misbehaves in one
// of a few ways. Every connection runs on its own thread; all end when it is destroyed.
enum class FakeMode {
  Garbage,           // answers the startup packet with bytes that are no protocol
  HalfAuth,          // half an AuthenticationOk, then close
  Silent,            // accepts, reads, never answers
  LoginThenSilent,   // logs the client in, then never answers a query
  LoginThenHalfRow,  // logs in; a query gets RowDescription and half a DataRow, then close
};

class FakeServer {
 public:
  explicit FakeServer(FakeMode mode) : mode_(mode) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 64) != 0)
      throw std::runtime_error("fake server: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~FakeServer() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard<std::mutex> g(mu_);
    for (auto& t : conns_) t.join();
    ::close(lfd_);
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  int port() const { return port_; }
  int accepted() const { return accepted_; }
  int queries() const { return queries_; }

  // [clusters.NAME] body pointing at this server.
  std::string cluster_toml() const {
    return "primary = { host = \"127.0.0.1\", port = " + std::to_string(port_) + " }";
  }

 private:
  // Reads exactly n bytes unless stopping/EOF.
  bool read_n(int fd, std::string& out, size_t n) {
    out.clear();
    while (out.size() < n) {
      if (stop_) return false;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
      if (r <= 0) return false;
      out.append(buf, static_cast<size_t>(r));
    }
    return true;
  }

  void accept_loop() {
    while (!stop_) {
      pollfd pfd{lfd_, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      accepted_++;
      std::lock_guard<std::mutex> g(mu_);
      conns_.emplace_back([this, fd] {
        serve(fd);
        ::close(fd);
      });
    }
  }

  void serve(int fd) {
    std::string head, body;
    // Startup packet, after an SSLRequest (server_tls_sslmode prefer) answered 'N'.
    uint32_t len = 0;
    for (;;) {
      if (!read_n(fd, head, 4)) return;
      len = get_u32(head, 0);
      if (len < 8 || len > 10000 || !read_n(fd, body, len - 4)) return;
      if (len == 8 && get_u32(body, 0) == 80877103) {
        if (!send_all_fd(fd, "N")) return;
        continue;
      }
      break;
    }
    switch (mode_) {
      case FakeMode::Garbage:
        send_all_fd(fd, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nnot PostgreSQL\r\n");
        idle_until_stop(fd);
        return;
      case FakeMode::HalfAuth: {
        std::string ok = message('R', std::string(4, '\0'));
        send_all_fd(fd, ok.substr(0, 6));
        return;  // closed by the caller
      }
      case FakeMode::Silent:
        idle_until_stop(fd);
        return;
      case FakeMode::LoginThenSilent:
      case FakeMode::LoginThenHalfRow:
        break;
    }
    std::string login = message('R', std::string(4, '\0'));
    auto param = [&](const std::string& k, const std::string& v) { login += message('S', k + '\0' + v + '\0'); };
    param("server_version", "15.0");
    param("server_encoding", "UTF8");
    param("client_encoding", "UTF8");
    param("DateStyle", "ISO, MDY");
    param("integer_datetimes", "on");
    param("standard_conforming_strings", "on");
    param("TimeZone", "UTC");
    std::string key;
    put_u32(key, 4242);
    put_u32(key, 77);
    login += message('K', key);
    login += message('Z', "I");
    if (!send_all_fd(fd, login)) return;
    for (;;) {
      if (!read_n(fd, head, 5)) return;
      uint32_t mlen = get_u32(head, 1);
      if (mlen < 4 || !read_n(fd, body, mlen - 4)) return;
      if (head[0] == 'X') return;
      if (head[0] != 'Q') continue;
      queries_++;
      if (mode_ == FakeMode::LoginThenSilent) continue;
      // RowDescription: one text column "x", then half of a DataRow.
      std::string rd = std::string("\0\x01", 2);
      rd += std::string("x") + '\0';
      put_u32(rd, 0);
      rd += std::string("\0\0", 2);
      put_u32(rd, 25);
      rd += std::string("\xff\xff", 2);
      put_u32(rd, 0xffffffffu);
      rd += std::string("\0\0", 2);
      std::string dr = std::string("\0\x01", 2);
      put_u32(dr, 1000);
      dr += std::string(1000, 'y');
      std::string out = message('T', rd) + message('D', dr);
      send_all_fd(fd, out.substr(0, out.size() - 600));
      sleep_s(0.2);
      return;
    }
  }

  void idle_until_stop(int fd) {
    while (!stop_) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char buf[4096];
      if (::recv(fd, buf, sizeof buf, 0) <= 0) return;
    }
  }

  FakeMode mode_;
  int lfd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> queries_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
};

// A pooler whose database "fakedb" is served by `fake` (as user app).
PoolerConfig fake_config(const FakeServer& fake) {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.extra_clusters["fake"] = fake.cluster_toml();
  cfg.extra_databases["fakedb"] = "cluster = \"fake\"";
  return cfg;
}

}  // namespace

// ---------------------------------------------------------------------------
// Slow and silent clients

TEST_CASE("hardening: a silent client and a byte-per-second client are closed at client_login_timeout",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.extra["client_login_timeout"] = "2";
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());

  RawSocket silent(p.port());
  RawSocket slow(p.port());
  REQUIRE(silent.fd >= 0);
  REQUIRE(slow.fd >= 0);
  const std::string pkt = app_startup();
  double t0 = now_s();
  // The slow one sends its startup packet one byte every 0.5 s (it would need
  // pkt.size() / 2 seconds, far longer than client_login_timeout).
  size_t sent = 0;
  std::string silent_rest, slow_rest;
  bool silent_closed = false, slow_closed = false;
  while (now_s() - t0 < 10 && !(silent_closed && slow_closed)) {
    if (!slow_closed && sent < pkt.size()) {
      if (send_all_fd(slow.fd, pkt.substr(sent, 1))) sent++;
    }
    if (!silent_closed) silent_closed = silent.wait_closed(0.25, &silent_rest);
    if (!slow_closed) slow_closed = slow.wait_closed(0.25, &slow_rest);
    CHECK(other.value("SELECT 'meanwhile'", 5) == "meanwhile");
  }
  double took = now_s() - t0;
  INFO("closed after " << took << " s; slow client had sent " << sent << " of " << pkt.size() << " bytes");
  CHECK(silent_closed);
  CHECK(slow_closed);
  CHECK(sent < pkt.size());
  CHECK(took >= 1.5);
  CHECK(took < 8);
  CHECK(first_error_sqlstate(silent_rest) == "08P01");
  CHECK(first_error_sqlstate(slow_rest) == "08P01");
  require_serving(p);
}

TEST_CASE("hardening: a client that stops reading a large result: backpressure, bounded memory",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.default_pool_size = 3;
  Pooler p(cfg);
  {
    Conn warm(p.conninfo("app", ""));
    REQUIRE(warm.ok());
    REQUIRE(warm.value("SELECT count(*) FROM generate_series(1, 1000)") == "1000");
  }
  sleep_s(0.3);
  long before = private_kb(p.pid());
  REQUIRE(before > 0);

  RawSocket stuck(p.port());
  std::string e = trust_login(stuck);
  INFO("login: " << e);
  REQUIRE(e.empty());
  // About 1 GB of result that the client never reads.
  std::string q = "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)";
  REQUIRE(stuck.send_all(message('Q', q + '\0')));

  long peak = before;
  double t0 = now_s();
  while (now_s() - t0 < 4) {
    peak = std::max(peak, private_kb(p.pid()));
    sleep_s(0.1);
  }
  // The server still runs the query: pgpivot stopped reading from it.
  {
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    std::string n = d.value(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND query LIKE 'SELECT repeat(%' "
        "AND state = 'active'");
    CHECK(n == "1");
  }
  {
    Conn other(p.conninfo("app", ""));
    INFO("other client: " << other.error());
    REQUIRE(other.ok());
    CHECK(other.value("SELECT 'not blocked'", 10) == "not blocked");
  }
  INFO("pgpivot private memory " << before << " KiB before, peak " << peak << " KiB while the client did not read");
  if (!kSanitizedBuild) CHECK(peak - before < 16 * 1024);

  stuck.close();
  require_pool_settles(p, "appdb");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Sick servers

TEST_CASE("hardening: a server that sends garbage during login", "[hardening]") {
  FakeServer fake(FakeMode::Garbage);
  PoolerConfig cfg = fake_config(fake);
  cfg.extra["server_connect_timeout"] = "30";  // the error must not wait for this
  Pooler p(cfg);
  double t0 = now_s();
  Conn c(p.conninfo("app", "", "fakedb"), 20);
  double took = now_s() - t0;
  INFO("error after " << took << " s: " << c.error());
  REQUIRE_FALSE(c.ok());
  CHECK(took < 5);
  CHECK(c.error().find("08P01") != std::string::npos);
  long vm = private_kb(p.pid());
  INFO("pgpivot private memory " << vm << " KiB");
  if (!kSanitizedBuild) CHECK(vm < 64 * 1024);  // no buffer sized after the garbage's "length"
  require_pool_settles(p, "fakedb");
  require_serving(p);
}

TEST_CASE("hardening: a server that closes in the middle of a message", "[hardening]") {
  SECTION("during login") {
    FakeServer fake(FakeMode::HalfAuth);
    Pooler p(fake_config(fake));
    double t0 = now_s();
    Conn c(p.conninfo("app", "", "fakedb"), 20);
    INFO("error after " << now_s() - t0 << " s: " << c.error());
    REQUIRE_FALSE(c.ok());
    CHECK(now_s() - t0 < 5);
    CHECK(c.error().find("08006") != std::string::npos);
    require_pool_settles(p, "fakedb");
    require_serving(p);
  }
  SECTION("in the middle of a result row") {
    FakeServer fake(FakeMode::LoginThenHalfRow);
    Pooler p(fake_config(fake));
    Conn c(p.conninfo("app", "", "fakedb"));
    INFO("login: " << c.error());
    REQUIRE(c.ok());
    double t0 = now_s();
    Result r = c.exec("SELECT x FROM t", 15);
    double took = now_s() - t0;
    INFO("after " << took << " s: " << (r.ok() ? "ok" : r.message()));
    CHECK_FALSE(r.ok());
    CHECK(took < 10);  // not a hang: the half-sent row ends the client's stream
    require_pool_settles(p, "fakedb");
    require_serving(p);
  }
}

TEST_CASE("hardening: a server that never answers: server_connect_timeout, server_login_retry, query_timeout",
          "[hardening]") {
  SECTION("login: server_connect_timeout, then server_login_retry refuses at once, then a new try") {
    FakeServer fake(FakeMode::Silent);
    PoolerConfig cfg = fake_config(fake);
    cfg.extra["server_connect_timeout"] = "2";
    cfg.extra["server_login_retry"] = "4";
    Pooler p(cfg);
    double t0 = now_s();
    Conn first(p.conninfo("app", "", "fakedb"), 20);
    double took = now_s() - t0;
    INFO("first client: error after " << took << " s: " << first.error());
    REQUIRE_FALSE(first.ok());
    CHECK(took >= 1.5);
    CHECK(took < 6);
    CHECK(first.error().find("08006") != std::string::npos);
    CHECK(fake.accepted() == 1);

    t0 = now_s();
    Conn second(p.conninfo("app", "", "fakedb"), 20);
    INFO("second client (within server_login_retry): " << second.error());
    REQUIRE_FALSE(second.ok());
    CHECK(now_s() - t0 < 1.5);
    CHECK(second.error().find("08006") != std::string::npos);
    CHECK(second.error().find("server_login_retry") != std::string::npos);
    CHECK(fake.accepted() == 1);
    require_pool_settles(p, "fakedb");
    require_serving(p);

    sleep_s(5.5);  // server_login_retry (4 s) has passed since the failure
    Conn third(p.conninfo("app", "", "fakedb"), 20);
    INFO("third client (after server_login_retry): " << third.error());
    REQUIRE_FALSE(third.ok());
    CHECK(fake.accepted() == 2);
    require_pool_settles(p, "fakedb");
  }
  SECTION("query: query_timeout") {
    FakeServer fake(FakeMode::LoginThenSilent);
    PoolerConfig cfg = fake_config(fake);
    cfg.extra["query_timeout"] = "2";
    Pooler p(cfg);
    Conn c(p.conninfo("app", "", "fakedb"));
    INFO("login: " << c.error());
    REQUIRE(c.ok());
    double t0 = now_s();
    Result r = c.exec("SELECT pg_sleep(1000)", 20);
    double took = now_s() - t0;
    INFO("after " << took << " s: " << (r.ok() ? "ok" : r.sqlstate() + " " + r.message()));
    REQUIRE_FALSE(r.ok());
    CHECK(r.sqlstate() == "57014");
    CHECK(took >= 1.5);
    CHECK(took < 6);
    CHECK(fake.queries() == 1);
    require_pool_settles(p, "fakedb");
    require_serving(p);
  }
}

// ---------------------------------------------------------------------------
// Descriptor exhaustion

TEST_CASE("hardening: file descriptor exhaustion: the pooler survives and accepts again", "[hardening]") {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.default_pool_size = 2;
  Pooler p(cfg);
  {
    Conn warm(p.conninfo("app", ""));
    REQUIRE(warm.ok());
    REQUIRE(warm.value("SELECT 1") == "1");  // one server connection stays open, idle
  }
  int base = open_fds(p.pid());
  REQUIRE(base > 0);
  const int kRoom = 20;
  rlimit rl{static_cast<rlim_t>(base + kRoom), static_cast<rlim_t>(base + kRoom)};
  rlimit old{};
  REQUIRE(::prlimit(p.pid(), RLIMIT_NOFILE, &rl, &old) == 0);

  // Logged-in idle clients until the pooler cannot take more.
  std::vector<RawSocket> clients;
  int refused = 0;
  // A refused login is one that does not finish: the connection waits in the listen
  // backlog. 2 s each (logins take milliseconds, under ASan too), and three of them
  // are enough: the descriptors are gone.
  for (int i = 0; i < kRoom + 15 && refused < 3; i++) {
    RawSocket s(p.port());
    if (s.fd < 0) {
      refused++;
      continue;
    }
    std::string e = trust_login(s, "appdb", 2);
    if (e.empty()) {
      clients.push_back(std::move(s));
    } else {
      refused++;
    }
  }
  INFO(base << " descriptors at rest, limit " << base + kRoom << "; " << clients.size() << " clients in, "
            << refused << " refused");
  CHECK(refused > 0);
  CHECK(clients.size() >= static_cast<size_t>(kRoom - 5));
  REQUIRE(p.running());
  // The clients that got in are served (the pool's server is already open).
  if (!clients.empty()) {
    RawSocket& s = clients.front();
    REQUIRE(s.send_all(message('Q', std::string("SELECT 1") + '\0')));
    std::string payload;
    char t = s.read_until('Z', payload, 10);
    INFO("query on an admitted client: " << (t == 'E' ? error_field(payload, 'M') : std::string(1, t)));
    CHECK(t == 'Z');
  }

  clients.clear();
  sleep_s(0.5);
  // Accept works again once descriptors are free.
  bool ok = wait_for([&] {
    Conn c(p.conninfo("app", ""), 5);
    return c.ok() && c.value("SELECT 'accepting again'") == "accepting again";
  }, 10, 0.5);
  CHECK(ok);
  std::vector<RawSocket> again;
  for (int i = 0; i < kRoom - 5; i++) {
    again.emplace_back(p.port());
    std::string e = trust_login(again.back());
    INFO("client " << i << " after the others left: " << e);
    CHECK(e.empty());
  }
  again.clear();
  ::prlimit(p.pid(), RLIMIT_NOFILE, &old, nullptr);
  require_pool_settles(p, "appdb");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Malformed and forged client messages

namespace {

// Startup as app and the AuthenticationSASL request.
void begin_scram(RawSocket& s, const std::string& user = "app") {
  REQUIRE(s.fd >= 0);
  REQUIRE(s.send_all(app_startup(user)));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 10);
}

std::string sasl_initial(const std::string& mechanism, const std::string& data) {
  std::string body = mechanism + '\0';
  put_u32(body, static_cast<uint32_t>(data.size()));
  return message('p', body + data);
}

// client-first, then the server-first's combined nonce.
std::string scram_first(RawSocket& s, const std::string& client_nonce = "rOprNGfwEbeRWgbNEkqO") {
  REQUIRE(s.send_all(sasl_initial("SCRAM-SHA-256", "n,,n=,r=" + client_nonce)));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  INFO("type " << type << " " << (type == 'E' ? error_field(payload, 'M') : ""));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 11);
  std::string server_first = payload.substr(4);
  REQUIRE(server_first.rfind("r=", 0) == 0);
  return server_first.substr(2, server_first.find(',') - 2);
}

std::string b64_decode(const std::string& in) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    size_t v = chars.find(c);
    if (v == std::string::npos) break;  // '=' padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Attribute `name` ("s", "i") of a SCRAM server-first-message.
std::string scram_attr(const std::string& msg, char name) {
  std::string key = std::string(1, name) + "=";
  size_t pos = msg.rfind(key, 0) == 0 ? 0 : msg.find("," + key);
  if (pos == std::string::npos) return "";
  if (pos > 0) pos++;
  size_t end = msg.find(',', pos);
  return msg.substr(pos + 2, end == std::string::npos ? std::string::npos : end - pos - 2);
}

// The server-first-message for `user`.
std::string server_first_for(int port, const std::string& user) {
  RawSocket s(port);
  begin_scram(s, user);
  REQUIRE(s.send_all(sasl_initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 11);
  return payload.substr(4);
}

const std::string kZeroProof = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";  // 32 zero bytes

}  // namespace

TEST_CASE("hardening: forged, truncated and reordered SCRAM messages and a bad md5 response", "[hardening]") {
  PoolerConfig cfg;  // scram-sha-256
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());

  SECTION("bad nonce -> 28P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string nonce = scram_first(s);
    std::string forged = nonce;
    forged[forged.size() - 1] = forged.back() == 'A' ? 'B' : 'A';
    expect_error_then_close(s, message('p', "c=biws,r=" + forged + ",p=" + kZeroProof), "28P01");
  }
  SECTION("bad proof -> 28P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string nonce = scram_first(s);
    expect_error_then_close(s, message('p', "c=biws,r=" + nonce + ",p=" + kZeroProof), "28P01");
  }
  SECTION("bad proof for an unknown user -> the same 28P01") {
    RawSocket s(p.port());
    begin_scram(s, "no_such_user");
    std::string nonce = scram_first(s);
    expect_error_then_close(s, message('p', "c=biws,r=" + nonce + ",p=" + kZeroProof), "28P01");
  }
  SECTION("an unknown user's challenge looks like a real one: raw salt, same iterations, stable") {
    std::string known = server_first_for(p.port(), "app");
    std::string unknown = server_first_for(p.port(), "no_such_user");
    std::string again = server_first_for(p.port(), "no_such_user");
    INFO("known user: " << known << "\nunknown user: " << unknown);
    std::string salt = b64_decode(scram_attr(unknown, 's'));
    CHECK(salt.size() == b64_decode(scram_attr(known, 's')).size());
    CHECK(scram_attr(unknown, 'i') == scram_attr(known, 'i'));
    CHECK(scram_attr(again, 's') == scram_attr(unknown, 's'));
    // 16 random bytes all from [0-9a-f] happen once in 2^64 tries.
    CHECK(salt.find_first_not_of("0123456789abcdef") != std::string::npos);
  }
  SECTION("wrong mechanism -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, sasl_initial("SCRAM-SHA-1", "n,,n=,r=abc"), "08P01");
  }
  SECTION("truncated client-first -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, sasl_initial("SCRAM-SHA-256", "n,,n="), "08P01");
  }
  SECTION("SASLInitialResponse whose data length overruns the message -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string body = std::string("SCRAM-SHA-256") + '\0';
    put_u32(body, 1000);
    expect_error_then_close(s, message('p', body + "n,,n=,r=abc"), "08P01");
  }
  SECTION("client-final before client-first (reordered) -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, message('p', "c=biws,r=abc,p=" + kZeroProof), "08P01");
  }
  SECTION("md5: a response of the wrong length -> 28P01") {
    PoolerConfig md5cfg;
    md5cfg.auth_type = "md5";
    Pooler m(md5cfg);
    RawSocket s(m.port());
    REQUIRE(s.send_all(app_startup()));
    char type = 0;
    std::string payload;
    REQUIRE(s.read_message(type, payload, 5));
    REQUIRE(type == 'R');
    REQUIRE(get_u32(payload, 0) == 5);
    expect_error_then_close(s, message('p', std::string("md5abc") + '\0'), "28P01");
    require_serving(m);
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

TEST_CASE("hardening: bad message lengths, messages before authentication, invalid message types",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.extra["max_packet_size"] = "65536";
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  PoolerConfig tcfg = cfg;
  tcfg.auth_type = "trust";

  SECTION("a Query before authentication finishes -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, message('Q', std::string("SELECT 1") + '\0'), "08P01");
  }
  SECTION("startup and a Query in one packet, before the authentication request -> 08P01") {
    RawSocket s(p.port());
    expect_error_then_close(s, app_startup() + message('Q', std::string("SELECT 1") + '\0'), "08P01");
  }
  SECTION("length < 4 before authentication -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string bad(1, 'p');
    put_u32(bad, 3);
    expect_error_then_close(s, bad, "08P01");
  }
  SECTION("after login: length < 4 -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    std::string bad(1, 'Q');
    put_u32(bad, 2);
    expect_error_then_close(s, bad, "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  SECTION("after login: length > max_packet_size -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    std::string bad(1, 'Q');
    put_u32(bad, 65536 + 100);
    expect_error_then_close(s, bad + "SELECT 1", "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  SECTION("after login: a message type that is invalid there -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    expect_error_then_close(s, message('p', std::string("password") + '\0'), "08P01");
    RawSocket s2(t.port());
    REQUIRE(trust_login(s2).empty());
    expect_error_then_close(s2, message('z', "junk"), "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

TEST_CASE("hardening: oversized, non-UTF-8 and unterminated startup packets", "[hardening]") {
  Pooler p;
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  SECTION("longer than 10000 bytes -> 08P01") {
    RawSocket s(p.port());
    std::string pkt = startup_packet({{"user", "app"}, {"database", "appdb"}, {"application_name", std::string(10100, 'a')}});
    expect_error_then_close(s, pkt, "08P01");
  }
  SECTION("a length field far beyond 10000 -> 08P01, without waiting for the bytes") {
    RawSocket s(p.port());
    std::string pkt;
    put_u32(pkt, 1u << 30);
    put_u32(pkt, 0x00030000);
    expect_error_then_close(s, pkt, "08P01");
  }
  SECTION("a user name that is not UTF-8 -> 08P01") {
    RawSocket s(p.port());
    expect_error_then_close(s, startup_packet({{"user", "app\xff\xfe"}, {"database", "appdb"}}), "08P01");
  }
  SECTION("a parameter without its terminator -> 08P01") {
    RawSocket s(p.port());
    std::string body;
    put_u32(body, 0x00030000);
    body += std::string("user") + '\0' + "app";  // no NUL after the value, no final NUL
    std::string pkt;
    put_u32(pkt, static_cast<uint32_t>(body.size() + 4));
    expect_error_then_close(s, pkt + body, "08P01");
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Secrets

TEST_CASE("hardening: passwords and SCRAM secrets appear in no SHOW output, log line or error", "[hardening]") {
  const std::string kPlain = "Pw-Zq81-never-shown";
  const std::string kDbPassword = "DbPw-77-never-shown";
  const std::string kStoredKey = "U3RvcmVkS2V5TXVzdE5ldmVyQmVTaG93bi0wMTIzNDU=";
  const std::string kServerKey = "U2VydmVyS2V5TXVzdE5ldmVyQmVTaG93bi0wMTIzNDU=";
  PoolerConfig cfg;
  cfg.users["secretuser"] = kPlain;
  cfg.users["scramuser"] = "SCRAM-SHA-256$4096:cGdwaXZvdC10ZXN0LXNhbHQ=$" + kStoredKey + ":" + kServerKey;
  cfg.extra_databases["pwdb"] = "cluster = \"main\"\ndbname = \"appdb\"\nuser = \"app\"\npassword = \"" +
                                kDbPassword + "\"";
  cfg.extra["log_connections"] = "true";
  cfg.extra["log_disconnections"] = "true";
  Pooler p(cfg);

  std::vector<std::string> seen;  // everything a client or the log shows
  for (const auto& [user, pw, db] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"secretuser", "wrong", "appdb"},
           {"secretuser", kPlain, "appdb"},  // logs in, then fails on the server (no such role)
           {"scramuser", "wrong", "appdb"},
           {"app", "app", "pwdb"},           // the database's password is wrong on the server
           {"no_such_user", kPlain, "appdb"}}) {
    Conn c(p.conninfo(user, pw, db), 10);
    if (c.ok()) {
      Result r = c.exec("SELECT 1", 10);
      seen.push_back(r.message());
    }
    seen.push_back(c.error());
  }
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  for (const char* what : {"CONFIG", "DATABASES", "USERS", "POOLS", "CLIENTS", "SERVERS", "STATS", "LISTS"}) {
    Result r = admin.exec(std::string("SHOW ") + what);
    INFO("SHOW " << what << ": " << r.message());
    REQUIRE(r.ok());
    std::string text;
    for (int row = 0; row < r.rows(); row++)
      for (int col = 0; col < PQnfields(r.get()); col++) text += r.value(row, col) + "|";
    seen.push_back("SHOW " + std::string(what) + ": " + text);
  }
  sleep_s(0.3);
  seen.push_back("log: " + p.log());
  for (const std::string& text : seen) {
    for (const std::string& secret : {kPlain, kDbPassword, kStoredKey, kServerKey, std::string("md5pass")}) {
      INFO("looking for " << secret << " in: " << text.substr(0, 4000));
      CHECK(text.find(secret) == std::string::npos);
    }
  }
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Soak: about 60 s of pgbench through pgpivot while pgbench processes are killed at
// random moments (all their connections drop, many inside transactions), libpq
// clients vanish in the middle of transactions and queries, and PostgreSQL is
// restarted once. Afterwards nothing is stuck in SHOW POOLS, RSS and open
// descriptors are back near their baseline, and queries are served.
//
// It runs its own PostgreSQL (scripts/lib.sh pg_start_primary) on
// PGPIVOT_TEST_SOAK_PORT (default 61590) under PGPIVOT_TEST_SCRATCH/soak, so that the
// restart does not disturb the PostgreSQL the other tests share.

namespace {

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

std::string pg_ctl(const std::string& args) { return "runuser -u postgres -- " + kPgBin + "/pg_ctl " + args; }

// A PostgreSQL of its own for the soak, stopped and removed in the destructor.
class SoakPg {
 public:
  SoakPg() {
    const char* v = std::getenv("PGPIVOT_TEST_SOAK_PORT");
    port = v && *v ? std::atoi(v) : 61590;
    std::string root = env().scratch;
    if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0) root = "/tmp/pgpivot-soak-tests";
    ::mkdir(root.c_str(), 0755);
    base = root + "/soak";
    dir = base + "/primary";
    stop();
    run_command("rm -rf " + sh_quote(base));
    ::mkdir(base.c_str(), 0755);
    auto r = run_command("bash -c " + sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") +
                                               " && pg_start_primary " + sh_quote(dir) + " " +
                                               std::to_string(port)));
    if (r.exit_code != 0) throw std::runtime_error("soak PostgreSQL did not start:\n" + r.output);
  }
  ~SoakPg() {
    stop();
    if (!g_current_test_failed) run_command("rm -rf " + sh_quote(base));
    else std::cerr << "[itest] soak PostgreSQL log kept in " << dir << ".log\n";
  }
  SoakPg(const SoakPg&) = delete;
  SoakPg& operator=(const SoakPg&) = delete;

  void stop() {
    if (file_exists(dir + "/postmaster.pid")) run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(dir)));
  }
  CommandResult restart() {
    return run_command(pg_ctl("restart -m fast -w -t 60 -D " + sh_quote(dir) + " -l " + sh_quote(dir + ".log")));
  }

  int port = 0;
  std::string base, dir;
};

// pgbench through the pooler, SIGKILLed after `kill_after_s` unless done before.
CommandResult pgbench_killed_after(const Pooler& p, double kill_after_s, const std::string& args) {
  char t[32];
  std::snprintf(t, sizeof t, "%.1f", kill_after_s);
  return run_command("PGPASSWORD=app PGCONNECT_TIMEOUT=10 timeout -s KILL " + std::string(t) + " " +
                     pg_program("pgbench") + " -h 127.0.0.1 -p " + std::to_string(p.port()) + " -U app " + args +
                     " appdb");
}

}  // namespace

TEST_CASE("soak: pgbench with random client kills and a PostgreSQL restart leaves nothing behind", "[soak]") {
  SoakPg pg;
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 10;
  cfg.max_client_conn = 500;
  cfg.main_cluster = "primary = { host = \"127.0.0.1\", port = " + std::to_string(pg.port) + " }";
  cfg.extra["server_login_retry"] = "1";  // back quickly after the restart
  cfg.extra["query_wait_timeout"] = "20";
  Pooler p(cfg);

  // Warm up to the steady state (all pool servers open, buffers allocated), then the baseline.
  {
    auto r = run_pgbench(p, "-n -c 20 -j 2 -T 3");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  sleep_s(1);
  const long rss0 = private_kb(p.pid());
  const int fds0 = open_fds(p.pid());
  REQUIRE(rss0 > 0);
  REQUIRE(fds0 > 0);

  const double kDuration = 50;
  const double t0 = now_s();
  std::atomic<bool> done{false};
  std::atomic<int> pgbench_runs{0}, drops{0}, drop_errors{0};
  std::vector<std::thread> threads;
  // Two pgbench streams (read-write and select-only, simple and extended protocol),
  // each run killed after a random 1.5..6 s.
  for (int k = 0; k < 2; k++) {
    threads.emplace_back([&, k] {
      std::mt19937 rng(1234 + k);
      std::uniform_real_distribution<double> d(1.5, 6.0);
      while (!done && now_s() - t0 < kDuration) {
        pgbench_killed_after(p, d(rng), k == 0 ? "-n -c 16 -j 2 -T 30 -M simple" : "-n -S -c 24 -j 2 -T 30 -M extended");
        pgbench_runs++;
      }
    });
  }
  // libpq clients that vanish: inside a transaction, with a query in flight, or
  // with a reset socket. (Three of them: each waits in the busy pool's queue for
  // every statement, so how many drops one thread manages depends on the load.)
  for (int k = 0; k < 3; k++) threads.emplace_back([&, k] {
    std::mt19937 rng(99 + k);
    while (!done && now_s() - t0 < kDuration) {
      Conn c(p.conninfo(), 10);
      if (!c.ok()) {
        drop_errors++;
        sleep_s(0.2);
        continue;
      }
      Result b = c.exec("BEGIN", 10);
      // A random account row: pgbench's branch and teller rows would make this wait for locks.
      Result u = c.exec("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = " +
                            std::to_string(1 + rng() % 100000), 10);
      if (!b.ok() || !u.ok()) drop_errors++;
      switch (rng() % 3) {
        case 0:
          break;  // just gone, transaction open
        case 1:
          PQsendQuery(c, "SELECT pg_sleep(0.5)");  // gone with a query in flight
          PQflush(c);
          sleep_s(0.05);
          break;
        case 2: {
          linger l{1, 0};  // RST instead of FIN
          ::setsockopt(PQsocket(c), SOL_SOCKET, SO_LINGER, &l, sizeof l);
          ::shutdown(PQsocket(c), SHUT_RDWR);
          break;
        }
      }
      drops++;
      sleep_s(0.02);
    }
  });

  // One PostgreSQL restart in the middle.
  sleep_s(kDuration / 2);
  CommandResult restart = pg.restart();
  double restarted_at = now_s() - t0;
  while (now_s() - t0 < kDuration) sleep_s(0.2);
  done = true;
  for (auto& t : threads) t.join();
  INFO("PostgreSQL restarted at " << restarted_at << " s: " << restart.output);
  REQUIRE(restart.exit_code == 0);
  INFO(pgbench_runs << " pgbench runs (each killed or finished), " << drops << " dropped libpq clients ("
                    << drop_errors << " of them failed before dropping)");
  CHECK(pgbench_runs >= 6);
  CHECK(drops >= 10);

  // Nothing stuck: the pool drains once the clients are gone.
  std::map<std::string, std::string> row;
  bool drained = wait_for([&] {
    row = pool_row(p, "appdb");
    return !row.empty() && as_int(row, "cl_active") == 0 && as_int(row, "cl_waiting") == 0 &&
           as_int(row, "sv_active") == 0 && as_int(row, "sv_login") == 0;
  }, 30, 0.5);
  INFO("SHOW POOLS appdb: " << row_text(row));
  CHECK(drained);

  // Still serving.
  std::string last_error;
  bool serving = wait_for([&] {
    Conn c(p.conninfo(), 5);
    if (!c.ok()) {
      last_error = c.error();
      return false;
    }
    Result r = c.exec("SELECT count(*) FROM pgbench_branches", 10);
    last_error = r.ok() ? "" : r.message();
    return r.ok() && r.value() == "1";
  }, 20, 0.5);
  INFO("last error: " << last_error);
  CHECK(serving);
  {
    auto r = run_pgbench(p, "-n -c 10 -j 2 -T 2");
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }

  // Memory and descriptors back near the baseline (the pool may hold up to
  // default_pool_size idle servers either way).
  sleep_s(1);
  const long rss1 = private_kb(p.pid());
  const int fds1 = open_fds(p.pid());
  INFO("private memory " << rss0 << " KiB -> " << rss1 << " KiB; open descriptors " << fds0 << " -> " << fds1);
  if (!kSanitizedBuild) CHECK(rss1 - rss0 < 16 * 1024);
  CHECK(fds1 <= fds0 + cfg.default_pool_size);
  REQUIRE(p.running());
}
