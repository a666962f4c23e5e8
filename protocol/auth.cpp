// MD5 and SCRAM-SHA-256 password authentication math (RFC 5802 / RFC 7677), with
// the digests from OpenSSL's libcrypto (protocol/digest.hpp) and random bytes from
// getrandom(2).
#include "protocol/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "protocol/digest.hpp"

namespace pgpivot::proto {

// ---- digests (OpenSSL) ----
// libcrypto fails these only when out of memory or when a provider lacks the
// algorithm (MD5 under a FIPS-only configuration): nothing to go on with.

namespace {
[[noreturn]] void digest_failed(const char* what) {
  std::fprintf(stderr, "pgpivot: OpenSSL %s failed\n", what);
  std::abort();
}
}  // namespace

Sha256Digest sha256(std::string_view data) {
  Sha256Digest d{};
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 || n != d.size())
    digest_failed("SHA-256");
  return d;
}

Sha256Digest hmac_sha256(std::string_view key, std::string_view data) {
  Sha256Digest d{};
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), d.data(), &n) ||
      n != d.size())
    digest_failed("HMAC-SHA-256");
  return d;
}

void pbkdf2_hmac_sha256(std::string_view password, std::string_view salt, std::uint32_t iterations,
                        std::uint8_t* out, std::size_t out_len) {
  if (iterations < 1) iterations = 1;
  if (iterations > std::uint32_t(INT_MAX)) iterations = std::uint32_t(INT_MAX);
  if (PKCS5_PBKDF2_HMAC(password.data(), int(password.size()), reinterpret_cast<const unsigned char*>(salt.data()),
                        int(salt.size()), int(iterations), EVP_sha256(), int(out_len), out) != 1)
    digest_failed("PBKDF2-HMAC-SHA-256");
}

Md5Digest md5(std::string_view data) {
  Md5Digest d{};
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), d.data(), &n, EVP_md5(), nullptr) != 1 || n != d.size())
    digest_failed("MD5");
  return d;
}

namespace {

constexpr std::size_t kRawNonceLen = 18;  // same as PostgreSQL's SCRAM_RAW_NONCE_LEN

// ScramServer::step_ values. Only "n,," and "y,," gs2 headers are accepted, so the
// state also remembers which one the client sent (needed to check "c=").
constexpr int kAwaitFirst = 0;
constexpr int kAwaitFinalN = 1;
constexpr int kAwaitFinalY = 2;
constexpr int kDone = 3;
constexpr int kFailed = 4;

const std::uint8_t* u8p(std::string_view s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }
std::string_view as_sv(const Key32& k) { return {reinterpret_cast<const char*>(k.data()), k.size()}; }

Key32 hmac256(std::string_view key, std::string_view data) { return hmac_sha256(key, data); }

Key32 salted_password(std::string_view password, std::string_view salt, int iterations) {
  // SASLprep is skipped: it leaves ASCII passwords unchanged, and PostgreSQL itself
  // falls back to the raw bytes when a password is not valid for SASLprep.
  Key32 out{};
  pbkdf2_hmac_sha256(password, salt, std::uint32_t(iterations < 1 ? 1 : iterations), out.data(), out.size());
  return out;
}

Key32 xor_keys(const Key32& a, const Key32& b) {
  Key32 out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::uint8_t(a[i] ^ b[i]);
  return out;
}

std::optional<Key32> decode_key(std::string_view b64) {
  auto raw = base64_decode(b64);
  if (!raw || raw->size() != 32) return std::nullopt;
  Key32 k{};
  for (std::size_t i = 0; i < 32; ++i) k[i] = std::uint8_t((*raw)[i]);
  return k;
}

std::optional<int> parse_positive_int(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 1 || v > INT_MAX) return std::nullopt;
  return int(v);
}

// RFC 5802 "printable": %x21-2B / %x2D-7E (no comma).
bool printable_nonce(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  return true;
}

std::string random_nonce() {
  std::uint8_t raw[kRawNonceLen];
  random_bytes(raw, sizeof raw);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
}

// Splits "a=x,b=y" into attributes; every part must be "<letter>=<value>".
std::optional<std::vector<std::string_view>> split_attrs(std::string_view s) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto comma = s.find(',');
    std::string_view part = s.substr(0, comma);
    const bool letter = !part.empty() && ((part[0] >= 'a' && part[0] <= 'z') || (part[0] >= 'A' && part[0] <= 'Z'));
    if (part.size() < 2 || !letter || part[1] != '=') return std::nullopt;
    parts.push_back(part);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return parts;
}

bool is_attr(std::string_view part, char name) { return part.size() >= 2 && part[0] == name && part[1] == '='; }
std::string_view attr_value(std::string_view part) { return part.substr(2); }

std::string escape_saslname(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == ',') out += "=2C";
    else if (c == '=') out += "=3D";
    else out += c;
  }
  return out;
}

std::string hex(const unsigned char* p, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 0xf];
  }
  return out;
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

// ---- MD5 ----

std::string md5_hex(std::string_view data) {
  const Md5Digest md = md5(data);
  return hex(md.data(), md.size());
}

std::string md5_password_hash(std::string_view user, std::string_view password) {
  std::string in(password);
  in.append(user);
  return "md5" + md5_hex(in);
}

std::string md5_salted_response(std::string_view stored_hash, const std::uint8_t salt[4]) {
  std::string in(stored_hash.substr(0, 3) == "md5" ? stored_hash.substr(3) : stored_hash);
  in.append(reinterpret_cast<const char*>(salt), 4);
  return "md5" + md5_hex(in);
}

bool is_md5_hash(std::string_view s) {
  if (s.size() != 35 || s.substr(0, 3) != "md5") return false;
  for (char c : s.substr(3))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// ---- utilities ----

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;  // lengths are not secret here
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool check_plain_password(std::string_view user, std::string_view given, std::string_view stored) {
  if (stored.empty()) return false;
  if (stored.rfind("SCRAM-SHA-256$", 0) == 0) {
    auto secret = ScramSecret::parse(stored);
    if (!secret) return false;
    ScramSecret mine = ScramSecret::from_password(given, secret->salt, secret->iterations);
    auto view = [](const Key32& k) { return std::string_view(reinterpret_cast<const char*>(k.data()), k.size()); };
    bool stored_ok = constant_time_equal(view(mine.stored_key), view(secret->stored_key));
    bool server_ok = constant_time_equal(view(mine.server_key), view(secret->server_key));
    return stored_ok && server_ok;
  }
  if (is_md5_hash(stored)) return constant_time_equal(md5_password_hash(user, given), stored);
  return constant_time_equal(given, stored);
}

void random_bytes(std::uint8_t* out, std::size_t n) {
  // The kernel's CSPRNG; blocks only until it is seeded at boot. Requests over
  // 256 bytes may come back short, and a signal may interrupt one: loop.
  while (n > 0) {
    const ssize_t r = getrandom(out, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::abort();  // ENOSYS (kernel older than 3.17) or EFAULT: nothing safe to fall back to
    }
    out += r;
    n -= std::size_t(r);
  }
}

std::string base64_encode(std::string_view raw) {
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto* p = u8p(raw);
  for (; i + 3 <= raw.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t(p[i]) << 16) | (std::uint32_t(p[i + 1]) << 8) | p[i + 2];
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  const std::size_t left = raw.size() - i;
  if (left == 1) {
    const std::uint32_t v = std::uint32_t(p[i]) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (left == 2) {
    const std::uint32_t v = (std::uint32_t(p[i]) << 16) | (std::uint32_t(p[i + 1]) << 8);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view b64) {
  if (b64.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(b64.size() / 4 * 3);
  for (std::size_t i = 0; i < b64.size(); i += 4) {
    const bool last = i + 4 == b64.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = b64[i + std::size_t(j)];
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      v[j] = b64_value(c);
      if (v[j] < 0) return std::nullopt;
    }
    const std::uint32_t w = (std::uint32_t(v[0]) << 18) | (std::uint32_t(v[1]) << 12) |
                            (std::uint32_t(v[2]) << 6) | std::uint32_t(v[3]);
    out += char((w >> 16) & 0xff);
    if (pad < 2) out += char((w >> 8) & 0xff);
    if (pad < 1) out += char(w & 0xff);
  }
  return out;
}

// ---- ScramSecret ----

std::optional<ScramSecret> ScramSecret::parse(std::string_view text) {
  constexpr std::string_view prefix = "SCRAM-SHA-256$";
  if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
  text.remove_prefix(prefix.size());
  const auto colon1 = text.find(':');
  const auto dollar = text.find('$');
  if (colon1 == std::string_view::npos || dollar == std::string_view::npos || dollar < colon1) return std::nullopt;
  const auto colon2 = text.find(':', dollar);
  if (colon2 == std::string_view::npos) return std::nullopt;

  auto iter = parse_positive_int(text.substr(0, colon1));
  auto salt = base64_decode(text.substr(colon1 + 1, dollar - colon1 - 1));
  auto stored = decode_key(text.substr(dollar + 1, colon2 - dollar - 1));
  auto server = decode_key(text.substr(colon2 + 1));
  if (!iter || !salt || salt->empty() || !stored || !server) return std::nullopt;

  ScramSecret s;
  s.iterations = *iter;
  s.salt = std::move(*salt);
  s.stored_key = *stored;
  s.server_key = *server;
  return s;
}

ScramSecret ScramSecret::from_password(std::string_view password, std::string_view salt, int iterations) {
  ScramSecret s;
  s.iterations = iterations < 1 ? 1 : iterations;
  s.salt = std::string(salt);
  const Key32 salted = salted_password(password, salt, s.iterations);
  const Key32 client_key = hmac256(as_sv(salted), "Client Key");
  s.stored_key = sha256(as_sv(client_key));
  s.server_key = hmac256(as_sv(salted), "Server Key");
  return s;
}

std::string ScramSecret::to_string() const {
  return "SCRAM-SHA-256$" + std::to_string(iterations) + ":" + base64_encode(salt) + "$" +
         base64_encode(as_sv(stored_key)) + ":" + base64_encode(as_sv(server_key));
}

// ---- ScramServer ----

ScramServer::ScramServer(ScramSecret secret, std::string nonce_suffix)
    : secret_(std::move(secret)), nonce_suffix_(std::move(nonce_suffix)) {
  if (nonce_suffix_.empty()) nonce_suffix_ = random_nonce();
}

std::optional<std::string> ScramServer::client_first(std::string_view msg) {
  auto fail = [this](std::string why) -> std::optional<std::string> {
    error_ = std::move(why);
    step_ = kFailed;
    return std::nullopt;
  };
  if (step_ != kAwaitFirst) return fail("unexpected SCRAM client-first-message");

  // gs2-header: cbind-flag "," [authzid] ","
  if (msg.empty()) return fail("empty client-first-message");
  const char flag = msg[0];
  if (flag == 'p') return fail("channel binding is not supported by this server");
  if ((flag != 'n' && flag != 'y') || msg.size() < 3 || msg[1] != ',')
    return fail("invalid channel binding flag");
  if (msg[2] != ',') {
    if (msg.substr(2, 2) == "a=") return fail("client uses authorization identity, but it is not supported");
    return fail("invalid gs2 header");
  }
  const std::string_view bare = msg.substr(3);

  auto attrs = split_attrs(bare);
  if (!attrs) return fail("invalid client-first-message");
  if (is_attr((*attrs)[0], 'm')) return fail("client requires an unsupported SCRAM extension");
  // The user name in "n=" is ignored (libpq sends it empty; the startup packet names the user).
  if (attrs->size() < 2 || !is_attr((*attrs)[0], 'n') || !is_attr((*attrs)[1], 'r'))
    return fail("expected n= and r= attributes");
  const std::string_view client_nonce = attr_value((*attrs)[1]);
  if (!printable_nonce(client_nonce)) return fail("invalid nonce");
  if (!printable_nonce(nonce_suffix_)) return fail("invalid server nonce");

  client_first_bare_ = std::string(bare);
  nonce_ = std::string(client_nonce) + nonce_suffix_;
  server_first_ = "r=" + nonce_ + ",s=" + base64_encode(secret_.salt) + ",i=" + std::to_string(secret_.iterations);
  step_ = flag == 'n' ? kAwaitFinalN : kAwaitFinalY;
  return server_first_;
}

std::optional<std::string> ScramServer::client_final(std::string_view msg) {
  auto fail = [this](std::string why) -> std::optional<std::string> {
    error_ = std::move(why);
    step_ = kFailed;
    return std::nullopt;
  };
  if (step_ != kAwaitFinalN && step_ != kAwaitFinalY) return fail("unexpected SCRAM client-final-message");

  auto attrs = split_attrs(msg);
  if (!attrs || attrs->size() < 3) return fail("invalid client-final-message");
  const auto& a = *attrs;
  if (!is_attr(a[0], 'c') || !is_attr(a[1], 'r') || !is_attr(a.back(), 'p'))
    return fail("expected c=, r= and p= attributes");

  auto cbind = base64_decode(attr_value(a[0]));
  const std::string_view expected_gs2 = step_ == kAwaitFinalN ? "n,," : "y,,";
  if (!cbind || *cbind != expected_gs2) return fail("SCRAM channel binding check failed");
  if (!constant_time_equal(attr_value(a[1]), nonce_)) return fail("SCRAM nonce mismatch");
  auto proof = decode_key(attr_value(a.back()));
  if (!proof) return fail("invalid proof");

  // Everything before ",p=": the proof is the last attribute.
  const std::string_view without_proof = msg.substr(0, msg.size() - a.back().size() - 1);
  const std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);

  const Key32 client_signature = hmac256(as_sv(secret_.stored_key), auth_message);
  const Key32 client_key = xor_keys(*proof, client_signature);
  const Key32 stored = sha256(as_sv(client_key));
  if (!constant_time_equal(as_sv(stored), as_sv(secret_.stored_key))) return fail("password authentication failed");

  client_key_ = client_key;
  step_ = kDone;
  const Key32 server_signature = hmac256(as_sv(secret_.server_key), auth_message);
  return "v=" + base64_encode(as_sv(server_signature));
}

// ---- ScramClient ----

ScramClient::ScramClient(std::string password, std::string nonce)
    : password_(std::move(password)), nonce_(std::move(nonce)) {
  if (nonce_.empty()) nonce_ = random_nonce();
}

ScramClient::ScramClient(const Key32& client_key, const Key32& server_key, std::string nonce)
    : have_keys_(true), client_key_(client_key), server_key_(server_key), nonce_(std::move(nonce)) {
  if (nonce_.empty()) nonce_ = random_nonce();
}

std::string ScramClient::client_first() {
  client_first_bare_ = "n=" + escape_saslname(user_) + ",r=" + nonce_;
  auth_message_.clear();
  return "n,," + client_first_bare_;
}

std::optional<std::string> ScramClient::server_first(std::string_view msg) {
  if (client_first_bare_.empty() || !auth_message_.empty()) {
    error_ = "unexpected SCRAM server-first-message";
    return std::nullopt;
  }
  auto attrs = split_attrs(msg);
  if (!attrs) {
    error_ = "invalid server-first-message";
    return std::nullopt;
  }
  const auto& a = *attrs;
  if (is_attr(a[0], 'm')) {
    error_ = "server requires an unsupported SCRAM extension";
    return std::nullopt;
  }
  if (a.size() < 3 || !is_attr(a[0], 'r') || !is_attr(a[1], 's') || !is_attr(a[2], 'i')) {
    error_ = "expected r=, s= and i= attributes";
    return std::nullopt;
  }
  const std::string_view nonce = attr_value(a[0]);
  if (!printable_nonce(nonce) || nonce.size() <= nonce_.size() || nonce.substr(0, nonce_.size()) != nonce_) {
    error_ = "invalid SCRAM response (nonce mismatch)";
    return std::nullopt;
  }
  auto salt = base64_decode(attr_value(a[1]));
  if (!salt || salt->empty()) {
    error_ = "invalid salt";
    return std::nullopt;
  }
  auto iterations = parse_positive_int(attr_value(a[2]));
  if (!iterations) {
    error_ = "invalid iteration count";
    return std::nullopt;
  }

  if (!have_keys_) {
    const Key32 salted = salted_password(password_, *salt, *iterations);
    client_key_ = hmac256(as_sv(salted), "Client Key");
    server_key_ = hmac256(as_sv(salted), "Server Key");
  }
  // No channel binding: gs2 header "n,," -> "biws".
  const std::string without_proof = "c=biws,r=" + std::string(nonce);
  auth_message_ = client_first_bare_ + "," + std::string(msg) + "," + without_proof;
  const Key32 stored = sha256(as_sv(client_key_));
  const Key32 proof = xor_keys(client_key_, hmac256(as_sv(stored), auth_message_));
  return without_proof + ",p=" + base64_encode(as_sv(proof));
}

bool ScramClient::server_final(std::string_view msg) {
  if (auth_message_.empty()) {
    error_ = "unexpected SCRAM server-final-message";
    return false;
  }
  auto attrs = split_attrs(msg);
  if (!attrs) {
    error_ = "invalid server-final-message";
    return false;
  }
  const auto& a = *attrs;
  if (is_attr(a[0], 'e')) {
    error_ = "SCRAM error from server: " + std::string(attr_value(a[0]));
    return false;
  }
  if (!is_attr(a[0], 'v')) {
    error_ = "expected v= attribute";
    return false;
  }
  auto signature = decode_key(attr_value(a[0]));
  if (!signature) {
    error_ = "invalid server signature";
    return false;
  }
  const Key32 expected = hmac256(as_sv(server_key_), auth_message_);
  if (!constant_time_equal(as_sv(*signature), as_sv(expected))) {
    error_ = "invalid server signature";
    return false;
  }
  return true;
}

}  // namespace pgpivot::proto
