// One worker's reactor: construction and configuration (start, reload), signals
// and shutdown, PAUSE and SUSPEND. What happens to a
// connection is elsewhere: docs/architecture.md lists the files.
#include "pooler/pooler.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "config/load.hpp"
#include "config/settings.hpp"

namespace pgpivot {

// ---------------------------------------------------------------------------
Pooler::Pooler(config::Config cfg, uv_loop_t* loop, Hub* hub, int shard)
    : loop_(loop),
      own_hub_(hub ? nullptr : std::make_unique<Hub>(1)),
      hub_(hub ? hub : own_hub_.get()),
      shard_(shard),
      bufs_(std::uint32_t(std::max(cfg.pooler.pkt_buf, 1024))),  // config says so below 1024
      outqs_(bufs_),
      registry_(cfg_, this, *hub_, shard),
      cancels_(shard) {
  hub_->set_shard(shard_, this);
  apply_config(std::move(cfg));
  cancels_.set_peer_id(cfg_.pooler.peer_id);  // for the life of the process
}

std::vector<Pool*> Pooler::world_pools() {
  std::vector<Pool*> v;
  for (Pooler* w : world()) {
    w->registry_.each_pool([&](Pool* p) { v.push_back(p); });
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

Pooler::~Pooler() = default;

void Pooler::apply_config(config::Config cfg) {
  // The old config (and the clusters DbEntry::cluster points into) dies below:
  // remember each cluster's nodes first to notice databases that moved.
  std::map<std::string, std::pair<config::Node, std::optional<config::Node>>> old_nodes;
  for (const auto& [name, cl] : cfg_.clusters) old_nodes[name] = {cl.primary, cl.standby};
  cfg_ = std::move(cfg);
  set_log_verbose(cfg_.pooler.verbose);
  registry_.apply(old_nodes);
  clusters_.sync();
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
  // TLS first: when the new settings do not make usable contexts, nothing changes.
  std::string tls_err;
  if (!apply_tls(np, tls_err)) {
    if (talk) {
      LOG_ERROR("TLS setup failed: %s", tls_err.c_str());
      LOG_ERROR("TLS configuration could not be reloaded, keeping old configuration");
    }
    return false;
  }
  apply_config(std::move(next));
  if (talk) LOG_INFO("configuration reloaded from %s", cfg_.path.c_str());
  registry_.each_pool([&](Pool* p) { pool_service(p); });
  return true;
}

// New TLS contexts from `p` (TlsContexts::setup); when the settings towards
// PostgreSQL changed, every server is closed at its next release or while idle
// instead of being reused, so that none keeps the old TLS settings (PgBouncer's
// tag_pool_dirty). false and `err` when the contexts cannot be built: the old ones stay.
bool Pooler::apply_tls(const config::Pooler& p, std::string& err) {
  bool server_changed = false;
  if (!tls_.setup(p, err, &server_changed)) return false;
  if (server_changed) {
    registry_.each_pool([](Pool* pool) {
      if (!pool->admin) pool->each_server([](Server* s) { s->close_needed = true; });
    });
  }
  return true;
}

bool Pooler::start() {
  std::string tls_err;
  if (!tls_.setup(cfg_.pooler, tls_err)) {
    LOG_ERROR("TLS: %s", tls_err.c_str());
    return false;
  }
  if (!open_listeners()) return false;
  if (shard_ == 0 && !http_start(http_, *this)) return false;
  if (hub_->threaded()) {
    uv_async_init(loop_, &hub_async_, [](uv_async_t* a) { static_cast<Pooler*>(a->data)->hub_message(); });
    hub_async_.data = this;
    hub_async_on_ = true;
    hub_->attach(shard_, &hub_async_);
  }

  uv_timer_init(loop_, &janitor_);
  janitor_.data = this;
  uv_timer_start(&janitor_, [](uv_timer_t* t) { static_cast<Pooler*>(t->data)->janitor(); }, 250, 250);

  flusher_.start(loop_, [](void* self, Conn* c) { static_cast<Pooler*>(self)->free_conn(c); }, this);

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
    case SIGTERM: {
      const char* name = signum == SIGINT ? "SIGINT" : "SIGTERM";
      if (shutdown_pending()) {
        // PgBouncer 1.23+: a second SIGINT or SIGTERM does not wait any longer.
        LOG_INFO("got %s while shutting down, fast exit", name);
        shutdown_all();
        break;
      }
      notify_service("STOPPING=1");
      if (signum == SIGINT) {
        LOG_INFO("got SIGINT, shutting down, waiting for all servers connections to be released");
        for (Pooler* w : world()) w->begin_safe_shutdown();
      } else {
        LOG_INFO("got SIGTERM, shutting down, waiting for all clients disconnect");
        for (Pooler* w : world()) w->begin_wait_for_clients();
      }
      break;
    }
    case SIGUSR1:
      LOG_INFO("got SIGUSR1, pausing all activity");
      for (Pooler* w : world()) w->paused_all_ = true;
      for (Pooler* w : world()) w->pause_sweep();
      break;
    case SIGUSR2:
      if (shutdown_pending()) {
        LOG_INFO("got SIGUSR2 while shutting down, ignoring");
        break;
      }
      LOG_INFO("got SIGUSR2, continuing");
      for (Pooler* w : world()) {
        w->paused_all_ = false;
        if (w->suspended_) w->suspend(false);
        for (auto& [n, d] : w->registry_.dbs()) d->paused = false;
      }
      for (Pooler* w : world()) w->registry_.each_pool([&](Pool* p) { w->pool_service(p); });
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

// The two waiting shutdowns (SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS, SIGINT / SHUTDOWN
// WAIT_FOR_SERVERS) stop listening on TCP at once; the Unix socket stays open until
// the exit, but only the console accepts logins there (others get "pooler is shutting
// down"), as in PgBouncer.
void Pooler::begin_wait_for_clients() {
  // Connected clients keep being served until they leave.
  wait_for_clients_ = true;
  close_listeners(true);
  if (!shutting_down_ && client_count_ == 0) {
    LOG_INFO("client connections dropped, exiting");
    shutdown_now();
  }
}

void Pooler::begin_safe_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  wait_for_clients_ = false;
  close_listeners(true);
  check_shutdown_done();
}

bool Pooler::check_shutdown_done() {
  // No new servers: clients waiting for one, and idle clients when they next want
  // one (client_request), are closed with "server shutting down". Transactions in
  // flight finish, and so do sessions in session mode (a session keeps its server
  // until its client leaves). Idle servers close; the process exits when no server
  // is left.
  bool busy = false;
  registry_.each_pool([&](Pool* p) {
    if (p->admin) return;
    p->each_client([&](Client* c) { disconnect_client(c, Reason::PoolerShuttingDown); }, {ClientState::Login});
    p->each_client([&](Client* c) { disconnect_client(c, Reason::ServerShuttingDown); }, {ClientState::Waiting});
    p->each_server([&](Server* s) { disconnect_server(s, "shutting down"); }, {ServerState::Idle, ServerState::Used});
    if (!p->sv_tested.empty() || !p->sv_active.empty() || !p->sv_login.empty()) busy = true;
  });
  if (!busy) {
    LOG_INFO("server connections dropped, exiting");
    shutdown_now();
  }
  return !busy;
}

void Pooler::shutdown_now() {
  if (stopping_) return;
  stopping_ = true;
  shutting_down_ = true;
  close_listeners();
  http_close(http_, true);
  cl_login_.for_each<Client>([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); });
  registry_.each_pool([&](Pool* p) {
    p->each_client([&](Client* c) { disconnect_client(c, Reason::ShuttingDown); });
    p->each_server([&](Server* s) { disconnect_server(s, "shutting down"); });
  });
  clusters_.close_health_checks();
  if (hub_async_on_) {
    // From here on this worker no longer parks: the others stop waiting for it.
    hub_async_on_ = false;
    hub_->exited(shard_);
    uv_close(reinterpret_cast<uv_handle_t*>(&hub_async_), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&janitor_), nullptr);
  flusher_.stop();
  if (shard_ == 0) {
    for (uv_signal_t* h : {&sig_hup_, &sig_int_, &sig_term_, &sig_quit_, &sig_usr1_, &sig_usr2_}) {
      uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    }
  }
}

void Pooler::free_conn(Conn* c) {
  if (!c->is_client) static_cast<Server*>(c)->forget_resolve();
  Pool* p = c->is_client ? static_cast<Client*>(c)->pool : static_cast<Server*>(c)->pool;
  if (p && !p->admin && --p->conns == 0) p->unused_since = now();
  flusher_.forget(c);
  c->free_buffers();
  delete c;
}

// PAUSE and SUSPEND on this worker (the console runs them on every worker).

void Pooler::pause_sweep() {
  // Paused pools keep no servers: idle ones close now, busy ones when released.
  registry_.each_pool([&](Pool* p) {
    if (p->admin || !pool_paused(p) || suspended_) return;
    p->each_server([&](Server* s) { disconnect_server(s, "PAUSE"); }, {ServerState::Idle, ServerState::Used});
  });
  console_.finish_pending();
}

void Pooler::suspend(bool on) {
  suspended_ = on;
  registry_.each_pool([&](Pool* p) {
    if (p->admin) return;
    p->each_client([&](Client* x) {
      x->want_read = !on;
      x->update_reading();
    });
    p->each_server([&](Server* s) {
      s->want_read = !on;
      s->update_reading();
    }, {ServerState::Idle, ServerState::Active, ServerState::Used, ServerState::Tested});
  });
  LOG_INFO("%s", on ? "SUSPEND: all connections stop reading" : "RESUME after SUSPEND");
}

}  // namespace pgpivot
