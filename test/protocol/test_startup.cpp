// Tests for parse_startup: StartupMessage rules, special requests, split feeding and fuzzing.
#include <catch2/catch.hpp>

#include <random>

#include "helpers.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"

using namespace pgpivot::proto;
using namespace std::string_literals;
using pgpivot::proto::test::split_startup;
using pgpivot::proto::test::to_bytes;

namespace {

// Builds a startup-style packet from a raw body (code + params), fixing the length.
std::string packet(std::uint32_t code, std::string_view params) {
  std::string out;
  Writer(out).begin_untyped().u32(code).bytes(params).end();
  return out;
}

StartupPacket parse(const std::string& wire) {
  auto b = to_bytes(wire);
  return parse_startup(b.data(), b.size());
}

bool valid_kind(StartupKind k) {
  switch (k) {
    case StartupKind::Startup:
    case StartupKind::SSLRequest:
    case StartupKind::GSSENCRequest:
    case StartupKind::CancelRequest:
    case StartupKind::BadVersion:
    case StartupKind::Invalid:
      return true;
  }
  return false;
}

void check_sane(const StartupPacket& p) {
  REQUIRE(valid_kind(p.kind));
  if (p.kind == StartupKind::Invalid) REQUIRE_FALSE(p.error.empty());
  if (p.kind == StartupKind::Startup) {
    REQUIRE(p.get("user"));
    REQUIRE_FALSE(p.get("user")->empty());
    REQUIRE(p.get("database"));
    REQUIRE_FALSE(p.get("database")->empty());
  }
}

}  // namespace

TEST_CASE("startup 3.0 with params, split at every byte offset") {
  std::string wire;
  startup_message(wire, {{"user", "alice"}, {"database", "shop"}, {"application_name", "psql"}});
  split_startup(wire, [](const StartupPacket& p) {
    REQUIRE(p.kind == StartupKind::Startup);
    CHECK(p.version == kProtocol30);
    REQUIRE(p.params.size() == 3);
    CHECK(p.params[0] == std::pair<std::string, std::string>("user", "alice"));
    CHECK(p.params[1] == std::pair<std::string, std::string>("database", "shop"));
    CHECK(p.params[2] == std::pair<std::string, std::string>("application_name", "psql"));
    CHECK(p.error.empty());
  });
}

TEST_CASE("startup: database defaults to user") {
  auto p = parse(packet(kProtocol30, "user\0bob\0\0"s));
  REQUIRE(p.kind == StartupKind::Startup);
  REQUIRE(p.get("database"));
  CHECK(*p.get("database") == "bob");
  CHECK(p.params.size() == 2);

  auto e = parse(packet(kProtocol30, "database\0\0user\0bob\0\0"s));
  REQUIRE(e.kind == StartupKind::Startup);
  CHECK(*e.get("database") == "bob");
  CHECK(e.params.size() == 2);
  CHECK(e.get("nonexistent") == nullptr);
}

TEST_CASE("startup: minor versions 3.x parse as Startup") {
  auto p = parse(packet(kProtocol30 + 2, "user\0u\0\0"s));
  CHECK(p.kind == StartupKind::Startup);
  CHECK(p.version == (3u << 16 | 2u));
}

TEST_CASE("startup: malformed packets are Invalid with a message") {
  SECTION("missing user") {
    auto p = parse(packet(kProtocol30, "database\0d\0\0"s));
    CHECK(p.kind == StartupKind::Invalid);
    CHECK(p.error == "no PostgreSQL user name specified in startup packet");
  }
  SECTION("empty user") {
    auto p = parse(packet(kProtocol30, "user\0\0\0"s));
    CHECK(p.kind == StartupKind::Invalid);
    CHECK(p.error == "no PostgreSQL user name specified in startup packet");
  }
  SECTION("no params at all") {
    auto p = parse(packet(kProtocol30, "\0"s));
    CHECK(p.kind == StartupKind::Invalid);
    CHECK_FALSE(p.error.empty());
  }
  SECTION("missing terminator") {
    for (std::string body : {"user\0bob\0"s, "user\0bob"s, "user"s,
                             std::string()}) {
      auto p = parse(packet(kProtocol30, body));
      CHECK(p.kind == StartupKind::Invalid);
      CHECK_FALSE(p.error.empty());
    }
  }
  SECTION("bytes after the terminator") {
    auto p = parse(packet(kProtocol30, "user\0bob\0\0x"s));
    CHECK(p.kind == StartupKind::Invalid);
    CHECK_FALSE(p.error.empty());
  }
  SECTION("non-UTF-8 name or value") {
    for (std::string body : {"us\xff" "er\0bob\0\0"s, "user\0b\xc3\0\0"s,
                             "user\0\xc0\xaf\0\0"s,            // overlong '/'
                             "user\0\xed\xa0\x80\0\0"s,       // surrogate
                             "user\0\xf4\x90\x80\x80\0\0"s})  // > U+10FFFF
    {
      auto p = parse(packet(kProtocol30, body));
      CHECK(p.kind == StartupKind::Invalid);
      CHECK_FALSE(p.error.empty());
    }
    auto ok = parse(packet(kProtocol30, "user\0j\xc3\xbcrgen\0application_name\0\xf0\x9f\x90\x98\0\0"s));
    CHECK(ok.kind == StartupKind::Startup);
  }
  SECTION("duplicate parameter") {
    auto p = parse(packet(kProtocol30, "user\0a\0user\0b\0\0"s));
    CHECK(p.kind == StartupKind::Invalid);
    CHECK_FALSE(p.error.empty());
  }
  SECTION("length field disagrees with the buffer size") {
    std::string wire = packet(kProtocol30, "user\0bob\0\0"s);
    auto b = to_bytes(wire);
    CHECK(parse_startup(b.data(), b.size() - 1).kind == StartupKind::Invalid);
    b.push_back(0);
    CHECK(parse_startup(b.data(), b.size()).kind == StartupKind::Invalid);
    CHECK(parse_startup(b.data(), 4).kind == StartupKind::Invalid);
    CHECK(parse_startup(nullptr, 0).kind == StartupKind::Invalid);
  }
}

TEST_CASE("startup: other protocol versions are BadVersion") {
  auto p = parse(packet(2u << 16, "user\0bob\0\0"s));
  CHECK(p.kind == StartupKind::BadVersion);
  CHECK(p.version == (2u << 16));
  auto q = parse(packet(4u << 16, "\0"s));
  CHECK(q.kind == StartupKind::BadVersion);
  CHECK(q.version == (4u << 16));
}

TEST_CASE("SSLRequest, GSSENCRequest and CancelRequest, split at every byte offset") {
  std::string ssl;
  ssl_request(ssl);
  CHECK(ssl == pgpivot::proto::test::from_hex("00000008 04d2162f"));
  split_startup(ssl, [](const StartupPacket& p) { CHECK(p.kind == StartupKind::SSLRequest); });

  split_startup(packet(kGSSENCRequestCode, {}), [](const StartupPacket& p) { CHECK(p.kind == StartupKind::GSSENCRequest); });

  std::string cancel;
  cancel_request(cancel, 4242, 0xdeadbeef);
  CHECK(cancel.size() == 16);
  split_startup(cancel, [](const StartupPacket& p) {
    REQUIRE(p.kind == StartupKind::CancelRequest);
    CHECK(p.cancel_pid == 4242);
    CHECK(p.cancel_key == 0xdeadbeef);
  });

  // Wrong sizes for the fixed-size requests.
  CHECK(parse(packet(kCancelRequestCode, std::string(4, '\1'))).kind == StartupKind::Invalid);
  CHECK(parse(packet(kCancelRequestCode, std::string(12, '\1'))).kind == StartupKind::Invalid);
  CHECK(parse(packet(kSSLRequestCode, std::string(4, '\0'))).kind == StartupKind::Invalid);
  CHECK(parse(packet(kGSSENCRequestCode, std::string(1, '\0'))).kind == StartupKind::Invalid);
}

TEST_CASE("10,000 random buffers through frame_startup + parse_startup") {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 10000; ++i) {
    std::vector<std::uint8_t> buf(std::size_t(rng() % 64));
    for (auto& c : buf) c = std::uint8_t(byte(rng));
    const unsigned mode = rng() % 4;
    if (buf.size() >= 8 && mode >= 1) {  // make the length plausible to reach the parser
      const auto n = std::uint32_t(buf.size());
      buf[0] = 0; buf[1] = 0; buf[2] = std::uint8_t(n >> 8); buf[3] = std::uint8_t(n);
      if (mode >= 2) { buf[4] = 0; buf[5] = 3; buf[6] = 0; buf[7] = std::uint8_t(mode == 3 ? 0 : byte(rng)); }
      if (mode == 3)  // sprinkle NULs so names/values appear
        for (std::size_t j = 8; j < buf.size(); ++j)
          if (rng() % 4 == 0) buf[j] = 0;
    }
    Frame f = frame_startup(buf.data(), buf.size());
    REQUIRE((f.status == FrameStatus::NeedMore || f.status == FrameStatus::Invalid || f.status == FrameStatus::Header));
    if (f.status == FrameStatus::Header && f.wire_size() <= buf.size()) check_sane(parse_startup(buf.data(), f.wire_size()));
    check_sane(parse_startup(buf.data(), buf.size()));  // whatever the length field says
  }
}

TEST_CASE("10,000 random mutations of a valid startup packet") {
  std::string wire;
  startup_message(wire, {{"user", "alice"}, {"database", "shop"}, {"application_name", "psql"}, {"options", "-c x=1"}});
  std::mt19937 rng(7677);
  int startups = 0, invalid = 0;
  for (int i = 0; i < 10000; ++i) {
    std::vector<std::uint8_t> buf = to_bytes(wire);
    const unsigned edits = 1 + rng() % 4;
    for (unsigned e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0: buf[rng() % buf.size()] = std::uint8_t(rng()); break;
        case 1: buf[rng() % buf.size()] = 0; break;
        case 2: buf.resize(rng() % (buf.size() + 1)); if (buf.empty()) buf.push_back(0); break;
        case 3: buf.insert(buf.begin() + std::ptrdiff_t(rng() % buf.size()), std::uint8_t(rng())); break;
      }
    }
    if (rng() % 2 && buf.size() >= 4) {  // fix the length half of the time
      const auto n = std::uint32_t(buf.size());
      buf[0] = std::uint8_t(n >> 24); buf[1] = std::uint8_t(n >> 16); buf[2] = std::uint8_t(n >> 8); buf[3] = std::uint8_t(n);
    }
    Frame f = frame_startup(buf.data(), buf.size());
    if (f.status == FrameStatus::Header && f.wire_size() <= buf.size()) {
      auto p = parse_startup(buf.data(), f.wire_size());
      check_sane(p);
      startups += p.kind == StartupKind::Startup;
      invalid += p.kind == StartupKind::Invalid;
    }
    check_sane(parse_startup(buf.data(), buf.size()));
  }
  // Both outcomes must have been exercised for the fuzzing to mean anything.
  CHECK(startups > 100);
  CHECK(invalid > 100);
}
