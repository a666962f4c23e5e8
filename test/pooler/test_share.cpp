// Unit tests of how workers share a pool's server slots (pooler/workers/share.hpp):
// the fair share, what a worker keeps when others wait, and the slot reservation
// that keeps pool_size, max_db_connections and max_user_connections exact over
// threads.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "pooler/workers/share.hpp"

using namespace pgpivot::share;

TEST_CASE("share: the fair share divides the slots among the workers with clients", "[share]") {
  // Worker 0 alone: all slots.
  CHECK(fair_share(4, 0, 0, 10, true) == 4);
  CHECK(fair_share(4, 0, 0, 10, false) == 4);
  // Workers 0 and 1 (worker 1 wants): two each, either way.
  CHECK(fair_share(4, bit(1), 0, 10, true) == 2);
  CHECK(fair_share(4, bit(1), 0, 10, false) == 2);
  // Three workers, five slots: rounded up while waiting here, down otherwise.
  CHECK(fair_share(5, bit(1) | bit(2), 0, 10, true) == 2);
  CHECK(fair_share(5, bit(1) | bit(2), 0, 10, false) == 1);
  // A pool smaller than the number of workers: rounding down gives it away.
  CHECK(fair_share(1, bit(1), 0, 3, false) == 0);
  CHECK(fair_share(1, bit(1), 0, 3, true) == 1);
  // No client of the pool here: nothing.
  CHECK(fair_share(4, bit(1), 0, 0, true) == 0);
  // This worker's own bit counts once.
  CHECK(fair_share(4, bit(0) | bit(1), 0, 10, true) == 2);
  // A negative size (unset) is no slots.
  CHECK(fair_share(-1, bit(1), 0, 10, true) == 0);
}

TEST_CASE("share: what a worker keeps when others wait", "[share]") {
  const int slots = 4;
  SECTION("clients wait here too: the share rounded up, unless another worker starves") {
    CHECK(servers_to_keep(5, bit(1), 0, 0, 10, true) == 3);
    CHECK(servers_to_keep(5, bit(1), bit(1), 0, 10, true) == 2);
  }
  SECTION("nobody waits here, another worker starves: every idle server goes") {
    CHECK(servers_to_keep(slots, bit(1), bit(1), 0, 10, false) == 0);
  }
  SECTION("nobody waits here now, but this worker lacked servers lately: the share rounded down") {
    CHECK(servers_to_keep(5, bit(0) | bit(1), bit(1), 0, 10, false) == 2);
  }
  SECTION("another worker waits but does not starve yet: the share rounded down") {
    CHECK(servers_to_keep(5, bit(1), 0, 0, 10, false) == 2);
  }
  SECTION("a starving worker that is this one does not count as another") {
    CHECK(servers_to_keep(slots, bit(0) | bit(1), bit(0), 0, 10, true) == 2);
  }
}

TEST_CASE("share: reserve_slot never exceeds its limit, whatever the interleaving", "[share]") {
  SECTION("one thread") {
    std::atomic<int> n{0};
    CHECK(reserve_slot(n, 2));
    CHECK(reserve_slot(n, 2));
    CHECK_FALSE(reserve_slot(n, 2));
    CHECK(n.load() == 2);
    n.fetch_sub(1);
    CHECK(reserve_slot(n, 2));
    CHECK_FALSE(reserve_slot(n, 2));
  }
  SECTION("no limit counts all the same") {
    std::atomic<int> n{0};
    for (int i = 0; i < 100; i++) CHECK(reserve_slot(n, 0));
    CHECK(n.load() == 100);
  }
  SECTION("threads taking and giving back: the count never passes the limit") {
    constexpr int kLimit = 3, kThreads = 8, kRounds = 20000;
    std::atomic<int> n{0}, highest{0}, taken{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; t++) {
      ts.emplace_back([&] {
        for (int i = 0; i < kRounds; i++) {
          if (!reserve_slot(n, kLimit)) continue;
          taken.fetch_add(1);
          int now = n.load();
          int h = highest.load();
          while (now > h && !highest.compare_exchange_weak(h, now)) {
          }
          n.fetch_sub(1);
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK(highest.load() <= kLimit);
    CHECK(highest.load() >= 1);
    CHECK(taken.load() > 0);
    CHECK(n.load() == 0);
  }
}
