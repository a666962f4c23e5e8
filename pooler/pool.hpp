// The registry's runtime objects: configured databases and users, and the pools
// (one per database and user, per worker) with their state lists (registry.cpp).
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "pooler/control/stats.hpp"
#include "pooler/io/conn.hpp"
#include "pooler/list.hpp"
#include "pooler/states.hpp"
#include "pooler/workers/hub.hpp"
#include "protocol/auth.hpp"

namespace pgpivot {

struct ClusterRt;
struct Client;
struct Server;

// Runtime objects for configured databases and users.
struct DbEntry {
  config::Database cfg;
  const config::Cluster* cluster = nullptr;  // points into Pooler::cfg
  ClusterRt* crt = nullptr;
  bool removed = false;
  bool paused = false;    // PAUSE db: no server is handed out
  bool disabled = false;  // DISABLE db: no new client logins
  SharedCount* counts = nullptr;  // servers and clients of the database over all workers
};

struct UserEntry {
  config::User cfg;
  std::optional<proto::ScramSecret> secret;  // cached SCRAM secret for SCRAM auth
  std::optional<proto::Key32> client_key;    // from the last successful client SCRAM (pass-through)
  SharedCount* counts = nullptr;             // servers and clients of the user over all workers
  bool removed = false;
  bool looked_up = false;  // found by auth_query (Registry::dynamic_user), whatever its password
  // Listed in auth_file (even with ""), a password of its own in [users] (in TOML
  // even ""), or found by auth_query: what PgBouncer calls a known user. A [users]
  // entry of settings alone is not one.
  [[nodiscard]] bool known() const {
    return looked_up || cfg.password_from_auth_file || cfg.password_given || !cfg.password.empty();
  }
};

struct Pool {
  Pooler* owner = nullptr;         // the worker whose loop runs this pool's connections
  SharedCount* shared = nullptr;   // the pool's server count over all workers (pool_size)
  DbEntry* db = nullptr;
  UserEntry* user = nullptr;       // the user servers log in as
  std::string db_name, user_name;  // the names clients used
  std::string server_db;           // database name on the server

  ListHead cl_login;     // clients waiting for the welcome parameters
  ListHead cl_idle;
  ListHead cl_waiting;
  ListHead cl_active;
  ListHead sv_login, sv_idle, sv_active, sv_used, sv_tested;

  bool have_welcome = false;
  std::vector<std::pair<std::string, std::string>> welcome;  // ParameterStatus of the first server
  Ms last_login_failure = 0;
  // A backend of `suspect_node` ended with 57P0x at suspect_at: for the next 2 s its
  // servers not known alive since are checked before they are handed out.
  Ms suspect_at = 0;
  std::string suspect_node;
  std::string last_login_error;  // FATAL text from the server
  std::string last_login_sqlstate;
  // A host list (host=a,b): the next host to connect to (PgBouncer's rrcounter), and
  // whether a failed connect asks load_balance_hosts = disable to move on.
  std::uint32_t host_rr = 0;
  bool host_step_due = false;
  // The last login failure got no answer from PostgreSQL (refused or timed-out
  // connect, unresolvable name, failed TLS handshake): logins keep waiting for the
  // next try instead of hearing the cached error (server_login_failed).
  bool last_connect_failed = false;

  bool servicing = false, service_again = false;
  bool wanted_recently = false;  // workers: this worker asked for more of the pool's slots since the last janitor run
  bool admin = false;  // the console's pseudo pool (database "pgbouncer")
  // Connections that point here, closing ones included (they are freed later): a pool
  // without any is unused, since `unused_since` (pool_idle_timeout frees it then).
  int conns = 0;
  Ms unused_since = 0;

  // Counters for SHOW STATS (control/stats.hpp adds them up).
  using Stats = PoolStats;
  Stats stats;         // running totals
  Stats period_start;  // totals at the start of the last stats_period
  Stats averages;      // per-second rates / per-event times over the last period
  [[nodiscard]] PoolCounts counts() const;  // this part's SHOW POOLS columns

  // The list of a state (nullptr for Cancel and Closing, which have none).
  [[nodiscard]] ListHead* list_of(ClientState s);
  [[nodiscard]] ListHead* list_of(ServerState s);
  // Every client (server) in `states`, list by list in the order given; `f` may close
  // or move the connection it is given (ListHead::for_each). The default order puts
  // unlinked connections before linked ones, so that closing them all never hands a
  // doomed server to a client.
  static constexpr std::initializer_list<ClientState> kAllClients = {
      ClientState::Login, ClientState::Idle, ClientState::Waiting, ClientState::Active};
  static constexpr std::initializer_list<ServerState> kAllServers = {
      ServerState::Login, ServerState::Idle, ServerState::Used, ServerState::Tested, ServerState::Active};
  template <class F>
  void each_client(F&& f, std::initializer_list<ClientState> states = kAllClients) {
    for (ClientState st : states) list_of(st)->for_each<Client>(f);
  }
  template <class F>
  void each_server(F&& f, std::initializer_list<ServerState> states = kAllServers) {
    for (ServerState st : states) list_of(st)->for_each<Server>(f);
  }
  [[nodiscard]] int server_total() const {
    return int(sv_login.size() + sv_idle.size() + sv_active.size() + sv_used.size() + sv_tested.size());
  }
  [[nodiscard]] int client_total() const {
    return int(cl_login.size() + cl_idle.size() + cl_waiting.size() + cl_active.size());
  }
};

}  // namespace pgpivot
