// Tests for message builders and parsers: split feeding, round trips and exact bytes.
#include <catch2/catch.hpp>

#include <random>

#include "helpers.hpp"
#include "protocol/messages.hpp"

using namespace pgpivot::proto;
using namespace std::string_literals;
using pgpivot::proto::test::from_hex;
using pgpivot::proto::test::split_typed;

TEST_CASE("auth requests, split at every byte offset") {
  std::string ok;
  auth_ok(ok);
  CHECK(ok == from_hex("52 00000008 00000000"));
  split_typed(ok, 'R', [](std::string_view b) {
    auto a = parse_auth_request(b);
    REQUIRE(a);
    CHECK(a->code == 0);
    CHECK(a->data.empty());
  });

  std::string clear;
  auth_cleartext(clear);
  split_typed(clear, 'R', [](std::string_view b) { CHECK(parse_auth_request(b)->code == 3); });

  const std::uint8_t salt[4] = {0xde, 0xad, 0x00, 0xef};
  std::string md5;
  auth_md5(md5, salt);
  CHECK(md5 == from_hex("52 0000000c 00000005 dead00ef"));
  split_typed(md5, 'R', [](std::string_view b) {
    auto a = parse_auth_request(b);
    REQUIRE(a);
    CHECK(a->code == 5);
    CHECK(a->data == "\xde\xad\x00\xef"s);
  });

  std::string sasl;
  auth_sasl(sasl, {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  split_typed(sasl, 'R', [](std::string_view b) {
    auto a = parse_auth_request(b);
    REQUIRE(a);
    CHECK(a->code == 10);
    CHECK(a->mechanisms == std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  });

  std::string cont;
  auth_sasl_continue(cont, "r=abc,s=c2FsdA==,i=4096");
  split_typed(cont, 'R', [](std::string_view b) {
    auto a = parse_auth_request(b);
    REQUIRE(a);
    CHECK(a->code == 11);
    CHECK(a->data == "r=abc,s=c2FsdA==,i=4096");
  });

  std::string fin;
  auth_sasl_final(fin, "v=xyz");
  split_typed(fin, 'R', [](std::string_view b) {
    auto a = parse_auth_request(b);
    REQUIRE(a);
    CHECK(a->code == 12);
    CHECK(a->data == "v=xyz");
  });

  CHECK_FALSE(parse_auth_request(""));
  CHECK_FALSE(parse_auth_request("\0\0\0"s));
  CHECK_FALSE(parse_auth_request("\0\0\0\5\1\2\3"s));           // short md5 salt
  CHECK_FALSE(parse_auth_request("\0\0\0\5\1\2\3\4\5"s));       // long md5 salt
  CHECK_FALSE(parse_auth_request("\0\0\0\0\0"s));               // trailing byte after ok
  CHECK_FALSE(parse_auth_request("\0\0\0\x0a" "SCRAM\0"s));     // mechanism list unterminated
  CHECK_FALSE(parse_auth_request("\0\0\0\x0a" "SCRAM"s));
}

TEST_CASE("parameter status, split at every byte offset") {
  std::string wire;
  parameter_status(wire, "server_version", "15.18");
  split_typed(wire, 'S', [](std::string_view b) {
    auto p = parse_parameter_status(b);
    REQUIRE(p);
    CHECK(p->name == "server_version");
    CHECK(p->value == "15.18");
  });
  CHECK_FALSE(parse_parameter_status("a\0b"s));
  CHECK_FALSE(parse_parameter_status("a\0b\0c"s));
  CHECK_FALSE(parse_parameter_status(""));
}

TEST_CASE("backend key data, split at every byte offset") {
  std::string wire;
  backend_key_data(wire, 12345, 0x89abcdef);
  CHECK(wire == from_hex("4b 0000000c 00003039 89abcdef"));
  split_typed(wire, 'K', [](std::string_view b) {
    auto k = parse_backend_key_data(b);
    REQUIRE(k);
    CHECK(k->pid == 12345);
    CHECK(k->key == 0x89abcdef);
  });
  CHECK_FALSE(parse_backend_key_data("1234567"));
  CHECK_FALSE(parse_backend_key_data("123456789"));
}

TEST_CASE("error and notice responses round-trip, split at every byte offset") {
  ErrorFields e;
  e.severity = "FATAL";
  e.sqlstate = "28P01";
  e.message = "password authentication failed for user \"bob\"";
  e.detail = "some detail";
  e.hint = "some hint";
  std::string wire;
  error_response(wire, e);
  split_typed(wire, 'E', [&](std::string_view b) {
    auto p = parse_error_response(b);
    REQUIRE(p);
    CHECK(p->severity == e.severity);
    CHECK(p->sqlstate == e.sqlstate);
    CHECK(p->message == e.message);
    CHECK(p->detail == e.detail);
    CHECK(p->hint == e.hint);
  });

  ErrorFields n;
  n.severity = "WARNING";
  n.sqlstate = "01000";
  n.message = "careful";
  std::string nw;
  notice_response(nw, n);
  CHECK(nw == "N\0\0\0\x27" "SWARNING\0VWARNING\0C01000\0Mcareful\0\0"s);
  split_typed(nw, 'N', [&](std::string_view b) {
    auto p = parse_error_response(b);
    REQUIRE(p);
    CHECK(p->severity == "WARNING");
    CHECK(p->sqlstate == "01000");
    CHECK(p->message == "careful");
    CHECK(p->detail.empty());
    CHECK(p->hint.empty());
  });
  std::string plain;
  notice(plain, "queued");
  CHECK(plain == "N\0\0\0\x24" "SNOTICE\0VNOTICE\0C00000\0Mqueued\0\0"s);

  // Unknown fields are skipped; V (non-localized) wins over a localized S.
  auto p = parse_error_response("SFEHLER\0Fpostgres.c\0VERROR\0C42P01\0Mno table\0L123\0\0"s);
  REQUIRE(p);
  CHECK(p->severity == "ERROR");
  CHECK(p->sqlstate == "42P01");
  CHECK(p->message == "no table");
  CHECK_FALSE(parse_error_response("SERROR\0"s));       // no terminator
  CHECK_FALSE(parse_error_response("SERROR"s));         // unterminated value
  CHECK_FALSE(parse_error_response("SERROR\0\0x"s));    // bytes after terminator
  CHECK_FALSE(parse_error_response(""));
}

TEST_CASE("password and SASL messages, split at every byte offset") {
  std::string pw;
  password_message(pw, "md5abcdef");
  CHECK(pw == "p\0\0\0\x0e" "md5abcdef\0"s);
  split_typed(pw, 'p', [](std::string_view b) { CHECK(parse_password_message(b) == std::optional<std::string>("md5abcdef")); });
  CHECK_FALSE(parse_password_message("abc"));
  CHECK_FALSE(parse_password_message("abc\0d"s));

  std::string init;
  sasl_initial_response(init, "SCRAM-SHA-256", "n,,n=,r=abc");
  split_typed(init, 'p', [](std::string_view b) {
    auto s = parse_sasl_initial_response(b);
    REQUIRE(s);
    CHECK(s->mechanism == "SCRAM-SHA-256");
    CHECK(s->data == "n,,n=,r=abc");
  });
  auto none = parse_sasl_initial_response("SCRAM-SHA-256\0\xff\xff\xff\xff"s);
  REQUIRE(none);
  CHECK(none->data.empty());
  CHECK_FALSE(parse_sasl_initial_response("M\0\0\0\0\x05" "abcd"s));   // short
  CHECK_FALSE(parse_sasl_initial_response("M\0\0\0\0\x02" "abcd"s));   // trailing
  CHECK_FALSE(parse_sasl_initial_response("M\0\xff\xff\xff\xfe"s));    // negative
  CHECK_FALSE(parse_sasl_initial_response("M\0\0\0"s));

  std::string resp;
  sasl_response(resp, "c=biws,r=abc,p=xyz");
  CHECK(resp == "p\0\0\0\x16" "c=biws,r=abc,p=xyz"s);
  split_typed(resp, 'p', [](std::string_view b) { CHECK(b == "c=biws,r=abc,p=xyz"); });
}

TEST_CASE("query and parse messages, split at every byte offset") {
  std::string q;
  query(q, "SELECT 1");
  CHECK(q == "Q\0\0\0\x0d" "SELECT 1\0"s);
  split_typed(q, 'Q', [](std::string_view b) { CHECK(parse_query(b) == std::optional<std::string_view>("SELECT 1")); });
  CHECK_FALSE(parse_query("SELECT 1"));
  CHECK_FALSE(parse_query("SELECT 1\0x"s));

  std::string p;
  Writer(p).begin('P').cstr("stmt1").cstr("SELECT $1::int").u16(1).u32(23).end();
  split_typed(p, 'P', [](std::string_view b) {
    auto m = parse_parse(b);
    REQUIRE(m);
    CHECK(m->name == "stmt1");
    CHECK(m->query == "SELECT $1::int");
  });
  const std::string unnamed_body = "\0SELECT 1\0\0\0"s;  // the result views into it
  auto unnamed = parse_parse(unnamed_body);
  REQUIRE(unnamed);
  CHECK(unnamed->name.empty());
  CHECK(unnamed->query == "SELECT 1");
  CHECK_FALSE(parse_parse("\0SELECT 1\0\0\1"s));           // promised param type missing
  CHECK_FALSE(parse_parse("\0SELECT 1\0\0\0\0"s));         // trailing byte
  CHECK_FALSE(parse_parse("\0SELECT 1\0"s));               // no param count
  CHECK_FALSE(parse_parse("stmt"s));
}

TEST_CASE("extended_query writes Parse, Bind, Describe, Execute and Sync for one unnamed statement") {
  std::string q;
  extended_query(q, "SELECT $1", {std::string("ab"), std::nullopt});
  std::string want;
  Writer w(want);
  w.begin('P').cstr("").cstr("SELECT $1").u16(0).end();
  w.begin('B').cstr("").cstr("").u16(0).u16(2).u32(2).bytes("ab").i32(-1).u16(0).end();
  w.begin('D').u8('P').cstr("").end();
  w.begin('E').cstr("").u32(0).end();
  w.begin('S').end();
  CHECK(q == want);
  // The Parse at the front is what parse_parse reads back.
  std::string parse_msg = q.substr(0, 1 + 4 + 1 + 10 + 2);
  split_typed(parse_msg, 'P', [](std::string_view b) {
    auto m = parse_parse(b);
    REQUIRE(m);
    CHECK(m->query == "SELECT $1");
  });
}

TEST_CASE("RowDescription and DataRow parse at every byte split, NULLs and bad lengths") {
  std::string t;
  Writer(t).begin('T').u16(2).cstr("rolname").u32(1260).u16(1).u32(19).u16(64).i32(-1).u16(0)
      .cstr("rolpassword").u32(1260).u16(2).u32(25).u16(0xffff).i32(-1).u16(0).end();
  split_typed(t, 'T', [](std::string_view b) { CHECK(parse_row_description(b) == std::optional<std::uint16_t>(2)); });
  CHECK_FALSE(parse_row_description("\0\1name\0"s));               // a field cut short
  CHECK_FALSE(parse_row_description(std::string_view("\0\0x", 3)));  // trailing byte
  CHECK(parse_row_description("\0\0"s) == std::optional<std::uint16_t>(0));

  std::string d;
  Writer(d).begin('D').u16(3).u32(7).bytes("someone").i32(-1).u32(0).end();
  split_typed(d, 'D', [](std::string_view b) {
    auto row = parse_data_row(b);
    REQUIRE(row);
    REQUIRE(row->size() == 3);
    CHECK((*row)[0] == std::optional<std::string>("someone"));
    CHECK_FALSE((*row)[1].has_value());
    CHECK((*row)[2] == std::optional<std::string>(""));
  });
  CHECK_FALSE(parse_data_row("\0\1\0\0\0\x09" "abc"s));   // length past the end
  CHECK_FALSE(parse_data_row("\0\1\xff\xff\xff\xfe"s));  // -2 is no length
  CHECK_FALSE(parse_data_row("\0\1\0\0\0\0x"s));        // trailing byte
  CHECK_FALSE(parse_data_row("\0"s));
}

TEST_CASE("startup message builder round-trips through parse_startup") {
  std::string s;
  startup_message(s, {{"user", "u"}, {"database", "d"}});
  CHECK(s == "\0\0\0\x1b\0\3\0\0user\0u\0database\0d\0\0"s);
  auto b = pgpivot::proto::test::to_bytes(s);
  auto p = parse_startup(b.data(), b.size());
  REQUIRE(p.kind == StartupKind::Startup);
  CHECK(*p.get("user") == "u");
  CHECK(*p.get("database") == "d");
}

TEST_CASE("row_description and data_row match hand-computed bytes") {
  std::string rd;
  row_description(rd, {"a"});
  CHECK(rd == from_hex("54 0000001a 0001 6100 00000000 0000 00000019 ffff ffffffff 0000"));
  std::string two;
  row_description(two, {"db", "n"});
  auto f = frame_message(reinterpret_cast<const std::uint8_t*>(two.data()), two.size(), 1 << 20);
  REQUIRE(f.status == FrameStatus::Header);
  CHECK(f.wire_size() == two.size());
  CHECK(f.length == 4 + 2 + (3 + 18) + (2 + 18));

  std::string dr;
  data_row(dr, {std::string("ab"), std::nullopt, std::string()});
  CHECK(dr == from_hex("44 00000014 0003 00000002 6162 ffffffff 00000000"));
}

TEST_CASE("other backend builders produce the documented bytes") {
  std::string z;
  ready_for_query(z, 'T');
  CHECK(z == "Z\0\0\0\x05T"s);
  std::string c;
  command_complete(c, "SHOW");
  CHECK(c == "C\0\0\0\x09SHOW\0"s);
  std::string i;
  empty_query_response(i);
  CHECK(i == "I\0\0\0\x04"s);
  std::string x;
  terminate(x);
  CHECK(x == "X\0\0\0\x04"s);
  std::string v;
  negotiate_protocol_version(v, 0, {"_pq_.foo"});
  CHECK(v == "v\0\0\0\x15\0\0\0\0\0\0\0\x01_pq_.foo\0"s);
}

TEST_CASE("random bodies through every parser do not crash") {
  std::mt19937 rng(5802);
  for (int i = 0; i < 10000; ++i) {
    std::string body(rng() % 40, '\0');
    for (auto& ch : body) ch = char(rng() % 4 == 0 ? 0 : rng());
    (void)parse_auth_request(body);
    (void)parse_parameter_status(body);
    (void)parse_backend_key_data(body);
    (void)parse_error_response(body);
    (void)parse_password_message(body);
    (void)parse_sasl_initial_response(body);
    (void)parse_query(body);
    (void)parse_parse(body);
    (void)parse_row_description(body);
    (void)parse_data_row(body);
    auto fr = frame_message(reinterpret_cast<const std::uint8_t*>(body.data()), body.size(), 1 << 20);
    CHECK((fr.status == FrameStatus::NeedMore || fr.status == FrameStatus::Invalid || fr.status == FrameStatus::Header));
  }
}
