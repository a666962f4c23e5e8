// Connection lifecycles: the one function per side that changes a connection's
// state (states.hpp lists the transitions), a client's login finishing, and the
// exits: disconnect_client, disconnect_server, and what a client hears when its
// server is lost.
#include "pooler/pooler.hpp"
#include "pooler/workers/share.hpp"

#include <algorithm>
#include <cstring>

#include "protocol/wire.hpp"

namespace pgpivot {

// ---------------------------------------------------------------------------
// Clients

// The one place a client changes state (states.hpp lists the transitions). One that
// is not a transition is a bug: logged as such (the integration tests fail on "BUG:"
// in a pooler's log), and carried out, as the caller's lists depend on it.
void Pooler::client_change_state(Client* c, ClientState s) {
  if (!allowed(c->state, s)) {
    LOG_ERROR("BUG: C-%llu: client state %s -> %s is not a transition", (unsigned long long)c->id,
              state_name(c->state), state_name(s));
  }
  ListHead::unlink(&c->node);
  c->state = s;
  if (s == ClientState::Login && !c->pool) {
    cl_login_.push_back(&c->node);  // before it has a pool
  } else if (ListHead* l = c->pool ? c->pool->list_of(s) : nullptr) {
    l->push_back(&c->node);
  }
}

void Pooler::client_login_done(Client* c) {
  if (is_admin_db(c->db_name)) {
    const auto& set = cfg_.pooler;
    auto listed = [&](const std::vector<std::string>& v) {
      return std::find(v.begin(), v.end(), c->user_name) != v.end();
    };
    bool is_admin = c->peer_admin || listed(set.admin_users);
    if (!is_admin && !listed(set.stats_users)) {
      disconnect_client(c, Reason::ConsoleNotAllowed, {c->user_name.str()});
      return;
    }
    c->stats_only = !is_admin;
    if (!count_client(c, nullptr, registry_.find_user(c->user_name))) return;
    console_.login(c);
    return;
  }
  DbEntry* db = registry_.find_db(c->db_name);
  UserEntry* user = c->login_user ? c->login_user : registry_.find_user(c->user_name);
  std::string server_user = c->user_name;
  if (db && !db->cfg.user.empty()) {
    server_user = db->cfg.user;
    user = registry_.forced_user(*db);
  }
  if (!db || !user) {
    disconnect_client(c, Reason::NoSuchDatabase, {c->db_name.str()});
    return;
  }
  if (db->disabled) {
    disconnect_client(c, Reason::DatabaseDisabled, {c->db_name.str()});
    return;
  }
  if (registry_.dbs().find(c->db_name.str()) == registry_.dbs().end() && auto_dbs_seen_.insert(c->db_name.str()).second) {
    LOG_INFO("registered new auto-database: %s", c->db_name.c_str());  // served by "*" (PgBouncer's words)
  }
  if (shutdown_pending()) {  // only the console takes logins during a waiting shutdown
    disconnect_client(c, Reason::PoolerShuttingDown);
    return;
  }
  if (!user->counts) user->counts = hub_->user_count(server_user);
  // Client limits count the login user, also where the database forces another.
  if (!count_client(c, db, db->cfg.user.empty() ? user : registry_.find_user(c->user_name))) return;
  if (user->cfg.name.empty()) user->cfg.name = server_user;
  Pool* p = registry_.get_pool(db, c->db_name, user, server_user);
  c->pool = p;
  p->conns++;
  p->stats.client_login_count++;
  cancels_.add(c);
  if (c->repl) {
    // Its own server, opened with its replication mode: the client waits for it
    // in the pool's login list and is welcomed with that server's parameters.
    c->login = LoginStep::WaitWelcome;
    client_change_state(c, ClientState::Login);
    serve_replication(p);
    return;
  }
  if (p->have_welcome || adopt_welcome(p)) {
    send_welcome(c);
    client_change_state(c, ClientState::Idle);
    return;
  }
  if (p->last_login_failure && now() - p->last_login_failure < secs(cfg_.pooler.server_login_retry) &&
      !p->last_connect_failed) {
    // The server refused the last login (a wrong password, NOLOGIN...): its error
    // again, at once, until server_login_retry allows a new try. An unreachable
    // node is different: the login waits for that try, as in PgBouncer (a restart
    // may be ending), bounded by query_wait_timeout. With the failing server's own
    // SQLSTATE, when it sent one.
    disconnect_client(c, p->last_login_sqlstate.empty() ? sqlstate_of(Reason::LoginRetry) : p->last_login_sqlstate.c_str(),
                      reason_text(Reason::LoginRetry, {p->last_login_error}), true);
    return;
  }
  c->login = LoginStep::WaitWelcome;
  client_change_state(c, ClientState::Login);
  if (p->sv_login.empty() && !pool_paused(p)) try_launch(p, false);
}

bool Pooler::count_client(Client* c, DbEntry* db, UserEntry* user) {
  // As PgBouncer: the admin console's database has no limit of its own (the global
  // one applies), and users listed in admin_users are never refused by the console.
  bool console = db == nullptr;
  const auto& admins = cfg_.pooler.admin_users;
  bool exempt = console && std::find(admins.begin(), admins.end(), c->user_name.str()) != admins.end();
  auto limit = [&](int n) { return n > 0 && !exempt ? n : -1; };
  SharedCount* dbc = console ? hub_->db_count(std::string("\x01console")) : db->counts;
  int db_limit = console ? cfg_.pooler.max_db_client_connections : registry_.max_db_client_connections(*db);
  if (!share::reserve_slot(dbc->clients, limit(db_limit))) {
    disconnect_client(c, Reason::TooManyDbClients);
    return false;
  }
  c->counted_db = dbc;
  if (!user) return true;  // a login user without an entry (auth_query) has no count
  if (!user->counts) user->counts = hub_->user_count(user->cfg.name.empty() ? c->user_name.str() : user->cfg.name);
  if (!share::reserve_slot(user->counts->clients, limit(registry_.max_user_client_connections(*user)))) {
    disconnect_client(c, Reason::TooManyUserClients);
    return false;
  }
  c->counted_user = user->counts;
  return true;
}

void Pooler::send_welcome(Client* c) {
  Pool* p = c->pool;
  std::string buf;
  proto::auth_ok(buf);
  for (const auto& [name, value] : p->welcome) {
    int ti = tracked_index(name);
    if (ti >= 0) {
      if (!c->params.get(ti)) c->params.set(ti, value);
      proto::parameter_status(buf, name, *c->params.get(ti));
    } else {
      proto::parameter_status(buf, name, value);
    }
  }
  proto::backend_key_data(buf, c->cancel_pid, c->cancel_key);
  login_notice(buf);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
  c->login = LoginStep::Done;
}

void Pooler::login_notice(std::string& buf) const {
  if (!cfg_.pooler.login_notify_message.empty()) proto::notice(buf, cfg_.pooler.login_notify_message);
}

void Pooler::disconnect_client(Client* c, Reason why, std::initializer_list<std::string_view> args) {
  const ReasonInfo& r = reason_info(why);
  disconnect_client(c, r.sqlstate, reason_text(why, args), r.tell);
}

void Pooler::disconnect_client(Client* c, const char* sqlstate, const std::string& reason, bool notify) {
  if (c->state == ClientState::Closing || c->closing || c->exiting) return;
  c->exiting = true;  // a failing write below re-enters through on_closed()
  Pool* p = c->pool;
  // Logged before the client hears it: whoever reads the log after the error
  // finds the line there. PgBouncer's wording, so log-based alerts written for
  // it keep firing.
  if (notify && sqlstate && cfg_.pooler.log_pooler_errors) {
    LOG_WARN("C-%llu: %s/%s@%s pooler error: %s", (unsigned long long)c->id, c->db_name.c_str(),
             c->user_name.c_str(), c->remote.str().c_str(), reason.c_str());
  }
  if (cfg_.pooler.log_disconnections && c->state != ClientState::Cancel) {
    LOG_INFO("C-%llu: %s/%s@%s closing because: %s (age=%llus)", (unsigned long long)c->id, c->db_name.c_str(),
             c->user_name.c_str(), c->remote.str().c_str(), reason.c_str(),
             (unsigned long long)((now() - c->connect_time) / 1000));
  }
  if (notify && sqlstate) {
    c->send_error("FATAL", sqlstate, reason);
    c->flush();
  }
  if (c->repl && c->repl->server) {
    // A replication client's server goes with it, linked or still logging in.
    Server* s = c->repl->server;
    c->repl->server = nullptr;
    s->repl_for = nullptr;
    s->client = nullptr;
    c->server = nullptr;
    disconnect_server(s, "replication client disconnected");
  }
  if (Server* s = c->server) {
    s->client = nullptr;
    c->server = nullptr;
    s->release_after_forward = false;
    bool boundary = s->expect_z == 0 && s->internal_z == 0 && c->fwd_left == 0 && !s->closing;
    if (!boundary) {
      // The backend may be running for a long time (and holding locks) without
      // noticing its socket closed: cancel what runs, then close.
      if (s->expect_z > 0 && s->connected && s->ready && s->pid) send_cancel(loop_, *s);
      disconnect_server(s, "client disconnected while the server was busy");
    } else if (life_over(s)) {  // enforced on release, before any reset
      disconnect_server(s, "server_lifetime");
    } else {
      bool session = registry_.pool_mode(p) == config::PoolMode::Session;
      server_change_state(s, ServerState::Tested);
      // Clean up what the client left behind before anyone else gets the server.
      if (s->txn != 'I') run_internal_query(s, "ROLLBACK");
      const std::string& rq = cfg_.pooler.server_reset_query;
      if ((session || cfg_.pooler.server_reset_query_always) && !rq.empty()) {
        run_internal_query(s, rq);
      } else if (s->needs_reset) {
        run_internal_query(s, "RESET ALL");
      }
      s->needs_reset = false;
      if (s->internal_z == 0) internal_done(s);
    }
  }
  if (c->auth_server) {
    // Its auth_query runs on: the answer is dropped and the server goes back to its pool.
    c->auth_server->auth->client = nullptr;
    c->auth_server = nullptr;
  }
  if (c->admin) console_.forget(c);
  cancels_.remove(c);
  for (SharedCount** n : {&c->counted_db, &c->counted_user}) {
    if (*n) (*n)->clients.fetch_sub(1, std::memory_order_relaxed);
    *n = nullptr;
  }
  client_count_--;
  hub_->clients.fetch_sub(1, std::memory_order_relaxed);
  client_change_state(c, ClientState::Closing);
  // A login that waited in an auth pool was never counted there (free_conn).
  if (c->auth_lookup) c->pool = nullptr;
  c->start_close();
  if (p) pool_service(p);
}

// ---------------------------------------------------------------------------
// Servers

void Pooler::server_change_state(Server* s, ServerState st) {
  if (!allowed(s->state, st)) {
    LOG_ERROR("BUG: S-%llu: server state %s -> %s is not a transition", (unsigned long long)s->id,
              state_name(s->state), state_name(st));
  }
  ListHead::unlink(&s->node);
  s->state = st;
  if (ListHead* l = s->pool->list_of(st)) {
    if (st == ServerState::Idle)
      l->push_front(&s->node);  // LIFO: warm servers first
    else
      l->push_back(&s->node);
  }
}

void Pooler::client_server_lost(Client* c, Server* s, const std::string& why_lost) {
  ClusterRt* cl = s->pool->db->crt;
  bool replayable = s->begin_in_flight && !s->answered && s->expect_z == 1 && !s->unsynced && c->has_replay();
  if (replayable && !s->query_timed_out && holds_through_outage(s->pool)) {
    // Only a BEGIN was in flight, outside a transaction: nothing happened that the
    // client could see. It waits for the next server, which gets the same BEGIN.
    LOG_WARN("C-%llu: %s/%s@%s server connection lost with a BEGIN in flight; replayed on the next server",
             (unsigned long long)c->id, c->db_name.c_str(), c->user_name.c_str(), c->remote.str().c_str());
    c->wait_start = now();
    c->wait_notified = false;
    client_change_state(c, ClientState::Waiting);
    return;
  }
  c->clear_replay();
  std::string buf;
  proto::ErrorFields e;
  // A commit may have happened: a COMMIT-like statement was in flight, or an
  // autocommit one (outside a transaction). A BEGIN alone commits nothing.
  Reason why = s->commit_in_flight ? Reason::CommitUnknown : Reason::TransactionLost;
  e.sqlstate = sqlstate_of(why);
  e.message = reason_text(why);
  e.hint = "pgpivot keeps this connection open; the next statement runs on a healthy server";
  e.detail = "The server connection closed because: " + why_lost;
  if (s->query_timed_out) {
    // Not a sick server but a slow statement: say so, with the SQLSTATE of a
    // statement_timeout (PostgreSQL's query_canceled).
    e.sqlstate = sqlstate_of(Reason::QueryTimeout);
    e.message = reason_text(Reason::QueryTimeout);
    e.detail = "The statement ran longer than query_timeout; its server connection was closed.";
    e.hint = "pgpivot keeps this connection open; a transaction in progress was rolled back";
  }
  bool told = false;
  if (s->expect_z > 0) {
    // The client waits for answers: an error, then one ReadyForQuery per Query/Sync owed.
    proto::error_response(buf, e);
    for (int i = 0; i < s->expect_z; i++) proto::ready_for_query(buf, 'I');
    told = true;
  } else if (s->unsynced) {
    // Extended-protocol messages without their Sync: error now, then skip to the Sync.
    proto::error_response(buf, e);
    c->discard_until_sync = true;
    told = true;
  } else if (s->txn != 'I') {
    // Idle inside a transaction: the transaction is gone; say so at the next statement.
    std::snprintf(c->pending_error, sizeof c->pending_error, "%s", sqlstate_of(Reason::TransactionLost));
    told = true;
  }
  if (!buf.empty()) c->queue(buf);
  if (told && cl) cl->client_errors++;
  LOG_WARN("C-%llu: %s/%s@%s server connection lost%s", (unsigned long long)c->id, c->db_name.c_str(),
           c->user_name.c_str(), c->remote.str().c_str(),
           told ? (std::string(", client told ") + (c->pending_error[0] ? std::string(c->pending_error) : e.sqlstate)).c_str()
                : " between transactions; client unaffected");
  client_change_state(c, ClientState::Idle);
}

void Pooler::fail_waiting_client(Client* c, Reason why, std::initializer_list<std::string_view> args) {
  if (c->state != ClientState::Waiting || c->closing) return;
  if (c->auth_lookup) {
    disconnect_client(c, why, args);  // a login has no request to refuse
    return;
  }
  const char* sqlstate = sqlstate_of(why);
  std::string msg = reason_text(why, args);
  // The buffered request is answered as after a lost server (answer_lost_transaction):
  // the error at its first message, ReadyForQuery at its Query or Sync.
  std::snprintf(c->pending_error, sizeof c->pending_error, "%s", sqlstate);
  c->notes().pending_message = msg;
  c->clear_replay();
  c->wait_start = 0;
  client_change_state(c, ClientState::Idle);
  LOG_WARN("C-%llu: %s/%s@%s request refused: %s %s", (unsigned long long)c->id, c->db_name.c_str(),
           c->user_name.c_str(), c->remote.str().c_str(), sqlstate, msg.c_str());
  if (c->rbuf && c->rend > c->rparse) c->process();
}

void Pooler::disconnect_server(Server* s, const std::string& reason) {
  if (s->state == ServerState::Closing || s->closing || s->exiting) return;
  s->exiting = true;  // a failing write below re-enters through on_closed()
  Pool* p = s->pool;
  if (cfg_.pooler.log_disconnections) {
    LOG_INFO("S-%llu: %s/%s@%s closing because: %s (age=%llus)", (unsigned long long)s->id, p->db_name.c_str(),
             p->user_name.c_str(), s->addr.c_str(), reason.c_str(),
             (unsigned long long)((now() - s->connect_time) / 1000));
  }
  if (s->auth) {
    // The auth_query's server went away: the client's login cannot go on.
    std::unique_ptr<Server::AuthQuery> a = std::move(s->auth);
    if (Client* c = a->client) {
      c->auth_server = nullptr;
      disconnect_client(c, Reason::AuthConfigError);
    }
  }
  if (s->repl && s->repl_for) {
    // A replication stream cannot move to another server: its client goes too.
    Client* c = s->repl_for;
    s->repl_for = nullptr;
    c->repl->server = nullptr;
    s->client = nullptr;
    c->server = nullptr;
    disconnect_client(c, Reason::ServerClosedMidStream, {reason});
  }
  if (Client* c = s->client) {
    s->client = nullptr;
    c->server = nullptr;
    if (s->fwd_left != 0) {
      // Half of the server's message already went to the client: nothing can
      // follow it in that stream, not even an ErrorResponse (the client would
      // read it as the rest of the message and wait for more). Closing is all
      // that is left; the client sees the connection end.
      disconnect_client(c, Reason::ServerClosedMidMessage, {reason});
    } else if (c->fwd_left == 0 && c->login == LoginStep::Done) {
      client_server_lost(c, s, reason);
    } else {
      // Half a message already went to the dead server: the stream cannot be resumed.
      disconnect_client(c, Reason::ServerClosedMidStream, {reason});
    }
  }
  if (s->connected && s->ready) {
    // A polite goodbye lets PostgreSQL end the backend without logging an error.
    std::string buf;
    proto::terminate(buf);
    s->queue(buf);
    s->flush();
  }
  // Free the slot try_launch reserved; a worker waiting for one gets a nudge.
  p->shared->servers.fetch_sub(1, std::memory_order_relaxed);
  p->db->counts->servers.fetch_sub(1, std::memory_order_relaxed);
  if (p->user) p->user->counts->servers.fetch_sub(1, std::memory_order_relaxed);
  server_change_state(s, ServerState::Closing);
  s->start_close();
  pool_service(p);
  if (hub_->threaded()) {
    std::uint64_t others = p->shared->wanted.load(std::memory_order_relaxed) & ~(std::uint64_t(1) << shard_);
    for (int i = 0; others; i++, others >>= 1) {
      if (others & 1) hub_->post(i, {Hub::MsgKind::Service, 0, 0});
    }
  }
  if (console_.has_pending()) {
    WorldLock wl(hub_, shard_);
    console_.finish_pending();
  }
}

}  // namespace pgpivot
