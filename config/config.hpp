// Typed configuration: plain structs with PgBouncer's defaults, filled by the TOML
// loader or the pgbouncer.ini loader. Durations are in seconds (double).
// docs/config.md says which settings the pooler acts on.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/hba.hpp"

namespace pgpivot::config {

enum class PoolMode { Session, Transaction, Statement };
// Hba: each login's method comes from auth_hba_file (config/hba.hpp).
enum class AuthType { Trust, Md5, ScramSha256, Cert, Plain, Hba };

[[nodiscard]] const char* to_string(PoolMode m);   // "session" / "transaction" / "statement"
[[nodiscard]] const char* to_string(AuthType a);   // "trust" / "md5" / "scram-sha-256" / "cert" / "plain" / "hba"
[[nodiscard]] std::optional<PoolMode> parse_pool_mode(std::string_view s);
[[nodiscard]] std::optional<AuthType> parse_auth_type(std::string_view s);
inline constexpr const char* kAuthTypes = "trust, md5, scram-sha-256, cert, plain, hba";
// The method auth_type names for every login (Hba: none, the rules decide).
[[nodiscard]] AuthMethod auth_method(AuthType a);

struct Pooler;
// "" when auth_type = cert can work with these TLS settings, else why not. As
// PgBouncer: cert needs client_tls_sslmode = verify-full and a client_tls_ca_file.
[[nodiscard]] std::string auth_cert_problem(const Pooler& p);

struct Pooler {
  std::string listen_addr = "127.0.0.1";
  int listen_port = 6432;
  std::string unix_socket_dir = "/tmp";  // "" disables the Unix socket
  PoolMode pool_mode = PoolMode::Session;
  int default_pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  double reserve_pool_timeout = 5.0;
  int max_client_conn = 100;
  int max_db_connections = 0;    // 0 = unlimited
  int max_user_connections = 0;  // 0 = unlimited
  AuthType auth_type = AuthType::Md5;
  std::string auth_file;         // PgBouncer userlist.txt; relative to the config file
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  std::string server_reset_query = "DISCARD ALL";
  bool server_reset_query_always = false;
  std::string server_check_query = "<empty>";  // PgBouncer 1.25: "<empty>" sends an empty query, "" = no check
  double server_check_delay = 30.0;
  double server_lifetime = 3600.0;
  double server_idle_timeout = 600.0;
  double server_connect_timeout = 15.0;
  double server_login_retry = 15.0;
  double client_login_timeout = 60.0;
  double query_timeout = 0.0;
  double query_wait_timeout = 120.0;
  double idle_transaction_timeout = 0.0;
  double client_idle_timeout = 0.0;
  std::vector<std::string> ignore_startup_parameters;
  bool application_name_add_host = false;
  bool log_connections = true;
  bool log_disconnections = true;
  double stats_period = 60.0;
  int pkt_buf = 4096;
  long long max_packet_size = 2147483647;
  std::string logfile;

  std::string pidfile;
  std::string user;              // Unix user to switch to (PgBouncer's -u)
  int listen_backlog = 128;
  int workers = 1;  // reactor threads
  bool server_round_robin = false;
  bool tcp_keepalive = true;
  bool log_pooler_errors = true;
  bool log_stats = true;
  std::string stats_listen;      // "host:port" of the HTTP /metrics and /stats endpoint; "" = off
  // Stored so that a pgbouncer.ini loads without loss, not acted on yet: the loaders
  // warn when one is set to a value pgpivot does not implement (see docs/config.md).
  std::string auth_user;
  std::string auth_query =
      "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
      "FROM pg_authid WHERE rolname=$1 AND rolcanlogin";
  bool disable_pqexec = false;
  int max_prepared_statements = 200;  // 0 disables tracking (PgBouncer 1.21+'s meaning)
  std::string client_tls_sslmode = "disable";  // disable/allow/prefer/require/verify-ca/verify-full
  std::string client_tls_key_file;
  std::string client_tls_cert_file;
  std::string client_tls_ca_file;
  std::string client_tls_protocols = "secure";  // secure (TLS 1.2+), all, or a list like "tlsv1.2,tlsv1.3"
  std::string client_tls_ciphers = "default";   // default/secure/fast/normal, or an OpenSSL cipher list
  std::string server_tls_sslmode = "prefer";
  std::string server_tls_ca_file;
  std::string server_tls_key_file;
  std::string server_tls_cert_file;
  std::string server_tls_protocols = "secure";
  std::string server_tls_ciphers = "default";
  bool syslog = false;
  int verbose = 0;
  // PgBouncer 1.19-1.25's keys. Acted on: max_db_client_connections and
  // max_user_client_connections (the defaults of the per-database and per-user
  // limits), scram_iterations, so_reuseport, tcp_keepcnt/keepidle/keepintvl,
  // tcp_user_timeout, tcp_socket_buffer. The others are stored (SHOW CONFIG shows
  // them) and warned about when set to a value pgpivot does not implement
  // (docs/config.md, "Accepted, not acted on").
  int max_db_client_connections = 0;    // 0 = unlimited
  int max_user_client_connections = 0;  // 0 = unlimited
  int scram_iterations = 4096;          // of the SCRAM secrets pgpivot makes from plain passwords
  bool so_reuseport = false;
  int tcp_keepcnt = 0;                  // 0 = the OS default
  int tcp_keepidle = 0;                 // 0 = pgpivot's 60 s
  int tcp_keepintvl = 0;                // 0 = the OS default
  int tcp_user_timeout = 0;             // milliseconds; 0 = the OS default
  int tcp_socket_buffer = 0;            // bytes; 0 = the OS default
  int tcp_defer_accept = 1;
  std::vector<std::string> track_extra_parameters = {"IntervalStyle"};
  int peer_id = 0;
  std::string auth_dbname;
  std::string auth_hba_file;
  std::string auth_ident_file;
  std::string auth_ldap_options;
  std::string unix_socket_mode = "0777";
  std::string unix_socket_group;
  std::string conffile;
  std::string service_name = "pgbouncer";
  std::string job_name = "pgbouncer";  // an alias of service_name
  std::string syslog_ident = "pgbouncer";
  std::string syslog_facility = "daemon";
  bool server_fast_close = false;
  double autodb_idle_timeout = 3600.0;
  double pool_idle_timeout = 0.0;
  double dns_max_ttl = 15.0;
  double dns_nxdomain_ttl = 15.0;
  double dns_zone_check_period = 0.0;
  std::string resolv_conf;
  double query_wait_notify = 5.0;
  std::string login_notify_message;
  std::string client_tls13_ciphers;
  std::string server_tls13_ciphers;
  std::string client_tls_ecdhcurve = "auto";
  std::string client_tls_dheparams = "auto";
  double cancel_wait_timeout = 10.0;
  double transaction_timeout = 0.0;
  double suspend_timeout = 10.0;
  int sbuf_loopcnt = 5;

  friend bool operator==(const Pooler&, const Pooler&) = default;
};

struct Failover {
  double health_check_interval = 1.0;
  double health_check_timeout = 2.0;
  int failure_threshold = 3;
  std::string role_query = "SELECT NOT pg_is_in_recovery()";
  bool auto_failover = true;
  std::string promote_command;
  double failover_timeout = 60.0;
  std::string on_failover_command;
  bool auto_failback = false;
  // Safety (issue 14): an automatic promotion is refused when the standby is further
  // behind than this many bytes of WAL (Patroni's maximum_lag_on_failover).
  long long max_lag_on_failover = 1048576;
  // Run on the writable node at each check: its current WAL position ("" = none).
  std::string position_query = "SELECT pg_current_wal_lsn()";
  // Run on the other node at each check: its received position, an LSN "X/Y" (or a
  // number of bytes of lag already computed); "" = no lag bound.
  std::string lag_query = "SELECT pg_last_wal_receive_lsn()";
  // Run on the other node: does it still hear from its upstream? One row per WAL
  // receiver: status, seconds since the last message, sender host, sender port. No row
  // = not receiving. "" = no witness.
  std::string witness_query =
      "SELECT status, extract(epoch FROM now() - last_msg_receipt_time), sender_host, sender_port "
      "FROM pg_stat_wal_receiver";
  // Startup `options` for the witness/lag connection ("" = the health check's own
  // connection); "-ccluster=system" for a CockroachDB PCR standby.
  std::string witness_options;
  double promote_timeout = 30.0;  // a promote_command running longer is killed
  std::string fence_command;      // run against the old node after a completed move
  std::string state_file;         // active node + epoch of every cluster; "" = none
  // Who decides a move (issue 15): "pgpivot" (this instance, or with [coordination]
  // the fleet of instances together) or "patroni" (follow Patroni's leader, learnt
  // from each node's `restapi`; pgpivot never promotes).
  std::string decider = "pgpivot";

  friend bool operator==(const Failover&, const Failover&) = default;
};

struct Node {
  std::string host = "127.0.0.1";
  int port = 5432;
  // Any other libpq-style key of the inline table (options, sslmode, ...), as text.
  std::map<std::string, std::string> options;
  // Patroni's REST API of this node ("http://host:8008"), for decider = "patroni".
  std::string restapi;

  friend bool operator==(const Node&, const Node&) = default;
};

struct Cluster {
  std::string name;
  Node primary;
  std::optional<Node> standby;
  Failover failover;  // [failover] merged with [clusters.NAME.failover]

  friend bool operator==(const Cluster&, const Cluster&) = default;
};

// [coordination] (issue 15): the instances that share a cluster decide its moves
// together through etcd v3 (its JSON gateway). No endpoints = off.
struct Coordination {
  std::vector<std::string> endpoints;  // "http://127.0.0.1:2379", "https://..."
  std::string instance_name;           // "" = hostname:listen_port
  double lease_ttl = 10.0;             // seconds; an instance's views and leadership live this long
  std::string prefix = "/pgpivot";     // keys: PREFIX/CLUSTER/{active,leader,views/NAME,request}
  double request_timeout = 2.0;        // one etcd request
  std::string tls_ca_file, tls_cert_file, tls_key_file;

  bool enabled() const { return !endpoints.empty(); }
  friend bool operator==(const Coordination&, const Coordination&) = default;
};

struct User {
  std::string name;
  std::string password;  // plain, "md5..." or "SCRAM-SHA-256$..."; "" = none
  std::optional<PoolMode> pool_mode;
  int pool_size = -1;              // -1 = database/default
  int reserve_pool_size = -1;
  int max_user_connections = -1;   // -1 = pooler default
  int max_user_client_connections = -1;  // -1 = [pooler]'s (0 = unlimited)
  // PgBouncer's per-user timeouts (-1 = [pooler]'s): query_wait_timeout overrides the
  // database's and [pooler]'s; the others, when above 0, [pooler]'s (as PgBouncer).
  double query_timeout = -1;
  double query_wait_timeout = -1;
  double idle_transaction_timeout = -1;
  double transaction_timeout = -1;
  double client_idle_timeout = -1;
  // Set when `password` came from auth_file (so a converted config can point at the
  // file instead of copying its passwords).
  bool password_from_auth_file = false;
  // TOML: `password = ""` was written (the TOML form of an auth_file line
  // `"name" ""`); a [users] entry without it only carries settings.
  bool password_given = false;

  friend bool operator==(const User&, const User&) = default;
};

struct Database {
  std::string name;      // the key clients connect with ("*" = fallback)
  std::string cluster;   // key of Config::clusters
  std::string dbname;    // database on the server; "" = same as name (or client's for "*")
  std::string user;      // force_user; "" = client's user
  std::string password;  // for the forced user; "" = from [users]
  int pool_size = -1;    // -1 = default_pool_size
  int min_pool_size = -1;
  int reserve_pool_size = -1;
  std::optional<PoolMode> pool_mode;
  int max_db_connections = -1;
  int max_db_client_connections = -1;  // -1 = [pooler]'s (0 = unlimited)
  double server_lifetime = -1;         // -1 = [pooler]'s
  double query_wait_timeout = -1;      // -1 = [pooler]'s; a user's overrides it
  std::string load_balance_hosts;      // round-robin (the default) | disable: how a host list (host = "a,b") is used
  std::string auth_query;              // "" = [pooler]'s
  std::string auth_dbname;             // "" = [pooler]'s, else the client's database
  std::string connect_query;
  std::string application_name;
  std::string auth_user;  // who runs auth_query for users not in auth_file; "" = [pooler]'s
  // Startup parameters to ask the server for (PgBouncer: client_encoding, datestyle,
  // timezone in the connection string). Keys are lower case.
  std::map<std::string, std::string> params;

  friend bool operator==(const Database&, const Database&) = default;
};

struct Config {
  std::string path;  // file it was loaded from
  Pooler pooler;
  std::map<std::string, User> users;
  std::map<std::string, Cluster> clusters;
  std::map<std::string, Database> databases;
  // [peers] (PgBouncer 1.19+): peer_id -> where that process listens (a Unix-socket
  // directory or an address); cancel requests carrying its id are sent on there.
  std::map<int, Node> peers;
  Coordination coordination;
  // auth_type = hba: the rules of auth_hba_file and maps of auth_ident_file, read
  // with the config (empty for other auth_types).
  Hba hba;

  friend bool operator==(const Config&, const Config&) = default;
};

}  // namespace pgpivot::config
