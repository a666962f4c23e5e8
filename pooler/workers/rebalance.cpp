// Workers share each pool's slots: asking another worker for servers, giving some
// back, and this worker's mailbox (workers/hub.hpp).
#include "pooler/pooler.hpp"
#include "pooler/workers/share.hpp"

#include <algorithm>

namespace pgpivot {

// The rules are in share.hpp; here they are applied to this worker's pools.

int Pooler::fair_share(const Pool* p, bool round_up) const {
  return share::fair_share(registry_.slots(p), p->shared->wanted.load(std::memory_order_relaxed), shard_,
                           p->client_total(), round_up);
}

void Pooler::want_servers(Pool* p) {
  if (!hub_->threaded() || (p->cl_waiting.empty() && p->cl_login.empty())) return;
  p->wanted_recently = true;
  std::uint64_t bit = std::uint64_t(1) << shard_;
  Client* oldest = p->cl_waiting.front<Client>();
  if (oldest && now() - oldest->wait_start >= share::kStarvingMs &&
      !(p->shared->starving.fetch_or(bit, std::memory_order_relaxed) & bit)) {
    hub_->post_all_but(shard_, {Hub::MsgKind::Rebalance, 0, 0});
  }
  if (p->shared->wanted.fetch_or(bit, std::memory_order_relaxed) & bit) return;
  hub_->post_all_but(shard_, {Hub::MsgKind::Rebalance, 0, 0});
}

void Pooler::give_back_servers(Pool* p) {
  std::uint64_t wanted = p->shared->wanted.load(std::memory_order_relaxed);
  if (!(wanted & ~share::bit(shard_))) return;
  int keep = share::servers_to_keep(registry_.slots(p), wanted, p->shared->starving.load(std::memory_order_relaxed),
                                    shard_, p->client_total(), !p->cl_waiting.empty());
  p->each_server([&](Server* s) {
    if (p->server_total() > keep) disconnect_server(s, "slot given to another worker");
  }, {ServerState::Idle, ServerState::Used});
}

void Pooler::on_service_message() {
  std::uint64_t bit = std::uint64_t(1) << shard_;
  for (auto& [k, p] : registry_.pools()) {
    // Clients waiting for the pool's parameters get them from another worker's login.
    if (!p->have_welcome && !p->cl_login.empty() && adopt_welcome(p.get())) {
      welcome_login_clients(p.get());
      resume_idle_clients(p.get());
    }
  }
  for (auto& [k, p] : registry_.pools()) {
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
    for (auto& [k, p] : registry_.pools()) give_back_servers(p.get());
  }
  if (service) on_service_message();
}

}  // namespace pgpivot
