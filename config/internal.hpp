// Internals shared by the TOML loader, the pgbouncer.ini loader and the TOML writer:
// text helpers, value checks, and the one table of [pooler] settings all three use.
#pragma once

#include <climits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace pgpivot::config::detail {

constexpr double kMaxDuration = 1e9;          // seconds (~31 years); keeps usec/nsec math safe
constexpr long long kMinPktBuf = 1024;        // below this even a startup packet won't fit
constexpr long long kMaxPktBuf = 64LL << 20;  // 64 MiB
constexpr long long kMinMaxPacketSize = 1024;
constexpr long long kMaxMaxPacketSize = 2147483647;

[[nodiscard]] std::string lower(std::string_view s);
[[nodiscard]] std::string trim(std::string_view s);
[[nodiscard]] bool ends_with_ci(std::string_view s, std::string_view lower_suffix);
// The closest candidate when `word` looks like a typo of it, else "".
[[nodiscard]] std::string suggest(std::string_view word, const std::vector<std::string>& candidates);
[[nodiscard]] std::string format_double(double v);
// "" when fine, else what is wrong with a password that claims to be a SCRAM secret.
[[nodiscard]] std::string check_password(std::string_view pw);
// Whole file; nullopt with `why` set on failure.
[[nodiscard]] std::optional<std::string> read_file(const std::string& path, std::string& why);
// "" when `x` is within [lo, hi], else e.g. "must be >= 0, got -1".
[[nodiscard]] std::string int_problem(long long x, long long lo, long long hi);
// "" when `x` is a valid duration, else e.g. "must be >= 0, got -1".
[[nodiscard]] std::string duration_problem(double x, bool positive);
// Whether `s` is an sslmode PgBouncer accepts (any case).
[[nodiscard]] bool valid_sslmode(std::string_view s);
inline constexpr const char* kSslModes = "disable, allow, prefer, require, verify-ca, verify-full";

using PoolerMember =
    std::variant<int Pooler::*, long long Pooler::*, double Pooler::*, bool Pooler::*,
                 std::string Pooler::*, std::vector<std::string> Pooler::*, PoolMode Pooler::*,
                 AuthType Pooler::*>;

// One [pooler] setting (named as in PgBouncer's [pgbouncer] section).
struct PoolerKey {
  const char* name;
  PoolerMember member;
  long long lo = 0;          // integers: allowed range
  long long hi = INT_MAX;
  bool positive = false;     // durations: 0 is not allowed
  bool sslmode = false;      // strings: one of kSslModes (stored lower case)
  // For settings the pooler does not act on yet: given the loaded settings, why the
  // value has no effect, or "" when pgpivot already behaves that way. nullptr for
  // settings the pooler honours.
  std::string (*inert)(const Pooler&) = nullptr;
};

// Every [pooler] setting, in documentation order.
[[nodiscard]] const std::vector<PoolerKey>& pooler_keys();

// Database settings that are stored but not acted on yet: (key below the database,
// message) for each one set in `d`.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> inert_database_settings(
    const Database& d);
// The same for a user.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> inert_user_settings(const User& u);

}  // namespace pgpivot::config::detail
