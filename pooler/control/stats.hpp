// The one statistics model: what SHOW STATS, SHOW STATS_TOTALS/STATS_AVERAGES,
// SHOW TOTALS, SHOW POOLS, log_stats, /metrics and /stats report, and how each figure
// is added up over pools and over the workers' parts of one pool. No libuv, no
// sockets: unit-tested on its own (test/pooler/test_stats.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace pgpivot {

// The counters of one pool part (a pool on one worker), as PgBouncer keeps them.
// Times in microseconds; bytes as clients see them.
struct PoolStats {
  std::uint64_t server_assignment_count = 0, xact_count = 0, query_count = 0, received = 0, sent = 0,
                xact_time = 0, query_time = 0, wait_time = 0, client_parse_count = 0,
                server_parse_count = 0, bind_count = 0, client_login_count = 0;
  PoolStats& operator+=(const PoolStats& o);
  friend bool operator==(const PoolStats&, const PoolStats&) = default;
};

// One counter: its name (as in SHOW STATS_TOTALS without "total_"), where it lives,
// and for a time, the count it is averaged over.
struct StatCounter {
  enum Kind : std::uint8_t { Count, Bytes, Time };
  const char* name;
  std::uint64_t PoolStats::* member;
  Kind kind;
  std::uint64_t PoolStats::* per = nullptr;  // Time: the events it is divided by
};
inline constexpr std::size_t kStatCounters = 12;
// In PgBouncer's column order: server_assignment_count, xact_count, query_count,
// received, sent, xact_time, query_time, wait_time, client_parse_count,
// server_parse_count, bind_count, client_login_count.
[[nodiscard]] const std::array<StatCounter, kStatCounters>& stat_counters();

// The averages of one stats_period from the totals at its start and end: counts and
// bytes per second; times per event (per transaction, query, server assignment).
[[nodiscard]] PoolStats period_averages(const PoolStats& end, const PoolStats& start, double seconds);

// Pool parts (or pools) added up: totals and rates add; average times are weighted by
// their events, so two parts at 100 us and 300 us with equal traffic give 200 us,
// not 400 us.
class StatsSum {
 public:
  void add(const PoolStats& totals, const PoolStats& averages);
  void add(const StatsSum& o);
  [[nodiscard]] const PoolStats& totals() const { return totals_; }
  [[nodiscard]] PoolStats averages() const;

 private:
  PoolStats totals_;
  PoolStats averages_;  // rates summed; times summed as time x events
};

// The columns of SHOW POOLS for one pool, added up over its parts.
struct PoolCounts {
  std::uint64_t cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0, sv_used = 0, sv_tested = 0,
                sv_login = 0;
  std::uint64_t maxwait_ms = 0;  // the oldest waiting client, over all parts
  PoolCounts& operator+=(const PoolCounts& o);
  [[nodiscard]] std::uint64_t servers() const { return sv_active + sv_idle + sv_used + sv_tested + sv_login; }
};

}  // namespace pgpivot
