// The registry: configured databases and users as runtime objects, the pools made
// for them on first use, and the effective per-pool limits.
#include "pooler/pooler.hpp"

#include <algorithm>
#include <cstring>

#include <openssl/evp.h>

namespace pgpivot {

DbEntry* Pooler::find_db(const std::string& name) {
  auto it = dbs_.find(name);
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  it = dbs_.find("*");
  if (it != dbs_.end() && !it->second->removed && it->second->cluster) return it->second.get();
  return nullptr;
}

UserEntry* Pooler::find_user(const std::string& name) {
  auto it = users_.find(name);
  if (it == users_.end() || it->second->removed) return nullptr;
  return it->second.get();
}

proto::ScramSecret Pooler::fake_secret(const std::string& user) {
  proto::ScramSecret s;
  s.iterations = 4096;
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

Pool* Pooler::get_pool(DbEntry* db, const std::string& db_name, UserEntry* user, const std::string& user_name) {
  auto key = std::make_pair(db_name, user_name);
  auto& p = pools_[key];
  if (!p) {
    p = std::make_unique<Pool>();
    p->owner = this;
    p->shared = hub_->pool_count(db_name, user_name);
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

config::PoolMode Pooler::pool_mode(const Pool* p) const {
  if (p->user && p->user->cfg.pool_mode) return *p->user->cfg.pool_mode;
  if (p->db->cfg.pool_mode) return *p->db->cfg.pool_mode;
  return cfg_.pooler.pool_mode;
}

int Pooler::pool_size(const Pool* p) const {
  if (p->user && p->user->cfg.pool_size >= 0) return p->user->cfg.pool_size;
  if (p->db->cfg.pool_size >= 0) return p->db->cfg.pool_size;
  return cfg_.pooler.default_pool_size;
}

int Pooler::reserve_size(const Pool* p) const {
  if (p->user && p->user->cfg.reserve_pool_size >= 0) return p->user->cfg.reserve_pool_size;
  if (p->db->cfg.reserve_pool_size >= 0) return p->db->cfg.reserve_pool_size;
  return cfg_.pooler.reserve_pool_size;
}

// 0 = no limit.
int Pooler::max_db_connections(const Pool* p) const {
  return p->db->cfg.max_db_connections >= 0 ? p->db->cfg.max_db_connections : cfg_.pooler.max_db_connections;
}

int Pooler::max_user_connections(const Pool* p) const {
  return p->user && p->user->cfg.max_user_connections >= 0 ? p->user->cfg.max_user_connections
                                                             : cfg_.pooler.max_user_connections;
}

int Pooler::min_pool_size(const Pool* p) const {
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
