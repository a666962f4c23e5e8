// What a health check's answer means, as pure functions of the texts libpq gives:
// the verdict of a failed login or query, WAL positions, the witness row.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pooler/failover/machine.hpp"

namespace pgpivot::failover {

// The SQLSTATE in a libpq error message made with PQERRORS_VERBOSE
// ("FATAL:  28P01: password authentication failed ..."); "" when there is none
// (the connection itself failed: refused, reset, timed out).
[[nodiscard]] std::string sqlstate_of(std::string_view message);

// A login that failed with `message` (libpq's text, verbose).
[[nodiscard]] Verdict login_failure_verdict(std::string_view message);
// role_query failed with this SQLSTATE on an established connection.
[[nodiscard]] Verdict query_failure_verdict(std::string_view sqlstate);

// "16/B374D848" -> 0x16B374D848; nullopt when it is not an LSN.
[[nodiscard]] std::optional<std::uint64_t> parse_lsn(std::string_view text);

// role_query's answer: true/false, or nullopt when it is neither.
[[nodiscard]] std::optional<bool> parse_bool(std::string_view text);

}  // namespace pgpivot::failover
