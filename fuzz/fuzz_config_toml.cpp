// libFuzzer target: config::load_toml_string on arbitrary text (path: a private
// directory holding a userlist.txt), then the to_toml() round trip on success.
#include <cstdint>

#include "fuzz/fuzz_config_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  const auto r = fuzz::config::load_toml_string(fuzz::as_sv(data, n), fuzz::scratch_dir() + "/pgpivot.toml");
  fuzz::check_round_trip(r);
  return 0;
}
