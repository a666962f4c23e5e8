// Tests for classify_sql: which statement texts may commit, which only start a transaction.
#include <catch2/catch.hpp>

#include <string>

#include "protocol/sql_class.hpp"

using namespace pgpivot::proto;

namespace {
bool commits(std::string_view s) { return classify_sql(s).may_commit; }
bool begin_only(std::string_view s) { return classify_sql(s).begin_only; }
}  // namespace

TEST_CASE("classify_sql: commits at the top level") {
  for (const char* s : {"COMMIT", "commit", "  Commit ;", "END", "end transaction", "COMMIT WORK",
                        "COMMIT AND CHAIN", "COMMIT PREPARED 'gid'", "PREPARE TRANSACTION 'gid'",
                        "prepare\n transaction 'x'", "INSERT INTO t VALUES (1); COMMIT",
                        "INSERT INTO t VALUES (1);COMMIT;", "/* c */ COMMIT", "/* a /* nested */ b */COMMIT",
                        "-- comment\nCOMMIT", "SELECT 1; -- x\n END", "SELECT ';'; COMMIT",
                        "SELECT $$;$$; COMMIT", "SELECT $a$ it's $$ ; $a$; END",
                        "SELECT E'\\';'; COMMIT", "SELECT \"a;b\"; COMMIT", "BEGIN; INSERT INTO t VALUES (1); COMMIT",
                        "UPDATE t SET a = 1 WHERE b = 'x''; COMMIT'; COMMIT"}) {
    INFO(s);
    CHECK(commits(s));
  }
}

TEST_CASE("classify_sql: no commit") {
  for (const char* s : {"", ";", "SELECT 'COMMIT'", "SELECT 1", "SELECT commit FROM t", "SELECT 'x; COMMIT'",
                        "SELECT $$; COMMIT$$", "SELECT $tag$ ; COMMIT $tag$", "SELECT E'\\'; COMMIT'",
                        "SELECT \"x; COMMIT\"", "/* COMMIT */ SELECT 1", "/* /* */ COMMIT */ SELECT 1",
                        "-- COMMIT\nSELECT 1", "SELECT 1 -- ; COMMIT", "ROLLBACK", "ABORT", "ROLLBACK PREPARED 'g'",
                        "PREPARE p AS SELECT 1", "INSERT INTO commit VALUES (1)", "SELECT endx", "COMMITTED",
                        "BEGIN", "SELECT $1; SELECT 'a", "SELECT U&'d\\0061t; COMMIT'", "SELECT B'0101'",
                        "SELECT 1 /* unterminated ; COMMIT", "(COMMIT)"}) {
    INFO(s);
    CHECK_FALSE(commits(s));
  }
}

TEST_CASE("classify_sql: parameters are not dollar quotes") {
  CHECK(commits("SELECT $1; COMMIT"));
  CHECK(commits("SELECT a$b$c; COMMIT"));  // $ inside an identifier
  CHECK_FALSE(commits("SELECT $x$ $1 ; COMMIT"));  // unterminated dollar quote runs to the end
}

TEST_CASE("classify_sql: pure transaction starts") {
  for (const char* s : {"BEGIN", "begin;", "BEGIN WORK", "BEGIN TRANSACTION", "BEGIN ISOLATION LEVEL SERIALIZABLE",
                        "begin transaction isolation level repeatable read, read only", "START TRANSACTION",
                        "start transaction read write", "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
                        "/* x */ BEGIN", "-- x\nBEGIN ;;", "  BEGIN ; ; "}) {
    INFO(s);
    CHECK(begin_only(s));
    CHECK_FALSE(commits(s));
  }
  for (const char* s : {"", "BEGIN; SELECT 1", "BEGIN; COMMIT", "SELECT 1; BEGIN", "START", "START x",
                        "SELECT 'BEGIN'", "BEGINNING", "BEGIN; INSERT INTO t VALUES (1)", "BEGIN; BEGIN",
                        "DO $$BEGIN PERFORM 1; END$$", "ABORT"}) {
    INFO(s);
    CHECK_FALSE(begin_only(s));
  }
}

TEST_CASE("classify_sql: counts statements and bits") {
  CHECK(classify_sql("SELECT 1; SELECT 2;; SELECT 3").statements == 3);
  CHECK(classify_sql(" ; -- only a comment").statements == 0);
  CHECK(classify_sql("DO $$BEGIN PERFORM 1; END$$").statements == 1);
  CHECK_FALSE(commits("DO $$BEGIN PERFORM 1; END$$"));
  CHECK(sql_class_bits("COMMIT") == kSqlMayCommit);
  CHECK(sql_class_bits("BEGIN") == kSqlBeginOnly);
  CHECK(sql_class_bits("SELECT 1") == 0);
}

TEST_CASE("classify_sql: errs towards may-commit in function bodies written without quotes") {
  // BEGIN ATOMIC bodies hold ';' at the top level; a following END reads as a commit.
  CHECK(commits("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END"));
}

TEST_CASE("classify_sql: long text with many literals") {
  std::string s;
  for (int i = 0; i < 2000; i++) s += "INSERT INTO t VALUES ('COMMIT;', $$END;$$, \"q;\"); ";
  CHECK_FALSE(commits(s));
  CHECK(classify_sql(s).statements == 2000);
  s += "COMMIT";
  CHECK(commits(s));
}
