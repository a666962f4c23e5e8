// TLS on both sides with OpenSSL over memory BIOs: ciphertext read from the socket
// goes into the read BIO and plaintext comes out into the connection's ordinary
// read buffer, so streaming, backpressure and the memory budget stay the same as
// for plain connections; output is encrypted at flush time. Handshakes are driven
// by the reads and writes of the event loop and never block it.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>

#include "config/settings.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

struct TlsConn {
  SSL* ssl = nullptr;
  BIO* rbio = nullptr;  // ciphertext from the socket
  BIO* wbio = nullptr;  // ciphertext to the socket
  bool handshaking = true;
  bool eof = false;       // the session ended; close after handling what was read
  std::string eof_error;  // why, when it was not a clean close
  ~TlsConn() {
    if (ssl) SSL_free(ssl);  // frees both BIOs
  }
};

void TlsDeleter::operator()(TlsConn* t) const { delete t; }

namespace {

std::string ssl_error_text() {
  unsigned long e = ERR_get_error();
  if (!e) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// client_tls_protocols / server_tls_protocols (config::tls_protocols): the lowest
// and highest version, and the ones between that are left out.
bool apply_protocols(SSL_CTX* ctx, const char* key, const std::string& text, std::string& err) {
  auto bits = config::tls_protocols(text);
  if (!bits || *bits == 0) {
    err = std::string("invalid ") + key + ": " + text;
    return false;
  }
  static constexpr struct {
    unsigned bit;
    int version;
    unsigned long no;
  } kVersions[] = {{config::kTls10, TLS1_VERSION, SSL_OP_NO_TLSv1},
                   {config::kTls11, TLS1_1_VERSION, SSL_OP_NO_TLSv1_1},
                   {config::kTls12, TLS1_2_VERSION, SSL_OP_NO_TLSv1_2},
                   {config::kTls13, TLS1_3_VERSION, SSL_OP_NO_TLSv1_3}};
  int lo = 0, hi = 0;
  for (const auto& v : kVersions) {
    if (!(*bits & v.bit)) continue;
    if (!lo) lo = v.version;
    hi = v.version;
  }
  SSL_CTX_set_min_proto_version(ctx, lo);
  SSL_CTX_set_max_proto_version(ctx, hi);
  for (const auto& v : kVersions) {
    if (!(*bits & v.bit)) SSL_CTX_set_options(ctx, v.no);
  }
  return true;
}

bool default_ciphers(const std::string& ciphers) {
  return ciphers.empty() || ciphers == "default" || ciphers == "fast" || ciphers == "normal" || ciphers == "secure";
}

bool apply_ciphers(SSL_CTX* ctx, const std::string& ciphers, std::string& err) {
  if (default_ciphers(ciphers)) return true;  // OpenSSL's defaults are the secure choice here
  // PgBouncer's other shortcuts, for older peers.
  std::string list = ciphers;
  if (ciphers == "compat" || ciphers == "legacy") list = "HIGH:MEDIUM:+3DES:!aNULL";
  if (ciphers == "insecure" || ciphers == "all") list = "ALL:@SECLEVEL=0";
  if (SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1) {
    err = "invalid cipher list \"" + ciphers + "\": " + ssl_error_text();
    return false;
  }
  return true;
}

// client_tls13_ciphers / server_tls13_ciphers: the TLS 1.3 cipher suites, when TLS
// 1.3 is allowed at all (as PgBouncer; empty: OpenSSL's defaults).
bool apply_tls13_ciphers(SSL_CTX* ctx, const std::string& protocols, const std::string& suites, std::string& err) {
  if (suites.empty() || !(config::tls_protocols(protocols).value_or(0) & config::kTls13)) return true;
  if (SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1) {
    ERR_clear_error();
    err = "failed to set the TLSv1.3 cipher suites";  // PgBouncer's text
    return false;
  }
  return true;
}

// Protocols and ciphers of one side; false and `err` when a value is unusable.
bool apply_crypto(SSL_CTX* ctx, const char* side, const std::string& protocols, const std::string& ciphers,
                  const std::string& suites13, std::string& err) {
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);  // idle connections give their TLS buffers back
  return apply_protocols(ctx, (std::string(side) + "_protocols").c_str(), protocols, err) &&
         apply_ciphers(ctx, ciphers, err) && apply_tls13_ciphers(ctx, protocols, suites13, err);
}

bool server_ctx_needed_now(const config::Pooler& p) {
  return !p.server_tls_ca_file.empty() || !p.server_tls_cert_file.empty() || !p.server_tls_key_file.empty() ||
         !default_ciphers(p.server_tls_ciphers) || !p.server_tls13_ciphers.empty() ||
         config::tls_protocols(p.server_tls_protocols) != unsigned(config::kTls12 | config::kTls13);
}

}  // namespace

bool TlsContexts::setup(const config::Pooler& p, std::string& err, bool* server_changed) {
  SSL_CTX* client = nullptr;
  if (p.client_tls_sslmode != "disable" && !(client = new_client_ctx(p, err))) return false;
  // pgpivot as a TLS client of PostgreSQL: built the first time a server answers
  // 'S' to an SSLRequest (server()), so that a pooler that never speaks TLS never
  // initializes OpenSSL. Configured files, protocols and ciphers are checked now,
  // so that a bad server_tls_ca_file fails the start, the reload or the SET.
  SSL_CTX* server = nullptr;
  if (server_ctx_needed_now(p) &&
      !(server = new_server_ctx(p, p.server_tls_ca_file, p.server_tls_cert_file, p.server_tls_key_file, err))) {
    if (client) SSL_CTX_free(client);
    return false;
  }
  if (server_changed) *server_changed = !applied_ || config::server_tls_differs(*applied_, p);
  clear();  // connections keep their own references (SSL objects hold the context)
  client_ = client;
  server_ = server;
  applied_ = p;
  client_mode_ = p.client_tls_sslmode;
  server_mode_ = p.server_tls_sslmode;
  return true;
}

// pgpivot as a TLS server for its clients (client_tls_*).
SSL_CTX* TlsContexts::new_client_ctx(const config::Pooler& p, std::string& err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    err = "cannot create a TLS context: " + ssl_error_text();
    return nullptr;
  }
  if (p.client_tls_cert_file.empty() || p.client_tls_key_file.empty()) {
    err = "client_tls_sslmode = " + p.client_tls_sslmode + " needs client_tls_cert_file and client_tls_key_file";
  } else if (!apply_crypto(ctx, "client_tls", p.client_tls_protocols, p.client_tls_ciphers, p.client_tls13_ciphers,
                           err)) {
    // `err` says why
  } else if (SSL_CTX_use_certificate_chain_file(ctx, p.client_tls_cert_file.c_str()) != 1) {
    err = "client_tls_cert_file " + p.client_tls_cert_file + ": " + ssl_error_text();
  } else if (SSL_CTX_use_PrivateKey_file(ctx, p.client_tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    err = "client_tls_key_file " + p.client_tls_key_file + ": " + ssl_error_text();
  } else if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    err = "client_tls_key_file does not match client_tls_cert_file";
  } else if (!p.client_tls_ca_file.empty() &&
             SSL_CTX_load_verify_locations(ctx, p.client_tls_ca_file.c_str(), nullptr) != 1) {
    err = "client_tls_ca_file " + p.client_tls_ca_file + ": " + ssl_error_text();
  } else if (p.client_tls_sslmode == "verify-ca" || p.client_tls_sslmode == "verify-full") {
    if (p.client_tls_ca_file.empty()) {
      err = "client_tls_sslmode = " + p.client_tls_sslmode + " needs client_tls_ca_file";
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  } else if (!p.client_tls_ca_file.empty()) {
    // As PgBouncer (libtls's verify_client_optional): a certificate is asked for,
    // and one given must verify, for hba's cert rules.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  if (!err.empty()) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

// pgpivot as a TLS client of PostgreSQL: server_tls_* with the CA, certificate and
// key given (the global ones, or a node's own).
SSL_CTX* TlsContexts::new_server_ctx(const config::Pooler& p, const std::string& ca, const std::string& cert,
                                     const std::string& key, std::string& err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    err = "cannot create a TLS context: " + ssl_error_text();
    return nullptr;
  }
  if (!apply_crypto(ctx, "server_tls", p.server_tls_protocols, p.server_tls_ciphers, p.server_tls13_ciphers, err)) {
    // `err` says why
  } else if (!ca.empty() && SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    err = "CA file " + ca + ": " + ssl_error_text();
  } else if (!cert.empty() && SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    err = "certificate file " + cert + ": " + ssl_error_text();
  } else if (!key.empty() && SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    err = "key file " + key + ": " + ssl_error_text();
  }
  if (!err.empty()) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

// The context for one node: the global one, or one built for the node's own
// sslrootcert / sslcert / sslkey (cached until the next setup).
SSL_CTX* TlsContexts::server(const config::Node& node, std::string& err) {
  if (!applied_) {
    err = "TLS is not set up";
    return nullptr;
  }
  const config::Pooler& p = *applied_;
  auto opt = [&](const char* k) {
    auto it = node.options.find(k);
    return it == node.options.end() ? std::string() : it->second;
  };
  std::string ca = opt("sslrootcert"), cert = opt("sslcert"), key = opt("sslkey");
  if (ca.empty() && cert.empty() && key.empty()) {
    if (!server_) server_ = new_server_ctx(p, p.server_tls_ca_file, p.server_tls_cert_file, p.server_tls_key_file, err);
    return server_;
  }
  std::string id = ca + "\n" + cert + "\n" + key;
  if (auto it = nodes_.find(id); it != nodes_.end()) return it->second;
  SSL_CTX* ctx = new_server_ctx(p, ca.empty() ? p.server_tls_ca_file : ca, cert.empty() ? p.server_tls_cert_file : cert,
                                key.empty() ? p.server_tls_key_file : key, err);
  if (ctx) nodes_[id] = ctx;
  return ctx;
}

void TlsContexts::clear() {
  if (client_) SSL_CTX_free(client_);
  if (server_) SSL_CTX_free(server_);
  client_ = server_ = nullptr;
  for (auto& [k, ctx] : nodes_) SSL_CTX_free(ctx);
  nodes_.clear();
}

// ---------------------------------------------------------------------------
// Per connection

bool Conn::tls_start(SSL_CTX* ctx, bool accept, const std::string& verify_host, bool verify) {
  auto* t = new TlsConn();
  tls.reset(t);
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (accept) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (!verify_host.empty() && verify_host[0] != '/') {
      SSL_set_tlsext_host_name(t->ssl, verify_host.c_str());
    }
    if (verify) {
      SSL_set_verify(t->ssl, SSL_VERIFY_PEER, nullptr);
      if (!verify_host.empty()) SSL_set1_host(t->ssl, verify_host.c_str());
    } else {
      SSL_set_verify(t->ssl, SSL_VERIFY_NONE, nullptr);
    }
  }
  return tls_handshake();
}

// Advances the handshake; false when it failed (the connection was closed).
bool Conn::tls_handshake() {
  TlsConn* t = tls.get();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->handshaking = false;
    tls_queue_cipher();
    on_tls_ready();
    return !closing;
  }
  int e = SSL_get_error(t->ssl, r);
  tls_queue_cipher();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
  std::string why = ssl_error_text();
  long vr = SSL_get_verify_result(t->ssl);
  if (vr != X509_V_OK) why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(vr);
  on_tls_error(why);
  return false;
}

// Moves handshake/alert bytes OpenSSL produced into the output queue as own bytes.
void Conn::tls_queue_cipher() {
  TlsConn* t = tls.get();
  std::size_t pending = BIO_ctrl_pending(t->wbio);
  if (!pending) return;
  std::string buf(pending, '\0');
  int n = BIO_read(t->wbio, buf.data(), int(pending));
  if (n <= 0) return;
  buf.resize(std::size_t(n));
  outq().tls_cipher_out.append(buf);
  pooler->flusher().mark_dirty(this);
}

// Ciphertext arrived: feed it, finish the handshake, decrypt into the read buffer.
void Conn::tls_input(const char* data, std::size_t n) {
  TlsConn* t = tls.get();
  if (n) BIO_write(t->rbio, data, int(n));
  if (t->handshaking && !tls_handshake()) return;
  if (t->handshaking || closing) return;
  tls_pump();
  if (!closing) process();
  if (t->eof && !closing) {
    if (t->eof_error.empty()) {
      on_closed();
    } else {
      on_tls_error(t->eof_error);
    }
  }
}

// Decrypts as much as fits into the read buffer; true if anything came out.
bool Conn::tls_pump() {
  TlsConn* t = tls.get();
  bool got = false;
  for (;;) {
    if (!read_room(pooler->buffers())) break;  // full: the rest waits in OpenSSL until the buffer drains
    int r = SSL_read(t->ssl, rbuf + rend, int(rcap - rend));
    if (r > 0) {
      rend += std::uint32_t(r);
      got = true;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    // The peer closed (or broke) the session: what was decrypted before it is still
    // handled first (e.g. a FATAL ErrorResponse), then the connection's exit path runs.
    t->eof = true;
    t->eof_error = e == SSL_ERROR_ZERO_RETURN ? std::string() : ssl_error_text();
    break;
  }
  tls_queue_cipher();  // e.g. key updates
  if (!got) release_rbuf_if_empty();
  return got;
}

// Our end of the session, as the connection closes: a close_notify alert, so that
// the peer sees the session end cleanly rather than an unexpected EOF (PgBouncer's
// tls_close). None after a failed handshake or a broken session. The alert joins
// the ciphertext start_close sends.
void Conn::tls_close_notify() {
  TlsConn* t = tls.get();
  if (t->handshaking || !t->eof_error.empty()) return;
  if (SSL_shutdown(t->ssl) < 0) ERR_clear_error();
  std::size_t pending = BIO_ctrl_pending(t->wbio);
  if (!pending) return;
  std::string& out = outq().tls_cipher_out;
  std::size_t at = out.size();
  out.resize(at + pending);
  int n = BIO_read(t->wbio, out.data() + at, int(pending));
  out.resize(at + std::size_t(n > 0 ? n : 0));
}

bool Conn::tls_has_pending() const {
  return tls && !tls->handshaking && (SSL_pending(tls->ssl) > 0 || BIO_ctrl_pending(tls->rbio) > 0);
}

// Encrypts everything queued (own and borrowed plaintext) into tls_cipher_out.
void Conn::tls_encrypt_queue() {
  TlsConn* t = tls.get();
  if (t->handshaking || !oq) return;  // application data waits for the handshake
  OutQ& q = *oq;
  for (const Seg& s : q.segs) {
    const char* p = s.ptr ? s.ptr : q.out.data() + s.off;
    if (s.len && SSL_write(t->ssl, p, int(s.len)) <= 0) {
      on_tls_error(ssl_error_text());
      return;
    }
  }
  q.segs.clear();
  q.out.clear();
  tls_queue_cipher();
}

std::string Conn::tls_description() const {
  if (!tls || tls->handshaking) return "";
  std::string d = SSL_get_version(tls->ssl);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(tls->ssl)) d += std::string("/") + SSL_CIPHER_get_name(c);
  return d;
}

std::optional<std::string> Conn::tls_peer_common_name() const {
  if (!tls || tls->handshaking) return std::nullopt;
  X509* cert = SSL_get0_peer_certificate(tls->ssl);  // OpenSSL 3 (Debian 12); the session keeps the reference
  if (!cert || SSL_get_verify_result(tls->ssl) != X509_V_OK) return std::nullopt;
  X509_NAME* subject = X509_get_subject_name(cert);
  int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  // None, or more than one: no name to trust (PostgreSQL reads only one as well).
  if (at < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, at) >= 0) return std::string();
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
  if (n < 0) return std::string();
  std::string cn(reinterpret_cast<char*>(utf8), std::size_t(n));
  OPENSSL_free(utf8);
  if (cn.find('\0') != std::string::npos) return std::string();  // an embedded NUL could fake a name
  return cn;
}

}  // namespace pgpivot
