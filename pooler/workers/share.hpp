// How workers share a pool's server slots: the rules, with no pool, loop or socket
// (unit-tested in test/pooler/test_share.cpp). rebalance.cpp applies them.
//
// A worker whose clients wait while the others hold all the slots sets its bit in
// the pool's `wanted` mask; the others then keep at most a fair share and close
// the rest as they become idle. The share is the pool's slots divided among the
// workers that have clients of the pool: rounded up while the holder has clients
// waiting itself, down when it has none (so a pool smaller than the number of
// workers still moves to where it is needed), nothing when it has no clients. A
// worker whose oldest waiting client has waited kStarvingMs is "starving": the
// others then round down even while their own clients wait, so a small pool
// alternates between busy workers instead of staying with one of them, and a
// worker that is not short of servers itself (no client waiting now, none left
// waiting for lack of a slot in the last janitor period) gives it all its idle
// servers.
#pragma once

#include <atomic>
#include <cstdint>

namespace pgpivot::share {

constexpr std::uint64_t kStarvingMs = 100;

constexpr std::uint64_t bit(int shard) { return std::uint64_t(1) << shard; }

// Worker `shard`'s fair share of `slots` when the workers in `wanted` (and this
// one) have clients; 0 when this worker has no client of the pool.
int fair_share(int slots, std::uint64_t wanted, int shard, int clients, bool round_up);

// What a pool part that others wait for (`wanted`, `starving`: the pool's masks)
// keeps of its servers. `waiting_here`: this worker has clients waiting now.
int servers_to_keep(int slots, std::uint64_t wanted, std::uint64_t starving, int shard, int clients,
                    bool waiting_here);

// Takes one of `limit` slots of `n` with a compare-and-swap, so that no
// interleaving of workers exceeds the limit; false when all are taken
// (limit <= 0: no limit, the count still goes up).
bool reserve_slot(std::atomic<int>& n, int limit);

}  // namespace pgpivot::share
