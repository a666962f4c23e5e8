// TLS on both sides with OpenSSL over memory BIOs: ciphertext read from the socket
// goes into the read BIO and plaintext comes out into the connection's ordinary
// read buffer, so streaming, backpressure and the memory budget stay the same as
// for plain connections; output is encrypted at flush time. Handshakes are driven
// by the reads and writes of the event loop and never block it.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>

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

int min_version(const std::string& protocols) {
  // PgBouncer's names: "secure" = TLS 1.2 and newer, "all"/"legacy" = anything
  // OpenSSL allows, or a list of tlsv1.x where the lowest wins.
  if (protocols.empty() || protocols == "secure" || protocols == "default") return TLS1_2_VERSION;
  if (protocols == "all" || protocols == "legacy" || protocols.find("tlsv1.0") != std::string::npos) return TLS1_VERSION;
  if (protocols.find("tlsv1.1") != std::string::npos) return TLS1_1_VERSION;
  if (protocols.find("tlsv1.2") != std::string::npos) return TLS1_2_VERSION;
  if (protocols.find("tlsv1.3") != std::string::npos) return TLS1_3_VERSION;
  return TLS1_2_VERSION;
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

}  // namespace

bool TlsContexts::setup(const config::Pooler& p, std::string& err) {
  clear();  // connections keep their own references (SSL objects hold the context)
  if (p.client_tls_sslmode != "disable") {
    // pgpivot as a TLS server for its clients.
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, min_version(p.client_tls_protocols));
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);  // idle connections give their TLS buffers back
    if (p.client_tls_cert_file.empty() || p.client_tls_key_file.empty()) {
      err = "client_tls_sslmode = " + p.client_tls_sslmode + " needs client_tls_cert_file and client_tls_key_file";
    } else if (SSL_CTX_use_certificate_chain_file(ctx, p.client_tls_cert_file.c_str()) != 1) {
      err = "client_tls_cert_file " + p.client_tls_cert_file + ": " + ssl_error_text();
    } else if (SSL_CTX_use_PrivateKey_file(ctx, p.client_tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      err = "client_tls_key_file " + p.client_tls_key_file + ": " + ssl_error_text();
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
      err = "client_tls_key_file does not match client_tls_cert_file";
    } else if (!p.client_tls_ca_file.empty() && SSL_CTX_load_verify_locations(ctx, p.client_tls_ca_file.c_str(), nullptr) != 1) {
      err = "client_tls_ca_file " + p.client_tls_ca_file + ": " + ssl_error_text();
    } else if (apply_ciphers(ctx, p.client_tls_ciphers, err)) {
      if (p.client_tls_sslmode == "verify-ca" || p.client_tls_sslmode == "verify-full") {
        if (p.client_tls_ca_file.empty()) {
          err = "client_tls_sslmode = " + p.client_tls_sslmode + " needs client_tls_ca_file";
        } else {
          SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        }
      }
    }
    if (!err.empty()) {
      SSL_CTX_free(ctx);
      return false;
    }
    client_ = ctx;
  }
  // pgpivot as a TLS client of PostgreSQL: built the first time a server answers
  // 'S' to an SSLRequest (server_tls_ctx), so that a pooler that never speaks TLS
  // never initializes OpenSSL. Configured files and ciphers are still checked now,
  // so that a bad server_tls_ca_file fails the start or the reload as before.
  if (!p.server_tls_ca_file.empty() || !p.server_tls_cert_file.empty() || !p.server_tls_key_file.empty() ||
      !default_ciphers(p.server_tls_ciphers)) {
    SSL_CTX* check = new_server_ctx(p, err);
    if (!check) return false;
    SSL_CTX_free(check);
  }
  return true;
}

// The global client context of pgpivot towards PostgreSQL (server_tls_*).
SSL_CTX* TlsContexts::new_server_ctx(const config::Pooler& p, std::string& err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    err = "cannot create a TLS context: " + ssl_error_text();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, min_version(p.server_tls_protocols));
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!p.server_tls_ca_file.empty() && SSL_CTX_load_verify_locations(ctx, p.server_tls_ca_file.c_str(), nullptr) != 1) {
    err = "server_tls_ca_file " + p.server_tls_ca_file + ": " + ssl_error_text();
  } else if (!p.server_tls_cert_file.empty() &&
             SSL_CTX_use_certificate_chain_file(ctx, p.server_tls_cert_file.c_str()) != 1) {
    err = "server_tls_cert_file " + p.server_tls_cert_file + ": " + ssl_error_text();
  } else if (!p.server_tls_key_file.empty() &&
             SSL_CTX_use_PrivateKey_file(ctx, p.server_tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    err = "server_tls_key_file " + p.server_tls_key_file + ": " + ssl_error_text();
  } else {
    apply_ciphers(ctx, p.server_tls_ciphers, err);
  }
  if (!err.empty()) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

// The context for one node: the global one, or one built for the node's own
// sslrootcert / sslcert / sslkey (cached until the next reload).
SSL_CTX* TlsContexts::server(const config::Pooler& p, const config::Node& node, std::string& err) {
  auto opt = [&](const char* k) {
    auto it = node.options.find(k);
    return it == node.options.end() ? std::string() : it->second;
  };
  std::string ca = opt("sslrootcert"), cert = opt("sslcert"), key = opt("sslkey");
  if (ca.empty() && cert.empty() && key.empty()) {
    if (!server_) server_ = new_server_ctx(p, err);
    return server_;
  }
  std::string id = ca + "\n" + cert + "\n" + key;
  if (auto it = nodes_.find(id); it != nodes_.end()) return it->second;
  if (ca.empty()) ca = p.server_tls_ca_file;
  if (cert.empty()) cert = p.server_tls_cert_file;
  if (key.empty()) key = p.server_tls_key_file;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, min_version(p.server_tls_protocols));
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!ca.empty() && SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    err = "sslrootcert " + ca + ": " + ssl_error_text();
  } else if (!cert.empty() && SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    err = "sslcert " + cert + ": " + ssl_error_text();
  } else if (!key.empty() && SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    err = "sslkey " + key + ": " + ssl_error_text();
  }
  if (!err.empty()) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  nodes_[id] = ctx;
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
