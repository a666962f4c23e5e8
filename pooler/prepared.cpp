// Protocol-level prepared statements in transaction and statement mode.
//
// A client's named statement maps to a pooler-wide statement (one per distinct
// query text and parameter types) named PGPIVOT_<n> on the servers. Each server
// remembers which of them it has (an LRU bounded by max_prepared_statements)
// and is given a Parse before a Bind/Describe that needs one. Because some
// client messages are answered by pgpivot (a Parse of a statement the server
// already has, a Close) and some server answers are hidden (ParseComplete for an
// injected Parse, CloseComplete for an eviction), every extended-protocol
// message sent to the server gets a slot in a FIFO; the server's completions
// pop them in order, and pgpivot's own answers are emitted when they reach the
// head, so the client sees exactly the sequence PostgreSQL would send.
#include <cctype>
#include <cstring>

#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

namespace {

bool ieq_prefix(std::string_view sql, std::string_view word) {
  std::size_t i = 0;
  while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) i++;
  if (sql.size() - i < word.size()) return false;
  for (std::size_t k = 0; k < word.size(); k++) {
    if (std::toupper(static_cast<unsigned char>(sql[i + k])) != word[k]) return false;
  }
  return true;
}

// Splits "DEALLOCATE   ALL" style commands into upper-case words.
bool is_command(std::string_view sql, std::initializer_list<std::string_view> words) {
  std::size_t i = 0;
  for (auto w : words) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) i++;
    if (!ieq_prefix(sql.substr(i), w)) return false;
    i += w.size();
  }
  while (i < sql.size() && (std::isspace(static_cast<unsigned char>(sql[i])) || sql[i] == ';')) i++;
  return i == sql.size();
}

void message(std::string& out, char type, std::string_view body) {
  proto::Writer w(out);
  w.begin(type).bytes(body).end();
}

}  // namespace

bool Pooler::tracks_prepared(const Pool* p) const {
  return cfg_.pooler.max_prepared_statements > 0 && registry_.pool_mode(p) != config::PoolMode::Session && !p->admin;
}

std::shared_ptr<PreparedStmt> StatementRegistry::get(std::string_view parse_rest) {
  std::string key(parse_rest);
  auto it = stmts_.find(key);
  if (it != stmts_.end()) return it->second;
  // Statements outlive the clients that named them: servers keep them prepared,
  // and the next client with the same query must get the same server-side name.
  // The registry is bounded; when it is full, statements no client names any more
  // are forgotten (a server still holding one just ages it out of its LRU).
  if (stmts_.size() >= kMax) {
    for (auto i = stmts_.begin(); i != stmts_.end();) {
      i = i->second.use_count() == 1 ? stmts_.erase(i) : std::next(i);
    }
  }
  auto sp = std::make_shared<PreparedStmt>();
  sp->id = ++next_id_;
  sp->name = "PGPIVOT_" + std::to_string(sp->id);
  sp->parse_rest = key;
  stmts_[key] = sp;
  return sp;
}

// ---------------------------------------------------------------------------
// Server side: the slot FIFO

void Server::push_slot(Slot s, std::uint64_t stmt, std::string client_name) {
  if (skip_to_sync && s != Slot::Sync) return;  // PostgreSQL ignores these after an error
  if (s == Slot::Sync) skip_to_sync = false;
  slots.push_back(SlotEntry{s, stmt, std::move(client_name)});
  if (s == Slot::FakeParse || s == Slot::FakeClose || s == Slot::FakeError) emit_fakes();
}

void Server::emit_fakes() {
  if (!client) return;
  std::string buf;
  while (!slots.empty()) {
    Slot k = slots.front().kind;
    if (k == Slot::FakeParse || k == Slot::FakeClose) {
      message(buf, k == Slot::FakeParse ? '1' : '3', {});
    } else if (k == Slot::FakeError) {
      proto::ErrorFields e;
      e.sqlstate = sqlstate_of(Reason::PreparedExists);
      e.message = reason_text(Reason::PreparedExists, {slots.front().client_name});
      proto::error_response(buf, e);
    } else {
      break;
    }
    slots.pop_front();
  }
  if (!buf.empty()) client->queue(buf);
}

// Pops a slot that gets no answer because the server skipped its message after
// an error: a Parse among them did not create its statement.
void Server::drop_slot_front() {
  SlotEntry& e = slots.front();
  if ((e.kind == Slot::Parse || e.kind == Slot::HideParse) && e.stmt) {
    prepared_on.erase(e.stmt);
    if (client && !e.client_name.empty()) {
      auto it = client->prepared().find(e.client_name);
      if (it != client->prepared().end() && it->second.stmt->id == e.stmt) it->second.unconfirmed = true;
    }
  }
  slots.pop_front();
}

void Server::pop_until(Slot a, Slot b) {
  while (!slots.empty()) {
    Slot s = slots.front().kind;
    slots.pop_front();
    if (s == a || s == b) return;
  }
}

// Called with the type of each message the server sends to a linked client while
// slots are tracked (ErrorResponse included, from on_message); decides Forward or
// Skip (hidden completions).
Step Server::track_response(char type) {
  emit_fakes();  // answers due before this message
  if (slots.empty()) return Step::Forward;  // notices, parameter status, ...
  Slot head = slots.front().kind;
  switch (type) {
    case '1':
      if (head == Slot::HideParse) {
        slots.pop_front();
        return Step::Skip;
      }
      if (head == Slot::Parse) slots.pop_front();
      return Step::Forward;
    case '3':
      if (head == Slot::HideClose) {
        slots.pop_front();
        return Step::Skip;
      }
      if (head == Slot::Close) slots.pop_front();
      return Step::Forward;
    case '2':
      if (head == Slot::Bind) slots.pop_front();
      return Step::Forward;
    case 'T':
    case 'n':
      if (head == Slot::Describe) slots.pop_front();
      return Step::Forward;
    case 'C':
    case 's':
    case 'I':
      if (head == Slot::Execute) slots.pop_front();
      return Step::Forward;
    case 'E':
      if (head == Slot::Query) return Step::Forward;  // the Query's ReadyForQuery follows
      // Extended protocol: the server skips everything up to the next Sync, so do
      // the slots (pgpivot's own answers in between were never due either).
      {
        bool sync_queued = false;
        for (const auto& s : slots) sync_queued = sync_queued || s.kind == Slot::Sync;
        while (!slots.empty() && slots.front().kind != Slot::Sync) drop_slot_front();
        if (!sync_queued) skip_to_sync = true;
      }
      return Step::Forward;
    default:
      return Step::Forward;
  }
}

void Server::track_ready_for_query() {
  emit_fakes();
  pop_until(Slot::Sync, Slot::Query);
}

void Server::on_pass_end() {
  // Answers of pgpivot's that became due after the last completion forwarded.
  if (fwd_left == 0 && client && !slots.empty()) emit_fakes();
}

// Makes sure statement `st` exists on this server, sending a Parse (and an
// eviction Close) ahead of whatever comes next. `client_name` is empty when the
// client did not ask for this Parse itself (it is then hidden from the client).
void Server::ensure_prepared(const std::shared_ptr<PreparedStmt>& st, const std::string& client_name) {
  bool hidden = client_name.empty();
  std::uint64_t tick = ++prepared_tick;
  auto it = prepared_on.find(st->id);
  if (it != prepared_on.end()) {
    it->second = tick;
    if (!hidden) push_slot(Slot::FakeParse);
    return;
  }
  std::string buf;
  auto max = std::size_t(pooler->settings().max_prepared_statements);
  // Down to one below the limit: after SET lowered max_prepared_statements, the
  // next Parse evicts the surplus too, as PgBouncer does.
  while (prepared_on.size() >= max && !prepared_on.empty()) {
    auto victim = prepared_on.begin();
    for (auto i = prepared_on.begin(); i != prepared_on.end(); ++i) {
      if (i->second < victim->second) victim = i;
    }
    std::string body = "S";
    body += "PGPIVOT_" + std::to_string(victim->first);
    body += '\0';
    message(buf, 'C', body);
    prepared_on.erase(victim);
    push_slot(Slot::HideClose);
  }
  std::string body = st->name;
  body += '\0';
  body += st->parse_rest;
  message(buf, 'P', body);
  queue(buf);
  // Counted as prepared from now on, so later messages of the same batch do not
  // prepare it twice; forgotten again if the server rejects or skips the Parse.
  prepared_on[st->id] = tick;
  push_slot(hidden ? Slot::HideParse : Slot::Parse, st->id, client_name);
  pool->stats.server_parse_count++;
}

// ---------------------------------------------------------------------------
// Client side: Parse / Bind / Describe / Close with statement names

Step Client::prepared_message(const char* data, std::uint32_t wire_size) {
  char type = data[0];
  std::string_view body(data + 5, wire_size - 5);
  proto::Reader r(body);
  Server* s = server;
  switch (type) {
    case 'P': {
      auto name = r.cstr();
      if (!name) break;
      if (name->empty()) {
        // The unnamed statement lives only until the next Parse: pass it through
        // (and, as PgBouncer, outside the prepared-statement counters).
        s->push_slot(Slot::Parse);
        return Step::Forward;
      }
      std::string cname(*name);
      auto known = prepared().find(cname);
      if (s->skip_to_sync) {
        // The server would ignore it, so it is not sent; the name is noted all the
        // same (see ClientStmt).
        if (known == prepared().end() || known->second.unconfirmed) {
          prepared()[cname] = ClientStmt{pooler->statements().get(r.rest()), true};
        }
        return Step::Skip;
      }
      if (known != prepared().end() && !known->second.unconfirmed) {
        // PgBouncer's log line (it closes the connection); pgpivot gives
        // PostgreSQL's answer, and its rule that the rest up to Sync is skipped.
        LOG_WARN("C-%llu: %s/%s@%s prepared statement '%s' was already prepared", (unsigned long long)id,
                 db_name.c_str(), user_name.c_str(), remote.str().c_str(), cname.c_str());
        s->push_slot(Slot::FakeError, 0, cname);
        s->skip_to_sync = true;
        drop_until_sync = true;
        return Step::Skip;
      }
      pool->stats.client_parse_count++;
      auto st = pooler->statements().get(r.rest());
      prepared()[cname] = ClientStmt{st, false};
      s->ensure_prepared(st, cname);
      return Step::Skip;
    }
    case 'B': {
      auto portal = r.cstr();
      auto name = r.cstr();
      if (!portal || !name) break;
      if (!name->empty()) pool->stats.bind_count++;  // named statements only, as PgBouncer
      auto it = name->empty() ? prepared().end() : prepared().find(std::string(*name));
      if (it == prepared().end()) {
        // Unnamed, or unknown: the server answers (for unknown names with the same
        // error PostgreSQL gives, since no server has the client's name).
        s->push_slot(Slot::Bind);
        return Step::Forward;
      }
      s->ensure_prepared(it->second.stmt, {});
      std::string b(*portal);
      b += '\0';
      b += it->second.stmt->name;
      b += '\0';
      b += r.rest();
      std::string buf;
      message(buf, 'B', b);
      s->queue(buf);
      s->push_slot(Slot::Bind);
      return Step::Skip;
    }
    case 'D':
    case 'C': {
      auto kind = r.u8();
      auto name = r.cstr();
      if (!kind || !name) break;
      Slot real = type == 'D' ? Slot::Describe : Slot::Close;
      auto it = (*kind == 'S' && !name->empty()) ? prepared().find(std::string(*name)) : prepared().end();
      if (it == prepared().end()) {
        if (type == 'C' && *kind == 'S' && !name->empty()) {
          // Closing a statement that does not exist is not an error in PostgreSQL.
          s->push_slot(Slot::FakeClose);
          return Step::Skip;
        }
        s->push_slot(real);
        return Step::Forward;
      }
      if (type == 'C') {
        // Other clients may share the server-side statement: only forget the name.
        prepared().erase(it);
        s->push_slot(Slot::FakeClose);
        return Step::Skip;
      }
      s->ensure_prepared(it->second.stmt, {});
      std::string b = "S";
      b += it->second.stmt->name;
      b += '\0';
      std::string buf;
      message(buf, 'D', b);
      s->queue(buf);
      s->push_slot(Slot::Describe);
      return Step::Skip;
    }
    default:
      break;
  }
  pooler->disconnect_client(this, Reason::BadExtendedMessage, {std::string_view(&type, 1)});
  return Step::Stop;
}

// DEALLOCATE ALL and DISCARD ALL drop every statement on the server, and the
// client's names with them.
void Client::note_deallocate(std::string_view sql) {
  if (is_command(sql, {"DEALLOCATE", "ALL"}) || is_command(sql, {"DEALLOCATE", "PREPARE", "ALL"}) ||
      is_command(sql, {"DISCARD", "ALL"})) {
    prepared_.reset();
    if (server) server->prepared_on.clear();
  }
}

}  // namespace pgpivot
