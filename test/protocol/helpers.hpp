// Shared helpers for the protocol tests: byte-buffer conversion and split-feed checks.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/startup.hpp"
#include "protocol/wire.hpp"

namespace pgpivot::proto::test {

inline std::vector<std::uint8_t> to_bytes(std::string_view s) { return {s.begin(), s.end()}; }

// "54 00 00 00 1a" -> bytes (lowercase hex, spaces ignored).
inline std::string from_hex(std::string_view spaced) {
  std::string hex;
  for (char c : spaced)
    if (c != ' ') hex += c;
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out += char(nib(hex[i]) << 4 | nib(hex[i + 1]));
  return out;
}

inline constexpr std::uint32_t kTestMax = 1u << 20;

// Feeds `wire` (one complete typed message) to frame_message cut at every byte
// offset: the prefix must say NeedMore until the 5 header bytes are there, then
// Header with the right type/length (the caller would wait for wire_size bytes);
// after the remainder arrives, check(body) runs on the complete body.
template <class Check>
void split_typed(const std::string& wire, char type, Check check) {
  REQUIRE(wire.size() >= kHeaderSize);
  for (std::size_t k = 0; k <= wire.size(); ++k) {
    std::vector<std::uint8_t> buf(wire.begin(), wire.begin() + std::ptrdiff_t(k));
    Frame f = frame_message(buf.data(), buf.size(), kTestMax);
    if (k < kHeaderSize) {
      REQUIRE(f.status == FrameStatus::NeedMore);
    } else {
      REQUIRE(f.status == FrameStatus::Header);
      REQUIRE(f.type == type);
      REQUIRE(f.wire_size() == wire.size());
      REQUIRE((k < f.wire_size()) == (k < wire.size()));
    }
    buf.insert(buf.end(), wire.begin() + std::ptrdiff_t(k), wire.end());
    f = frame_message(buf.data(), buf.size(), kTestMax);
    REQUIRE(f.status == FrameStatus::Header);
    REQUIRE(f.type == type);
    REQUIRE(f.wire_size() == buf.size());
    check(std::string_view(reinterpret_cast<const char*>(buf.data()) + kHeaderSize, f.body_size()));
  }
}

// Same for startup-style packets; check(packet) gets parse_startup's result.
template <class Check>
void split_startup(const std::string& wire, Check check) {
  REQUIRE(wire.size() >= 8);
  for (std::size_t k = 0; k <= wire.size(); ++k) {
    std::vector<std::uint8_t> buf(wire.begin(), wire.begin() + std::ptrdiff_t(k));
    Frame f = frame_startup(buf.data(), buf.size());
    if (k < 4) {
      REQUIRE(f.status == FrameStatus::NeedMore);
    } else {
      REQUIRE(f.status == FrameStatus::Header);
      REQUIRE(f.type == 0);
      REQUIRE(f.wire_size() == wire.size());
    }
    buf.insert(buf.end(), wire.begin() + std::ptrdiff_t(k), wire.end());
    f = frame_startup(buf.data(), buf.size());
    REQUIRE(f.status == FrameStatus::Header);
    REQUIRE(f.wire_size() == buf.size());
    check(parse_startup(buf.data(), f.wire_size()));
  }
}

}  // namespace pgpivot::proto::test
