// Client side: startup packet, authentication (trust / md5 / SCRAM-SHA-256 with
// indistinguishable failures for unknown users), then relaying the client's
// messages to the server it is given, counting the ReadyForQuery it is owed.
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "pooler/pooler.hpp"
#include "protocol/sql_class.hpp"
#include "protocol/startup.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); i++) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

bool starts_with_word(std::string_view sql, std::string_view word) {
  std::size_t i = 0;
  while (i < sql.size() && (std::isspace(static_cast<unsigned char>(sql[i])) || sql[i] == '(')) i++;
  if (sql.size() - i < word.size()) return false;
  if (!iequals(sql.substr(i, word.size()), word)) return false;
  std::size_t j = i + word.size();
  return j == sql.size() || !std::isalnum(static_cast<unsigned char>(sql[j]));
}

// A session-level SET (not SET LOCAL / SET TRANSACTION) or RESET changes state
// that outlives the transaction, so the server must be reset before reuse.
bool changes_session_state(std::string_view sql) {
  if (starts_with_word(sql, "RESET")) return true;
  if (!starts_with_word(sql, "SET")) return false;
  std::size_t i = 0;
  while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) i++;
  std::string_view rest = sql.substr(i + 3);
  return !starts_with_word(rest, "LOCAL") && !starts_with_word(rest, "TRANSACTION") &&
         !starts_with_word(rest, "CONSTRAINTS");
}

constexpr std::string_view kAllowedStartup[] = {"user", "database", "application_name", "client_encoding",
                                                "DateStyle", "TimeZone", "IntervalStyle",
                                                "standard_conforming_strings"};

}  // namespace

int tracked_index(std::string_view name) {
  for (int i = 0; i < kTrackedCount; i++) {
    if (iequals(name, kTrackedParams[i])) return i;
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Interned tracked-parameter sets.
struct TrackedParams::Rep {
  std::uint32_t refs = 0;
  std::string key;  // the serialized values, key of the intern table
  std::optional<std::string> v[kTrackedCount];
};

namespace {

// The intern tables and reference counts are shared by the workers; they change
// at logins and parameter changes, not per message.
std::mutex g_intern_mu;

std::unordered_map<std::string_view, TrackedParams::Rep*>& param_sets() {
  static std::unordered_map<std::string_view, TrackedParams::Rep*> table;
  return table;
}

const std::optional<std::string> kNoValue;

}  // namespace

TrackedParams::TrackedParams(const TrackedParams& o) : rep_(o.rep_) {
  std::lock_guard lk(g_intern_mu);
  if (rep_) rep_->refs++;
}

TrackedParams& TrackedParams::operator=(const TrackedParams& o) {
  std::lock_guard lk(g_intern_mu);
  if (o.rep_) o.rep_->refs++;
  assign(o.rep_);
  return *this;
}

TrackedParams::~TrackedParams() {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  assign(nullptr);
}

// Takes `r` (already counted) in place of the current set; g_intern_mu held.
void TrackedParams::assign(Rep* r) {
  if (rep_ && --rep_->refs == 0) {
    param_sets().erase(rep_->key);
    delete rep_;
  }
  rep_ = r;
}

const std::optional<std::string>& TrackedParams::get(int i) const { return rep_ ? rep_->v[i] : kNoValue; }

void TrackedParams::set(int i, std::optional<std::string> value) {
  if (get(i) == value) return;
  std::optional<std::string> v[kTrackedCount];
  for (int k = 0; k < kTrackedCount; k++) v[k] = k == i ? std::move(value) : get(k);
  std::string key;
  for (const auto& x : v) {
    if (x) {
      key += '1';
      key += *x;
      key += '\0';
    } else {
      key += '0';
    }
  }
  std::lock_guard lk(g_intern_mu);
  auto& table = param_sets();
  Rep* r;
  if (auto it = table.find(key); it != table.end()) {
    r = it->second;
  } else {
    r = new Rep();
    r->key = std::move(key);
    for (int k = 0; k < kTrackedCount; k++) r->v[k] = std::move(v[k]);
    table.emplace(r->key, r);
  }
  r->refs++;
  assign(r);
}

// Interned names.
struct Name::Rep {
  std::uint32_t refs = 0;
  std::string s;
};

namespace {

std::unordered_map<std::string_view, Name::Rep*>& name_table() {
  static std::unordered_map<std::string_view, Name::Rep*> table;
  return table;
}

const std::string kEmptyName;

}  // namespace

Name::Name(std::string_view s) {
  if (s.empty()) return;
  std::lock_guard lk(g_intern_mu);
  auto& table = name_table();
  if (auto it = table.find(s); it != table.end()) {
    rep_ = it->second;
  } else {
    rep_ = new Rep();
    rep_->s = std::string(s);
    table.emplace(rep_->s, rep_);
  }
  rep_->refs++;
}

Name::Name(const Name& o) : rep_(o.rep_) {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  rep_->refs++;
}

Name& Name::operator=(const Name& o) {
  if (o.rep_) {
    std::lock_guard lk(g_intern_mu);
    o.rep_->refs++;
  }
  this->~Name();
  rep_ = o.rep_;
  return *this;
}

Name::~Name() {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  if (--rep_->refs == 0) {
    name_table().erase(rep_->s);
    delete rep_;
  }
  rep_ = nullptr;
}

const std::string& Name::str() const { return rep_ ? rep_->s : kEmptyName; }

Conn* Client::peer() { return server; }

void Client::count_bytes(std::size_t n) {
  if (pool) pool->stats.received += n;
}

void Client::mark_query_start() {
  if (server->query_start_us == 0) {
    std::uint64_t t = uv_hrtime() / 1000;
    server->query_start_us = t;
    if (server->xact_start_us == 0) server->xact_start_us = t;
  }
}

void Client::on_closed() { pooler->disconnect_client(this, Reason::ClientClosed); }

void Client::on_tls_error(const std::string& why) {
  pooler->disconnect_client(this, Reason::ClientTlsError, {why});
}

void Client::on_protocol_error(const char* what) {
  pooler->disconnect_client(this, Reason::ProtocolViolation, {what});
}

void Client::send_error(const char* severity, const char* sqlstate, const std::string& msg) {
  proto::ErrorFields e;
  e.severity = severity;
  e.sqlstate = sqlstate;
  e.message = msg;
  std::string buf;
  proto::error_response(buf, e);
  queue(buf);
}

void Client::auth_failed() {
  pooler->disconnect_client(this, Reason::PasswordFailed, {user_name.str()});
}

// The server holding this client's transaction died: answer the next message
// with the error PostgreSQL would give after a failure, and drop extended-protocol
// messages up to the Sync.
Step Client::answer_lost_transaction(char type) {
  std::string buf;
  proto::ErrorFields e;
  e.sqlstate = pending_error[0] ? pending_error : sqlstate_of(Reason::TransactionLost);
  if (!notes_ || notes_->pending_message.empty()) {
    e.message = reason_text(Reason::TransactionLost);
    e.hint = "pgpivot keeps this connection open; the next statement runs on a healthy server";
  } else {
    e.message = std::move(notes_->pending_message);
    notes_->pending_message.clear();
  }
  bool owe_error = pending_error[0] != 0;
  pending_error[0] = 0;
  if (owe_error) proto::error_response(buf, e);
  if (type == 'Q' || type == 'F' || type == 'S') {
    proto::ready_for_query(buf, 'I');
    discard_until_sync = false;
  } else {
    discard_until_sync = true;
  }
  queue(buf);
  return Step::Skip;
}

Step Client::on_startup(const char* data, std::uint32_t len) {
  auto sp = proto::parse_startup(reinterpret_cast<const std::uint8_t*>(data), len);
  const auto& set = pooler->settings();
  switch (sp.kind) {
    case proto::StartupKind::SSLRequest:
      if (SSL_CTX* ctx = pooler->client_tls_ctx(); ctx && !tls) {
        if (rparse + len != rend) {
          pooler->disconnect_client(this, Reason::UnencryptedAfterSsl);
          return Step::Stop;
        }
        // 'S' goes out in plain text before the handshake, so it is written now.
        if (::send(fd, "S", 1, MSG_NOSIGNAL) != 1) {
          pooler->disconnect_client(this, Reason::SslAnswerFailed);
          return Step::Stop;
        }
        rparse += len;
        tls_start(ctx, true, "", false);
        return Step::Stop;  // everything after this arrives encrypted
      }
      queue("N");
      return Step::Skip;
    case proto::StartupKind::GSSENCRequest:
      // GSS encryption is not offered: the client goes on without it.
      queue("N");
      return Step::Skip;
    case proto::StartupKind::CancelRequest:
      pooler->client_change_state(this, ClientState::Cancel);
      pooler->handle_cancel(sp.cancel_pid, sp.cancel_key);
      pooler->disconnect_client(this, Reason::CancelRequestDone);
      return Step::Stop;
    case proto::StartupKind::BadVersion: {
      char version[32];
      std::snprintf(version, sizeof version, "%u.%u", sp.version >> 16, sp.version & 0xffff);
      pooler->disconnect_client(this, Reason::UnsupportedProtocol, {version});
      return Step::Stop;
    }
    case proto::StartupKind::Invalid:
      pooler->disconnect_client(this, Reason::InvalidStartup, {sp.error.empty() ? "invalid startup packet" : sp.error});
      return Step::Stop;
    case proto::StartupKind::Startup:
      break;
  }
  {
    const std::string& mode = set.client_tls_sslmode;
    if (!tls && (mode == "require" || mode == "verify-ca" || mode == "verify-full")) {
      pooler->disconnect_client(this, Reason::SslRequired);
      return Step::Stop;
    }
  }
  const std::string* u = sp.get("user");
  const std::string* d = sp.get("database");
  user_name = u ? *u : "";
  db_name = d && !d->empty() ? Name(*d) : user_name;

  std::vector<std::string> unrecognized;
  for (const auto& [name, value] : sp.params) {
    if (name.rfind("_pq_.", 0) == 0) {
      unrecognized.push_back(name);
      continue;
    }
    bool ok = false;
    for (auto allowed : kAllowedStartup) ok = ok || iequals(name, allowed);
    for (const auto& ign : set.ignore_startup_parameters) ok = ok || iequals(name, ign);
    if (!ok) {
      pooler->disconnect_client(this, Reason::UnsupportedStartupParameter, {name});
      return Step::Stop;
    }
    int ti = tracked_index(name);
    if (ti >= 0) params.set(ti, value);
  }
  if ((sp.version & 0xffff) != 0 || !unrecognized.empty()) {
    std::string buf;
    proto::negotiate_protocol_version(buf, 0, unrecognized);
    queue(buf);
  }
  if (set.application_name_add_host) {
    int ai = tracked_index("application_name");
    params.set(ai, params.get(ai).value_or("") + " - " + remote.str());
  }
  if (pooler->hub()->clients.load(std::memory_order_relaxed) > set.max_client_conn) {
    pooler->disconnect_client(this, Reason::TooManyClients);
    return Step::Stop;
  }
  if (set.log_connections) {
    std::string tls_desc = tls_description();
    LOG_INFO("C-%llu: %s/%s@%s login attempt: db=%s user=%s tls=%s", (unsigned long long)id, db_name.c_str(),
             user_name.c_str(), remote.str().c_str(), db_name.c_str(), user_name.c_str(),
             tls_desc.empty() ? "no" : tls_desc.c_str());
  }
  DbEntry* db = pooler->is_admin_db(db_name) ? nullptr : pooler->find_db(db_name);
  if (pooler->is_admin_db(db_name) && unix_socket && user_name == "pgbouncer") {
    // As PgBouncer: the OS user running the pooler reaches the console over the
    // Unix socket without a password.
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        cred.uid == geteuid()) {
      login = LoginStep::Done;
      peer_admin = true;
      pooler->client_login_done(this);
      return closing ? Step::Stop : Step::Skip;
    }
  }
  if (!db && !pooler->is_admin_db(db_name)) {
    pooler->disconnect_client(this, Reason::NoSuchDatabase, {db_name.str()});
    return Step::Stop;
  }
  UserEntry* user = pooler->find_user(user_name);
  const std::string* password = user ? &user->cfg.password : nullptr;
  config::AuthType auth = set.auth_type;
  // Trust and cert need no password, only a known user.
  if (user && password->empty() && auth != config::AuthType::Trust && auth != config::AuthType::Cert) user = nullptr;
  unknown_user = !user;

  if (auth == config::AuthType::Cert) {
    // As PgBouncer 1.18: TLS, a client certificate that verified against
    // client_tls_ca_file (the handshake checked it), and a CommonName equal to the
    // user name from the startup packet. PgBouncer tells the client only
    // "certificate authentication failed" and logs the reason; pgpivot adds
    // PgBouncer's reason to the message, as it reveals nothing the client's own
    // certificate does not, except for an unknown user.
    std::optional<std::string> cn = tls_peer_common_name();
    const char* why = !tls ? "TLS connection required"
                      : !cn ? "TLS client certificate required"
                      : cn->empty() ? "Invalid TLS certificate"
                      : *cn != user_name ? "TLS certificate name mismatch"
                      : !user ? "no such user"
                      : nullptr;
    if (why) {
      LOG_WARN("C-%llu: %s/%s@%s certificate login failed: %s (certificate CN \"%s\")", (unsigned long long)id,
               db_name.c_str(), user_name.c_str(), remote.str().c_str(), why, cn ? cn->c_str() : "");
      pooler->disconnect_client(this, Reason::CertificateFailed, {user ? std::string(": ") + why : std::string()});
      return Step::Stop;
    }
    login = LoginStep::Done;
    pooler->client_login_done(this);
    return closing ? Step::Stop : Step::Skip;
  }
  if (auth == config::AuthType::Trust) {
    if (!user) {
      // Trust still requires the user to be known, as PgBouncer does.
      auth_failed();
      return Step::Stop;
    }
    login = LoginStep::Done;
    pooler->client_login_done(this);
    return closing ? Step::Stop : Step::Skip;
  }
  // Choose the exchange the stored password allows: SCRAM secrets can only do
  // SCRAM, md5 hashes only md5; plain passwords do what auth_type says.
  bool stored_scram = password && password->rfind("SCRAM-SHA-256$", 0) == 0;
  bool stored_md5 = password && proto::is_md5_hash(*password);
  bool use_scram = auth == config::AuthType::ScramSha256 ? !stored_md5 : stored_scram;
  std::string buf;
  if (use_scram) {
    proto::ScramSecret secret;
    if (!user) {
      secret = pooler->fake_secret(user_name);
    } else if (stored_scram) {
      auto parsed = proto::ScramSecret::parse(*password);
      if (!parsed) {
        LOG_WARN("user \"%s\" has an unparsable SCRAM secret", user_name.c_str());
        secret = pooler->fake_secret(user_name);
      } else {
        secret = *parsed;
      }
    } else {
      if (!user->secret) {
        std::string salt(16, '\0');
        proto::random_bytes(reinterpret_cast<std::uint8_t*>(salt.data()), salt.size());
        user->secret = proto::ScramSecret::from_password(*password, salt, 4096);
      }
      secret = *user->secret;
    }
    scram = std::make_unique<proto::ScramServer>(secret);
    proto::auth_sasl(buf, {"SCRAM-SHA-256"});
    login = LoginStep::SaslFirst;
  } else {
    proto::random_bytes(md5_salt, 4);
    proto::auth_md5(buf, md5_salt);
    login = LoginStep::Md5;
  }
  queue(buf);
  return Step::Skip;
}

Step Client::handle_password(const char* body, std::uint32_t len) {
  std::string_view b(body, len);
  std::string buf;
  switch (login) {
    case LoginStep::Md5: {
      auto pw = proto::parse_password_message(b);
      if (!pw) {
        pooler->disconnect_client(this, Reason::BadPasswordPacket);
        return Step::Stop;
      }
      // An unknown user goes through the same hashing and comparison (against the
      // hash of an empty password) so that it fails in the same time as a wrong password.
      UserEntry* user = unknown_user ? nullptr : pooler->find_user(user_name);
      std::string stored = user ? user->cfg.password : std::string();
      if (!proto::is_md5_hash(stored)) stored = proto::md5_password_hash(user_name.str(), stored);
      std::string expect = proto::md5_salted_response(stored, md5_salt);
      bool match = proto::constant_time_equal(*pw, expect);
      if (!match || unknown_user) {
        auth_failed();
        return Step::Stop;
      }
      break;
    }
    case LoginStep::SaslFirst: {
      auto init = proto::parse_sasl_initial_response(b);
      if (!init) {
        pooler->disconnect_client(this, Reason::BadSaslInitial);
        return Step::Stop;
      }
      if (init->mechanism != "SCRAM-SHA-256") {
        pooler->disconnect_client(this, Reason::BadSaslMechanism);
        return Step::Stop;
      }
      auto reply = scram->client_first(init->data);
      if (!reply) {
        pooler->disconnect_client(this, Reason::BadScramMessage, {scram->error()});
        return Step::Stop;
      }
      proto::auth_sasl_continue(buf, *reply);
      queue(buf);
      login = LoginStep::SaslFinal;
      return Step::Skip;
    }
    case LoginStep::SaslFinal: {
      auto reply = scram->client_final(b);
      if (!reply || unknown_user) {
        auth_failed();
        return Step::Stop;
      }
      proto::auth_sasl_final(buf, *reply);
      queue(buf);
      // Keep ClientKey: it lets pgpivot log in to servers storing this secret.
      if (UserEntry* user = pooler->find_user(user_name)) {
        user->client_key = scram->client_key();
        if (pooler->hub()->threaded()) pooler->hub()->set_client_key(user_name, *user->client_key);
      }
      scram.reset();
      break;
    }
    case LoginStep::Startup:
    case LoginStep::Cleartext:
    case LoginStep::WaitWelcome:
    case LoginStep::Done:
      pooler->disconnect_client(this, Reason::UnexpectedPassword);
      return Step::Stop;
  }
  login = LoginStep::Done;
  pooler->client_login_done(this);
  return closing ? Step::Stop : Step::Skip;
}

Step Client::on_header(char type, std::uint32_t wire_size) {
  if (state == ClientState::Login) {
    if (login == LoginStep::Md5 || login == LoginStep::SaslFirst || login == LoginStep::SaslFinal) {
      if (type != 'p') {
        pooler->disconnect_client(this, Reason::ExpectedPassword, {std::string_view(&type, 1)});
        return Step::Stop;
      }
      if (wire_size > 8192) {
        pooler->disconnect_client(this, Reason::PasswordTooLong);
        return Step::Stop;
      }
      return Step::Inspect;
    }
    // Waiting for the pool's parameters: keep what the client sent for later.
    return Step::Hold;
  }
  if (type == 'X') {
    pooler->disconnect_client(this, Reason::ClientTerminate);
    return Step::Stop;
  }
  if (admin) {
    if (type == 'Q' && wire_size <= 65536) return Step::Inspect;
    pooler->disconnect_client(this, Reason::ConsoleSimpleOnly);
    return Step::Stop;
  }
  if (type == '\0' || !std::strchr("QPBEDCHSFdcf", type)) {
    // What PostgreSQL says to a message type it does not know. Forwarding it would
    // only get the server's FATAL, which is not passed on, so the client would wait
    // for an answer forever while the server connection is thrown away.
    pooler->disconnect_client(this, Reason::BadMessageType, {std::to_string(static_cast<unsigned char>(type))});
    return Step::Stop;
  }
  if (pending_error[0] || discard_until_sync) return answer_lost_transaction(type);
  if (drop_until_sync && server) {
    if (type != 'S') return Step::Skip;  // PostgreSQL skips to the Sync after an error
    drop_until_sync = false;
  }
  if (!server) {
    if (state == ClientState::Idle) pooler->client_request(this);
    if (closing) return Step::Stop;
    if (!server) return Step::Hold;
  }
  switch (type) {
    case 'Q':
      if (wire_size <= 16384) return Step::Inspect;  // small enough to look for SET
      mark_query_start();
      note_statement(proto::kSqlMayCommit);  // not looked at: it may commit
      server->expect_z++;
      if (server->tracking) server->push_slot(Slot::Query);
      return Step::Forward;
    case 'S':
      mark_query_start();
      server->expect_z++;
      server->unsynced = false;
      if (server->tracking) server->push_slot(Slot::Sync);
      return Step::Forward;
    case 'F':
      mark_query_start();
      note_statement(0);  // a function call: commits when run outside a transaction
      server->expect_z++;
      if (server->tracking) server->push_slot(Slot::Query);
      return Step::Forward;
    case 'P':
    case 'B':
      mark_query_start();
      server->unsynced = true;
      if (!server->tracking && wire_size > kMaxInspectExt) {
        // Streamed, not buffered (a Bind with large parameters): what it names is
        // not known, so what runs from it counts as possibly committing.
        if (type == 'P') {
          ext_stmts_unknown = true;
          pool->stats.client_parse_count++;
          pool->stats.server_parse_count++;
        } else {
          ext_portals_unknown = true;
          pool->stats.bind_count++;
        }
        return Step::Forward;
      }
      return Step::Inspect;  // the statement's text (and, when tracked, its name is rewritten)
    case 'D':
      server->unsynced = true;
      if (server->tracking) return Step::Inspect;
      return Step::Forward;
    case 'C':
      server->unsynced = true;
      return Step::Inspect;  // which statement or portal is closed
    case 'E':
      server->unsynced = true;
      return Step::Inspect;  // which portal: may it commit?
    case 'H':
      server->unsynced = true;
      return Step::Forward;
    default:
      return Step::Forward;
  }
}

Step Client::on_message(const char* data, std::uint32_t wire_size) {
  if (state == ClientState::Login) return handle_password(data + 5, wire_size - 5);
  if (data[0] != 'Q') return extended_message(data, wire_size);
  auto sql = proto::parse_query(std::string_view(data + 5, wire_size - 5));
  if (!sql) {
    pooler->disconnect_client(this, Reason::BadQuery);
    return Step::Stop;
  }
  if (admin) {
    pooler->admin_query(this, *sql);
    return closing ? Step::Stop : Step::Skip;
  }
  mark_query_start();
  std::uint8_t bits = proto::sql_class_bits(*sql);
  Server* s = server;
  if ((bits & proto::kSqlBeginOnly) && s->expect_z == 0 && !s->unsynced && s->txn == 'I') {
    // Nothing else in flight, outside a transaction: if the server dies before
    // answering, the next one gets the same BEGIN and the client never knows.
    notes().replay.assign(data, wire_size);
    s->begin_in_flight = true;
    s->begin_sent = true;
    s->answered = false;
  } else {
    note_statement(bits);
  }
  server->expect_z++;
  if (server->tracking) server->push_slot(Slot::Query);
  // Only a few statements matter here; the first letter rules out most queries cheaply.
  std::size_t i = 0;
  while (i < sql->size() && std::isspace(static_cast<unsigned char>((*sql)[i]))) i++;
  char first = i < sql->size() ? char(std::toupper(static_cast<unsigned char>((*sql)[i]))) : '\0';
  if (first == 'D' && server->tracking) note_deallocate(*sql);
  if ((first == 'S' || first == 'R') && changes_session_state(*sql)) server->needs_reset = true;
  return Step::Forward;
}

void Client::note_statement(std::uint8_t bits) {
  Server* s = server;
  if (bits & proto::kSqlBeginOnly) {
    s->begin_sent = true;
  } else if ((bits & proto::kSqlMayCommit) || (s->txn == 'I' && !s->begin_sent)) {
    // A COMMIT-like statement, or one that runs in autocommit (outside a
    // transaction, and no BEGIN ahead of it in flight): it may have committed.
    s->commit_in_flight = true;
  }
  s->begin_in_flight = false;  // more than a replayable transaction start is in flight now
  clear_replay();
}

std::uint8_t Client::ext_class(char kind, std::string_view name) {
  // Not seen (SQL PREPARE, or a message too large to look at): assume the worst.
  if (!notes_ || (kind == 'S' ? ext_stmts_unknown : ext_portals_unknown)) return proto::kSqlMayCommit;
  std::string key(1, kind);
  key += name;
  auto it = notes_->ext_class.find(key);
  return it == notes_->ext_class.end() ? proto::kSqlMayCommit : it->second;
}

void Client::set_ext_class(char kind, std::string_view name, std::uint8_t bits) {
  auto& map = notes().ext_class;
  if (map.size() >= kMaxExtClasses) {
    // A client that never closes its statements: forget them all, and from now
    // on say 40003 (unknown) rather than guess.
    map.clear();
    ext_stmts_unknown = true;
  }
  std::string key(1, kind);
  key += name;
  map[key] = bits;
}

void Client::forget_ext_class(char kind, std::string_view name) {
  if (!notes_) return;
  std::string key(1, kind);
  key += name;
  notes_->ext_class.erase(key);
}

// Portals end with their transaction: at ReadyForQuery 'I' the named ones are gone.
void Client::transaction_ended() {
  ext_portals_unknown = false;
  if (!notes_ || notes_->ext_class.size() < 16) return;
  auto& map = notes_->ext_class;
  for (auto it = map.begin(); it != map.end();) {
    if (it->first[0] == 'P') it = map.erase(it);
    else ++it;
  }
}

// Parse, Bind, Execute (and, when statements are tracked, Describe and Close):
// remember what each statement's text may do, then pass on or rewrite.
Step Client::extended_message(const char* data, std::uint32_t wire_size) {
  char type = data[0];
  proto::Reader r(std::string_view(data + 5, wire_size - 5));
  if (type == 'P') {
    auto name = r.cstr();
    auto text = r.cstr();
    if (name && text) set_ext_class('S', *name, proto::sql_class_bits(*text));
  } else if (type == 'B') {
    auto portal = r.cstr();
    auto name = r.cstr();
    if (portal && name) set_ext_class('P', *portal, ext_class('S', *name));
  } else if (type == 'E') {
    auto portal = r.cstr();
    // An extended-protocol BEGIN is not replayed: its Parse/Bind answers may
    // already have reached the client. It counts as a statement like any other.
    note_statement(portal ? ext_class('P', *portal) : proto::kSqlMayCommit);
    if (server->tracking) server->push_slot(Slot::Execute);
    return Step::Forward;
  } else if (type == 'C') {
    auto kind = r.u8();
    auto name = r.cstr();
    if (kind && name && (*kind == 'S' || *kind == 'P')) forget_ext_class(char(*kind), *name);
  }
  if (server->tracking) return prepared_message(data, wire_size);
  if (type == 'P') {
    pool->stats.client_parse_count++;
    pool->stats.server_parse_count++;
  } else if (type == 'B') {
    pool->stats.bind_count++;
  }
  return Step::Forward;
}

}  // namespace pgpivot
