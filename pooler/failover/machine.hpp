// The failover decision of one cluster (a primary and its standby), as a state
// machine with no sockets, timers or processes: the caller feeds it health-check
// verdicts, hook exits, console requests and the time, and carries out the Effects it
// returns (close servers, run promote_command, write the state file, repoint pools).
// It is what decides a failover; pooler/failover/cluster.cpp drives it.
//
// Modes and their exits (every mode can be left without a success):
//
//   Starting   --both nodes answered, or start_timeout--> Normal(active) | TwoWritable
//   Normal     --active failed failure_threshold checks, target read-only, witness
//                not receiving, lag <= max--> Promoting          (automatic failover)
//              --SWITCHOVER / FAILBACK--> Draining ; --FAILOVER--> Promoting
//   Draining   --no transaction in flight, or failover_timeout--> Promoting
//              --ABORT--> Normal(old) | NoWritable ; --FAILOVER/FAILBACK--> replaced
//   Promoting  --target answers writable--> Normal(target)        (epoch + 1)
//              --promote_command fails / promote_timeout / failover_timeout / ABORT-->
//                Normal(old) if it answers writable, else NoWritable
//              --FAILOVER/FAILBACK--> replaced
//   NoWritable --the active node answers writable--> Normal(active)
//              --the aborted move's target alone answers writable--> Normal(target)
//              --FAILOVER / FAILBACK--> Promoting
//   TwoWritable --one node stops answering writable--> Normal(the other)
//              --FAILOVER (standby) / FAILBACK (primary)--> Normal(that node)
//   Following  (a move decided elsewhere: the fleet's leader, or Patroni)
//              --adopt(the target, epoch) / the target answers writable (Patroni)-->
//                Normal(target)
//              --adopt(the old node) / ABORT / failover_timeout--> Normal(old) | NoWritable
//   Any mode but Draining/Promoting --adopt(node, epoch) from the fleet's key--> Normal(node)
//
// set_permit(false) stops automatic moves (this instance is not the fleet's leader,
// the fleet's majority does not see the node down, coordination is lost, Patroni decides).
//
// In NoWritable and TwoWritable no server is handed out and waiting clients get an
// error (08006, the connection kept) after query_wait_timeout, as in Normal while the
// active node is down and no automatic move is allowed; in Draining and Promoting
// they wait up to failover_timeout.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pgpivot::failover {

// What one health check of a node concluded.
enum class Verdict {
  Unknown,        // no check could be made (or none yet)
  Up,             // answers, writable
  ReadOnly,       // answers, not writable (a standby; a CockroachDB standby tenant)
  Down,           // refused, timed out, reset, shutting down, in crash recovery
  Misconfigured,  // login refused, database missing, role_query error: says nothing about health
};
[[nodiscard]] const char* to_string(Verdict v);

enum class Mode { Starting, Normal, Draining, Promoting, NoWritable, TwoWritable, Following };
enum class Op { None, Failover, Switchover, Failback };
[[nodiscard]] const char* to_string(Op op);
[[nodiscard]] const char* side_name(int side);  // 0 "primary", 1 "standby"

// What the standby (or, after a failover, the old primary) says of its upstream.
enum class Witness { Disabled, Unknown, Receiving, NotReceiving };
[[nodiscard]] const char* to_string(Witness w);

struct Settings {
  int failure_threshold = 3;
  double check_interval = 1.0;
  double check_timeout = 2.0;
  double failover_timeout = 60.0;
  double promote_timeout = 30.0;
  long long max_lag = 1048576;
  bool auto_failover = true;
  bool auto_failback = false;
  bool has_promote = false;
  bool witness = true;
  bool lag = true;
};

// The latest facts about one node; the caller fills it from its checks.
struct NodeView {
  Verdict verdict = Verdict::Unknown;
  double at = -1;  // when the verdict came (seconds, monotonic); -1 = never
  std::string error;
  // From the witness query on this node (meaningful when it is not the active node).
  Witness witness = Witness::Unknown;
  double heard_age = 0;         // seconds since it last heard from its upstream, at witness_at
  double witness_at = -1;
  bool follows_active = false;  // its upstream is the cluster's active node
  double followed_at = -1;      // last time it was seen receiving from the active node
  // WAL positions: this node's received position (as a follower), or its current
  // position (as the writable node); lag_direct when lag_query returned bytes.
  std::optional<std::uint64_t> receive_lsn, position;
  std::optional<long long> lag_direct;
  // Last time its received position was seen to advance: the witness when
  // witness_query cannot tell (a check user without pg_read_all_stats).
  double lsn_advanced_at = -1;
};

struct LogLine {
  int level = 0;  // 0 info, 1 warning, 2 error
  std::string text;
};

// What the caller must do, in this order: close_servers, persist, repoint, kill_promote,
// run_promote, run_fence, run_on_failover; then answer console requests with `finished`.
struct Effects {
  bool close_servers = false;  // leave the old node now: close its servers (errors per the contract)
  bool run_promote = false;
  bool kill_promote = false;
  bool persist = false;        // write the state file (active + epoch) before the pools move
  bool repoint = false;        // pools now use the active node: reconnect, serve waiting clients
  bool wake_pools = false;     // the active node answers again: log in at once, no login back-off
  bool run_fence = false;
  int fence_side = -1;
  bool run_on_failover = false;
  bool check_now = false;      // check the nodes without waiting for the interval
  bool started = false;        // a move started
  bool completed = false;      // a move completed (record it in SHOW FAILOVERS)
  std::optional<std::string> finished;  // a move ended: "ok" or "aborted: why"
  Op ended_op = Op::None;               // which move `finished` is about
  std::vector<LogLine> log;

  void merge(Effects&& o);
};

class Machine {
 public:
  Machine() = default;
  explicit Machine(const Settings& s) : s_(s) {}
  void set_settings(const Settings& s) { s_ = s; }
  const Settings& settings() const { return s_; }

  // What the state file recorded at start (before the first check).
  void restore(int active, std::uint64_t epoch, const char* source = "the state file");
  // The first checks have not come back within this long after start: decide anyway.
  void start(double now) { start_at_ = now; }

  Effects on_check(int side, const NodeView& v, double now, bool datapath_ok);
  Effects on_tick(double now, bool busy);  // busy: a drained move still has transactions in flight
  Effects on_promote_exit(bool ok, const std::string& why, double now);
  // Console SWITCHOVER/FAILOVER/FAILBACK; `refused` says why not (then no effect).
  Effects request(Op op, double now, std::string* refused);
  Effects abort(const std::string& why, double now, std::string* refused = nullptr);
  // Automatic moves are allowed only while permitted; `why` is logged when one is refused.
  void set_permit(bool ok, const std::string& why) {
    permit_ = ok;
    permit_why_ = why;
  }
  bool permitted() const { return permit_; }
  // The permission just came: try the automatic move now instead of at the next check.
  Effects retry_auto(double now) {
    if (mode_ == Mode::Normal && failures_ >= s_.failure_threshold) return try_auto(now);
    return {};
  }
  // A move decided elsewhere: leave the old node (close its servers for a failover,
  // drain for a switchover) and hold clients until adopt() or, with `on_writable`,
  // until the target answers writable.
  Effects follow(Op op, int target, double now, bool on_writable);
  // The fleet's key says `active` at `epoch`: serve it (no promotion here).
  Effects adopt(int active, std::uint64_t epoch, double now, const std::string& why);

  Mode mode() const { return mode_; }
  Op op() const { return op_; }
  int active() const { return active_; }
  int target() const { return target_; }
  std::uint64_t epoch() const { return epoch_; }
  int failures() const { return failures_; }
  bool moving() const { return mode_ == Mode::Draining || mode_ == Mode::Promoting || mode_ == Mode::Following; }
  bool routes() const { return mode_ == Mode::Normal; }  // pools may hand out servers
  // Waiting clients get 08006 after query_wait_timeout (and keep their connection):
  // no writable node, two, or an active node that is down with no move possible.
  bool refusing() const {
    return mode_ == Mode::NoWritable || mode_ == Mode::TwoWritable || (mode_ == Mode::Normal && active_down());
  }
  bool active_down() const {
    return failures_ >= s_.failure_threshold &&
           (view_[active_].verdict == Verdict::Down || view_[active_].verdict == Verdict::ReadOnly);
  }
  bool promote_running() const { return promote_running_; }
  double op_start() const { return op_start_; }
  const NodeView& view(int side) const { return view_[side]; }
  // Bytes the other node lags behind the active one (nullopt = unknown).
  std::optional<long long> lag_bytes() const;
  // The other node's witness, judged now.
  Witness witness(double now) const;
  std::string mode_name() const;
  // The error waiting clients get in a refusing mode.
  std::string refusal() const;

 private:
  Effects try_auto(double now);
  Effects begin(Op op, bool forced, int target, double now);
  Effects complete(double now, const char* how);
  Effects arrive(int side, std::uint64_t epoch, double now, const char* verb, const std::string& why);
  Effects to_normal(int side, double now, const std::string& why);
  Effects start_promote(double now);
  Effects decide_start(double now);
  Effects end_follow(int side, std::uint64_t epoch, double now, const std::string& why);
  void refuse(Effects& e, const std::string& why);
  double window() const { return s_.failure_threshold * s_.check_interval; }
  bool fresh_up(int side) const { return view_[side].verdict == Verdict::Up && view_[side].at >= op_start_; }

  Settings s_;
  Mode mode_ = Mode::Starting;
  Op op_ = Op::None;
  int active_ = 0, target_ = 1;
  int aborted_target_ = -1;  // the target of the last aborted move, in NoWritable
  std::uint64_t epoch_ = 1;
  bool restored_ = false;
  const char* restored_from_ = "the state file";
  int failures_ = 0;
  bool promote_running_ = false;
  double op_start_ = 0, promote_start_ = 0, start_at_ = 0;
  NodeView view_[2];
  std::string last_refusal_;
  bool warned_two_ = false;
  bool permit_ = true;
  std::string permit_why_;
  bool follow_on_writable_ = false;
};

}  // namespace pgpivot::failover
