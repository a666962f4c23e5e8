// Logging: timestamped lines to stderr and, when `logfile` is set, to that file
// (opened anew on SIGHUP, so that logrotate can move it without copytruncate).
#include <sys/time.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {
std::mutex g_mu;  // workers log from their own threads; SIGHUP swaps the file
FILE* g_logfile = nullptr;
bool g_quiet = false;
}

void log_open(const std::string& logfile, bool quiet) {
  std::lock_guard lk(g_mu);
  g_quiet = quiet;
  if (g_logfile) {
    std::fclose(g_logfile);
    g_logfile = nullptr;
  }
  if (logfile.empty()) return;
  g_logfile = std::fopen(logfile.c_str(), "a");
  if (!g_logfile) std::fprintf(stderr, "cannot open logfile %s\n", logfile.c_str());
}

bool log_reopen(const std::string& logfile, std::string* error) {
  FILE* fresh = logfile.empty() ? nullptr : std::fopen(logfile.c_str(), "a");
  if (!logfile.empty() && !fresh) {
    if (error) *error = std::strerror(errno);
    return false;  // keep writing to the file that is open
  }
  std::lock_guard lk(g_mu);
  if (g_logfile) std::fclose(g_logfile);
  g_logfile = fresh;
  return true;
}

namespace {
std::atomic<int> g_verbose{0};
}  // namespace

void set_log_verbose(int level) { g_verbose.store(level, std::memory_order_relaxed); }
int log_verbose() { return g_verbose.load(std::memory_order_relaxed); }

void log_line(const char* level, const char* fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm tmv{};
  gmtime_r(&tv.tv_sec, &tmv);
  char ts[64];
  std::strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tmv);
  char line[2300];
  int n = std::snprintf(line, sizeof line, "%s.%03d UTC [%d] %s %s\n", ts, int(tv.tv_usec / 1000), int(getpid()), level, msg);
  if (n < 0) return;
  std::size_t len = std::size_t(n) < sizeof line ? std::size_t(n) : sizeof line - 1;
  std::lock_guard lk(g_mu);
  if (!g_quiet) std::fwrite(line, 1, len, stderr);
  if (g_logfile) {
    std::fwrite(line, 1, len, g_logfile);
    std::fflush(g_logfile);
  }
}

void notify_service(const char* state) {
  if (!std::getenv("NOTIFY_SOCKET")) return;
  std::string msg = state;
  if (msg == "RELOADING=1") {
    // systemd >= 253 wants the time of the reload request with it.
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    msg += "\nMONOTONIC_USEC=" + std::to_string(std::uint64_t(ts.tv_sec) * 1000000 + std::uint64_t(ts.tv_nsec) / 1000);
  }
  int rc = sd_notify(0, msg.c_str());
  if (rc < 0) log_line("WARNING", "sd_notify(%s) failed: %s", state, std::strerror(-rc));
}

}  // namespace pgpivot
