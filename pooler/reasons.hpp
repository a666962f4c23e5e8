// Every error and disconnect pgpivot itself sends, named once: its SQLSTATE, whether
// the client is told (an ErrorResponse before the connection closes) and its message,
// whose "{}" marks are filled in order. Errors a server sent are passed on as they
// came and are not listed here. No libuv, no sockets: test/pooler/test_reasons.cpp.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace pgpivot {

enum class Reason : std::uint8_t {
  // The client connection ends without an error (nothing to tell, or no one to tell it).
  ClientClosed,
  ClientTerminate,
  CancelRequestDone,
  SslAnswerFailed,
  ClientTlsError,
  // The client connection ends with a FATAL error.
  ProtocolViolation,
  UnencryptedAfterSsl,
  UnsupportedProtocol,
  InvalidStartup,
  SslRequired,
  UnsupportedStartupParameter,
  UnsupportedOptionsSyntax,     // "options" with something else than -c name=value
  UnsupportedOptionsParameter,  // "options" setting a parameter that is not tracked
  TooManyClients,
  TooManyDbClients,
  TooManyUserClients,
  NoSuchDatabase,
  DatabaseDisabled,
  PasswordFailed,
  SaslFailed,
  TrustFailed,
  AuthNoSuchUser,
  AuthConfigError,
  AuthDatabaseDisabled,
  BadReplicationParameter,
  ReplicationLoginFailed,
  CertificateFailed,
  HbaNoRule,        // auth_type hba: no rule matches the connection
  HbaReject,        // the matching rule says reject
  PeerFailed,       // peer: not the OS user the rule (or its map) allows
  LdapUnsupported,  // the matching rule says ldap
  ConsoleNotAllowed,
  BadPasswordPacket,
  BadSaslInitial,
  BadSaslMechanism,
  BadScramMessage,
  UnexpectedPassword,
  ExpectedPassword,
  PasswordTooLong,
  ConsoleSimpleOnly,
  BadMessageType,
  BadQuery,
  BadExtendedMessage,
  LoginRetry,
  LoginTimeout,
  ClusterRefusingLogin,
  QueryWaitTimeout,
  QueryTimeoutWaiting,
  ClientIdleTimeout,
  IdleTransactionTimeout,
  TransactionTimeout,
  StatementModeTransaction,
  ShuttingDown,
  ServerShuttingDown,   // SHUTDOWN WAIT_FOR_SERVERS: a client that wants a server
  PoolerShuttingDown,   // a login while a shutdown waits
  KilledByAdmin,
  DatabaseKilled,
  DatabaseConfigChanged,  // server_fast_close
  ServerClosedMidMessage,
  ServerClosedMidStream,
  // A statement is answered with an ERROR; the client stays connected.
  TransactionLost,
  CommitUnknown,
  QueryTimeout,
  ClusterRefusing,
  PreparedExists,
  // A server login fails (the clients waiting for it hear it).
  ServerConnectFailed,
  ServerResolveFailed,
  ServerConnectTimeout,
  ServerClosedDuringLogin,
  ServerNoSsl,
  ServerBadSslAnswer,
  ServerTlsError,
  ServerTlsSetup,
  ServerProtocolError,
  ServerWantsCleartext,
  ServerMd5Impossible,
  ServerNoSaslMechanism,
  ServerNoScramKeys,
  ServerScramNoPassword,
  ServerScramInvalid,
  ServerScramSignature,
  ServerAuthUnsupported,
  ServerLoginFailed,
  // The admin console answers a command with an ERROR.
  AdminShowNeedsArgument,
  AdminUnknownCommand,
  AdminUnknownShow,
  AdminNotAllowed,
  AdminNeedsDatabase,
  AdminNoSuchDatabase,
  AdminNoSuchCluster,
  AdminNeedsCluster,
  AdminMoveRefused,
  AdminMoveEnded,
  AdminNoSuchClient,
  AdminBadClientId,
  AdminKillSelf,
  AdminReloadFailed,
  AdminShutdownMode,
  AdminSetUsage,
  AdminUnknownSetting,
  AdminSettingNeedsRestart,
  AdminSettingNeedsReload,
  AdminSettingInvalid,
  AdminShuttingDown,
};
inline constexpr int kReasons = int(Reason::AdminShuttingDown) + 1;

struct ReasonInfo {
  Reason reason;
  const char* sqlstate;  // nullptr: the connection just closes
  const char* text;      // "{}" marks are replaced by the arguments, in order
  // A disconnect says the FATAL error first (false: the client's connection is gone,
  // or in a state where another message would be read as part of a stream).
  bool tell = true;
};

[[nodiscard]] const ReasonInfo& reason_info(Reason r);
[[nodiscard]] inline const char* sqlstate_of(Reason r) { return reason_info(r).sqlstate; }
// The message with its "{}" marks filled in; missing arguments read as "".
[[nodiscard]] std::string reason_text(Reason r, std::initializer_list<std::string_view> args = {});

}  // namespace pgpivot
