// The reactor's object model: connections (client and server sides), pools per
// (database, user), and the Pooler that owns the libuv loop, listeners and timers.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "pooler/control/stats.hpp"
#include "pooler/failover/machine.hpp"
#include "pooler/hub.hpp"
#include "pooler/list.hpp"
#include "pooler/reasons.hpp"
#include "pooler/states.hpp"
#include "protocol/auth.hpp"
#include "protocol/messages.hpp"

typedef struct ssl_ctx_st SSL_CTX;  // OpenSSL's, declared as <openssl/types.h> does

namespace pgpivot {

class Pooler;
struct Pool;
struct TlsConn;
struct TlsDeleter {
  void operator()(TlsConn* t) const;
};
struct Client;
struct Server;

using Ms = std::uint64_t;  // uv_now() milliseconds

// BackendKeyData "pid" = worker << kCancelShardShift | (cancel slot + 1).
inline constexpr unsigned kCancelShardShift = 24;
inline constexpr std::uint32_t kCancelSlotMask = (1u << kCancelShardShift) - 1;

// ---------------------------------------------------------------------------
// Read buffers: fixed-size blocks on a free list, taken when bytes arrive and
// given back as soon as everything read has been handled, so an idle connection
// holds none.
class BufferPool {
 public:
  BufferPool(std::uint32_t size, std::size_t keep) : size_(size), keep_(keep) {}
  ~BufferPool();
  [[nodiscard]] std::uint32_t size() const { return size_; }
  char* take();
  void give(char* p);
  [[nodiscard]] std::size_t free_count() const { return free_.size(); }
  [[nodiscard]] std::size_t in_use() const { return in_use_; }

 private:
  std::uint32_t size_;
  std::size_t keep_;  // free blocks kept for reuse; beyond that they go back to malloc
  std::vector<char*> free_;
  std::size_t in_use_ = 0;
};

// ---------------------------------------------------------------------------
// Parameters that PostgreSQL reports with ParameterStatus and that pgpivot keeps
// equal between a client and the server it is given.
inline constexpr const char* kTrackedParams[] = {
    "client_encoding", "DateStyle", "TimeZone", "IntervalStyle", "standard_conforming_strings",
    "application_name"};
inline constexpr int kTrackedCount = 6;
[[nodiscard]] int tracked_index(std::string_view name);  // -1 if not tracked (case-insensitive)

// The values of the tracked parameters, interned: connections with equal values
// (most clients of a pool) share one copy and pay a pointer each. Copy on write;
// the intern table is per process and not thread-safe (one reactor thread).
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

// ---------------------------------------------------------------------------
// What a message handler decides for the message whose header was just seen.
enum class Step {
  Forward,  // stream the whole message to the peer
  Skip,     // drop the whole message
  Inspect,  // the whole message must be in the buffer; call on_message
  Hold,     // stop processing here (e.g. waiting for a server); keep the bytes
  Stop,     // the connection was closed or paused; stop processing
};

// An IPv4/IPv6 socket address in 20 bytes ("unix" for Unix-socket peers).
struct NetAddr {
  std::uint8_t family = 0;  // AF_INET, AF_INET6, AF_UNIX or 0 (unknown)
  std::uint16_t port = 0;
  std::uint8_t ip[16]{};
  void set(const sockaddr_storage& ss);
  [[nodiscard]] std::string host() const;
  [[nodiscard]] std::string str() const;  // "host:port", or "unix"
};

// One side of a proxied conversation: a socket, a lazily held read buffer, and
// an output queue that mixes bytes pgpivot generated with bytes borrowed from the
// peer's read buffer (forwarded without copying).
//
// The socket is watched with a uv_poll_t (160 bytes, against 264 for a libuv
// stream) and read and written with plain syscalls: pgpivot decides when and how
// much to read, and an idle client costs little more than this object.
struct Conn {
  union {
    uv_handle_t handle;
    uv_poll_t poll;
  } h{};
  Pooler* pooler = nullptr;
  std::uint64_t id = 0;
  int fd = -1;               // the socket; closed in the poll handle's close callback
  std::uint8_t events = 0;   // UV_READABLE / UV_WRITABLE being watched
  bool is_client = false;
  bool unix_sock = false;    // a Unix-domain socket
  bool connecting = false;   // non-blocking connect() in progress
  bool closing = false;      // uv_close called (or a deferred free); freed in the close callback
  bool reading = false;      // UV_READABLE watched
  bool want_read = true;     // false while held or blocked
  bool stream_hint = false;  // the last read took a whole block: read into a stream buffer next
  bool wbusy = false;        // an asynchronous write is in flight
  bool in_process = false;
  bool dirty = false;        // on the pooler's flush list
  bool exiting = false;      // inside the connection's exit path

  // Read side. Bytes [rpos, rend) are unconsumed; [rpos, rparse) were handled
  // but are borrowed by the peer's in-flight write.
  char* rbuf = nullptr;
  std::uint32_t rcap = 0;
  std::uint32_t rpos = 0, rparse = 0, rend = 0;
  std::uint32_t fwd_left = 0;   // bytes of the current message still to forward
  std::uint32_t skip_left = 0;  // bytes of the current message still to drop
  Conn* borrowed_by = nullptr;  // the peer whose write holds our bytes

  // Write side: everything lives in an OutQ taken from the pooler's free list
  // while output is pending and given back when it drains, so an idle
  // connection holds no output state (and a busy one allocates nothing per flush).
  struct Seg {
    const char* ptr;    // borrowed bytes, or nullptr for own bytes
    std::uint32_t off;  // offset into `out` for own bytes
    std::uint32_t len;
  };
  struct OutQ;
  OutQ* oq = nullptr;
  Conn* waiting_on = nullptr;      // the writer we wait for (we are its waiting_src)

  Ms connect_time = 0;
  Ms request_time = 0;  // last activity

  virtual ~Conn() = default;
  // Header seen: decide what to do with the message.
  virtual Step on_header(char type, std::uint32_t wire_size) = 0;
  // Whole message available (for Step::Inspect). data points at the type byte.
  virtual Step on_message(const char* data, std::uint32_t wire_size) = 0;
  // Bytes are forwarded to this peer; nullptr means drop.
  virtual Conn* peer() = 0;
  virtual void on_closed() = 0;       // socket error/EOF: run the connection's exit path
  virtual void after_forward() {}     // called after an inspected message was forwarded
  virtual void on_pass_end() {}       // end of a process() pass
  // A single raw byte is expected instead of a message (the answer to SSLRequest).
  virtual bool raw_byte_mode() { return false; }
  virtual void on_raw_byte(char b) { (void)b; }
  virtual void on_tls_ready() {}
  virtual void on_tls_error(const std::string& why) { (void)why; on_closed(); }
  virtual void count_bytes(std::size_t n) { (void)n; }  // statistics hook for bytes read
  virtual bool startup_framing() { return false; }
  virtual Step on_startup(const char* data, std::uint32_t len) { (void)data; (void)len; return Step::Stop; }

  virtual void on_protocol_error(const char* what) = 0;

  // Socket I/O (conn.cpp).
  bool attach(int sock);                         // watch `sock` (non-blocking); false: closed it
  void set_events(int ev);
  void do_read();                                // readable: one read, then process()
  bool write_iov();                              // false when the connection closed
  void write_more();                             // writable: continue the pending write
  virtual void on_connect(int status) { (void)status; }
  void queue(std::string_view bytes);            // own bytes
  void queue_borrowed(const char* p, std::uint32_t n);
  void flush();                                  // try to write; may go async
  void on_drained();
  void flush_tls();
  void borrow_done();
  void process();                                // handle buffered input
  void process_once();
  void update_reading();
  void release_rbuf_if_empty();
  bool read_room(BufferPool& bp);                // a buffer with room to read into; false when full
  void ensure_room(std::uint32_t need);
  void free_buffers();
  [[nodiscard]] std::uint32_t max_packet() const;

  // TLS (tls.cpp): plaintext stays in rbuf/segs; ciphertext goes through OpenSSL's memory BIOs.
  std::unique_ptr<TlsConn, TlsDeleter> tls;
  bool tls_start(SSL_CTX* ctx, bool accept, const std::string& verify_host, bool verify);
  bool tls_handshake();
  void tls_queue_cipher();
  void tls_input(const char* data, std::size_t n);
  bool tls_pump();
  [[nodiscard]] bool tls_has_pending() const;
  void tls_encrypt_queue();
  [[nodiscard]] std::string tls_description() const;
  // After the handshake: the CommonName of the peer's verified certificate, read
  // from the SSL object when asked (nothing is kept per connection). nullopt when
  // the peer sent no certificate (or it did not verify); "" when it has no single
  // usable CommonName.
  [[nodiscard]] std::optional<std::string> tls_peer_common_name() const;
  [[nodiscard]] bool output_pending() const;
  OutQ& outq();                      // the output state, taken on first use
  [[nodiscard]] Conn* fwd_src() const;      // source whose bytes our queued/in-flight write borrows
  void maybe_release_outq();
  [[nodiscard]] std::size_t memory_use() const;
  void start_close();
};

// Output state of a connection with pending output (see Conn).
struct Conn::OutQ {
  std::string out;                      // own bytes not yet written
  std::vector<Seg> segs;                // pending output in order
  std::string out_inflight;             // own bytes of the in-flight write
  std::vector<uv_buf_t> bufs_inflight;  // iovec-compatible on Unix
  std::size_t wpos = 0;                 // first buffer of bufs_inflight not fully written
  Conn* fwd_src = nullptr;              // source whose rbuf our queued/in-flight write borrows
  Conn* waiting_src = nullptr;          // source that waits for our write to finish
  // Read buffers of sources closed while we still had their bytes queued; freed
  // when our output drains or we close.
  std::vector<std::pair<char*, std::uint32_t>> orphans;  // buffer, capacity
  std::string tls_cipher_out;           // TLS: ciphertext waiting to be written
  [[nodiscard]] bool idle() const {
    return out.empty() && segs.empty() && !fwd_src && !waiting_src && orphans.empty() && tls_cipher_out.empty();
  }
};

// ---------------------------------------------------------------------------
// A prepared statement shared by every client that prepared the same query with
// the same parameter types; on servers it is named PGPIVOT_<id>.
struct PreparedStmt {
  std::uint64_t id = 0;
  std::string name;
  std::string parse_rest;  // Parse body after the statement name: query, types
};

// What the server owes (or pgpivot answers) for each extended-protocol message
// sent while prepared statements are tracked; see prepared.cpp.
enum class Slot : std::uint8_t {
  Parse, Bind, Describe, Close, Execute, Sync, Query,  // answered by the server
  FakeParse, FakeClose, FakeError,                     // answered by pgpivot
  HideParse, HideClose,                                // server answers hidden from the client
};

// ---------------------------------------------------------------------------

enum class LoginStep : std::uint8_t { Startup, Md5, SaslFirst, SaslFinal, Cleartext, WaitWelcome, Done };

struct Client final : Conn {
  ListNode node;  // membership: pool list for the state, or pooler login list
  Pool* pool = nullptr;
  Server* server = nullptr;
  Name user_name, db_name;
  TrackedParams params;       // the client's view of tracked parameters
  std::unique_ptr<proto::ScramServer> scram;
  // Protocol-level prepared statements by the client's names (transaction/statement mode),
  // allocated when the client prepares its first statement.
  using PreparedMap = std::unordered_map<std::string, std::shared_ptr<PreparedStmt>>;
  std::unique_ptr<PreparedMap> prepared_;
  PreparedMap& prepared() {
    if (!prepared_) prepared_ = std::make_unique<PreparedMap>();
    return *prepared_;
  }
  [[nodiscard]] std::size_t prepared_count() const { return prepared_ ? prepared_->size() : 0; }
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
  bool admin = false;         // on the admin console
  bool stats_only = false;    // stats_users: SHOW only
  bool peer_admin = false;    // Unix socket, same OS user: console without a password
  bool unix_socket = false;
  bool drop_until_sync = false;  // after pgpivot's own error in a pipeline (PostgreSQL's rule)
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
  Step handle_password(const char* body, std::uint32_t len);
  void count_bytes(std::size_t n) override;
  void mark_query_start();
  Step answer_lost_transaction(char type);
  Step extended_message(const char* data, std::uint32_t wire_size);
  Step prepared_message(const char* data, std::uint32_t wire_size);
  void note_deallocate(std::string_view sql);
};


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

  void after_forward() override;
  void on_protocol_error(const char* what) override;
  Step login_message(char type, std::string_view body);
  int record_parameter(const proto::ParameterStatus& ps);
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

// ---------------------------------------------------------------------------
// Clusters and failover (failover/cluster.cpp drives failover/machine.hpp).
using NodeState = failover::Verdict;
using failover::to_string;

struct HealthCheck;
struct HealthCheckDeleter {
  void operator()(HealthCheck* h) const;
};

struct HttpServer;  // http.cpp
struct HttpServerDeleter {
  void operator()(HttpServer* h) const;
};

struct ClusterRt {
  std::string name;
  const config::Cluster* cfg = nullptr;  // points into Pooler::cfg_
  bool removed = false;
  failover::Machine fsm;                 // what decides a failover
  failover::NodeView obs[2];             // what the checks learned of each node
  std::uint64_t last_check_us[2] = {0, 0};
  Ms check_started[2] = {0, 0};
  // The role check (role_query, position_query; witness and lag too unless
  // witness_options asks for a connection of their own) and that witness check.
  std::unique_ptr<HealthCheck, HealthCheckDeleter> hc[2], wc[2];
  Ms next_check = 0;
  // Last time (uv_now of any worker) the active node served the pools: a server login
  // or a ReadyForQuery. While it does, a failed health check does not count.
  std::atomic<Ms> datapath_ok{0};
  uv_process_t* promote_proc = nullptr;   // the running promote_command, if any
  std::uint64_t op_start_wall = 0;
  int clients_held = 0;
  std::atomic<int> client_errors{0};  // errors given to clients around the current/last move (any worker)
  std::uint64_t failovers = 0;
  std::uint64_t last_failover_wall = 0, last_failover_ms = 0;
  std::string fence_result;  // of the last fence_command
  std::uint64_t moves_ended = 0;  // moves that ended (completed or aborted); console commands wait on it
  std::string last_end;           // how the last one ended: "ok" or "aborted: why"
  bool state_loaded = false;

  bool has_standby() const { return cfg && cfg->standby.has_value(); }
  bool active_standby() const { return has_standby() && fsm.active() == 1; }
  // Pools may hand out servers (a cluster without standby always may).
  bool routes() const { return !has_standby() || fsm.routes(); }
  bool moving() const { return has_standby() && fsm.moving(); }
  bool refusing() const { return has_standby() && fsm.refusing(); }
  NodeState state(int side) const { return fsm.view(side).verdict; }
  void note_datapath_ok(Ms t) {
    if (datapath_ok.load(std::memory_order_relaxed) != t) datapath_ok.store(t, std::memory_order_relaxed);
  }
};

struct FailoverEvent {
  std::string cluster, kind, result, to;
  std::uint64_t start_wall = 0, duration_ms = 0;
  int clients_held = 0, client_errors = 0;
};

// ---------------------------------------------------------------------------
// Runtime objects for configured databases and users.
struct DbEntry {
  config::Database cfg;
  const config::Cluster* cluster = nullptr;  // points into Pooler::cfg
  ClusterRt* crt = nullptr;
  bool removed = false;
  bool paused = false;    // PAUSE db: no server is handed out
  bool disabled = false;  // DISABLE db: no new client logins
  SharedCount* counts = nullptr;  // servers and clients of the database over all workers
};

struct UserEntry {
  config::User cfg;
  std::optional<proto::ScramSecret> secret;  // cached SCRAM secret for SCRAM auth
  std::optional<proto::Key32> client_key;    // from the last successful client SCRAM (pass-through)
  SharedCount* counts = nullptr;             // servers and clients of the user over all workers
  bool removed = false;
};

struct Pool {
  Pooler* owner = nullptr;         // the worker whose loop runs this pool's connections
  SharedCount* shared = nullptr;   // the pool's server count over all workers (pool_size)
  DbEntry* db = nullptr;
  UserEntry* user = nullptr;       // the user servers log in as
  std::string db_name, user_name;  // the names clients used
  std::string server_db;           // database name on the server

  ListHead cl_login;     // clients waiting for the welcome parameters
  ListHead cl_idle;
  ListHead cl_waiting;
  ListHead cl_active;
  ListHead sv_login, sv_idle, sv_active, sv_used, sv_tested;

  bool have_welcome = false;
  std::vector<std::pair<std::string, std::string>> welcome;  // ParameterStatus of the first server
  Ms last_login_failure = 0;
  std::string last_login_error;  // FATAL text from the server
  std::string last_login_sqlstate;

  bool servicing = false, service_again = false;
  bool wanted_recently = false;  // workers: this worker asked for more of the pool's slots since the last janitor run
  bool admin = false;  // the console's pseudo pool (database "pgbouncer")

  // Counters for SHOW STATS (control/stats.hpp adds them up).
  using Stats = PoolStats;
  Stats stats;         // running totals
  Stats period_start;  // totals at the start of the last stats_period
  Stats averages;      // per-second rates / per-event times over the last period
  [[nodiscard]] PoolCounts counts() const;  // this part's SHOW POOLS columns

  // The list of a state (nullptr for Cancel and Closing, which have none).
  [[nodiscard]] ListHead* list_of(ClientState s);
  [[nodiscard]] ListHead* list_of(ServerState s);
  // Every client (server) in `states`, list by list in the order given; `f` may close
  // or move the connection it is given (ListHead::for_each). The default order puts
  // unlinked connections before linked ones, so that closing them all never hands a
  // doomed server to a client.
  static constexpr std::initializer_list<ClientState> kAllClients = {
      ClientState::Login, ClientState::Idle, ClientState::Waiting, ClientState::Active};
  static constexpr std::initializer_list<ServerState> kAllServers = {
      ServerState::Login, ServerState::Idle, ServerState::Used, ServerState::Tested, ServerState::Active};
  template <class F>
  void each_client(F&& f, std::initializer_list<ClientState> states = kAllClients) {
    for (ClientState st : states) list_of(st)->for_each<Client>(f);
  }
  template <class F>
  void each_server(F&& f, std::initializer_list<ServerState> states = kAllServers) {
    for (ServerState st : states) list_of(st)->for_each<Server>(f);
  }
  [[nodiscard]] int server_total() const {
    return int(sv_login.size() + sv_idle.size() + sv_active.size() + sv_used.size() + sv_tested.size());
  }
  [[nodiscard]] int client_total() const {
    return int(cl_login.size() + cl_idle.size() + cl_waiting.size() + cl_active.size());
  }
};

// ---------------------------------------------------------------------------
// A listening socket watched with a uv_poll_t; accept4() runs in its callback.
struct Listener {
  uv_poll_t poll{};
  int fd = -1;
  Pooler* pooler = nullptr;
  bool unix_socket = false;
  bool closed = false;
  bool out_of_fds = false;  // accept failed for lack of descriptors: retried by the janitor
  std::string path;
};

// A short-lived connection that forwards a CancelRequest to a server.
struct CancelConn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h{};
  uv_connect_t req{};
  uv_write_t wreq{};
  std::string packet;
  Pooler* pooler = nullptr;
};

class Pooler {
 public:
  // Console commands that answer only when a condition holds (PAUSE, WAIT_CLOSE).
  struct PendingAdmin {
    Client* client;
    std::string command;  // "PAUSE" or "WAIT_CLOSE"
    std::string db;       // "" = all
    std::uint64_t moves_ended = 0;  // SWITCHOVER/FAILOVER/FAILBACK/ABORT: the cluster's count at the start
  };

  // `hub` is shared by the workers (nullptr: a single worker with its own hub).
  Pooler(config::Config cfg, uv_loop_t* loop, Hub* hub = nullptr, int shard = 0);
  ~Pooler();
  [[nodiscard]] bool start();  // bind listeners, timers, signals
  int run();                   // runs the loop until shutdown

  // Config access
  const config::Pooler& settings() const { return cfg_.pooler; }
  const config::Config& cfg() const { return cfg_; }
  bool reload();
  bool apply_reload(config::Config next);

  // Lookups
  DbEntry* find_db(const std::string& name);
  // A SCRAM secret for a user that does not exist: stable per name (so the salt
  // does not give the user away) and impossible to authenticate against.
  proto::ScramSecret fake_secret(const std::string& user);
  UserEntry* find_user(const std::string& name);
  Pool* get_pool(DbEntry* db, const std::string& db_name, UserEntry* user, const std::string& user_name);
  config::PoolMode pool_mode(const Pool* p) const;
  int pool_size(const Pool* p) const;
  int reserve_size(const Pool* p) const;
  int min_pool_size(const Pool* p) const;
  int max_db_connections(const Pool* p) const;    // 0 = no limit
  int max_user_connections(const Pool* p) const;  // 0 = no limit

  // Client lifecycle
  void on_accept(bool unix_socket, int fd);
  void accept_ready(Listener* l);
  void defer_free(Conn* c);                  // a connection without a socket: freed after this loop turn
  void client_login_done(Client* c);         // authenticated: send welcome or wait for it
  void send_welcome(Client* c);
  void client_request(Client* c);            // client has data and needs a server
  // Closes a client's connection for `why` (reasons.hpp), after telling it so when the
  // reason says to. The second form passes on an error a server sent.
  void disconnect_client(Client* c, Reason why, std::initializer_list<std::string_view> args = {});
  void disconnect_client(Client* c, const char* sqlstate, const std::string& reason, bool notify);
  void client_change_state(Client* c, ClientState s);
  void handle_cancel(std::uint32_t pid, std::uint32_t key);
  void register_cancel_key(Client* c);
  void unregister_cancel_key(Client* c);

  // Server lifecycle
  // Reserves a server slot (pool_size, max_db_connections, max_user_connections over
  // all workers) and opens a server; false when a limit or a pause stops it.
  bool try_launch(Pool* p, bool use_reserve);
  void launch_server(Pool* p);  // the slot is reserved
  void server_ready(Server* s);              // login finished or internal query done
  void server_release(Server* s);            // client finished a transaction/session
  void link(Client* c, Server* s);
  void disconnect_server(Server* s, const std::string& reason);
  void server_change_state(Server* s, ServerState st);
  void server_login_failed(Server* s, Reason why, std::initializer_list<std::string_view> args = {});
  void server_login_failed(Server* s, const std::string& sqlstate, const std::string& msg);  // the server's own error
  void run_internal_query(Server* s, const std::string& sql);
  void internal_done(Server* s);             // all of pgpivot's own queries answered

  void pool_service(Pool* p);                // hand idle servers to waiting clients, launch new ones

  // TLS contexts (tls.cpp)
  bool setup_tls(std::string& err);
  void free_tls();
  SSL_CTX* client_tls_ctx() const { return client_ctx_; }
  // Built on first use: OpenSSL is initialized only when some connection needs TLS.
  SSL_CTX* server_tls_ctx(const config::Node& node, std::string& err);
  SSL_CTX* new_server_ctx(std::string& err) const;

  // Admin console (admin.cpp)
  void admin_login(Client* c);
  void admin_query(Client* c, std::string_view sql);
  [[nodiscard]] bool tracks_prepared(const Pool* p) const;
  std::shared_ptr<PreparedStmt> prepared_stmt(std::string_view parse_rest);
  bool is_admin_db(const std::string& name) const { return name == "pgbouncer" || name == "pgpivot"; }
  bool pool_paused(const Pool* p) const {
    return suspended_ || paused_all_ || p->db->paused || (p->db->crt && !p->db->crt->routes());
  }

  // Clusters and failover (cluster.cpp)
  void sync_clusters();
  [[nodiscard]] const config::Node& active_node(const DbEntry* db) const;
  void health_tick();
  // A role check of `side` ended with obs[side] filled in.
  void check_result(ClusterRt* cl, int side, std::uint64_t latency_us);
  // Console SWITCHOVER / FAILOVER / FAILBACK / ABORT; "" or why not.
  std::string cluster_request(ClusterRt* cl, const std::string& kind);
  void cluster_progress(ClusterRt* cl);
  void apply_effects(ClusterRt* cl, failover::Effects&& e);
  void close_old_servers(ClusterRt* cl, const std::string& why);
  void repoint_pools(ClusterRt* cl);
  void wake_pools(ClusterRt* cl);
  void record_move(ClusterRt* cl, failover::Op op, const std::string& result);
  void finish_cluster_admin(ClusterRt* cl, const std::string& result);
  bool write_state_file(const std::string& path);
  void load_state_file(ClusterRt* cl);
  // Runs a hook through /bin/sh in its own process group; promote_command's exit
  // reaches the cluster's machine.
  void run_hook(ClusterRt* cl, const std::string& command, const char* what, int fence_side = -1);
  void close_health_checks();
  // A client's server died: tell the client what it may do, keep it connected.
  void client_server_lost(Client* c, Server* s);
  // A waiting client's buffered request is refused: ErrorResponse and
  // ReadyForQuery('I') for it (the Query, or everything up to its Sync); the
  // client goes back to idle with its connection open.
  void fail_waiting_client(Client* c, Reason why, std::initializer_list<std::string_view> args = {});
  // CancelRequest for the query running on `s`, on a connection of its own.
  void send_cancel(Server* s);
  // Clusters that can fail over hold clients through connection failures.
  [[nodiscard]] bool holds_through_outage(const Pool* p) const {
    return p->db->crt && p->db->crt->cfg->standby && p->db->crt->cfg->failover.auto_failover;
  }
  void pause_sweep();                        // close released servers of paused pools; finish PAUSE
  // HTTP stats endpoint on stats_listen (http.cpp): GET /metrics (Prometheus) and /stats (HTML).
  bool start_http();                         // false when stats_listen is set but cannot be bound
  void close_http(bool connections);         // stop accepting; with `connections`, drop open requests too
  std::string render_metrics();
  // What the console, /metrics and /stats read of every worker (control/snapshot.cpp):
  // the pools grouped by (database, user), one group per pool over the workers; SHOW
  // POOLS' columns of a group; the statistics per database.
  std::map<std::pair<std::string, std::string>, std::vector<Pool*>> pool_groups();
  static PoolCounts group_counts(const std::vector<Pool*>& parts);
  std::map<std::string, StatsSum> stats_by_database();
  std::string render_stats_page();
  void stats_tick();
  void update_averages(std::map<std::pair<std::string, std::string>, StatsSum>& lines);
  void suspend(bool on);
  void free_conn(Conn* c);                   // close callback
  void mark_dirty(Conn* c);                  // output to flush at the end of this loop turn
  void flush_dirty();
  void mark_dirty_loop();                    // run flush_dirty before the loop blocks again

  BufferPool& buffers() { return bufs_; }
  BufferPool& stream_buffers() { return stream_bufs_; }
  Conn::OutQ* take_outq();
  void give_outq(Conn::OutQ* q);
  uv_loop_t* loop() { return loop_; }
  Hub* hub() { return hub_; }
  [[nodiscard]] int shard() const { return shard_; }
  // The workers whose state control-plane code covers: every live worker while the
  // world is stopped (see hub.hpp), else this one.
  std::vector<Pooler*> world();
  std::vector<Pool*> world_pools();  // the pools of world()
  Pooler* control() { return hub_->shard(0); }  // the worker that runs health checks and failover
  void hub_message();                           // this worker's mailbox has mail (or a stop is pending)
  Ms now() const { return uv_now(loop_); }
  // Unique over the workers (worker i of N hands out i, N + i, 2N + i, ...; 1, 2, 3 with one).
  std::uint64_t next_id() { return ++id_seq_ * std::uint64_t(hub_->size()) + std::uint64_t(shard_); }

  int client_count() const { return client_count_; }
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>>& pools() { return pools_; }
  ListHead& login_clients() { return cl_login_; }

 private:
  void janitor();
  bool pending_done(const PendingAdmin& pa);
  void finish_pending_admin();
  void admin_show(Client* c, const std::string& what, const std::string& arg);
  void admin_command_done(Client* c, const std::string& tag);
  void admin_error(Client* c, Reason why, std::initializer_list<std::string_view> args = {});
  void on_signal(int signum);
  void shutdown_now();
  void begin_safe_shutdown();
  void begin_wait_for_clients();
  bool check_shutdown_done();
  void close_listeners();
  bool may_launch(Pool* p) const;
  bool adopt_welcome(Pool* p);
  void welcome_login_clients(Pool* p);
  void resume_idle_clients(Pool* p);
  void want_servers(Pool* p);          // another worker holds the pool's slots: ask for some back
  void give_back_servers(Pool* p);     // hold at most a fair share of a pool others wait for
  [[nodiscard]] int fair_share(const Pool* p, bool round_up) const;
  void on_service_message();
  void finish_pending_everywhere();
  void shutdown_all();                 // shutdown_now on every worker (world stopped)
  void apply_config(config::Config cfg);

  config::Config cfg_;
  uv_loop_t* loop_;
  std::unique_ptr<Hub> own_hub_;  // workers = 1
  Hub* hub_;
  int shard_;
  uv_async_t hub_async_{};
  bool hub_async_on_ = false;
  std::uint32_t unix_rr_ = 0;     // round-robin of Unix-socket clients over the workers
  BufferPool bufs_;         // pkt_buf-sized blocks for messages
  BufferPool stream_bufs_;  // 64 kB blocks for connections streaming large results or COPY
  std::vector<std::unique_ptr<Listener>> listeners_;
  uv_timer_t janitor_{};
  uv_check_t flush_check_{};
  uv_idle_t flush_idle_{};
  bool flush_idle_on_ = false;
  std::vector<Conn*> dirty_;
  std::vector<Conn*> flush_batch_;
  std::vector<Conn*> free_later_;
  std::vector<Conn::OutQ*> free_outq_;
  std::size_t outq_in_use_ = 0;
  uv_signal_t sig_hup_{}, sig_int_{}, sig_term_{}, sig_quit_{}, sig_usr1_{}, sig_usr2_{};
  std::map<std::string, std::unique_ptr<DbEntry>> dbs_;
  std::map<std::string, std::unique_ptr<UserEntry>> users_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;
  std::vector<Client*> cancel_slots_;           // by BackendKeyData pid - 1
  std::vector<std::uint32_t> free_cancel_slots_;
  ListHead cl_login_;  // clients before they have a pool
  int client_count_ = 0;
  std::uint64_t id_seq_ = 0;
  bool shutting_down_ = false;
  bool wait_for_clients_ = false;  // SHUTDOWN WAIT_FOR_CLIENTS
  bool paused_all_ = false;
  bool suspended_ = false;
  std::vector<PendingAdmin> pending_admin_;
  std::map<std::string, std::unique_ptr<ClusterRt>> clusters_;
  std::vector<FailoverEvent> failover_log_;
  static constexpr std::size_t kMaxRegistry = 10000;
  std::unordered_map<std::string, std::shared_ptr<PreparedStmt>> stmt_registry_;
  std::uint64_t next_stmt_id_ = 0;
  SSL_CTX* client_ctx_ = nullptr;  // pgpivot as TLS server for clients
  SSL_CTX* server_ctx_ = nullptr;  // pgpivot as TLS client of PostgreSQL
  std::map<std::string, SSL_CTX*> node_ctx_;  // per-node CA/cert overrides
  std::unique_ptr<DbEntry> admin_db_;
  std::unique_ptr<UserEntry> admin_user_;
  Pool* admin_pool_ = nullptr;
  Ms last_stats_tick_ = 0;
  bool stopping_ = false;
  std::string fake_salt_key_;  // for unknown users: stable fake SCRAM salts
  std::unique_ptr<HttpServer, HttpServerDeleter> http_;

  friend struct Client;
  friend struct Server;
};

// Logging: one line per event, to stderr and the optional log file.
// The file is created at once and written line by line; quiet keeps stderr silent.
void log_open(const std::string& logfile, bool quiet = false);
// Opens `logfile` again (after logrotate moved it, or a new name after a reload);
// on failure the old file stays in use and *error says why.
bool log_reopen(const std::string& logfile, std::string* error = nullptr);
// systemd's service notifications (sd_notify) when NOTIFY_SOCKET is set; nothing
// otherwise: READY=1 once listening, RELOADING=1 / READY=1 around a SIGHUP reload,
// STOPPING=1 when a shutdown begins.
void notify_service(const char* state);
void log_line(const char* level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_INFO(...) ::pgpivot::log_line("LOG", __VA_ARGS__)
#define LOG_WARN(...) ::pgpivot::log_line("WARNING", __VA_ARGS__)
#define LOG_ERROR(...) ::pgpivot::log_line("ERROR", __VA_ARGS__)

}  // namespace pgpivot
