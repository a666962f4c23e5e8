// The failover tests' fixture, shared by test_failover.cpp and
// test_failover_safety*.cpp: PgPair (a primary and its streaming standby built with
// scripts/lib.sh), Load (writer threads that record every acknowledged write and the
// node that took it), the checks on both, SHOW CLUSTERS helpers and BlackHoleProxy.
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

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

using namespace itest;  // NOLINT

namespace {

// ---------------------------------------------------------------------------
// Small helpers

double mono_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

[[maybe_unused]] double wall_s() {
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
  return fixture_port("PGPIVOT_TEST_FAILOVER_PORT", 61530);
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

// Waits until the health checks have seen both nodes: the primary up and the standby
// read-only (one of them alone can be answered first); the last row seen.
Row wait_pair_up(const Pooler& p, double timeout_s) {
  Row last;
  wait_for([&] {
    last = cluster_row(p);
    return last["primary_state"] == "up" && last["standby_state"] == "read-only";
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

// fo_slow on the pair's primary (replicated to the standby before it returns): an
// INSERT into it commits slowly, as a deferred constraint trigger sleeps 20 s in the
// COMMIT, which is what a test needs to kill the primary with a COMMIT in flight.
[[maybe_unused]] void create_slow_commit_table(PgPair& pair) {
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
}

[[maybe_unused]] PoolerConfig failover_pooler(PgPair& pair, int pool_size = 10, int primary_port_in_config = 0,
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
  // Client ids (the `client` column of fo_log) run from first_id: a second Load on
  // the same nodes needs its own.
  Load(const Pooler& p, int n_auto, int n_tx, const std::string& dbname = "appdb", int first_id = 1) {
    for (int i = 0; i < n_auto + n_tx; ++i) {
      auto log = std::make_unique<ClientLog>();
      log->id = first_id + i;
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

// No connection closed or stuck, at most `max_errors` errors per client, each with
// one of `allowed` SQLSTATEs (any when empty). Prints every error.
[[maybe_unused]] void check_clients_codes(Load& load, int max_errors, const std::set<std::string>& allowed,
                                          const std::string& who = "") {
  std::string closed, all_errors, wrong;
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
      if (!allowed.empty() && !allowed.count(l->sqlstates[i])) {
        n_wrong++;
        wrong += "  " + l->errors[i] + "\n";
      }
    }
  }
  if (all_errors.size() > 6000) all_errors = all_errors.substr(0, 6000) + "  ...\n";
  INFO(who << "clients: " << load.logs().size() << ", with an error: " << with_error);
  INFO(who << "errors seen by clients:\n" << (all_errors.empty() ? "  (none)\n" : all_errors));
  {
    INFO("connections that were closed or stopped working:\n" << closed);
    CHECK(n_closed == 0);
  }
  CHECK(n_too_many == 0);
  {
    INFO("errors with another SQLSTATE:\n" << wrong);
    CHECK(n_wrong == 0);
  }
}

// No client lost its connection or gave up; with `max_errors` = 1 each client saw at
// most one error and it was 40001 or 40003; with 0, no errors at all.
[[maybe_unused]] void check_clients(Load& load, int max_errors) {
  check_clients_codes(load, max_errors, {"40001", "40003"});
}

// Every acknowledged write is present on the node at `port`.
[[maybe_unused]] void check_acked_present(const Load& load, int port) {
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
[[maybe_unused]] void check_show_clusters_columns(const Pooler& p) {
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
