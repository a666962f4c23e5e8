// The registry of one worker: the configured databases and users as runtime
// objects (pool.hpp), the pools made for them on first use, and the effective
// per-pool settings (a user's value, else the database's, else [pooler]'s).
// It knows nothing of connections beyond the pools' lists.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "config/config.hpp"
#include "pooler/pool.hpp"
#include "protocol/auth.hpp"

namespace pgpivot {

class Hub;
class Pooler;

class Registry {
 public:
  using DbMap = std::map<std::string, std::unique_ptr<DbEntry>>;
  using UserMap = std::map<std::string, std::unique_ptr<UserEntry>>;
  using PoolMap = std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>>;

  // `cfg` is the worker's configuration, read at every call (it is replaced in
  // place on RELOAD); `owner` runs the pools' connections.
  Registry(const config::Config& cfg, Pooler* owner, Hub& hub, int shard);

  // Marks every entry removed, then revives or makes those of `cfg_` (already the
  // new configuration). `old_nodes`: each cluster's nodes before; the servers of a
  // database whose login target changed close when released.
  void apply(const std::map<std::string, std::pair<config::Node, std::optional<config::Node>>>& old_nodes);

  // A configured database, or the "*" fallback; nullptr when neither exists.
  DbEntry* find_db(const std::string& name);
  // Exactly this configured database (the console's PAUSE, KILL, ...).
  DbEntry* db(const std::string& name);
  UserEntry* find_user(const std::string& name);
  // The user servers log in as for a database with a forced `user`: the configured
  // one, or one made from the database entry's password.
  UserEntry* forced_user(const DbEntry& db);
  // The user auth_query runs as: the configured one, else one without a password
  // (PgBouncer's: for a server that trusts it).
  UserEntry* auth_user(const std::string& name);
  // The credentials auth_query found for `user` logging in to database `scope`:
  // one entry per (scope, user), kept across logins and RELOADs (pools point at
  // it), its password replaced by each lookup. Per-user settings come from
  // [users] when the user is configured there.
  UserEntry* dynamic_user(const std::string& scope, const std::string& user, const std::string& password);
  // A SCRAM secret for a user that does not exist: stable per name (so the salt
  // does not give the user away) and impossible to authenticate against.
  proto::ScramSecret fake_secret(const std::string& user) const;
  Pool* get_pool(DbEntry* db, const std::string& db_name, UserEntry* user, const std::string& user_name);

  config::PoolMode pool_mode(const Pool* p) const;
  int pool_size(const Pool* p) const;
  int reserve_size(const Pool* p) const;
  int min_pool_size(const Pool* p) const;
  int max_db_connections(const Pool* p) const;    // 0 = no limit
  int max_user_connections(const Pool* p) const;  // 0 = no limit
  // Client limits of a database and a user (0 = none): their own, else [pooler]'s.
  int max_db_client_connections(const DbEntry& db) const;
  int max_user_client_connections(const UserEntry& u) const;
  // server_lifetime of a database's servers: its own, else [pooler]'s.
  double server_lifetime(const DbEntry& db) const;
  // Timeouts in seconds (0 = off). As PgBouncer 1.25: query_wait_timeout is the
  // user's when set, else the database's, else [pooler]'s; the other four are the
  // user's when above 0, else [pooler]'s. The user is the one the pool's servers
  // log in as.
  // The auth_user / auth_query in effect for a database: its own, else [pooler]'s.
  [[nodiscard]] const std::string& auth_user(const DbEntry* db) const;
  [[nodiscard]] const std::string& auth_query(const DbEntry* db) const;
  double query_wait_timeout(const Pool* p) const;
  double query_timeout(const Pool* p) const;
  double idle_transaction_timeout(const Pool* p) const;
  double transaction_timeout(const Pool* p) const;
  double client_idle_timeout(const Pool* p) const;
  // The server slots a pool may hold: pool_size, or a smaller max_db_connections /
  // max_user_connections.
  int slots(const Pool* p) const;

  DbMap& dbs() { return dbs_; }
  const DbMap& dbs() const { return dbs_; }
  UserMap& users() { return users_; }
  PoolMap& pools() { return pools_; }
  template <class F>
  void each_pool(F&& f) {
    for (auto& [key, p] : pools_) f(p.get());
  }

 private:
  const config::Config& cfg_;
  Pooler* owner_;  // nullptr in unit tests
  Hub& hub_;
  int shard_;
  std::string fake_salt_key_;  // the same in every worker: stable fake SCRAM salts
  DbMap dbs_;
  UserMap users_;
  UserMap auth_users_;  // auth_user names not in users_
  std::map<std::pair<std::string, std::string>, std::unique_ptr<UserEntry>> dynamic_users_;
  PoolMap pools_;
};

}  // namespace pgpivot
