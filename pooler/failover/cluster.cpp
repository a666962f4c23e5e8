// Clusters: the glue between a cluster's failover machine (machine.hpp: what decides)
// and the pooler (what is done): health-check scheduling, the effects of a decision
// on the pools (close the old node's servers, repoint, wake waiting clients), the
// hooks (promote_command with promote_timeout, fence_command, on_failover_command)
// and the state file that keeps the active node and epoch across restarts.
//
// Cluster state lives in worker 0, which runs the health checks and moves; the
// other workers' databases point at worker 0's clusters. Their fields are changed
// only with the world stopped (see hub.hpp), so workers read them without a lock.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "pooler/failover/cluster.hpp"

#include "pooler/failover/coordination.hpp"
#include "pooler/failover/health.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {

failover::Settings settings_of(const config::Cluster& c) {
  const auto& f = c.failover;
  failover::Settings s;
  s.failure_threshold = f.failure_threshold;
  s.check_interval = f.health_check_interval;
  s.check_timeout = f.health_check_timeout;
  s.failover_timeout = f.failover_timeout;
  s.promote_timeout = f.promote_timeout;
  s.max_lag = f.max_lag_on_failover;
  s.auto_failover = f.auto_failover;
  s.auto_failback = f.auto_failback;
  s.has_promote = !f.promote_command.empty() && f.decider != "patroni";  // Patroni promotes
  s.witness = !f.witness_query.empty();
  s.lag = !f.lag_query.empty();
  return s;
}

double mono_s() { return double(uv_hrtime()) / 1e9; }

std::string node_addr(const config::Node& n) { return n.host + ":" + std::to_string(n.port); }

}  // namespace

Clusters::Clusters(Pooler& p) : p_(p) {}
Clusters::~Clusters() = default;

void Clusters::sync() {
  if (p_.shard_ != 0) {
    auto& cls = p_.control()->clusters_.clusters_;
    for (auto& [name, db] : p_.registry_.dbs()) {
      auto it = cls.find(db->cfg.cluster);
      db->crt = it == cls.end() || it->second->removed ? nullptr : it->second.get();
    }
    return;
  }
  for (auto& [name, cl] : clusters_) cl->removed = true;
  for (auto& [name, cc] : p_.cfg_.clusters) {
    auto& rt = clusters_[name];
    bool fresh = !rt;
    if (!rt) {
      rt = std::make_unique<ClusterRt>();
      rt->name = name;
    }
    rt->cfg = &cc;
    rt->removed = false;
    rt->fsm.set_settings(settings_of(cc));
    if (fresh && cc.standby) {
      if (cc.failover.state_file.empty() && cc.failover.auto_failover)
        LOG_INFO("cluster %s: no state_file: after a restart the active node is found again from the nodes' "
                 "answers (two writable nodes refuse writes until one is chosen)",
                 name.c_str());
      load_state_file(rt.get());
      rt->fsm.start(mono_s());
    }
    for (int side = 0; side < 2; side++) {
      if (side == 1 && !cc.standby) {
        rt->hc[1].reset();
        rt->wc[1].reset();
        continue;
      }
      if (!rt->hc[side]) {
        rt->hc[side].reset(new_health_check(&p_, rt.get(), side, false));
      } else {
        health_check_drop(rt->hc[side].get());  // settings may have changed: reconnect on the next check
      }
      bool own_witness = cc.standby && !cc.failover.witness_options.empty() &&
                         (!cc.failover.witness_query.empty() || !cc.failover.lag_query.empty());
      if (!own_witness) {
        rt->wc[side].reset();
      } else if (!rt->wc[side]) {
        rt->wc[side].reset(new_health_check(&p_, rt.get(), side, true));
      } else {
        health_check_drop(rt->wc[side].get());
      }
    }
    rt->next_check = 0;  // check at once: credentials may have been rotated
  }
  for (auto& [name, cl] : clusters_) {
    if (!cl->removed) continue;
    // Its config is gone: no check may call back into it.
    cl->hc[0].reset();
    cl->hc[1].reset();
    cl->wc[0].reset();
    cl->wc[1].reset();
    cl->cfg = nullptr;
  }
  for (auto& [name, db] : p_.registry_.dbs()) {
    auto it = clusters_.find(db->cfg.cluster);
    db->crt = it == clusters_.end() || it->second->removed ? nullptr : it->second.get();
  }
  bool follow = false;
  for (auto& [name, cc] : p_.cfg_.clusters) follow = follow || (cc.standby && cc.failover.decider == "patroni");
  if ((p_.cfg_.coordination.enabled() || follow) && !coord_ && !p_.stopping_)
    coord_ = std::make_unique<Coordinator>(p_, *this);
  if (coord_) coord_->configure(p_.cfg_);
}

const config::Node& active_node(const DbEntry* db) {
  const ClusterRt* cl = db->crt;
  if (cl && cl->cfg && cl->active_standby()) return *cl->cfg->standby;
  return db->cluster->primary;
}

void Clusters::health_tick() {
  bool any = false;
  for (auto& [name, cl] : clusters_) any = any || (!cl->removed && cl->cfg->standby);
  if (!any) return;
  WorldLock wl(p_.hub_, p_.shard_);
  Ms t = p_.now();
  std::uint64_t t_us = uv_hrtime() / 1000;
  for (auto& [name, cl] : clusters_) {
    if (cl->removed || !cl->cfg->standby) continue;  // single-node clusters have nothing to fail over to
    const auto& fo = cl->cfg->failover;
    for (int side = 0; side < 2; side++) {
      if (cl->hc[side]) health_check_timeout(cl->hc[side].get(), t_us, fo.health_check_timeout);
      if (cl->wc[side]) health_check_timeout(cl->wc[side].get(), t_us, fo.health_check_timeout);
    }
    if (t >= cl->next_check) {
      cl->next_check = t + Ms(fo.health_check_interval * 1000);
      for (int side = 0; side < 2; side++) {
        cl->check_started[side] = t;
        if (cl->hc[side]) health_check_start(cl->hc[side].get());
        // The witness connection asks the node that is not active.
        if (cl->wc[side] && side != cl->fsm.active()) health_check_start(cl->wc[side].get());
      }
    }
    progress(cl.get());
  }
}

void Clusters::check_result(ClusterRt* cl, int side, std::uint64_t latency_us) {
  WorldLock wl(p_.hub_, p_.shard_);
  NodeState before = cl->fsm.view(side).verdict;
  const failover::NodeView& v = cl->obs[side];
  cl->last_check_us[side] = latency_us;
  const char* which = failover::side_name(side);
  if (v.verdict != before && (before != NodeState::Unknown || v.verdict == NodeState::Misconfigured)) {
    log_line(v.verdict == NodeState::Misconfigured ? "WARNING" : "LOG", "cluster %s: %s is now %s%s%s",
             cl->name.c_str(), which, to_string(v.verdict), v.error.empty() ? "" : ": ", v.error.c_str());
  }
  // The pools' own traffic to the active node since this check started.
  bool datapath_ok = side == cl->fsm.active() && cl->check_started[side] &&
                     cl->datapath_ok.load(std::memory_order_relaxed) >= cl->check_started[side];
  apply_effects(cl, cl->fsm.on_check(side, v, mono_s(), datapath_ok));
  if (side == cl->fsm.active() && v.verdict == NodeState::Up && cl->routes()) {
    // A restart shorter than one check: pools whose logins failed because the node
    // was away log in again now, not after server_login_retry.
    for (Pool* p : p_.world_pools()) {
      if (p->db->crt != cl || !p->last_login_failure) continue;
      if (p->last_login_sqlstate.rfind("08", 0) != 0 && p->last_login_sqlstate.rfind("57P", 0) != 0) continue;
      p->last_login_failure = 0;
      p->owner->pool_service(p);
    }
  }
}

std::string Clusters::request(ClusterRt* cl, const std::string& kind) {
  if (!cl->cfg->standby) return "cluster " + cl->name + " has no standby";
  if (Coordinator::patroni(cl))
    return "cluster " + cl->name + ": decider = patroni: Patroni moves the cluster (patronictl switchover); "
           "pgpivot follows its leader";
  if (coord_ && !coord_->decides_here(cl)) {
    std::string err = coord_->request(cl, kind);
    return err.empty() ? "" : "cluster " + cl->name + ": " + err;
  }
  return request_local(cl, kind);
}

std::string Clusters::request_local(ClusterRt* cl, const std::string& kind) {
  std::string refused;
  failover::Effects e;
  if (kind == "abort") {
    e = cl->fsm.abort("ABORT from the console", mono_s(), &refused);
  } else {
    failover::Op op = kind == "failover" ? failover::Op::Failover
                      : kind == "failback" ? failover::Op::Failback
                                           : failover::Op::Switchover;
    e = cl->fsm.request(op, mono_s(), &refused);
  }
  if (!refused.empty()) return "cluster " + cl->name + ": " + refused;
  apply_effects(cl, std::move(e));
  return "";
}

void Clusters::progress(ClusterRt* cl) {
  if (!cl->cfg || !cl->cfg->standby) return;
  bool busy = false;
  const failover::Mode mode = cl->fsm.mode();
  if (mode == failover::Mode::Draining || (mode == failover::Mode::Following && cl->fsm.op() != failover::Op::Failover)) {
    // Careful moves wait for transactions in flight; sessions move at a transaction boundary.
    for (Pool* p : p_.world_pools()) {
      if (p->db->crt != cl) continue;
      p->sv_active.for_each<Server>([&](Server* s) {
        if (s->expect_z == 0 && s->internal_z == 0 && s->txn == 'I' && !s->unsynced) {
          p->owner->disconnect_server(s, cl->fsm.mode_name() + ": moving the session at a transaction boundary");
        } else {
          busy = true;
        }
      });
      if (!p->sv_tested.empty()) busy = true;
    }
  }
  if (mode == failover::Mode::Following) {
    // Followed from the fleet: the leader waits for this instance's drain (its view).
    cl->fl.drained = !busy;
    busy = false;
  } else if (mode == failover::Mode::Draining && coord_ && coord_->fleet(cl) && coord_->others_busy(cl)) {
    busy = true;
  }
  apply_effects(cl, cl->fsm.on_tick(mono_s(), busy));
}

// Carries out what the machine decided, in the order machine.hpp gives.
void Clusters::apply_effects(ClusterRt* cl, failover::Effects&& e) {
  for (const auto& l : e.log) {
    log_line(l.level == 0 ? "LOG" : l.level == 1 ? "WARNING" : "ERROR", "cluster %s: %s", cl->name.c_str(),
             l.text.c_str());
  }
  const auto& fo = cl->cfg->failover;
  // A fleet's move: the leader announces it in etcd before anything is promoted.
  const bool fleet = coord_ && coord_->fleet(cl);
  const bool own_move = cl->fsm.mode() == failover::Mode::Draining || cl->fsm.mode() == failover::Mode::Promoting;
  bool refused_move = false;
  if (fleet && e.started && own_move && !coord_->move_started(cl)) {
    refused_move = true;
    e.run_promote = false;
  }
  if (e.started) {
    cl->op_start_wall = std::uint64_t(time(nullptr));
    cl->clients_held = 0;
    for (Pool* p : p_.world_pools())
      if (p->db->crt == cl) cl->clients_held += p->client_total();
  }
  if (e.close_servers) {
    close_old_servers(cl, std::string(failover::to_string(cl->fsm.op())) + ": leaving the old node");
  }
  if (e.kill_promote && cl->promote_proc) {
    // The hook runs in its own process group: kill all of it.
    int pid = cl->promote_proc->pid;
    if (pid > 0) ::kill(-pid, SIGKILL);
    LOG_WARN("cluster %s: promote_command (pid %d) killed", cl->name.c_str(), pid);
  }
  if (e.persist && !fo.state_file.empty()) write_state_file(fo.state_file);
  if (e.completed) record_move(cl, e.ended_op, "ok");
  if (e.repoint) repoint_pools(cl);
  if (e.run_promote) {
    if (fleet)
      coord_->hold_promote(cl);  // once the fleet knows (the intent written, the others acknowledged)
    else
      run_hook(cl, fo.promote_command, "promote_command");
  }
  if (e.run_fence && !fo.fence_command.empty()) run_hook(cl, fo.fence_command, "fence_command", e.fence_side);
  if (e.run_on_failover && !fo.on_failover_command.empty()) run_hook(cl, fo.on_failover_command, "on_failover_command");
  if (e.check_now) cl->next_check = p_.now();
  if (e.wake_pools) wake_pools(cl);
  if (e.finished) {
    bool aborted = e.finished->rfind("aborted", 0) == 0;
    if (aborted) record_move(cl, e.ended_op, *e.finished);
    if (fleet) coord_->move_ended(cl, !aborted);
    finish_admin(cl, *e.finished);
  }
  if (refused_move) {
    apply_effects(cl, cl->fsm.abort("only the fleet's leader moves the cluster, and only with etcd answering and "
                                    "its key in step",
                                    mono_s()));
  }
}

void Clusters::finish_admin(ClusterRt* cl, const std::string& result) {
  cl->moves_ended++;
  cl->last_end = result;
  p_.console().finish_pending();  // the other workers' janitors see it at their next round
}

// Leaves the old node: what is idle closes, busy servers end with the errors the
// failover contract promises.
void Clusters::close_old_servers(ClusterRt* cl, const std::string& why) {
  for (Pool* p : p_.world_pools()) {
    if (p->db->crt != cl) continue;
    p->each_server([&](Server* s) { p->owner->disconnect_server(s, why); });
  }
}

void Clusters::repoint_pools(ClusterRt* cl) {
  for (Pool* p : p_.world_pools()) {
    if (p->db->crt != cl) continue;
    p->last_login_failure = 0;
    p->each_server([](Server* s) { s->close_needed = true; });
    p->sv_idle.for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, "repointed"); });
  }
}

// The active node answers (again): log in at once instead of waiting out
// server_login_retry, and serve whoever waits.
void Clusters::wake_pools(ClusterRt* cl) {
  if (!cl->routes()) return;
  for (Pool* p : p_.world_pools()) {
    if (p->db->crt != cl) continue;
    p->last_login_failure = 0;
    // Clients that logged in during the outage still wait for the pool's parameters.
    if (!p->have_welcome && p->owner->waits_for_welcome(p) && p->sv_login.empty()) p->owner->try_launch(p, false);
    p->owner->pool_service(p);
  }
}

void Clusters::record_move(ClusterRt* cl, failover::Op op, const std::string& result) {
  Ms took = Ms((mono_s() - cl->fsm.op_start()) * 1000);
  if (result == "ok") {
    cl->failovers++;
    cl->last_failover_wall = cl->op_start_wall;
    cl->last_failover_ms = took;
  }
  FailoverEvent ev;
  ev.cluster = cl->name;
  ev.kind = failover::to_string(op);
  ev.start_wall = cl->op_start_wall;
  ev.duration_ms = took;
  ev.clients_held = cl->clients_held;
  ev.client_errors = cl->client_errors;
  ev.result = result;
  ev.to = failover::side_name(cl->fsm.active());
  log_.push_back(ev);
  cl->client_errors.store(0);
  if (log_.size() > 100) log_.erase(log_.begin());
  const config::Node& n = cl->active_standby() ? *cl->cfg->standby : cl->cfg->primary;
  LOG_INFO("cluster %s: %s %s in %llu ms: pools use the %s %s (epoch %llu, %d clients held, %d errors)",
           cl->name.c_str(), ev.kind.c_str(), result == "ok" ? "complete" : result.c_str(), (unsigned long long)took,
           ev.to.c_str(), node_addr(n).c_str(), (unsigned long long)cl->fsm.epoch(), ev.clients_held,
           ev.client_errors);
}

// ---------------------------------------------------------------------------
// The state file: one line per cluster, "cluster NAME active SIDE epoch N primary
// HOST:PORT standby HOST:PORT". Written whole (temp file, fsync, rename, fsync of the
// directory) before the pools move; a line whose addresses no longer match the config
// is ignored at start.

bool Clusters::write_state_file(const std::string& path) {
  std::ostringstream o;
  o << "# pgpivot cluster state: the active node of each cluster and its epoch. Written by pgpivot.\n";
  for (auto& [name, cl] : clusters_) {
    if (cl->removed || !cl->cfg->standby || cl->cfg->failover.state_file != path) continue;
    o << "cluster " << name << " active " << failover::side_name(cl->fsm.active()) << " epoch " << cl->fsm.epoch()
      << " primary " << node_addr(cl->cfg->primary) << " standby " << node_addr(*cl->cfg->standby) << "\n";
  }
  std::string data = o.str();
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  const char* what = "open";
  if (ok) {
    ok = ::write(fd, data.data(), data.size()) == ssize_t(data.size());
    what = "write";
    if (ok) {
      ok = ::fsync(fd) == 0;
      what = "fsync";
    }
    ::close(fd);
  }
  if (ok) {
    ok = ::rename(tmp.c_str(), path.c_str()) == 0;
    what = "rename";
  }
  if (ok) {
    std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    if (dir.empty()) dir = "/";
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  if (!ok) {
    LOG_ERROR("state_file %s: cannot %s: %s (the decision holds in memory only; a restart may not know it)",
              path.c_str(), what, std::strerror(errno));
    ::unlink(tmp.c_str());
  }
  return ok;
}

void Clusters::load_state_file(ClusterRt* cl) {
  const std::string& path = cl->cfg->failover.state_file;
  if (path.empty()) return;
  std::ifstream in(path);
  if (!in) {
    if (errno != ENOENT) LOG_WARN("state_file %s: cannot read: %s", path.c_str(), std::strerror(errno));
    return;
  }
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string k1, name, k2, active, k3, k4, primary, k5, standby;
    unsigned long long epoch = 0;
    if (!(ls >> k1 >> name >> k2 >> active >> k3 >> epoch >> k4 >> primary >> k5 >> standby)) continue;
    if (k1 != "cluster" || name != cl->name) continue;
    if (primary != node_addr(cl->cfg->primary) || standby != node_addr(*cl->cfg->standby)) {
      LOG_WARN("cluster %s: state_file %s names other nodes (%s, %s); ignored", cl->name.c_str(), path.c_str(),
               primary.c_str(), standby.c_str());
      return;
    }
    int side = active == "standby" ? 1 : 0;
    cl->fsm.restore(side, epoch);
    cl->state_loaded = true;
    LOG_INFO("cluster %s: state_file %s: the %s is active, epoch %llu", cl->name.c_str(), path.c_str(),
             active.c_str(), epoch);
    return;
  }
}

// ---------------------------------------------------------------------------
// Hooks

namespace {
struct HookCtx {
  Clusters* owner;
  std::string cluster;
  std::string what;
  ClusterRt* cl;  // valid while the cluster exists (hooks of removed clusters report nothing)
};
}  // namespace

void Clusters::run_hook(ClusterRt* cl, const std::string& command, const char* what, int fence_side) {
  auto* req = new uv_process_t();
  auto* ctx = new HookCtx{this, cl->name, what, cl};
  req->data = ctx;
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; e++) env_strings.emplace_back(*e);
  const config::Node& p = cl->cfg->primary;
  const config::Node& s = *cl->cfg->standby;
  // The target: the node being moved to (promote), or the active node after a move.
  int target_side = std::string(what) == "promote_command" ? cl->fsm.target() : cl->fsm.active();
  const config::Node& t = target_side == 1 ? s : p;
  env_strings.push_back("PGPIVOT_CLUSTER=" + cl->name);
  env_strings.push_back(std::string("PGPIVOT_ACTION=") + failover::to_string(cl->fsm.op()));
  env_strings.push_back("PGPIVOT_PRIMARY_HOST=" + p.host);
  env_strings.push_back("PGPIVOT_PRIMARY_PORT=" + std::to_string(p.port));
  env_strings.push_back("PGPIVOT_STANDBY_HOST=" + s.host);
  env_strings.push_back("PGPIVOT_STANDBY_PORT=" + std::to_string(s.port));
  env_strings.push_back("PGPIVOT_TARGET_HOST=" + t.host);
  env_strings.push_back("PGPIVOT_TARGET_PORT=" + std::to_string(t.port));
  env_strings.push_back("PGPIVOT_EPOCH=" + std::to_string(cl->fsm.epoch()));
  if (fence_side >= 0) {
    const config::Node& f = fence_side == 1 ? s : p;
    env_strings.push_back("PGPIVOT_FENCE_HOST=" + f.host);
    env_strings.push_back("PGPIVOT_FENCE_PORT=" + std::to_string(f.port));
  }
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
  // Its own process group (setsid): promote_timeout kills the whole group.
  opt.flags = UV_PROCESS_DETACHED;
  opt.exit_cb = [](uv_process_t* proc, int64_t status, int sig) {
    auto* ctx = static_cast<HookCtx*>(proc->data);
    bool ok = status == 0 && sig == 0;
    char why[64];
    if (sig)
      std::snprintf(why, sizeof why, "killed by signal %d", sig);
    else
      std::snprintf(why, sizeof why, "exit status %" PRId64, status);
    if (ok)
      LOG_INFO("cluster %s: %s finished", ctx->cluster.c_str(), ctx->what.c_str());
    else
      LOG_WARN("cluster %s: %s failed (%s)", ctx->cluster.c_str(), ctx->what.c_str(), why);
    Clusters* owner = ctx->owner;
    auto it = owner->clusters_.find(ctx->cluster);
    ClusterRt* cl = it != owner->clusters_.end() && it->second.get() == ctx->cl && !ctx->cl->removed ? ctx->cl : nullptr;
    if (cl) {
      WorldLock wl(owner->p_.hub_, owner->p_.shard_);
      if (ctx->what == "promote_command" && cl->promote_proc == proc) {
        cl->promote_proc = nullptr;
        owner->apply_effects(cl, cl->fsm.on_promote_exit(ok, why, mono_s()));
      } else if (ctx->what == "fence_command") {
        cl->fence_result = ok ? "ok" : std::string("failed: ") + why;
        if (!ok) LOG_WARN("cluster %s: fence_command failed (%s): the old node may still take writes", ctx->cluster.c_str(), why);
      }
    }
    if (cl && cl->promote_proc == proc) cl->promote_proc = nullptr;
    delete ctx;
    uv_close(reinterpret_cast<uv_handle_t*>(proc), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  };
  LOG_INFO("cluster %s: running %s: %s", cl->name.c_str(), what, command.c_str());
  int rc = uv_spawn(p_.loop_, req, &opt);
  if (rc != 0) {
    LOG_ERROR("cluster %s: cannot run %s: %s", cl->name.c_str(), what, uv_strerror(rc));
    delete ctx;
    uv_close(reinterpret_cast<uv_handle_t*>(req), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    if (std::string(what) == "promote_command") apply_effects(cl, cl->fsm.on_promote_exit(false, uv_strerror(rc), mono_s()));
    return;
  }
  if (std::string(what) == "promote_command") cl->promote_proc = req;
}

void Clusters::close_health_checks() {
  if (coord_) coord_->close();
  for (auto& [name, cl] : clusters_) {
    for (auto& hc : cl->hc) hc.reset();
    for (auto& wc : cl->wc) wc.reset();
  }
}

}  // namespace pgpivot
