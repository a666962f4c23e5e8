// The janitor: timeouts, pool minimums, stats periods and shutdown progress, every
// 250 ms.
#include "pooler/cancel.hpp"
#include "pooler/control/snapshot.hpp"
#include "pooler/pooler.hpp"
#include "protocol/messages.hpp"

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
  std::uint64_t now_us = uv_hrtime() / 1000;  // the clock of Server::query_start_us / xact_start_us
  for (auto& [key, pp] : registry_.pools()) {
    Pool* p = pp.get();
    ClusterRt* crt = p->db->crt;
    // The pool's effective timeouts: its user's, its database's, [pooler]'s (registry.hpp).
    const Ms query_wait = secs(registry_.query_wait_timeout(p));
    const Ms query = secs(registry_.query_timeout(p));
    const Ms idle_txn = secs(registry_.idle_transaction_timeout(p));
    const Ms txn = secs(registry_.transaction_timeout(p));
    const Ms client_idle = secs(registry_.client_idle_timeout(p));
    // Still waiting for a server: with why none came, when a login failed.
    const std::string why = p->last_login_failure ? "; last server login failure: " + p->last_login_error : "";
    auto query_timed_out = [&](Client* c) { disconnect_client(c, Reason::QueryTimeoutWaiting, {why}); };
    p->cl_login.for_each<Client>([&](Client* c) {
      if (secs(set.client_login_timeout) && t - c->connect_time > secs(set.client_login_timeout)) {
        disconnect_client(c, Reason::LoginTimeout);
      } else if (query && t - c->connect_time > query) {
        // Waiting for the pool's first server through failed logins (server_login_failed):
        // query_timeout bounds the wait, as PgBouncer's does for a waiting client.
        query_timed_out(c);
      } else if (crt && crt->refusing() && query_wait && t - c->connect_time > query_wait) {
        // Its login waits for the pool's first server, which no node may give now:
        // the login cannot complete, and says why.
        crt->client_errors++;
        disconnect_client(c, Reason::ClusterRefusingLogin, {crt->name, crt->fsm.refusal()});
      } else if (query_wait && t - c->connect_time > query_wait && !c->repl) {
        // Waiting for the pool's first server while the node cannot be reached
        // (server_login_failed keeps it waiting, as PgBouncer does): bounded as any wait.
        disconnect_client(c, Reason::QueryWaitTimeout, {why});
      }
    });
    // A login waiting for the pool's first server, and no server logging in: the last
    // try failed; try again once server_login_retry has passed (may_launch).
    // (Replication clients there wait for servers of their own: serve_replication.)
    if (waits_for_welcome(p) && p->sv_login.empty() && !shutting_down_) try_launch(p, false);
    if (!p->cl_login.empty()) serve_replication(p);
    bool moving = crt && crt->moving();  // failover_timeout applies instead
    const Ms notify = secs(set.query_wait_notify);
    p->cl_waiting.for_each<Client>([&](Client* c) {
      if (c->auth_lookup && secs(set.client_login_timeout) &&
          t - c->connect_time > secs(set.client_login_timeout)) {
        // A login waiting for its auth_query is still a login.
        disconnect_client(c, Reason::LoginTimeout);
        return;
      }
      if (notify && !c->wait_notified && !c->auth_lookup && t - c->wait_start > notify) {
        // PgBouncer 1.25's notice, word for word: clients and tests look for it.
        c->wait_notified = true;
        std::string buf;
        proto::notice(buf, "No server connection available in postgres backend, client being queued");
        c->queue(buf);
        c->flush();
      }
      if (moving) return;
      if (query && t - c->wait_start > query) {
        query_timed_out(c);
      } else if (query_wait && t - c->wait_start > query_wait) {
        if (crt && crt->refusing()) {
          // No writable node, or two: say so, in a way the application can act on.
          crt->client_errors++;
          fail_waiting_client(c, Reason::ClusterRefusing, {crt->name, crt->fsm.refusal()});
        } else {
          disconnect_client(c, Reason::QueryWaitTimeout);
        }
      }
    });
    if (client_idle) {
      p->cl_idle.for_each<Client>([&](Client* c) {
        if (t - c->request_time > client_idle) {
          disconnect_client(c, Reason::ClientIdleTimeout);
        }
      });
    }
    p->cl_active.for_each<Client>([&](Client* c) {
      Server* s = c->server;
      if (!s || s->repl) return;  // a replication stream runs as long as its client wants
      // query_timeout counts from the start of the running query, transaction_timeout
      // from the start of the transaction (or of the autocommit statement),
      // idle_transaction_timeout and client_idle_timeout from the last message either
      // way (a long statement's answer starts the idle time, not its Query).
      Ms idle_since = std::max(c->request_time, s->request_time);
      if (query && s->expect_z > 0 && s->query_start_us && now_us - s->query_start_us > query * 1000) {
        s->query_timed_out = true;
        // Closing the socket alone would leave the backend running (and holding its
        // locks) until it next writes: cancel the statement first.
        if (s->connected && s->ready && s->pid) send_cancel(loop_, *s);
        disconnect_server(s, "query timeout");
      } else if (idle_txn && s->expect_z == 0 && s->txn != 'I' && t - idle_since > idle_txn) {
        disconnect_client(c, Reason::IdleTransactionTimeout);
      } else if (txn && s->xact_start_us && now_us - s->xact_start_us > txn * 1000) {
        disconnect_client(c, Reason::TransactionTimeout);
      } else if (client_idle && s->expect_z == 0 && t - idle_since > client_idle) {
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
    if (set.server_fast_close) {
      // server_fast_close (PgBouncer's): a server RECONNECT or a RELOAD marked goes
      // as soon as its session is between transactions, with its client, instead of
      // when the client leaves (session pooling; in the other modes it goes at release).
      p->each_server([&](Server* s) {
        if (!s->close_needed || s->expect_z != 0 || s->txn != 'I' || s->fwd_left != 0) return;
        Client* c = s->client;
        disconnect_server(s, "database configuration changed");
        if (c) disconnect_client(c, Reason::DatabaseConfigChanged);
      }, {ServerState::Active});
    }
    // min_pool_size counts the pool's servers in every worker.
    int min = registry_.min_pool_size(p);
    double lifetime = registry_.server_lifetime(*p->db);
    auto total = [&] { return p->shared->servers.load(std::memory_order_relaxed); };
    p->sv_idle.for_each<Server>([&](Server* s) {
      if (s->close_needed) {
        disconnect_server(s, "database configuration changed");  // PgBouncer's text
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
  if (secs(set.pool_idle_timeout)) free_unused_pools(t);
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
  if (stopping_) return;
  if (shutting_down_) {
    check_shutdown_done();
  } else if (wait_for_clients_ && client_count_ == 0) {
    LOG_INFO("client connections dropped, exiting");
    shutdown_now();
  }
}

// pool_idle_timeout: a pool without clients or servers (closing ones included) for
// that long is freed, with its statistics, as PgBouncer does. The console's pool, and
// pools that keep a min_pool_size, stay.
void Pooler::free_unused_pools(Ms t) {
  auto& pools = registry_.pools();
  for (auto it = pools.begin(); it != pools.end();) {
    Pool* p = it->second.get();
    if (p->admin || p->conns > 0 || registry_.min_pool_size(p) > 0) {
      ++it;
      continue;
    }
    if (!p->unused_since) p->unused_since = t;
    if (t - p->unused_since <= secs(cfg_.pooler.pool_idle_timeout)) {
      ++it;
      continue;
    }
    LOG_INFO("cleaning up idle pool for user %s on db %s because: pool idle timeout (age=%llus)", p->user_name.c_str(),
             p->db_name.c_str(), (unsigned long long)((t - p->unused_since) / 1000));
    std::uint64_t bit = std::uint64_t(1) << shard_;
    p->shared->wanted.fetch_and(~bit, std::memory_order_relaxed);
    p->shared->starving.fetch_and(~bit, std::memory_order_relaxed);
    it = pools.erase(it);
  }
}

}  // namespace pgpivot
