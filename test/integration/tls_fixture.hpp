// The TLS tests' fixture, shared by test_tls_clients.cpp and test_tls_servers.cpp.
//
// Everything is throwaway and made during the run: a CA, a server certificate for
// CN=localhost (SAN DNS:localhost, IP:127.0.0.1) used by both pgpivot and
// PostgreSQL, client certificates for "app" and "ghost", and a second, unrelated
// CA (with a client certificate of its own), made with the openssl CLI under
// PGPIVOT_TEST_SCRATCH/tls-certs. A PostgreSQL with ssl = on is started once with
// scripts/lib.sh under PGPIVOT_TEST_SCRATCH/tls/pg on port 61700
// (PGPIVOT_TEST_TLS_PGPORT) and stopped when the test binary exits. The
// PostgreSQL at PGPIVOT_TEST_PGPORT serves as the one without TLS (ssl = off).
//
// The world is made once for the whole test binary, whichever TLS test runs first:
// everything here is inline in a named namespace (not an anonymous one, which would
// give each test file a TlsWorld and a PostgreSQL of its own).
#pragma once

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "harness.hpp"

using namespace itest;  // NOLINT

namespace tls_test {

inline std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

inline std::string toml_str(const std::string& s) {
  return "\"" + replace_all(replace_all(s, "\\", "\\\\"), "\"", "\\\"") + "\"";
}

inline CommandResult lib_sh(const std::string& script) {
  return run_command("bash -c " +
                     sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") + " && " + script));
}

inline int tls_pg_port() {
  return fixture_port("PGPIVOT_TEST_TLS_PGPORT", 61700);  // clear of the failover pairs (61530+ / sanitize 61630+)
}

// Straight to a PostgreSQL as the superuser (trust over TCP).
inline std::string node_conninfo(int port, const std::string& extra = "") {
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

inline TlsWorld& world() {
  static TlsWorld w;
  if (!w.tried) w.setup();
  INFO(w.error);
  REQUIRE(w.ready);
  return w;
}

// Pooler settings: TOML string literals.
inline std::string q(const std::string& s) { return toml_str(s); }

// pgpivot serving TLS to its clients with the test server certificate.
inline void client_tls(PoolerConfig& cfg, const std::string& mode) {
  const TlsWorld& w = world();
  cfg.extra["client_tls_sslmode"] = q(mode);
  cfg.extra["client_tls_cert_file"] = q(w.server_crt());
  cfg.extra["client_tls_key_file"] = q(w.server_key());
  cfg.extra["client_tls_ca_file"] = q(w.ca());
}

// The cluster "main" on the TLS PostgreSQL, by host name (for verify-full).
inline std::string tls_cluster(const std::string& node_options = "") {
  return "primary = { host = \"localhost\", port = " + std::to_string(world().pg_port) +
         (node_options.empty() ? "" : ", " + node_options) + " }";
}

// pgpivot to the TLS PostgreSQL with server_tls_sslmode = verify-full.
inline void server_tls_verify_full(PoolerConfig& cfg, const std::string& ca) {
  cfg.main_cluster = tls_cluster();
  cfg.extra["server_tls_sslmode"] = q("verify-full");
  cfg.extra["server_tls_ca_file"] = q(ca);
}

// libpq options of a client verifying pgpivot's certificate by host name.
inline std::string verify_full(const std::string& ca) {
  return " host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=" + ca;
}

// A client that sends no certificate (and does not pick up ~/.postgresql/postgresql.crt).
inline std::string no_client_cert() {
  const TlsWorld& w = world();
  return " sslcert=" + w.certs + "/none.crt sslkey=" + w.certs + "/none.key";
}

// Connects and runs one query; the text of whatever went wrong ("" when it worked).
inline std::string failure_of(const std::string& conninfo, const std::string& sql = "SELECT 1") {
  Conn c(conninfo, 15);
  if (!c.ok()) return "connect: " + c.error();
  Result r = c.exec(sql, 15);
  return r.ok() ? "" : "query: " + r.message();
}

// Value of column `col` in the first row whose column `key` equals `key_value`.
inline std::string row_value(const Result& r, const std::string& key, const std::string& key_value,
                             const std::string& col) {
  int k = column(r, key), c = column(r, col);
  if (k < 0 || c < 0) return "<no column>";
  for (int i = 0; i < r.rows(); ++i)
    if (r.value(i, k) == key_value) return r.value(i, c);
  return "<no row>";
}

inline Result show(const Pooler& p, const std::string& what, const std::string& tls_opts) {
  Conn admin(p.conninfo("admin", "admin", "pgbouncer") + tls_opts);
  INFO("admin console: " << admin.error());
  REQUIRE(admin.ok());
  return admin.exec("SHOW " + what);
}

// The newest "could not accept SSL connection" line of the TLS PostgreSQL's log.
inline std::string last_pg_ssl_failure() {
  std::ifstream in(world().pgdir + ".log");
  std::string line, last;
  while (std::getline(in, line))
    if (line.find("could not accept SSL connection") != std::string::npos) last = line;
  return last;
}

inline const char* kSslOfBackend = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

// Whether the server connection behind a plain client of `p` uses TLS, as
// PostgreSQL's pg_stat_ssl says ("t" or "f").
inline std::string backend_ssl(const Pooler& p) {
  Conn c(p.conninfo());
  INFO("connect: " << c.error());
  REQUIRE(c.ok());
  return c.value(kSslOfBackend);
}

}  // namespace tls_test

using namespace tls_test;  // NOLINT
