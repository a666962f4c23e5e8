// The digests password authentication needs, computed by OpenSSL's libcrypto:
// SHA-256, HMAC-SHA-256, PBKDF2-HMAC-SHA-256 (SCRAM, RFC 5802 / RFC 7677) and MD5
// (only for PostgreSQL's "md5" authentication). Thin glue, implemented in
// protocol/auth.cpp; the unit tests check it against the RFC vectors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pgpivot::proto {

using Sha256Digest = std::array<std::uint8_t, 32>;
using Md5Digest = std::array<std::uint8_t, 16>;

[[nodiscard]] Sha256Digest sha256(std::string_view data);
[[nodiscard]] Sha256Digest hmac_sha256(std::string_view key, std::string_view data);
// PBKDF2 (RFC 8018 section 5.2) with HMAC-SHA-256 as the PRF; iterations >= 1.
void pbkdf2_hmac_sha256(std::string_view password, std::string_view salt, std::uint32_t iterations,
                        std::uint8_t* out, std::size_t out_len);
[[nodiscard]] Md5Digest md5(std::string_view data);

}  // namespace pgpivot::proto
