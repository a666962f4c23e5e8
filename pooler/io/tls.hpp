// TLS contexts: pgpivot as a TLS server for its clients (client_tls_*) and as a TLS
// client of PostgreSQL (server_tls_*, per-node sslrootcert/sslcert/sslkey). The
// per-connection TLS state is Conn's (io/conn.hpp); both live in io/tls.cpp.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "config/config.hpp"

typedef struct ssl_ctx_st SSL_CTX;  // OpenSSL's, declared as <openssl/types.h> does

namespace pgpivot {

class TlsContexts {
 public:
  TlsContexts() = default;
  TlsContexts(const TlsContexts&) = delete;
  TlsContexts& operator=(const TlsContexts&) = delete;
  ~TlsContexts() { clear(); }
  // Builds new contexts from `p` (the client one, and the one towards PostgreSQL when
  // server_tls_* name files or ciphers) and only when all are usable puts them in
  // place of the old ones; false and `err` otherwise, and the old ones stay.
  // Connections keep the context they started with (an SSL object holds a
  // reference). `server_changed`: servers opened under the previous settings
  // should be opened again (config::server_tls_differs).
  bool setup(const config::Pooler& p, std::string& err, bool* server_changed = nullptr);
  [[nodiscard]] SSL_CTX* client() const { return client_; }
  // The sslmodes of the settings in use: after a SET whose contexts could not be
  // built, the configuration holds values that are not applied (as PgBouncer's
  // client_accept_sslmode / server_connect_sslmode).
  [[nodiscard]] const std::string& client_sslmode() const { return client_mode_; }
  [[nodiscard]] const std::string& server_sslmode() const { return server_mode_; }
  // The context towards `node`, built on first use from the settings in use:
  // OpenSSL is initialized only when some connection needs TLS. nullptr and `err`
  // when it cannot be built.
  SSL_CTX* server(const config::Node& node, std::string& err);

 private:
  static SSL_CTX* new_client_ctx(const config::Pooler& p, std::string& err);
  static SSL_CTX* new_server_ctx(const config::Pooler& p, const std::string& ca, const std::string& cert,
                                 const std::string& key, std::string& err);
  void clear();
  SSL_CTX* client_ = nullptr;  // pgpivot as TLS server for clients
  SSL_CTX* server_ = nullptr;  // pgpivot as TLS client of PostgreSQL
  std::map<std::string, SSL_CTX*> nodes_;  // per-node CA/cert overrides
  std::optional<config::Pooler> applied_;  // the settings of the contexts in use
  std::string client_mode_ = "disable", server_mode_ = "prefer";
};

}  // namespace pgpivot
