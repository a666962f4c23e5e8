// Internals shared by the TOML loader, the pgbouncer.ini loader and the TOML writer:
// text helpers and value checks (the [pooler] settings table is in settings.hpp).
#pragma once

#include <climits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"
#include "config/load.hpp"
#include "config/settings.hpp"

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

// auth_type = hba: reads auth_hba_file and auth_ident_file into cfg.hba (a relative
// path is taken from the working directory, as PgBouncer does). Each problem is an
// error or warning keyed `prefix`.auth_hba_file / .auth_ident_file, at its file and line.
void load_hba_files(Config& cfg, const std::string& prefix, std::vector<Error>& errors,
                    std::vector<Error>& warnings);

// Value parsing as PgBouncer reads pgbouncer.ini (settings.cpp).
// An integer (strtol base 0: 10, 0x1F, 017).
[[nodiscard]] std::optional<long long> parse_integer(std::string_view text);
// Plain seconds, fractions allowed.
[[nodiscard]] std::optional<double> parse_seconds(std::string_view text);
// 0/1 (any integer, as PgBouncer), yes/no, on/off, true/false.
[[nodiscard]] std::optional<bool> parse_boolean(std::string_view text);
// A comma-separated list, items trimmed, empty items dropped.
[[nodiscard]] std::vector<std::string> parse_list(std::string_view text);
// A hint for values that carry a trailing comment, which PgBouncer does not strip either.
[[nodiscard]] std::string comment_hint(std::string_view v);

}  // namespace pgpivot::config::detail
