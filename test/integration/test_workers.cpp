// workers = N: several reactor threads behind one port. Pool and connection
// limits hold over all of them (counted in PostgreSQL's pg_stat_activity, not
// in pgpivot's own figures), cancel requests reach the worker that owns the
// client, the console and signals see and act on every worker, and Unix-socket
// clients are handed to all workers.
#include <catch2/catch.hpp>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

// Server connections of user app in PostgreSQL right now.
int app_backends(Conn& direct) {
  return std::stoi(direct.value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'"));
}

// Waits until earlier tests' server connections have gone.
void wait_no_app_backends(Conn& direct) {
  REQUIRE(wait_for([&] { return app_backends(direct) == 0; }, 15));
}

// TCP connections the process `pid` has open to PostgreSQL's port, read from the
// kernel (/proc/PID/fd and /proc/net/tcp), not from the pooler's own figures.
int server_sockets(pid_t pid) {
  std::set<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream f(table);
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
      std::istringstream in(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      in >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      auto colon = remote.rfind(':');
      if (colon == std::string::npos || std::stoi(remote.substr(colon + 1), nullptr, 16) != env().pg_port) continue;
      if (st == "01" || st == "02") inodes.insert(inode);  // ESTABLISHED or SYN_SENT
    }
  }
  int n = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    char target[128];
    ssize_t len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (len <= 0) continue;
    std::string t(target, std::size_t(len));
    if (t.rfind("socket:[", 0) == 0 && inodes.count(t.substr(8, t.size() - 9))) n++;
  }
  ::closedir(d);
  return n;
}

struct Highest {
  int sockets = 0;   // pooler's open connections to PostgreSQL (kernel)
  int backends = 0;  // app's backends in pg_stat_activity (a closed one may linger a moment)
};

// Runs pgbench through `p` on a thread while sampling every 10 ms; the highest counts seen.
Highest max_servers_during(const Pooler& p, const std::string& pgbench_args, CommandResult& out) {
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  std::atomic<bool> done{false};
  std::thread bench([&] {
    out = run_pgbench(p, pgbench_args);
    done = true;
  });
  Highest h;
  while (!done) {
    h.sockets = std::max(h.sockets, server_sockets(p.pid()));
    h.backends = std::max(h.backends, app_backends(direct));
    sleep_s(0.01);
  }
  bench.join();
  return h;
}

// CPU time (utime + stime, clock ticks) of each thread of `pid`, by thread id.
std::map<std::string, long> thread_cpu_ticks(pid_t pid) {
  std::map<std::string, long> ticks;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return ticks;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(stat.substr(rp + 2));
    std::string field;
    long ut = 0, st = 0;
    for (int i = 3; i <= 15 && rest >> field; i++) {
      if (i == 14) ut = std::stol(field);
      if (i == 15) st = std::stol(field);
    }
    ticks[e->d_name] = ut + st;
  }
  ::closedir(d);
  return ticks;
}

// Threads that used at least `ticks` of CPU between two readings.
int busy_threads(const std::map<std::string, long>& before, const std::map<std::string, long>& after, long ticks) {
  int busy = 0;
  for (const auto& [tid, t] : after) {
    auto it = before.find(tid);
    if (t - (it == before.end() ? 0 : it->second) >= ticks) busy++;
  }
  return busy;
}

PoolerConfig workers_config(int workers, int pool_size) {
  PoolerConfig cfg;
  cfg.default_pool_size = pool_size;
  cfg.extra["workers"] = std::to_string(workers);
  return cfg;
}

}  // namespace

TEST_CASE("workers: pool_size holds over all workers while both serve pgbench", "[workers]") {
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  wait_no_app_backends(direct);
  Pooler p(workers_config(2, 4));
  auto before = thread_cpu_ticks(p.pid());
  CommandResult out;
  Highest h = max_servers_during(p, "-n -S -c 24 -j 2 -T 4", out);
  INFO(out.output);
  REQUIRE(out.exit_code == 0);
  CHECK(out.output.find("number of failed transactions: 0") != std::string::npos);
  INFO("most server connections open: " << h.sockets << "; most app backends in pg_stat_activity: " << h.backends);
  CHECK(h.sockets <= 4);
  CHECK(h.sockets >= 2);
  CHECK(h.backends <= 5);  // at most one that was just handed from one worker to the other still exiting
  // Both reactor threads did part of the work (SO_REUSEPORT spread the clients).
  CHECK(busy_threads(before, thread_cpu_ticks(p.pid()), 10) >= 2);  // >= 0.1 s of CPU each
}

TEST_CASE("workers: max_db_connections holds over all workers", "[workers]") {
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  wait_no_app_backends(direct);
  PoolerConfig cfg = workers_config(3, 10);
  cfg.extra["max_db_connections"] = "3";
  Pooler p(cfg);
  std::string script = env().scratch + "/workers-sleep.sql";
  {
    std::ofstream f(script);
    f << "SELECT pg_sleep(0.02);\n";
  }
  CommandResult out;
  Highest h = max_servers_during(p, "-n -c 16 -j 2 -T 3 -f " + script, out);
  INFO(out.output);
  REQUIRE(out.exit_code == 0);
  CHECK(out.output.find("number of failed transactions: 0") != std::string::npos);
  INFO("most server connections open: " << h.sockets << "; most app backends in pg_stat_activity: " << h.backends);
  CHECK(h.sockets <= 3);
  CHECK(h.sockets >= 1);
  CHECK(h.backends <= 4);
}

TEST_CASE("workers: every cancel request reaches the client's worker", "[workers]") {
  Pooler p(workers_config(2, 10));
  // Eight clients and eight cancel connections, each placed by the kernel: unless
  // all sixteen land on one worker, some cancels arrive at the other worker.
  std::vector<Conn> conns;
  for (int i = 0; i < 8; i++) {
    conns.emplace_back(p.conninfo());
    REQUIRE(conns.back().ok());
  }
  for (auto& c : conns) c.send("SELECT pg_sleep(30)");
  sleep_s(0.5);
  auto t0 = now_s();
  for (auto& c : conns) {
    PGcancel* cancel = PQgetCancel(c.get());
    REQUIRE(cancel);
    char errbuf[256] = "";
    CHECK(PQcancel(cancel, errbuf, sizeof errbuf) == 1);
    PQfreeCancel(cancel);
  }
  for (auto& c : conns) {
    Result r = c.next_result(10);
    INFO(r.message());
    CHECK(r.sqlstate() == "57014");
    c.next_result(5);
  }
  CHECK(now_s() - t0 < 8);
}

TEST_CASE("workers: the console shows and pauses every worker's clients and servers", "[workers]") {
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  wait_no_app_backends(direct);
  Pooler p(workers_config(2, 20));
  std::vector<Conn> conns;
  for (int i = 0; i < 12; i++) {
    conns.emplace_back(p.conninfo());
    REQUIRE(conns.back().ok());
    conns.back().exec_ok("SELECT 1");
  }
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result pools = admin.exec("SHOW POOLS");
  REQUIRE(pools.ok());
  int app_rows = 0;
  for (int r = 0; r < pools.rows(); r++) {
    if (PQgetvalue(pools.get(), r, 0) != std::string("appdb")) continue;
    app_rows++;
    CHECK(std::stoi(PQgetvalue(pools.get(), r, 2)) == 12);  // cl_active: one row adds up both workers
  }
  CHECK(app_rows == 1);
  Result clients = admin.exec("SHOW CLIENTS");
  REQUIRE(clients.ok());
  int app_clients = 0;
  std::set<std::string> ids;
  for (int r = 0; r < clients.rows(); r++) {
    if (PQgetvalue(clients.get(), r, 2) == std::string("appdb")) app_clients++;
    ids.insert(PQgetvalue(clients.get(), r, PQnfields(clients.get()) - 1));
  }
  CHECK(app_clients == 12);
  CHECK(int(ids.size()) == clients.rows());  // ids are unique over the workers
  Result stats_before = admin.exec("SHOW STATS_TOTALS");
  REQUIRE(stats_before.ok());
  for (auto& c : conns) c.exec_ok("SELECT 2");
  Result stats = admin.exec("SHOW STATS_TOTALS");
  REQUIRE(stats.ok());
  for (int r = 0; r < stats.rows(); r++) {
    if (PQgetvalue(stats.get(), r, 0) != std::string("appdb")) continue;
    long before = 0;
    for (int b = 0; b < stats_before.rows(); b++) {
      if (PQgetvalue(stats_before.get(), b, 0) == std::string("appdb")) before = std::stol(PQgetvalue(stats_before.get(), b, 2));
    }
    CHECK(std::stol(PQgetvalue(stats.get(), r, 2)) - before == 12);  // xact_count over both workers
  }

  // PAUSE answers once no worker holds a server; PostgreSQL then sees none.
  Result pause = admin.exec("PAUSE", 20);
  INFO(pause.message());
  REQUIRE(pause.ok());
  CHECK(wait_for([&] { return app_backends(direct) == 0; }, 5));
  for (auto& c : conns) c.send("SELECT 3");
  sleep_s(0.5);
  for (auto& c : conns) {
    PQconsumeInput(c);
    CHECK(PQisBusy(c) == 1);  // held on every worker
  }
  admin.exec_ok("RESUME");
  for (auto& c : conns) {
    Result r = c.next_result(10);
    INFO(r.message());
    CHECK(r.value() == "3");
    c.next_result(5);
  }
}

TEST_CASE("workers: RELOAD and SIGINT act on every worker", "[workers]") {
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  wait_no_app_backends(direct);
  PoolerConfig cfg = workers_config(2, 10);
  Pooler p(cfg);
  cfg.default_pool_size = 2;
  p.rewrite_config(cfg);
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  admin.exec_ok("RELOAD");
  CommandResult out;
  Highest h = max_servers_during(p, "-n -S -c 12 -j 2 -T 2", out);
  INFO(out.output);
  REQUIRE(out.exit_code == 0);
  INFO("most server connections open: " << h.sockets << "; most app backends in pg_stat_activity: " << h.backends);
  CHECK(h.sockets <= 2);
  CHECK(h.backends <= 3);

  // SIGINT: clients on both workers finish and the process ends.
  std::vector<Conn> conns;
  for (int i = 0; i < 6; i++) {
    conns.emplace_back(p.conninfo());
    REQUIRE(conns.back().ok());
  }
  p.signal(SIGINT);
  CHECK(p.wait_exit(10));
}

TEST_CASE("workers: Unix-socket clients are served by every worker", "[workers]") {
  std::string dir = env().scratch + "/workers-sock";
  run_command("mkdir -p " + dir);
  PoolerConfig cfg = workers_config(2, 5);
  cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
  Pooler p(cfg);
  auto before = thread_cpu_ticks(p.pid());
  std::vector<Conn> conns;
  for (int i = 0; i < 8; i++) {
    conns.emplace_back("host=" + dir + " port=" + std::to_string(p.port()) + " dbname=appdb user=app password=app");
    REQUIRE(conns.back().ok());
  }
  for (int round = 0; round < 1500; round++) {
    for (auto& c : conns) c.exec_ok("SELECT 1");
  }
  for (auto& c : conns) c.finish();
  CHECK(busy_threads(before, thread_cpu_ticks(p.pid()), 3) >= 2);
}

TEST_CASE("workers: a full pool's idle servers move to the worker whose clients need them", "[workers]") {
  // Pool of 3 over 2 workers, 8 clients placed by the kernel: every round puts
  // 3 of them in a transaction at once. Whichever workers they are on, the third
  // BEGIN must get a server (an idle one held by the other worker is handed over)
  // well before query_wait_timeout.
  PoolerConfig cfg = workers_config(2, 3);
  cfg.extra["query_wait_timeout"] = "20";
  Pooler p(cfg);
  std::vector<Conn> conns;
  for (int i = 0; i < 8; i++) {
    conns.emplace_back(p.conninfo());
    REQUIRE(conns.back().ok());
  }
  for (auto& c : conns) c.exec_ok("SELECT 1");  // servers on both workers
  const int picks[][3] = {{0, 1, 2}, {3, 4, 5}, {5, 6, 7}, {0, 3, 6}, {1, 4, 7}, {2, 5, 0}, {7, 6, 1}};
  for (const auto& pick : picks) {
    auto t0 = now_s();
    for (int i : pick) {
      Result r = conns[std::size_t(i)].exec("BEGIN; SELECT 1", 10);
      INFO("client " << i << ": " << r.message());
      REQUIRE(r.ok());
    }
    CHECK(now_s() - t0 < 5);
    for (int i : pick) conns[std::size_t(i)].exec_ok("COMMIT");
  }
}
