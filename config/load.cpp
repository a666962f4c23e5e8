// The TOML config: every table and key read through field tables, with validation
// that reports every problem with file, line and key. The helpers it shares with
// ini.cpp and convert.cpp are in internal.cpp, userlist.txt in userlist.cpp.
#include "config/load.hpp"
#include "config/internal.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include <toml++/toml.h>

namespace pgpivot::config {

namespace {

using namespace detail;

std::string join_key(const std::string& prefix, std::string_view k) {
  if (prefix.empty()) return std::string(k);
  std::string out = prefix;
  out += '.';
  out += k;
  return out;
}

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }
int line_of(const toml::key& k) { return static_cast<int>(k.source().begin.line); }

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
  }
  return "value";
}

// ---------------------------------------------------------------- context

struct Ctx {
  std::string file;
  std::vector<Error>* errors;

  void error(int line, std::string key, std::string message) const {
    errors->push_back(Error{file, line, std::move(key), std::move(message)});
  }
  void wrong_type(const toml::node& n, const std::string& key, const char* expected) const {
    error(line_of(n), key, std::string("expected ") + expected + ", got " + type_name(n.type()));
  }
  void unknown_key(const toml::key& k, const std::string& key,
                   const std::vector<std::string>& known) const {
    std::string msg = "unknown key";
    std::string s = suggest(k.str(), known);
    if (!s.empty()) msg += "; did you mean " + s + "?";
    error(line_of(k), key, std::move(msg));
  }
};

// ---------------------------------------------------------------- value readers

std::optional<long long> read_int(const Ctx& ctx, const toml::node& n, const std::string& key,
                                  long long lo, long long hi) {
  const auto* v = n.as_integer();
  if (!v) {
    ctx.wrong_type(n, key, "integer");
    return std::nullopt;
  }
  long long x = v->get();
  if (std::string problem = int_problem(x, lo, hi); !problem.empty()) {
    ctx.error(line_of(n), key, std::move(problem));
    return std::nullopt;
  }
  return x;
}

std::optional<double> read_duration(const Ctx& ctx, const toml::node& n, const std::string& key,
                                    bool positive) {
  double x;
  if (const auto* i = n.as_integer()) {
    x = static_cast<double>(i->get());
  } else if (const auto* f = n.as_floating_point()) {
    x = f->get();
  } else {
    ctx.wrong_type(n, key, "number of seconds");
    return std::nullopt;
  }
  if (std::string problem = duration_problem(x, positive); !problem.empty()) {
    ctx.error(line_of(n), key, std::move(problem));
    return std::nullopt;
  }
  return x;
}

std::optional<bool> read_bool(const Ctx& ctx, const toml::node& n, const std::string& key) {
  if (const auto* b = n.as_boolean()) return b->get();
  ctx.wrong_type(n, key, "boolean");
  return std::nullopt;
}

std::optional<std::string> read_string(const Ctx& ctx, const toml::node& n,
                                       const std::string& key) {
  if (const auto* s = n.as_string()) return s->get();
  ctx.wrong_type(n, key, "string");
  return std::nullopt;
}

// An array of strings, or (PgBouncer style) one comma-separated string.
std::optional<std::vector<std::string>> read_list(const Ctx& ctx, const toml::node& n,
                                                  const std::string& key) {
  std::vector<std::string> out;
  if (const auto* s = n.as_string()) {
    std::string_view text = s->get();
    size_t start = 0;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string_view::npos) comma = text.size();
      std::string item = trim(text.substr(start, comma - start));
      if (!item.empty()) out.push_back(std::move(item));
      start = comma + 1;
    }
    return out;
  }
  const auto* arr = n.as_array();
  if (!arr) {
    ctx.wrong_type(n, key, "array of strings");
    return std::nullopt;
  }
  bool ok = true;
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& item = *arr->get(i);
    if (const auto* s = item.as_string()) {
      out.push_back(s->get());
    } else {
      ctx.error(line_of(item), key,
                "item " + std::to_string(i + 1) + ": expected string, got " +
                    type_name(item.type()));
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

template <class E>
std::optional<E> read_enum(const Ctx& ctx, const toml::node& n, const std::string& key,
                           std::optional<E> (*parse)(std::string_view), const char* allowed) {
  auto s = read_string(ctx, n, key);
  if (!s) return std::nullopt;
  if (auto e = parse(*s)) return e;
  ctx.error(line_of(n), key, "invalid value \"" + *s + "\"; expected one of: " + allowed);
  return std::nullopt;
}

// ---------------------------------------------------------------- field tables

template <class S>
struct Field {
  std::string name;
  std::function<void(const Ctx&, const toml::node&, const std::string&, S&)> set;
};

template <class S, class T>
Field<S> int_field(const char* name, T S::*m, long long lo, long long hi = INT_MAX) {
  return {name, [m, lo, hi](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_int(c, n, k, lo, hi)) s.*m = static_cast<T>(*v);
          }};
}

template <class S>
Field<S> duration_field(const char* name, double S::*m, bool positive = false) {
  return {name, [m, positive](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_duration(c, n, k, positive)) s.*m = *v;
          }};
}

template <class S>
Field<S> bool_field(const char* name, bool S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_bool(c, n, k)) s.*m = *v;
          }};
}

template <class S>
Field<S> string_field(const char* name, std::string S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_string(c, n, k)) s.*m = std::move(*v);
          }};
}

template <class S>
Field<S> password_field(const char* name, std::string S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            auto v = read_string(c, n, k);
            if (!v) return;
            if (std::string problem = check_password(*v); !problem.empty())
              c.error(line_of(n), k, problem);
            else
              s.*m = std::move(*v);
          }};
}

template <class S>
Field<S> list_field(const char* name, std::vector<std::string> S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_list(c, n, k)) s.*m = std::move(*v);
          }};
}

template <class S, class T>
Field<S> pool_mode_field(const char* name, T S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_enum<PoolMode>(c, n, k, parse_pool_mode,
                                             "session, transaction, statement"))
              s.*m = *v;
          }};
}

template <class S>
Field<S> auth_type_field(const char* name, AuthType S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            if (auto v = read_enum<AuthType>(c, n, k, parse_auth_type, kAuthTypes))
              s.*m = *v;
          }};
}

// A string that must be one of `choices` (comma-separated).
template <class S>
Field<S> choice_field(const char* name, std::string S::*m, const char* choices) {
  return {name, [m, choices](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            auto v = read_string(c, n, k);
            if (!v) return;
            std::string list = std::string(",") + choices + ",";
            if (!v->empty() && list.find("," + *v + ",") != std::string::npos)
              s.*m = *v;
            else
              c.error(line_of(n), k, "invalid value \"" + *v + "\"; expected one of: " + choices);
          }};
}

template <class S>
Field<S> sslmode_field(const char* name, std::string S::*m) {
  return {name, [m](const Ctx& c, const toml::node& n, const std::string& k, S& s) {
            auto v = read_string(c, n, k);
            if (!v) return;
            if (valid_sslmode(*v))
              s.*m = lower(*v);
            else
              c.error(line_of(n), k,
                      "invalid value \"" + *v + "\"; expected one of: " + kSslModes);
          }};
}

// The TOML reader of each [pooler] setting, from the shared table.
Field<Pooler> pooler_field(const Setting& k) {
  return std::visit(
      [&k](auto m) -> Field<Pooler> {
        using T = std::remove_cvref_t<decltype(std::declval<Pooler&>().*m)>;
        if constexpr (std::is_same_v<T, int> || std::is_same_v<T, long long>)
          return int_field(k.name, m, k.lo, k.hi);
        else if constexpr (std::is_same_v<T, double>)
          return duration_field(k.name, m, k.positive);
        else if constexpr (std::is_same_v<T, bool>)
          return bool_field(k.name, m);
        else if constexpr (std::is_same_v<T, std::string>)
          return k.sslmode ? sslmode_field(k.name, m) : string_field(k.name, m);
        else if constexpr (std::is_same_v<T, std::vector<std::string>>)
          return list_field(k.name, m);
        else if constexpr (std::is_same_v<T, PoolMode>)
          return pool_mode_field(k.name, m);
        else
          return auth_type_field(k.name, m);
      },
      k.member);
}

const std::vector<Field<Pooler>>& pooler_fields() {
  static const std::vector<Field<Pooler>> f = [] {
    std::vector<Field<Pooler>> out;
    for (const auto& k : settings()) out.push_back(pooler_field(k));
    return out;
  }();
  return f;
}

const std::vector<Field<Failover>>& failover_fields() {
  using F = Failover;
  static const std::vector<Field<F>> f = {
      duration_field("health_check_interval", &F::health_check_interval, true),
      duration_field("health_check_timeout", &F::health_check_timeout, true),
      int_field("failure_threshold", &F::failure_threshold, 1),
      string_field("role_query", &F::role_query),
      bool_field("auto_failover", &F::auto_failover),
      string_field("promote_command", &F::promote_command),
      duration_field("failover_timeout", &F::failover_timeout),
      string_field("on_failover_command", &F::on_failover_command),
      bool_field("auto_failback", &F::auto_failback),
      int_field("max_lag_on_failover", &F::max_lag_on_failover, 0, LLONG_MAX),
      string_field("position_query", &F::position_query),
      string_field("lag_query", &F::lag_query),
      string_field("witness_query", &F::witness_query),
      string_field("witness_options", &F::witness_options),
      duration_field("promote_timeout", &F::promote_timeout, true),
      string_field("fence_command", &F::fence_command),
      string_field("state_file", &F::state_file),
      choice_field("decider", &F::decider, "pgpivot,patroni"),
  };
  return f;
}

const std::vector<Field<User>>& user_fields() {
  using U = User;
  static const std::vector<Field<U>> f = {
      password_field("password", &U::password),
      pool_mode_field("pool_mode", &U::pool_mode),
      int_field("pool_size", &U::pool_size, 0),
      int_field("reserve_pool_size", &U::reserve_pool_size, 0),
      int_field("max_user_connections", &U::max_user_connections, 0),
      int_field("max_user_client_connections", &U::max_user_client_connections, 0),
      duration_field("query_timeout", &U::query_timeout),
      duration_field("query_wait_timeout", &U::query_wait_timeout),
      duration_field("idle_transaction_timeout", &U::idle_transaction_timeout),
      duration_field("transaction_timeout", &U::transaction_timeout),
      duration_field("client_idle_timeout", &U::client_idle_timeout),
  };
  return f;
}

const std::vector<Field<Database>>& database_fields() {
  using D = Database;
  static const std::vector<Field<D>> f = {
      string_field("cluster", &D::cluster),
      string_field("dbname", &D::dbname),
      string_field("user", &D::user),
      password_field("password", &D::password),
      int_field("pool_size", &D::pool_size, 0),
      int_field("min_pool_size", &D::min_pool_size, 0),
      int_field("reserve_pool_size", &D::reserve_pool_size, 0),
      pool_mode_field("pool_mode", &D::pool_mode),
      int_field("max_db_connections", &D::max_db_connections, 0),
      int_field("max_db_client_connections", &D::max_db_client_connections, 0),
      duration_field("server_lifetime", &D::server_lifetime),
      duration_field("query_wait_timeout", &D::query_wait_timeout),
      string_field("load_balance_hosts", &D::load_balance_hosts),
      string_field("auth_query", &D::auth_query),
      string_field("auth_dbname", &D::auth_dbname),
      string_field("connect_query", &D::connect_query),
      string_field("application_name", &D::application_name),
      string_field("auth_user", &D::auth_user),
      {"params",
       [](const Ctx& c, const toml::node& n, const std::string& k, D& d) {
         const auto* t = n.as_table();
         if (!t) {
           c.wrong_type(n, k, "table of strings");
           return;
         }
         for (auto&& [name, v] : *t) {
           std::string key = join_key(k, name.str());
           if (auto s = read_string(c, v, key)) d.params[lower(name.str())] = std::move(*s);
         }
       }},
  };
  return f;
}

template <class S>
std::vector<std::string> names_of(const std::vector<Field<S>>& fields) {
  std::vector<std::string> out;
  for (const auto& f : fields) out.push_back(f.name);
  return out;
}

// Applies every key of `t` through `fields`; unknown keys are reported.
template <class S>
void apply_table(const Ctx& ctx, const toml::table& t, const std::string& prefix,
                 const std::vector<Field<S>>& fields, S& out) {
  static const std::vector<std::string> names = names_of(fields);
  for (auto&& [k, v] : t) {
    std::string key = join_key(prefix, k.str());
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const Field<S>& f) { return f.name == k.str(); });
    if (it == fields.end())
      ctx.unknown_key(k, key, names);
    else
      it->set(ctx, v, key, out);
  }
}

// ---------------------------------------------------------------- sections

const toml::table* expect_table(const Ctx& ctx, const toml::node& n, const std::string& key) {
  const auto* t = n.as_table();
  if (!t) ctx.wrong_type(n, key, "table");
  return t;
}

void load_node(const Ctx& ctx, const toml::node& n, const std::string& prefix, Node& node) {
  const toml::table* t = expect_table(ctx, n, prefix);
  if (!t) return;
  for (auto&& [k, v] : *t) {
    std::string key = join_key(prefix, k.str());
    if (k.str() == "host") {
      if (auto s = read_string(ctx, v, key)) {
        if (s->empty())
          ctx.error(line_of(v), key, "must not be empty");
        else
          node.host = *s;
      }
    } else if (k.str() == "port") {
      if (auto p = read_int(ctx, v, key, 1, 65535)) node.port = static_cast<int>(*p);
    } else if (k.str() == "restapi") {
      if (auto s = read_string(ctx, v, key)) {
        if (s->rfind("http://", 0) != 0 && s->rfind("https://", 0) != 0)
          ctx.error(line_of(v), key, "expected an http:// or https:// URL (Patroni's restapi)");
        else
          node.restapi = *s;
      }
    } else if (const auto* s = v.as_string()) {
      node.options[std::string(k.str())] = s->get();
    } else if (const auto* i = v.as_integer()) {
      node.options[std::string(k.str())] = std::to_string(i->get());
    } else if (const auto* f = v.as_floating_point()) {
      node.options[std::string(k.str())] = format_double(f->get());
    } else if (const auto* b = v.as_boolean()) {
      node.options[std::string(k.str())] = b->get() ? "1" : "0";  // libpq style
    } else {
      ctx.wrong_type(v, key, "string");
    }
  }
}

void load_clusters(const Ctx& ctx, const toml::table& t, const Failover& global,
                   std::map<std::string, Cluster>& clusters) {
  static const std::vector<std::string> known = {"primary", "standby", "failover"};
  for (auto&& [name, v] : t) {
    std::string prefix = join_key("clusters", name.str());
    const toml::table* ct = expect_table(ctx, v, prefix);
    if (!ct) continue;
    if (name.str().empty()) {
      ctx.error(line_of(name), prefix, "cluster name must not be empty");
      continue;
    }
    Cluster c;
    c.name = std::string(name.str());
    c.failover = global;
    bool have_primary = false;
    for (auto&& [k, cv] : *ct) {
      std::string key = join_key(prefix, k.str());
      if (k.str() == "primary") {
        have_primary = true;
        load_node(ctx, cv, key, c.primary);
      } else if (k.str() == "standby") {
        c.standby.emplace();
        load_node(ctx, cv, key, *c.standby);
      } else if (k.str() == "failover") {
        if (const auto* ft = expect_table(ctx, cv, key))
          apply_table(ctx, *ft, key, failover_fields(), c.failover);
      } else {
        ctx.unknown_key(k, key, known);
      }
    }
    if (!have_primary) ctx.error(line_of(v), join_key(prefix, "primary"), "missing required key");
    clusters[c.name] = std::move(c);
  }
}

// [peers]: "1 = { host = \"/run/pgpivot1\", port = 6432 }", as PgBouncer's [peers] lines.
void load_peers(const Ctx& ctx, const toml::table& t, std::map<int, Node>& peers) {
  for (auto&& [id, v] : t) {
    std::string prefix = join_key("peers", id.str());
    const std::string text(id.str());  // strtol's `end` points into it: it must outlive the check
    char* end = nullptr;
    long n = std::strtol(text.c_str(), &end, 10);
    if (id.str().empty() || *end != '\0' || n < 1 || n > 16383) {
      ctx.error(line_of(id), prefix, "a peer is named by its peer_id, 1 to 16383");
      continue;
    }
    Node node;
    node.host = "";  // the Unix socket in unix_socket_dir, as PgBouncer
    node.port = 6432;
    load_node(ctx, v, prefix, node);
    peers[int(n)] = std::move(node);
  }
}

const std::vector<Field<Coordination>>& coordination_fields() {
  using C = Coordination;
  static const std::vector<Field<C>> f = {
      list_field("endpoints", &C::endpoints),
      string_field("instance_name", &C::instance_name),
      duration_field("lease_ttl", &C::lease_ttl, true),
      string_field("prefix", &C::prefix),
      duration_field("request_timeout", &C::request_timeout, true),
      string_field("tls_ca_file", &C::tls_ca_file),
      string_field("tls_cert_file", &C::tls_cert_file),
      string_field("tls_key_file", &C::tls_key_file),
  };
  return f;
}

void load_users(const Ctx& ctx, const toml::table& t, std::map<std::string, User>& users) {
  for (auto&& [name, v] : t) {
    std::string prefix = join_key("users", name.str());
    const toml::table* ut = expect_table(ctx, v, prefix);
    if (!ut) continue;
    if (name.str().empty()) {
      ctx.error(line_of(name), prefix, "user name must not be empty");
      continue;
    }
    User u;
    u.name = std::string(name.str());
    apply_table(ctx, *ut, prefix, user_fields(), u);
    u.password_given = u.password.empty() && ut->contains("password");  // password = ""
    users[u.name] = std::move(u);
  }
}

void load_databases(const Ctx& ctx, const toml::table& t,
                    const std::map<std::string, Cluster>& clusters,
                    std::map<std::string, Database>& databases) {
  std::vector<std::string> cluster_names;
  for (const auto& [n, c] : clusters) cluster_names.push_back(n);
  for (auto&& [name, v] : t) {
    std::string prefix = join_key("databases", name.str());
    const toml::table* dt = expect_table(ctx, v, prefix);
    if (!dt) continue;
    if (name.str().empty()) {
      ctx.error(line_of(name), prefix, "database name must not be empty");
      continue;
    }
    Database d;
    d.name = std::string(name.str());
    apply_table(ctx, *dt, prefix, database_fields(), d);
    std::string ckey = join_key(prefix, "cluster");
    if (const toml::node* cn = dt->get("cluster")) {
      if (cn->is_string() && !clusters.count(d.cluster)) {
        std::string msg = "unknown cluster \"" + d.cluster + "\"";
        if (std::string s = suggest(d.cluster, cluster_names); !s.empty())
          msg += "; did you mean " + s + "?";
        else if (cluster_names.empty())
          msg += "; no clusters are defined";
        ctx.error(line_of(*cn), ckey, std::move(msg));
      }
    } else if (clusters.size() == 1) {
      d.cluster = clusters.begin()->first;
    } else {
      ctx.error(line_of(v), ckey,
                clusters.empty() ? "missing required key; no clusters are defined"
                                 : "missing required key (needed when there is more than one cluster)");
    }
    if (d.dbname.empty() && d.name != "*") d.dbname = d.name;
    databases[d.name] = std::move(d);
  }
}

void load_document(const toml::table& root, const std::string& path, LoadResult& r) {
  Ctx ctx{path, &r.errors};
  Config& cfg = r.config;
  static const std::vector<std::string> sections = {"pooler", "failover", "users", "clusters",
                                                    "databases", "peers", "coordination"};
  const toml::table* pooler = nullptr;
  const toml::table* failover = nullptr;
  const toml::table* users = nullptr;
  const toml::table* clusters = nullptr;
  const toml::table* databases = nullptr;
  const toml::table* peers = nullptr;
  const toml::table* coordination = nullptr;
  for (auto&& [k, v] : root) {
    std::string key(k.str());
    const toml::table** slot = key == "pooler"      ? &pooler
                               : key == "failover"  ? &failover
                               : key == "users"     ? &users
                               : key == "clusters"  ? &clusters
                               : key == "databases" ? &databases
                               : key == "peers"     ? &peers
                               : key == "coordination" ? &coordination
                                                    : nullptr;
    if (slot) {
      *slot = expect_table(ctx, v, key);
      continue;
    }
    // A setting written outside its table is a likely mistake: point at the right one.
    auto in = [&](const auto& fields) {
      return std::any_of(fields.begin(), fields.end(),
                         [&](const auto& f) { return f.name == key; });
    };
    if (in(pooler_fields()))
      ctx.error(line_of(k), key, "unknown key; did you mean pooler." + key + "? (put it under [pooler])");
    else if (in(failover_fields()))
      ctx.error(line_of(k), key,
                "unknown key; did you mean failover." + key + "? (put it under [failover])");
    else
      ctx.unknown_key(k, key, sections);
  }

  if (pooler) apply_table(ctx, *pooler, "pooler", pooler_fields(), cfg.pooler);
  Failover global;
  if (failover) apply_table(ctx, *failover, "failover", failover_fields(), global);
  if (users) load_users(ctx, *users, cfg.users);
  if (clusters) load_clusters(ctx, *clusters, global, cfg.clusters);
  if (databases) load_databases(ctx, *databases, cfg.clusters, cfg.databases);
  if (peers) load_peers(ctx, *peers, cfg.peers);
  if (coordination) {
    apply_table(ctx, *coordination, "coordination", coordination_fields(), cfg.coordination);
    for (const auto& e : cfg.coordination.endpoints)
      if (e.rfind("http://", 0) != 0 && e.rfind("https://", 0) != 0)
        ctx.error(line_of(*coordination->get("endpoints")), "coordination.endpoints",
                  "\"" + e + "\" is not an http:// or https:// URL of etcd's client port");
    if (cfg.coordination.prefix.empty() || cfg.coordination.prefix[0] != '/')
      ctx.error(line_of(*coordination), "coordination.prefix", "must start with /");
    if (cfg.coordination.request_timeout >= cfg.coordination.lease_ttl)
      ctx.error(line_of(*coordination), "coordination.request_timeout", "must be shorter than lease_ttl");
  }
  for (auto& [name, c] : cfg.clusters) {
    if (c.failover.decider != "patroni") continue;
    const toml::node* cn = clusters ? clusters->get(name) : nullptr;
    int line = cn ? line_of(*cn) : 0;
    if (!c.standby)
      ctx.error(line, join_key(join_key("clusters", name), "standby"), "decider = \"patroni\" needs a standby");
    else if (c.primary.restapi.empty() || c.standby->restapi.empty())
      ctx.error(line, join_key(join_key("clusters", name), c.primary.restapi.empty() ? "primary" : "standby"),
                "decider = \"patroni\" needs restapi = \"http://host:8008\" on both nodes");
  }

  // Settings that are stored but have no effect: one warning each, at its line.
  auto warn = [&](const toml::node& n, std::string key, std::string message) {
    r.warnings.push_back(Error{path, line_of(n), std::move(key), std::move(message)});
  };
  if (pooler) {
    for (const auto& k : settings()) {
      const toml::node* n = k.stored_only() ? pooler->get(k.name) : nullptr;
      if (!n) continue;
      if (std::string why = inert_reason(k, cfg.pooler); !why.empty())
        warn(*n, join_key("pooler", k.name), std::move(why));
    }
  }
  std::stable_sort(r.warnings.begin(), r.warnings.end(),
                   [](const Error& a, const Error& b) { return a.line < b.line; });

  for (auto& [setting, why] : pooler_problems(cfg.pooler)) {
    const toml::node* n = pooler ? pooler->get(setting) : nullptr;
    ctx.error(n ? line_of(*n) : 0, "pooler." + setting, std::move(why));
  }

  // auth_file: relative to the config file's directory; [users] entries take precedence.
  std::optional<std::string> userlist;
  std::string userlist_path;
  if (!cfg.pooler.auth_file.empty()) {
    std::filesystem::path p(cfg.pooler.auth_file);
    if (p.is_relative()) p = std::filesystem::path(path).parent_path() / p;
    // Absolute, so that a reload from another directory or a converted copy of the
    // config still finds the file.
    std::error_code ec;
    auto abs = std::filesystem::absolute(p, ec);
    userlist_path = (ec ? p : abs).lexically_normal().string();
    cfg.pooler.auth_file = userlist_path;
    std::string why;
    userlist = read_file(userlist_path, why);
    if (!userlist) {
      const toml::node* n = pooler ? pooler->get("auth_file") : nullptr;
      ctx.error(n ? line_of(*n) : 0, "pooler.auth_file",
                "cannot read auth file " + userlist_path + ": " + why);
    }
  }
  // toml++ tables iterate in key order, not file order: report by line.
  std::stable_sort(r.errors.begin(), r.errors.end(),
                   [](const Error& a, const Error& b) { return a.line < b.line; });
  if (userlist) parse_userlist(*userlist, userlist_path, cfg.users, r.errors);
  load_hba_files(cfg, "pooler", r.errors, r.warnings);
}

}  // namespace

// ---------------------------------------------------------------- public API

std::string Error::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

LoadResult load_toml_string(std::string_view text, const std::string& path) {
  LoadResult r;
  try {
    r.config.path = path;
    toml::table root;
    try {
      root = toml::parse(text, std::string_view(path));
    } catch (const toml::parse_error& err) {
      r.errors.push_back(Error{path, static_cast<int>(err.source().begin.line), "",
                               "TOML syntax error: " + std::string(err.description())});
      return r;
    }
    load_document(root, path, r);
  } catch (const std::exception& e) {
    r.errors.push_back(Error{path, 0, "", std::string("internal error: ") + e.what()});
  } catch (...) {
    r.errors.push_back(Error{path, 0, "", "internal error"});
  }
  return r;
}

LoadResult load_toml_file(const std::string& path) {
  try {
    std::string why;
    auto text = read_file(path, why);
    if (!text) {
      LoadResult r;
      r.config.path = path;
      r.errors.push_back(Error{path, 0, "", "cannot read config file: " + why});
      return r;
    }
    return load_toml_string(*text, path);
  } catch (...) {
    LoadResult r;
    r.config.path = path;
    r.errors.push_back(Error{path, 0, "", "internal error"});
    return r;
  }
}

LoadResult load_file(const std::string& path) {
  if (ends_with_ci(path, ".ini")) return load_ini_file(path);
  return load_toml_file(path);
}

}  // namespace pgpivot::config
