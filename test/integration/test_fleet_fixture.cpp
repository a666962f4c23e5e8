// The fixtures of the fleet and Patroni tests, on their own ([fleet-fixture]): a
// 3-member etcd that elects a leader, serves on without it and takes it back; two
// Patroni nodes that bootstrap and move their leader on a switchover and on a crash;
// three pgpivot instances in front of one pair, one through a proxy that can be
// black-holed. Nothing here needs the pooler's [coordination] or follow mode: these
// prove the fixtures, so that a failing [fleet] or [patroni] case is about pgpivot.
// Each prints how long its steps took ("[fleet-fixture] ...").
#include <catch2/catch.hpp>

#include "fleet_fixture.hpp"

namespace {

void report(const std::string& what, double seconds) {
  std::cout << "[fleet-fixture] " << what << ": " << seconds << " s" << std::endl;
}

}  // namespace

TEST_CASE("fleet fixture: a 3-member etcd elects a leader and serves on without it until it is back",
          "[fleet-fixture]") {
  double t0 = mono_s();
  EtcdCluster etcd("smoke", 3);
  etcd.start_all(20);
  report("etcd: 3 members healthy", mono_s() - t0);
  int leader = etcd.wait_leader(5);
  INFO(etcd.logs_text());
  REQUIRE(leader >= 0);
  REQUIRE(etcd.put(leader, "/smoke/k1", "v1"));
  int other = (leader + 1) % 3, third = (leader + 2) % 3;
  CHECK(etcd.get(other, "/smoke/k1").value_or("<none>") == "v1");

  // The leader dies (SIGKILL): the other two elect one and serve reads and writes.
  double t1 = mono_s();
  etcd.stop(leader, SIGKILL);
  int next = etcd.wait_leader(10);
  double elect = mono_s() - t1;
  report("etcd: new leader after SIGKILL of the leader", elect);
  REQUIRE(next >= 0);
  CHECK(next != leader);
  CHECK(etcd.wait_healthy({other, third}, 10));
  CHECK(etcd.put(other, "/smoke/k2", "v2"));
  CHECK(etcd.get(third, "/smoke/k2").value_or("<none>") == "v2");
  CHECK(elect < 5);

  // It comes back with its data directory and catches up.
  double t2 = mono_s();
  etcd.start(leader);
  CHECK(etcd.wait_healthy({leader}, 15));
  report("etcd: the old leader rejoined", mono_s() - t2);
  bool caught_up = wait_for([&] { return etcd.get(leader, "/smoke/k2").value_or("") == "v2"; }, 5);
  CHECK(caught_up);

  // A clean stop (SIGTERM) of the current leader hands the leadership over.
  int l2 = etcd.wait_leader(5);
  REQUIRE(l2 >= 0);
  double t3 = mono_s();
  etcd.stop(l2, SIGTERM);
  int l3 = etcd.wait_leader(10);
  report("etcd: new leader after SIGTERM of the leader", mono_s() - t3);
  CHECK(l3 >= 0);
  CHECK(l3 != l2);

  // All gone: nothing answers, and nothing is left running.
  etcd.stop_all();
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(etcd.running(i));
    CHECK_FALSE(tcp_port_accepts(etcd.client_port(i)));
  }
  report("etcd smoke test, total", mono_s() - t0);
}

TEST_CASE("fleet fixture: two Patroni nodes bootstrap; a switchover and a crashed leader move the leader",
          "[fleet-fixture]") {
  double t0 = mono_s();
  EtcdCluster etcd("smoke-patroni", 1, fleet_base() + 7);
  etcd.start_all(20);
  report("Patroni: etcd member healthy", mono_s() - t0);
  PatroniCluster pc("smoke", etcd, fleet_base() + 10);
  pc.start(90);
  report("Patroni: node1 leading, node2 streaming, appdb ready", mono_s() - t0);
  // patronictl takes a second to start: it is run only for a failure's message.
  auto state = [&] { return "patronictl list:\n" + pc.list() + pc.logs_text(); };
  if (int l = pc.leader(); l != 0) FAIL("the leader is node index " << l << ", not node1\n" << state());

  // The roles the pooler logs in with work (SCRAM), on the leader only for writes.
  auto app_insert = [&](int node, int seq) {
    Conn c("host=127.0.0.1 port=" + std::to_string(pc.pg_port(node)) + " dbname=appdb user=app password=app", 5);
    if (!c.ok()) return c.error();
    Result r = c.exec("INSERT INTO fo_log VALUES (1, " + std::to_string(seq) + ", 0, inet_server_port()) RETURNING port", 5);
    return r.ok() ? r.value() : "[" + r.sqlstate() + "] " + r.message();
  };
  double ti = mono_s();
  CHECK(app_insert(0, 1) == std::to_string(pc.pg_port(0)));
  CHECK(contains_icase(app_insert(1, 2), "25006"));  // read-only transaction on the replica
  report("Patroni: app's INSERTs on both nodes", mono_s() - ti);

  // patronictl switchover node1 -> node2; when does node2 answer 200 on /primary?
  double t1 = mono_s();
  double node2_primary = -1;
  CommandResult sw;
  std::thread ctl([&] { sw = pc.switchover(0, 1); });
  wait_for([&] {
    if (pc.rest_status(1, "/primary", nullptr, 0.5) != 200) return false;
    node2_primary = mono_s() - t1;
    return true;
  }, 60, 0.05);
  ctl.join();
  report("Patroni: switchover, node2 answers 200 on /primary after", node2_primary);
  report("Patroni: patronictl switchover returned after", mono_s() - t1);
  INFO("patronictl switchover (exit " << sw.exit_code << "):\n" << sw.output);
  CHECK(sw.exit_code == 0);
  REQUIRE(node2_primary >= 0);
  CHECK(pc.leader() == 1);
  double t2 = mono_s();
  bool rejoined = pc.wait_streaming(1, 60);
  report("Patroni: node1 streaming from node2 after the switchover", mono_s() - t2);
  if (!rejoined) FAIL("node1 does not stream from node2\n" << state());
  CHECK(app_insert(1, 3) == std::to_string(pc.pg_port(1)));

  // kill -9 of the leader's postmaster: primary_start_timeout 0 fails over to node1.
  double t3 = mono_s();
  int killed = pc.kill_leader_postgres();
  CHECK(killed == 1);
  double node1_primary = -1;
  wait_for([&] {
    if (pc.rest_status(0, "/primary", nullptr, 0.5) != 200) return false;
    node1_primary = mono_s() - t3;
    return true;
  }, 60, 0.05);
  report("Patroni: crashed leader, node1 answers 200 on /primary after", node1_primary);
  if (node1_primary < 0) FAIL("node1 never answered 200 on /primary\n" << state());
  double t4 = mono_s();
  std::string last;
  bool writable = wait_for([&] { return (last = app_insert(0, 4)) == std::to_string(pc.pg_port(0)); }, 10);
  report("Patroni: node1 took an INSERT after", mono_s() - t4);
  INFO("last INSERT on node1: " << last);
  CHECK(writable);
  report("Patroni smoke test, total", mono_s() - t0);
}

TEST_CASE("fleet fixture: three pgpivot instances in front of one pair with a behind a proxy that is black-holed",
          "[fleet-fixture]") {
  if (skip_for_pgbouncer()) return;
  double t0 = mono_s();
  FleetOptions o;
  o.coordination = false;  // today's pgpivot: three independent instances
  o.proxy_for_a = true;
  o.sync_rep = false;
  o.stats_on_a = true;
  Fleet f("smoke", 0, nullptr, o);
  f.start();
  f.require_up(15);
  report("fleet: pair and three instances up", mono_s() - t0);
  {
    // metric_sample reads a labelled sample of a's /metrics.
    std::string all;
    std::string v = metric_sample(f.stats_port, "pgpivot_cluster_mode", {"cluster=\"main\"", "mode=\"normal\""}, &all);
    INFO("/metrics of a:\n" << tail_of(all, 3000));
    CHECK(v == "1");
  }
  // An instance restarts with the same config (a new port).
  int old_port = f.p(2).port();
  double tr = mono_s();
  f.restart_pooler(2);
  f.require_up(15);
  report("fleet: c restarted and up", mono_s() - tr);
  CHECK(f.p(2).port() != old_port);

  std::vector<std::unique_ptr<Load>> loads;
  for (int i = 0; i < Fleet::kSize; ++i) loads.push_back(std::make_unique<Load>(f.p(i), 2, 2, "appdb", 1 + 100 * i));
  for (auto& l : loads) {
    l->event(f.pair.primary_port);
    l->start();
  }
  sleep_s(1.5);
  for (int i = 0; i < Fleet::kSize; ++i) {
    auto& l = *loads[static_cast<size_t>(i)];
    auto ports = l.ports_since_event();
    l.stop();
    INFO("instance " << Fleet::name(i) << ": writes per port " << on_port(ports, f.pair.primary_port)
                     << " on the primary, " << on_port(ports, f.pair.standby_port) << " on the standby");
    CHECK(only_on(ports, f.pair.primary_port));
    check_clients(l, 0);
    check_acked_present(l, f.pair.primary_port);
  }
  CHECK(count_rows(f.pair.primary_port, "port <> " + std::to_string(f.pair.primary_port)) == 0);

  // The proxy black-holed: only a loses the primary.
  double t1 = mono_s();
  f.proxy->blackhole();
  CHECK(f.proxy->swallows_syn(0.5));
  Row a = wait_cluster(f.p(0), "primary_state", "down", 10);
  report("fleet: a sees the primary down after the black hole", mono_s() - t1);
  auto rows = f.rows();
  INFO("SHOW CLUSTERS:\n" << f.rows_text());
  CHECK(a["primary_state"] == "down");
  CHECK(rows[1]["primary_state"] == "up");
  CHECK(rows[2]["primary_state"] == "up");
  report("fleet smoke test, total", mono_s() - t0);
}
