// The janitor: timeouts, pool minimums, stats periods and shutdown progress, every
// 250 ms.
#include "pooler/control/snapshot.hpp"
#include "pooler/pooler.hpp"

#include <algorithm>

namespace pgpivot {

// ---------------------------------------------------------------------------
// Janitor: timeouts, pool minimums, shutdown progress. Runs every 250 ms.

void Pooler::janitor() {
  const auto& set = cfg_.pooler;
  Ms t = now();
  for (auto& l : listeners_) {
    if (l->out_of_fds && !l->closed) {
      l->out_of_fds = false;
      listener_resume(l.get());
    }
  }
  cl_login_.for_each<Client>([&](Client* c) {
    if (secs(set.client_login_timeout) && t - c->connect_time > secs(set.client_login_timeout)) {
      disconnect_client(c, Reason::LoginTimeout);
    }
  });
  for (auto& [key, pp] : registry_.pools()) {
    Pool* p = pp.get();
    ClusterRt* crt = p->db->crt;
    p->cl_login.for_each<Client>([&](Client* c) {
      if (secs(set.client_login_timeout) && t - c->connect_time > secs(set.client_login_timeout)) {
        disconnect_client(c, Reason::LoginTimeout);
      } else if (crt && crt->refusing() && secs(set.query_wait_timeout) &&
                 t - c->connect_time > secs(set.query_wait_timeout)) {
        // Its login waits for the pool's first server, which no node may give now:
        // the login cannot complete, and says why.
        crt->client_errors++;
        disconnect_client(c, Reason::ClusterRefusingLogin, {crt->name, crt->fsm.refusal()});
      }
    });
    bool moving = crt && crt->moving();  // failover_timeout applies instead
    p->cl_waiting.for_each<Client>([&](Client* c) {
      if (!moving && secs(set.query_wait_timeout) && t - c->wait_start > secs(set.query_wait_timeout)) {
        if (crt && crt->refusing()) {
          // No writable node, or two: say so, in a way the application can act on.
          crt->client_errors++;
          fail_waiting_client(c, Reason::ClusterRefusing, {crt->name, crt->fsm.refusal()});
        } else {
          disconnect_client(c, Reason::QueryWaitTimeout);
        }
      }
    });
    if (secs(set.client_idle_timeout)) {
      p->cl_idle.for_each<Client>([&](Client* c) {
        if (t - c->request_time > secs(set.client_idle_timeout)) {
          disconnect_client(c, Reason::ClientIdleTimeout);
        }
      });
    }
    p->cl_active.for_each<Client>([&](Client* c) {
      Server* s = c->server;
      if (!s) return;
      if (secs(set.idle_transaction_timeout) && s->expect_z == 0 && s->txn != 'I' &&
          t - c->request_time > secs(set.idle_transaction_timeout)) {
        disconnect_client(c, Reason::IdleTransactionTimeout);
      } else if (secs(set.query_timeout) && s->expect_z > 0 && t - s->request_time > secs(set.query_timeout) &&
                 t - c->request_time > secs(set.query_timeout)) {
        s->query_timed_out = true;
        disconnect_server(s, "query_timeout");
      } else if (secs(set.client_idle_timeout) && s->expect_z == 0 &&
                 t - c->request_time > secs(set.client_idle_timeout)) {
        disconnect_client(c, Reason::ClientIdleTimeout);
      }
    });
    p->sv_login.for_each<Server>([&](Server* s) {
      if (secs(set.server_connect_timeout) && t - s->connect_time > secs(set.server_connect_timeout)) {
        server_login_failed(s, Reason::ServerConnectTimeout, {s->addr});
      }
    });
    // The claim on other workers' slots lapses after a janitor period without a
    // client left waiting for lack of one (not at once: a claim that came and
    // went with every transaction would make the workers trade servers back and
    // forth, each trade a new server login).
    if (hub_->threaded()) {
      std::uint64_t bit = std::uint64_t(1) << shard_;
      if ((p->shared->wanted.load(std::memory_order_relaxed) & bit) && !p->wanted_recently && p->cl_waiting.empty() &&
          p->cl_login.empty()) {
        p->shared->wanted.fetch_and(~bit, std::memory_order_relaxed);
      }
      p->wanted_recently = false;
      if (p->cl_waiting.empty() && (p->shared->starving.load(std::memory_order_relaxed) & bit)) {
        p->shared->starving.fetch_and(~bit, std::memory_order_relaxed);
      }
      give_back_servers(p);  // a request may have come while every server here was busy
    }
    // min_pool_size counts the pool's servers in every worker.
    int min = registry_.min_pool_size(p);
    double lifetime = registry_.server_lifetime(*p->db);
    auto total = [&] { return p->shared->servers.load(std::memory_order_relaxed); };
    p->sv_idle.for_each<Server>([&](Server* s) {
      if (s->close_needed) {
        disconnect_server(s, "configuration changed");
      } else if (secs(lifetime) && t - s->connect_time > secs(lifetime) && total() > min) {
        disconnect_server(s, "server_lifetime");
      } else if (secs(set.server_idle_timeout) && t - s->last_used > secs(set.server_idle_timeout) && total() > min) {
        disconnect_server(s, "server_idle_timeout");
      }
    });
    if (p->have_welcome && !shutting_down_) {
      while (total() < min && try_launch(p, false)) {
      }
    }
    pool_service(p);
  }
  if (shard_ == 0) clusters_.health_tick();
  if (!last_stats_tick_) last_stats_tick_ = t;
  if (shard_ == 0 && t - last_stats_tick_ >= secs(set.stats_period > 0 ? set.stats_period : 60)) {
    last_stats_tick_ = t;
    stats_tick(*this);
  }
  if (console_.has_pending()) {
    WorldLock wl(hub_, shard_);
    console_.finish_pending();
  }
  if (wait_for_clients_ && client_count_ == 0) shutdown_now();
  if (shutting_down_ && !wait_for_clients_) check_shutdown_done();
}

}  // namespace pgpivot
