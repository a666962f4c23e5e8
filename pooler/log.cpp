// Logging: timestamped lines to stderr and, when `logfile` is set, to that file.
#include <sys/time.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <string>

#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {
FILE* g_logfile = nullptr;
bool g_quiet = false;
}

void log_open(const std::string& logfile, bool quiet) {
  g_quiet = quiet;
  if (g_logfile) {
    std::fclose(g_logfile);
    g_logfile = nullptr;
  }
  if (logfile.empty()) return;
  g_logfile = std::fopen(logfile.c_str(), "a");
  if (!g_logfile) std::fprintf(stderr, "cannot open logfile %s\n", logfile.c_str());
}

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
  if (!g_quiet) std::fwrite(line, 1, len, stderr);
  if (g_logfile) {
    std::fwrite(line, 1, len, g_logfile);
    std::fflush(g_logfile);
  }
}

}  // namespace pgpivot
