// More core behaviour: SCRAM secrets and md5 hashes stored in [users] (pass-through
// without the plain password), the reserve pool, auth_file, the "*" database,
// malformed startup packets on raw sockets, servers dying under idle clients, a
// 50 MB row streamed with bounded memory, and the RSS cost of idle clients.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

// One value through a direct superuser connection to the test PostgreSQL.
std::string direct_value(const std::string& sql, const std::string& dbname = "appdb") {
  Conn d(direct_conninfo(dbname));
  INFO("direct connection: " << d.error());
  REQUIRE(d.ok());
  return d.value(sql);
}

// ---------------------------------------------------------------------------
// A pooler started from a hand-written TOML file (for layouts PoolerConfig cannot
// express: no [databases.appdb], an auth_file next to the config). "@PORT@" and
// "@PGPORT@" in the template are replaced; `files` are written next to the config.

class TomlPooler {
 public:
  TomlPooler(const std::string& toml_template, const std::map<std::string, std::string>& files = {}) {
    if (env().pg_port == 0) throw std::runtime_error("PGPIVOT_TEST_PGPORT is not set");
    port_ = free_port();
    dir_ = env().scratch + "/extra-pooler-" + std::to_string(port_);
    ::mkdir(dir_.c_str(), 0755);
    config_path_ = dir_ + "/pgpivot.toml";
    log_path_ = dir_ + "/pooler.log";
    ::unlink(log_path_.c_str());
    for (const auto& [name, text] : files) write_text(dir_ + "/" + name, text);
    std::string toml = replace_all(toml_template, "@PORT@", std::to_string(port_));
    write_text(config_path_, replace_all(toml, "@PGPORT@", std::to_string(env().pg_port)));

    int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("cannot open " + log_path_);
    const std::string bin = env().pgpivot_bin;
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::signal(SIGPIPE, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      // pgpivot refuses root without -u: the tests run as root, as CI does.
      if (::geteuid() == 0) ::execl(bin.c_str(), bin.c_str(), "-u", "root", config_path_.c_str(), static_cast<char*>(nullptr));
      ::execl(bin.c_str(), bin.c_str(), config_path_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(log_fd);
    double deadline = now_s() + 10;
    for (;;) {
      if (!running()) {
        throw std::runtime_error("pooler exited before accepting connections (status " +
                                 std::to_string(status_) + ")\nconfig:\n" + slurp(config_path_) +
                                 "\nlog:\n" + slurp(log_path_));
      }
      int fd = connect_tcp(port_);
      if (fd >= 0) {
        ::close(fd);
        break;
      }
      if (now_s() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        exited_ = true;
        throw std::runtime_error("pooler did not listen within 10 s; log:\n" + slurp(log_path_));
      }
      sleep_s(0.02);
    }
  }

  ~TomlPooler() {
    bool died_early = !running();
    if (!died_early) {
      ::kill(pid_, SIGTERM);
      double deadline = now_s() + 5;
      while (running() && now_s() < deadline) sleep_s(0.02);
      if (running()) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    if (died_early && std::uncaught_exceptions() == 0)
      FAIL_CHECK("pooler pid " << pid_ << " exited on its own during the test (wait status " << status_ << ")");
    if (died_early || g_current_test_failed)
      std::cerr << "[itest] ---- pooler log (" << log_path_ << ") ----\n"
                << slurp(log_path_) << "[itest] ---- end of pooler log ----\n";
  }
  TomlPooler(const TomlPooler&) = delete;
  TomlPooler& operator=(const TomlPooler&) = delete;

  bool running() {
    if (exited_) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }
  int port() const { return port_; }
  std::string conninfo(const std::string& user, const std::string& password, const std::string& dbname) const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + dbname + " user=" + user +
           " password=" + password + " connect_timeout=10";
  }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  std::string dir_, config_path_, log_path_;
};

// Sends `bytes` and expects one ErrorResponse followed by the server closing.
void expect_error_then_close(int port, const std::string& bytes, const std::string& sqlstate) {
  RawSocket s(port);
  REQUIRE(s.fd >= 0);
  REQUIRE(s.send_all(bytes));
  char type = 0;
  std::string payload;
  bool eof = false;
  bool got = s.read_message(type, payload, 5, &eof);
  INFO("eof before a message: " << eof);
  REQUIRE(got);
  INFO("message type '" << type << "', message: " << error_field(payload, 'M'));
  REQUIRE(type == 'E');
  CHECK(error_field(payload, 'C') == sqlstate);
  CHECK_FALSE(error_field(payload, 'M').empty());
  CHECK(s.wait_closed(5));
}

// Backends of app on appdb, seen by the superuser.
int app_backends(Conn& d) {
  return std::stoi(d.value(
      "SELECT count(*) FROM pg_stat_activity WHERE usename='app' AND datname='appdb' AND pid <> pg_backend_pid()"));
}

// Terminates every backend of app on appdb and waits until they are gone.
void terminate_app_backends() {
  Conn d(direct_conninfo());
  REQUIRE(d.ok());
  d.exec_ok(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE usename='app' AND datname='appdb' AND pid <> pg_backend_pid()");
  double deadline = now_s() + 5;
  while (app_backends(d) > 0 && now_s() < deadline) sleep_s(0.05);
  REQUIRE(app_backends(d) == 0);
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("a stored SCRAM secret lets clients through to a SCRAM server without the plain password",
          "[extra][auth]") {
  std::string secret = direct_value("SELECT rolpassword FROM pg_authid WHERE rolname='app'");
  INFO("secret: " << secret);
  REQUIRE(secret.rfind("SCRAM-SHA-256$", 0) == 0);

  PoolerConfig cfg;
  cfg.auth_type = "scram-sha-256";
  cfg.users = {{"app", secret}};
  Pooler p(cfg);
  CHECK(slurp(p.config_path()).find("\"app\" }") == std::string::npos);  // no plain password anywhere

  {
    Conn c(p.conninfo("app", "app"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "app");
    CHECK(c.value("SELECT current_database()") == "appdb");
  }
  // A second client, while the pool's server connection may be reused or replaced.
  {
    Conn c(p.conninfo("app", "app"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT 2") == "2");
  }
  Conn wrong(p.conninfo("app", "not-app"));
  INFO("wrong password: " << wrong.error());
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().find("28P01") != std::string::npos);
}

TEST_CASE("a stored md5 hash works with auth_type md5 against an md5 server", "[extra][auth]") {
  // PostgreSQL's md5 secret is "md5" + md5(password || username).
  std::string hash = direct_value("SELECT 'md5' || md5('md5pass' || 'md5user')");
  std::string stored = direct_value("SELECT rolpassword FROM pg_authid WHERE rolname='md5user'");
  REQUIRE(stored == hash);  // the server uses md5 for md5user

  PoolerConfig cfg;
  cfg.auth_type = "md5";
  cfg.users = {{"md5user", hash}};
  Pooler p(cfg);

  {
    Conn c(p.conninfo("md5user", "md5pass"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "md5user");
  }

  Conn wrong_password(p.conninfo("md5user", "not-the-password"));
  Conn unknown_user(p.conninfo("no_such_user", "not-the-password"));
  REQUIRE_FALSE(wrong_password.ok());
  REQUIRE_FALSE(unknown_user.ok());
  std::string a = wrong_password.error();
  std::string b = unknown_user.error();
  INFO("wrong password: " << a);
  INFO("unknown user:   " << b);
  CHECK(a.find("28P01") != std::string::npos);
  CHECK(b.find("28P01") != std::string::npos);
  CHECK(replace_all(a, "\"md5user\"", "\"<user>\"") == replace_all(b, "\"no_such_user\"", "\"<user>\""));
}

TEST_CASE("reserve_pool_size serves a waiting client after reserve_pool_timeout", "[extra][queue]") {
  auto run = [](int reserve, double* waited, std::string* busy_pid, std::string* waiter_pid) {
    PoolerConfig cfg;
    cfg.pool_mode = "transaction";
    cfg.default_pool_size = 1;
    cfg.extra["reserve_pool_size"] = std::to_string(reserve);
    cfg.extra["reserve_pool_timeout"] = "0.5";
    Pooler p(cfg);
    Conn busy(p.conninfo());
    Conn waiter(p.conninfo());
    REQUIRE(busy.ok());
    REQUIRE(waiter.ok());
    busy.send("SELECT pg_backend_pid() FROM pg_sleep(3)");
    sleep_s(0.2);
    auto t0 = std::chrono::steady_clock::now();
    Result r = waiter.exec("SELECT pg_backend_pid()", 10);
    *waited = seconds_since(t0);
    INFO("waiter: " << r.message());
    REQUIRE(r.ok());
    *waiter_pid = r.value();
    Result b = busy.next_result(10);
    INFO("busy: " << b.message());
    REQUIRE(b.ok());
    *busy_pid = b.value();
    busy.next_result(5);
  };

  SECTION("reserve_pool_size = 1: the reserve server answers after about 0.5 s") {
    double waited = 0;
    std::string busy_pid, waiter_pid;
    run(1, &waited, &busy_pid, &waiter_pid);
    INFO("waited " << waited << " s; busy backend " << busy_pid << ", waiter backend " << waiter_pid);
    CHECK(waited >= 0.4);
    CHECK(waited < 2.0);
    CHECK(busy_pid != waiter_pid);
  }
  SECTION("reserve_pool_size = 0: the waiter waits for the busy client") {
    double waited = 0;
    std::string busy_pid, waiter_pid;
    run(0, &waited, &busy_pid, &waiter_pid);
    INFO("waited " << waited << " s; busy backend " << busy_pid << ", waiter backend " << waiter_pid);
    CHECK(waited >= 2.5);
    CHECK(busy_pid == waiter_pid);
  }
}

TEST_CASE("users from an auth_file relative to the config file log in", "[extra][auth]") {
  TomlPooler p(R"(# Written by test_core_extra.cpp
[pooler]
listen_addr = "127.0.0.1"
listen_port = @PORT@
unix_socket_dir = ""
pool_mode = "transaction"
default_pool_size = 2
auth_type = "scram-sha-256"
auth_file = "userlist.txt"

[clusters.main]
primary = { host = "127.0.0.1", port = @PGPORT@ }

[databases.appdb]
cluster = "main"
)",
               {{"userlist.txt", "\"app\" \"app\"\n"}});
  {
    Conn c(p.conninfo("app", "app", "appdb"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "app");
  }
  Conn wrong(p.conninfo("app", "nope", "appdb"));
  INFO("wrong password: " << wrong.error());
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().find("28P01") != std::string::npos);
}

TEST_CASE("the \"*\" database is the fallback for names not listed", "[extra][databases]") {
  TomlPooler p(R"(# Written by test_core_extra.cpp
[pooler]
listen_addr = "127.0.0.1"
listen_port = @PORT@
unix_socket_dir = ""
pool_mode = "transaction"
default_pool_size = 2
auth_type = "scram-sha-256"

[users]
app = { password = "app" }

[clusters.main]
primary = { host = "127.0.0.1", port = @PGPORT@ }

[databases."*"]
cluster = "main"
)");
  {
    Conn c(p.conninfo("app", "app", "postgres"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_database()") == "postgres");
  }
  {
    Conn c(p.conninfo("app", "app", "appdb"));
    INFO("connection error: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_database()") == "appdb");
  }
  // A name the server does not have: the server's own error reaches the client,
  // at login or (if the pooler logs clients in before it has a server) at the first query.
  Conn c(p.conninfo("app", "app", "itest_no_such_database"));
  std::string error = c.error();
  if (c.ok()) {
    Result r = c.exec("SELECT 1", 10);
    CHECK_FALSE(r.ok());
    error = r.message() + " / " + c.error();
  }
  INFO("error: " << error);
  CHECK(error.find("3D000") != std::string::npos);
  CHECK(error.find("itest_no_such_database") != std::string::npos);
  // The pooler still serves the others.
  Conn after(p.conninfo("app", "app", "postgres"));
  REQUIRE(after.ok());
  CHECK(after.value("SELECT 1") == "1");
}

TEST_CASE("bad startup packets get a clear error while other clients keep working", "[extra][protocol]") {
  Pooler p;
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  REQUIRE(other.value("SELECT 'before'") == "before");

  SECTION("protocol 2.0 -> 0A000") {
    expect_error_then_close(p.port(), startup_packet({{"user", "app"}, {"database", "appdb"}}, 0x00020000), "0A000");
  }
  SECTION("no user -> 08P01") {
    expect_error_then_close(p.port(), startup_packet({{"database", "appdb"}}, 0x00030000), "08P01");
  }
  SECTION("length field 3 -> closed") {
    RawSocket s(p.port());
    REQUIRE(s.fd >= 0);
    std::string bytes;
    put_u32(bytes, 3);
    REQUIRE(s.send_all(bytes));
    std::string rest;
    bool closed = s.wait_closed(3, &rest);
    INFO("received before close: " << rest.size() << " bytes"
                                   << (rest.size() > 5 && rest[0] == 'E'
                                           ? ", SQLSTATE " + error_field(rest.substr(5), 'C')
                                           : std::string()));
    CHECK(closed);
  }
  SECTION("SSLRequest -> 'N', then a normal startup gets an authentication request") {
    RawSocket s(p.port());
    REQUIRE(s.fd >= 0);
    std::string ssl;
    put_u32(ssl, 8);
    put_u32(ssl, 80877103);
    REQUIRE(s.send_all(ssl));
    std::string answer;
    REQUIRE(s.read_exact(answer, 1, 5));
    CHECK(answer == "N");
    REQUIRE(s.send_all(startup_packet({{"user", "app"}, {"database", "appdb"}}, 0x00030000)));
    char type = 0;
    std::string payload;
    REQUIRE(s.read_message(type, payload, 5));
    INFO("message type '" << type << "'");
    REQUIRE(type == 'R');
    REQUIRE(payload.size() >= 4);
    uint32_t code_be = 0;
    std::memcpy(&code_be, payload.data(), 4);
    uint32_t code = ntohl(code_be);
    CHECK(code == 10);  // AuthenticationSASL for scram-sha-256
  }

  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  Conn fresh(p.conninfo());
  INFO("fresh client: " << fresh.error());
  REQUIRE(fresh.ok());
  CHECK(fresh.value("SELECT 1") == "1");
}

TEST_CASE("servers terminated under idle clients", "[extra][servers]") {
  SECTION("transaction mode: the next query gets a fresh server") {
    PoolerConfig cfg;
    cfg.pool_mode = "transaction";
    Pooler p(cfg);
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    std::string pid_before = c.value("SELECT pg_backend_pid()");
    terminate_app_backends();
    sleep_s(0.2);
    // Allowed: the first query after the kill fails (it was sent to a pooled server
    // whose death the pooler had not yet noticed), as long as the client connection
    // survives it. The query after it must succeed.
    Result first = c.exec("SELECT pg_backend_pid()", 10);
    INFO("first query after the kill: " << (first.ok() ? "ok" : first.message()));
    if (!first.ok()) {
      WARN("first query after the servers died failed: " << first.message());
      REQUIRE(PQstatus(c) == CONNECTION_OK);
    }
    Result second = c.exec("SELECT pg_backend_pid()", 10);
    INFO("second query: " << second.message());
    REQUIRE(second.ok());
    CHECK(second.value() != pid_before);
    CHECK(c.value("SELECT count(*) FROM pgbench_branches") == "1");
  }
  SECTION("session mode: the client stays connected and gets a new server") {
    // A session whose server dies while the client is idle moves to a new server
    // (tracked settings replayed) instead of losing the client's connection.
    PoolerConfig cfg;
    cfg.pool_mode = "session";
    Pooler p(cfg);
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    c.exec_ok("SET TimeZone = 'Asia/Tokyo'");
    std::string pid_before = c.value("SELECT pg_backend_pid()");
    terminate_app_backends();
    sleep_s(0.2);
    Result r = c.exec("SELECT pg_backend_pid()", 10);
    INFO("query after its server died: " << (r.ok() ? "ok, backend " + r.value() : r.message()));
    REQUIRE(r.ok());
    CHECK(r.value() != pid_before);
    CHECK(PQstatus(c) == CONNECTION_OK);
    CHECK(c.value("SHOW TimeZone") == "Asia/Tokyo");
  }
}

TEST_CASE("a 50 MB row streams through with bounded memory", "[extra][memory]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(c.value("SELECT 1") == "1");
  PeakPrivate sampler(p.pid());
  Result r = c.exec("SELECT repeat('x', 50*1024*1024)", 60);
  INFO("error: " << r.message());
  REQUIRE(r.ok());
  REQUIRE(r.rows() == 1);
  const int len = PQgetlength(r.get(), 0, 0);
  CHECK(len == 50 * 1024 * 1024);
  const char* v = PQgetvalue(r.get(), 0, 0);
  CHECK(v[0] == 'x');
  CHECK(v[len - 1] == 'x');
  long peak = sampler.peak();
  INFO("pgpivot peak private memory " << peak << " KiB (VmHWM " << p.peak_rss_kb() << " KiB)");
  REQUIRE(peak > 0);
  if (!kSanitizedBuild) CHECK(peak < 8 * 1024);  // streamed: far less than the 50 MB row
  CHECK(c.value("SELECT 'still fine'") == "still fine");
}

TEST_CASE("idle clients cost little memory and leave the pooler serving", "[extra][memory]") {
  constexpr int kClients = 1000;
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < kClients + 200 && rl.rlim_max >= kClients + 200) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  REQUIRE(rl.rlim_cur >= static_cast<rlim_t>(kClients + 200));

  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.max_client_conn = kClients + 100;
  Pooler p(cfg);

  // Raw trust logins up to ReadyForQuery.
  auto login = [&](RawSocket& s) {
    if (s.fd < 0) return std::string("connect failed");
    if (!s.send_all(startup_packet({{"user", "app"}, {"database", "appdb"}}, 0x00030000)))
      return std::string("send failed");
    for (;;) {
      char type = 0;
      std::string payload;
      if (!s.read_message(type, payload, 10)) return std::string("no ReadyForQuery");
      if (type == 'E') return "error " + error_field(payload, 'C') + ": " + error_field(payload, 'M');
      if (type == 'Z') return std::string();
    }
  };
  // Warm up: a few clients and queries so that the pool, its server and the
  // allocator are in their steady state before the baseline.
  {
    std::vector<RawSocket> warm;
    for (int i = 0; i < 20; ++i) {
      warm.emplace_back(p.port());
      std::string e = login(warm.back());
      INFO("warm-up login: " << e);
      REQUIRE(e.empty());
    }
    Conn c(p.conninfo("app", ""));
    REQUIRE(c.ok());
    REQUIRE(c.value("SELECT 1") == "1");
  }
  sleep_s(0.3);
  long before = private_kb(p.pid());
  REQUIRE(before > 0);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<RawSocket> idle;
  idle.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    idle.emplace_back(p.port());
    std::string e = login(idle.back());
    INFO("client " << i << ": " << e);
    REQUIRE(e.empty());
  }
  sleep_s(0.3);
  long after = private_kb(p.pid());
  double per_client = static_cast<double>(after - before) * 1024 / kClients;
  INFO(kClients << " idle clients logged in in " << seconds_since(t0) << " s; private memory " << before
                << " KiB -> " << after << " KiB: " << per_client << " bytes per client");
  if (!kSanitizedBuild) CHECK(per_client <= 512);  // issue 17: private memory per idle client

  // Still serving while they are connected, and after they leave.
  {
    Conn c(p.conninfo("app", ""));
    INFO("with idle clients: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT 'busy'") == "busy");
  }
  idle.clear();
  sleep_s(0.3);
  Conn c(p.conninfo("app", ""));
  INFO("after the idle clients left: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 'after'") == "after");
  REQUIRE(p.running());
}
