// TLS settings changed while pgpivot runs ([tls], [tls125]), as PgBouncer 1.25 does
// them: SET client_tls_* / server_tls_* on the console builds new contexts for new
// connections (a SET that gives no usable context keeps the old one and says so in
// a WARNING), RELOAD answers F0000 when the TLS setup fails, a change of the TLS
// settings towards PostgreSQL closes the servers opened under the old ones (and
// only then), client_tls13_ciphers, no TLS over the Unix socket, and the
// close_notify that ends a TLS session pgpivot closes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tls_fixture.hpp"

namespace {

// A console connection that keeps the notices it is sent.
struct Console {
  Conn c;
  std::vector<std::string> notices;
  explicit Console(const Pooler& p, const std::string& opts = "")
      : c(p.conninfo("admin", "admin", "pgbouncer") + opts) {
    INFO("admin console: " << c.error());
    REQUIRE(c.ok());
    PQsetNoticeReceiver(
        c.get(),
        [](void* self, const PGresult* r) {
          const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
          const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
          static_cast<Console*>(self)->notices.push_back(std::string(msg ? msg : "") + " | " + (detail ? detail : ""));
        },
        this);
  }
  Result run(const std::string& sql) {
    notices.clear();
    return c.exec(sql);
  }
  std::string config(const std::string& key) {
    Result r = console_show(c, "CONFIG");
    return cell(r, {{"key", key}}, "value");
  }
};

const char* kBackend = "SELECT pg_backend_pid() || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

// "pid TLSv1.x" of the server behind `c` (a transaction-pooled client).
std::string backend(Conn& c) {
  Result r = c.exec(kBackend);
  INFO("backend query: " << r.message());
  REQUIRE(r.ok());
  return r.value();
}

std::string pid_of(const std::string& backend) { return backend.substr(0, backend.find(' ')); }

// The raw end of a TLS session pgpivot closes: "close_notify" when the session
// ended with the alert, "unexpected eof" when the socket just closed; "" and
// `first` (the first plaintext message type) on the way.
std::string tls_session_end(int port, const std::string& startup, char& first) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "connect failed";
  const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
  char answer = 0;
  if (::send(fd, ssl_request, 8, 0) != 8 || ::recv(fd, &answer, 1, 0) != 1 || answer != 'S') {
    ::close(fd);
    return std::string("no 'S' to SSLRequest: ") + answer;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  std::string out;
  if (SSL_connect(ssl) != 1) {
    out = "handshake failed";
  } else if (SSL_write(ssl, startup.data(), int(startup.size())) <= 0) {
    out = "write failed";
  } else {
    char buf[4096];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) {
      if (!first) first = buf[0];
    }
    int e = SSL_get_error(ssl, n);
    out = e == SSL_ERROR_ZERO_RETURN ? "close_notify"
          : e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING
              ? "unexpected eof"
              : "SSL error " + std::to_string(e);
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("TLS runtime: SET client_tls_* on the console turns client TLS on and off", "[tls][tls125]") {
  TlsWorld& w = world();
  Pooler p;
  Console admin(p);
  CHECK(failure_of(p.conninfo() + " sslmode=require").find("SSL") != std::string::npos);  // nothing offered yet
  for (std::string set : {"SET client_tls_key_file = '" + w.server_key() + "'",
                          "SET client_tls_cert_file = '" + w.server_crt() + "'",
                          "SET client_tls_ca_file = '" + w.ca() + "'",
                          std::string("SET client_tls_sslmode = require")}) {
    Result r = admin.run(set);
    INFO(set << ": " << r.message());
    CHECK(r.ok());
    CHECK(admin.notices.empty());
  }
  CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);
  CHECK(admin.c.value("SHOW VERSION") != "");  // the console's own plain connection stays

  CHECK(admin.run("SET client_tls_sslmode = disable").ok());
  CHECK(failure_of(p.conninfo() + " sslmode=disable") == "");
  CHECK(failure_of(p.conninfo() + " sslmode=require").find("SSL") != std::string::npos);
  CHECK(admin.run("SET client_tls_sslmode = 'verify-full'").ok());
  // verify-full wants a client certificate from client_tls_ca_file.
  CHECK(failure_of(p.conninfo() + verify_full(w.ca()) + " sslcert=" + w.client_crt() + " sslkey=" + w.client_key()) ==
        "");
  CHECK(failure_of(p.conninfo() + verify_full(w.ca()) + no_client_cert()) != "");
}

TEST_CASE("TLS runtime: a SET that gives no usable context keeps the old one", "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  Pooler p(cfg);
  Console admin(p, verify_full(w.ca()));

  SECTION("a key that does not match the certificate, then the matching certificate") {
    // The other CA's client key and certificate: a pair, but not for "localhost".
    Result r = admin.run("SET client_tls_key_file = '" + w.other_client_key() + "'");
    INFO(r.message());
    REQUIRE(r.ok());  // PgBouncer's way: the value is kept, with a warning
    REQUIRE(admin.notices.size() == 1);
    CHECK(admin.notices[0].find("TLS settings could not be applied, still using old configuration") == 0);
    CHECK(admin.notices[0].find("key values mismatch") != std::string::npos);
    CHECK(admin.config("client_tls_key_file") == w.other_client_key());
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");  // still the old certificate
    // The certificate that goes with the key: usable again (clients verifying
    // "localhost" against the test CA now fail, as they should).
    CHECK(admin.run("SET client_tls_cert_file = '" + w.other_client_crt() + "'").ok());
    CHECK(admin.notices.empty());
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) != "");
    CHECK(failure_of(p.conninfo() + " sslmode=require sslrootcert=" + w.certs + "/none.crt") == "");
  }
  SECTION("a file that does not exist") {
    CHECK(admin.run("SET client_tls_ca_file = '" + w.certs + "/missing.crt'").ok());
    REQUIRE(admin.notices.size() == 1);
    CHECK(admin.notices[0].find("No such file or directory") != std::string::npos);
    CHECK(p.log().find("TLS setup failed: client_tls_ca_file") != std::string::npos);
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  }
  SECTION("TLS 1.3 cipher suites OpenSSL does not know") {
    CHECK(admin.run("SET client_tls13_ciphers = 'unknown'").ok());
    REQUIRE(admin.notices.size() == 1);
    CHECK(admin.notices[0].find("failed to set the TLSv1.3 cipher suites") != std::string::npos);
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  }
  SECTION("a protocol list with an unknown word") {
    CHECK(admin.run("SET client_tls_protocols = 'tlsv1.2,sslv3'").ok());
    REQUIRE(admin.notices.size() == 1);
    CHECK(admin.notices[0].find("invalid client_tls_protocols") != std::string::npos);
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  }
  // The console connection the SETs came over is TLS and carried on throughout.
  CHECK(admin.c.value("SHOW VERSION") != "");
}

TEST_CASE("TLS runtime: an sslmode that could not be applied is not enforced", "[tls][tls125]") {
  TlsWorld& w = world();
  Pooler p;
  Console admin(p);
  // require before any certificate: kept in the configuration, not applied.
  CHECK(admin.run("SET client_tls_sslmode = require").ok());
  REQUIRE(admin.notices.size() == 1);
  CHECK(admin.notices[0].find("needs client_tls_cert_file and client_tls_key_file") != std::string::npos);
  CHECK(admin.config("client_tls_sslmode") == "require");
  CHECK(failure_of(p.conninfo() + " sslmode=disable") == "");  // plain clients still get in
  // With the files, it is.
  CHECK(admin.run("SET client_tls_key_file = '" + w.server_key() + "'").ok());
  CHECK(admin.notices.size() == 1);  // a key without its certificate
  CHECK(admin.run("SET client_tls_cert_file = '" + w.server_crt() + "'").ok());
  CHECK(admin.notices.empty());
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);
  CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
}

TEST_CASE("TLS runtime: client_tls13_ciphers chooses the TLS 1.3 cipher suite", "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  cfg.extra["client_tls_protocols"] = q("tlsv1.3");
  cfg.extra["client_tls13_ciphers"] = q("TLS_CHACHA20_POLY1305_SHA256");
  Pooler p(cfg);
  Conn first(p.conninfo() + verify_full(w.ca()));
  INFO("connect: " << first.error());
  REQUIRE(first.ok());
  CHECK(std::string(PQsslAttribute(first.get(), "protocol")) == "TLSv1.3");
  CHECK(std::string(PQsslAttribute(first.get(), "cipher")) == "TLS_CHACHA20_POLY1305_SHA256");
  CHECK(p.log().find("tls=TLSv1.3/TLS_CHACHA20_POLY1305_SHA256") != std::string::npos);

  Console admin(p, verify_full(w.ca()));
  CHECK(admin.run("SET client_tls13_ciphers = 'TLS_AES_128_GCM_SHA256'").ok());
  CHECK(admin.notices.empty());
  Conn second(p.conninfo() + verify_full(w.ca()));
  REQUIRE(second.ok());
  CHECK(std::string(PQsslAttribute(second.get(), "cipher")) == "TLS_AES_128_GCM_SHA256");
  // The connection made before keeps its session.
  CHECK(first.value("SELECT 1") == "1");
  CHECK(std::string(PQsslAttribute(first.get(), "cipher")) == "TLS_CHACHA20_POLY1305_SHA256");
  // client_tls_protocols as a list: TLS 1.2 only now.
  CHECK(admin.run("SET client_tls_protocols = 'tlsv1.2'").ok());
  Conn third(p.conninfo() + verify_full(w.ca()));
  REQUIRE(third.ok());
  CHECK(std::string(PQsslAttribute(third.get(), "protocol")) == "TLSv1.2");
}

TEST_CASE("TLS runtime: RELOAD with an unusable certificate answers F0000 and keeps TLS", "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  Pooler p(cfg);
  Console admin(p, verify_full(w.ca()));
  PoolerConfig broken = cfg;
  broken.extra["client_tls_cert_file"] = q(w.certs + "/missing.crt");
  broken.default_pool_size = 7;
  p.rewrite_config(broken);
  Result r = admin.run("RELOAD");
  CHECK_FALSE(r.ok());
  CHECK(r.sqlstate() == "F0000");
  CHECK(r.message().find("RELOAD failed, see logs for additional details") != std::string::npos);
  std::string log = p.log();
  CHECK(log.find("TLS setup failed: client_tls_cert_file") != std::string::npos);
  CHECK(log.find("No such file or directory") != std::string::npos);
  // Nothing of that file was applied; TLS goes on with the old certificate.
  CHECK(admin.config("default_pool_size") == "5");
  CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  p.rewrite_config(cfg);
  CHECK(admin.run("RELOAD").ok());
}

TEST_CASE("TLS runtime: servers are opened again when the TLS settings towards PostgreSQL change",
          "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  server_tls_verify_full(cfg, w.ca());
  cfg.extra["server_tls_protocols"] = q("tlsv1.2");
  Pooler p(cfg);
  Console admin(p);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  std::string b1 = backend(c);
  CHECK(b1.find("TLSv1.2") != std::string::npos);

  // A RELOAD that changes nothing, and one with the same protocols in other words: kept.
  REQUIRE(admin.run("RELOAD").ok());
  CHECK(backend(c) == b1);
  PoolerConfig same = cfg;
  same.extra["server_tls_protocols"] = q("TLSv1.2:!tlsv1.3");
  same.extra["server_idle_timeout"] = "600";
  p.rewrite_config(same);
  REQUIRE(admin.run("RELOAD").ok());
  CHECK(backend(c) == b1);
  CHECK(admin.run("SET server_tls_ca_file = '" + w.ca() + "'").ok());  // the same file
  CHECK(backend(c) == b1);

  // Other protocols by RELOAD: a new server, with them.
  PoolerConfig tls13 = cfg;
  tls13.extra["server_tls_protocols"] = q("tlsv1.3");
  p.rewrite_config(tls13);
  REQUIRE(admin.run("RELOAD").ok());
  std::string b2 = backend(c);
  CHECK(pid_of(b2) != pid_of(b1));
  CHECK(b2.find("TLSv1.3") != std::string::npos);
  std::string log = p.log();
  CHECK((log.find("closing because: obsolete connection") != std::string::npos ||
         log.find("closing because: database configuration changed") != std::string::npos));

  // By SET, while a transaction runs: the server finishes it, then goes.
  c.exec_ok("BEGIN");
  std::string in_txn = backend(c);
  CHECK(admin.run("SET server_tls_protocols = 'tlsv1.2'").ok());
  CHECK(backend(c) == in_txn);
  c.exec_ok("COMMIT");
  std::string b3 = backend(c);
  CHECK(pid_of(b3) != pid_of(b2));
  CHECK(b3.find("TLSv1.2") != std::string::npos);

  // A SET that cannot be applied changes nothing for the servers either.
  CHECK(admin.run("SET server_tls_ca_file = '" + w.certs + "/missing.crt'").ok());
  CHECK(admin.notices.size() == 1);
  CHECK(backend(c) == b3);

  // server_tls_sslmode to disable: plain servers from now on.
  CHECK(admin.run("SET server_tls_ca_file = '" + w.ca() + "'").ok());
  CHECK(admin.run("SET server_tls_sslmode = disable").ok());
  Result plain = c.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  REQUIRE(plain.ok());
  CHECK(plain.value() == "f");
}

TEST_CASE("TLS runtime: a wrong server CA set on the console fails logins, the right one fixes them",
          "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.main_cluster = tls_cluster();
  cfg.extra["server_login_retry"] = "1";
  cfg.extra["query_wait_timeout"] = "2";  // a failed handshake keeps the login waiting until then
  Pooler p(cfg);
  Console admin(p);
  CHECK(admin.run("SET server_tls_sslmode = 'verify-full'").ok());
  CHECK(admin.run("SET server_tls_ca_file = '" + w.other_ca() + "'").ok());
  CHECK(admin.notices.empty());
  std::string err = failure_of(p.conninfo());
  INFO("with the wrong CA: " << err);
  CHECK(contains_icase(err, "certificate verify failed"));
  CHECK(contains_icase(err, "query_wait_timeout"));
  CHECK(admin.run("SET server_tls_ca_file = '" + w.ca() + "'").ok());
  sleep_s(1.2);  // past server_login_retry: no fast refusal with the cached error
  CHECK(failure_of(p.conninfo()) == "");
}

TEST_CASE("TLS runtime: the Unix socket needs no TLS under client_tls_sslmode=require", "[tls][tls125]") {
  world();
  std::string dir = env().scratch + "/tls-sock";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  PoolerConfig cfg;
  client_tls(cfg, "require");
  cfg.extra["unix_socket_dir"] = q(dir);
  Pooler p(cfg);
  std::string local = "host=" + dir + " port=" + std::to_string(p.port()) + " user=app password=app connect_timeout=10";
  Conn c(local + " dbname=appdb sslmode=prefer");
  INFO("over the Unix socket: " << c.error());
  REQUIRE(c.ok());
  CHECK(PQsslInUse(c.get()) == 0);
  CHECK(c.value("SELECT 1") == "1");
  Conn console("host=" + dir + " port=" + std::to_string(p.port()) + " dbname=pgbouncer user=pgbouncer");
  INFO("console over the Unix socket: " << console.error());
  CHECK(console.ok());
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);  // TCP still
}

TEST_CASE("TLS runtime: pgpivot ends the TLS sessions it closes with close_notify", "[tls][tls125]") {
  world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  Pooler p(cfg);
  // A startup packet for protocol 9.9: pgpivot answers with a FATAL error and closes.
  std::string startup("\0\0\0\x08\0\x09\0\x09", 8);
  char first = 0;
  CHECK(tls_session_end(p.port(), startup, first) == "close_notify");
  CHECK(first == 'E');
  CHECK(p.log().find("unexpected eof") == std::string::npos);
}

TEST_CASE("TLS runtime: with workers = 3, a SET applies on every worker", "[tls][tls125]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.extra["workers"] = "3";
  cfg.default_pool_size = 12;
  server_tls_verify_full(cfg, w.ca());
  cfg.extra["server_tls_protocols"] = q("tlsv1.2");
  Pooler p(cfg);
  Console admin(p);
  for (std::string set : {"SET client_tls_key_file = '" + w.server_key() + "'",
                          "SET client_tls_cert_file = '" + w.server_crt() + "'",
                          std::string("SET client_tls_sslmode = require")}) {
    CHECK(admin.run(set).ok());
    CHECK(admin.notices.empty());
  }
  // Enough clients that every worker has some, each with a server of its own.
  std::vector<Conn> clients;
  std::vector<std::string> before;
  for (int i = 0; i < 9; ++i) {
    clients.emplace_back(p.conninfo() + verify_full(w.ca()));
    INFO("client " << i << ": " << clients.back().error());
    REQUIRE(clients.back().ok());
    CHECK(PQsslInUse(clients.back().get()) == 1);
    clients.back().exec_ok("BEGIN");
    before.push_back(backend(clients.back()));
  }
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);
  CHECK(admin.run("SET server_tls_protocols = 'tlsv1.3'").ok());
  for (std::size_t i = 0; i < clients.size(); ++i) {
    clients[i].exec_ok("COMMIT");
    std::string after = backend(clients[i]);
    INFO("client " << i << ": " << before[i] << " -> " << after);
    CHECK(pid_of(after) != pid_of(before[i]));
    CHECK(after.find("TLSv1.3") != std::string::npos);
  }
}
