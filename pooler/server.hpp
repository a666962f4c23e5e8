// The server side of a connection: login to PostgreSQL, the answers it sends,
// prepared-statement slots (server.cpp, server_connect.cpp, prepared.cpp).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pooler/io/conn.hpp"
#include "pooler/list.hpp"
#include "pooler/params.hpp"
#include "pooler/prepared.hpp"
#include "pooler/states.hpp"
#include "protocol/auth.hpp"
#include "protocol/messages.hpp"

namespace pgpivot {

struct Pool;
struct Client;

struct Server final : Conn {
  ListNode node;
  ServerState state = ServerState::Login;
  Pool* pool = nullptr;
  Client* client = nullptr;
  bool connected = false;
  bool ready = false;          // first ReadyForQuery seen
  char txn = 'I';              // last ReadyForQuery status
  int expect_z = 0;            // ReadyForQuery messages owed to the client
  int internal_z = 0;          // ReadyForQuery messages of our own queries (swallowed)
  bool in_copy = false;        // CopyIn/CopyBoth in progress (client streams data)
  bool needs_reset = false;    // a non-tracked SET ran outside a transaction
  std::uint32_t pid = 0, key = 0;
  TrackedParams params;
  std::vector<std::pair<std::string, std::string>> all_params;  // from login, for the welcome
  std::unique_ptr<proto::ScramClient> scram;
  std::string host;
  int server_port = 0;
  std::string addr;  // "host:port" as configured, for messages
  NetAddr local;
  sockaddr_storage sa{};        // resolved address (also where cancel requests go)
  void* resolving = nullptr;    // name lookup in flight
  void forget_resolve();
  Ms last_used = 0;            // when it last became idle
  Ms query_start = 0;
  bool release_after_forward = false;
  std::uint64_t query_start_us = 0;  // first query of the current batch (0 = none)
  std::uint64_t xact_start_us = 0;   // first query of the current transaction
  std::uint64_t wall_connect = 0;
  bool close_needed = false;   // config changed: close instead of reusing
  bool unsynced = false;       // extended-protocol messages sent since the last Sync
  bool just_checked = false;   // came back from server_check_query/reset idle: hand out unchecked
  Ms checked_at = 0;           // its login, or its last passed check: when it was last known alive
  // Prepared statement tracking (prepared.cpp).
  bool tracking = false;
  bool skip_to_sync = false;   // after an extended-protocol error, until the client's Sync
  // A Parse slot names the statement (and the client's name for it) so that a
  // Parse the server rejects or skips is forgotten again.
  struct SlotEntry {
    Slot kind;
    std::uint64_t stmt = 0;
    std::string client_name;
  };
  std::deque<SlotEntry> slots;
  std::unordered_map<std::uint64_t, std::uint64_t> prepared_on;  // statement id -> last use
  std::uint64_t prepared_tick = 0;
  bool commit_in_flight = false;  // a statement that may commit is among those in flight
  bool begin_in_flight = false;   // all that is in flight is the client's replayable transaction start
  bool begin_sent = false;        // a BEGIN is among what is in flight: what follows it is not autocommit
  bool answered = false;          // some answer to what is in flight reached the client
  bool query_timed_out = false;   // closed by query_timeout: the client hears 57014
  // An auth_query running on this server (Pooler::start_auth_query), allocated
  // for its duration: the client it is for (nullptr once that client left), and
  // what the answer said so far.
  struct AuthQuery {
    Client* client = nullptr;
    bool failed = false;
    bool found = false;
    std::optional<std::string> password;
  };
  std::unique_ptr<AuthQuery> auth;
  // A replication client's own server (Client::repl): never idle, never reused.
  Client* repl_for = nullptr;  // its client, until that client leaves
  bool repl = false;
  void auth_row(char type, std::string_view body);

  void after_forward() override;
  void on_protocol_error(const char* what) override;
  Step login_message(char type, std::string_view body);
  int record_parameter(const proto::ParameterStatus& ps);
  void adopt_canonical();  // the client takes the server's spelling of equal values
  bool awaiting_ssl_byte = false;  // SSLRequest sent, waiting for 'S' or 'N'
  std::string sslmode;             // effective server_tls_sslmode for this node
  bool raw_byte_mode() override { return awaiting_ssl_byte; }
  void on_raw_byte(char b) override;
  void on_tls_ready() override;
  void on_tls_error(const std::string& why) override;
  void send_startup();
  void push_slot(Slot s, std::uint64_t stmt = 0, std::string client_name = {});
  void drop_slot_front();  // a slot the server will never answer
  void emit_fakes();
  void pop_until(Slot a, Slot b);
  Step track_response(char type);
  void track_ready_for_query();
  void ensure_prepared(const std::shared_ptr<PreparedStmt>& st, const std::string& client_name);
  void on_pass_end() override;
  void count_bytes(std::size_t n) override;
  [[nodiscard]] const std::string& login_password() const;

  Step on_header(char type, std::uint32_t wire_size) override;
  Step on_message(const char* data, std::uint32_t wire_size) override;
  Conn* peer() override;
  void on_closed() override;
  void on_connect(int status) override;
};

}  // namespace pgpivot
