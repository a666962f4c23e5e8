// libFuzzer target: both sides of SCRAM-SHA-256 and what feeds them.
// The input is "MSG1\nMSG2" (MSG2 optional) and is used twice:
//  - server side: ScramServer (the fixed RFC 7677 secret: password "pencil", its salt
//    and 4096 iterations; server nonce suffix from the RFC) gets MSG1 as the
//    client-first-message and MSG2 as the client-final-message;
//  - client side: ScramClient (RFC nonce and user) gets MSG1 as the
//    server-first-message and MSG2 as the server-final-message, once with the keys
//    of the RFC secret (pass-through mode) and, when MSG1's i= is small, once with
//    the password (PBKDF2 cost grows with i=, so large counts are left out).
// The whole input also goes to parse_sasl_initial_response, ScramSecret::parse and
// base64_decode, with round trips through their writers.
#include <cstdint>
#include <optional>
#include <string>

#include "fuzz/fuzz_common.hpp"
#include "protocol/auth.hpp"

namespace {

constexpr std::string_view kClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
constexpr long kMaxPasswordIterations = 64;

struct Rfc {
  proto::ScramSecret secret;
  proto::Key32 client_key{};
};

// The RFC 7677 exchange, run once: it checks that the fixed secret is right and
// recovers ClientKey for the pass-through client.
const Rfc& rfc() {
  static const Rfc r = [] {
    Rfc x;
    x.secret = proto::ScramSecret::from_password("pencil", *proto::base64_decode(kSaltB64), 4096);
    proto::ScramServer server(x.secret, std::string(kServerNonce));
    auto first = server.client_first("n,,n=user,r=" + std::string(kClientNonce));
    FUZZ_CHECK(first.has_value());
    auto final_msg = server.client_final(kClientFinal);
    FUZZ_CHECK(final_msg && *final_msg == kServerFinal);
    x.client_key = server.client_key();
    return x;
  }();
  return r;
}

// The value of ",i=" in a server-first-message, capped; nullopt when absent.
std::optional<long> iterations_of(std::string_view msg) {
  auto at = msg.find(",i=");
  if (at == std::string_view::npos) return std::nullopt;
  long v = 0;
  for (std::size_t i = at + 3; i < msg.size() && msg[i] >= '0' && msg[i] <= '9'; ++i) {
    v = v * 10 + (msg[i] - '0');
    if (v > 1000000) break;
  }
  return v;
}

void client_side(proto::ScramClient& c, std::string_view msg1, std::optional<std::string_view> msg2) {
  c.set_user("user");
  const std::string first = c.client_first();
  FUZZ_CHECK(first == "n,,n=user,r=" + std::string(kClientNonce));
  auto final_msg = c.server_first(msg1);
  if (!final_msg) {
    FUZZ_CHECK(!c.error().empty());
    FUZZ_CHECK(!c.server_final(kServerFinal));  // out of order
    return;
  }
  FUZZ_CHECK(final_msg->rfind("c=biws,r=" + std::string(kClientNonce), 0) == 0);
  FUZZ_CHECK(!c.server_first(msg1).has_value());  // a second server-first is refused
  if (msg2) {
    const bool ok = c.server_final(*msg2);
    if (!ok) FUZZ_CHECK(!c.error().empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  const Rfc& r = rfc();
  const std::string_view in = fuzz::as_sv(data, n);
  const auto nl = in.find('\n');
  const std::string_view msg1 = in.substr(0, nl);
  std::optional<std::string_view> msg2;
  if (nl != std::string_view::npos) msg2 = in.substr(nl + 1);

  // Server side.
  {
    proto::ScramServer server(r.secret, std::string(kServerNonce));
    auto first = server.client_first(msg1);
    if (!first) {
      FUZZ_CHECK(!server.error().empty());
      FUZZ_CHECK(!server.client_final(kClientFinal).has_value());  // no final after a failed first
    } else {
      FUZZ_CHECK(first->rfind("r=", 0) == 0);
      FUZZ_CHECK(first->find(std::string(kServerNonce) + ",s=" + std::string(kSaltB64) + ",i=4096") !=
                 std::string::npos);
      if (msg2) {
        auto fin = server.client_final(*msg2);
        if (fin) {
          FUZZ_CHECK(fin->rfind("v=", 0) == 0);
          FUZZ_CHECK(server.client_key() == r.client_key);  // only the right proof gets here
        } else {
          FUZZ_CHECK(!server.error().empty());
        }
        FUZZ_CHECK(!server.client_final(*msg2).has_value());  // never twice
      }
    }
  }

  // Client side, pass-through keys (no PBKDF2 whatever i= says).
  {
    proto::ScramClient c(r.client_key, r.secret.server_key, std::string(kClientNonce));
    client_side(c, msg1, msg2);
  }
  // Client side with the password, when the iteration count is cheap.
  if (auto it = iterations_of(msg1); !it || *it <= kMaxPasswordIterations) {
    proto::ScramClient c("pencil", std::string(kClientNonce));
    client_side(c, msg1, msg2);
  }

  // SASLInitialResponse body (mechanism NUL, Int32 length, data).
  if (auto s = proto::parse_sasl_initial_response(in)) {
    proto::ScramServer server(r.secret, std::string(kServerNonce));
    (void)server.client_first(s->data);
  }

  // Stored secrets and base64.
  if (auto secret = proto::ScramSecret::parse(in)) {
    FUZZ_CHECK(secret->iterations >= 1 && !secret->salt.empty());
    const std::string text = secret->to_string();
    auto again = proto::ScramSecret::parse(text);
    FUZZ_CHECK(again && again->iterations == secret->iterations && again->salt == secret->salt &&
               again->stored_key == secret->stored_key && again->server_key == secret->server_key);
    FUZZ_CHECK(again->to_string() == text);
  }
  if (auto raw = proto::base64_decode(in)) {
    FUZZ_CHECK(raw->size() == in.size() / 4 * 3 - (in.size() >= 1 && in.back() == '=') -
                                  (in.size() >= 2 && in[in.size() - 2] == '='));
    auto again = proto::base64_decode(proto::base64_encode(*raw));
    FUZZ_CHECK(again && *again == *raw);
  }
  const std::string enc = proto::base64_encode(in);
  auto dec = proto::base64_decode(enc);
  FUZZ_CHECK(dec && *dec == in);
  (void)proto::is_md5_hash(in);
  return 0;
}
