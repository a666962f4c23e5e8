// Parsing of the packets a client may send before authentication: StartupMessage,
// SSLRequest, GSSENCRequest and CancelRequest (all framed without a type byte).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgpivot::proto {

inline constexpr std::uint32_t kProtocol30 = 196608;        // 3 << 16
inline constexpr std::uint32_t kCancelRequestCode = 80877102;
inline constexpr std::uint32_t kSSLRequestCode = 80877103;
inline constexpr std::uint32_t kGSSENCRequestCode = 80877104;

enum class StartupKind {
  Startup,        // protocol 3.x StartupMessage; params filled
  SSLRequest,
  GSSENCRequest,
  CancelRequest,  // cancel_pid / cancel_key filled
  BadVersion,     // a version we do not speak (e.g. 2.0); `version` tells which
  Invalid,        // malformed; `error` says why in words fit for a FATAL message
};

struct StartupPacket {
  StartupKind kind = StartupKind::Invalid;
  std::uint32_t version = 0;
  std::vector<std::pair<std::string, std::string>> params;  // in packet order
  std::uint32_t cancel_pid = 0;
  std::uint32_t cancel_key = 0;
  std::string error;

  // Value of a parameter, or nullptr when absent.
  [[nodiscard]] const std::string* get(std::string_view name) const;
};

// Parse one complete packet: data points at the Int32 length, n equals that length.
// Rules (as PostgreSQL's ProcessStartupPacket): params are NUL-terminated
// name/value pairs ended by an empty name; `user` is required (Invalid without it);
// `database` defaults to the user name; names and values must be valid UTF-8;
// a missing terminator is Invalid. Minor versions 3.x (x>0) parse as Startup.
[[nodiscard]] StartupPacket parse_startup(const std::uint8_t* data, std::size_t n);

}  // namespace pgpivot::proto
