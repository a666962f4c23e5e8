// auth_user + auth_query + auth_dbname (PgBouncer's lookup of roles that are not in
// auth_file) and auth_type = plain, against the real PostgreSQL: the roles, their
// passwords and the lookup function live there, and the tests change them under a
// running pooler (rotation, VALID UNTIL) to see each login follow.
#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

// The lookup as a careful deployment sets it up: a role that may only call a
// SECURITY DEFINER function (pg_authid needs a superuser), which pins its own
// search_path. The second function fails when the client's application_name
// reached the lookup session; the third is slow.
void prepare_roles() {
  Conn pg(direct_conninfo("postgres"));
  REQUIRE(pg.ok());
  pg.exec_ok(R"sql(
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aq_lookup') THEN CREATE ROLE aq_lookup LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aq_scram') THEN CREATE ROLE aq_scram LOGIN; END IF;
END $$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE aq_lookup PASSWORD 'lookup';
ALTER ROLE aq_scram PASSWORD 'scrampw' VALID UNTIL 'infinity';
)sql");
  Conn app(direct_conninfo("appdb"));
  REQUIRE(app.ok());
  app.exec_ok(R"sql(
CREATE OR REPLACE FUNCTION public.pgpivot_auth_lookup(u text) RETURNS TABLE(usename name, passwd text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
    FROM pg_authid WHERE rolname = u AND rolcanlogin $$;
CREATE OR REPLACE FUNCTION public.pgpivot_auth_guarded(u text) RETURNS TABLE(usename name, passwd text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF current_setting('application_name') = 'hostile' THEN
    RAISE EXCEPTION 'the client''s parameters reached the auth_query session';
  END IF;
  RETURN QUERY SELECT * FROM public.pgpivot_auth_lookup(u);
END $$;
CREATE OR REPLACE FUNCTION public.pgpivot_auth_slow(u text) RETURNS TABLE(usename name, passwd text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_sleep(2);
  RETURN QUERY SELECT * FROM public.pgpivot_auth_lookup(u);
END $$;
REVOKE ALL ON FUNCTION public.pgpivot_auth_lookup(text), public.pgpivot_auth_guarded(text),
  public.pgpivot_auth_slow(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgpivot_auth_lookup(text), public.pgpivot_auth_guarded(text),
  public.pgpivot_auth_slow(text) TO aq_lookup;
)sql");
}

void set_role_password(const std::string& sql) {
  Conn pg(direct_conninfo("postgres"));
  REQUIRE(pg.ok());
  pg.exec_ok(sql);
}

// [pooler] auth_user + auth_query; md5user is left out of [users] so that it too
// is looked up.
PoolerConfig lookup_config(const std::string& auth_type,
                           const std::string& query = "SELECT * FROM public.pgpivot_auth_lookup($1)") {
  PoolerConfig cfg;
  cfg.auth_type = auth_type;
  cfg.users = {{"app", "app"}, {"admin", "admin"}, {"aq_lookup", "lookup"}};
  cfg.extra["auth_user"] = "\"aq_lookup\"";
  cfg.extra["auth_query"] = "\"" + query + "\"";
  return cfg;
}

std::string login_error(const Pooler& p, const std::string& user, const std::string& password,
                        const std::string& db = "appdb") {
  Conn c(p.conninfo(user, password, db));
  return c.ok() ? std::string() : c.error();
}

void require_session_as(const Pooler& p, const std::string& user, const std::string& password,
                        const std::string& db = "appdb") {
  Conn c(p.conninfo(user, password, db));
  INFO("login of " << user << " to " << db << ": " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT current_user") == user);
}

}  // namespace

TEST_CASE("auth_query: roles outside [users] log in with their PostgreSQL password", "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  Pooler p(lookup_config("scram-sha-256"));
  // SCRAM secret from pg_authid: the client proves it, and pgpivot logs in to the
  // server with the ClientKey the proof revealed.
  require_session_as(p, "aq_scram", "scrampw");
  // Configured users are not looked up.
  require_session_as(p, "app", "app");

  std::string wrong = login_error(p, "aq_scram", "not-it");
  INFO(wrong);
  CHECK(wrong.find("28P01") != std::string::npos);
  CHECK(wrong.find("SASL authentication failed") != std::string::npos);

  // PgBouncer tells an unknown role as much when auth_query found nothing.
  std::string unknown = login_error(p, "aq_nobody", "x");
  INFO(unknown);
  CHECK(unknown.find("28000") != std::string::npos);
  CHECK(unknown.find("no such user") != std::string::npos);
  CHECK(p.log().find("no such user: aq_nobody") != std::string::npos);

  SECTION("an md5 hash from pg_authid: md5 for the client, and for the server") {
    Pooler m(lookup_config("md5"));
    require_session_as(m, "md5user", "md5pass");
    CHECK(login_error(m, "md5user", "wrong").find("password authentication failed") != std::string::npos);
  }
  SECTION("auth_type plain checks the clear-text password against the SCRAM secret and the md5 hash") {
    Pooler pl(lookup_config("plain"));
    Conn c(pl.conninfo("md5user", "md5pass"));
    INFO(c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SELECT current_user") == "md5user");
    // The SCRAM secret verifies the password, but gives no ClientKey for the server.
    std::string e = login_error(pl, "aq_scram", "scrampw");
    CHECK(e.find("wrong password type") != std::string::npos);
    CHECK(login_error(pl, "aq_scram", "scrampw!").find("password authentication failed") != std::string::npos);
    CHECK(login_error(pl, "app", "app").empty());
    CHECK(login_error(pl, "app", "ap").find("password authentication failed") != std::string::npos);
  }
}

TEST_CASE("auth_query follows PostgreSQL: a rotated password and VALID UNTIL take effect at the next login",
          "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  Pooler p(lookup_config("scram-sha-256"));
  Conn held(p.conninfo("aq_scram", "scrampw"));
  REQUIRE(held.ok());

  set_role_password("SET password_encryption = 'scram-sha-256'; ALTER ROLE aq_scram PASSWORD 'rotated'");
  CHECK(login_error(p, "aq_scram", "scrampw").find("SASL authentication failed") != std::string::npos);
  require_session_as(p, "aq_scram", "rotated");
  CHECK(held.value("SELECT 'still served'") == "still served");  // the session it already had

  set_role_password("ALTER ROLE aq_scram VALID UNTIL '1999-01-01'");
  CHECK(login_error(p, "aq_scram", "rotated").find("28P01") != std::string::npos);
  set_role_password("ALTER ROLE aq_scram VALID UNTIL 'infinity'");
  require_session_as(p, "aq_scram", "rotated");

  set_role_password("ALTER ROLE aq_scram NOLOGIN");
  CHECK(login_error(p, "aq_scram", "rotated").find("no such user") != std::string::npos);
  set_role_password("ALTER ROLE aq_scram LOGIN PASSWORD 'scrampw'");
}

TEST_CASE("auth_user and auth_dbname per database; the lookup session gets none of the client's settings",
          "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  PoolerConfig cfg;
  cfg.users = {{"app", "app"}, {"admin", "admin"}, {"aq_lookup", "lookup"}};
  cfg.extra_databases["authsrc"] = "cluster = \"main\"\ndbname = \"appdb\"";
  cfg.extra_databases["guarded"] =
      "cluster = \"main\"\ndbname = \"appdb\"\nauth_user = \"aq_lookup\"\nauth_dbname = \"authsrc\"\n"
      "auth_query = \"SELECT * FROM public.pgpivot_auth_guarded($1)\"";
  Pooler p(cfg);
  // Only "guarded" looks roles up.
  CHECK(login_error(p, "aq_scram", "scrampw").find("28P01") != std::string::npos);
  require_session_as(p, "aq_scram", "scrampw", "guarded");
  // A client asking for application_name 'hostile' would make the lookup fail if
  // pgpivot set it on the lookup's server.
  Conn c(p.conninfo("aq_scram", "scrampw", "guarded") + " application_name=hostile");
  INFO(c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT current_setting('application_name')") == "hostile");

  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result pools = admin.exec("SHOW POOLS");
  bool lookup_pool = false;
  for (int i = 0; i < pools.rows(); ++i)
    lookup_pool = lookup_pool || (pools.value(i, 0) == "authsrc" && pools.value(i, 1) == "aq_lookup");
  CHECK(lookup_pool);  // the lookups ran on (auth_dbname, auth_user)
}

TEST_CASE("auth_query failures: the login is refused, the log says why, everyone else is served", "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  SECTION("the query fails on the server") {
    Pooler p(lookup_config("scram-sha-256", "SELECT usename, passwd FROM no_such_table WHERE usename = $1"));
    std::string e = login_error(p, "aq_scram", "scrampw");
    INFO(e);
    CHECK(e.find("bouncer config error") != std::string::npos);
    CHECK(p.log().find("relation \"no_such_table\" does not exist") != std::string::npos);
    require_session_as(p, "app", "app");
  }
  SECTION("the query answers with the wrong shape") {
    Pooler p(lookup_config("scram-sha-256", "SELECT $1::text AS only_the_name"));
    CHECK(login_error(p, "aq_scram", "scrampw").find("bouncer config error") != std::string::npos);
    CHECK(p.log().find("expected 2 columns from auth_query, not 1") != std::string::npos);
  }
  SECTION("auth_dbname names no configured database") {
    PoolerConfig cfg = lookup_config("scram-sha-256");
    cfg.extra["auth_dbname"] = "\"nowhere\"";
    Pooler p(cfg);
    CHECK(login_error(p, "aq_scram", "scrampw").find("bouncer config error") != std::string::npos);
    CHECK(p.log().find("authentication database \"nowhere\" is not configured") != std::string::npos);
    require_session_as(p, "app", "app");
  }
  SECTION("the auth_user cannot log in to the server") {
    PoolerConfig cfg = lookup_config("scram-sha-256");
    cfg.users["aq_lookup"] = "not-its-password";
    Pooler p(cfg);
    std::string e = login_error(p, "aq_scram", "scrampw");
    INFO(e);
    CHECK(e.find("password authentication failed for user \"aq_lookup\"") != std::string::npos);
    require_session_as(p, "app", "app");
  }
}

TEST_CASE("auth_query under load: logins queue for the lookup pool, and a client that leaves mid-lookup costs nothing",
          "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  PoolerConfig cfg = lookup_config("scram-sha-256", "SELECT * FROM public.pgpivot_auth_slow($1)");
  cfg.extra_databases["authsrc"] = "cluster = \"main\"\ndbname = \"appdb\"\npool_size = 1";
  cfg.extra["auth_dbname"] = "\"authsrc\"";
  Pooler p(cfg);
  // Gives up during its 2 s lookup: the lookup finishes on the server, which goes
  // back to the pool instead of being handed to anyone half-way.
  Conn quitter(p.conninfo("aq_scram", "scrampw") + " connect_timeout=1", 1.5);
  CHECK_FALSE(quitter.ok());

  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&] {
      Conn c(p.conninfo("aq_scram", "scrampw"), 30);
      if (c.ok() && c.value("SELECT current_user") == "aq_scram") ok++;
    });
  }
  for (auto& t : ts) t.join();
  CHECK(ok == 4);  // one lookup server, one lookup at a time: all four got through

  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result servers = admin.exec("SHOW SERVERS");
  int lookup_servers = 0;
  for (int i = 0; i < servers.rows(); ++i)
    if (servers.value(i, 2) == "authsrc" && servers.value(i, 1) == "aq_lookup") lookup_servers++;
  CHECK(lookup_servers == 1);  // pool_size 1 held
  CHECK(p.log().find("BUG") == std::string::npos);
}

TEST_CASE("a server that refuses the login (rotated password) fails the clients waiting for it at once",
          "[authquery]") {
  if (env().use_pgbouncer) return;
  prepare_roles();
  set_role_password("SET password_encryption = 'scram-sha-256'; ALTER ROLE aq_scram PASSWORD 'scrampw'");
  PoolerConfig cfg;
  cfg.users["aq_scram"] = "scrampw";
  cfg.extra["query_wait_timeout"] = "60";
  Pooler p(cfg);
  Conn c(p.conninfo("aq_scram", "scrampw"));
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 1") == "1");
  // The password pgpivot knows is no longer the role's, and its server is gone.
  set_role_password(
      "ALTER ROLE aq_scram PASSWORD 'elsewhere'; "
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'aq_scram'");
  double t0 = now_s();
  std::string err;
  for (int i = 0; i < 3 && err.find("password authentication failed") == std::string::npos; ++i) {
    Result r = c.exec("SELECT 1", 30);
    err = r.ok() ? std::string() : r.message();
  }
  INFO(err);
  CHECK(err.find("password authentication failed for user \"aq_scram\"") != std::string::npos);
  CHECK(now_s() - t0 < 20);  // not query_wait_timeout (60 s)
  set_role_password("ALTER ROLE aq_scram PASSWORD 'scrampw'");
}
