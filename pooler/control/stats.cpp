#include "pooler/control/stats.hpp"

#include <algorithm>

namespace pgpivot {

const std::array<StatCounter, kStatCounters>& stat_counters() {
  using S = PoolStats;
  static const std::array<StatCounter, kStatCounters> c = {{
      {"server_assignment_count", &S::server_assignment_count, StatCounter::Count},
      {"xact_count", &S::xact_count, StatCounter::Count},
      {"query_count", &S::query_count, StatCounter::Count},
      {"received", &S::received, StatCounter::Bytes},
      {"sent", &S::sent, StatCounter::Bytes},
      {"xact_time", &S::xact_time, StatCounter::Time, &S::xact_count},
      {"query_time", &S::query_time, StatCounter::Time, &S::query_count},
      {"wait_time", &S::wait_time, StatCounter::Time, &S::server_assignment_count},
      {"client_parse_count", &S::client_parse_count, StatCounter::Count},
      {"server_parse_count", &S::server_parse_count, StatCounter::Count},
      {"bind_count", &S::bind_count, StatCounter::Count},
      {"client_login_count", &S::client_login_count, StatCounter::Count},
  }};
  return c;
}

PoolStats& PoolStats::operator+=(const PoolStats& o) {
  for (const StatCounter& c : stat_counters()) this->*c.member += o.*c.member;
  return *this;
}

PoolStats period_averages(const PoolStats& end, const PoolStats& start, double seconds) {
  PoolStats avg;
  if (seconds <= 0) seconds = 1;
  // Counters only grow; a reset in between (none exists today) reads as 0.
  auto delta = [&](std::uint64_t PoolStats::* m) { return end.*m >= start.*m ? end.*m - start.*m : 0; };
  for (const StatCounter& c : stat_counters()) {
    if (c.kind == StatCounter::Time) {
      std::uint64_t n = delta(c.per);
      avg.*c.member = n ? delta(c.member) / n : 0;
    } else {
      avg.*c.member = std::uint64_t(double(delta(c.member)) / seconds);
    }
  }
  return avg;
}

void StatsSum::add(const PoolStats& totals, const PoolStats& averages) {
  totals_ += totals;
  for (const StatCounter& c : stat_counters()) {
    averages_.*c.member += c.kind == StatCounter::Time ? averages.*c.member * (averages.*c.per) : averages.*c.member;
  }
}

void StatsSum::add(const StatsSum& o) {
  totals_ += o.totals_;
  averages_ += o.averages_;
}

PoolStats StatsSum::averages() const {
  PoolStats a = averages_;
  for (const StatCounter& c : stat_counters()) {
    if (c.kind == StatCounter::Time) a.*c.member = a.*c.per ? a.*c.member / (a.*c.per) : 0;
  }
  return a;
}

PoolCounts& PoolCounts::operator+=(const PoolCounts& o) {
  cl_active += o.cl_active;
  cl_waiting += o.cl_waiting;
  sv_active += o.sv_active;
  sv_idle += o.sv_idle;
  sv_used += o.sv_used;
  sv_tested += o.sv_tested;
  sv_login += o.sv_login;
  maxwait_ms = std::max(maxwait_ms, o.maxwait_ms);
  return *this;
}

}  // namespace pgpivot
