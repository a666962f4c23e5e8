// pgpivot as a daemon, the way PgBouncer behaves under systemd and logrotate:
// sd_notify READY=1 / RELOADING=1 / STOPPING=1 on NOTIFY_SOCKET, the logfile opened
// anew on SIGHUP, `-d` that reports a failed start, and a pidfile that a failed
// second start leaves alone.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "harness.hpp"

using namespace itest;

namespace {

// The socket systemd listens on for a service's notifications.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // The next datagram, "" after timeout_s.
  std::string next(double timeout_s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, int(timeout_s * 1000)) <= 0) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, std::size_t(n)) : "";
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

bool skip_for_pgbouncer() {
  if (!env().use_pgbouncer) return false;
  WARN("pgpivot's daemon behaviour: not checked against PgBouncer");
  return true;
}

// pgpivot refuses root without -u; the tests run as root, as CI does.
std::string as_root() { return ::geteuid() == 0 ? " -u root" : ""; }

bool has_line(const std::string& msg, const std::string& line) {
  return ("\n" + msg + "\n").find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("daemon: sd_notify READY=1 once listening, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1",
          "[process][daemon]") {
  if (skip_for_pgbouncer()) return;
  NotifySocket ns(env().scratch + "/notify.sock");
  ::setenv("NOTIFY_SOCKET", ns.path().c_str(), 1);
  auto p = std::make_unique<Pooler>();
  ::unsetenv("NOTIFY_SOCKET");
  std::string ready = ns.next(10);
  INFO("first notification: " << ready);
  CHECK(has_line(ready, "READY=1"));
  {
    Conn c(p->conninfo());  // READY came once it listens
    CHECK(c.ok());
  }
  p->signal(SIGHUP);
  std::string reloading = ns.next(10);
  std::string again = ns.next(10);
  INFO("after SIGHUP: [" << reloading << "] then [" << again << "]");
  CHECK(has_line(reloading, "RELOADING=1"));
  CHECK(reloading.find("MONOTONIC_USEC=") != std::string::npos);
  CHECK(has_line(again, "READY=1"));
  p->expect_exit();
  p->signal(SIGINT);
  std::string stopping = ns.next(10);
  INFO("after SIGINT: " << stopping);
  CHECK(has_line(stopping, "STOPPING=1"));
  CHECK(p->wait_exit(10));
}

TEST_CASE("daemon: SIGHUP opens the logfile anew, so that logrotate needs no copytruncate", "[process][daemon]") {
  if (skip_for_pgbouncer()) return;
  std::string logfile = env().scratch + "/rotate-test.log";
  ::unlink(logfile.c_str());
  ::unlink((logfile + ".1").c_str());
  PoolerConfig cfg;
  cfg.extra["logfile"] = "\"" + logfile + "\"";
  Pooler p(cfg);
  REQUIRE(wait_for([&] { return read_text(logfile).find("listening on") != std::string::npos; }, 10));
  REQUIRE(::rename(logfile.c_str(), (logfile + ".1").c_str()) == 0);  // what logrotate does
  p.signal(SIGHUP);
  REQUIRE(wait_for([&] { return file_exists(logfile); }, 10));
  {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
  }
  bool logged = wait_for([&] { return read_text(logfile).find("login attempt") != std::string::npos; }, 10);
  INFO("new logfile:\n" << read_text(logfile) << "\nrotated one ends:\n" << read_text(logfile + ".1"));
  CHECK(logged);
  CHECK(read_text(logfile + ".1").find("login attempt") == std::string::npos);
  CHECK(read_text(logfile + ".1").find("got SIGHUP") != std::string::npos);
}

TEST_CASE("daemon: -d exits non-zero when the start fails; a failed second start keeps the running one's pidfile",
          "[process][daemon]") {
  if (skip_for_pgbouncer()) return;
  std::string dir = env().scratch + "/daemon-test";
  run_command("rm -rf " + sh_quote(dir) + " && mkdir -p " + sh_quote(dir));
  std::string pidfile = dir + "/pgpivot.pid", logfile = dir + "/pgpivot.log";
  PoolerConfig cfg;
  cfg.extra["pidfile"] = "\"" + pidfile + "\"";
  cfg.extra["logfile"] = "\"" + logfile + "\"";
  Pooler first(cfg);
  REQUIRE(wait_for([&] { return read_text(pidfile) == std::to_string(first.pid()) + "\n"; }, 10));

  // The same config again, daemonized: the pidfile names a live pgpivot.
  auto second = run_command(env().pgpivot_bin + as_root() + " -d " + sh_quote(first.config_path()));
  INFO("second start: exit " << second.exit_code << ": " << second.output);
  CHECK(second.exit_code != 0);
  CHECK(second.output.find("already running") != std::string::npos);
  CHECK(read_text(pidfile) == std::to_string(first.pid()) + "\n");

  // Another pidfile, the same (busy) port: the daemon cannot listen, -d says so.
  std::string other_pid = dir + "/other.pid";
  std::string conf = read_text(first.config_path());
  auto at = conf.find(pidfile);
  REQUIRE(at != std::string::npos);
  conf.replace(at, pidfile.size(), other_pid);
  std::string other_conf = dir + "/other.toml";
  std::ofstream(other_conf) << conf;
  auto busy = run_command(env().pgpivot_bin + as_root() + " -d " + sh_quote(other_conf));
  INFO("start on a busy port: exit " << busy.exit_code << ": " << busy.output << "\nlog:\n" << read_text(logfile));
  CHECK(busy.exit_code != 0);
  CHECK_FALSE(file_exists(other_pid));
  CHECK(read_text(pidfile) == std::to_string(first.pid()) + "\n");
  Conn c(first.conninfo());
  CHECK(c.ok());
  CHECK(first.running());
}

TEST_CASE("daemon: as root, pgpivot refuses to start unless -u names the user", "[process][daemon]") {
  if (skip_for_pgbouncer()) return;
  if (::geteuid() != 0) {
    WARN("not root: nothing to refuse");
    return;
  }
  PoolerConfig cfg;
  std::string conf = env().scratch + "/root-test.toml";
  std::ofstream(conf) << render_toml(cfg, 16398);
  auto r = run_command("timeout 10 " + env().pgpivot_bin + " " + sh_quote(conf));
  INFO("exit " << r.exit_code << ": " << r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("refusing to run as root") != std::string::npos);
}
