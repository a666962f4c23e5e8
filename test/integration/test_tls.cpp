// TLS on both sides of the pooler ([tls]): libpq clients to pgpivot
// (client_tls_*), pgpivot to PostgreSQL (server_tls_* and per-node sslmode /
// sslrootcert), certificate verification both ways, plain and TLS clients sharing
// a pool, and streaming with bounded memory over TLS.
//
// Everything is throwaway and made during the run: a CA, a server certificate for
// CN=localhost (SAN DNS:localhost, IP:127.0.0.1) used by both pgpivot and
// PostgreSQL, client certificates for "app" and "ghost", and a second, unrelated
// CA (with a client certificate of its own), made with the openssl CLI under
// PGPIVOT_TEST_SCRATCH/tls-certs. A PostgreSQL with ssl = on is started once with
// scripts/lib.sh under PGPIVOT_TEST_SCRATCH/tls/pg on port 61660
// (PGPIVOT_TEST_TLS_PGPORT) and stopped when the test binary exits. The
// PostgreSQL at PGPIVOT_TEST_PGPORT serves as the one without TLS (ssl = off).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

std::string toml_str(const std::string& s) {
  return "\"" + replace_all(replace_all(s, "\\", "\\\\"), "\"", "\\\"") + "\"";
}

CommandResult lib_sh(const std::string& script) {
  return run_command("bash -c " +
                     sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") + " && " + script));
}

int tls_pg_port() {
  const char* v = std::getenv("PGPIVOT_TEST_TLS_PGPORT");
  return v && *v ? std::atoi(v) : 61660;
}

// Straight to a PostgreSQL as the superuser (trust over TCP).
std::string node_conninfo(int port, const std::string& extra = "") {
  return "host=127.0.0.1 port=" + std::to_string(port) +
         " dbname=appdb user=postgres connect_timeout=5 options='-c client_min_messages=warning' " + extra;
}

// The certificates and the TLS-enabled PostgreSQL, made once per test binary run.
struct TlsWorld {
  std::string certs;  // ca.crt, server.crt/.key, client.crt/.key, other-ca.crt, other-client.crt/.key
  std::string base;   // parent of the data directory (postgres-owned, holds the socket)
  std::string pgdir;
  int pg_port = 0;
  bool tried = false, ready = false, started = false;
  std::string error;

  std::string ca() const { return certs + "/ca.crt"; }
  std::string other_ca() const { return certs + "/other-ca.crt"; }
  std::string server_crt() const { return certs + "/server.crt"; }
  std::string server_key() const { return certs + "/server.key"; }
  std::string client_crt() const { return certs + "/client.crt"; }
  std::string client_key() const { return certs + "/client.key"; }
  std::string other_client_crt() const { return certs + "/other-client.crt"; }
  std::string other_client_key() const { return certs + "/other-client.key"; }
  std::string ghost_client_crt() const { return certs + "/ghost-client.crt"; }  // CN=ghost, from the CA
  std::string ghost_client_key() const { return certs + "/ghost-client.key"; }

  ~TlsWorld() {
    if (started) {
      auto r = lib_sh("pg_stop " + sh_quote(pgdir));
      if (r.exit_code != 0) std::cerr << "[itest] pg_stop " << pgdir << ":\n" << r.output;
    }
  }

  void setup() {
    tried = true;
    std::string root = env().scratch;
    if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0)
      root = "/tmp/pgpivot-tls-tests";
    ::mkdir(root.c_str(), 0755);
    certs = root + "/tls-certs";
    base = root + "/tls";
    pgdir = base + "/pg";
    pg_port = tls_pg_port();
    if (!make_certs()) return;
    // A leftover of an aborted run is stopped first; the data directory is reused.
    lib_sh("pg_stop " + sh_quote(pgdir));
    auto r = lib_sh("pg_start_primary " + sh_quote(pgdir) + " " + std::to_string(pg_port));
    if (r.exit_code != 0) {
      error = "pg_start_primary " + pgdir + " " + std::to_string(pg_port) + " failed:\n" + r.output;
      return;
    }
    started = true;
    // The server's certificate and key in the data directory, owned by postgres, 0600.
    r = run_command("cp " + sh_quote(server_crt()) + " " + sh_quote(pgdir + "/server.crt") + " && cp " +
                    sh_quote(server_key()) + " " + sh_quote(pgdir + "/server.key") +
                    " && chown postgres:postgres " + sh_quote(pgdir + "/server.crt") + " " +
                    sh_quote(pgdir + "/server.key") + " && chmod 0600 " + sh_quote(pgdir + "/server.crt") + " " +
                    sh_quote(pgdir + "/server.key"));
    if (r.exit_code != 0) {
      error = "copying the server certificate into " + pgdir + ":\n" + r.output;
      return;
    }
    {
      Conn c(node_conninfo(pg_port));
      if (!c.ok()) {
        error = "cannot connect to the TLS PostgreSQL: " + c.error();
        return;
      }
      for (const char* sql : {"ALTER SYSTEM SET ssl = on", "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
                              "ALTER SYSTEM SET ssl_key_file = 'server.key'", "SELECT pg_reload_conf()"}) {
        Result res = c.exec(sql);
        if (!res.ok()) {
          error = std::string(sql) + ": " + res.message();
          return;
        }
      }
    }
    // The reload is asynchronous: wait until a new connection gets TLS.
    std::string last;
    for (int i = 0; i < 100; ++i) {
      Conn c(node_conninfo(pg_port, "sslmode=require"));
      if (c.ok()) {
        Result res = c.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
        if (res.ok() && res.value() == "t") {
          ready = true;
          return;
        }
        last = res.message();
      } else {
        last = c.error();
      }
      sleep_s(0.1);
    }
    error = "PostgreSQL on " + std::to_string(pg_port) + " did not start TLS after ALTER SYSTEM SET ssl = on: " +
            last + "\n(log: " + pgdir + ".log)";
  }

  bool make_certs() {
    run_command("rm -rf " + sh_quote(certs));
    if (::mkdir(certs.c_str(), 0700) != 0) {
      error = "cannot create " + certs;
      return false;
    }
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    auto ca_cmd = [&](const std::string& name, const std::string& cn) {
      return "openssl req -x509 -new" + ec + " -keyout " + name + ".key -out " + name + ".crt -days 2 -subj '/CN=" +
             cn + "' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
    };
    auto leaf_cmd = [&](const std::string& name, const std::string& cn, const std::string& ca,
                        const std::string& ext) {
      return "printf '%s\\n' " + ext + " > " + name + ".ext && openssl req -new" + ec + " -keyout " + name +
             ".key -out " + name + ".csr -subj '/CN=" + cn + "' && openssl x509 -req -in " + name + ".csr -CA " +
             ca + ".crt -CAkey " + ca + ".key -CAcreateserial -days 2 -out " + name + ".crt -extfile " + name +
             ".ext";
    };
    std::string script =
        "set -e; cd " + sh_quote(certs) + "; " + ca_cmd("ca", "pgpivot test CA") + "; " +
        ca_cmd("other-ca", "unrelated test CA") + "; " +
        leaf_cmd("server", "localhost", "ca",
                 "'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' "
                 "'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth'") +
        "; " +
        leaf_cmd("client", "app", "ca",
                 "'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth'") +
        "; " +
        leaf_cmd("ghost-client", "ghost", "ca",
                 "'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth'") +
        "; " +
        leaf_cmd("other-client", "app", "other-ca",
                 "'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth'") +
        "; chmod 0600 *.key; openssl verify -CAfile ca.crt server.crt client.crt";
    auto r = run_command("sh -c " + sh_quote(script));
    if (r.exit_code != 0) {
      error = "making the test certificates with openssl failed:\n" + r.output;
      return false;
    }
    return true;
  }
};

TlsWorld& world() {
  static TlsWorld w;
  if (!w.tried) w.setup();
  INFO(w.error);
  REQUIRE(w.ready);
  return w;
}

// Pooler settings: TOML string literals.
std::string q(const std::string& s) { return toml_str(s); }

// pgpivot serving TLS to its clients with the test server certificate.
void client_tls(PoolerConfig& cfg, const std::string& mode) {
  const TlsWorld& w = world();
  cfg.extra["client_tls_sslmode"] = q(mode);
  cfg.extra["client_tls_cert_file"] = q(w.server_crt());
  cfg.extra["client_tls_key_file"] = q(w.server_key());
  cfg.extra["client_tls_ca_file"] = q(w.ca());
}

// The cluster "main" on the TLS PostgreSQL, by host name (for verify-full).
std::string tls_cluster(const std::string& node_options = "") {
  return "primary = { host = \"localhost\", port = " + std::to_string(world().pg_port) +
         (node_options.empty() ? "" : ", " + node_options) + " }";
}

// pgpivot to the TLS PostgreSQL with server_tls_sslmode = verify-full.
void server_tls_verify_full(PoolerConfig& cfg, const std::string& ca) {
  cfg.main_cluster = tls_cluster();
  cfg.extra["server_tls_sslmode"] = q("verify-full");
  cfg.extra["server_tls_ca_file"] = q(ca);
}

// libpq options of a client verifying pgpivot's certificate by host name.
std::string verify_full(const std::string& ca) {
  return " host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=" + ca;
}

// A client that sends no certificate (and does not pick up ~/.postgresql/postgresql.crt).
std::string no_client_cert() {
  const TlsWorld& w = world();
  return " sslcert=" + w.certs + "/none.crt sslkey=" + w.certs + "/none.key";
}

// Connects and runs one query; the text of whatever went wrong ("" when it worked).
std::string failure_of(const std::string& conninfo, const std::string& sql = "SELECT 1") {
  Conn c(conninfo, 15);
  if (!c.ok()) return "connect: " + c.error();
  Result r = c.exec(sql, 15);
  return r.ok() ? "" : "query: " + r.message();
}

// The column `name` of every row of a console SHOW.
int column(const Result& r, const std::string& name) {
  return r.get() ? PQfnumber(r.get(), ("\"" + name + "\"").c_str()) : -1;
}

std::string dump(const Result& r) {
  std::string out;
  if (!r.get()) return "(no result: " + r.message() + ")";
  for (int c = 0; c < PQnfields(r.get()); ++c) out += std::string(PQfname(r.get(), c)) + "|";
  out += "\n";
  for (int i = 0; i < r.rows(); ++i) {
    for (int c = 0; c < PQnfields(r.get()); ++c) out += r.value(i, c) + "|";
    out += "\n";
  }
  return out;
}

// Value of column `col` in the first row whose column `key` equals `key_value`.
std::string row_value(const Result& r, const std::string& key, const std::string& key_value, const std::string& col) {
  int k = column(r, key), c = column(r, col);
  if (k < 0 || c < 0) return "<no column>";
  for (int i = 0; i < r.rows(); ++i)
    if (r.value(i, k) == key_value) return r.value(i, c);
  return "<no row>";
}

Result show(const Pooler& p, const std::string& what, const std::string& tls_opts) {
  Conn admin(p.conninfo("admin", "admin", "pgbouncer") + tls_opts);
  INFO("admin console: " << admin.error());
  REQUIRE(admin.ok());
  return admin.exec("SHOW " + what);
}

// The newest "could not accept SSL connection" line of the TLS PostgreSQL's log.
std::string last_pg_ssl_failure() {
  std::ifstream in(world().pgdir + ".log");
  std::string line, last;
  while (std::getline(in, line))
    if (line.find("could not accept SSL connection") != std::string::npos) last = line;
  return last;
}

const char* kSslOfBackend = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

// Whether the server connection behind a plain client of `p` uses TLS, as
// PostgreSQL's pg_stat_ssl says ("t" or "f").
std::string backend_ssl(const Pooler& p) {
  Conn c(p.conninfo());
  INFO("connect: " << c.error());
  REQUIRE(c.ok());
  return c.value(kSslOfBackend);
}

}  // namespace

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
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
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
    Pooler p(cfg);
    std::string err = failure_of(p.conninfo());
    INFO("client error: " << err);
    CHECK(contains_icase(err, "certificate verify failed"));
  }
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
