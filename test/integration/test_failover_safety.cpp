// Failover safety (issue 14): the faults a careful user tries beside the happy path.
// Each case builds its own primary/standby pair (failover_fixture.hpp) on ports
// port_base() + 20 and up, and counts where acknowledged writes landed rather than
// only checking that nothing failed.
#include <signal.h>
#include <sys/wait.h>

#include "failover_fixture.hpp"

namespace {

// A promote_command that does what the file `<base>/promote-mode` says: "fail"
// (exit 1), "hang" (sleep 6001, never returns), anything else: promote (PgPair's
// script). Every run is logged in promote.log as PgPair::promote_runs() reads it.
std::string controllable_promote(PgPair& pair) {
  std::string real = pair.promote_script();
  std::string path = pair.base + "/promote-ctl.sh";
  std::string log = sh_quote(pair.base + "/promote.log");
  std::ofstream out(path);
  out << "#!/bin/sh\n"
      << "mode=$(cat " << sh_quote(pair.base + "/promote-mode") << " 2>/dev/null)\n"
      << "case \"$mode\" in\n"
      << "  fail) echo \"start $(date +%s.%N) mode=fail\" >>" << log << "; echo \"end $(date +%s.%N) rc=1\" >>" << log
      << "; exit 1 ;;\n"
      << "  hang) echo \"start $(date +%s.%N) mode=hang\" >>" << log << "; sleep 6001; exit 0 ;;\n"
      << "  die) echo \"start $(date +%s.%N) mode=die\" >>" << log << "; runuser -u postgres -- " << kPgBin
      << "/pg_ctl stop -m immediate -D " << sh_quote(pair.standby_dir) << " >/dev/null 2>&1; echo \"end $(date +%s.%N) rc=0\" >>"
      << log << "; exit 0 ;;\n"
      << "esac\n"
      << "exec " << sh_quote(real) << "\n";
  out.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

void set_promote_mode(PgPair& pair, const std::string& mode) {
  std::ofstream(pair.base + "/promote-mode") << mode << "\n";
}

PoolerConfig safety_pooler(PgPair& pair, const std::string& more_failover = "", int primary_port_in_config = 0) {
  PoolerConfig cfg = failover_pooler(pair, 5, primary_port_in_config);
  cfg.failover = failover_toml(controllable_promote(pair));
  if (!more_failover.empty()) cfg.failover += "\n" + more_failover;
  cfg.extra["query_wait_timeout"] = "4";
  return cfg;
}

long count_rows(int port, const std::string& where = "true") {
  bool ok = false;
  std::string v = node_value(port, "SELECT count(*) FROM fo_log WHERE " + where, &ok);
  return ok ? std::atol(v.c_str()) : -1;
}

bool in_recovery(int port) { return node_value(port, "SELECT pg_is_in_recovery()") == "t"; }


// SHOW FAILOVERS as rows.
std::vector<Row> failover_events(const Pooler& p) {
  Result r = admin_exec(p, "SHOW FAILOVERS");
  return r.ok() ? rows_of(r) : std::vector<Row>{};
}

std::string events_text(const Pooler& p) {
  std::string s;
  for (auto& e : failover_events(p)) s += row_text(e) + "\n";
  return s.empty() ? "(none)" : s;
}

// A direct INSERT on a node, outside the pooler; true when acknowledged.
bool direct_insert(Conn& c, int client, int seq) {
  Result r = c.exec("INSERT INTO fo_log VALUES (" + std::to_string(client) + ", " + std::to_string(seq) +
                        ", 0, inet_server_port())",
                    5);
  return r.ok();
}

}  // namespace

TEST_CASE("failover safety: failing monitor logins never fail over a healthy primary, nor a rotated password",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("monitor", port_base() + 20, port_base() + 21);
  pair.start(/*sync_rep=*/false);
  {
    Conn c(node_conninfo(pair.primary_port));
    REQUIRE(c.ok());
    c.exec_ok("SET password_encryption = 'scram-sha-256'");
    c.exec_ok("CREATE ROLE monitor LOGIN PASSWORD 'mon1'");
  }
  REQUIRE(wait_for([&] { return node_value(pair.standby_port, "SELECT count(*) FROM pg_roles WHERE rolname = 'monitor'") == "1"; }, 20));
  auto with_password = [&](const std::string& pw) {
    PoolerConfig cfg = safety_pooler(pair);
    std::string creds = ", user = \"monitor\", password = \"" + pw + "\", dbname = \"appdb\" }";
    cfg.main_cluster = "primary = { host = \"127.0.0.1\", port = " + std::to_string(pair.primary_port) + creds +
                       "\nstandby = { host = \"127.0.0.1\", port = " + std::to_string(pair.standby_port) + creds;
    return cfg;
  };
  // Wrong from the start: the checks fail with 28P01, the pools' logins work.
  Pooler p(with_password("wrong"));
  Row row = wait_cluster(p, "primary_state", "misconfigured", 10);
  INFO("SHOW CLUSTERS: " << row_text(row));
  REQUIRE(row["primary_state"] == "misconfigured");
  CHECK(contains_icase(row["primary_error"], "28P01"));

  Load load(p, 5, 5);
  load.start();
  sleep_s(kThreshold * kInterval * 3);  // three times as long as a real failure needs
  row = cluster_row(p);
  INFO("after " << kThreshold * kInterval * 3 << " s of failing monitor logins: " << row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["mode"] == "normal");
  CHECK(row["failovers"] == "0");

  // The right password, by RELOAD: the checks come back up.
  p.reload(with_password("mon1"));
  row = wait_cluster(p, "primary_state", "up", 10);
  INFO("after RELOAD with the right password: " << row_text(row));
  CHECK(row["primary_state"] == "up");
  CHECK(row["standby_state"] == "read-only");

  // Rotated on the database first (as a careful rotation does), the config later.
  {
    Conn c(node_conninfo(pair.primary_port));
    REQUIRE(c.ok());
    c.exec_ok("SET password_encryption = 'scram-sha-256'");
    c.exec_ok("ALTER ROLE monitor PASSWORD 'mon2'");
  }
  // The checks keep their sessions; they log in again when those end (a restart,
  // an idle timeout): end them on both nodes.
  for (int port : {pair.primary_port, pair.standby_port}) {
    Conn c(node_conninfo(port));
    REQUIRE(c.ok());
    c.exec_ok("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'monitor'");
  }
  row = wait_cluster(p, "primary_state", "misconfigured", 10);
  CHECK(row["primary_state"] == "misconfigured");
  sleep_s(kThreshold * kInterval * 3);
  row = cluster_row(p);
  INFO("after the rotation on the database: " << row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  p.reload(with_password("mon2"));
  row = wait_cluster(p, "primary_state", "up", 10);
  CHECK(row["primary_state"] == "up");
  load.stop();

  INFO("promote_command runs: " << pair.promote_runs().size() << "; SHOW FAILOVERS:\n" << events_text(p));
  CHECK(pair.promote_runs().empty());
  CHECK(in_recovery(pair.standby_port));
  check_clients(load, 0);
  check_acked_present(load, pair.primary_port);
  CHECK(p.running());
}

TEST_CASE("failover safety: a move that cannot complete ends; no writable node answers 08006 and keeps the client",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("stuck", port_base() + 22, port_base() + 23);
  pair.start(/*sync_rep=*/false);
  PoolerConfig cfg = safety_pooler(pair);
  cfg.failover = replace_all(cfg.failover, "failover_timeout = 30", "failover_timeout = 4");
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  // The standby dies first; a FAILOVER from the console has nowhere to go and
  // is refused at once, nothing run.
  pair.kill(pair.standby_dir);
  REQUIRE(wait_cluster(p, "standby_state", "down", 10)["standby_state"] == "down");
  auto t0 = std::chrono::steady_clock::now();
  Result fo = admin_exec(p, "FAILOVER main", 30);
  double took = seconds_since(t0);
  {
    INFO("FAILOVER main with the standby down: " << (fo.ok() ? std::string(PQcmdStatus(fo.get())) : fo.message())
                                                 << " after " << took << " s");
    CHECK_FALSE(fo.ok());
    CHECK(contains_icase(fo.message(), "standby is down"));
    CHECK(took < 2);
    CHECK(pair.promote_runs().empty());
  }

  // The standby dies while it is being promoted: the move ends at failover_timeout
  // and goes back to the primary, which answers; the clients were only held.
  pair.start_again(pair.standby_dir);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 20)["standby_state"] == "read-only");
  set_promote_mode(pair, "die");
  Load load(p, 3, 3);
  load.start();
  sleep_s(1);
  t0 = std::chrono::steady_clock::now();
  fo = admin_exec(p, "FAILOVER main", 30);
  took = seconds_since(t0);
  INFO("FAILOVER main, the standby dying in promote_command: "
       << (fo.ok() ? std::string(PQcmdStatus(fo.get())) : fo.message()) << " after " << took << " s; SHOW FAILOVERS:\n"
       << events_text(p));
  CHECK_FALSE(fo.ok());
  CHECK(took < 4 + 3);
  Row row = wait_cluster(p, "mode", "normal", 10);
  INFO("after the aborted FAILOVER: " << row_text(row));
  CHECK(row["mode"] == "normal");
  CHECK(row["active"] == "primary");
  sleep_s(1);
  load.event(pair.primary_port);
  CHECK(load.wait_all_on_target(10));
  load.stop();
  check_clients(load, 1);
  check_acked_present(load, pair.primary_port);
  CHECK(pair.promote_runs().size() == 1);

  // Now the primary dies too: no writable node. A client's query is answered with
  // 08006 within query_wait_timeout, and its connection stays open.
  Conn held(p.conninfo());
  REQUIRE(held.ok());
  pair.kill(pair.primary_dir);
  REQUIRE(wait_cluster(p, "primary_state", "down", 10)["primary_state"] == "down");
  Result fo2 = admin_exec(p, "FAILOVER main", 30);
  CHECK_FALSE(fo2.ok());
  CHECK(contains_icase(fo2.message(), "is down"));
  row = cluster_row(p);
  INFO("both nodes down, after FAILOVER: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["active"] == "primary");
  t0 = std::chrono::steady_clock::now();
  Result r = held.exec("SELECT inet_server_port()", 20);
  double waited = seconds_since(t0);
  INFO("query with no writable node: [" << r.sqlstate() << "] " << r.message() << " after " << waited << " s");
  CHECK(r.sqlstate() == "08006");
  CHECK(contains_icase(r.message(), "primary is down"));
  CHECK(waited <= 4 + 1.5);
  CHECK(PQstatus(held.get()) == CONNECTION_OK);

  // The primary comes back: normal again on it, the same connection works.
  pair.start_again(pair.primary_dir);
  row = wait_cluster(p, "mode", "normal", 15);
  INFO("after the primary came back: " << row_text(row));
  CHECK(row["active"] == "primary");
  Result back = held.exec("SELECT inet_server_port()", 20);
  INFO(back.message());
  CHECK(back.ok());
  CHECK(back.value() == std::to_string(pair.primary_port));
  CHECK(pair.promote_runs().size() == 1);  // only the move the standby died in
  CHECK(p.running());
}

TEST_CASE("failover safety: a failing or hanging promote_command aborts the move; the old primary is used again",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("hook", port_base() + 24, port_base() + 25);
  pair.start(/*sync_rep=*/false);
  set_promote_mode(pair, "fail");
  Pooler p(safety_pooler(pair, "promote_timeout = 2"));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  // The primary dies; promote_command exits 1: no writable node, clients told 08006.
  Conn held(p.conninfo());
  REQUIRE(held.ok());
  pair.kill(pair.primary_dir);
  REQUIRE(wait_for([&] { return pair.promote_runs().size() == 1 && pair.promote_runs()[0].end_wall > 0; }, 15));
  Row row = wait_cluster(p, "mode", "no writable node", 10);
  INFO("after promote_command exit 1: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["mode"] == "no writable node");
  CHECK(row["active"] == "primary");
  CHECK(in_recovery(pair.standby_port));
  Result r = held.exec("SELECT 1", 20);
  INFO("[" << r.sqlstate() << "] " << r.message());
  CHECK(r.sqlstate() == "08006");
  CHECK(PQstatus(held.get()) == CONNECTION_OK);

  // The old primary comes back: used again, no promotion in between.
  pair.start_again(pair.primary_dir);
  row = wait_cluster(p, "mode", "normal", 15);
  CHECK(row["active"] == "primary");
  Result back = held.exec("SELECT inet_server_port()", 20);
  INFO(back.message());
  CHECK(back.value() == std::to_string(pair.primary_port));

  // A hanging hook is killed at promote_timeout; the move aborts back to the
  // primary that answers, and the console takes commands again.
  set_promote_mode(pair, "hang");
  auto t0 = std::chrono::steady_clock::now();
  Result fo = admin_exec(p, "FAILOVER main", 30);
  double took = seconds_since(t0);
  INFO("FAILOVER with a hanging hook: " << (fo.ok() ? "ok" : fo.message()) << " after " << took << " s\n"
                                        << events_text(p));
  CHECK_FALSE(fo.ok());
  CHECK(took < 2 + 3);
  row = wait_cluster(p, "mode", "normal", 10);
  CHECK(row["active"] == "primary");
  bool gone = wait_for([] { return run_command("pgrep -f '^sleep 6001'").exit_code != 0; }, 5);
  CHECK(gone);
  Result after = held.exec("SELECT inet_server_port()", 20);
  CHECK(after.value() == std::to_string(pair.primary_port));
  CHECK(in_recovery(pair.standby_port));

  // And a real move still works afterwards.
  set_promote_mode(pair, "promote");
  Result sw = admin_exec(p, "SWITCHOVER main", 60);
  INFO("SWITCHOVER: " << (sw.ok() ? "ok" : sw.message()) << "\n" << events_text(p));
  CHECK(sw.ok());
  CHECK(held.exec("SELECT inet_server_port()", 20).value() == std::to_string(pair.standby_port));
  CHECK(p.running());
}

TEST_CASE("failover safety: a restart after a failover keeps the new primary (state_file); without it, two "
          "writable nodes refuse writes",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("restart", port_base() + 26, port_base() + 27);
  pair.start(/*sync_rep=*/true);  // no acknowledged write lost in the failover itself
  std::string state = pair.base + "/pgpivot.state";
  PoolerConfig cfg = safety_pooler(pair, "state_file = " + toml_str(state));
  long acked_before = 0;
  {
    Pooler p(cfg);
    REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
    Load load(p, 3, 3);
    load.start();
    sleep_s(1);
    pair.kill(pair.primary_dir);
    Row row = wait_cluster(p, "active", "standby", 20);
    REQUIRE(row["active"] == "standby");
    CHECK(row["epoch"] == "2");  // epoch 1 is the primary's
    sleep_s(1);
    load.stop();
    acked_before = static_cast<long>(load.acked().size());
    check_acked_present(load, pair.standby_port);
  }
  INFO("state file: " << read_text(state));
  CHECK(contains_icase(read_text(state), "active standby epoch 2"));

  // A careless unit restarts the old primary writable; pgpivot restarts with the same config.
  pair.start_again(pair.primary_dir);
  REQUIRE(wait_for([&] { return node_value(pair.primary_port, "SELECT pg_is_in_recovery()") == "f"; }, 10));
  long on_old = count_rows(pair.primary_port);
  {
    Pooler p(cfg);
    Row row = wait_cluster(p, "mode", "normal", 10);
    INFO("restarted with the state file: " << row_text(row));
    CHECK(row["active"] == "standby");
    CHECK(row["epoch"] == "2");
    Load load(p, 3, 3, "appdb", 101);
    load.start();
    sleep_s(2);
    load.stop();
    check_clients(load, 0);
    check_acked_present(load, pair.standby_port);
    INFO("rows on the old primary before/after: " << on_old << "/" << count_rows(pair.primary_port));
    CHECK(count_rows(pair.primary_port) == on_old);
  }
  CHECK(pair.promote_runs().size() == 1);

  // The same restart without a state file: both nodes answer writable, and pgpivot
  // does not guess. Writes are refused (08006), to both.
  PoolerConfig no_state = safety_pooler(pair);
  long on_new = count_rows(pair.standby_port);
  on_old = count_rows(pair.primary_port);
  {
    Pooler p(no_state);
    Row row = wait_cluster(p, "mode", "two writable nodes", 10);
    INFO("restarted without a state file: " << row_text(row));
    CHECK(row["mode"] == "two writable nodes");
    // A fresh pooler has no server parameters to greet a client with, and may not
    // log in to either node for them: the login ends with the reason.
    auto t0 = std::chrono::steady_clock::now();
    Conn c(p.conninfo());
    double took = seconds_since(t0);
    INFO("login with two writable nodes: " << c.error() << " after " << took << " s");
    CHECK_FALSE(c.ok());
    CHECK(contains_icase(c.error(), "two writable nodes"));
    CHECK(took < 4 + 1.5);
    CHECK(count_rows(pair.primary_port) == on_old);
    CHECK(count_rows(pair.standby_port) == on_new);
    // FAILOVER from the console chooses the standby (writable already: no promotion).
    Result fo = admin_exec(p, "FAILOVER main", 30);
    INFO("FAILOVER: " << (fo.ok() ? "ok" : fo.message()) << "\n" << events_text(p));
    CHECK(fo.ok());
    row = wait_cluster(p, "mode", "normal", 10);
    CHECK(row["active"] == "standby");
    Conn w(p.conninfo());
    REQUIRE(w.ok());
    CHECK(w.value("INSERT INTO fo_log VALUES (999, 1, 0, inet_server_port()) RETURNING port") ==
          std::to_string(pair.standby_port));
    CHECK(count_rows(pair.primary_port) == on_old);
    CHECK(count_rows(pair.standby_port) == on_new + 1);
  }
  CHECK(pair.promote_runs().size() == 1);
  CHECK(acked_before > 0);
}

TEST_CASE("failover safety: a standby too far behind is not promoted automatically; FAILOVER forces it",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("lag", port_base() + 28, port_base() + 29);
  pair.start(/*sync_rep=*/false);
  Pooler p(safety_pooler(pair, "max_lag_on_failover = 65536"));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  Row row = cluster_row(p);
  INFO("streaming: " << row_text(row));
  CHECK(std::atol(row["lag_bytes"].c_str()) < 65536);

  // The standby stops receiving (its WAL receiver frozen); the primary writes on.
  std::string wr = node_value(pair.standby_port, "SELECT pid FROM pg_stat_wal_receiver");
  REQUIRE(!wr.empty());
  REQUIRE(::kill(std::atoi(wr.c_str()), SIGSTOP) == 0);
  {
    Conn c(node_conninfo(pair.primary_port));
    REQUIRE(c.ok());
    c.exec_ok("CREATE TABLE fo_bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g");
  }
  bool lagging = wait_for([&] { return std::atol(cluster_row(p)["lag_bytes"].c_str()) > 65536; }, 10);
  row = cluster_row(p);
  INFO("after 4 MB written with the WAL receiver stopped: " << row_text(row));
  CHECK(lagging);

  pair.kill(pair.primary_dir);
  REQUIRE(wait_cluster(p, "primary_state", "down", 10)["primary_state"] == "down");
  sleep_s(kThreshold * kInterval * 3);
  row = cluster_row(p);
  INFO("primary dead, standby " << row["lag_bytes"] << " bytes behind: " << row_text(row) << "\n"
                                << p.log().substr(p.log().size() > 3000 ? p.log().size() - 3000 : 0));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  CHECK(pair.promote_runs().empty());
  CHECK(contains_icase(p.log(), "lag"));

  // The operator accepts the loss: FAILOVER forces the move.
  ::kill(std::atoi(wr.c_str()), SIGCONT);
  Result fo = admin_exec(p, "FAILOVER main", 60);
  INFO("FAILOVER: " << (fo.ok() ? "ok" : fo.message()) << "\n" << events_text(p));
  CHECK(fo.ok());
  row = cluster_row(p);
  CHECK(row["active"] == "standby");
  CHECK(pair.promote_runs().size() == 1);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT inet_server_port()") == std::to_string(pair.standby_port));
}

TEST_CASE("failover safety: a pooler cut off from a live, streaming primary does not promote the standby",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("witness", port_base() + 30, port_base() + 31);
  pair.start(/*sync_rep=*/false);
  int proxy_port = port_base() + 32;
  BlackHoleProxy proxy(proxy_port, pair.primary_port);
  PoolerConfig cfg = safety_pooler(pair, "", proxy_port);
  cfg.failover = replace_all(cfg.failover, "health_check_timeout = 2", "health_check_timeout = 1");
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  // Another application host writes straight to the primary, all along.
  std::atomic<bool> stop{false};
  std::atomic<long> direct_acked{0};
  std::thread writer([&] {
    Conn c(node_conninfo(pair.primary_port));
    int seq = 0;
    while (!stop && c.ok()) {
      if (direct_insert(c, 500, ++seq)) direct_acked++;
      sleep_s(0.02);
    }
  });
  sleep_s(1);
  proxy.blackhole();  // only this pooler loses the primary
  Row row = wait_cluster(p, "primary_state", "down", 15);
  INFO("cut off: " << row_text(row));
  CHECK(row["primary_state"] == "down");
  sleep_s(kThreshold * kInterval * 4);
  row = cluster_row(p);
  INFO("cut off from the primary for " << kThreshold * kInterval * 4 << " s more: " << row_text(row) << "\n"
                                       << events_text(p));
  CHECK(row["witness"] == "receiving");
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  CHECK(pair.promote_runs().empty());
  CHECK(in_recovery(pair.standby_port));

  // The primary really dies (after its last writes have streamed): now the
  // witness stops hearing it and the failover goes ahead, nothing acknowledged lost.
  stop = true;
  writer.join();
  REQUIRE(direct_acked > 50);
  REQUIRE(wait_for([&] {
    return node_value(pair.standby_port, "SELECT count(*) FROM fo_log WHERE client = 500") ==
           std::to_string(direct_acked.load());
  }, 10));
  pair.kill(pair.primary_dir);
  row = wait_cluster(p, "active", "standby", 30);
  INFO("after the primary died: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["active"] == "standby");
  CHECK(pair.promote_runs().size() == 1);
  CHECK(count_rows(pair.standby_port, "client = 500") == direct_acked.load());
}

TEST_CASE("failover safety: auto_failback never goes to an old primary that diverged", "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("failback", port_base() + 33, port_base() + 34);
  pair.start(/*sync_rep=*/false);
  Pooler p(safety_pooler(pair, "auto_failback = true"));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  pair.kill(pair.primary_dir);
  REQUIRE(wait_cluster(p, "active", "standby", 20)["active"] == "standby");

  // The old primary comes back writable (diverged); writes go on on the new one.
  pair.start_again(pair.primary_dir);
  Load load(p, 3, 3);
  load.start();
  sleep_s(2);
  load.stop();
  check_acked_present(load, pair.standby_port);
  long on_old = count_rows(pair.primary_port);

  // Then the new primary dies. The old one never followed it: no failback.
  pair.kill(pair.standby_dir);
  REQUIRE(wait_cluster(p, "standby_state", "down", 10)["standby_state"] == "down");
  sleep_s(kThreshold * kInterval * 4);
  Row row = cluster_row(p);
  INFO("new primary dead, old primary writable and diverged: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  CHECK(pair.promote_runs().size() == 1);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  Result w = c.exec("INSERT INTO fo_log VALUES (998, 1, 0, inet_server_port())", 20);
  INFO("[" << w.sqlstate() << "] " << w.message());
  CHECK_FALSE(w.ok());
  CHECK(count_rows(pair.primary_port) == on_old);
}

TEST_CASE("failover safety: what may have committed is 40003 in every protocol form; a BEGIN is replayed",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("forms", port_base() + 35, port_base() + 36);
  pair.start(/*sync_rep=*/false);
  create_slow_commit_table(pair);
  PoolerConfig cfg = safety_pooler(pair);
  cfg.default_pool_size = 10;  // every case holds a server when the primary dies
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");

  struct Case {
    std::string name, want;
    std::unique_ptr<Conn> c;
  };
  std::vector<Case> cases;
  auto add = [&](const std::string& name, const std::string& want) {
    cases.push_back({name, want, std::make_unique<Conn>(p.conninfo())});
    REQUIRE(cases.back().c->ok());
    return cases.back().c.get();
  };
  auto in_tx = [](Conn* c) {
    c->exec_ok("BEGIN");
    c->exec_ok("INSERT INTO fo_slow VALUES (1)");
  };
  Conn* ext_commit = add("extended-protocol COMMIT", "40003");
  Conn* prep_commit = add("Execute of a prepared COMMIT", "40003");
  Conn* multi = add("INSERT ...; COMMIT in one Query", "40003");
  Conn* comment = add("a comment, then COMMIT", "40003");
  Conn* ext_auto = add("extended-protocol autocommit statement", "40003");
  Conn* ext_tx = add("extended-protocol statement inside a transaction", "40001");
  in_tx(ext_commit);
  in_tx(prep_commit);
  {
    PGresult* r = PQprepare(prep_commit->get(), "c", "COMMIT", 0, nullptr);
    REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
  }
  multi->exec_ok("BEGIN");
  in_tx(comment);
  ext_tx->exec_ok("BEGIN");
  REQUIRE(PQsendQueryParams(ext_commit->get(), "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0));
  REQUIRE(PQsendQueryPrepared(prep_commit->get(), "c", 0, nullptr, nullptr, nullptr, 0));
  multi->send("INSERT INTO fo_slow VALUES (2); COMMIT");
  comment->send("/* done */ -- really\nCOMMIT");
  REQUIRE(PQsendQueryParams(ext_auto->get(), "SELECT pg_sleep(20)", 0, nullptr, nullptr, nullptr, nullptr, 0));
  REQUIRE(PQsendQueryParams(ext_tx->get(), "SELECT pg_sleep(20)", 0, nullptr, nullptr, nullptr, nullptr, 0));
  sleep_s(0.7);
  pair.kill(pair.primary_dir);
  for (auto& k : cases) {
    // The first error among the results (an INSERT before the COMMIT succeeds).
    Result r = k.c->next_result(20);
    while (r.ok()) {
      Result more = k.c->next_result(20);
      if (!more.get()) break;
      r = std::move(more);
    }
    while (k.c->next_result(5).get()) {
    }
    INFO(k.name << ": [" << r.sqlstate() << "] " << r.message());
    CHECK(r.sqlstate() == k.want);
    CHECK(PQstatus(k.c->get()) == CONNECTION_OK);
  }
  REQUIRE(wait_cluster(p, "active", "standby", 20)["active"] == "standby");
  for (auto& k : cases) {
    if (PQtransactionStatus(k.c->get()) != PQTRANS_IDLE) k.c->exec("ROLLBACK", 10);
    INFO(k.name << " afterwards");
    CHECK(k.c->value("SELECT inet_server_port()") == std::to_string(pair.standby_port));
  }
}

TEST_CASE("failover safety: a BEGIN in flight when the primary vanishes is replayed; extended BEGIN gets 40001",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("begin", port_base() + 37, port_base() + 38);
  pair.start(/*sync_rep=*/false);
  int proxy_port = port_base() + 39;
  BlackHoleProxy proxy(proxy_port, pair.primary_port);
  PoolerConfig cfg = safety_pooler(pair, "witness_query = \"\"", proxy_port);
  cfg.failover = replace_all(cfg.failover, "health_check_timeout = 2", "health_check_timeout = 1");
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  Conn simple(p.conninfo());
  Conn ext(p.conninfo());
  REQUIRE(simple.ok());
  REQUIRE(ext.ok());
  // Two server connections, idle: each BEGIN below is sent to the primary at once
  // (not queued for a new connection, which would be made on the new primary).
  simple.exec_ok("BEGIN");
  ext.exec_ok("BEGIN");
  REQUIRE(simple.value("SELECT inet_server_port()") == std::to_string(pair.primary_port));
  REQUIRE(ext.value("SELECT inet_server_port()") == std::to_string(pair.primary_port));
  simple.exec_ok("COMMIT");
  ext.exec_ok("COMMIT");

  proxy.blackhole();
  simple.send("BEGIN");
  REQUIRE(PQsendQueryParams(ext.get(), "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0));
  Result rs = simple.next_result(30);
  while (simple.next_result(5).get()) {
  }
  Result re = ext.next_result(30);
  while (ext.next_result(5).get()) {
  }
  {
    INFO("simple-protocol BEGIN in flight: [" << rs.sqlstate() << "] " << rs.message());
    CHECK(rs.ok());
    CHECK(PQtransactionStatus(simple.get()) == PQTRANS_INTRANS);
    CHECK(contains_icase(p.log(), "with a BEGIN in flight; replayed on the next server"));
  }
  {
    INFO("extended-protocol BEGIN in flight: [" << re.sqlstate() << "] " << re.message());
    CHECK(re.sqlstate() == "40001");
  }
  CHECK(cluster_row(p)["active"] == "standby");
  // The replayed BEGIN opened a real transaction on the new primary.
  Result w = simple.exec("INSERT INTO fo_log VALUES (700, 1, 0, inet_server_port()) RETURNING port", 10);
  INFO(w.message());
  CHECK(w.value() == std::to_string(pair.standby_port));
  CHECK(PQtransactionStatus(simple.get()) == PQTRANS_INTRANS);
  simple.exec_ok("ROLLBACK");
  CHECK(count_rows(pair.standby_port, "client = 700") == 0);
  CHECK(ext.value("SELECT inet_server_port()") == std::to_string(pair.standby_port));
}

TEST_CASE("failover safety: a client that vanishes mid-query releases its row locks at once",
          "[failover][safety]") {
  Conn d(direct_conninfo());
  REQUIRE(d.ok());
  d.exec_ok("DROP TABLE IF EXISTS fo_lock");
  d.exec_ok("CREATE TABLE fo_lock (id int PRIMARY KEY)");
  d.exec_ok("INSERT INTO fo_lock VALUES (1)");
  d.exec_ok("GRANT ALL ON fo_lock TO app");
  PoolerConfig cfg;
  Pooler p(cfg);
  auto victim = std::make_unique<Conn>(p.conninfo());
  REQUIRE(victim->ok());
  victim->exec_ok("BEGIN");
  victim->exec_ok("SELECT id FROM fo_lock WHERE id = 1 FOR UPDATE");
  victim->send("SELECT pg_sleep(20)");
  REQUIRE(wait_for([&] { return d.value("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' "
                                        "AND state = 'active'") == "1"; },
                   10));
  // The client host dies: the socket goes away without a Terminate.
  ::shutdown(PQsocket(victim->get()), SHUT_RDWR);
  auto t0 = std::chrono::steady_clock::now();
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  other.exec_ok("BEGIN");
  other.exec_ok("SET LOCAL lock_timeout = '3s'");
  Result r = other.exec("SELECT id FROM fo_lock WHERE id = 1 FOR UPDATE", 10);
  double took = seconds_since(t0);
  INFO("second client's lock: " << (r.ok() ? "granted" : "[" + r.sqlstate() + "] " + r.message()) << " after "
                                << took << " s");
  CHECK(r.ok());
  CHECK(took < 1.0);
  other.exec_ok("ROLLBACK");
  victim.reset();
  d.exec_ok("DROP TABLE fo_lock");
}

namespace {

// The postmaster of a data directory and its children (the backends and auxiliary
// processes running now).
std::vector<int> node_processes(const std::string& dir) {
  std::vector<int> pids;
  std::istringstream in(read_text(dir + "/postmaster.pid"));
  int pm = 0;
  in >> pm;
  if (pm <= 0) return pids;
  pids.push_back(pm);
  CommandResult r = run_command("pgrep -P " + std::to_string(pm));
  std::istringstream kids(r.output);
  int k = 0;
  while (kids >> k) pids.push_back(k);
  return pids;
}

void signal_all(const std::vector<int>& pids, int sig) {
  for (int pid : pids) ::kill(pid, sig);
}

}  // namespace

TEST_CASE("failover safety: a primary frozen for 20 s fails over cleanly and gets no traffic when it thaws",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("frozen", port_base() + 40, port_base() + 41);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  Load load(p, 10, 10);
  load.start();
  sleep_s(2);
  REQUIRE(load.error_count() == 0);

  std::vector<int> frozen = node_processes(pair.primary_dir);
  REQUIRE(frozen.size() > 3);
  load.event(pair.standby_port);
  auto t0 = std::chrono::steady_clock::now();
  signal_all(frozen, SIGSTOP);
  bool all_moved = load.wait_all_on_target(30);
  double slowest = load.slowest_on_target();
  auto runs = pair.promote_runs();
  REQUIRE(runs.size() == 1);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  // A frozen node is seen down only as its checks time out (2 s each), as a
  // black-holed one (test_failover.cpp).
  double bound = kThreshold * (kInterval + 2) + promote_s + 2;
  INFO("the last client wrote on the new primary " << slowest << " s after the freeze (bound " << bound << " s)");
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  sleep_s(std::max(0.0, 20 - seconds_since(t0)));
  signal_all(frozen, SIGCONT);  // it thaws, writable, with sessions that pgpivot closed
  REQUIRE(wait_for([&] { return count_rows(pair.primary_port) >= 0; }, 10));
  sleep_s(0.5);
  long on_old_at_thaw = count_rows(pair.primary_port);
  sleep_s(3);
  load.stop();
  long on_old_at_end = count_rows(pair.primary_port);

  Row row = cluster_row(p);
  INFO("after the thaw: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  CHECK(pair.promote_runs().size() == 1);
  check_clients(load, 1);
  check_acked_present(load, pair.standby_port);
  auto ports = load.ports_since_event();
  INFO("writes acknowledged since the freeze, per port: primary " << ports[pair.primary_port] << ", standby "
                                                                   << ports[pair.standby_port]
                                                                   << "; rows on the old primary at the thaw "
                                                                   << on_old_at_thaw << ", 3 s later "
                                                                   << on_old_at_end);
  // Only answers already on their way when it froze (at most one per client)
  // come from the old primary; nothing reaches it after it thaws.
  CHECK(ports[pair.primary_port] <= 20);
  CHECK(on_old_at_end == on_old_at_thaw);
  CHECK(ports[pair.standby_port] > 100);
  CHECK(p.running());
}

TEST_CASE("failover safety: three crash/restart cycles of the primary in 14 s give exactly one failover",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("cycles", port_base() + 42, port_base() + 43);
  pair.start(/*sync_rep=*/true);
  Pooler p(failover_pooler(pair, 10));
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  Load load(p, 10, 10);
  load.start();
  sleep_s(2);
  auto t0 = std::chrono::steady_clock::now();
  for (int cycle = 0; cycle < 3; ++cycle) {
    pair.kill(pair.primary_dir);
    sleep_s(2.5);
    pair.start_again(pair.primary_dir);  // as Restart=always does; it comes back writable
    // From its first return on, nothing may be acknowledged by the old primary.
    if (cycle == 0) load.event(pair.standby_port);
    sleep_s(1.5);
  }
  double took = seconds_since(t0);
  CHECK(took <= 16);
  sleep_s(2);
  load.stop();

  Row row = cluster_row(p);
  INFO("after " << took << " s of cycles: " << row_text(row) << "\n" << events_text(p));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  CHECK(pair.promote_runs().size() == 1);
  CHECK(failover_events(p).size() == 1);
  check_clients(load, 1);
  check_acked_present(load, pair.standby_port);
  auto ports = load.ports_since_event();
  INFO("writes acknowledged since the old primary first came back: on it " << ports[pair.primary_port]
                                                                           << ", on the new primary "
                                                                           << ports[pair.standby_port]);
  CHECK(ports[pair.primary_port] == 0);
  CHECK(ports[pair.standby_port] > 100);
}

TEST_CASE("failover safety: an in-place restart of the primary shorter than the failure window is served "
          "again at once, with no failover",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  PgPair pair("inplace", port_base() + 44, port_base() + 45);
  pair.start(/*sync_rep=*/false);
  {
    // The harness runs PostgreSQL with synchronous_commit = off: a crash would lose
    // acknowledged commits of its own accord.
    Conn c(node_conninfo(pair.primary_port));
    REQUIRE(c.ok());
    c.exec_ok("ALTER SYSTEM SET synchronous_commit = 'on'");
    c.exec_ok("SELECT pg_reload_conf()");
  }
  PoolerConfig cfg = failover_pooler(pair, 10);
  // A 6 s failure window, as a Patroni-managed leader's restart should not trip.
  cfg.failover = replace_all(cfg.failover, "failure_threshold = " + std::to_string(kThreshold), "failure_threshold = 12");
  cfg.extra["server_login_retry"] = "15";
  Pooler p(cfg);
  REQUIRE(wait_cluster(p, "standby_state", "read-only", 10)["primary_state"] == "up");
  Load load(p, 5, 5);
  load.start();
  sleep_s(2);
  pair.kill(pair.primary_dir);
  sleep_s(1.5);  // the pools' logins fail meanwhile: server_login_retry would be 15 s
  pair.start_again(pair.primary_dir);
  load.event(pair.primary_port);
  bool all_back = load.wait_all_on_target(15);
  double slowest = load.slowest_on_target();
  INFO("every client wrote on the restarted primary " << slowest << " s after it was up again");
  CHECK(all_back);
  CHECK(slowest >= 0);
  CHECK(slowest <= kInterval + 1.5);
  sleep_s(1);
  load.stop();
  Row row = cluster_row(p);
  INFO(row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  CHECK(pair.promote_runs().empty());
  check_clients(load, 1);
  check_acked_present(load, pair.primary_port);
}

TEST_CASE("failover safety: the README's example config, copied as is, keeps a healthy primary that asks "
          "for passwords",
          "[failover][safety]") {
  if (skip_for_pgbouncer()) return;
  std::string readme = read_text(repo_root() + "/README.md");
  auto start = readme.find("```toml\n[pooler]");
  REQUIRE(start != std::string::npos);
  start += std::string("```toml\n").size();
  auto end = readme.find("```", start);
  REQUIRE(end != std::string::npos);
  std::string example = readme.substr(start, end - start);
  REQUIRE(contains_icase(example, "port = 55432"));
  REQUIRE(contains_icase(example, "port = 55433"));
  REQUIRE(contains_icase(example, "listen_port = 6432"));

  PgPair pair("readme", port_base() + 48, port_base() + 49);
  pair.start(/*sync_rep=*/false);  // pg_hba: scram-sha-256 for every TCP login
  PoolerConfig cfg;
  cfg.raw_toml = replace_all(replace_all(example, "port = 55432", "port = " + std::to_string(pair.primary_port)),
                             "port = 55433", "port = " + std::to_string(pair.standby_port));
  Pooler p(cfg);
  Row row = wait_cluster(p, "standby_state", "read-only", 15);
  INFO("the README's example: " << row_text(row));
  CHECK(row["primary_state"] == "up");
  CHECK(row["standby_state"] == "read-only");
  Load load(p, 3, 3);
  load.start();
  sleep_s(3 * 1.0 * 3);  // three failure windows at the default interval and threshold
  load.stop();
  row = cluster_row(p);
  INFO("after " << 3 * 1.0 * 3 << " s under load: " << row_text(row));
  CHECK(row["primary_state"] == "up");
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  CHECK(in_recovery(pair.standby_port));
  check_clients(load, 0);
  check_acked_present(load, pair.primary_port);
}
