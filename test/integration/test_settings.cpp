// PgBouncer settings beyond the basics: session reset, client limits, idle
// transactions, the Unix socket.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <memory>
#include <vector>

#include "harness.hpp"
#include "wire_client.hpp"

using namespace itest;

TEST_CASE("session mode resets a server connection before the next client gets it", "[settings]") {
  PoolerConfig cfg;
  cfg.pool_mode = "session";
  cfg.default_pool_size = 1;
  Pooler p(cfg);

  std::string pid;
  {
    Conn a(p.conninfo());
    REQUIRE(a.ok());
    pid = a.value("SELECT pg_backend_pid()");
    a.exec_ok("SET statement_timeout = '4321ms'");
    a.exec_ok("PREPARE itest_stmt AS SELECT 1");
  }
  sleep_s(0.3);
  Conn b(p.conninfo());
  REQUIRE(b.ok());
  CHECK(b.value("SELECT pg_backend_pid()") == pid);  // the same server connection, reused
  CHECK(b.value("SHOW statement_timeout") == "0");
  CHECK(b.value("SELECT count(*) FROM pg_prepared_statements") == "0");
}

TEST_CASE("max_client_conn refuses clients beyond the limit", "[settings]") {
  PoolerConfig cfg;
  cfg.max_client_conn = 3;
  Pooler p(cfg);
  std::vector<Conn> conns;
  for (int i = 0; i < 3; ++i) {
    conns.emplace_back(p.conninfo());
    INFO("client " << i << ": " << conns.back().error());
    REQUIRE(conns.back().ok());
  }
  Conn extra(p.conninfo());
  INFO("4th client: " << extra.error());
  CHECK_FALSE(extra.ok());
  CHECK(extra.error().find("53300") != std::string::npos);  // too_many_connections

  conns.pop_back();
  sleep_s(0.3);
  Conn again(p.conninfo());
  INFO("after one left: " << again.error());
  REQUIRE(again.ok());
  CHECK(again.value("SELECT 1") == "1");
}

TEST_CASE("idle_transaction_timeout closes a client idle inside a transaction", "[settings]") {
  PoolerConfig cfg;
  cfg.default_pool_size = 2;
  cfg.extra["idle_transaction_timeout"] = "1";
  Pooler p(cfg);
  Conn c(p.conninfo("app", "app") + " application_name=itest_idle_tx");
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  c.exec_ok("SELECT 1");
  sleep_s(2.5);
  Result r = c.exec("SELECT 2", 5);
  INFO("after 2.5 s idle in transaction: " << r.message());
  CHECK_FALSE(r.ok());

  Conn d(direct_conninfo());
  REQUIRE(d.ok());
  CHECK(d.value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                "AND state LIKE 'idle in transaction%'") == "0");
}

TEST_CASE("clients can connect over the Unix socket", "[settings]") {
  std::string dir = env().scratch + "/sock";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  PoolerConfig cfg;
  cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
  Pooler p(cfg);
  Conn c("host=" + dir + " port=" + std::to_string(p.port()) +
         " dbname=appdb user=app password=app connect_timeout=10");
  INFO("connection error: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT current_user") == "app");
}

// track_extra_parameters (PgBouncer 1.20+): a listed parameter is accepted in the
// startup packet or in options (-c), kept per client, and set on whichever server
// the client gets -- and taken back (RESET) before a client without it gets that
// server, since PostgreSQL does not report search_path and no default is known.
TEST_CASE("track_extra_parameters: search_path per client on one shared server", "[settings]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18 has no track_extra_parameters
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.auth_type = "trust";  // for the raw client below
  cfg.default_pool_size = 1;
  cfg.extra["track_extra_parameters"] = "[\"search_path\"]";
  Pooler p(cfg);
  Conn plain(p.conninfo());
  Conn a(p.conninfo() + " options='-c search_path=schema_a,public'");
  REQUIRE(plain.ok());
  REQUIRE(a.ok());
  std::string server_default = plain.value("SHOW search_path");
  std::string pid = plain.value("SELECT pg_backend_pid()");
  // As a startup parameter of its own (libpq cannot send one): a raw client.
  RawSocket b(p.port());
  REQUIRE(b.send_all(startup_packet({{"user", "app"}, {"database", "appdb"}, {"search_path", "schema_b"}})));
  std::string payload;
  REQUIRE(b.read_until('Z', payload, 10) == 'Z');
  auto b_search_path = [&] {
    if (!b.send_all(message('Q', std::string("SHOW search_path") + '\0'))) return std::string("<send failed>");
    char t = b.read_until('D', payload, 10);
    if (t != 'D') return "<" + std::string(1, t) + ": " + error_field(payload, 'M') + ">";
    std::string v = payload.substr(6);  // column count (2), length (4), value
    if (b.read_until('Z', payload, 10) != 'Z') return std::string("<no ReadyForQuery>");
    return v;
  };
  for (int round = 0; round < 3; ++round) {
    CHECK(a.value("SHOW search_path") == "schema_a,public");  // as PostgreSQL keeps a startup value
    CHECK(a.value("SELECT current_schemas(false)::text") == "{public}");  // a list: public is found
    CHECK(plain.value("SHOW search_path") == server_default);
    CHECK(b_search_path() == "schema_b");
    CHECK(a.value("SELECT pg_backend_pid()") == pid);  // one server for all three
  }
  // IntervalStyle, tracked by default (and reported by PostgreSQL).
  Conn iso(p.conninfo() + " options='-c IntervalStyle=iso_8601'");
  REQUIRE(iso.ok());
  CHECK(iso.value("SELECT interval '1 day'") == "P1D");
  CHECK(plain.value("SELECT interval '1 day'") == "1 day");

  // Without it, such a startup parameter is refused, as PgBouncer refuses it.
  PoolerConfig off;
  off.pool_mode = "transaction";
  Pooler q(off);
  Conn refused(q.conninfo() + " options='-c search_path=schema_a'");
  CHECK_FALSE(refused.ok());
  CHECK(refused.error().find("unsupported startup parameter") != std::string::npos);
}

namespace {

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

// `n` clients each holding a transaction open, so each has a server of its own.
std::vector<std::unique_ptr<Conn>> hold_servers(const Pooler& p, const std::string& db, int n) {
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < n; i++) {
    held.push_back(std::make_unique<Conn>(p.conninfo("app", "app", db), 20));
    INFO("client " << i << ": " << held.back()->error());
    REQUIRE(held.back()->ok());
    held.back()->exec_ok("BEGIN");
    CHECK(held.back()->value("SELECT 1") == "1");
  }
  return held;
}

}  // namespace

// Host lists (PgBouncer 1.19+): host = "a,b" on a node. round-robin (the default)
// takes the next host for every new server connection; disable keeps to one and
// moves on only after a connect to it failed. 127.0.0.2 refuses (PostgreSQL
// listens on 127.0.0.1), localhost is 127.0.0.1 under another name.
TEST_CASE("host lists: disable skips a host that refuses, round-robin takes each in turn", "[settings]") {
  if (env().use_pgbouncer) return;  // the harness writes TOML clusters
  const std::string port = std::to_string(env().pg_port);
  PoolerConfig cfg;
  cfg.extra["server_login_retry"] = "1";
  cfg.extra_clusters["badfirst"] = "primary = { host = \"127.0.0.2,127.0.0.1\", port = " + port + " }";
  cfg.extra_databases["badfirst"] = "cluster = \"badfirst\"\ndbname = \"appdb\"\nload_balance_hosts = \"disable\"";
  cfg.extra_clusters["twonames"] = "primary = { host = \"127.0.0.1,localhost\", port = " + port + " }";
  cfg.extra_databases["twonames"] = "cluster = \"twonames\"\ndbname = \"appdb\"";
  Pooler p(cfg);

  SECTION("disable") {
    double t0 = now_s();
    auto held = hold_servers(p, "badfirst", 3);
    INFO(p.log());
    CHECK(now_s() - t0 < 8);  // waited for one server_login_retry, not for query_wait_timeout
    CHECK(count_of(p.log(), "badfirst/app@127.0.0.2:" + port + " closing because: connect failed") == 1);
    CHECK(count_of(p.log(), "badfirst/app@127.0.0.1:" + port + " new connection to server") == 3);
  }
  SECTION("round-robin") {
    auto held = hold_servers(p, "twonames", 4);
    INFO(p.log());
    CHECK(count_of(p.log(), "twonames/app@127.0.0.1:" + port + " new connection to server") == 2);
    CHECK(count_of(p.log(), "twonames/app@localhost:" + port + " new connection to server") == 2);
  }
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result dbs = console_show(admin, "DATABASES");
  INFO(dump(dbs));
  CHECK(cell(dbs, {{"name", "badfirst"}}, "host") == "127.0.0.2,127.0.0.1");
  CHECK(cell(dbs, {{"name", "badfirst"}}, "load_balance_hosts") == "disable");
  CHECK(cell(dbs, {{"name", "twonames"}}, "load_balance_hosts") == "round-robin");
  CHECK(cell(dbs, {{"name", "appdb"}}, "load_balance_hosts") == "<null>");  // one host: NULL, as PgBouncer
}

// A client's own DateStyle (-c DateStyle=ISO) is SET on its server once: the
// server reports the canonical form ("ISO, MDY"), which the client then keeps, so
// the next hand-out finds them equal. verbose = 1 logs both steps in PgBouncer's
// words (its tests match on them).
TEST_CASE("verbose: a client's parameter is SET once, then kept in its canonical form", "[settings]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18 logs other words
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 1;
  cfg.extra["verbose"] = "1";
  Pooler p(cfg);
  Conn plain(p.conninfo());
  REQUIRE(plain.ok());
  CHECK(plain.value("SHOW DateStyle") == "ISO, MDY");  // the server's default here
  plain.exec_ok("SET DateStyle = 'German'");  // on the shared server; RESET ALL when it is released
  Conn iso(p.conninfo() + " options='-c DateStyle=ISO'");
  REQUIRE(iso.ok());
  for (int i = 0; i < 3; i++) CHECK(iso.value("SHOW DateStyle") == "ISO, MDY");
  std::string log = p.log();
  INFO(log);
  CHECK(count_of(log, "varcache_apply: SET DateStyle='ISO';") == 1);
  CHECK(count_of(log, "varcache_set_canonical: setting DateStyle to its canonical version ISO -> ISO, MDY") == 1);
  CHECK(count_of(log, "DEBUG") >= 2);
}
