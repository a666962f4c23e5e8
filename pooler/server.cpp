// Server side: connecting and logging in to PostgreSQL (trust, cleartext, md5,
// SCRAM-SHA-256 with the password or passed-through client keys), then relaying
// results to the linked client while watching ReadyForQuery and ParameterStatus.
#include <cstring>

#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

// Keeps the server's view of a reported parameter; returns its tracked index or -1.
int Server::record_parameter(const proto::ParameterStatus& ps) {
  int ti = tracked_index(ps.name);
  if (ti >= 0) params.set(ti, ps.value);
  return ti;
}

// After link() SET the client's parameters: where the server holds a different
// spelling of the same value (DateStyle ISO is "ISO, MDY"), PostgreSQL reported
// nothing, so the client takes the server's form -- or every hand-out would SET
// it again (PgBouncer's varcache_set_canonical, its debug line word for word).
void Server::adopt_canonical() {
  for (int i = 0; i < tracked_count(); i++) {
    const auto& mine = client->params.get(i);
    const auto& theirs = params.get(i);
    if (!mine || !theirs || *mine == *theirs) continue;
    LOG_DEBUG("C-%llu: %s/%s@%s varcache_set_canonical: setting %s to its canonical version %s -> %s",
              (unsigned long long)client->id, client->db_name.c_str(), client->user_name.c_str(),
              client->remote.str().c_str(), tracked_name(i), mine->c_str(), theirs->c_str());
    client->params.set(i, theirs);
  }
}

Conn* Server::peer() { return internal_z > 0 ? nullptr : client; }

void Server::count_bytes(std::size_t n) {
  if (client) pool->stats.sent += n;
}

void Server::on_closed() {
  if (state == ServerState::Login) {
    // Clients waiting for this login must hear about it (or keep waiting for a failover).
    pooler->server_login_failed(this, Reason::ServerClosedDuringLogin, {addr});
    return;
  }
  pooler->disconnect_server(this, "server closed the connection unexpectedly");
}

void Server::on_tls_error(const std::string& why) {
  pooler->server_login_failed(this, Reason::ServerTlsError, {addr, why});
}

void Server::on_raw_byte(char b) {
  awaiting_ssl_byte = false;
  bool required = sslmode == "require" || sslmode == "verify-ca" || sslmode == "verify-full";
  if (b == 'S') {
    if (rparse != rend) {
      on_protocol_error("unencrypted data after the SSL response");
      return;
    }
    std::string err;
    SSL_CTX* ctx = pooler->tls().server(active_node(pool->db), err);
    if (!ctx) {
      pooler->server_login_failed(this, Reason::ServerTlsSetup, {err});
      return;
    }
    bool verify = sslmode == "verify-ca" || sslmode == "verify-full";
    tls_start(ctx, false, sslmode == "verify-full" ? host : std::string(), verify);
    return;
  }
  if (b == 'N' && !required) {
    send_startup();
    return;
  }
  if (b == 'N')
    pooler->server_login_failed(this, Reason::ServerNoSsl, {addr, sslmode});
  else
    pooler->server_login_failed(this, Reason::ServerBadSslAnswer);
}

void Server::on_tls_ready() { send_startup(); }

void Server::on_protocol_error(const char* what) {
  std::string why = std::string("protocol error from server: ") + what;
  // During login the clients waiting for this server must hear it now, not at
  // client_login_timeout.
  if (state == ServerState::Login) {
    pooler->server_login_failed(this, Reason::ServerProtocolError, {what, addr});
    return;
  }
  pooler->disconnect_server(this, why);
}

void Server::after_forward() {
  if (release_after_forward) {
    release_after_forward = false;
    pooler->server_release(this);
  }
}

// Login messages are small; anything longer is not PostgreSQL talking (an HTTP
// server's "HTTP/1.1 ..." reads as a 1.4 GB message), and waiting for it would
// allocate a buffer of that size and keep the clients waiting.
constexpr std::uint32_t kMaxLoginMessage = 1 << 20;

Step Server::on_header(char type, std::uint32_t wire_size) {
  if (state == ServerState::Login) {
    if (!std::strchr("RSKEZNv", type) || type == '\0') {
      on_protocol_error("unexpected message type during login");
      return Step::Stop;
    }
    if (wire_size > kMaxLoginMessage) {
      on_protocol_error("oversized message during login");
      return Step::Stop;
    }
    return Step::Inspect;
  }
  if (internal_z > 0) {
    // Replies to pgpivot's own query: only these matter, the rest is dropped.
    if (type == 'Z' || type == 'S' || type == 'E') return Step::Inspect;
    if (auth && (type == 'T' || type == 'D')) return Step::Inspect;
    return Step::Skip;
  }
  switch (type) {
    case 'Z':
    case 'S':
      return Step::Inspect;
    case 'E':
      return Step::Inspect;  // FATAL errors are not passed on (see on_message)
    default:
      if (!client) return Step::Skip;
      if (type != 'N' && type != 'A') answered = true;  // a BEGIN in flight can no longer be replayed
      return tracking ? track_response(type) : Step::Forward;
  }
}

Step Server::on_message(const char* data, std::uint32_t wire_size) {
  std::string_view body(data + 5, wire_size - 5);
  char type = data[0];
  if (state == ServerState::Login) return login_message(type, body);
  switch (type) {
    case 'Z': {
      if (body.size() != 1) {
        on_protocol_error("bad ReadyForQuery");
        return Step::Stop;
      }
      txn = body[0];
      if (internal_z > 0) {
        if (--internal_z == 0 && client) adopt_canonical();  // link()'s SETs are done
        if (internal_z == 0) {
          if (auth) {
            pooler->auth_query_done(this);
          } else {
            pooler->internal_done(this);
          }
        }
        return Step::Skip;
      }
      if (!client) return Step::Skip;
      if (expect_z > 0) expect_z--;
      if (tracking) track_ready_for_query();
      Pool* p = pool;
      if (p->db->crt) p->db->crt->note_datapath_ok(pooler->now());  // the node serves: checks corroborate
      std::uint64_t t = uv_hrtime() / 1000;
      p->stats.query_count++;
      if (query_start_us) p->stats.query_time += t - query_start_us;
      query_start_us = expect_z > 0 ? t : 0;
      if (txn == 'I') {
        p->stats.xact_count++;
        if (xact_start_us) p->stats.xact_time += t - xact_start_us;
        xact_start_us = 0;
      }
      if (expect_z == 0) {
        commit_in_flight = false;
        begin_in_flight = false;
        begin_sent = false;
        client->clear_replay();
      }
      if (txn == 'I') client->transaction_ended();
      // `unsynced`: the client already sent more of a pipeline (a Parse after this
      // Sync, say). Those messages are on this server, so it stays linked until
      // the Sync that ends them, as PgBouncer 1.21+ keeps it.
      if (expect_z == 0 && client->fwd_left == 0 && !repl && !unsynced) {
        if (txn == 'I') {
          if (pooler->registry().pool_mode(p) != config::PoolMode::Session) release_after_forward = true;
        } else if (pooler->registry().pool_mode(p) == config::PoolMode::Statement) {
          // The client is closed and this ReadyForQuery consumed; the server is
          // rolled back before reuse by the disconnect path.
          pooler->disconnect_client(client, Reason::StatementModeTransaction);
          return Step::Skip;
        }
      }
      return Step::Forward;
    }
    case 'S': {
      auto ps = proto::parse_parameter_status(body);
      if (!ps) {
        on_protocol_error("bad ParameterStatus");
        return Step::Stop;
      }
      int ti = record_parameter(*ps);
      if (internal_z > 0 || !client) return Step::Skip;
      if (ti >= 0) client->params.set(ti, ps->value);
      return Step::Forward;
    }
    case 'E': {
      auto err = proto::parse_error_response(body);
      bool fatal = err && (err->severity == "FATAL" || err->severity == "PANIC");
      bool ours = internal_z > 0 || !client;
      if (err && (ours || fatal)) {
        LOG_WARN("S-%llu: %s/%s@%s server error %s %s: %s", (unsigned long long)id, pool->db_name.c_str(),
                 pool->user_name.c_str(), addr.c_str(), err->severity.c_str(), err->sqlstate.c_str(),
                 err->message.c_str());
      }
      if (fatal) {
        // The backend is going away (terminated, shut down, idle timeout...). Its
        // FATAL would make the client's driver drop the connection, so it is not
        // passed on: the client hears 40001/40003 if it had work in flight, and
        // otherwise simply gets another server next time.
        // A backend that ends because its postmaster died (57P01 "unexpected
        // postmaster exit") or another backend crashed (57P02) says the whole node
        // is going: this pool's idle servers there are doomed too. Closing them now
        // keeps the next statement from being lost on one of them as well.
        bool node_gone = err->sqlstate == "57P02" ||
                         (err->sqlstate == "57P01" && err->message.find("postmaster exit") != std::string::npos);
        Pool* p = pool;
        Pooler* owner = pooler;
        const std::string node = addr, msg = err->message, sqlstate = err->sqlstate;  // `this` may be gone below
        owner->disconnect_server(this, "server sent FATAL: " + msg);
        if (node_gone && p) {
          p->sv_idle.for_each<Server>([&](Server* s) {
            if (s->addr == node) owner->disconnect_server(s, "another backend of this node reported: " + msg);
          });
          p->each_server([&](Server* s) {
            if (s->addr == node) s->close_needed = true;
          });
        } else if (p && sqlstate.rfind("57P0", 0) == 0) {
          // 57P01 "administrator command" ends one backend (pg_terminate_backend) or
          // all of them (a fast shutdown, a Patroni switchover): for a moment the
          // pool's servers there are checked before their next use, not trusted.
          p->suspect_at = owner->now();
          p->suspect_node = node;
        }
        return Step::Stop;
      }
      if (auth) auth->failed = true;  // logged above, with the server's message
      if (ours) return Step::Skip;
      answered = true;
      return tracking ? track_response('E') : Step::Forward;
    }
    case 'T':
    case 'D':
      if (auth && internal_z > 0) auth_row(type, body);
      return Step::Skip;
    default:
      return Step::Skip;
  }
}

// The auth_query's answer: two columns (role name, password); the first row
// naming the client's role counts. A password of NULL matches nothing.
void Server::auth_row(char type, std::string_view body) {
  const char* bad = nullptr;
  if (type == 'T') {
    auto n = proto::parse_row_description(body);
    if (!n) {
      bad = "bad RowDescription";
    } else if (*n != 2) {
      LOG_ERROR("S-%llu: %s/%s@%s expected 2 columns from auth_query, not %u", (unsigned long long)id,
                pool->db_name.c_str(), pool->user_name.c_str(), addr.c_str(), unsigned(*n));
      auth->failed = true;
    }
  } else {
    auto row = proto::parse_data_row(body);
    if (!row || row->size() != 2) {
      bad = "bad DataRow";
    } else if (!(*row)[0]) {
      LOG_ERROR("S-%llu: %s/%s@%s auth_query response contained null user name", (unsigned long long)id,
                pool->db_name.c_str(), pool->user_name.c_str(), addr.c_str());
      auth->failed = true;
    } else if (!auth->found && auth->client && *(*row)[0] == auth->client->user_name.str()) {
      auth->found = true;
      auth->password = (*row)[1];
    }
  }
  if (bad) {
    LOG_ERROR("S-%llu: %s/%s@%s auth_query: %s", (unsigned long long)id, pool->db_name.c_str(),
              pool->user_name.c_str(), addr.c_str(), bad);
    auth->failed = true;
  }
}

Step Server::login_message(char type, std::string_view body) {
  std::string buf;
  switch (type) {
    case 'R': {
      auto ar = proto::parse_auth_request(body);
      if (!ar) {
        on_protocol_error("bad authentication request");
        return Step::Stop;
      }
      const std::string& password = login_password();
      bool stored_scram = password.rfind("SCRAM-SHA-256$", 0) == 0;
      bool stored_md5 = proto::is_md5_hash(password);
      switch (ar->code) {
        case 0:
          return Step::Skip;
        case 3:
          if (stored_scram || stored_md5 || password.empty()) {
            pooler->server_login_failed(this, Reason::ServerWantsCleartext, {pool->user->cfg.name});
            return Step::Stop;
          }
          proto::password_message(buf, password);
          break;
        case 5: {
          if (ar->data.size() != 4 || stored_scram || password.empty()) {
            pooler->server_login_failed(this, Reason::ServerMd5Impossible, {pool->user->cfg.name});
            return Step::Stop;
          }
          std::string hash = stored_md5 ? password : proto::md5_password_hash(pool->user->cfg.name, password);
          proto::password_message(buf, proto::md5_salted_response(hash, reinterpret_cast<const std::uint8_t*>(ar->data.data())));
          break;
        }
        case 10: {
          bool ok = false;
          for (const auto& m : ar->mechanisms) ok = ok || m == "SCRAM-SHA-256";
          if (!ok) {
            pooler->server_login_failed(this, Reason::ServerNoSaslMechanism);
            return Step::Stop;
          }
          if (stored_scram) {
            auto secret = proto::ScramSecret::parse(password);
            if (!pool->user->client_key && pooler->hub()->threaded()) {
              // The client login that taught the key may have happened in another worker.
              proto::Key32 k{};
              if (pooler->hub()->client_key(pool->user->cfg.name, k)) pool->user->client_key = k;
            }
            if (!secret || !pool->user->client_key) {
              pooler->server_login_failed(this, Reason::ServerNoScramKeys, {pool->user->cfg.name});
              return Step::Stop;
            }
            scram = std::make_unique<proto::ScramClient>(*pool->user->client_key, secret->server_key);
          } else if (stored_md5 || password.empty()) {
            pooler->server_login_failed(this, Reason::ServerScramNoPassword, {pool->user->cfg.name});
            return Step::Stop;
          } else {
            scram = std::make_unique<proto::ScramClient>(password);
          }
          proto::sasl_initial_response(buf, "SCRAM-SHA-256", scram->client_first());
          break;
        }
        case 11: {
          std::optional<std::string> reply;
          if (scram) reply = scram->server_first(ar->data);
          if (!reply) {
            pooler->server_login_failed(this, Reason::ServerScramInvalid);
            return Step::Stop;
          }
          proto::sasl_response(buf, *reply);
          break;
        }
        case 12:
          if (!scram || !scram->server_final(ar->data)) {
            pooler->server_login_failed(this, Reason::ServerScramSignature);
            return Step::Stop;
          }
          scram.reset();
          return Step::Skip;
        default:
          pooler->server_login_failed(this, Reason::ServerAuthUnsupported, {std::to_string(ar->code)});
          return Step::Stop;
      }
      queue(buf);
      return Step::Skip;
    }
    case 'S': {
      auto ps = proto::parse_parameter_status(body);
      if (!ps) {
        on_protocol_error("bad ParameterStatus");
        return Step::Stop;
      }
      record_parameter(*ps);
      bool found = false;
      for (auto& kv : all_params) {
        if (kv.first == ps->name) {
          kv.second = ps->value;
          found = true;
        }
      }
      if (!found) all_params.emplace_back(ps->name, ps->value);
      return Step::Skip;
    }
    case 'K': {
      auto k = proto::parse_backend_key_data(body);
      if (!k) {
        on_protocol_error("bad BackendKeyData");
        return Step::Stop;
      }
      pid = k->pid;
      key = k->key;
      return Step::Skip;
    }
    case 'E': {
      auto err = proto::parse_error_response(body);
      std::string code = err ? err->sqlstate : sqlstate_of(Reason::ServerLoginFailed);
      std::string msg = err ? err->message : reason_text(Reason::ServerLoginFailed);
      pooler->server_login_failed(this, code, msg);
      return Step::Stop;
    }
    case 'Z':
      txn = body.empty() ? 'I' : body[0];
      pooler->server_ready(this);
      return closing ? Step::Stop : Step::Skip;
    case 'N':
    case 'v':
      return Step::Skip;
    default:
      on_protocol_error("unexpected message during login");
      return Step::Stop;
  }
}

const std::string& Server::login_password() const {
  if (!pool->db->cfg.password.empty() && !pool->db->cfg.user.empty()) return pool->db->cfg.password;
  return pool->user->cfg.password;
}

}  // namespace pgpivot
