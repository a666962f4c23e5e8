// Catch2 runner of the integration tests: skips (exit 77, meson's "skipped") when
// the environment of scripts/test is missing, and tracks failures per test case so
// the pooler fixture prints the pooler's log only for failing tests.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "harness.hpp"

namespace {

struct FailureTracker : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const& info) override {
    itest::g_current_test_failed = false;
    TestEventListenerBase::testCaseStarting(info);
  }
  bool assertionEnded(Catch::AssertionStats const& stats) override {
    if (!stats.assertionResult.isOk()) itest::g_current_test_failed = true;
    return TestEventListenerBase::assertionEnded(stats);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(FailureTracker)

int main(int argc, char* argv[]) {
  std::signal(SIGPIPE, SIG_IGN);
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--list", 6) == 0 || std::strcmp(argv[i], "-l") == 0 ||
        std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0)
      listing = true;
  }
  const char* port = std::getenv("PGPIVOT_TEST_PGPORT");
  if (!listing && (!port || !*port)) {
    std::cerr << "test_integration: PGPIVOT_TEST_PGPORT is not set; these tests need the "
                 "PostgreSQL that ./scripts/test starts. Skipping.\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
