// Tests of the PgBouncer userlist.txt parser and loader.
#include <catch2/catch.hpp>

#include "config/load.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using pgpivot::config::test::dump;
using pgpivot::config::test::TempDir;

namespace {

struct Parsed {
  std::map<std::string, User> users;
  std::vector<Error> errors;
};

Parsed parse(std::string_view text) {
  Parsed p;
  parse_userlist(text, "userlist.txt", p.users, p.errors);
  return p;
}

const std::string kKey = std::string(43, 'A') + "=";
const std::string kScram = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$" + kKey + ":" + kKey;

}  // namespace

TEST_CASE("userlist: quotes, escapes, comments, hashes", "[userlist]") {
  const std::string md5 = "md5" + std::string("0123456789abcdef0123456789abcdef");
  auto p = parse(
      "; PgBouncer comment\n"
      "# another comment\n"
      "\n"
      "   \t\n"
      "\"plain\" \"secret\"\n"
      "  \"he said \"\"hi\"\"\"\t\"pa\"\"ss\"   \n"
      "\"hashed\" \"" + md5 + "\"\r\n"
      "\"scram\" \"" + kScram + "\"\n"
      "\"nopw\" \"\"\n"
      "\"extra\" \"pw\" \"ignored\" fields\n"
      "\"last\" \"no newline\"");
  INFO(dump(p.errors));
  REQUIRE(p.errors.empty());
  REQUIRE(p.users.size() == 7);
  CHECK(p.users.at("plain").password == "secret");
  CHECK(p.users.at("plain").name == "plain");
  CHECK(p.users.at("he said \"hi\"").password == "pa\"ss");
  CHECK(p.users.at("hashed").password == md5);
  CHECK(p.users.at("scram").password == kScram);
  CHECK(p.users.at("nopw").password.empty());
  CHECK(p.users.at("extra").password == "pw");
  CHECK(p.users.at("last").password == "no newline");
}

TEST_CASE("userlist: bad lines are reported with their line", "[userlist][errors]") {
  auto p = parse(
      "\"good\" \"pw\"\n"                       // 1
      "bare word\n"                             // 2
      "\"unterminated \"\"pw\n"                 // 3  (the "" escape eats the quote)
      "\"nopassword\"\n"                        // 4
      "\"junk\"x \"pw\"\n"                      // 5
      "\"a\" unquoted\n"                        // 6
      "\"\" \"pw\"\n"                           // 7
      "\"good\" \"again\"\n"                    // 8
      "\"s\" \"SCRAM-SHA-256$1:salt\"\n"        // 9
      "\"fine\" \"pw\"\n");                     // 10
  INFO(dump(p.errors));
  REQUIRE(p.errors.size() == 8);
  std::vector<int> lines;
  for (const auto& e : p.errors) {
    lines.push_back(e.line);
    CHECK(e.file == "userlist.txt");
  }
  CHECK(lines == std::vector<int>{2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(p.errors[0].message.find("expected a quoted user name") != std::string::npos);
  CHECK(p.errors[1].message.find("unterminated") != std::string::npos);
  CHECK(p.errors[2].message == "missing password for user \"nopassword\"");
  CHECK(p.errors[3].message.find("unexpected text") != std::string::npos);
  CHECK(p.errors[4].message.find("expected a quoted password") != std::string::npos);
  CHECK(p.errors[5].message == "empty user name");
  CHECK(p.errors[6].key == "users.good");
  CHECK(p.errors[6].message == "duplicate user (first on line 1)");
  CHECK(p.errors[7].message.find("malformed SCRAM secret") != std::string::npos);
  CHECK(p.errors[0].to_string().rfind("userlist.txt:2: ", 0) == 0);
  // Good lines still load.
  CHECK(p.users.size() == 2);
  CHECK(p.users.at("good").password == "pw");
  CHECK(p.users.at("fine").password == "pw");
}

TEST_CASE("userlist: existing users keep their settings and non-empty password",
          "[userlist]") {
  std::map<std::string, User> users;
  User a;
  a.name = "a";
  a.password = "keep";
  a.pool_size = 5;
  User b;
  b.name = "b";
  b.pool_mode = PoolMode::Statement;
  users["a"] = a;
  users["b"] = b;
  std::vector<Error> errors;
  parse_userlist("\"a\" \"new\"\n\"b\" \"set\"\n\"c\" \"c\"\n", "u", users, errors);
  REQUIRE(errors.empty());
  CHECK(users.at("a").password == "keep");
  CHECK(users.at("a").pool_size == 5);
  CHECK(users.at("b").password == "set");
  CHECK(users.at("b").pool_mode == PoolMode::Statement);
  CHECK(users.at("c").password == "c");
}

TEST_CASE("load_userlist reads a file, or reports it can't", "[userlist]") {
  TempDir dir;
  std::string path = dir.write("userlist.txt", "\"u\" \"p\"\n\"bad\n");
  std::map<std::string, User> users;
  std::vector<Error> errors;
  load_userlist(path, users, errors);
  CHECK(users.at("u").password == "p");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].file == path);
  CHECK(errors[0].line == 2);

  errors.clear();
  load_userlist((dir.path() / "missing.txt").string(), users, errors);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].line == 0);
  CHECK(errors[0].message.find("cannot read") != std::string::npos);
}
