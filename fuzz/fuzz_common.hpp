// Shared helpers for the libFuzzer targets in fuzz/ (built by scripts/fuzz).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

// A property that must hold for every input; a violation is reported as a crash
// (libFuzzer keeps the input).
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace proto = pgpivot::proto;

namespace fuzz {

inline std::string_view as_sv(const std::uint8_t* data, std::size_t n) {
  return {reinterpret_cast<const char*>(data), n};
}

// The body of the first message in `wire` (as written by a builder), checked with the framer.
inline std::string_view only_body(const std::string& wire, char type) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(wire.data());
  const proto::Frame f = proto::frame_message(p, wire.size(), 0xffffffffu);
  FUZZ_CHECK(f.status == proto::FrameStatus::Header);
  FUZZ_CHECK(f.type == type);
  FUZZ_CHECK(f.wire_size() == wire.size());
  return std::string_view(wire).substr(proto::kHeaderSize);
}

// Runs every parser of protocol/messages.hpp on `body`; when one accepts it, the
// matching builder must write a message that parses back to the same values.
inline void parse_all(std::string_view body) {
  if (auto a = proto::parse_auth_request(body)) {
    std::string out;
    bool rebuilt = true;
    switch (a->code) {
      case 0: proto::auth_ok(out); break;
      case 3: proto::auth_cleartext(out); break;
      case 5:
        FUZZ_CHECK(a->data.size() == 4);
        proto::auth_md5(out, reinterpret_cast<const std::uint8_t*>(a->data.data()));
        break;
      case 10: proto::auth_sasl(out, a->mechanisms); break;
      case 11: proto::auth_sasl_continue(out, a->data); break;
      case 12: proto::auth_sasl_final(out, a->data); break;
      default: rebuilt = false; break;
    }
    if (rebuilt) {
      auto b = proto::parse_auth_request(only_body(out, 'R'));
      FUZZ_CHECK(b && b->code == a->code && b->mechanisms == a->mechanisms);
      // A SASL list keeps the raw bytes after the code; the rebuilt one equals them.
      FUZZ_CHECK(b->data == a->data);
    }
  }
  if (auto s = proto::parse_parameter_status(body)) {
    std::string out;
    proto::parameter_status(out, s->name, s->value);
    FUZZ_CHECK(out.size() == body.size() + proto::kHeaderSize);
    auto t = proto::parse_parameter_status(only_body(out, 'S'));
    FUZZ_CHECK(t && t->name == s->name && t->value == s->value);
  }
  if (auto k = proto::parse_backend_key_data(body)) {
    std::string out;
    proto::backend_key_data(out, k->pid, k->key);
    FUZZ_CHECK(only_body(out, 'K') == body);
  }
  if (auto e = proto::parse_error_response(body)) {
    proto::ErrorFields f;
    f.severity = e->severity;
    f.sqlstate = e->sqlstate;
    f.message = e->message;
    f.detail = e->detail;
    f.hint = e->hint;
    std::string out;
    proto::error_response(out, f);
    auto g = proto::parse_error_response(only_body(out, 'E'));
    FUZZ_CHECK(g && g->severity == e->severity && g->sqlstate == e->sqlstate &&
               g->message == e->message && g->detail == e->detail && g->hint == e->hint);
  }
  if (auto pw = proto::parse_password_message(body)) {
    std::string out;
    proto::password_message(out, *pw);
    FUZZ_CHECK(only_body(out, 'p') == body);
  }
  if (auto s = proto::parse_sasl_initial_response(body)) {
    std::string out;
    proto::sasl_initial_response(out, s->mechanism, s->data);
    auto t = proto::parse_sasl_initial_response(only_body(out, 'p'));
    FUZZ_CHECK(t && t->mechanism == s->mechanism && t->data == s->data);
  }
  if (auto q = proto::parse_query(body)) {
    FUZZ_CHECK(q->size() + 1 == body.size());
    std::string out;
    proto::query(out, *q);
    FUZZ_CHECK(only_body(out, 'Q') == body);
  }
  if (auto p = proto::parse_parse(body)) {
    FUZZ_CHECK(p->name.size() + p->query.size() + 4 <= body.size());
    FUZZ_CHECK(p->name.find('\0') == std::string_view::npos);
    FUZZ_CHECK(p->query.find('\0') == std::string_view::npos);
  }
}

}  // namespace fuzz
