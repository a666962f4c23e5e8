// Wire primitives for the PostgreSQL v3 protocol: header framing, a bounds-checked
// reader over message bodies and a writer that back-patches message lengths.
// No I/O: everything here works on byte buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgpivot::proto {

// A regular message is: 1 type byte, Int32 length (counting itself, not the
// type byte), then length-4 body bytes.
inline constexpr std::size_t kHeaderSize = 5;
// PostgreSQL's own limit on a startup packet (src/include/libpq/pqcomm.h).
inline constexpr std::uint32_t kMaxStartupPacket = 10000;

enum class FrameStatus {
  NeedMore,  // fewer than kHeaderSize (or 4 for startup) bytes available
  Invalid,   // length field < 4 or > max
  Header,    // header complete: type and length are valid (body may be incomplete)
};

struct Frame {
  FrameStatus status = FrameStatus::NeedMore;
  char type = 0;             // 0 for startup-style packets
  std::uint32_t length = 0;  // value of the length field (includes itself)
  // Bytes the whole message occupies on the wire, header included.
  [[nodiscard]] std::size_t wire_size() const { return type ? std::size_t(length) + 1 : std::size_t(length); }
  [[nodiscard]] std::uint32_t body_size() const { return length - 4; }
};

// Inspect a typed message header at data[0..n).
[[nodiscard]] Frame frame_message(const std::uint8_t* data, std::size_t n, std::uint32_t max_packet_size);
// Inspect a startup-style packet header (Int32 length, no type byte) at data[0..n).
// Length must be >= 8 and <= max (kMaxStartupPacket by default).
[[nodiscard]] Frame frame_startup(const std::uint8_t* data, std::size_t n,
                                  std::uint32_t max = kMaxStartupPacket);

[[nodiscard]] inline std::uint32_t read_u32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}
[[nodiscard]] inline std::uint16_t read_u16(const std::uint8_t* p) {
  return std::uint16_t((p[0] << 8) | p[1]);
}

// Bounds-checked cursor over a message body. Every getter returns nullopt (and
// sets failed()) instead of reading past the end.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t n) : p_(data), end_(data + n) {}
  explicit Reader(std::string_view s)
      : Reader(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) {}
  std::optional<std::uint8_t> u8();
  std::optional<std::uint16_t> u16();
  std::optional<std::uint32_t> u32();
  std::optional<std::int32_t> i32();
  // NUL-terminated string; the view excludes the terminator.
  std::optional<std::string_view> cstr();
  std::optional<std::string_view> bytes(std::size_t n);
  [[nodiscard]] std::string_view rest() const;
  [[nodiscard]] std::size_t remaining() const { return std::size_t(end_ - p_); }
  [[nodiscard]] bool at_end() const { return p_ == end_; }
  [[nodiscard]] bool failed() const { return failed_; }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  bool failed_ = false;
};

// Appends messages to a std::string. begin(type) writes the type byte (if any)
// and a placeholder length; end() patches it. Writers never fail: the string grows.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  Writer& begin(char type);   // typed message
  Writer& begin_untyped();    // startup-style packet (no type byte)
  Writer& u8(std::uint8_t v);
  Writer& u16(std::uint16_t v);
  Writer& u32(std::uint32_t v);
  Writer& i32(std::int32_t v) { return u32(std::uint32_t(v)); }
  Writer& cstr(std::string_view s);  // appends s and a NUL
  Writer& bytes(std::string_view s);
  void end();

 private:
  std::string& out_;
  std::size_t start_ = 0;  // offset of the length field
};

}  // namespace pgpivot::proto
