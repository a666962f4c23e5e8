// Unit tests of the failover state machine (pooler/failover/machine.hpp) and the
// verdict helpers (verdict.hpp): every mode's exits, with time and check answers
// fed by hand.
#include <catch2/catch.hpp>

#include "pooler/failover/machine.hpp"
#include "pooler/failover/verdict.hpp"

using namespace pgpivot::failover;

namespace {

Settings test_settings() {
  Settings s;
  s.failure_threshold = 3;
  s.check_interval = 1;
  s.check_timeout = 2;
  s.failover_timeout = 30;
  s.promote_timeout = 10;
  s.max_lag = 1000;
  s.has_promote = true;
  return s;
}

NodeView up(std::uint64_t position = 5000) {
  NodeView v;
  v.verdict = Verdict::Up;
  v.position = position;
  return v;
}

NodeView standby(std::uint64_t received = 5000, Witness w = Witness::NotReceiving, double heard_age = 0) {
  NodeView v;
  v.verdict = Verdict::ReadOnly;
  v.receive_lsn = received;
  v.witness = w;
  v.heard_age = heard_age;
  return v;
}

NodeView verdict(Verdict x, const std::string& err = "") {
  NodeView v;
  v.verdict = x;
  v.error = err;
  return v;
}

bool has_log(const Effects& e, const std::string& part) {
  for (const auto& l : e.log)
    if (l.text.find(part) != std::string::npos) return true;
  return false;
}

// A machine in Normal on the primary, both nodes checked once.
struct Fixture {
  Machine m{test_settings()};
  double t = 100;
  Fixture() {
    m.start(t);
    m.on_check(0, up(), t, false);
    Effects e = m.on_check(1, standby(), t, false);
    REQUIRE(m.mode() == Mode::Normal);
    REQUIRE(m.active() == 0);
    REQUIRE(e.repoint);
  }
  // The primary fails `n` checks, one a second; the standby answers `sb` each time.
  Effects fail_primary(int n, const NodeView& sb = standby(), Verdict how = Verdict::Down) {
    Effects all;
    for (int i = 0; i < n; i++) {
      t += 1;
      all.merge(m.on_check(1, sb, t, false));
      all.merge(m.on_check(0, verdict(how, "connection refused"), t, false));
    }
    return all;
  }
};

}  // namespace

TEST_CASE("verdicts: a refused login is misconfigured, a dead node is down", "[failover-unit]") {
  CHECK(sqlstate_of("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  28P01: password "
                    "authentication failed for user \"app\"") == "28P01");
  CHECK(login_failure_verdict("FATAL:  28P01: password authentication failed for user \"app\"") ==
        Verdict::Misconfigured);
  CHECK(login_failure_verdict("FATAL:  28000: no pg_hba.conf entry for host") == Verdict::Misconfigured);
  CHECK(login_failure_verdict("FATAL:  3D000: database \"x\" does not exist") == Verdict::Misconfigured);
  CHECK(login_failure_verdict("FATAL:  57P03: the database system is starting up") == Verdict::Down);
  CHECK(login_failure_verdict("FATAL:  57P03: the database system is in recovery mode") == Verdict::Down);
  CHECK(login_failure_verdict("FATAL:  57P01: terminating connection due to administrator command") == Verdict::Down);
  CHECK(login_failure_verdict("connection to server at \"127.0.0.1\", port 1 failed: Connection refused") ==
        Verdict::Down);
  CHECK(login_failure_verdict("ERROR:  08000: service unavailable for target tenant (10)") == Verdict::ReadOnly);
  CHECK(login_failure_verdict("FATAL:  08000: some other connection exception") == Verdict::Down);
  CHECK(query_failure_verdict("42883") == Verdict::Misconfigured);  // role_query calls a missing function
  CHECK(query_failure_verdict("42601") == Verdict::Misconfigured);
  CHECK(query_failure_verdict("57P01") == Verdict::Down);
  CHECK(query_failure_verdict("") == Verdict::Down);
  CHECK(sqlstate_of("FATAL:  password authentication failed") == "");
}

TEST_CASE("verdicts: LSNs and booleans", "[failover-unit]") {
  CHECK(parse_lsn("0/0") == std::uint64_t(0));
  CHECK(parse_lsn("16/B374D848") == std::uint64_t(0x16B374D848ULL));
  CHECK(parse_lsn("FFFFFFFF/FFFFFFFF") == std::uint64_t(0xFFFFFFFFFFFFFFFFULL));
  CHECK(!parse_lsn("12345"));
  CHECK(!parse_lsn("/1"));
  CHECK(!parse_lsn("1/"));
  CHECK(!parse_lsn("1/G"));
  CHECK(!parse_lsn("123456789/1"));
  CHECK(parse_bool("t") == true);
  CHECK(parse_bool("f") == false);
  CHECK(!parse_bool("maybe"));
}

TEST_CASE("machine: start picks the primary, the lone writable node, or refuses two", "[failover-unit]") {
  SECTION("primary writable, standby read-only") {
    Machine m(test_settings());
    m.start(0);
    CHECK(m.on_check(0, up(), 0.1, false).repoint == false);  // waits for the other answer
    CHECK(m.mode() == Mode::Starting);
    CHECK(!m.routes());
    m.on_check(1, standby(), 0.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 0);
  }
  SECTION("only the standby is writable (the old primary was rebuilt as a standby): no promotion") {
    Machine m(test_settings());
    m.start(0);
    m.on_check(0, standby(), 0.1, false);
    Effects e = m.on_check(1, up(), 0.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
    CHECK(!e.run_promote);
    CHECK(e.persist);
  }
  SECTION("both writable, no state file: two writable nodes, left when one is demoted") {
    Machine m(test_settings());
    m.start(0);
    m.on_check(0, up(), 0.1, false);
    m.on_check(1, up(), 0.1, false);
    CHECK(m.mode() == Mode::TwoWritable);
    CHECK(!m.routes());
    CHECK(m.refusing());
    CHECK(m.refusal().find("two writable nodes") != std::string::npos);
    m.on_check(0, up(), 1.1, false);
    CHECK(m.mode() == Mode::TwoWritable);
    m.on_check(0, standby(), 2.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
  }
  SECTION("both writable, the state file names the standby: traffic stays on it") {
    Machine m(test_settings());
    m.restore(1, 7);
    m.start(0);
    m.on_check(0, up(), 0.1, false);
    Effects e = m.on_check(1, up(), 0.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
    CHECK(m.epoch() == 7);
    CHECK(has_log(e, "both nodes answer writable"));
  }
  SECTION("the state file names the standby, which is down: no move to the writable old primary") {
    Machine m(test_settings());
    m.restore(1, 2);
    m.start(0);
    m.on_check(0, up(), 0.1, false);
    m.on_check(1, verdict(Verdict::Down), 0.1, false);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
    for (int i = 1; i <= 5; i++) {
      Effects e = m.on_check(1, verdict(Verdict::Down), 0.1 + i, false);
      CHECK(!e.run_promote);
      CHECK(!e.close_servers);
    }
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 1);
  }
  SECTION("no answers at all: decides after the check timeout") {
    Machine m(test_settings());
    m.start(0);
    CHECK(m.on_tick(1, false).repoint == false);
    Effects e = m.on_tick(3.5, false);
    CHECK(e.repoint);
    CHECK(m.mode() == Mode::Normal);
    CHECK(m.active() == 0);
  }
}

TEST_CASE("machine: misconfigured checks never fail over", "[failover-unit]") {
  Fixture f;
  Effects e = f.fail_primary(10, standby(), Verdict::Misconfigured);
  CHECK(!e.close_servers);
  CHECK(!e.run_promote);
  CHECK(f.m.failures() == 0);
  CHECK(f.m.mode() == Mode::Normal);
}

TEST_CASE("machine: a failing check while the data path works is not counted", "[failover-unit]") {
  Fixture f;
  for (int i = 0; i < 10; i++) {
    f.t += 1;
    f.m.on_check(0, verdict(Verdict::Down, "timeout"), f.t, /*datapath_ok=*/true);
  }
  CHECK(f.m.failures() == 0);
  CHECK(f.m.mode() == Mode::Normal);
}

TEST_CASE("machine: kill of the primary fails over and completes on the standby", "[failover-unit]") {
  Fixture f;
  Effects e = f.fail_primary(2);
  CHECK(!e.close_servers);
  e = f.fail_primary(1);
  CHECK(e.close_servers);
  CHECK(e.run_promote);
  CHECK(e.started);
  CHECK(f.m.mode() == Mode::Promoting);
  CHECK(f.m.promote_running());
  // A read-only answer while promoting does not complete it; a writable one does.
  f.t += 0.5;
  CHECK(!f.m.on_check(1, standby(), f.t, false).completed);
  e = f.m.on_check(1, up(), f.t, false);
  CHECK(e.completed);
  CHECK(e.persist);
  CHECK(e.repoint);
  CHECK(e.run_fence);
  CHECK(e.fence_side == 0);
  CHECK(e.finished == std::string("ok"));
  CHECK(f.m.mode() == Mode::Normal);
  CHECK(f.m.active() == 1);
  CHECK(f.m.epoch() == 2);
  // The old primary coming back writable gets no traffic.
  e = f.m.on_check(0, up(), f.t + 1, false);
  CHECK(f.m.active() == 1);
  CHECK(has_log(e, "two writable nodes"));
}

TEST_CASE("machine: no automatic failover toward a standby that is not read-only", "[failover-unit]") {
  for (Verdict v : {Verdict::Down, Verdict::Unknown, Verdict::Misconfigured, Verdict::Up}) {
    Fixture f;
    Effects e = f.fail_primary(5, verdict(v));
    CHECK(!e.close_servers);
    CHECK(f.m.mode() == Mode::Normal);
    CHECK(has_log(e, "not failing over: the standby is"));
    // Logged once, not at every check.
    int n = 0;
    for (auto& l : e.log) n += l.text.find("not failing over") != std::string::npos;
    CHECK(n == 1);
  }
}

TEST_CASE("machine: the witness stops a failover of a primary only this pooler cannot reach",
          "[failover-unit]") {
  Fixture f;
  Effects e = f.fail_primary(5, standby(5000, Witness::Receiving, 0.2));
  CHECK(!e.close_servers);
  CHECK(has_log(e, "still receives from the primary"));
  CHECK(f.m.witness(f.t) == Witness::Receiving);
  // The standby stops hearing from the primary: now it fails over.
  f.t += 1;
  e = f.m.on_check(1, standby(5000, Witness::NotReceiving), f.t, false);
  e.merge(f.m.on_check(0, verdict(Verdict::Down), f.t, false));
  CHECK(e.close_servers);
  CHECK(f.m.mode() == Mode::Promoting);
}

TEST_CASE("machine: a stale 'receiving' answer ages", "[failover-unit]") {
  Fixture f;
  NodeView sb = standby(5000, Witness::Receiving, 0.5);
  sb.witness_at = f.t;
  f.m.on_check(1, sb, f.t, false);
  CHECK(f.m.witness(f.t) == Witness::Receiving);
  CHECK(f.m.witness(f.t + 10) == Witness::NotReceiving);
}

TEST_CASE("machine: without witness_query's columns, advancing WAL is the witness", "[failover-unit]") {
  Fixture f;
  NodeView sb = standby(6000, Witness::Unknown);
  sb.lsn_advanced_at = f.t + 2.5;  // WAL arrived just before the third failed check
  Effects e = f.fail_primary(3, sb);
  CHECK(!e.close_servers);
  CHECK(has_log(e, "still receives"));
  // Nothing arrives any more: (failure_threshold - 1) intervals after the last WAL it fails over.
  e = f.fail_primary(1, sb);
  CHECK(!e.close_servers);
  e = f.fail_primary(1, sb);
  CHECK(e.close_servers);
}

TEST_CASE("machine: lag beyond max_lag_on_failover refuses; console FAILOVER forces it", "[failover-unit]") {
  Fixture f;
  f.m.on_check(0, up(10000), f.t, false);   // primary at 10000
  Effects e = f.fail_primary(5, standby(5000));  // standby received 5000: 5000 bytes behind
  CHECK(f.m.lag_bytes() == 5000LL);
  CHECK(!e.close_servers);
  CHECK(has_log(e, "standby lag 5000 bytes exceeds max_lag_on_failover"));
  std::string why;
  e = f.m.request(Op::Failover, f.t, &why);
  CHECK(why.empty());
  CHECK(e.close_servers);
  CHECK(has_log(e, "may be lost"));
  SECTION("within the bound it fails over by itself") {
    Fixture g;
    g.m.on_check(0, up(10000), g.t, false);
    Effects e2 = g.fail_primary(3, standby(9500));
    CHECK(e2.close_servers);
  }
}

TEST_CASE("machine: a failing promote_command aborts; the primary's return ends NoWritable", "[failover-unit]") {
  Fixture f;
  f.fail_primary(3);
  REQUIRE(f.m.mode() == Mode::Promoting);
  Effects e = f.m.on_promote_exit(false, "exit status 1", f.t + 1);
  CHECK(f.m.mode() == Mode::NoWritable);
  CHECK(f.m.refusing());
  REQUIRE(e.finished);
  CHECK(e.finished->find("aborted: promote_command failed") == 0);
  // The standby still read-only: nothing; the primary writable again: back to it.
  CHECK(!f.m.on_check(1, standby(), f.t + 2, false).repoint);
  e = f.m.on_check(0, up(), f.t + 3, false);
  CHECK(e.repoint);
  CHECK(e.wake_pools);
  CHECK(f.m.mode() == Mode::Normal);
  CHECK(f.m.active() == 0);
  CHECK(f.m.epoch() == 1);
}

TEST_CASE("machine: a late promotion found in NoWritable completes the move", "[failover-unit]") {
  Fixture f;
  f.fail_primary(3);
  f.m.on_promote_exit(false, "exit status 1", f.t + 1);
  REQUIRE(f.m.mode() == Mode::NoWritable);
  Effects e = f.m.on_check(1, up(), f.t + 2, false);
  CHECK(e.completed);
  CHECK(f.m.active() == 1);
  CHECK(f.m.epoch() == 2);
}

TEST_CASE("machine: a hanging promote_command is killed at promote_timeout", "[failover-unit]") {
  Fixture f;
  f.fail_primary(3);
  double t0 = f.t;
  CHECK(!f.m.on_tick(t0 + 5, false).kill_promote);
  Effects e = f.m.on_tick(t0 + 10.5, false);
  CHECK(e.kill_promote);
  CHECK(has_log(e, "promote_command timed out after 10 s"));
  CHECK(f.m.mode() == Mode::NoWritable);
  // The killed hook's exit is not a second abort.
  CHECK(!f.m.on_promote_exit(false, "signal 9", t0 + 11).finished);
}

TEST_CASE("machine: no writable target by failover_timeout: back to the primary if it answers", "[failover-unit]") {
  Settings s = test_settings();
  s.has_promote = false;
  Machine m(s);
  m.start(0);
  m.on_check(0, up(), 0, false);
  m.on_check(1, standby(), 0, false);
  std::string why;
  m.request(Op::Failover, 1, &why);
  REQUIRE(m.mode() == Mode::Promoting);
  m.on_check(0, up(), 5, false);  // the primary answers writable all along
  Effects e = m.on_tick(32, false);
  REQUIRE(e.finished);
  CHECK(e.finished->find("aborted") == 0);
  CHECK(m.mode() == Mode::Normal);
  CHECK(m.active() == 0);
  CHECK(e.repoint);
}

TEST_CASE("machine: console ABORT, FAILBACK and FAILOVER are accepted while a move is in progress",
          "[failover-unit]") {
  Fixture f;
  f.fail_primary(3);
  REQUIRE(f.m.moving());
  std::string why;
  // FAILBACK during a failover to the standby: back to the primary (it is down: no writable node).
  Effects e = f.m.request(Op::Failback, f.t, &why);
  CHECK(why.empty());
  CHECK(e.kill_promote);
  CHECK(e.finished);
  CHECK(f.m.mode() == Mode::NoWritable);
  // FAILOVER is accepted from there, and ABORT of what then runs.
  e = f.m.request(Op::Failover, f.t + 0.5, &why);
  CHECK(why.empty());
  CHECK(e.run_promote);
  CHECK(f.m.moving());
  e = f.m.abort("ABORT from the console", f.t + 1, &why);
  CHECK(why.empty());
  CHECK(e.finished);
  CHECK(!f.m.moving());
  // Nothing in progress: ABORT is refused, with a reason.
  why.clear();
  f.m.abort("again", f.t + 2, &why);
  CHECK(!why.empty());
}

TEST_CASE("machine: auto_failback only to a node that streamed from the current primary", "[failover-unit]") {
  Settings s = test_settings();
  s.auto_failback = true;
  s.lag = false;
  auto run = [&](bool followed) {
    Machine m(s);
    m.restore(1, 3);
    m.start(0);
    double t = 10;
    NodeView old = standby();
    old.witness = Witness::NotReceiving;
    if (followed) old.followed_at = t;
    m.on_check(0, old, t, false);
    m.on_check(1, up(), t, false);
    REQUIRE(m.active() == 1);
    Effects all;
    for (int i = 0; i < 4; i++) {
      t += 1;
      all.merge(m.on_check(0, old, t, false));
      all.merge(m.on_check(1, verdict(Verdict::Down), t, false));
    }
    return std::make_pair(m.mode(), all);
  };
  auto [mode_diverged, e1] = run(false);
  CHECK(mode_diverged == Mode::Normal);
  CHECK(!e1.close_servers);
  CHECK(has_log(e1, "not streaming"));
  auto [mode_follower, e2] = run(true);
  CHECK(mode_follower == Mode::Promoting);
  CHECK(e2.close_servers);
}

TEST_CASE("machine: switchover drains, then promotes; refused during a move", "[failover-unit]") {
  Fixture f;
  std::string why;
  Effects e = f.m.request(Op::Switchover, f.t, &why);
  CHECK(why.empty());
  CHECK(!e.close_servers);
  CHECK(f.m.mode() == Mode::Draining);
  CHECK(!f.m.on_tick(f.t + 1, /*busy=*/true).close_servers);
  e = f.m.on_tick(f.t + 2, /*busy=*/false);
  CHECK(e.close_servers);
  CHECK(e.run_promote);
  CHECK(f.m.mode() == Mode::Promoting);
  f.m.request(Op::Switchover, f.t + 2, &why);
  CHECK(!why.empty());
}

TEST_CASE("machine: FAILOVER to a standby that is down is refused at once; a down primary with no move "
          "refuses waiting clients",
          "[failover-unit]") {
  Fixture f;
  f.m.on_check(1, verdict(Verdict::Down, "connection refused"), f.t + 0.5, false);
  std::string why;
  Effects e = f.m.request(Op::Failover, f.t + 0.6, &why);
  CHECK(why.find("standby is down") != std::string::npos);
  CHECK_FALSE(e.run_promote);
  CHECK(f.m.mode() == Mode::Normal);
  CHECK_FALSE(f.m.refusing());
  // The primary dies as well: no automatic move (the standby is down), and the
  // clients that wait are told so instead of waiting on.
  for (int i = 1; i <= 3; i++) {
    f.m.on_check(1, verdict(Verdict::Down, "connection refused"), f.t + i, false);
    e = f.m.on_check(0, verdict(Verdict::Down, "connection refused"), f.t + i, false);
    CHECK_FALSE(e.run_promote);
    CHECK(f.m.refusing() == (i == 3));
  }
  CHECK(f.m.mode() == Mode::Normal);
  CHECK(f.m.refusal().find("primary is down") != std::string::npos);
  CHECK(f.m.refusal().find("standby is down") != std::string::npos);
  // It comes back: served again, nothing refused.
  e = f.m.on_check(0, up(), f.t + 4, false);
  CHECK_FALSE(f.m.refusing());
  CHECK(e.wake_pools);
}
