// Failover of a cluster (a PostgreSQL primary and its streaming standby) under load:
// kill -9 of the primary, SWITCHOVER from the console, fencing of the old primary and
// FAILBACK, a dead standby, a black-holed primary, and `pgpivot ctl`.
//
// Every test builds its own primary + standby with scripts/lib.sh (pg_start_primary /
// pg_start_standby) under PGPIVOT_TEST_SCRATCH/failover-NAME on ports 61530.. (base
// overridable with PGPIVOT_TEST_FAILOVER_PORT) and removes them at the end. The
// promote_command is a script that logs when it ran (and its PGPIVOT_* environment)
// and promotes, as postgres with `pg_ctl promote -w`, whichever of the pair's data
// directories is currently a standby.
//
// Client load: threads, each with its own libpq connection through pgpivot, looping
// either autocommit INSERTs or BEGIN; INSERT; INSERT; COMMIT into fo_log. Every
// INSERT returns inet_server_port(), so each client knows which server took its
// write; every acknowledged write is remembered and looked for afterwards.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

// ---------------------------------------------------------------------------
// Small helpers

double mono_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double wall_s() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string read_text(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

std::string toml_str(const std::string& s) {
  return "\"" + replace_all(replace_all(s, "\\", "\\\\"), "\"", "\\\"") + "\"";
}

int port_base() {
  const char* v = std::getenv("PGPIVOT_TEST_FAILOVER_PORT");
  return v && *v ? std::atoi(v) : 61530;
}

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

// Runs a bash snippet with scripts/lib.sh sourced.
CommandResult lib_sh(const std::string& script) {
  return run_command("bash -c " +
                     sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") + " && " + script));
}

std::string pg_ctl(const std::string& args) {
  return "runuser -u postgres -- " + kPgBin + "/pg_ctl " + args;
}

// Straight to one PostgreSQL node as the superuser (trust over TCP).
std::string node_conninfo(int port, const std::string& db = "appdb") {
  return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=" + db +
         " user=postgres connect_timeout=5 options='-c client_min_messages=warning'";
}

// A query on a node; "" and `ok` false when it fails.
std::string node_value(int port, const std::string& sql, bool* ok = nullptr) {
  Conn c(node_conninfo(port), 5);
  Result r = c.ok() ? c.exec(sql, 10) : Result(nullptr, c.error());
  if (ok) *ok = r.ok();
  return r.ok() ? r.value() : "";
}

using Row = std::map<std::string, std::string>;

std::vector<std::string> columns_of(const Result& r) {
  std::vector<std::string> out;
  if (!r.get()) return out;
  for (int i = 0; i < PQnfields(r.get()); ++i) out.emplace_back(PQfname(r.get(), i));
  return out;
}

std::vector<Row> rows_of(const Result& r) {
  std::vector<Row> out;
  auto cols = columns_of(r);
  for (int i = 0; i < r.rows(); ++i) {
    Row row;
    for (size_t j = 0; j < cols.size(); ++j) row[cols[j]] = r.value(i, static_cast<int>(j));
    out.push_back(std::move(row));
  }
  return out;
}

std::string row_text(const Row& row) {
  std::string s;
  for (const auto& [k, v] : row) s += (s.empty() ? "" : ", ") + k + "=" + v;
  return "{" + s + "}";
}

// The admin console of a pooler.
std::string admin_conninfo(const Pooler& p) { return p.conninfo("admin", "admin", "pgbouncer"); }

Result admin_exec(const Pooler& p, const std::string& sql, double timeout_s = 30) {
  Conn a(admin_conninfo(p));
  if (!a.ok()) return Result(nullptr, "admin console connection failed: " + a.error());
  return a.exec(sql, timeout_s);
}

// SHOW CLUSTERS' row for `name` (empty when missing or on error; `err` says why).
Row cluster_row(const Pooler& p, const std::string& name = "main", std::string* err = nullptr) {
  Result r = admin_exec(p, "SHOW CLUSTERS", 10);
  if (!r.ok()) {
    if (err) *err = r.message();
    return {};
  }
  for (auto& row : rows_of(r))
    if (row["name"] == name) return row;
  if (err) *err = "no row for cluster " + name;
  return {};
}

// Waits until SHOW CLUSTERS' row for main has `key` == `value`; returns the last row seen.
Row wait_cluster(const Pooler& p, const std::string& key, const std::string& value, double timeout_s) {
  Row last;
  wait_for([&] {
    last = cluster_row(p);
    return last.count(key) && last[key] == value;
  }, timeout_s);
  return last;
}

// ---------------------------------------------------------------------------
// A primary and its streaming standby, built by scripts/lib.sh.

struct PromoteRun {
  double start_wall = 0, end_wall = 0;
  std::string env_line;  // the PGPIVOT_* variables it saw
  std::string end_line;
};

class PgPair {
 public:
  PgPair(const std::string& name, int primary_port, int standby_port)
      : primary_port(primary_port), standby_port(standby_port) {
    std::string root = env().scratch;
    if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0)
      root = "/tmp/pgpivot-failover-tests";
    ::mkdir(root.c_str(), 0755);
    base = root + "/failover-" + name;
    primary_dir = base + "/primary";
    standby_dir = base + "/standby";
    stop_all();  // leftovers of an aborted run
    run_command("rm -rf " + sh_quote(base));
    ::mkdir(base.c_str(), 0755);
  }

  ~PgPair() {
    stop_all();
    if (g_current_test_failed) {
      std::cerr << "[itest] PostgreSQL logs and the promote_command log kept in " << base << "\n";
      for (const char* f : {"/promote.log", "/primary.log", "/standby.log"}) {
        std::string text = read_text(base + f);
        if (text.size() > 3000) text = "...\n" + text.substr(text.size() - 3000);
        std::cerr << "[itest] ---- " << base << f << " ----\n" << text;
      }
    } else {
      run_command("rm -rf " + sh_quote(base));
    }
  }

  PgPair(const PgPair&) = delete;
  PgPair& operator=(const PgPair&) = delete;

  // Starts both, waits for streaming, creates fo_log; with sync_rep every commit on
  // the primary waits for the standby's flush (synchronous_standby_names = '*').
  void start(bool sync_rep) {
    auto r = lib_sh("pg_start_primary " + sh_quote(primary_dir) + " " + std::to_string(primary_port) +
                    " && pg_start_standby " + sh_quote(standby_dir) + " " + std::to_string(primary_port) + " " +
                    std::to_string(standby_port));
    INFO("lib.sh output:\n" << r.output);
    REQUIRE(r.exit_code == 0);
    require_streaming(primary_port, standby_port);
    {
      Conn c(node_conninfo(primary_port));
      INFO(c.error());
      REQUIRE(c.ok());
      c.exec_ok("CREATE TABLE fo_log (client int, seq int, part int, port int, PRIMARY KEY (client, seq, part))");
      c.exec_ok("GRANT ALL ON fo_log TO app");
    }
    if (sync_rep) enable_sync_rep(primary_port);
    // The table must have reached the standby before anything else happens.
    REQUIRE(wait_for([&] { return node_value(standby_port, "SELECT to_regclass('fo_log') IS NOT NULL") == "t"; }, 20));
  }

  // `standby_port` streams from `port`.
  static void require_streaming(int port, int standby) {
    std::string last;
    bool ok = wait_for([&] {
      last = node_value(port, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'");
      return last == "1";
    }, 20);
    INFO("streaming standbys of 127.0.0.1:" << port << " (expecting the one on " << standby << "): " << last);
    REQUIRE(ok);
  }

  static void enable_sync_rep(int port) {
    Conn c(node_conninfo(port));
    INFO(c.error());
    REQUIRE(c.ok());
    c.exec_ok("ALTER SYSTEM SET synchronous_standby_names = '*'");
    c.exec_ok("ALTER SYSTEM SET synchronous_commit = 'on'");
    c.exec_ok("SELECT pg_reload_conf()");
    std::string last;
    bool ok = wait_for([&] {
      last = node_value(port, "SELECT string_agg(sync_state, ',') FROM pg_stat_replication");
      return last == "sync";
    }, 10);
    INFO("sync_state on 127.0.0.1:" << port << ": " << last);
    REQUIRE(ok);
  }

  // The kill -9 of a primary.
  void kill(const std::string& dir) {
    auto r = run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(dir)));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }

  void start_again(const std::string& dir) {
    auto r = run_command(pg_ctl("start -w -t 60 -D " + sh_quote(dir) + " -l " + sh_quote(dir + ".log")));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }

  // Writes the promote_command script and returns its path.
  std::string promote_script() {
    std::string path = base + "/promote.sh";
    std::ofstream out(path);
    out << "#!/bin/sh\n"
        << "# promote_command of the failover tests: promotes whichever node is a standby.\n"
        << "log=" << sh_quote(base + "/promote.log") << "\n"
        << "echo \"start $(date +%s.%N) cluster=$PGPIVOT_CLUSTER primary=$PGPIVOT_PRIMARY_HOST:$PGPIVOT_PRIMARY_PORT"
        << " standby=$PGPIVOT_STANDBY_HOST:$PGPIVOT_STANDBY_PORT action=$PGPIVOT_ACTION\" >>\"$log\"\n"
        << "rc=0\n"
        << "for d in " << sh_quote(primary_dir) << " " << sh_quote(standby_dir) << "; do\n"
        << "  if [ -f \"$d/standby.signal\" ] && [ -f \"$d/postmaster.pid\" ]; then\n"
        << "    runuser -u postgres -- " << kPgBin << "/pg_ctl promote -w -D \"$d\" >>\"$log\" 2>&1 || rc=$?\n"
        << "  fi\n"
        << "done\n"
        << "echo \"end $(date +%s.%N) rc=$rc\" >>\"$log\"\n"
        << "exit $rc\n";
    out.close();
    ::chmod(path.c_str(), 0755);
    return path;
  }

  std::vector<PromoteRun> promote_runs() const {
    std::vector<PromoteRun> runs;
    std::istringstream in(read_text(base + "/promote.log"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("start ", 0) == 0) {
        PromoteRun r;
        r.start_wall = std::atof(line.c_str() + 6);
        r.env_line = line.substr(line.find(' ', 6) + 1);
        runs.push_back(r);
      } else if (line.rfind("end ", 0) == 0 && !runs.empty()) {
        runs.back().end_wall = std::atof(line.c_str() + 4);
        runs.back().end_line = line;
      }
    }
    return runs;
  }

  std::string cluster_toml(int primary_port_in_config = 0) const {
    int pp = primary_port_in_config ? primary_port_in_config : primary_port;
    return "primary = { host = \"127.0.0.1\", port = " + std::to_string(pp) + " }\n" +
           "standby = { host = \"127.0.0.1\", port = " + std::to_string(standby_port) + " }";
  }

  void stop_all() {
    for (const auto& d : {primary_dir, standby_dir})
      if (file_exists(d + "/postmaster.pid")) run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(d)));
  }

  int primary_port, standby_port;
  std::string base, primary_dir, standby_dir;
};

// [failover] for the tests: checks every 0.5 s, down after 3 failures.
const double kInterval = 0.5;
const int kThreshold = 3;

std::string failover_toml(const std::string& promote_command, double timeout_s = 2) {
  std::ostringstream o;
  o << "health_check_interval = " << kInterval << "\n"
    << "health_check_timeout = " << timeout_s << "\n"
    << "failure_threshold = " << kThreshold << "\n"
    << "promote_command = " << toml_str(promote_command) << "\n"
    << "failover_timeout = 30";
  return o.str();
}

PoolerConfig failover_pooler(PgPair& pair, int pool_size = 10, int primary_port_in_config = 0,
                             double check_timeout = 2) {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = pool_size;
  cfg.max_client_conn = 500;
  cfg.main_cluster = pair.cluster_toml(primary_port_in_config);
  cfg.failover = failover_toml(pair.promote_script(), check_timeout);
  return cfg;
}

// ---------------------------------------------------------------------------
// Client load

struct ClientLog {
  int id = 0;
  bool tx = false;
  std::vector<std::string> errors;     // what went wrong, with the time relative to the event
  std::vector<std::string> sqlstates;  // one per error ("" when there was none)
  std::vector<std::array<int, 3>> acked;  // (client, seq, part) acknowledged as committed
  long writes = 0;
  bool gave_up = false;           // a statement got no answer in time
  bool connected_at_end = false;  // PQstatus OK and SELECT 1 works after the run
  std::string end_error;
  // Since the last event(): acknowledged writes per server port, and when the first
  // on the target port arrived (seconds after the event, -1 = not yet).
  std::map<int, long> ports_since_event;
  double first_on_target = -1;
};

class Load {
 public:
  Load(const Pooler& p, int n_auto, int n_tx, const std::string& dbname = "appdb") {
    for (int i = 0; i < n_auto + n_tx; ++i) {
      auto log = std::make_unique<ClientLog>();
      log->id = i + 1;
      log->tx = i >= n_auto;
      auto conn = std::make_unique<Conn>(p.conninfo("app", "app", dbname) + " application_name=fo_load_" +
                                         std::to_string(i + 1));
      INFO("client " << i + 1 << ": " << conn->error());
      REQUIRE(conn->ok());
      logs_.push_back(std::move(log));
      conns_.push_back(std::move(conn));
    }
  }
  ~Load() { stop(); }

  void start() {
    for (size_t i = 0; i < logs_.size(); ++i) threads_.emplace_back([this, i] { run(*logs_[i], *conns_[i]); });
  }

  // t = 0 of the measurements; `target_port` is the server that should take the writes.
  void event(int target_port) {
    std::lock_guard<std::mutex> g(mu_);
    event_t_ = mono_s();
    target_port_ = target_port;
    for (auto& l : logs_) {
      l->ports_since_event.clear();
      l->first_on_target = -1;
    }
  }

  // Waits until every client has had a write acknowledged by target_port since the event.
  bool wait_all_on_target(double timeout_s) {
    return wait_for([&] {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& l : logs_)
        if (l->first_on_target < 0 && !l->gave_up) return false;
      return true;
    }, timeout_s, 0.02);
  }

  // Seconds from the event until the last client wrote on the target (-1: some never did).
  double slowest_on_target() {
    std::lock_guard<std::mutex> g(mu_);
    double worst = 0;
    for (auto& l : logs_) {
      if (l->first_on_target < 0) return -1;
      worst = std::max(worst, l->first_on_target);
    }
    return worst;
  }

  // Acknowledged writes per port since the event, over all clients.
  std::map<int, long> ports_since_event() {
    std::lock_guard<std::mutex> g(mu_);
    std::map<int, long> sum;
    for (auto& l : logs_)
      for (auto [port, n] : l->ports_since_event) sum[port] += n;
    return sum;
  }

  size_t error_count() {
    std::lock_guard<std::mutex> g(mu_);
    size_t n = 0;
    for (auto& l : logs_) n += l->errors.size();
    return n;
  }

  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

  const std::vector<std::unique_ptr<ClientLog>>& logs() const { return logs_; }

  // Every acknowledged (client, seq, part).
  std::set<std::array<int, 3>> acked() const {
    std::set<std::array<int, 3>> all;
    for (auto& l : logs_) all.insert(l->acked.begin(), l->acked.end());
    return all;
  }

 private:
  static constexpr double kStatementTimeout = 45;

  double since_event() const { return event_t_ < 0 ? -1 : mono_s() - event_t_; }

  void record(ClientLog& L, const Result& r, const std::string& what) {
    std::lock_guard<std::mutex> g(mu_);
    std::ostringstream m;
    m << "client " << L.id << (L.tx ? " (tx)" : " (autocommit)") << " t=" << since_event() << "s " << what
      << ": [" << r.sqlstate() << "] " << r.message();
    std::string s = m.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    L.errors.push_back(s);
    L.sqlstates.push_back(r.sqlstate());
  }

  void acked(ClientLog& L, int seq, std::vector<int> parts, int port) {
    std::lock_guard<std::mutex> g(mu_);
    for (int part : parts) L.acked.push_back({L.id, seq, part});
    L.writes++;
    if (event_t_ >= 0) {
      L.ports_since_event[port]++;
      if (port == target_port_ && L.first_on_target < 0) L.first_on_target = mono_s() - event_t_;
    }
  }

  // false when the connection is unusable (no answer in time / closed).
  bool usable(ClientLog& L, Conn& c, const Result& r) {
    if (r.message().rfind("timed out", 0) == 0) {
      L.gave_up = true;
      return false;
    }
    return PQstatus(c.get()) == CONNECTION_OK;
  }

  std::string insert(int id, int seq, int part) {
    return "INSERT INTO fo_log VALUES (" + std::to_string(id) + ", " + std::to_string(seq) + ", " +
           std::to_string(part) + ", inet_server_port()) RETURNING port";
  }

  void run(ClientLog& L, Conn& c) {
    int seq = 0;
    while (!stop_) {
      ++seq;
      if (!L.tx) {
        Result r = c.exec(insert(L.id, seq, 0), kStatementTimeout);
        if (r.ok()) {
          acked(L, seq, {0}, std::atoi(r.value().c_str()));
        } else {
          record(L, r, "autocommit INSERT");
          if (!usable(L, c, r)) break;
        }
      } else if (!run_tx(L, c, seq)) {
        break;
      }
      sleep_s(0.002);
    }
    if (!L.gave_up) {
      Result r = c.exec("SELECT 1", 10);
      L.connected_at_end = PQstatus(c.get()) == CONNECTION_OK && r.ok();
      if (!L.connected_at_end) L.end_error = PQstatus(c.get()) == CONNECTION_OK ? r.message() : c.error();
    } else {
      L.end_error = "a statement got no answer within " + std::to_string(kStatementTimeout) + " s";
    }
  }

  // One BEGIN; INSERT; INSERT; COMMIT. false when the connection became unusable.
  bool run_tx(ClientLog& L, Conn& c, int seq) {
    int port = 0;
    const std::vector<std::pair<std::string, std::string>> steps = {
        {"BEGIN", "BEGIN"}, {"INSERT 1", insert(L.id, seq, 1)}, {"INSERT 2", insert(L.id, seq, 2)}};
    for (const auto& [what, sql] : steps) {
      Result r = c.exec(sql, kStatementTimeout);
      if (!r.ok()) {
        record(L, r, what + " in a transaction");
        if (!usable(L, c, r)) return false;
        return rollback(L, c);
      }
      if (what != "BEGIN") port = std::atoi(r.value().c_str());
    }
    Result r = c.exec("COMMIT", kStatementTimeout);
    if (!r.ok()) {
      record(L, r, "COMMIT");
      if (!usable(L, c, r)) return false;
      return PQtransactionStatus(c.get()) == PQTRANS_IDLE ? true : rollback(L, c);
    }
    std::string tag = PQcmdStatus(r.get());
    if (tag != "COMMIT") {
      record(L, Result(nullptr, "COMMIT answered " + tag), "COMMIT");
      return true;
    }
    acked(L, seq, {1, 2}, port);
    return true;
  }

  // After an error inside a transaction the client rolls back (when the pooler's
  // ReadyForQuery says it still is in one), as any application would.
  bool rollback(ClientLog& L, Conn& c) {
    if (PQtransactionStatus(c.get()) == PQTRANS_IDLE) return true;
    Result r = c.exec("ROLLBACK", kStatementTimeout);
    if (!r.ok()) {
      record(L, r, "ROLLBACK after an error");
      return usable(L, c, r);
    }
    return true;
  }

  std::vector<std::unique_ptr<ClientLog>> logs_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  double event_t_ = -1;
  int target_port_ = 0;
};

// No client lost its connection or gave up; with `max_errors` = 1 each client saw at
// most one error and it was 40001 or 40003; with 0, no errors at all.
void check_clients(Load& load, int max_errors) {
  std::string closed, too_many, wrong_code, all_errors;
  int n_closed = 0, n_too_many = 0, n_wrong = 0, with_error = 0;
  for (auto& l : load.logs()) {
    if (!l->connected_at_end) {
      n_closed++;
      closed += "  client " + std::to_string(l->id) + ": " + l->end_error + "\n";
    }
    if (static_cast<int>(l->errors.size()) > max_errors) n_too_many++;
    if (!l->errors.empty()) with_error++;
    for (size_t i = 0; i < l->errors.size(); ++i) {
      all_errors += "  " + l->errors[i] + "\n";
      if (l->sqlstates[i] != "40001" && l->sqlstates[i] != "40003") n_wrong++;
    }
  }
  if (all_errors.size() > 6000) all_errors = all_errors.substr(0, 6000) + "  ...\n";
  INFO("clients: " << load.logs().size() << ", with an error: " << with_error);
  INFO("errors seen by clients:\n" << (all_errors.empty() ? "  (none)\n" : all_errors));
  {
    INFO("connections that were closed or stopped working:\n" << closed);
    CHECK(n_closed == 0);
  }
  CHECK(n_too_many == 0);
  if (max_errors > 0) {
    CHECK(n_wrong == 0);
  }
}

// Every acknowledged write is present on the node at `port`.
void check_acked_present(const Load& load, int port) {
  Conn c(node_conninfo(port));
  INFO(c.error());
  REQUIRE(c.ok());
  Result r = c.exec("SELECT client, seq, part FROM fo_log", 30);
  INFO(r.message());
  REQUIRE(r.ok());
  std::set<std::array<int, 3>> present;
  for (int i = 0; i < r.rows(); ++i)
    present.insert({std::atoi(r.value(i, 0).c_str()), std::atoi(r.value(i, 1).c_str()),
                    std::atoi(r.value(i, 2).c_str())});
  auto acked = load.acked();
  std::string missing;
  int n_missing = 0;
  for (const auto& a : acked) {
    if (present.count(a)) continue;
    if (++n_missing <= 10)
      missing += " (" + std::to_string(a[0]) + "," + std::to_string(a[1]) + "," + std::to_string(a[2]) + ")";
  }
  INFO("acknowledged writes: " << acked.size() << ", rows on 127.0.0.1:" << port << ": " << present.size());
  INFO("missing (client, seq, part), first 10:" << missing);
  CHECK(acked.size() > 100);
  CHECK(n_missing == 0);
}

// The spec's columns of SHOW CLUSTERS, in this order (other columns may come between).
void check_show_clusters_columns(const Pooler& p) {
  Result r = admin_exec(p, "SHOW CLUSTERS");
  INFO(r.message());
  REQUIRE(r.ok());
  auto cols = columns_of(r);
  std::string got;
  for (auto& c : cols) got += c + " ";
  INFO("SHOW CLUSTERS columns: " << got);
  size_t at = 0;
  for (const char* want : {"name", "active", "primary", "primary_state", "standby", "standby_state",
                           "last_check_ms", "failovers", "last_failover", "last_failover_ms"}) {
    auto it = std::find(cols.begin() + static_cast<long>(std::min(at, cols.size())), cols.end(), want);
    INFO("column " << want);
    CHECK(it != cols.end());
    if (it != cols.end()) at = static_cast<size_t>(it - cols.begin()) + 1;
  }
}

// ---------------------------------------------------------------------------
// A TCP relay to a PostgreSQL node that can be turned into a black hole: it stops
// relaying (bytes already sent stay unanswered, connections stay open) and its
// listen queue is shrunk to 0 and filled, so the kernel drops every new SYN and
// connection attempts hang, as with a host that vanished from the network.

class BlackHoleProxy {
 public:
  BlackHoleProxy(int listen_port, int target_port) : target_port_(target_port) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = addr(listen_port);
    bool ok = ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(lfd_, 128) == 0;
    INFO("cannot listen on 127.0.0.1:" << listen_port << ": " << std::strerror(errno));
    REQUIRE(ok);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~BlackHoleProxy() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    std::vector<std::thread> relays;
    {
      std::lock_guard<std::mutex> g(mu_);
      relays.swap(relays_);
    }
    for (auto& t : relays) t.join();
    for (int fd : fill_) ::close(fd);
    ::close(lfd_);
  }

  void blackhole() {
    holed_ = true;
    sleep_s(0.1);  // the acceptor and the relays have seen it
    ::listen(lfd_, 0);
    for (int i = 0; i < 3; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_in a = addr(listen_port());
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fill_.push_back(fd);
    }
    sleep_s(0.05);
  }

  // True when a new connection attempt does not complete within `seconds`.
  bool swallows_syn(double seconds) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a = addr(listen_port());
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    bool hung = false;
    if (r != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      hung = ::poll(&p, 1, static_cast<int>(seconds * 1000)) == 0;
    }
    ::close(fd);
    return hung;
  }

 private:
  static sockaddr_in addr(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }

  int listen_port() const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }

  void accept_loop() {
    while (!stop_) {
      if (holed_) {
        sleep_s(0.05);
        continue;
      }
      pollfd p{lfd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0 || holed_) continue;
      int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a = addr(target_port_);
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(s);
        ::close(c);
        continue;
      }
      std::lock_guard<std::mutex> g(mu_);
      relays_.emplace_back([this, c, s] { relay(c, s); });
    }
  }

  void relay(int a, int b) {
    char buf[65536];
    while (!stop_) {
      if (holed_) {
        sleep_s(0.05);
        continue;
      }
      pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0 || holed_) continue;
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          closed = true;
          break;
        }
        int to = i == 0 ? b : a;
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
          if (w <= 0) {
            closed = true;
            break;
          }
          off += w;
        }
      }
      if (closed) break;
    }
    ::close(a);
    ::close(b);
  }

  int lfd_ = -1;
  int target_port_;
  std::atomic<bool> stop_{false}, holed_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> relays_;
  std::vector<int> fill_;
};

// PgBouncer (PGPIVOT_TEST_USE_PGBOUNCER=1 comparison runs) has no failover.
bool skip_for_pgbouncer() {
  if (!env().use_pgbouncer) return false;
  WARN("PgBouncer has no failover: not checked");
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("failover: kill -9 of the primary under load, clients carry on on the promoted standby",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("kill", port_base(), port_base() + 1);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  Load load(p, 20, 20);
  load.start();
  sleep_s(2);
  REQUIRE(load.error_count() == 0);

  load.event(pair.standby_port);
  double kill_wall = wall_s();
  pair.kill(pair.primary_dir);
  bool all_moved = load.wait_all_on_target(30);
  double slowest = load.slowest_on_target();
  sleep_s(1);
  load.stop();

  auto runs = pair.promote_runs();
  INFO("promote_command runs: " << runs.size());
  REQUIRE(runs.size() == 1);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  double bound = kThreshold * kInterval + promote_s + 2;
  INFO("promote_command env: " << runs[0].env_line << "; " << runs[0].end_line);
  INFO("promote_command started " << runs[0].start_wall - kill_wall << " s after the kill and took " << promote_s
                                  << " s; the last client wrote on the new primary " << slowest
                                  << " s after the kill (bound " << bound << " s)");
  CHECK(contains_icase(runs[0].env_line, "cluster=main primary=127.0.0.1:" + std::to_string(pair.primary_port) +
                                             " standby=127.0.0.1:" + std::to_string(pair.standby_port)));
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  check_clients(load, 1);
  check_acked_present(load, pair.standby_port);

  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["primary_state"] == "down");
  CHECK(row["failovers"] == "1");
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  INFO("SHOW FAILOVERS: " << ev.message());
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]) << "; errors the clients saw: " << load.error_count());
  CHECK(events[0]["clients_held"] == "40");
  CHECK(events[0]["client_errors"] == std::to_string(load.error_count()));
  CHECK(p.running());
}

TEST_CASE("failover: SWITCHOVER from the console under load causes no client errors", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("switchover", port_base() + 2, port_base() + 3);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  Load load(p, 20, 20);
  load.start();
  sleep_s(2);

  load.event(pair.standby_port);
  auto t0 = std::chrono::steady_clock::now();
  Result sw = admin_exec(p, "SWITCHOVER main", 60);
  double took = seconds_since(t0);
  INFO("SWITCHOVER main: " << (sw.ok() ? std::string(PQcmdStatus(sw.get())) : sw.message()) << " after " << took
                           << " s");
  CHECK(sw.ok());
  bool all_moved = load.wait_all_on_target(10);
  INFO("last client on the new primary " << load.slowest_on_target() << " s after SWITCHOVER was sent");
  CHECK(all_moved);

  // Repointed: nothing reaches the old primary (still running) any more.
  load.event(pair.standby_port);
  sleep_s(1.5);
  auto ports = load.ports_since_event();
  load.stop();
  INFO("writes in the 1.5 s after the switchover: old primary " << ports[pair.primary_port] << ", new primary "
                                                                 << ports[pair.standby_port]);
  CHECK(ports[pair.primary_port] == 0);
  CHECK(ports[pair.standby_port] > 0);

  check_clients(load, 0);
  check_acked_present(load, pair.standby_port);
  auto runs = pair.promote_runs();
  CHECK(runs.size() == 1);

  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]));
  CHECK(events[0]["client_errors"] == "0");
  CHECK(p.running());
}

// Fencing and failback, for real: after the failover the old primary is started
// again (a diverged, writable primary: exactly what must get no traffic). Then it is
// replaced by what an operator would do: a fresh standby of the new primary, taken
// with pg_basebackup into the old primary's directory and serving on the old
// primary's port, with synchronous replication from the new primary. FAILBACK then
// runs the promote_command (which promotes whichever node is a standby: the fresh
// one), waits until it is writable and moves the clients back, without errors and
// without losing an acknowledged write.
TEST_CASE("failover: the restarted old primary is fenced; FAILBACK to a fresh primary under load", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("failback", port_base() + 4, port_base() + 5);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  Load load(p, 5, 5);
  load.start();
  sleep_s(1.5);

  // 1. Failover.
  load.event(pair.standby_port);
  pair.kill(pair.primary_dir);
  {
    bool moved = load.wait_all_on_target(30);
    INFO("last client on the new primary " << load.slowest_on_target() << " s after the kill");
    REQUIRE(moved);
  }
  size_t errors_after_failover = load.error_count();

  // 2. Fencing: the old primary comes back as a writable primary.
  pair.start_again(pair.primary_dir);
  Row row = wait_cluster(p, "primary_state", "up", 10);
  {
    INFO("SHOW CLUSTERS after the old primary restarted: " << row_text(row));
    CHECK(row["primary_state"] == "up");
    CHECK(row["active"] == "standby");
  }
  std::string rows_before = node_value(pair.primary_port, "SELECT count(*) FROM fo_log");
  load.event(pair.standby_port);
  long app_backends_seen = 0;
  double fence_end = mono_s() + 3;
  while (mono_s() < fence_end) {
    app_backends_seen += std::atol(
        node_value(pair.primary_port, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'").c_str());
    sleep_s(0.1);
  }
  auto ports = load.ports_since_event();
  std::string rows_after = node_value(pair.primary_port, "SELECT count(*) FROM fo_log");
  {
    INFO("during 3 s with the old primary up again: its app backends seen " << app_backends_seen
         << ", its fo_log rows " << rows_before << " -> " << rows_after << ", client writes there "
         << ports[pair.primary_port] << ", on the new primary " << ports[pair.standby_port]);
    CHECK(app_backends_seen == 0);
    CHECK(rows_before == rows_after);
    CHECK(ports[pair.primary_port] == 0);
    CHECK(ports[pair.standby_port] > 0);
    CHECK(cluster_row(p)["active"] == "standby");
  }

  // 3. The old primary is replaced by a fresh standby of the new primary, same port.
  pair.kill(pair.primary_dir);
  {
    auto r = lib_sh("rm -rf " + sh_quote(pair.primary_dir) + " && pg_start_standby " + sh_quote(pair.primary_dir) +
                    " " + std::to_string(pair.standby_port) + " " + std::to_string(pair.primary_port));
    INFO("lib.sh output:\n" << r.output);
    REQUIRE(r.exit_code == 0);
  }
  PgPair::require_streaming(pair.standby_port, pair.primary_port);
  PgPair::enable_sync_rep(pair.standby_port);
  row = wait_cluster(p, "primary_state", "read-only", 10);
  {
    INFO("SHOW CLUSTERS with a fresh standby at the primary's address: " << row_text(row));
    CHECK(row["primary_state"] == "read-only");
  }

  // 4. FAILBACK under load.
  size_t errors_before_failback = load.error_count();
  load.event(pair.primary_port);
  auto t0 = std::chrono::steady_clock::now();
  Result fb = admin_exec(p, "FAILBACK main", 60);
  double took = seconds_since(t0);
  {
    INFO("FAILBACK main: " << (fb.ok() ? std::string(PQcmdStatus(fb.get())) : fb.message()) << " after " << took
                           << " s");
    CHECK(fb.ok());
  }
  bool back = load.wait_all_on_target(15);
  {
    INFO("last client back on the primary address " << load.slowest_on_target() << " s after FAILBACK was sent");
    CHECK(back);
  }
  load.event(pair.primary_port);
  sleep_s(1);
  ports = load.ports_since_event();
  load.stop();
  INFO("errors: " << errors_after_failover << " by the failover, "
                  << errors_before_failback - errors_after_failover << " while fenced, "
                  << load.error_count() - errors_before_failback << " by the failback");
  CHECK(errors_before_failback == errors_after_failover);
  CHECK(load.error_count() == errors_before_failback);
  CHECK(ports[pair.standby_port] == 0);
  check_clients(load, 1);
  check_acked_present(load, pair.primary_port);
  row = cluster_row(p);
  INFO("SHOW CLUSTERS after FAILBACK: " << row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "2");
  CHECK(pair.promote_runs().size() == 2);
  CHECK(p.running());
}

TEST_CASE("failover: a dead standby leaves the traffic on the primary alone", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("standby-down", port_base() + 6, port_base() + 7);
  pair.start(/*sync_rep=*/false);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  check_show_clusters_columns(p);

  Load load(p, 5, 5);
  load.start();
  sleep_s(1);
  load.event(pair.primary_port);
  pair.kill(pair.standby_dir);
  Row row = wait_cluster(p, "standby_state", "down", kThreshold * kInterval + 5);
  sleep_s(1);
  bool all_wrote = load.wait_all_on_target(1);
  auto ports = load.ports_since_event();
  load.stop();

  INFO("SHOW CLUSTERS with the standby down: " << row_text(row));
  CHECK(row["standby_state"] == "down");
  CHECK(row["primary_state"] == "up");
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  INFO("writes on the primary after the standby died: " << ports[pair.primary_port]);
  CHECK(all_wrote);
  check_clients(load, 0);
  CHECK(pair.promote_runs().empty());
  Row later = cluster_row(p);
  INFO("SHOW CLUSTERS at the end: " << row_text(later));
  CHECK(later["active"] == "primary");
  CHECK(p.running());
}

TEST_CASE("failover: a black-holed primary fails over in bounded time; another pool keeps its latency",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("blackhole", port_base() + 8, port_base() + 9);
  pair.start(/*sync_rep=*/false);
  int proxy_port = port_base() + 10;
  BlackHoleProxy proxy(proxy_port, pair.primary_port);
  const double check_timeout = 1;
  PoolerConfig cfg = failover_pooler(pair, 5, proxy_port, check_timeout);
  // An unrelated cluster: the harness' PostgreSQL, no standby.
  cfg.extra_clusters["other"] = "primary = { host = \"127.0.0.1\", port = " + std::to_string(env().pg_port) + " }";
  cfg.extra_databases["otherdb"] = "cluster = \"other\"\ndbname = \"appdb\"";
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  Conn other(p.conninfo("app", "app", "otherdb"));
  INFO(other.error());
  REQUIRE(other.ok());
  REQUIRE(other.value("SELECT inet_server_port()") == std::to_string(env().pg_port));

  Load load(p, 5, 5);
  load.start();
  sleep_s(1.5);

  // SELECT 1 on the other pool, every 5 ms, while the checks of main hang.
  std::atomic<bool> measuring{true};
  std::vector<double> latencies_ms;
  std::vector<std::string> other_errors;
  std::thread prober([&] {
    while (measuring) {
      auto t = std::chrono::steady_clock::now();
      Result r = other.exec("SELECT 1", 10);
      double ms = seconds_since(t) * 1000;
      if (!r.ok()) other_errors.push_back(r.message());
      latencies_ms.push_back(ms);
      sleep_s(0.005);
    }
  });

  load.event(pair.standby_port);
  double hole_wall = wall_s();
  proxy.blackhole();
  bool swallowed = proxy.swallows_syn(0.5);
  bool all_moved = load.wait_all_on_target(40);
  double slowest = load.slowest_on_target();
  sleep_s(0.5);
  measuring = false;
  prober.join();
  load.stop();

  INFO("the black hole swallows new connections: " << swallowed);
  CHECK(swallowed);
  auto runs = pair.promote_runs();
  REQUIRE(runs.size() == 1);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  // Each failed check takes up to the timeout, and they come every interval.
  double bound = kThreshold * (kInterval + check_timeout) + promote_s + 2;
  INFO("promote_command started " << runs[0].start_wall - hole_wall << " s after the black hole, took " << promote_s
                                  << " s; the last client wrote on the new primary " << slowest
                                  << " s after the black hole (bound " << bound << " s)");
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  check_clients(load, 1);

  std::vector<double> sorted = latencies_ms;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(sorted.size() > 20);
  double p99 = sorted[std::min(sorted.size() - 1, static_cast<size_t>(sorted.size() * 0.99))];
  INFO("other pool during the black hole: " << sorted.size() << " x SELECT 1, median "
                                            << sorted[sorted.size() / 2] << " ms, p99 " << p99 << " ms, max "
                                            << sorted.back() << " ms, errors " << other_errors.size()
                                            << (other_errors.empty() ? "" : ": " + other_errors[0]));
  CHECK(other_errors.empty());
  CHECK(p99 < 50);
  Row row = cluster_row(p);
  INFO("SHOW CLUSTERS: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["primary_state"] == "down");
  CHECK(p.running());
}

TEST_CASE("failover: pgpivot ctl status prints the clusters; ctl failover of an unknown cluster fails clearly",
          "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("ctl", port_base() + 11, port_base() + 12);
  pair.start(/*sync_rep=*/false);
  Pooler p(failover_pooler(pair, 5));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  check_show_clusters_columns(p);

  std::string admin = "host=127.0.0.1 port=" + std::to_string(p.port()) +
                      " user=admin password=admin dbname=pgbouncer connect_timeout=5";
  std::string bin = env().pgpivot_bin;

  auto status = run_command(bin + " ctl status --admin " + sh_quote(admin));
  {
    INFO("pgpivot ctl status:\n" << status.output);
    CHECK(status.exit_code == 0);
    CHECK(status.output.find("main") != std::string::npos);
    CHECK(status.output.find(std::to_string(pair.primary_port)) != std::string::npos);
    CHECK(status.output.find(std::to_string(pair.standby_port)) != std::string::npos);
    CHECK(status.output.find("read-only") != std::string::npos);
  }
  auto url = run_command(bin + " ctl status --cluster main --admin " +
                         sh_quote("postgresql://admin:admin@127.0.0.1:" + std::to_string(p.port()) + "/pgbouncer"));
  {
    INFO("pgpivot ctl status --cluster main with a URL:\n" << url.output);
    CHECK(url.exit_code == 0);
    CHECK(url.output.find("main") != std::string::npos);
  }

  auto nosuch = run_command(bin + " ctl failover --cluster nosuch --admin " + sh_quote(admin));
  {
    INFO("pgpivot ctl failover --cluster nosuch:\n" << nosuch.output);
    CHECK(nosuch.exit_code != 0);
    CHECK(nosuch.output.find("nosuch") != std::string::npos);
  }
  auto unreachable = run_command(bin + " ctl status --admin " +
                                 sh_quote("host=127.0.0.1 port=" + std::to_string(pair.primary_port + 100) +
                                          " user=admin password=admin dbname=pgbouncer connect_timeout=3"));
  {
    INFO("pgpivot ctl status against nothing:\n" << unreachable.output);
    CHECK(unreachable.exit_code != 0);
    CHECK(!unreachable.output.empty());
  }
  // Nothing moved.
  Row row = cluster_row(p);
  {
    INFO("SHOW CLUSTERS: " << row_text(row));
    CHECK(row["active"] == "primary");
    CHECK(row["failovers"] == "0");
  }

  // The real commands: FAILOVER now (the promote_command promotes the standby),
  // then FAILBACK and SWITCHOVER between the two (now both writable) nodes.
  Conn client(p.conninfo());
  REQUIRE(client.ok());
  int n = 0;
  for (auto [cmd, active, port] : {std::tuple{"failover", "standby", pair.standby_port},
                                   std::tuple{"failback", "primary", pair.primary_port},
                                   std::tuple{"switchover", "standby", pair.standby_port}}) {
    ++n;
    auto r = run_command(bin + " ctl " + cmd + " --cluster main --admin " + sh_quote(admin));
    row = cluster_row(p);
    INFO("pgpivot ctl " << cmd << " --cluster main:\n" << r.output << "\nSHOW CLUSTERS: " << row_text(row));
    CHECK(r.exit_code == 0);
    CHECK(row["active"] == active);
    CHECK(row["failovers"] == std::to_string(n));
    Result w = client.exec("SELECT inet_server_port()", 30);
    INFO("client after it: " << w.message());
    CHECK(w.value() == std::to_string(port));
  }
  CHECK(pair.promote_runs().size() == 3);
  CHECK(p.running());
}

// Deterministic states at the moment the primary dies, one client each: idle; idle
// inside a transaction; an autocommit statement in flight; a statement in flight
// inside a transaction; a COMMIT in flight (a deferred constraint trigger sleeps in
// it); and, in session mode, an idle client with settings of its own.
TEST_CASE("failover: what a client sees depends on what it was doing when the primary died", "[failover]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("states", port_base() + 13, port_base() + 14);
  pair.start(/*sync_rep=*/false);
  {
    Conn c(node_conninfo(pair.primary_port));
    REQUIRE(c.ok());
    c.exec_ok("CREATE TABLE fo_slow (x int)");
    c.exec_ok("CREATE FUNCTION fo_sleep() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$");
    c.exec_ok("CREATE CONSTRAINT TRIGGER fo_slow_commit AFTER INSERT ON fo_slow DEFERRABLE INITIALLY DEFERRED "
              "FOR EACH ROW EXECUTE FUNCTION fo_sleep()");
    c.exec_ok("GRANT ALL ON fo_slow TO app");
  }
  REQUIRE(wait_for([&] { return node_value(pair.standby_port, "SELECT to_regclass('fo_slow') IS NOT NULL") == "t"; }, 20));
  PoolerConfig cfg = failover_pooler(pair, 10);
  cfg.extra_databases["sessdb"] = "cluster = \"main\"\ndbname = \"appdb\"\npool_mode = \"session\"";
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  auto connect = [&](const std::string& db = "appdb") {
    auto c = std::make_unique<Conn>(p.conninfo("app", "app", db));
    INFO(c->error());
    REQUIRE(c->ok());
    REQUIRE(c->value("SELECT inet_server_port()") == std::to_string(pair.primary_port));
    return c;
  };
  auto idle = connect();
  auto idle_tx = connect();
  auto stmt = connect();
  auto stmt_tx = connect();
  auto commit = connect();
  auto session = connect("sessdb");

  idle_tx->exec_ok("BEGIN");
  idle_tx->exec_ok("INSERT INTO fo_log VALUES (1, 1, 0, 0)");
  stmt_tx->exec_ok("BEGIN");
  stmt_tx->exec_ok("INSERT INTO fo_log VALUES (2, 1, 0, 0)");
  commit->exec_ok("BEGIN");
  commit->exec_ok("INSERT INTO fo_slow VALUES (1)");
  session->exec_ok("SET application_name = 'fo_session'");
  session->exec_ok("SET TimeZone = 'Asia/Tokyo'");
  stmt->send("SELECT pg_sleep(20)");
  stmt_tx->send("SELECT pg_sleep(20)");
  commit->send("COMMIT");
  sleep_s(0.5);
  pair.kill(pair.primary_dir);
  auto t0 = std::chrono::steady_clock::now();

  Result r_stmt = stmt->next_result(20);
  Result r_stmt_tx = stmt_tx->next_result(20);
  Result r_commit = commit->next_result(20);
  for (Conn* c : {stmt.get(), stmt_tx.get(), commit.get()}) c->next_result(5);  // the end of each query
  {
    INFO("autocommit statement in flight: " << r_stmt.message());
    CHECK(r_stmt.sqlstate() == "40003");
  }
  {
    INFO("statement in flight inside a transaction: " << r_stmt_tx.message());
    CHECK(r_stmt_tx.sqlstate() == "40001");
  }
  {
    INFO("COMMIT in flight: " << r_commit.message());
    CHECK(r_commit.sqlstate() == "40003");
  }
  Result r_idle_tx = idle_tx->exec("INSERT INTO fo_log VALUES (1, 2, 0, 0)", 30);
  {
    INFO("next statement of the client idle in a transaction: " << r_idle_tx.message());
    CHECK(r_idle_tx.sqlstate() == "40001");
  }
  Result r_idle = idle->exec("SELECT inet_server_port()", 30);
  double idle_wait = seconds_since(t0);
  {
    INFO("idle client's next query, " << idle_wait << " s after the kill: " << r_idle.message());
    CHECK(r_idle.ok());
    CHECK(r_idle.value() == std::to_string(pair.standby_port));
  }
  Result r_session = session->exec(
      "SELECT inet_server_port() || ' ' || current_setting('application_name') || ' ' || current_setting('TimeZone')",
      30);
  {
    INFO("idle session-mode client's next query: " << r_session.message());
    CHECK(r_session.ok());
    CHECK(r_session.value() == std::to_string(pair.standby_port) + " fo_session Asia/Tokyo");
  }
  // Every one of them is still connected and works on the new primary, after a
  // ROLLBACK where the pooler says a transaction is still open.
  int n = 0;
  for (Conn* c : {idle.get(), idle_tx.get(), stmt.get(), stmt_tx.get(), commit.get(), session.get()}) {
    ++n;
    INFO("client " << n << " (idle, idle in tx, statement, statement in tx, commit, session)");
    CHECK(PQstatus(c->get()) == CONNECTION_OK);
    if (PQtransactionStatus(c->get()) != PQTRANS_IDLE) {
      Result rb = c->exec("ROLLBACK", 10);
      INFO("ROLLBACK: " << rb.message());
      CHECK(rb.ok());
    }
    Result w = c->exec("INSERT INTO fo_log VALUES (100, " + std::to_string(n) + ", 0, inet_server_port()) RETURNING port", 10);
    INFO("write afterwards: " << w.message());
    CHECK(w.ok());
    CHECK(w.value() == std::to_string(pair.standby_port));
  }
  // Four clients were told 40001/40003; the session-mode and idle ones nothing.
  Result ev = admin_exec(p, "SHOW FAILOVERS");
  REQUIRE(ev.ok());
  auto events = rows_of(ev);
  REQUIRE(events.size() == 1);
  INFO("event: " << row_text(events[0]));
  CHECK(events[0]["client_errors"] == "4");
  CHECK(events[0]["clients_held"] == "6");
  CHECK(p.running());
}
