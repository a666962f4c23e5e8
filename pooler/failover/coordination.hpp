// The fleet (issue 15): the pgpivot instances that share a cluster decide its moves
// together through etcd ([coordination]), and decider = "patroni" follows Patroni's
// leader. Worker 0 runs it beside the health checks; fleet.hpp holds the keys' format
// and the quorum rule, machine.hpp the decision (follow/adopt/set_permit).
//
// Each tick (100 ms): keep the lease (grant, keepalive every lease_ttl/3), read the
// cluster's keys (one range), publish this instance's view when it changed, campaign
// for the leader key when it is free, then reconcile:
//   - the active key names another node or epoch -> adopt it (repoint; no promotion);
//   - it carries another instance's move -> follow it (leave the old node, hold clients,
//     acknowledge in the view);
//   - the leader: automatic moves are permitted when a majority of live views see the
//     active node down; its move writes the intent (CAS), waits for the acks, runs
//     promote_command, then writes the result (CAS); a console request key is run;
//     an orphaned move (its leader gone) is completed or cleared.
// Without an answer from etcd for lease_ttl the link is lost: no automatic move, the
// last known node stays in use.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "pooler/coord/etcd.hpp"
#include "pooler/coord/http_client.hpp"
#include "pooler/failover/cluster.hpp"

namespace pgpivot {

class Coordinator {
 public:
  Coordinator(Pooler& p, Clusters& cs);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  void configure(const config::Config& cfg);
  void close();

  [[nodiscard]] bool enabled() const { return cfg_.enabled(); }
  [[nodiscard]] failover::Link link() const;
  [[nodiscard]] const std::string& instance() const { return name_; }
  // The cluster's moves are decided by the fleet (coordination on, decider pgpivot).
  [[nodiscard]] bool fleet(const ClusterRt* cl) const;
  [[nodiscard]] static bool patroni(const ClusterRt* cl);
  [[nodiscard]] std::string decider(const ClusterRt* cl) const;
  // SHOW CLUSTERS views: each live instance's view ("a: primary down, standby read-only (down)"),
  // or Patroni's answers.
  [[nodiscard]] std::string views_text(const ClusterRt* cl) const;
  // SHOW CLUSTERS leader: the fleet leader's instance name, or the node Patroni names
  // leader ("primary"/"standby"); nullopt when neither applies.
  [[nodiscard]] std::optional<std::string> leader_cell(const ClusterRt* cl) const;

  // From Clusters::apply_effects, for a fleet cluster:
  // The leader's machine began a move: write the intent; false = it may not (abort it).
  bool move_started(ClusterRt* cl);
  void hold_promote(ClusterRt* cl);    // run promote_command once the intent is written and acknowledged
  void move_ended(ClusterRt* cl, bool completed);  // write the result
  // Draining: the other instances have not drained yet.
  [[nodiscard]] bool others_busy(ClusterRt* cl);
  // A console SWITCHOVER/FAILOVER/FAILBACK/ABORT on an instance that does not lead.
  // "" = sent (the console waits for the move), else why not.
  std::string request(ClusterRt* cl, const std::string& kind);
  // This instance runs the console's request itself (not in a fleet, or it leads).
  [[nodiscard]] bool decides_here(const ClusterRt* cl) const;

 private:
  static void on_tick(uv_timer_t* t);
  void tick();
  void keep_lease(double now);
  void read_keys(ClusterRt* cl);
  bool on_keys(ClusterRt* cl, const nlohmann::json& body);  // false: a stale read
  void reconcile(ClusterRt* cl, double now);
  void publish_view(ClusterRt* cl);
  void campaign(ClusterRt* cl);
  void write_active(ClusterRt* cl, const failover::ActiveKey& k, long long expect_rev, bool check_leader,
                    std::function<void(bool ok, bool cas_failed)> done);
  void maybe_promote(ClusterRt* cl, double now);
  void write_pending(ClusterRt* cl);
  void poll_patroni(ClusterRt* cl, double now);
  void follow_patroni(ClusterRt* cl, double now);
  void set_permit(ClusterRt* cl);
  std::string key(const ClusterRt* cl, const std::string& leaf) const;
  failover::InstanceView own_view(const ClusterRt* cl) const;

  Pooler& p_;
  Clusters& cs_;
  config::Coordination cfg_;
  std::string name_;
  std::unique_ptr<coord::HttpClient> http_;
  std::unique_ptr<coord::Etcd> etcd_;
  uv_timer_t* timer_ = nullptr;  // freed in its close callback
  long long lease_ = 0;
  double lease_ok_at_ = -1;       // last keepalive/grant answered (monotonic s)
  double last_ok_ = -1;          // last answer from etcd of any kind
  double started_ = 0;
  double next_keepalive_ = 0;
  bool lease_busy_ = false;
  std::string last_error_;
  failover::Link reported_ = failover::Link::Off;  // logged when it changes
  unsigned seq_ = 0;
  bool closed_ = false;
};

}  // namespace pgpivot
