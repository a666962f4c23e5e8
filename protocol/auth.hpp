// Password authentication math: MD5 (PostgreSQL's "md5" + md5(password + user))
// and SCRAM-SHA-256 (RFC 5802 / RFC 7677) for both sides of the exchange.
// Functions over strings, with no I/O (the digests come from OpenSSL, see
// protocol/digest.hpp); randomness comes from getrandom(2).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pgpivot::proto {

[[nodiscard]] std::string md5_hex(std::string_view data);
// "md5" + md5_hex(password + user): what pg_authid stores.
[[nodiscard]] std::string md5_password_hash(std::string_view user, std::string_view password);
// The response to AuthenticationMD5Password: "md5" + md5_hex(hash_hex + salt),
// where stored_hash is the "md5..." form (35 chars).
[[nodiscard]] std::string md5_salted_response(std::string_view stored_hash, const std::uint8_t salt[4]);
// True when s looks like "md5" + 32 lowercase hex digits.
[[nodiscard]] bool is_md5_hash(std::string_view s);

[[nodiscard]] bool constant_time_equal(std::string_view a, std::string_view b);
void random_bytes(std::uint8_t* out, std::size_t n);  // getrandom(2); aborts on failure
[[nodiscard]] std::string base64_encode(std::string_view raw);
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view b64);

using Key32 = std::array<std::uint8_t, 32>;

// "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>"
struct ScramSecret {
  int iterations = 4096;
  std::string salt;  // raw bytes
  Key32 stored_key{};
  Key32 server_key{};

  [[nodiscard]] static std::optional<ScramSecret> parse(std::string_view text);
  [[nodiscard]] static ScramSecret from_password(std::string_view password, std::string_view salt,
                                                 int iterations = 4096);
  [[nodiscard]] std::string to_string() const;
};

// A password sent in clear text (auth_type plain) against what is stored for
// `user`: a plain password, an md5 hash or a SCRAM secret. False for an empty
// stored value or an unparsable secret.
[[nodiscard]] bool check_plain_password(std::string_view user, std::string_view given, std::string_view stored);

// Server side of one SCRAM-SHA-256 exchange (what pgpivot shows a client).
// Channel binding is not offered: gs2 header "n,," or "y,," accepted, "p=" refused.
class ScramServer {
 public:
  // nonce_suffix: printable random characters appended to the client nonce
  // (pass empty to have 18 random bytes base64-encoded).
  explicit ScramServer(ScramSecret secret, std::string nonce_suffix = {});
  // client-first-message -> server-first-message; nullopt on malformed input (see error()).
  [[nodiscard]] std::optional<std::string> client_first(std::string_view msg);
  // client-final-message -> server-final-message ("v=...") when the proof is right;
  // nullopt on malformed input, nonce mismatch or wrong proof.
  [[nodiscard]] std::optional<std::string> client_final(std::string_view msg);
  // After a successful client_final: ClientKey recovered from the proof, which lets
  // pgpivot log in to a server that stores the same secret (SCRAM pass-through).
  [[nodiscard]] const Key32& client_key() const { return client_key_; }
  [[nodiscard]] const ScramSecret& secret() const { return secret_; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  ScramSecret secret_;
  std::string nonce_suffix_;
  std::string client_first_bare_, server_first_, nonce_;
  Key32 client_key_{};
  std::string error_;
  int step_ = 0;
};

// Client side of one exchange (pgpivot logging in to PostgreSQL).
class ScramClient {
 public:
  // With the plain password.
  ScramClient(std::string password, std::string nonce = {});
  // With keys only (pass-through): ClientKey from a client's proof and the ServerKey
  // of the stored secret. Works when the server stores the same secret (salt, iterations).
  ScramClient(const Key32& client_key, const Key32& server_key, std::string nonce = {});
  [[nodiscard]] std::string client_first();  // "n,,n=,r=<nonce>"
  // Optional (added): user name to put in "n=" (escaped per RFC 5802). libpq sends it
  // empty and PostgreSQL ignores it; set it before client_first() to match RFC vectors.
  void set_user(std::string user) { user_ = std::move(user); }
  [[nodiscard]] std::optional<std::string> server_first(std::string_view msg);  // -> client-final
  [[nodiscard]] bool server_final(std::string_view msg);  // verifies "v=" signature
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  std::string password_;
  bool have_keys_ = false;
  Key32 client_key_{}, server_key_{};
  std::string nonce_, client_first_bare_, auth_message_;
  std::string error_;
  std::string user_;  // added with set_user()
};

}  // namespace pgpivot::proto
