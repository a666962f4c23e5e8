// Replication connections through the pooler (PgBouncer 1.23+): replication=database
// and physical streaming with pg_receivewal, each on a server of its own that goes
// with its client, within pool_size, refused logins reaching only their client.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "harness.hpp"

using namespace itest;

namespace {

PoolerConfig replication_config() {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.pool_mode = "statement";
  cfg.default_pool_size = 2;
  cfg.users = {{"app", "app"}, {"admin", "admin"}, {"postgres", ""}};
  cfg.extra_databases["replication"] = "cluster = \"main\"";
  // Small socket buffers: the stream must not stall on them.
  cfg.extra["tcp_socket_buffer"] = "4096";
  return cfg;
}

// Backends of `user` that pgpivot opened for walsenders (backend_type walsender).
int walsenders(const std::string& user) {
  Conn pg(direct_conninfo("postgres"));
  return std::stoi(pg.value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND usename = '" +
                            user + "'"));
}

}  // namespace

TEST_CASE("replication=database: its own server with the client's options, gone with the client", "[replication]") {
  if (env().use_pgbouncer) return;
  Pooler p(replication_config());
  {
    Conn c(p.conninfo("postgres", "", "appdb") +
           " replication=database application_name=abc options='-c enable_seqscan=off'");
    INFO(c.error());
    REQUIRE(c.ok());
    Result ident = c.exec("IDENTIFY_SYSTEM");
    INFO(ident.message());
    REQUIRE(ident.ok());
    CHECK(ident.value(0, 0).size() > 10);  // the system identifier
    CHECK(c.value("SHOW application_name") == "abc");
    CHECK(c.value("SHOW enable_seqscan") == "off");
    CHECK(walsenders("postgres") == 1);
    // A normal client of the same pool is served beside it, on another server.
    Conn normal(p.conninfo("postgres", "", "appdb"));
    REQUIRE(normal.ok());
    CHECK(normal.value("SHOW enable_seqscan") == "on");
    CHECK(c.value("SELECT 'repl still there'") == "repl still there");
  }
  CHECK(wait_for([] { return walsenders("postgres") == 0; }, 10));
}

TEST_CASE("replication connections count in pool_size, evict idle servers, and wait for a slot", "[replication]") {
  if (env().use_pgbouncer) return;
  PoolerConfig cfg = replication_config();
  cfg.default_pool_size = 1;
  Pooler p(cfg);
  {
    Conn normal(p.conninfo("postgres", "", "appdb"));
    REQUIRE(normal.ok());
    CHECK(normal.value("SELECT 1") == "1");  // its server is idle now (statement mode)
  }
  Conn first(p.conninfo("postgres", "", "appdb") + " replication=database");
  INFO(first.error());
  REQUIRE(first.ok());
  CHECK(p.log().find("closing because: evicted") != std::string::npos);
  // A second one waits for the only slot...
  double t0 = now_s();
  std::thread closer([&] {
    sleep_s(1.5);
    first.finish();
  });
  Conn second(p.conninfo("postgres", "", "appdb") + " replication=database", 20);
  closer.join();
  INFO(second.error());
  REQUIRE(second.ok());
  CHECK(now_s() - t0 >= 1.2);  // ... until the first one left
  CHECK(second.exec("IDENTIFY_SYSTEM").ok());
}

TEST_CASE("a role without REPLICATION: its login fails alone, the pool's other clients are served", "[replication]") {
  if (env().use_pgbouncer) return;
  PoolerConfig cfg = replication_config();
  cfg.auth_type = "scram-sha-256";
  Pooler p(cfg);
  Conn repl(p.conninfo("app", "app", "appdb") + " replication=database");
  REQUIRE_FALSE(repl.ok());
  INFO(repl.error());
  CHECK(repl.error().find("login failed") != std::string::npos);
  CHECK(p.log().find("must be superuser or replication role") != std::string::npos);
  // server_login_retry was not armed by it: the same pool logs in at once.
  Conn normal(p.conninfo("app", "app", "appdb"));
  INFO(normal.error());
  REQUIRE(normal.ok());
  CHECK(normal.value("SELECT current_user") == "app");
  Conn bad(p.conninfo("app", "app", "appdb") + " replication=sometimes");
  CHECK(bad.error().find("invalid value for parameter \"replication\"") != std::string::npos);
}

TEST_CASE("physical replication: pg_receivewal streams through the pooler and stops cleanly", "[replication]") {
  if (env().use_pgbouncer) return;
  Pooler p(replication_config());
  std::string dir = env().scratch + "/receivewal-" + std::to_string(p.port());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  run_command("chmod 777 " + dir);
  {
    Conn pg(direct_conninfo("postgres"));
    pg.exec("SELECT pg_drop_replication_slot('pgpivot_itest_slot')");
    REQUIRE(pg.exec("SELECT pg_create_physical_replication_slot('pgpivot_itest_slot')").ok());
  }
  std::string bin = env().pg_bin + "/pg_receivewal";
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string conninfo = "host=127.0.0.1 port=" + std::to_string(p.port()) + " user=postgres dbname=appdb";
    ::execl(bin.c_str(), "pg_receivewal", "--dbname", conninfo.c_str(), "--slot=pgpivot_itest_slot", "--directory",
            dir.c_str(), "--no-loop", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  sleep_s(2.5);
  CHECK(walsenders("postgres") == 1);
  ::kill(pid, SIGINT);
  int status = 0;
  bool exited = wait_for([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 15);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  CHECK(exited);  // the stop reached the server through pgpivot, and its answer came back
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.path().filename().string().size() >= 24;
  CHECK(files >= 1);  // a WAL segment (".partial") was written
  CHECK(wait_for([] { return walsenders("postgres") == 0; }, 10));
  Conn pg(direct_conninfo("postgres"));
  pg.exec("SELECT pg_drop_replication_slot('pgpivot_itest_slot')");
}
