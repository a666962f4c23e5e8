// libFuzzer target: proto::frame_message over an arbitrary buffer, walking every
// complete frame (as the pooler's read loop does) and running the message parsers
// on each body. Properties: the framer never reads past n, a Header frame has a
// length in [4, max], and Writer rebuilds every complete frame byte for byte.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.hpp"

namespace {

void walk(const std::uint8_t* data, std::size_t n, std::uint32_t max) {
  std::size_t off = 0;
  while (off < n) {
    const std::size_t left = n - off;
    const proto::Frame f = proto::frame_message(data + off, left, max);
    if (f.status == proto::FrameStatus::NeedMore) {
      FUZZ_CHECK(left < proto::kHeaderSize);
      return;
    }
    if (f.status == proto::FrameStatus::Invalid) {
      FUZZ_CHECK(data[off] == 0 || f.length < 4 || f.length > max);
      return;
    }
    FUZZ_CHECK(f.type == char(data[off]) && f.type != 0);
    FUZZ_CHECK(f.length >= 4 && f.length <= max);
    FUZZ_CHECK(f.length == proto::read_u32(data + off + 1));
    FUZZ_CHECK(f.wire_size() == std::size_t(f.length) + 1);
    if (f.wire_size() > left) return;  // body not complete yet
    const std::string_view body = fuzz::as_sv(data + off + proto::kHeaderSize, f.body_size());

    std::string again;
    proto::Writer(again).begin(f.type).bytes(body).end();
    FUZZ_CHECK(again == fuzz::as_sv(data + off, f.wire_size()));

    fuzz::parse_all(body);
    off += f.wire_size();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  (void)proto::frame_message(nullptr, n, 8192);
  walk(data, n, 8192);          // a small max_packet_size
  walk(data, n, 0x7fffffffu);   // the default (2147483647)
  walk(data, n, 0xffffffffu);   // the largest a Frame can carry
  return 0;
}
