// TLS between pgpivot and PostgreSQL ([tls]), and on both sides at once:
// server_tls_sslmode (verify-full, require and prefer, against PostgreSQL with and
// without TLS), a cluster node's own sslmode / sslrootcert, a certificate from the
// wrong CA on either side, sslmode allow (client and server side), PgBouncer's
// cipher shortcuts, and a cancel request, a 20 MB COPY each way with bounded memory
// and pgbench over TLS on both sides. Clients to pgpivot are in
// test_tls_clients.cpp; the certificates and the TLS-enabled PostgreSQL both use
// are made by tls_fixture.hpp.
#include <chrono>
#include <exception>
#include <regex>
#include <sstream>
#include <string>

#include "tls_fixture.hpp"

TEST_CASE("TLS: pgpivot connects to PostgreSQL with server_tls_sslmode=verify-full", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  server_tls_verify_full(cfg, w.ca());
  Pooler p(cfg);

  Conn c(p.conninfo());
  INFO("connect: " << c.error());
  REQUIRE(c.ok());
  CHECK(PQsslInUse(c.get()) == 0);  // the client side is plain here
  CHECK(c.value(kSslOfBackend) == "t");
  CHECK(c.value("SELECT current_setting('port')") == std::to_string(w.pg_port));

  Result servers = show(p, "SERVERS", "");
  INFO("SHOW SERVERS:\n" << dump(servers));
  REQUIRE(servers.ok());
  REQUIRE(servers.rows() >= 1);
  CHECK(servers.value(0, column(servers, "tls")).find("TLS") != std::string::npos);
}

TEST_CASE("TLS: a certificate from the wrong CA is refused on both sides", "[tls]") {
  TlsWorld& w = world();

  SECTION("a client verifying pgpivot with an unrelated CA") {
    PoolerConfig cfg;
    client_tls(cfg, "require");
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo() + verify_full(w.other_ca()));
    INFO("client error: " << err);
    CHECK(err.rfind("connect: ", 0) == 0);
    CHECK(contains_icase(err, "certificate"));
    // The right CA still works on the same pooler.
    CHECK(failure_of(p.conninfo() + verify_full(w.ca())) == "");
  }

  SECTION("pgpivot verifying PostgreSQL with an unrelated CA") {
    PoolerConfig cfg;
    server_tls_verify_full(cfg, w.other_ca());
    // As PgBouncer, a failed handshake keeps the login waiting (a restart may be
    // under way); query_wait_timeout ends the wait and names the failure.
    cfg.extra["query_wait_timeout"] = "2";
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
    CHECK(contains_icase(err, "query_wait_timeout"));
    CHECK(contains_icase(err, "certificate verify failed"));
    CHECK(p.running());
    // pgpivot tells PostgreSQL why it gave up (a TLS alert, as libpq sends: PostgreSQL
    // logs "tlsv1 alert unknown ca"), rather than just closing the socket ("EOF detected").
    sleep_s(0.3);
    std::string logged = last_pg_ssl_failure();
    INFO("PostgreSQL log: " << logged);
    CHECK(contains_icase(logged, "alert"));
  }

  SECTION("pgpivot with verify-full and the right CA, but a host name not in the certificate") {
    // 127.0.0.1 is in the SAN; "vm" (an /etc/hosts alias of 127.0.0.1 here) is not.
    if (run_command("getent hosts vm | grep -q '^127.0.0.1'").exit_code != 0) {
      WARN("no host name other than localhost resolves to 127.0.0.1 here; skipped");
      return;
    }
    PoolerConfig cfg;
    server_tls_verify_full(cfg, w.ca());
    cfg.main_cluster = "primary = { host = \"vm\", port = " + std::to_string(w.pg_port) + " }";
    cfg.extra["query_wait_timeout"] = "2";  // the login waits, then hears why
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
    CHECK(contains_icase(err, "certificate verify failed"));
  }
}

TEST_CASE("TLS: server_tls_sslmode against a PostgreSQL without TLS", "[tls]") {
  world();
  {
    Conn d(direct_conninfo());
    INFO("direct: " << d.error());
    REQUIRE(d.ok());
    INFO("this test needs the PostgreSQL of PGPIVOT_TEST_PGPORT without TLS");
    REQUIRE(d.value("SHOW ssl") == "off");
  }
  SECTION("require fails with an error about SSL") {
    PoolerConfig cfg;
    cfg.extra["server_tls_sslmode"] = q("require");
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
    CHECK(err != "");
    CHECK(err.find("SSL") != std::string::npos);
    CHECK(p.running());
  }
  SECTION("prefer falls back to plain") {
    PoolerConfig cfg;
    cfg.extra["server_tls_sslmode"] = q("prefer");
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "f");
  }
  SECTION("the default (prefer) falls back to plain") {
    Pooler p;
    CHECK(backend_ssl(p) == "f");
  }
}

TEST_CASE("TLS: a cluster node's own sslmode/sslrootcert override server_tls_*", "[tls]") {
  TlsWorld& w = world();
  SECTION("node verify-full with its CA, pooler disable") {
    PoolerConfig cfg;
    cfg.main_cluster = tls_cluster("sslmode = \"verify-full\", sslrootcert = " + q(w.ca()));
    cfg.extra["server_tls_sslmode"] = q("disable");
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "t");
  }
  SECTION("the node's sslrootcert wins over server_tls_ca_file") {
    PoolerConfig cfg;
    cfg.main_cluster = tls_cluster("sslrootcert = " + q(w.other_ca()));
    cfg.extra["server_tls_sslmode"] = q("verify-full");
    cfg.extra["server_tls_ca_file"] = q(w.ca());
    cfg.extra["query_wait_timeout"] = "2";  // the login waits, then hears why
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
    CHECK(contains_icase(err, "certificate verify failed"));
  }
  SECTION("node sslmode=disable, pooler verify-full") {
    PoolerConfig cfg;
    cfg.main_cluster = tls_cluster("sslmode = \"disable\"");
    cfg.extra["server_tls_sslmode"] = q("verify-full");
    cfg.extra["server_tls_ca_file"] = q(w.other_ca());
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "f");
  }
}

TEST_CASE("TLS: sslmode allow", "[tls]") {
  TlsWorld& w = world();
  SECTION("client_tls_sslmode=allow serves TLS to clients that ask, plain to others") {
    PoolerConfig cfg;
    client_tls(cfg, "allow");
    Pooler p(cfg);
    Conn tls(p.conninfo() + verify_full(w.ca()));
    INFO("TLS client: " << tls.error());
    REQUIRE(tls.ok());
    CHECK(PQsslInUse(tls.get()) == 1);
    Conn plain(p.conninfo() + " sslmode=disable");
    INFO("plain client: " << plain.error());
    REQUIRE(plain.ok());
    CHECK(plain.value("SELECT 1") == "1");
  }
  // As PgBouncer (not libpq): allow sends an SSLRequest, uses TLS when the server
  // answers 'S' and goes on in plain text after an 'N', i.e. it behaves as prefer.
  SECTION("server_tls_sslmode=allow uses TLS with a PostgreSQL that has ssl = on") {
    PoolerConfig cfg;
    cfg.main_cluster = tls_cluster();
    cfg.extra["server_tls_sslmode"] = q("allow");
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "t");
  }
  SECTION("server_tls_sslmode=allow connects in plain text to a PostgreSQL with ssl = off") {
    {
      Conn d(direct_conninfo());
      INFO("direct: " << d.error());
      REQUIRE(d.ok());
      REQUIRE(d.value("SHOW ssl") == "off");
    }
    PoolerConfig cfg;
    cfg.extra["server_tls_sslmode"] = q("allow");
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "f");
    CHECK(p.running());
  }
  SECTION("a node's own sslmode = allow does the same") {
    PoolerConfig cfg;
    cfg.main_cluster = tls_cluster("sslmode = \"allow\"");
    cfg.extra["server_tls_sslmode"] = q("disable");
    Pooler p(cfg);
    CHECK(backend_ssl(p) == "t");
  }
}

TEST_CASE("TLS: PgBouncer's cipher shortcuts are accepted", "[tls]") {
  // PgBouncer documents default/secure, compat/legacy, insecure/all, normal and fast
  // for client_tls_ciphers and server_tls_ciphers; a pgbouncer.ini using any of them
  // must not stop pgpivot from starting.
  TlsWorld& w = world();
  for (const char* ciphers : {"default", "secure", "fast", "normal", "compat", "legacy", "insecure", "all"}) {
    INFO("ciphers = " << ciphers);
    PoolerConfig cfg;
    client_tls(cfg, "require");
    server_tls_verify_full(cfg, w.ca());
    cfg.extra["client_tls_ciphers"] = q(ciphers);
    cfg.extra["server_tls_ciphers"] = q(ciphers);
    std::string start_error;
    try {
      Pooler p(cfg);
      CHECK(failure_of(p.conninfo() + verify_full(w.ca()), kSslOfBackend) == "");
    } catch (const std::exception& e) {
      // Just the pooler's ERROR lines of the log in the exception's text.
      std::istringstream text(e.what());
      for (std::string line; std::getline(text, line);)
        if (line.find("ERROR") != std::string::npos) start_error += line + "\n";
      if (start_error.empty()) start_error = e.what();
    }
    INFO("pgpivot did not start: " << start_error);
    CHECK(start_error == "");
  }
}

TEST_CASE("TLS: a cancel request reaches a query running over TLS on both sides", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  client_tls(cfg, "require");
  server_tls_verify_full(cfg, w.ca());
  Pooler p(cfg);
  Conn c(p.conninfo() + verify_full(w.ca()));
  INFO("connect: " << c.error());
  REQUIRE(c.ok());
  c.send("SELECT pg_sleep(20)");
  sleep_s(0.5);
  // libpq sends the CancelRequest on a new plain connection, as to PostgreSQL.
  PGcancel* cancel = PQgetCancel(c.get());
  REQUIRE(cancel != nullptr);
  char errbuf[256] = "";
  CHECK(PQcancel(cancel, errbuf, sizeof errbuf) == 1);
  PQfreeCancel(cancel);
  INFO("PQcancel: " << errbuf);
  auto t0 = std::chrono::steady_clock::now();
  Result r = c.next_result(15);
  INFO("result: " << r.message());
  CHECK(r.sqlstate() == "57014");
  CHECK(seconds_since(t0) < 10);
  while (c.next_result(5).get()) {
  }
  CHECK(c.value("SELECT 1") == "1");
}

TEST_CASE("TLS: 20 MB COPY out and pgbench over TLS on both sides", "[tls]") {
  TlsWorld& w = world();
  PoolerConfig cfg;
  cfg.default_pool_size = 5;
  client_tls(cfg, "require");
  server_tls_verify_full(cfg, w.ca());
  Pooler p(cfg);
  PeakPrivate sampler(p.pid());

  {
    Conn c(p.conninfo() + verify_full(w.ca()));
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    REQUIRE(PQsslInUse(c.get()) == 1);
    REQUIRE(c.value(kSslOfBackend) == "t");
    Result out = c.exec("COPY (SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 21000) i) TO STDOUT");
    INFO("COPY TO: " << out.message());
    REQUIRE(out.status() == PGRES_COPY_OUT);
    size_t bytes = 0, rows = 0;
    bool well_formed = true;
    for (;;) {
      char* data = nullptr;
      int n = PQgetCopyData(c, &data, 0);
      if (n < 0) break;
      bytes += static_cast<size_t>(n);
      ++rows;
      // Each row is "<i>\t<1024 hex digits>\n".
      if (n < 1026 || data[n - 1] != '\n') well_formed = false;
      PQfreemem(data);
    }
    Result done = c.next_result(60);
    INFO("COPY TO end: " << done.message());
    REQUIRE(done.status() == PGRES_COMMAND_OK);
    CHECK(rows == 21000);
    CHECK(well_formed);
    CHECK(bytes >= 20u * 1024 * 1024);
  }
  {
    // And 20 MB the other way, in 64 KiB chunks.
    Conn d(node_conninfo(w.pg_port));
    INFO("direct: " << d.error());
    REQUIRE(d.ok());
    d.exec_ok("CREATE UNLOGGED TABLE IF NOT EXISTS itest_tls_copy (id int, payload text)");
    d.exec_ok("GRANT ALL ON itest_tls_copy TO app");
    d.exec_ok("TRUNCATE itest_tls_copy");
    Conn c(p.conninfo() + verify_full(w.ca()));
    INFO("connect: " << c.error());
    REQUIRE(c.ok());
    Result in = c.exec("COPY itest_tls_copy FROM STDIN");
    INFO("COPY FROM: " << in.message());
    REQUIRE(in.status() == PGRES_COPY_IN);
    std::string chunk;
    size_t rows = 0, bytes = 0;
    std::string payload(1000, 'y');
    while (bytes < 20u * 1024 * 1024) {
      chunk.clear();
      while (chunk.size() < 64 * 1024) {
        chunk += std::to_string(rows++) + "\t" + payload + "\n";
      }
      REQUIRE(PQputCopyData(c, chunk.data(), static_cast<int>(chunk.size())) == 1);
      bytes += chunk.size();
    }
    REQUIRE(PQputCopyEnd(c, nullptr) == 1);
    Result done = c.next_result(120);
    INFO("COPY FROM end: " << done.message());
    REQUIRE(done.status() == PGRES_COMMAND_OK);
    CHECK(std::string(PQcmdTuples(done.get())) == std::to_string(rows));
    REQUIRE_FALSE(c.next_result(10).get());
    CHECK(c.value("SELECT count(*) FROM itest_tls_copy") == std::to_string(rows));
    d.exec_ok("DROP TABLE itest_tls_copy");
  }
  long peak = sampler.peak();
  INFO("pooler peak private memory " << peak << " KiB (VmHWM " << p.peak_rss_kb() << " KiB)");
  REQUIRE(peak > 0);
  if (!kSanitizedBuild) CHECK(peak < 16 * 1024);

  auto r = run_command("PGPASSWORD=app PGCONNECT_TIMEOUT=10 PGSSLMODE=verify-full PGSSLROOTCERT=" +
                       sh_quote(w.ca()) + " " + pg_program("pgbench") + " -h localhost -p " +
                       std::to_string(p.port()) + " -U app -n -S -c 20 -j 2 -T 3 appdb");
  INFO("pgbench output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("number of failed transactions: 0 ") != std::string::npos);
  std::smatch m;
  static const std::regex re("number of transactions actually processed: ([0-9]+)");
  CHECK((std::regex_search(r.output, m, re) && std::stol(m[1]) > 0));
  CHECK(p.running());
  peak = sampler.peak();
  INFO("pooler peak private memory after pgbench: " << peak << " KiB (VmHWM " << p.peak_rss_kb() << " KiB)");
  if (!kSanitizedBuild) CHECK(peak < 16 * 1024);
}
