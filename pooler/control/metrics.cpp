// GET /metrics: every figure in the Prometheus text format. The values are the ones
// the admin console shows: pgpivot_pool_* as SHOW POOLS, pgpivot_stats_* as SHOW
// STATS (per database, control/stats.hpp), pgpivot_database_* as SHOW DATABASES,
// pgpivot_cluster_* and the failover metrics as SHOW CLUSTERS.
#include "pooler/control/metrics.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <initializer_list>

#include "pooler/control/snapshot.hpp"
#include "pooler/failover/coordination.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {

class Prom {
 public:
  using Labels = std::initializer_list<std::pair<const char*, std::string_view>>;
  explicit Prom(std::string& out) : out_(out) {}

  void family(const char* name, const char* type, const char* help) {
    name_ = name;
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(Labels labels, std::string_view value) {
    out_ += name_;
    if (labels.size()) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        for (char ch : v) {
          if (ch == '\\') out_ += "\\\\";
          else if (ch == '"') out_ += "\\\"";
          else if (ch == '\n') out_ += "\\n";
          else out_ += ch;
        }
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(Labels labels, std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "%" PRIu64, v);
    sample(labels, std::string_view(b));
  }

 private:
  std::string& out_;
  const char* name_ = "";
};

// Exact decimal seconds from microseconds / milliseconds.
std::string us_to_s(std::uint64_t us) {
  char b[40];
  std::snprintf(b, sizeof b, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
  return b;
}

const char* node_name(int side) { return side ? "standby" : "primary"; }

}  // namespace

std::string ms_to_s(std::uint64_t ms) {
  char b[40];
  std::snprintf(b, sizeof b, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);
  return b;
}

std::string render_metrics(Pooler& pooler) {
  auto& clusters = pooler.control()->clusters().all();
  auto groups = pool_groups(pooler);
  std::string out;
  out.reserve(8192 + groups.size() * 1600 + clusters.size() * 1200);
  Prom m(out);
  int nclients = 0;
  for (Pooler* w : pooler.world()) nclients += w->client_count();

  m.family("pgpivot_info", "gauge", "pgpivot's version; always 1.");
  m.sample({{"version", PGPIVOT_VERSION}}, 1);

  // Process-wide (SHOW STATE, SHOW LISTS).
  std::map<std::pair<std::string, std::string>, PoolCounts> counts;
  std::uint64_t servers = 0;
  for (auto& [k, g] : groups) {
    counts[k] = group_counts(g);
    servers += counts[k].servers();
  }
  m.family("pgpivot_client_connections", "gauge", "Client connections, including those still logging in.");
  m.sample({}, std::uint64_t(std::max(nclients, 0)));
  m.family("pgpivot_max_client_connections", "gauge", "max_client_conn.");
  m.sample({}, std::uint64_t(std::max(pooler.cfg().pooler.max_client_conn, 0)));
  m.family("pgpivot_server_connections", "gauge", "Server connections of all pools, in every state.");
  m.sample({}, servers);
  m.family("pgpivot_paused", "gauge", "1 while PAUSE (all databases) is in effect.");
  m.sample({}, pooler.paused_all() ? 1 : 0);
  m.family("pgpivot_suspended", "gauge", "1 while SUSPEND is in effect.");
  m.sample({}, pooler.suspended() ? 1 : 0);

  // Pools: the columns of SHOW POOLS, one series per (database, user).
  // Counts add up over the workers' parts of a pool.
  auto pool_family = [&](const char* name, const char* help, auto value) {
    m.family(name, "gauge", help);
    for (auto& [k, n] : counts) m.sample({{"database", k.first}, {"user", k.second}}, value(n));
  };
  pool_family("pgpivot_pool_client_active",
              "Clients linked to a server or idle between transactions (SHOW POOLS cl_active).",
              [](const PoolCounts& n) { return n.cl_active; });
  pool_family("pgpivot_pool_client_waiting",
              "Clients waiting for a server connection or for the login to finish (SHOW POOLS cl_waiting).",
              [](const PoolCounts& n) { return n.cl_waiting; });
  pool_family("pgpivot_pool_server_active", "Server connections linked to a client (SHOW POOLS sv_active).",
              [](const PoolCounts& n) { return n.sv_active; });
  pool_family("pgpivot_pool_server_idle", "Server connections ready for use (SHOW POOLS sv_idle).",
              [](const PoolCounts& n) { return n.sv_idle; });
  pool_family("pgpivot_pool_server_used",
              "Released server connections not checked yet (SHOW POOLS sv_used).",
              [](const PoolCounts& n) { return n.sv_used; });
  pool_family("pgpivot_pool_server_tested",
              "Server connections running the reset or check query (SHOW POOLS sv_tested).",
              [](const PoolCounts& n) { return n.sv_tested; });
  pool_family("pgpivot_pool_server_login", "Server connections logging in (SHOW POOLS sv_login).",
              [](const PoolCounts& n) { return n.sv_login; });
  m.family("pgpivot_pool_maxwait_seconds", "gauge",
           "How long the oldest waiting client has waited (SHOW POOLS maxwait + maxwait_us).");
  for (auto& [k, n] : counts) m.sample({{"database", k.first}, {"user", k.second}}, ms_to_s(n.maxwait_ms));
  m.family("pgpivot_pool_size", "gauge", "Configured server connections for the pool (pool_size).");
  for (auto& [k, g] : groups) {
    m.sample({{"database", k.first}, {"user", k.second}}, std::uint64_t(std::max(pooler.registry().pool_size(g.front()), 0)));
  }

  // Databases: SHOW DATABASES.
  auto db_family = [&](const char* name, const char* help, auto value) {
    m.family(name, "gauge", help);
    for (auto& [dn, d] : pooler.registry().dbs()) {
      if (d->removed || !d->cluster) continue;
      m.sample({{"database", dn}}, value(d.get()));
    }
  };
  db_family("pgpivot_database_current_connections",
            "Server connections of the database, all users (SHOW DATABASES current_connections).",
            [](DbEntry* d) { return std::uint64_t(std::max(d->counts->servers.load(), 0)); });
  db_family("pgpivot_database_max_connections",
            "max_db_connections of the database; 0 = no limit (SHOW DATABASES max_connections).",
            [&](DbEntry* d) {
              int v = d->cfg.max_db_connections >= 0 ? d->cfg.max_db_connections : pooler.cfg().pooler.max_db_connections;
              return std::uint64_t(std::max(v, 0));
            });
  db_family("pgpivot_database_current_client_connections",
            "Client connections of the database (SHOW DATABASES current_client_connections).",
            [](DbEntry* d) { return std::uint64_t(std::max(d->counts->clients.load(), 0)); });
  db_family("pgpivot_database_paused", "1 while the database is paused (SHOW DATABASES paused).",
            [&](DbEntry* d) { return std::uint64_t(d->paused || pooler.paused_all() ? 1 : 0); });
  db_family("pgpivot_database_disabled", "1 while the database is disabled (SHOW DATABASES disabled).",
            [](DbEntry* d) { return std::uint64_t(d->disabled ? 1 : 0); });

  // Statistics: SHOW STATS' totals, per database.
  std::map<std::string, StatsSum> per_db = stats_by_database(pooler);
  struct StatHelp {
    const char* metric;
    const char* help;
  };
  // In stat_counters() order.
  static const StatHelp kHelp[kStatCounters] = {
      {"pgpivot_stats_server_assignment_count_total",
       "Times a server connection was assigned to a client (SHOW STATS total_server_assignment_count)."},
      {"pgpivot_stats_xact_count_total", "Transactions pooled (SHOW STATS total_xact_count)."},
      {"pgpivot_stats_query_count_total", "Queries pooled (SHOW STATS total_query_count)."},
      {"pgpivot_stats_received_bytes_total", "Bytes received from clients (SHOW STATS total_received)."},
      {"pgpivot_stats_sent_bytes_total", "Bytes sent to clients (SHOW STATS total_sent)."},
      {"pgpivot_stats_xact_time_seconds_total",
       "Time spent in transactions, idle in transaction included (SHOW STATS total_xact_time)."},
      {"pgpivot_stats_query_time_seconds_total", "Time spent in queries (SHOW STATS total_query_time)."},
      {"pgpivot_stats_wait_time_seconds_total",
       "Time clients waited for a server connection (SHOW STATS total_wait_time)."},
      {"pgpivot_stats_client_parse_count_total",
       "Prepared statements created by clients (SHOW STATS total_client_parse_count)."},
      {"pgpivot_stats_server_parse_count_total",
       "Prepared statements created on servers (SHOW STATS total_server_parse_count)."},
      {"pgpivot_stats_bind_count_total", "Prepared statements bound (SHOW STATS total_bind_count)."},
      {"pgpivot_stats_client_login_count_total", "Client logins (SHOW STATS total_client_login_count)."},
  };
  for (std::size_t i = 0; i < kStatCounters; i++) {
    const StatCounter& k = stat_counters()[i];
    m.family(kHelp[i].metric, "counter", kHelp[i].help);
    for (auto& [db, sum] : per_db) {
      std::uint64_t v = sum.totals().*k.member;
      m.sample({{"database", db}}, k.kind == StatCounter::Time ? us_to_s(v) : std::to_string(v));
    }
  }

  // Clusters: SHOW CLUSTERS.
  std::vector<ClusterRt*> cls;
  for (auto& [name, cl] : clusters) {
    if (!cl->removed) cls.push_back(cl.get());
  }
  m.family("pgpivot_cluster_node_up", "gauge",
           "1 when the node answers health checks (state up or read-only), else 0; "
           "only nodes of clusters with a standby are checked.");
  for (ClusterRt* cl : cls) {
    if (!cl->cfg->standby) continue;
    for (int side = 0; side < 2; side++) {
      NodeState st = cl->state(side);
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}, {"state", to_string(st)}},
               std::uint64_t(st == NodeState::Up || st == NodeState::ReadOnly ? 1 : 0));
    }
  }
  m.family("pgpivot_cluster_node_active", "gauge", "1 for the node the cluster's pools connect to (SHOW CLUSTERS active).");
  for (ClusterRt* cl : cls) {
    for (int side = 0; side < (cl->cfg->standby ? 2 : 1); side++) {
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}}, std::uint64_t(cl->active_standby() == (side == 1)));
    }
  }
  m.family("pgpivot_cluster_health_check_duration_seconds", "gauge",
           "Duration of the node's last health check (SHOW CLUSTERS last_check_ms).");
  for (ClusterRt* cl : cls) {
    if (!cl->cfg->standby) continue;
    for (int side = 0; side < 2; side++) {
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}}, us_to_s(cl->last_check_us[side]));
    }
  }
  m.family("pgpivot_cluster_mode", "gauge",
           "1 for the cluster's current mode: normal, draining (switchover/failback waits for transactions), "
           "promoting, no_writable_node, two_writable_nodes or starting (SHOW CLUSTERS mode).");
  for (ClusterRt* cl : cls) {
    using failover::Mode;
    Mode cur = cl->has_standby() ? cl->fsm.mode() : Mode::Normal;
    for (auto [mode, name] : {std::pair{Mode::Normal, "normal"}, {Mode::Draining, "draining"},
                              {Mode::Promoting, "promoting"}, {Mode::NoWritable, "no_writable_node"},
                              {Mode::TwoWritable, "two_writable_nodes"}, {Mode::Starting, "starting"},
                              {Mode::Following, "following"}}) {
      m.sample({{"cluster", cl->name}, {"mode", name}}, std::uint64_t(cur == mode ? 1 : 0));
    }
  }
  m.family("pgpivot_cluster_coordination", "gauge",
           "1 for the state of the cluster's link to the fleet's etcd ([coordination]): off, connecting, ok or lost "
           "(SHOW CLUSTERS coordination). Lost: no automatic failover, the last known node stays in use.");
  Coordinator* co = pooler.control()->clusters().coordinator();
  for (ClusterRt* cl : cls) {
    failover::Link cur = co && co->fleet(cl) ? co->link() : failover::Link::Off;
    for (auto l : {failover::Link::Off, failover::Link::Connecting, failover::Link::Ok, failover::Link::Lost})
      m.sample({{"cluster", cl->name}, {"state", failover::to_string(l)}}, std::uint64_t(cur == l ? 1 : 0));
  }
  m.family("pgpivot_cluster_instances", "gauge",
           "Live pgpivot instances of the fleet deciding the cluster's moves, this one included (SHOW CLUSTERS "
           "instances); 0 without [coordination].");
  for (ClusterRt* cl : cls)
    if (cl->has_standby()) m.sample({{"cluster", cl->name}}, std::uint64_t(co && co->fleet(cl) ? cl->fl.views.size() : 0));
  m.family("pgpivot_cluster_epoch", "gauge",
           "The cluster's epoch: 1 + completed moves since the state file began (SHOW CLUSTERS epoch).");
  for (ClusterRt* cl : cls)
    if (cl->has_standby()) m.sample({{"cluster", cl->name}}, cl->fsm.epoch());
  m.family("pgpivot_cluster_lag_bytes", "gauge",
           "WAL bytes the node that is not active lags behind the active one, from the last checks "
           "(SHOW CLUSTERS lag_bytes); absent while unknown.");
  for (ClusterRt* cl : cls) {
    if (!cl->has_standby()) continue;
    if (auto lag = cl->fsm.lag_bytes()) m.sample({{"cluster", cl->name}}, std::uint64_t(*lag));
  }
  m.family("pgpivot_cluster_witness_receiving", "gauge",
           "1 when the node that is not active still receives from the active one (SHOW CLUSTERS witness), "
           "labelled with the witness state.");
  for (ClusterRt* cl : cls) {
    if (!cl->has_standby()) continue;
    auto w = cl->fsm.witness(double(uv_hrtime()) / 1e9);
    m.sample({{"cluster", cl->name}, {"witness", failover::to_string(w)}},
             std::uint64_t(w == failover::Witness::Receiving ? 1 : 0));
  }
  m.family("pgpivot_failovers_total", "counter",
           "Completed moves of the cluster to the other node: failovers, switchovers and failbacks "
           "(SHOW CLUSTERS failovers).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, cl->failovers);
  m.family("pgpivot_last_failover_duration_seconds", "gauge",
           "Duration of the cluster's last completed move; 0 before the first (SHOW CLUSTERS last_failover_ms).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, ms_to_s(cl->last_failover_ms));
  m.family("pgpivot_last_failover_timestamp_seconds", "gauge",
           "Unix time when the cluster's last completed move started; 0 before the first (SHOW CLUSTERS "
           "last_failover).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, cl->last_failover_wall);
  return out;
}

}  // namespace pgpivot
