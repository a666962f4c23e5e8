// Tests for header framing, Reader and Writer.
#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

using namespace pgpivot::proto;
using pgpivot::proto::test::kTestMax;
using pgpivot::proto::test::to_bytes;

namespace {
std::string typed(char type, std::uint32_t len) {
  std::string s(1, type);
  s += char(len >> 24);
  s += char((len >> 16) & 0xff);
  s += char((len >> 8) & 0xff);
  s += char(len & 0xff);
  return s;
}
std::string untyped(std::uint32_t len, std::uint32_t code) { return typed('x', len).substr(1) + typed('x', code).substr(1); }
}  // namespace

TEST_CASE("frame_message: NeedMore below the header, lengths validated") {
  auto b = to_bytes(typed('Q', 4));
  for (std::size_t n = 0; n < kHeaderSize; ++n) CHECK(frame_message(b.data(), n, kTestMax).status == FrameStatus::NeedMore);
  CHECK(frame_message(nullptr, 0, kTestMax).status == FrameStatus::NeedMore);

  Frame f = frame_message(b.data(), b.size(), kTestMax);
  CHECK(f.status == FrameStatus::Header);
  CHECK(f.type == 'Q');
  CHECK(f.length == 4);
  CHECK(f.body_size() == 0);
  CHECK(f.wire_size() == 5);

  for (std::uint32_t len : {0u, 1u, 2u, 3u}) {
    auto bad = to_bytes(typed('Q', len));
    CHECK(frame_message(bad.data(), bad.size(), kTestMax).status == FrameStatus::Invalid);
  }
  auto at_max = to_bytes(typed('D', 8192));
  CHECK(frame_message(at_max.data(), at_max.size(), 8192).status == FrameStatus::Header);
  auto over = to_bytes(typed('D', 8193));
  CHECK(frame_message(over.data(), over.size(), 8192).status == FrameStatus::Invalid);
  auto huge = to_bytes(typed('D', 0xffffffffu));
  CHECK(frame_message(huge.data(), huge.size(), kTestMax).status == FrameStatus::Invalid);
  // Type byte 0 would be confused with an untyped packet (wire_size), so it is refused.
  auto zero = to_bytes(typed('\0', 4));
  CHECK(frame_message(zero.data(), zero.size(), kTestMax).status == FrameStatus::Invalid);
}

TEST_CASE("frame_startup: NeedMore below 4 bytes, length 8..max") {
  auto b = to_bytes(untyped(8, kSSLRequestCode));
  for (std::size_t n = 0; n < 4; ++n) CHECK(frame_startup(b.data(), n).status == FrameStatus::NeedMore);
  Frame f = frame_startup(b.data(), b.size());
  CHECK(f.status == FrameStatus::Header);
  CHECK(f.type == 0);
  CHECK(f.length == 8);
  CHECK(f.wire_size() == 8);

  for (std::uint32_t len : {0u, 3u, 4u, 7u}) {
    auto bad = to_bytes(untyped(len, kProtocol30));
    CHECK(frame_startup(bad.data(), bad.size()).status == FrameStatus::Invalid);
  }
  auto at_max = to_bytes(untyped(10000, kProtocol30));
  CHECK(frame_startup(at_max.data(), 4).status == FrameStatus::Header);
  auto over = to_bytes(untyped(10001, kProtocol30));
  CHECK(frame_startup(over.data(), 4).status == FrameStatus::Invalid);
  CHECK(frame_startup(over.data(), 4, 20000).status == FrameStatus::Header);
  auto custom = to_bytes(untyped(100, kProtocol30));
  CHECK(frame_startup(custom.data(), 4, 99).status == FrameStatus::Invalid);
}

TEST_CASE("two messages in one buffer are framed one after the other") {
  std::string wire;
  parameter_status(wire, "client_encoding", "UTF8");
  const std::size_t first = wire.size();
  ready_for_query(wire, 'I');
  auto b = to_bytes(wire);

  Frame f1 = frame_message(b.data(), b.size(), kTestMax);
  REQUIRE(f1.status == FrameStatus::Header);
  CHECK(f1.type == 'S');
  REQUIRE(f1.wire_size() == first);
  auto ps = parse_parameter_status(std::string_view(wire).substr(kHeaderSize, f1.body_size()));
  REQUIRE(ps);
  CHECK(ps->name == "client_encoding");
  CHECK(ps->value == "UTF8");

  Frame f2 = frame_message(b.data() + first, b.size() - first, kTestMax);
  REQUIRE(f2.status == FrameStatus::Header);
  CHECK(f2.type == 'Z');
  CHECK(f2.body_size() == 1);
  CHECK(first + f2.wire_size() == b.size());
  CHECK(wire[first + kHeaderSize] == 'I');

  // Startup-style: an SSLRequest followed by a StartupMessage in the same read.
  std::string s;
  ssl_request(s);
  startup_message(s, {{"user", "bob"}});
  auto sb = to_bytes(s);
  Frame g1 = frame_startup(sb.data(), sb.size());
  REQUIRE(g1.status == FrameStatus::Header);
  REQUIRE(g1.wire_size() == 8);
  CHECK(parse_startup(sb.data(), g1.wire_size()).kind == StartupKind::SSLRequest);
  Frame g2 = frame_startup(sb.data() + 8, sb.size() - 8);
  REQUIRE(g2.status == FrameStatus::Header);
  REQUIRE(8 + g2.wire_size() == sb.size());
  auto pkt = parse_startup(sb.data() + 8, g2.wire_size());
  CHECK(pkt.kind == StartupKind::Startup);
  REQUIRE(pkt.get("user"));
  CHECK(*pkt.get("user") == "bob");
}

TEST_CASE("Reader reads values and never past the end") {
  const std::string data = pgpivot::proto::test::from_hex("01 0203 04050607 fffffffe 6869 00 7a");
  Reader r(data);
  CHECK(r.u8() == std::optional<std::uint8_t>(1));
  CHECK(r.u16() == std::optional<std::uint16_t>(0x0203));
  CHECK(r.u32() == std::optional<std::uint32_t>(0x04050607));
  CHECK(r.i32() == std::optional<std::int32_t>(-2));
  auto s = r.cstr();
  REQUIRE(s);
  CHECK(*s == "hi");
  CHECK(r.remaining() == 1);
  CHECK(r.rest() == "z");
  CHECK_FALSE(r.cstr());  // no terminator
  CHECK(r.failed());
  CHECK_FALSE(r.u8());  // stays failed

  Reader r2(data);
  CHECK_FALSE(r2.bytes(data.size() + 1));
  CHECK(r2.failed());
  Reader r3(data);
  auto all = r3.bytes(data.size());
  REQUIRE(all);
  CHECK(*all == data);
  CHECK(r3.at_end());
  CHECK_FALSE(r3.u8());
  Reader r4(std::string_view("\x01\x02\x03", 3));
  CHECK_FALSE(r4.u32());
  Reader r5(std::string_view("\x01", 1));
  CHECK_FALSE(r5.u16());
  Reader empty(nullptr, 0);
  CHECK(empty.at_end());
  CHECK_FALSE(empty.cstr());
}

TEST_CASE("Writer patches lengths of typed and untyped messages") {
  std::string out = "prefix";
  Writer w(out);
  w.begin('X').u8(1).u16(0x0203).u32(0x04050607).i32(-1).cstr("ab").bytes("cd").end();
  CHECK(out == "prefix" + pgpivot::proto::test::from_hex("58 00000014 01 0203 04050607 ffffffff 616200 6364"));
  std::string u;
  Writer(u).begin_untyped().u32(kSSLRequestCode).end();
  CHECK(u == pgpivot::proto::test::from_hex("00000008 04d2162f"));
}
