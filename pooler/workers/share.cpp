#include "pooler/workers/share.hpp"

#include <algorithm>

namespace pgpivot::share {

int fair_share(int slots, std::uint64_t wanted, int shard, int clients, bool round_up) {
  if (clients == 0) return 0;
  int sharers = std::max(1, __builtin_popcountll(wanted | bit(shard)));
  slots = std::max(slots, 0);
  return round_up ? (slots + sharers - 1) / sharers : slots / sharers;
}

int servers_to_keep(int slots, std::uint64_t wanted, std::uint64_t starving, int shard, int clients,
                    bool waiting_here) {
  std::uint64_t others = wanted & ~bit(shard);
  bool starving_others = (starving & others) != 0;
  if (waiting_here) return fair_share(slots, wanted, shard, clients, !starving_others);
  // Nobody here waits or lacked a server lately: the idle servers serve the
  // starving worker better (busy ones stay until released).
  if (starving_others && !(wanted & bit(shard))) return 0;
  return fair_share(slots, wanted, shard, clients, false);
}

bool reserve_slot(std::atomic<int>& n, int limit) {
  if (limit <= 0) {
    n.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  int cur = n.load(std::memory_order_relaxed);
  while (cur < limit) {
    if (n.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

}  // namespace pgpivot::share
