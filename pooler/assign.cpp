// Who hands a server to a waiting client: pool_service (idle servers to waiting
// clients, new servers within the limits), link, and server_release when a
// transaction or session ends.
#include "pooler/pooler.hpp"
#include "pooler/workers/share.hpp"

#include <algorithm>
#include <string>
#include <string_view>

namespace pgpivot {

namespace {

std::string quote_literal(std::string_view v) {
  std::string out = "'";
  for (char ch : v) {
    if (ch == '\'') out += '\'';
    out += ch;
  }
  out += '\'';
  return out;
}

}  // namespace

// A client sent something and has no server: it waits in its pool.
void Pooler::client_request(Client* c) {
  if (shutting_down_) {
    // SHUTDOWN WAIT_FOR_SERVERS: no server for a new transaction (PgBouncer's text).
    disconnect_client(c, Reason::ServerShuttingDown);
    return;
  }
  c->wait_start = now();
  c->wait_notified = false;
  client_change_state(c, ClientState::Waiting);
  pool_service(c->pool);
}

void Pooler::link(Client* c, Server* s, bool apply_params) {
  c->server = s;
  s->client = c;
  client_change_state(c, ClientState::Active);
  server_change_state(s, ServerState::Active);
  Pool* p = c->pool;
  p->stats.server_assignment_count++;
  if (c->wait_start) p->stats.wait_time += (now() - c->wait_start) * 1000;
  c->wait_start = 0;
  s->expect_z = 0;
  s->tracking = tracks_prepared(p) && !s->repl;
  s->slots.clear();
  s->skip_to_sync = false;
  s->unsynced = false;
  s->just_checked = false;
  s->commit_in_flight = false;
  s->begin_in_flight = false;
  s->begin_sent = false;
  s->answered = false;
  s->query_start = now();
  if (s->txn == 'I') s->query_start_us = s->xact_start_us = 0;  // not left over from an earlier client
  std::string sets;
  for (int i = 0; i < tracked_count() && apply_params; i++) {
    const auto& want = c->params.get(i);
    const auto& have = s->params.get(i);
    if (!want) {
      // An extra parameter (track_extra_parameters) an earlier client set on this
      // server: PostgreSQL may not report it, so no client default is known; back to
      // the server's own.
      if (i >= kTrackedCount && have) {
        sets += "RESET ";
        sets += tracked_name(i);
        sets += ";";
        s->params.set(i, std::nullopt);
      }
      continue;
    }
    if (have && *have == *want) continue;
    if (i < kTrackedCount) {
      sets += "SET ";
      sets += tracked_name(i);
      sets += "=";
      sets += quote_literal(*want);
      sets += ";";
      continue;
    }
    // An extra one takes the client's text as the startup packet gave it:
    // set_config() parses it as PostgreSQL parses a startup parameter, so a list
    // (search_path = a,b) stays a list, where SET name = 'a,b' would make it one name.
    sets += "SELECT pg_catalog.set_config(";
    sets += quote_literal(tracked_name(i));
    sets += ", ";
    sets += quote_literal(*want);
    sets += ", false);";
    // Unreported parameters (search_path before PostgreSQL 18, say) never come back
    // in a ParameterStatus: what was set is what the server has.
    s->params.set(i, want);
  }
  if (!sets.empty()) {
    // PgBouncer's debug line, word for word (its tests match on it).
    LOG_DEBUG("C-%llu: %s/%s@%s varcache_apply: %s", (unsigned long long)c->id, c->db_name.c_str(),
              c->user_name.c_str(), c->remote.str().c_str(), sets.c_str());
    run_internal_query(s, sets);
  }
  if (c->has_replay()) {
    // The BEGIN a lost server never answered (client_server_lost), after the SETs.
    s->queue(c->notes_->replay);
    c->mark_query_start();
    s->expect_z++;
    if (s->tracking) s->push_slot(Slot::Query);
    s->begin_in_flight = true;
    s->begin_sent = true;
    s->answered = false;
  }
}

bool Pooler::life_over(const Server* s) {
  return now() - s->connect_time >= secs(registry_.server_lifetime(*s->pool->db));
}

void Pooler::server_release(Server* s) {
  Client* c = s->client;
  Pool* p = s->pool;
  s->client = nullptr;
  if (c) {
    c->server = nullptr;
    client_change_state(c, ClientState::Idle);
  }
  if (!s->closing) {
    if (shutting_down_) {
      disconnect_server(s, "shutting down");  // SHUTDOWN WAIT_FOR_SERVERS keeps no idle server
    } else if (pool_paused(p) && !suspended_) {
      disconnect_server(s, "PAUSE");
    } else if (s->close_needed || life_over(s)) {
      disconnect_server(s, s->close_needed ? "configuration changed" : "server_lifetime");
    } else if (s->needs_reset || (cfg_.pooler.server_reset_query_always && !cfg_.pooler.server_reset_query.empty())) {
      server_change_state(s, ServerState::Tested);
      run_internal_query(s, s->needs_reset ? std::string("RESET ALL") : cfg_.pooler.server_reset_query);
      s->needs_reset = false;
    } else {
      s->last_used = now();
      server_change_state(s, ServerState::Idle);
    }
  }
  // Other workers wait for this pool's slots: keep no more than a fair share.
  if (hub_->threaded() && s->state == ServerState::Idle) give_back_servers(p);
  // A switchover waiting for transactions to end can go on as soon as the last one does.
  if (p->db->crt && p->db->crt->fsm.mode() == failover::Mode::Draining) {
    WorldLock wl(hub_, shard_);
    control()->clusters().progress(p->db->crt);
  }
  pool_service(p);
  if (c && !c->closing && c->rbuf && c->rend > c->rparse) c->process();
}

// ---------------------------------------------------------------------------
// Assignment

bool Pooler::may_launch(Pool* p) const {
  if (shutting_down_ || pool_paused(p)) return false;
  // At least 50 ms between failed tries even with server_login_retry = 0: a waiting
  // login would otherwise reconnect in a tight loop to a node that keeps refusing.
  Ms retry = std::max<Ms>(secs(cfg_.pooler.server_login_retry), 50);
  return !(p->last_login_failure && uv_now(loop_) - p->last_login_failure < retry);
}

// max_db_connections is reached and clients of `p` wait for a server: as PgBouncer,
// close the server that has been idle longest in another pool of the database, so
// that one user's idle servers do not starve another user's clients. This worker's
// pools only; false if none is idle.
bool Pooler::evict_for(Pool* p) {
  if (p->cl_waiting.empty() && p->cl_login.empty()) return false;
  Server* victim = nullptr;
  registry_.each_pool([&](Pool* q) {
    // Not from a pool whose own clients wait: its idle server is about to be theirs.
    if (q == p || q->db != p->db || !q->cl_waiting.empty() || !q->cl_login.empty()) return;
    q->sv_idle.for_each<Server>([&](Server* s) {
      if (!victim || s->last_used < victim->last_used) victim = s;
    });
  });
  if (!victim) return false;
  disconnect_server(victim, "evicted");
  return true;
}

// The limits count servers of every worker: a slot is taken with a compare-and-swap
// before the server is opened and given back in disconnect_server, so no
// interleaving of workers can exceed pool_size (+ reserve_pool_size),
// max_db_connections or max_user_connections.
bool Pooler::try_launch(Pool* p, bool use_reserve, Client* repl) {
  if (!may_launch(p)) return false;
  if (hub_->threaded() && (p->shared->wanted.load(std::memory_order_relaxed) & ~(std::uint64_t(1) << shard_)) &&
      p->server_total() >= std::max(fair_share(p, true), 1)) {
    // Others wait for this pool's slots: a slot freed here is theirs.
    want_servers(p);
    return false;
  }
  int limit = registry_.pool_size(p) + (use_reserve ? registry_.reserve_size(p) : 0);
  int maxdb = registry_.max_db_connections(p), maxuser = registry_.max_user_connections(p);
  if (!share::reserve_slot(p->shared->servers, std::max(limit, 0))) {
    want_servers(p);
    return false;
  }
  if (!share::reserve_slot(p->db->counts->servers, maxdb > 0 ? maxdb : -1) &&
      !(evict_for(p) && share::reserve_slot(p->db->counts->servers, maxdb > 0 ? maxdb : -1))) {
    p->shared->servers.fetch_sub(1, std::memory_order_relaxed);
    want_servers(p);
    return false;
  }
  if (p->user && !share::reserve_slot(p->user->counts->servers, maxuser > 0 ? maxuser : -1)) {
    p->shared->servers.fetch_sub(1, std::memory_order_relaxed);
    p->db->counts->servers.fetch_sub(1, std::memory_order_relaxed);
    want_servers(p);
    return false;
  }
  launch_server(p, repl);
  return true;
}

bool Pooler::waits_for_welcome(Pool* p) {
  bool any = false;
  p->cl_login.for_each<Client>([&](Client* c) { any = any || !c->repl; });
  return any;
}

void Pooler::serve_replication(Pool* p) {
  if (serving_repl_ || pool_paused(p)) return;
  serving_repl_ = true;
  p->cl_login.for_each<Client>([&](Client* c) {
    // Not for a client on its way out (disconnect_client closing its server frees a
    // slot, and this runs again from pool_service before the client is gone).
    if (!c->repl || c->repl->server || c->repl->failed || c->closing || c->exiting) return;
    if (try_launch(p, false, c)) return;
    // No slot: an idle server of the pool makes room, as PgBouncer evicts one.
    if (Server* idle = p->sv_idle.back<Server>()) {
      disconnect_server(idle, "evicted");
      try_launch(p, false, c);
    }
  });
  serving_repl_ = false;
}

void Pooler::pool_service(Pool* p) {
  if (pool_paused(p)) return;  // PAUSE / SUSPEND: waiting clients stay waiting
  if (p->servicing) {
    p->service_again = true;
    return;
  }
  p->servicing = true;
  do {
    p->service_again = false;
    // Clients waiting for the pool's first server (its welcome) when none is being
    // opened: the launch at their login found a limit reached; try again.
    // (Replication clients there wait for servers of their own: serve_replication.)
    if (p->sv_login.empty() && waits_for_welcome(p)) try_launch(p, false);
    // A forced user's pool with min_pool_size (Registry::apply made it): its first
    // server, for the welcome the janitor waits for before filling the pool.
    if (!p->have_welcome && p->server_total() == 0 && !p->db->cfg.user.empty() && registry_.min_pool_size(p) > 0) {
      try_launch(p, false);  // may_launch keeps server_login_retry after a failure
    }
    while (!p->cl_waiting.empty()) {
      // LIFO keeps a few servers warm; server_round_robin spreads load over all of them.
      Server* s = cfg_.pooler.server_round_robin ? p->sv_idle.back<Server>() : p->sv_idle.front<Server>();
      if (s && s->close_needed) {
        disconnect_server(s, "obsolete connection");  // RECONNECT, RELOAD: not for new work (PgBouncer's text)
        continue;
      }
      if (s) {
        Ms idle_for = now() - s->last_used;
        bool suspect = p->suspect_at && s->addr == p->suspect_node && now() - p->suspect_at < 2000 &&
                       s->checked_at <= p->suspect_at;
        if (suspect || (!s->just_checked && !cfg_.pooler.server_check_query.empty() &&
                           cfg_.pooler.server_check_delay >= 0 &&
                           idle_for >= secs(cfg_.pooler.server_check_delay))) {  // 0: every time, as PgBouncer
          // Idle long enough to doubt, or its node said it is going: check it before
          // handing it out (a dying backend fails the check, not the client's statement).
          server_change_state(s, ServerState::Tested);
          const std::string q = cfg_.pooler.server_check_query.empty() ? "<empty>" : cfg_.pooler.server_check_query;
          LOG_DEBUG("S-%llu: %s/%s@%s checking: %s", (unsigned long long)s->id, p->db_name.c_str(),
                    p->user_name.c_str(), s->addr.c_str(), q.c_str());
          run_internal_query(s, q == "<empty>" ? std::string() : q);  // an empty query: the cheapest answer
          continue;
        }
        Client* c = p->cl_waiting.front<Client>();
        if (c->auth_lookup) {
          start_auth_query(c, s);
          continue;
        }
        link(c, s);
        c->process();
        continue;
      }
      int starting = int(p->sv_login.size() + p->sv_tested.size());
      if (int(p->cl_waiting.size()) <= starting) break;
      Client* oldest = p->cl_waiting.front<Client>();
      bool reserve = now() - oldest->wait_start >= secs(cfg_.pooler.reserve_pool_timeout);
      bool beyond = p->shared->servers.load(std::memory_order_relaxed) >= registry_.pool_size(p);
      if (!try_launch(p, reserve)) break;
      if (reserve && beyond) {  // PgBouncer's wording, for log-based alerts
        LOG_WARN("C-%llu: %s/%s@%s taking connection from reserve_pool", (unsigned long long)oldest->id,
                 oldest->db_name.c_str(), oldest->user_name.c_str(), oldest->remote.str().c_str());
      }
    }
  } while (p->service_again);
  p->servicing = false;
  if (!p->cl_login.empty()) serve_replication(p);
}

}  // namespace pgpivot
