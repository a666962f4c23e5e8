// TLS contexts: pgpivot as a TLS server for its clients (client_tls_*) and as a TLS
// client of PostgreSQL (server_tls_*, per-node sslrootcert/sslcert/sslkey). The
// per-connection TLS state is Conn's (io/conn.hpp); both live in io/tls.cpp.
#pragma once

#include <map>
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
  // Builds the client context and checks the server_tls_* files; false and `err`
  // when they are unusable. Connections keep their own references to old contexts.
  bool setup(const config::Pooler& p, std::string& err);
  void clear();
  [[nodiscard]] SSL_CTX* client() const { return client_; }
  // The context towards `node`, built on first use: OpenSSL is initialized only
  // when some connection needs TLS. nullptr and `err` when it cannot be built.
  SSL_CTX* server(const config::Pooler& p, const config::Node& node, std::string& err);

 private:
  static SSL_CTX* new_server_ctx(const config::Pooler& p, std::string& err);
  SSL_CTX* client_ = nullptr;  // pgpivot as TLS server for clients
  SSL_CTX* server_ = nullptr;  // pgpivot as TLS client of PostgreSQL
  std::map<std::string, SSL_CTX*> nodes_;  // per-node CA/cert overrides
};

}  // namespace pgpivot
