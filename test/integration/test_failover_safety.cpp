// Failover safety (issue 14): the faults a careful user tries beside the happy path.
// Each case builds its own primary/standby pair (failover_fixture.hpp) on ports
// port_base() + 20 and up, and counts where acknowledged writes landed rather than
// only checking that nothing failed.
//
// This file: when pgpivot must and must not fail over (failing monitor logins, a
// move that cannot complete, a failing or hanging promote_command, a restart after a
// failover, a standby too far behind, a pooler cut off from a live primary,
// auto_failback). What clients and their writes see when the primary fails (in
// flight, frozen, crash-looping, restarted in place) is in
// test_failover_safety_clients.cpp; the helpers both use in
// failover_safety_fixture.hpp.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "failover_safety_fixture.hpp"

namespace {

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
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

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
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

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
    REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");
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
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");
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
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");

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
  REQUIRE(wait_pair_up(p, 10)["primary_state"] == "up");
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
