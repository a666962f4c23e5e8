// Client side after login: relaying the client's messages to the server it is
// given, counting the ReadyForQuery it is owed, and noting what a failover must
// know of them (the login itself is client_auth.cpp).
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


}  // namespace


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

void Client::auth_failed() { pooler->disconnect_client(this, Reason::PasswordFailed, {user_name.str()}); }

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

Step Client::on_header(char type, std::uint32_t wire_size) {
  // A login waiting for its auth_query sits in the auth pool's waiting list, but
  // nothing it sends may be taken as a request before it has authenticated.
  if (state == ClientState::Login || login == LoginStep::AuthQuery) {
    if (login == LoginStep::Md5 || login == LoginStep::SaslFirst || login == LoginStep::SaslFinal ||
        login == LoginStep::Cleartext) {
      if (type != 'p') {
        pooler->disconnect_client(this, Reason::ExpectedPassword, {std::string_view(&type, 1)});
        return Step::Stop;
      }
      // PgBouncer takes passwords of up to 65530 bytes; anything much longer is no password.
      if (wire_size > kMaxPasswordMessage) {
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
        } else {
          ext_portals_unknown = true;
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
    pooler->console().query(this, *sql);
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
  // The parse and bind counters count tracked named statements only (PgBouncer's
  // ps_ counters): untracked messages pass through uncounted.
  if (server->tracking) return prepared_message(data, wire_size);
  return Step::Forward;
}

}  // namespace pgpivot
