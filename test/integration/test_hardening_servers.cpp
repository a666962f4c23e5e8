// Hardening (issue #6), the server side: sick servers played by a fake TCP server in
// this process (garbage, a close in the middle of a message, no answer at all:
// server_connect_timeout, server_login_retry, query_timeout). Bad clients are in
// test_hardening_clients.cpp, the shared helpers in hardening_fixture.hpp.
//
// Covered elsewhere: servers dying under idle clients (test_core_extra.cpp).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hardening_fixture.hpp"

namespace {

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
  SECTION("login: server_connect_timeout, the login waits (query_wait_timeout), server_login_retry refuses at once, "
          "then a new try") {
    FakeServer fake(FakeMode::Silent);
    PoolerConfig cfg = fake_config(fake);
    cfg.extra["server_connect_timeout"] = "2";
    cfg.extra["server_login_retry"] = "4";
    cfg.extra["query_wait_timeout"] = "3";
    Pooler p(cfg);
    double t0 = now_s();
    Conn first(p.conninfo("app", "", "fakedb"), 20);
    double took = now_s() - t0;
    // As PgBouncer: an unreachable server keeps the login waiting (a restart may end
    // soon) until query_wait_timeout, which says why no server came.
    INFO("first client: error after " << took << " s: " << first.error());
    REQUIRE_FALSE(first.ok());
    CHECK(took >= 2.5);
    CHECK(took < 6);
    CHECK(first.error().find("query_wait_timeout") != std::string::npos);
    CHECK(first.error().find("server_connect_timeout") != std::string::npos);
    CHECK(fake.accepted() == 1);

    // A second login within server_login_retry is not refused with the cached
    // error (the node is unreachable, not refusing): it waits for the next try, and
    // query_wait_timeout ends its wait as well. server_login_retry paces the tries:
    // none before 4 s after the failure (at about 2 s).
    t0 = now_s();
    Conn second(p.conninfo("app", "", "fakedb"), 20);
    double second_took = now_s() - t0;
    INFO("second client (within server_login_retry): " << second.error());
    REQUIRE_FALSE(second.ok());
    CHECK(second_took >= 2.5);
    CHECK(second.error().find("query_wait_timeout") != std::string::npos);
    CHECK(fake.accepted() <= 2);
    require_pool_settles(p, "fakedb");
    require_serving(p);

    // A login arriving later gets a new try (the silent server accepts again).
    int before = fake.accepted();
    Conn third(p.conninfo("app", "", "fakedb"), 20);
    INFO("third client (after server_login_retry): " << third.error());
    REQUIRE_FALSE(third.ok());
    CHECK(fake.accepted() > before);
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
