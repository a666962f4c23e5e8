// Tests of to_toml(): the TOML it writes loads back to an equal Config, for configs read
// from pgbouncer.ini and from TOML, with every setting changed, and with awkward names.
#include <catch2/catch.hpp>

#include "config/load.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using pgpivot::config::test::dump;
using pgpivot::config::test::contains;
using pgpivot::config::test::TempDir;

namespace {

// Field by field (each struct compares all its members), so a failure says where.
void check_equal(const Config& a, const Config& b) {
  CHECK(a.pooler == b.pooler);
  CHECK(a.users.size() == b.users.size());
  for (const auto& [name, u] : a.users) {
    INFO("user " << name);
    REQUIRE(b.users.count(name));
    CHECK(u == b.users.at(name));
  }
  CHECK(a.clusters.size() == b.clusters.size());
  for (const auto& [name, c] : a.clusters) {
    INFO("cluster " << name);
    REQUIRE(b.clusters.count(name));
    CHECK(c.primary == b.clusters.at(name).primary);
    CHECK(c.standby == b.clusters.at(name).standby);
    CHECK(c.failover == b.clusters.at(name).failover);
    CHECK(c == b.clusters.at(name));
  }
  CHECK(a.databases.size() == b.databases.size());
  for (const auto& [name, d] : a.databases) {
    INFO("database " << name);
    REQUIRE(b.databases.count(name));
    CHECK(d == b.databases.at(name));
  }
  CHECK(a == b);
}

// to_toml, then load_toml_string from `path` (where relative paths are anchored).
LoadResult round_trip(const Config& c, const std::string& path) {
  std::string text = to_toml(c);
  auto r = load_toml_string(text, path);
  INFO(text);
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  r.config.path = c.path;
  check_equal(c, r.config);
  return r;
}

const std::string kDir = PGPIVOT_CONFIG_TEST_DIR;

}  // namespace

TEST_CASE("to_toml: the realistic pgbouncer.ini round-trips", "[convert]") {
  auto ini = load_ini_file(kDir + "/pgbouncer/pgbouncer.ini");
  INFO(dump(ini.errors));
  REQUIRE(ini.ok());
  std::string text = to_toml(ini.config);
  INFO(text);
  auto r = round_trip(ini.config, kDir + "/pgbouncer/pgpivot.toml");

  // Readable output: essentials and changed settings only, passwords from auth_file stay there.
  CHECK(contains(text, "[pooler]\nlisten_addr = \"*\"\nlisten_port = 6432\n"));
  CHECK(contains(text, "auth_type = \"scram-sha-256\"\n"));
  CHECK(contains(text, "auth_file = \"" + kDir + "/pgbouncer/userlist.txt\"\n"));
  CHECK(contains(text, "default_pool_size = 25\n"));
  CHECK(contains(text, "reserve_pool_timeout = 3.5\n"));
  CHECK(contains(text, "pidfile = \"/var/run/postgresql/pgbouncer.pid\"\n"));
  CHECK_FALSE(contains(text, "server_reset_query"));  // default
  CHECK_FALSE(contains(text, "adminpw"));
  CHECK(contains(text, "[users]\nuser1 = { pool_mode = \"transaction\", max_user_connections = 10 }\n"));
  CHECK_FALSE(contains(text, "\nadmin = "));
  CHECK(contains(text, "[clusters.\"10.0.0.5:5433\"]\nprimary = { host = \"10.0.0.5\", port = 5433 }\n"));
  CHECK(contains(text, "[databases.\"*\"]\ncluster = \"localhost:5432\"\n\n"));
  CHECK(contains(text, "[databases.bardb]\ncluster = \"localhost:5432\"\ndbname = \"bazdb\"\n"));
  CHECK(contains(text, "params = { client_encoding = \"UTF8\" }\n"));
  // The TOML brings back no warnings: the only one of the ini was an ini-only key.
  CHECK(r.warnings.empty());
}

TEST_CASE("to_toml: TOML configs round-trip", "[convert]") {
  auto r = load_toml_file(kDir + "/example.toml");
  REQUIRE(r.ok());
  round_trip(r.config, kDir + "/example.toml");

  const std::string md5 = "md5" + std::string(32, 'a');
  auto full = load_toml_string(R"toml([pooler]
listen_addr = "0.0.0.0,::"
listen_port = 7000
unix_socket_dir = ""
pool_mode = "statement"
default_pool_size = 5
min_pool_size = 1
reserve_pool_size = 2
reserve_pool_timeout = 0.1
max_client_conn = 50
max_db_connections = 7
max_user_connections = 8
auth_type = "trust"
admin_users = ["a", "b \"q\""]
stats_users = []
server_reset_query = ""
server_reset_query_always = true
server_check_query = "select 2"
server_check_delay = 1e-3
server_lifetime = 0.5
server_idle_timeout = 0
server_connect_timeout = 3
server_login_retry = 2
client_login_timeout = 4
query_timeout = 123456.789
query_wait_timeout = 6
idle_transaction_timeout = 7
client_idle_timeout = 8
ignore_startup_parameters = ["extra_float_digits"]
application_name_add_host = true
log_connections = false
log_disconnections = false
stats_period = 30
pkt_buf = 8192
max_packet_size = 1048576
logfile = "/var/log/pgpivot.log"
pidfile = "/run/p.pid"
user = "postgres"
auth_user = "au"
auth_query = "SELECT 1"
listen_backlog = 64
server_round_robin = true
tcp_keepalive = false
disable_pqexec = true
max_prepared_statements = 10
client_tls_sslmode = "prefer"
server_tls_sslmode = "require"
syslog = true
verbose = 3
log_pooler_errors = false
log_stats = false
stats_listen = "0.0.0.0:9127"

[failover]
health_check_interval = 5
promote_command = "promote.sh 'x'"

[users]
a = { password = "plain\tpw\\", pool_mode = "session", pool_size = 4, reserve_pool_size = 1, max_user_connections = 10, max_user_client_connections = 20 }
"b.c" = { password = ")toml" + md5 + R"toml(" }
"" = {}

[clusters.main]
primary = { host = "10.0.0.1", port = 5433, options = "-c search_path=x", sslmode = "require" }
standby = { host = "10.0.0.2" }
failover = { failure_threshold = 2, auto_failback = true, on_failover_command = "notify" }

[clusters."odd name"]
primary = { host = "/tmp" }

[databases.appdb]
cluster = "main"
dbname = "real app"
user = "forced"
password = "pw"
pool_size = 3
min_pool_size = 1
reserve_pool_size = 2
pool_mode = "transaction"
max_db_connections = 9
max_db_client_connections = 99
connect_query = "SET x = 'y'"
application_name = "app"
auth_user = "au"
params = { TimeZone = "UTC", datestyle = "ISO, MDY" }

[databases."*"]
cluster = "odd name"

[databases."*x"]
cluster = "odd name"
dbname = ""
)toml",
                               kDir + "/full.toml");
  INFO(dump(full.errors));
  // "" is not a valid user name: reported, and the rest loads.
  REQUIRE(full.errors.size() == 1);
  CHECK(full.errors[0].key == "users.");
  full.errors.clear();
  Config c = full.config;
  CHECK(c.pooler.listen_backlog == 64);
  CHECK(c.databases.at("appdb").params.at("timezone") == "UTC");  // keys in lower case
  CHECK(c.clusters.at("main").failover.health_check_interval == 5.0);
  round_trip(c, kDir + "/full.toml");
}

TEST_CASE("to_toml: escaping of names and values", "[convert]") {
  Config c;
  c.pooler.server_reset_query = "line1\nline2\t\"q\" \\ \x01 \x7f caf\xC3\xA9";
  c.pooler.admin_users = {"a,b", "\"x\""};
  User u;
  u.name = "we\"ird\\ user";
  u.password = "p\"w";
  c.users[u.name] = u;
  Cluster cl;
  cl.name = "host:5432 \"q\"";
  cl.primary.host = "h\"ost";
  cl.primary.options["key with space"] = "v\\";
  c.clusters[cl.name] = cl;
  Database d;
  d.name = "db.with.dots";
  d.cluster = cl.name;
  d.dbname = "d\nb";
  c.databases[d.name] = d;
  Database star;
  star.name = "*";
  star.cluster = cl.name;
  c.databases["*"] = star;
  std::string text = to_toml(c);
  INFO(text);
  CHECK(contains(text, R"(server_reset_query = "line1\nline2\t\"q\" \\ \u0001 \u007F café")"));
  CHECK(contains(text, "[databases.\"db.with.dots\"]"));
  round_trip(c, "x.toml");
}

TEST_CASE("to_toml: durations keep their exact value", "[convert]") {
  for (double v : {0.0, 1.0, 0.1, 1.0 / 3.0, 2.5e-7, 123456789.0, 999999999.999}) {
    Config c;
    c.pooler.query_timeout = v;
    INFO(v);
    round_trip(c, "x.toml");
  }
}

TEST_CASE("to_toml: users from auth_file stay in auth_file", "[convert][userlist]") {
  TempDir dir;
  dir.write("users.txt", "\"fileonly\" \"pw1\"\n\"both\" \"pw2\"\n\"mine\" \"ignored\"\n");
  std::string path = dir.write("pgbouncer.ini", R"ini([pgbouncer]
auth_file = users.txt
[users]
both = pool_mode=session
)ini");
  auto r = load_ini_file(path);
  REQUIRE(r.ok());
  CHECK(r.config.users.at("both").password_from_auth_file);
  // A password set in the config itself is written out.
  r.config.users.at("mine").password = "own";
  r.config.users.at("mine").password_from_auth_file = false;
  std::string text = to_toml(r.config);
  INFO(text);
  CHECK_FALSE(contains(text, "fileonly"));
  CHECK_FALSE(contains(text, "pw2"));
  CHECK(contains(text, "both = { pool_mode = \"session\" }"));
  CHECK(contains(text, "mine = { password = \"own\" }"));
  round_trip(r.config, (dir.path() / "pgpivot.toml").string());
}

TEST_CASE("to_toml: auth_type = cert from a pgbouncer.ini converts and loads back", "[convert]") {
  TempDir d;
  std::string ini_path = (d.path() / "pgbouncer.ini").string();
  auto r = load_ini_string(
      "[databases]\nappdb = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = cert\n"
      "client_tls_sslmode = verify-full\nclient_tls_ca_file = /etc/ca.crt\nclient_tls_cert_file = /etc/s.crt\n"
      "client_tls_key_file = /etc/s.key\n",
      ini_path);
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  std::string text = to_toml(r.config);
  CHECK(contains(text, "auth_type = \"cert\"\n"));
  CHECK(contains(text, "client_tls_sslmode = \"verify-full\"\n"));
  auto back = round_trip(r.config, ini_path);
  CHECK(back.config.pooler.auth_type == AuthType::Cert);
}

TEST_CASE("to_toml: [peers] round-trip, a peer without host keeps unix_socket_dir", "[convert]") {
  auto ini = load_ini_string("[databases]\nd = host=h\n[pgbouncer]\npeer_id = 2\n"
                             "[peers]\n1 = host=/run/p1 port=6433 pool_size=3\n2 = port=6434\n",
                             "t.ini");
  INFO(dump(ini.errors));
  REQUIRE(ini.ok());
  CHECK(ini.warnings.empty());
  REQUIRE(ini.config.peers.size() == 2);
  CHECK(ini.config.peers.at(2).host.empty());
  CHECK(ini.config.peers.at(2).port == 6434);
  std::string text = to_toml(ini.config);
  INFO(text);
  CHECK(contains(text, "[peers]\n1 = { host = \"/run/p1\", port = 6433, pool_size = \"3\" }\n2 = { port = 6434 }\n"));
  round_trip(ini.config, "t.toml");
  auto bad = load_toml_string("[peers]\nx = { port = 1 }\n0 = { port = 1 }\n", "b.toml");
  CHECK(bad.errors.size() == 2);
}

TEST_CASE("to_toml: a [users] password = \"\" stays written; settings alone stay without one", "[convert]") {
  auto r = load_toml_string("[users]\nempty = { password = \"\" }\nsettings = { pool_size = 2 }\n"
                            "[clusters.c]\nprimary = { host = \"h\" }\n[databases.d]\ncluster = \"c\"\n",
                            "u.toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  CHECK(r.config.users.at("empty").password_given);
  CHECK_FALSE(r.config.users.at("settings").password_given);
  std::string text = to_toml(r.config);
  INFO(text);
  CHECK(contains(text, "empty = { password = \"\" }"));
  CHECK(contains(text, "settings = { pool_size = 2 }"));
  round_trip(r.config, "u.toml");
}
