// Names of the configuration enums, both ways (parsing is case-insensitive, like PgBouncer).
#include "config/config.hpp"

#include <cctype>
#include <string_view>

namespace pgpivot::config {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

}  // namespace

const char* to_string(PoolMode m) {
  switch (m) {
    case PoolMode::Session: return "session";
    case PoolMode::Transaction: return "transaction";
    case PoolMode::Statement: return "statement";
  }
  return "?";
}

const char* to_string(AuthType a) {
  switch (a) {
    case AuthType::Trust: return "trust";
    case AuthType::Md5: return "md5";
    case AuthType::ScramSha256: return "scram-sha-256";
    case AuthType::Cert: return "cert";
    case AuthType::Plain: return "plain";
    case AuthType::Hba: return "hba";
  }
  return "?";
}

std::optional<PoolMode> parse_pool_mode(std::string_view s) {
  for (PoolMode m : {PoolMode::Session, PoolMode::Transaction, PoolMode::Statement})
    if (iequals(s, to_string(m))) return m;
  return std::nullopt;
}

std::optional<AuthType> parse_auth_type(std::string_view s) {
  for (AuthType a : {AuthType::Trust, AuthType::Md5, AuthType::ScramSha256, AuthType::Cert, AuthType::Plain,
                     AuthType::Hba})
    if (iequals(s, to_string(a))) return a;
  return std::nullopt;
}

AuthMethod auth_method(AuthType a) {
  switch (a) {
    case AuthType::Trust: return AuthMethod::Trust;
    case AuthType::Md5: return AuthMethod::Md5;
    case AuthType::ScramSha256: return AuthMethod::ScramSha256;
    case AuthType::Cert: return AuthMethod::Cert;
    case AuthType::Plain: return AuthMethod::Password;
    case AuthType::Hba: break;
  }
  return AuthMethod::Reject;
}

std::string auth_cert_problem(const Pooler& p) {
  if (p.auth_type != AuthType::Cert) return "";
  if (p.client_tls_sslmode != "verify-full")
    return "auth_type = cert needs client_tls_sslmode = verify-full, got " + p.client_tls_sslmode;
  if (p.client_tls_ca_file.empty()) return "auth_type = cert needs client_tls_ca_file";
  return "";
}

}  // namespace pgpivot::config
