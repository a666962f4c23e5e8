// SHOW's views of the admin console, by name (Console::kViews). Each reads every
// worker (the world is stopped, workers/hub.hpp): a pool's rows add up over the
// workers; statistics come from the one stats model (control/stats.hpp).
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>

#include "config/settings.hpp"
#include "pooler/control/admin.hpp"
#include "pooler/control/admin_table.hpp"
#include "pooler/control/snapshot.hpp"
#include "pooler/failover/coordination.hpp"
#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

using namespace console;

namespace {

const char* kHelp[] = {
    "Console usage",
    "\tSHOW HELP|CONFIG|USERS|DATABASES|POOLS|CLIENTS|SERVERS|VERSION|STATE",
    "\tSHOW PEERS|PEER_POOLS",
    "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM",
    "\tSHOW DNS_HOSTS|DNS_ZONES",
    "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS",
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

const Console::View Console::kViews[] = {
    // name             handler
    {"POOLS", &Console::show_pools},
    {"CLIENTS", &Console::show_conns},
    {"SERVERS", &Console::show_conns},
    {"STATS", &Console::show_stats},
    {"STATS_TOTALS", &Console::show_stats},
    {"STATS_AVERAGES", &Console::show_stats},
    {"TOTALS", &Console::show_stats},
    {"DATABASES", &Console::show_databases},
    {"USERS", &Console::show_users},
    {"LISTS", &Console::show_lists},
    {"CONFIG", &Console::show_config},
    {"MEM", &Console::show_mem},
    {"CLUSTERS", &Console::show_clusters},
    {"FAILOVERS", &Console::show_failovers},
    {"VERSION", &Console::show_version},
    {"STATE", &Console::show_state},
    {"SOCKETS", &Console::show_sockets},
    {"ACTIVE_SOCKETS", &Console::show_sockets},
    {"FDS", &Console::show_fds},
    {"PEERS", &Console::show_peers},
    {"PEER_POOLS", &Console::show_peers},
    {"DNS_HOSTS", &Console::show_dns},
    {"DNS_ZONES", &Console::show_dns},
    {"HELP", &Console::show_help},
};

namespace {

// As PgBouncer, load_balance_hosts shows only for a host list (round-robin when not set).
Cell load_balance_cell(const DbEntry& d) {
  if (!d.cluster || d.cluster->primary.host.find(',') == std::string::npos) return std::nullopt;
  return str(d.cfg.load_balance_hosts.empty() ? "round-robin" : d.cfg.load_balance_hosts);
}

}  // namespace

const Console::View* Console::find_view(const std::string& what) {
  for (const View& v : kViews) {
    if (what == v.name) return &v;
  }
  return nullptr;
}

void Console::show_pools(std::string& out, const std::string&) {
  Table t({{"database", false}, {"user", false}, {"cl_active", true}, {"cl_waiting", true},
           {"cl_active_cancel_req", true}, {"cl_waiting_cancel_req", true}, {"sv_active", true},
           {"sv_active_cancel", true}, {"sv_being_canceled", true}, {"sv_idle", true}, {"sv_used", true},
           {"sv_tested", true}, {"sv_login", true}, {"maxwait", true}, {"maxwait_us", true}, {"pool_mode", false},
           {"load_balance_hosts", false}});
  for (auto& [key, parts] : pool_groups(p_)) {  // one row per pool over all workers
    PoolCounts n = group_counts(parts);
    t.row({str(key.first), str(key.second), num(n.cl_active), num(n.cl_waiting), num(0), num(0), num(n.sv_active),
           num(0), num(0), num(n.sv_idle), num(n.sv_used), num(n.sv_tested), num(n.sv_login),
           num(n.maxwait_ms / 1000), num((n.maxwait_ms % 1000) * 1000),
           str(config::to_string(p_.registry_.pool_mode(parts.front()))), load_balance_cell(*parts.front()->db)});
  }
  t.emit(out);
}

void Console::show_stats(std::string& out, const std::string& what) {
  // PgBouncer reports statistics per database: totals and rates add up over pools
  // (and workers), average times are weighted by their events (p_.control/stats.hpp).
  std::map<std::string, StatsSum> per_db = stats_by_database(p_);
  // PgBouncer 1.25 names the counters differently in each view: the byte counters,
  // and the prepared-statement ones ("ps_" in TOTALS, "avg_" in STATS_AVERAGES).
  auto is_ps = [](const StatCounter& k) {
    return k.member == &PoolStats::client_parse_count || k.member == &PoolStats::server_parse_count ||
           k.member == &PoolStats::bind_count;
  };
  auto name_in = [&](const StatCounter& k, const char* view) -> std::string {
    std::string n = k.name, v = view;
    if (k.member == &PoolStats::received) n = v == "TOTALS" ? "client_bytes" : v == "AVG" ? "recv" : "bytes_received";
    if (k.member == &PoolStats::sent) n = v == "TOTALS" ? "server_bytes" : v == "AVG" ? "sent" : "bytes_sent";
    if (v == "TOTALS" && is_ps(k)) n = "ps_" + n;
    if (v == "AVERAGES" && (is_ps(k) || k.member == &PoolStats::client_login_count)) n = "avg_" + n;
    return n;
  };
  if (what == "TOTALS") {
    // Rows of (name, value) over all databases, as PgBouncer's SHOW TOTALS.
    StatsSum all;
    for (auto& [db, sum] : per_db) all.add(sum);
    PoolStats avg = all.averages();
    Table t({{"name", false}, {"value", true}});
    for (const StatCounter& k : stat_counters()) t.row({str("total_" + name_in(k, "TOTALS")), num(all.totals().*k.member)});
    for (const StatCounter& k : stat_counters()) t.row({str("avg_" + name_in(k, "TOTALS")), num(avg.*k.member)});
    t.emit(out);
  } else {
    std::vector<Table::Col> cols{{"database", false}};
    bool totals = what != "STATS_AVERAGES", avgs = what != "STATS_TOTALS";
    for (const StatCounter& k : stat_counters()) {
      if (totals) cols.push_back({what == "STATS" ? "total_" + std::string(k.name) : name_in(k, "PLAIN"), true});
    }
    for (const StatCounter& k : stat_counters()) {
      if (avgs) cols.push_back({what == "STATS" ? "avg_" + name_in(k, "AVG") : name_in(k, "AVERAGES"), true});
    }
    Table t(cols);
    for (auto& [db, sum] : per_db) {
      std::vector<Cell> r{str(db)};
      PoolStats avg = sum.averages();
      for (const StatCounter& k : stat_counters()) {
        if (totals) r.push_back(num(sum.totals().*k.member));
      }
      for (const StatCounter& k : stat_counters()) {
        if (avgs) r.push_back(num(avg.*k.member));
      }
      t.row(r);
    }
    t.emit(out);
  }
}

void Console::show_databases(std::string& out, const std::string&) {
  Table t({{"name", false}, {"host", false}, {"port", true}, {"database", false}, {"force_user", false},
           {"pool_size", true}, {"min_pool_size", true}, {"reserve_pool_size", true}, {"server_lifetime", true},
           {"pool_mode", false}, {"load_balance_hosts", false}, {"max_connections", true},
           {"current_connections", true}, {"max_client_connections", true}, {"current_client_connections", true},
           {"paused", true}, {"disabled", true}});
  const auto& ps = p_.cfg_.pooler;
  for (auto& [name, d] : p_.registry_.dbs()) {
    if (d->removed || !d->cluster) continue;
    const auto& node = d->cluster->primary;
    int pool_size = d->cfg.pool_size >= 0 ? d->cfg.pool_size : ps.default_pool_size;
    int maxc = d->cfg.max_db_connections >= 0 ? d->cfg.max_db_connections : ps.max_db_connections;
    t.row({str(name), str(node.host), inum(node.port), str(d->cfg.dbname.empty() ? name : d->cfg.dbname),
           d->cfg.user.empty() ? std::nullopt : str(d->cfg.user), inum(pool_size),
           inum(d->cfg.min_pool_size >= 0 ? d->cfg.min_pool_size : ps.min_pool_size),
           inum(d->cfg.reserve_pool_size >= 0 ? d->cfg.reserve_pool_size : ps.reserve_pool_size),
           inum((long long)p_.registry_.server_lifetime(*d)),
           d->cfg.pool_mode ? str(config::to_string(*d->cfg.pool_mode)) : std::nullopt,
           load_balance_cell(*d), inum(maxc),
           inum(d->counts->servers.load()), inum(p_.registry_.max_db_client_connections(*d)), inum(d->counts->clients.load()),
           num(d->paused || p_.paused_all_ ? 1 : 0), num(d->disabled ? 1 : 0)});
  }
  // The console's own database: the global limits apply to it (its clients count
  // against max_db_client_connections, lifecycle.cpp's count_client).
  t.row({str("pgbouncer"), std::nullopt, inum(ps.listen_port), str("pgbouncer"), str("pgbouncer"), inum(2),
         inum(0), inum(0), inum((long long)ps.server_lifetime), str("statement"), std::nullopt,
         inum(ps.max_db_connections), inum(0), inum(ps.max_db_client_connections),
         inum(p_.hub_->db_count(std::string("\x01console"))->clients.load()), num(0), num(0)});
  t.emit(out);
}

void Console::show_users(std::string& out, const std::string&) {
  // As PgBouncer, pool_size and reserve_pool_size are text: the number right-aligned
  // in 9 characters, or empty when the user sets none.
  auto own = [](int n) {
    char b[16] = "";
    if (n >= 0) std::snprintf(b, sizeof b, "%9d", n);
    return str(b);
  };
  Table t({{"name", false}, {"pool_size", false}, {"reserve_pool_size", false}, {"pool_mode", false},
           {"max_user_connections", true}, {"current_connections", true}, {"max_user_client_connections", true},
           {"current_client_connections", true}});
  for (auto& [name, u] : p_.registry_.users()) {
    if (u->removed) continue;
    t.row({str(name), own(u->cfg.pool_size), own(u->cfg.reserve_pool_size),
           u->cfg.pool_mode ? str(config::to_string(*u->cfg.pool_mode)) : std::nullopt,
           inum(u->cfg.max_user_connections >= 0 ? u->cfg.max_user_connections : p_.cfg_.pooler.max_user_connections),
           inum(u->counts->servers.load()), inum(p_.registry_.max_user_client_connections(*u)), inum(u->counts->clients.load())});
  }
  t.emit(out);
}

void Console::show_lists(std::string& out, const std::string&) {
  std::vector<Pool*> pools = p_.world_pools();  // every worker's pools
  std::size_t used_clients = 0, used_servers = 0, login = 0;
  for (Pooler* x : p_.world()) login += x->cl_login_.size();
  for (Pool* p : pools) {
    used_clients += std::size_t(p->client_total());
    used_servers += std::size_t(p->server_total());
    login += p->cl_login.size();
  }
  std::size_t ndb = 0, nuser = 0;
  for (auto& [n, d] : p_.registry_.dbs()) ndb += d->removed ? 0 : 1;
  for (auto& [n, u] : p_.registry_.users()) nuser += u->removed ? 0 : 1;
  Table t({{"list", false}, {"items", true}});
  t.row({str("databases"), num(ndb)});
  t.row({str("users"), num(nuser)});
  t.row({str("peers"), num(0)});
  t.row({str("pools"), num(pool_groups(p_).size())});
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
  t.emit(out);
}

void Console::show_config(std::string& out, const std::string&) {
  Table t({{"key", false}, {"value", false}, {"default", false}, {"changeable", false}});
  config::Pooler defaults;
  for (const config::Setting& k : config::settings()) {
    t.row({str(k.name), str(config::value_text(p_.cfg_.pooler, k)), str(config::value_text(defaults, k)),
           str(k.change == config::Change::Online ? "yes" : "no")});
  }
  t.emit(out);
}

void Console::show_mem(std::string& out, const std::string&) {
  std::vector<Pool*> pools = p_.world_pools();  // every worker's pools
  // Summed over the workers.
  std::size_t nclients = 0, nservers = 0, npools = pools.size();
  std::size_t buf_used = 0, buf_free = 0, sbuf_used = 0, sbuf_free = 0, oq_used = 0, oq_free = 0;
  for (Pooler* x : p_.world()) {
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
  t.row({str("iobuf"), num(p_.bufs_.msg().size()), num(buf_used), num(buf_free), num(p_.bufs_.msg().size() * (buf_used + buf_free))});
  t.row({str("stream_iobuf"), num(p_.bufs_.stream().size()), num(sbuf_used), num(sbuf_free),
         num(p_.bufs_.stream().size() * (sbuf_used + sbuf_free))});
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
  t.emit(out);
}

void Console::show_clusters(std::string& out, const std::string&) {
  Table t({{"name", false}, {"active", false}, {"mode", false}, {"primary", false}, {"primary_state", false},
           {"standby", false}, {"standby_state", false}, {"last_check_ms", false}, {"failovers", true},
           {"last_failover", false}, {"last_failover_ms", true}, {"epoch", true}, {"lag_bytes", true},
           {"witness", false}, {"primary_error", false}, {"standby_error", false}, {"decider", false},
           {"coordination", false}, {"leader", false}, {"instances", true}, {"views", false}});
  double now_s = double(uv_hrtime()) / 1e9;
  Coordinator* co = p_.control()->clusters().coordinator();
  for (auto& [name, cl] : p_.control()->clusters().all()) {
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
           sb ? str(cl->fsm.view(1).error) : std::nullopt, str(co ? co->decider(cl.get()) : "local"),
           str(co && co->fleet(cl.get()) ? failover::to_string(co->link()) : "off"),
           co ? co->leader_cell(cl.get()) : std::nullopt,
           co && co->fleet(cl.get()) ? num(cl->fl.views.size()) : std::nullopt,
           co ? str(co->views_text(cl.get())) : std::nullopt});
  }
  t.emit(out);
}

void Console::show_failovers(std::string& out, const std::string&) {
  Table t({{"cluster", false}, {"kind", false}, {"started", false}, {"duration_ms", true}, {"moved_to", false},
           {"clients_held", true}, {"client_errors", true}, {"result", false}});
  for (const auto& ev : p_.control()->clusters().log()) {
    t.row({str(ev.cluster), str(ev.kind), str(fmt_time(ev.start_wall)), num(ev.duration_ms), str(ev.to),
           inum(ev.clients_held), inum(ev.client_errors), str(ev.result)});
  }
  t.emit(out);
}

void Console::show_version(std::string& out, const std::string&) {
  Table t({{"version", false}});
  t.row({str("pgpivot " PGPIVOT_VERSION)});
  t.emit(out);
}

void Console::show_state(std::string& out, const std::string&) {
  Table t({{"key", false}, {"value", false}});
  t.row({str("active"), str(!p_.paused_all_ && !p_.suspended_ ? "yes" : "no")});
  t.row({str("paused"), str(p_.paused_all_ ? "yes" : "no")});
  t.row({str("suspended"), str(p_.suspended_ ? "yes" : "no")});
  t.emit(out);
}

// SHOW PEERS / PEER_POOLS: pgpivot has no peering ([peers] is not supported), so
// both are empty, with PgBouncer's columns.
void Console::show_peers(std::string& out, const std::string& what) {
  if (what == "PEERS") {
    // [peers]: where cancel requests carrying each peer's id are sent on (cancel.cpp).
    Table t({{"peer_id", true}, {"host", false}, {"port", true}, {"pool_size", true}});
    for (const auto& [id, n] : p_.cfg_.peers) {
      auto ps = n.options.find("pool_size");
      t.row({inum(id), n.host.empty() ? std::nullopt : str(n.host), inum(n.port),
             inum(ps != n.options.end() ? std::stoll(ps->second) : p_.cfg_.pooler.default_pool_size)});
    }
    t.emit(out);
  } else {
    Table({{"peer_id", true}, {"cl_active_cancel_req", true}, {"cl_waiting_cancel_req", true},
           {"sv_active_cancel", true}, {"sv_login", true}})
        .emit(out);
  }
}

// SHOW DNS_HOSTS / DNS_ZONES: pgpivot resolves server names when it connects and
// keeps no DNS cache, so both are empty, with PgBouncer's columns.
void Console::show_dns(std::string& out, const std::string& what) {
  if (what == "DNS_HOSTS") {
    Table({{"hostname", false}, {"ttl", true}, {"addrs", false}}).emit(out);
  } else {
    Table({{"zonename", false}, {"serial", true}, {"count", true}}).emit(out);
  }
}

void Console::show_help(std::string& out, const std::string&) {
  for (const char* line : kHelp) {
    proto::ErrorFields e;
    e.severity = "NOTICE";
    e.sqlstate = "00000";
    e.message = line;
    proto::notice_response(out, e);
  }
  proto::command_complete(out, "SHOW");
}

}  // namespace pgpivot
