// Unit tests of the fleet's keys and rules (pooler/failover/fleet.hpp) and of the
// failover machine's exits for moves decided elsewhere (follow, adopt, set_permit).
#include <catch2/catch.hpp>

#include "pooler/failover/fleet.hpp"
#include "pooler/failover/machine.hpp"

using namespace pgpivot::failover;

namespace {

Settings settings() {
  Settings s;
  s.failure_threshold = 3;
  s.check_interval = 1;
  s.check_timeout = 2;
  s.failover_timeout = 30;
  s.has_promote = true;
  s.witness = false;
  s.lag = false;
  return s;
}

NodeView node(Verdict v) {
  NodeView n;
  n.verdict = v;
  return n;
}

InstanceView view(const std::string& name, bool down, int active = 0, std::uint64_t epoch = 1) {
  InstanceView v;
  v.name = name;
  v.down = down;
  v.active = active;
  v.epoch = epoch;
  v.verdict[0] = down ? Verdict::Down : Verdict::Up;
  v.verdict[1] = Verdict::ReadOnly;
  return v;
}

struct Normal {
  Machine m{settings()};
  double t = 10;
  Normal() {
    m.start(t);
    m.on_check(0, node(Verdict::Up), t, false);
    m.on_check(1, node(Verdict::ReadOnly), t, false);
    REQUIRE(m.mode() == Mode::Normal);
  }
  Effects fail_primary(int n) {
    Effects all;
    for (int i = 0; i < n; i++) {
      t += 1;
      all.merge(m.on_check(1, node(Verdict::ReadOnly), t, false));
      all.merge(m.on_check(0, node(Verdict::Down), t, false));
    }
    return all;
  }
};

bool has_text(const Effects& e, const std::string& part) {
  for (const auto& l : e.log)
    if (l.text.find(part) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("fleet keys: the active key round-trips, with and without a move", "[fleet-unit]") {
  ActiveKey k;
  k.exists = true;
  k.active = 1;
  k.epoch = 7;
  ActiveKey back;
  REQUIRE(decode(encode(k), back));
  CHECK(back.exists);
  CHECK(back.active == 1);
  CHECK(back.epoch == 7);
  CHECK_FALSE(back.move);

  k.move = MoveIntent{Op::Switchover, 0, "b", "b-7-1", 1700000000.5};
  REQUIRE(decode(encode(k), back));
  REQUIRE(back.move);
  CHECK(back.move->op == Op::Switchover);
  CHECK(back.move->target == 0);
  CHECK(back.move->by == "b");
  CHECK(back.move->id == "b-7-1");
  CHECK(back.move->started_wall == Approx(1700000000.5));
}

TEST_CASE("fleet keys: what is not a cluster state is refused, not guessed", "[fleet-unit]") {
  ActiveKey k;
  CHECK_FALSE(decode("", k));
  CHECK_FALSE(decode("not json", k));
  CHECK_FALSE(decode("[1,2]", k));
  CHECK_FALSE(decode(R"({"active":"primary"})", k));                 // no epoch
  CHECK_FALSE(decode(R"({"active":"third","epoch":2})", k));         // no such node
  CHECK_FALSE(decode(R"({"active":"primary","epoch":0})", k));       // epochs start at 1
  CHECK_FALSE(decode(R"({"active":"primary","epoch":"x"})", k));     // wrong type
  CHECK_FALSE(decode(R"({"active":"primary","epoch":2,"move":{"op":"dance","target":"standby","by":"a","id":"1"}})", k));
  CHECK_FALSE(k.exists);  // untouched by the refusals
  InstanceView v;
  CHECK_FALSE(decode(R"({"name":"a","epoch":1,"active":"primary","primary":"sleepy","standby":"up","down":false})", v));
  REQUIRE(decode(encode(view("a", true)), v));
  CHECK(v.name == "a");
  CHECK(v.down);
  CHECK(v.verdict[0] == Verdict::Down);
  Request r;
  CHECK_FALSE(decode(R"({"op":"explode","from":"a","id":"1"})", r));
  REQUIRE(decode(encode(Request{Op::None, true, "c", "c-1"}), r));
  CHECK(r.abort);
  REQUIRE(decode(encode(Request{Op::Failback, false, "c", "c-2"}), r));
  CHECK(r.op == Op::Failback);
  CHECK(r.from == "c");
}

TEST_CASE("fleet quorum: a majority of the live instances must see the active node down", "[fleet-unit]") {
  CHECK_FALSE(quorum({}, 0, 1).ok);
  CHECK(quorum({view("a", true)}, 0, 1).ok);  // alone: its own view is the majority
  // One instance cut off from the primary: 1 of 3.
  Quorum q = quorum({view("a", true), view("b", false), view("c", false)}, 0, 1);
  CHECK_FALSE(q.ok);
  CHECK(q.live == 3);
  CHECK(q.down == 1);
  CHECK(q.why.find("1 of 3") != std::string::npos);
  CHECK(quorum({view("a", true), view("b", true), view("c", false)}, 0, 1).ok);
  // Two of four is not a majority.
  CHECK_FALSE(quorum({view("a", true), view("b", true), view("c", false), view("d", false)}, 0, 1).ok);
  // Views about another node or an older epoch do not count.
  CHECK_FALSE(quorum({view("a", true, 1), view("b", true, 0, 0), view("c", false)}, 0, 1).ok);
}

TEST_CASE("fleet acks: the leader waits for every other live instance", "[fleet-unit]") {
  auto a = view("a", false), b = view("b", false), c = view("c", false);
  CHECK_FALSE(all_acked({a, b, c}, "a", "m1", false));
  b.ack = "m1";
  CHECK_FALSE(all_acked({a, b, c}, "a", "m1", false));
  c.ack = "m0";  // an older move
  CHECK_FALSE(all_acked({a, b, c}, "a", "m1", false));
  c.ack = "m1";
  CHECK(all_acked({a, b, c}, "a", "m1", false));
  CHECK_FALSE(all_acked({a, b, c}, "a", "m1", true));  // not drained yet
  b.drained = c.drained = true;
  CHECK(all_acked({a, b, c}, "a", "m1", true));
  CHECK(all_acked({a}, "a", "m1", true));  // alone
}

TEST_CASE("machine: without permission the active node's failure moves nothing", "[fleet-unit]") {
  Normal n;
  n.m.set_permit(false, "the fleet's leader (b) decides");
  Effects e = n.fail_primary(5);
  CHECK(n.m.mode() == Mode::Normal);
  CHECK_FALSE(e.run_promote);
  CHECK(n.m.active_down());
  CHECK(n.m.refusing());  // waiting clients get the refusal after query_wait_timeout
  bool logged = false;
  for (auto& l : e.log) logged = logged || l.text.find("the fleet's leader (b) decides") != std::string::npos;
  CHECK(logged);
  // Permission comes (the majority sees it down): the next check moves.
  n.m.set_permit(true, "");
  n.t += 1;
  e = n.m.on_check(0, node(Verdict::Down), n.t, false);
  CHECK(n.m.mode() == Mode::Promoting);
  CHECK(e.run_promote);
}

TEST_CASE("machine: following a move decided elsewhere, to its end or to its timeout", "[fleet-unit]") {
  SECTION("failover: the old node's servers close, clients wait, adopt completes without a promotion") {
    Normal n;
    Effects e = n.m.follow(Op::Failover, 1, n.t, false);
    CHECK(n.m.mode() == Mode::Following);
    CHECK(e.close_servers);
    CHECK(e.started);
    CHECK_FALSE(e.run_promote);
    CHECK(n.m.moving());
    CHECK_FALSE(n.m.routes());
    // A writable answer is not enough when the key decides.
    n.t += 0.5;
    e = n.m.on_check(1, node(Verdict::Up), n.t, false);
    CHECK(n.m.mode() == Mode::Following);
    e = n.m.adopt(1, 2, n.t, "the fleet's key names it");
    CHECK(n.m.mode() == Mode::Normal);
    CHECK(n.m.active() == 1);
    CHECK(n.m.epoch() == 2);
    CHECK(e.repoint);
    CHECK(e.persist);
    CHECK(e.completed);
    CHECK(e.finished == std::optional<std::string>("ok"));
    CHECK_FALSE(e.run_promote);
    CHECK_FALSE(e.run_fence);  // the leader fences, once
  }
  SECTION("switchover: drains (no servers closed at once); the leader's abort keeps the old node") {
    Normal n;
    Effects e = n.m.follow(Op::Switchover, 1, n.t, false);
    CHECK_FALSE(e.close_servers);
    e = n.m.adopt(0, 1, n.t + 1, "the leader aborted");
    CHECK(n.m.mode() == Mode::Normal);
    CHECK(n.m.active() == 0);
    CHECK(n.m.epoch() == 1);
    REQUIRE(e.finished);
    CHECK(e.finished->rfind("aborted", 0) == 0);
  }
  SECTION("Patroni: the target answering writable after the follow began ends it") {
    Normal n;
    n.m.follow(Op::Failover, 1, n.t, true);
    n.t += 0.5;
    Effects e = n.m.on_check(1, node(Verdict::Up), n.t, false);
    CHECK(n.m.mode() == Mode::Normal);
    CHECK(n.m.active() == 1);
    CHECK(n.m.epoch() == 2);
    CHECK(e.repoint);
  }
  SECTION("nobody ends it: failover_timeout gives up and keeps the old node") {
    Normal n;
    n.m.follow(Op::Failover, 1, n.t, false);
    CHECK(n.m.on_tick(n.t + 29, false).log.empty());
    CHECK(n.m.mode() == Mode::Following);
    Effects e = n.m.on_tick(n.t + 31, false);
    CHECK(n.m.mode() == Mode::Normal);
    CHECK(n.m.active() == 0);
    REQUIRE(e.finished);
    CHECK(e.finished->find("failover_timeout") != std::string::npos);
  }
  SECTION("ABORT from the console ends the follow") {
    Normal n;
    n.m.follow(Op::Switchover, 1, n.t, false);
    std::string refused;
    Effects e = n.m.abort("ABORT from the console", n.t + 1, &refused);
    CHECK(refused.empty());
    CHECK(n.m.mode() == Mode::Normal);
    CHECK(e.finished);
  }
}

TEST_CASE("machine: adopt moves an idle instance, and waits while its own move runs", "[fleet-unit]") {
  SECTION("another node and epoch: close, repoint, persist") {
    Normal n;
    Effects e = n.m.adopt(1, 5, n.t, "the fleet's key names it");
    CHECK(n.m.active() == 1);
    CHECK(n.m.epoch() == 5);
    CHECK(e.close_servers);
    CHECK(e.repoint);
    CHECK(e.persist);
  }
  SECTION("the same node and epoch: nothing") {
    Normal n;
    Effects e = n.m.adopt(0, 1, n.t, "same");
    CHECK_FALSE(e.repoint);
    CHECK_FALSE(e.persist);
    CHECK(e.log.empty());
  }
  SECTION("during its own promotion the key does not interfere") {
    Normal n;
    n.fail_primary(3);
    REQUIRE(n.m.mode() == Mode::Promoting);
    Effects e = n.m.adopt(0, 1, n.t, "stale");
    CHECK(n.m.mode() == Mode::Promoting);
    CHECK(e.log.empty());
  }
  SECTION("at start the key counts as the state file: two writable nodes serve the key's") {
    Machine m{settings()};
    m.start(0);
    m.adopt(1, 3, 0, "the fleet's key");
    CHECK(m.mode() == Mode::Starting);
    m.on_check(0, node(Verdict::Up), 0.1, false);
    Effects e = m.on_check(1, node(Verdict::Up), 0.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
    CHECK(m.epoch() == 3);
    CHECK(has_text(e, "the fleet's key"));
  }
  SECTION("two writable nodes: the key chooses") {
    Machine m{settings()};
    m.start(0);
    m.on_check(0, node(Verdict::Up), 0.1, false);
    m.on_check(1, node(Verdict::Up), 0.1, false);
    REQUIRE(m.mode() == Mode::TwoWritable);
    m.adopt(1, 2, 1, "the fleet's key names it");
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
    CHECK_FALSE(m.refusing());
  }
}
