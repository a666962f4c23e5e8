// Integration-test harness: runs the real pgpivot binary (or, for comparison,
// PgBouncer) against the throwaway PostgreSQL that scripts/test starts, and wraps
// libpq so that no test can hang: every wait has a deadline.
#pragma once

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <functional>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace itest {

// Read once from the environment (see scripts/test).
struct Env {
  std::string pgpivot_bin;  // PGPIVOT_BIN
  int pg_port = 0;          // PGPIVOT_TEST_PGPORT (host 127.0.0.1)
  std::string scratch;      // PGPIVOT_TEST_SCRATCH
  std::string pg_bin;       // PGPIVOT_TEST_PGBIN: directory of psql/pgbench ("" = PATH)
  bool use_pgbouncer = false;  // PGPIVOT_TEST_USE_PGBOUNCER=1: run /usr/sbin/pgbouncer instead
};
const Env& env();

// Path of a PostgreSQL client program (psql, pgbench).
std::string pg_program(const std::string& name);

// What a test wants in the pooler's config file; written as TOML for pgpivot.
struct PoolerConfig {
  std::string pool_mode = "transaction";
  int default_pool_size = 5;
  int max_client_conn = 500;
  std::string auth_type = "scram-sha-256";
  // More [pooler] keys; values are TOML literals, e.g. {"query_wait_timeout", "1"}.
  std::map<std::string, std::string> extra;
  // More [databases.NAME] sections: name -> TOML body, e.g. "cluster = \"main\"".
  std::map<std::string, std::string> extra_databases;
  // Body of [clusters.main] ("" = primary at PGPIVOT_TEST_PGPORT only), e.g.
  // "primary = { host = \"127.0.0.1\", port = 1 }\nstandby = { ... }".
  std::string main_cluster;
  // More [clusters.NAME] sections: name -> TOML body.
  std::map<std::string, std::string> extra_clusters;
  // Body of the [failover] section ("" = none), e.g. "failure_threshold = 3".
  std::string failover;
  // [users]: name -> password (plain text).
  std::map<std::string, std::string> users = {
      {"app", "app"}, {"admin", "admin"}, {"md5user", "md5pass"}};
  // Console access: admin_users may run every command, stats_users only SHOW.
  std::vector<std::string> admin_users = {"admin"};
  std::vector<std::string> stats_users;  // not written when empty
  // A whole config file instead of the above (e.g. the README's example), with
  // "listen_port = 6432" in it replaced by the pooler's port.
  std::string raw_toml;
  // More TOML at the end of the file (e.g. a [peers] table).
  std::string extra_toml;
  // The listening port: 0 = a free one; another pooler's port to share it
  // (so_reuseport, peering).
  int port = 0;
};

// Renders the TOML config file for a pooler listening on `port`.
std::string render_toml(const PoolerConfig& cfg, int port);

// One pooler process for the duration of a test. Throws (with the log) when it
// does not accept connections within 10 s; SIGTERM + reap in the destructor.
class Pooler {
 public:
  explicit Pooler(PoolerConfig cfg = {});
  ~Pooler();
  Pooler(const Pooler&) = delete;
  Pooler& operator=(const Pooler&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& config_path() const { return config_path_; }
  const PoolerConfig& config() const { return cfg_; }

  // libpq conninfo for connecting through the pooler ("" password = none).
  std::string conninfo(const std::string& user = "app", const std::string& password = "app",
                       const std::string& dbname = "appdb") const;

  // Rewrites the config file and sends SIGHUP.
  void reload(const PoolerConfig& cfg);
  // Rewrites the config file only (for a RELOAD from the admin console).
  void rewrite_config(const PoolerConfig& cfg);
  // The process is about to exit on its own (SHUTDOWN from the console): not a failure.
  void expect_exit() { stop_requested_ = true; }
  // Sends a signal; SIGINT/SIGTERM/SIGKILL mark the exit as expected.
  void signal(int sig);
  // Waits for the process to exit; true when it did within `seconds`.
  bool wait_exit(double seconds);
  bool running();
  // Peak resident set size (VmHWM) in KiB, -1 when unknown.
  long peak_rss_kb() const;
  // Everything the process wrote to stderr/stdout so far.
  std::string log() const;

 private:
  void write_config();
  void start();
  void wait_ready();

  PoolerConfig cfg_;
  int port_ = 0;
  pid_t pid_ = -1;
  int exit_status_ = 0;
  bool exited_ = false;
  bool stop_requested_ = false;
  std::string dir_;
  std::string config_path_;
  std::string log_path_;
};

// A PGresult with the usual questions.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r, std::string error = {}) : r_(r), error_(std::move(error)) {}
  Result(Result&& o) noexcept : r_(o.r_), error_(std::move(o.error_)) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept;
  ~Result();

  PGresult* get() const { return r_; }
  ExecStatusType status() const { return r_ ? PQresultStatus(r_) : PGRES_FATAL_ERROR; }
  bool ok() const;  // COMMAND_OK or TUPLES_OK
  std::string sqlstate() const;
  std::string message() const;  // primary error message (or the harness' own)
  std::string value(int row = 0, int col = 0) const;
  int rows() const { return r_ ? PQntuples(r_) : 0; }

 private:
  PGresult* r_ = nullptr;
  std::string error_;
};

// Result helpers for console output (SHOW ...).
// Index of a result column by name (-1 when absent).
int column(const Result& r, const std::string& name);
std::vector<std::string> column_names(const Result& r);
// First row whose columns equal the given values, -1 when there is none.
int find_row(const Result& r, const std::vector<std::pair<std::string, std::string>>& match);
// The value of `name` in the row matching `match`; "<no row>" / "<no column>" otherwise.
std::string cell(const Result& r, const std::vector<std::pair<std::string, std::string>>& match,
                 const std::string& name);
// The whole result as text, for failure messages.
std::string dump(const Result& r);

// A client connection with deadlines; error messages are verbose (they carry the
// SQLSTATE, e.g. "FATAL:  28P01: password authentication failed ...").
class Conn {
 public:
  explicit Conn(const std::string& conninfo, double timeout_s = 10);
  ~Conn();
  Conn(Conn&& o) noexcept : c_(o.c_), error_(std::move(o.error_)) { o.c_ = nullptr; }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool ok() const { return c_ && PQstatus(c_) == CONNECTION_OK; }
  std::string error() const;  // the connection error (or PQerrorMessage)
  PGconn* get() const { return c_; }
  operator PGconn*() const { return c_; }  // NOLINT: for direct libpq calls
  void finish();

  // Like PQexec (last result wins; stops at COPY states) but gives up after timeout_s.
  Result exec(const std::string& sql, double timeout_s = 30);
  // exec + REQUIRE success; returns the first value.
  std::string value(const std::string& sql, double timeout_s = 30);
  void exec_ok(const std::string& sql, double timeout_s = 30);
  // PQsendQuery + REQUIRE it was sent.
  void send(const std::string& sql);
  // Next result of what was sent (nullptr result at the end of a query's results);
  // `timed_out` is set when nothing arrived in time.
  Result next_result(double timeout_s, bool* timed_out = nullptr);
  // Waits until the socket is readable and consumes input; false on timeout/error.
  bool wait_readable(double timeout_s);

 private:
  PGconn* c_ = nullptr;
  std::string error_;
};

// SHOW `what` on a console connection; REQUIREs success.
Result console_show(Conn& admin, const std::string& what);

// Connection straight to the test PostgreSQL (as postgres, trust).
std::string direct_conninfo(const std::string& dbname = "appdb");

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string output;  // stdout and stderr
};
// Runs a shell command line (popen), capturing stdout and stderr.
CommandResult run_command(const std::string& command);
// pgbench through the pooler as app/app against appdb.
CommandResult run_pgbench(const Pooler& p, const std::string& args);
// psql -X -A -t -c SQL through the pooler as user/password.
CommandResult run_psql(const Pooler& p, const std::string& sql, const std::string& user = "app",
                       const std::string& password = "app");

// A TCP port on 127.0.0.1 nothing listens on (16400..17399 or from PGPIVOT_TEST_PORT_BASE, as the pooler fixture uses).
int free_port();
// The port of a fixture's own PostgreSQL: `env_var` when set, else `dflt` moved by
// a tenth of what PGPIVOT_TEST_PORT_BASE moves the pooler ports (two runs side by side).
int fixture_port(const char* env_var, int dflt);
// True when something accepts TCP connections on 127.0.0.1:port.
bool tcp_port_accepts(int port);

bool file_exists(const std::string& path);
// The repository: PGPIVOT_ROOT, else the first ancestor of the test binary (or of
// the working directory) holding scripts/lib.sh and pooler/.
std::string repo_root();

double now_s();  // steady clock, seconds

// Memory bounds describe the release build: under ASan every allocation carries
// redzones and the shadow maps terabytes, so those checks are not made there.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizedBuild = true;
#else
inline constexpr bool kSanitizedBuild = false;
#endif
// Private memory of a process in KiB: `Anonymous` of /proc/PID/smaps_rollup (the
// heap, stacks and dirty private pages; not the shared library pages RSS also
// counts). -1 when unknown.
long private_kb(pid_t pid);
// The largest private_kb(pid) seen while it lives, sampled every 5 ms.
class PeakPrivate {
 public:
  explicit PeakPrivate(pid_t pid);
  ~PeakPrivate();
  long peak() const { return peak_.load(); }

 private:
  pid_t pid_;
  std::atomic<long> peak_{-1};
  std::atomic<bool> stop_{false};
  std::thread t_;
};
// A field of /proc/PID/status in KiB ("VmRSS:", "VmHWM:"), -1 when unknown.
long proc_status_kb(pid_t pid, const std::string& field);
// Polls `cond` every step_s until it holds (true) or timeout_s passed (false).
bool wait_for(const std::function<bool()>& cond, double timeout_s, double step_s = 0.1);

double seconds_since(std::chrono::steady_clock::time_point t0);
void sleep_s(double s);
// Replaces every occurrence of `from` in `s` by `to`.
std::string replace_all(std::string s, const std::string& from, const std::string& to);
bool contains_icase(const std::string& haystack, const std::string& needle);

// Set by the Catch listener in main.cpp when an assertion of the running test failed,
// so the pooler fixture can print its log for failing tests only.
extern bool g_current_test_failed;

}  // namespace itest
