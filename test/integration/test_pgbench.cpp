// pgbench through the pooler: many clients on few server connections, simple and
// extended protocol, transaction and session pooling. No transaction may fail.
#include <catch2/catch.hpp>

#include <regex>

#include "harness.hpp"

using namespace itest;

namespace {

long processed(const std::string& output) {
  std::smatch m;
  static const std::regex re("number of transactions actually processed: ([0-9]+)");
  return std::regex_search(output, m, re) ? std::stol(m[1]) : -1;
}

void require_clean_run(const CommandResult& r) {
  INFO("pgbench output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("number of failed transactions: 0 ") != std::string::npos);
  CHECK(processed(r.output) > 0);
}

PoolerConfig pool(const std::string& mode, int size) {
  PoolerConfig cfg;
  cfg.pool_mode = mode;
  cfg.default_pool_size = size;
  cfg.max_client_conn = 500;
  return cfg;
}

}  // namespace

TEST_CASE("pgbench -S with 200 clients on a transaction pool of 5 (simple protocol)", "[pgbench]") {
  Pooler p(pool("transaction", 5));
  require_clean_run(run_pgbench(p, "-n -S -c 200 -j 2 -T 5 -M simple"));
  CHECK(p.running());
}

TEST_CASE("pgbench -S with 200 clients on a transaction pool of 5 (extended protocol)", "[pgbench]") {
  Pooler p(pool("transaction", 5));
  require_clean_run(run_pgbench(p, "-n -S -c 200 -j 2 -T 5 -M extended"));
  CHECK(p.running());
}

TEST_CASE("pgbench read-write (TPC-B like) with 20 clients on a transaction pool of 5", "[pgbench]") {
  Pooler p(pool("transaction", 5));
  require_clean_run(run_pgbench(p, "-n -c 20 -j 2 -T 3"));
  CHECK(p.running());
}

TEST_CASE("pgbench -S with 10 clients on a session pool of 10", "[pgbench]") {
  Pooler p(pool("session", 10));
  require_clean_run(run_pgbench(p, "-n -S -c 10 -j 2 -T 3"));
  CHECK(p.running());
}
