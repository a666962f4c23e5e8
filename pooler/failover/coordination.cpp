// The fleet on etcd and following Patroni: see coordination.hpp.
#include "pooler/failover/coordination.hpp"

#include <sys/time.h>
#include <unistd.h>

#include <cmath>

#include "pooler/pooler.hpp"

namespace pgpivot {

using coord::Etcd;
using failover::Link;
using failover::Mode;
using json = nlohmann::json;

namespace {

constexpr double kTick = 0.1;  // seconds between reads of the fleet's keys

double mono_s() { return double(uv_hrtime()) / 1e9; }

double wall_s() {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

}  // namespace

Coordinator::Coordinator(Pooler& p, Clusters& cs) : p_(p), cs_(cs) {
  http_ = std::make_unique<coord::HttpClient>(p.loop_);
  timer_ = new uv_timer_t;
  uv_timer_init(p.loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, &Coordinator::on_tick, 20, std::uint64_t(kTick * 1000));
  started_ = mono_s();
}

Coordinator::~Coordinator() { close(); }

void Coordinator::close() {
  if (closed_) return;
  closed_ = true;
  http_->close();
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

void Coordinator::configure(const config::Config& cfg) {
  bool was = cfg_.enabled();
  cfg_ = cfg.coordination;
  name_ = cfg_.instance_name;
  if (name_.empty()) {
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
    name_ = std::string(host) + ":" + std::to_string(cfg.pooler.listen_port);
  }
  if (!etcd_)
    etcd_ = std::make_unique<Etcd>(*http_, cfg_);
  else
    etcd_->configure(cfg_);
  if (cfg_.enabled() && !was) {
    std::string eps;
    for (const auto& e : cfg_.endpoints) eps += (eps.empty() ? "" : ",") + e;
    LOG_INFO("coordination: instance %s on etcd %s (lease_ttl %g s, prefix %s)", name_.c_str(), eps.c_str(),
             cfg_.lease_ttl, cfg_.prefix.c_str());
    started_ = mono_s();
  }
}

Link Coordinator::link() const {
  if (!cfg_.enabled()) return Link::Off;
  double now = mono_s();
  if (last_ok_ < 0) return now - started_ > cfg_.lease_ttl ? Link::Lost : Link::Connecting;
  return now - last_ok_ > cfg_.lease_ttl ? Link::Lost : Link::Ok;
}

bool Coordinator::fleet(const ClusterRt* cl) const {
  return cfg_.enabled() && cl && cl->cfg && cl->cfg->standby && cl->cfg->failover.decider == "pgpivot";
}

bool Coordinator::patroni(const ClusterRt* cl) {
  return cl && cl->cfg && cl->cfg->standby && cl->cfg->failover.decider == "patroni";
}

std::string Coordinator::decider(const ClusterRt* cl) const {
  return patroni(cl) ? "patroni" : fleet(cl) ? "fleet" : "local";
}

std::string Coordinator::views_text(const ClusterRt* cl) const {
  std::string out;
  if (patroni(cl)) {
    for (int side = 0; side < 2; side++) {
      int v = cl->fl.patroni[side];
      out += std::string(side ? "; " : "") + "patroni " + failover::side_name(side) + ": " +
             (v == 1 ? "leader" : v == 0 ? "replica" : "unknown" + (cl->fl.patroni_error[side].empty() ? std::string() : " (" + cl->fl.patroni_error[side] + ")"));
    }
    return out;
  }
  if (!fleet(cl)) return out;
  for (const auto& v : cl->fl.views) {
    const auto& shown = v.name == name_ ? own_view(cl) : v;
    out += (out.empty() ? "" : "; ") + shown.name + ": primary " + failover::to_string(shown.verdict[0]) + ", standby " +
           failover::to_string(shown.verdict[1]) + ", active " + failover::side_name(shown.active) + " epoch " +
           std::to_string(shown.epoch) + (shown.down ? " (sees it down)" : "") +
           (shown.ack.empty() ? "" : " (following " + shown.ack + ")");
  }
  return out;
}

std::optional<std::string> Coordinator::leader_cell(const ClusterRt* cl) const {
  if (fleet(cl)) return cl->fl.leader;
  if (!patroni(cl)) return std::nullopt;
  for (int side = 0; side < 2; side++)
    if (cl->fl.patroni[side] == 1 && cl->fl.patroni[1 - side] != 1) return std::string(failover::side_name(side));
  return std::string();
}

bool Coordinator::decides_here(const ClusterRt* cl) const { return !fleet(cl) || cl->fl.leading; }

std::string Coordinator::key(const ClusterRt* cl, const std::string& leaf) const {
  std::string pre = cfg_.prefix;
  if (pre.empty() || pre.back() != '/') pre += '/';
  return pre + cl->name + "/" + leaf;
}

failover::InstanceView Coordinator::own_view(const ClusterRt* cl) const {
  failover::InstanceView v;
  v.name = name_;
  v.epoch = cl->fsm.epoch();
  v.active = cl->fsm.active();
  v.verdict[0] = cl->fsm.view(0).verdict;
  v.verdict[1] = cl->fsm.view(1).verdict;
  v.down = cl->fsm.active_down();
  v.ack = cl->fl.ack;
  v.drained = cl->fl.drained;
  return v;
}

// ---------------------------------------------------------------------------

void Coordinator::on_tick(uv_timer_t* t) { static_cast<Coordinator*>(t->data)->tick(); }

void Coordinator::tick() {
  if (closed_) return;
  WorldLock wl(p_.hub_, p_.shard_);
  double now = mono_s();
  if (cfg_.enabled()) {
    keep_lease(now);
    Link l = link();
    if (l != reported_) {
      if (l == Link::Lost)
        LOG_WARN("coordination: lost (no answer from etcd for %g s: %s): serving the last known nodes, no "
                 "automatic failover",
                 cfg_.lease_ttl, last_error_.c_str());
      else if (l == Link::Ok)
        LOG_INFO("coordination: ok (etcd %s)", etcd_->endpoint().c_str());
      reported_ = l;
    }
  }
  for (auto& [name, up] : cs_.clusters_) {
    ClusterRt* cl = up.get();
    if (cl->removed || !cl->cfg || !cl->cfg->standby) continue;
    if (patroni(cl)) {
      set_permit(cl);
      poll_patroni(cl, now);
      continue;
    }
    if (!fleet(cl)) continue;
    if (!cl->fl.range_busy) read_keys(cl);
    publish_view(cl);
    set_permit(cl);
    maybe_promote(cl, now);
    write_pending(cl);
  }
}

// The result of this instance's move, until etcd has it.
void Coordinator::write_pending(ClusterRt* cl) {
  auto& f = cl->fl;
  if (!f.pending || f.key_busy) return;
  failover::ActiveKey k = *f.pending;
  write_active(cl, k, f.pending_rev, false, [cl](bool ok, bool cas_failed) {
    if (ok || cas_failed) cl->fl.pending.reset();
    if (ok)
      LOG_INFO("cluster %s: coordination: the fleet's key records the %s, epoch %llu", cl->name.c_str(),
               failover::side_name(cl->fl.key.active), (unsigned long long)cl->fl.key.epoch);
    if (cas_failed)
      LOG_WARN("cluster %s: coordination: the fleet's key changed during this instance's move; following it",
               cl->name.c_str());
  });
}

void Coordinator::keep_lease(double now) {
  if (lease_busy_) return;
  if (lease_ == 0) {
    lease_busy_ = true;
    json body = {{"TTL", (long long)std::ceil(cfg_.lease_ttl)}};
    etcd_->call("lease/grant", body, [this](bool ok, const json& b, const std::string& err) {
      WorldLock wl(p_.hub_, p_.shard_);
      lease_busy_ = false;
      long long id = ok ? Etcd::num(b, "ID") : 0;
      if (!id) {
        last_error_ = ok ? "lease/grant gave no lease" : err;
        return;
      }
      double t = mono_s();
      lease_ = id;
      lease_ok_at_ = last_ok_ = t;
      next_keepalive_ = t + cfg_.lease_ttl / 3;
      for (auto& [n, cl] : cs_.clusters_) cl->fl.published.clear();  // views go under the new lease
      LOG_INFO("coordination: lease %llx granted (%g s) by %s", (unsigned long long)id, cfg_.lease_ttl,
               etcd_->endpoint().c_str());
    });
    return;
  }
  if (now < next_keepalive_) return;
  lease_busy_ = true;
  etcd_->call("lease/keepalive", json{{"ID", std::to_string(lease_)}},
              [this](bool ok, const json& b, const std::string& err) {
                WorldLock wl(p_.hub_, p_.shard_);
                lease_busy_ = false;
                double t = mono_s();
                if (!ok) {
                  last_error_ = err;
                  next_keepalive_ = t + kTick;  // try again soon (another endpoint)
                  return;
                }
                last_ok_ = t;
                const json& r = b.contains("result") ? b["result"] : b;
                if (Etcd::num(r, "TTL") <= 0) {
                  LOG_WARN("coordination: lease %llx expired; asking for a new one", (unsigned long long)lease_);
                  lease_ = 0;
                  for (auto& [n, cl] : cs_.clusters_) cl->fl.leading = false;
                  return;
                }
                lease_ok_at_ = t;
                next_keepalive_ = t + cfg_.lease_ttl / 3;
              });
}

void Coordinator::read_keys(ClusterRt* cl) {
  cl->fl.range_busy = true;
  std::string pre = key(cl, "");
  json body = {{"key", Etcd::b64(pre)}, {"range_end", Etcd::b64(Etcd::prefix_end(pre))}};
  std::string name = cl->name;
  etcd_->call("kv/range", body, [this, name](bool ok, const json& b, const std::string& err) {
    WorldLock wl(p_.hub_, p_.shard_);
    auto it = cs_.clusters_.find(name);
    if (it == cs_.clusters_.end()) return;
    ClusterRt* cl = it->second.get();
    cl->fl.range_busy = false;
    if (cl->removed || !fleet(cl)) return;
    if (!ok) {
      last_error_ = err;
      return;
    }
    last_ok_ = mono_s();
    if (on_keys(cl, b)) reconcile(cl, mono_s());
  });
}

bool Coordinator::on_keys(ClusterRt* cl, const json& body) {
  auto& f = cl->fl;
  // A read that started before this instance's own write came back after it: stale.
  long long rev = body.contains("header") ? Etcd::num(body["header"], "revision") : 0;
  if (rev && rev < f.seen_rev) return false;
  if (rev) f.seen_rev = rev;
  f.read_rev = rev;
  f.read_once = true;
  failover::ActiveKey active;
  f.leader.clear();
  f.leader_lease = f.leader_create = 0;
  f.request.reset();
  std::vector<failover::InstanceView> views;
  std::string pre = key(cl, "");
  if (body.contains("kvs") && body["kvs"].is_array()) {
    for (const json& kv : body["kvs"]) {
      std::string k = Etcd::unb64(kv.value("key", ""));
      std::string v = Etcd::unb64(kv.value("value", ""));
      if (k.size() <= pre.size() || k.compare(0, pre.size(), pre) != 0) continue;
      std::string leaf = k.substr(pre.size());
      if (leaf == "active") {
        failover::ActiveKey a;
        a.mod_revision = Etcd::num(kv, "mod_revision");
        if (failover::decode(v, a)) {
          active = a;
        } else {
          LOG_WARN("cluster %s: coordination: %s holds no cluster state pgpivot understands: %s", cl->name.c_str(),
                   k.c_str(), v.c_str());
        }
      } else if (leaf == "leader") {
        f.leader = v;
        f.leader_lease = Etcd::num(kv, "lease");
        f.leader_create = Etcd::num(kv, "create_revision");
      } else if (leaf.rfind("views/", 0) == 0) {
        failover::InstanceView iv;
        if (failover::decode(v, iv) && iv.name != name_) views.push_back(std::move(iv));
      } else if (leaf == "request") {
        failover::Request r;
        if (failover::decode(v, r)) f.request = r;
      }
    }
  }
  f.key = active;
  views.push_back(own_view(cl));
  f.views = std::move(views);
  bool lease_fresh = lease_ && mono_s() - lease_ok_at_ < cfg_.lease_ttl - cfg_.request_timeout;
  bool was = f.leading;
  f.leading = lease_fresh && f.leader == name_ && f.leader_lease == lease_;
  if (f.leading != was)
    LOG_INFO("cluster %s: coordination: %s", cl->name.c_str(),
             f.leading ? "this instance leads the fleet" : ("the fleet's leader is " + (f.leader.empty() ? std::string("nobody yet") : f.leader)).c_str());
  return true;
}

void Coordinator::set_permit(ClusterRt* cl) {
  auto& m = cl->fsm;
  if (patroni(cl)) {
    m.set_permit(false, "decider = patroni: Patroni promotes, pgpivot follows its leader");
    return;
  }
  auto& f = cl->fl;
  Link l = link();
  bool lease_fresh = lease_ && mono_s() - lease_ok_at_ < cfg_.lease_ttl - cfg_.request_timeout;
  if (l != Link::Ok) {
    m.set_permit(false, std::string("coordination is ") + failover::to_string(l) +
                            ": no automatic move without the fleet (" + last_error_ + ")");
  } else if (!f.leading || !lease_fresh) {
    m.set_permit(false, "the fleet's leader (" + (f.leader.empty() ? std::string("none yet") : f.leader) +
                            ") decides");
  } else {
    for (auto& v : f.views)
      if (v.name == name_) v = own_view(cl);
    failover::Quorum q = failover::quorum(f.views, m.active(), m.epoch());
    bool before = m.permitted();
    m.set_permit(q.ok, q.why);
    if (q.ok && !before) cs_.apply_effects(cl, m.retry_auto(mono_s()));
  }
}

void Coordinator::campaign(ClusterRt* cl) {
  auto& f = cl->fl;
  if (f.campaign_busy || !lease_) return;
  f.campaign_busy = true;
  std::string lk = key(cl, "leader");
  json body = {
      {"compare", json::array({{{"target", "CREATE"}, {"key", Etcd::b64(lk)}, {"create_revision", "0"},
                                {"result", "EQUAL"}}})},
      {"success", json::array({{{"request_put",
                                 {{"key", Etcd::b64(lk)}, {"value", Etcd::b64(name_)},
                                  {"lease", std::to_string(lease_)}}}}})}};
  std::string name = cl->name;
  etcd_->call("kv/txn", body, [this, name](bool ok, const json&, const std::string& err) {
    WorldLock wl(p_.hub_, p_.shard_);
    auto it = cs_.clusters_.find(name);
    if (it == cs_.clusters_.end()) return;
    it->second->fl.campaign_busy = false;
    if (!ok) last_error_ = err;
  });
}

void Coordinator::write_active(ClusterRt* cl, const failover::ActiveKey& k, long long expect_rev, bool check_leader,
                               std::function<void(bool ok, bool cas_failed)> done) {
  auto& f = cl->fl;
  std::string ak = key(cl, "active");
  json cmp = json::array();
  if (expect_rev == 0)
    cmp.push_back({{"target", "CREATE"}, {"key", Etcd::b64(ak)}, {"create_revision", "0"}, {"result", "EQUAL"}});
  else
    cmp.push_back({{"target", "MOD"}, {"key", Etcd::b64(ak)}, {"mod_revision", std::to_string(expect_rev)},
                   {"result", "EQUAL"}});
  if (check_leader)
    cmp.push_back({{"target", "CREATE"}, {"key", Etcd::b64(key(cl, "leader"))},
                   {"create_revision", std::to_string(f.leader_create)}, {"result", "EQUAL"}});
  json body = {{"compare", cmp},
               {"success", json::array({{{"request_put", {{"key", Etcd::b64(ak)}, {"value", Etcd::b64(encode(k))}}}}})}};
  f.key_busy = true;
  std::string name = cl->name;
  etcd_->call("kv/txn", body, [this, name, k, done](bool ok, const json& b, const std::string& err) {
    WorldLock wl(p_.hub_, p_.shard_);
    auto it = cs_.clusters_.find(name);
    if (it == cs_.clusters_.end() || it->second->removed) return;
    ClusterRt* cl = it->second.get();
    cl->fl.key_busy = false;
    if (!ok) {
      last_error_ = err;
      done(false, false);
      return;
    }
    last_ok_ = mono_s();
    bool succeeded = b.value("succeeded", false);
    long long rev = b.contains("header") ? Etcd::num(b["header"], "revision") : 0;
    if (rev > cl->fl.seen_rev) cl->fl.seen_rev = rev;
    if (succeeded) {
      cl->fl.key = k;
      cl->fl.key.exists = true;
      cl->fl.key.mod_revision = rev;
    }
    done(succeeded, !succeeded);
  });
}

// ---------------------------------------------------------------------------
// What the keys ask of this instance

void Coordinator::reconcile(ClusterRt* cl, double now) {
  auto& f = cl->fl;
  auto& m = cl->fsm;
  if (f.leader.empty()) campaign(cl);
  // The leader runs the console requests other instances sent.
  if (f.leading && f.request && f.request->id != f.handled_request) {
    f.handled_request = f.request->id;
    std::string kind = f.request->abort ? "abort" : failover::to_string(f.request->op);
    std::string err = cs_.request_local(cl, kind);
    if (err.empty())
      LOG_INFO("cluster %s: coordination: %s requested by %s", cl->name.c_str(), kind.c_str(),
               f.request->from.c_str());
    else
      LOG_WARN("cluster %s: coordination: %s requested by %s refused: %s", cl->name.c_str(), kind.c_str(),
               f.request->from.c_str(), err.c_str());
    // The requester reads "request gone, no move" as a refusal: an accepted request
    // goes only once its move's intent is in the key.
    f.request_delete_pending = true;
  }
  if (f.request_delete_pending && (!f.my_move || f.my_move_rev > 0)) {
    f.request_delete_pending = false;
    etcd_->call("kv/deleterange", json{{"key", Etcd::b64(key(cl, "request"))}}, [](bool, const json&, const std::string&) {});
  }
  if (!f.key.exists) {
    // The first instance to lead writes what its machine decided.
    if (f.leading && m.mode() == Mode::Normal && !f.key_busy) {
      failover::ActiveKey k;
      k.exists = true;
      k.active = m.active();
      k.epoch = m.epoch();
      write_active(cl, k, 0, true, [cl](bool ok, bool) {
        if (ok)
          LOG_INFO("cluster %s: coordination: the fleet's key created: the %s, epoch %llu", cl->name.c_str(),
                   failover::side_name(cl->fl.key.active), (unsigned long long)cl->fl.key.epoch);
      });
    }
    return;
  }
  // This instance's move ended and its result is still being written: the key
  // shows the intent until then.
  if (f.pending) return;
  const failover::ActiveKey& k = f.key;
  bool mine = f.my_move && k.move && k.move->id == f.my_move->id;
  if (mine) return;  // this instance's own move: maybe_promote and move_ended carry it
  if (k.move) {
    // Another instance's move: leave the old node, hold clients, acknowledge.
    if (!(m.mode() == Mode::Following && m.target() == k.move->target) && m.mode() != Mode::Draining &&
        m.mode() != Mode::Promoting) {
      f.drained = false;
      cs_.apply_effects(cl, m.follow(k.move->op, k.move->target, now, false));
    }
    bool acked_now = f.ack != k.move->id;
    f.ack = k.move->id;
    if (acked_now) publish_view(cl);  // the leader waits for it before promoting
    if (!f.request_id.empty()) f.request_seen_move = true;
    if (f.leading && k.move->by != name_ && !f.key_busy) {
      // Its leader is gone (this instance leads now): finish what it started.
      const auto& mv = *k.move;
      const auto& fo = cl->cfg->failover;
      failover::ActiveKey next = k;
      next.move.reset();
      bool done = m.view(mv.target).verdict == failover::Verdict::Up;
      if (done) next = {true, mv.target, k.epoch + 1, std::nullopt, 0};
      if (done || wall_s() - mv.started_wall > fo.failover_timeout) {
        std::string by = mv.by;
        write_active(cl, next, k.mod_revision, true, [cl, by, done](bool ok, bool) {
          if (ok)
            LOG_WARN("cluster %s: coordination: the move started by %s %s", cl->name.c_str(), by.c_str(),
                     done ? "is complete (its target answers writable)" : "timed out; cleared");
        });
      }
    }
    return;
  }
  f.ack.clear();
  f.drained = false;
  if (m.mode() == Mode::Draining || m.mode() == Mode::Promoting) return;  // its intent is not written yet
  if (!(m.mode() == Mode::Normal && k.active == m.active() && k.epoch == m.epoch())) {
    std::string why = m.mode() == Mode::Following && k.active == m.active()
                          ? "the fleet's leader (" + f.leader + ") ended the move without it (see its log)"
                          : "the fleet's key names it (epoch " + std::to_string(k.epoch) + ")";
    cs_.apply_effects(cl, m.adopt(k.active, k.epoch, now, why));
  }
  // Judged only on a read made after the request was written (an older read cannot show it).
  if (!f.request_id.empty() && !m.moving() && f.request_rev > 0 && f.read_rev >= f.request_rev) {
    bool pending = f.request && f.request->id == f.request_id;
    if (!pending) {
      // Gone without a move seen here: refused, unless the key moved on meanwhile
      // (a node chosen that already answers writable: no move to follow).
      if (!f.request_seen_move)
        cs_.finish_admin(cl, k.epoch != f.request_epoch ? "ok"
                                                        : "aborted: the fleet's leader did not start it (see its log)");
      f.request_id.clear();
    }
  }
}

void Coordinator::publish_view(ClusterRt* cl) {
  auto& f = cl->fl;
  if (!lease_ || f.view_busy) return;
  std::string v = encode(own_view(cl));
  if (v == f.published) return;
  f.view_busy = true;
  json body = {{"key", Etcd::b64(key(cl, "views/" + name_))}, {"value", Etcd::b64(v)}, {"lease", std::to_string(lease_)}};
  std::string name = cl->name;
  etcd_->call("kv/put", body, [this, name, v](bool ok, const json&, const std::string& err) {
    WorldLock wl(p_.hub_, p_.shard_);
    auto it = cs_.clusters_.find(name);
    if (it == cs_.clusters_.end()) return;
    it->second->fl.view_busy = false;
    if (ok) {
      it->second->fl.published = v;
      last_ok_ = mono_s();
    } else {
      last_error_ = err;
      if (err.find("lease not found") != std::string::npos) lease_ = 0;
    }
  });
}

// ---------------------------------------------------------------------------
// The leader's own moves

bool Coordinator::move_started(ClusterRt* cl) {
  auto& f = cl->fl;
  auto& m = cl->fsm;
  failover::MoveIntent mi;
  mi.op = m.op();
  mi.target = m.target();
  mi.by = name_;
  mi.id = name_ + "-" + std::to_string(m.epoch()) + "-" + std::to_string(++seq_) + "-" +
          std::to_string((long long)wall_s());
  mi.started_wall = wall_s();
  f.my_move = mi;
  f.my_move_rev = 0;
  f.intent_at = mono_s();
  f.promote_held = false;
  if (!f.leading || link() != Link::Ok || !f.key.exists || f.key.move || f.key.active != m.active() ||
      f.key.epoch != m.epoch() || f.key_busy) {
    f.my_move.reset();
    return false;
  }
  failover::ActiveKey k = f.key;
  k.move = mi;
  std::string id = mi.id;
  write_active(cl, k, f.key.mod_revision, true, [this, cl, id](bool ok, bool cas_failed) {
    auto& f = cl->fl;
    if (!f.my_move || f.my_move->id != id) return;  // the move ended meanwhile
    if (ok) {
      f.my_move_rev = f.key.mod_revision;
      LOG_INFO("cluster %s: coordination: %s to the %s announced to the fleet (epoch %llu)", cl->name.c_str(),
               failover::to_string(f.my_move->op), failover::side_name(f.my_move->target),
               (unsigned long long)f.key.epoch);
      maybe_promote(cl, mono_s());
      return;
    }
    std::string why = cas_failed ? "the fleet's key changed (another instance moved the cluster)"
                                 : "etcd did not take the move (" + last_error_ + ")";
    f.my_move.reset();
    cs_.apply_effects(cl, cl->fsm.abort(why, mono_s()));
  });
  return true;
}

void Coordinator::hold_promote(ClusterRt* cl) {
  cl->fl.promote_held = true;
  maybe_promote(cl, mono_s());
}

void Coordinator::maybe_promote(ClusterRt* cl, double now) {
  auto& f = cl->fl;
  if (!f.promote_held || !f.my_move || f.my_move_rev == 0) return;
  if (!f.leading || link() != Link::Ok) {
    // Promote only as the leader the fleet knows: another may lead by now.
    f.promote_held = false;
    cs_.apply_effects(cl, cl->fsm.abort("this instance lost the fleet's leadership or etcd before promoting", now));
    return;
  }
  bool acked = failover::all_acked(f.views, name_, f.my_move->id, false);
  double wait = cfg_.request_timeout + 2 * kTick + 0.5;
  if (!acked && now - f.intent_at < wait) return;
  if (!acked)
    LOG_WARN("cluster %s: coordination: not every live instance acknowledged the move within %.1f s; promoting",
             cl->name.c_str(), wait);
  f.promote_held = false;
  cs_.run_hook(cl, cl->cfg->failover.promote_command, "promote_command");
}

bool Coordinator::others_busy(ClusterRt* cl) {
  auto& f = cl->fl;
  if (!f.my_move) return false;
  if (f.my_move_rev == 0) return true;  // the intent is not written: nobody drains yet
  return !failover::all_acked(f.views, name_, f.my_move->id, true);
}

void Coordinator::move_ended(ClusterRt* cl, bool completed) {
  auto& f = cl->fl;
  if (!f.my_move) return;
  f.my_move.reset();
  f.promote_held = false;
  if (f.my_move_rev == 0) return;  // never announced: nothing to undo
  failover::ActiveKey k;
  k.exists = true;
  k.active = cl->fsm.active();
  k.epoch = cl->fsm.epoch();
  f.pending = k;
  f.pending_rev = f.my_move_rev;
  f.my_move_rev = 0;
  LOG_INFO("cluster %s: coordination: writing the move's %s to the fleet's key", cl->name.c_str(),
           completed ? "result" : "abort");
  write_pending(cl);
}

std::string Coordinator::request(ClusterRt* cl, const std::string& kind) {
  auto& f = cl->fl;
  Link l = link();
  if (l != Link::Ok)
    return std::string("coordination is ") + failover::to_string(l) +
           ": the instances cannot move together now (" + last_error_ + ")";
  if (!lease_) return "coordination: no etcd lease yet";
  if (!f.request_id.empty()) return "a request from this instance is still pending";
  failover::Request r;
  r.abort = kind == "abort";
  if (!r.abort) {
    auto op = failover::parse_op(kind);
    if (!op) return "unknown request " + kind;
    r.op = *op;
  }
  r.from = name_;
  r.id = name_ + "-r" + std::to_string(++seq_) + "-" + std::to_string((long long)wall_s());
  f.request_id = r.id;
  f.request_seen_move = false;
  f.request_epoch = f.key.epoch;
  f.request_rev = 0;
  json body = {{"key", Etcd::b64(key(cl, "request"))}, {"value", Etcd::b64(encode(r))}, {"lease", std::to_string(lease_)}};
  std::string name = cl->name, id = r.id;
  etcd_->call("kv/put", body, [this, name, id](bool ok, const json& b, const std::string& err) {
    WorldLock wl(p_.hub_, p_.shard_);
    auto it = cs_.clusters_.find(name);
    if (it == cs_.clusters_.end()) return;
    ClusterRt* cl = it->second.get();
    if (cl->fl.request_id != id) return;
    if (ok) {
      long long rev = b.contains("header") ? Etcd::num(b["header"], "revision") : 0;
      cl->fl.request_rev = rev > 0 ? rev : 1;
      return;
    }
    cl->fl.request_id.clear();
    cs_.finish_admin(cl, "aborted: the request did not reach etcd: " + err);
  });
  LOG_INFO("cluster %s: coordination: %s sent to the fleet's leader (%s)", cl->name.c_str(), kind.c_str(),
           f.leader.empty() ? "none yet" : f.leader.c_str());
  return "";
}

// ---------------------------------------------------------------------------
// decider = "patroni"

void Coordinator::poll_patroni(ClusterRt* cl, double now) {
  auto& f = cl->fl;
  if (now < f.patroni_next) return;
  const auto& fo = cl->cfg->failover;
  f.patroni_next = now + fo.health_check_interval;
  for (int side = 0; side < 2; side++) {
    if (f.patroni_busy[side]) continue;
    const config::Node& n = side == 0 ? cl->cfg->primary : *cl->cfg->standby;
    std::string url = n.restapi;
    while (!url.empty() && url.back() == '/') url.pop_back();
    url += "/primary";
    f.patroni_busy[side] = true;
    std::string name = cl->name;
    http_->request(url, false, "", fo.health_check_timeout, [this, name, side, url](coord::HttpResult&& r) {
      WorldLock wl(p_.hub_, p_.shard_);
      auto it = cs_.clusters_.find(name);
      if (it == cs_.clusters_.end()) return;
      ClusterRt* cl = it->second.get();
      auto& f = cl->fl;
      f.patroni_busy[side] = false;
      if (cl->removed || !patroni(cl)) return;
      int v = r.status == 200 ? 1 : r.status > 0 ? 0 : -1;
      f.patroni_error[side] = r.status > 0 ? "" : r.error;
      if (v != f.patroni[side])
        LOG_INFO("cluster %s: Patroni on the %s (%s): %s", cl->name.c_str(), failover::side_name(side), url.c_str(),
                 v == 1 ? "leader" : v == 0 ? ("not the leader (HTTP " + std::to_string(r.status) + ")").c_str()
                                            : ("no answer: " + r.error).c_str());
      f.patroni[side] = v;
      follow_patroni(cl, mono_s());
    });
  }
}

void Coordinator::follow_patroni(ClusterRt* cl, double now) {
  auto& f = cl->fl;
  auto& m = cl->fsm;
  int leader = -1;
  if (f.patroni[0] == 1 && f.patroni[1] != 1) leader = 0;
  if (f.patroni[1] == 1 && f.patroni[0] != 1) leader = 1;
  if (leader < 0 || m.mode() == Mode::Starting) return;
  if (m.mode() == Mode::Following) {
    if (leader == m.active())
      cs_.apply_effects(cl, m.adopt(leader, m.epoch(), now, "Patroni's leader is still this node"));
    else if (leader != m.target())
      cs_.apply_effects(cl, m.follow(m.op(), leader, now, true));
    return;
  }
  if (m.moving()) return;
  if (leader != m.active()) {
    failover::Op op = m.view(m.active()).verdict == failover::Verdict::Up ? failover::Op::Switchover
                                                                         : failover::Op::Failover;
    cs_.apply_effects(cl, m.follow(op, leader, now, true));
  } else if (m.mode() != Mode::Normal) {
    cs_.apply_effects(cl, m.adopt(leader, m.epoch(), now, "Patroni's leader"));
  }
}

}  // namespace pgpivot
