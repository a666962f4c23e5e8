// The one table of [pooler] settings (PgBouncer's [pgbouncer] section): name, type,
// allowed range, when a change takes effect, and whether pgpivot acts on it. The TOML
// loader, the pgbouncer.ini loader, --convert, and the console's SHOW CONFIG and SET
// all read it, so a value one of them refuses is refused by all.
#pragma once

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace pgpivot::config {

using PoolerMember =
    std::variant<int Pooler::*, long long Pooler::*, double Pooler::*, bool Pooler::*,
                 std::string Pooler::*, std::vector<std::string> Pooler::*, PoolMode Pooler::*,
                 AuthType Pooler::*>;

// When a new value takes effect.
enum class Change : std::uint8_t {
  Restart,  // only at start: a reload keeps the old value (with a warning), SET refuses
  Reload,   // on RELOAD / SIGHUP, which also does what the change needs (reopen, TLS)
  Online,   // at once: RELOAD and the console's SET
};

struct Setting {
  const char* name;
  PoolerMember member;
  long long lo = 0;  // integers: allowed range
  long long hi = INT_MAX;
  bool positive = false;  // durations: 0 is not allowed
  bool sslmode = false;   // strings: one of kSslModes (stored lower case)
  Change change = Change::Online;
  // For settings the pooler does not act on yet: given the loaded settings, why the
  // value has no effect, or "" when pgpivot already behaves that way. nullptr for
  // settings the pooler honours.
  std::string (*inert)(const Pooler&) = nullptr;
  // For PgBouncer keys pgpivot stores but does not implement: what is missing, said
  // when the value is not PgBouncer's default (nullptr: not such a key).
  const char* unsupported = nullptr;
  [[nodiscard]] bool stored_only() const { return inert || unsupported; }
};

// Every [pooler] setting, in documentation order.
[[nodiscard]] const std::vector<Setting>& settings();
// The setting named `name` (any case), or nullptr.
[[nodiscard]] const Setting* find_setting(std::string_view name);

// Reads `text` as pgbouncer.ini and the console's SET write a value and stores it in
// `p`; on error `p` is unchanged and the result says what is wrong ("" = stored).
[[nodiscard]] std::string set_from_text(Pooler& p, const Setting& s, std::string_view text);
// The value as SHOW CONFIG prints it (booleans 1/0, lists comma-separated).
[[nodiscard]] std::string value_text(const Pooler& p, const Setting& s);
// Why the value `p` has for a stored-only setting has no effect ("" when it has, or
// when pgpivot already behaves that way): one warning for the loaders and SET.
[[nodiscard]] std::string inert_reason(const Setting& s, const Pooler& p);

// Checks that span several settings: (setting, problem) for each one that fails.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> pooler_problems(const Pooler& p);

// TLS protocol versions as bits (PgBouncer's TLS_PROTOCOL_*).
enum TlsProtocol : unsigned { kTls10 = 1, kTls11 = 2, kTls12 = 4, kTls13 = 8, kTlsAll = 15 };
// client_tls_protocols / server_tls_protocols as PgBouncer reads them: words
// separated by ',' or ':', any case: "all" (also "legacy" and "tlsv1"), "secure" or
// "default" (TLS 1.2 and 1.3), "tlsv1.0" ... "tlsv1.3"; "!word" removes versions
// (from all when it comes first). nullopt when a word is unknown.
[[nodiscard]] std::optional<unsigned> tls_protocols(std::string_view text);

// Whether pgpivot's TLS towards PostgreSQL differs between `a` and `b`, so that
// servers opened under `a` must be closed and opened again (PgBouncer's
// tls_change_requires_reconnect): a new server_tls_sslmode, or, unless it stays
// disable, a new CA, certificate, key, protocol set or cipher list.
[[nodiscard]] bool server_tls_differs(const Pooler& a, const Pooler& b);

}  // namespace pgpivot::config
