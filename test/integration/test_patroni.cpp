// Follow mode: pgpivot in front of a 2-node Patroni cluster (decider = "patroni";
// each node's table names its Patroni REST API). pgpivot runs no promote_command of
// its own: it polls GET /primary on each node, routes to the node Patroni says leads
// (once it answers writable), holds clients while no node is writable, and keeps
// client connections open across the move (an in-flight transaction on a demoted
// primary may get an error).
//
// Each case: a single etcd member, Patroni nodes node1 (the config's primary, the
// first leader) and node2 (the standby) from fleet_fixture.hpp, Load through pgpivot;
// then Patroni moves the leader to node2, by a crash (kill -9 of node1's
// postmaster; primary_start_timeout 0 makes Patroni fail over rather than restart)
// or by `patronictl switchover`. The time Patroni itself needed is measured by
// polling node2's GET /primary every 50 ms; every client must write on node2 within
// that + 2 s.
#include <catch2/catch.hpp>

#include "fleet_fixture.hpp"

namespace {

PoolerConfig patroni_pooler(const PatroniCluster& pc) {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 10;
  cfg.max_client_conn = 500;
  cfg.main_cluster = pc.cluster_toml();
  std::ostringstream o;
  o << "decider = \"patroni\"\n"
    << "health_check_interval = " << kInterval << "\n"
    << "health_check_timeout = 2\n"
    << "failure_threshold = " << kThreshold << "\n"
    << "failover_timeout = 30";
  cfg.failover = o.str();
  return cfg;
}

// What a client may see when the leader moves under it.
const std::set<std::string> kMoveCodes = {"40001", "40003", "08006", "57P01"};

enum class Move { kCrash, kSwitchover };

void leader_moves_under_load(const std::string& name, int first_port, Move how) {
  EtcdCluster etcd("patroni-" + name, 1, fleet_base() + 7);
  etcd.start_all();
  PatroniCluster pc(name, etcd, first_port);
  pc.start(90);
  REQUIRE(pc.leader() == 0);

  Pooler p(patroni_pooler(pc));
  Row row;
  bool up = wait_for([&] {
    row = cluster_row(p);
    return row["decider"] == "patroni" && row["active"] == "primary" && row["primary_state"] == "up";
  }, 15);
  INFO("SHOW CLUSTERS before: " << row_text(row));
  REQUIRE(up);
  CHECK(row["coordination"] == "off");
  CHECK(wait_cluster(p, "leader", "primary", 5)["leader"] == "primary");  // Patroni's leader, as SHOW CLUSTERS has it

  Load load(p, 4, 4);
  load.start();
  sleep_s(1.5);
  REQUIRE(load.error_count() == 0);

  int new_port = pc.pg_port(1);
  load.event(new_port);
  double t0 = mono_s();
  CommandResult sw;
  std::thread ctl;
  if (how == Move::kCrash) {
    REQUIRE(pc.kill_leader_postgres() == 0);
  } else {
    ctl = std::thread([&] { sw = pc.switchover(0, 1); });
  }
  double patroni_s = -1;
  wait_for([&] {
    if (pc.rest_status(1, "/primary", nullptr, 0.5) != 200) return false;
    patroni_s = mono_s() - t0;
    return true;
  }, 60, 0.05);
  if (ctl.joinable()) ctl.join();
  if (how == Move::kSwitchover && sw.exit_code != 0)
    FAIL("patronictl switchover (exit " << sw.exit_code << "):\n" << sw.output << "\npatronictl list:\n" << pc.list());
  if (patroni_s < 0) FAIL("node2 never answered 200 on /primary; patronictl list:\n" << pc.list());

  double bound = patroni_s + 2;
  bool all_moved = load.wait_all_on_target(std::max(0.0, bound - (mono_s() - t0)) + 5);
  double slowest = load.slowest_on_target();
  sleep_s(1);
  load.stop();
  std::cout << "[patroni] " << name << ": Patroni's /primary on node2 after " << patroni_s
            << " s; every client on node2 after " << slowest << " s (bound " << bound << " s); client errors "
            << load.error_count() << "\n";
  for (auto& l : load.logs())
    for (auto& e : l->errors) std::cout << "  " << e << "\n";
  INFO("node2 answered 200 on /primary " << patroni_s << " s after the " << name);
  INFO("the last client wrote on node2 " << slowest << " s after the " << name << " (bound " << bound << " s)");
  CHECK(all_moved);
  CHECK(slowest >= 0);
  CHECK(slowest <= bound);
  check_clients_codes(load, 1, kMoveCodes);

  // pgpivot promoted nothing itself and follows Patroni's leader.
  CHECK_FALSE(contains_icase(p.log(), "running promote_command"));
  row = wait_cluster(p, "active", "standby", 5);
  INFO("SHOW CLUSTERS after: " << row_text(row));
  CHECK(row["active"] == "standby");
  CHECK(row["decider"] == "patroni");
  CHECK(row["leader"] == "standby");
  CHECK(p.running());

  // Where the acknowledged writes are (asynchronous replication: a crash may lose the
  // last ones; shown, not checked).
  Conn c(node_conninfo(new_port));
  if (c.ok()) {
    Result r = c.exec("SELECT count(*) FROM fo_log", 10);
    std::cout << "[patroni] " << name << ": acknowledged writes " << load.acked().size() << ", rows on node2 "
              << (r.ok() ? r.value() : r.message()) << "\n";
  }
}

}  // namespace

TEST_CASE("patroni: kill -9 of the leader's postmaster under load; pgpivot follows Patroni to the new leader",
          "[patroni]") {
  if (skip_for_pgbouncer()) return;
  leader_moves_under_load("crash", fleet_base() + 14, Move::kCrash);
}

TEST_CASE("patroni: patronictl switchover under load; pgpivot follows Patroni to the new leader", "[patroni]") {
  if (skip_for_pgbouncer()) return;
  leader_moves_under_load("switchover", fleet_base() + 18, Move::kSwitchover);
}
