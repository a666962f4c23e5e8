// Wire primitives: header framing, bounds-checked Reader and length-patching Writer.
#include "protocol/wire.hpp"

#include <cstring>

namespace pgpivot::proto {

Frame frame_message(const std::uint8_t* data, std::size_t n, std::uint32_t max_packet_size) {
  Frame f;
  if (data == nullptr || n < kHeaderSize) return f;  // NeedMore
  const std::uint32_t len = read_u32(data + 1);
  // A zero type byte is never a valid message type, and Frame uses type == 0 to
  // mean "untyped" (wire_size would be off by one), so reject it here.
  if (data[0] == 0 || len < 4 || len > max_packet_size) {
    f.status = FrameStatus::Invalid;
    f.type = char(data[0]);
    f.length = len;
    return f;
  }
  f.status = FrameStatus::Header;
  f.type = char(data[0]);
  f.length = len;
  return f;
}

Frame frame_startup(const std::uint8_t* data, std::size_t n, std::uint32_t max) {
  Frame f;
  if (data == nullptr || n < 4) return f;  // NeedMore
  const std::uint32_t len = read_u32(data);
  f.length = len;
  f.status = (len < 8 || len > max) ? FrameStatus::Invalid : FrameStatus::Header;
  return f;
}

// ---- Reader ----

std::optional<std::uint8_t> Reader::u8() {
  if (failed_ || remaining() < 1) { failed_ = true; return std::nullopt; }
  return *p_++;
}

std::optional<std::uint16_t> Reader::u16() {
  if (failed_ || remaining() < 2) { failed_ = true; return std::nullopt; }
  const std::uint16_t v = read_u16(p_);
  p_ += 2;
  return v;
}

std::optional<std::uint32_t> Reader::u32() {
  if (failed_ || remaining() < 4) { failed_ = true; return std::nullopt; }
  const std::uint32_t v = read_u32(p_);
  p_ += 4;
  return v;
}

std::optional<std::int32_t> Reader::i32() {
  auto v = u32();
  if (!v) return std::nullopt;
  return std::int32_t(*v);  // two's complement conversion (well-defined since C++20)
}

std::optional<std::string_view> Reader::cstr() {
  if (failed_ || remaining() == 0) { failed_ = true; return std::nullopt; }  // memchr(nullptr, ..) is UB
  const void* nul = std::memchr(p_, 0, remaining());
  if (nul == nullptr) { failed_ = true; return std::nullopt; }
  const auto* z = static_cast<const std::uint8_t*>(nul);
  std::string_view s(reinterpret_cast<const char*>(p_), std::size_t(z - p_));
  p_ = z + 1;
  return s;
}

std::optional<std::string_view> Reader::bytes(std::size_t n) {
  if (failed_ || remaining() < n) { failed_ = true; return std::nullopt; }
  std::string_view s(reinterpret_cast<const char*>(p_), n);
  p_ += n;
  return s;
}

std::string_view Reader::rest() const {
  return std::string_view(reinterpret_cast<const char*>(p_), remaining());
}

// ---- Writer ----

Writer& Writer::begin(char type) {
  out_.push_back(type);
  return begin_untyped();
}

Writer& Writer::begin_untyped() {
  start_ = out_.size();
  out_.append(4, '\0');
  return *this;
}

Writer& Writer::u8(std::uint8_t v) {
  out_.push_back(char(v));
  return *this;
}

Writer& Writer::u16(std::uint16_t v) {
  out_.push_back(char(v >> 8));
  out_.push_back(char(v & 0xff));
  return *this;
}

Writer& Writer::u32(std::uint32_t v) {
  out_.push_back(char(v >> 24));
  out_.push_back(char((v >> 16) & 0xff));
  out_.push_back(char((v >> 8) & 0xff));
  out_.push_back(char(v & 0xff));
  return *this;
}

Writer& Writer::cstr(std::string_view s) {
  out_.append(s);
  out_.push_back('\0');
  return *this;
}

Writer& Writer::bytes(std::string_view s) {
  out_.append(s);
  return *this;
}

void Writer::end() {
  const auto len = std::uint32_t(out_.size() - start_);
  out_[start_] = char(len >> 24);
  out_[start_ + 1] = char((len >> 16) & 0xff);
  out_[start_ + 2] = char((len >> 8) & 0xff);
  out_[start_ + 3] = char(len & 0xff);
}

}  // namespace pgpivot::proto
