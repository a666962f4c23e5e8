// Client login: the startup packet (SSLRequest, CancelRequest, parameters), the
// admin console's peer rule, and authentication (trust / md5 / SCRAM-SHA-256 /
// cleartext, with indistinguishable failures for unknown users; cert; with
// auth_type = hba the method of the matching rule, also peer and reject).
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <string_view>

#include "pooler/pooler.hpp"
#include "protocol/startup.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

namespace {

constexpr std::string_view kAllowedStartup[] = {"user", "database", "application_name", "client_encoding",
                                                "DateStyle", "TimeZone", "IntervalStyle",
                                                "standard_conforming_strings"};

// The "options" startup parameter, read as PgBouncer reads it: a list of
// "-c name=value" / "-cname=value" / "--name=value" pieces, separated by white space,
// a backslash escaping the character after it. Tracked parameters are taken (later
// ones win), others are skipped when they, or "options" itself, are in
// ignore_startup_parameters, else the login is refused. Returns false with the
// reason (and its argument) to refuse with.
bool read_startup_options(std::string_view opts, const std::vector<std::string>& ignore, TrackedParams& params,
                          Reason& why, std::string& arg) {
  auto ignored = [&](std::string_view name) {
    for (const auto& i : ignore)
      if (iequals(i, name) || iequals(i, "options")) return true;
    return false;
  };
  auto space = [](char ch) { return std::isspace(static_cast<unsigned char>(ch)) != 0; };
  std::size_t i = 0;
  while (true) {
    while (i < opts.size() && space(opts[i])) i++;
    if (i == opts.size()) return true;
    if (opts.substr(i, 2) == "-c") {
      i += 2;
      while (i < opts.size() && space(opts[i])) i++;
    } else if (opts.substr(i, 2) == "--") {
      i += 2;
    } else {
      why = Reason::UnsupportedOptionsSyntax;
      return false;
    }
    std::string token;
    for (; i < opts.size() && !space(opts[i]); i++) {
      if (opts[i] == '\\') {
        if (++i == opts.size()) break;
      }
      token += opts[i];
    }
    std::size_t eq = token.find('=');
    if (eq == std::string::npos) {
      why = Reason::UnsupportedOptionsSyntax;
      return false;
    }
    std::string name = token.substr(0, eq);
    int ti = tracked_index(name);
    if (ti >= 0) {
      params.set(ti, token.substr(eq + 1));
    } else if (!ignored(name)) {
      why = Reason::UnsupportedOptionsParameter;
      arg = name;
      return false;
    }
  }
}

}  // namespace

// The startup parameter "replication": true/on/yes/1 (physical) or database
// (logical) make this a replication connection; false/off/no/0 a normal one.
// Anything else is refused, as PostgreSQL does. False when the client was closed.
bool Client::take_replication(const std::vector<std::pair<std::string, std::string>>& params) {
  const std::string* mode = nullptr;
  const std::string* options = nullptr;
  for (const auto& [name, value] : params) {
    if (iequals(name, "replication")) mode = &value;
    if (iequals(name, "options")) options = &value;
  }
  if (!mode) return true;
  std::string m;
  for (char ch : *mode) m += char(std::tolower(static_cast<unsigned char>(ch)));
  if (m == "false" || m == "off" || m == "no" || m == "0") return true;
  if (m != "true" && m != "on" && m != "yes" && m != "1" && m != "database") {
    pooler->disconnect_client(this, Reason::BadReplicationParameter, {*mode});
    return false;
  }
  repl = std::make_unique<Replication>();
  repl->mode = *mode;
  if (options) repl->options = *options;
  return true;
}

Step Client::on_startup(const char* data, std::uint32_t len) {
  auto sp = proto::parse_startup(reinterpret_cast<const std::uint8_t*>(data), len);
  const auto& set = pooler->settings();
  switch (sp.kind) {
    case proto::StartupKind::SSLRequest:
      // Not over the Unix socket, as PgBouncer: the client goes on in plain text.
      if (SSL_CTX* ctx = pooler->tls().client(); ctx && !tls && !unix_socket) {
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
    const std::string& mode = pooler->tls().client_sslmode();  // the one applied
    if (!tls && !unix_socket && (mode == "require" || mode == "verify-ca" || mode == "verify-full")) {
      pooler->disconnect_client(this, Reason::SslRequired);
      return Step::Stop;
    }
  }
  const std::string* u = sp.get("user");
  const std::string* d = sp.get("database");
  user_name = u ? *u : "";
  db_name = d && !d->empty() ? Name(*d) : user_name;

  if (!take_replication(sp.params)) return Step::Stop;
  std::vector<std::string> unrecognized;
  for (const auto& [name, value] : sp.params) {
    if (iequals(name, "replication")) continue;                // take_replication's
    if (repl && iequals(name, "options")) continue;            // passed on verbatim
    if (name.rfind("_pq_.", 0) == 0) {
      unrecognized.push_back(name);
      continue;
    }
    if (name == "options") {
      Reason why{};
      std::string arg;
      if (!read_startup_options(value, set.ignore_startup_parameters, params, why, arg)) {
        if (why == Reason::UnsupportedOptionsParameter)
          LOG_WARN("C-%llu: %s/%s@%s unsupported startup parameter in options: %s", (unsigned long long)id,
                   db_name.c_str(), user_name.c_str(), remote.str().c_str(), arg.c_str());
        pooler->disconnect_client(this, why, {arg});
        return Step::Stop;
      }
      continue;
    }
    bool ok = false;
    for (auto allowed : kAllowedStartup) ok = ok || iequals(name, allowed);
    for (const auto& ign : set.ignore_startup_parameters) ok = ok || iequals(name, ign);
    ok = ok || tracked_index(name) >= 0;  // track_extra_parameters
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
  DbEntry* db = pooler->is_admin_db(db_name) ? nullptr : pooler->registry().find_db(db_name);
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
  UserEntry* user = pooler->registry().find_user(user_name);
  // PgBouncer's rule: a user without credentials of its own (not in auth_file, no
  // password in [users]) is looked up with auth_query when the database, or
  // [pooler], names an auth_user.
  const std::string& auth_user = pooler->registry().auth_user(db);
  if (!(user && user->known()) && !auth_user.empty()) return start_auth_lookup(db);
  return begin_auth(user);
}

// The OS user at the other end of a Unix socket, or "" when unknown.
std::string Client::peer_os_user() const {
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return "";
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[1024];
  if (getpwuid_r(cred.uid, &pw, buf, sizeof buf, &found) != 0 || !found) return "";
  return found->pw_name;
}

// auth_type = hba: the first rule of auth_hba_file matching this connection.
const config::HbaRule* Client::hba_rule() const {
  config::HbaConn c;
  c.unix_socket = unix_socket;
  c.family = remote.family == AF_INET ? 4 : remote.family == AF_INET6 ? 6 : 0;
  std::memcpy(c.addr.data(), remote.ip, sizeof remote.ip);
  c.tls = tls != nullptr;
  c.physical_replication = repl && !iequals(repl->mode, "database");
  c.db = db_name.str();
  c.user = user_name.str();
  return config::match_hba(pooler->cfg().hba, c);
}

Step Client::login_accepted() {
  login = LoginStep::Done;
  pooler->client_login_done(this);
  return closing ? Step::Stop : Step::Skip;
}

// TLS, a client certificate that verified against client_tls_ca_file (the handshake
// checked it), and a CommonName equal to the user name, or that the rule's map
// (auth_ident_file) lets log in as this user. As PgBouncer, the client is told only
// "certificate authentication failed" and the log has the reason; pgpivot adds the
// reason to the message, as it reveals nothing the client's own certificate does
// not, except for an unknown user.
Step Client::login_cert(UserEntry* user, const config::HbaRule* rule) {
  std::optional<std::string> cn = tls_peer_common_name();
  const config::IdentMap* map = rule && !rule->map.empty() ? pooler->cfg().hba.find_map(rule->map) : nullptr;
  bool mapped = cn && map && config::ident_allows(*map, *cn, user_name.str());
  const char* why = !tls ? "TLS connection required"
                    : !cn ? "TLS client certificate required"
                    : cn->empty() ? "Invalid TLS certificate"
                    : map && !mapped ? "ident map does not have a match"
                    : !map && *cn != user_name ? "TLS certificate name mismatch"
                    : !user ? "no such user"
                    : nullptr;
  if (!why) return login_accepted();
  if (map && !mapped && cn && !cn->empty())
    LOG_ERROR("C-%llu: %s/%s@%s ident map: %s does not have a match", (unsigned long long)id, db_name.c_str(),
              user_name.c_str(), remote.str().c_str(), map->name.c_str());
  LOG_WARN("C-%llu: %s/%s@%s certificate login failed: %s (certificate CN \"%s\")", (unsigned long long)id,
           db_name.c_str(), user_name.c_str(), remote.str().c_str(), why, cn ? cn->c_str() : "");
  pooler->disconnect_client(this, Reason::CertificateFailed, {user ? std::string(": ") + why : std::string()});
  return Step::Stop;
}

// peer (an hba rule): over the Unix socket, the OS user of the other end must be the
// user name, or the rule's map must let that OS user log in as it.
Step Client::login_peer(UserEntry* user, const config::HbaRule* rule) {
  std::string os_user = unix_socket ? peer_os_user() : std::string();
  const config::IdentMap* map = rule && !rule->map.empty() ? pooler->cfg().hba.find_map(rule->map) : nullptr;
  bool ok = !os_user.empty() && (map ? config::ident_allows(*map, os_user, user_name.str()) : os_user == user_name);
  if (ok && user && user->known()) return login_accepted();
  if (map && !ok)
    LOG_ERROR("C-%llu: %s/%s@%s ident map %s cannot be matched", (unsigned long long)id, db_name.c_str(),
              user_name.c_str(), remote.str().c_str(), map->name.c_str());
  const char* why = !unix_socket ? "not a Unix socket" : !ok ? "OS user not allowed" : "no such user";
  LOG_WARN("C-%llu: %s/%s@%s peer login failed: %s (OS user \"%s\")", (unsigned long long)id, db_name.c_str(),
           user_name.c_str(), remote.str().c_str(), why, os_user.c_str());
  pooler->disconnect_client(this, Reason::PeerFailed);
  return Step::Stop;
}

// The method for this login: auth_type's, or with auth_type = hba the matching
// rule's (nullopt: refused, the client is closed).
std::optional<config::AuthMethod> Client::choose_method(const config::HbaRule*& rule) {
  const auto& set = pooler->settings();
  rule = nullptr;
  if (set.auth_type != config::AuthType::Hba) return config::auth_method(set.auth_type);
  rule = hba_rule();
  using M = config::AuthMethod;
  if (rule && rule->method != M::Reject && rule->method != M::Ldap) return rule->method;
  Reason refuse = !rule ? Reason::HbaNoRule : rule->method == M::Reject ? Reason::HbaReject : Reason::LdapUnsupported;
  if (rule)
    LOG_INFO("C-%llu: %s/%s@%s refused by line %d of %s", (unsigned long long)id, db_name.c_str(), user_name.c_str(),
             remote.str().c_str(), rule->line, set.auth_hba_file.c_str());
  pooler->disconnect_client(this, refuse);
  return std::nullopt;
}

// Authenticates against `user`'s stored password (nullptr: an unknown user, who
// goes through the same exchange and fails).
Step Client::begin_auth(UserEntry* user) {
  const config::HbaRule* rule = nullptr;
  std::optional<config::AuthMethod> method = choose_method(rule);
  if (!method) return Step::Stop;
  using M = config::AuthMethod;
  M auth = *method;
  const std::string* password = user ? &user->cfg.password : nullptr;
  // Trust, cert and peer need no password, only a known user.
  if (user && password->empty() && auth != M::Trust && auth != M::Cert && auth != M::Peer) user = nullptr;
  unknown_user = !user;
  login_user = user;

  if (auth == M::Cert) return login_cert(user, rule);
  if (auth == M::Peer) return login_peer(user, rule);
  if (auth == M::Trust) {
    if (!user || !user->known()) {
      // Trust still requires the user to be known (auth_file, a [users] password,
      // or auth_query), as PgBouncer does.
      pooler->disconnect_client(this, Reason::TrustFailed);
      return Step::Stop;
    }
    return login_accepted();
  }
  std::string buf;
  if (auth == M::Password) {
    // The password in clear text (PgBouncer's "plain"): checked against any stored form.
    proto::auth_cleartext(buf);
    login = LoginStep::Cleartext;
    queue(buf);
    return Step::Skip;
  }
  // Choose the exchange the stored password allows: SCRAM secrets can only do
  // SCRAM, md5 hashes only md5 (so auth_type scram-sha-256 fails for them, as in
  // PostgreSQL); plain passwords do what auth_type says.
  bool stored_scram = password && password->rfind("SCRAM-SHA-256$", 0) == 0;
  bool stored_md5 = password && proto::is_md5_hash(*password);
  bool use_scram = auth == M::ScramSha256 || stored_scram;
  if (use_scram && stored_md5) {
    user = nullptr;
    unknown_user = true;
  }
  if (use_scram) {
    proto::ScramSecret secret;
    if (!user) {
      secret = pooler->registry().fake_secret(user_name);
    } else if (stored_scram) {
      auto parsed = proto::ScramSecret::parse(*password);
      if (!parsed) {
        LOG_WARN("user \"%s\" has an unparsable SCRAM secret", user_name.c_str());
        secret = pooler->registry().fake_secret(user_name);
      } else {
        secret = *parsed;
      }
    } else {
      if (!user->secret) {
        std::string salt(16, '\0');
        proto::random_bytes(reinterpret_cast<std::uint8_t*>(salt.data()), salt.size());
        user->secret = proto::ScramSecret::from_password(*password, salt, pooler->settings().scram_iterations);
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

// The client's role is looked up with auth_query on a server of the auth pool:
// (auth database, auth_user). The auth database is the database's auth_dbname,
// else [pooler]'s, else the client's own database (PgBouncer's order).
Step Client::start_auth_lookup(DbEntry* db) {
  const auto& set = pooler->settings();
  const std::string& auth_user = pooler->registry().auth_user(db);
  std::string auth_db = db && !db->cfg.auth_dbname.empty() ? db->cfg.auth_dbname : set.auth_dbname;
  if (auth_db.empty()) auth_db = db_name.str();
  if (pooler->is_admin_db(auth_db)) {
    LOG_ERROR("C-%llu: %s/%s@%s cannot use the reserved \"%s\" database as an auth_dbname", (unsigned long long)id,
              db_name.c_str(), user_name.c_str(), remote.str().c_str(), auth_db.c_str());
    pooler->disconnect_client(this, Reason::AuthConfigError);
    return Step::Stop;
  }
  DbEntry* adb = pooler->registry().find_db(auth_db);
  if (!adb) {
    LOG_ERROR("C-%llu: %s/%s@%s authentication database \"%s\" is not configured.", (unsigned long long)id,
              db_name.c_str(), user_name.c_str(), remote.str().c_str(), auth_db.c_str());
    pooler->disconnect_client(this, Reason::AuthConfigError);
    return Step::Stop;
  }
  if (adb->disabled) {
    pooler->disconnect_client(this, Reason::AuthDatabaseDisabled, {auth_db});
    return Step::Stop;
  }
  UserEntry* au = pooler->registry().auth_user(auth_user);
  pool = pooler->registry().get_pool(adb, auth_db, au, auth_user);
  auth_lookup = true;
  login = LoginStep::AuthQuery;
  pooler->client_request(this);
  return closing ? Step::Stop : Step::Skip;
}

void Client::auth_lookup_done(bool failed, bool found, const std::optional<std::string>& password) {
  if (closing || login != LoginStep::AuthQuery) return;
  if (failed) {
    pooler->disconnect_client(this, Reason::AuthConfigError);
    return;
  }
  if (!found) {
    LOG_INFO("C-%llu: %s/%s@%s no such user: %s", (unsigned long long)id, db_name.c_str(), user_name.c_str(),
             remote.str().c_str(), user_name.c_str());
    pooler->disconnect_client(this, Reason::AuthNoSuchUser);
    return;
  }
  // A NULL password (an expired VALID UNTIL with the default query) matches nothing.
  UserEntry* u = pooler->registry().dynamic_user(db_name.str(), user_name.str(), password.value_or(""));
  if (begin_auth(u) == Step::Stop || closing) return;
  // Bytes that arrived during the lookup (a pipelining client) are read now.
  if (rbuf && rend > rparse) process();
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
      UserEntry* user = unknown_user ? nullptr : login_user;
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
    case LoginStep::Cleartext: {
      auto pw = proto::parse_password_message(b);
      if (!pw) {
        pooler->disconnect_client(this, Reason::BadPasswordPacket);
        return Step::Stop;
      }
      // Whatever form is stored, the check costs the same for an unknown user.
      const std::string stored = unknown_user || !login_user ? std::string() : login_user->cfg.password;
      bool match = proto::check_plain_password(user_name.str(), *pw, stored) && !unknown_user && !pw->empty();
      if (!match) {
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
        pooler->disconnect_client(this, Reason::SaslFailed);
        return Step::Stop;
      }
      proto::auth_sasl_final(buf, *reply);
      queue(buf);
      // Keep ClientKey: it lets pgpivot log in to servers storing this secret.
      // Other workers learn it only for configured users (an auth_query's role
      // is looked up again in each worker).
      if (UserEntry* user = login_user) {
        user->client_key = scram->client_key();
        if (pooler->hub()->threaded() && user == pooler->registry().find_user(user_name))
          pooler->hub()->set_client_key(user_name, *user->client_key);
      }
      scram.reset();
      break;
    }
    case LoginStep::Startup:
    case LoginStep::AuthQuery:
    case LoginStep::WaitWelcome:
    case LoginStep::Done:
      pooler->disconnect_client(this, Reason::UnexpectedPassword);
      return Step::Stop;
  }
  login = LoginStep::Done;
  pooler->client_login_done(this);
  return closing ? Step::Stop : Step::Skip;
}

}  // namespace pgpivot
