// A cluster's runtime state: its failover machine, what the health checks saw,
// the running hooks; the failover log; and Clusters, which carries out what the
// machine decides (failover/cluster.cpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "pooler/failover/fleet.hpp"
#include "pooler/failover/machine.hpp"
#include "pooler/io/conn.hpp"

namespace pgpivot {

// Clusters and failover (failover/cluster.cpp drives failover/machine.hpp).
using NodeState = failover::Verdict;
using failover::to_string;

struct HealthCheck;
struct HealthCheckDeleter {
  void operator()(HealthCheck* h) const;
};


// What an instance knows of the fleet's keys for one cluster, and its own part in
// them ([coordination]); and Patroni's answers for decider = "patroni".
struct FleetState {
  failover::ActiveKey key;              // PREFIX/CLUSTER/active as last read
  bool read_once = false;               // a range of the cluster's keys came back
  std::string leader;                   // PREFIX/CLUSTER/leader's value
  long long leader_lease = 0, leader_create = 0;
  bool leading = false;                 // it is this instance, on its live lease
  std::vector<failover::InstanceView> views;  // the live instances' views (this one's as published)
  std::string published;                // this instance's view as last written
  bool range_busy = false, view_busy = false, key_busy = false;
  // This instance's own move as the leader: its intent (written when key_rev > 0).
  std::optional<failover::MoveIntent> my_move;
  long long my_move_rev = 0;
  double intent_at = 0;
  bool promote_held = false;            // promote_command waits for the intent and the acks
  std::optional<failover::ActiveKey> pending;  // a final write (done/aborted) still to make
  long long pending_rev = 0;                   // ... comparing this revision (the intent's)
  std::optional<failover::Request> request;    // PREFIX/CLUSTER/request as last read
  bool campaign_busy = false;
  long long seen_rev = 0;  // the newest etcd revision known here: older reads are stale
  // A console request this instance sent to the leader.
  std::string request_id;
  bool request_seen_move = false;
  std::string handled_request;          // the leader's: last request id acted on
  bool request_delete_pending = false;  // ... deleted once its move's intent is written
  std::uint64_t request_epoch = 0;      // the key's epoch when this instance sent its request
  long long request_rev = 0;            // etcd's revision of that request (0: not written yet)
  long long read_rev = 0;               // the revision of the last read of the keys
  std::string ack;                      // the move id this instance follows
  bool drained = false;
  std::uint64_t moves_at_request = 0;
  // decider = "patroni": GET /primary per node: 1 leader, 0 not, -1 unknown.
  int patroni[2] = {-1, -1};
  bool patroni_busy[2] = {false, false};
  std::string patroni_error[2];
  double patroni_next = 0;
};

struct ClusterRt {
  std::string name;
  const config::Cluster* cfg = nullptr;  // points into Pooler::cfg_
  bool removed = false;
  failover::Machine fsm;                 // what decides a failover
  failover::NodeView obs[2];             // what the checks learned of each node
  std::uint64_t last_check_us[2] = {0, 0};
  Ms check_started[2] = {0, 0};
  // The role check (role_query, position_query; witness and lag too unless
  // witness_options asks for a connection of their own) and that witness check.
  std::unique_ptr<HealthCheck, HealthCheckDeleter> hc[2], wc[2];
  Ms next_check = 0;
  // Last time (uv_now of any worker) the active node served the pools: a server login
  // or a ReadyForQuery. While it does, a failed health check does not count.
  std::atomic<Ms> datapath_ok{0};
  uv_process_t* promote_proc = nullptr;   // the running promote_command, if any
  std::uint64_t op_start_wall = 0;
  int clients_held = 0;
  std::atomic<int> client_errors{0};  // errors given to clients around the current/last move (any worker)
  std::uint64_t failovers = 0;
  std::uint64_t last_failover_wall = 0, last_failover_ms = 0;
  std::string fence_result;  // of the last fence_command
  std::uint64_t moves_ended = 0;  // moves that ended (completed or aborted); console commands wait on it
  std::string last_end;           // how the last one ended: "ok" or "aborted: why"
  bool state_loaded = false;
  FleetState fl;

  bool has_standby() const { return cfg && cfg->standby.has_value(); }
  bool active_standby() const { return has_standby() && fsm.active() == 1; }
  // Pools may hand out servers (a cluster without standby always may).
  bool routes() const { return !has_standby() || fsm.routes(); }
  bool moving() const { return has_standby() && fsm.moving(); }
  bool refusing() const { return has_standby() && fsm.refusing(); }
  NodeState state(int side) const { return fsm.view(side).verdict; }
  void note_datapath_ok(Ms t) {
    if (datapath_ok.load(std::memory_order_relaxed) != t) datapath_ok.store(t, std::memory_order_relaxed);
  }
};

struct FailoverEvent {
  std::string cluster, kind, result, to;
  std::uint64_t start_wall = 0, duration_ms = 0;
  int clients_held = 0, client_errors = 0;
};

class Pooler;
struct DbEntry;
class Coordinator;

// The node a database's servers go to now: the cluster's active node.
[[nodiscard]] const config::Node& active_node(const DbEntry* db);

// Worker 0's clusters: the glue between each cluster's failover machine (what
// decides) and the pools (what is done): health-check scheduling, the effects of a
// decision (close the old node's servers, repoint, wake waiting clients), the hooks
// and the state file. The other workers' databases point at worker 0's clusters.
class Clusters {
 public:
  using Map = std::map<std::string, std::unique_ptr<ClusterRt>>;
  explicit Clusters(Pooler& p);
  Clusters(const Clusters&) = delete;
  Clusters& operator=(const Clusters&) = delete;

  void sync();  // after a (re)load: clusters from the config, databases pointed at them
  void health_tick();  // the janitor's round: start due checks, time out slow ones
  // A role check of `side` ended with obs[side] filled in.
  void check_result(ClusterRt* cl, int side, std::uint64_t latency_us);
  // Console SWITCHOVER / FAILOVER / FAILBACK / ABORT; "" or why not.
  std::string request(ClusterRt* cl, const std::string& kind);
  void progress(ClusterRt* cl);  // a move waits for transactions to end: look again
  void close_health_checks();
  [[nodiscard]] Map& all() { return clusters_; }
  [[nodiscard]] Coordinator* coordinator() { return coord_.get(); }
  // The move a console command asks for, on this instance's machine.
  std::string request_local(ClusterRt* cl, const std::string& kind);
  [[nodiscard]] const std::vector<FailoverEvent>& log() const { return log_; }

 private:
  void apply_effects(ClusterRt* cl, failover::Effects&& e);
  void close_old_servers(ClusterRt* cl, const std::string& why);
  void repoint_pools(ClusterRt* cl);
  void wake_pools(ClusterRt* cl);
  void record_move(ClusterRt* cl, failover::Op op, const std::string& result);
  void finish_admin(ClusterRt* cl, const std::string& result);
  bool write_state_file(const std::string& path);
  void load_state_file(ClusterRt* cl);
  // Runs a hook through /bin/sh in its own process group; promote_command's exit
  // reaches the cluster's machine.
  void run_hook(ClusterRt* cl, const std::string& command, const char* what, int fence_side = -1);

  Pooler& p_;
  Map clusters_;
  std::vector<FailoverEvent> log_;
  std::unique_ptr<Coordinator> coord_;  // [coordination] or decider = "patroni"
  friend class Coordinator;

 public:
  ~Clusters();
};

}  // namespace pgpivot
