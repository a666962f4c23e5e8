// Shared by the config loader targets: a private directory with a userlist.txt (so
// that auth_file = "userlist.txt" resolves), and the to_toml() round trip.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "config/load.hpp"
#include "fuzz/fuzz_common.hpp"

namespace fuzz {

namespace config = pgpivot::config;

inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/pgpivot-fuzz-config-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    std::ofstream(tmpl + "/userlist.txt") << "\"app\" \"app\"\n\"admin\" \"md5a1b2c3d4e5f60718293a4b5c6d7e8f90\"\n"
                                             "; comment\n\"scram\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                                             "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                                             "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n";
    return tmpl;
  }();
  return dir;
}

inline void print_errors(const char* what, const config::LoadResult& r) {
  std::fprintf(stderr, "%s: %zu errors, %zu warnings\n", what, r.errors.size(), r.warnings.size());
  for (const auto& e : r.errors) std::fprintf(stderr, "  error: %s\n", e.to_string().c_str());
}

// Whatever loads without errors must be written by to_toml() as TOML that loads
// back (from the same directory) without errors into an equal Config.
inline void check_round_trip(const config::LoadResult& r) {
  for (const auto& e : r.errors) (void)e.to_string();
  for (const auto& w : r.warnings) (void)w.to_string();
  if (!r.ok()) return;
  const std::string toml = config::to_toml(r.config);
  config::LoadResult again = config::load_toml_string(toml, r.config.path);
  if (!again.ok() || !(again.config == r.config)) {
    std::fprintf(stderr, "to_toml() round trip failed (%s); to_toml() wrote:\n%s\n",
                 again.ok() ? "configs differ" : "reload has errors", toml.c_str());
    print_errors("reload", again);
    if (again.ok()) std::fprintf(stderr, "second to_toml():\n%s\n", config::to_toml(again.config).c_str());
    FUZZ_CHECK(again.ok() && again.config == r.config);
  }
}

}  // namespace fuzz
