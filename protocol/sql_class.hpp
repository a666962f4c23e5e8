// What a statement text may do to a transaction, for telling a client honestly
// what happened when its server died with the statement in flight. A lexer that
// knows only what separates statements: comments (--, nested /* */), string
// literals ('', E'', $tag$...$tag$), quoted identifiers, and top-level ';'. It
// allocates nothing and reads each byte once.
#pragma once

#include <cstdint>
#include <string_view>

namespace pgpivot::proto {

struct SqlClass {
  // Some top-level statement is COMMIT, END, COMMIT PREPARED or PREPARE
  // TRANSACTION. Errs towards true: an END inside a CREATE FUNCTION ... BEGIN
  // ATOMIC body counts too.
  bool may_commit = false;
  // Exactly one non-empty statement, and it is BEGIN or START TRANSACTION (with
  // any transaction modes): running it again on another server changes nothing.
  bool begin_only = false;
  std::uint32_t statements = 0;  // non-empty top-level statements
};

[[nodiscard]] SqlClass classify_sql(std::string_view sql);

// The same as one byte (for per-statement bookkeeping): bit 0 may_commit, bit 1 begin_only.
inline constexpr std::uint8_t kSqlMayCommit = 1, kSqlBeginOnly = 2;
[[nodiscard]] inline std::uint8_t sql_class_bits(std::string_view sql) {
  SqlClass c = classify_sql(sql);
  return std::uint8_t((c.may_commit ? kSqlMayCommit : 0) | (c.begin_only ? kSqlBeginOnly : 0));
}

}  // namespace pgpivot::proto
