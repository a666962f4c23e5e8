// libFuzzer target: the parsers of protocol/messages.hpp (parse_auth_request,
// parse_parameter_status, parse_backend_key_data, parse_error_response,
// parse_password_message, parse_sasl_initial_response, parse_query, parse_parse)
// on an arbitrary body, plus the Reader getters. Whatever a parser accepts must
// survive a round trip through the matching builder.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  fuzz::parse_all(fuzz::as_sv(data, n));

  // The Reader used by every parser: drive its getters with the input's own bytes.
  proto::Reader r(data, n);
  std::size_t steps = 0;
  while (!r.failed() && !r.at_end() && steps++ < 64) {
    const std::size_t before = r.remaining();
    auto op = r.u8();
    if (!op) break;
    switch (*op % 6) {
      case 0: (void)r.u16(); break;
      case 1: (void)r.u32(); break;
      case 2: (void)r.i32(); break;
      case 3: {
        auto s = r.cstr();
        if (s) FUZZ_CHECK(s->find('\0') == std::string_view::npos);
        break;
      }
      case 4: {
        auto len = r.u8();
        if (len) {
          auto b = r.bytes(*len);
          if (b) FUZZ_CHECK(b->size() == *len);
        }
        break;
      }
      default: (void)r.rest(); break;
    }
    FUZZ_CHECK(r.remaining() < before);
    FUZZ_CHECK(r.rest().size() == r.remaining());
  }
  return 0;
}
