// Unit tests of the statistics model (pooler/control/stats.hpp): period averages, and
// how figures add up over pools and workers. Issue 18: /stats added the workers'
// average times instead of weighting them, doubling them with workers = 2.
#include <catch2/catch.hpp>

#include "pooler/control/stats.hpp"

using namespace pgpivot;

namespace {

// A pool part's totals after `xacts` one-query transactions of `us` microseconds each.
PoolStats traffic(std::uint64_t xacts, std::uint64_t us) {
  PoolStats s;
  s.server_assignment_count = xacts;
  s.xact_count = xacts;
  s.query_count = xacts;
  s.xact_time = xacts * us;
  s.query_time = xacts * us;
  s.wait_time = xacts * 10;
  s.received = xacts * 100;
  s.sent = xacts * 200;
  s.client_login_count = 3;
  return s;
}

}  // namespace

TEST_CASE("stats: the counter table covers every counter once", "[stats]") {
  PoolStats marked;
  std::uint64_t v = 1;
  for (const StatCounter& c : stat_counters()) marked.*c.member = v++;
  // Every member got a distinct value: no counter is listed twice or left out.
  PoolStats sum;
  sum += marked;
  CHECK(sum == marked);
  std::uint64_t total = 0;
  for (const StatCounter& c : stat_counters()) total += sum.*c.member;
  CHECK(total == 12 * 13 / 2);
  CHECK(std::string(stat_counters()[5].name) == "xact_time");
  CHECK(stat_counters()[5].per == &PoolStats::xact_count);
  CHECK(stat_counters()[7].per == &PoolStats::server_assignment_count);
}

TEST_CASE("stats: period averages are rates, and times per event", "[stats]") {
  PoolStats start = traffic(1000, 300);
  PoolStats end = start;
  end += traffic(600, 500);  // 600 transactions of 500 us in the period
  PoolStats avg = period_averages(end, start, 60);
  CHECK(avg.xact_count == 10);        // 600 / 60 s
  CHECK(avg.received == 1000);        // 60,000 B / 60 s
  CHECK(avg.xact_time == 500);        // per transaction, not per second
  CHECK(avg.query_time == 500);
  CHECK(avg.wait_time == 10);
  CHECK(avg.client_login_count == 0);  // 3 / 60 s rounds down
  SECTION("no events: no average time") {
    PoolStats idle = period_averages(end, end, 60);
    CHECK(idle.xact_time == 0);
    CHECK(idle.xact_count == 0);
  }
}

TEST_CASE("stats: two workers' parts of one pool average, they do not add", "[stats]") {
  PoolStats a = traffic(600, 100), b = traffic(600, 300);
  PoolStats avg_a = period_averages(a, {}, 60), avg_b = period_averages(b, {}, 60);
  StatsSum sum;
  sum.add(a, avg_a);
  sum.add(b, avg_b);
  PoolStats avg = sum.averages();
  CHECK(avg.xact_time == 200);  // equal traffic: the mean, not 400
  CHECK(avg.xact_count == 20);  // rates add
  CHECK(sum.totals().xact_count == 1200);
  CHECK(sum.totals().client_login_count == 6);
  SECTION("unequal traffic weighs by events") {
    PoolStats c = traffic(1800, 100);
    StatsSum w;
    w.add(c, period_averages(c, {}, 60));
    w.add(b, avg_b);
    CHECK(w.averages().xact_time == 150);  // (30 x 100 + 10 x 300) / 40
  }
  SECTION("sums of sums weigh the same way (SHOW TOTALS over databases)") {
    StatsSum other;
    PoolStats c = traffic(600, 500);
    other.add(c, period_averages(c, {}, 60));
    StatsSum all;
    all.add(sum);
    all.add(other);
    CHECK(all.averages().xact_time == 300);  // (10 x 100 + 10 x 300 + 10 x 500) / 30
    CHECK(all.totals().xact_count == 1800);
  }
}

TEST_CASE("stats: SHOW POOLS columns add up, maxwait is the oldest", "[stats]") {
  PoolCounts a, b;
  a.cl_active = 2;
  a.sv_idle = 1;
  a.maxwait_ms = 1500;
  b.cl_active = 3;
  b.sv_active = 2;
  b.sv_login = 1;
  b.maxwait_ms = 700;
  a += b;
  CHECK(a.cl_active == 5);
  CHECK(a.servers() == 4);
  CHECK(a.maxwait_ms == 1500);
}
