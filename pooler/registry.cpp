// The registry (registry.hpp): databases, users, pools and the effective per-pool
// settings; and the pools' state lists (pool.hpp).
#include "pooler/registry.hpp"

#include "pooler/server.hpp"
#include "pooler/workers/hub.hpp"

#include <algorithm>
#include <cstring>

#include <openssl/evp.h>

namespace pgpivot {

Registry::Registry(const config::Config& cfg, Pooler* owner, Hub& hub, int shard)
    : cfg_(cfg), owner_(owner), hub_(hub), shard_(shard), fake_salt_key_(hub.fake_salt_key()) {}

void Registry::apply(const std::map<std::string, std::pair<config::Node, std::optional<config::Node>>>& old_nodes) {
  for (auto& [name, db] : dbs_) {
    db->removed = true;
    db->cluster = nullptr;  // points into the config just replaced
  }
  for (auto& [name, dbc] : cfg_.databases) {
    auto& e = dbs_[name];
    if (!e) e = std::make_unique<DbEntry>();
    if (!e->counts) e->counts = hub_.db_count(name);
    bool changed = e->cfg.cluster != dbc.cluster || e->cfg.dbname != dbc.dbname || e->cfg.user != dbc.user ||
                   e->cfg.password != dbc.password;
    e->cfg = dbc;
    e->removed = false;
    auto it = cfg_.clusters.find(dbc.cluster);
    const config::Cluster* cl = it == cfg_.clusters.end() ? nullptr : &it->second;
    auto old = old_nodes.find(dbc.cluster);
    if (cl && old != old_nodes.end() && (old->second.first != cl->primary || old->second.second != cl->standby)) {
      changed = true;
    }
    e->cluster = cl;
    if (changed) {
      // Servers of this database log in elsewhere now: close them when released.
      each_pool([&](Pool* pool) {
        if (pool->db == e.get()) pool->each_server([](Server* s) { s->close_needed = true; });
      });
    }
  }
  for (auto& [name, u] : users_) u->removed = true;
  for (auto& [name, uc] : cfg_.users) {
    auto& e = users_[name];
    if (!e) e = std::make_unique<UserEntry>();
    if (!e->counts) e->counts = hub_.user_count(name);
    if (e->cfg.password != uc.password) {
      e->secret.reset();
      if (e->client_key && shard_ == 0) hub_.forget_client_key(name);
      e->client_key.reset();
    }
    e->cfg = uc;
    e->removed = false;
  }
  // As PgBouncer: a database with a forced user and a min_pool_size has its pool
  // from the start, so that its servers are opened before any client comes
  // (Pooler::pool_service opens the first, the janitor the rest).
  for (auto& [name, e] : dbs_) {
    if (e->removed || !e->cluster || name == "*" || e->cfg.user.empty()) continue;
    if ((e->cfg.min_pool_size >= 0 ? e->cfg.min_pool_size : cfg_.pooler.min_pool_size) <= 0) continue;
    get_pool(e.get(), name, forced_user(*e), e->cfg.user);
  }
}

DbEntry* Registry::db(const std::string& name) {
  auto it = dbs_.find(name);
  return it == dbs_.end() || it->second->removed ? nullptr : it->second.get();
}

UserEntry* Registry::forced_user(const DbEntry& db) {
  auto& fu = users_[db.cfg.user];
  if (!fu) {
    // Forced user known only from the database entry.
    fu = std::make_unique<UserEntry>();
    fu->counts = hub_.user_count(db.cfg.user);
    fu->cfg.name = db.cfg.user;
    fu->cfg.password = db.cfg.password;
  }
  return fu.get();
}

UserEntry* Registry::auth_user(const std::string& name) {
  if (UserEntry* u = find_user(name)) return u;
  auto& e = auth_users_[name];
  if (!e) {
    e = std::make_unique<UserEntry>();
    e->counts = hub_.user_count(name);
    e->cfg.name = name;
  }
  return e.get();
}

UserEntry* Registry::dynamic_user(const std::string& scope, const std::string& user, const std::string& password) {
  auto& e = dynamic_users_[{scope, user}];
  if (!e) {
    e = std::make_unique<UserEntry>();
    e->counts = hub_.user_count(user);
    e->looked_up = true;
  }
  auto it = cfg_.users.find(user);
  config::User cfg = it != cfg_.users.end() ? it->second : config::User{};
  cfg.name = user;
  cfg.password = password;
  cfg.password_from_auth_file = false;
  if (e->cfg.password != password) {
    // A rotated password: the cached secret and the pass-through key were the old one's.
    e->secret.reset();
    e->client_key.reset();
  }
  e->cfg = std::move(cfg);
  return e.get();
}

int Registry::slots(const Pool* p) const {
  int n = std::max(pool_size(p), 0);
  int maxdb = max_db_connections(p), maxuser = max_user_connections(p);
  if (maxdb > 0) n = std::min(n, maxdb);
  if (maxuser > 0) n = std::min(n, maxuser);
  return n;
}

DbEntry* Registry::find_db(const std::string& name) {
  auto it = dbs_.find(name);
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  it = dbs_.find("*");
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  return nullptr;
}

UserEntry* Registry::find_user(const std::string& name) {
  auto it = users_.find(name);
  if (it == users_.end() || it->second->removed) return nullptr;
  return it->second.get();
}

proto::ScramSecret Registry::fake_secret(const std::string& user) const {
  proto::ScramSecret s;
  s.iterations = cfg_.pooler.scram_iterations;  // as a real user's secret would have
  // Salt derived from a per-process key and the name: the same name always
  // gets the same salt, as a real user would.
  // The salt is raw bytes, like a real one: the 16 hex characters used before
  // decoded to bytes from [0-9a-f] only, which gave unknown users away.
  std::string digest = proto::md5_hex(fake_salt_key_ + user);
  s.salt.assign(16, '\0');
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i < 16; i++) s.salt[i] = char(nibble(digest[2 * i]) << 4 | nibble(digest[2 * i + 1]));
  proto::random_bytes(s.stored_key.data(), s.stored_key.size());
  proto::random_bytes(s.server_key.data(), s.server_key.size());
  return s;
}

Pool* Registry::get_pool(DbEntry* db, const std::string& db_name, UserEntry* user, const std::string& user_name) {
  auto key = std::make_pair(db_name, user_name);
  auto& p = pools_[key];
  if (!p) {
    p = std::make_unique<Pool>();
    p->owner = owner_;
    p->shared = hub_.pool_count(db_name, user_name);
    p->db = db;
    p->user = user;
    p->db_name = db_name;
    p->user_name = user_name;
    p->server_db = db->cfg.dbname.empty() ? db_name : db->cfg.dbname;
  }
  p->db = db;
  p->user = user;
  return p.get();
}

config::PoolMode Registry::pool_mode(const Pool* p) const {
  if (p->user && p->user->cfg.pool_mode) return *p->user->cfg.pool_mode;
  if (p->db->cfg.pool_mode) return *p->db->cfg.pool_mode;
  return cfg_.pooler.pool_mode;
}

int Registry::pool_size(const Pool* p) const {
  if (p->user && p->user->cfg.pool_size >= 0) return p->user->cfg.pool_size;
  if (p->db->cfg.pool_size >= 0) return p->db->cfg.pool_size;
  return cfg_.pooler.default_pool_size;
}

int Registry::reserve_size(const Pool* p) const {
  if (p->user && p->user->cfg.reserve_pool_size >= 0) return p->user->cfg.reserve_pool_size;
  if (p->db->cfg.reserve_pool_size >= 0) return p->db->cfg.reserve_pool_size;
  return cfg_.pooler.reserve_pool_size;
}

// 0 = no limit.
int Registry::max_db_connections(const Pool* p) const {
  return p->db->cfg.max_db_connections >= 0 ? p->db->cfg.max_db_connections : cfg_.pooler.max_db_connections;
}

int Registry::max_user_connections(const Pool* p) const {
  return p->user && p->user->cfg.max_user_connections >= 0 ? p->user->cfg.max_user_connections
                                                             : cfg_.pooler.max_user_connections;
}

int Registry::max_db_client_connections(const DbEntry& db) const {
  return db.cfg.max_db_client_connections >= 0 ? db.cfg.max_db_client_connections
                                               : cfg_.pooler.max_db_client_connections;
}

int Registry::max_user_client_connections(const UserEntry& u) const {
  return u.cfg.max_user_client_connections >= 0 ? u.cfg.max_user_client_connections
                                                : cfg_.pooler.max_user_client_connections;
}

double Registry::server_lifetime(const DbEntry& db) const {
  return db.cfg.server_lifetime >= 0 ? db.cfg.server_lifetime : cfg_.pooler.server_lifetime;
}

const std::string& Registry::auth_user(const DbEntry* db) const {
  return db && !db->cfg.auth_user.empty() ? db->cfg.auth_user : cfg_.pooler.auth_user;
}

const std::string& Registry::auth_query(const DbEntry* db) const {
  return db && !db->cfg.auth_query.empty() ? db->cfg.auth_query : cfg_.pooler.auth_query;
}

double Registry::query_wait_timeout(const Pool* p) const {
  if (p->user && p->user->cfg.query_wait_timeout >= 0) return p->user->cfg.query_wait_timeout;
  if (p->db->cfg.query_wait_timeout >= 0) return p->db->cfg.query_wait_timeout;
  return cfg_.pooler.query_wait_timeout;
}

namespace {
double user_over(const Pool* p, double config::User::*field, double global) {
  return p->user && p->user->cfg.*field > 0 ? p->user->cfg.*field : global;
}
}  // namespace

double Registry::query_timeout(const Pool* p) const {
  return user_over(p, &config::User::query_timeout, cfg_.pooler.query_timeout);
}

double Registry::idle_transaction_timeout(const Pool* p) const {
  return user_over(p, &config::User::idle_transaction_timeout, cfg_.pooler.idle_transaction_timeout);
}

double Registry::transaction_timeout(const Pool* p) const {
  return user_over(p, &config::User::transaction_timeout, cfg_.pooler.transaction_timeout);
}

double Registry::client_idle_timeout(const Pool* p) const {
  return user_over(p, &config::User::client_idle_timeout, cfg_.pooler.client_idle_timeout);
}

int Registry::min_pool_size(const Pool* p) const {
  if (p->db->cfg.min_pool_size >= 0) return p->db->cfg.min_pool_size;
  return cfg_.pooler.min_pool_size;
}

ListHead* Pool::list_of(ClientState s) {
  switch (s) {
    case ClientState::Login: return &cl_login;
    case ClientState::Idle: return &cl_idle;
    case ClientState::Waiting: return &cl_waiting;
    case ClientState::Active: return &cl_active;
    case ClientState::Cancel:
    case ClientState::Closing: break;
  }
  return nullptr;
}

ListHead* Pool::list_of(ServerState s) {
  switch (s) {
    case ServerState::Login: return &sv_login;
    case ServerState::Idle: return &sv_idle;
    case ServerState::Active: return &sv_active;
    case ServerState::Used: return &sv_used;
    case ServerState::Tested: return &sv_tested;
    case ServerState::Closing: break;
  }
  return nullptr;
}

}  // namespace pgpivot
