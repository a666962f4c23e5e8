// Builders and parsers for the PostgreSQL v3 messages pgpivot creates or inspects.
// Builders append to a std::string; parsers take the message body (bytes after
// the length field) and return nullopt on malformed input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgpivot::proto {

// ---- backend (server -> client) message builders ----
void auth_ok(std::string& out);
void auth_cleartext(std::string& out);
void auth_md5(std::string& out, const std::uint8_t salt[4]);
void auth_sasl(std::string& out, const std::vector<std::string>& mechanisms);
void auth_sasl_continue(std::string& out, std::string_view data);
void auth_sasl_final(std::string& out, std::string_view data);
void parameter_status(std::string& out, std::string_view name, std::string_view value);
void backend_key_data(std::string& out, std::uint32_t pid, std::uint32_t key);
void ready_for_query(std::string& out, char status);  // 'I', 'T' or 'E'
void command_complete(std::string& out, std::string_view tag);
void empty_query_response(std::string& out);
void negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                const std::vector<std::string>& unrecognized);

struct ErrorFields {
  std::string severity = "ERROR";  // ERROR, FATAL, PANIC / NOTICE, WARNING, LOG...
  std::string sqlstate = "XX000";
  std::string message;
  std::string detail;  // omitted when empty
  std::string hint;    // omitted when empty
};
void error_response(std::string& out, const ErrorFields& e);   // 'E' with S, V, C, M[, D][, H]
void notice_response(std::string& out, const ErrorFields& e);  // 'N'
void notice(std::string& out, std::string_view message);      // 'N': NOTICE, SQLSTATE 00000

// Text-format result sets (all columns typed text, oid 25), for the admin console.
void row_description(std::string& out, const std::vector<std::string>& columns);
// A column value of std::nullopt is sent as SQL NULL (-1 length).
void data_row(std::string& out, const std::vector<std::optional<std::string>>& values);

// ---- frontend (client -> server) message builders ----
void startup_message(std::string& out, const std::vector<std::pair<std::string, std::string>>& params);
void password_message(std::string& out, std::string_view password);  // 'p' + cstring
void sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data);
void sasl_response(std::string& out, std::string_view data);
void query(std::string& out, std::string_view sql);
// One statement through the extended protocol, unnamed: Parse (no parameter types),
// Bind (text parameters, NULL for nullopt; text results), Describe of the portal
// (so a RowDescription comes back), Execute, Sync.
void extended_query(std::string& out, std::string_view sql, const std::vector<std::optional<std::string>>& params);
void terminate(std::string& out);
void cancel_request(std::string& out, std::uint32_t pid, std::uint32_t key);
void ssl_request(std::string& out);

// ---- parsers (body = bytes after the Int32 length) ----
struct AuthRequest {
  std::uint32_t code = 0;  // 0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASL continue, 12 SASL final
  std::string data;        // md5: 4 salt bytes; SASL: raw bytes after the code
  std::vector<std::string> mechanisms;  // code 10 only
};
[[nodiscard]] std::optional<AuthRequest> parse_auth_request(std::string_view body);

struct ParameterStatus { std::string name, value; };
[[nodiscard]] std::optional<ParameterStatus> parse_parameter_status(std::string_view body);

struct BackendKeyData { std::uint32_t pid = 0, key = 0; };
[[nodiscard]] std::optional<BackendKeyData> parse_backend_key_data(std::string_view body);

// 'E' / 'N' fields; unknown field codes are skipped.
struct ParsedError {
  std::string severity, sqlstate, message, detail, hint;
};
[[nodiscard]] std::optional<ParsedError> parse_error_response(std::string_view body);

// Client 'p' messages; which one it is depends on the auth exchange in progress.
[[nodiscard]] std::optional<std::string> parse_password_message(std::string_view body);
struct SaslInitialResponse { std::string mechanism; std::string data; };
[[nodiscard]] std::optional<SaslInitialResponse> parse_sasl_initial_response(std::string_view body);
// SASLResponse body is the raw data; no parser needed.

// 'T' RowDescription body -> the number of columns (the field descriptions are checked).
[[nodiscard]] std::optional<std::uint16_t> parse_row_description(std::string_view body);
// 'D' DataRow body -> the column values, std::nullopt for SQL NULL.
[[nodiscard]] std::optional<std::vector<std::optional<std::string>>> parse_data_row(std::string_view body);

// Query 'Q' body -> the SQL text (without NUL).
[[nodiscard]] std::optional<std::string_view> parse_query(std::string_view body);
// Parse 'P' body -> statement name and query text.
struct ParseMessage { std::string_view name, query; };
[[nodiscard]] std::optional<ParseMessage> parse_parse(std::string_view body);

}  // namespace pgpivot::proto
