// The console's login, its command table and the commands themselves; SHOW's views
// are in admin_show.cpp. With several workers every command runs with the world
// stopped and covers all of them (workers/hub.hpp); the answer goes to the
// console's own client.
#include "pooler/control/admin.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "config/load.hpp"
#include "config/settings.hpp"
#include "pooler/control/admin_table.hpp"
#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

using namespace console;

namespace {

// SET auth_type = hba reads auth_hba_file and auth_ident_file as a RELOAD would (the
// rules are otherwise only read with the config): "" with `out` filled, or the
// first error. PgBouncer reads nothing here and rejects every login until a RELOAD.
std::string hba_for_set(const config::Pooler& next, config::Hba& out) {
  if (next.auth_type != config::AuthType::Hba) return "";
  std::vector<config::HbaProblem> problems;
  config::load_hba(next.auth_hba_file, next.auth_ident_file, out, problems);
  for (const config::HbaProblem& h : problems)
    if (!h.warning) return h.file + (h.line ? ":" + std::to_string(h.line) : "") + ": " + h.message;
  return "";
}

}  // namespace

Console::Console(Pooler& p) : p_(p) {}
Console::~Console() = default;

// ---------------------------------------------------------------------------
// Login

void Console::login(Client* c) {
  if (!db_) {
    db_ = std::make_unique<DbEntry>();
    db_->cfg.name = "pgbouncer";
    db_->cfg.dbname = "pgbouncer";
    db_->cfg.pool_mode = config::PoolMode::Statement;
    db_->cfg.pool_size = 2;
    db_->counts = p_.hub_->db_count(std::string("\x01console"));  // no configured name can match
    user_ = std::make_unique<UserEntry>();
    user_->cfg.name = "pgbouncer";
    user_->counts = p_.hub_->user_count(std::string("\x01console"));
    pool_ = p_.registry_.get_pool(db_.get(), "pgbouncer", user_.get(), "pgbouncer");
    pool_->admin = true;
  }
  c->admin = true;
  c->pool = pool_;
  pool_->stats.client_login_count++;
  p_.cancels_.add(c);
  std::string buf;
  proto::auth_ok(buf);
  for (auto [k, v] : {std::pair{"server_version", "15.0 (pgpivot " PGPIVOT_VERSION ")"},
                      {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"}, {"DateStyle", "ISO"},
                      {"TimeZone", "UTC"}, {"standard_conforming_strings", "on"}, {"integer_datetimes", "on"},
                      {"application_name", ""}, {"is_superuser", "off"}}) {
    proto::parameter_status(buf, k, v);
  }
  proto::backend_key_data(buf, c->cancel_pid, c->cancel_key);
  p_.login_notice(buf);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
  c->login = LoginStep::Done;
  p_.client_change_state(c, ClientState::Idle);
}

// ---------------------------------------------------------------------------
// Responses

void Console::done(Client* c, const std::string& tag) {
  std::string buf;
  proto::command_complete(buf, tag);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

void Console::error(Client* c, Reason why, std::initializer_list<std::string_view> args, const std::string& detail) {
  std::string buf;
  proto::ErrorFields e;
  e.sqlstate = sqlstate_of(why);
  e.message = reason_text(why, args);
  e.detail = detail;
  proto::error_response(buf, e);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

// ---------------------------------------------------------------------------
// The command table

const Console::Command Console::kCommands[] = {
    // name          handler                      stats_users  db_must_exist
    {"SHOW",        &Console::cmd_show,           true,        false},
    {"SELECT",      &Console::cmd_select,         true,        false},
    {"PAUSE",       &Console::cmd_pause,          false,       true},
    {"RESUME",      &Console::cmd_resume,         false,       true},
    {"SUSPEND",     &Console::cmd_suspend,        false,       true},
    {"DISABLE",     &Console::cmd_enable,         false,       true},
    {"ENABLE",      &Console::cmd_enable,         false,       true},
    {"RECONNECT",   &Console::cmd_reconnect,      false,       true},
    {"KILL",        &Console::cmd_kill,           false,       true},
    {"KILL_CLIENT", &Console::cmd_kill_client,    false,       false},
    {"WAIT_CLOSE",  &Console::cmd_wait_close,     false,       true},
    {"RELOAD",      &Console::cmd_reload,         false,       true},
    {"SHUTDOWN",    &Console::cmd_shutdown,       false,       false},
    {"SET",         &Console::cmd_set,            false,       false},
    // The moves name a cluster, not a database.
    {"SWITCHOVER",  &Console::cmd_move,           false,       false},
    {"FAILOVER",    &Console::cmd_move,           false,       false},
    {"FAILBACK",    &Console::cmd_move,           false,       false},
    {"ABORT",       &Console::cmd_move,           false,       false},
};

void Console::query(Client* c, std::string_view sql) {
  WorldLock world_lock(p_.hub_, p_.shard_);
  // As PgBouncer, each console query is a transaction and a query of the console's
  // database in SHOW STATS / TOTALS (counted before the answer, which includes it).
  pool_->stats.xact_count++;
  pool_->stats.query_count++;
  auto w = words(sql);
  if (w.empty()) {
    std::string buf;
    proto::empty_query_response(buf);
    proto::ready_for_query(buf, 'I');
    c->queue(buf);
    return;
  }
  Args a{w, sql, upper(w[0]), w.size() > 1 ? ident(w[1]) : ""};
  const Command* command = nullptr;
  for (const Command& k : kCommands) {
    if (a.cmd == k.name) command = &k;
  }
  if (!command) {
    error(c, Reason::AdminUnknownCommand, {sql.substr(0, 64)});
    return;
  }
  if (c->stats_only && !command->stats_users) {
    error(c, Reason::AdminNotAllowed, {a.cmd});
    return;
  }
  if (command->db_must_exist && !a.db.empty() && !db_exists(a.db)) {
    error(c, Reason::AdminNoSuchDatabase, {a.db});
    return;
  }
  (this->*command->run)(c, a);
}

bool Console::db_exists(const std::string& name) {
  return p_.registry_.db(name) != nullptr;
}

bool Console::need_db(Client* c, const Args& a) {
  if (a.db.empty()) {
    error(c, Reason::AdminNeedsDatabase, {a.cmd});
    return false;
  }
  if (!db_exists(a.db)) {
    error(c, Reason::AdminNoSuchDatabase, {a.db});
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Commands

void Console::cmd_show(Client* c, const Args& a) {
  if (a.w.size() < 2) {
    error(c, Reason::AdminShowNeedsArgument);
    return;
  }
  std::string what = upper(ident(a.w[1]));
  const View* v = find_view(what);
  if (!v) {
    error(c, Reason::AdminUnknownShow, {what});
    return;
  }
  if (what == "FDS" && c->stats_only) {  // as PgBouncer: it shows every cancel key
    error(c, Reason::AdminNotAllowed, {"SHOW FDS"});
    return;
  }
  std::string buf;
  (this->*v->run)(buf, what);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

void Console::cmd_select(Client* c, const Args&) {
  // Some clients probe with SELECT 1 / SELECT version(); answer the simplest.
  Table t({{"?column?", true}});
  t.row({str("1")});
  std::string buf;
  t.emit(buf, "SELECT 1");
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

void Console::cmd_move(Client* c, const Args& a) {
  // The argument names a cluster; without one, the only cluster that has a standby.
  Clusters& clusters = p_.control()->clusters();
  ClusterRt* target = nullptr;
  if (!a.db.empty()) {
    auto it = clusters.all().find(a.db);
    if (it != clusters.all().end() && !it->second->removed) target = it->second.get();
    if (!target) {
      error(c, Reason::AdminNoSuchCluster, {a.db});
      return;
    }
  } else {
    int n = 0;
    for (auto& [name, cl] : clusters.all()) {
      if (!cl->removed && cl->cfg->standby) {
        target = cl.get();
        n++;
      }
    }
    if (n != 1) {
      error(c, Reason::AdminNeedsCluster, {a.cmd, std::to_string(n)});
      return;
    }
  }
  std::uint64_t ended = target->moves_ended;
  std::string err = clusters.request(target, lower(a.cmd));
  if (!err.empty()) {
    error(c, Reason::AdminMoveRefused, {err});
    return;
  }
  if (target->moves_ended != ended && !target->moving()) {
    // It ended at once (ABORT; a node chosen that already is writable).
    if (a.cmd == "ABORT" || target->last_end == "ok")
      done(c, a.cmd);
    else
      error(c, Reason::AdminMoveEnded, {target->name, target->last_end});
    return;
  }
  // Answered when the move ends (completes or is aborted), so scripts can wait on it.
  pending_.push_back({c, a.cmd, target->name, ended});
  finish_pending();
}

void Console::cmd_pause(Client* c, const Args& a) {
  for (Pooler* x : p_.world()) {
    if (a.db.empty()) {
      x->paused_all_ = true;
    } else {
      x->registry_.db(a.db)->paused = true;
    }
  }
  LOG_INFO("PAUSE command issued%s%s", a.db.empty() ? "" : " for database ", a.db.c_str());
  pending_.push_back({c, "PAUSE", a.db});
  for (Pooler* x : p_.world()) x->pause_sweep();
}

void Console::cmd_resume(Client* c, const Args& a) {
  if (a.db.empty() && p_.shutdown_pending()) {
    LOG_INFO("RESUME command issued");
    error(c, Reason::AdminShuttingDown);
    return;
  }
  for (Pooler* x : p_.world()) {
    if (x->suspended_) x->suspend(false);
    if (a.db.empty()) {
      x->paused_all_ = false;
      for (auto& [n, d] : x->registry_.dbs()) d->paused = false;
    } else {
      x->registry_.db(a.db)->paused = false;
    }
  }
  LOG_INFO("RESUME command issued%s%s", a.db.empty() ? "" : " for database ", a.db.c_str());
  for (Pool* p : p_.world_pools()) p->owner->pool_service(p);
  done(c, "RESUME");
}

void Console::cmd_suspend(Client* c, const Args&) {
  for (Pooler* x : p_.world()) x->suspend(true);
  done(c, "SUSPEND");
}

void Console::cmd_enable(Client* c, const Args& a) {
  if (!need_db(c, a)) return;
  for (Pooler* x : p_.world()) x->registry_.db(a.db)->disabled = a.cmd == "DISABLE";
  done(c, a.cmd);
}

void Console::cmd_reconnect(Client* c, const Args& a) {
  for (Pool* p : p_.world_pools()) {
    if (p->admin || (!a.db.empty() && p->db_name != a.db)) continue;
    p->each_server([](Server* s) { s->close_needed = true; });
    p->sv_idle.for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, "RECONNECT"); });
  }
  done(c, "RECONNECT");
}

void Console::cmd_kill(Client* c, const Args& a) {
  for (Pool* p : p_.world_pools()) {
    if (p->admin || (!a.db.empty() && p->db_name != a.db)) continue;
    p->each_client([&](Client* x) { p->owner->disconnect_client(x, Reason::DatabaseKilled); });
    p->each_server([&](Server* s) { p->owner->disconnect_server(s, "KILL"); });
  }
  if (!a.db.empty()) {
    for (Pooler* x : p_.world()) x->registry_.db(a.db)->paused = true;  // as PgBouncer: KILL leaves the database paused
  }
  done(c, "KILL");
}

void Console::cmd_kill_client(Client* c, const Args& a) {
  std::string arg = a.w.size() > 1 ? a.w[1] : "";
  char* end = nullptr;
  errno = 0;
  unsigned long long id = std::strtoull(arg.c_str(), &end, 10);
  if (arg.empty() || *end || errno || !std::isdigit(static_cast<unsigned char>(arg[0]))) {
    error(c, Reason::AdminBadClientId, {arg});  // as PgBouncer: not a number
    return;
  }
  Client* victim = nullptr;
  for (Pool* p : p_.world_pools()) {
    p->each_client([&](Client* x) {
      if (x->id == id) victim = x;
    });
  }
  if (!victim) {
    error(c, Reason::AdminNoSuchClient, {arg});
    return;
  }
  if (victim == c) {
    error(c, Reason::AdminKillSelf);
    return;
  }
  victim->pooler->disconnect_client(victim, Reason::KilledByAdmin);
  done(c, "KILL_CLIENT");
}

void Console::cmd_wait_close(Client* c, const Args& a) {
  pending_.push_back({c, "WAIT_CLOSE", a.db});
  finish_pending();
}

void Console::cmd_reload(Client* c, const Args&) {
  auto res = config::load_file(p_.cfg_.path);
  if (!res.ok()) {
    // As PgBouncer: the client is told to see the log, where the errors are; they
    // are in the error's DETAIL too.
    std::string errors;
    for (const auto& e : res.errors) errors += (errors.empty() ? "" : "\n") + e.to_string();
    LOG_ERROR("RELOAD failed, old configuration kept:\n%s", errors.c_str());
    error(c, Reason::AdminReloadFailed, {}, errors);
    return;
  }
  LOG_INFO("RELOAD command issued");
  if (!p_.reload()) {
    error(c, Reason::AdminReloadFailed);  // the TLS setup failed: the log says why
    return;
  }
  done(c, "RELOAD");
}

void Console::cmd_shutdown(Client* c, const Args& a) {
  std::string mode = a.w.size() > 1 ? upper(ident(a.w[1])) : "";
  LOG_INFO("SHUTDOWN%s%s command issued", mode.empty() ? "" : " ", mode.c_str());
  if (mode.empty()) {
    done(c, "SHUTDOWN");
    c->flush();
    p_.shutdown_all();
  } else if (mode == "WAIT_FOR_SERVERS") {
    done(c, "SHUTDOWN");
    for (Pooler* x : p_.world()) x->begin_safe_shutdown();
  } else if (mode == "WAIT_FOR_CLIENTS") {
    done(c, "SHUTDOWN");
    for (Pooler* x : p_.world()) x->begin_wait_for_clients();
  } else {
    error(c, Reason::AdminShutdownMode);
  }
}

// SET key = value  |  SET key TO value: checked as the config loaders check it
// (config/settings.hpp), applied on every worker.
void Console::cmd_set(Client* c, const Args& a) {
  const auto& w = a.w;
  if (w.size() < 3) {
    error(c, Reason::AdminSetUsage);
    return;
  }
  std::string key = ident(w[1]);
  std::size_t vi = (w[2] == "=" || upper(w[2]) == "TO") ? 3 : 2;
  if (vi >= w.size()) {
    error(c, Reason::AdminSetUsage);
    return;
  }
  std::string value = ident(w[vi]);
  if (!w[vi].empty() && w[vi][0] != '\'' && w[vi][0] != '"') value = w[vi];
  const config::Setting* k = config::find_setting(key);
  if (!k) {
    error(c, Reason::AdminUnknownSetting, {key});
    return;
  }
  if (k->change != config::Change::Online) {
    error(c, k->change == config::Change::Restart ? Reason::AdminSettingNeedsRestart
                                                  : Reason::AdminSettingNeedsReload,
          {k->name});
    return;
  }
  // The loaders' checks: the value itself, then those across settings.
  config::Pooler next = p_.cfg_.pooler;
  std::string err = config::set_from_text(next, *k, value);
  if (err.empty()) {
    for (auto& [setting, why] : config::pooler_problems(next)) err = why;
  }
  config::Hba hba;
  bool new_auth = next.auth_type != p_.cfg_.pooler.auth_type;
  if (err.empty() && new_auth) err = hba_for_set(next, hba);
  if (!err.empty()) {
    error(c, Reason::AdminSettingInvalid, {k->name, err});
    return;
  }
  for (Pooler* x : p_.world()) {
    x->cfg_.pooler = next;
    if (new_auth) x->cfg_.hba = hba;
  }
  set_log_verbose(next.verbose);
  LOG_INFO("SET %s = %s by admin", k->name, config::value_text(p_.cfg_.pooler, *k).c_str());
  std::string_view name = k->name;
  if (name.find("_tls_") != std::string_view::npos || name.find("_tls13_") != std::string_view::npos) apply_tls(c);
  for (Pool* p : p_.world_pools()) p->owner->pool_service(p);
  done(c, "SET");
}

// After a SET of a TLS setting: new contexts on every worker, as PgBouncer. The
// value is kept even when they cannot be built (a key and its certificate are set
// one after the other); the contexts in use then stay, and the client is told.
void Console::apply_tls(Client* c) {
  std::string err;
  for (Pooler* x : p_.world()) {
    if (x->apply_tls(x->cfg_.pooler, err)) continue;
    LOG_ERROR("TLS setup failed: %s", err.c_str());
    std::string buf;
    proto::ErrorFields e;
    e.severity = "WARNING";
    e.sqlstate = "01000";
    e.message = "TLS settings could not be applied, still using old configuration";  // PgBouncer's text
    e.detail = err;
    proto::notice_response(buf, e);
    c->queue(buf);
    return;
  }
}

// ---------------------------------------------------------------------------
// Commands that answer when a condition holds

bool Console::pending_done(const Pending& pa) {
  if (pa.command == "SWITCHOVER" || pa.command == "FAILOVER" || pa.command == "FAILBACK") {
    auto& clusters = p_.control()->clusters().all();
    auto it = clusters.find(pa.db);
    return it == clusters.end() || it->second->removed || it->second->moves_ended != pa.moves_ended;
  }
  for (Pool* p : p_.world_pools()) {
    if (p->admin || (!pa.db.empty() && p->db_name != pa.db)) continue;
    if (pa.command == "PAUSE") {
      if (p->server_total() > 0) return false;
    } else {  // WAIT_CLOSE: no server marked for closing remains
      bool any = false;
      p->each_server([&](Server* s) { any = any || s->close_needed; });
      if (any) return false;
    }
  }
  return true;
}

void Console::finish_pending() {
  for (std::size_t i = 0; i < pending_.size();) {
    Pending pa = pending_[i];
    if (!pending_done(pa)) {
      i++;
      continue;
    }
    pending_.erase(pending_.begin() + std::ptrdiff_t(i));
    auto& clusters = p_.control()->clusters().all();
    auto it = clusters.find(pa.db);
    if (it != clusters.end() && it->second->last_end != "ok" &&
        (pa.command == "SWITCHOVER" || pa.command == "FAILOVER" || pa.command == "FAILBACK")) {
      error(pa.client, Reason::AdminMoveEnded, {pa.db, it->second->last_end});
      continue;
    }
    done(pa.client, pa.command);
  }
}

void Console::forget(Client* c) {
  std::erase_if(pending_, [c](const Pending& pa) { return pa.client == c; });
}

}  // namespace pgpivot
