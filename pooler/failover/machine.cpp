// The failover state machine of one cluster: see machine.hpp for the modes and exits.
#include "pooler/failover/machine.hpp"

#include <cstdio>

namespace pgpivot::failover {

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::Unknown: return "unknown";
    case Verdict::Up: return "up";
    case Verdict::ReadOnly: return "read-only";
    case Verdict::Down: return "down";
    case Verdict::Misconfigured: return "misconfigured";
  }
  return "?";
}

const char* to_string(Op op) {
  switch (op) {
    case Op::None: return "none";
    case Op::Failover: return "failover";
    case Op::Switchover: return "switchover";
    case Op::Failback: return "failback";
  }
  return "?";
}

const char* to_string(Witness w) {
  switch (w) {
    case Witness::Disabled: return "disabled";
    case Witness::Unknown: return "unknown";
    case Witness::Receiving: return "receiving";
    case Witness::NotReceiving: return "not receiving";
  }
  return "?";
}

const char* side_name(int side) { return side == 0 ? "primary" : "standby"; }

void Effects::merge(Effects&& o) {
  close_servers |= o.close_servers;
  run_promote |= o.run_promote;
  kill_promote |= o.kill_promote;
  persist |= o.persist;
  repoint |= o.repoint;
  wake_pools |= o.wake_pools;
  if (o.run_fence) {
    run_fence = true;
    fence_side = o.fence_side;
  }
  run_on_failover |= o.run_on_failover;
  check_now |= o.check_now;
  completed |= o.completed;
  started |= o.started;
  if (o.finished) {
    finished = std::move(o.finished);
    ended_op = o.ended_op;
  }
  for (auto& l : o.log) log.push_back(std::move(l));
}

namespace {

std::string fmt_bytes(long long b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld bytes", b);
  return buf;
}

}  // namespace

void Machine::restore(int active, std::uint64_t epoch, const char* source) {
  restored_from_ = source;
  active_ = active;
  target_ = 1 - active;
  epoch_ = epoch ? epoch : 1;
  restored_ = true;
}

std::optional<long long> Machine::lag_bytes() const {
  const NodeView& f = view_[1 - active_];
  if (f.lag_direct) return *f.lag_direct;
  const NodeView& a = view_[active_];
  if (!f.receive_lsn || !a.position) return std::nullopt;
  if (*f.receive_lsn >= *a.position) return 0;
  return static_cast<long long>(*a.position - *f.receive_lsn);
}

Witness Machine::witness(double now) const {
  if (!s_.witness) return Witness::Disabled;
  const NodeView& f = view_[1 - active_];
  if (f.witness == Witness::Receiving) {
    // The age grows while no newer answer came: judged now, not when it was asked.
    double age = f.heard_age + (f.witness_at >= 0 ? now - f.witness_at : 0);
    return age < window() ? Witness::Receiving : Witness::NotReceiving;
  }
  if (f.witness == Witness::Unknown && f.lsn_advanced_at >= 0) {
    // WAL still arrives: the primary is alive. A crashed primary's last WAL arrives
    // with the crash, at least (failure_threshold - 1) intervals before the decision.
    double w = (s_.failure_threshold - 1) * s_.check_interval;
    return now - f.lsn_advanced_at < w ? Witness::Receiving : Witness::Unknown;
  }
  return f.witness;
}

std::string Machine::mode_name() const {
  switch (mode_) {
    case Mode::Starting: return "starting";
    case Mode::Normal: return "normal";
    case Mode::Draining: return std::string(to_string(op_)) + " (draining)";
    case Mode::Promoting: return std::string(to_string(op_)) + " (promoting)";
    case Mode::NoWritable: return "no writable node";
    case Mode::TwoWritable: return "two writable nodes";
    case Mode::Following: return std::string(to_string(op_)) + " (following)";
  }
  return "?";
}

std::string Machine::refusal() const {
  if (mode_ == Mode::TwoWritable) return "two writable nodes; refusing writes to both";
  if (mode_ == Mode::NoWritable) return "no writable node";
  if (active_down()) {
    std::string why = std::string("the ") + side_name(active_) + " is down";
    if (!view_[active_].error.empty()) why += " (" + view_[active_].error + ")";
    if (!last_refusal_.empty()) why += "; not failing over: " + last_refusal_;
    return why;
  }
  return "";
}

void Machine::refuse(Effects& e, const std::string& why) {
  if (why == last_refusal_) return;  // logged once per change
  last_refusal_ = why;
  e.log.push_back({1, "not failing over: " + why});
}

// ---------------------------------------------------------------------------

Effects Machine::on_check(int side, const NodeView& v, double now, bool datapath_ok) {
  Effects e;
  Verdict before = view_[side].verdict;
  // A node that stopped answering keeps its last known WAL position: what the
  // standby's lag is measured against (as Patroni keeps the leader's last position).
  std::optional<std::uint64_t> last_position = view_[side].position;
  view_[side] = v;
  view_[side].at = now;
  if (!v.position && v.verdict != Verdict::Up && v.verdict != Verdict::ReadOnly) view_[side].position = last_position;
  const int other = 1 - side;

  switch (mode_) {
    case Mode::Starting:
      e.merge(decide_start(now));
      return e;

    case Mode::Normal: {
      if (side == active_) {
        if (v.verdict == Verdict::Up) {
          if (failures_ > 0 || before == Verdict::Down || before == Verdict::ReadOnly) e.wake_pools = true;
          failures_ = 0;
          last_refusal_.clear();
        } else if (v.verdict == Verdict::Down || v.verdict == Verdict::ReadOnly) {
          if (datapath_ok) {
            // The pools' own logins and queries to this node succeed: it is not down,
            // whatever this check says (a monitor-only problem).
            if (failures_ == 0 && before != v.verdict)
              e.log.push_back({1, std::string(side_name(side)) +
                                      " failed a health check but serves the pools; not counted"});
          } else {
            failures_++;
          }
        }
        // Misconfigured and Unknown say nothing about the node's health.
        if (failures_ >= s_.failure_threshold) e.merge(try_auto(now));
      } else if (v.verdict == Verdict::Up && view_[active_].verdict == Verdict::Up) {
        if (!warned_two_) {
          warned_two_ = true;
          e.log.push_back({1, std::string("two writable nodes: the ") + side_name(side) +
                                  " answers writable too; it gets no traffic (the active node is the " +
                                  side_name(active_) + ", epoch " + std::to_string(epoch_) + ")"});
        }
      } else if (v.verdict != Verdict::Up) {
        warned_two_ = false;
      }
      // The other node's answer may be what a refused automatic move waited for.
      if (side != active_ && failures_ >= s_.failure_threshold) e.merge(try_auto(now));
      return e;
    }

    case Mode::Draining:
      return e;

    case Mode::Promoting:
      if (side == target_ && v.verdict == Verdict::Up) e.merge(complete(now, "target answers writable"));
      return e;

    case Mode::Following:
      if (follow_on_writable_ && side == target_ && v.verdict == Verdict::Up)
        e.merge(end_follow(target_, epoch_ + 1, now, "the new leader answers writable"));
      return e;

    case Mode::NoWritable:
      if (v.verdict != Verdict::Up) return e;
      if (side == active_) {
        e.merge(to_normal(active_, now, std::string("the ") + side_name(side) + " answers writable again"));
      } else if (side == aborted_target_ && view_[active_].verdict != Verdict::Up) {
        // The aborted promotion took effect after all.
        target_ = side;
        e.merge(complete(now, "the target of the aborted move answers writable"));
      } else if (before != Verdict::Up) {
        e.log.push_back({1, std::string("the ") + side_name(side) +
                                " answers writable but the recorded active node is the " + side_name(active_) +
                                "; use FAILOVER or FAILBACK to choose it"});
      }
      return e;

    case Mode::TwoWritable:
      if (view_[side].verdict == Verdict::Up && view_[other].verdict == Verdict::Up) return e;
      if (view_[side].verdict == Verdict::Up || view_[other].verdict == Verdict::Up) {
        int w = view_[side].verdict == Verdict::Up ? side : other;
        if (w != active_) {
          active_ = w;
          epoch_++;
          e.persist = true;
        }
        e.merge(to_normal(w, now, std::string("only the ") + side_name(w) + " answers writable now"));
      }
      return e;
  }
  return e;
}

// At start: the recorded node if the state file names one; else the one writable node.
Effects Machine::decide_start(double now) {
  Effects e;
  bool answered = view_[0].at >= 0 && view_[1].at >= 0;
  bool late = now - start_at_ > s_.check_timeout + s_.check_interval;
  if (!answered && !late) return e;
  bool up0 = view_[0].verdict == Verdict::Up, up1 = view_[1].verdict == Verdict::Up;
  if (up0 && up1) {
    if (restored_) {
      warned_two_ = true;
      e.merge(to_normal(active_, now, std::string("both nodes answer writable; ") + restored_from_ + " names the " +
                                          side_name(active_) + " (epoch " + std::to_string(epoch_) +
                                          "): the other gets no traffic"));
      e.log.back().level = 1;
      return e;
    }
    mode_ = Mode::TwoWritable;
    e.log.push_back({2, "two writable nodes and no state file names the active one: refusing writes to both "
                        "until one is demoted or FAILOVER/FAILBACK chooses"});
    return e;
  }
  int other = 1 - active_;
  if (!restored_ && view_[other].verdict == Verdict::Up && view_[active_].verdict != Verdict::Up) {
    active_ = other;
    target_ = 1 - other;
    epoch_++;
    e.persist = true;
    e.merge(to_normal(other, now, std::string("the ") + side_name(other) + " alone answers writable"));
    return e;
  }
  std::string why = restored_ ? std::string(restored_from_) + " names it (epoch " + std::to_string(epoch_) + ")"
                              : std::string("it is the primary");
  if (view_[active_].verdict != Verdict::Up)
    why += std::string("; it is ") + to_string(view_[active_].verdict) + " for now";
  e.merge(to_normal(active_, now, why));
  return e;
}

Effects Machine::to_normal(int side, double now, const std::string& why) {
  (void)now;
  Effects e;
  bool was_moving = moving();
  active_ = side;
  target_ = 1 - side;
  mode_ = Mode::Normal;
  failures_ = view_[side].verdict == Verdict::Up ? 0 : failures_;
  aborted_target_ = -1;
  op_ = Op::None;
  promote_running_ = false;
  last_refusal_.clear();
  e.repoint = true;
  e.wake_pools = true;
  e.log.push_back({0, std::string("serving the ") + side_name(side) + ": " + why});
  (void)was_moving;
  return e;
}

// The active node failed failure_threshold checks: fail over if it is safe.
Effects Machine::try_auto(double now) {
  Effects e;
  const bool failback = active_ == 1;
  const int target = 1 - active_;
  if (!(failback ? s_.auto_failback : s_.auto_failover)) {
    refuse(e, failback ? "auto_failback is off" : "auto_failover is off");
    return e;
  }
  if (!permit_) {
    refuse(e, permit_why_);
    return e;
  }
  const NodeView& t = view_[target];
  if (t.verdict != Verdict::ReadOnly) {
    refuse(e, std::string("the ") + side_name(target) + " is " + to_string(t.verdict) +
                  (t.verdict == Verdict::Up ? " (already writable: two writable nodes?)" : "") +
                  (t.error.empty() ? "" : ": " + t.error));
    return e;
  }
  Witness w = witness(now);
  if (w == Witness::Receiving) {
    refuse(e, std::string("the ") + side_name(target) + " still receives from the " + side_name(active_) +
                  ": it is alive and only this pooler is cut off from it");
    return e;
  }
  if (failback) {
    // Only back to a node that was following the current primary (not a diverged one).
    double since = t.followed_at < 0 ? -1 : now - t.followed_at;
    double allowed = window() + s_.check_timeout + 2 * s_.check_interval + 5;
    if (since < 0 || since > allowed) {
      refuse(e, "the primary was not streaming from the standby (diverged, or never rebuilt as its standby)");
      return e;
    }
  }
  if (s_.lag) {
    auto lag = lag_bytes();
    if (lag && *lag > s_.max_lag) {
      refuse(e, std::string("standby lag ") + fmt_bytes(*lag) + " exceeds max_lag_on_failover (" +
                    fmt_bytes(s_.max_lag) + "); FAILOVER from the console forces it");
      return e;
    }
  }
  e.log.push_back({1, std::string("the ") + side_name(active_) + " failed " + std::to_string(failures_) +
                          " health checks (" + view_[active_].error + "); failing over"});
  e.merge(begin(failback ? Op::Failback : Op::Failover, true, target, now));
  return e;
}

Effects Machine::begin(Op op, bool forced, int target, double now) {
  Effects e;
  op_ = op;
  target_ = target;
  op_start_ = now;
  aborted_target_ = -1;
  promote_running_ = false;
  last_refusal_.clear();
  mode_ = forced ? Mode::Promoting : Mode::Draining;
  e.started = true;
  e.log.push_back({0, std::string(to_string(op)) + " started (" + side_name(active_) + " -> " + side_name(target) +
                          ", epoch " + std::to_string(epoch_) + ")"});
  if (forced) {
    e.close_servers = true;
    e.merge(start_promote(now));
  }
  return e;
}

Effects Machine::start_promote(double now) {
  Effects e;
  mode_ = Mode::Promoting;
  // Only an answer that comes after the promotion started counts.
  view_[target_].verdict = Verdict::Unknown;
  view_[target_].at = -1;
  if (s_.has_promote) {
    e.run_promote = true;
    promote_running_ = true;
    promote_start_ = now;
  }
  e.check_now = true;
  return e;
}

// A move ended on `side` at `epoch`, promoted here (`how` "complete") or elsewhere
// ("followed"): the pools move there, the state file and the record follow.
Effects Machine::arrive(int side, std::uint64_t epoch, double now, const char* verb, const std::string& why) {
  Effects e;
  active_ = side;
  target_ = 1 - side;
  epoch_ = epoch;
  mode_ = Mode::Normal;
  failures_ = 0;
  aborted_target_ = -1;
  last_refusal_.clear();
  warned_two_ = false;
  promote_running_ = false;
  e.persist = true;
  e.repoint = true;
  e.wake_pools = true;
  e.run_on_failover = true;
  e.completed = true;
  e.finished = "ok";
  e.ended_op = op_;
  char took[32];
  std::snprintf(took, sizeof took, "%.0f", (now - op_start_) * 1000);
  e.log.push_back({0, std::string(to_string(op_)) + " " + verb + " in " + took + " ms (" + why + "): the " +
                          side_name(active_) + " is active, epoch " + std::to_string(epoch_)});
  // op_ stays set until the next move, for the caller's record of this one.
  return e;
}

Effects Machine::complete(double now, const char* how) {
  int old = active_;
  Effects e = arrive(target_, epoch_ + 1, now, "complete", how);
  e.run_fence = true;
  e.fence_side = old;
  return e;
}

Effects Machine::on_tick(double now, bool busy) {
  Effects e;
  if (mode_ == Mode::Starting) {
    e.merge(decide_start(now));
    return e;
  }
  if (mode_ == Mode::Draining) {
    bool timed_out = now - op_start_ > s_.failover_timeout;
    if (busy && !timed_out) return e;
    if (busy) e.log.push_back({1, std::string(to_string(op_)) + " drain timed out; cutting remaining transactions"});
    e.close_servers = true;
    e.merge(start_promote(now));
    return e;
  }
  if (mode_ == Mode::Following) {
    if (now - op_start_ <= s_.failover_timeout) return e;
    char b[32];
    std::snprintf(b, sizeof b, "%g", s_.failover_timeout);
    e.merge(end_follow(active_, epoch_, now, std::string("the move did not end within failover_timeout (") + b + " s)"));
    return e;
  }
  if (mode_ != Mode::Promoting) return e;
  if (promote_running_ && now - promote_start_ > s_.promote_timeout) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", s_.promote_timeout);
    e.kill_promote = true;
    promote_running_ = false;
    e.merge(abort(std::string("promote_command timed out after ") + b + " s; killed", now));
    return e;
  }
  if (now - op_start_ > s_.failover_timeout) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", s_.failover_timeout);
    if (promote_running_) {
      e.kill_promote = true;
      promote_running_ = false;
    }
    e.merge(abort(std::string("the ") + side_name(target_) + " did not answer writable within failover_timeout (" +
                      b + " s)",
                  now));
  }
  return e;
}

Effects Machine::on_promote_exit(bool ok, const std::string& why, double now) {
  Effects e;
  if (!promote_running_ || mode_ != Mode::Promoting) return e;  // a killed or replaced hook
  promote_running_ = false;
  if (ok) {
    e.check_now = true;  // the target should answer writable now
    return e;
  }
  e.merge(abort("promote_command failed (" + why + ")", now));
  return e;
}

Effects Machine::abort(const std::string& why, double now, std::string* refused) {
  Effects e;
  if (!moving()) {
    if (refused) *refused = "no move in progress (mode " + mode_name() + ")";
    return e;
  }
  if (mode_ == Mode::Following) return end_follow(active_, epoch_, now, why);
  if (promote_running_) {
    e.kill_promote = true;
    promote_running_ = false;
  }
  if (fresh_up(target_)) {
    e.merge(complete(now, "the target answers writable"));
    return e;
  }
  std::string what = std::string(to_string(op_)) + " aborted: " + why;
  e.finished = "aborted: " + why;
  e.ended_op = op_;
  int target = target_;
  if (view_[active_].verdict == Verdict::Up) {
    e.log.push_back({1, what});
    e.merge(to_normal(active_, now, "the move was aborted and it answers writable"));
  } else {
    mode_ = Mode::NoWritable;
    aborted_target_ = target;
    op_ = Op::None;
    e.log.push_back({2, what + "; no writable node: waiting clients get an error after query_wait_timeout"});
  }
  return e;
}

Effects Machine::request(Op op, double now, std::string* refused) {
  Effects e;
  auto no = [&](std::string why) {
    if (refused) *refused = std::move(why);
    return Effects{};
  };
  if (mode_ == Mode::Starting) return no("the cluster is starting: its nodes have not answered yet");
  int target = op == Op::Failback ? 0 : op == Op::Failover ? 1 - active_ : 1 - active_;
  if (op == Op::Switchover) {
    if (mode_ != Mode::Normal) return no("a switchover needs a normal cluster (mode " + mode_name() + "); ABORT first");
    if (view_[target].verdict == Verdict::Down) return no(std::string("the ") + side_name(target) + " is down");
    return begin(op, false, target, now);
  }
  if (op == Op::Failback && active_ == 0 && mode_ == Mode::Normal) return no("it already runs on its primary");
  if (op == Op::Failover && mode_ == Mode::TwoWritable) target = 1;
  // Nothing to move to: a node whose checks fail to connect cannot be promoted
  // or served (as Patroni refuses a failover to a member that is not running).
  // (FAILBACK during a failover only ends the move: allowed whatever the primary says.)
  if (!(moving() && target == active_) && view_[target].verdict == Verdict::Down)
    return no(std::string("the ") + side_name(target) + " is down" +
              (view_[target].error.empty() ? std::string() : " (" + view_[target].error + ")") +
              "; nothing to move to");
  if (mode_ == Mode::TwoWritable || mode_ == Mode::NoWritable) {
    // The operator chooses the node; if it is writable already, no promotion.
    if (view_[target].verdict == Verdict::Up) {
      op_ = op;
      target_ = target;
      op_start_ = now;
      active_ = 1 - target;
      e.log.push_back({1, std::string(to_string(op)) + " to the " + side_name(target) + " chosen from the console"});
      e.merge(complete(now, "chosen from the console"));
      return e;
    }
    active_ = 1 - target;
  } else if (moving()) {
    if (target == active_) {
      // FAILBACK during a failover to the standby: back to where it was.
      return abort(std::string("replaced by ") + to_string(op) + " from the console", now, refused);
    }
    if (target == target_ && op == op_) return no(std::string("a ") + to_string(op_) + " to the " +
                                                  side_name(target) + " is already in progress");
    e.log.push_back({1, std::string(to_string(op_)) + " replaced by " + to_string(op) + " from the console"});
    if (promote_running_) {
      e.kill_promote = true;
      promote_running_ = false;
    }
    e.finished = std::string("aborted: replaced by ") + to_string(op);
    e.ended_op = op_;
    // A replacement starts from the node that was active before the move.
  }
  if (target == active_) return no(std::string("the ") + side_name(target) + " is already active");
  if (op == Op::Failover && s_.lag) {
    auto lag = lag_bytes();
    if (lag && *lag > 0)
      e.log.push_back({1, "forced failover: the standby lags " + fmt_bytes(*lag) +
                              "; writes acknowledged on the old node in that range may be lost"});
  }
  std::optional<std::string> replaced = e.finished;
  Op replaced_op = e.ended_op;
  e.merge(begin(op, op == Op::Failover, target, now));
  e.finished = replaced;
  e.ended_op = replaced_op;
  return e;
}

// ---------------------------------------------------------------------------
// Moves decided elsewhere

Effects Machine::follow(Op op, int target, double now, bool on_writable) {
  Effects e;
  if (mode_ == Mode::Draining || mode_ == Mode::Promoting) return e;  // its own move decides
  if (mode_ == Mode::Following && target_ == target && op_ == op) return e;
  op_ = op;
  target_ = target;
  op_start_ = now;
  aborted_target_ = -1;
  last_refusal_.clear();
  follow_on_writable_ = on_writable;
  mode_ = Mode::Following;
  e.started = true;
  // A failover leaves a node that is gone: its servers close now. A switchover
  // drains (Clusters::progress ends sessions at a transaction boundary).
  e.close_servers = op == Op::Failover;
  e.check_now = true;
  e.log.push_back({0, std::string(to_string(op)) + " decided elsewhere: following (" + side_name(active_) + " -> " +
                          side_name(target) + ", epoch " + std::to_string(epoch_) + ")"});
  return e;
}

Effects Machine::end_follow(int side, std::uint64_t epoch, double now, const std::string& why) {
  Effects e;
  Op op = op_;
  if (side != active_) return arrive(side, epoch, now, "followed", why);
  if (epoch != epoch_) e.persist = true;
  epoch_ = epoch;
  e.finished = "aborted: " + why;
  e.ended_op = op;
  e.log.push_back({1, std::string(to_string(op)) + " not followed: " + why});
  e.merge(to_normal(active_, now, "it stays active"));
  return e;
}

Effects Machine::adopt(int active, std::uint64_t epoch, double now, const std::string& why) {
  Effects e;
  if (mode_ == Mode::Draining || mode_ == Mode::Promoting) return e;
  if (mode_ == Mode::Starting) {
    // As a state file would: the recorded node, then decide once the nodes answered.
    restore(active, epoch, "the fleet's key");
    return decide_start(now);
  }
  if (mode_ == Mode::Following) return end_follow(active, epoch, now, why);
  if (active == active_ && epoch == epoch_ && mode_ == Mode::Normal) return e;
  bool moved = active != active_;
  if (epoch != epoch_ || moved) e.persist = true;
  epoch_ = epoch;
  if (moved) e.close_servers = true;
  if (moved || mode_ != Mode::Normal) e.merge(to_normal(active, now, why));
  return e;
}

}  // namespace pgpivot::failover
