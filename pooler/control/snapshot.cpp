// What the control plane (console, /metrics, /stats, log_stats) reads of the workers'
// pools, through the one statistics model of control/stats.hpp.
#include <cinttypes>

#include "pooler/control/snapshot.hpp"

#include "pooler/pooler.hpp"

namespace pgpivot {

PoolCounts Pool::counts() const {
  PoolCounts c;
  c.cl_active = cl_active.size() + cl_idle.size();
  c.cl_waiting = cl_waiting.size() + cl_login.size();
  c.sv_active = sv_active.size();
  c.sv_idle = sv_idle.size();
  c.sv_used = sv_used.size();
  c.sv_tested = sv_tested.size();
  c.sv_login = sv_login.size();
  if (const Client* oldest = cl_waiting.front<Client>()) {
    // Read against the part's own worker clock.
    c.maxwait_ms = std::max(owner->now(), oldest->wait_start) - oldest->wait_start;
  }
  return c;
}

std::map<PoolKey, std::vector<Pool*>> pool_groups(Pooler& w) {
  std::map<PoolKey, std::vector<Pool*>> g;
  for (Pool* p : w.world_pools()) g[{p->db_name, p->user_name}].push_back(p);
  return g;
}

PoolCounts group_counts(const std::vector<Pool*>& parts) {
  PoolCounts c;
  for (const Pool* p : parts) c += p->counts();
  return c;
}

std::map<std::string, StatsSum> stats_by_database(Pooler& w) {
  std::map<std::string, StatsSum> out;
  for (Pool* p : w.world_pools()) out[p->db_name].add(p->stats, p->averages);
  return out;
}

namespace {

// One worker's pools get their averages over the period just ended.
void update_averages(Registry& reg, double period, std::map<PoolKey, StatsSum>& lines) {
  reg.each_pool([&](Pool* p) {
    p->averages = period_averages(p->stats, p->period_start, period);
    p->period_start = p->stats;
    if (!p->admin) lines[{p->db_name, p->user_name}].add(p->stats, p->averages);
  });
}

}  // namespace

void stats_tick(Pooler& control) {
  WorldLock wl(control.hub(), control.shard());
  const auto& set = control.settings();
  double period = set.stats_period > 0 ? set.stats_period : 60;
  std::map<PoolKey, StatsSum> lines;
  for (Pooler* w : control.world()) update_averages(w->registry(), period, lines);
  if (!set.log_stats) return;
  for (auto& [key, sum] : lines) {
    PoolStats avg = sum.averages();
    if (avg.xact_count == 0 && avg.query_count == 0 && avg.received == 0) continue;
    LOG_INFO("[%s/%s] stats: %" PRIu64 " xacts/s, %" PRIu64 " queries/s, in %" PRIu64 " B/s, out %" PRIu64
             " B/s, xact %" PRIu64 " us, query %" PRIu64 " us, wait %" PRIu64 " us",
             key.first.c_str(), key.second.c_str(), avg.xact_count, avg.query_count, avg.received, avg.sent,
             avg.xact_time, avg.query_time, avg.wait_time);
  }
}

}  // namespace pgpivot
