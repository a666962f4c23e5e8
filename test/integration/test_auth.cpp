// Client authentication through the pooler: each auth_type, server-side md5,
// refusals that do not reveal which users exist, unknown databases.
#include <catch2/catch.hpp>

#include <fstream>

#include "harness.hpp"

using namespace itest;

namespace {

PoolerConfig with_auth(const std::string& auth_type) {
  PoolerConfig cfg;
  cfg.auth_type = auth_type;
  return cfg;
}

void require_logged_in_as(const Pooler& p, const std::string& user, const std::string& password) {
  Conn c(p.conninfo(user, password));
  INFO("connection error: " << c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT current_user") == user);
  CHECK(c.value("SELECT current_database()") == "appdb");
}

}  // namespace

TEST_CASE("scram-sha-256 clients log in", "[auth]") {
  Pooler p(with_auth("scram-sha-256"));
  require_logged_in_as(p, "app", "app");
  SECTION("psql logs in too") {
    auto r = run_psql(p, "SELECT 'psql-ok'");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("psql-ok") != std::string::npos);
  }
}

TEST_CASE("md5 clients log in", "[auth]") {
  Pooler p(with_auth("md5"));
  require_logged_in_as(p, "app", "app");
}

TEST_CASE("trust clients log in without a password", "[auth]") {
  Pooler p(with_auth("trust"));
  require_logged_in_as(p, "app", "");
}

TEST_CASE("a user whose server-side password is md5 works through the pooler", "[auth]") {
  SECTION("clients use scram-sha-256") {
    Pooler p(with_auth("scram-sha-256"));
    require_logged_in_as(p, "md5user", "md5pass");
  }
  SECTION("clients use md5") {
    Pooler p(with_auth("md5"));
    require_logged_in_as(p, "md5user", "md5pass");
  }
}

TEST_CASE("wrong password and unknown user are refused identically", "[auth]") {
  std::string auth_type = GENERATE(std::string("scram-sha-256"), std::string("md5"));
  INFO("auth_type = " << auth_type);
  Pooler p(with_auth(auth_type));

  Conn wrong_password(p.conninfo("app", "not-the-password"));
  Conn unknown_user(p.conninfo("no_such_user", "not-the-password"));
  REQUIRE_FALSE(wrong_password.ok());
  REQUIRE_FALSE(unknown_user.ok());

  std::string a = wrong_password.error();
  std::string b = unknown_user.error();
  INFO("wrong password: " << a);
  INFO("unknown user:   " << b);
  CHECK(a.find("28P01") != std::string::npos);
  CHECK(b.find("28P01") != std::string::npos);
  CHECK(replace_all(a, "\"app\"", "\"<user>\"") == replace_all(b, "\"no_such_user\"", "\"<user>\""));
}

TEST_CASE("an unknown database is refused with an error naming it", "[auth]") {
  Pooler p;
  Conn c(p.conninfo("app", "app", "no_such_db"));
  REQUIRE_FALSE(c.ok());
  INFO("error: " << c.error());
  CHECK(c.error().find("no_such_db") != std::string::npos);
  CHECK(c.error().find("3D000") != std::string::npos);
}

// PgBouncer's rule for trust: the user must be known -- listed in auth_file (an
// empty password will do) or given a password -- and a [users] entry carrying
// only settings does not make it known. A forced-user database lets users that
// are not PostgreSQL roles log in.
TEST_CASE("trust needs a known user: auth_file or a password, even \"\", yes; [users] settings alone, no", "[auth]") {
  if (env().use_pgbouncer) return;  // the harness writes TOML [users] with passwords for PgBouncer
  std::string file = env().scratch + "/trust-userlist.txt";
  {
    std::ofstream out(file);
    out << "\"filed\" \"\"\n";
  }
  PoolerConfig cfg = with_auth("trust");
  cfg.extra["auth_file"] = "\"" + file + "\"";
  cfg.extra_databases["forced"] = "cluster = \"main\"\ndbname = \"appdb\"\nuser = \"app\"\npassword = \"app\"";
  cfg.users["empty_pw"] = "";  // password = "": TOML's form of an auth_file line with ""
  cfg.extra_toml = "\n[users.settings_only]\npool_size = 2\n";  // settings, no password
  Pooler p(cfg);
  Conn empty_pw(p.conninfo("empty_pw", "", "forced"));
  INFO("[users] password = \"\": " << empty_pw.error());
  CHECK(empty_pw.ok());
  Conn filed(p.conninfo("filed", "", "forced"));
  INFO("auth_file user with an empty password: " << filed.error());
  REQUIRE(filed.ok());
  CHECK(filed.value("SELECT current_user") == "app");
  Conn settings_only(p.conninfo("settings_only", "", "forced"));
  CHECK_FALSE(settings_only.ok());
  CHECK(settings_only.error().find("\"trust\" authentication failed") != std::string::npos);
  Conn unknown(p.conninfo("nobody_at_all", "", "forced"));
  CHECK_FALSE(unknown.ok());
  CHECK(unknown.error().find("\"trust\" authentication failed") != std::string::npos);
  require_logged_in_as(p, "app", "");  // a [users] password makes a user known
}
