// The [pooler] settings table and the one text parser for a setting's value
// (pgbouncer.ini and the console's SET); see settings.hpp.
#include "config/settings.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <type_traits>
#include <variant>

#include "config/internal.hpp"

namespace pgpivot::config {

namespace detail {

// A hint for values that carry a trailing comment, which PgBouncer does not strip either.
std::string comment_hint(std::string_view v) {
  if (v.find(" ;") != std::string_view::npos || v.find(" #") != std::string_view::npos ||
      v.find("\t;") != std::string_view::npos || v.find("\t#") != std::string_view::npos)
    return " (comments must be on a line of their own)";
  return {};
}

// ---------------------------------------------------------------- value parsing

// An integer as PgBouncer reads one (strtol base 0: 10, 0x1F, 017).
std::optional<long long> parse_integer(std::string_view text) {
  std::string s = trim(text);
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_seconds(std::string_view text) {
  std::string s = trim(text);
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (b != e && *b == '+') ++b;
  if (b == e) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p != e) return std::nullopt;
  return v;
}

// 0/1 (any integer, as PgBouncer), yes/no, on/off, true/false.
std::optional<bool> parse_boolean(std::string_view text) {
  std::string l = lower(trim(text));
  if (l == "yes" || l == "on" || l == "true") return true;
  if (l == "no" || l == "off" || l == "false") return false;
  if (auto i = parse_integer(l)) return *i != 0;
  return std::nullopt;
}

std::vector<std::string> parse_list(std::string_view text) {
  std::vector<std::string> out;
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

}  // namespace detail

using namespace detail;

namespace {

// Why a stored-only setting has no effect ("" when pgpivot behaves that way anyway).
std::string inert_if(bool no_effect, const char* why) { return no_effect ? why : ""; }

Setting key(const char* name, PoolerMember m, Change change = Change::Online) {
  Setting s{name, m};
  s.change = change;
  return s;
}
Setting int_key(const char* name, PoolerMember m, long long lo, long long hi = INT_MAX,
                Change change = Change::Online) {
  Setting s = key(name, m, change);
  s.lo = lo;
  s.hi = hi;
  return s;
}
Setting inert_key(Setting s, std::string (*inert)(const Pooler&)) {
  s.inert = inert;
  return s;
}
// A PgBouncer key pgpivot stores without acting on it: `missing` says what is not done.
Setting stored(Setting s, const char* missing) {
  s.unsupported = missing;
  return s;
}

constexpr Change kRestart = Change::Restart;
constexpr Change kReload = Change::Reload;

}  // namespace

const std::vector<Setting>& settings() {
  using P = Pooler;
  static const std::vector<Setting> table = [] {
    std::vector<Setting> k = {
        key("listen_addr", &P::listen_addr, kRestart),
        int_key("listen_port", &P::listen_port, 1, 65535, kRestart),
        key("unix_socket_dir", &P::unix_socket_dir, kRestart),
        key("pool_mode", &P::pool_mode),
        int_key("default_pool_size", &P::default_pool_size, 0),
        int_key("min_pool_size", &P::min_pool_size, 0),
        int_key("reserve_pool_size", &P::reserve_pool_size, 0),
        key("reserve_pool_timeout", &P::reserve_pool_timeout),
        int_key("max_client_conn", &P::max_client_conn, 1),
        int_key("max_db_connections", &P::max_db_connections, 0),
        int_key("max_user_connections", &P::max_user_connections, 0),
        key("auth_type", &P::auth_type),
        key("auth_file", &P::auth_file, kReload),
        key("auth_hba_file", &P::auth_hba_file, kReload),
        key("auth_ident_file", &P::auth_ident_file, kReload),
        key("admin_users", &P::admin_users),
        key("stats_users", &P::stats_users),
        key("server_reset_query", &P::server_reset_query),
        key("server_reset_query_always", &P::server_reset_query_always),
        key("server_check_query", &P::server_check_query),
        key("server_check_delay", &P::server_check_delay),
        key("server_lifetime", &P::server_lifetime),
        key("server_idle_timeout", &P::server_idle_timeout),
        key("server_connect_timeout", &P::server_connect_timeout),
        key("server_login_retry", &P::server_login_retry),
        key("client_login_timeout", &P::client_login_timeout),
        key("query_timeout", &P::query_timeout),
        key("query_wait_timeout", &P::query_wait_timeout),
        key("idle_transaction_timeout", &P::idle_transaction_timeout),
        key("client_idle_timeout", &P::client_idle_timeout),
        key("ignore_startup_parameters", &P::ignore_startup_parameters),
        key("application_name_add_host", &P::application_name_add_host),
        key("log_connections", &P::log_connections),
        key("log_disconnections", &P::log_disconnections),
        key("stats_period", &P::stats_period),
        // PgBouncer takes any size (its tests use 75); pgpivot's buffers are never
        // smaller than kMinPktBuf, and says so.
        inert_key(int_key("pkt_buf", &P::pkt_buf, 1, kMaxPktBuf, kRestart), [](const P& p) {
          return inert_if(p.pkt_buf < kMinPktBuf, "pkt_buf below 1024 is raised to 1024 (a buffer holds at least "
                                                  "a startup packet); larger messages stream as before");
        }),
        int_key("max_packet_size", &P::max_packet_size, kMinMaxPacketSize, kMaxMaxPacketSize),
        key("logfile", &P::logfile, kReload),
        key("pidfile", &P::pidfile, kRestart),
        key("user", &P::user, kRestart),
        int_key("listen_backlog", &P::listen_backlog, 1, INT_MAX, kRestart),
        int_key("workers", &P::workers, 1, 64, kRestart),
        key("server_round_robin", &P::server_round_robin),
        key("tcp_keepalive", &P::tcp_keepalive),
        key("log_pooler_errors", &P::log_pooler_errors),
        key("log_stats", &P::log_stats),
        key("stats_listen", &P::stats_listen, kRestart),
        key("auth_user", &P::auth_user),
        key("auth_query", &P::auth_query),
        key("auth_dbname", &P::auth_dbname),
        // Stored only: the pooler does not act on these yet.
        inert_key(key("disable_pqexec", &P::disable_pqexec), [](const P& p) {
          return inert_if(p.disable_pqexec,
                          "disable_pqexec is not supported yet (simple queries stay allowed); ignored");
        }),
        int_key("max_prepared_statements", &P::max_prepared_statements, 0),
        key("client_tls_sslmode", &P::client_tls_sslmode),
        key("client_tls_key_file", &P::client_tls_key_file),
        key("client_tls_cert_file", &P::client_tls_cert_file),
        key("client_tls_ca_file", &P::client_tls_ca_file),
        key("client_tls_protocols", &P::client_tls_protocols),
        key("client_tls_ciphers", &P::client_tls_ciphers),
        key("server_tls_sslmode", &P::server_tls_sslmode),
        key("server_tls_ca_file", &P::server_tls_ca_file),
        key("server_tls_key_file", &P::server_tls_key_file),
        key("server_tls_cert_file", &P::server_tls_cert_file),
        key("server_tls_protocols", &P::server_tls_protocols),
        key("server_tls_ciphers", &P::server_tls_ciphers),
        inert_key(key("syslog", &P::syslog, kReload), [](const P& p) {
          return inert_if(p.syslog, "syslog is not supported yet (logs go to stderr and logfile); ignored");
        }),
        int_key("verbose", &P::verbose, 0),
        // PgBouncer 1.19-1.25 keys.
        int_key("max_db_client_connections", &P::max_db_client_connections, 0),
        int_key("max_user_client_connections", &P::max_user_client_connections, 0),
        int_key("scram_iterations", &P::scram_iterations, 1),
        key("so_reuseport", &P::so_reuseport, kRestart),
        int_key("tcp_keepcnt", &P::tcp_keepcnt, 0),
        int_key("tcp_keepidle", &P::tcp_keepidle, 0),
        int_key("tcp_keepintvl", &P::tcp_keepintvl, 0),
        int_key("tcp_user_timeout", &P::tcp_user_timeout, 0),
        int_key("tcp_socket_buffer", &P::tcp_socket_buffer, 0),
        stored(int_key("tcp_defer_accept", &P::tcp_defer_accept, 0), "TCP_DEFER_ACCEPT is not set"),
        key("track_extra_parameters", &P::track_extra_parameters, kRestart),
        int_key("peer_id", &P::peer_id, 0, 16383, kRestart),
        stored(key("auth_ldap_options", &P::auth_ldap_options), "LDAP authentication is not supported"),
        stored(key("unix_socket_mode", &P::unix_socket_mode, kRestart), "the Unix socket is always mode 0777"),
        stored(key("unix_socket_group", &P::unix_socket_group, kRestart),
               "the Unix socket keeps the group of the process"),
        stored(key("conffile", &P::conffile), "RELOAD re-reads the file pgpivot was started with"),
        stored(key("service_name", &P::service_name, kRestart), "Windows only"),
        stored(key("job_name", &P::job_name, kRestart), "Windows only"),
        stored(key("syslog_ident", &P::syslog_ident, kReload), "syslog is not supported yet"),
        stored(key("syslog_facility", &P::syslog_facility, kReload), "syslog is not supported yet"),
        key("server_fast_close", &P::server_fast_close),
        stored(key("autodb_idle_timeout", &P::autodb_idle_timeout), "pools of \"*\" databases are kept"),
        key("pool_idle_timeout", &P::pool_idle_timeout),
        stored(key("dns_max_ttl", &P::dns_max_ttl), "host names are resolved for each new server connection"),
        stored(key("dns_nxdomain_ttl", &P::dns_nxdomain_ttl),
               "host names are resolved for each new server connection"),
        stored(key("dns_zone_check_period", &P::dns_zone_check_period), "DNS zones are not watched"),
        stored(key("resolv_conf", &P::resolv_conf, kRestart), "the system resolver is used"),
        key("query_wait_notify", &P::query_wait_notify),
        key("login_notify_message", &P::login_notify_message),
        key("client_tls13_ciphers", &P::client_tls13_ciphers),
        key("server_tls13_ciphers", &P::server_tls13_ciphers),
        stored(key("client_tls_ecdhcurve", &P::client_tls_ecdhcurve), "OpenSSL's default groups are used"),
        stored(key("client_tls_dheparams", &P::client_tls_dheparams), "OpenSSL's default groups are used"),
        stored(key("cancel_wait_timeout", &P::cancel_wait_timeout),
               "cancel requests are sent at once and not queued"),
        key("transaction_timeout", &P::transaction_timeout),
        stored(key("suspend_timeout", &P::suspend_timeout), "SUSPEND waits for buffers without a timeout"),
        stored(int_key("sbuf_loopcnt", &P::sbuf_loopcnt, 0), "connections are served until they would block"),
    };
    for (auto& x : k) {
      if (std::string_view(x.name) == "stats_period") x.positive = true;
      if (std::string_view(x.name).ends_with("_sslmode")) x.sslmode = true;
    }
    return k;
  }();
  return table;
}

const Setting* find_setting(std::string_view name) {
  const std::string l = lower(name);
  for (const Setting& s : settings())
    if (l == s.name) return &s;
  return nullptr;
}

std::string set_from_text(Pooler& p, const Setting& s, std::string_view value) {
  const std::string text(value);
  const std::string name = s.name;
  return std::visit(
      [&](auto m) -> std::string {
        auto& field = p.*m;
        using T = std::remove_cvref_t<decltype(field)>;
        if constexpr (std::is_same_v<T, int> || std::is_same_v<T, long long>) {
          auto v = parse_integer(value);
          if (!v) return "invalid integer \"" + text + "\"" + comment_hint(value);
          if (std::string problem = int_problem(*v, s.lo, s.hi); !problem.empty()) return problem;
          field = static_cast<T>(*v);
        } else if constexpr (std::is_same_v<T, double>) {
          auto v = parse_seconds(value);
          if (!v) {
            std::string hint = comment_hint(value);
            if (hint.empty() && !text.empty() && std::isalpha(static_cast<unsigned char>(text.back())) &&
                std::isdigit(static_cast<unsigned char>(text.front())))
              hint = " (PgBouncer takes plain seconds; units are not accepted)";
            return "invalid number of seconds \"" + text + "\"" + hint;
          }
          if (std::string problem = duration_problem(*v, s.positive); !problem.empty()) return problem;
          field = *v;
        } else if constexpr (std::is_same_v<T, bool>) {
          auto v = parse_boolean(value);
          if (!v)
            return "invalid boolean \"" + text + "\"; expected 0/1, yes/no, on/off or true/false" +
                   comment_hint(value);
          field = *v;
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (s.sslmode) {
            if (!valid_sslmode(text)) return "invalid value \"" + text + "\"; expected one of: " + kSslModes;
            field = lower(text);
          } else if (name == "unix_socket_dir" && !text.empty() && text[0] == '@') {
            return "abstract-namespace Unix sockets (@...) are not supported by pgpivot";
          } else {
            field = text;
          }
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          field = parse_list(value);
        } else if constexpr (std::is_same_v<T, PoolMode>) {
          auto v = parse_pool_mode(trim(value));
          if (!v) return "invalid value \"" + text + "\"; expected one of: session, transaction, statement";
          field = *v;
        } else {
          std::string l = lower(trim(value));
          auto v = parse_auth_type(l);
          if (!v) {
            if (l == "any" || l == "pam") return "auth_type " + l + " is not supported by pgpivot";
            return "invalid value \"" + text + "\"; expected one of: " + kAuthTypes;
          }
          field = *v;
        }
        return {};
      },
      s.member);
}

std::string value_text(const Pooler& p, const Setting& s) {
  return std::visit(
      [&](auto m) -> std::string {
        const auto& v = p.*m;
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int> || std::is_same_v<T, long long>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return format_double(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "1" : "0";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string r;
          for (const auto& x : v) r += (r.empty() ? "" : ",") + x;
          return r;
        } else {
          return to_string(v);
        }
      },
      s.member);
}

std::string inert_reason(const Setting& s, const Pooler& p) {
  if (s.inert) return s.inert(p);
  if (!s.unsupported || value_text(p, s) == value_text(Pooler{}, s)) return {};
  return std::string(s.unsupported) + "; ignored";
}

std::vector<std::pair<std::string, std::string>> pooler_problems(const Pooler& p) {
  std::vector<std::pair<std::string, std::string>> out;
  if (p.listen_addr.empty() && p.unix_socket_dir.empty())
    out.emplace_back("listen_addr", "nothing to listen on: listen_addr and unix_socket_dir are both empty");
  if (std::string why = auth_cert_problem(p); !why.empty()) out.emplace_back("auth_type", std::move(why));
  if (p.auth_dbname == "pgbouncer" || p.auth_dbname == "pgpivot")
    out.emplace_back("auth_dbname", "cannot use the reserved \"" + p.auth_dbname + "\" database as an auth_dbname");
  return out;
}

// ---------------------------------------------------------------- TLS

std::optional<unsigned> tls_protocols(std::string_view text) {
  unsigned bits = 0;
  std::string_view rest = text;
  for (;;) {
    std::size_t cut = rest.find_first_of(",:");
    std::string word = lower(trim(rest.substr(0, cut)));
    bool negate = !word.empty() && word[0] == '!';
    if (negate) {
      word.erase(0, 1);
      if (bits == 0) bits = kTlsAll;
    }
    unsigned v = word == "all" || word == "legacy" || word == "tlsv1" ? unsigned(kTlsAll)
                 : word == "secure" || word == "default"             ? unsigned(kTls12 | kTls13)
                 : word == "tlsv1.0"                                 ? unsigned(kTls10)
                 : word == "tlsv1.1"                                 ? unsigned(kTls11)
                 : word == "tlsv1.2"                                 ? unsigned(kTls12)
                 : word == "tlsv1.3"                                 ? unsigned(kTls13)
                                                                     : 0U;
    if (v == 0) return std::nullopt;
    bits = negate ? bits & ~v : bits | v;
    if (cut == std::string_view::npos) return bits;
    rest.remove_prefix(cut + 1);
  }
}

bool server_tls_differs(const Pooler& a, const Pooler& b) {
  if (a.server_tls_sslmode != b.server_tls_sslmode) return true;
  if (a.server_tls_sslmode == "disable") return false;  // no TLS before or after
  return a.server_tls_ca_file != b.server_tls_ca_file || a.server_tls_cert_file != b.server_tls_cert_file ||
         a.server_tls_key_file != b.server_tls_key_file || a.server_tls_ciphers != b.server_tls_ciphers ||
         a.server_tls13_ciphers != b.server_tls13_ciphers ||
         tls_protocols(a.server_tls_protocols) != tls_protocols(b.server_tls_protocols);
}

}  // namespace pgpivot::config
