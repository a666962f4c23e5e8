// Unit tests of the console's tokenizer and result sets (pooler/control/admin_table.hpp).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "pooler/control/admin_table.hpp"
#include "protocol/wire.hpp"

using namespace pgpivot;
using namespace pgpivot::console;

TEST_CASE("console words: separators, '=', quotes", "[console]") {
  using V = std::vector<std::string>;
  CHECK(words("SHOW pools;") == V{"SHOW", "pools"});
  CHECK(words("  show\tPOOLS ;; ") == V{"show", "POOLS"});
  CHECK(words("SET default_pool_size=5") == V{"SET", "default_pool_size", "=", "5"});
  CHECK(words("SET a TO 'x y'") == V{"SET", "a", "TO", "'x y"});
  CHECK(words("PAUSE \"My Db\"") == V{"PAUSE", "\"My Db"});
  CHECK(words("SET s = 'it''s'") == V{"SET", "s", "=", "'it's"});  // doubled quote
  CHECK(words("SET s = 'open") == V{"SET", "s", "=", "'open"});    // unterminated: to the end
  CHECK(words("a,b") == V{"a", "b"});
  CHECK(words("").empty());
  CHECK(words(" ; ").empty());
}

TEST_CASE("console ident: bare words fold, quoted keep their case", "[console]") {
  CHECK(ident("MyDb") == "mydb");
  CHECK(ident("\"MyDb") == "MyDb");
  CHECK(ident("'Value") == "Value");
  CHECK(ident("") == "");
  CHECK(upper("wait_close") == "WAIT_CLOSE");
  CHECK(lower("SHOW") == "show");
}

TEST_CASE("console table: numeric columns are int8, NULLs are -1 lengths", "[console]") {
  Table t({{"name", false}, {"n", true}});
  t.row({str("a"), num(7)});
  t.row({std::nullopt, inum(-3)});
  std::string out;
  t.emit(out, "SHOW");
  proto::Reader r(out);
  // RowDescription
  REQUIRE(r.u8() == 'T');
  std::uint32_t len = *r.u32();
  CHECK(len == 4 + 2 + (5 + 18) + (2 + 18));  // length, count, "name" and "n" with 18 bytes each
  REQUIRE(r.u16() == 2);
  CHECK(r.cstr() == "name");
  r.u32();
  r.u16();
  CHECK(r.u32() == 25u);  // text
  CHECK(r.u16() == 0xffff);
  r.i32();
  r.u16();
  CHECK(r.cstr() == "n");
  r.u32();
  r.u16();
  CHECK(r.u32() == 20u);  // int8
  CHECK(r.u16() == 8);
  r.i32();
  r.u16();
  // DataRow 1: "a", "7"
  REQUIRE(r.u8() == 'D');
  r.u32();
  REQUIRE(r.u16() == 2);
  REQUIRE(r.i32() == 1);
  CHECK(r.bytes(1) == "a");
  REQUIRE(r.i32() == 1);
  CHECK(r.bytes(1) == "7");
  // DataRow 2: NULL, "-3"
  REQUIRE(r.u8() == 'D');
  r.u32();
  REQUIRE(r.u16() == 2);
  CHECK(r.i32() == -1);
  REQUIRE(r.i32() == 2);
  CHECK(r.bytes(2) == "-3");
  // CommandComplete
  REQUIRE(r.u8() == 'C');
  r.u32();
  CHECK(r.cstr() == "SHOW");
  CHECK(r.at_end());
  CHECK(!r.failed());
}

TEST_CASE("console fmt_time and fmt_ptr", "[console]") {
  CHECK(fmt_time(0) == "");
  CHECK(fmt_time(1700000000) == "2023-11-14 22:13:20 UTC");
  CHECK(fmt_ptr(nullptr) == "");
  int x = 0;
  CHECK(!fmt_ptr(&x).empty());
}
