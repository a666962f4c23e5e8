// libFuzzer target: the pre-authentication packets. proto::frame_startup on the
// buffer, then parse_startup on the framed packet (and, as the pooler never does,
// on lengths that disagree with the length field). A parsed StartupMessage must
// name a non-empty user and a database, hold unique valid-UTF-8 names, and
// survive a round trip through proto::startup_message.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.hpp"
#include "protocol/startup.hpp"

namespace {

void check(const proto::StartupPacket& p, const std::uint8_t* data, std::size_t n) {
  switch (p.kind) {
    case proto::StartupKind::Startup: {
      FUZZ_CHECK(p.version >> 16 == 3);
      const std::string* user = p.get("user");
      FUZZ_CHECK(user != nullptr && !user->empty());
      const std::string* db = p.get("database");
      FUZZ_CHECK(db != nullptr && !db->empty());
      for (std::size_t i = 0; i < p.params.size(); ++i) {
        FUZZ_CHECK(!p.params[i].first.empty());
        for (std::size_t j = i + 1; j < p.params.size(); ++j)
          FUZZ_CHECK(p.params[i].first != p.params[j].first);
      }
      std::string out;
      proto::startup_message(out, p.params);
      if (out.size() <= proto::kMaxStartupPacket) {
        const auto* q = reinterpret_cast<const std::uint8_t*>(out.data());
        const proto::Frame f = proto::frame_startup(q, out.size());
        FUZZ_CHECK(f.status == proto::FrameStatus::Header && f.length == out.size());
        const proto::StartupPacket again = proto::parse_startup(q, out.size());
        FUZZ_CHECK(again.kind == proto::StartupKind::Startup);
        FUZZ_CHECK(again.params == p.params);
      }
      break;
    }
    case proto::StartupKind::CancelRequest:
      FUZZ_CHECK(n == 16);
      FUZZ_CHECK(p.cancel_pid == proto::read_u32(data + 8) && p.cancel_key == proto::read_u32(data + 12));
      break;
    case proto::StartupKind::SSLRequest:
    case proto::StartupKind::GSSENCRequest:
      FUZZ_CHECK(n == 8);
      break;
    case proto::StartupKind::BadVersion:
      FUZZ_CHECK(p.version >> 16 != 3 && !p.error.empty());
      break;
    case proto::StartupKind::Invalid:
      FUZZ_CHECK(!p.error.empty());
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  const proto::Frame f = proto::frame_startup(data, n);
  if (f.status == proto::FrameStatus::NeedMore) FUZZ_CHECK(n < 4);
  if (f.status == proto::FrameStatus::Header) {
    FUZZ_CHECK(f.length >= 8 && f.length <= proto::kMaxStartupPacket && f.type == 0);
    FUZZ_CHECK(f.wire_size() == f.length);
    if (f.length <= n) check(proto::parse_startup(data, f.length), data, f.length);
  }
  // Whole buffer, whatever its length field says (the parser must check it itself).
  const proto::StartupPacket whole = proto::parse_startup(data, n);
  check(whole, data, n);
  if (n < 8 || n > proto::kMaxStartupPacket || proto::read_u32(data) != n)
    FUZZ_CHECK(whole.kind == proto::StartupKind::Invalid);
  // And the packet that the input would be if a client sent it as a parameter list.
  std::string pkt;
  proto::Writer w(pkt);
  w.begin_untyped().u32(proto::kProtocol30).bytes(fuzz::as_sv(data, n)).end();
  if (pkt.size() <= proto::kMaxStartupPacket)
    check(proto::parse_startup(reinterpret_cast<const std::uint8_t*>(pkt.data()), pkt.size()),
          reinterpret_cast<const std::uint8_t*>(pkt.data()), pkt.size());
  return 0;
}
