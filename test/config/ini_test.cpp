// Tests of the pgbouncer.ini loader: a realistic file, value syntax, warnings for
// PgBouncer keys pgpivot does not implement, and errors that name file, line and key.
#include <catch2/catch.hpp>

#include "config/load.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using pgpivot::config::test::dump;
using pgpivot::config::test::the_error;
using pgpivot::config::test::the_warning;
using pgpivot::config::test::contains;
using pgpivot::config::test::errors_for;
using pgpivot::config::test::TempDir;

namespace {

LoadResult ini(std::string_view text) { return load_ini_string(text, "t.ini"); }

const std::string kDir = PGPIVOT_CONFIG_TEST_DIR "/pgbouncer";

}  // namespace

TEST_CASE("a Debian-style pgbouncer.ini loads to the expected Config", "[ini]") {
  const std::string path = kDir + "/pgbouncer.ini";
  auto r = load_file(path);  // .ini: dispatched to the ini loader
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.path == path);

  const Pooler& p = c.pooler;
  CHECK(p.logfile == "/var/log/postgresql/pgbouncer.log");
  CHECK(p.pidfile == "/var/run/postgresql/pgbouncer.pid");
  CHECK(p.listen_addr == "*");
  CHECK(p.listen_port == 6432);
  CHECK(p.unix_socket_dir == "/var/run/postgresql");
  CHECK(p.client_tls_sslmode == "disable");
  CHECK(p.auth_type == AuthType::ScramSha256);
  CHECK(p.auth_file == kDir + "/userlist.txt");
  CHECK(p.admin_users == std::vector<std::string>{"admin", "postgres"});
  CHECK(p.stats_users == std::vector<std::string>{"stats", "root"});
  CHECK(p.pool_mode == PoolMode::Session);
  CHECK(p.server_reset_query == "DISCARD ALL");
  CHECK_FALSE(p.server_reset_query_always);
  CHECK(p.ignore_startup_parameters == std::vector<std::string>{"extra_float_digits"});
  CHECK(p.server_check_query == "select 1");
  CHECK(p.server_check_delay == 30.0);
  CHECK(p.application_name_add_host);
  CHECK(p.max_client_conn == 1000);
  CHECK(p.default_pool_size == 25);
  CHECK(p.reserve_pool_size == 5);
  CHECK(p.reserve_pool_timeout == 3.5);
  CHECK(p.log_connections);
  CHECK_FALSE(p.log_disconnections);
  CHECK(p.server_lifetime == 1800.0);
  CHECK(p.server_idle_timeout == 300.0);
  CHECK(p.server_connect_timeout == 5.0);
  CHECK(p.server_login_retry == 2.0);
  CHECK(p.query_wait_timeout == 60.0);
  CHECK(p.client_login_timeout == 30.0);
  CHECK(p.idle_transaction_timeout == 600.0);
  CHECK(p.pkt_buf == 8192);
  CHECK(p.listen_backlog == 128);
  // From the %include, still in [pgbouncer]:
  CHECK(p.stats_period == 30.0);
  CHECK(p.query_timeout == 120.0);

  // [users] plus auth_file.
  REQUIRE(c.users.size() == 3);
  const User& u1 = c.users.at("user1");
  CHECK(u1.pool_mode == PoolMode::Transaction);
  CHECK(u1.max_user_connections == 10);
  CHECK(u1.password == "md5a3556571e93b0d20722ba62be61e8c2d");
  CHECK(u1.password_from_auth_file);
  CHECK(c.users.at("admin").password == "adminpw");
  CHECK(c.users.at("stats").name == "stats");
  CHECK_FALSE(c.users.at("stats").pool_mode);

  // One cluster per server address.
  REQUIRE(c.clusters.size() == 4);
  const Cluster& sock = c.clusters.at("/var/run/postgresql:5432");
  CHECK(sock.primary.host == "/var/run/postgresql");
  CHECK(sock.primary.port == 5432);
  CHECK_FALSE(sock.standby);
  CHECK(c.clusters.at("localhost:5432").primary.host == "localhost");
  CHECK(c.clusters.at("10.0.0.5:5433").primary.port == 5433);
  CHECK(c.clusters.at("/var/run/postgresql:5434").name == "/var/run/postgresql:5434");

  REQUIRE(c.databases.size() == 6);
  const Database& foodb = c.databases.at("foodb");
  CHECK(foodb.cluster == "/var/run/postgresql:5432");  // no host: unix_socket_dir
  CHECK(foodb.dbname == "foodb");
  CHECK(foodb.pool_size == -1);
  CHECK_FALSE(foodb.pool_mode);
  const Database& bardb = c.databases.at("bardb");
  CHECK(bardb.cluster == "localhost:5432");
  CHECK(bardb.dbname == "bazdb");
  const Database& forcedb = c.databases.at("forcedb");
  CHECK(forcedb.cluster == "10.0.0.5:5433");
  CHECK(forcedb.user == "baz");
  CHECK(forcedb.password == "foo");
  CHECK(forcedb.connect_query == "SELECT 1");
  CHECK(forcedb.params == std::map<std::string, std::string>{{"client_encoding", "UTF8"}});
  const Database& nd = c.databases.at("nondefaultdb");
  CHECK(nd.cluster == "10.0.0.5:5433");
  CHECK(nd.pool_size == 50);
  CHECK(nd.reserve_pool_size == 10);
  CHECK(nd.min_pool_size == 2);
  CHECK(nd.pool_mode == PoolMode::Transaction);
  CHECK(nd.max_db_connections == 80);
  const Database& star = c.databases.at("*");
  CHECK(star.cluster == "localhost:5432");
  CHECK(star.dbname.empty());
  const Database& reports = c.databases.at("reports");
  CHECK(reports.cluster == "/var/run/postgresql:5434");
  CHECK(reports.dbname == "reporting");
  CHECK(reports.pool_mode == PoolMode::Statement);

  // What pgpivot does not implement is said, once per key, with file and line.
  INFO(dump(r.warnings));
  // (Per-database client_encoding etc. are sent to the server: no warning.)
  // (dns_max_ttl = 15 is PgBouncer's default: stored, no warning.)
  CHECK(r.warnings.empty());
  CHECK(c.pooler.dns_max_ttl == 15);
}

TEST_CASE("an empty pgbouncer.ini gets PgBouncer's defaults", "[ini]") {
  auto r = ini("");
  REQUIRE(r.ok());
  CHECK(r.warnings.empty());
  Pooler expected;
  expected.listen_addr = "";  // PgBouncer: Unix socket only unless listen_addr is set
  CHECK(r.config.pooler == expected);
  CHECK(r.config.pooler.auth_query ==
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
        "FROM pg_authid WHERE rolname=$1 AND rolcanlogin");
  CHECK(r.config.pooler.tcp_keepalive);
  // pgpivot tries TLS with servers first (PgBouncer 1.18 defaulted to disable).
  CHECK(r.config.pooler.server_tls_sslmode == "prefer");
  CHECK(r.config.users.empty());
  CHECK(r.config.clusters.empty());
  CHECK(r.config.databases.empty());
}

TEST_CASE("ini syntax: comments, blanks, case, CRLF", "[ini]") {
  auto r = ini("\xEF\xBB\xBF; comment\r\n"
               "# another\r\n"
               "   \r\n"
               "  [PgBouncer]   ; trailing comment\r\n"
               "LISTEN_PORT=7000\r\n"
               "\tpool_mode   =   Transaction   \r\n"
               "listen_addr = 127.0.0.1, ::1\r\n"
               "server_reset_query = DISCARD ALL; -- kept: not a comment\r\n"
               "[DATABASES]\r\n"
               "AppDB = HOST=db1 Port=5433\r\n"
               "\"odd \"\"name\"\"\" = host=db1 port=5433\r\n");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  CHECK(r.warnings.empty());
  CHECK(r.config.pooler.listen_port == 7000);
  CHECK(r.config.pooler.pool_mode == PoolMode::Transaction);
  CHECK(r.config.pooler.listen_addr == "127.0.0.1, ::1");  // kept as written
  CHECK(r.config.pooler.server_reset_query == "DISCARD ALL; -- kept: not a comment");
  REQUIRE(r.config.databases.count("AppDB"));  // database names keep their case
  CHECK(r.config.databases.at("AppDB").cluster == "db1:5433");
  CHECK(r.config.databases.at("AppDB").dbname == "AppDB");
  CHECK(r.config.databases.at("odd \"name\"").cluster == "db1:5433");
  CHECK(r.config.clusters.size() == 1);
}

TEST_CASE("ini values: booleans, integers, seconds, lists", "[ini]") {
  auto r = ini(R"ini([pgbouncer]
log_connections = no
log_disconnections = off
server_reset_query_always = yes
application_name_add_host = TRUE
disable_pqexec = false
server_round_robin = 2
tcp_keepalive = 0
default_pool_size = 0x10
max_client_conn = 010
server_lifetime = 1.5e3
query_timeout = +2.25
server_idle_timeout = 0
admin_users = a , b,,c ,
stats_users =
listen_addr = *
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Pooler& p = r.config.pooler;
  CHECK_FALSE(p.log_connections);
  CHECK_FALSE(p.log_disconnections);
  CHECK(p.server_reset_query_always);
  CHECK(p.application_name_add_host);
  CHECK_FALSE(p.disable_pqexec);
  CHECK(p.server_round_robin);  // any non-zero integer, as PgBouncer
  CHECK_FALSE(p.tcp_keepalive);
  CHECK(p.default_pool_size == 16);  // strtol base 0, as PgBouncer
  CHECK(p.max_client_conn == 8);
  CHECK(p.server_lifetime == 1500.0);
  CHECK(p.query_timeout == 2.25);
  CHECK(p.server_idle_timeout == 0.0);
  CHECK(p.admin_users == std::vector<std::string>{"a", "b", "c"});
  CHECK(p.stats_users.empty());
  CHECK(p.listen_addr == "*");
  CHECK(r.warnings.empty());
}

TEST_CASE("every [pgbouncer] key pgpivot stores", "[ini]") {
  auto r = ini(R"ini([pgbouncer]
pidfile = /run/pgb.pid
user = postgres
auth_user = pgbouncer
auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1
listen_backlog = 512
server_round_robin = 1
tcp_keepalive = 1
disable_pqexec = 1
max_prepared_statements = 100
client_tls_sslmode = Require
server_tls_sslmode = verify-full
syslog = 1
verbose = 2
log_pooler_errors = 1
log_stats = 1
logfile = /tmp/x.log
stats_period = 15
listen_addr = 127.0.0.1
stats_listen = 127.0.0.1:8404
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Pooler& p = r.config.pooler;
  CHECK(p.pidfile == "/run/pgb.pid");
  CHECK(p.user == "postgres");
  CHECK(p.auth_user == "pgbouncer");
  CHECK(p.auth_query == "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
  CHECK(p.listen_backlog == 512);
  CHECK(p.server_round_robin);
  CHECK(p.tcp_keepalive);
  CHECK(p.disable_pqexec);
  CHECK(p.max_prepared_statements == 100);
  CHECK(p.client_tls_sslmode == "require");
  CHECK(p.server_tls_sslmode == "verify-full");
  CHECK(p.syslog);
  CHECK(p.verbose == 2);
  CHECK(p.log_pooler_errors);
  CHECK(p.log_stats);
  CHECK(p.logfile == "/tmp/x.log");
  CHECK(p.stats_period == 15.0);
  CHECK(p.stats_listen == "127.0.0.1:8404");  // pgpivot's own key, accepted in [pgbouncer] too

  // Each one the pooler does not act on yet, set to a value pgpivot cannot honour, is
  // named once, at its line.
  INFO(dump(r.warnings));
  // max_prepared_statements, the TLS modes and auth_user/auth_query are honoured.
  CHECK(r.warnings.size() == 2);  // verbose turns on debug lines
  CHECK(p.auth_user == "pgbouncer");
  for (auto [k, line] : {std::pair{"disable_pqexec", 9}, {"syslog", 13}}) {
    Error w = the_warning(r, std::string("pgbouncer.") + k);
    CHECK(w.line == line);
    CHECK(w.file == "t.ini");
  }
  CHECK(errors_for(r.warnings, "pgbouncer.client_tls_sslmode").empty());
  CHECK(errors_for(r.warnings, "pgbouncer.server_tls_sslmode").empty());

  SECTION("values that match what pgpivot does are not warned about") {
    auto r2 = ini(R"ini([pgbouncer]
pidfile =
server_round_robin = 0
tcp_keepalive = 0
disable_pqexec = 0
max_prepared_statements = 0
client_tls_sslmode = disable
server_tls_sslmode = DISABLE
syslog = 0
verbose = 0
log_pooler_errors = 0
log_stats = 0
listen_backlog = 4096
)ini");
    INFO(dump(r2.errors));
    REQUIRE(r2.ok());
    INFO(dump(r2.warnings));
    CHECK(r2.warnings.empty());
  }
}

TEST_CASE("the TLS keys are honoured: stored, not warned about", "[ini][warnings]") {
  // The ones still ignored (client_tls_ecdhcurve/dheparams) are in the test above.
  auto r = ini(R"ini([pgbouncer]
client_tls_sslmode = verify-ca
client_tls_key_file = /k
client_tls_cert_file = /c
client_tls_ca_file = /ca
client_tls_protocols = secure
client_tls_ciphers = fast
server_tls_sslmode = verify-full
server_tls_ca_file = /sca
server_tls_key_file = /sk
server_tls_cert_file = /sc
server_tls_protocols = tlsv1.2,tlsv1.3
server_tls_ciphers = HIGH
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  INFO(dump(r.warnings));
  CHECK(r.warnings.empty());
  const Pooler& p = r.config.pooler;
  CHECK(p.client_tls_sslmode == "verify-ca");
  CHECK(p.client_tls_key_file == "/k");
  CHECK(p.client_tls_cert_file == "/c");
  CHECK(p.client_tls_ca_file == "/ca");
  CHECK(p.client_tls_protocols == "secure");
  CHECK(p.client_tls_ciphers == "fast");
  CHECK(p.server_tls_sslmode == "verify-full");
  CHECK(p.server_tls_ca_file == "/sca");
  CHECK(p.server_tls_key_file == "/sk");
  CHECK(p.server_tls_cert_file == "/sc");
  CHECK(p.server_tls_protocols == "tlsv1.2,tlsv1.3");
  CHECK(p.server_tls_ciphers == "HIGH");
}

TEST_CASE("auth_type: supported, unsupported and invalid", "[ini][errors]") {
  for (auto [v, t] : {std::pair{"trust", AuthType::Trust}, {"md5", AuthType::Md5},
                      {"scram-sha-256", AuthType::ScramSha256}, {"MD5", AuthType::Md5},
                      {"plain", AuthType::Plain}}) {
    auto r = ini(std::string("[pgbouncer]\nauth_type = ") + v + "\n");
    REQUIRE(r.ok());
    CHECK(r.config.pooler.auth_type == t);
  }
  for (const char* v : {"any", "pam"}) {
    auto r = ini(std::string("; c\n[pgbouncer]\nauth_type = ") + v + "\n");
    Error e = the_error(r, "pgbouncer.auth_type");
    CHECK(e.line == 3);
    CHECK(e.message == std::string("auth_type ") + v + " is not supported by pgpivot");
    CHECK(r.config.pooler.auth_type == AuthType::Md5);
  }
  auto r = ini("[pgbouncer]\nauth_type = scram\n");
  CHECK(the_error(r, "pgbouncer.auth_type").message ==
        "invalid value \"scram\"; expected one of: trust, md5, scram-sha-256, cert, plain, hba");
}

TEST_CASE("auth_type = cert needs client_tls_sslmode = verify-full and a CA, as PgBouncer", "[ini][errors]") {
  const std::string tls =
      "client_tls_key_file = /k\nclient_tls_cert_file = /c\n";
  SECTION("verify-full with a CA file loads") {
    auto r = ini("[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = verify-full\nclient_tls_ca_file = /ca\n" + tls);
    INFO(dump(r.errors));
    REQUIRE(r.ok());
    CHECK(r.config.pooler.auth_type == AuthType::Cert);
  }
  for (const char* mode : {"disable", "allow", "prefer", "require", "verify-ca"}) {
    INFO(mode);
    auto r = ini(std::string("[pgbouncer]\nauth_type = CERT\nclient_tls_sslmode = ") + mode +
                 "\nclient_tls_ca_file = /ca\n" + tls);
    Error e = the_error(r, "pgbouncer.auth_type");
    CHECK(e.line == 2);
    CHECK(e.message == std::string("auth_type = cert needs client_tls_sslmode = verify-full, got ") + mode);
  }
  SECTION("without client_tls_ca_file") {
    auto r = ini("[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = verify-full\n" + tls);
    CHECK(the_error(r, "pgbouncer.auth_type").message == "auth_type = cert needs client_tls_ca_file");
  }
}

TEST_CASE("ini errors name file, line and key; all are reported", "[ini][errors]") {
  auto r = ini(R"ini(orphan = 1
[pgbouncer]
listen_port = 70000
default_pool_size = ten
server_lifetime = 1h
log_connections = maybe
pool_mode = sessions
default_pool_sise = 10
reserve_pool_timeout = 2 ; seconds
client_tls_sslmode = bogus
stats_period = 0
pkt_buf = 0
health_check_interval = 1
this is not a setting
[pgbouncr]
x = 1
[databases]
a = host=h port=x
b = host=h bogus=1 pool_sise=3
c = host='unterminated
d = host=h1,h2
e = password='SCRAM-SHA-256$oops'
f = pool_mode=sometimes max_db_connections=-1
pgbouncer = host=h
g = host
[users]
u = pool_mode=nope max_user_connections=x
v = password=secret
w = pool_mode=session trailing
%includ x.ini
)ini");
  INFO(dump(r.errors));
  auto check = [&](const std::string& key, int line, const std::string& msg) {
    Error e = the_error(r, key);
    CHECK(e.file == "t.ini");
    CHECK(e.line == line);
    CHECK(e.message == msg);
  };
  check("orphan", 1, "setting outside of any section; put it under [pgbouncer], [databases] or [users]");
  check("pgbouncer.listen_port", 3, "must be between 1 and 65535, got 70000");
  check("pgbouncer.default_pool_size", 4, "invalid integer \"ten\"");
  check("pgbouncer.server_lifetime", 5,
        "invalid number of seconds \"1h\" (PgBouncer takes plain seconds; units are not accepted)");
  check("pgbouncer.log_connections", 6,
        "invalid boolean \"maybe\"; expected 0/1, yes/no, on/off or true/false");
  check("pgbouncer.pool_mode", 7,
        "invalid value \"sessions\"; expected one of: session, transaction, statement");
  check("pgbouncer.default_pool_sise", 8, "unknown key; did you mean default_pool_size?");
  check("pgbouncer.reserve_pool_timeout", 9,
        "invalid number of seconds \"2 ; seconds\" (comments must be on a line of their own)");
  check("pgbouncer.client_tls_sslmode", 10,
        "invalid value \"bogus\"; expected one of: disable, allow, prefer, require, verify-ca, verify-full");
  check("pgbouncer.stats_period", 11, "must be > 0, got 0");
  check("pgbouncer.pkt_buf", 12, "must be between 1 and 67108864, got 0");
  check("pgbouncer.health_check_interval", 13,
        "unknown key; health_check_interval is a pgpivot setting of the TOML config ([failover]), "
        "not of pgbouncer.ini");
  check("this", 14, "expected '=' after \"this\"");
  check("pgbouncr", 15, "unknown section [pgbouncr]; did you mean [pgbouncer]?");
  // A database line PgBouncer cannot use is logged and skipped, as PgBouncer does:
  // a warning each, the file still loads the rest.
  INFO(dump(r.warnings));
  auto skipped = [&](const std::string& key, int line, const std::string& msg) {
    Error w = the_warning(r, key);
    CHECK(w.file == "t.ini");
    CHECK(w.line == line);
    CHECK(w.message == msg + "; the database is skipped");
  };
  skipped("databases.a.port", 18, "invalid integer \"x\"");
  skipped("databases.b.bogus", 19, "unknown connection parameter");
  skipped("databases.b.pool_sise", 19, "unknown connection parameter; did you mean pool_size?");
  skipped("databases.c", 20, "bad connection string: unterminated quoted value for \"host\"");
  CHECK(errors_for(r.warnings, "databases.d.host").empty());  // a host list: one host per connection
  CHECK(contains(the_warning(r, "databases.e.password").message, "malformed SCRAM secret"));
  skipped("databases.f.pool_mode", 23, "invalid value \"sometimes\"; expected one of: session, transaction, statement");
  skipped("databases.f.max_db_connections", 23, "must be >= 0, got -1");
  skipped("databases.pgbouncer", 24, "the database name pgbouncer is reserved for the admin console");
  skipped("databases.g", 25, "bad connection string: expected '=' after \"host\"");
  check("users.u.pool_mode", 27,
        "invalid value \"nope\"; expected one of: session, transaction, statement");
  check("users.u.max_user_connections", 27, "invalid integer \"x\"");
  check("users.v.password", 28, "unknown user setting; passwords belong in auth_file");
  check("users.w", 29, "bad user settings: expected '=' after \"trailing\"");
  check("%includ", 30, "unknown directive %includ (only %include is known)");
  CHECK(r.errors.size() == 19);
  // In file order.
  for (size_t i = 1; i < r.errors.size(); ++i) CHECK(r.errors[i - 1].line <= r.errors[i].line);
  // Databases and users with errors are left out, the rest load: d, whose host list
  // is cut to its first host.
  REQUIRE(r.config.databases.size() == 1);
  CHECK(r.config.clusters.at(r.config.databases.at("d").cluster).primary.host == "h1,h2");
  CHECK(r.config.users.empty());
}

TEST_CASE("%include: relative to the including file, errors name the included file", "[ini][include]") {
  TempDir dir;
  dir.write("conf/sub/dbs.ini", "[databases]\n; a comment\nx = host=h port=bad\ny = host=h\n");
  dir.write("conf/sub/nested.ini", "%include dbs.ini\n");  // relative to sub/
  std::string main = dir.write("conf/main.ini",
                               "[pgbouncer]\nlisten_port = 7000\n%include sub/nested.ini\n"
                               "z = host=h\n"  // still in [databases], from the include
                               "%include missing.ini\n");
  auto r = load_ini_file(main);
  INFO(dump(r.errors));
  REQUIRE(r.errors.size() == 1);
  const std::string dbs = (dir.path() / "conf/sub/dbs.ini").string();
  Error skipped = the_warning(r, "databases.x.port");  // skipped, as PgBouncer does
  CHECK(skipped.file == dbs);
  CHECK(skipped.line == 3);
  CHECK_FALSE(r.config.databases.count("x"));
  CHECK(r.errors[0].file == main);
  CHECK(r.errors[0].line == 5);
  CHECK(r.errors[0].key == "%include");
  CHECK(r.errors[0].message == "cannot read included file " + (dir.path() / "conf/missing.ini").string() +
                                  ": No such file or directory");
  CHECK(r.config.databases.count("y"));
  CHECK(r.config.databases.count("z"));
  CHECK(r.config.pooler.listen_port == 7000);

  SECTION("an include loop stops") {
    std::string a = dir.write("loop/a.ini", "%include b.ini\n");
    dir.write("loop/b.ini", "%include a.ini\n");
    auto r2 = load_ini_file(a);
    REQUIRE(r2.errors.size() == 1);
    CHECK(r2.errors[0].key == "%include");
    CHECK(contains(r2.errors[0].message, "nested more than 10 deep"));
  }
  SECTION("an absolute include, and an empty one") {
    std::string abs = dir.write("abs.ini", "[pgbouncer]\nlisten_port = 7001\n");
    auto r2 = load_ini_string("%include " + abs + "\n%include\n", (dir.path() / "x.ini").string());
    CHECK(r2.config.pooler.listen_port == 7001);
    REQUIRE(r2.errors.size() == 1);
    CHECK(r2.errors[0].line == 2);
    CHECK(r2.errors[0].message == "missing file name");
  }
}

TEST_CASE("auth_file is read relative to the file that sets it", "[ini][userlist]") {
  TempDir dir;
  dir.write("etc/users.txt", "\"app\" \"secret\"\n\"u2\" \"pw2\"\nbroken line\n");
  dir.write("etc/auth.ini", "[pgbouncer]\nauth_file = users.txt\n");
  std::string main = dir.write("main.ini",
                               "[users]\napp = pool_mode=statement\n[pgbouncer]\n%include etc/auth.ini\n");
  auto r = load_ini_file(main);
  REQUIRE(r.errors.size() == 1);  // the userlist's own error names the userlist
  const std::string users = (dir.path() / "etc/users.txt").string();
  CHECK(r.errors[0].file == users);
  CHECK(r.errors[0].line == 3);
  CHECK(r.config.pooler.auth_file == users);
  CHECK(r.config.users.at("app").password == "secret");
  CHECK(r.config.users.at("app").pool_mode == PoolMode::Statement);
  CHECK(r.config.users.at("u2").password == "pw2");

  auto missing = load_ini_string("\n[pgbouncer]\nauth_file = nope.txt\n", main);
  Error e = the_error(missing, "pgbouncer.auth_file");
  CHECK(e.line == 3);
  CHECK(e.file == main);
  CHECK(contains(e.message, "nope.txt"));
}

TEST_CASE("[databases]: connection string quoting", "[ini][connstring]") {
  auto r = ini(R"ini([pgbouncer]
listen_addr = *
[databases]
a = dbname='it''s' user='o\'brien' password='back\\slash' connect_query='SELECT ''a b'';  SET x = 1'
b = dbname = spaced   host  =  h1   password='C:\path\to'
c = dbname='' application_name='x=y z' user=a'b
d=host=h2
e = password='p w' port=6000 host=h2
f = timezone=UTC datestyle='ISO, MDY' client_encoding=UTF8
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const auto& dbs = r.config.databases;
  CHECK(dbs.at("a").dbname == "it's");
  CHECK(dbs.at("a").user == "o'brien");
  CHECK(dbs.at("a").password == "back\\slash");
  CHECK(dbs.at("a").connect_query == "SELECT 'a b';  SET x = 1");
  CHECK(dbs.at("b").dbname == "spaced");
  CHECK(dbs.at("b").cluster == "h1:5432");
  CHECK(dbs.at("b").password == "C:\\path\\to");  // other backslashes are literal
  CHECK(dbs.at("c").dbname == "c");              // empty dbname: the database's own name
  CHECK(dbs.at("c").application_name == "x=y z");
  CHECK(dbs.at("c").user == "a'b");  // unquoted: taken as written
  CHECK(dbs.at("d").cluster == "h2:5432");
  CHECK(dbs.at("e").password == "p w");
  CHECK(dbs.at("e").cluster == "h2:6000");
  CHECK(dbs.at("f").params ==
        std::map<std::string, std::string>{{"client_encoding", "UTF8"}, {"datestyle", "ISO, MDY"}, {"timezone", "UTC"}});
  // application_name and the startup parameters go to the server: no warnings.
  CHECK(r.warnings.empty());

  SECTION("malformed strings") {
    auto r2 = ini(R"ini([databases]
a = host='h'x
b = =x
c = dbname='abc\'
d = host=h host=h2
)ini");
    // Skipped with a warning each, as PgBouncer skips a database it cannot read.
    CHECK(the_warning(r2, "databases.a").message ==
          "bad connection string: unexpected text after the quoted value of \"host\"; the database is skipped");
    CHECK(the_warning(r2, "databases.b").message ==
          "bad connection string: expected key=value, found \"=\" without a key; the database is skipped");
    CHECK(the_warning(r2, "databases.c").message ==
          "bad connection string: unterminated quoted value for \"dbname\"; the database is skipped");
    CHECK(r2.errors.empty());
    CHECK(r2.config.databases.size() == 1);
    CHECK(r2.config.databases.at("d").cluster == "h2:5432");  // the last one wins
  }
}

TEST_CASE("[databases]: hosts, ports and synthesized clusters", "[ini][databases]") {
  auto r = ini(R"ini([databases]
a = host=10.1.1.1
b = host=10.1.1.1 port=5432 dbname=other
c = host=::1 port=5433
d =
e = host=/var/run/postgresql
f = port=5499
[pgbouncer]
unix_socket_dir = /sock
listen_addr = 127.0.0.1
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.databases.at("a").cluster == "10.1.1.1:5432");
  CHECK(c.databases.at("b").cluster == "10.1.1.1:5432");
  CHECK(c.clusters.at("[::1]:5433").primary.host == "::1");
  CHECK(c.databases.at("d").cluster == "/sock:5432");  // unix_socket_dir, even when set later
  CHECK(c.databases.at("e").cluster == "/var/run/postgresql:5432");
  CHECK(c.databases.at("f").cluster == "/sock:5499");
  CHECK(c.clusters.size() == 5);
  for (const auto& [name, cl] : c.clusters) {
    CHECK(cl.name == name);
    CHECK_FALSE(cl.standby);
    CHECK(cl.failover == Failover{});
  }

  SECTION("no host and no Unix socket directory") {
    auto r2 = ini("[pgbouncer]\nunix_socket_dir =\nlisten_addr = *\n[databases]\nx = dbname=y\n");
    Error e = the_error(r2, "databases.x.host");
    CHECK(e.line == 5);
    CHECK(contains(e.message, "set host="));
  }
  SECTION("nothing to listen on") {
    auto r2 = ini("[pgbouncer]\nlisten_port = 6000\nunix_socket_dir =\n");
    Error e = the_error(r2, "pgbouncer.unix_socket_dir");
    CHECK(e.line == 3);
    CHECK(contains(e.message, "nothing to listen on"));
  }
  SECTION("redefinitions are warnings and the later one wins") {
    auto r2 = ini("[databases]\nx = host=a\nx = host=b\n[users]\nu = pool_size=1\nu = pool_size=2\n"
                  "[pgbouncer]\nlisten_port = 1\nlisten_port = 2\n");
    REQUIRE(r2.ok());
    CHECK(r2.config.databases.at("x").cluster == "b:5432");
    CHECK(r2.config.users.at("u").pool_size == 2);
    CHECK(r2.config.pooler.listen_port == 2);
    CHECK(the_warning(r2, "databases.x").message ==
          "database x is defined again; this replaces the definition at t.ini:2");
    CHECK(the_warning(r2, "users.u").line == 6);
    CHECK(the_warning(r2, "pgbouncer.listen_port").message ==
          "listen_port is set again; this replaces the value on line 8");
    CHECK(r2.config.clusters.size() == 1);  // a's cluster is gone with it
  }
}

TEST_CASE("ini [users] settings", "[ini][users]") {
  auto r = ini(R"ini([users]
u1 = pool_mode=transaction max_user_connections=10
u2 = pool_size=3 reserve_pool_size=1
u3 =
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const auto& u = r.config.users;
  CHECK(u.at("u1").name == "u1");
  CHECK(u.at("u1").pool_mode == PoolMode::Transaction);
  CHECK(u.at("u1").max_user_connections == 10);
  CHECK(u.at("u2").pool_size == 3);
  CHECK(u.at("u2").reserve_pool_size == 1);
  CHECK(u.at("u3").max_user_connections == -1);
  CHECK(u.at("u3").password.empty());
  CHECK_FALSE(u.at("u3").password_from_auth_file);
}

TEST_CASE("load_ini_file: unreadable files", "[ini][errors]") {
  TempDir dir;
  auto r = load_file((dir.path() / "none.INI").string());
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 0);
  CHECK(contains(r.errors[0].message, "cannot read config file"));
  auto d = load_ini_file(dir.path().string());
  REQUIRE(d.errors.size() == 1);
  CHECK(contains(d.errors[0].message, "is a directory"));
}

TEST_CASE("all 85 PgBouncer 1.18 settings at their defaults", "[ini][warnings]") {
  // Each key is known: honoured, stored, or warned about; none is an error.
  const std::string path = kDir + "/defaults.ini";
  auto r = load_ini_file(path);
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  // PgBouncer's defaults are the Config's defaults, except for two TLS ones: 1.18 does
  // not try TLS with servers (pgpivot's default is prefer, as newer PgBouncers), and
  // its "fast" cipher shortcut is stored as written (tls.cpp treats it as the default);
  // and 1.18's server_check_query was "select 1" (1.25's is "<empty>", an empty query).
  auto empty = ini("");
  Pooler expected = empty.config.pooler;
  CHECK(expected.server_check_query == "<empty>");
  expected.server_check_query = "select 1";
  CHECK(r.config.pooler.server_tls_sslmode == "disable");
  CHECK(expected.server_tls_sslmode == "prefer");
  expected.server_tls_sslmode = "disable";
  expected.client_tls_ciphers = expected.server_tls_ciphers = "fast";
  CHECK(r.config.pooler == expected);
  // Every key is stored; one that pgpivot does not implement is warned about only when
  // it is not at PgBouncer's default (at the default pgpivot behaves that way).
  INFO(dump(r.warnings));
  CHECK(r.warnings.empty());
}
