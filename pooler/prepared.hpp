// Prepared statements shared over clients and what a server owes for each
// extended-protocol message (prepared.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace pgpivot {

// A prepared statement shared by every client that prepared the same query with
// the same parameter types; on servers it is named PGPIVOT_<id>.
struct PreparedStmt {
  std::uint64_t id = 0;
  std::string name;
  std::string parse_rest;  // Parse body after the statement name: query, types
};

// A client's name for a statement. `unconfirmed`: the client's Parse was skipped or
// rejected by the server. The name still counts, as in PgBouncer: a later Bind or
// Describe prepares it again on its server (drivers such as psycopg believe a Parse
// in an aborted pipeline succeeded), and a new Parse of the name replaces it.
struct ClientStmt {
  std::shared_ptr<PreparedStmt> stmt;
  bool unconfirmed = false;
};

// What the server owes (or pgpivot answers) for each extended-protocol message
// sent while prepared statements are tracked; see prepared.cpp.
enum class Slot : std::uint8_t {
  Parse, Bind, Describe, Close, Execute, Sync, Query,  // answered by the server
  FakeParse, FakeClose, FakeError,                     // answered by pgpivot
  HideParse, HideClose,                                // server answers hidden from the client
};

// One worker's shared statements by Parse body (query and parameter types): the
// next client with the same query gets the same server-side name. Bounded; when
// full, statements no client names any more are forgotten.
class StatementRegistry {
 public:
  std::shared_ptr<PreparedStmt> get(std::string_view parse_rest);

 private:
  static constexpr std::size_t kMax = 10000;
  std::unordered_map<std::string, std::shared_ptr<PreparedStmt>> stmts_;
  std::uint64_t next_id_ = 0;
};

}  // namespace pgpivot
