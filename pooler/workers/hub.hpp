// What the reactor threads (`workers`) share: connection counts that keep pool
// and connection limits exact across threads, the mailboxes through which one
// worker asks another to do something on its own loop, and the "stop the world"
// lock under which the control plane (admin console, signals, health checks and
// failover, reload, the HTTP stats) reads and changes every worker's state.
//
// Each worker is a Pooler with its own libuv loop, listeners (SO_REUSEPORT),
// pools, clients and servers; a connection never leaves the worker that
// accepted or opened it, so the data path takes no lock. Control-plane code runs
// on one worker while all others are parked inside a callback of their loop (a
// uv_async_t): it may then touch their objects and handles as their own
// callbacks could. With workers = 1 there is one Pooler and none of this costs
// more than an uncontended atomic add per connection.
#pragma once

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "protocol/auth.hpp"

namespace pgpivot {

class Pooler;

// Counts of one database, user or pool over all workers. Limits are enforced
// by reserving a slot (compare-and-swap) before a connection is opened.
struct SharedCount {
  std::atomic<int> servers{0};
  std::atomic<int> clients{0};
  // Pools: workers (bit per worker) whose clients wait while the limit is reached.
  std::atomic<std::uint64_t> wanted{0};
  // Pools: workers whose oldest waiting client has waited kStarvingMs or more.
  std::atomic<std::uint64_t> starving{0};
  // Pools: the ParameterStatus list of the first server login in any worker, so a
  // worker can welcome clients without opening a server of its own first.
  std::mutex mu;
  bool have_welcome = false;
  std::vector<std::pair<std::string, std::string>> welcome;
};

class Hub {
 public:
  explicit Hub(int workers);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  [[nodiscard]] int size() const { return int(shards_.size()); }
  [[nodiscard]] bool threaded() const { return shards_.size() > 1; }
  Pooler* shard(int i) const { return shards_[std::size_t(i)]; }
  const std::vector<Pooler*>& shards() const { return shards_; }
  void set_shard(int i, Pooler* p) { shards_[std::size_t(i)] = p; }

  // Counters, created on first use and kept for the life of the process.
  SharedCount* db_count(const std::string& name);
  SharedCount* user_count(const std::string& name);
  SharedCount* pool_count(const std::string& db, const std::string& user);
  std::atomic<int> clients{0};  // max_client_conn

  // The key that makes fake SCRAM salts of unknown users stable (same in every worker).
  const std::string& fake_salt_key() const { return fake_salt_key_; }
  // SCRAM pass-through: the ClientKey learnt from the last client login of a user,
  // wherever it happened, for server logins in any worker.
  void set_client_key(const std::string& user, const proto::Key32& k);
  bool client_key(const std::string& user, proto::Key32& out);
  void forget_client_key(const std::string& user);

  // Mailboxes. Each worker registers its uv_async_t; the callback calls drain().
  enum class MsgKind : std::uint8_t { Cancel, Service, Rebalance, Accept };
  struct Msg {
    MsgKind kind;
    std::uint32_t a = 0, b = 0;
  };
  void attach(int shard, uv_async_t* async);
  bool post(int shard, Msg m);  // false when that worker has stopped
  void post_all_but(int shard, Msg m);
  void drain(int shard, std::vector<Msg>& out);  // takes the shard's messages; parks when asked

  // Stop the world: returns once every other live worker is parked; the caller
  // then owns all workers' state until resume_world(). Reentrant per thread.
  void stop_world(int self);
  void resume_world(int self);
  static bool world_stopped_here();  // the calling thread holds the stopped world
  void park(int self);  // called by a worker's async callback when a stop is pending
  void exited(int self);  // the worker is shutting down: it no longer parks
  bool live(int i);

 private:
  std::vector<Pooler*> shards_;
  std::vector<uv_async_t*> asyncs_;
  std::mutex map_mu_;
  std::map<std::string, std::unique_ptr<SharedCount>> dbs_, users_, pools_;
  std::map<std::string, proto::Key32> client_keys_;
  std::string fake_salt_key_;

  std::mutex mbox_mu_;
  std::vector<std::vector<Msg>> mbox_;

  std::mutex world_mu_;
  std::condition_variable world_cv_;
  int owner_ = -1;     // worker that stopped the world, -1 when running
  std::uint64_t gen_ = 0;  // one per stop
  int parked_ = 0;
  std::vector<bool> live_;
  std::vector<std::uint64_t> parked_gen_;
};

// Runs control-plane code with the world stopped (a no-op with one worker).
class WorldLock {
 public:
  WorldLock(Hub* hub, int self) : hub_(hub), self_(self) {
    if (hub_ && hub_->threaded()) hub_->stop_world(self_);
  }
  ~WorldLock() {
    if (hub_ && hub_->threaded()) hub_->resume_world(self_);
  }
  WorldLock(const WorldLock&) = delete;
  WorldLock& operator=(const WorldLock&) = delete;

 private:
  Hub* hub_;
  int self_;
};

}  // namespace pgpivot
