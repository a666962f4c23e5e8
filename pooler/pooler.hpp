// One reactor (worker): the libuv loop, its listeners, timers and signals, and the
// operations that move connections between the states of pool.hpp's lists (the
// object model: lifecycle.cpp, assign.cpp, server_connect.cpp, janitor.cpp). The
// pieces it owns are classes of their own: the registry of databases, users and
// pools (registry.hpp), output batching (io/flush.hpp), cancel keys (cancel.hpp),
// TLS contexts (io/tls.hpp), shared prepared statements (prepared.hpp), read
// buffers and output queues (io/buffers.hpp), the console (control/admin.hpp),
// the HTTP endpoint (control/http.hpp), clusters and failover
// (failover/cluster.hpp); docs/architecture.md maps the files.
#pragma once

#include <uv.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "pooler/cancel.hpp"
#include "pooler/client.hpp"
#include "pooler/control/admin.hpp"
#include "pooler/control/http.hpp"
#include "pooler/control/stats.hpp"
#include "pooler/failover/cluster.hpp"
#include "pooler/io/buffers.hpp"
#include "pooler/io/conn.hpp"
#include "pooler/io/flush.hpp"
#include "pooler/io/listen.hpp"
#include "pooler/io/tls.hpp"
#include "pooler/log.hpp"
#include "pooler/pool.hpp"
#include "pooler/prepared.hpp"
#include "pooler/reasons.hpp"
#include "pooler/registry.hpp"
#include "pooler/server.hpp"
#include "pooler/states.hpp"
#include "pooler/workers/hub.hpp"
#include "protocol/auth.hpp"

namespace pgpivot {

class Pooler {
 public:
  // `hub` is shared by the workers (nullptr: a single worker with its own hub).
  Pooler(config::Config cfg, uv_loop_t* loop, Hub* hub = nullptr, int shard = 0);
  ~Pooler();
  [[nodiscard]] bool start();  // bind listeners, timers, signals
  int run();                   // runs the loop until shutdown

  // Config access
  const config::Pooler& settings() const { return cfg_.pooler; }
  const config::Config& cfg() const { return cfg_; }
  bool reload();
  bool apply_reload(config::Config next);

  // Databases, users, pools and the effective per-pool settings.
  Registry& registry() { return registry_; }
  const Registry& registry() const { return registry_; }

  // Client lifecycle
  void on_accept(bool unix_socket, int fd);
  void accept_ready(Listener* l);
  void client_login_done(Client* c);         // authenticated: send welcome or wait for it
  void send_welcome(Client* c);
  // Adds the logged-in client to its database's and its login user's client counts,
  // or refuses it (disconnects it) when one of them is at its limit; false then.
  bool count_client(Client* c, DbEntry* db, UserEntry* user);
  // login_notify_message: a NOTICE between BackendKeyData and ReadyForQuery, as PgBouncer.
  void login_notice(std::string& buf) const;
  void client_request(Client* c);            // client has data and needs a server
  // Closes a client's connection for `why` (reasons.hpp), after telling it so when the
  // reason says to. The second form passes on an error a server sent.
  void disconnect_client(Client* c, Reason why, std::initializer_list<std::string_view> args = {});
  void disconnect_client(Client* c, const char* sqlstate, const std::string& reason, bool notify);
  void client_change_state(Client* c, ClientState s);
  // A CancelRequest: passed to the worker that owns the key, or sent to the server.
  void handle_cancel(std::uint32_t pid, std::uint32_t key);
  void forward_cancel(std::uint32_t pid, std::uint32_t key);  // to the peer that issued the key
  CancelTable& cancels() { return cancels_; }

  // Server lifecycle
  // Reserves a server slot (pool_size, max_db_connections, max_user_connections over
  // all workers) and opens a server; false when a limit or a pause stops it.
  // `repl`: a replication client the new server is for (its own, with its startup
  // parameters).
  bool try_launch(Pool* p, bool use_reserve, Client* repl = nullptr);
  bool evict_for(Pool* p);  // max_db_connections reached: close another pool's idle server
  void launch_server(Pool* p, Client* repl = nullptr);  // the slot is reserved
  std::string pick_host(Pool* p, const std::string& hosts);  // one host of a host list
  // Replication clients of the pool waiting for a slot get their servers (one
  // slot each, an idle server of the pool evicted when none is free).
  void serve_replication(Pool* p);
  // A client of the pool waits for its parameters (a login that is not replication).
  bool waits_for_welcome(Pool* p);
  void server_ready(Server* s);              // login finished or internal query done
  void server_release(Server* s);            // client finished a transaction/session
  // A released server is older than its database's server_lifetime (0: every server
  // is used once, as PgBouncer).
  [[nodiscard]] bool life_over(const Server* s);
  // `apply_params`: SET the client's tracked parameters the server differs in (not
  // for a replication server, which was opened with them and may take no SET).
  void link(Client* c, Server* s, bool apply_params = true);
  void replication_ready(Server* s);
  void disconnect_server(Server* s, const std::string& reason);
  void server_change_state(Server* s, ServerState st);
  void server_login_failed(Server* s, Reason why, std::initializer_list<std::string_view> args = {});
  // The server's own error; `unreachable`: the server could not be reached or did not
  // answer in time (no answer that a retry would repeat); `log_reason` says so in the log.
  void server_login_failed(Server* s, const std::string& sqlstate, const std::string& msg, bool unreachable = false,
                           const char* log_reason = nullptr);
  void run_internal_query(Server* s, const std::string& sql);
  void internal_done(Server* s);             // all of pgpivot's own queries answered
  // auth_query for a client waiting in the auth pool, on idle server `s`; its
  // answer goes to the client at the ReadyForQuery (auth_query_done).
  void start_auth_query(Client* c, Server* s);
  void auth_query_done(Server* s);

  void pool_service(Pool* p);                // hand idle servers to waiting clients, launch new ones

  TlsContexts& tls() { return tls_; }

  // The admin console (control/admin.hpp).
  Console& console() { return console_; }
  [[nodiscard]] bool tracks_prepared(const Pool* p) const;
  StatementRegistry& statements() { return statements_; }
  bool is_admin_db(const std::string& name) const { return name == "pgbouncer" || name == "pgpivot"; }
  bool pool_paused(const Pool* p) const {
    return suspended_ || paused_all_ || p->db->paused || (p->db->crt && !p->db->crt->routes());
  }

  // Clusters and failover (failover/cluster.hpp); worker 0's are the ones that decide.
  Clusters& clusters() { return clusters_; }
  // A client's server died: tell the client what it may do, keep it connected.
  // `why`: the server's closing reason (its FATAL message, ...), the error's DETAIL.
  void client_server_lost(Client* c, Server* s, const std::string& why);
  // A waiting client's buffered request is refused: ErrorResponse and
  // ReadyForQuery('I') for it (the Query, or everything up to its Sync); the
  // client goes back to idle with its connection open.
  void fail_waiting_client(Client* c, Reason why, std::initializer_list<std::string_view> args = {});
  // Clusters that can fail over hold clients through connection failures.
  [[nodiscard]] bool holds_through_outage(const Pool* p) const {
    return p->db->crt && p->db->crt->cfg->standby && p->db->crt->cfg->failover.auto_failover;
  }
  void pause_sweep();                        // close released servers of paused pools; finish PAUSE
  void suspend(bool on);
  void free_conn(Conn* c);                   // close callback
  Flusher& flusher() { return flusher_; }    // output written once per loop turn

  ReadBuffers& read_buffers() { return bufs_; }
  BufferPool& buffers() { return bufs_.msg(); }
  BufferPool& stream_buffers() { return bufs_.stream(); }
  OutQPool& outqs() { return outqs_; }
  uv_loop_t* loop() { return loop_; }
  Hub* hub() { return hub_; }
  [[nodiscard]] int shard() const { return shard_; }
  // The workers whose state control-plane code covers: every live worker while the
  // world is stopped (see hub.hpp), else this one.
  std::vector<Pooler*> world();
  std::vector<Pool*> world_pools();  // the pools of world()
  Pooler* control() { return hub_->shard(0); }  // the worker that runs health checks and failover
  void hub_message();                           // this worker's mailbox has mail (or a stop is pending)
  Ms now() const { return uv_now(loop_); }
  // Unique over the workers (worker i of N hands out i, N + i, 2N + i, ...; 1, 2, 3 with one).
  std::uint64_t next_id() { return ++id_seq_ * std::uint64_t(hub_->size()) + std::uint64_t(shard_); }

  int client_count() const { return client_count_; }
  [[nodiscard]] bool paused_all() const { return paused_all_; }   // PAUSE without a database
  [[nodiscard]] bool suspended() const { return suspended_; }     // SUSPEND
  // SHUTDOWN WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS (or SIGINT / SIGTERM) is in progress.
  [[nodiscard]] bool shutdown_pending() const { return shutting_down_ || wait_for_clients_; }
  ListHead& login_clients() { return cl_login_; }

 private:
  void janitor();
  void free_unused_pools(Ms t);  // pool_idle_timeout
  void on_signal(int signum);
  void shutdown_now();
  void begin_safe_shutdown();
  void begin_wait_for_clients();
  bool check_shutdown_done();
  bool open_listeners();
  void close_listeners(bool tcp_only = false);  // tcp_only: the Unix socket stays open
  bool may_launch(Pool* p) const;
  bool adopt_welcome(Pool* p);
  void welcome_login_clients(Pool* p);
  void resume_idle_clients(Pool* p);
  void want_servers(Pool* p);          // another worker holds the pool's slots: ask for some back
  void give_back_servers(Pool* p);     // hold at most a fair share of a pool others wait for
  [[nodiscard]] int fair_share(const Pool* p, bool round_up) const;
  void on_service_message();
  void finish_pending_everywhere();
  void shutdown_all();                 // shutdown_now on every worker (world stopped)
  void apply_config(config::Config cfg);
  bool apply_tls(const config::Pooler& p, std::string& err);

  config::Config cfg_;
  uv_loop_t* loop_;
  std::unique_ptr<Hub> own_hub_;  // workers = 1
  Hub* hub_;
  int shard_;
  uv_async_t hub_async_{};
  bool hub_async_on_ = false;
  std::uint32_t unix_rr_ = 0;     // round-robin of Unix-socket clients over the workers
  ReadBuffers bufs_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  uv_timer_t janitor_{};
  Flusher flusher_;
  OutQPool outqs_;
  uv_signal_t sig_hup_{}, sig_int_{}, sig_term_{}, sig_quit_{}, sig_usr1_{}, sig_usr2_{};
  Registry registry_;
  CancelTable cancels_;
  ListHead cl_login_;  // clients before they have a pool
  std::set<std::string> auto_dbs_seen_;  // names served by the "*" database, logged once
  int client_count_ = 0;
  std::uint64_t id_seq_ = 0;
  bool shutting_down_ = false;
  bool serving_repl_ = false;  // serve_replication is running (it re-enters through pool_service)
  bool wait_for_clients_ = false;  // SHUTDOWN WAIT_FOR_CLIENTS
  bool paused_all_ = false;
  bool suspended_ = false;
  Clusters clusters_{*this};
  StatementRegistry statements_;
  TlsContexts tls_;
  Console console_{*this};
  Ms last_stats_tick_ = 0;
  bool stopping_ = false;
  HttpEndpoint http_;

  friend struct Client;
  friend struct Server;
  friend class Clusters;
  friend class Console;
  friend class Coordinator;
};

}  // namespace pgpivot
