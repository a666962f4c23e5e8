// pgpivot entry point: command line (PgBouncer's flags where they make sense),
// config check and conversion, daemon mode and pidfile, `pgpivot ctl`, run.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/load.hpp"
#include "pooler/pooler.hpp"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "pgpivot %s - PostgreSQL connection pooler with failover\n\n"
               "Usage:\n"
               "  pgpivot [-d] [-q] [-v] [-u USER] CONFIG   run (CONFIG: pgpivot.toml or pgbouncer.ini)\n"
               "  pgpivot --check CONFIG                   validate the config and print every problem\n"
               "  pgpivot --convert pgbouncer.ini          print the equivalent TOML config\n"
               "  pgpivot ctl status|switchover|failover|failback|abort [--cluster NAME] [--admin CONNINFO]\n"
               "                                           talk to a running pgpivot's console\n"
               "  pgpivot -V | --version                   print the version\n"
               "  pgpivot -h | --help                      this text\n\n"
               "Options:\n"
               "  -d, --daemon   run in the background (needs pidfile and logfile in the config)\n"
               "  -q, --quiet    log nothing to stderr (the logfile still gets everything)\n"
               "  -v, --verbose  more logging\n"
               "  -u USER        switch to this OS user after reading the config (as root, one\n"
               "                 of -u or `user` is required; -u root runs as root on purpose)\n\n"
               "Signals: SIGHUP reload, SIGUSR1 pause, SIGUSR2 resume, SIGINT shutdown after\n"
               "in-flight transactions, SIGTERM shutdown once clients leave, SIGQUIT immediate;\n"
               "a second SIGINT or SIGTERM during a shutdown exits at once.\n"
               "ctl connects to --admin, else $PGPIVOT_ADMIN, else the console on the Unix socket\n"
               "in /tmp, port 6432, as user pgbouncer.\n",
               PGPIVOT_VERSION);
}

// Each client and server needs a descriptor: take the hard limit.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  LOG_INFO("file descriptor limit: %llu", (unsigned long long)rl.rlim_cur);
}

bool switch_user(const std::string& name) {
  passwd* pw = getpwnam(name.c_str());
  if (!pw) {
    std::fprintf(stderr, "pgpivot: no such user: %s\n", name.c_str());
    return false;
  }
  if (getuid() == pw->pw_uid) return true;
  if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
    std::fprintf(stderr, "pgpivot: cannot switch to user %s: %s\n", name.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

// ---- pgpivot ctl -----------------------------------------------------------

int ctl(int argc, char** argv) {
  if (argc < 1) {
    std::fprintf(stderr, "pgpivot ctl: say status, switchover, failover, failback or abort\n");
    return 2;
  }
  std::string verb = argv[0], cluster, admin;
  if (const char* e = std::getenv("PGPIVOT_ADMIN")) admin = e;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "--cluster" || a == "--admin") && i + 1 < argc) {
      (a == "--cluster" ? cluster : admin) = argv[++i];
    } else {
      std::fprintf(stderr, "pgpivot ctl: unexpected argument %s\n", a.c_str());
      return 2;
    }
  }
  if (admin.empty()) admin = "host=/tmp port=6432 dbname=pgbouncer user=pgbouncer";
  std::string sql;
  if (verb == "status") {
    sql = "SHOW CLUSTERS";
  } else if (verb == "switchover" || verb == "failover" || verb == "failback" || verb == "abort") {
    for (char& ch : verb) sql += char(std::toupper(static_cast<unsigned char>(ch)));
    if (!cluster.empty()) sql += " \"" + cluster + "\"";
  } else {
    std::fprintf(stderr, "pgpivot ctl: unknown command %s (status, switchover, failover, failback, abort)\n", verb.c_str());
    return 2;
  }
  PGconn* conn = PQconnectdb(admin.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    // Name the console without its password.
    std::string shown;
    if (PQconninfoOption* opts = PQconninfo(conn)) {
      for (PQconninfoOption* o = opts; o->keyword; o++) {
        std::string k = o->keyword;
        if (!o->val || !*o->val || k == "password") continue;
        if (k == "host" || k == "port" || k == "dbname" || k == "user") shown += (shown.empty() ? "" : " ") + k + "=" + o->val;
      }
      PQconninfoFree(opts);
    }
    std::fprintf(stderr, "pgpivot ctl: cannot reach the pgpivot console (%s): %s", shown.c_str(), PQerrorMessage(conn));
    PQfinish(conn);
    return 1;
  }
  int rc = 0;
  auto print = [](PGresult* r) {
    int n = PQnfields(r);
    std::vector<std::size_t> w(std::size_t(n), 0);
    for (int c = 0; c < n; c++) w[std::size_t(c)] = std::strlen(PQfname(r, c));
    for (int row = 0; row < PQntuples(r); row++) {
      for (int c = 0; c < n; c++) w[std::size_t(c)] = std::max(w[std::size_t(c)], std::strlen(PQgetvalue(r, row, c)));
    }
    for (int c = 0; c < n; c++) std::printf("%-*s%s", int(w[std::size_t(c)]), PQfname(r, c), c + 1 < n ? "  " : "\n");
    for (int row = 0; row < PQntuples(r); row++) {
      for (int c = 0; c < n; c++) {
        std::printf("%-*s%s", int(w[std::size_t(c)]), PQgetvalue(r, row, c), c + 1 < n ? "  " : "\n");
      }
    }
  };
  PGresult* r = PQexec(conn, sql.c_str());
  if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
    std::fprintf(stderr, "pgpivot ctl %s failed: %s", verb.c_str(), PQresultErrorMessage(r));
    rc = 1;
  } else if (verb == "status") {
    print(r);
  } else {
    std::printf("%s%s%s complete\n", verb.c_str(), cluster.empty() ? "" : " of cluster ", cluster.c_str());
    PQclear(r);
    r = PQexec(conn, "SHOW CLUSTERS");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) print(r);
  }
  PQclear(r);
  PQfinish(conn);
  return rc;
}

// The live process a pidfile names, or 0 (no file, unreadable, stale, or this process).
pid_t running_pid(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return 0;
  long pid = 0;
  int got = std::fscanf(f, "%ld", &pid);
  std::fclose(f);
  if (got != 1 || pid <= 0 || pid == long(getpid())) return 0;
  if (kill(pid_t(pid), 0) == 0 || errno == EPERM) return pid_t(pid);
  return 0;
}

// Written to a temporary file and renamed over a stale one.
bool write_pidfile(const std::string& path) {
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "w");
  bool ok = f != nullptr;
  if (f) {
    ok = std::fprintf(f, "%d\n", int(getpid())) > 0;
    ok = std::fclose(f) == 0 && ok;
  }
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    LOG_ERROR("cannot write pidfile %s: %s", path.c_str(), std::strerror(errno));
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

// Removes the pidfile only while it still names this process.
void remove_own_pidfile(const std::string& path) {
  if (path.empty()) return;
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return;
  long pid = 0;
  int got = std::fscanf(f, "%ld", &pid);
  std::fclose(f);
  if (got == 1 && pid == long(getpid())) unlink(path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "ctl") return ctl(argc - 2, argv + 2);
  std::string path, run_as;
  bool check = false, convert = false, daemon = false, quiet = false;
  int verbose = 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--version" || a == "-V") {
      std::printf("pgpivot %s\n", PGPIVOT_VERSION);
      return 0;
    }
    if (a == "--check") {
      check = true;
    } else if (a == "--convert") {
      convert = true;
    } else if (a == "-d" || a == "--daemon") {
      daemon = true;
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else if (a == "-v" || a == "--verbose") {
      verbose++;
    } else if (a == "-u" || a == "--user") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "pgpivot: -u needs a user name\n");
        return 2;
      }
      run_as = argv[++i];
    } else if (a == "-R" || a == "--reboot") {
      std::fprintf(stderr, "pgpivot: -R (online restart) is not supported; use SHUTDOWN WAIT_FOR_CLIENTS and start anew\n");
      return 2;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "pgpivot: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    } else if (!path.empty()) {
      std::fprintf(stderr, "pgpivot: only one config file may be given\n");
      return 2;
    } else {
      path = a;
    }
  }
  if (path.empty()) {
    usage(stderr);
    return 2;
  }
  auto res = pgpivot::config::load_file(path);
  for (const auto& w : res.warnings) std::fprintf(stderr, "%s: warning: %s\n", path.c_str(), w.to_string().c_str());
  if (!res.ok()) {
    for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    std::fprintf(stderr, "pgpivot: %zu problem%s in %s\n", res.errors.size(), res.errors.size() == 1 ? "" : "s",
                 path.c_str());
    return 1;
  }
  if (convert) {
    std::fputs(pgpivot::config::to_toml(res.config).c_str(), stdout);
    return 0;
  }
  if (check) {
    std::printf("%s: OK\n", path.c_str());
    return 0;
  }
  res.config.path = path;
  auto& set = res.config.pooler;
  // Fixed for the life of the process, before any connection or worker exists.
  for (const auto& n : pgpivot::set_extra_tracked(set.track_extra_parameters)) {
    std::fprintf(stderr, "%s: warning: track_extra_parameters: %s not tracked: at most %d parameters are\n",
                 path.c_str(), n.c_str(), pgpivot::kMaxTracked);
  }
  if (verbose > set.verbose) set.verbose = verbose;
  if (run_as.empty()) run_as = set.user;
  if (daemon && (set.pidfile.empty() || set.logfile.empty())) {
    std::fprintf(stderr, "pgpivot: -d needs pidfile and logfile in the config\n");
    return 1;
  }
  if (run_as.empty() && geteuid() == 0) {
    // As PgBouncer: a pooler has no business with root's powers. `-u root` (or
    // user = "root") says it is meant.
    std::fprintf(stderr, "pgpivot: refusing to run as root; give -u USER (or `user` in the config)\n");
    return 1;
  }
  if (!run_as.empty() && !switch_user(run_as)) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  // Another pgpivot named in the pidfile and alive: leave it and its pidfile alone.
  if (!set.pidfile.empty()) {
    if (pid_t other = running_pid(set.pidfile); other > 0) {
      std::fprintf(stderr, "pgpivot: pidfile %s names a running process (%d): is pgpivot already running?\n",
                   set.pidfile.c_str(), int(other));
      return 1;
    }
  }
  // -d: the parent exits only when the daemon reports how its start went (a byte
  // on this pipe once it listens; nothing if it failed), with that outcome.
  int ready_pipe[2] = {-1, -1};
  if (daemon) {
    if (pipe(ready_pipe) != 0) {
      std::perror("pgpivot: pipe");
      return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("pgpivot: fork");
      return 1;
    }
    if (pid > 0) {
      close(ready_pipe[1]);
      char b = 0;
      ssize_t n;
      do n = read(ready_pipe[0], &b, 1);
      while (n < 0 && errno == EINTR);
      if (n == 1 && b == '1') return 0;
      std::fprintf(stderr, "pgpivot: the daemon did not start (see %s)\n", set.logfile.c_str());
      return 1;
    }
    close(ready_pipe[0]);
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      if (fd > 2) close(fd);
    }
    quiet = true;
  }
  pgpivot::log_open(set.logfile, quiet);
  if (!set.pidfile.empty() && !write_pidfile(set.pidfile)) return 1;
  std::string pidfile = set.pidfile;
  LOG_INFO("pgpivot %s starting with %s", PGPIVOT_VERSION, path.c_str());
  for (const auto& w : res.warnings) LOG_WARN("%s", w.to_string().c_str());
  raise_fd_limit();
  // One reactor per worker: worker 0 on this thread (default loop, signals, Unix
  // socket, HTTP, health checks), the others on their own threads and loops.
  int workers = std::max(1, res.config.pooler.workers);
  if (workers > 1) LOG_INFO("%d workers", workers);
  {
    pgpivot::Hub hub(workers);
    std::vector<std::unique_ptr<uv_loop_t>> loops;
    std::vector<std::unique_ptr<pgpivot::Pooler>> shards;
    for (int i = 0; i < workers; i++) {
      uv_loop_t* loop = uv_default_loop();
      if (i > 0) {
        loops.push_back(std::make_unique<uv_loop_t>());
        loop = loops.back().get();
        uv_loop_init(loop);
      }
      pgpivot::config::Config copy = i + 1 < workers ? res.config : std::move(res.config);
      shards.push_back(std::make_unique<pgpivot::Pooler>(std::move(copy), loop, &hub, i));
    }
    for (auto& s : shards) {
      if (!s->start()) {
        LOG_ERROR("could not start; exiting");
        remove_own_pidfile(pidfile);
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
    // Listening: tell whoever waits (the -d parent, systemd).
    if (ready_pipe[1] >= 0) {
      (void)!write(ready_pipe[1], "1", 1);
      close(ready_pipe[1]);
    }
    pgpivot::notify_service("READY=1");
    std::vector<std::thread> threads;
    for (int i = 1; i < workers; i++) threads.emplace_back([&shards, i] { shards[std::size_t(i)]->run(); });
    shards[0]->run();
    for (auto& t : threads) t.join();
    shards.clear();
    for (auto& l : loops) uv_loop_close(l.get());
  }
  uv_loop_close(uv_default_loop());
  remove_own_pidfile(pidfile);
  LOG_INFO("pgpivot stopped");
  return 0;
}
