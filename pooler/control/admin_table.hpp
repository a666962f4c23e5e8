// What the console's answers are made of: result sets typed as PgBouncer types them,
// and the console's own small SQL tokenizer. No sockets; unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgpivot::console {

using Cell = std::optional<std::string>;  // nullopt = NULL

// A result set whose numeric columns are sent as int8, as PgBouncer does, so
// drivers hand exporters numbers rather than strings.
class Table {
 public:
  struct Col {
    std::string name;
    bool numeric;
  };
  explicit Table(std::vector<Col> cols) : cols_(std::move(cols)) {}
  void row(std::vector<Cell> r) { rows_.push_back(std::move(r)); }
  // RowDescription, the DataRows and CommandComplete(tag).
  void emit(std::string& out, const char* tag = "SHOW") const;

 private:
  std::vector<Col> cols_;
  std::vector<std::vector<Cell>> rows_;
};

inline Cell num(std::uint64_t v) { return std::to_string(v); }
inline Cell inum(long long v) { return std::to_string(v); }
inline Cell str(std::string v) { return std::optional<std::string>(std::move(v)); }

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string fmt_time(std::uint64_t epoch);  // "2026-12-05 15:40:00 UTC"; "" for 0
std::string fmt_ptr(const void* p);         // "" for nullptr

// Splits "SHOW pools;" into words; '=' is a word of its own; a quoted word keeps
// its case and starts with its quote character, which ident() strips.
std::vector<std::string> words(std::string_view sql);
// A word as an identifier: quoted words as written, bare words folded to lower case.
std::string ident(const std::string& w);

}  // namespace pgpivot::console
