// Clusters: health checks with libpq's non-blocking API driven by the libuv loop
// (libpq is loaded with dlopen when the first check starts, see pq.hpp),
// and the failover / switchover / failback state machine that repoints pools.
//
// Per cluster:  Normal --(active side fails failure_threshold checks)--> Promoting
//               Normal --(SWITCHOVER / FAILBACK)--> Draining --(no server busy)--> Promoting
//               Normal --(FAILOVER)--> Promoting
//               Promoting --(target answers role_query writable)--> Normal (active = target)
// While not Normal, the cluster's pools hand out no servers: clients wait, as under PAUSE.
#include <cinttypes>
#include <cstring>
#include <ctime>

#include "pooler/pooler.hpp"
#include "pooler/pq.hpp"

namespace pgpivot {

const char* to_string(NodeState s) {
  switch (s) {
    case NodeState::Unknown: return "unknown";
    case NodeState::Up: return "up";
    case NodeState::ReadOnly: return "read-only";
    case NodeState::Down: return "down";
  }
  return "?";
}

namespace {

std::string conn_value(const std::string& v) {
  std::string out = "'";
  for (char ch : v) {
    if (ch == '\'' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "'";
}

}  // namespace

// One node's health check: a libpq connection kept open between checks, polled
// through a uv_poll_t on its socket. The poll handle is re-created whenever
// libpq changes sockets and closed before libpq closes the descriptor.
struct HealthCheck {
  Pooler* pooler = nullptr;
  ClusterRt* cl = nullptr;
  int side = 0;
  const PqApi* pq = nullptr;  // set by the first start(); conn is only ever set after it
  PGconn* conn = nullptr;
  enum class St { Idle, Connecting, Querying } st = St::Idle;
  struct PollBox {
    uv_poll_t h{};
    HealthCheck* hc = nullptr;
  };
  PollBox* poll = nullptr;
  int poll_fd = -1;
  std::uint64_t start_us = 0;
  bool ready_for_query = false;  // connection established and idle
  std::string last_error;

  ~HealthCheck() { drop(); }

  void stop_poll() {
    if (!poll) return;
    poll->hc = nullptr;
    uv_poll_stop(&poll->h);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->h),
             [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
    poll = nullptr;
    poll_fd = -1;
  }

  void drop() {
    stop_poll();
    if (conn) pq->PQfinish(conn);
    conn = nullptr;
    ready_for_query = false;
    st = St::Idle;
  }

  void watch(int events) {
    int fd = pq->PQsocket(conn);
    if (fd < 0) {
      fail("no socket");
      return;
    }
    if (poll && poll_fd != fd) stop_poll();
    if (!poll) {
      poll = new PollBox();
      poll->hc = this;
      poll->h.data = poll;
      if (uv_poll_init(pooler->loop(), &poll->h, fd) != 0) {
        delete poll;
        poll = nullptr;
        fail("cannot poll the health check socket");
        return;
      }
      poll_fd = fd;
    }
    uv_poll_start(&poll->h, events, [](uv_poll_t* h, int status, int) {
      auto* box = static_cast<PollBox*>(h->data);
      if (!box->hc) return;
      // While connecting, libpq itself says best what went wrong (e.g. connection refused).
      if (status < 0 && box->hc->st != St::Connecting) {
        box->hc->fail(uv_strerror(status));
        return;
      }
      box->hc->drive();
    });
  }

  std::string conninfo() const {
    const config::Node& n = side == 0 ? cl->cfg->primary : *cl->cfg->standby;
    std::string ci = "host=" + conn_value(n.host) + " port=" + std::to_string(n.port);
    bool has_user = false, has_db = false;
    for (const auto& [k, v] : n.options) {
      ci += " " + k + "=" + conn_value(v);
      has_user = has_user || k == "user";
      has_db = has_db || k == "dbname";
    }
    // The pool's TLS settings apply to health checks too, unless the node says otherwise.
    const auto& ps = pooler->settings();
    auto add = [&](const char* k, const std::string& v) {
      if (!v.empty() && !n.options.count(k)) ci += std::string(" ") + k + "=" + conn_value(v);
    };
    add("sslmode", ps.server_tls_sslmode);
    add("sslrootcert", ps.server_tls_ca_file);
    add("sslcert", ps.server_tls_cert_file);
    add("sslkey", ps.server_tls_key_file);
    // pgpivot's own server connections never use GSSAPI encryption; libpq's default
    // (prefer) would look for a Kerberos credential cache on every connect, which
    // initializes Kerberos (~0.5 MB of resident pages) for nothing.
    if (!n.options.count("gssencmode")) ci += " gssencmode=disable";
    if (!has_user) ci += " user=postgres";
    if (!has_db) ci += " dbname=postgres";
    ci += " application_name='pgpivot health check'";
    return ci;
  }

  // Starts one check (connecting first if needed).
  void start() {
    if (st != St::Idle) return;
    start_us = uv_hrtime() / 1000;
    if (!pq) {
      std::string err;
      pq = libpq(&err);
      if (!pq) {
        unavailable(err);
        return;
      }
    }
    if (conn && ready_for_query && pq->PQstatus(conn) == CONNECTION_OK) {
      send_query();
      return;
    }
    drop();
    start_us = uv_hrtime() / 1000;
    conn = pq->PQconnectStart(conninfo().c_str());
    if (!conn || pq->PQstatus(conn) == CONNECTION_BAD) {
      fail(conn ? pq->PQerrorMessage(conn) : "out of memory");
      return;
    }
    pq->PQsetnonblocking(conn, 1);
    st = St::Connecting;
    drive();
  }

  void send_query() {
    if (!pq->PQsendQuery(conn, cl->cfg->failover.role_query.c_str())) {
      fail(pq->PQerrorMessage(conn));
      return;
    }
    st = St::Querying;
    int f = pq->PQflush(conn);
    watch(f == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
  }

  void drive() {
    if (st == St::Connecting) {
      switch (pq->PQconnectPoll(conn)) {
        case PGRES_POLLING_READING: watch(UV_READABLE); return;
        case PGRES_POLLING_WRITING: watch(UV_WRITABLE); return;
        case PGRES_POLLING_FAILED: fail(pq->PQerrorMessage(conn)); return;
        case PGRES_POLLING_OK:
          ready_for_query = true;
          send_query();
          return;
        default: watch(UV_READABLE | UV_WRITABLE); return;
      }
    }
    if (st != St::Querying) return;
    if (pq->PQflush(conn) == 1) {
      watch(UV_READABLE | UV_WRITABLE);
      return;
    }
    if (!pq->PQconsumeInput(conn)) {
      fail(pq->PQerrorMessage(conn));
      return;
    }
    std::optional<bool> writable;
    std::string err;
    while (!pq->PQisBusy(conn)) {
      PGresult* r = pq->PQgetResult(conn);
      if (!r) break;
      if (pq->PQresultStatus(r) == PGRES_TUPLES_OK && pq->PQntuples(r) > 0 && pq->PQnfields(r) > 0) {
        std::string v = pq->PQgetvalue(r, 0, 0);
        writable = v == "t" || v == "true" || v == "1" || v == "on";
      } else if (pq->PQresultStatus(r) != PGRES_TUPLES_OK && pq->PQresultStatus(r) != PGRES_COMMAND_OK) {
        err = pq->PQresultErrorMessage(r);
      }
      pq->PQclear(r);
    }
    if (pq->PQisBusy(conn)) {
      watch(UV_READABLE);
      return;
    }
    st = St::Idle;
    if (poll) uv_poll_stop(&poll->h);
    if (!err.empty() || !writable) {
      fail(err.empty() ? "role_query returned no row" : err);
      return;
    }
    pooler->check_result(cl, side, *writable ? NodeState::Up : NodeState::ReadOnly,
                         uv_hrtime() / 1000 - start_us, "");
  }

  void fail(const std::string& why) {
    std::string msg = why;
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    last_error = msg;
    drop();
    pooler->check_result(cl, side, NodeState::Down, uv_hrtime() / 1000 - start_us, msg);
  }

  // No check possible at all (libpq missing): the node is reported as unknown, which
  // does not count as a failed check, so that a broken installation cannot start a
  // failover; the ERROR is logged once per process.
  void unavailable(const std::string& why) {
    static bool logged = false;
    if (!logged) {
      logged = true;
      LOG_ERROR("health checks disabled: %s (cluster states stay unknown and no automatic failover happens)",
                why.c_str());
    }
    last_error = why;
    pooler->check_result(cl, side, NodeState::Unknown, 0, why);
  }

  void check_timeout(std::uint64_t now_us, double timeout_s) {
    if (st != St::Idle && now_us - start_us > std::uint64_t(timeout_s * 1e6)) fail("health_check_timeout");
  }
};

void HealthCheckDeleter::operator()(HealthCheck* h) const { delete h; }

// ---------------------------------------------------------------------------

// Cluster state lives in worker 0, which runs the health checks and moves; the
// other workers' databases point at worker 0's clusters. Their fields are changed
// only with the world stopped (see hub.hpp), so workers read them without a lock.
void Pooler::sync_clusters() {
  if (shard_ != 0) {
    auto& cls = control()->clusters_;
    for (auto& [name, db] : dbs_) {
      auto it = cls.find(db->cfg.cluster);
      db->crt = it == cls.end() || it->second->removed ? nullptr : it->second.get();
    }
    return;
  }
  for (auto& [name, cl] : clusters_) cl->removed = true;
  for (auto& [name, cc] : cfg_.clusters) {
    auto& rt = clusters_[name];
    if (!rt) {
      rt = std::make_unique<ClusterRt>();
      rt->name = name;
    }
    rt->cfg = &cc;
    rt->removed = false;
    for (int side = 0; side < 2; side++) {
      if (side == 1 && !cc.standby) {
        rt->hc[1].reset();
        continue;
      }
      if (!rt->hc[side]) {
        rt->hc[side].reset(new HealthCheck());
        rt->hc[side]->pooler = this;
        rt->hc[side]->cl = rt.get();
        rt->hc[side]->side = side;
      } else {
        rt->hc[side]->drop();  // settings may have changed: reconnect on the next check
      }
    }
    if (!cc.standby && rt->active_standby) rt->active_standby = false;
  }
  for (auto& [name, cl] : clusters_) {
    if (!cl->removed) continue;
    // Its config is gone: no check may call back into it.
    cl->hc[0].reset();
    cl->hc[1].reset();
    cl->cfg = nullptr;
    cl->mode = ClusterMode::Normal;
  }
  for (auto& [name, db] : dbs_) {
    auto it = clusters_.find(db->cfg.cluster);
    db->crt = it == clusters_.end() || it->second->removed ? nullptr : it->second.get();
  }
}

const config::Node& Pooler::active_node(const DbEntry* db) const {
  const ClusterRt* cl = db->crt;
  if (cl && cl->active_standby && cl->cfg->standby) return *cl->cfg->standby;
  return db->cluster->primary;
}

void Pooler::health_tick() {
  bool any = false;
  for (auto& [name, cl] : clusters_) any = any || (!cl->removed && cl->cfg->standby);
  if (!any) return;
  WorldLock wl(hub_, shard_);
  Ms t = now();
  std::uint64_t t_us = uv_hrtime() / 1000;
  for (auto& [name, cl] : clusters_) {
    if (cl->removed || !cl->cfg->standby) continue;  // single-node clusters have nothing to fail over to
    const auto& fo = cl->cfg->failover;
    for (auto& hc : cl->hc) {
      if (hc) hc->check_timeout(t_us, fo.health_check_timeout);
    }
    if (t >= cl->next_check) {
      cl->next_check = t + Ms(fo.health_check_interval * 1000);
      for (auto& hc : cl->hc) {
        if (hc) hc->start();
      }
    }
    cluster_progress(cl.get());
  }
}

void Pooler::check_result(ClusterRt* cl, int side, NodeState st, std::uint64_t latency_us, const std::string& err) {
  WorldLock wl(hub_, shard_);
  NodeState before = cl->state[side];
  cl->state[side] = st;
  cl->last_check_us[side] = latency_us;
  const char* which = side == 0 ? "primary" : "standby";
  if (st != before && before != NodeState::Unknown) {
    LOG_INFO("cluster %s: %s is now %s%s%s", cl->name.c_str(), which, to_string(st), err.empty() ? "" : ": ",
             err.c_str());
  }
  bool active = (side == 1) == cl->active_standby;
  if (active) {
    // A read-only answer counts as a failure: never send writes to a standby. Unknown
    // (no check could be made: libpq cannot be loaded) is neither success nor failure.
    if (st != NodeState::Unknown) cl->failures = st == NodeState::Up ? 0 : cl->failures + 1;
    const auto& fo = cl->cfg->failover;
    bool may_auto = cl->active_standby ? fo.auto_failback : fo.auto_failover;
    if (cl->mode == ClusterMode::Normal && cl->failures >= fo.failure_threshold && may_auto && cl->cfg->standby) {
      LOG_WARN("cluster %s: %s failed %d health checks (%s); failing over", cl->name.c_str(), which, cl->failures,
               err.empty() ? to_string(st) : err.c_str());
      begin_cluster_op(cl, "failover", true);
    }
  }
  cluster_progress(cl);
}

std::string Pooler::begin_cluster_op(ClusterRt* cl, const std::string& kind, bool forced) {
  if (!cl->cfg->standby) return "cluster " + cl->name + " has no standby";
  if (cl->mode != ClusterMode::Normal) return "cluster " + cl->name + " is already in a " + cl->op;
  int target = cl->active_standby ? 0 : 1;
  if (kind == "failback") {
    if (!cl->active_standby) return "cluster " + cl->name + " already runs on its primary";
    target = 0;
  }
  cl->op = kind;
  cl->target = target;
  cl->op_start = now();
  cl->op_start_wall = std::uint64_t(time(nullptr));
  cl->promote_started = false;
  cl->clients_held = 0;
  cl->mode = forced ? ClusterMode::Promoting : ClusterMode::Draining;
  // Count the clients that are going to wait: every logged-in client of the cluster.
  for (Pool* p : world_pools()) {
    if (p->db->crt != cl) continue;
    cl->clients_held += p->client_total();
  }
  LOG_INFO("cluster %s: %s started (%s -> %s), %d clients held", cl->name.c_str(), kind.c_str(),
           cl->active_standby ? "standby" : "primary", target ? "standby" : "primary", cl->clients_held);
  if (forced) {
    // The old side gets no more traffic: close what is idle; busy servers end with
    // the errors the failover contract promises.
    for (Pool* p : world_pools()) {
      if (p->db->crt != cl) continue;
      for (ListHead* l : {&p->sv_login, &p->sv_idle, &p->sv_used, &p->sv_tested, &p->sv_active}) {
        l->for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, kind + ": leaving the old primary"); });
      }
    }
  }
  cluster_progress(cl);
  return "";
}

void Pooler::cluster_progress(ClusterRt* cl) {
  if (cl->mode == ClusterMode::Normal) return;
  const auto& fo = cl->cfg->failover;
  if (cl->mode == ClusterMode::Draining) {
    // Careful moves wait for transactions in flight; sessions move at a transaction boundary.
    bool busy = false;
    for (Pool* p : world_pools()) {
      if (p->db->crt != cl) continue;
      p->sv_active.for_each<Server>([&](Server* s) {
        if (s->expect_z == 0 && s->internal_z == 0 && s->txn == 'I' && !s->unsynced) {
          p->owner->disconnect_server(s, cl->op + ": moving the session at a transaction boundary");
        } else {
          busy = true;
        }
      });
      if (!p->sv_tested.empty()) busy = true;
    }
    bool timed_out = now() - cl->op_start > Ms(fo.failover_timeout * 1000);
    if (busy && !timed_out) return;
    if (busy) LOG_WARN("cluster %s: %s drain timed out; cutting remaining transactions", cl->name.c_str(), cl->op.c_str());
    for (Pool* p : world_pools()) {
      if (p->db->crt != cl) continue;
      for (ListHead* l : {&p->sv_login, &p->sv_idle, &p->sv_used, &p->sv_tested, &p->sv_active}) {
        l->for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, cl->op + ": leaving the old node"); });
      }
    }
    LOG_INFO("cluster %s: %s drained in %llu ms", cl->name.c_str(), cl->op.c_str(),
             (unsigned long long)(now() - cl->op_start));
    cl->mode = ClusterMode::Promoting;
  }
  if (cl->mode == ClusterMode::Promoting) {
    if (!cl->promote_started) {
      cl->promote_started = true;
      if (!fo.promote_command.empty()) run_hook(cl, fo.promote_command, "promote_command");
      cl->state[cl->target] = NodeState::Unknown;  // only a fresh answer counts
      cl->next_check = now();                       // check the target right away
      return;
    }
    if (cl->state[cl->target] == NodeState::Up) {
      complete_cluster_op(cl, "ok");
      return;
    }
    if (now() - cl->op_start > Ms(fo.failover_timeout * 1000) && !cl->timeout_reported) {
      cl->timeout_reported = true;
      LOG_WARN("cluster %s: %s: target not writable after failover_timeout (%g s); waiting clients are released "
               "with an error",
               cl->name.c_str(), cl->op.c_str(), fo.failover_timeout);
      for (Pool* p : world_pools()) {
        if (p->db->crt != cl) continue;
        p->cl_waiting.for_each<Client>([&](Client* c) {
          cl->client_errors++;
          p->owner->disconnect_client(c, "08006", "failover_timeout: no writable server in cluster " + cl->name, true);
        });
      }
    }
  }
}

void Pooler::complete_cluster_op(ClusterRt* cl, const std::string& result) {
  Ms took = now() - cl->op_start;
  cl->active_standby = cl->target == 1;
  cl->mode = ClusterMode::Normal;
  cl->failures = 0;
  cl->timeout_reported = false;
  cl->failovers++;
  cl->last_failover_wall = cl->op_start_wall;
  cl->last_failover_ms = took;
  FailoverEvent ev;
  ev.cluster = cl->name;
  ev.kind = cl->op;
  ev.start_wall = cl->op_start_wall;
  ev.duration_ms = took;
  ev.clients_held = cl->clients_held;
  ev.client_errors = cl->client_errors;
  ev.result = result;
  ev.to = cl->active_standby ? "standby" : "primary";
  failover_log_.push_back(ev);
  cl->client_errors.store(0);
  if (failover_log_.size() > 100) failover_log_.erase(failover_log_.begin());
  const config::Node& n = cl->active_standby ? *cl->cfg->standby : cl->cfg->primary;
  LOG_INFO("cluster %s: %s complete in %llu ms: pools now use the %s %s:%d (%d clients held, %d errors)",
           cl->name.c_str(), cl->op.c_str(), (unsigned long long)took, ev.to.c_str(), n.host.c_str(), n.port,
           ev.clients_held, ev.client_errors);
  if (!cl->cfg->failover.on_failover_command.empty()) run_hook(cl, cl->cfg->failover.on_failover_command, "on_failover_command");
  for (Pool* p : world_pools()) {
    if (p->db->crt != cl) continue;
    p->last_login_failure = 0;
    for (ListHead* l : {&p->sv_login, &p->sv_idle, &p->sv_active, &p->sv_used, &p->sv_tested}) {
      l->for_each<Server>([](Server* s) { s->close_needed = true; });
    }
    p->sv_idle.for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, "repointed"); });
  }
  for (Pool* p : world_pools()) {
    if (p->db->crt != cl) continue;
    // Clients that logged in during the outage still wait for the pool's parameters.
    if (!p->have_welcome && !p->cl_login.empty() && p->sv_login.empty()) p->owner->try_launch(p, false);
    p->owner->pool_service(p);
  }
}

void Pooler::run_hook(ClusterRt* cl, const std::string& command, const char* what) {
  auto* req = new uv_process_t();
  req->data = new std::string(cl->name + " " + what);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; e++) env_strings.emplace_back(*e);
  const config::Node& p = cl->cfg->primary;
  const config::Node& s = *cl->cfg->standby;
  const config::Node& t = cl->target == 1 ? s : p;
  env_strings.push_back("PGPIVOT_CLUSTER=" + cl->name);
  env_strings.push_back("PGPIVOT_ACTION=" + cl->op);
  env_strings.push_back("PGPIVOT_PRIMARY_HOST=" + p.host);
  env_strings.push_back("PGPIVOT_PRIMARY_PORT=" + std::to_string(p.port));
  env_strings.push_back("PGPIVOT_STANDBY_HOST=" + s.host);
  env_strings.push_back("PGPIVOT_STANDBY_PORT=" + std::to_string(s.port));
  env_strings.push_back("PGPIVOT_TARGET_HOST=" + t.host);
  env_strings.push_back("PGPIVOT_TARGET_PORT=" + std::to_string(t.port));
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cmd = command;
  char sh[] = "/bin/sh", dash_c[] = "-c";
  char* args[] = {sh, dash_c, cmd.data(), nullptr};
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 2;  // hook output goes to pgpivot's log stream
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t opt{};
  opt.file = "/bin/sh";
  opt.args = args;
  opt.env = envp.data();
  opt.stdio = stdio;
  opt.stdio_count = 3;
  opt.exit_cb = [](uv_process_t* proc, int64_t status, int sig) {
    auto* label = static_cast<std::string*>(proc->data);
    if (status == 0 && sig == 0) {
      LOG_INFO("cluster %s finished", label->c_str());
    } else {
      LOG_WARN("cluster %s failed (exit status %" PRId64 ", signal %d)", label->c_str(), status, sig);
    }
    delete label;
    uv_close(reinterpret_cast<uv_handle_t*>(proc), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  };
  LOG_INFO("cluster %s: running %s: %s", cl->name.c_str(), what, command.c_str());
  int rc = uv_spawn(loop_, req, &opt);
  if (rc != 0) {
    LOG_ERROR("cluster %s: cannot run %s: %s", cl->name.c_str(), what, uv_strerror(rc));
    delete static_cast<std::string*>(req->data);
    uv_close(reinterpret_cast<uv_handle_t*>(req), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  }
}

void Pooler::close_health_checks() {
  for (auto& [name, cl] : clusters_) {
    for (auto& hc : cl->hc) hc.reset();
  }
}

}  // namespace pgpivot
