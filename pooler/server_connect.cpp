// Opening a server connection: name lookup, non-blocking connect, TLS request,
// startup and login; a server becoming ready (welcome parameters, pgpivot's own
// queries) or failing its login.
#include "pooler/pooler.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "protocol/wire.hpp"

namespace pgpivot {

void Server::on_connect(int status) {
  Server* s = this;
  if (s->closing) return;
  Pooler* pl = s->pooler;
  if (status < 0) {
    pl->server_login_failed(s, Reason::ServerConnectFailed,
                            {s->host + ":" + std::to_string(s->server_port), uv_strerror(status)});
    return;
  }
  s->connected = true;
  // TLS first when the node's sslmode asks for it (not over Unix sockets, as libpq).
  // As PgBouncer, "allow" asks too and goes on in plain text after an 'N', so it
  // behaves as "prefer" (libpq's allow would try plain text first).
  const config::Node& tnode = active_node(s->pool->db);
  auto sm = tnode.options.find("sslmode");
  s->sslmode = sm != tnode.options.end() ? sm->second : s->pooler->tls().server_sslmode();
  if (!s->unix_sock) {
    int one = 1;
    ::setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(s->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) s->local.set(ss);
  }
  if (!s->unix_sock && s->sslmode != "disable") {
    std::string buf;
    proto::ssl_request(buf);
    s->queue(buf);
    s->awaiting_ssl_byte = true;
    s->update_reading();
    return;
  }
  s->send_startup();
  s->update_reading();
}

void Server::send_startup() {
  Server* s = this;
  std::vector<std::pair<std::string, std::string>> params;
  params.emplace_back("user", s->pool->user->cfg.name);
  params.emplace_back("database", s->pool->server_db);
  const config::Node& node = active_node(s->pool->db);
  auto opt = node.options.find("options");
  const Client* rc = s->repl_for;
  if (rc && !rc->repl->options.empty()) {
    params.emplace_back("options", rc->repl->options);  // the replication client's, verbatim
  } else if (opt != node.options.end()) {
    params.emplace_back("options", opt->second);
  }
  // Per-database startup settings, as PgBouncer's connect string allows; they
  // become the pool's defaults that clients see at login.
  const config::Database& dbc = s->pool->db->cfg;
  for (const auto& [k, v] : dbc.params) params.emplace_back(k, v);
  if (rc) {
    // A replication connection takes no SET: it starts with the client's own
    // parameters, and says what it is.
    params.emplace_back("replication", rc->repl->mode);
    for (int i = 0; i < tracked_count(); i++) {
      const auto& v = rc->params.get(i);
      if (!v) continue;
      for (auto it = params.begin(); it != params.end();)
        it = iequals(it->first, tracked_name(i)) ? params.erase(it) : it + 1;
      params.emplace_back(tracked_name(i), *v);
    }
    if (!rc->params.get(tracked_index("application_name")) && !dbc.application_name.empty())
      params.emplace_back("application_name", dbc.application_name);
  } else if (!dbc.application_name.empty()) {
    params.emplace_back("application_name", dbc.application_name);
  }
  std::string buf;
  proto::startup_message(buf, params);
  s->queue(buf);
}

namespace {

// A name lookup in flight for a server; outlives the server if it closes first.
struct Resolve {
  uv_getaddrinfo_t req{};
  Server* server = nullptr;
};

// Starts a non-blocking connect to s->sa; the poll callback calls on_connect.
void connect_resolved(Server* s) {
  int rc = new_socket(s->sa.ss_family);
  if (rc >= 0 && !s->attach(rc)) rc = UV_ENOMEM;
  // Before the handshake, as PgBouncer does: the buffer sizes decide the TCP window
  // scale, and a tcp_socket_buffer set afterwards leaves a window the sender only
  // fills on its 200 ms persist timer.
  if (rc >= 0 && s->sa.ss_family != AF_UNIX) tune_socket(s->fd, s->pooler->settings());
  if (rc >= 0) {
    socklen_t len = s->sa.ss_family == AF_UNIX ? socklen_t(sizeof(sockaddr_un)) : sockaddr_len(s->sa);
    rc = ::connect(s->fd, reinterpret_cast<const sockaddr*>(&s->sa), len) == 0 || errno == EINPROGRESS ? 0 : -errno;
    if (rc == 0) {
      s->set_events(UV_WRITABLE);
      s->connecting = true;
      return;
    }
  }
  s->pooler->server_login_failed(s, Reason::ServerConnectFailed, {s->addr, uv_strerror(rc)});
}

void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  auto* r = static_cast<Resolve*>(req->data);
  Server* s = r->server;
  if (s) s->resolving = nullptr;
  if (s && !s->closing) {
    if (status < 0 || !res) {
      s->pooler->server_login_failed(s, Reason::ServerResolveFailed, {s->host, uv_strerror(status)});
    } else {
      // One address is tried: IPv4 first (PostgreSQL often listens on 127.0.0.1 only).
      const addrinfo* pick = res;
      for (const addrinfo* a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
          pick = a;
          break;
        }
      }
      std::memcpy(&s->sa, pick->ai_addr, pick->ai_addrlen);
      connect_resolved(s);
    }
  }
  uv_freeaddrinfo(res);
  delete r;
}

}  // namespace

void Server::forget_resolve() {
  if (resolving) static_cast<Resolve*>(resolving)->server = nullptr;
  resolving = nullptr;
}

// The host of a node to connect to: itself, or one of a host list (host=a,b), as
// PgBouncer picks: round-robin takes the next one for every connection; disable
// keeps to one host and moves on only after a connect to it failed.
std::string Pooler::pick_host(Pool* p, const std::string& hosts) {
  if (hosts.find(',') == std::string::npos) return hosts;
  std::vector<std::string_view> list;
  for (std::size_t at = 0;;) {
    std::size_t comma = hosts.find(',', at);
    list.push_back(std::string_view(hosts).substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  bool round_robin = p->db->cfg.load_balance_hosts != "disable";
  if (!round_robin && p->host_step_due) {
    p->host_rr++;
    p->host_step_due = false;  // one step per failure
  }
  std::string host(list[p->host_rr % list.size()]);
  if (round_robin) p->host_rr++;
  return host;
}

void Pooler::launch_server(Pool* p, Client* repl) {
  const config::Node& node = active_node(p->db);
  auto* s = new Server();
  s->pooler = this;
  s->id = next_id();
  s->node.owner = s;
  s->pool = p;
  if (repl) {
    s->repl = true;
    s->repl_for = repl;
    repl->repl->server = s;
  }
  p->conns++;
  s->host = pick_host(p, node.host);
  s->server_port = node.port;
  s->addr = s->host + ":" + std::to_string(node.port);
  s->connect_time = s->request_time = now();
  server_change_state(s, ServerState::Login);
  if (!s->host.empty() && s->host[0] == '/') {
    // A directory: PostgreSQL's Unix socket in it.
    s->unix_sock = true;
    std::string path = s->host + "/.s.PGSQL." + std::to_string(node.port);
    auto* sun = reinterpret_cast<sockaddr_un*>(&s->sa);
    sun->sun_family = AF_UNIX;
    if (path.size() >= sizeof sun->sun_path) {
      server_login_failed(s, Reason::ServerConnectFailed, {path, "path too long"});
      return;
    }
    std::memcpy(sun->sun_path, path.c_str(), path.size() + 1);
    connect_resolved(s);
    return;
  }
  if (uv_ip4_addr(s->host.c_str(), node.port, reinterpret_cast<sockaddr_in*>(&s->sa)) == 0 ||
      uv_ip6_addr(s->host.c_str(), node.port, reinterpret_cast<sockaddr_in6*>(&s->sa)) == 0) {
    connect_resolved(s);
    return;
  }
  // A host name: resolve on libuv's thread pool, never blocking the loop.
  auto* r = new Resolve();
  r->server = s;
  r->req.data = r;
  s->resolving = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(node.port);
  int rc = uv_getaddrinfo(loop_, &r->req, on_resolved, s->host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    s->resolving = nullptr;
    delete r;
    server_login_failed(s, Reason::ServerResolveFailed, {s->host, uv_strerror(rc)});
  }
}

void Pooler::server_login_failed(Server* s, Reason why, std::initializer_list<std::string_view> args) {
  // PgBouncer's words for the log: alerts match on "closing because: connect failed".
  const char* log_reason = why == Reason::ServerConnectFailed    ? "connect failed"
                           : why == Reason::ServerConnectTimeout ? "connect timeout"
                           : why == Reason::ServerResolveFailed  ? "server DNS lookup failed"
                                                                 : nullptr;
  // No login answer from PostgreSQL (PgBouncer's "connect failed" class): the node
  // is not reachable, or the TLS handshake with it failed.
  bool unreachable = why == Reason::ServerConnectFailed || why == Reason::ServerConnectTimeout ||
                     why == Reason::ServerResolveFailed || why == Reason::ServerTlsError ||
                     why == Reason::ServerTlsSetup;
  server_login_failed(s, sqlstate_of(why), reason_text(why, args), unreachable, log_reason);
}

void Pooler::server_login_failed(Server* s, const std::string& sqlstate, const std::string& msg, bool unreachable,
                                 const char* log_reason) {
  Pool* p = s->pool;
  if (s->repl) {
    // Only its own client hears it (e.g. a role without REPLICATION); the pool's
    // other logins and server_login_retry are not this connection's business.
    LOG_WARN("S-%llu: %s/%s@%s replication server login failed: %s", (unsigned long long)s->id,
             p->db_name.c_str(), p->user_name.c_str(), s->addr.c_str(), msg.c_str());
    Client* c = s->repl_for;
    s->repl_for = nullptr;
    if (c) {
      c->repl->server = nullptr;
      c->repl->failed = true;
    }
    // The server's line first: whoever reads the log after the client's error finds both.
    disconnect_server(s, "login failed");
    if (c) disconnect_client(c, sqlstate.c_str(), reason_text(Reason::ReplicationLoginFailed), true);
    return;
  }
  p->last_login_failure = std::max<Ms>(now(), 1);
  p->last_connect_failed = unreachable;
  p->host_step_due = unreachable;
  p->last_login_error = msg;
  p->last_login_sqlstate = sqlstate;
  LOG_WARN("S-%llu: %s/%s@%s server login failed: %s", (unsigned long long)s->id, p->db_name.c_str(),
           p->user_name.c_str(), s->addr.c_str(), msg.c_str());
  // Clients waiting for this pool's first login hear why it failed -- unless the
  // node is merely unreachable (refused or timed-out connect, unresolvable name, a
  // failed TLS handshake): then, as in PgBouncer, they wait, the janitor tries again
  // after server_login_retry, and query_wait_timeout (or query_timeout) bounds the
  // wait; logins arriving meanwhile wait for that try too (client_login_done).
  bool wait = unreachable || (sqlstate == sqlstate_of(Reason::ServerConnectFailed) && holds_through_outage(p));
  if (!wait) {
    p->cl_login.for_each<Client>([&](Client* c) { disconnect_client(c, sqlstate.c_str(), msg, true); });
    // The server refused the login itself (a wrong or rotated password, NOLOGIN,
    // a dropped database): with no working server left, the clients waiting for
    // one would only wait for query_wait_timeout to hear nothing better, so they
    // get the server's error now, as PgBouncer's kill_pool_logins does. Not for
    // an unreachable node (a failover may bring one) or "starting up" (57P03).
    // Logins waiting to run their auth_query on this pool hear it in any case.
    bool refused = !unreachable && sqlstate != sqlstate_of(Reason::ServerConnectFailed) && sqlstate != "57P03";
    // Servers RECONNECT or a reload marked to close do not count: they go when released.
    bool none_working = true;
    p->each_server([&](Server* o) { none_working = none_working && (o == s || o->close_needed || !o->ready); });
    p->cl_waiting.for_each<Client>([&](Client* c) {
      if (c->auth_lookup || (refused && none_working)) disconnect_client(c, sqlstate.c_str(), msg, true);
    });
  }
  // The server's own refusal is its closing reason, as PgBouncer logs it.
  disconnect_server(s, log_reason ? std::string(log_reason) : msg);
}

void Pooler::server_ready(Server* s) {
  Pool* p = s->pool;
  s->ready = true;
  p->last_login_failure = 0;
  p->last_connect_failed = false;
  if (p->db->crt) p->db->crt->note_datapath_ok(now());
  if (!p->have_welcome && !s->repl) {
    p->welcome = s->all_params;
    p->have_welcome = true;
    if (hub_->threaded()) {
      {
        std::lock_guard lk(p->shared->mu);
        if (!p->shared->have_welcome) {
          p->shared->welcome = p->welcome;
          p->shared->have_welcome = true;
        }
      }
      hub_->post_all_but(shard_, {Hub::MsgKind::Service, 0, 0});  // their clients may wait for it
    }
  }
  if (cfg_.pooler.log_connections) {
    LOG_INFO("S-%llu: %s/%s@%s new connection to server (from %s, backend pid %u)", (unsigned long long)s->id,
             p->db_name.c_str(), p->user_name.c_str(), s->addr.c_str(), s->local.str().c_str(), s->pid);
  }
  s->last_used = now();
  s->just_checked = true;  // it just logged in: its first hand-out needs no check (PgBouncer's rule)
  s->checked_at = now();
  if (s->repl) {
    replication_ready(s);
    return;
  }
  server_change_state(s, ServerState::Idle);
  welcome_login_clients(p);
  if (!p->db->cfg.connect_query.empty()) {
    server_change_state(s, ServerState::Tested);
    run_internal_query(s, p->db->cfg.connect_query);
    return;
  }
  pool_service(p);
  resume_idle_clients(p);
}

// A replication client's own server logged in: the client hears that server's
// parameters and is linked to it for good.
void Pooler::replication_ready(Server* s) {
  Client* c = s->repl_for;
  server_change_state(s, ServerState::Idle);
  if (!c || c->closing || c->state != ClientState::Login) {
    disconnect_server(s, "replication client left");
    return;
  }
  std::string buf;
  proto::auth_ok(buf);
  for (const auto& [name, value] : s->all_params) {
    int ti = tracked_index(name);
    if (ti >= 0) c->params.set(ti, value);
    proto::parameter_status(buf, name, value);
  }
  proto::backend_key_data(buf, c->cancel_pid, c->cancel_key);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
  c->login = LoginStep::Done;
  client_change_state(c, ClientState::Idle);
  link(c, s, false);
  if (c->rbuf && c->rend > c->rparse) c->process();
}

// Clients waiting for the pool's parameters get them (the pool has them now).
void Pooler::welcome_login_clients(Pool* p) {
  p->cl_login.for_each<Client>([&](Client* c) {
    if (c->repl) return;  // welcomed by its own server (replication_ready)
    send_welcome(c);
    client_change_state(c, ClientState::Idle);
  });
}

// Clients that sent queries while waiting for the welcome can go on now.
void Pooler::resume_idle_clients(Pool* p) {
  p->cl_idle.for_each<Client>([](Client* c) {
    if (c->rbuf && c->rend > c->rparse) c->process();
  });
}

// Takes the welcome another worker's server login published; false when there is none yet.
bool Pooler::adopt_welcome(Pool* p) {
  if (p->have_welcome) return true;
  if (!hub_->threaded()) return false;
  std::lock_guard lk(p->shared->mu);
  if (!p->shared->have_welcome) return false;
  p->welcome = p->shared->welcome;
  p->have_welcome = true;
  return true;
}

void Pooler::run_internal_query(Server* s, const std::string& sql) {
  // DISCARD ALL / DEALLOCATE drop the server's prepared statements: forget them too.
  std::string up;
  for (char ch : sql) up += char(std::toupper(static_cast<unsigned char>(ch)));
  if (up.find("DISCARD") != std::string::npos || up.find("DEALLOCATE") != std::string::npos) s->prepared_on.clear();
  std::string buf;
  proto::query(buf, sql);
  s->queue(buf);
  s->internal_z++;
}

void Pooler::start_auth_query(Client* c, Server* s) {
  const DbEntry* db = registry_.find_db(c->db_name);
  const std::string& sql = registry_.auth_query(is_admin_db(c->db_name) ? nullptr : db);
  // The client leaves the auth pool: it is a login again, counted nowhere.
  c->auth_lookup = false;
  c->wait_start = 0;
  c->pool = nullptr;
  client_change_state(c, ClientState::Login);
  // No SET of the client's parameters reaches this server (PgBouncer's rule):
  // an unauthenticated client must not steer the query, e.g. by search_path.
  server_change_state(s, ServerState::Tested);
  s->auth = std::make_unique<Server::AuthQuery>();
  s->auth->client = c;
  c->auth_server = s;
  std::string buf;
  proto::extended_query(buf, sql, {c->user_name.str()});
  s->queue(buf);
  s->internal_z++;
}

void Pooler::auth_query_done(Server* s) {
  std::unique_ptr<Server::AuthQuery> a = std::move(s->auth);
  Client* c = a->client;
  if (c) c->auth_server = nullptr;
  internal_done(s);  // the server goes back to its pool first
  if (c) c->auth_lookup_done(a->failed, a->found, a->password);
}

void Pooler::internal_done(Server* s) {
  if (s->client || s->state != ServerState::Tested) return;  // parameter SETs for a linked client
  if (s->txn != 'I') {
    disconnect_server(s, "reset query left a transaction open");
    return;
  }
  if (shutting_down_ || s->close_needed || (pool_paused(s->pool) && !suspended_)) {
    disconnect_server(s, shutting_down_ ? "shutting down" : s->close_needed ? "configuration changed" : "PAUSE");
    return;
  }
  s->last_used = now();
  s->just_checked = true;
  s->checked_at = now();
  server_change_state(s, ServerState::Idle);
  pool_service(s->pool);
}

}  // namespace pgpivot
