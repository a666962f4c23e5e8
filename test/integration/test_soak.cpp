// Hardening (issue #6), the soak ([soak]): about 60 s of pgbench through pgpivot
// while pgbench processes are killed at random moments (all their connections
// drop, many inside transactions), libpq clients vanish in the middle of
// transactions and queries, and PostgreSQL is restarted once. Afterwards nothing is
// stuck in SHOW POOLS, RSS and open descriptors are back near their baseline, and
// queries are served.
//
// It runs its own PostgreSQL (scripts/lib.sh pg_start_primary) on
// PGPIVOT_TEST_SOAK_PORT (default 61590) under PGPIVOT_TEST_SCRATCH/soak, so that the
// restart does not disturb the PostgreSQL the other tests share.
//
// The helpers it shares with test_hardening_clients.cpp and
// test_hardening_servers.cpp are in hardening_fixture.hpp.
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hardening_fixture.hpp"

namespace {

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

std::string pg_ctl(const std::string& args) { return "runuser -u postgres -- " + kPgBin + "/pg_ctl " + args; }

// A PostgreSQL of its own for the soak, stopped and removed in the destructor.
class SoakPg {
 public:
  SoakPg() {
    port = fixture_port("PGPIVOT_TEST_SOAK_PORT", 61590);
    std::string root = env().scratch;
    if (run_command("runuser -u postgres -- test -x " + sh_quote(root)).exit_code != 0) root = "/tmp/pgpivot-soak-tests";
    ::mkdir(root.c_str(), 0755);
    base = root + "/soak";
    dir = base + "/primary";
    stop();
    run_command("rm -rf " + sh_quote(base));
    ::mkdir(base.c_str(), 0755);
    auto r = run_command("bash -c " + sh_quote("source " + sh_quote(repo_root() + "/scripts/lib.sh") +
                                               " && pg_start_primary " + sh_quote(dir) + " " +
                                               std::to_string(port)));
    if (r.exit_code != 0) throw std::runtime_error("soak PostgreSQL did not start:\n" + r.output);
  }
  ~SoakPg() {
    stop();
    if (!g_current_test_failed) run_command("rm -rf " + sh_quote(base));
    else std::cerr << "[itest] soak PostgreSQL log kept in " << dir << ".log\n";
  }
  SoakPg(const SoakPg&) = delete;
  SoakPg& operator=(const SoakPg&) = delete;

  void stop() {
    if (file_exists(dir + "/postmaster.pid")) run_command(pg_ctl("stop -m immediate -w -D " + sh_quote(dir)));
  }
  CommandResult restart() {
    return run_command(pg_ctl("restart -m fast -w -t 60 -D " + sh_quote(dir) + " -l " + sh_quote(dir + ".log")));
  }

  int port = 0;
  std::string base, dir;
};

// pgbench through the pooler, SIGKILLed after `kill_after_s` unless done before.
CommandResult pgbench_killed_after(const Pooler& p, double kill_after_s, const std::string& args) {
  char t[32];
  std::snprintf(t, sizeof t, "%.1f", kill_after_s);
  return run_command("PGPASSWORD=app PGCONNECT_TIMEOUT=10 timeout -s KILL " + std::string(t) + " " +
                     pg_program("pgbench") + " -h 127.0.0.1 -p " + std::to_string(p.port()) + " -U app " + args +
                     " appdb");
}

}  // namespace

TEST_CASE("soak: pgbench with random client kills and a PostgreSQL restart leaves nothing behind", "[soak]") {
  SoakPg pg;
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 10;
  cfg.max_client_conn = 500;
  cfg.main_cluster = "primary = { host = \"127.0.0.1\", port = " + std::to_string(pg.port) + " }";
  cfg.extra["server_login_retry"] = "1";  // back quickly after the restart
  cfg.extra["query_wait_timeout"] = "20";
  Pooler p(cfg);

  // Warm up to the steady state (all pool servers open, buffers allocated), then the baseline.
  {
    auto r = run_pgbench(p, "-n -c 20 -j 2 -T 3");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  sleep_s(1);
  const long rss0 = private_kb(p.pid());
  const int fds0 = open_fds(p.pid());
  REQUIRE(rss0 > 0);
  REQUIRE(fds0 > 0);

  const double kDuration = 50;
  const double t0 = now_s();
  std::atomic<bool> done{false};
  std::atomic<int> pgbench_runs{0}, drops{0}, drop_errors{0};
  std::vector<std::thread> threads;
  // Two pgbench streams (read-write and select-only, simple and extended protocol),
  // each run killed after a random 1.5..6 s.
  for (int k = 0; k < 2; k++) {
    threads.emplace_back([&, k] {
      std::mt19937 rng(1234 + k);
      std::uniform_real_distribution<double> d(1.5, 6.0);
      while (!done && now_s() - t0 < kDuration) {
        pgbench_killed_after(p, d(rng), k == 0 ? "-n -c 16 -j 2 -T 30 -M simple" : "-n -S -c 24 -j 2 -T 30 -M extended");
        pgbench_runs++;
      }
    });
  }
  // libpq clients that vanish: inside a transaction, with a query in flight, or
  // with a reset socket. (Three of them: each waits in the busy pool's queue for
  // every statement, so how many drops one thread manages depends on the load.)
  for (int k = 0; k < 3; k++) threads.emplace_back([&, k] {
    std::mt19937 rng(99 + k);
    while (!done && now_s() - t0 < kDuration) {
      Conn c(p.conninfo(), 10);
      if (!c.ok()) {
        drop_errors++;
        sleep_s(0.2);
        continue;
      }
      Result b = c.exec("BEGIN", 10);
      // A random account row: pgbench's branch and teller rows would make this wait for locks.
      Result u = c.exec("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = " +
                            std::to_string(1 + rng() % 100000), 10);
      if (!b.ok() || !u.ok()) drop_errors++;
      switch (rng() % 3) {
        case 0:
          break;  // just gone, transaction open
        case 1:
          PQsendQuery(c, "SELECT pg_sleep(0.5)");  // gone with a query in flight
          PQflush(c);
          sleep_s(0.05);
          break;
        case 2: {
          linger l{1, 0};  // RST instead of FIN
          ::setsockopt(PQsocket(c), SOL_SOCKET, SO_LINGER, &l, sizeof l);
          ::shutdown(PQsocket(c), SHUT_RDWR);
          break;
        }
      }
      drops++;
      sleep_s(0.02);
    }
  });

  // One PostgreSQL restart in the middle.
  sleep_s(kDuration / 2);
  CommandResult restart = pg.restart();
  double restarted_at = now_s() - t0;
  while (now_s() - t0 < kDuration) sleep_s(0.2);
  done = true;
  for (auto& t : threads) t.join();
  INFO("PostgreSQL restarted at " << restarted_at << " s: " << restart.output);
  REQUIRE(restart.exit_code == 0);
  INFO(pgbench_runs << " pgbench runs (each killed or finished), " << drops << " dropped libpq clients ("
                    << drop_errors << " of them failed before dropping)");
  CHECK(pgbench_runs >= 6);
  CHECK(drops >= 10);

  // Nothing stuck: the pool drains once the clients are gone.
  std::map<std::string, std::string> row;
  bool drained = wait_for([&] {
    row = pool_row(p, "appdb");
    return !row.empty() && as_int(row, "cl_active") == 0 && as_int(row, "cl_waiting") == 0 &&
           as_int(row, "sv_active") == 0 && as_int(row, "sv_login") == 0;
  }, 30, 0.5);
  INFO("SHOW POOLS appdb: " << row_text(row));
  CHECK(drained);

  // Still serving.
  std::string last_error;
  bool serving = wait_for([&] {
    Conn c(p.conninfo(), 5);
    if (!c.ok()) {
      last_error = c.error();
      return false;
    }
    Result r = c.exec("SELECT count(*) FROM pgbench_branches", 10);
    last_error = r.ok() ? "" : r.message();
    return r.ok() && r.value() == "1";
  }, 20, 0.5);
  INFO("last error: " << last_error);
  CHECK(serving);
  {
    auto r = run_pgbench(p, "-n -c 10 -j 2 -T 2");
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }

  // Memory and descriptors back near the baseline (the pool may hold up to
  // default_pool_size idle servers either way).
  sleep_s(1);
  const long rss1 = private_kb(p.pid());
  const int fds1 = open_fds(p.pid());
  INFO("private memory " << rss0 << " KiB -> " << rss1 << " KiB; open descriptors " << fds0 << " -> " << fds1);
  if (!kSanitizedBuild) CHECK(rss1 - rss0 < 16 * 1024);
  CHECK(fds1 <= fds0 + cfg.default_pool_size);
  REQUIRE(p.running());
}
