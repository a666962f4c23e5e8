// Integration-test harness: the pooler process fixture, libpq wrappers with
// deadlines, and helpers to run psql/pgbench.
#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

namespace itest {

bool g_current_test_failed = false;

namespace {

std::string getenv_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
  out.close();
  ::chmod(path.c_str(), 0644);
}

bool port_is_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// 16400 (or PGPIVOT_TEST_PORT_BASE, for two runs side by side) + a counter,
// skipping ports something else holds.
int next_free_port() {
  static int counter = 0;
  static const int base = [] {
    const char* b = std::getenv("PGPIVOT_TEST_PORT_BASE");
    return b && std::atoi(b) > 1024 ? std::atoi(b) : 16400;
  }();
  for (int tries = 0; tries < 500; ++tries) {
    int port = base + (counter++ % 1000);
    if (port_is_free(port)) return port;
  }
  throw std::runtime_error("no free TCP port in " + std::to_string(base) + ".." + std::to_string(base + 999));
}

std::string quote_toml(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string join_list(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
  return out;
}

std::string toml_array(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + quote_toml(x);
  return "[" + out + "]";
}

// PgBouncer's .ini for the same PoolerConfig (comparison runs only).
std::string render_pgbouncer_ini(const PoolerConfig& cfg, int port, const std::string& userlist) {
  std::ostringstream o;
  o << "[databases]\nappdb = host=127.0.0.1 port=" << env().pg_port << " dbname=appdb\n";
  for (const auto& [name, body] : cfg.extra_databases)
    o << name << " = host=127.0.0.1 port=" << env().pg_port << " dbname=" << name << "\n";
  o << "\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port << "\n";
  if (!cfg.extra.count("unix_socket_dir")) o << "unix_socket_dir =\n";
  o << "pool_mode = " << cfg.pool_mode << "\ndefault_pool_size = " << cfg.default_pool_size
    << "\nmax_client_conn = " << cfg.max_client_conn << "\nauth_type = " << cfg.auth_type
    << "\nauth_file = " << userlist << "\nadmin_users = " << join_list(cfg.admin_users, ", ") << "\n";
  if (!cfg.stats_users.empty()) o << "stats_users = " << join_list(cfg.stats_users, ", ") << "\n";
  for (const auto& [k, v] : cfg.extra) {
    std::string val = v;
    if (val.size() >= 2 && val.front() == '"') val = val.substr(1, val.size() - 2);
    o << k << " = " << val << "\n";
  }
  return o.str();
}

}  // namespace

const Env& env() {
  static const Env e = [] {
    Env x;
    x.pgpivot_bin = getenv_or("PGPIVOT_BIN", "build/pooler/pgpivot");
    x.pg_port = std::atoi(getenv_or("PGPIVOT_TEST_PGPORT", "0").c_str());
    x.scratch = getenv_or("PGPIVOT_TEST_SCRATCH", "/tmp/pgpivot-integration");
    std::string default_bin = file_exists("/usr/lib/postgresql/15/bin/pgbench")
                                  ? "/usr/lib/postgresql/15/bin" : "";
    x.pg_bin = getenv_or("PGPIVOT_TEST_PGBIN", default_bin.c_str());
    x.use_pgbouncer = getenv_or("PGPIVOT_TEST_USE_PGBOUNCER", "0") == "1";
    ::mkdir(x.scratch.c_str(), 0755);
    return x;
  }();
  return e;
}

std::string pg_program(const std::string& name) {
  return env().pg_bin.empty() ? name : env().pg_bin + "/" + name;
}

std::string render_toml(const PoolerConfig& cfg, int port) {
  if (!cfg.raw_toml.empty()) {
    std::string t = cfg.raw_toml;
    const std::string from = "listen_port = 6432";
    if (auto at = t.find(from); at != std::string::npos) t.replace(at, from.size(), "listen_port = " + std::to_string(port));
    return t;
  }
  std::ostringstream o;
  o << "# Written by the pgpivot integration tests.\n[pooler]\n"
    << "listen_addr = \"127.0.0.1\"\nlisten_port = " << port << "\n";
  if (!cfg.extra.count("unix_socket_dir")) o << "unix_socket_dir = \"\"\n";
  o << "pool_mode = " << quote_toml(cfg.pool_mode) << "\n"
    << "default_pool_size = " << cfg.default_pool_size << "\n"
    << "max_client_conn = " << cfg.max_client_conn << "\n"
    << "auth_type = " << quote_toml(cfg.auth_type) << "\n"
    << "admin_users = " << toml_array(cfg.admin_users) << "\n";
  if (!cfg.stats_users.empty()) o << "stats_users = " << toml_array(cfg.stats_users) << "\n";
  for (const auto& [k, v] : cfg.extra) o << k << " = " << v << "\n";
  // PGPIVOT_TEST_WORKERS=N runs every test's pooler with N reactor threads.
  if (!cfg.extra.count("workers") && !env().use_pgbouncer) {
    if (const char* w = std::getenv("PGPIVOT_TEST_WORKERS"); w && *w) o << "workers = " << std::atoi(w) << "\n";
  }
  o << "\n[users]\n";
  for (const auto& [user, password] : cfg.users)
    o << user << " = { password = " << quote_toml(password) << " }\n";
  if (!cfg.failover.empty()) o << "\n[failover]\n" << cfg.failover << "\n";
  if (!cfg.main_cluster.empty())
    o << "\n[clusters.main]\n" << cfg.main_cluster << "\n";
  else
    o << "\n[clusters.main]\nprimary = { host = \"127.0.0.1\", port = " << env().pg_port << " }\n";
  for (const auto& [name, body] : cfg.extra_clusters) o << "\n[clusters." << name << "]\n" << body << "\n";
  o
    << "\n[databases.appdb]\ncluster = \"main\"\n";
  for (const auto& [name, body] : cfg.extra_databases) o << "\n[databases." << name << "]\n" << body << "\n";
  o << cfg.extra_toml;
  return o.str();
}

// ---------------------------------------------------------------------------
// Pooler

Pooler::Pooler(PoolerConfig cfg) : cfg_(std::move(cfg)) {
  if (env().pg_port == 0)
    throw std::runtime_error("PGPIVOT_TEST_PGPORT is not set: run ./scripts/test");
  static int shared_port_seq = 0;
  port_ = cfg_.port ? cfg_.port : next_free_port();
  dir_ = env().scratch + "/pooler-" + std::to_string(port_);
  if (cfg_.port) dir_ += "-" + std::to_string(++shared_port_seq);
  ::mkdir(dir_.c_str(), 0755);
  ::chmod(dir_.c_str(), 0755);  // PgBouncer runs as postgres and reads its files here
  if (env().use_pgbouncer) {
    if (struct passwd* pw = ::getpwnam("postgres")) {
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) { /* best effort */ }
    }
  }
  config_path_ = dir_ + (env().use_pgbouncer ? "/pgbouncer.ini" : "/pgpivot.toml");
  log_path_ = dir_ + "/pooler.log";
  ::unlink(log_path_.c_str());
  write_config();
  start();
  try {
    wait_ready();
  } catch (...) {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    throw;
  }
}

void Pooler::write_config() {
  if (env().use_pgbouncer) {
    std::string userlist = dir_ + "/userlist.txt";
    std::ostringstream u;
    for (const auto& [user, password] : cfg_.users) u << '"' << user << "\" \"" << password << "\"\n";
    write_file(userlist, u.str());
    write_file(config_path_, render_pgbouncer_ini(cfg_, port_, userlist));
  } else {
    write_file(config_path_, render_toml(cfg_, port_));
  }
}

void Pooler::start() {
  std::string bin = env().use_pgbouncer ? "/usr/sbin/pgbouncer" : env().pgpivot_bin;
  if (::access(bin.c_str(), X_OK) != 0)
    throw std::runtime_error("pooler binary not found or not executable: " + bin +
                             " (set PGPIVOT_BIN; build with ninja -C build)");
  // Resolve everything the child needs before fork().
  struct passwd* pw = env().use_pgbouncer ? ::getpwnam("postgres") : nullptr;
  uid_t uid = pw ? pw->pw_uid : 0;
  gid_t gid = pw ? pw->pw_gid : 0;
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + log_path_);
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test binary
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (pw) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(126);
    }
    // pgpivot refuses root without -u: the tests run as root, as CI does.
    if (!env().use_pgbouncer && ::geteuid() == 0)
      ::execl(bin.c_str(), bin.c_str(), "-u", "root", config_path_.c_str(), static_cast<char*>(nullptr));
    ::execl(bin.c_str(), bin.c_str(), config_path_.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(log_fd);
}

bool Pooler::running() {
  if (exited_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    exit_status_ = st;
    return false;
  }
  return true;
}

void Pooler::wait_ready() {
  double deadline = now_s() + 10;
  while (now_s() < deadline) {
    if (!running()) {
      std::ostringstream m;
      m << "pooler exited before accepting connections (status " << exit_status_ << ")\n"
        << "config " << config_path_ << ":\n" << read_file(config_path_) << "\nlog:\n" << log();
      throw std::runtime_error(m.str());
    }
    if (port_accepts(port_)) return;
    sleep_s(0.02);
  }
  throw std::runtime_error("pooler did not accept connections on 127.0.0.1:" +
                           std::to_string(port_) + " within 10 s; log:\n" + log());
}

Pooler::~Pooler() {
  bool died_early = !running();
  if (!died_early) {
    // SIGQUIT is pgpivot's immediate shutdown (SIGTERM waits for clients, as in
    // PgBouncer 1.23+); PgBouncer 1.18 shuts down at once on SIGTERM.
    int stop = env().use_pgbouncer ? SIGTERM : SIGQUIT;
    ::kill(pid_, stop);
    if (!wait_exit(5)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &exit_status_, 0);
      exited_ = true;
      std::cerr << "[itest] pooler pid " << pid_ << " ignored signal " << stop << " for 5 s; killed\n";
    }
  }
  bool unexpected = died_early && !stop_requested_;
  if (unexpected && std::uncaught_exceptions() == 0) {
    // A pooler that crashed or quit during the test fails it, even if the test's
    // own assertions happened to pass.
    FAIL_CHECK("pooler pid " << pid_ << " exited on its own during the test (wait status "
                             << exit_status_ << ")");
  }
  // pgpivot logs "BUG: ..." where its own invariants break (a state change that is not
  // a transition, say) and carries on; a test that provokes one fails.
  if (!env().use_pgbouncer && std::uncaught_exceptions() == 0) {
    std::string all = log();
    for (std::size_t at = all.find("BUG: "); at != std::string::npos; at = all.find("BUG: ", at + 1)) {
      std::size_t eol = all.find('\n', at);
      FAIL_CHECK("pooler log: " << all.substr(at, eol == std::string::npos ? std::string::npos : eol - at));
    }
  }
  if (g_current_test_failed || unexpected) {
    std::string text = log();
    if (text.size() > 8000) text = "...\n" + text.substr(text.size() - 8000);
    std::cerr << "[itest] ---- pooler log (" << log_path_ << ") ----\n" << text
              << "[itest] ---- end of pooler log ----\n";
  }
}

std::string Pooler::conninfo(const std::string& user, const std::string& password,
                             const std::string& dbname) const {
  std::string s = "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + dbname +
                  " user=" + user + " connect_timeout=10";
  if (!password.empty()) s += " password=" + password;
  return s;
}

void Pooler::reload(const PoolerConfig& cfg) {
  cfg_ = cfg;
  write_config();
  signal(SIGHUP);
}

void Pooler::rewrite_config(const PoolerConfig& cfg) {
  cfg_ = cfg;
  write_config();
}

void Pooler::signal(int sig) {
  if (sig == SIGINT || sig == SIGTERM || sig == SIGQUIT || sig == SIGKILL) stop_requested_ = true;
  ::kill(pid_, sig);
}

bool Pooler::wait_exit(double seconds) {
  double deadline = now_s() + seconds;
  while (running()) {
    if (now_s() >= deadline) return false;
    sleep_s(0.02);
  }
  return true;
}

long Pooler::peak_rss_kb() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

std::string Pooler::log() const { return read_file(log_path_); }

// ---------------------------------------------------------------------------
// Console output

int column(const Result& r, const std::string& name) {
  return r.get() ? PQfnumber(r.get(), ("\"" + name + "\"").c_str()) : -1;
}

std::vector<std::string> column_names(const Result& r) {
  std::vector<std::string> out;
  for (int i = 0; r.get() && i < PQnfields(r.get()); ++i) out.push_back(PQfname(r.get(), i));
  return out;
}

int find_row(const Result& r, const std::vector<std::pair<std::string, std::string>>& match) {
  for (int row = 0; row < r.rows(); ++row) {
    bool all = true;
    for (const auto& [name, want] : match) {
      int c = column(r, name);
      if (c < 0 || r.value(row, c) != want) all = false;
    }
    if (all) return row;
  }
  return -1;
}

std::string cell(const Result& r, const std::vector<std::pair<std::string, std::string>>& match,
                 const std::string& name) {
  int row = find_row(r, match);
  if (row < 0) return "<no row>";
  int c = column(r, name);
  if (c < 0) return "<no column " + name + ">";
  return r.value(row, c);
}

std::string dump(const Result& r) {
  if (!r.ok()) return "error: " + r.message();
  std::string out;
  for (const auto& n : column_names(r)) out += n + "|";
  out += "\n";
  for (int row = 0; row < r.rows(); ++row) {
    for (int c = 0; c < PQnfields(r.get()); ++c) out += r.value(row, c) + "|";
    out += "\n";
  }
  return out;
}

Result console_show(Conn& admin, const std::string& what) {
  Result r = admin.exec("SHOW " + what);
  INFO("SHOW " << what << ": " << r.message());
  REQUIRE(r.ok());
  return r;
}

// ---------------------------------------------------------------------------
// Result / Conn

Result& Result::operator=(Result&& o) noexcept {
  if (this != &o) {
    if (r_) PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
    error_ = std::move(o.error_);
  }
  return *this;
}

Result::~Result() {
  if (r_) PQclear(r_);
}

bool Result::ok() const {
  auto s = status();
  return r_ && (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK);
}

std::string Result::sqlstate() const {
  const char* s = r_ ? PQresultErrorField(r_, PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

std::string Result::message() const {
  if (!error_.empty()) return error_;
  if (!r_) return "(no result)";
  const char* m = PQresultErrorMessage(r_);
  return m ? m : "";
}

std::string Result::value(int row, int col) const {
  if (!r_ || row >= PQntuples(r_) || col >= PQnfields(r_)) return "<no value>";
  return PQgetisnull(r_, row, col) ? "<null>" : PQgetvalue(r_, row, col);
}

Conn::Conn(const std::string& conninfo, double timeout_s) {
  c_ = PQconnectStart(conninfo.c_str());
  if (!c_) {
    error_ = "PQconnectStart failed (out of memory)";
    return;
  }
  // Verbose before the first message arrives, so connection errors carry the SQLSTATE.
  PQsetErrorVerbosity(c_, PQERRORS_VERBOSE);
  // Notices are not printed; a test that wants them installs its own receiver.
  PQsetNoticeProcessor(c_, [](void*, const char*) {}, nullptr);
  double deadline = now_s() + timeout_s;
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
    if (PQstatus(c_) == CONNECTION_BAD) break;
    pollfd pfd{PQsocket(c_), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    int left_ms = static_cast<int>((deadline - now_s()) * 1000);
    if (left_ms <= 0 || ::poll(&pfd, 1, left_ms) == 0) {
      error_ = "connection attempt timed out after " + std::to_string(timeout_s) + " s";
      return;
    }
    st = PQconnectPoll(c_);
  }
  if (PQstatus(c_) != CONNECTION_OK) error_ = PQerrorMessage(c_);
}

Conn::~Conn() { finish(); }

void Conn::finish() {
  if (c_) PQfinish(c_);
  c_ = nullptr;
}

std::string Conn::error() const {
  if (!error_.empty()) return error_;
  return c_ ? PQerrorMessage(c_) : "not connected";
}

bool Conn::wait_readable(double timeout_s) {
  if (!c_) return false;
  pollfd pfd{PQsocket(c_), POLLIN, 0};
  int ms = std::max(0, static_cast<int>(timeout_s * 1000));
  if (::poll(&pfd, 1, ms) <= 0) return false;
  return PQconsumeInput(c_) == 1;
}

Result Conn::next_result(double timeout_s, bool* timed_out) {
  if (timed_out) *timed_out = false;
  double deadline = now_s() + timeout_s;
  // Flush whatever is queued (non-blocking connections, pipelines).
  while (PQflush(c_) == 1) {
    pollfd pfd{PQsocket(c_), POLLOUT | POLLIN, 0};
    ::poll(&pfd, 1, 100);
    PQconsumeInput(c_);
    if (now_s() > deadline) break;
  }
  while (PQisBusy(c_)) {
    double left = deadline - now_s();
    if (left <= 0) {
      if (timed_out) *timed_out = true;
      return Result(nullptr, "timed out after " + std::to_string(timeout_s) + " s waiting for a result");
    }
    pollfd pfd{PQsocket(c_), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left * 1000) + 1);
    if (r > 0 && PQconsumeInput(c_) == 0) break;  // connection lost: PQgetResult reports it
  }
  return Result(PQgetResult(c_));
}

Result Conn::exec(const std::string& sql, double timeout_s) {
  if (!ok()) return Result(nullptr, "not connected: " + error());
  if (!PQsendQuery(c_, sql.c_str())) return Result(nullptr, PQerrorMessage(c_));
  Result last;
  double deadline = now_s() + timeout_s;
  for (;;) {
    bool timed_out = false;
    Result r = next_result(std::max(0.0, deadline - now_s()), &timed_out);
    if (timed_out) return r;
    if (!r.get()) break;
    auto st = r.status();
    bool copy = st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
    // Like PQexec: an error result wins over later ones; keep the last otherwise.
    if (!last.get() || last.status() != PGRES_FATAL_ERROR) last = std::move(r);
    if (copy) return last;
    if (PQstatus(c_) == CONNECTION_BAD) break;
  }
  if (!last.get()) return Result(nullptr, PQerrorMessage(c_));
  return last;
}

std::string Conn::value(const std::string& sql, double timeout_s) {
  Result r = exec(sql, timeout_s);
  INFO("query: " << sql);
  INFO("error: " << r.message());
  REQUIRE(r.ok());
  return r.value();
}

void Conn::exec_ok(const std::string& sql, double timeout_s) {
  Result r = exec(sql, timeout_s);
  INFO("query: " << sql);
  INFO("error: " << r.message());
  REQUIRE(r.ok());
}

void Conn::send(const std::string& sql) {
  INFO("query: " << sql);
  INFO("error: " << PQerrorMessage(c_));
  REQUIRE(PQsendQuery(c_, sql.c_str()) == 1);
}

std::string direct_conninfo(const std::string& dbname) {
  return "host=127.0.0.1 port=" + std::to_string(env().pg_port) + " dbname=" + dbname +
         " user=postgres connect_timeout=10 options='-c client_min_messages=warning'";
}

// ---------------------------------------------------------------------------
// Commands

CommandResult run_command(const std::string& command) {
  CommandResult res;
  std::fflush(nullptr);
  FILE* f = ::popen((command + " 2>&1").c_str(), "r");
  if (!f) {
    res.output = "popen failed";
    return res;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) res.output.append(buf, n);
  int st = ::pclose(f);
  res.exit_code = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  return res;
}

CommandResult run_pgbench(const Pooler& p, const std::string& args) {
  return run_command("PGPASSWORD=app PGCONNECT_TIMEOUT=10 " + pg_program("pgbench") +
                     " -h 127.0.0.1 -p " + std::to_string(p.port()) + " -U app " + args + " appdb");
}

CommandResult run_psql(const Pooler& p, const std::string& sql, const std::string& user,
                       const std::string& password) {
  std::string quoted = "'" + replace_all(sql, "'", "'\\''") + "'";
  return run_command("PGPASSWORD='" + password + "' PGCONNECT_TIMEOUT=10 " + pg_program("psql") +
                     " -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p " + std::to_string(p.port()) +
                     " -U " + user + " -d appdb -c " + quoted);
}

// ---------------------------------------------------------------------------
// Small things

int free_port() { return next_free_port(); }

int fixture_port(const char* env_var, int dflt) {
  const char* v = std::getenv(env_var);
  if (v && *v) return std::atoi(v);
  const char* b = std::getenv("PGPIVOT_TEST_PORT_BASE");
  int base = b && std::atoi(b) > 1024 ? std::atoi(b) : 16400;
  return dflt + (base - 16400) / 10;  // e.g. base 24400: 800 higher, still below 65536
}

bool tcp_port_accepts(int port) { return port_accepts(port); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

bool contains_icase(const std::string& haystack, const std::string& needle) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

bool file_exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

std::string repo_root() {
  if (const char* r = std::getenv("PGPIVOT_ROOT"); r && *r) return r;
  std::vector<std::string> starts;
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) starts.emplace_back(buf, static_cast<size_t>(n));
  if (::getcwd(buf, sizeof buf)) starts.emplace_back(std::string(buf) + "/x");
  for (std::string dir : starts) {
    while (dir.size() > 1) {
      dir = dir.substr(0, dir.find_last_of('/'));
      if (dir.empty()) break;
      if (file_exists(dir + "/scripts/lib.sh") && file_exists(dir + "/pooler")) return dir;
    }
  }
  return ".";
}

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

long private_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Anonymous:", 0) == 0) return std::atol(line.c_str() + 10);
  }
  return -1;
}

PeakPrivate::PeakPrivate(pid_t pid) : pid_(pid) {
  t_ = std::thread([this] {
    while (!stop_) {
      long v = private_kb(pid_);
      if (v > peak_) peak_ = v;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
}

PeakPrivate::~PeakPrivate() {
  stop_ = true;
  t_.join();
}

long proc_status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + field.size());
  }
  return -1;
}

bool wait_for(const std::function<bool()>& cond, double timeout_s, double step_s) {
  double deadline = now_s() + timeout_s;
  for (;;) {
    if (cond()) return true;
    if (now_s() >= deadline) return false;
    sleep_s(step_s);
  }
}

}  // namespace itest
