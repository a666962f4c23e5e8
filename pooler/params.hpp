// The parameters kept equal between a client and its server, and interned names:
// per-connection values that most connections share (params.cpp).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgpivot {

// Parameters that PostgreSQL reports with ParameterStatus and that pgpivot keeps
// equal between a client and the server it is given.
inline constexpr const char* kTrackedParams[] = {
    "client_encoding", "DateStyle", "TimeZone", "IntervalStyle", "standard_conforming_strings",
    "application_name"};
inline constexpr int kTrackedCount = 6;  // the built-in ones; track_extra_parameters adds more
inline constexpr int kMaxTracked = 24;
// track_extra_parameters: names tracked after the built-in ones (indices from
// kTrackedCount on). Set once at start-up, before any connection or worker
// (PgBouncer's setting cannot change at RELOAD either); built-in names and
// duplicates are skipped. Returns the names that did not fit (over kMaxTracked).
std::vector<std::string> set_extra_tracked(const std::vector<std::string>& names);
[[nodiscard]] int tracked_count();
[[nodiscard]] const char* tracked_name(int i);
[[nodiscard]] int tracked_index(std::string_view name);  // -1 if not tracked (case-insensitive)
[[nodiscard]] bool iequals(std::string_view a, std::string_view b);  // ASCII, case-insensitive

// The values of the tracked parameters, interned: connections with equal values
// (most clients of a pool) share one copy and pay a pointer each. Copy on write;
// the intern table is per process, shared by the workers under a mutex.
class TrackedParams {
 public:
  TrackedParams() = default;
  TrackedParams(const TrackedParams& o);
  TrackedParams& operator=(const TrackedParams& o);
  ~TrackedParams();
  [[nodiscard]] const std::optional<std::string>& get(int i) const;
  void set(int i, std::optional<std::string> value);
  struct Rep;

 private:
  void assign(Rep* r);
  Rep* rep_ = nullptr;
};

// An interned, reference-counted name (a client's user or database name):
// connections with the same name share one string and pay a pointer each.
class Name {
 public:
  Name() = default;
  Name(std::string_view s);  // NOLINT: implicit, like std::string
  Name(const std::string& s) : Name(std::string_view(s)) {}  // NOLINT
  Name(const char* s) : Name(std::string_view(s)) {}         // NOLINT
  Name(const Name& o);
  Name& operator=(const Name& o);
  ~Name();
  [[nodiscard]] const std::string& str() const;
  operator const std::string&() const { return str(); }  // NOLINT
  [[nodiscard]] const char* c_str() const { return str().c_str(); }
  [[nodiscard]] bool empty() const { return str().empty(); }
  bool operator==(std::string_view o) const { return str() == o; }
  struct Rep;

 private:
  Rep* rep_ = nullptr;
};

}  // namespace pgpivot
