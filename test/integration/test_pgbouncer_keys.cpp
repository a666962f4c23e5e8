// PgBouncer 1.19-1.25 keys that pgpivot acts on: the [pooler] defaults of the
// per-database and per-user client limits, a database's own server_lifetime,
// so_reuseport (two processes on one port, and a restart handing the port over),
// and scram_iterations. The keys pgpivot only stores are covered by the config
// unit tests (test/config/ini_test.cpp).
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

// A second pgpivot process on `p`'s config file (same port), started in the
// background; its pid, or -1.
pid_t start_second(const Pooler& p, const std::string& log) {
  std::string root = ::geteuid() == 0 ? " -u root " : " ";
  CommandResult r = run_command("setsid " + env().pgpivot_bin + root + p.config_path() + " >" + log +
                                " 2>&1 </dev/null & echo $!");
  return r.exit_code == 0 ? pid_t(std::stol(r.output)) : -1;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

std::string file_text(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream o;
  o << f.rdbuf();
  return o.str();
}

}  // namespace

TEST_CASE("max_db_client_connections and max_user_client_connections in [pooler] are the defaults", "[pgbouncer125]") {
  if (env().use_pgbouncer) return;  // Debian's PgBouncer 1.18 has neither key
  PoolerConfig cfg;
  cfg.extra["max_db_client_connections"] = "2";
  cfg.extra_databases["wide"] = "cluster = \"main\"\ndbname = \"appdb\"\nmax_db_client_connections = 0";
  Pooler p(cfg);
  std::vector<Conn> conns;
  for (int i = 0; i < 2; ++i) {
    conns.emplace_back(p.conninfo());
    REQUIRE(conns.back().ok());
  }
  Conn third(p.conninfo());
  INFO("third client of appdb: " << third.error());
  CHECK_FALSE(third.ok());
  CHECK(third.error().find("max_db_client_connections") != std::string::npos);
  // A database's own 0 is "no limit", whatever [pooler] says.
  for (int i = 0; i < 3; ++i) {
    conns.emplace_back(p.conninfo("app", "app", "wide"));
    INFO("client " << i << " of wide: " << conns.back().error());
    CHECK(conns.back().ok());
  }
  conns.clear();

  // The same for users: [pooler]'s limit applies to every user without its own.
  PoolerConfig ucfg;
  ucfg.extra["max_user_client_connections"] = "1";
  Pooler q(ucfg);
  Conn one(q.conninfo());
  REQUIRE(one.ok());
  Conn two(q.conninfo());
  INFO("second client of user app: " << two.error());
  CHECK_FALSE(two.ok());
  CHECK(two.error().find("max_user_client_connections") != std::string::npos);
  Conn other(q.conninfo("md5user", "md5pass"));
  INFO("another user: " << other.error());
  CHECK(other.ok());
  // SHOW USERS / SHOW DATABASES give the limit that applies.
  Conn admin(q.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result users = admin.exec("SHOW USERS");
  REQUIRE(users.ok());
  bool seen = false;
  for (int r = 0; r < users.rows(); ++r) {
    if (users.value(r, 0) != "app") continue;
    seen = true;
    CHECK(users.value(r, 6) == "1");  // max_user_client_connections
  }
  CHECK(seen);
}

TEST_CASE("server_lifetime of a database closes its servers when released, not the others'", "[pgbouncer125]") {
  if (env().use_pgbouncer) return;
  PoolerConfig cfg;
  cfg.default_pool_size = 1;
  cfg.extra["server_lifetime"] = "3600";
  cfg.extra_databases["short"] = "cluster = \"main\"\ndbname = \"appdb\"\nserver_lifetime = 1";
  Pooler p(cfg);
  Conn s(p.conninfo("app", "app", "short"));
  Conn l(p.conninfo());
  REQUIRE(s.ok());
  REQUIRE(l.ok());
  std::string s_pid = s.value("SELECT pg_backend_pid()");
  std::string l_pid = l.value("SELECT pg_backend_pid()");
  sleep_s(1.5);
  // Released after each transaction: the short-lived one was closed at its release
  // past 1 s (or by the janitor), so the next transaction gets a new server.
  s.value("SELECT 1");  // the transaction at whose end it is found too old
  CHECK(s.value("SELECT pg_backend_pid()") != s_pid);
  CHECK(l.value("SELECT pg_backend_pid()") == l_pid);
}

TEST_CASE("so_reuseport: two pgpivot processes share a port; one can leave without refusing clients", "[pgbouncer125]") {
  if (env().use_pgbouncer) return;
  SECTION("without it the second process cannot listen") {
    Pooler p;
    std::string log = env().scratch + "/reuseport-off.log";
    pid_t second = start_second(p, log);
    REQUIRE(second > 0);
    CHECK(wait_for([&] { return !alive(second); }, 10));
    CHECK(file_text(log).find("already in use") != std::string::npos);
  }
  SECTION("with it both accept, and stopping the first leaves the port served") {
    PoolerConfig cfg;
    cfg.extra["so_reuseport"] = "true";
    Pooler p(cfg);
    std::string log = env().scratch + "/reuseport-on.log";
    pid_t second = start_second(p, log);
    REQUIRE(second > 0);
    // The second one listens too: new connections now reach either process.
    REQUIRE(wait_for([&] { return file_text(log).find("listening on") != std::string::npos; }, 10));
    CHECK(alive(second));
    p.signal(SIGTERM);  // the first stops accepting at once and leaves when its clients have
    REQUIRE(p.wait_exit(10));
    int served = 0;
    for (int i = 0; i < 20; ++i) {
      Conn c(p.conninfo());
      if (c.ok() && c.value("SELECT 1") == "1") served++;
    }
    CHECK(served == 20);
    ::kill(second, SIGTERM);
    CHECK(wait_for([&] { return !alive(second); }, 10));
  }
}
