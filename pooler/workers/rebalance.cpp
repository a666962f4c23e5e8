// Workers share each pool's slots: asking another worker for servers, giving some
// back, and this worker's mailbox (workers/hub.hpp).
#include "pooler/pooler.hpp"

#include <algorithm>

namespace pgpivot {

// ---------------------------------------------------------------------------
// Workers share each pool's slots. A worker whose clients wait while the others
// hold all of them sets its bit in `wanted`; the others then keep at most a fair
// share and close the rest as they become idle, and the closing nudges the
// waiting worker. The share is the pool's size divided among the workers that
// have clients of the pool: rounded up while the holder has clients waiting
// itself, down when it has none (so a pool smaller than the number of workers
// still moves to where it is needed), nothing when it has no clients. A worker
// whose oldest waiting client has waited kStarvingMs is "starving": the others then
// round down even while their own clients wait, so a small pool alternates
// between busy workers instead of staying with one of them, and a worker that is
// not short of servers itself (no client waiting now, none left waiting for lack
// of a slot in the last janitor period) gives it all its idle servers.
namespace {
constexpr Ms kStarvingMs = 100;
}

int Pooler::fair_share(const Pool* p, bool round_up) const {
  if (p->client_total() == 0) return 0;
  std::uint64_t w = p->shared->wanted.load(std::memory_order_relaxed) | std::uint64_t(1) << shard_;
  int sharers = std::max(1, __builtin_popcountll(w));
  // The slots: pool_size, or a smaller max_db_connections / max_user_connections.
  int slots = std::max(pool_size(p), 0);
  int maxdb = max_db_connections(p), maxuser = max_user_connections(p);
  if (maxdb > 0) slots = std::min(slots, maxdb);
  if (maxuser > 0) slots = std::min(slots, maxuser);
  return round_up ? (slots + sharers - 1) / sharers : slots / sharers;
}

void Pooler::want_servers(Pool* p) {
  if (!hub_->threaded() || (p->cl_waiting.empty() && p->cl_login.empty())) return;
  p->wanted_recently = true;
  std::uint64_t bit = std::uint64_t(1) << shard_;
  Client* oldest = p->cl_waiting.front<Client>();
  if (oldest && now() - oldest->wait_start >= kStarvingMs &&
      !(p->shared->starving.fetch_or(bit, std::memory_order_relaxed) & bit)) {
    hub_->post_all_but(shard_, {Hub::MsgKind::Rebalance, 0, 0});
  }
  if (p->shared->wanted.fetch_or(bit, std::memory_order_relaxed) & bit) return;
  hub_->post_all_but(shard_, {Hub::MsgKind::Rebalance, 0, 0});
}

void Pooler::give_back_servers(Pool* p) {
  std::uint64_t others = p->shared->wanted.load(std::memory_order_relaxed) & ~(std::uint64_t(1) << shard_);
  if (!others) return;
  bool starving_others = p->shared->starving.load(std::memory_order_relaxed) & others;
  int keep;
  if (!p->cl_waiting.empty()) {
    keep = fair_share(p, !starving_others);
  } else if (starving_others &&
             !(p->shared->wanted.load(std::memory_order_relaxed) & (std::uint64_t(1) << shard_))) {
    // Nobody here waits or lacked a server lately: the idle servers serve the
    // starving worker better (busy ones stay until released).
    keep = 0;
  } else {
    keep = fair_share(p, false);
  }
  p->each_server([&](Server* s) {
    if (p->server_total() > keep) disconnect_server(s, "slot given to another worker");
  }, {ServerState::Idle, ServerState::Used});
}

void Pooler::on_service_message() {
  std::uint64_t bit = std::uint64_t(1) << shard_;
  for (auto& [k, p] : pools_) {
    // Clients waiting for the pool's parameters get them from another worker's login.
    if (!p->have_welcome && !p->cl_login.empty() && adopt_welcome(p.get())) {
      welcome_login_clients(p.get());
      resume_idle_clients(p.get());
    }
  }
  for (auto& [k, p] : pools_) {
    if (!(p->shared->wanted.load(std::memory_order_relaxed) & bit)) continue;
    p->shared->wanted.fetch_and(~bit, std::memory_order_relaxed);
    pool_service(p.get());  // sets the bit again when the slots are still taken
  }
}

void Pooler::hub_message() {
  std::vector<Hub::Msg> msgs;
  hub_->drain(shard_, msgs);  // parks here first when another worker stopped the world
  bool service = false, rebalance = false;
  for (const auto& m : msgs) {
    switch (m.kind) {
      case Hub::MsgKind::Cancel:
        handle_cancel(m.a, m.b);
        break;
      case Hub::MsgKind::Accept:
        if (stopping_ || shutting_down_ || wait_for_clients_) {
          ::close(int(m.a));
        } else {
          on_accept(m.b != 0, int(m.a));
        }
        break;
      case Hub::MsgKind::Service:
        service = true;
        break;
      case Hub::MsgKind::Rebalance:
        rebalance = true;
        break;
    }
  }
  if (rebalance) {
    for (auto& [k, p] : pools_) give_back_servers(p.get());
  }
  if (service) on_service_message();
}

}  // namespace pgpivot
