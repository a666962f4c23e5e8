// Logging, one line per event, and systemd's service notifications (log.cpp).
#pragma once

#include <string>

namespace pgpivot {

// Logging: one line per event, to stderr and the optional log file.
// The file is created at once and written line by line; quiet keeps stderr silent.
void log_open(const std::string& logfile, bool quiet = false);
// Opens `logfile` again (after logrotate moved it, or a new name after a reload);
// on failure the old file stays in use and *error says why.
bool log_reopen(const std::string& logfile, std::string* error = nullptr);
// systemd's service notifications (sd_notify) when NOTIFY_SOCKET is set; nothing
// otherwise: READY=1 once listening, RELOADING=1 / READY=1 around a SIGHUP reload,
// STOPPING=1 when a shutdown begins.
void notify_service(const char* state);
void log_line(const char* level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// `verbose` (PgBouncer's: 1 = debug lines, 2 = more): set from the config at load,
// RELOAD and SET; read without a lock (a stale level for a moment is harmless).
void set_log_verbose(int level);
[[nodiscard]] int log_verbose();
#define LOG_DEBUG(...)                                                    \
  do {                                                                    \
    if (::pgpivot::log_verbose() > 0) ::pgpivot::log_line("DEBUG", __VA_ARGS__); \
  } while (0)
#define LOG_INFO(...) ::pgpivot::log_line("LOG", __VA_ARGS__)
#define LOG_WARN(...) ::pgpivot::log_line("WARNING", __VA_ARGS__)
#define LOG_ERROR(...) ::pgpivot::log_line("ERROR", __VA_ARGS__)

}  // namespace pgpivot
