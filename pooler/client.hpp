// The client side of a connection: login, the messages it sends, what a failover
// must know of its requests (client.cpp, client_auth.cpp, lifecycle.cpp).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/hba.hpp"
#include "pooler/io/conn.hpp"
#include "pooler/list.hpp"
#include "pooler/params.hpp"
#include "pooler/prepared.hpp"
#include "pooler/states.hpp"
#include "protocol/auth.hpp"

namespace pgpivot {

struct DbEntry;
struct Pool;
struct Server;
struct SharedCount;
struct UserEntry;

// AuthQuery: the client's password is being looked up with auth_query (the
// client waits in the auth pool, then on that pool's server).
enum class LoginStep : std::uint8_t { Startup, AuthQuery, Md5, SaslFirst, SaslFinal, Cleartext, WaitWelcome, Done };

struct Client final : Conn {
  ListNode node;  // membership: pool list for the state, or pooler login list
  Pool* pool = nullptr;
  Server* server = nullptr;
  Name user_name, db_name;
  TrackedParams params;       // the client's view of tracked parameters
  std::unique_ptr<proto::ScramServer> scram;
  // Protocol-level prepared statements by the client's names (transaction/statement mode),
  // allocated when the client prepares its first statement.
  using PreparedMap = std::unordered_map<std::string, ClientStmt>;
  std::unique_ptr<PreparedMap> prepared_;
  PreparedMap& prepared() {
    if (!prepared_) prepared_ = std::make_unique<PreparedMap>();
    return *prepared_;
  }
  [[nodiscard]] std::size_t prepared_count() const { return prepared_ ? prepared_->size() : 0; }
  // The credentials this login checks and whose pool it joins: an auth_file or
  // [users] entry, or one auth_query found (Registry::dynamic_user).
  UserEntry* login_user = nullptr;
  // A replication connection (startup parameter "replication"): it gets a server of
  // its own, opened with its replication mode and options, never shared and closed
  // with it (PgBouncer 1.23's rule). Allocated only for such clients.
  struct Replication {
    std::string mode;     // the client's value: "database", "true", ...
    std::string options;  // the client's "options", passed on verbatim
    Server* server = nullptr;  // its server, from launch until the client leaves
    bool failed = false;       // its server's login failed: no other is opened for it
  };
  std::unique_ptr<Replication> repl;
  Server* auth_server = nullptr;  // running this client's auth_query
  Ms wait_start = 0;
  std::uint32_t cancel_pid = 0, cancel_key = 0;
  NetAddr remote;             // the local address is looked up when SHOW CLIENTS asks
  [[nodiscard]] NetAddr local_addr() const;
  std::uint8_t md5_salt[4]{};
  // After losing a server: the error owed at the next message, and whether to
  // drop extended-protocol messages until Sync (as PostgreSQL does after an error).
  char pending_error[6]{};    // SQLSTATE, "" for none
  bool discard_until_sync = false;
  ClientState state = ClientState::Login;
  LoginStep login = LoginStep::Startup;
  bool unknown_user = false;
  bool auth_lookup = false;   // waits in an auth pool (c->pool) for a server to run auth_query
  bool admin = false;         // on the admin console
  bool stats_only = false;    // stats_users: SHOW only
  bool peer_admin = false;    // Unix socket, same OS user: console without a password
  // The counts this client adds one to (max_db_client_connections and
  // max_user_client_connections): its database's (the console's for an admin client)
  // and its login user's, as PgBouncer counts them; taken back when it closes.
  SharedCount* counted_db = nullptr;
  SharedCount* counted_user = nullptr;
  bool unix_socket = false;
  bool drop_until_sync = false;  // after pgpivot's own error in a pipeline (PostgreSQL's rule)
  bool wait_notified = false;    // told it is queued (query_wait_notify), in this wait
  // What a failover needs to know of this client's requests, allocated on first need
  // (an extended-protocol statement, a replayable BEGIN, a refusal): an idle client
  // pays one pointer for it.
  struct Notes {
    // What each extended-protocol statement ("S" + name) and portal ("P" + name) may
    // do (proto::kSqlMayCommit / kSqlBeginOnly), from the Parse text.
    std::unordered_map<std::string, std::uint8_t> ext_class;
    // A transaction start in flight outside a transaction: its Query message, re-sent
    // to the next server if this one dies before answering.
    std::string replay;
    std::string pending_message;  // pending_error's message ("" = the server-loss one)
  };
  std::unique_ptr<Notes> notes_;
  Notes& notes() {
    if (!notes_) notes_ = std::make_unique<Notes>();
    return *notes_;
  }
  [[nodiscard]] bool has_replay() const { return notes_ && !notes_->replay.empty(); }
  void clear_replay() {
    if (notes_) notes_->replay.clear();
  }
  bool ext_stmts_unknown = false;    // a statement was defined unseen: every statement may commit
  bool ext_portals_unknown = false;  // the same for portals, until the transaction ends
  static constexpr std::size_t kMaxExtClasses = 4096;
  static constexpr std::uint32_t kMaxPasswordMessage = 1 << 17;
  static constexpr std::uint32_t kMaxInspectExt = 65536;  // larger Parse/Bind stream unseen
  std::uint8_t ext_class(char kind, std::string_view name);
  void set_ext_class(char kind, std::string_view name, std::uint8_t bits);
  void forget_ext_class(char kind, std::string_view name);
  void transaction_ended();  // ReadyForQuery 'I': portals are gone
  void note_statement(std::uint8_t bits);  // a Query/Execute of this class goes to the server

  Step on_header(char type, std::uint32_t wire_size) override;
  Step on_message(const char* data, std::uint32_t wire_size) override;
  Conn* peer() override;
  void on_closed() override;
  bool startup_framing() override { return login == LoginStep::Startup; }
  Step on_startup(const char* data, std::uint32_t len) override;

  void on_protocol_error(const char* what) override;
  void on_tls_error(const std::string& why) override;
  void send_error(const char* severity, const char* sqlstate, const std::string& msg);
  void auth_failed();
  Step begin_auth(UserEntry* user);
  std::optional<config::AuthMethod> choose_method(const config::HbaRule*& rule);
  [[nodiscard]] const config::HbaRule* hba_rule() const;
  [[nodiscard]] std::string peer_os_user() const;
  Step login_cert(UserEntry* user, const config::HbaRule* rule);
  Step login_peer(UserEntry* user, const config::HbaRule* rule);
  Step login_accepted();
  bool take_replication(const std::vector<std::pair<std::string, std::string>>& params);
  Step start_auth_lookup(DbEntry* db);
  // The auth_query's answer: `found` with the role's password (nullopt = NULL: no
  // password can match), or not found; `failed` when the query could not run.
  void auth_lookup_done(bool failed, bool found, const std::optional<std::string>& password);
  Step handle_password(const char* body, std::uint32_t len);
  void count_bytes(std::size_t n) override;
  void mark_query_start();
  Step answer_lost_transaction(char type);
  Step extended_message(const char* data, std::uint32_t wire_size);
  Step prepared_message(const char* data, std::uint32_t wire_size);
  void note_deallocate(std::string_view sql);
};

}  // namespace pgpivot
