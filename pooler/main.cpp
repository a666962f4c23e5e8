// pgpivot entry point: command line, config check, file descriptor limit, run.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config/load.hpp"
#include "pooler/pooler.hpp"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "pgpivot %s - PostgreSQL connection pooler with failover\n\n"
               "Usage:\n"
               "  pgpivot CONFIG.toml          run in the foreground\n"
               "  pgpivot --check CONFIG.toml  validate the config and print every problem\n"
               "  pgpivot --version            print the version\n"
               "  pgpivot --help               this text\n\n"
               "Signals: SIGHUP reloads the config, SIGINT shuts down after in-flight transactions,\n"
               "SIGTERM and SIGQUIT shut down at once.\n",
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

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool check = false;
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
      continue;
    }
    if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "pgpivot: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    }
    if (!path.empty()) {
      std::fprintf(stderr, "pgpivot: only one config file may be given\n");
      return 2;
    }
    path = a;
  }
  if (path.empty()) {
    usage(stderr);
    return 2;
  }
  auto res = pgpivot::config::load_file(path);
  if (!res.ok()) {
    for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    std::fprintf(stderr, "pgpivot: %zu problem%s in %s\n", res.errors.size(), res.errors.size() == 1 ? "" : "s",
                 path.c_str());
    return 1;
  }
  if (check) {
    std::printf("%s: OK\n", path.c_str());
    return 0;
  }
  res.config.path = path;
  std::signal(SIGPIPE, SIG_IGN);
  pgpivot::log_open(res.config.pooler.logfile);
  LOG_INFO("pgpivot %s starting with %s", PGPIVOT_VERSION, path.c_str());
  raise_fd_limit();
  uv_loop_t* loop = uv_default_loop();
  {
    pgpivot::Pooler pooler(std::move(res.config), loop);
    if (!pooler.start()) {
      LOG_ERROR("could not start; exiting");
      std::fflush(stderr);
      std::_Exit(1);
    }
    pooler.run();
  }
  uv_loop_close(loop);
  LOG_INFO("pgpivot stopped");
  return 0;
}
