// SHA-256 (FIPS 180-4), HMAC (RFC 2104), PBKDF2 (RFC 8018) and MD5 (RFC 1321).
#include "protocol/digest.hpp"

#include <bit>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace pgpivot::proto {

namespace {

// ---- SHA-256 (FIPS 180-4 sections 4.1.2, 4.2.2, 5.3.3, 6.2) ----

// The first 32 bits of the fractional parts of the cube roots of the first 64 primes.
constexpr std::uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// The first 32 bits of the fractional parts of the square roots of the first 8 primes.
constexpr std::uint32_t kH0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

inline void store_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = std::uint8_t(v >> 24);
  p[1] = std::uint8_t(v >> 16);
  p[2] = std::uint8_t(v >> 8);
  p[3] = std::uint8_t(v);
}

inline std::uint32_t load_le32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}

inline void store_le32(std::uint8_t* p, std::uint32_t v) {
  p[0] = std::uint8_t(v);
  p[1] = std::uint8_t(v >> 8);
  p[2] = std::uint8_t(v >> 16);
  p[3] = std::uint8_t(v >> 24);
}

// One SHA-256 compression: the 16-word message block m into the hash value h.
void sha256_compress_portable(std::uint32_t h[8], const std::uint32_t m[16]) {
  using std::rotr;
  std::uint32_t w[64];
  for (int t = 0; t < 16; ++t) w[t] = m[t];
  for (int t = 16; t < 64; ++t) {
    const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = s1 + w[t - 7] + s0 + w[t - 16];
  }
  std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int t = 0; t < 64; ++t) {
    const std::uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const std::uint32_t ch = (e & f) ^ (~e & g);
    const std::uint32_t t1 = hh + S1 + ch + kK[t] + w[t];
    const std::uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const std::uint32_t t2 = S0 + maj;
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += hh;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PGPIVOT_SHA_NI 1

// The same compression with the x86 SHA extensions (SHA256RNDS2 does two rounds,
// SHA256MSG1/MSG2 the message schedule). The instructions keep the working
// variables as two vectors, ABEF and CDGH (A in the highest lane).
__attribute__((target("sha,sse4.1,ssse3"))) void sha256_compress_shani(std::uint32_t h[8], const std::uint32_t m[16]) {
  // h[0..7] = A..H -> ABEF = lanes (F, E, B, A), CDGH = lanes (H, G, D, C).
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)), 0xB1);       // B A D C
  __m128i cdgh = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4)), 0x1B);  // H G F E
  __m128i abef = _mm_alignr_epi8(t, cdgh, 8);  // F E B A
  cdgh = _mm_blend_epi16(cdgh, t, 0xF0);       // H G D C
  const __m128i abef0 = abef, cdgh0 = cdgh;
  // w[i & 3] holds message words 4i..4i+3 (already values, no byte swapping).
  __m128i w[4];
  for (int i = 0; i < 4; ++i) w[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m + 4 * i));
  for (int i = 0; i < 16; ++i) {
    if (i >= 4) {
      // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time.
      const __m128i m0 = w[i & 3], m1 = w[(i + 1) & 3], m2 = w[(i + 2) & 3], m3 = w[(i + 3) & 3];
      const __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(m0, m1), _mm_alignr_epi8(m3, m2, 4));
      w[i & 3] = _mm_sha256msg2_epu32(x, m3);
    }
    __m128i wk = _mm_add_epi32(w[i & 3], _mm_loadu_si128(reinterpret_cast<const __m128i*>(kK + 4 * i)));
    cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);  // rounds 4i, 4i+1: cdgh is the new ABEF
    wk = _mm_shuffle_epi32(wk, 0x0E);
    abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);  // rounds 4i+2, 4i+3: back in place
  }
  abef = _mm_add_epi32(abef, abef0);
  cdgh = _mm_add_epi32(cdgh, cdgh0);
  t = _mm_shuffle_epi32(abef, 0x1B);     // A B E F
  cdgh = _mm_shuffle_epi32(cdgh, 0xB1);  // G H C D
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm_blend_epi16(t, cdgh, 0xF0));  // A B C D
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), _mm_alignr_epi8(cdgh, t, 8));  // E F G H
}

bool cpu_has_sha_ni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return ssse3 && sse41 && (b & (1u << 29));
}

bool g_use_shani = cpu_has_sha_ni();
#endif

inline void sha256_compress(std::uint32_t h[8], const std::uint32_t m[16]) {
#ifdef PGPIVOT_SHA_NI
  if (g_use_shani) {
    sha256_compress_shani(h, m);
    return;
  }
#endif
  sha256_compress_portable(h, m);
}

void sha256_block(std::uint32_t h[8], const std::uint8_t* p) {
  std::uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = load_be32(p + 4 * i);
  sha256_compress(h, m);
}

// ---- MD5 (RFC 1321 section 3) ----

// T[i] = the integer part of 4294967296 * abs(sin(i + 1)), i + 1 in radians (3.4).
// Written out rather than computed: std::sin would make pgpivot need libm.
constexpr std::uint32_t kMd5T[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

constexpr int kMd5Shift[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                               5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                               4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                               6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

void md5_block(std::uint32_t s[4], const std::uint8_t* p) {
  const std::uint32_t* T = kMd5T;
  std::uint32_t x[16];
  for (int i = 0; i < 16; ++i) x[i] = load_le32(p + 4 * i);
  std::uint32_t a = s[0], b = s[1], c = s[2], d = s[3];
  for (int i = 0; i < 64; ++i) {
    std::uint32_t f;
    int k;
    if (i < 16) {
      f = (b & c) | (~b & d);  // F
      k = i;
    } else if (i < 32) {
      f = (b & d) | (c & ~d);  // G
      k = (5 * i + 1) % 16;
    } else if (i < 48) {
      f = b ^ c ^ d;  // H
      k = (3 * i + 5) % 16;
    } else {
      f = c ^ (b | ~d);  // I
      k = (7 * i) % 16;
    }
    const std::uint32_t tmp = d;
    d = c;
    c = b;
    b = b + std::rotl(a + f + T[i] + x[k], kMd5Shift[i]);
    a = tmp;
  }
  s[0] += a;
  s[1] += b;
  s[2] += c;
  s[3] += d;
}

}  // namespace

bool sha256_hardware(bool use) {
#ifdef PGPIVOT_SHA_NI
  static const bool available = cpu_has_sha_ni();
  g_use_shani = use && available;
  return g_use_shani;
#else
  (void)use;
  return false;
#endif
}

// ---- Sha256 ----

Sha256::Sha256() { std::memcpy(h_, kH0, sizeof h_); }

void Sha256::update(const void* data, std::size_t n) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::size_t used = std::size_t(total_ % 64);
  total_ += n;
  if (used) {
    const std::size_t take = n < 64 - used ? n : 64 - used;
    std::memcpy(buf_ + used, p, take);
    p += take;
    n -= take;
    if (used + take < 64) return;
    sha256_block(h_, buf_);
  }
  for (; n >= 64; p += 64, n -= 64) sha256_block(h_, p);
  if (n) std::memcpy(buf_, p, n);
}

Sha256Digest Sha256::finish() {
  // Padding (5.1.1): a 1 bit, zeros up to 56 mod 64 bytes, the length in bits (64-bit big-endian).
  const std::uint64_t bits = total_ * 8;
  std::size_t used = std::size_t(total_ % 64);
  buf_[used++] = 0x80;
  if (used > 56) {
    std::memset(buf_ + used, 0, 64 - used);
    sha256_block(h_, buf_);
    used = 0;
  }
  std::memset(buf_ + used, 0, 56 - used);
  store_be32(buf_ + 56, std::uint32_t(bits >> 32));
  store_be32(buf_ + 60, std::uint32_t(bits));
  sha256_block(h_, buf_);
  Sha256Digest out{};
  for (int i = 0; i < 8; ++i) store_be32(out.data() + 4 * i, h_[i]);
  return out;
}

Sha256Digest Sha256::hash(std::string_view data) {
  Sha256 s;
  s.update(data);
  return s.finish();
}

Sha256Digest sha256(std::string_view data) { return Sha256::hash(data); }

// ---- HMAC-SHA-256 (RFC 2104) ----

HmacSha256::HmacSha256(std::string_view key) {
  std::uint8_t k[64] = {};
  if (key.size() > 64) {
    const Sha256Digest d = Sha256::hash(key);
    std::memcpy(k, d.data(), d.size());
  } else if (!key.empty()) {
    std::memcpy(k, key.data(), key.size());
  }
  std::uint8_t pad[64];
  for (int i = 0; i < 64; ++i) pad[i] = std::uint8_t(k[i] ^ 0x36);
  inner_.update(pad, 64);
  for (int i = 0; i < 64; ++i) pad[i] = std::uint8_t(k[i] ^ 0x5c);
  outer_.update(pad, 64);
  std::memset(k, 0, sizeof k);
}

Sha256Digest HmacSha256::mac(std::string_view data) const {
  Sha256 in = inner_;
  in.update(data);
  const Sha256Digest ih = in.finish();
  Sha256 out = outer_;
  out.update(ih.data(), ih.size());
  return out.finish();
}

void HmacSha256::mac32(const std::uint32_t in[8], std::uint32_t out[8]) const {
  // Both hashes end with one block: 32 message bytes, the 0x80 byte, zeros, and the
  // length of key block plus message, (64 + 32) * 8 = 768 bits.
  std::uint32_t m[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0x80000000u, 0, 0, 0, 0, 0, 0, 768};
  std::uint32_t h[8];
  std::memcpy(m, in, 8 * sizeof(std::uint32_t));
  std::memcpy(h, inner_.h_, sizeof h);
  sha256_compress(h, m);
  std::memcpy(m, h, sizeof h);
  std::memcpy(out, outer_.h_, sizeof h);
  sha256_compress(out, m);
}

Sha256Digest hmac_sha256(std::string_view key, std::string_view data) { return HmacSha256(key).mac(data); }

// ---- PBKDF2 (RFC 8018 section 5.2) ----

void pbkdf2_hmac_sha256(std::string_view password, std::string_view salt, std::uint32_t iterations,
                        std::uint8_t* out, std::size_t out_len) {
  const HmacSha256 prf(password);
  if (iterations < 1) iterations = 1;
  for (std::uint32_t block = 1; out_len > 0; ++block) {
    // U_1 = PRF(P, S || INT(i)); U_j = PRF(P, U_{j-1}); T_i = U_1 ^ ... ^ U_c.
    Sha256 in = prf.inner_;
    in.update(salt);
    std::uint8_t be[4];
    store_be32(be, block);
    in.update(be, 4);
    const Sha256Digest ih = in.finish();
    Sha256 o = prf.outer_;
    o.update(ih.data(), ih.size());
    const Sha256Digest u1 = o.finish();
    std::uint32_t u[8], t[8];
    for (int i = 0; i < 8; ++i) t[i] = u[i] = load_be32(u1.data() + 4 * i);
    for (std::uint32_t j = 1; j < iterations; ++j) {
      prf.mac32(u, u);
      for (int i = 0; i < 8; ++i) t[i] ^= u[i];
    }
    std::uint8_t tb[32];
    for (int i = 0; i < 8; ++i) store_be32(tb + 4 * i, t[i]);
    const std::size_t take = out_len < 32 ? out_len : 32;
    std::memcpy(out, tb, take);
    out += take;
    out_len -= take;
  }
}

// ---- MD5 ----

Md5Digest md5(std::string_view data) {
  std::uint32_t s[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  const auto* p = reinterpret_cast<const std::uint8_t*>(data.data());
  std::size_t n = data.size();
  for (; n >= 64; p += 64, n -= 64) md5_block(s, p);
  // Padding (3.1, 3.2): 0x80, zeros up to 56 mod 64, the length in bits (64-bit little-endian).
  std::uint8_t tail[128] = {};
  std::memcpy(tail, p, n);
  tail[n] = 0x80;
  const std::size_t tail_len = n + 1 + 8 <= 64 ? 64 : 128;
  const std::uint64_t bits = std::uint64_t(data.size()) * 8;
  store_le32(tail + tail_len - 8, std::uint32_t(bits));
  store_le32(tail + tail_len - 4, std::uint32_t(bits >> 32));
  md5_block(s, tail);
  if (tail_len == 128) md5_block(s, tail + 64);
  Md5Digest out{};
  for (int i = 0; i < 4; ++i) store_le32(out.data() + 4 * i, s[i]);
  return out;
}

}  // namespace pgpivot::proto
