#include "pooler/reasons.hpp"

#include <array>

namespace pgpivot {

namespace {

using R = Reason;

// In enum order (checked at first use, and by the unit test).
constexpr ReasonInfo kTable[] = {
    {R::ClientClosed, nullptr, "client closed the connection", false},
    {R::ClientTerminate, nullptr, "client sent Terminate", false},
    {R::CancelRequestDone, nullptr, "cancel request", false},
    {R::SslAnswerFailed, nullptr, "could not answer SSLRequest", false},
    {R::ClientTlsError, "08P01", "TLS error: {}", false},
    {R::ProtocolViolation, "08P01", "protocol violation: {}"},
    {R::UnencryptedAfterSsl, "08P01", "received unencrypted data after SSL request"},
    {R::UnsupportedProtocol, "0A000", "unsupported frontend protocol {}: server supports 3.0 to 3.0"},
    {R::InvalidStartup, "08P01", "{}"},
    {R::SslRequired, "28000", "SSL required"},
    {R::UnsupportedStartupParameter, "08P01", "unsupported startup parameter: {}"},
    {R::UnsupportedOptionsSyntax, "08P01",
     "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"},
    {R::UnsupportedOptionsParameter, "08P01", "unsupported startup parameter in options: {}"},
    {R::TooManyClients, "53300", "no more connections allowed (max_client_conn)"},
    {R::TooManyDbClients, "53300", "no more connections allowed (max_db_client_connections)"},
    {R::TooManyUserClients, "53300", "no more connections allowed (max_user_client_connections)"},
    {R::NoSuchDatabase, "3D000", "database \"{}\" does not exist"},
    {R::DatabaseDisabled, "57P03", "database does not allow connections: {}"},
    {R::PasswordFailed, "28P01", "password authentication failed for user \"{}\""},
    // PgBouncer's texts for the other methods: clients and log alerts match on them.
    {R::SaslFailed, "28P01", "SASL authentication failed"},
    {R::TrustFailed, "28000", "\"trust\" authentication failed"},
    // auth_query found no such role (PgBouncer tells the client as much).
    {R::AuthNoSuchUser, "28000", "no such user"},
    // The auth_query cannot run: its database is missing or reserved, or it failed
    // (the log has the reason).
    {R::AuthConfigError, "08P01", "bouncer config error"},
    {R::AuthDatabaseDisabled, "57P03", "authentication database \"{}\" is disabled"},
    {R::BadReplicationParameter, "22023", "invalid value for parameter \"replication\": \"{}\""},
    // A replication client's own server refused the login (the log has the server's words).
    {R::ReplicationLoginFailed, "08P01", "login failed"},
    {R::CertificateFailed, "28000", "certificate authentication failed{}"},
    // auth_type hba: PgBouncer's texts (it sends them with 08P01; pgpivot with 28000,
    // as PostgreSQL does for its own pg_hba.conf refusals).
    {R::HbaNoRule, "28000", "no authentication method is found"},
    {R::HbaReject, "28000", "login rejected"},
    {R::PeerFailed, "28000", "unix socket login rejected"},
    {R::LdapUnsupported, "28000", "ldap is not supported by this build"},
    {R::ConsoleNotAllowed, "28000",
     "not allowed to connect to the admin console: user \"{}\" is in neither admin_users nor stats_users"},
    {R::BadPasswordPacket, "08P01", "invalid password packet"},
    {R::BadSaslInitial, "08P01", "malformed SASLInitialResponse message"},
    {R::BadSaslMechanism, "08P01", "client selected an invalid SASL authentication mechanism"},
    {R::BadScramMessage, "08P01", "malformed SCRAM message: {}"},
    {R::UnexpectedPassword, "08P01", "unexpected password message"},
    {R::ExpectedPassword, "08P01", "expected password response, got message type {}"},
    {R::PasswordTooLong, "08P01", "password packet too long"},
    {R::ConsoleSimpleOnly, "08P01", "the admin console supports only the simple query protocol"},
    {R::BadMessageType, "08P01", "invalid frontend message type {}"},
    {R::BadQuery, "08P01", "invalid Query message"},
    {R::BadExtendedMessage, "08P01", "invalid message of type {}"},
    // Its SQLSTATE is the failing server's when there is one (passed by the caller).
    {R::LoginRetry, "08P01", "server login has been failing, try again later (server_login_retry): {}"},
    {R::LoginTimeout, "08P01", "client_login_timeout"},
    {R::ClusterRefusingLogin, "08006", "cluster {}: {}"},
    // The timeouts' texts are PgBouncer's: clients and log alerts match on them.
    {R::QueryWaitTimeout, "57014", "query_wait_timeout{}"},
    // A client still waiting for a server when its query_timeout passes; "{}": the
    // pool's last server login failure, if any.
    {R::QueryTimeoutWaiting, "57014", "query_timeout{}"},
    {R::ClientIdleTimeout, "57P05", "client_idle_timeout"},
    {R::IdleTransactionTimeout, "25P03", "idle transaction timeout"},
    {R::TransactionTimeout, "25P04", "transaction timeout"},
    {R::StatementModeTransaction, "25P01", "transaction blocks not allowed in statement pooling mode"},
    {R::ShuttingDown, "57P01", "pgpivot is shutting down"},
    // PgBouncer's texts (its tests and log alerts match on them).
    {R::ServerShuttingDown, "57P01", "server shutting down"},
    {R::PoolerShuttingDown, "57P03", "pooler is shutting down"},
    {R::KilledByAdmin, "08P01", "client killed by admin"},
    {R::DatabaseKilled, "08P01", "database removed"},
    {R::DatabaseConfigChanged, "57P01", "database configuration changed"},  // PgBouncer's text
    {R::ServerClosedMidMessage, "08006", "server connection closed in the middle of a message: {}", false},
    {R::ServerClosedMidStream, "08006", "server connection closed: {}"},
    {R::TransactionLost, "40001", "server connection lost; the transaction was rolled back and can be retried"},
    {R::CommitUnknown, "40003",
     "server connection lost while the statement was in flight; whether it committed is unknown"},
    {R::QueryTimeout, "57014", "query timeout"},
    {R::ClusterRefusing, "08006", "cluster {}: {}"},
    {R::PreparedExists, "42P05", "prepared statement \"{}\" already exists"},
    {R::ServerConnectFailed, "08006", "could not connect to server {}: {}"},
    {R::ServerResolveFailed, "08006", "could not resolve host \"{}\": {}"},
    {R::ServerConnectTimeout, "08006", "server_connect_timeout: could not log in to {} in time"},
    {R::ServerClosedDuringLogin, "08006", "server {} closed the connection during login"},
    {R::ServerNoSsl, "08006", "server {} does not support SSL, but server_tls_sslmode is {}"},
    {R::ServerBadSslAnswer, "08006", "invalid response to SSLRequest"},
    {R::ServerTlsError, "08006", "TLS error with server {}: {}"},
    {R::ServerTlsSetup, "08006", "TLS setup: {}"},
    {R::ServerProtocolError, "08P01", "protocol error from server: {} ({})"},
    {R::ServerWantsCleartext, "28000",
     "server login failed: wrong password type (the server asks for a cleartext password, but only a hash is "
     "stored for user \"{}\")"},
    {R::ServerMd5Impossible, "28000", "server login failed: wrong password type (cannot answer the server's md5 challenge for user \"{}\")"},
    {R::ServerNoSaslMechanism, "28000", "server offers no supported SASL mechanism"},
    {R::ServerNoScramKeys, "28P01",
     "server login failed: wrong password type (no SCRAM keys to log in to the server as \"{}\": a client must "
     "first log in with SCRAM)"},
    {R::ServerScramNoPassword, "28000", "server login failed: wrong password type (the server asks for SCRAM, but no usable password is stored "
     "for user \"{}\")"},
    {R::ServerScramInvalid, "08P01", "invalid SCRAM exchange with server"},
    {R::ServerScramSignature, "08P01", "server's SCRAM signature did not verify"},
    {R::ServerAuthUnsupported, "28000", "unsupported authentication method {} requested by server"},
    {R::ServerLoginFailed, "08P01", "server login failed"},  // an ErrorResponse that does not parse
    {R::AdminShowNeedsArgument, "42601", "SHOW needs an argument; see SHOW HELP"},
    {R::AdminUnknownCommand, "42601", "unknown command \"{}\"; try SHOW HELP"},
    {R::AdminUnknownShow, "42601", "unknown SHOW item \"{}\"; try SHOW HELP"},
    {R::AdminNotAllowed, "42501", "admin access needed for {} (stats_users may only SHOW)"},
    {R::AdminNeedsDatabase, "42601", "{} needs a database name"},
    {R::AdminNoSuchDatabase, "08P01", "no such database: {}"},  // PgBouncer's admin_error SQLSTATE
    {R::AdminNoSuchCluster, "42704", "no such cluster: {}"},
    {R::AdminNeedsCluster, "42601", "{} needs a cluster name ({} clusters have a standby)"},
    {R::AdminMoveRefused, "55000", "{}"},
    {R::AdminMoveEnded, "08006", "cluster {}: {}"},
    {R::AdminNoSuchClient, "08P01", "client not found: {}"},
    {R::AdminBadClientId, "08P01", "invalid client pointer supplied: \"{}\" is not a client id"},
    {R::AdminKillSelf, "42601", "cannot kill the console's own connection"},
    {R::AdminReloadFailed, "F0000", "RELOAD failed, see logs for additional details"},
    {R::AdminShutdownMode, "42601", "SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS"},
    {R::AdminSetUsage, "42601", "usage: SET key = value"},
    {R::AdminUnknownSetting, "42704", "unknown config key: {}"},
    {R::AdminSettingNeedsRestart, "55P02", "{} cannot be changed at run time; edit the config and restart"},
    {R::AdminSettingNeedsReload, "55P02", "{} is changed by RELOAD; edit the config and reload"},
    {R::AdminSettingInvalid, "22023", "invalid value for {}: {}"},
    {R::AdminShuttingDown, "08P01", "pooler is shutting down"},  // PgBouncer's SQLSTATE and text
};
static_assert(sizeof kTable / sizeof kTable[0] == kReasons, "one entry per Reason");

constexpr bool in_order() {
  for (int i = 0; i < kReasons; i++)
    if (int(kTable[i].reason) != i) return false;
  return true;
}
static_assert(in_order(), "kTable is in enum order");

}  // namespace

const ReasonInfo& reason_info(Reason r) { return kTable[int(r)]; }

std::string reason_text(Reason r, std::initializer_list<std::string_view> args) {
  std::string_view t = reason_info(r).text;
  std::string out;
  out.reserve(t.size() + 32);
  auto arg = args.begin();
  for (std::size_t i = 0; i < t.size(); i++) {
    if (t[i] == '{' && i + 1 < t.size() && t[i + 1] == '}') {
      if (arg != args.end()) out += *arg++;
      i++;
    } else {
      out += t[i];
    }
  }
  return out;
}

}  // namespace pgpivot
