// libFuzzer target: config::load_ini_string (an unmodified pgbouncer.ini) on
// arbitrary text (path: a private directory holding a userlist.txt), then the
// to_toml() round trip on success (what `pgpivot --convert` relies on).
#include <cstdint>

#include "fuzz/fuzz_config_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  const auto r = fuzz::config::load_ini_string(fuzz::as_sv(data, n), fuzz::scratch_dir() + "/pgbouncer.ini");
  fuzz::check_round_trip(r);
  return 0;
}
