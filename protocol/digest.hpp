// The hash functions password authentication needs, written from their specifications
// so that pgpivot does not have to load libcrypto (3.4 MB of resident pages) just to
// log in: SHA-256 (FIPS 180-4), HMAC-SHA-256 (RFC 2104), PBKDF2-HMAC-SHA-256 (RFC 8018)
// and MD5 (RFC 1321, only for PostgreSQL's "md5" authentication). Pure functions:
// no I/O, no global state. Not constant-time with respect to message lengths (which
// are not secret here); the values themselves never choose a branch or a table index.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pgpivot::proto {

using Sha256Digest = std::array<std::uint8_t, 32>;
using Md5Digest = std::array<std::uint8_t, 16>;

// Incremental SHA-256. Copyable: a copy continues from the same point (HMAC keeps
// the states after the padded key block and copies them for each message).
class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest of everything given; the object must not be updated afterwards.
  [[nodiscard]] Sha256Digest finish();
  [[nodiscard]] static Sha256Digest hash(std::string_view data);

 private:
  friend class HmacSha256;
  std::uint32_t h_[8];
  std::uint8_t buf_[64];
  std::uint64_t total_ = 0;  // bytes given so far
};

// HMAC-SHA-256 with the key's inner and outer pad states computed once: each
// message then costs only its own hashing (PBKDF2 makes thousands with one key).
class HmacSha256 {
 public:
  explicit HmacSha256(std::string_view key);
  [[nodiscard]] Sha256Digest mac(std::string_view data) const;
  // The MAC of a 32-byte message given and returned as eight big-endian words:
  // two compressions, no buffering (the PBKDF2 inner loop).
  void mac32(const std::uint32_t in[8], std::uint32_t out[8]) const;

 private:
  friend void pbkdf2_hmac_sha256(std::string_view, std::string_view, std::uint32_t, std::uint8_t*, std::size_t);
  Sha256 inner_, outer_;  // after the (key XOR ipad) and (key XOR opad) blocks
};

[[nodiscard]] Sha256Digest sha256(std::string_view data);
[[nodiscard]] Sha256Digest hmac_sha256(std::string_view key, std::string_view data);
// PBKDF2 (RFC 8018 section 5.2) with HMAC-SHA-256 as the PRF; iterations >= 1.
void pbkdf2_hmac_sha256(std::string_view password, std::string_view salt, std::uint32_t iterations,
                        std::uint8_t* out, std::size_t out_len);
[[nodiscard]] Md5Digest md5(std::string_view data);

// SHA-256 uses the x86 SHA extensions when the CPU has them (checked once with
// CPUID), else portable code. For tests: use them or not; returns whether they
// are used now (false when the CPU lacks them). Not thread-safe.
bool sha256_hardware(bool use);

}  // namespace pgpivot::proto
