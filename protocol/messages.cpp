// Builders and parsers for the v3 protocol messages pgpivot sends or inspects.
#include "protocol/messages.hpp"

#include "protocol/startup.hpp"
#include "protocol/wire.hpp"

namespace pgpivot::proto {

namespace {

void auth_code(std::string& out, std::uint32_t code) {
  Writer w(out);
  w.begin('R').u32(code).end();
}

void error_like(std::string& out, char type, const ErrorFields& e) {
  Writer w(out);
  w.begin(type);
  w.u8('S').cstr(e.severity);
  w.u8('V').cstr(e.severity);
  w.u8('C').cstr(e.sqlstate);
  w.u8('M').cstr(e.message);
  if (!e.detail.empty()) w.u8('D').cstr(e.detail);
  if (!e.hint.empty()) w.u8('H').cstr(e.hint);
  w.u8(0);
  w.end();
}

}  // namespace

// ---- backend builders ----

void auth_ok(std::string& out) { auth_code(out, 0); }
void auth_cleartext(std::string& out) { auth_code(out, 3); }

void auth_md5(std::string& out, const std::uint8_t salt[4]) {
  Writer w(out);
  w.begin('R').u32(5).bytes(std::string_view(reinterpret_cast<const char*>(salt), 4)).end();
}

void auth_sasl(std::string& out, const std::vector<std::string>& mechanisms) {
  Writer w(out);
  w.begin('R').u32(10);
  for (const auto& m : mechanisms) w.cstr(m);
  w.u8(0);
  w.end();
}

void auth_sasl_continue(std::string& out, std::string_view data) {
  Writer w(out);
  w.begin('R').u32(11).bytes(data).end();
}

void auth_sasl_final(std::string& out, std::string_view data) {
  Writer w(out);
  w.begin('R').u32(12).bytes(data).end();
}

void parameter_status(std::string& out, std::string_view name, std::string_view value) {
  Writer w(out);
  w.begin('S').cstr(name).cstr(value).end();
}

void backend_key_data(std::string& out, std::uint32_t pid, std::uint32_t key) {
  Writer w(out);
  w.begin('K').u32(pid).u32(key).end();
}

void ready_for_query(std::string& out, char status) {
  Writer w(out);
  w.begin('Z').u8(std::uint8_t(status)).end();
}

void command_complete(std::string& out, std::string_view tag) {
  Writer w(out);
  w.begin('C').cstr(tag).end();
}

void empty_query_response(std::string& out) {
  Writer w(out);
  w.begin('I').end();
}

void negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                const std::vector<std::string>& unrecognized) {
  Writer w(out);
  w.begin('v').u32(newest_minor).u32(std::uint32_t(unrecognized.size()));
  for (const auto& o : unrecognized) w.cstr(o);
  w.end();
}

void error_response(std::string& out, const ErrorFields& e) { error_like(out, 'E', e); }
void notice_response(std::string& out, const ErrorFields& e) { error_like(out, 'N', e); }

void notice(std::string& out, std::string_view message) {
  ErrorFields n;
  n.severity = "NOTICE";
  n.sqlstate = "00000";
  n.message = std::string(message);
  notice_response(out, n);
}

void row_description(std::string& out, const std::vector<std::string>& columns) {
  Writer w(out);
  w.begin('T').u16(std::uint16_t(columns.size()));
  for (const auto& c : columns) {
    w.cstr(c);
    w.u32(0);           // table oid
    w.u16(0);           // column attnum
    w.u32(25);          // type oid: text
    w.u16(0xffff);      // typlen -1 (varlena)
    w.i32(-1);          // typmod
    w.u16(0);           // format: text
  }
  w.end();
}

void data_row(std::string& out, const std::vector<std::optional<std::string>>& values) {
  Writer w(out);
  w.begin('D').u16(std::uint16_t(values.size()));
  for (const auto& v : values) {
    if (!v) {
      w.i32(-1);
    } else {
      w.u32(std::uint32_t(v->size())).bytes(*v);
    }
  }
  w.end();
}

// ---- frontend builders ----

void startup_message(std::string& out, const std::vector<std::pair<std::string, std::string>>& params) {
  Writer w(out);
  w.begin_untyped().u32(kProtocol30);
  for (const auto& [k, v] : params) w.cstr(k).cstr(v);
  w.u8(0);
  w.end();
}

void password_message(std::string& out, std::string_view password) {
  Writer w(out);
  w.begin('p').cstr(password).end();
}

void sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data) {
  Writer w(out);
  w.begin('p').cstr(mechanism).u32(std::uint32_t(data.size())).bytes(data).end();
}

void sasl_response(std::string& out, std::string_view data) {
  Writer w(out);
  w.begin('p').bytes(data).end();
}

void query(std::string& out, std::string_view sql) {
  Writer w(out);
  w.begin('Q').cstr(sql).end();
}

void extended_query(std::string& out, std::string_view sql, const std::vector<std::optional<std::string>>& params) {
  Writer w(out);
  w.begin('P').cstr("").cstr(sql).u16(0).end();
  w.begin('B').cstr("").cstr("").u16(0).u16(std::uint16_t(params.size()));
  for (const auto& v : params) {
    if (!v) {
      w.i32(-1);
    } else {
      w.u32(std::uint32_t(v->size())).bytes(*v);
    }
  }
  w.u16(0).end();
  w.begin('D').u8('P').cstr("").end();
  w.begin('E').cstr("").u32(0).end();
  w.begin('S').end();
}

void terminate(std::string& out) {
  Writer w(out);
  w.begin('X').end();
}

void cancel_request(std::string& out, std::uint32_t pid, std::uint32_t key) {
  Writer w(out);
  w.begin_untyped().u32(kCancelRequestCode).u32(pid).u32(key).end();
}

void ssl_request(std::string& out) {
  Writer w(out);
  w.begin_untyped().u32(kSSLRequestCode).end();
}

// ---- parsers ----

std::optional<AuthRequest> parse_auth_request(std::string_view body) {
  Reader r(body);
  auto code = r.u32();
  if (!code) return std::nullopt;
  AuthRequest a;
  a.code = *code;
  switch (a.code) {
    case 0:
    case 3:
      if (!r.at_end()) return std::nullopt;
      break;
    case 5: {
      auto salt = r.bytes(4);
      if (!salt || !r.at_end()) return std::nullopt;
      a.data = std::string(*salt);
      break;
    }
    case 10: {
      for (;;) {
        auto m = r.cstr();
        if (!m) return std::nullopt;
        if (m->empty()) break;
        a.mechanisms.emplace_back(*m);
      }
      if (!r.at_end()) return std::nullopt;
      a.data = std::string(body.substr(4));
      break;
    }
    default:  // 11, 12 and methods pgpivot does not implement: raw bytes after the code
      a.data = std::string(r.rest());
      break;
  }
  return a;
}

std::optional<ParameterStatus> parse_parameter_status(std::string_view body) {
  Reader r(body);
  auto name = r.cstr();
  auto value = r.cstr();
  if (!name || !value || !r.at_end()) return std::nullopt;
  return ParameterStatus{std::string(*name), std::string(*value)};
}

std::optional<BackendKeyData> parse_backend_key_data(std::string_view body) {
  Reader r(body);
  auto pid = r.u32();
  auto key = r.u32();
  if (!pid || !key || !r.at_end()) return std::nullopt;
  return BackendKeyData{*pid, *key};
}

std::optional<ParsedError> parse_error_response(std::string_view body) {
  Reader r(body);
  ParsedError e;
  bool have_v = false;
  for (;;) {
    auto code = r.u8();
    if (!code) return std::nullopt;  // missing terminator
    if (*code == 0) break;
    auto value = r.cstr();
    if (!value) return std::nullopt;
    switch (*code) {
      case 'S':
        if (!have_v) e.severity = std::string(*value);  // V (non-localized) wins
        break;
      case 'V':
        e.severity = std::string(*value);
        have_v = true;
        break;
      case 'C': e.sqlstate = std::string(*value); break;
      case 'M': e.message = std::string(*value); break;
      case 'D': e.detail = std::string(*value); break;
      case 'H': e.hint = std::string(*value); break;
      default: break;  // unknown field: skipped
    }
  }
  if (!r.at_end()) return std::nullopt;
  return e;
}

std::optional<std::string> parse_password_message(std::string_view body) {
  Reader r(body);
  auto pw = r.cstr();
  if (!pw || !r.at_end()) return std::nullopt;
  return std::string(*pw);
}

std::optional<SaslInitialResponse> parse_sasl_initial_response(std::string_view body) {
  Reader r(body);
  auto mech = r.cstr();
  auto len = r.i32();
  if (!mech || !len) return std::nullopt;
  SaslInitialResponse s;
  s.mechanism = std::string(*mech);
  if (*len == -1) {  // no initial response
    if (!r.at_end()) return std::nullopt;
    return s;
  }
  if (*len < 0) return std::nullopt;
  auto data = r.bytes(std::size_t(*len));
  if (!data || !r.at_end()) return std::nullopt;
  s.data = std::string(*data);
  return s;
}

std::optional<std::string_view> parse_query(std::string_view body) {
  Reader r(body);
  auto sql = r.cstr();
  if (!sql || !r.at_end()) return std::nullopt;
  return sql;
}

std::optional<std::uint16_t> parse_row_description(std::string_view body) {
  Reader r(body);
  auto n = r.u16();
  if (!n) return std::nullopt;
  for (std::uint16_t i = 0; i < *n; i++) {
    // name, table oid, column number, type oid, type size, type modifier, format
    if (!r.cstr() || !r.bytes(4 + 2 + 4 + 2 + 4 + 2)) return std::nullopt;
  }
  if (!r.at_end()) return std::nullopt;
  return n;
}

std::optional<std::vector<std::optional<std::string>>> parse_data_row(std::string_view body) {
  Reader r(body);
  auto n = r.u16();
  if (!n) return std::nullopt;
  std::vector<std::optional<std::string>> out;
  out.reserve(*n);
  for (std::uint16_t i = 0; i < *n; i++) {
    auto len = r.i32();
    if (!len || *len < -1) return std::nullopt;
    if (*len == -1) {
      out.emplace_back(std::nullopt);
      continue;
    }
    auto v = r.bytes(std::size_t(*len));
    if (!v) return std::nullopt;
    out.emplace_back(std::string(*v));
  }
  if (!r.at_end()) return std::nullopt;
  return out;
}

std::optional<ParseMessage> parse_parse(std::string_view body) {
  Reader r(body);
  auto name = r.cstr();
  auto sql = r.cstr();
  auto nparams = r.u16();
  if (!name || !sql || !nparams) return std::nullopt;
  if (!r.bytes(std::size_t(*nparams) * 4) || !r.at_end()) return std::nullopt;
  return ParseMessage{*name, *sql};
}

}  // namespace pgpivot::proto
