// Config -> native TOML text, e.g. to turn a pgbouncer.ini into a pgpivot.toml. Only
// settings that differ from the defaults are written, plus the ones a reader expects to
// see; loading the text back gives an equal Config.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <variant>

#include "config/internal.hpp"
#include "config/load.hpp"

namespace pgpivot::config {

namespace {

using namespace detail;

// A TOML basic string.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

// A key: bare when TOML allows it, else quoted.
std::string key(std::string_view k) {
  bool bare = !k.empty();
  for (char c : k)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') bare = false;
  return bare ? std::string(k) : quote(k);
}

std::string number(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
  std::string s(buf, ec == std::errc() ? end : buf);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string value(int v) { return std::to_string(v); }
std::string value(long long v) { return std::to_string(v); }
std::string value(double v) { return number(v); }
std::string value(bool v) { return v ? "true" : "false"; }
std::string value(const std::string& v) { return quote(v); }
std::string value(PoolMode v) { return quote(to_string(v)); }
std::string value(AuthType v) { return quote(to_string(v)); }
std::string value(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + quote(v[i]);
  return out + "]";
}

// `{ k = v, ... }` from the pairs given.
std::string inline_table(const std::vector<std::pair<std::string, std::string>>& kv) {
  if (kv.empty()) return "{}";
  std::string out = "{ ";
  for (size_t i = 0; i < kv.size(); ++i) out += (i ? ", " : "") + key(kv[i].first) + " = " + kv[i].second;
  return out + " }";
}

std::string node(const Node& n) {
  std::vector<std::pair<std::string, std::string>> kv = {{"host", quote(n.host)},
                                                          {"port", value(n.port)}};
  for (const auto& [k, v] : n.options) kv.emplace_back(k, quote(v));
  return inline_table(kv);
}

void write_pooler(std::ostringstream& o, const Pooler& p) {
  static const Pooler defaults;
  o << "[pooler]\n";
  for (const auto& k : settings()) {
    const std::string_view name = k.name;
    const bool essential = name == "listen_addr" || name == "listen_port" ||
                           name == "pool_mode" || name == "auth_type";
    std::visit(
        [&](auto m) {
          if (essential || !(p.*m == defaults.*m)) o << name << " = " << value(p.*m) << "\n";
        },
        k.member);
  }
}

void write_users(std::ostringstream& o, const std::map<std::string, User>& users) {
  static const User defaults;
  std::ostringstream body;
  for (const auto& [name, u] : users) {
    std::vector<std::pair<std::string, std::string>> kv;
    // Passwords read from auth_file stay there: it is read again on load.
    if ((u.password_given || !u.password.empty()) && !u.password_from_auth_file)
      kv.emplace_back("password", quote(u.password));
    if (u.pool_mode) kv.emplace_back("pool_mode", value(*u.pool_mode));
    if (u.pool_size != defaults.pool_size) kv.emplace_back("pool_size", value(u.pool_size));
    if (u.reserve_pool_size != defaults.reserve_pool_size)
      kv.emplace_back("reserve_pool_size", value(u.reserve_pool_size));
    if (u.max_user_connections != defaults.max_user_connections)
      kv.emplace_back("max_user_connections", value(u.max_user_connections));
    if (u.max_user_client_connections != defaults.max_user_client_connections)
      kv.emplace_back("max_user_client_connections", value(u.max_user_client_connections));
    for (auto [k, v, dv] : {std::tuple{"query_timeout", u.query_timeout, defaults.query_timeout},
                            {"query_wait_timeout", u.query_wait_timeout, defaults.query_wait_timeout},
                            {"idle_transaction_timeout", u.idle_transaction_timeout, defaults.idle_transaction_timeout},
                            {"transaction_timeout", u.transaction_timeout, defaults.transaction_timeout},
                            {"client_idle_timeout", u.client_idle_timeout, defaults.client_idle_timeout}}) {
      if (v != dv) kv.emplace_back(k, value(v));
    }
    if (kv.empty() && u.password_from_auth_file) continue;  // only in auth_file
    body << key(name) << " = " << inline_table(kv) << "\n";
  }
  if (!body.str().empty()) o << "\n[users]\n" << body.str();
}

void write_failover(std::ostringstream& o, const std::string& cluster, const Failover& f) {
  static const Failover d;
  std::ostringstream body;
  auto put = [&](const char* name, const auto& v, const auto& dv) {
    if (!(v == dv)) body << name << " = " << value(v) << "\n";
  };
  put("health_check_interval", f.health_check_interval, d.health_check_interval);
  put("health_check_timeout", f.health_check_timeout, d.health_check_timeout);
  put("failure_threshold", f.failure_threshold, d.failure_threshold);
  put("role_query", f.role_query, d.role_query);
  put("auto_failover", f.auto_failover, d.auto_failover);
  put("promote_command", f.promote_command, d.promote_command);
  put("failover_timeout", f.failover_timeout, d.failover_timeout);
  put("on_failover_command", f.on_failover_command, d.on_failover_command);
  put("auto_failback", f.auto_failback, d.auto_failback);
  put("max_lag_on_failover", f.max_lag_on_failover, d.max_lag_on_failover);
  put("position_query", f.position_query, d.position_query);
  put("lag_query", f.lag_query, d.lag_query);
  put("witness_query", f.witness_query, d.witness_query);
  put("witness_options", f.witness_options, d.witness_options);
  put("promote_timeout", f.promote_timeout, d.promote_timeout);
  put("fence_command", f.fence_command, d.fence_command);
  put("state_file", f.state_file, d.state_file);
  if (!body.str().empty()) o << "\n[clusters." << key(cluster) << ".failover]\n" << body.str();
}

void write_clusters(std::ostringstream& o, const std::map<std::string, Cluster>& clusters) {
  for (const auto& [name, c] : clusters) {
    o << "\n[clusters." << key(name) << "]\n";
    o << "primary = " << node(c.primary) << "\n";
    if (c.standby) o << "standby = " << node(*c.standby) << "\n";
    write_failover(o, name, c.failover);
  }
}

void write_databases(std::ostringstream& o, const std::map<std::string, Database>& dbs) {
  static const Database d;
  for (const auto& [name, db] : dbs) {
    o << "\n[databases." << key(name) << "]\n";
    o << "cluster = " << quote(db.cluster) << "\n";
    if (name == "*" ? !db.dbname.empty() : db.dbname != name) o << "dbname = " << quote(db.dbname) << "\n";
    auto put = [&](const char* k, const auto& v, const auto& dv) {
      if (!(v == dv)) o << k << " = " << value(v) << "\n";
    };
    put("user", db.user, d.user);
    put("password", db.password, d.password);
    put("pool_size", db.pool_size, d.pool_size);
    put("min_pool_size", db.min_pool_size, d.min_pool_size);
    put("reserve_pool_size", db.reserve_pool_size, d.reserve_pool_size);
    if (db.pool_mode) o << "pool_mode = " << value(*db.pool_mode) << "\n";
    put("max_db_connections", db.max_db_connections, d.max_db_connections);
    put("max_db_client_connections", db.max_db_client_connections, d.max_db_client_connections);
    put("connect_query", db.connect_query, d.connect_query);
    put("application_name", db.application_name, d.application_name);
    put("server_lifetime", db.server_lifetime, d.server_lifetime);
    put("query_wait_timeout", db.query_wait_timeout, d.query_wait_timeout);
    put("load_balance_hosts", db.load_balance_hosts, d.load_balance_hosts);
    put("auth_user", db.auth_user, d.auth_user);
    put("auth_query", db.auth_query, d.auth_query);
    put("auth_dbname", db.auth_dbname, d.auth_dbname);
    if (!db.params.empty()) {
      std::vector<std::pair<std::string, std::string>> kv;
      for (const auto& [k, v] : db.params) kv.emplace_back(k, quote(v));
      o << "params = " << inline_table(kv) << "\n";
    }
  }
}

}  // namespace

std::string to_toml(const Config& config) {
  std::ostringstream o;
  o << "# pgpivot configuration";
  if (!config.path.empty()) {
    std::string from = config.path;
    for (char& c : from)
      if (c == '\n' || c == '\r') c = ' ';
    o << ", written from " << from;
  }
  o << "\n\n";
  write_pooler(o, config.pooler);
  write_users(o, config.users);
  write_clusters(o, config.clusters);
  write_databases(o, config.databases);
  if (!config.peers.empty()) o << "\n[peers]\n";
  for (const auto& [id, n] : config.peers) {
    std::vector<std::pair<std::string, std::string>> kv;
    if (!n.host.empty()) kv.emplace_back("host", quote(n.host));  // none: unix_socket_dir
    kv.emplace_back("port", value(n.port));
    for (const auto& [k, v] : n.options) kv.emplace_back(k, quote(v));
    o << id << " = " << inline_table(kv) << "\n";
  }
  return o.str();
}

}  // namespace pgpivot::config
