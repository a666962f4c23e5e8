#include "pooler/failover/verdict.hpp"

#include <cctype>

namespace pgpivot::failover {

namespace {

bool is_sqlstate(std::string_view s) {
  if (s.size() != 5) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c)) && !std::isupper(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace

std::string sqlstate_of(std::string_view m) {
  // "SEVERITY:  XXXXX: text": the first "word: " after a severity.
  for (std::string_view sev : {"FATAL:  ", "ERROR:  ", "PANIC:  "}) {
    for (std::size_t at = m.find(sev); at != std::string_view::npos; at = m.find(sev, at + 1)) {
      std::string_view rest = m.substr(at + sev.size());
      if (rest.size() > 6 && rest[5] == ':' && is_sqlstate(rest.substr(0, 5))) return std::string(rest.substr(0, 5));
    }
  }
  return "";
}

Verdict login_failure_verdict(std::string_view message) {
  std::string st = sqlstate_of(message);
  if (st.empty()) return Verdict::Down;  // no server answered
  // CockroachDB: an application virtual cluster of a PCR standby before cutover.
  if (st == "08000" && message.find("service unavailable for target tenant") != std::string_view::npos)
    return Verdict::ReadOnly;
  if (st == "28P01" || st == "28000" || st == "3D000" || st == "42501" || st == "08P01" || st == "08004" ||
      st.rfind("53", 0) == 0)
    return Verdict::Misconfigured;  // the node answered: it refuses this login, or is full
  return query_failure_verdict(st);
}

Verdict query_failure_verdict(std::string_view st) {
  // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now (starting up,
  // shutting down, crash recovery); class 08 connection failures; 58 system errors.
  if (st.rfind("57P", 0) == 0 || st.rfind("08", 0) == 0 || st.rfind("58", 0) == 0 || st == "XX000" || st.empty())
    return Verdict::Down;
  return Verdict::Misconfigured;  // syntax, permission, undefined function...: the query, not the node
}

std::optional<std::uint64_t> parse_lsn(std::string_view t) {
  std::size_t slash = t.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= t.size() || slash > 8 || t.size() - slash - 1 > 8)
    return std::nullopt;
  std::uint64_t hi = 0, lo = 0;
  for (std::size_t i = 0; i < t.size(); i++) {
    if (i == slash) continue;
    char c = t[i];
    int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
            : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
                                                        : -1;
    if (d < 0) return std::nullopt;
    (i < slash ? hi : lo) = (i < slash ? hi : lo) * 16 + static_cast<std::uint64_t>(d);
  }
  return (hi << 32) | lo;
}

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "t" || v == "true" || v == "1" || v == "on" || v == "TRUE") return true;
  if (v == "f" || v == "false" || v == "0" || v == "off" || v == "FALSE") return false;
  return std::nullopt;
}

}  // namespace pgpivot::failover
