// Tests of the TOML config loader: values, PgBouncer defaults, and every kind of error.
#include <catch2/catch.hpp>

#include "config/load.hpp"
#include "config/settings.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using pgpivot::config::test::dump;
using pgpivot::config::test::the_error;
using pgpivot::config::test::contains;
using pgpivot::config::test::errors_for;
using pgpivot::config::test::TempDir;

namespace {

LoadResult load(std::string_view text) { return load_toml_string(text, "t.toml"); }

const std::string kSalt = "c2FsdHNhbHRzYWx0c2FsdA==";
const std::string kKey = std::string(43, 'A') + "=";
const std::string kScram = "SCRAM-SHA-256$4096:" + kSalt + "$" + kKey + ":" + kKey;

}  // namespace

TEST_CASE("the README example loads with the right values", "[config]") {
  auto r = load_file(PGPIVOT_CONFIG_TEST_DIR "/example.toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.path == PGPIVOT_CONFIG_TEST_DIR "/example.toml");
  CHECK(c.pooler.listen_addr == "127.0.0.1");
  CHECK(c.pooler.listen_port == 6432);
  CHECK(c.pooler.pool_mode == PoolMode::Transaction);
  CHECK(c.pooler.default_pool_size == 20);
  CHECK(c.pooler.max_client_conn == 10000);
  CHECK(c.pooler.auth_type == AuthType::ScramSha256);
  CHECK(c.pooler.admin_users == std::vector<std::string>{"admin"});

  REQUIRE(c.users.size() == 2);
  CHECK(c.users.at("app").name == "app");
  CHECK(c.users.at("app").password == "app");
  CHECK(c.users.at("admin").password == "admin");
  CHECK_FALSE(c.users.at("app").pool_mode);
  CHECK(c.users.at("app").pool_size == -1);

  REQUIRE(c.clusters.size() == 1);
  const Cluster& main = c.clusters.at("main");
  CHECK(main.name == "main");
  CHECK(main.primary.host == "127.0.0.1");
  CHECK(main.primary.port == 55432);
  CHECK(main.primary.options.empty());
  REQUIRE(main.standby);
  CHECK(main.standby->port == 55433);
  CHECK(main.failover.failure_threshold == 3);

  REQUIRE(c.databases.size() == 1);
  const Database& db = c.databases.at("appdb");
  CHECK(db.name == "appdb");
  CHECK(db.cluster == "main");
  CHECK(db.dbname == "appdb");
  CHECK(db.user.empty());
  CHECK(db.pool_size == -1);
  CHECK_FALSE(db.pool_mode);
}

TEST_CASE("an empty config gets PgBouncer's defaults", "[config]") {
  auto r = load("");
  REQUIRE(r.ok());
  const Pooler& p = r.config.pooler;
  CHECK(p.listen_addr == "127.0.0.1");
  CHECK(p.listen_port == 6432);
  CHECK(p.unix_socket_dir == "/tmp");
  CHECK(p.pool_mode == PoolMode::Session);
  CHECK(p.default_pool_size == 20);
  CHECK(p.max_client_conn == 100);
  CHECK(p.auth_type == AuthType::Md5);
  CHECK(p.server_reset_query == "DISCARD ALL");
  CHECK(p.server_lifetime == 3600.0);
  CHECK(p.server_idle_timeout == 600.0);
  CHECK(p.query_wait_timeout == 120.0);
  CHECK(p.client_login_timeout == 60.0);
  CHECK(p.pkt_buf == 4096);
  CHECK(p.max_packet_size == 2147483647);
  CHECK(p.log_connections);
  CHECK(p.stats_listen.empty());  // the HTTP stats endpoint is off
  CHECK(r.config.users.empty());
  CHECK(r.config.clusters.empty());
  CHECK(r.config.databases.empty());
}

TEST_CASE("every pooler setting can be set", "[config]") {
  auto r = load(R"toml([pooler]
listen_addr = "*"
listen_port = 7000
unix_socket_dir = ""
pool_mode = "statement"
default_pool_size = 5
min_pool_size = 1
reserve_pool_size = 2
reserve_pool_timeout = 1.5
max_client_conn = 50
max_db_connections = 7
max_user_connections = 8
auth_type = "trust"
admin_users = "a, b ,,c"
stats_users = ["s"]
server_reset_query = ""
server_reset_query_always = true
server_check_query = "select 2"
server_check_delay = 10
server_lifetime = 0.5
server_idle_timeout = 0
server_connect_timeout = 3
server_login_retry = 2
client_login_timeout = 4
query_timeout = 5
query_wait_timeout = 6
idle_transaction_timeout = 7
client_idle_timeout = 8
ignore_startup_parameters = "extra_float_digits,search_path"
application_name_add_host = true
log_connections = false
log_disconnections = false
stats_period = 30
pkt_buf = 8192
max_packet_size = 1048576
logfile = "/var/log/pgpivot.log"
stats_listen = "127.0.0.1:8404"
workers = 4
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Pooler& p = r.config.pooler;
  CHECK(p.workers == 4);
  CHECK(p.listen_addr == "*");
  CHECK(p.listen_port == 7000);
  CHECK(p.unix_socket_dir.empty());
  CHECK(p.pool_mode == PoolMode::Statement);
  CHECK(p.default_pool_size == 5);
  CHECK(p.min_pool_size == 1);
  CHECK(p.reserve_pool_size == 2);
  CHECK(p.reserve_pool_timeout == 1.5);
  CHECK(p.max_client_conn == 50);
  CHECK(p.max_db_connections == 7);
  CHECK(p.max_user_connections == 8);
  CHECK(p.auth_type == AuthType::Trust);
  CHECK(p.admin_users == std::vector<std::string>{"a", "b", "c"});
  CHECK(p.stats_users == std::vector<std::string>{"s"});
  CHECK(p.server_reset_query.empty());
  CHECK(p.server_reset_query_always);
  CHECK(p.server_check_query == "select 2");
  CHECK(p.server_check_delay == 10.0);
  CHECK(p.server_lifetime == 0.5);
  CHECK(p.server_idle_timeout == 0.0);
  CHECK(p.server_connect_timeout == 3.0);
  CHECK(p.server_login_retry == 2.0);
  CHECK(p.client_login_timeout == 4.0);
  CHECK(p.query_timeout == 5.0);
  CHECK(p.query_wait_timeout == 6.0);
  CHECK(p.idle_transaction_timeout == 7.0);
  CHECK(p.client_idle_timeout == 8.0);
  CHECK(p.ignore_startup_parameters ==
        std::vector<std::string>{"extra_float_digits", "search_path"});
  CHECK(p.application_name_add_host);
  CHECK_FALSE(p.log_connections);
  CHECK_FALSE(p.log_disconnections);
  CHECK(p.stats_period == 30.0);
  CHECK(p.pkt_buf == 8192);
  CHECK(p.max_packet_size == 1048576);
  CHECK(p.logfile == "/var/log/pgpivot.log");
  CHECK(p.stats_listen == "127.0.0.1:8404");
}

TEST_CASE("a wrong type names the key and its line", "[config][errors]") {
  auto r = load("[pooler]\nlisten_port = 6432\ndefault_pool_size = \"x\"\n");
  REQUIRE(r.errors.size() == 1);
  const Error& e = r.errors[0];
  CHECK(e.file == "t.toml");
  CHECK(e.line == 3);
  CHECK(e.key == "pooler.default_pool_size");
  CHECK(e.message == "expected integer, got string");
  CHECK(e.to_string() == "t.toml:3: pooler.default_pool_size: expected integer, got string");
  CHECK(r.config.pooler.default_pool_size == 20);  // unchanged

  SECTION("other types") {
    auto r2 = load(R"toml([pooler]
log_connections = "yes"
server_lifetime = "1h"
listen_addr = 5
admin_users = 3
stats_users = ["a", 2]
listen_port = 6432.0
)toml");
    CHECK(the_error(r2, "pooler.log_connections").message == "expected boolean, got string");
    CHECK(the_error(r2, "pooler.log_connections").line == 2);
    CHECK(the_error(r2, "pooler.server_lifetime").line == 3);
    CHECK(contains(the_error(r2, "pooler.server_lifetime").message, "got string"));
    CHECK(the_error(r2, "pooler.listen_addr").message == "expected string, got integer");
    CHECK(the_error(r2, "pooler.admin_users").line == 5);
    CHECK(the_error(r2, "pooler.stats_users").message == "item 2: expected string, got integer");
    CHECK(the_error(r2, "pooler.listen_port").message == "expected integer, got float");
    CHECK(r2.errors.size() == 6);
  }
}

TEST_CASE("unknown keys and tables are errors, with typo suggestions", "[config][errors]") {
  auto r = load(R"toml([pooler]
default_pool_sise = 10
frobnicate = 1
Listen_Port = 1

[poolr]
x = 1

listen_port = 5
)toml");
  // Note: line 9 is inside [poolr], so it is poolr.listen_port, not reported separately.
  Error typo = the_error(r, "pooler.default_pool_sise");
  CHECK(typo.line == 2);
  CHECK(typo.message == "unknown key; did you mean default_pool_size?");
  Error unknown = the_error(r, "pooler.frobnicate");
  CHECK(unknown.line == 3);
  CHECK(unknown.message == "unknown key");
  CHECK(the_error(r, "pooler.Listen_Port").message == "unknown key; did you mean listen_port?");
  Error table = the_error(r, "poolr");
  CHECK(table.line == 6);
  CHECK(table.message == "unknown key; did you mean pooler?");
  CHECK(r.errors.size() == 4);

  SECTION("a pooler setting at top level points to [pooler]") {
    auto r2 = load("listen_port = 5\nhealth_check_interval = 1\n[pooler]\n");
    CHECK(the_error(r2, "listen_port").line == 1);
    CHECK(contains(the_error(r2, "listen_port").message, "did you mean pooler.listen_port?"));
    CHECK(contains(the_error(r2, "health_check_interval").message,
                   "did you mean failover.health_check_interval?"));
  }
  SECTION("unknown keys in users, clusters, nodes-level tables and databases") {
    auto r2 = load(R"toml([users]
app = { password = "x", pool_sz = 3 }
[clusters.main]
primary = { host = "h" }
stanby = { host = "h2" }
[clusters.main.failover]
auto_failovr = false
[databases.d]
clustr = "main"
)toml");
    CHECK(the_error(r2, "users.app.pool_sz").line == 2);
    CHECK(the_error(r2, "clusters.main.stanby").message == "unknown key; did you mean standby?");
    CHECK(the_error(r2, "clusters.main.stanby").line == 5);
    CHECK(the_error(r2, "clusters.main.failover.auto_failovr").line == 7);
    CHECK(the_error(r2, "databases.d.clustr").message == "unknown key; did you mean cluster?");
    CHECK(r2.errors.size() == 4);  // d falls back to the only cluster
  }
}

TEST_CASE("out of range values", "[config][errors]") {
  auto r = load(R"toml([pooler]
listen_port = 70000
default_pool_size = -1
max_client_conn = 0
pkt_buf = 0
max_packet_size = 10
server_lifetime = -1
reserve_pool_timeout = nan
stats_period = 0
[failover]
failure_threshold = 0
health_check_interval = 0
[users]
u = { pool_size = -2 }
[clusters.main]
primary = { host = "h", port = 0 }
standby = { host = "h", port = 65536 }
[databases.d]
max_db_connections = -5
)toml");
  CHECK(the_error(r, "pooler.listen_port").line == 2);
  CHECK(the_error(r, "pooler.listen_port").message == "must be between 1 and 65535, got 70000");
  CHECK(the_error(r, "pooler.default_pool_size").message == "must be >= 0, got -1");
  CHECK(the_error(r, "pooler.default_pool_size").line == 3);
  CHECK(the_error(r, "pooler.max_client_conn").message == "must be >= 1, got 0");
  CHECK(the_error(r, "pooler.pkt_buf").line == 5);
  CHECK(contains(the_error(r, "pooler.pkt_buf").message, "between 1 and"));
  CHECK(the_error(r, "pooler.max_packet_size").line == 6);
  CHECK(the_error(r, "pooler.server_lifetime").message == "must be >= 0, got -1");
  CHECK(the_error(r, "pooler.server_lifetime").line == 7);
  CHECK(the_error(r, "pooler.reserve_pool_timeout").line == 8);
  CHECK(the_error(r, "pooler.reserve_pool_timeout").message ==
        "must be a finite number of seconds, got nan");
  CHECK(the_error(r, "pooler.stats_period").message == "must be > 0, got 0");
  CHECK(the_error(r, "failover.failure_threshold").line == 11);
  CHECK(the_error(r, "failover.health_check_interval").line == 12);
  CHECK(the_error(r, "users.u.pool_size").line == 14);
  CHECK(the_error(r, "clusters.main.primary.port").line == 16);
  CHECK(the_error(r, "clusters.main.primary.port").message ==
        "must be between 1 and 65535, got 0");
  CHECK(the_error(r, "clusters.main.standby.port").line == 17);
  CHECK(the_error(r, "databases.d.max_db_connections").line == 19);
  CHECK(r.errors.size() == 14);
  auto w = load("[pooler]\nworkers = 65\n");
  CHECK(the_error(w, "pooler.workers").message == "must be between 1 and 64, got 65");
  CHECK(the_error(w, "pooler.workers").line == 2);
  CHECK(load("").config.pooler.workers == 1);  // one reactor thread unless asked
}

TEST_CASE("bad enum values list the allowed ones", "[config][errors]") {
  auto r = load(R"toml([pooler]
pool_mode = "sessions"
auth_type = "hbx"
[users]
u = { pool_mode = 1 }
)toml");
  Error pm = the_error(r, "pooler.pool_mode");
  CHECK(pm.line == 2);
  CHECK(pm.message == "invalid value \"sessions\"; expected one of: session, transaction, statement");
  Error at = the_error(r, "pooler.auth_type");
  CHECK(at.line == 3);
  CHECK(at.message == "invalid value \"hbx\"; expected one of: trust, md5, scram-sha-256, cert, plain, hba");
  CHECK(the_error(r, "users.u.pool_mode").message == "expected string, got integer");
  CHECK(r.errors.size() == 3);

  SECTION("enum values are case-insensitive, like PgBouncer") {
    auto r2 = load("[pooler]\npool_mode = \"Transaction\"\nauth_type = \"SCRAM-SHA-256\"\n");
    REQUIRE(r2.ok());
    CHECK(r2.config.pooler.pool_mode == PoolMode::Transaction);
    CHECK(r2.config.pooler.auth_type == AuthType::ScramSha256);
  }
}

TEST_CASE("enum names round-trip", "[config]") {
  for (auto m : {PoolMode::Session, PoolMode::Transaction, PoolMode::Statement})
    CHECK(parse_pool_mode(to_string(m)) == m);
  for (auto a : {AuthType::Trust, AuthType::Md5, AuthType::ScramSha256, AuthType::Cert})
    CHECK(parse_auth_type(to_string(a)) == a);
  CHECK(std::string(to_string(AuthType::Cert)) == "cert");
  CHECK(std::string(to_string(AuthType::ScramSha256)) == "scram-sha-256");
  CHECK_FALSE(parse_pool_mode(""));
  CHECK_FALSE(parse_auth_type("scram"));
}

TEST_CASE("databases must name an existing cluster", "[config][errors]") {
  auto r = load(R"toml([clusters.main]
primary = { host = "a" }
[clusters.other]
primary = { host = "b" }

[databases.appdb]
cluster = "mian"
[databases.x]
cluster = "nope"
[databases.y]
dbname = "why"
)toml");
  Error e = the_error(r, "databases.appdb.cluster");
  CHECK(e.line == 7);
  CHECK(e.message == "unknown cluster \"mian\"; did you mean main?");
  CHECK(the_error(r, "databases.x.cluster").message == "unknown cluster \"nope\"");
  Error missing = the_error(r, "databases.y.cluster");
  CHECK(missing.line == 10);
  CHECK(contains(missing.message, "missing required key"));
  CHECK(r.errors.size() == 3);

  SECTION("no clusters at all") {
    auto r2 = load("[databases.d]\n");
    CHECK(contains(the_error(r2, "databases.d.cluster").message, "no clusters are defined"));
    CHECK(the_error(r2, "databases.d.cluster").line == 1);
  }
}

TEST_CASE("databases: overrides, defaults and the \"*\" fallback", "[config]") {
  auto r = load(R"toml([clusters.main]
primary = { host = "db1" }

[databases.appdb]
dbname = "real_app"
user = "forced"
password = "pw"
pool_size = 3
min_pool_size = 1
reserve_pool_size = 2
pool_mode = "session"
max_db_connections = 9
max_db_client_connections = 99
connect_query = "SET x = 1"
application_name = "app"

[databases."*"]
cluster = "main"

[databases]
reports = { pool_mode = "statement" }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Database& a = r.config.databases.at("appdb");
  CHECK(a.cluster == "main");  // the only cluster
  CHECK(a.dbname == "real_app");
  CHECK(a.user == "forced");
  CHECK(a.password == "pw");
  CHECK(a.pool_size == 3);
  CHECK(a.min_pool_size == 1);
  CHECK(a.reserve_pool_size == 2);
  CHECK(a.pool_mode == PoolMode::Session);
  CHECK(a.max_db_connections == 9);
  CHECK(a.max_db_client_connections == 99);
  CHECK(a.connect_query == "SET x = 1");
  CHECK(a.application_name == "app");

  const Database& star = r.config.databases.at("*");
  CHECK(star.name == "*");
  CHECK(star.cluster == "main");
  CHECK(star.dbname.empty());  // the client's database name
  CHECK(star.min_pool_size == -1);

  const Database& rep = r.config.databases.at("reports");
  CHECK(rep.pool_mode == PoolMode::Statement);
  CHECK(rep.dbname == "reports");
}

TEST_CASE("clusters: nodes, options, subtables and required keys", "[config]") {
  auto r = load(R"toml([clusters.main]
primary = { host = "10.0.0.1", port = 5433, options = "-c search_path=x", sslmode = "require", connect_timeout = 10, keepalives = true }

[clusters.solo.primary]
host = "/var/run/postgresql"
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Cluster& m = r.config.clusters.at("main");
  CHECK(m.primary.host == "10.0.0.1");
  CHECK(m.primary.port == 5433);
  CHECK(m.primary.options.at("options") == "-c search_path=x");
  CHECK(m.primary.options.at("sslmode") == "require");
  CHECK(m.primary.options.at("connect_timeout") == "10");
  CHECK(m.primary.options.at("keepalives") == "1");
  CHECK(m.primary.options.size() == 4);
  CHECK_FALSE(m.standby);
  const Cluster& s = r.config.clusters.at("solo");
  CHECK(s.primary.host == "/var/run/postgresql");
  CHECK(s.primary.port == 5432);

  SECTION("missing and malformed nodes") {
    auto r2 = load(R"toml([clusters.a]
standby = { host = "s" }
[clusters.b]
primary = "host=x"
[clusters.c]
primary = { port = 5432, weird = [1] }
[clusters.d]
primary = { host = "" }
)toml");
    Error a = the_error(r2, "clusters.a.primary");
    CHECK(a.line == 1);
    CHECK(a.message == "missing required key");
    CHECK(the_error(r2, "clusters.b.primary").message == "expected table, got string");
    CHECK(the_error(r2, "clusters.b.primary").line == 4);
    CHECK(the_error(r2, "clusters.c.primary.weird").message == "expected string, got array");
    CHECK(the_error(r2, "clusters.c.primary.weird").line == 6);
    CHECK(r2.config.clusters.at("c").primary.host == "127.0.0.1");  // host is optional
    CHECK(the_error(r2, "clusters.d.primary.host").message == "must not be empty");
    CHECK(r2.errors.size() == 4);
  }
}

TEST_CASE("[failover] is merged with per-cluster overrides", "[config]") {
  auto r = load(R"toml([failover]
health_check_interval = 5
failure_threshold = 4
promote_command = "promote.sh"

[clusters.a]
primary = { host = "a1" }
standby = { host = "a2" }
[clusters.a.failover]
failure_threshold = 2
auto_failback = true
health_check_timeout = 0.5

[clusters.b]
primary = { host = "b1" }
failover = { auto_failover = false }

[clusters.c]
primary = { host = "c1" }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Failover& a = r.config.clusters.at("a").failover;
  CHECK(a.health_check_interval == 5.0);   // global
  CHECK(a.failure_threshold == 2);         // override
  CHECK(a.auto_failback);                  // override
  CHECK(a.health_check_timeout == 0.5);    // override
  CHECK(a.promote_command == "promote.sh");  // global
  CHECK(a.role_query == "SELECT NOT pg_is_in_recovery()");  // default
  const Failover& b = r.config.clusters.at("b").failover;
  CHECK_FALSE(b.auto_failover);
  CHECK(b.failure_threshold == 4);
  const Failover& c = r.config.clusters.at("c").failover;
  CHECK(c.health_check_interval == 5.0);
  CHECK(c.failure_threshold == 4);
  CHECK(c.auto_failover);
  CHECK(c.failover_timeout == 60.0);
}

TEST_CASE("[failover] safety settings: defaults, overrides, ranges", "[config]") {
  auto r = load(R"toml([failover]
max_lag_on_failover = 4096
promote_timeout = 5
state_file = "/var/lib/pgpivot/state"
fence_command = "fence.sh"

[clusters.a]
primary = { host = "a1" }
standby = { host = "a2" }
[clusters.a.failover]
witness_query = ""
witness_options = "-ccluster=system"
lag_query = ""

[clusters.b]
primary = { host = "b1" }
standby = { host = "b2" }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Failover& a = r.config.clusters.at("a").failover;
  CHECK(a.max_lag_on_failover == 4096);
  CHECK(a.promote_timeout == 5.0);
  CHECK(a.state_file == "/var/lib/pgpivot/state");
  CHECK(a.fence_command == "fence.sh");
  CHECK(a.witness_query.empty());
  CHECK(a.lag_query.empty());
  CHECK(a.witness_options == "-ccluster=system");
  const Failover& b = r.config.clusters.at("b").failover;
  CHECK(contains(b.witness_query, "pg_stat_wal_receiver"));
  CHECK(b.lag_query == "SELECT pg_last_wal_receive_lsn()");
  CHECK(b.position_query == "SELECT pg_current_wal_lsn()");
  const Failover d;
  CHECK(d.max_lag_on_failover == 1048576);
  CHECK(d.promote_timeout == 30.0);
  CHECK(d.state_file.empty());

  auto bad = load(R"toml([failover]
max_lag_on_failover = -1
promote_timeout = 0
)toml");
  CHECK(the_error(bad, "failover.max_lag_on_failover").line == 2);
  CHECK(the_error(bad, "failover.promote_timeout").line == 3);
}

TEST_CASE("[users] settings", "[config]") {
  const std::string md5 = "md5" + std::string(32, 'a');
  auto r = load_toml_string(R"toml([users]
a = { password = "plain", pool_mode = "session", pool_size = 4, reserve_pool_size = 1, max_user_connections = 10, max_user_client_connections = 20 }
b = { password = ")toml" + md5 + R"toml(" }
c = { password = ")toml" + kScram + R"toml(" }
[users.d]
)toml",
                            "t.toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const User& a = r.config.users.at("a");
  CHECK(a.password == "plain");
  CHECK(a.pool_mode == PoolMode::Session);
  CHECK(a.pool_size == 4);
  CHECK(a.reserve_pool_size == 1);
  CHECK(a.max_user_connections == 10);
  CHECK(a.max_user_client_connections == 20);
  CHECK(r.config.users.at("b").password == md5);
  CHECK(r.config.users.at("c").password == kScram);
  CHECK(r.config.users.at("d").password.empty());
  CHECK(r.config.users.at("d").max_user_connections == -1);

  SECTION("malformed SCRAM secret and non-table user") {
    auto r2 = load("[users]\nx = { password = \"SCRAM-SHA-256$4096:abc\" }\ny = \"pw\"\n");
    CHECK(the_error(r2, "users.x.password").line == 2);
    CHECK(contains(the_error(r2, "users.x.password").message, "malformed SCRAM secret"));
    CHECK(the_error(r2, "users.y").message == "expected table, got string");
    CHECK(the_error(r2, "users.y").line == 3);
  }
}

TEST_CASE("several errors in one file are all reported, in line order", "[config][errors]") {
  auto r = load(R"toml([pooler]
listen_port = "x"
pool_mode = "nope"
bogus = 1

[clusters.main]
primary = { host = "h", port = 99999 }

[databases.appdb]
cluster = "other"
pool_size = -3
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.errors.size() == 6);
  std::vector<int> lines;
  for (const auto& e : r.errors) lines.push_back(e.line);
  CHECK(lines == std::vector<int>{2, 3, 4, 7, 10, 11});
  CHECK(r.errors[0].key == "pooler.listen_port");
  CHECK(r.errors[1].key == "pooler.pool_mode");
  CHECK(r.errors[2].key == "pooler.bogus");
  CHECK(r.errors[3].key == "clusters.main.primary.port");
  CHECK(r.errors[4].key == "databases.appdb.cluster");
  CHECK(r.errors[5].key == "databases.appdb.pool_size");
}

TEST_CASE("TOML syntax errors report their line", "[config][errors]") {
  auto r = load("[pooler]\nlisten_port = 6432\ndefault_pool_size = \n");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 3);
  CHECK(r.errors[0].file == "t.toml");
  CHECK(contains(r.errors[0].message, "TOML syntax error"));

  auto dup = load("[pooler]\nlisten_port = 1\n\nlisten_port = 2\n");
  REQUIRE(dup.errors.size() == 1);
  CHECK(dup.errors[0].line == 4);
}

TEST_CASE("section of the wrong type", "[config][errors]") {
  auto r = load("pooler = 5\n[[databases]]\nx = 1\n");
  CHECK(the_error(r, "pooler").message == "expected table, got integer");
  CHECK(the_error(r, "databases").message == "expected table, got array");
  CHECK(the_error(r, "databases").line == 2);
}

TEST_CASE("nothing to listen on", "[config][errors]") {
  auto r = load("[pooler]\nlisten_addr = \"\"\nunix_socket_dir = \"\"\n");
  CHECK(the_error(r, "pooler.listen_addr").line == 2);
}

TEST_CASE("load_file: missing file, directory, .ini", "[config][errors]") {
  TempDir dir;
  auto missing = load_file((dir.path() / "nope.toml").string());
  REQUIRE(missing.errors.size() == 1);
  CHECK(missing.errors[0].line == 0);
  CHECK(contains(missing.errors[0].to_string(), "nope.toml: cannot read config file"));

  auto is_dir = load_toml_file(dir.path().string());
  REQUIRE(is_dir.errors.size() == 1);
  CHECK(is_dir.errors[0].line == 0);

  // A .ini (any case) is a pgbouncer.ini.
  auto ini = load_file(dir.write("pgbouncer.INI", "[databases]\nx = host=y\n"));
  INFO(dump(ini.errors));
  REQUIRE(ini.ok());
  CHECK(ini.config.databases.at("x").cluster == "y:5432");

  Error e{"f.toml", 0, "pooler.x", "msg"};
  CHECK(e.to_string() == "f.toml: pooler.x: msg");
}

TEST_CASE("auth_file is read relative to the config file", "[config][userlist]") {
  TempDir dir;
  dir.write("conf/users.txt",
            "\"app\" \"from-file\"\n\"empty\" \"filled\"\n\"fileonly\" \"md5" +
                std::string(32, 'f') + "\"\n");
  std::string cfg = dir.write("conf/pgpivot.toml", R"toml([pooler]
auth_file = "users.txt"
[users]
app = { password = "from-toml", pool_size = 7 }
empty = { pool_size = 2 }
)toml");
  auto r = load_toml_file(cfg);
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  CHECK(r.config.pooler.auth_file == (dir.path() / "conf/users.txt").string());
  const auto& users = r.config.users;
  REQUIRE(users.size() == 3);
  CHECK(users.at("app").password == "from-toml");  // [users] wins
  CHECK(users.at("app").pool_size == 7);
  CHECK(users.at("empty").password == "filled");   // ... unless its password is empty
  CHECK(users.at("empty").pool_size == 2);
  CHECK(users.at("fileonly").name == "fileonly");
  CHECK(users.at("fileonly").password == "md5" + std::string(32, 'f'));

  SECTION("absolute path") {
    std::string abs = dir.write("elsewhere/u.txt", "\"x\" \"y\"\n");
    auto r2 = load_toml_string("[pooler]\nauth_file = \"" + abs + "\"\n",
                               (dir.path() / "conf/other.toml").string());
    INFO(dump(r2.errors));
    REQUIRE(r2.ok());
    CHECK(r2.config.users.at("x").password == "y");
  }
  SECTION("unreadable auth_file names the config line") {
    auto r2 = load_toml_string("# c\n[pooler]\nauth_file = \"missing.txt\"\n", cfg);
    Error e = the_error(r2, "pooler.auth_file");
    CHECK(e.file == cfg);
    CHECK(e.line == 3);
    CHECK(contains(e.message, "missing.txt"));
  }
  SECTION("userlist errors name the userlist file and line") {
    std::string bad = dir.write("conf/bad.txt", "\"ok\" \"pw\"\n\nnot quoted\n");
    auto r2 = load_toml_string("[pooler]\nlisten_port = 0\nauth_file = \"bad.txt\"\n", cfg);
    REQUIRE(r2.errors.size() == 2);
    CHECK(r2.errors[0].key == "pooler.listen_port");
    CHECK(r2.errors[1].file == bad);
    CHECK(r2.errors[1].line == 3);
    CHECK(r2.config.users.at("ok").password == "pw");
  }
}

TEST_CASE("settings the pooler does not act on are warnings, once each", "[config][warnings]") {
  auto r = load(R"toml([pooler]
pidfile = "/run/pgpivot.pid"
tcp_keepalive = false
client_tls_sslmode = "require"
server_tls_sslmode = "Disable"
max_prepared_statements = 0
syslog = true
[clusters.main]
primary = { host = "h" }
[databases.d]
application_name = "app"
auth_user = "au"
params = { client_encoding = "UTF8" }
[databases.e]
max_db_client_connections = 5
[users]
u = { max_user_client_connections = 3 }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  CHECK(r.config.pooler.pidfile == "/run/pgpivot.pid");
  CHECK(r.config.pooler.server_tls_sslmode == "disable");  // stored in lower case
  CHECK(r.config.pooler.client_tls_sslmode == "require");
  CHECK(r.config.databases.at("d").auth_user == "au");
  CHECK(r.config.databases.at("d").params.at("client_encoding") == "UTF8");
  INFO(dump(r.warnings));
  // application_name, params, the client connection caps and the TLS modes are
  // honoured by the pooler.
  // auth_user is acted on (auth_query lookups).
  REQUIRE(r.warnings.size() == 1);
  std::vector<std::pair<std::string, int>> got;
  for (const auto& w : r.warnings) got.emplace_back(w.key, w.line);
  CHECK(got == std::vector<std::pair<std::string, int>>{{"pooler.syslog", 7}});
  CHECK(r.warnings[0].message == "syslog is not supported yet (logs go to stderr and logfile); ignored");

  SECTION("bad values of the new keys are errors") {
    auto r2 = load("[pooler]\nclient_tls_sslmode = \"on\"\nlisten_backlog = 0\n"
                   "[clusters.c]\nprimary = {}\n[databases.d]\nparams = \"x\"\n");
    CHECK(the_error(r2, "pooler.client_tls_sslmode").message ==
          "invalid value \"on\"; expected one of: disable, allow, prefer, require, verify-ca, verify-full");
    CHECK(the_error(r2, "pooler.listen_backlog").message == "must be >= 1, got 0");
    CHECK(the_error(r2, "databases.d.params").message == "expected table of strings, got string");
    CHECK(r2.errors.size() == 3);
  }
}

TEST_CASE("auth_type = cert needs client_tls_sslmode = verify-full and client_tls_ca_file", "[config][errors]") {
  const std::string tls = "client_tls_key_file = \"/k\"\nclient_tls_cert_file = \"/c\"\n";
  SECTION("verify-full with a CA file loads") {
    auto r = load("[pooler]\nauth_type = \"cert\"\nclient_tls_sslmode = \"verify-full\"\nclient_tls_ca_file = \"/ca\"\n" + tls);
    INFO(dump(r.errors));
    REQUIRE(r.ok());
    CHECK(r.config.pooler.auth_type == AuthType::Cert);
  }
  SECTION("any other client_tls_sslmode is an error at auth_type") {
    for (const char* mode : {"disable", "allow", "prefer", "require", "verify-ca"}) {
      INFO(mode);
      auto r = load(std::string("[pooler]\nclient_tls_sslmode = \"") + mode +
                    "\"\nauth_type = \"cert\"\nclient_tls_ca_file = \"/ca\"\n" + tls);
      Error e = the_error(r, "pooler.auth_type");
      CHECK(e.line == 3);
      CHECK(e.message == std::string("auth_type = cert needs client_tls_sslmode = verify-full, got ") + mode);
      CHECK(r.errors.size() == 1);
    }
  }
  SECTION("the default client_tls_sslmode (disable) too") {
    auto r = load("[pooler]\nauth_type = \"cert\"\n");
    CHECK(the_error(r, "pooler.auth_type").message ==
          "auth_type = cert needs client_tls_sslmode = verify-full, got disable");
  }
  SECTION("without client_tls_ca_file") {
    auto r = load("[pooler]\nauth_type = \"cert\"\nclient_tls_sslmode = \"verify-full\"\n" + tls);
    CHECK(the_error(r, "pooler.auth_type").message == "auth_type = cert needs client_tls_ca_file");
  }
}

TEST_CASE("[coordination] and decider = \"patroni\" load, and their mistakes name key and line", "[config]") {
  auto r = load(R"toml([coordination]
endpoints = ["http://10.0.0.1:2379", "https://10.0.0.2:2379"]
instance_name = "app7"
lease_ttl = 5
request_timeout = 1.5
tls_ca_file = "/etc/ssl/etcd-ca.pem"

[clusters.main]
primary = { host = "10.0.0.1", port = 5432, restapi = "http://10.0.0.1:8008" }
standby = { host = "10.0.0.2", port = 5432, restapi = "http://10.0.0.2:8008" }
failover = { decider = "patroni" }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const auto& c = r.config.coordination;
  CHECK(c.enabled());
  CHECK(c.endpoints == std::vector<std::string>{"http://10.0.0.1:2379", "https://10.0.0.2:2379"});
  CHECK(c.instance_name == "app7");
  CHECK(c.lease_ttl == 5);
  CHECK(c.request_timeout == 1.5);
  CHECK(c.prefix == "/pgpivot");
  CHECK(c.tls_ca_file == "/etc/ssl/etcd-ca.pem");
  const auto& m = r.config.clusters.at("main");
  CHECK(m.failover.decider == "patroni");
  CHECK(m.primary.restapi == "http://10.0.0.1:8008");
  CHECK(m.standby->restapi == "http://10.0.0.2:8008");
  CHECK(m.primary.options.count("restapi") == 0);  // never passed to libpq

  SECTION("defaults: off, pgpivot decides") {
    auto d = load("[clusters.main]\nprimary = { host = \"h\" }\n");
    CHECK_FALSE(d.config.coordination.enabled());
    CHECK(d.config.clusters.at("main").failover.decider == "pgpivot");
  }
  SECTION("mistakes") {
    auto bad = load(R"toml([coordination]
endpoints = ["10.0.0.1:2379"]
lease_ttl = 2
request_timeout = 2
prefix = "pgpivot"

[clusters.main]
primary = { host = "10.0.0.1", restapi = "10.0.0.1:8008" }
standby = { host = "10.0.0.2" }
failover = { decider = "consul" }

[clusters.other]
primary = { host = "10.0.0.3" }
standby = { host = "10.0.0.4", restapi = "http://10.0.0.4:8008" }
failover = { decider = "patroni" }
)toml");
    CHECK(contains(the_error(bad, "coordination.endpoints").message, "not an http:// or https:// URL"));
    CHECK(the_error(bad, "coordination.endpoints").line == 2);
    CHECK(contains(the_error(bad, "coordination.request_timeout").message, "shorter than lease_ttl"));
    CHECK(contains(the_error(bad, "coordination.prefix").message, "must start with /"));
    CHECK(the_error(bad, "clusters.main.primary.restapi").line == 8);
    CHECK(the_error(bad, "clusters.main.failover.decider").message ==
          "invalid value \"consul\"; expected one of: pgpivot,patroni");
    CHECK(contains(the_error(bad, "clusters.other.primary").message, "needs restapi"));
  }
}
