// TLS between libpq clients and pgpivot ([tls]): client_tls_sslmode from prefer to
// verify-full, a client verifying pgpivot's certificate (libpq and psql), plain and
// TLS clients sharing one server, client certificates from the right and the wrong
// CA, auth_type = cert (in the config and SET on the console),
// client_tls_protocols, and a reload that turns client TLS on. pgpivot to
// PostgreSQL is in test_tls_servers.cpp; the certificates and the TLS-enabled
// PostgreSQL both use are made by tls_fixture.hpp.
#include <fstream>
#include <string>

#include "tls_fixture.hpp"

TEST_CASE("TLS: a libpq client with sslmode=verify-full connects to client_tls_sslmode=require", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  Pooler p(cfg);

  Conn c(p.conninfo() + verify_full(w.ca()) + " application_name=tls_verify_full");
  INFO("connect: " << c.error());
  REQUIRE(c.ok());
  CHECK(PQsslInUse(c.get()) == 1);
  CHECK(c.value("SELECT 40 + 2") == "42");

  // SHOW CLIENTS says which protocol/cipher the client uses.
  Result clients = show(p, "CLIENTS", verify_full(w.ca()));
  INFO("SHOW CLIENTS:\n" << dump(clients));
  REQUIRE(clients.ok());
  std::string tls = row_value(clients, "application_name", "tls_verify_full", "tls");
  CHECK(tls != "<no row>");
  CHECK(tls != "");
  CHECK(tls.find("TLS") != std::string::npos);
  CHECK(tls.find(PQsslAttribute(c.get(), "protocol")) != std::string::npos);

  // psql too.
  auto r = run_command("PGPASSWORD=app PGCONNECT_TIMEOUT=10 " + pg_program("psql") + " -X -A -t -c " +
                       sh_quote("SELECT 'psql over tls'") + " " +
                       sh_quote("port=" + std::to_string(p.port()) + " dbname=appdb user=app" + verify_full(w.ca())));
  INFO("psql: " << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("psql over tls") != std::string::npos);
}

TEST_CASE("TLS: a TLS client and a plain client share one server (client_tls_sslmode=prefer)", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.default_pool_size = 1;
  client_tls(cfg, "prefer");
  server_tls_verify_full(cfg, w.ca());
  Pooler p(cfg);

  Conn tls(p.conninfo() + verify_full(w.ca()) + " application_name=tls_client");
  INFO("TLS client: " << tls.error());
  REQUIRE(tls.ok());
  Conn plain(p.conninfo() + " sslmode=disable application_name=plain_client");
  INFO("plain client: " << plain.error());
  REQUIRE(plain.ok());
  CHECK(PQsslInUse(tls.get()) == 1);
  CHECK(PQsslInUse(plain.get()) == 0);

  std::string pid_tls = tls.value("SELECT pg_backend_pid()");
  std::string pid_plain = plain.value("SELECT pg_backend_pid()");
  CHECK(pid_tls == pid_plain);
  CHECK(tls.value(kSslOfBackend) == "t");
  CHECK(plain.value(kSslOfBackend) == "t");
  // A client that asks for TLS gets it; sslmode=prefer too.
  {
    Conn pref(p.conninfo() + " sslmode=prefer");
    REQUIRE(pref.ok());
    CHECK(PQsslInUse(pref.get()) == 1);
  }

  Result servers = show(p, "SERVERS", "");
  INFO("SHOW SERVERS:\n" << dump(servers));
  REQUIRE(servers.ok());
  CHECK(servers.rows() == 1);
  CHECK(row_value(servers, "database", "appdb", "remote_pid") == pid_tls);

  Result clients = show(p, "CLIENTS", "");
  INFO("SHOW CLIENTS:\n" << dump(clients));
  REQUIRE(clients.ok());
  CHECK(row_value(clients, "application_name", "tls_client", "tls").find("TLS") != std::string::npos);
  CHECK(row_value(clients, "application_name", "plain_client", "tls") == "");
}

TEST_CASE("TLS: client_tls_sslmode=require refuses a plain client with 28000", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  Pooler p(cfg);
  std::string err = failure_of(p.conninfo() + " sslmode=disable");
  INFO("plain client: " << err);
  CHECK(err.find("28000") != std::string::npos);
  CHECK(err.find("SSL required") != std::string::npos);
  // And a TLS one on the same pooler is fine.
  CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
}

TEST_CASE("TLS: client_tls_sslmode=verify-ca wants a client certificate from the CA", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "verify-ca");
  Pooler p(cfg);
  const std::string base = p.conninfo() + verify_full(w.ca());

  SECTION("with the client certificate") {
    Conn c(base + " sslcert=" + w.client_crt() + " sslkey=" + w.client_key());
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    CHECK(PQsslInUse(c.get()) == 1);
    CHECK(c.value("SELECT current_user") == "app");
  }
  // The client hears why through a TLS alert (libpq: "SSL error: tlsv13 alert
  // certificate required" / "tlsv1 alert unknown ca"), not just a closed socket
  // ("SSL SYSCALL error: EOF detected").
  SECTION("without a client certificate") {
    std::string err = failure_of(base + no_client_cert());
    INFO("client error: " << err);
    CHECK(err != "");
    CHECK(contains_icase(err, "alert"));
    CHECK(p.running());
  }
  SECTION("with a client certificate from an unrelated CA") {
    std::string err = failure_of(base + " sslcert=" + w.other_client_crt() + " sslkey=" + w.other_client_key());
    INFO("client error: " << err);
    CHECK(err != "");
    CHECK(contains_icase(err, "alert"));
    CHECK(p.running());
  }
  SECTION("without TLS") {
    std::string err = failure_of(p.conninfo() + " sslmode=disable");
    INFO("client error: " << err);
    CHECK(err.find("SSL required") != std::string::npos);
  }
}

TEST_CASE("TLS: client_tls_sslmode=verify-full is verify-ca for clients, as PgBouncer", "[tls]") {
  // No host name to check on a client certificate: only the CA is verified.
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "verify-full");
  Pooler p(cfg);
  const std::string base = p.conninfo() + verify_full(w.ca());
  {
    Conn c(base + " sslcert=" + w.client_crt() + " sslkey=" + w.client_key());
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "app");
  }
  std::string err = failure_of(base + no_client_cert());
  INFO("without a certificate: " << err);
  CHECK(contains_icase(err, "alert"));
  err = failure_of(base + " sslcert=" + w.other_client_crt() + " sslkey=" + w.other_client_key());
  INFO("unrelated CA: " << err);
  CHECK(contains_icase(err, "alert"));
}

TEST_CASE("TLS: auth_type=cert logs in by the client certificate's CommonName", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.auth_type = "cert";
  client_tls(cfg, "verify-full");
  Pooler p(cfg);
  const std::string cert = " sslcert=" + w.client_crt() + " sslkey=" + w.client_key();  // CN=app

  SECTION("libpq with the certificate of the user, no password") {
    Conn c(p.conninfo("app", "") + verify_full(w.ca()) + cert);
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    CHECK(PQsslInUse(c.get()) == 1);
    CHECK(c.value("SELECT current_user") == "app");
    CHECK(c.value("SELECT 6 * 7") == "42");
  }
  SECTION("psql with sslcert/sslkey") {
    auto r = run_command("PGCONNECT_TIMEOUT=10 " + pg_program("psql") + " -X -A -t -w -c " +
                         sh_quote("SELECT 'cert login as ' || current_user") + " " +
                         sh_quote("host=localhost hostaddr=127.0.0.1 port=" + std::to_string(p.port()) +
                                  " dbname=appdb user=app sslmode=verify-full sslrootcert=" + w.ca() +
                                  " sslcert=" + w.client_crt() + " sslkey=" + w.client_key()) +
                         " 2>&1");
    INFO("psql: " << r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("cert login as app") != std::string::npos);
  }
  SECTION("a certificate for another user: 28000, TLS certificate name mismatch") {
    // "admin" is a known user with a password; the certificate says CN=app.
    std::string err = failure_of(p.conninfo("admin", "admin") + verify_full(w.ca()) + cert);
    INFO("client error: " << err);
    CHECK(err.find("28000") != std::string::npos);
    CHECK(err.find("certificate authentication failed: TLS certificate name mismatch") != std::string::npos);
    CHECK(p.running());
    CHECK(p.log().find("appdb/admin@127.0.0.1") != std::string::npos);
    CHECK(p.log().find("TLS certificate name mismatch (certificate CN \"app\")") != std::string::npos);
  }
  SECTION("a valid certificate for a user pgpivot does not know") {
    std::string err = failure_of(p.conninfo("ghost", "") + verify_full(w.ca()) + " sslcert=" + w.ghost_client_crt() +
                                 " sslkey=" + w.ghost_client_key());
    INFO("client error: " << err);
    CHECK(err.find("28000") != std::string::npos);
    CHECK(err.find("certificate authentication failed") != std::string::npos);
    CHECK(err.find("no such user") == std::string::npos);  // the reason is only logged
    CHECK(p.log().find("appdb/ghost@127.0.0.1") != std::string::npos);
    CHECK(p.log().find("no such user") != std::string::npos);
  }
  SECTION("a password does not replace the certificate") {
    std::string err = failure_of(p.conninfo("app", "app") + verify_full(w.ca()) + no_client_cert());
    INFO("client error: " << err);
    CHECK(err != "");
    CHECK(contains_icase(err, "alert"));  // the handshake asks for the certificate
  }
  SECTION("a certificate from an unrelated CA (CN=app all the same) is refused") {
    std::string err = failure_of(p.conninfo("app", "") + verify_full(w.ca()) + " sslcert=" + w.other_client_crt() +
                                 " sslkey=" + w.other_client_key());
    INFO("client error: " << err);
    CHECK(err != "");
    CHECK(contains_icase(err, "alert"));
  }
  SECTION("a plain connection is refused with 28000") {
    std::string err = failure_of(p.conninfo("app", "app") + " sslmode=disable");
    INFO("client error: " << err);
    CHECK(err.find("28000") != std::string::npos);
    CHECK(err.find("SSL required") != std::string::npos);
  }
  SECTION("the console, as any database, wants the certificate of its user") {
    Conn admin(p.conninfo("admin", "admin", "pgbouncer") + verify_full(w.ca()) + cert);
    INFO("admin console: " << admin.error());
    CHECK_FALSE(admin.ok());
    CHECK(admin.error().find("TLS certificate name mismatch") != std::string::npos);
  }
}

TEST_CASE("TLS: SET auth_type = cert on the console only where it can work", "[tls]") {
  TlsWorld& w = world();
  const std::string cert = " sslcert=" + w.client_crt() + " sslkey=" + w.client_key();  // CN=app
  SECTION("client_tls_sslmode=require: refused, auth_type stays") {
    PoolerConfig cfg;
    client_tls(cfg, "require");
    Pooler p(cfg);
    Conn admin(p.conninfo("admin", "admin", "pgbouncer") + verify_full(w.ca()));
    INFO("admin console: " << admin.error());
    REQUIRE(admin.ok());
    Result set = admin.exec("SET auth_type = 'cert'");
    INFO("SET: " << set.message());
    CHECK(set.status() == PGRES_FATAL_ERROR);
    CHECK(set.message().find("auth_type = cert needs client_tls_sslmode = verify-full, got require") !=
          std::string::npos);
    Result cfg_rows = admin.exec("SHOW CONFIG");
    CHECK(row_value(cfg_rows, "key", "auth_type", "value") == "scram-sha-256");
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");  // passwords still work
  }
  SECTION("client_tls_sslmode=verify-full: accepted, the next login is by certificate") {
    PoolerConfig cfg;
    client_tls(cfg, "verify-full");
    Pooler p(cfg);
    Conn admin(p.conninfo("admin", "admin", "pgbouncer") + verify_full(w.ca()) + cert);
    INFO("admin console: " << admin.error());
    REQUIRE(admin.ok());
    Result set = admin.exec("SET auth_type = 'cert'");
    INFO("SET: " << set.message());
    REQUIRE(set.ok());
    CHECK(row_value(admin.exec("SHOW CONFIG"), "key", "auth_type", "value") == "cert");
    Conn c(p.conninfo("app", "") + verify_full(w.ca()) + cert);
    INFO("cert login: " << c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "app");
  }
}

TEST_CASE("TLS: auth_type=cert with client_tls_sslmode=require does not start", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.auth_type = "cert";
  client_tls(cfg, "require");
  std::string path = env().scratch + "/cert-require.toml";
  {
    std::ofstream out(path);
    out << render_toml(cfg, free_port());
  }
  auto r = run_command(sh_quote(env().pgpivot_bin) + " --check " + sh_quote(path) + " 2>&1");
  INFO("pgpivot --check: " << r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("auth_type = cert needs client_tls_sslmode = verify-full, got require") != std::string::npos);
  (void)w;
}

TEST_CASE("TLS: client_tls_protocols sets the lowest protocol version", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  cfg.extra["client_tls_protocols"] = q("tlsv1.3");
  Pooler p(cfg);
  {
    Conn c(p.conninfo() + verify_full(w.ca()));
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    CHECK(std::string(PQsslAttribute(c.get(), "protocol")) == "TLSv1.3");
  }
  std::string err = failure_of(p.conninfo() + verify_full(w.ca()) + " ssl_max_protocol_version=TLSv1.2");
  INFO("TLS 1.2 client: " << err);
  CHECK(err.rfind("connect: ", 0) == 0);
  CHECK(p.running());
}

TEST_CASE("TLS: a reload turns client TLS on; a broken certificate keeps the old setup", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  Pooler p(cfg);
  {
    Conn c(p.conninfo() + " sslmode=prefer");
    REQUIRE(c.ok());
    CHECK(PQsslInUse(c.get()) == 0);  // no TLS offered
  }
  client_tls(cfg, "require");
  p.reload(cfg);
  std::string last = "not tried";
  bool tls_now = false;
  for (int i = 0; i < 50 && !tls_now; ++i) {
    sleep_s(0.1);
    Conn c(p.conninfo() + verify_full(w.ca()));
    last = c.ok() ? "" : c.error();
    tls_now = c.ok() && PQsslInUse(c.get()) == 1;
  }
  INFO("TLS client after the reload: " << last);
  REQUIRE(tls_now);
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);

  // A key that does not exist: the reload is refused, TLS goes on as before.
  PoolerConfig broken = cfg;
  broken.extra["client_tls_key_file"] = q(w.certs + "/missing.key");
  p.reload(broken);
  sleep_s(0.5);
  CHECK(p.running());
  CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  CHECK(failure_of(p.conninfo() + " sslmode=disable").find("SSL required") != std::string::npos);
}
