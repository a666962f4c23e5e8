// Admin console: the virtual databases "pgbouncer" and "pgpivot", PgBouncer's SHOW
// commands (same column names and order as PgBouncer 1.25) and control commands.
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <variant>

#include "config/load.hpp"
#include "config/settings.hpp"
#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

namespace {

using Cell = std::optional<std::string>;

// A result set whose numeric columns are sent as int8, as PgBouncer does, so
// drivers hand exporters numbers rather than strings.
class Table {
 public:
  struct Col {
    std::string name;
    bool numeric;
  };
  explicit Table(std::vector<Col> cols) : cols_(std::move(cols)) {}
  void row(std::vector<Cell> r) { rows_.push_back(std::move(r)); }
  void emit(std::string& out, const char* tag = "SHOW") const {
    proto::Writer w(out);
    w.begin('T').u16(std::uint16_t(cols_.size()));
    for (const auto& c : cols_) {
      w.cstr(c.name).u32(0).u16(0).u32(c.numeric ? 20 : 25).u16(c.numeric ? 8 : 0xffff).i32(-1).u16(0);
    }
    w.end();
    for (const auto& r : rows_) proto::data_row(out, r);
    proto::command_complete(out, tag);
  }

 private:
  std::vector<Col> cols_;
  std::vector<std::vector<Cell>> rows_;
};

Cell num(std::uint64_t v) { return std::to_string(v); }
Cell inum(long long v) { return std::to_string(v); }
Cell str(std::string v) { return std::optional<std::string>(std::move(v)); }

std::string upper(std::string_view s) {
  std::string r(s);
  for (char& ch : r) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  return r;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& ch : r) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return r;
}

std::string fmt_time(std::uint64_t epoch) {
  if (!epoch) return "";
  time_t t = time_t(epoch);
  tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tmv);
  return buf;
}

std::string fmt_ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return p ? buf : "";
}

// Splits "SHOW pools;" into words; quoted identifiers keep their case.
std::vector<std::string> words(std::string_view sql) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < sql.size()) {
    char ch = sql[i];
    if (std::isspace(static_cast<unsigned char>(ch)) || ch == ';' || ch == ',') {
      i++;
      continue;
    }
    if (ch == '=') {
      out.emplace_back("=");
      i++;
      continue;
    }
    if (ch == '\'' || ch == '"') {
      std::string w;
      char q = ch;
      i++;
      while (i < sql.size()) {
        if (sql[i] == q) {
          if (i + 1 < sql.size() && sql[i + 1] == q) {
            w += q;
            i += 2;
            continue;
          }
          i++;
          break;
        }
        w += sql[i++];
      }
      out.push_back(std::string(1, q) + w);  // first char marks the quote kind
      continue;
    }
    std::size_t j = i;
    while (j < sql.size() && !std::isspace(static_cast<unsigned char>(sql[j])) && sql[j] != ';' && sql[j] != '=' &&
           sql[j] != ',') {
      j++;
    }
    out.emplace_back(sql.substr(i, j - i));
    i = j;
  }
  return out;
}

// Strips the quote marker words() leaves on quoted words; folds bare words to lower case.
std::string ident(const std::string& w) {
  if (!w.empty() && (w[0] == '"' || w[0] == '\'')) return w.substr(1);
  return lower(w);
}


const char* kHelp[] = {
    "Console usage",
    "\tSHOW HELP|CONFIG|USERS|DATABASES|POOLS|CLIENTS|SERVERS|VERSION|STATE",
    "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|MEM",
    "\tSET key = arg",
    "\tRELOAD",
    "\tPAUSE [<db>]",
    "\tRESUME [<db>]",
    "\tDISABLE <db>",
    "\tENABLE <db>",
    "\tRECONNECT [<db>]",
    "\tKILL [<db>]",
    "\tKILL_CLIENT <client_id>",
    "\tSUSPEND",
    "\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]",
    "\tWAIT_CLOSE [<db>]",
    "\tSHOW CLUSTERS|FAILOVERS",
    "\tSWITCHOVER [<cluster>]",
    "\tFAILOVER [<cluster>]",
    "\tFAILBACK [<cluster>]",
    "\tABORT [<cluster>]",
};

}  // namespace

// ---------------------------------------------------------------------------
// Login

void Pooler::admin_login(Client* c) {
  if (!admin_db_) {
    admin_db_ = std::make_unique<DbEntry>();
    admin_db_->cfg.name = "pgbouncer";
    admin_db_->cfg.dbname = "pgbouncer";
    admin_db_->cfg.pool_mode = config::PoolMode::Statement;
    admin_db_->cfg.pool_size = 2;
    admin_db_->counts = hub_->db_count(std::string("\x01console"));  // no configured name can match
    admin_user_ = std::make_unique<UserEntry>();
    admin_user_->cfg.name = "pgbouncer";
    admin_user_->counts = hub_->user_count(std::string("\x01console"));
    admin_pool_ = get_pool(admin_db_.get(), "pgbouncer", admin_user_.get(), "pgbouncer");
    admin_pool_->admin = true;
  }
  c->admin = true;
  c->pool = admin_pool_;
  admin_db_->counts->clients.fetch_add(1, std::memory_order_relaxed);
  admin_user_->counts->clients.fetch_add(1, std::memory_order_relaxed);
  admin_pool_->stats.client_login_count++;
  cancels_.add(c);
  std::string buf;
  proto::auth_ok(buf);
  for (auto [k, v] : {std::pair{"server_version", "15.0 (pgpivot " PGPIVOT_VERSION ")"},
                      {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"}, {"DateStyle", "ISO"},
                      {"TimeZone", "UTC"}, {"standard_conforming_strings", "on"}, {"integer_datetimes", "on"},
                      {"application_name", ""}, {"is_superuser", "off"}}) {
    proto::parameter_status(buf, k, v);
  }
  proto::backend_key_data(buf, c->cancel_pid, c->cancel_key);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
  c->login = LoginStep::Done;
  client_change_state(c, ClientState::Idle);
}

// ---------------------------------------------------------------------------
// Responses

void Pooler::admin_command_done(Client* c, const std::string& tag) {
  std::string buf;
  proto::command_complete(buf, tag);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

void Pooler::admin_error(Client* c, Reason why, std::initializer_list<std::string_view> args) {
  std::string buf;
  proto::ErrorFields e;
  e.sqlstate = sqlstate_of(why);
  e.message = reason_text(why, args);
  proto::error_response(buf, e);
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

// With several workers every console command runs with the world stopped and
// covers all of them (see hub.hpp); the answer goes to the console's own client.
void Pooler::admin_query(Client* c, std::string_view sql) {
  WorldLock world_lock(hub_, shard_);
  auto w = words(sql);
  if (w.empty()) {
    std::string buf;
    proto::empty_query_response(buf);
    proto::ready_for_query(buf, 'I');
    c->queue(buf);
    return;
  }
  std::string cmd = upper(w[0]);
  std::string arg1 = w.size() > 1 ? w[1] : "";
  if (cmd == "SHOW") {
    if (w.size() < 2) {
      admin_error(c, Reason::AdminShowNeedsArgument);
      return;
    }
    admin_show(c, upper(ident(w[1])), w.size() > 2 ? ident(w[2]) : "");
    return;
  }
  static const char* kControl[] = {"PAUSE",      "RESUME",   "SUSPEND",  "DISABLE",  "ENABLE",
                                   "RECONNECT",  "KILL",     "KILL_CLIENT", "WAIT_CLOSE", "RELOAD",
                                   "SHUTDOWN",   "SET",      "SELECT",   "SWITCHOVER", "FAILOVER",
                                   "FAILBACK",   "ABORT"};
  bool known = false;
  for (const char* k : kControl) known = known || cmd == k;
  if (!known) {
    admin_error(c, Reason::AdminUnknownCommand, {sql.substr(0, 64)});
    return;
  }
  if (cmd == "SELECT") {
    // Some clients probe with SELECT 1 / SELECT version(); answer the simplest.
    Table t({{"?column?", true}});
    t.row({str("1")});
    std::string buf;
    t.emit(buf, "SELECT 1");
    proto::ready_for_query(buf, 'I');
    c->queue(buf);
    return;
  }
  if (c->stats_only) {
    admin_error(c, Reason::AdminNotAllowed, {cmd});
    return;
  }
  std::string db = w.size() > 1 ? ident(w[1]) : "";
  auto db_exists = [&](const std::string& name) {
    auto it = dbs_.find(name);
    return it != dbs_.end() && !it->second->removed;
  };
  auto need_db = [&]() -> bool {
    if (db.empty()) {
      admin_error(c, Reason::AdminNeedsDatabase, {cmd});
      return false;
    }
    if (!db_exists(db)) {
      admin_error(c, Reason::AdminNoSuchDatabase, {db});
      return false;
    }
    return true;
  };
  if (cmd == "SWITCHOVER" || cmd == "FAILOVER" || cmd == "FAILBACK" || cmd == "ABORT") {
    // The argument names a cluster; without one, the only cluster that has a standby.
    ClusterRt* target = nullptr;
    auto& clusters = control()->clusters().all();
    if (!db.empty()) {
      auto it = clusters.find(db);
      if (it != clusters.end() && !it->second->removed) target = it->second.get();
      if (!target) {
        admin_error(c, Reason::AdminNoSuchCluster, {db});
        return;
      }
    } else {
      int n = 0;
      for (auto& [name, cl] : clusters) {
        if (!cl->removed && cl->cfg->standby) {
          target = cl.get();
          n++;
        }
      }
      if (n != 1) {
        admin_error(c, Reason::AdminNeedsCluster, {cmd, std::to_string(n)});
        return;
      }
    }
    std::string kind = lower(cmd);
    std::uint64_t ended = target->moves_ended;
    std::string err = control()->clusters().request(target, kind);
    if (!err.empty()) {
      admin_error(c, Reason::AdminMoveRefused, {err});
      return;
    }
    if (target->moves_ended != ended && !target->moving()) {
      // It ended at once (ABORT; a node chosen that already is writable).
      if (cmd == "ABORT" || target->last_end == "ok")
        admin_command_done(c, cmd);
      else
        admin_error(c, Reason::AdminMoveEnded, {target->name, target->last_end});
      return;
    }
    // Answered when the move ends (completes or is aborted), so scripts can wait on it.
    pending_admin_.push_back({c, cmd, target->name, ended});
    finish_pending_admin();
    return;
  }
  if (!db.empty() && cmd != "SET" && cmd != "SHUTDOWN" && cmd != "KILL_CLIENT" && !db_exists(db)) {
    admin_error(c, Reason::AdminNoSuchDatabase, {db});
    return;
  }
  if (cmd == "PAUSE") {
    for (Pooler* x : world()) {
      if (db.empty()) {
        x->paused_all_ = true;
      } else {
        x->dbs_[db]->paused = true;
      }
    }
    LOG_INFO("PAUSE command issued%s%s", db.empty() ? "" : " for database ", db.c_str());
    pending_admin_.push_back({c, "PAUSE", db});
    for (Pooler* x : world()) x->pause_sweep();
  } else if (cmd == "RESUME") {
    for (Pooler* x : world()) {
      if (x->suspended_) x->suspend(false);
      if (db.empty()) {
        x->paused_all_ = false;
        for (auto& [n, d] : x->dbs_) d->paused = false;
      } else {
        x->dbs_[db]->paused = false;
      }
    }
    LOG_INFO("RESUME command issued%s%s", db.empty() ? "" : " for database ", db.c_str());
    for (Pool* p : world_pools()) p->owner->pool_service(p);
    admin_command_done(c, "RESUME");
  } else if (cmd == "SUSPEND") {
    for (Pooler* x : world()) x->suspend(true);
    admin_command_done(c, "SUSPEND");
  } else if (cmd == "DISABLE" || cmd == "ENABLE") {
    if (!need_db()) return;
    for (Pooler* x : world()) x->dbs_[db]->disabled = cmd == "DISABLE";
    admin_command_done(c, cmd);
  } else if (cmd == "RECONNECT") {
    for (Pool* p : world_pools()) {
      if (p->admin || (!db.empty() && p->db_name != db)) continue;
      p->each_server([](Server* s) { s->close_needed = true; });
      p->sv_idle.for_each<Server>([&](Server* s) { p->owner->disconnect_server(s, "RECONNECT"); });
    }
    admin_command_done(c, "RECONNECT");
  } else if (cmd == "KILL") {
    for (Pool* p : world_pools()) {
      if (p->admin || (!db.empty() && p->db_name != db)) continue;
      p->each_client([&](Client* x) { p->owner->disconnect_client(x, Reason::DatabaseKilled); });
      p->each_server([&](Server* s) { p->owner->disconnect_server(s, "KILL"); });
    }
    if (!db.empty()) {
      for (Pooler* x : world()) x->dbs_[db]->paused = true;  // as PgBouncer: KILL leaves the database paused
    }
    admin_command_done(c, "KILL");
  } else if (cmd == "KILL_CLIENT") {
    char* end = nullptr;
    unsigned long long id = std::strtoull(arg1.c_str(), &end, 10);
    Client* victim = nullptr;
    for (Pool* p : world_pools()) {
      p->each_client([&](Client* x) {
        if (x->id == id) victim = x;
      });
    }
    if (arg1.empty() || *end || !victim) {
      admin_error(c, Reason::AdminNoSuchClient, {arg1});
      return;
    }
    if (victim == c) {
      admin_error(c, Reason::AdminKillSelf);
      return;
    }
    victim->pooler->disconnect_client(victim, Reason::KilledByAdmin);
    admin_command_done(c, "KILL_CLIENT");
  } else if (cmd == "WAIT_CLOSE") {
    pending_admin_.push_back({c, "WAIT_CLOSE", db});
    finish_pending_admin();
  } else if (cmd == "RELOAD") {
    auto res = config::load_file(cfg_.path);
    if (!res.ok()) {
      std::string errors;
      for (const auto& e : res.errors) errors += "\n" + e.to_string();
      std::string msg = reason_text(Reason::AdminReloadFailed, {errors});
      LOG_ERROR("%s", msg.c_str());
      admin_error(c, Reason::AdminReloadFailed, {errors});
      return;
    }
    LOG_INFO("RELOAD command issued");
    reload();
    admin_command_done(c, "RELOAD");
  } else if (cmd == "SHUTDOWN") {
    std::string mode = upper(ident(arg1));
    LOG_INFO("SHUTDOWN%s%s command issued", mode.empty() ? "" : " ", mode.c_str());
    if (mode.empty()) {
      admin_command_done(c, "SHUTDOWN");
      c->flush();
      shutdown_all();
    } else if (mode == "WAIT_FOR_SERVERS") {
      admin_command_done(c, "SHUTDOWN");
      for (Pooler* x : world()) x->begin_safe_shutdown();
    } else if (mode == "WAIT_FOR_CLIENTS") {
      admin_command_done(c, "SHUTDOWN");
      for (Pooler* x : world()) x->begin_wait_for_clients();
    } else {
      admin_error(c, Reason::AdminShutdownMode);
    }
  } else if (cmd == "SET") {
    // SET key = value  |  SET key TO value
    if (w.size() < 3) {
      admin_error(c, Reason::AdminSetUsage);
      return;
    }
    std::string key = ident(w[1]);
    std::size_t vi = (w[2] == "=" || upper(w[2]) == "TO") ? 3 : 2;
    if (vi >= w.size()) {
      admin_error(c, Reason::AdminSetUsage);
      return;
    }
    std::string value = ident(w[vi]);
    if (!w[vi].empty() && w[vi][0] != '\'' && w[vi][0] != '"') value = w[vi];
    const config::Setting* k = config::find_setting(key);
    if (!k) {
      admin_error(c, Reason::AdminUnknownSetting, {key});
      return;
    }
    if (k->change != config::Change::Online) {
      admin_error(c, k->change == config::Change::Restart ? Reason::AdminSettingNeedsRestart
                                                         : Reason::AdminSettingNeedsReload,
                  {k->name});
      return;
    }
    // The loaders' checks: the value itself, then those across settings.
    config::Pooler next = cfg_.pooler;
    std::string err = config::set_from_text(next, *k, value);
    if (err.empty()) {
      for (auto& [setting, why] : config::pooler_problems(next)) err = why;
    }
    if (!err.empty()) {
      admin_error(c, Reason::AdminSettingInvalid, {k->name, err});
      return;
    }
    for (Pooler* x : world()) x->cfg_.pooler = next;
    LOG_INFO("SET %s = %s by admin", k->name, config::value_text(cfg_.pooler, *k).c_str());
    for (Pool* p : world_pools()) p->owner->pool_service(p);
    admin_command_done(c, "SET");
    return;
  }
}

void Pooler::admin_show(Client* c, const std::string& what, const std::string& arg) {
  (void)arg;
  std::string buf;
  std::uint64_t wall_now = std::uint64_t(time(nullptr));
  std::vector<Pool*> pools = world_pools();  // every worker's pools (rows of one pool add up below)
  auto all_clients = [&](const std::function<void(Client*, Pool*)>& f) {
    for (Pool* p : pools) {
      p->each_client([&](Client* x) { f(x, p); });
    }
  };
  if (what == "POOLS") {
    Table t({{"database", false}, {"user", false}, {"cl_active", true}, {"cl_waiting", true},
             {"cl_active_cancel_req", true}, {"cl_waiting_cancel_req", true}, {"sv_active", true},
             {"sv_active_cancel", true}, {"sv_being_canceled", true}, {"sv_idle", true}, {"sv_used", true},
             {"sv_tested", true}, {"sv_login", true}, {"maxwait", true}, {"maxwait_us", true}, {"pool_mode", false},
             {"load_balance_hosts", false}});
    for (auto& [key, parts] : pool_groups()) {  // one row per pool over all workers
      PoolCounts n = group_counts(parts);
      t.row({str(key.first), str(key.second), num(n.cl_active), num(n.cl_waiting), num(0), num(0), num(n.sv_active),
             num(0), num(0), num(n.sv_idle), num(n.sv_used), num(n.sv_tested), num(n.sv_login),
             num(n.maxwait_ms / 1000), num((n.maxwait_ms % 1000) * 1000),
             str(config::to_string(pool_mode(parts.front()))), std::nullopt});
    }
    t.emit(buf);
  } else if (what == "CLIENTS" || what == "SERVERS") {
    Table t({{"type", false}, {"user", false}, {"database", false}, {"replication", false}, {"state", false},
             {"addr", false}, {"port", true}, {"local_addr", false}, {"local_port", true}, {"connect_time", false},
             {"request_time", false}, {"wait", true}, {"wait_us", true}, {"close_needed", true}, {"ptr", false},
             {"link", false}, {"remote_pid", true}, {"tls", false}, {"application_name", false},
             {"prepared_statements", true}, {"id", true}});
    // Times of a connection are read against its own worker's loop clock.
    auto wall = [&](const Conn* x, Ms t0) {
      Ms tnow = std::max(x->pooler->now(), t0);
      return fmt_time(wall_now - (tnow - t0) / 1000);
    };
    if (what == "CLIENTS") {
      all_clients([&](Client* x, Pool* p) {
        Ms wait = x->state == ClientState::Waiting ? std::max(x->pooler->now(), x->wait_start) - x->wait_start : 0;
        int ai = tracked_index("application_name");
        t.row({str("C"), str(x->user_name), str(p->db_name), str("no"),
               str(x->state == ClientState::Waiting ? "waiting" : x->state == ClientState::Login ? "login" : "active"),
               str(x->remote.host()), inum(x->remote.port), str(x->local_addr().host()), inum(x->local_addr().port), str(wall(x, x->connect_time)), str(wall(x, x->request_time)),
               num(wait / 1000), num((wait % 1000) * 1000), num(0), str(fmt_ptr(x)), str(fmt_ptr(x->server)), num(0),
               str(x->tls_description()), str(x->params.get(ai).value_or("")), num(x->prepared_count()), num(x->id)});
      });
    } else {
      for (Pool* p : pools) {
        p->each_server([&](Server* s) {
          int ai = tracked_index("application_name");
          t.row({str("S"), str(p->user_name), str(p->db_name), str("no"), str(to_string(s->state)), str(s->host),
                 inum(s->server_port), str(s->local.host()), inum(s->local.port), str(wall(s, s->connect_time)), str(wall(s, s->request_time)),
                 num(0), num(0), num(s->close_needed ? 1 : 0), str(fmt_ptr(s)), str(fmt_ptr(s->client)),
                 num(s->pid), str(s->tls_description()), str(s->params.get(ai).value_or("")), num(s->prepared_on.size()), num(s->id)});
        });
      }
    }
    t.emit(buf);
  } else if (what == "STATS" || what == "STATS_TOTALS" || what == "STATS_AVERAGES" || what == "TOTALS") {
    // PgBouncer reports statistics per database: totals and rates add up over pools
    // (and workers), average times are weighted by their events (control/stats.hpp).
    std::map<std::string, StatsSum> per_db = stats_by_database();
    // PgBouncer names the byte counters differently in each view.
    auto name_in = [&](const StatCounter& k, const char* view) -> std::string {
      std::string n = k.name, v = view;
      if (k.member == &PoolStats::received) n = v == "TOTALS" ? "client_bytes" : v == "AVG" ? "recv" : "bytes_received";
      if (k.member == &PoolStats::sent) n = v == "TOTALS" ? "server_bytes" : v == "AVG" ? "sent" : "bytes_sent";
      return n;
    };
    // Averages have no client_login_count column.
    auto has_average = [](const StatCounter& k) { return k.member != &PoolStats::client_login_count; };
    if (what == "TOTALS") {
      // Rows of (name, value) over all databases, as PgBouncer's SHOW TOTALS.
      StatsSum all;
      for (auto& [db, sum] : per_db) all.add(sum);
      PoolStats avg = all.averages();
      Table t({{"name", false}, {"value", true}});
      for (const StatCounter& k : stat_counters()) t.row({str("total_" + name_in(k, "TOTALS")), num(all.totals().*k.member)});
      for (const StatCounter& k : stat_counters()) {
        if (has_average(k)) t.row({str("avg_" + name_in(k, "TOTALS")), num(avg.*k.member)});
      }
      t.emit(buf);
    } else {
      std::vector<Table::Col> cols{{"database", false}};
      bool totals = what != "STATS_AVERAGES", avgs = what != "STATS_TOTALS";
      for (const StatCounter& k : stat_counters()) {
        if (totals) cols.push_back({what == "STATS" ? "total_" + std::string(k.name) : name_in(k, "PLAIN"), true});
      }
      for (const StatCounter& k : stat_counters()) {
        if (avgs && has_average(k))
          cols.push_back({what == "STATS" ? "avg_" + name_in(k, "AVG") : name_in(k, "PLAIN"), true});
      }
      Table t(cols);
      for (auto& [db, sum] : per_db) {
        std::vector<Cell> r{str(db)};
        PoolStats avg = sum.averages();
        for (const StatCounter& k : stat_counters()) {
          if (totals) r.push_back(num(sum.totals().*k.member));
        }
        for (const StatCounter& k : stat_counters()) {
          if (avgs && has_average(k)) r.push_back(num(avg.*k.member));
        }
        t.row(r);
      }
      t.emit(buf);
    }
  } else if (what == "DATABASES") {
    Table t({{"name", false}, {"host", false}, {"port", true}, {"database", false}, {"force_user", false},
             {"pool_size", true}, {"min_pool_size", true}, {"reserve_pool_size", true}, {"server_lifetime", true},
             {"pool_mode", false}, {"load_balance_hosts", false}, {"max_connections", true},
             {"current_connections", true}, {"max_client_connections", true}, {"current_client_connections", true},
             {"paused", true}, {"disabled", true}});
    const auto& ps = cfg_.pooler;
    for (auto& [name, d] : dbs_) {
      if (d->removed || !d->cluster) continue;
      const auto& node = d->cluster->primary;
      int pool_size = d->cfg.pool_size >= 0 ? d->cfg.pool_size : ps.default_pool_size;
      int maxc = d->cfg.max_db_connections >= 0 ? d->cfg.max_db_connections : ps.max_db_connections;
      t.row({str(name), str(node.host), inum(node.port), str(d->cfg.dbname.empty() ? name : d->cfg.dbname),
             d->cfg.user.empty() ? std::nullopt : str(d->cfg.user), inum(pool_size),
             inum(d->cfg.min_pool_size >= 0 ? d->cfg.min_pool_size : ps.min_pool_size),
             inum(d->cfg.reserve_pool_size >= 0 ? d->cfg.reserve_pool_size : ps.reserve_pool_size),
             inum((long long)ps.server_lifetime),
             d->cfg.pool_mode ? str(config::to_string(*d->cfg.pool_mode)) : std::nullopt, std::nullopt, inum(maxc),
             inum(d->counts->servers.load()), inum(d->cfg.max_db_client_connections), inum(d->counts->clients.load()),
             num(d->paused || paused_all_ ? 1 : 0), num(d->disabled ? 1 : 0)});
    }
    t.row({str("pgbouncer"), std::nullopt, inum(ps.listen_port), str("pgbouncer"), str("pgbouncer"), inum(2),
           inum(0), inum(0), inum(0), str("statement"), std::nullopt, inum(0), inum(0), inum(0),
           inum(hub_->db_count(std::string("\x01console"))->clients.load()), num(0), num(0)});
    t.emit(buf);
  } else if (what == "USERS") {
    Table t({{"name", false}, {"pool_size", true}, {"reserve_pool_size", true}, {"pool_mode", false},
             {"max_user_connections", true}, {"current_connections", true}, {"max_user_client_connections", true},
             {"current_client_connections", true}});
    for (auto& [name, u] : users_) {
      if (u->removed) continue;
      t.row({str(name), u->cfg.pool_size >= 0 ? inum(u->cfg.pool_size) : std::nullopt,
             u->cfg.reserve_pool_size >= 0 ? inum(u->cfg.reserve_pool_size) : std::nullopt,
             u->cfg.pool_mode ? str(config::to_string(*u->cfg.pool_mode)) : std::nullopt,
             inum(u->cfg.max_user_connections >= 0 ? u->cfg.max_user_connections : cfg_.pooler.max_user_connections),
             inum(u->counts->servers.load()), inum(u->cfg.max_user_client_connections), inum(u->counts->clients.load())});
    }
    t.emit(buf);
  } else if (what == "LISTS") {
    std::size_t used_clients = 0, used_servers = 0, login = 0;
    for (Pooler* x : world()) login += x->cl_login_.size();
    for (Pool* p : pools) {
      used_clients += std::size_t(p->client_total());
      used_servers += std::size_t(p->server_total());
      login += p->cl_login.size();
    }
    std::size_t ndb = 0, nuser = 0;
    for (auto& [n, d] : dbs_) ndb += d->removed ? 0 : 1;
    for (auto& [n, u] : users_) nuser += u->removed ? 0 : 1;
    Table t({{"list", false}, {"items", true}});
    t.row({str("databases"), num(ndb)});
    t.row({str("users"), num(nuser)});
    t.row({str("peers"), num(0)});
    t.row({str("pools"), num(pool_groups().size())});
    t.row({str("peer_pools"), num(0)});
    t.row({str("free_clients"), num(0)});
    t.row({str("used_clients"), num(used_clients)});
    t.row({str("login_clients"), num(login)});
    t.row({str("free_servers"), num(0)});
    t.row({str("used_servers"), num(used_servers)});
    t.row({str("dns_names"), num(0)});
    t.row({str("dns_zones"), num(0)});
    t.row({str("dns_queries"), num(0)});
    t.row({str("dns_pending"), num(0)});
    t.emit(buf);
  } else if (what == "CONFIG") {
    Table t({{"key", false}, {"value", false}, {"default", false}, {"changeable", false}});
    config::Pooler defaults;
    for (const config::Setting& k : config::settings()) {
      t.row({str(k.name), str(config::value_text(cfg_.pooler, k)), str(config::value_text(defaults, k)),
             str(k.change == config::Change::Online ? "yes" : "no")});
    }
    t.emit(buf);
  } else if (what == "MEM") {
    // Summed over the workers.
    std::size_t nclients = 0, nservers = 0, npools = pools.size();
    std::size_t buf_used = 0, buf_free = 0, sbuf_used = 0, sbuf_free = 0, oq_used = 0, oq_free = 0;
    for (Pooler* x : world()) {
      nclients += std::size_t(std::max(x->client_count_, 0));
      buf_used += x->bufs_.msg().in_use();
      buf_free += x->bufs_.msg().free_count();
      sbuf_used += x->bufs_.stream().in_use();
      sbuf_free += x->bufs_.stream().free_count();
      oq_used += x->outqs_.in_use();
      oq_free += x->outqs_.free_count();
    }
    for (Pool* p : pools) nservers += std::size_t(p->server_total());
    Table t({{"name", false}, {"size", true}, {"used", true}, {"free", true}, {"memtotal", true}});
    t.row({str("client"), num(sizeof(Client)), num(nclients), num(0), num(sizeof(Client) * nclients)});
    t.row({str("server"), num(sizeof(Server)), num(nservers), num(0), num(sizeof(Server) * nservers)});
    t.row({str("pool"), num(sizeof(Pool)), num(npools), num(0), num(sizeof(Pool) * npools)});
    t.row({str("iobuf"), num(bufs_.msg().size()), num(buf_used), num(buf_free), num(bufs_.msg().size() * (buf_used + buf_free))});
    t.row({str("stream_iobuf"), num(bufs_.stream().size()), num(sbuf_used), num(sbuf_free),
           num(bufs_.stream().size() * (sbuf_used + sbuf_free))});
    t.row({str("outq"), num(sizeof(Conn::OutQ)), num(oq_used), num(oq_free),
           num(sizeof(Conn::OutQ) * (oq_used + oq_free))});
    // The whole process, from /proc/self/smaps_rollup: its private memory (what it
    // costs the host), and its resident size with the shared library pages.
    auto rollup = [](const char* key) -> std::size_t {
      FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
      if (!f) return 0;
      char line[256];
      std::size_t kb = 0, n = std::strlen(key);
      while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
          kb = std::size_t(std::strtoull(line + n + 1, nullptr, 10));
          break;
        }
      std::fclose(f);
      return kb * 1024;
    };
    t.row({str("process_private"), num(0), num(0), num(0), num(rollup("Anonymous"))});
    t.row({str("process_rss"), num(0), num(0), num(0), num(rollup("Rss"))});
    t.emit(buf);
  } else if (what == "CLUSTERS") {
    Table t({{"name", false}, {"active", false}, {"mode", false}, {"primary", false}, {"primary_state", false},
             {"standby", false}, {"standby_state", false}, {"last_check_ms", false}, {"failovers", true},
             {"last_failover", false}, {"last_failover_ms", true}, {"epoch", true}, {"lag_bytes", true},
             {"witness", false}, {"primary_error", false}, {"standby_error", false}});
    double now_s = double(uv_hrtime()) / 1e9;
    for (auto& [name, cl] : control()->clusters().all()) {
      if (cl->removed) continue;
      const auto& pc = cl->cfg->primary;
      auto ms = [](std::uint64_t us) {
        char b[32];
        std::snprintf(b, sizeof b, "%.1f", double(us) / 1000.0);
        return std::string(b);
      };
      bool sb = cl->has_standby();
      std::string checks = ms(cl->last_check_us[0]);
      if (sb) checks += "/" + ms(cl->last_check_us[1]);
      auto lag = sb ? cl->fsm.lag_bytes() : std::nullopt;
      t.row({str(name), str(cl->active_standby() ? "standby" : "primary"), str(sb ? cl->fsm.mode_name() : "normal"),
             str(pc.host + ":" + std::to_string(pc.port)), str(sb ? to_string(cl->state(0)) : "unchecked"),
             sb ? str(cl->cfg->standby->host + ":" + std::to_string(cl->cfg->standby->port)) : std::nullopt,
             sb ? str(to_string(cl->state(1))) : std::nullopt, str(checks), num(cl->failovers),
             cl->last_failover_wall ? str(fmt_time(cl->last_failover_wall)) : std::nullopt, num(cl->last_failover_ms),
             num(sb ? cl->fsm.epoch() : 0), lag ? num(std::uint64_t(*lag)) : std::nullopt,
             sb ? str(failover::to_string(cl->fsm.witness(now_s))) : std::nullopt, str(cl->fsm.view(0).error),
             sb ? str(cl->fsm.view(1).error) : std::nullopt});
    }
    t.emit(buf);
  } else if (what == "FAILOVERS") {
    Table t({{"cluster", false}, {"kind", false}, {"started", false}, {"duration_ms", true}, {"moved_to", false},
             {"clients_held", true}, {"client_errors", true}, {"result", false}});
    for (const auto& ev : control()->clusters().log()) {
      t.row({str(ev.cluster), str(ev.kind), str(fmt_time(ev.start_wall)), num(ev.duration_ms), str(ev.to),
             inum(ev.clients_held), inum(ev.client_errors), str(ev.result)});
    }
    t.emit(buf);
  } else if (what == "VERSION") {
    Table t({{"version", false}});
    t.row({str("pgpivot " PGPIVOT_VERSION)});
    t.emit(buf);
  } else if (what == "STATE") {
    Table t({{"key", false}, {"value", false}});
    t.row({str("active"), str(!paused_all_ && !suspended_ ? "yes" : "no")});
    t.row({str("paused"), str(paused_all_ ? "yes" : "no")});
    t.row({str("suspended"), str(suspended_ ? "yes" : "no")});
    t.emit(buf);
  } else if (what == "HELP") {
    for (const char* line : kHelp) {
      proto::ErrorFields e;
      e.severity = "NOTICE";
      e.sqlstate = "00000";
      e.message = line;
      proto::notice_response(buf, e);
    }
    proto::command_complete(buf, "SHOW");
  } else {
    admin_error(c, Reason::AdminUnknownShow, {what});
    return;
  }
  proto::ready_for_query(buf, 'I');
  c->queue(buf);
}

// ---------------------------------------------------------------------------
// PAUSE, WAIT_CLOSE and SUSPEND

bool Pooler::pending_done(const PendingAdmin& pa) {
  if (pa.command == "SWITCHOVER" || pa.command == "FAILOVER" || pa.command == "FAILBACK") {
    auto& clusters = control()->clusters().all();
    auto it = clusters.find(pa.db);
    return it == clusters.end() || it->second->removed || it->second->moves_ended != pa.moves_ended;
  }
  for (Pool* p : world_pools()) {
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

void Pooler::finish_pending_admin() {
  for (std::size_t i = 0; i < pending_admin_.size();) {
    PendingAdmin pa = pending_admin_[i];
    if (pending_done(pa)) {
      pending_admin_.erase(pending_admin_.begin() + std::ptrdiff_t(i));
      auto& clusters = control()->clusters().all();
      auto it = clusters.find(pa.db);
      if (it != clusters.end() && it->second->last_end != "ok" &&
          (pa.command == "SWITCHOVER" || pa.command == "FAILOVER" || pa.command == "FAILBACK")) {
        admin_error(pa.client, Reason::AdminMoveEnded, {pa.db, it->second->last_end});
        continue;
      }
      admin_command_done(pa.client, pa.command);
    } else {
      i++;
    }
  }
}

void Pooler::pause_sweep() {
  // Paused pools keep no servers: idle ones close now, busy ones when released.
  for (auto& [k, p] : pools_) {
    if (p->admin || !pool_paused(p.get()) || suspended_) continue;
    p->sv_idle.for_each<Server>([&](Server* s) { disconnect_server(s, "PAUSE"); });
    p->sv_used.for_each<Server>([&](Server* s) { disconnect_server(s, "PAUSE"); });
  }
  finish_pending_admin();
}

void Pooler::suspend(bool on) {
  suspended_ = on;
  for (auto& [k, p] : pools_) {
    if (p->admin) continue;
    p->each_client([&](Client* x) {
      x->want_read = !on;
      x->update_reading();
    });
    p->each_server([&](Server* s) {
      s->want_read = !on;
      s->update_reading();
    }, {ServerState::Idle, ServerState::Active, ServerState::Used, ServerState::Tested});
  }
  LOG_INFO("%s", on ? "SUSPEND: all connections stop reading" : "RESUME after SUSPEND");
}

}  // namespace pgpivot
