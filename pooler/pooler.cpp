// The pooler: listeners, pools and the transitions between connection states,
// server assignment, the janitor (timeouts, min_pool_size), signals and reload.
#include "config/settings.hpp"
#include "pooler/pooler.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "config/load.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

void NetAddr::set(const sockaddr_storage& ss) {
  family = std::uint8_t(ss.ss_family);
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    port = ntohs(a->sin_port);
    std::memcpy(ip, &a->sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    port = ntohs(a->sin6_port);
    std::memcpy(ip, &a->sin6_addr, 16);
  }
}

NetAddr Client::local_addr() const {
  NetAddr a;
  if (unix_sock) {
    a.family = AF_UNIX;
  } else if (fd >= 0) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) a.set(ss);
  }
  return a;
}

std::string NetAddr::host() const {
  char buf[INET6_ADDRSTRLEN] = "";
  if (family == AF_UNIX) return "unix";
  if (family == AF_INET) uv_inet_ntop(AF_INET, ip, buf, sizeof buf);
  if (family == AF_INET6) uv_inet_ntop(AF_INET6, ip, buf, sizeof buf);
  return buf;
}

std::string NetAddr::str() const {
  if (family == AF_UNIX) return "unix";
  return host() + ":" + std::to_string(port);
}

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

Ms secs(double s) { return s <= 0 ? 0 : Ms(s * 1000.0); }

}  // namespace

// ---------------------------------------------------------------------------
Pooler::Pooler(config::Config cfg, uv_loop_t* loop, Hub* hub, int shard)
    : loop_(loop),
      hub_(hub),
      shard_(shard),
      bufs_(std::uint32_t(std::max(cfg.pooler.pkt_buf, 1024)), 256),
      stream_bufs_(65536, 16) {
  if (!hub_) {
    own_hub_ = std::make_unique<Hub>(1);
    hub_ = own_hub_.get();
  }
  hub_->set_shard(shard_, this);
  fake_salt_key_ = hub_->fake_salt_key();  // the same fake salts in every worker
  apply_config(std::move(cfg));
}

std::vector<Pool*> Pooler::world_pools() {
  std::vector<Pool*> v;
  for (Pooler* w : world()) {
    for (auto& [k, p] : w->pools_) v.push_back(p.get());
  }
  return v;
}

std::vector<Pooler*> Pooler::world() {
  if (!hub_->threaded() || !Hub::world_stopped_here()) return {this};
  std::vector<Pooler*> v;
  for (int i = 0; i < hub_->size(); i++) {
    if (hub_->live(i)) v.push_back(hub_->shard(i));
  }
  return v;
}

Pooler::~Pooler() {
  free_tls();
  for (Conn::OutQ* q : free_outq_) delete q;
}

void Pooler::apply_config(config::Config cfg) {
  // The old config (and the clusters DbEntry::cluster points into) dies below:
  // remember each cluster's nodes first to notice databases that moved.
  std::map<std::string, std::pair<config::Node, std::optional<config::Node>>> old_nodes;
  for (const auto& [name, cl] : cfg_.clusters) old_nodes[name] = {cl.primary, cl.standby};
  cfg_ = std::move(cfg);
  for (auto& [name, db] : dbs_) {
    db->removed = true;
    db->cluster = nullptr;  // points into the config just replaced
  }
  for (auto& [name, dbc] : cfg_.databases) {
    auto& e = dbs_[name];
    if (!e) e = std::make_unique<DbEntry>();
    if (!e->counts) e->counts = hub_->db_count(name);
    bool changed = e->cfg.cluster != dbc.cluster || e->cfg.dbname != dbc.dbname || e->cfg.user != dbc.user ||
                   e->cfg.password != dbc.password;
    e->cfg = dbc;
    e->removed = false;
    auto it = cfg_.clusters.find(dbc.cluster);
    const config::Cluster* cl = it == cfg_.clusters.end() ? nullptr : &it->second;
    auto old = old_nodes.find(dbc.cluster);
    if (cl && old != old_nodes.end() && (old->second.first != cl->primary || old->second.second != cl->standby)) {
      changed = true;
    }
    e->cluster = cl;
    if (changed) {
      // Servers of this database log in elsewhere now: close them when released.
      for (auto& [key, pool] : pools_) {
        if (pool->db != e.get()) continue;
        pool->each_server([](Server* s) { s->close_needed = true; });
      }
    }
  }
  for (auto& [name, u] : users_) u->removed = true;
  for (auto& [name, uc] : cfg_.users) {
    auto& e = users_[name];
    if (!e) e = std::make_unique<UserEntry>();
    if (!e->counts) e->counts = hub_->user_count(name);
    if (e->cfg.password != uc.password) {
      e->secret.reset();
      if (e->client_key && shard_ == 0) hub_->forget_client_key(name);
      e->client_key.reset();
    }
    e->cfg = uc;
    e->removed = false;
  }
  sync_clusters();
}

// Reads the file once and applies it in every worker (the world is stopped by
// the callers, SIGHUP and RELOAD, when there are several); worker 0 first, whose
// clusters the others point at.
bool Pooler::reload() {
  auto res = config::load_file(cfg_.path);
  if (!res.ok()) {
    for (const auto& e : res.errors) LOG_ERROR("reload failed: %s", e.to_string().c_str());
    return false;
  }
  bool ok = true;
  for (Pooler* w : world()) ok = w->apply_reload(res.config) && ok;
  return ok;
}

bool Pooler::apply_reload(config::Config next) {
  bool talk = shard_ == 0;  // one worker logs what all do
  auto& np = next.pooler;
  const auto& op = cfg_.pooler;
  // Settings that take effect only at start keep their running values.
  for (const config::Setting& k : config::settings()) {
    if (k.change != config::Change::Restart) continue;
    std::string was = config::value_text(op, k);
    if (config::value_text(np, k) == was) continue;
    if (talk) LOG_WARN("reload: %s needs a restart; keeping %s", k.name, was.empty() ? "it unset" : was.c_str());
    std::visit([&](auto m) { np.*m = op.*m; }, k.member);
  }
  next.path = cfg_.path;
  config::Config old = cfg_;
  apply_config(std::move(next));
  std::string tls_err;
  if (!setup_tls(tls_err)) {
    LOG_ERROR("reload: TLS: %s; keeping the previous configuration", tls_err.c_str());
    apply_config(std::move(old));
    std::string again;
    if (!setup_tls(again)) LOG_ERROR("TLS: %s", again.c_str());
    return false;
  }
  if (talk) LOG_INFO("configuration reloaded from %s", cfg_.path.c_str());
  for (auto& [key, pool] : pools_) pool_service(pool.get());
  return true;
}

DbEntry* Pooler::find_db(const std::string& name) {
  auto it = dbs_.find(name);
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  it = dbs_.find("*");
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  return nullptr;
}

UserEntry* Pooler::find_user(const std::string& name) {
  auto it = users_.find(name);
  if (it == users_.end() || it->second->removed) return nullptr;
  return it->second.get();
}

proto::ScramSecret Pooler::fake_secret(const std::string& user) {
  proto::ScramSecret s;
  s.iterations = 4096;
  // Salt derived from a per-process key and the name: the same name always
  // gets the same salt, as a real user would.
  // The salt is raw bytes, like a real one: the 16 hex characters used before
  // decoded to bytes from [0-9a-f] only, which gave unknown users away.
  std::string digest = proto::md5_hex(fake_salt_key_ + user);
  s.salt.assign(16, '\0');
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i < 16; i++) s.salt[i] = char(nibble(digest[2 * i]) << 4 | nibble(digest[2 * i + 1]));
  proto::random_bytes(s.stored_key.data(), s.stored_key.size());
  proto::random_bytes(s.server_key.data(), s.server_key.size());
  return s;
}

Pool* Pooler::get_pool(DbEntry* db, const std::string& db_name, UserEntry* user, const std::string& user_name) {
  auto key = std::make_pair(db_name, user_name);
  auto& p = pools_[key];
  if (!p) {
    p = std::make_unique<Pool>();
    p->owner = this;
    p->shared = hub_->pool_count(db_name, user_name);
    p->db = db;
    p->user = user;
    p->db_name = db_name;
    p->user_name = user_name;
    p->server_db = db->cfg.dbname.empty() ? db_name : db->cfg.dbname;
  }
  p->db = db;
  p->user = user;
  return p.get();
}

config::PoolMode Pooler::pool_mode(const Pool* p) const {
  if (p->user && p->user->cfg.pool_mode) return *p->user->cfg.pool_mode;
  if (p->db->cfg.pool_mode) return *p->db->cfg.pool_mode;
  return cfg_.pooler.pool_mode;
}

int Pooler::pool_size(const Pool* p) const {
  if (p->user && p->user->cfg.pool_size >= 0) return p->user->cfg.pool_size;
  if (p->db->cfg.pool_size >= 0) return p->db->cfg.pool_size;
  return cfg_.pooler.default_pool_size;
}

int Pooler::reserve_size(const Pool* p) const {
  if (p->user && p->user->cfg.reserve_pool_size >= 0) return p->user->cfg.reserve_pool_size;
  if (p->db->cfg.reserve_pool_size >= 0) return p->db->cfg.reserve_pool_size;
  return cfg_.pooler.reserve_pool_size;
}

// 0 = no limit.
int Pooler::max_db_connections(const Pool* p) const {
  return p->db->cfg.max_db_connections >= 0 ? p->db->cfg.max_db_connections : cfg_.pooler.max_db_connections;
}

int Pooler::max_user_connections(const Pool* p) const {
  return p->user && p->user->cfg.max_user_connections >= 0 ? p->user->cfg.max_user_connections
                                                             : cfg_.pooler.max_user_connections;
}

int Pooler::min_pool_size(const Pool* p) const {
  if (p->db->cfg.min_pool_size >= 0) return p->db->cfg.min_pool_size;
  return cfg_.pooler.min_pool_size;
}

// ---------------------------------------------------------------------------
// Listeners

namespace {

void set_keepalive(int fd) {
  int one = 1, idle = 60;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
}

// A non-blocking, close-on-exec socket, or -errno.
int new_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

socklen_t sockaddr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? socklen_t(sizeof(sockaddr_in6)) : socklen_t(sizeof(sockaddr_in));
}

void on_listener_ready(uv_poll_t* p, int, int) {
  auto* l = static_cast<Listener*>(p->data);
  l->pooler->accept_ready(l);
}

// Binds and listens; 0 or a libuv (negative errno) error code.
// With several workers each binds its own TCP socket with SO_REUSEPORT and the
// kernel spreads new connections over them.
int open_listener(Listener* l, uv_loop_t* loop, const sockaddr* sa, socklen_t len, int backlog, bool reuseport) {
  int fd = new_socket(sa->sa_family);
  if (fd < 0) return fd;
  int one = 1;
  if (sa->sa_family != AF_UNIX) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = -errno;
    ::close(fd);
    return e;
  }
  if (::bind(fd, sa, len) != 0 || ::listen(fd, backlog) != 0) {
    int e = -errno;
    ::close(fd);
    return e;
  }
  l->fd = fd;
  uv_poll_init_socket(loop, &l->poll, fd);
  l->poll.data = l;
  uv_poll_start(&l->poll, UV_READABLE, on_listener_ready);
  return 0;
}

void close_listener(Listener* l) {
  if (l->closed || l->fd < 0) return;
  l->closed = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), [](uv_handle_t* h) {
    auto* ls = static_cast<Listener*>(h->data);
    ::close(ls->fd);
    ls->fd = -1;
  });
}

}  // namespace

// Accepts what is pending (bounded, so one busy listener cannot starve the loop).
void Pooler::accept_ready(Listener* l) {
  for (int i = 0; i < 256 && !l->closed; i++) {
    int fd = ::accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (l->unix_socket && hub_->threaded()) {
        // One worker listens on the Unix socket (SO_REUSEPORT is for TCP): it hands
        // the connections round-robin to all workers.
        int to = int(unix_rr_++ % std::uint32_t(hub_->size()));
        if (to != shard_ && hub_->post(to, {Hub::MsgKind::Accept, std::uint32_t(fd), 1})) continue;
      }
      on_accept(l->unix_socket, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // Out of descriptors: leave the connections in the backlog and stop watching the
      // socket (it would stay readable); the janitor tries again every 250 ms.
      if (!l->out_of_fds) LOG_WARN("accept failed: %s; new connections wait until descriptors free up", std::strerror(errno));
      l->out_of_fds = true;
      uv_poll_stop(&l->poll);
      return;
    }
    LOG_WARN("accept failed: %s", std::strerror(errno));
    return;
  }
}

bool Pooler::start() {
  const auto& set = cfg_.pooler;
  std::string tls_err;
  if (!setup_tls(tls_err)) {
    LOG_ERROR("TLS: %s", tls_err.c_str());
    return false;
  }
  std::string addrs = set.listen_addr;
  std::size_t pos = 0;
  bool any = false;
  while (pos <= addrs.size()) {
    std::size_t comma = addrs.find(',', pos);
    std::string a = addrs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? addrs.size() + 1 : comma + 1;
    a.erase(0, a.find_first_not_of(" \t"));
    a.erase(a.find_last_not_of(" \t") + 1);
    if (a.empty()) continue;
    if (a == "*") a = "0.0.0.0";
    if (a == "localhost") a = "127.0.0.1";
    sockaddr_storage ss{};
    if (uv_ip4_addr(a.c_str(), set.listen_port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
        uv_ip6_addr(a.c_str(), set.listen_port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      LOG_ERROR("listen_addr: cannot parse address \"%s\"", a.c_str());
      return false;
    }
    auto l = std::make_unique<Listener>();
    l->pooler = this;
    int rc = open_listener(l.get(), loop_, reinterpret_cast<sockaddr*>(&ss), sockaddr_len(ss),
                           std::max(set.listen_backlog, 1), hub_->threaded());
    if (rc != 0) {
      LOG_ERROR("cannot listen on %s:%d: %s", a.c_str(), set.listen_port, uv_strerror(rc));
      return false;
    }
    if (shard_ == 0) LOG_INFO("listening on %s:%d", a.c_str(), set.listen_port);
    listeners_.push_back(std::move(l));
    any = true;
  }
  if (!set.unix_socket_dir.empty() && shard_ == 0) {
    auto l = std::make_unique<Listener>();
    l->pooler = this;
    l->unix_socket = true;
    l->path = set.unix_socket_dir + "/.s.PGSQL." + std::to_string(set.listen_port);
    ::unlink(l->path.c_str());
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (l->path.size() >= sizeof sun.sun_path) {
      LOG_ERROR("cannot listen on unix socket %s: path too long", l->path.c_str());
      return false;
    }
    std::memcpy(sun.sun_path, l->path.c_str(), l->path.size() + 1);
    int rc = open_listener(l.get(), loop_, reinterpret_cast<sockaddr*>(&sun), socklen_t(sizeof sun),
                           std::max(set.listen_backlog, 1), false);
    if (rc != 0) {
      LOG_ERROR("cannot listen on unix socket %s: %s", l->path.c_str(), uv_strerror(rc));
      return false;
    }
    ::chmod(l->path.c_str(), 0777);
    LOG_INFO("listening on unix socket %s", l->path.c_str());
    listeners_.push_back(std::move(l));
    any = true;
  }
  if (!any && shard_ == 0) {
    LOG_ERROR("nothing to listen on: set listen_addr or unix_socket_dir");
    return false;
  }
  if (shard_ == 0 && !start_http()) return false;
  if (hub_->threaded()) {
    uv_async_init(loop_, &hub_async_, [](uv_async_t* a) { static_cast<Pooler*>(a->data)->hub_message(); });
    hub_async_.data = this;
    hub_async_on_ = true;
    hub_->attach(shard_, &hub_async_);
  }

  uv_timer_init(loop_, &janitor_);
  janitor_.data = this;
  uv_timer_start(&janitor_, [](uv_timer_t* t) { static_cast<Pooler*>(t->data)->janitor(); }, 250, 250);

  uv_check_init(loop_, &flush_check_);
  flush_check_.data = this;
  uv_check_start(&flush_check_, [](uv_check_t* c) { static_cast<Pooler*>(c->data)->flush_dirty(); });
  uv_idle_init(loop_, &flush_idle_);
  flush_idle_.data = this;

  if (shard_ != 0) return true;  // worker 0 watches the signals for all
  auto sig = [](uv_signal_t* h, int signum) { static_cast<Pooler*>(h->data)->on_signal(signum); };
  for (auto [h, num] : {std::pair{&sig_hup_, SIGHUP}, {&sig_int_, SIGINT}, {&sig_term_, SIGTERM}, {&sig_quit_, SIGQUIT},
                        {&sig_usr1_, SIGUSR1}, {&sig_usr2_, SIGUSR2}}) {
    uv_signal_init(loop_, h);
    h->data = this;
    uv_signal_start(h, sig, num);
  }
  return true;
}

int Pooler::run() { return uv_run(loop_, UV_RUN_DEFAULT); }

void Pooler::on_accept(bool unix_socket, int fd) {
  auto* c = new Client();
  c->pooler = this;
  c->is_client = true;
  c->id = next_id();
  c->node.owner = c;
  c->unix_socket = c->unix_sock = unix_socket;
  if (!c->attach(fd)) {
    LOG_WARN("cannot watch a new connection; closed it");
    delete c;
    return;
  }
  if (!unix_socket) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg_.pooler.tcp_keepalive) set_keepalive(fd);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) c->remote.set(ss);
  } else {
    c->remote.family = AF_UNIX;
  }
  c->connect_time = c->request_time = now();
  if (suspended_) c->want_read = false;
  client_count_++;
  hub_->clients.fetch_add(1, std::memory_order_relaxed);
  cl_login_.push_back(&c->node);
  c->update_reading();
}

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

// The "pid" of a client's BackendKeyData is its slot in cancel_slots_ (plus one),
// the key 32 random bits, as PostgreSQL's: a lookup costs an index, and the
// table 8 bytes per client.
void Pooler::register_cancel_key(Client* c) {
  if (c->cancel_pid) return;
  std::uint32_t slot;
  if (!free_cancel_slots_.empty()) {
    slot = free_cancel_slots_.back();
    free_cancel_slots_.pop_back();
  } else {
    slot = std::uint32_t(cancel_slots_.size());
    cancel_slots_.push_back(nullptr);
  }
  cancel_slots_[slot] = c;
  // The worker's number in the high bits: a CancelRequest reaching another worker
  // is passed on to this one.
  c->cancel_pid = std::uint32_t(shard_) << kCancelShardShift | (slot + 1);
  proto::random_bytes(reinterpret_cast<std::uint8_t*>(&c->cancel_key), sizeof c->cancel_key);
}

void Pooler::unregister_cancel_key(Client* c) {
  if (!c->cancel_pid) return;
  std::uint32_t slot = (c->cancel_pid & kCancelSlotMask) - 1;
  if (slot < cancel_slots_.size() && cancel_slots_[slot] == c) {
    cancel_slots_[slot] = nullptr;
    free_cancel_slots_.push_back(slot);
  }
  c->cancel_pid = 0;
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
    admin_login(c);
    return;
  }
  DbEntry* db = find_db(c->db_name);
  UserEntry* user = find_user(c->user_name);
  std::string server_user = c->user_name;
  if (db && !db->cfg.user.empty()) {
    server_user = db->cfg.user;
    auto& fu = users_[server_user];
    if (!fu) {
      // Forced user known only from the database entry.
      fu = std::make_unique<UserEntry>();
      fu->counts = hub_->user_count(server_user);
      fu->cfg.name = server_user;
      fu->cfg.password = db->cfg.password;
    }
    user = fu.get();
  }
  if (!db || !user) {
    disconnect_client(c, Reason::NoSuchDatabase, {c->db_name.str()});
    return;
  }
  if (db->disabled) {
    disconnect_client(c, Reason::DatabaseDisabled, {c->db_name.str()});
    return;
  }
  if (!user->counts) user->counts = hub_->user_count(server_user);
  auto limit = [](int n) { return n > 0 ? n : -1; };
  if (!reserve_slot(db->counts->clients, limit(db->cfg.max_db_client_connections))) {
    disconnect_client(c, Reason::TooManyDbClients);
    return;
  }
  if (!reserve_slot(user->counts->clients, limit(user->cfg.max_user_client_connections))) {
    db->counts->clients.fetch_sub(1, std::memory_order_relaxed);
    disconnect_client(c, Reason::TooManyUserClients);
    return;
  }
  if (user->cfg.name.empty()) user->cfg.name = server_user;
  Pool* p = get_pool(db, c->db_name, user, server_user);
  c->pool = p;
  p->stats.client_login_count++;
  register_cancel_key(c);
  if (p->have_welcome || adopt_welcome(p)) {
    send_welcome(c);
    client_change_state(c, ClientState::Idle);
    return;
  }
  if (p->last_login_failure && now() - p->last_login_failure < secs(cfg_.pooler.server_login_retry) &&
      !(holds_through_outage(p) && p->last_login_sqlstate == sqlstate_of(Reason::ServerConnectFailed))) {
    // With the failing server's own SQLSTATE, when it sent one.
    disconnect_client(c, p->last_login_sqlstate.empty() ? sqlstate_of(Reason::LoginRetry) : p->last_login_sqlstate.c_str(),
                      reason_text(Reason::LoginRetry, {p->last_login_error}), true);
    return;
  }
  c->login = LoginStep::WaitWelcome;
  client_change_state(c, ClientState::Login);
  if (p->sv_login.empty() && !pool_paused(p)) try_launch(p, false);
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
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
  c->login = LoginStep::Done;

}

void Pooler::client_request(Client* c) {
  c->wait_start = now();
  client_change_state(c, ClientState::Waiting);
  pool_service(c->pool);
}

void Pooler::disconnect_client(Client* c, Reason why, std::initializer_list<std::string_view> args) {
  const ReasonInfo& r = reason_info(why);
  disconnect_client(c, r.sqlstate, reason_text(why, args), r.tell);
}

void Pooler::disconnect_client(Client* c, const char* sqlstate, const std::string& reason, bool notify) {
  if (c->state == ClientState::Closing || c->closing || c->exiting) return;
  c->exiting = true;  // a failing write below re-enters through on_closed()
  if (notify && sqlstate) {
    c->send_error("FATAL", sqlstate, reason);
    c->flush();
  }
  Pool* p = c->pool;
  // PgBouncer's wording, so log-based alerts written for it keep firing.
  if (notify && sqlstate && cfg_.pooler.log_pooler_errors) {
    LOG_WARN("C-%llu: %s/%s@%s pooler error: %s", (unsigned long long)c->id, c->db_name.c_str(),
             c->user_name.c_str(), c->remote.str().c_str(), reason.c_str());
  }
  if (cfg_.pooler.log_disconnections && c->state != ClientState::Cancel) {
    LOG_INFO("C-%llu: %s/%s@%s closing because: %s (age=%llus)", (unsigned long long)c->id, c->db_name.c_str(),
             c->user_name.c_str(), c->remote.str().c_str(), reason.c_str(),
             (unsigned long long)((now() - c->connect_time) / 1000));
  }
  if (Server* s = c->server) {
    s->client = nullptr;
    c->server = nullptr;
    s->release_after_forward = false;
    bool boundary = s->expect_z == 0 && s->internal_z == 0 && c->fwd_left == 0 && !s->closing;
    if (!boundary) {
      // The backend may be running for a long time (and holding locks) without
      // noticing its socket closed: cancel what runs, then close.
      if (s->expect_z > 0 && s->connected && s->ready && s->pid) send_cancel(s);
      disconnect_server(s, "client disconnected while the server was busy");
    } else {
      bool session = pool_mode(p) == config::PoolMode::Session;
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
  if (c->admin && !pending_admin_.empty()) {
    pending_admin_.erase(std::remove_if(pending_admin_.begin(), pending_admin_.end(),
                                        [&](const PendingAdmin& pa) { return pa.client == c; }),
                         pending_admin_.end());
  }
  unregister_cancel_key(c);
  if (p) {
    p->db->counts->clients.fetch_sub(1, std::memory_order_relaxed);
    if (p->user) p->user->counts->clients.fetch_sub(1, std::memory_order_relaxed);
  }
  client_count_--;
  hub_->clients.fetch_sub(1, std::memory_order_relaxed);
  client_change_state(c, ClientState::Closing);
  c->start_close();
  if (p) pool_service(p);
}

// ---------------------------------------------------------------------------
// Cancel requests go to the server running the client's query, on a new connection.

namespace {

void close_cancel(CancelConn* x) {
  uv_close(&x->h.handle, [](uv_handle_t* h) { delete static_cast<CancelConn*>(h->data); });
}

void on_cancel_connect(uv_connect_t* req, int status) {
  auto* x = static_cast<CancelConn*>(req->data);
  if (status < 0) {
    close_cancel(x);
    return;
  }
  uv_buf_t b = uv_buf_init(x->packet.data(), unsigned(x->packet.size()));
  x->wreq.data = x;
  if (uv_write(&x->wreq, &x->h.stream, &b, 1, [](uv_write_t* w, int) {
        // PostgreSQL closes after reading the request; nothing comes back.
        close_cancel(static_cast<CancelConn*>(w->data));
      }) != 0) {
    close_cancel(x);
  }
}

}  // namespace

void Pooler::handle_cancel(std::uint32_t pid, std::uint32_t key) {
  int owner = int(pid >> kCancelShardShift);
  if (owner != shard_) {
    if (owner < hub_->size()) hub_->post(owner, {Hub::MsgKind::Cancel, pid, key});
    return;
  }
  std::uint32_t slot = pid & kCancelSlotMask;
  if (slot == 0 || slot > cancel_slots_.size()) return;
  Client* c = cancel_slots_[slot - 1];
  if (!c || c->cancel_key != key) return;
  Server* s = c->server;
  if (!s || !s->connected) return;
  send_cancel(s);
}

void Pooler::send_cancel(Server* s) {
  auto* cc = new CancelConn();
  cc->pooler = this;
  proto::cancel_request(cc->packet, s->pid, s->key);
  cc->req.data = cc;
  if (s->unix_sock) {
    uv_pipe_init(loop_, &cc->h.pipe, 0);
    cc->h.handle.data = cc;
    std::string path = s->host + "/.s.PGSQL." + std::to_string(s->server_port);
    uv_pipe_connect(&cc->req, &cc->h.pipe, path.c_str(), on_cancel_connect);
    return;
  }
  uv_tcp_init(loop_, &cc->h.tcp);
  cc->h.handle.data = cc;
  if (uv_tcp_connect(&cc->req, &cc->h.tcp, reinterpret_cast<const sockaddr*>(&s->sa), on_cancel_connect) != 0) {
    close_cancel(cc);
  }
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

ListHead* Pool::list_of(ClientState s) {
  switch (s) {
    case ClientState::Login: return &cl_login;
    case ClientState::Idle: return &cl_idle;
    case ClientState::Waiting: return &cl_waiting;
    case ClientState::Active: return &cl_active;
    case ClientState::Cancel:
    case ClientState::Closing: break;
  }
  return nullptr;
}

ListHead* Pool::list_of(ServerState s) {
  switch (s) {
    case ServerState::Login: return &sv_login;
    case ServerState::Idle: return &sv_idle;
    case ServerState::Active: return &sv_active;
    case ServerState::Used: return &sv_used;
    case ServerState::Tested: return &sv_tested;
    case ServerState::Closing: break;
  }
  return nullptr;
}

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
  const config::Node& tnode = s->pooler->active_node(s->pool->db);
  auto sm = tnode.options.find("sslmode");
  s->sslmode = sm != tnode.options.end() ? sm->second : s->pooler->settings().server_tls_sslmode;
  if (!s->unix_sock) {
    int one = 1;
    ::setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s->pooler->settings().tcp_keepalive) set_keepalive(s->fd);
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
  const config::Node& node = s->pooler->active_node(s->pool->db);
  auto opt = node.options.find("options");
  if (opt != node.options.end()) params.emplace_back("options", opt->second);
  // Per-database startup settings, as PgBouncer's connect string allows; they
  // become the pool's defaults that clients see at login.
  const config::Database& dbc = s->pool->db->cfg;
  for (const auto& [k, v] : dbc.params) params.emplace_back(k, v);
  if (!dbc.application_name.empty()) params.emplace_back("application_name", dbc.application_name);
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

void Pooler::launch_server(Pool* p) {
  const config::Node& node = active_node(p->db);
  auto* s = new Server();
  s->pooler = this;
  s->id = next_id();
  s->node.owner = s;
  s->pool = p;
  s->host = node.host;
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
  server_login_failed(s, sqlstate_of(why), reason_text(why, args));
}

void Pooler::server_login_failed(Server* s, const std::string& sqlstate, const std::string& msg) {
  Pool* p = s->pool;
  p->last_login_failure = std::max<Ms>(now(), 1);
  p->last_login_error = msg;
  p->last_login_sqlstate = sqlstate;
  LOG_WARN("S-%llu: %s/%s@%s server login failed: %s", (unsigned long long)s->id, p->db_name.c_str(),
           p->user_name.c_str(), s->addr.c_str(), msg.c_str());
  // Clients waiting for this pool's first login hear why it failed -- unless the
  // node is merely unreachable and the cluster can fail over: then they wait.
  if (!(sqlstate == sqlstate_of(Reason::ServerConnectFailed) && holds_through_outage(p))) {
    p->cl_login.for_each<Client>([&](Client* c) { disconnect_client(c, sqlstate.c_str(), msg, true); });
  }
  disconnect_server(s, "login failed");
}

void Pooler::server_ready(Server* s) {
  Pool* p = s->pool;
  s->ready = true;
  p->last_login_failure = 0;
  if (p->db->crt) p->db->crt->note_datapath_ok(now());
  if (!p->have_welcome) {
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

// Clients waiting for the pool's parameters get them (the pool has them now).
void Pooler::welcome_login_clients(Pool* p) {
  p->cl_login.for_each<Client>([&](Client* c) {
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
  server_change_state(s, ServerState::Idle);
  pool_service(s->pool);
}

void Pooler::client_server_lost(Client* c, Server* s) {
  ClusterRt* cl = s->pool->db->crt;
  bool replayable = s->begin_in_flight && !s->answered && s->expect_z == 1 && !s->unsynced && c->has_replay();
  if (replayable && !s->query_timed_out && holds_through_outage(s->pool)) {
    // Only a BEGIN was in flight, outside a transaction: nothing happened that the
    // client could see. It waits for the next server, which gets the same BEGIN.
    LOG_WARN("C-%llu: %s/%s@%s server connection lost with a BEGIN in flight; replayed on the next server",
             (unsigned long long)c->id, c->db_name.c_str(), c->user_name.c_str(), c->remote.str().c_str());
    c->wait_start = now();
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
  if (s->query_timed_out) {
    // Not a sick server but a slow statement: say so, with the SQLSTATE of a
    // statement_timeout (PostgreSQL's query_canceled).
    e.sqlstate = sqlstate_of(Reason::QueryTimeout);
    e.message = reason_text(Reason::QueryTimeout);
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

void Pooler::link(Client* c, Server* s) {
  c->server = s;
  s->client = c;
  client_change_state(c, ClientState::Active);
  server_change_state(s, ServerState::Active);
  Pool* p = c->pool;
  p->stats.server_assignment_count++;
  if (c->wait_start) p->stats.wait_time += (now() - c->wait_start) * 1000;
  c->wait_start = 0;
  s->expect_z = 0;
  s->tracking = tracks_prepared(p);
  s->slots.clear();
  s->skip_to_sync = false;
  s->unsynced = false;
  s->commit_in_flight = false;
  s->begin_in_flight = false;
  s->begin_sent = false;
  s->answered = false;
  s->query_start = now();
  std::string sets;
  for (int i = 0; i < kTrackedCount; i++) {
    const auto& want = c->params.get(i);
    if (!want) continue;
    const auto& have = s->params.get(i);
    if (have && *have == *want) continue;
    sets += "SET ";
    sets += kTrackedParams[i];
    sets += " = ";
    sets += quote_literal(*want);
    sets += ";";
  }
  if (!sets.empty()) run_internal_query(s, sets);
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

void Pooler::server_release(Server* s) {
  Client* c = s->client;
  Pool* p = s->pool;
  s->client = nullptr;
  if (c) {
    c->server = nullptr;
    client_change_state(c, ClientState::Idle);
  }
  if (!s->closing) {
    Ms age = now() - s->connect_time;
    if (pool_paused(p) && !suspended_) {
      disconnect_server(s, "PAUSE");
    } else if (s->close_needed || (secs(cfg_.pooler.server_lifetime) && age > secs(cfg_.pooler.server_lifetime))) {
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
  if (shutting_down_ && c) {
    disconnect_client(c, Reason::ShuttingDown);
    c = nullptr;
  }
  // Other workers wait for this pool's slots: keep no more than a fair share.
  if (hub_->threaded() && s->state == ServerState::Idle) give_back_servers(p);
  // A switchover waiting for transactions to end can go on as soon as the last one does.
  if (p->db->crt && p->db->crt->fsm.mode() == failover::Mode::Draining) {
    WorldLock wl(hub_, shard_);
    control()->cluster_progress(p->db->crt);
  }
  pool_service(p);
  if (c && !c->closing && c->rbuf && c->rend > c->rparse) c->process();
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
      client_server_lost(c, s);
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
  if (!pending_admin_.empty()) {
    WorldLock wl(hub_, shard_);
    finish_pending_admin();
  }
}

// ---------------------------------------------------------------------------
// Assignment

bool Pooler::may_launch(Pool* p) const {
  if (shutting_down_ || pool_paused(p)) return false;
  if (p->last_login_failure && uv_now(loop_) - p->last_login_failure < secs(cfg_.pooler.server_login_retry)) {
    return false;
  }
  return true;
}

// The limits count servers of every worker: a slot is taken with a compare-and-swap
// before the server is opened and given back in disconnect_server, so no
// interleaving of workers can exceed pool_size (+ reserve_pool_size),
// max_db_connections or max_user_connections.
bool Pooler::try_launch(Pool* p, bool use_reserve) {
  if (!may_launch(p)) return false;
  if (hub_->threaded() && (p->shared->wanted.load(std::memory_order_relaxed) & ~(std::uint64_t(1) << shard_)) &&
      p->server_total() >= std::max(fair_share(p, true), 1)) {
    // Others wait for this pool's slots: a slot freed here is theirs.
    want_servers(p);
    return false;
  }
  int limit = pool_size(p) + (use_reserve ? reserve_size(p) : 0);
  int maxdb = max_db_connections(p), maxuser = max_user_connections(p);
  if (!reserve_slot(p->shared->servers, std::max(limit, 0))) {
    want_servers(p);
    return false;
  }
  if (!reserve_slot(p->db->counts->servers, maxdb > 0 ? maxdb : -1)) {
    p->shared->servers.fetch_sub(1, std::memory_order_relaxed);
    want_servers(p);
    return false;
  }
  if (p->user && !reserve_slot(p->user->counts->servers, maxuser > 0 ? maxuser : -1)) {
    p->shared->servers.fetch_sub(1, std::memory_order_relaxed);
    p->db->counts->servers.fetch_sub(1, std::memory_order_relaxed);
    want_servers(p);
    return false;
  }
  launch_server(p);
  return true;
}

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

void Pooler::pool_service(Pool* p) {
  if (pool_paused(p)) return;  // PAUSE / SUSPEND: waiting clients stay waiting
  if (p->servicing) {
    p->service_again = true;
    return;
  }
  p->servicing = true;
  do {
    p->service_again = false;
    while (!p->cl_waiting.empty()) {
      // LIFO keeps a few servers warm; server_round_robin spreads load over all of them.
      Server* s = cfg_.pooler.server_round_robin ? p->sv_idle.back<Server>() : p->sv_idle.front<Server>();
      if (s) {
        Ms idle_for = now() - s->last_used;
        if (!cfg_.pooler.server_check_query.empty() && cfg_.pooler.server_check_delay >= 0 &&
            idle_for > secs(cfg_.pooler.server_check_delay)) {
          // Idle long enough to doubt: check it before handing it out.
          server_change_state(s, ServerState::Tested);
          run_internal_query(s, cfg_.pooler.server_check_query);
          continue;
        }
        Client* c = p->cl_waiting.front<Client>();
        link(c, s);
        c->process();
        continue;
      }
      int starting = int(p->sv_login.size() + p->sv_tested.size());
      if (int(p->cl_waiting.size()) <= starting) break;
      Client* oldest = p->cl_waiting.front<Client>();
      bool reserve = now() - oldest->wait_start >= secs(cfg_.pooler.reserve_pool_timeout);
      if (!try_launch(p, reserve)) break;
    }
  } while (p->service_again);
  p->servicing = false;
}

// ---------------------------------------------------------------------------
// Janitor: timeouts, pool minimums, shutdown progress. Runs every 250 ms.

void Pooler::janitor() {
  const auto& set = cfg_.pooler;
  Ms t = now();
  for (auto& l : listeners_) {
    if (l->out_of_fds && !l->closed) {
      l->out_of_fds = false;
      uv_poll_start(&l->poll, UV_READABLE, on_listener_ready);
    }
  }
  cl_login_.for_each<Client>([&](Client* c) {
    if (secs(set.client_login_timeout) && t - c->connect_time > secs(set.client_login_timeout)) {
      disconnect_client(c, Reason::LoginTimeout);
    }
  });
  for (auto& [key, pp] : pools_) {
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
    int min = min_pool_size(p);
    auto total = [&] { return p->shared->servers.load(std::memory_order_relaxed); };
    p->sv_idle.for_each<Server>([&](Server* s) {
      if (s->close_needed) {
        disconnect_server(s, "configuration changed");
      } else if (secs(set.server_lifetime) && t - s->connect_time > secs(set.server_lifetime) && total() > min) {
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
  if (shard_ == 0) health_tick();
  if (!last_stats_tick_) last_stats_tick_ = t;
  if (shard_ == 0 && t - last_stats_tick_ >= secs(set.stats_period > 0 ? set.stats_period : 60)) {
    last_stats_tick_ = t;
    stats_tick();
  }
  if (!pending_admin_.empty()) {
    WorldLock wl(hub_, shard_);
    finish_pending_admin();
  }
  if (wait_for_clients_ && client_count_ == 0) shutdown_now();
  if (shutting_down_ && !wait_for_clients_) check_shutdown_done();
}

// ---------------------------------------------------------------------------
// Signals and shutdown

// Signals are watched by worker 0 and act on every worker.
void Pooler::on_signal(int signum) {
  WorldLock wl(hub_, shard_);
  switch (signum) {
    case SIGHUP: {
      LOG_INFO("got SIGHUP, re-reading config %s", cfg_.path.c_str());
      notify_service("RELOADING=1");
      reload();
      // The log file anew (logrotate moved it away), under its name after the reload.
      std::string err;
      if (!log_reopen(cfg_.pooler.logfile, &err))
        LOG_ERROR("cannot reopen logfile %s: %s; still writing to the old one", cfg_.pooler.logfile.c_str(),
                  err.c_str());
      notify_service("READY=1");
      break;
    }
    case SIGINT:
      notify_service("STOPPING=1");
      LOG_INFO("got SIGINT, shutting down, waiting for all servers connections to be released");
      for (Pooler* w : world()) w->begin_safe_shutdown();
      break;
    case SIGTERM:
      notify_service("STOPPING=1");
      LOG_INFO("got SIGTERM, shutting down, waiting for all clients disconnect");
      for (Pooler* w : world()) w->begin_wait_for_clients();
      break;
    case SIGUSR1:
      LOG_INFO("got SIGUSR1, pausing all activity");
      for (Pooler* w : world()) w->paused_all_ = true;
      for (Pooler* w : world()) w->pause_sweep();
      break;
    case SIGUSR2:
      LOG_INFO("got SIGUSR2, continuing");
      for (Pooler* w : world()) {
        w->paused_all_ = false;
        if (w->suspended_) w->suspend(false);
        for (auto& [n, d] : w->dbs_) d->paused = false;
      }
      for (Pooler* w : world()) {
        for (auto& [k, p] : w->pools_) w->pool_service(p.get());
      }
      break;
    default:
      LOG_INFO("got SIGQUIT, fast exit");
      shutdown_all();
      break;
  }
}

void Pooler::shutdown_all() {
  for (Pooler* w : world()) w->shutdown_now();
}

void Pooler::close_listeners() {
  for (auto& l : listeners_) {
    if (!l->closed) {
      close_listener(l.get());
      if (l->unix_socket) ::unlink(l->path.c_str());
    }
  }
  close_http(false);
}

void Pooler::begin_wait_for_clients() {
  // New connections are refused; connected clients keep being served until they leave.
  wait_for_clients_ = true;
  close_listeners();
  if (client_count_ == 0) shutdown_now();
}

void Pooler::begin_safe_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  close_listeners();
  check_shutdown_done();
}

bool Pooler::check_shutdown_done() {
  // Clients without a transaction in flight go now; the others when it ends.
  cl_login_.for_each<Client>([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); });
  bool busy = false;
  for (auto& [key, pp] : pools_) {
    Pool* p = pp.get();
    p->each_client([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); }, {ClientState::Login, ClientState::Idle, ClientState::Waiting});
    p->cl_active.for_each<Client>([&](Client* c) {
      Server* s = c->server;
      if (s && s->expect_z == 0 && s->txn == 'I') {
        disconnect_client(c, Reason::ShuttingDown);
      } else {
        busy = true;
      }
    });
    p->sv_idle.for_each<Server>([&](Server* s) { disconnect_server(s, "shutting down"); });
    p->sv_used.for_each<Server>([&](Server* s) { disconnect_server(s, "shutting down"); });
    if (!p->sv_tested.empty() || !p->sv_active.empty()) busy = true;
  }
  if (!busy) shutdown_now();
  return !busy;
}

void Pooler::shutdown_now() {
  if (stopping_) return;
  stopping_ = true;
  shutting_down_ = true;
  close_listeners();
  close_http(true);
  cl_login_.for_each<Client>([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); });
  for (auto& [key, pp] : pools_) {
    Pool* p = pp.get();
    p->each_client([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); });
    p->each_server([&](Server* s) { disconnect_server(s, "shutting down"); });
  }
  close_health_checks();
  if (hub_async_on_) {
    // From here on this worker no longer parks: the others stop waiting for it.
    hub_async_on_ = false;
    hub_->exited(shard_);
    uv_close(reinterpret_cast<uv_handle_t*>(&hub_async_), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&janitor_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_idle_), nullptr);
  if (shard_ == 0) {
    for (uv_signal_t* h : {&sig_hup_, &sig_int_, &sig_term_, &sig_quit_, &sig_usr1_, &sig_usr2_}) {
      uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    }
  }
}

// ---------------------------------------------------------------------------
// Output batching: connections with queued bytes are flushed once per loop turn.

void Pooler::mark_dirty(Conn* c) {
  if (c->dirty || c->closing) return;
  c->dirty = true;
  dirty_.push_back(c);
  mark_dirty_loop();
}

void Pooler::mark_dirty_loop() {
  if (!flush_idle_on_ && !stopping_) {
    // An active idle handle keeps the loop from blocking in poll before the flush.
    uv_idle_start(&flush_idle_, [](uv_idle_t*) {});
    flush_idle_on_ = true;
  }
}

void Pooler::defer_free(Conn* c) {
  free_later_.push_back(c);
  mark_dirty_loop();
}

void Pooler::flush_dirty() {
  if (!free_later_.empty()) {
    std::vector<Conn*> v;
    v.swap(free_later_);
    for (Conn* c : v) free_conn(c);
  }
  while (!dirty_.empty()) {
    flush_batch_.swap(dirty_);
    for (Conn* c : flush_batch_) {
      c->dirty = false;
      if (!c->closing) c->flush();
    }
    flush_batch_.clear();
  }
  if (flush_idle_on_) {
    uv_idle_stop(&flush_idle_);
    flush_idle_on_ = false;
  }
}

void Pooler::free_conn(Conn* c) {
  if (!c->is_client) static_cast<Server*>(c)->forget_resolve();
  if (c->dirty) {
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), c), dirty_.end());
  }
  c->free_buffers();
  delete c;
}

}  // namespace pgpivot
