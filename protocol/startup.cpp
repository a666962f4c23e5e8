// Parsing of untyped pre-authentication packets (StartupMessage, SSL/GSSENC/Cancel requests).
#include "protocol/startup.hpp"

#include "protocol/wire.hpp"

namespace pgpivot::proto {

namespace {

// Strict UTF-8 check: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned c = *p;
    if (c < 0x80) { ++p; continue; }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;       // overlong
      else if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;       // overlong
      else if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
    } else {
      return false;
    }
    if (std::size_t(end - p) < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (std::size_t i = 2; i < len; ++i)
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    p += len;
  }
  return true;
}

StartupPacket invalid(std::string why) {
  StartupPacket pkt;
  pkt.kind = StartupKind::Invalid;
  pkt.error = std::move(why);
  return pkt;
}

}  // namespace

const std::string* StartupPacket::get(std::string_view name) const {
  for (const auto& [k, v] : params)
    if (k == name) return &v;
  return nullptr;
}

StartupPacket parse_startup(const std::uint8_t* data, std::size_t n) {
  if (data == nullptr || n < 8 || n > kMaxStartupPacket) return invalid("invalid length of startup packet");
  if (read_u32(data) != n) return invalid("invalid length of startup packet");

  const std::uint32_t code = read_u32(data + 4);
  StartupPacket pkt;
  pkt.version = code;

  if (code == kCancelRequestCode) {
    if (n != 16) return invalid("invalid length of cancel request packet");
    pkt.kind = StartupKind::CancelRequest;
    pkt.cancel_pid = read_u32(data + 8);
    pkt.cancel_key = read_u32(data + 12);
    return pkt;
  }
  if (code == kSSLRequestCode || code == kGSSENCRequestCode) {
    if (n != 8) return invalid("invalid length of startup packet");
    pkt.kind = code == kSSLRequestCode ? StartupKind::SSLRequest : StartupKind::GSSENCRequest;
    return pkt;
  }

  const std::uint32_t major = code >> 16, minor = code & 0xffff;
  if (major != 3) {
    pkt.kind = StartupKind::BadVersion;
    pkt.error = "unsupported frontend protocol " + std::to_string(major) + "." + std::to_string(minor) +
                ": server supports 3.0 to 3.0";
    return pkt;
  }

  Reader r(data + 8, n - 8);
  bool terminated = false;
  while (!r.at_end()) {
    auto name = r.cstr();
    if (!name) break;  // unterminated name: reported below as a missing terminator
    if (name->empty()) {
      // The empty name is the terminator and must be the packet's last byte.
      if (!r.at_end()) return invalid("invalid startup packet layout: expected terminator as last byte");
      terminated = true;
      break;
    }
    auto value = r.cstr();
    if (!value) break;
    if (!valid_utf8(*name) || !valid_utf8(*value))
      return invalid("invalid byte sequence for encoding \"UTF8\" in startup packet");
    if (pkt.get(*name) != nullptr)
      return invalid("duplicate startup parameter \"" + std::string(*name) + "\"");
    pkt.params.emplace_back(std::string(*name), std::string(*value));
  }
  if (!terminated) return invalid("invalid startup packet layout: expected terminator as last byte");

  const std::string* user = pkt.get("user");
  if (user == nullptr || user->empty()) return invalid("no PostgreSQL user name specified in startup packet");

  const std::string user_copy = *user;
  bool has_db = false;
  for (auto& [k, v] : pkt.params) {
    if (k == "database") {
      has_db = true;
      if (v.empty()) v = user_copy;
    }
  }
  if (!has_db) pkt.params.emplace_back("database", user_copy);

  pkt.kind = StartupKind::Startup;
  return pkt;
}

}  // namespace pgpivot::proto
