// What the control plane (console, /metrics, /stats, log_stats) reads of the
// workers' pools, through the one statistics model of control/stats.hpp. Each
// function covers `p.world()`: every worker while the world is stopped (hub.hpp).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pooler/control/stats.hpp"

namespace pgpivot {

class Pooler;
class Registry;
struct Pool;

using PoolKey = std::pair<std::string, std::string>;  // (database, user) as clients name them

// The pools grouped by (database, user): one group per pool over the workers.
std::map<PoolKey, std::vector<Pool*>> pool_groups(Pooler& p);
// SHOW POOLS' columns of one group.
PoolCounts group_counts(const std::vector<Pool*>& parts);
// The statistics per database, every pool of every worker added up.
std::map<std::string, StatsSum> stats_by_database(Pooler& p);
// The end of a stats_period: every pool part gets its averages (log_stats writes
// one line per pool with the parts added up). Run by worker 0 for all.
void stats_tick(Pooler& p);

}  // namespace pgpivot
