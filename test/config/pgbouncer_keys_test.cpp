// Tests of PgBouncer's keys beyond 1.18 in both loaders (pgbouncer.ini and TOML):
// every key is known; the ones pgpivot does not act on are stored and warned about
// once, only when not at PgBouncer's default; the console's SET checks them alike.
#include <catch2/catch.hpp>

#include "config/load.hpp"
#include "config/settings.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using pgpivot::config::test::dump;
using pgpivot::config::test::the_warning;
using pgpivot::config::test::contains;
using pgpivot::config::test::errors_for;
using pgpivot::config::test::TempDir;

namespace {

LoadResult ini(std::string_view text) { return load_ini_string(text, "t.ini"); }
LoadResult load(std::string_view text) { return load_toml_string(text, "t.toml"); }

}  // namespace

TEST_CASE("unsupported PgBouncer keys: exactly one warning each", "[ini][warnings]") {
  TempDir dir;
  dir.write("more.ini", "[pgbouncer]\nso_reuseport = 1\ntcp_keepidle = 30\n");
  std::string path = dir.write("pgbouncer.ini", R"ini([pgbouncer]
unix_socket_mode = 0777
unix_socket_group = postgres
conffile = /etc/pgbouncer/pgbouncer.ini
service_name = pgbouncer
job_name = pgbouncer
auth_hba_file = /etc/pgbouncer/hba.conf
syslog_ident = pgbouncer
syslog_facility = daemon
server_fast_close = 1
autodb_idle_timeout = 3600
dns_max_ttl = 15
dns_nxdomain_ttl = 15
dns_zone_check_period = 0
resolv_conf = /etc/resolv.conf
client_tls_ecdhcurve = auto
client_tls_dheparams = auto
suspend_timeout = 10
sbuf_loopcnt = 5
so_reuseport = 0
tcp_defer_accept = 45
tcp_socket_buffer = 0
tcp_keepcnt = 9
tcp_keepidle = 7200
tcp_keepintvl = 75
tcp_user_timeout = 0
%include more.ini
)ini");
  auto r = load_ini_file(path);
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  INFO(dump(r.warnings));
  // Every key is stored (SHOW CONFIG shows it). Those pgpivot does not implement are
  // warned about once, where they are set, and only when not at PgBouncer's default;
  // so_reuseport and the tcp_* keys are implemented.
  std::vector<std::pair<int, std::string>> warned;
  for (const Error& w : r.warnings) {
    CHECK(w.file == path);
    CHECK(contains(w.message, "; ignored"));
    warned.emplace_back(w.line, w.key);
  }
  CHECK(warned == std::vector<std::pair<int, std::string>>{{3, "pgbouncer.unix_socket_group"},
                                                           {4, "pgbouncer.conffile"},
                                                           {15, "pgbouncer.resolv_conf"},
                                                           {21, "pgbouncer.tcp_defer_accept"}});
  const Pooler& p = r.config.pooler;
  // auth_hba_file is implemented (read only when auth_type = hba).
  CHECK(p.auth_hba_file == "/etc/pgbouncer/hba.conf");
  CHECK(p.unix_socket_group == "postgres");
  CHECK(p.tcp_defer_accept == 45);
  CHECK(p.tcp_keepcnt == 9);
  CHECK(p.tcp_keepintvl == 75);
  // Set again in more.ini: the later value.
  CHECK(p.so_reuseport);
  CHECK(p.tcp_keepidle == 30);
}

TEST_CASE("PgBouncer 1.19-1.25 keys: per database, per user, [peers]", "[ini]") {
  // The keys of PgBouncer's own test.ini that 1.18 did not have.
  auto r = ini(R"ini([databases]
p9 = port=6666 host=127.0.0.1 dbname=postgres server_lifetime=2 user=bouncer
pauthz = port=6666 host=127.0.0.1 dbname=p7 auth_user=pswcheck auth_dbname=authdb
hostlist_good_first = port=6666 host=127.0.0.1,127.0.0.3 dbname=p0 load_balance_hosts=disable
conn_limit_db = port=6666 host=127.0.0.1 dbname=p0 max_db_client_connections=2
bad = port=6666 host=127.0.0.1 load_balance_hosts=sometimes
[users]
maxedout2 = max_user_connections=2 max_user_client_connections=2
slow = query_timeout=5 client_idle_timeout=60
[peers]
1 = host=/tmp/pgbouncer1 port=6667
2 = host=127.0.0.1 port=6668
[pgbouncer]
listen_port = 6667
track_extra_parameters = search_path, intervalstyle
max_db_client_connections = 10
max_user_client_connections = 20
scram_iterations = 10000
peer_id = 1
transaction_timeout = 30
query_wait_notify = 5
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.databases.at("p9").server_lifetime == 2);
  CHECK(c.databases.at("pauthz").auth_dbname == "authdb");
  CHECK(c.databases.at("conn_limit_db").max_db_client_connections == 2);
  CHECK(c.databases.at("p9").max_db_client_connections == -1);  // [pooler]'s
  CHECK(c.databases.at("hostlist_good_first").load_balance_hosts == "disable");
  CHECK(c.clusters.at(c.databases.at("hostlist_good_first").cluster).primary.host == "127.0.0.1,127.0.0.3");
  CHECK_FALSE(c.databases.count("bad"));
  CHECK(c.users.at("maxedout2").max_user_client_connections == 2);
  CHECK(c.users.at("slow").query_timeout == 5);
  CHECK(c.users.at("slow").client_idle_timeout == 60);
  CHECK(c.pooler.track_extra_parameters == std::vector<std::string>{"search_path", "intervalstyle"});
  CHECK(c.pooler.max_db_client_connections == 10);
  CHECK(c.pooler.scram_iterations == 10000);
  CHECK(c.pooler.peer_id == 1);
  INFO(dump(r.warnings));
  CHECK(errors_for(r.warnings, "databases.pauthz.auth_user").empty());  // auth_query lookups are done
  CHECK(errors_for(r.warnings, "databases.pauthz.auth_dbname").empty());
  CHECK(errors_for(r.warnings, "databases.hostlist_good_first.host").empty());  // host lists are honoured
  CHECK(the_warning(r, "databases.bad.load_balance_hosts").message ==
        "invalid value \"sometimes\"; expected one of: round-robin, disable; the database is skipped");
  CHECK(errors_for(r.warnings, "users.slow.query_timeout").empty());  // acted on
  CHECK(errors_for(r.warnings, "users.slow.client_idle_timeout").empty());
  CHECK(errors_for(r.warnings, "peers.1").empty());  // peering is acted on
  CHECK(errors_for(r.warnings, "peers.2").empty());
  REQUIRE(c.peers.size() == 2);
  CHECK(c.peers.at(1).host == "/tmp/pgbouncer1");
  CHECK(c.peers.at(1).port == 6667);
  CHECK(c.peers.at(2).host == "127.0.0.1");
  CHECK(c.pooler.peer_id == 1);
  CHECK(errors_for(r.warnings, "pgbouncer.track_extra_parameters").empty());  // acted on
  CHECK(errors_for(r.warnings, "pgbouncer.peer_id").empty());
  CHECK(errors_for(r.warnings, "pgbouncer.transaction_timeout").empty());  // acted on
  CHECK(errors_for(r.warnings, "pgbouncer.query_wait_notify").empty());  // the default
  CHECK(errors_for(r.warnings, "pgbouncer.scram_iterations").empty());   // implemented
}

TEST_CASE("PgBouncer 1.19-1.25 keys in TOML: stored, acted on or warned about", "[config][warnings]") {
  auto r = load(R"toml([pooler]
scram_iterations = 10000
so_reuseport = true
tcp_keepidle = 30
max_db_client_connections = 50
track_extra_parameters = ["search_path"]
transaction_timeout = 0
[clusters.main]
primary = { host = "h" }
[databases.d]
server_lifetime = 2
load_balance_hosts = "disable"
auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"
[users]
u = { max_user_client_connections = 3, query_timeout = 5 }
)toml");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.pooler.scram_iterations == 10000);
  CHECK(c.pooler.so_reuseport);
  CHECK(c.pooler.tcp_keepidle == 30);
  CHECK(c.pooler.max_db_client_connections == 50);
  CHECK(c.databases.at("d").server_lifetime == 2);
  CHECK(c.databases.at("d").max_db_client_connections == -1);  // [pooler]'s
  CHECK(c.users.at("u").max_user_client_connections == 3);
  INFO(dump(r.warnings));
  std::vector<std::pair<std::string, int>> got;
  for (const auto& w : r.warnings) got.emplace_back(w.key, w.line);
  // transaction_timeout = 0 is PgBouncer's default: nothing to warn about.
  // auth_query and a user's query_timeout are acted on.
  CHECK(got.empty());  // track_extra_parameters is acted on too
  SECTION("and SET takes them with the same checks") {
    Pooler p;
    CHECK(set_from_text(p, *find_setting("peer_id"), "16384") == "must be between 0 and 16383, got 16384");
    CHECK(set_from_text(p, *find_setting("track_extra_parameters"), "search_path, IntervalStyle").empty());
    CHECK(p.track_extra_parameters == std::vector<std::string>{"search_path", "IntervalStyle"});
    CHECK(inert_reason(*find_setting("track_extra_parameters"), p).empty());
    CHECK(set_from_text(p, *find_setting("scram_iterations"), "0") == "must be >= 1, got 0");
  }
}

TEST_CASE("auth_user, auth_query and auth_dbname load in both formats; the console's names are refused",
          "[ini][config]") {
  auto r = ini(R"ini([databases]
guarded = host=127.0.0.1 dbname=appdb auth_user=lookup auth_dbname=authsrc auth_query='SELECT * FROM f($1)'
authsrc = host=127.0.0.1 dbname=appdb
[pgbouncer]
auth_user = pgpivot_auth
auth_dbname = authsrc
auth_type = plain
)ini");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.pooler.auth_user == "pgpivot_auth");
  CHECK(c.pooler.auth_dbname == "authsrc");
  CHECK(c.pooler.auth_type == AuthType::Plain);
  CHECK(c.databases.at("guarded").auth_user == "lookup");
  CHECK(c.databases.at("guarded").auth_dbname == "authsrc");
  CHECK(c.databases.at("guarded").auth_query == "SELECT * FROM f($1)");
  INFO(dump(r.warnings));
  for (const char* k : {"pgbouncer.auth_user", "pgbouncer.auth_dbname", "databases.guarded.auth_user",
                        "databases.guarded.auth_dbname", "databases.guarded.auth_query"})
    CHECK(errors_for(r.warnings, k).empty());

  for (const char* reserved : {"pgbouncer", "pgpivot"}) {
    auto bad = ini(std::string("[pgbouncer]\nauth_dbname = ") + reserved + "\n");
    auto es = errors_for(bad.errors, "pgbouncer.auth_dbname");
    REQUIRE(es.size() == 1);
    CHECK(es[0].message == std::string("cannot use the reserved \"") + reserved + "\" database as an auth_dbname");
    auto bad_toml = load(std::string("[pooler]\nauth_dbname = \"") + reserved + "\"\n");
    CHECK(errors_for(bad_toml.errors, "pooler.auth_dbname").size() == 1);
  }
  // A database may name the console in its own auth_dbname: PgBouncer refuses that
  // at login ("bouncer config error"), not at load.
  CHECK(ini("[databases]\nd = host=h auth_dbname=pgbouncer\n").ok());
}

TEST_CASE("pkt_buf below 1024 loads, as PgBouncer takes it, with one warning", "[ini][warnings]") {
  auto r = ini("[pgbouncer]\npkt_buf = 75\n");
  INFO(dump(r.errors));
  REQUIRE(r.ok());
  CHECK(r.config.pooler.pkt_buf == 75);
  CHECK(contains(the_warning(r, "pgbouncer.pkt_buf").message, "raised to 1024"));
  CHECK(errors_for(ini("[pgbouncer]\npkt_buf = 1024\n").warnings, "pgbouncer.pkt_buf").empty());
}
