// The fleet and Patroni tests' fixture (test_fleet.cpp, test_patroni.cpp and the
// [fleet-fixture] smoke tests in test_fleet_fixture.cpp), on top of
// failover_safety_fixture.hpp (PgPair, Load, BlackHoleProxy, cluster_row, ...):
//
//   EtcdCluster    etcd members (/usr/bin/etcd, 3.4) on loopback, fresh data dirs,
//                  quick elections; stop/start single members, stop all.
//   Fleet          three pgpivot instances a, b, c in front of one PgPair, all with the
//                  same [coordination] and cluster config; a optionally reaches the
//                  primary through a BlackHoleProxy.
//   PatroniCluster two Patroni 3.0.2 nodes (/usr/bin/patroni, etcd3 DCS) running
//                  PostgreSQL 15, with the roles, appdb and fo_log the Load class needs.
//
// Ports come from fixture_port("PGPIVOT_TEST_FLEET_PORT", 61800) (= B) and stay
// within B .. B+59:
//   B+1 .. B+6    the 3-member etcd cluster: member i client B+1+2i, peer B+2+2i
//   B+7, B+8      a single etcd member (client, peer) for the [patroni] tests
//   B+10 .. B+13  the smoke test's Patroni nodes      } node i: PostgreSQL N+i,
//   B+14 .. B+17  [patroni] case 1's Patroni nodes    } REST API N+2+i
//   B+18 .. B+21  [patroni] case 2's Patroni nodes    }
//   B+24 + 4k     fleet slot k (0..8): primary, standby, proxy, stats_listen of a
// Test cases run one after the other and every fixture waits for its processes to
// exit in its destructor, so slots are reused by later cases.
//
// Everything started here (etcd, Patroni, the PostgreSQL Patroni starts) is killed
// in the destructors, also when a REQUIRE throws; the children also get
// PR_SET_PDEATHSIG so that a crashed test binary does not leave etcd or Patroni
// behind (a postmaster started by Patroni is stopped by the next run's constructor,
// which looks for leftovers in its data directories first).
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <optional>

// Not every helper of the failover fixtures is used by every file that includes this one.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "failover_safety_fixture.hpp"
#pragma GCC diagnostic pop

extern char** environ;

namespace {

int fleet_base() { return fixture_port("PGPIVOT_TEST_FLEET_PORT", 61800); }

// Ports of fleet slot k (primary, standby, proxy, stats = +0 .. +3).
[[maybe_unused]] int fleet_slot_port(int k) { return fleet_base() + 24 + 4 * k; }

// Where the fixtures keep their data: the scratch directory when postgres can reach
// it (PgPair's rule), else /tmp/pgpivot-failover-tests.
std::string fleet_root() {
  std::string root = env().scratch;
  if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0)
    root = "/tmp/pgpivot-failover-tests";
  ::mkdir(root.c_str(), 0755);
  return root;
}

std::string tail_of(const std::string& text, size_t n) {
  return text.size() > n ? "...\n" + text.substr(text.size() - n) : text;
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.0 client (etcd's JSON gateway, Patroni's REST API, /metrics):
// one request per connection, every step under the deadline.

struct HttpResult {
  int status = 0;  // 0: no answer (error says why)
  std::string body;
  std::string error;
};

HttpResult http_call(int port, const std::string& method, const std::string& path, const std::string& body = "",
                     double timeout_s = 2) {
  HttpResult res;
  double deadline = mono_s() + timeout_s;
  auto left_ms = [&] { return std::max(0, static_cast<int>((deadline - mono_s()) * 1000)); };
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    res.error = "socket failed";
    return res;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r != 0 && errno != EINPROGRESS) {
    res.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return res;
  }
  if (r != 0) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, left_ms()) <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      res.error = err ? std::string("connect: ") + std::strerror(err) : "connect timed out";
      ::close(fd);
      return res;
    }
  }
  std::string req = method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nUser-Agent: pgpivot-itest\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST")
    req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  for (size_t off = 0; off < req.size();) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, left_ms()) <= 0) {
      res.error = "send timed out";
      ::close(fd);
      return res;
    }
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0 && errno != EAGAIN) {
      res.error = std::string("send: ") + std::strerror(errno);
      ::close(fd);
      return res;
    }
    if (n > 0) off += static_cast<size_t>(n);
  }
  std::string all;
  char buf[16384];
  bool eof = false;
  while (!eof) {
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, left_ms());
    if (pr <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN) continue;
    if (n <= 0) eof = true;
    else all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!eof) res.error = "no complete answer within " + std::to_string(timeout_s) + " s";
  if (all.rfind("HTTP/1.", 0) == 0 && all.size() >= 12) res.status = std::atoi(all.c_str() + 9);
  size_t sep = all.find("\r\n\r\n");
  if (sep != std::string::npos) res.body = all.substr(sep + 4);
  if (res.status == 0 && res.error.empty()) res.error = "no HTTP status line in: " + all.substr(0, 200);
  if (!eof && res.status != 0) res.status = 0;  // cut short: not an answer
  return res;
}

// The string (or bare) value of the first "name": in a JSON text; "" when absent.
std::string json_field(const std::string& json, const std::string& name) {
  size_t at = json.find("\"" + name + "\"");
  if (at == std::string::npos) return "";
  at = json.find(':', at + name.size() + 2);
  if (at == std::string::npos) return "";
  ++at;
  while (at < json.size() && (json[at] == ' ' || json[at] == '\n')) ++at;
  if (at < json.size() && json[at] == '"') {
    size_t end = json.find('"', at + 1);
    return end == std::string::npos ? "" : json.substr(at + 1, end - at - 1);
  }
  size_t end = json.find_first_of(",}]", at);
  return json.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64_encode(const std::string& in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], kB64[v & 63]};
  }
  if (i + 1 == in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], '='};
  }
  return out;
}

std::string b64_decode(const std::string& in) {
  std::string out;
  unsigned v = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = std::strchr(kB64, c);
    if (c == '=' || !p || !c) break;
    v = (v << 6) | static_cast<unsigned>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Child processes

// A process is alive: it exists and is not a zombie.
bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  size_t rp = stat.rfind(')');
  if (rp == std::string::npos || rp + 2 >= stat.size()) return false;
  return stat[rp + 2] != 'Z' && stat[rp + 2] != 'X';
}

// The direct children of `pid` (from /proc).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string stat = read_text(std::string("/proc/") + e->d_name + "/stat");
    size_t rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream in(stat.substr(rp + 2));
    std::string state;
    long ppid = 0;
    in >> state >> ppid;
    if (ppid == pid) out.push_back(static_cast<pid_t>(std::atol(e->d_name)));
  }
  ::closedir(d);
  return out;
}

struct Spawn {
  std::vector<std::string> argv;
  std::string log_path;
  std::string cwd = "/";
  bool as_postgres = false;
  std::vector<std::pair<std::string, std::string>> env;  // set or replaced
};

// fork + exec in its own session (process group = pid), stdout and stderr appended
// to log_path, every other descriptor closed, dying with this process.
pid_t spawn(const Spawn& s) {
  // Everything the child needs is prepared before fork(): the tests have threads.
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    bool replaced = false;
    for (const auto& [k, v] : s.env)
      if (kv.rfind(k + "=", 0) == 0) replaced = true;
    if (!replaced) envs.push_back(kv);
  }
  for (const auto& [k, v] : s.env) envs.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = s.argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  uid_t uid = 0;
  gid_t gid = 0;
  if (s.as_postgres) {
    passwd* pw = ::getpwnam("postgres");
    if (!pw) throw std::runtime_error("no user postgres");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  int log_fd = ::open(s.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + s.log_path);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = ::getpid();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::setsid();
    ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // Nothing else of ours may leak (a proxy's listening socket, say).
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (s.as_postgres && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) _exit(126);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // after setuid, which clears it
    if (::getppid() != parent) _exit(125);
    if (::chdir(s.cwd.c_str()) != 0) _exit(124);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  return pid;
}

// Sends `sig` to the process group of a spawned child and reaps it; SIGKILL after
// `grace_s`. True when it had to be killed.
bool stop_child(pid_t& pid, int sig, double grace_s = 5) {
  if (pid <= 0) return false;
  ::kill(-pid, sig);
  ::kill(pid, sig);
  bool killed = false;
  double deadline = mono_s() + grace_s;
  for (;;) {
    pid_t r = ::waitpid(pid, nullptr, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) break;
    if (mono_s() > deadline) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      killed = true;
      break;
    }
    sleep_s(0.02);
  }
  pid = -1;
  return killed;
}

// The postmaster's pid from DIR/postmaster.pid (-1 when there is none).
pid_t postmaster_pid(const std::string& data_dir) {
  std::string text = read_text(data_dir + "/postmaster.pid");
  if (text.empty()) return -1;
  pid_t pid = static_cast<pid_t>(std::atol(text.c_str()));
  return pid > 0 ? pid : -1;
}

// kill -9 of a postmaster, and waits (up to 10 s) until it and its backends are gone
// (they exit on their own when they notice; stragglers get SIGKILL too). Returns the
// killed pid, -1 when none was running.
pid_t kill9_postmaster(const std::string& data_dir) {
  pid_t pm = postmaster_pid(data_dir);
  if (pm <= 0 || !process_alive(pm)) return -1;
  std::vector<pid_t> kids = children_of(pm);
  ::kill(pm, SIGKILL);
  bool gone = wait_for([&] {
    if (process_alive(pm)) return false;
    for (pid_t k : kids)
      if (process_alive(k)) return false;
    return true;
  }, 10, 0.02);
  if (!gone)
    for (pid_t k : kids) ::kill(k, SIGKILL);
  return pm;
}

// pg_ctl stop -m immediate of a data directory, and kill -9 of whatever is left.
void stop_pg_dir(const std::string& data_dir) {
  if (!file_exists(data_dir + "/postmaster.pid")) return;
  run_command(pg_ctl("stop -m immediate -w -t 10 -D " + sh_quote(data_dir)) + " >/dev/null 2>&1");
  pid_t pm = postmaster_pid(data_dir);
  if (pm > 0 && process_alive(pm)) kill9_postmaster(data_dir);
}

// ---------------------------------------------------------------------------
// etcd

class EtcdCluster {
 public:
  // `members` etcd members; member i listens for clients on first_port + 2i and for
  // peers on first_port + 2i + 1. Nothing runs before start_all().
  EtcdCluster(const std::string& name, int members = 3, int first_port = fleet_base() + 1) {
    INFO("etcd must be installed (packages etcd-server, etcd-client)");
    REQUIRE(::access("/usr/bin/etcd", X_OK) == 0);
    base_ = fleet_root() + "/fleet-etcd-" + name;
    token_ = "pgpivot-itest-" + name + "-" + std::to_string(::getpid());
    run_command("rm -rf " + sh_quote(base_));
    ::mkdir(base_.c_str(), 0755);
    for (int i = 0; i < members; ++i) {
      client_.push_back(first_port + 2 * i);
      peer_.push_back(first_port + 2 * i + 1);
      pid_.push_back(-1);
    }
  }

  ~EtcdCluster() {
    for (auto& p : pid_) stop_child(p, SIGKILL);
    if (g_current_test_failed) {
      std::cerr << "[itest] etcd data and logs kept in " << base_ << "\n";
      for (int i = 0; i < size(); ++i)
        std::cerr << "[itest] ---- " << log_path(i) << " ----\n" << tail_of(read_text(log_path(i)), 2500) << "\n";
    } else {
      run_command("rm -rf " + sh_quote(base_));
    }
  }

  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(client_.size()); }
  int client_port(int i) const { return client_[static_cast<size_t>(i)]; }
  std::string client_url(int i) const { return "http://127.0.0.1:" + std::to_string(client_port(i)); }
  std::string log_path(int i) const { return base_ + "/member" + std::to_string(i) + ".log"; }
  bool running(int i) const { return pid_[static_cast<size_t>(i)] > 0; }

  // ["http://127.0.0.1:C0", ...] for [coordination] endpoints.
  std::string endpoints_toml() const {
    std::string s = "[";
    for (int i = 0; i < size(); ++i) s += (i ? ", " : "") + toml_str(client_url(i));
    return s + "]";
  }
  // 127.0.0.1:C0,127.0.0.1:C1,... for Patroni's etcd3.hosts.
  std::string hosts() const {
    std::string s;
    for (int i = 0; i < size(); ++i) s += (i ? "," : "") + std::string("127.0.0.1:") + std::to_string(client_port(i));
    return s;
  }

  // Starts every member of a new cluster; REQUIREs all healthy within timeout_s.
  void start_all(double timeout_s = 20) {
    for (int i = 0; i < size(); ++i) spawn_member(i, "new");
    std::vector<int> all;
    for (int i = 0; i < size(); ++i) all.push_back(i);
    bool ok = wait_healthy(all, timeout_s);
    INFO("etcd members healthy within " << timeout_s << " s\n" << logs_text());
    REQUIRE(ok);
  }

  // GET /health answers {"health":"true"} (the member has a leader and a quorum).
  bool healthy(int i) const {
    if (!running(i)) return false;
    HttpResult r = http_call(client_port(i), "GET", "/health", "", 2);
    return r.status == 200 && r.body.find("\"health\":\"true\"") != std::string::npos;
  }

  bool wait_healthy(const std::vector<int>& members, double timeout_s) const {
    return wait_for([&] {
      for (int i : members)
        if (!healthy(i)) return false;
      return true;
    }, timeout_s, 0.1);
  }

  // The leader's index as some running member reports it (-1 when none knows one).
  int leader_index() {
    for (int i = 0; i < size(); ++i) {
      if (!running(i)) continue;
      HttpResult r = http_call(client_port(i), "POST", "/v3/maintenance/status", "{}", 2);
      if (r.status != 200) continue;
      ids_[i] = json_field(r.body, "member_id");
      std::string leader = json_field(r.body, "leader");
      if (leader.empty() || leader == "0") continue;
      for (int j = 0; j < size(); ++j) {
        if (!ids_.count(j)) {
          if (!running(j)) continue;
          HttpResult rj = http_call(client_port(j), "POST", "/v3/maintenance/status", "{}", 2);
          if (rj.status == 200) ids_[j] = json_field(rj.body, "member_id");
        }
        if (ids_.count(j) && ids_[j] == leader) return j;
      }
    }
    return -1;
  }

  // Waits for a leader among the running members; -1 when none in time.
  int wait_leader(double timeout_s) {
    int l = -1;
    wait_for([&] {
      l = leader_index();
      return l >= 0 && running(l);
    }, timeout_s, 0.05);
    return l >= 0 && running(l) ? l : -1;
  }

  // SIGTERM (a clean stop: a leader hands its leadership over) or SIGKILL.
  void stop(int i, int sig = SIGTERM) { stop_child(pid_[static_cast<size_t>(i)], sig, 5); }
  void stop_all(int sig = SIGKILL) {
    for (int i = 0; i < size(); ++i) stop(i, sig);
  }

  // Starts a stopped member again with its data directory (it rejoins); the caller
  // waits for wait_healthy({i}).
  void start(int i) {
    REQUIRE_FALSE(running(i));
    spawn_member(i, "existing");
  }

  // Linearizable put/get through member i (base64 as the JSON gateway wants).
  bool put(int i, const std::string& key, const std::string& value) {
    HttpResult r = http_call(client_port(i), "POST", "/v3/kv/put",
                             "{\"key\":\"" + b64_encode(key) + "\",\"value\":\"" + b64_encode(value) + "\"}", 3);
    return r.status == 200;
  }
  std::optional<std::string> get(int i, const std::string& key) {
    HttpResult r = http_call(client_port(i), "POST", "/v3/kv/range", "{\"key\":\"" + b64_encode(key) + "\"}", 3);
    if (r.status != 200 || r.body.find("\"kvs\"") == std::string::npos) return std::nullopt;
    return b64_decode(json_field(r.body.substr(r.body.find("\"kvs\"")), "value"));
  }
  // Every key under a prefix with its value, for failure messages.
  std::string dump_prefix(const std::string& prefix) {
    for (int i = 0; i < size(); ++i) {
      if (!running(i)) continue;
      std::string end = prefix;
      end.back() = static_cast<char>(end.back() + 1);
      HttpResult r = http_call(client_port(i), "POST", "/v3/kv/range",
                               "{\"key\":\"" + b64_encode(prefix) + "\",\"range_end\":\"" + b64_encode(end) + "\"}", 3);
      if (r.status != 200) continue;
      std::string out;
      for (size_t at = r.body.find("\"key\""); at != std::string::npos; at = r.body.find("\"key\"", at + 1)) {
        std::string rest = r.body.substr(at);
        out += "  " + b64_decode(json_field(rest, "key")) + " = " + b64_decode(json_field(rest, "value")) + "\n";
      }
      return out.empty() ? "  (no keys under " + prefix + ")\n" : out;
    }
    return "  (no etcd member answered)\n";
  }

  std::string logs_text(size_t per_member = 1500) const {
    std::string s;
    for (int i = 0; i < size(); ++i)
      s += "---- " + log_path(i) + " ----\n" + tail_of(read_text(log_path(i)), per_member) + "\n";
    return s;
  }

 private:
  void spawn_member(int i, const std::string& state) {
    std::string initial;
    for (int j = 0; j < size(); ++j)
      initial += (j ? "," : "") + std::string("m") + std::to_string(j) + "=http://127.0.0.1:" +
                 std::to_string(peer_[static_cast<size_t>(j)]);
    std::string peer = "http://127.0.0.1:" + std::to_string(peer_[static_cast<size_t>(i)]);
    Spawn s;
    s.argv = {"/usr/bin/etcd",
              "--name", "m" + std::to_string(i),
              "--data-dir", base_ + "/m" + std::to_string(i),
              "--listen-client-urls", client_url(i),
              "--advertise-client-urls", client_url(i),
              "--listen-peer-urls", peer,
              "--initial-advertise-peer-urls", peer,
              "--initial-cluster", initial,
              "--initial-cluster-state", state,
              "--initial-cluster-token", token_,
              "--heartbeat-interval", "100",
              "--election-timeout", "1000",
              "--logger", "zap",
              "--log-outputs", "stderr"};
    s.log_path = log_path(i);
    s.cwd = base_;
    pid_[static_cast<size_t>(i)] = spawn(s);
  }

  std::string base_, token_;
  std::vector<int> client_, peer_;
  std::vector<pid_t> pid_;
  std::map<int, std::string> ids_;  // member index -> member id (hex-less decimal as the gateway gives it)
};

// ---------------------------------------------------------------------------
// Three pgpivot instances (a, b, c) in front of one PgPair.

// [coordination] as the fleet tests use it.
std::string coordination_toml(const EtcdCluster& etcd, const std::string& instance, int lease_ttl = 3,
                              int request_timeout = 1) {
  std::ostringstream o;
  o << "\n[coordination]\n"
    << "endpoints = " << etcd.endpoints_toml() << "\n"
    << "instance_name = " << toml_str(instance) << "\n"
    << "lease_ttl = " << lease_ttl << "\n"
    << "prefix = \"/pgpivot\"\n"
    << "request_timeout = " << request_timeout << "\n";
  return o.str();
}

struct FleetOptions {
  bool coordination = true;   // false: three independent instances (the fixture's own smoke test)
  bool proxy_for_a = false;   // a reaches the primary through a BlackHoleProxy
  bool sync_rep = true;       // the pair replicates synchronously (no acknowledged write lost)
  bool stats_on_a = false;    // a serves /metrics on the slot's stats port
  int lease_ttl = 3;
  int request_timeout = 1;
  int pool_size = 5;
  // a starts alone and becomes the fleet's leader before b and c start.
  bool a_leads = false;
  // Last changes to instance i's config (e.g. a's [pooler] timeouts).
  std::function<void(int, PoolerConfig&)> tweak;
};

class Fleet {
 public:
  static constexpr int kSize = 3;

  // Slot k's ports (fleet_slot_port); nothing runs before start().
  Fleet(const std::string& name, int slot, EtcdCluster* etcd, FleetOptions o = {})
      : pair("fleet-" + name, fleet_slot_port(slot), fleet_slot_port(slot) + 1),
        proxy_port(fleet_slot_port(slot) + 2),
        stats_port(fleet_slot_port(slot) + 3),
        etcd_(etcd),
        o_(o) {
    REQUIRE((etcd_ || !o_.coordination));
    poolers_.resize(kSize);
  }

  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  ~Fleet() {
    if (g_current_test_failed) {
      for (int i = 0; i < kSize; ++i)
        if (poolers_[static_cast<size_t>(i)])
          std::cerr << "[itest] ---- SHOW CLUSTERS of " << name(i) << ": " << row_text(cluster_row(p(i))) << "\n";
      if (etcd_) std::cerr << "[itest] ---- etcd keys under /pgpivot:\n" << etcd_->dump_prefix("/pgpivot/");
    }
    for (auto& p : poolers_) p.reset();  // before the proxy and the pair go
  }

  static std::string name(int i) { return std::string(1, static_cast<char>('a' + i)); }

  // The pair, then the proxy (when wanted), then a, b, c.
  void start() {
    pair.start(o_.sync_rep);
    if (o_.proxy_for_a) proxy = std::make_unique<BlackHoleProxy>(proxy_port, pair.primary_port);
    for (int i = 0; i < kSize; ++i) {
      start_pooler(i);
      if (i == 0 && o_.a_leads) {
        Row r = wait_cluster(p(0), "leader", name(0), 10);
        INFO("a alone: " << row_text(r));
        REQUIRE(r["leader"] == name(0));
      }
    }
  }

  PoolerConfig config(int i) {
    bool via_proxy = i == 0 && o_.proxy_for_a;
    PoolerConfig cfg = failover_pooler(pair, o_.pool_size, via_proxy ? proxy_port : 0, 1);
    cfg.extra["query_wait_timeout"] = "4";
    if (i == 0 && o_.stats_on_a) cfg.extra["stats_listen"] = "\"127.0.0.1:" + std::to_string(stats_port) + "\"";
    if (o_.coordination) cfg.extra_toml = coordination_toml(*etcd_, name(i), o_.lease_ttl, o_.request_timeout);
    if (o_.tweak) o_.tweak(i, cfg);
    return cfg;
  }

  void start_pooler(int i, std::optional<PoolerConfig> cfg = std::nullopt) {
    poolers_[static_cast<size_t>(i)] = std::make_unique<Pooler>(cfg ? *cfg : config(i));
  }
  void stop_pooler(int i) { poolers_[static_cast<size_t>(i)].reset(); }
  // The same instance again (same config, a new port), as after a host reboot.
  void restart_pooler(int i) {
    stop_pooler(i);
    start_pooler(i);
  }

  Pooler& p(int i) {
    REQUIRE(poolers_[static_cast<size_t>(i)]);
    return *poolers_[static_cast<size_t>(i)];
  }

  // SHOW CLUSTERS' main row of every instance.
  std::vector<Row> rows() {
    std::vector<Row> out;
    for (int i = 0; i < kSize; ++i) out.push_back(poolers_[static_cast<size_t>(i)] ? cluster_row(p(i)) : Row{});
    return out;
  }

  std::string rows_text() {
    std::string s;
    auto rs = rows();
    for (int i = 0; i < kSize; ++i) s += "  " + name(i) + ": " + row_text(rs[static_cast<size_t>(i)]) + "\n";
    return s;
  }

  // Waits until every instance's row satisfies `pred`; the rows last seen.
  bool wait_all(const std::function<bool(const Row&)>& pred, double timeout_s) {
    return wait_for([&] {
      for (auto& r : rows())
        if (!pred(r)) return false;
      return true;
    }, timeout_s, 0.1);
  }
  bool wait_all(const std::string& key, const std::string& value, double timeout_s) {
    return wait_all([&](const Row& r) { return r.count(key) && r.at(key) == value; }, timeout_s);
  }

  // Both nodes seen by every instance (a through the proxy), and, with
  // coordination, etcd reached and all three instances live.
  void require_up(double timeout_s = 20) {
    bool ok = wait_all([&](const Row& r) {
      auto v = [&](const char* k) { return r.count(k) ? r.at(k) : std::string(); };
      if (v("primary_state") != "up" || v("standby_state") != "read-only" || v("active") != "primary") return false;
      if (o_.coordination && (v("coordination") != "ok" || v("instances") != "3" || v("leader").empty())) return false;
      return true;
    }, timeout_s);
    INFO("every instance: primary up, standby read-only, active primary"
         << (o_.coordination ? ", coordination ok, 3 instances, a leader" : "") << ", within " << timeout_s
         << " s:\n" << rows_text());
    REQUIRE(ok);
  }

  PgPair pair;
  std::unique_ptr<BlackHoleProxy> proxy;
  int proxy_port, stats_port;

 private:
  EtcdCluster* etcd_;
  FleetOptions o_;
  std::vector<std::unique_ptr<Pooler>> poolers_;
};

// Writers through every instance of a fleet: instance i's clients have the ids
// first_id + 100 i and up (n_auto autocommit ones, then n_tx in transactions).
class FleetLoad {
 public:
  FleetLoad(Fleet& f, int n_auto = 2, int n_tx = 2, int first_id = 1) {
    for (int i = 0; i < Fleet::kSize; ++i)
      loads_.push_back(std::make_unique<Load>(f.p(i), n_auto, n_tx, "appdb", first_id + 100 * i));
  }
  Load& operator[](int i) { return *loads_[static_cast<size_t>(i)]; }
  void start() {
    for (auto& l : loads_) l->start();
  }
  void event(int target_port) {
    for (auto& l : loads_) l->event(target_port);
  }
  void stop() {
    for (auto& l : loads_) l->stop();
  }
  size_t errors() {
    size_t n = 0;
    for (auto& l : loads_) n += l->error_count();
    return n;
  }
  bool wait_all_on_target(double timeout_s) {
    double deadline = mono_s() + timeout_s;
    bool ok = true;
    for (auto& l : loads_) ok = l->wait_all_on_target(std::max(0.0, deadline - mono_s())) && ok;
    return ok;
  }
  // Acknowledged writes per port since the event, over every instance's clients.
  std::map<int, long> ports_since_event() {
    std::map<int, long> sum;
    for (auto& l : loads_)
      for (auto [port, n] : l->ports_since_event()) sum[port] += n;
    return sum;
  }
  std::string errors_text() {
    std::string s;
    for (size_t i = 0; i < loads_.size(); ++i)
      for (auto& c : loads_[i]->logs())
        for (auto& e : c->errors) s += "  " + Fleet::name(static_cast<int>(i)) + ": " + e + "\n";
    return s.empty() ? "  (none)\n" : s;
  }

 private:
  std::vector<std::unique_ptr<Load>> loads_;
};

// ---------------------------------------------------------------------------
// Patroni

// The Patroni settings of the tests (bootstrap.dcs, so both nodes share them):
//   ttl 12, loop_wait 1, retry_timeout 5: a leader key that outlives
//     loop_wait + 2 * retry_timeout (Patroni's rule of thumb; 3.0.2 validates none
//     of them, later versions want ttl >= 20, which only matters when Patroni
//     itself dies, and no test kills Patroni), and an HA loop every second, so a
//     crash is noticed within 1 s.
//   primary_start_timeout 0: a leader whose PostgreSQL crashed fails over to a
//     healthy replica at once instead of restarting in place (the default, 300 s,
//     would restart it, and the leader would stay); what the [patroni] tests need.
//   maximum_lag_on_failover 16 MB: a replica a little behind under load may still
//     be promoted.
//   use_pg_rewind with wal_log_hints: the crashed old leader can rejoin as a
//     replica afterwards (pg_rewind needs full_page_writes, which stays on).
//   fsync off, synchronous_commit off: throwaway clusters, as scripts/lib.sh's.
const int kPatroniTtl = 12;
const int kPatroniLoopWait = 1;
const int kPatroniRetryTimeout = 5;

class PatroniCluster {
 public:
  static constexpr int kNodes = 2;

  // Node i: PostgreSQL on first_port + i, REST API on first_port + 2 + i.
  PatroniCluster(const std::string& name, const EtcdCluster& etcd, int first_port) : etcd_(etcd) {
    INFO("Patroni must be installed (package patroni)");
    REQUIRE(::access("/usr/bin/patroni", X_OK) == 0);
    REQUIRE(::access("/usr/bin/patronictl", X_OK) == 0);
    base_ = fleet_root() + "/patroni-" + name;
    scope_ = "pgpivot-itest-" + name + "-" + std::to_string(::getpid());
    for (int i = 0; i < kNodes; ++i) {
      pg_.push_back(first_port + i);
      rest_.push_back(first_port + 2 + i);
      pid_.push_back(-1);
    }
    for (int i = 0; i < kNodes; ++i) stop_pg_dir(data_dir(i));  // leftovers of an aborted run
    run_command("rm -rf " + sh_quote(base_));
    ::mkdir(base_.c_str(), 0755);
    passwd* pw = ::getpwnam("postgres");
    REQUIRE(pw);
    for (int i = 0; i < kNodes; ++i) {
      std::string d = node_dir(i);
      ::mkdir(d.c_str(), 0755);
      REQUIRE(::chown(d.c_str(), pw->pw_uid, pw->pw_gid) == 0);
      write_config(i);
    }
  }

  ~PatroniCluster() { stop_all(); }

  PatroniCluster(const PatroniCluster&) = delete;
  PatroniCluster& operator=(const PatroniCluster&) = delete;

  std::string node_name(int i) const { return "node" + std::to_string(i + 1); }
  int pg_port(int i) const { return pg_[static_cast<size_t>(i)]; }
  int rest_port(int i) const { return rest_[static_cast<size_t>(i)]; }
  std::string rest_url(int i) const { return "http://127.0.0.1:" + std::to_string(rest_port(i)); }
  std::string node_dir(int i) const { return base_ + "/" + node_name(i); }
  std::string data_dir(int i) const { return node_dir(i) + "/data"; }
  std::string config_path(int i) const { return node_dir(i) + "/patroni.yml"; }
  std::string log_path(int i) const { return node_dir(i) + "/patroni.log"; }
  std::string pg_log_path(int i) const { return node_dir(i) + "/postgresql.log"; }
  const std::string& scope() const { return scope_; }

  // [clusters.main] for pgpivot in follow mode: node 1 as the primary, node 2 as the
  // standby, each with its REST API.
  std::string cluster_toml() const {
    std::string s;
    for (int i = 0; i < kNodes; ++i)
      s += std::string(i ? "standby" : "primary") + " = { host = \"127.0.0.1\", port = " + std::to_string(pg_port(i)) +
           ", restapi = " + toml_str(rest_url(i)) + " }\n";
    return s;
  }

  // Starts node 1, waits until it leads, then node 2, and waits until it streams;
  // then creates what the Load class needs. REQUIREs each step within its time.
  void start(double timeout_s = 90) {
    double t0 = mono_s();
    spawn_node(0);
    bool led = wait_for([&] { return rest_status(0, "/primary") == 200; }, timeout_s, 0.2);
    INFO("node1 leading (GET /primary = 200) within " << timeout_s << " s\n" << logs_text());
    REQUIRE(led);
    spawn_node(1);
    double left = std::max(10.0, timeout_s - (mono_s() - t0));
    bool streaming = wait_streaming(0, left);
    INFO("node2 streaming from node1 within " << left << " s\n" << logs_text());
    REQUIRE(streaming);
    prepare_app(0);
  }

  // GET on a node's REST API: the status (0 when it did not answer).
  int rest_status(int i, const std::string& path, std::string* body = nullptr, double timeout_s = 1) const {
    HttpResult r = http_call(rest_port(i), "GET", path, "", timeout_s);
    if (body) *body = r.body;
    return r.status;
  }

  // The node whose REST API answers 200 on /primary (-1: none, -2: both).
  int leader() const {
    int found = -1;
    for (int i = 0; i < kNodes; ++i)
      if (rest_status(i, "/primary") == 200) found = found == -1 ? i : -2;
    return found;
  }

  // `replica` answers 200 on /replica and `leader_i` has it streaming.
  bool wait_streaming(int leader_i, double timeout_s) const {
    int replica = 1 - leader_i;
    return wait_for([&] {
      return rest_status(replica, "/replica") == 200 &&
             node_value_on(pg_port(leader_i), "postgres",
                           "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1";
    }, timeout_s, 0.2);
  }

  // kill -9 of node i's postmaster (and wait until its backends are gone).
  pid_t kill_postgres(int i) { return kill9_postmaster(data_dir(i)); }

  // kill -9 of the leader's postmaster; returns the leader's index.
  int kill_leader_postgres() {
    int l = leader();
    REQUIRE(l >= 0);
    REQUIRE(kill_postgres(l) > 0);
    return l;
  }

  CommandResult patronictl(const std::string& args) const {
    return run_command("cd / && timeout -k 5 60 /usr/bin/patronictl -c " + sh_quote(config_path(0)) + " " + args +
                       " 2>&1");
  }
  // patronictl switchover from node `from` to node `to`, no questions asked.
  CommandResult switchover(int from, int to) const {
    return patronictl("switchover --leader " + node_name(from) + " --candidate " + node_name(to) + " --force " +
                      scope_);
  }
  std::string list() const { return patronictl("list " + scope_).output; }

  std::string logs_text(size_t per_file = 2500) const {
    std::string s;
    for (int i = 0; i < kNodes; ++i) {
      s += "---- " + log_path(i) + " ----\n" + tail_of(read_text(log_path(i)), per_file) + "\n";
      s += "---- " + pg_log_path(i) + " ----\n" + tail_of(read_text(pg_log_path(i)), per_file / 2) + "\n";
    }
    return s;
  }

  // Patroni first (it would start PostgreSQL again), then PostgreSQL.
  void stop_all() {
    for (auto& p : pid_) stop_child(p, SIGKILL);
    for (int i = 0; i < kNodes; ++i) stop_pg_dir(data_dir(i));
    if (g_current_test_failed) {
      std::cerr << "[itest] Patroni nodes kept in " << base_ << "\n" << logs_text();
    } else {
      run_command("rm -rf " + sh_quote(base_));
    }
  }

 private:
  static std::string node_value_on(int port, const std::string& db, const std::string& sql) {
    Conn c(node_conninfo(port, db), 3);
    if (!c.ok()) return "";
    Result r = c.exec(sql, 5);
    return r.ok() ? r.value() : "";
  }

  void write_config(int i) const {
    std::ostringstream y;
    y << "# Written by the pgpivot integration tests (fleet_fixture.hpp).\n"
      << "scope: " << scope_ << "\n"
      << "namespace: /pgpivot-itest/\n"
      << "name: " << node_name(i) << "\n"
      << "log:\n  level: INFO\n"
      << "restapi:\n"
      << "  listen: 127.0.0.1:" << rest_port(i) << "\n"
      << "  connect_address: 127.0.0.1:" << rest_port(i) << "\n"
      << "etcd3:\n"
      << "  hosts: " << etcd_.hosts() << "\n"
      << "  protocol: http\n"
      << "bootstrap:\n"
      << "  dcs:\n"
      << "    ttl: " << kPatroniTtl << "\n"
      << "    loop_wait: " << kPatroniLoopWait << "\n"
      << "    retry_timeout: " << kPatroniRetryTimeout << "\n"
      << "    maximum_lag_on_failover: 16777216\n"
      << "    primary_start_timeout: 0\n"
      << "    postgresql:\n"
      << "      use_pg_rewind: true\n"
      << "      use_slots: true\n"
      << "      parameters:\n"
      << "        max_connections: 200\n"
      << "        wal_level: replica\n"
      << "        hot_standby: 'on'\n"
      << "        wal_log_hints: 'on'\n"
      << "        max_wal_senders: 5\n"
      << "        max_replication_slots: 5\n"
      << "        wal_keep_size: 128MB\n"
      << "        fsync: 'off'\n"
      << "        synchronous_commit: 'off'\n"
      << "  initdb:\n"
      << "    - encoding: UTF8\n"
      << "    - locale: C.UTF-8\n"
      << "    - auth: trust\n"
      << "postgresql:\n"
      << "  listen: 127.0.0.1:" << pg_port(i) << "\n"
      << "  connect_address: 127.0.0.1:" << pg_port(i) << "\n"
      << "  data_dir: " << data_dir(i) << "\n"
      << "  bin_dir: " << kPgBin << "\n"
      << "  pgpass: " << node_dir(i) << "/pgpass\n"
      << "  authentication:\n"
      << "    superuser:\n      username: postgres\n"
      << "    replication:\n      username: postgres\n"
      << "  parameters:\n"
      << "    unix_socket_directories: '" << node_dir(i) << "'\n"
      << "    logging_collector: 'on'\n"
      << "    log_directory: '" << node_dir(i) << "'\n"
      << "    log_filename: 'postgresql.log'\n"
      << "    log_file_mode: '0644'\n"
      << "  pg_hba:\n"
      << "    - local all all trust\n"
      << "    - host replication postgres 127.0.0.1/32 trust\n"
      << "    - host all postgres 127.0.0.1/32 trust\n"
      << "    - host all md5user 127.0.0.1/32 md5\n"
      << "    - host all all 127.0.0.1/32 scram-sha-256\n"
      << "watchdog:\n  mode: 'off'\n"
      << "tags:\n  nofailover: false\n  noloadbalance: false\n  clonefrom: false\n  nosync: false\n";
    std::ofstream(config_path(i)) << y.str();
  }

  void spawn_node(int i) {
    Spawn s;
    s.argv = {"/usr/bin/patroni", config_path(i)};
    s.log_path = log_path(i);
    s.cwd = node_dir(i);
    s.as_postgres = true;
    s.env = {{"HOME", node_dir(i)}, {"USER", "postgres"}, {"LOGNAME", "postgres"}, {"PGPASSFILE", node_dir(i) + "/pgpass"},
             {"PYTHONDONTWRITEBYTECODE", "1"}};
    pid_[static_cast<size_t>(i)] = spawn(s);
  }

  // The roles, database and table of scripts/lib.sh's primary and PgPair::start, on
  // the leader; waits until the replica has them.
  void prepare_app(int leader_i) {
    {
      Conn c(node_conninfo(pg_port(leader_i), "postgres"));
      INFO(c.error());
      REQUIRE(c.ok());
      c.exec_ok("SET password_encryption = 'scram-sha-256'");
      c.exec_ok("CREATE ROLE app LOGIN PASSWORD 'app'");
      c.exec_ok("CREATE ROLE admin LOGIN PASSWORD 'admin'");
      c.exec_ok("SET password_encryption = 'md5'");
      c.exec_ok("CREATE ROLE md5user LOGIN PASSWORD 'md5pass'");
      c.exec_ok("CREATE DATABASE appdb OWNER app");
    }
    {
      Conn c(node_conninfo(pg_port(leader_i), "appdb"));
      INFO(c.error());
      REQUIRE(c.ok());
      c.exec_ok("CREATE TABLE fo_log (client int, seq int, part int, port int, PRIMARY KEY (client, seq, part))");
      c.exec_ok("GRANT ALL ON fo_log TO app");
    }
    int replica = 1 - leader_i;
    bool there = wait_for([&] {
      return node_value_on(pg_port(replica), "appdb", "SELECT to_regclass('fo_log') IS NOT NULL") == "t";
    }, 20);
    INFO("fo_log replicated to " << node_name(replica));
    REQUIRE(there);
  }

  const EtcdCluster& etcd_;
  std::string base_, scope_;
  std::vector<int> pg_, rest_;
  std::vector<pid_t> pid_;
};

// ---------------------------------------------------------------------------
// Checks

// /metrics of a stats listener: the value of the first sample of `name` whose labels
// contain every one of `labels` (e.g. {"cluster=\"main\"", "state=\"lost\""}); "" when absent.
[[maybe_unused]] std::string metric_sample(int port, const std::string& name, const std::vector<std::string>& labels,
                                           std::string* all = nullptr) {
  HttpResult r = http_call(port, "GET", "/metrics", "", 5);
  if (all) *all = r.status ? r.body : r.error;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    size_t close = line.find('}');
    if (close == std::string::npos) continue;
    std::string lab = line.substr(name.size(), close - name.size() + 1);
    bool match = true;
    for (const auto& l : labels)
      if (lab.find(l) == std::string::npos) match = false;
    if (match) return line.substr(line.rfind(' ') + 1);
  }
  return "";
}

// Acknowledged writes per port (Load::ports_since_event) went to `port` only.
[[maybe_unused]] bool only_on(const std::map<int, long>& ports, int port) {
  for (auto [p, n] : ports)
    if (p != port && n > 0) return false;
  auto it = ports.find(port);
  return it != ports.end() && it->second > 0;
}

// The count of writes on `port` (0 when none), without adding it to the map.
[[maybe_unused]] long on_port(const std::map<int, long>& ports, int port) {
  auto it = ports.find(port);
  return it == ports.end() ? 0 : it->second;
}

// The promote_command runs once the first has ended (its "end" line written; up to
// 30 s): what a duration is measured from.
[[maybe_unused]] std::vector<PromoteRun> ended_promote_runs(const PgPair& pair) {
  std::vector<PromoteRun> runs;
  wait_for([&] {
    runs = pair.promote_runs();
    return !runs.empty() && runs[0].end_wall > 0;
  }, 30, 0.05);
  return runs;
}

// Every SHOW CLUSTERS row has the same, non-empty value of `key`.
[[maybe_unused]] bool same_everywhere(const std::vector<Row>& rows, const std::string& key) {
  if (rows.empty() || !rows[0].count(key) || rows[0].at(key).empty()) return false;
  for (const auto& r : rows)
    if (!r.count(key) || r.at(key) != rows[0].at(key)) return false;
  return true;
}

}  // namespace
