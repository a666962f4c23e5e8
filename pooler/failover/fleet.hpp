// The fleet's shared facts about one cluster, as etcd keeps them (issue 15), and the
// rules the instances apply to them; pure functions and plain structs, no sockets.
//
// Keys under PREFIX/CLUSTER/:
//   active        {"active":"primary","epoch":7,"move":{...}}   the one source of truth;
//                 written only by a transaction comparing its mod_revision (CAS)
//   leader        the instance name of the leader, bound to the leader's lease
//   views/NAME    {"epoch":7,"active":"primary","primary":"up","standby":"read-only",
//                  "down":false,"ack":"ID","drained":true} per instance, bound to its lease
//   request       {"op":"switchover","from":"b","id":"..."} a console request for the leader
//
// A move by the leader: CAS active to {same active, epoch, move} (the intent: every
// instance stops using the old node and acknowledges in its view), promote, then CAS
// {target, epoch + 1} (done) or {old, epoch} (aborted).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pooler/failover/machine.hpp"

namespace pgpivot::failover {

struct MoveIntent {
  Op op = Op::None;
  int target = 1;
  std::string by;  // the leader that runs it
  std::string id;  // unique per move: views acknowledge it
  double started_wall = 0;  // unix time, for a successor leader's timeout
  bool operator==(const MoveIntent&) const = default;
};

struct ActiveKey {
  bool exists = false;
  int active = 0;
  std::uint64_t epoch = 1;
  std::optional<MoveIntent> move;
  long long mod_revision = 0;  // etcd's, of the key as read (the CAS compares it)
};

struct InstanceView {
  std::string name;
  std::uint64_t epoch = 0;
  int active = 0;
  Verdict verdict[2] = {Verdict::Unknown, Verdict::Unknown};
  bool down = false;     // it counts the active node as failed (failure_threshold reached)
  std::string ack;       // the id of the move it follows (it left the old node)
  bool drained = false;  // ... and no transaction of it is in flight there
};

[[nodiscard]] std::string encode(const ActiveKey& k);
[[nodiscard]] bool decode(std::string_view json, ActiveKey& out);
[[nodiscard]] std::string encode(const InstanceView& v);
[[nodiscard]] bool decode(std::string_view json, InstanceView& out);
struct Request {
  Op op = Op::None;  // Op::None with abort = ABORT
  bool abort = false;
  std::string from, id;
};
[[nodiscard]] std::string encode(const Request& r);
[[nodiscard]] bool decode(std::string_view json, Request& out);
[[nodiscard]] std::optional<Op> parse_op(std::string_view s);

// Do enough live instances see the active node down for an automatic move? A
// majority of the live instances (those whose views exist: their leases are alive)
// must count it failed, each on the current epoch.
struct Quorum {
  int live = 0;
  int down = 0;
  bool ok = false;
  std::string why;  // when not ok
};
[[nodiscard]] Quorum quorum(const std::vector<InstanceView>& views, int active, std::uint64_t epoch);

// Every live instance but `self` has acknowledged the move `id` (and, with
// `drained`, reports no transaction in flight on the old node).
[[nodiscard]] bool all_acked(const std::vector<InstanceView>& views, const std::string& self, const std::string& id,
                             bool drained);

enum class Link { Off, Connecting, Ok, Lost };
[[nodiscard]] const char* to_string(Link l);

}  // namespace pgpivot::failover
