// Shared state of the reactor threads; see hub.hpp.
#include "pooler/workers/hub.hpp"

#include <unistd.h>

#include "protocol/auth.hpp"

namespace pgpivot {

namespace {
// How deep the calling thread holds the stopped world (the owner may call into
// other workers' code, which may ask for the world again).
thread_local int t_world_depth = 0;
}  // namespace

Hub::Hub(int workers)
    : shards_(std::size_t(workers), nullptr),
      asyncs_(std::size_t(workers), nullptr),
      mbox_(std::size_t(workers)),
      live_(std::size_t(workers), true),
      parked_gen_(std::size_t(workers), 0) {
  fake_salt_key_.assign(32, '\0');
  proto::random_bytes(reinterpret_cast<std::uint8_t*>(fake_salt_key_.data()), fake_salt_key_.size());
}

Hub::~Hub() = default;

namespace {
SharedCount* find_or_make(std::map<std::string, std::unique_ptr<SharedCount>>& m, const std::string& key) {
  auto& p = m[key];
  if (!p) p = std::make_unique<SharedCount>();
  return p.get();
}
}  // namespace

SharedCount* Hub::db_count(const std::string& name) {
  std::lock_guard lk(map_mu_);
  return find_or_make(dbs_, name);
}

SharedCount* Hub::user_count(const std::string& name) {
  std::lock_guard lk(map_mu_);
  return find_or_make(users_, name);
}

SharedCount* Hub::pool_count(const std::string& db, const std::string& user) {
  std::lock_guard lk(map_mu_);
  return find_or_make(pools_, db + '\0' + user);
}

void Hub::set_client_key(const std::string& user, const proto::Key32& k) {
  std::lock_guard lk(map_mu_);
  client_keys_[user] = k;
}

bool Hub::client_key(const std::string& user, proto::Key32& out) {
  std::lock_guard lk(map_mu_);
  auto it = client_keys_.find(user);
  if (it == client_keys_.end()) return false;
  out = it->second;
  return true;
}

void Hub::forget_client_key(const std::string& user) {
  std::lock_guard lk(map_mu_);
  client_keys_.erase(user);
}

// ---------------------------------------------------------------------------
// Mailboxes

void Hub::attach(int shard, uv_async_t* async) {
  std::lock_guard lk(mbox_mu_);
  asyncs_[std::size_t(shard)] = async;
}

bool Hub::post(int shard, Msg m) {
  std::lock_guard lk(mbox_mu_);
  uv_async_t* a = asyncs_[std::size_t(shard)];
  if (!a) return false;  // the worker has stopped
  mbox_[std::size_t(shard)].push_back(m);
  uv_async_send(a);  // under the lock: exited() cannot let the handle close meanwhile
  return true;
}

void Hub::post_all_but(int shard, Msg m) {
  for (int i = 0; i < size(); i++) {
    if (i != shard) post(i, m);
  }
}

void Hub::drain(int shard, std::vector<Msg>& out) {
  park(shard);
  std::lock_guard lk(mbox_mu_);
  out.swap(mbox_[std::size_t(shard)]);
}

// ---------------------------------------------------------------------------
// Stop the world

bool Hub::world_stopped_here() { return t_world_depth > 0; }

void Hub::stop_world(int self) {
  if (t_world_depth > 0) {
    t_world_depth++;
    return;
  }
  std::unique_lock lk(world_mu_);
  // Another worker may hold the world: park for it (it waits for us) until it is done.
  while (owner_ != -1) {
    if (parked_gen_[std::size_t(self)] != gen_) {
      parked_gen_[std::size_t(self)] = gen_;
      world_cv_.notify_all();
    }
    world_cv_.wait(lk);
  }
  owner_ = self;
  t_world_depth = 1;
  gen_++;
  parked_gen_[std::size_t(self)] = gen_;
  std::vector<uv_async_t*> wake;
  {
    std::lock_guard mk(mbox_mu_);
    for (std::size_t i = 0; i < asyncs_.size(); i++) {
      if (int(i) != self && live_[i] && asyncs_[i]) wake.push_back(asyncs_[i]);
    }
  }
  for (uv_async_t* a : wake) uv_async_send(a);
  std::uint64_t g = gen_;
  world_cv_.wait(lk, [&] {
    for (std::size_t i = 0; i < live_.size(); i++) {
      if (int(i) != self && live_[i] && parked_gen_[i] != g) return false;
    }
    return true;
  });
}

void Hub::resume_world(int self) {
  (void)self;
  if (t_world_depth == 0 || --t_world_depth > 0) return;
  std::lock_guard lk(world_mu_);
  owner_ = -1;
  world_cv_.notify_all();
}

void Hub::park(int self) {
  if (t_world_depth > 0) return;
  std::unique_lock lk(world_mu_);
  if (owner_ == -1 || owner_ == self || parked_gen_[std::size_t(self)] == gen_) return;
  std::uint64_t g = gen_;
  parked_gen_[std::size_t(self)] = g;
  world_cv_.notify_all();
  world_cv_.wait(lk, [&] { return gen_ != g || owner_ == -1; });
}

bool Hub::live(int i) {
  std::lock_guard lk(world_mu_);
  return live_[std::size_t(i)];
}

void Hub::exited(int self) {
  {
    std::lock_guard mk(mbox_mu_);
    asyncs_[std::size_t(self)] = nullptr;
    for (const Msg& m : mbox_[std::size_t(self)]) {
      if (m.kind == MsgKind::Accept) ::close(int(m.a));  // a handed-over client nobody will serve
    }
    mbox_[std::size_t(self)].clear();
  }
  std::lock_guard lk(world_mu_);
  live_[std::size_t(self)] = false;
  world_cv_.notify_all();
}

}  // namespace pgpivot
