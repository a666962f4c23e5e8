// The pooler as a process: SIGHUP reloads without dropping clients, SIGINT waits
// for transactions in flight, SIGTERM closes at once; the command-line options.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <set>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

struct SleepRun {
  double seconds = 0;
  std::set<std::string> backend_pids;
  bool all_ok = true;
};

// n clients each run a 1 s sleep at the same time.
SleepRun concurrent_sleeps(const Pooler& p, int n) {
  std::vector<Conn> conns;
  for (int i = 0; i < n; ++i) {
    conns.emplace_back(p.conninfo());
    INFO("connection " << i << ": " << conns.back().error());
    REQUIRE(conns.back().ok());
  }
  SleepRun run;
  auto t0 = std::chrono::steady_clock::now();
  for (auto& c : conns) c.send("SELECT pg_backend_pid() FROM pg_sleep(1)");
  for (auto& c : conns) {
    Result r = c.next_result(15);
    if (!r.ok()) {
      UNSCOPED_INFO("sleep query failed: " << r.message());
      run.all_ok = false;
    } else {
      run.backend_pids.insert(r.value());
    }
    c.next_result(5);
  }
  run.seconds = seconds_since(t0);
  return run;
}

}  // namespace

TEST_CASE("SIGHUP raises the pool size without disconnecting clients", "[process]") {
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 2;
  Pooler p(cfg);

  std::vector<Conn> held;
  for (int i = 0; i < 3; ++i) {
    held.emplace_back(p.conninfo());
    REQUIRE(held.back().ok());
    REQUIRE(held.back().value("SELECT 1") == "1");
  }

  SleepRun before = concurrent_sleeps(p, 4);
  INFO("pool 2: 4 x pg_sleep(1) took " << before.seconds << " s on " << before.backend_pids.size()
                                        << " backends");
  REQUIRE(before.all_ok);
  REQUIRE(before.seconds >= 1.9);  // two rounds: the pool really is 2
  REQUIRE(before.backend_pids.size() <= 2);

  cfg.default_pool_size = 4;
  p.reload(cfg);
  sleep_s(1.0);
  REQUIRE(p.running());

  for (auto& c : held) {
    INFO("held connection after reload: " << c.error());
    CHECK(c.value("SELECT 'after reload'") == "after reload");
  }

  SleepRun after = concurrent_sleeps(p, 4);
  INFO("pool 4: 4 x pg_sleep(1) took " << after.seconds << " s on " << after.backend_pids.size()
                                        << " backends");
  CHECK(after.all_ok);
  CHECK(after.seconds < 1.8);
  CHECK(after.backend_pids.size() == 4);
}

TEST_CASE("SIGINT lets a transaction in flight finish, then exits", "[process]") {
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.exec_ok("BEGIN");
  c.send("SELECT pg_sleep(0.5)");
  sleep_s(0.1);
  p.signal(SIGINT);

  Result r = c.next_result(10);
  INFO("in-flight query: " << r.message());
  CHECK(r.ok());
  c.next_result(5);
  Result commit = c.exec("COMMIT");
  INFO("COMMIT: " << commit.message());
  CHECK(commit.ok());
  c.finish();
  CHECK(p.wait_exit(5));
}

TEST_CASE("SIGQUIT closes at once", "[process]") {
  if (env().use_pgbouncer) {
    WARN("PgBouncer 1.18 has no SIGQUIT shutdown: not checked");
    return;
  }
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  c.send("SELECT pg_sleep(10)");
  sleep_s(0.2);
  auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGQUIT);
  CHECK(p.wait_exit(2));
  Result r = c.next_result(5);
  CHECK_FALSE(r.ok());
  CHECK(seconds_since(t0) < 3);
}

TEST_CASE("SIGTERM waits for connected clients (SHUTDOWN WAIT_FOR_CLIENTS)", "[process]") {
  if (env().use_pgbouncer) {
    WARN("PgBouncer 1.18's SIGTERM is immediate: not checked");
    return;
  }
  Pooler p;
  auto c = std::make_unique<Conn>(p.conninfo());
  REQUIRE(c->ok());
  p.signal(SIGTERM);
  sleep_s(0.5);
  // Still running, the connected client is still served ...
  CHECK_FALSE(p.wait_exit(0.1));
  Result r = c->exec("SELECT 41 + 1");
  REQUIRE(r.ok());
  CHECK(r.value() == "42");
  // ... new clients are turned away ...
  Conn late(p.conninfo());
  CHECK_FALSE(late.ok());
  // ... and the pooler exits once the last client leaves.
  c.reset();
  CHECK(p.wait_exit(3));
}

TEST_CASE("command line: --version, --help, --check", "[process][cli]") {
  if (env().use_pgbouncer) {
    WARN("pgpivot-only options: not checked against PgBouncer");
    return;
  }
  const std::string bin = env().pgpivot_bin;

  auto version = run_command(bin + " --version");
  INFO("--version: " << version.output);
  CHECK(version.exit_code == 0);
  CHECK(version.output.find("pgpivot") != std::string::npos);

  auto help = run_command(bin + " --help");
  INFO("--help: " << help.output);
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("--check") != std::string::npos);

  PoolerConfig cfg;
  std::string good = env().scratch + "/cli-good.toml";
  std::ofstream(good) << render_toml(cfg, 16399);
  auto ok = run_command(bin + " --check " + good);
  INFO("--check good: " << ok.output);
  CHECK(ok.exit_code == 0);

  std::string bad = env().scratch + "/cli-bad.toml";
  cfg.extra["pool_mdoe"] = "\"session\"";
  std::ofstream(bad) << render_toml(cfg, 16399);
  auto rejected = run_command(bin + " --check " + bad);
  INFO("--check bad: " << rejected.output);
  CHECK(rejected.exit_code != 0);
  CHECK(rejected.output.find("pool_mdoe") != std::string::npos);
}

TEST_CASE("SIGHUP adds users and databases for new clients", "[process]") {
  Pooler p;
  Conn before(p.conninfo());
  REQUIRE(before.ok());
  Conn refused(p.conninfo("md5user", "md5pass", "postgres"));
  REQUIRE_FALSE(refused.ok());  // no such database in the config yet

  PoolerConfig cfg = p.config();
  cfg.extra_databases["postgres"] = "cluster = \"main\"";
  cfg.users.erase("md5user");
  p.reload(cfg);
  sleep_s(1.0);

  Conn added(p.conninfo("app", "app", "postgres"));
  INFO("new database: " << added.error());
  REQUIRE(added.ok());
  CHECK(added.value("SELECT current_database()") == "postgres");
  Conn removed(p.conninfo("md5user", "md5pass"));
  CHECK_FALSE(removed.ok());  // a user taken out of the config cannot log in any more
  CHECK(before.value("SELECT 'still here'") == "still here");
}
