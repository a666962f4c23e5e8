// A fleet of pgpivot instances deciding failover together through etcd
// ([coordination]): three instances a, b, c in front of one primary/standby pair, a
// 3-member etcd, writers through every instance (Load: each acknowledged write and
// the server port that took it). The fixtures (EtcdCluster, Fleet, FleetLoad) are in
// fleet_fixture.hpp and proven on their own by test_fleet_fixture.cpp
// ([fleet-fixture]).
//
// What a fleet promises (the interface these cases are written against):
//   - the active node and its epoch live in etcd (<prefix>/<cluster>/active), changed
//     by compare-and-swap only; only the elected leader instance runs
//     promote_command, once per epoch; every instance repoints within about 1 s;
//   - an automatic failover needs a majority of the live instances to see the
//     primary down: one instance cut off from it changes nothing;
//   - an instance that loses etcd keeps the last known active node and never fails
//     over;
//   - SWITCHOVER / FAILOVER / FAILBACK on any console move every instance;
//   - SHOW CLUSTERS has decider ("fleet"), coordination (off | connecting | ok |
//     lost), leader, instances, views; /metrics has
//     pgpivot_cluster_coordination{cluster, state}.
// Every case uses failure_threshold 3 and health_check_interval 0.5 (failover_toml).
#include <catch2/catch.hpp>

#include "fleet_fixture.hpp"

namespace {

const char* const kCoordinationStates[] = {"off", "connecting", "ok", "lost"};

std::string ports_text(const std::map<int, long>& ports) {
  std::string s;
  for (auto [port, n] : ports) s += (s.empty() ? "" : ", ") + std::to_string(port) + ": " + std::to_string(n);
  return s.empty() ? "(none)" : s;
}

std::string runs_text(const std::vector<PromoteRun>& runs) {
  std::string s;
  for (auto& r : runs) s += "  " + r.env_line + " | " + r.end_line + "\n";
  return s.empty() ? "  (none)\n" : s;
}

// The instances that do not show `value` in `key` (for the samples' messages).
std::string not_showing(Fleet& f, const std::vector<Row>& rows, const std::string& key, const std::string& value) {
  std::string s;
  for (int i = 0; i < Fleet::kSize; ++i) {
    const Row& r = rows[static_cast<size_t>(i)];
    std::string v = r.count(key) ? r.at(key) : "<none>";
    if (v != value) s += " " + Fleet::name(i) + "=" + v;
  }
  (void)f;
  return s;
}

void check_fleet_row(const Row& r, const std::string& who) {
  INFO(who << ": " << row_text(r));
  CHECK(r.count("decider"));
  if (r.count("decider")) CHECK(r.at("decider") == "fleet");
  CHECK(r.count("views"));
}

}  // namespace

TEST_CASE("fleet: one instance cut off from the primary promotes nothing; the others serve on", "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("partition");
  etcd.start_all();
  FleetOptions o;
  o.proxy_for_a = true;
  o.sync_rep = false;
  // a leads, and the standby witness is off: only the fleet's majority rule stands
  // between a's view (the primary is down) and a promotion.
  o.a_leads = true;
  // a's held clients end with an error instead of waiting for ever.
  o.tweak = [](int i, PoolerConfig& cfg) {
    cfg.failover += "\nwitness_query = \"\"";
    if (i == 0) {
      cfg.extra["query_wait_timeout"] = "3";
      cfg.extra["query_timeout"] = "3";
    }
  };
  Fleet f("partition", 0, &etcd, o);
  f.start();
  f.require_up();
  for (auto& r : f.rows()) check_fleet_row(r, "before");

  FleetLoad load(f);
  load.start();
  sleep_s(1.5);
  REQUIRE(load.errors() == 0);
  load.event(f.pair.primary_port);

  double t0 = mono_s();
  f.proxy->blackhole();  // a alone loses the primary
  Row a = wait_cluster(f.p(0), "primary_state", "down", 10);
  double a_down = mono_s() - t0;
  // 10 s from the black hole; every half second: nobody moves, nothing promoted.
  std::string moved;
  while (mono_s() - t0 < 10) {
    auto rows = f.rows();
    std::string m = not_showing(f, rows, "active", "primary");
    if (!m.empty()) moved += "  t=" + std::to_string(mono_s() - t0) + "s:" + m + "\n";
    if (!f.pair.promote_runs().empty()) break;
    sleep_s(0.5);
  }
  auto rows = f.rows();
  auto runs = f.pair.promote_runs();
  INFO("a saw the primary down " << a_down << " s after the black hole: " << row_text(a));
  INFO("SHOW CLUSTERS 10 s after the black hole:\n" << f.rows_text());
  INFO("promote_command runs:\n" << runs_text(runs));
  CHECK(a["primary_state"] == "down");
  {
    INFO("instances that were not active=primary:\n" << moved);
    CHECK(moved.empty());
  }
  CHECK(runs.empty());
  CHECK(in_recovery(f.pair.standby_port));
  for (int i = 0; i < Fleet::kSize; ++i) {
    INFO("instance " << Fleet::name(i));
    CHECK(rows[static_cast<size_t>(i)]["active"] == "primary");
    CHECK(rows[static_cast<size_t>(i)]["failovers"] == "0");
    CHECK(rows[static_cast<size_t>(i)]["coordination"] == "ok");
  }
  CHECK(rows[1]["primary_state"] == "up");
  CHECK(rows[2]["primary_state"] == "up");

  // b and c: not one error, every write on the primary.
  for (int i : {1, 2}) {
    auto ports = load[i].ports_since_event();
    load[i].stop();
    INFO("instance " << Fleet::name(i) << ": writes per port since the black hole: " << ports_text(ports));
    CHECK(only_on(ports, f.pair.primary_port));
    check_clients(load[i], 0);
    check_acked_present(load[i], f.pair.primary_port);
  }
  // a: held, then errors (any); counted and shown.
  auto a_ports = load[0].ports_since_event();
  load[0].stop();
  size_t a_errors = load[0].error_count();
  int a_clients_with_error = 0;
  std::string a_text;
  for (auto& l : load[0].logs()) {
    if (!l->errors.empty()) a_clients_with_error++;
    for (auto& e : l->errors) a_text += "  " + e + "\n";
  }
  std::cout << "[fleet] cut-off instance a: " << a_errors << " errors over " << a_clients_with_error << " of "
            << load[0].logs().size() << " clients; writes since the black hole: " << ports_text(a_ports) << "\n"
            << a_text;
  INFO("a's clients' errors:\n" << a_text);
  CHECK(a_errors > 0);
  CHECK(a_ports.count(f.pair.standby_port) == 0);
  check_acked_present(load[0], f.pair.primary_port);
  // Nothing ever written on the standby.
  CHECK(count_rows(f.pair.primary_port, "port <> " + std::to_string(f.pair.primary_port)) == 0);
  CHECK(count_rows(f.pair.standby_port, "port = " + std::to_string(f.pair.standby_port)) == 0);
}

TEST_CASE("fleet: kill -9 of the primary under load: one promote_command over three instances and all move",
          "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("kill");
  etcd.start_all();
  Fleet f("kill", 1, &etcd);
  f.start();
  f.require_up();
  auto before = f.rows();
  REQUIRE(same_everywhere(before, "epoch"));
  REQUIRE(same_everywhere(before, "leader"));

  FleetLoad load(f);
  load.start();
  sleep_s(1.5);
  REQUIRE(load.errors() == 0);

  load.event(f.pair.standby_port);
  double kill_wall = wall_s();
  REQUIRE(kill9_postmaster(f.pair.primary_dir) > 0);
  bool all_moved = load.wait_all_on_target(30);
  sleep_s(1);
  load.stop();

  auto runs = ended_promote_runs(f.pair);
  INFO("SHOW CLUSTERS:\n" << f.rows_text());
  INFO("promote_command runs:\n" << runs_text(runs));
  REQUIRE(runs.size() == 1);
  REQUIRE(runs[0].end_wall > 0);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  double bound = kThreshold * kInterval + promote_s + 2;
  INFO("promote_command started " << runs[0].start_wall - kill_wall << " s after the kill and took " << promote_s
                                  << " s; bound for every client: " << bound << " s");
  CHECK(all_moved);
  for (int i = 0; i < Fleet::kSize; ++i) {
    double slowest = load[i].slowest_on_target();
    INFO("instance " << Fleet::name(i) << ": last client on the new primary " << slowest << " s after the kill");
    std::cout << "[fleet] kill: instance " << Fleet::name(i) << " all clients on the new primary after " << slowest
              << " s (bound " << bound << " s)\n";
    CHECK(slowest >= 0);
    CHECK(slowest <= bound);
    check_clients(load[i], 1);
    check_acked_present(load[i], f.pair.standby_port);
  }

  // Every instance: active standby, one epoch, one leader; still one promote_command.
  bool moved = f.wait_all("active", "standby", 5);
  auto rows = f.rows();
  INFO("SHOW CLUSTERS after the failover:\n" << f.rows_text());
  CHECK(moved);
  CHECK(same_everywhere(rows, "epoch"));
  CHECK(rows[0]["epoch"] != before[0]["epoch"]);
  CHECK(same_everywhere(rows, "leader"));
  for (auto& r : rows) {
    check_fleet_row(r, "after");
    CHECK(r["coordination"] == "ok");
  }
  CHECK(f.pair.promote_runs().size() == 1);
  // The decision is in etcd (its format is pgpivot's own: only its presence is checked).
  int etcd_leader = etcd.wait_leader(5);
  auto active = etcd.get(etcd_leader < 0 ? 0 : etcd_leader, "/pgpivot/main/active");
  INFO("etcd keys under /pgpivot:\n" << etcd.dump_prefix("/pgpivot/"));
  CHECK(active.has_value());
  CHECK_FALSE(active.value_or("").empty());
}

TEST_CASE("fleet: losing the etcd leader changes nothing; losing etcd keeps the active node and never fails over",
          "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("etcdloss");
  etcd.start_all();
  FleetOptions o;
  o.stats_on_a = true;
  o.sync_rep = false;
  Fleet f("etcdloss", 2, &etcd, o);
  f.start();
  f.require_up();
  {
    std::string all;
    std::string ok = metric_sample(f.stats_port, "pgpivot_cluster_coordination", {"cluster=\"main\"", "state=\"ok\""}, &all);
    INFO("/metrics of a:\n" << tail_of(all, 3000));
    CHECK(ok == "1");
  }

  FleetLoad load(f);
  load.start();
  sleep_s(1.5);
  REQUIRE(load.errors() == 0);
  load.event(f.pair.primary_port);

  // 1. The etcd leader dies: 5 s of traffic without an error; coordination ok.
  int leader = etcd.wait_leader(5);
  REQUIRE(leader >= 0);
  double t0 = mono_s();
  etcd.stop(leader, SIGKILL);
  std::string not_ok;
  while (mono_s() - t0 < 5) {
    std::string m = not_showing(f, f.rows(), "coordination", "ok");
    if (!m.empty()) not_ok += "  t=" + std::to_string(mono_s() - t0) + "s:" + m + "\n";
    sleep_s(0.25);
  }
  {
    INFO("errors in the 5 s after the etcd leader (member " << leader << ") was killed:\n" << load.errors_text());
    CHECK(load.errors() == 0);
  }
  bool ok_again = f.wait_all("coordination", "ok", 2);
  {
    INFO("coordination other than ok in those 5 s:\n" << (not_ok.empty() ? "  (never)\n" : not_ok));
    INFO("SHOW CLUSTERS:\n" << f.rows_text());
    CHECK(ok_again);
    if (!not_ok.empty()) WARN("coordination left ok after the etcd leader died:\n" << not_ok);
  }

  // 2. Every etcd member dies: within lease_ttl + request_timeout + 3 s every
  // instance says lost; traffic goes on on the primary.
  double bound = 3 + 1 + 3;
  double t1 = mono_s();
  etcd.stop_all(SIGKILL);
  double lost_after = -1;
  wait_for([&] {
    for (auto& r : f.rows())
      if (r["coordination"] != "lost") return false;
    lost_after = mono_s() - t1;
    return true;
  }, bound + 2, 0.1);
  std::cout << "[fleet] etcd loss: every instance shows coordination=lost after " << lost_after << " s (bound "
            << bound << " s)\n";
  {
    INFO("all etcd members killed; every instance lost after " << lost_after << " s (bound " << bound << " s)\n"
                                                               << f.rows_text());
    CHECK(lost_after >= 0);
    CHECK(lost_after <= bound);
  }
  {
    std::string all;
    INFO("/metrics of a");
    for (const char* st : kCoordinationStates) {
      std::string v = metric_sample(f.stats_port, "pgpivot_cluster_coordination",
                                    {"cluster=\"main\"", std::string("state=\"") + st + "\""}, &all);
      INFO("state " << st << "; /metrics:\n" << tail_of(all, 3000));
      CHECK(v == (std::string(st) == "lost" ? "1" : "0"));
    }
  }
  sleep_s(2);
  auto ports = load.ports_since_event();
  load.stop();
  {
    INFO("writes per port since the etcd leader died: " << ports_text(ports));
    CHECK(only_on(ports, f.pair.primary_port));
  }
  for (int i = 0; i < Fleet::kSize; ++i) {
    INFO("instance " << Fleet::name(i));
    check_clients(load[i], 0);
    check_acked_present(load[i], f.pair.primary_port);
  }

  // 3. Now the primary stops too: without etcd, nobody fails over.
  double t2 = mono_s();
  f.pair.kill(f.pair.primary_dir);
  double window = kThreshold * kInterval + 5;
  std::string moved;
  while (mono_s() - t2 < window) {
    std::string m = not_showing(f, f.rows(), "active", "primary");
    if (!m.empty()) moved += "  t=" + std::to_string(mono_s() - t2) + "s:" + m + "\n";
    sleep_s(0.25);
  }
  auto rows = f.rows();
  INFO("SHOW CLUSTERS " << window << " s after the primary stopped, etcd gone:\n" << f.rows_text());
  INFO("promote_command runs:\n" << runs_text(f.pair.promote_runs()));
  {
    INFO("instances that were not active=primary:\n" << moved);
    CHECK(moved.empty());
  }
  CHECK(f.pair.promote_runs().empty());
  CHECK(in_recovery(f.pair.standby_port));
  for (auto& r : rows) {
    CHECK(r["coordination"] == "lost");
    CHECK(r["failovers"] == "0");
  }
}

TEST_CASE("fleet: an instance restarted without a state file learns the active node from etcd", "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("rejoin");
  etcd.start_all();
  Fleet f("rejoin", 3, &etcd);
  f.start();
  f.require_up();
  {
    FleetLoad load(f);
    load.start();
    sleep_s(1);
    load.event(f.pair.standby_port);
    REQUIRE(kill9_postmaster(f.pair.primary_dir) > 0);
    bool moved = load.wait_all_on_target(30);
    sleep_s(0.5);
    load.stop();
    INFO("SHOW CLUSTERS:\n" << f.rows_text());
    REQUIRE(moved);
    for (int i = 0; i < Fleet::kSize; ++i) check_clients(load[i], 1);
  }
  REQUIRE(f.wait_all("active", "standby", 5));
  std::string epoch = f.rows()[0]["epoch"];
  REQUIRE(f.pair.promote_runs().size() == 1);

  // A careless unit starts the old primary again: writable, two writable nodes.
  f.pair.start_again(f.pair.primary_dir);
  REQUIRE(wait_for([&] { return node_value(f.pair.primary_port, "SELECT pg_is_in_recovery()") == "f"; }, 10));
  long on_old = count_rows(f.pair.primary_port);

  // c restarts with the same config and no state file: etcd says standby.
  double t0 = mono_s();
  f.restart_pooler(2);
  Row c;
  bool learned = wait_for([&] {
    c = cluster_row(f.p(2));
    return c["coordination"] == "ok" && c["active"] == "standby" && c["mode"] == "normal";
  }, 10);
  std::cout << "[fleet] rejoin: restarted c shows active=standby after " << mono_s() - t0 << " s\n";
  INFO("restarted c: " << row_text(c) << "\nall:\n" << f.rows_text());
  CHECK(learned);
  CHECK(c["active"] == "standby");
  CHECK(c["epoch"] == epoch);
  check_fleet_row(c, "restarted c");

  Load lc(f.p(2), 2, 2, "appdb", 301);
  lc.event(f.pair.standby_port);
  lc.start();
  sleep_s(2);
  auto ports = lc.ports_since_event();
  lc.stop();
  INFO("writes through the restarted c per port: " << ports_text(ports));
  CHECK(only_on(ports, f.pair.standby_port));
  check_clients(lc, 0);
  check_acked_present(lc, f.pair.standby_port);
  CHECK(count_rows(f.pair.primary_port) == on_old);

  auto rows = f.rows();
  for (auto& r : rows) CHECK(r["active"] == "standby");
  CHECK(same_everywhere(rows, "epoch"));
  CHECK(f.pair.promote_runs().size() == 1);
}

TEST_CASE("fleet: SWITCHOVER on one instance's console moves all three with one promote_command", "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("switchover");
  etcd.start_all();
  Fleet f("switchover", 4, &etcd);
  f.start();
  f.require_up();
  auto before = f.rows();

  FleetLoad load(f);
  load.start();
  sleep_s(1.5);
  REQUIRE(load.errors() == 0);

  load.event(f.pair.standby_port);
  double t0 = mono_s();
  Result sw;
  double sw_took = -1;
  std::thread console([&] {
    sw = admin_exec(f.p(1), "SWITCHOVER main", 60);
    sw_took = mono_s() - t0;
  });
  double all_standby = -1;
  std::vector<Row> last;
  wait_for([&] {
    last.clear();
    for (int i = 0; i < Fleet::kSize; ++i) last.push_back(cluster_row(f.p(i)));
    for (auto& r : last)
      if (r["active"] != "standby") return false;
    all_standby = mono_s() - t0;
    return true;
  }, 30, 0.05);
  console.join();

  auto runs = ended_promote_runs(f.pair);
  INFO("SWITCHOVER main on b: " << (sw.ok() ? std::string(PQcmdStatus(sw.get())) : sw.message()) << " after "
                                << sw_took << " s");
  INFO("promote_command runs:\n" << runs_text(runs));
  CHECK(sw.ok());
  REQUIRE(runs.size() == 1);
  REQUIRE(runs[0].end_wall > 0);
  double promote_s = runs[0].end_wall - runs[0].start_wall;
  double bound = promote_s + 2;
  bool clients_moved = load.wait_all_on_target(10);
  double slowest = 0;
  for (int i = 0; i < Fleet::kSize; ++i) slowest = load[i].slowest_on_target() < 0 ? -1 : std::max(slowest, load[i].slowest_on_target());
  std::cout << "[fleet] switchover: promote_command took " << promote_s << " s; every instance active=standby after "
            << all_standby << " s; every client on the new primary after " << slowest << " s (bound " << bound
            << " s)\n";
  INFO("every instance active=standby after " << all_standby << " s, every client on the new primary after "
                                              << slowest << " s (bound " << bound << " s)");
  CHECK(all_standby >= 0);
  CHECK(all_standby <= bound);
  CHECK(clients_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);

  // Repointed everywhere: nothing reaches the old primary (still running) any more.
  load.event(f.pair.standby_port);
  sleep_s(1);
  auto ports = load.ports_since_event();
  load.stop();
  {
    INFO("writes in the second after the switchover: " << ports_text(ports));
    CHECK(on_port(ports, f.pair.primary_port) == 0);
    CHECK(on_port(ports, f.pair.standby_port) > 0);
  }
  for (int i = 0; i < Fleet::kSize; ++i) {
    INFO("instance " << Fleet::name(i));
    check_clients(load[i], 0);
    check_acked_present(load[i], f.pair.standby_port);
  }
  auto rows = f.rows();
  INFO("SHOW CLUSTERS after the switchover:\n" << f.rows_text());
  CHECK(same_everywhere(rows, "epoch"));
  CHECK(rows[0]["epoch"] != before[0]["epoch"]);
  CHECK(same_everywhere(rows, "leader"));
  CHECK(f.pair.promote_runs().size() == 1);
}

TEST_CASE("fleet: a SWITCHOVER the leader refuses answers the console that asked, and moves nothing", "[fleet]") {
  if (skip_for_pgbouncer()) return;
  EtcdCluster etcd("refused");
  etcd.start_all();
  FleetOptions o;
  o.a_leads = true;
  Fleet f("refused", 5, &etcd, o);
  f.start();
  f.require_up();
  // Nothing to move to: the standby is gone. b asks anyway; a, the leader, refuses.
  f.pair.kill(f.pair.standby_dir);
  bool seen = wait_for([&] {
    for (int i = 0; i < Fleet::kSize; ++i)
      if (cluster_row(f.p(i))["standby_state"] != "down") return false;
    return true;
  }, 10);
  INFO("SHOW CLUSTERS:\n" << f.rows_text());
  REQUIRE(seen);
  double t0 = mono_s();
  Result sw = admin_exec(f.p(1), "SWITCHOVER main", 30);
  double took = mono_s() - t0;
  INFO("SWITCHOVER main on b: " << (sw.ok() ? std::string("ok") : sw.message()) << " after " << took << " s");
  INFO("a's log:\n" << f.p(0).log());
  CHECK_FALSE(sw.ok());
  CHECK(sw.sqlstate() == "08006");
  CHECK(sw.message().find("did not start it") != std::string::npos);
  CHECK(took < 5);
  CHECK(f.p(0).log().find("switchover requested by b refused") != std::string::npos);
  CHECK(f.pair.promote_runs().empty());
  for (auto& r : f.rows()) {
    CHECK(r["active"] == "primary");
    CHECK(r["mode"] == "normal");
  }
}
