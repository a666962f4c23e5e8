// auth_type = hba against the real PostgreSQL: rules choosing trust / md5 /
// scram-sha-256 / password / reject by database, user and address (the method is
// read off the wire, from the authentication request pgpivot sends); peer with an
// ident map over the Unix socket; cert with and without a map; RELOAD changing the
// rules, and a broken file keeping the rules in use.
#include <catch2/catch.hpp>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "harness.hpp"
#include "tls_fixture.hpp"
#include "wire_client.hpp"

using namespace itest;

namespace {

std::string hba_dir() {
  std::string dir = env().scratch + "/hba";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  return dir;
}

std::string write_file(const std::string& name, const std::string& text) {
  std::string path = hba_dir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

// auth_type = hba with these files; appdb2 is another name for appdb.
PoolerConfig hba_config(const std::string& hba_file, const std::string& ident_file = "") {
  PoolerConfig cfg;
  cfg.auth_type = "hba";
  cfg.extra["auth_hba_file"] = tls_test::q(hba_file);
  if (!ident_file.empty()) cfg.extra["auth_ident_file"] = tls_test::q(ident_file);
  cfg.extra_databases["appdb2"] = "cluster = \"main\"\ndbname = \"appdb\"";
  return cfg;
}

// The authentication request pgpivot answers a startup packet with: "ok", "md5",
// "cleartext", "sasl", or "error SQLSTATE: message".
std::string auth_request(int port, const std::string& user, const std::string& db) {
  RawSocket s(port);
  REQUIRE(s.send_all(startup_packet({{"user", user}, {"database", db}})));
  char type = 0;
  std::string payload;
  if (!s.read_message(type, payload, 10)) return "closed";
  if (type == 'E') return "error " + error_field(payload, 'C') + ": " + error_field(payload, 'M');
  if (type != 'R' || payload.size() < 4) return std::string("unexpected ") + type;
  switch (get_u32(payload, 0)) {
    case 0: return "ok";
    case 3: return "cleartext";
    case 5: return "md5";
    case 10: return "sasl";
    default: return "auth " + std::to_string(get_u32(payload, 0));
  }
}

std::string os_user() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw ? pw->pw_name : "";
}

}  // namespace

TEST_CASE("hba: the first matching rule picks the method per database, user and address", "[hba]") {
  std::string hba = write_file("rules.conf", R"(# TYPE DATABASE USER ADDRESS METHOD
host    appdb2     all              127.0.0.1/32   trust
host    appdb      app              127.0.0.1/32   md5
host    appdb      md5user          127.0.0.0/8    scram-sha-256
host    appdb      admin            10.0.0.0/8     trust
host    appdb      admin            127.0.0.1      255.255.255.255   password
host    pgbouncer  admin            all            md5
hostssl all        all              all            trust
host    appdb      nobody,"app2"    127.0.0.1/32   reject
)");
  Pooler p(hba_config(hba));
  CHECK(auth_request(p.port(), "app", "appdb2") == "ok");
  CHECK(auth_request(p.port(), "app", "appdb") == "md5");
  CHECK(auth_request(p.port(), "md5user", "appdb") == "sasl");
  CHECK(auth_request(p.port(), "admin", "appdb") == "cleartext");  // 10.0.0.0/8 does not match
  CHECK(auth_request(p.port(), "admin", "pgbouncer") == "md5");
  // hostssl needs TLS; then an explicit reject, then no rule at all.
  CHECK(auth_request(p.port(), "nobody", "appdb") == "error 28000: login rejected");
  CHECK(auth_request(p.port(), "app", "pgbouncer") == "error 28000: no authentication method is found");

  SECTION("logins go through with each method's exchange") {
    Conn trust(p.conninfo("app", "", "appdb2"));
    INFO("trust: " << trust.error());
    REQUIRE(trust.ok());
    CHECK(trust.value("SELECT current_user") == "app");
    Conn md5(p.conninfo("app", "app"));
    INFO("md5: " << md5.error());
    REQUIRE(md5.ok());
    Conn scram(p.conninfo("md5user", "md5pass"));
    INFO("scram: " << scram.error());
    REQUIRE(scram.ok());
    Conn plain(p.conninfo("admin", "admin"));
    INFO("password: " << plain.error());
    REQUIRE(plain.ok());
    Conn console(p.conninfo("admin", "admin", "pgbouncer"));
    INFO("console: " << console.error());
    REQUIRE(console.ok());
    // A wrong password is still a wrong password; a refusal closes only that client.
    Conn wrong(p.conninfo("app", "nope"));
    CHECK(wrong.error().find("28P01") != std::string::npos);
    Conn refused(p.conninfo("app", "app", "pgbouncer"));
    CHECK(refused.error().find("no authentication method is found") != std::string::npos);
    CHECK(md5.value("SELECT 6 * 7") == "42");
    CHECK(p.running());
  }
  SECTION("a user that is not known still fails under trust") {
    std::string err = auth_request(p.port(), "ghost", "appdb2");
    CHECK(err == "error 28000: \"trust\" authentication failed");
  }
}

TEST_CASE("hba: peer over the Unix socket, with and without an ident map", "[hba]") {
  std::string me = os_user();
  REQUIRE(!me.empty());
  std::string sock = hba_dir() + "/sock";
  ::mkdir(sock.c_str(), 0777);
  ::chmod(sock.c_str(), 0777);
  std::string ident = write_file("peer-ident.conf", "# MAP SYSTEM PG\nlocalmap  " + me + "  app\nlocalmap  " + me +
                                                        "  \"admin\"\nothermap  nosuchosuser  all\n");
  std::string hba = write_file("peer.conf", "local appdb  all peer map=localmap\n"
                                            "local appdb2 all peer\n"
                                            "host  all    all all md5\n");
  PoolerConfig cfg = hba_config(hba, ident);
  cfg.extra["unix_socket_dir"] = tls_test::q(sock);
  Pooler p(cfg);
  auto local = [&](const std::string& user, const std::string& db) {
    return "host=" + sock + " port=" + std::to_string(p.port()) + " user=" + user + " dbname=" + db +
           " connect_timeout=10";
  };
  INFO("running as OS user " << me);
  Conn app(local("app", "appdb"));
  INFO("app through localmap: " << app.error());
  REQUIRE(app.ok());
  CHECK(app.value("SELECT current_user") == "app");
  Conn admin(local("admin", "appdb"));
  INFO("admin through localmap: " << admin.error());
  CHECK(admin.ok());

  Conn md5user(local("md5user", "appdb"));
  CHECK_FALSE(md5user.ok());
  CHECK(md5user.error().find("28000") != std::string::npos);
  CHECK(md5user.error().find("unix socket login rejected") != std::string::npos);
  CHECK(p.log().find("appdb/md5user@unix ident map localmap cannot be matched") != std::string::npos);

  // Without a map the OS user must be the user name (no "app" OS user here).
  Conn nomap(local("app", "appdb2"));
  CHECK(nomap.error().find("unix socket login rejected") != std::string::npos);
  // Over TCP the last rule applies.
  Conn tcp(p.conninfo("app", "app", "appdb2"));
  INFO("tcp: " << tcp.error());
  CHECK(tcp.ok());
  CHECK(app.value("SELECT 1") == "1");
}

TEST_CASE("hba: cert rules, with the certificate name mapped through auth_ident_file", "[hba][tls]") {
  tls_test::TlsWorld& w = tls_test::world();
  std::string ident = write_file("cert-ident.conf", "certmap  app    admin\ncertmap  ghost  app\n");
  std::string hba = write_file("cert.conf", "hostssl appdb  all 127.0.0.1/32 cert map=certmap\n"
                                            "hostssl appdb2 all 127.0.0.1/32 cert\n"
                                            "host    all    all 127.0.0.1/32 md5\n");
  PoolerConfig cfg = hba_config(hba, ident);
  tls_test::client_tls(cfg, "require");  // as PgBouncer's test: a certificate is asked for, not required
  Pooler p(cfg);
  const std::string app_cert = " sslcert=" + w.client_crt() + " sslkey=" + w.client_key();  // CN=app
  const std::string ghost_cert = " sslcert=" + w.ghost_client_crt() + " sslkey=" + w.ghost_client_key();
  const std::string tls = tls_test::verify_full(w.ca());

  Conn mapped(p.conninfo("admin", "") + tls + app_cert);
  INFO("CN=app as admin (mapped): " << mapped.error());
  REQUIRE(mapped.ok());
  CHECK(mapped.value("SELECT current_user") == "admin");
  Conn ghost(p.conninfo("app", "") + tls + ghost_cert);
  INFO("CN=ghost as app (mapped): " << ghost.error());
  CHECK(ghost.ok());

  // The map has no app -> app line: refused, though the name is the user's.
  std::string err = tls_test::failure_of(p.conninfo("app", "") + tls + app_cert);
  CHECK(err.find("28000") != std::string::npos);
  CHECK(err.find("certificate authentication failed: ident map does not have a match") != std::string::npos);
  CHECK(p.log().find("appdb/app@127.0.0.1") != std::string::npos);
  CHECK(p.log().find("ident map: certmap does not have a match") != std::string::npos);

  // No map: the CommonName must be the user.
  Conn own(p.conninfo("app", "", "appdb2") + tls + app_cert);
  INFO("CN=app as app on appdb2: " << own.error());
  CHECK(own.ok());
  err = tls_test::failure_of(p.conninfo("admin", "", "appdb2") + tls + app_cert);
  CHECK(err.find("TLS certificate name mismatch") != std::string::npos);
  // TLS without a certificate: a cert rule still matches and fails.
  err = tls_test::failure_of(p.conninfo("app", "app", "appdb2") + tls + tls_test::no_client_cert());
  CHECK(err.find("certificate authentication failed") != std::string::npos);
  // client_tls_sslmode = require refuses a plain connection before any rule.
  Conn plain(p.conninfo("app", "app") + " sslmode=disable");
  CHECK(plain.error().find("SSL required") != std::string::npos);
  CHECK(p.running());
}

TEST_CASE("hba: RELOAD changes the rules; a broken file keeps the rules in use", "[hba]") {
  std::string hba = write_file("reload.conf", "host all all 127.0.0.1/32 reject\n");
  PoolerConfig cfg = hba_config(hba);
  Pooler p(cfg);
  CHECK(auth_request(p.port(), "app", "appdb") == "error 28000: login rejected");

  write_file("reload.conf", "host appdb all 127.0.0.1/32 trust\nhost pgbouncer admin all md5\n");
  p.reload(cfg);
  std::string got;
  for (int i = 0; i < 100 && got != "ok"; i++) {
    got = auth_request(p.port(), "app", "appdb");
    if (got != "ok") sleep_s(0.05);
  }
  CHECK(got == "ok");

  // A broken line: the reload is refused with file and line, the old rules stay.
  write_file("reload.conf", "host appdb all 127.0.0.1/32 trust\nhost appdb all 127.0.0.1/99 reject\n");
  Conn console(p.conninfo("admin", "admin", "pgbouncer"));
  INFO("console: " << console.error());
  REQUIRE(console.ok());
  Result r = console.exec("RELOAD");
  CHECK_FALSE(r.ok());
  CHECK(p.log().find(hba + ":2: pooler.auth_hba_file: invalid mask in \"127.0.0.1/99\"") != std::string::npos);
  CHECK(auth_request(p.port(), "app", "appdb") == "ok");
  CHECK(auth_request(p.port(), "app", "appdb2") == "error 28000: no authentication method is found");

  // Back to another auth_type: the rules no longer apply.
  cfg.auth_type = "md5";
  p.reload(cfg);
  got = "";
  for (int i = 0; i < 100 && got != "md5"; i++) {
    got = auth_request(p.port(), "app", "appdb2");
    if (got != "md5") sleep_s(0.05);
  }
  CHECK(got == "md5");
}

TEST_CASE("hba: SET auth_type = hba on the console reads the files, or is refused", "[hba]") {
  std::string hba = write_file("set.conf", "host appdb all 127.0.0.1/32 trust\nhost all all all md5\n");
  PoolerConfig cfg = hba_config(hba);
  cfg.auth_type = "scram-sha-256";
  Pooler p(cfg);
  CHECK(auth_request(p.port(), "app", "appdb") == "sasl");
  Conn console(p.conninfo("admin", "admin", "pgbouncer"));
  INFO("console: " << console.error());
  REQUIRE(console.ok());
  console.exec_ok("SET auth_type = 'hba'");
  CHECK(auth_request(p.port(), "app", "appdb") == "ok");
  CHECK(auth_request(p.port(), "app", "appdb2") == "md5");

  console.exec_ok("SET auth_type = 'md5'");
  write_file("set.conf", "host appdb all 127.0.0.1/32 trusted\n");
  Result r = console.exec("SET auth_type = 'hba'");
  CHECK_FALSE(r.ok());
  CHECK(r.message().find(hba + ":1: unsupported authentication method \"trusted\"") != std::string::npos);
  CHECK(auth_request(p.port(), "app", "appdb") == "md5");
}
