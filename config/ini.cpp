// pgbouncer.ini loading: the same Config the TOML loader builds, from an unmodified
// PgBouncer config. Settings pgpivot does not implement are warnings (one per key, with
// file and line), anything unknown is an error with a "did you mean", and every problem
// is collected rather than stopping at the first.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <type_traits>
#include <variant>

#include "config/internal.hpp"
#include "config/load.hpp"

namespace pgpivot::config {

namespace {

using namespace detail;

constexpr int kMaxIncludeDepth = 10;  // as PgBouncer

// Settings of the TOML config that have no pgbouncer.ini counterpart.
bool is_toml_only(std::string_view key) {
  for (const char* k : {"health_check_interval", "health_check_timeout", "failure_threshold",
                        "role_query", "auto_failover", "promote_command", "failover_timeout",
                        "on_failover_command", "auto_failback", "max_lag_on_failover", "position_query",
                        "lag_query", "witness_query", "witness_options", "promote_timeout",
                        "fence_command", "state_file", "decider"})
    if (key == k) return true;
  return false;
}

const std::vector<std::string>& pgbouncer_key_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& k : settings()) v.emplace_back(k.name);
    return v;
  }();
  return names;
}

const std::vector<std::string> kDatabaseKeys = {
    "dbname",        "host",           "port",           "user",
    "password",      "auth_user",      "auth_query",     "auth_dbname",
    "pool_size",     "min_pool_size",  "reserve_pool",   "reserve_pool_size",
    "connect_query", "pool_mode",      "max_db_connections", "max_db_client_connections",
    "server_lifetime", "query_wait_timeout", "load_balance_hosts", "application_name",
    "client_encoding", "datestyle",    "timezone"};
const std::vector<std::string> kUserKeys = {"pool_mode", "max_user_connections", "max_user_client_connections",
                                            "pool_size", "reserve_pool_size", "query_timeout",
                                            "query_wait_timeout", "idle_transaction_timeout",
                                            "transaction_timeout", "client_idle_timeout"};
const std::vector<std::string> kSections = {"pgbouncer", "databases", "users", "peers"};

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

struct Pair {
  std::string key;
  std::string value;
};

// A libpq-style `key=value key='quoted value'` string. In quotes, '' and \' are a quote
// and \\ is a backslash; other backslashes are literal (as in PgBouncer).
bool parse_pairs(std::string_view s, std::vector<Pair>& out, std::string& why) {
  size_t i = 0;
  const size_t n = s.size();
  auto skip_ws = [&] {
    while (i < n && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  for (;;) {
    skip_ws();
    if (i >= n) return true;
    size_t start = i;
    while (i < n && s[i] != '=' && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    Pair p;
    p.key = std::string(s.substr(start, i - start));
    if (p.key.empty()) {
      why = "expected key=value, found \"=\" without a key";
      return false;
    }
    skip_ws();
    if (i >= n || s[i] != '=') {
      why = "expected '=' after \"" + p.key + "\"";
      return false;
    }
    ++i;
    skip_ws();
    if (i < n && s[i] == '\'') {
      ++i;
      for (;;) {
        if (i >= n) {
          why = "unterminated quoted value for \"" + p.key + "\"";
          return false;
        }
        char c = s[i];
        if (c == '\'') {
          if (i + 1 < n && s[i + 1] == '\'') {
            p.value += '\'';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (c == '\\' && i + 1 < n && (s[i + 1] == '\'' || s[i + 1] == '\\')) {
          p.value += s[i + 1];
          i += 2;
          continue;
        }
        p.value += c;
        ++i;
      }
      if (i < n && !std::isspace(static_cast<unsigned char>(s[i]))) {
        why = "unexpected text after the quoted value of \"" + p.key + "\"";
        return false;
      }
    } else {
      start = i;
      while (i < n && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      p.value = std::string(s.substr(start, i - start));
    }
    out.push_back(std::move(p));
  }
}

std::string cluster_name(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

// ---------------------------------------------------------------- the loader

enum class Section { None, PgBouncer, Databases, Users, Peers, Unknown };

struct Where {
  std::string file;
  int line = 0;
  long seq = 0;  // order of reading, across included files
};

struct PendingDb {
  Database db;
  std::string host;  // "" = the Unix socket in unix_socket_dir
  int port = 5432;
  Where where;
};

class Loader {
 public:
  explicit Loader(LoadResult& r) : r_(r), cfg_(r.config) {
    cfg_.pooler.listen_addr = "";  // PgBouncer listens on the Unix socket only by default
  }

  void parse(std::string_view text, const std::string& file, int depth);
  void finish();

 private:
  void error(const Where& w, std::string key, std::string message) {
    if (in_database_) {
      database_skipped_ = true;
      message += "; the database is skipped";
      warnings_.emplace_back(w.seq, Error{w.file, w.line, std::move(key), std::move(message)});
      return;
    }
    errors_.emplace_back(w.seq, Error{w.file, w.line, std::move(key), std::move(message)});
  }
  void warning(const Where& w, std::string key, std::string message) {
    warnings_.emplace_back(w.seq, Error{w.file, w.line, std::move(key), std::move(message)});
  }

  void section_header(std::string_view line, const Where& w);
  void include(std::string_view arg, const Where& w, int depth);
  void pgbouncer_setting(const std::string& key, std::string_view value, const Where& w);
  void database(const std::string& name, std::string_view value, const Where& w);
  void database_line(const std::string& name, std::string_view value, const Where& w);
  // A duration of a [databases] or [users] line (nullopt when invalid, reported).
  std::optional<double> seconds(std::string_view value, const Where& w, const std::string& key);
  void user(const std::string& name, std::string_view value, const Where& w);
  void peer(const std::string& id, std::string_view value, const Where& w);
  // Reads an integer setting; reports and returns nullopt when invalid or out of range.
  std::optional<long long> integer(std::string_view value, const Where& w, const std::string& key,
                                   long long lo, long long hi);

  LoadResult& r_;
  Config& cfg_;
  Section section_ = Section::None;
  long seq_ = 0;
  std::vector<std::pair<long, Error>> errors_, warnings_;
  std::map<std::string, Where> set_at_;  // [pgbouncer] key -> where last set
  // Reading a [databases] line: its problems are warnings and the line is skipped,
  // as PgBouncer logs and skips a database it cannot use.
  bool in_database_ = false;
  bool database_skipped_ = false;
  std::map<std::string, PendingDb> dbs_;
  std::map<std::string, Where> users_at_;
  std::string auth_file_base_;           // directory of the file that set auth_file
};

namespace {
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    if (c < 0x80) {
      n = 0;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; k++) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}
}  // namespace

void Loader::parse(std::string_view text, const std::string& file, int depth) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
  int line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(start, nl - start);
    start = nl + 1;
    ++line_no;
    Where w{file, line_no, ++seq_};
    size_t p = 0;
    while (p < line.size() && is_blank(line[p])) ++p;
    line.remove_prefix(p);
    while (!line.empty() && is_blank(line.back())) line.remove_suffix(1);
    if (line.empty() || line[0] == ';' || line[0] == '#') continue;
    if (!valid_utf8(line)) {
      // Names and values end up in PostgreSQL startup packets and in TOML, both UTF-8.
      error(w, "", "line is not valid UTF-8");
      continue;
    }

    if (line[0] == '%') {
      size_t end = 0;
      while (end < line.size() && !is_blank(line[end])) ++end;
      std::string directive(line.substr(0, end));
      if (lower(directive) == "%include")
        include(trim(line.substr(end)), w, depth);
      else
        error(w, directive, "unknown directive " + directive + " (only %include is known)");
      continue;
    }
    if (line[0] == '[') {
      section_header(line, w);
      continue;
    }

    // key = value; the key may be "double-quoted" ("" is a quote), as newer PgBouncers allow.
    std::string key;
    size_t i = 0;
    if (line[0] == '"') {
      bool closed = false;
      for (i = 1; i < line.size(); ++i) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            key += '"';
            ++i;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        key += line[i];
      }
      if (!closed) {
        error(w, "", "unterminated quoted name");
        continue;
      }
    } else {
      while (i < line.size() && line[i] != '=' && !is_blank(line[i])) ++i;
      key = std::string(line.substr(0, i));
    }
    while (i < line.size() && is_blank(line[i])) ++i;
    if (key.empty() || i >= line.size() || line[i] != '=') {
      error(w, key, key.empty() ? "expected key = value" : "expected '=' after \"" + key + "\"");
      continue;
    }
    std::string_view value = line.substr(i + 1);
    while (!value.empty() && is_blank(value.front())) value.remove_prefix(1);

    switch (section_) {
      case Section::None:
        error(w, key, "setting outside of any section; put it under [pgbouncer], [databases] or [users]");
        break;
      case Section::Unknown: break;  // the section header was reported
      case Section::PgBouncer: pgbouncer_setting(key, value, w); break;
      case Section::Databases: database(key, value, w); break;
      case Section::Users: user(key, value, w); break;
      case Section::Peers: peer(key, value, w); break;
    }
  }
}

void Loader::section_header(std::string_view line, const Where& w) {
  size_t close = line.find(']');
  if (close == std::string_view::npos) {
    error(w, "", "missing ']' in section header");
    section_ = Section::Unknown;
    return;
  }
  std::string_view rest = line.substr(close + 1);
  while (!rest.empty() && is_blank(rest.front())) rest.remove_prefix(1);
  std::string name = trim(line.substr(1, close - 1));
  if (!rest.empty() && rest[0] != ';' && rest[0] != '#') {
    error(w, name, "unexpected text after the section header");
  }
  std::string l = lower(name);
  if (l == "pgbouncer") {
    section_ = Section::PgBouncer;
  } else if (l == "databases") {
    section_ = Section::Databases;
  } else if (l == "users") {
    section_ = Section::Users;
  } else if (l == "peers") {
    section_ = Section::Peers;
  } else {
    section_ = Section::Unknown;
    std::string msg = "unknown section [" + name + "]";
    if (l == "pooler" || l == "clusters" || l == "failover")
      msg += "; [" + l + "] belongs in the TOML config, not in a pgbouncer.ini";
    else if (std::string s = suggest(name, kSections); !s.empty())
      msg += "; did you mean [" + s + "]?";
    else
      msg += "; expected [pgbouncer], [databases], [users] or [peers]";
    error(w, name, std::move(msg));
  }
}

void Loader::include(std::string_view arg, const Where& w, int depth) {
  if (arg.empty()) {
    error(w, "%include", "missing file name");
    return;
  }
  if (depth >= kMaxIncludeDepth) {
    error(w, "%include",
          "includes nested more than " + std::to_string(kMaxIncludeDepth) +
              " deep (does a file include itself?)");
    return;
  }
  std::filesystem::path p{std::string(arg)};
  if (p.is_relative()) p = std::filesystem::path(w.file).parent_path() / p;
  std::string path = p.lexically_normal().string();
  std::string why;
  auto text = read_file(path, why);
  if (!text) {
    error(w, "%include", "cannot read included file " + path + ": " + why);
    return;
  }
  parse(*text, path, depth + 1);
}

std::optional<double> Loader::seconds(std::string_view value, const Where& w, const std::string& key) {
  auto v = parse_seconds(value);
  if (!v) {
    error(w, key, "invalid number of seconds \"" + std::string(value) + "\"" + comment_hint(value));
    return std::nullopt;
  }
  if (std::string problem = duration_problem(*v, false); !problem.empty()) {
    error(w, key, std::move(problem));
    return std::nullopt;
  }
  return v;
}

std::optional<long long> Loader::integer(std::string_view value, const Where& w,
                                         const std::string& key, long long lo, long long hi) {
  auto v = parse_integer(value);
  if (!v) {
    error(w, key, "invalid integer \"" + std::string(value) + "\"" + comment_hint(value));
    return std::nullopt;
  }
  if (std::string problem = int_problem(*v, lo, hi); !problem.empty()) {
    error(w, key, std::move(problem));
    return std::nullopt;
  }
  return v;
}

void Loader::pgbouncer_setting(const std::string& raw_key, std::string_view value, const Where& w) {
  const std::string name = lower(raw_key);
  const std::string key = "pgbouncer." + name;
  const Setting* it = find_setting(name);
  if (!it) {
    std::string msg = "unknown key";
    if (is_toml_only(name))
      msg += "; " + name + " is a pgpivot setting of the TOML config ([failover]), not of pgbouncer.ini";
    else if (std::string s = suggest(name, pgbouncer_key_names()); !s.empty())
      msg += "; did you mean " + s + "?";
    error(w, key, std::move(msg));
    return;
  }
  const Setting& k = *it;
  if (auto prev = set_at_.find(name); prev != set_at_.end() && prev->second.file == w.file)
    warning(w, key, name + " is set again; this replaces the value on line " +
                        std::to_string(prev->second.line));
  set_at_[name] = w;

  if (std::string why = set_from_text(cfg_.pooler, k, value); !why.empty()) {
    error(w, key, std::move(why));
    return;
  }
  if (name == "auth_file") auth_file_base_ = std::filesystem::path(w.file).parent_path().string();
}

void Loader::database(const std::string& name, std::string_view value, const Where& w) {
  in_database_ = true;
  database_skipped_ = false;
  database_line(name, value, w);
  in_database_ = false;
}

void Loader::database_line(const std::string& name, std::string_view value, const Where& w) {
  const std::string prefix = "databases." + name;
  if (name == "pgbouncer" || name == "pgpivot") {
    error(w, prefix, "the database name " + name + " is reserved for the admin console");
    return;
  }
  std::vector<Pair> pairs;
  std::string why;
  if (!parse_pairs(value, pairs, why)) {
    error(w, prefix, "bad connection string: " + why);
    return;
  }
  PendingDb pd;
  pd.where = w;
  Database& d = pd.db;
  d.name = name;
  bool ok = true;
  auto count = [&](const std::string& key, std::string_view v, int& out) {
    if (auto x = integer(v, w, key, 0, INT_MAX))
      out = static_cast<int>(*x);
    else
      ok = false;
  };
  for (const Pair& p : pairs) {
    const std::string k = lower(p.key);
    const std::string key = prefix + "." + k;
    if (k == "dbname") {
      d.dbname = p.value;
    } else if (k == "host") {
      if (p.value.find(',') != std::string::npos) {
        // A host list: each connection takes one (load_balance_hosts), as PgBouncer.
        std::string list;
        std::string_view rest = p.value;
        bool empty_item = false;
        for (;;) {
          std::size_t comma = rest.find(',');
          std::string item = trim(rest.substr(0, comma));
          empty_item = empty_item || item.empty() || item[0] == '@';
          list += (list.empty() ? "" : ",") + item;
          if (comma == std::string_view::npos) break;
          rest.remove_prefix(comma + 1);
        }
        if (empty_item) {
          error(w, key, "invalid host list \"" + p.value + "\": an empty or @ host");
          ok = false;
        } else {
          pd.host = list;
        }
      } else if (!p.value.empty() && p.value[0] == '@') {
        error(w, key, "abstract-namespace Unix sockets (@...) are not supported by pgpivot");
        ok = false;
      } else {
        pd.host = p.value;
      }
    } else if (k == "port") {
      if (auto x = integer(p.value, w, key, 1, 65535))
        pd.port = static_cast<int>(*x);
      else
        ok = false;
    } else if (k == "user") {
      d.user = p.value;
    } else if (k == "password") {
      if (std::string problem = check_password(p.value); !problem.empty()) {
        error(w, key, problem);
        ok = false;
      } else {
        d.password = p.value;
      }
    } else if (k == "auth_user") {
      d.auth_user = p.value;
    } else if (k == "auth_query") {
      d.auth_query = p.value;
    } else if (k == "auth_dbname") {
      d.auth_dbname = p.value;
    } else if (k == "max_db_client_connections") {
      count(key, p.value, d.max_db_client_connections);
    } else if (k == "server_lifetime" || k == "query_wait_timeout") {
      if (auto x = seconds(p.value, w, key))
        (k == "server_lifetime" ? d.server_lifetime : d.query_wait_timeout) = *x;
      else
        ok = false;
    } else if (k == "load_balance_hosts") {
      std::string v = lower(p.value);
      if (v != "round-robin" && v != "disable") {
        error(w, key, "invalid value \"" + p.value + "\"; expected one of: round-robin, disable");
        ok = false;
      } else {
        d.load_balance_hosts = v;
      }
    } else if (k == "pool_size") {
      count(key, p.value, d.pool_size);
    } else if (k == "min_pool_size") {
      count(key, p.value, d.min_pool_size);
    } else if (k == "reserve_pool" || k == "reserve_pool_size") {
      count(key, p.value, d.reserve_pool_size);
    } else if (k == "max_db_connections") {
      count(key, p.value, d.max_db_connections);
    } else if (k == "pool_mode") {
      if (auto m = parse_pool_mode(p.value)) {
        d.pool_mode = *m;
      } else {
        error(w, key, "invalid value \"" + p.value + "\"; expected one of: session, transaction, statement");
        ok = false;
      }
    } else if (k == "connect_query") {
      d.connect_query = p.value;
    } else if (k == "application_name") {
      d.application_name = p.value;
    } else if (k == "client_encoding" || k == "datestyle" || k == "timezone") {
      d.params[k] = p.value;
    } else {
      std::string msg = "unknown connection parameter";
      if (std::string s = suggest(k, kDatabaseKeys); !s.empty()) msg += "; did you mean " + s + "?";
      error(w, key, std::move(msg));
      ok = false;
    }
  }
  if (!ok || database_skipped_) return;
  if (d.dbname.empty() && d.name != "*") d.dbname = d.name;
  if (auto prev = dbs_.find(name); prev != dbs_.end()) {
    const Where& pw = prev->second.where;
    warning(w, prefix, "database " + name + " is defined again; this replaces the definition at " +
                           pw.file + ":" + std::to_string(pw.line));
  }
  dbs_[name] = std::move(pd);
}

// A [peers] line, PgBouncer's: "ID = host=... port=... pool_size=...".
void Loader::peer(const std::string& id, std::string_view value, const Where& w) {
  const std::string prefix = "peers." + id;
  auto n = integer(id, w, prefix, 1, 16383);
  if (!n) return;
  std::vector<Pair> pairs;
  std::string why;
  if (!parse_pairs(value, pairs, why)) {
    error(w, prefix, "bad connection string: " + why);
    return;
  }
  Node node;
  node.host = "";  // the Unix socket in unix_socket_dir, as PgBouncer
  node.port = 6432;
  for (const Pair& p : pairs) {
    const std::string k = lower(p.key);
    if (k == "host") {
      node.host = p.value;
    } else if (k == "port") {
      if (auto x = integer(p.value, w, prefix + ".port", 1, 65535)) node.port = static_cast<int>(*x);
    } else if (k == "pool_size") {
      // PgBouncer keeps a pool of connections for forwarded cancels; pgpivot
      // opens one per cancel, as a client's cancel does.
      auto x = integer(p.value, w, prefix + ".pool_size", 0, INT_MAX);
      if (!x) return;
      node.options["pool_size"] = std::to_string(*x);  // shown by SHOW PEERS
    } else {
      error(w, prefix + "." + k, "unknown peer parameter (expected host, port, pool_size)");
      return;
    }
  }
  cfg_.peers[static_cast<int>(*n)] = std::move(node);
}

void Loader::user(const std::string& name, std::string_view value, const Where& w) {
  const std::string prefix = "users." + name;
  std::vector<Pair> pairs;
  std::string why;
  if (!parse_pairs(value, pairs, why)) {
    error(w, prefix, "bad user settings: " + why);
    return;
  }
  User u;
  u.name = name;
  bool ok = true;
  for (const Pair& p : pairs) {
    const std::string k = lower(p.key);
    const std::string key = prefix + "." + k;
    if (k == "pool_mode") {
      if (auto m = parse_pool_mode(p.value)) {
        u.pool_mode = *m;
      } else {
        error(w, key, "invalid value \"" + p.value + "\"; expected one of: session, transaction, statement");
        ok = false;
      }
      continue;
    }
    double* timeout = k == "query_timeout"              ? &u.query_timeout
                      : k == "query_wait_timeout"       ? &u.query_wait_timeout
                      : k == "idle_transaction_timeout" ? &u.idle_transaction_timeout
                      : k == "transaction_timeout"      ? &u.transaction_timeout
                      : k == "client_idle_timeout"      ? &u.client_idle_timeout
                                                        : nullptr;
    if (timeout) {
      if (auto x = seconds(p.value, w, key))
        *timeout = *x;
      else
        ok = false;
      continue;
    }
    int* target = k == "max_user_connections"          ? &u.max_user_connections
                  : k == "max_user_client_connections" ? &u.max_user_client_connections
                  : k == "pool_size"                   ? &u.pool_size
                  : k == "reserve_pool_size"           ? &u.reserve_pool_size
                                                       : nullptr;
    if (!target) {
      std::string msg = "unknown user setting";
      if (k == "password")
        msg += "; passwords belong in auth_file";
      else if (std::string s = suggest(k, kUserKeys); !s.empty())
        msg += "; did you mean " + s + "?";
      error(w, key, std::move(msg));
      ok = false;
    } else if (auto x = integer(p.value, w, key, 0, INT_MAX)) {
      *target = static_cast<int>(*x);
    } else {
      ok = false;
    }
  }
  if (!ok) return;
  if (auto prev = users_at_.find(name); prev != users_at_.end()) {
    warning(w, prefix, "user " + name + " is defined again; this replaces the definition at " +
                           prev->second.file + ":" + std::to_string(prev->second.line));
  }
  users_at_[name] = w;
  cfg_.users[name] = std::move(u);
}

void Loader::finish() {
  Pooler& p = cfg_.pooler;

  // Databases: one cluster per distinct server address.
  for (auto& [name, pd] : dbs_) {
    Database d = std::move(pd.db);
    std::string host = pd.host.empty() ? p.unix_socket_dir : pd.host;
    if (host.empty()) {
      error(pd.where, "databases." + name + ".host",
            "no host given, and unix_socket_dir is empty, so there is no Unix socket to "
            "connect to; set host=");
      continue;
    }
    d.cluster = cluster_name(host, pd.port);
    auto [it, fresh] = cfg_.clusters.try_emplace(d.cluster);
    if (fresh) {
      it->second.name = d.cluster;
      it->second.primary.host = host;
      it->second.primary.port = pd.port;
    }
    cfg_.databases[name] = std::move(d);
  }

  // Stored settings whose value pgpivot cannot honour.
  for (const auto& k : settings()) {
    if (!k.stored_only()) continue;
    auto at = set_at_.find(k.name);
    if (at == set_at_.end()) continue;
    if (std::string why = inert_reason(k, p); !why.empty())
      warning(at->second, std::string("pgbouncer.") + k.name, std::move(why));
  }

  for (auto& [setting, why] : pooler_problems(p)) {
    // At the line that set it (unix_socket_dir for "nothing to listen on": its default is what gives up).
    std::string at_key = setting == "listen_addr" ? "unix_socket_dir" : setting;
    auto at = set_at_.find(at_key);
    error(at != set_at_.end() ? at->second : Where{r_.config.path, 0, 0}, "pgbouncer." + at_key, std::move(why));
  }

  auto by_seq = [](const auto& a, const auto& b) { return a.first < b.first; };
  std::stable_sort(errors_.begin(), errors_.end(), by_seq);
  std::stable_sort(warnings_.begin(), warnings_.end(), by_seq);
  for (auto& [s, e] : errors_) r_.errors.push_back(std::move(e));
  for (auto& [s, e] : warnings_) r_.warnings.push_back(std::move(e));

  // auth_file: relative to the file that set it; users from it join [users].
  if (!p.auth_file.empty()) {
    std::filesystem::path path(p.auth_file);
    if (path.is_relative()) path = std::filesystem::path(auth_file_base_) / path;
    // Absolute, so that a converted TOML saved anywhere still finds the file.
    std::error_code ec;
    auto abs = std::filesystem::absolute(path, ec);
    p.auth_file = (ec ? path : abs).lexically_normal().string();
    std::string why;
    auto text = read_file(p.auth_file, why);
    if (!text) {
      const Where& w = set_at_["auth_file"];
      r_.errors.push_back(Error{w.file, w.line, "pgbouncer.auth_file",
                                "cannot read auth file " + p.auth_file + ": " + why});
    } else {
      parse_userlist(*text, p.auth_file, cfg_.users, r_.errors);
    }
  }
  load_hba_files(cfg_, "pgbouncer", r_.errors, r_.warnings);
}

}  // namespace

LoadResult load_ini_string(std::string_view text, const std::string& path) {
  LoadResult r;
  r.config.path = path;
  try {
    Loader loader(r);
    loader.parse(text, path, 0);
    loader.finish();
  } catch (const std::exception& e) {
    r.errors.push_back(Error{path, 0, "", std::string("internal error: ") + e.what()});
  } catch (...) {
    r.errors.push_back(Error{path, 0, "", "internal error"});
  }
  return r;
}

LoadResult load_ini_file(const std::string& path) {
  try {
    std::string why;
    auto text = read_file(path, why);
    if (!text) {
      LoadResult r;
      r.config.path = path;
      r.errors.push_back(Error{path, 0, "", "cannot read config file: " + why});
      return r;
    }
    return load_ini_string(*text, path);
  } catch (...) {
    LoadResult r;
    r.config.path = path;
    r.errors.push_back(Error{path, 0, "", "internal error"});
    return r;
  }
}

}  // namespace pgpivot::config
