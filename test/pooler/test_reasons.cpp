// Unit tests of the reason table (pooler/reasons.hpp): every error pgpivot sends has a
// valid SQLSTATE of the class its kind needs, and messages fill their marks in order.
#include <catch2/catch.hpp>

#include <cctype>
#include <set>
#include <string>

#include "pooler/reasons.hpp"

using namespace pgpivot;

TEST_CASE("reasons: one entry per reason, each a well-formed SQLSTATE", "[reasons]") {
  std::set<std::string> texts;
  for (int i = 0; i < kReasons; i++) {
    const ReasonInfo& r = reason_info(Reason(i));
    INFO("reason " << i << ": " << r.text);
    CHECK(int(r.reason) == i);
    REQUIRE(r.text != nullptr);
    CHECK(std::string(r.text).size() > 0);
    if (r.sqlstate) {
      std::string s = r.sqlstate;
      REQUIRE(s.size() == 5);
      for (char ch : s) CHECK((std::isdigit(static_cast<unsigned char>(ch)) || std::isupper(static_cast<unsigned char>(ch))));
      CHECK(s.substr(0, 2) != "00");  // not a success
    } else {
      CHECK(!r.tell);  // nothing to tell without a SQLSTATE
    }
  }
}

TEST_CASE("reasons: the SQLSTATE classes clients act on", "[reasons]") {
  // Retry-safe and commit-unknown outcomes of a failover (docs/failover.md).
  CHECK(std::string(sqlstate_of(Reason::TransactionLost)) == "40001");
  CHECK(std::string(sqlstate_of(Reason::CommitUnknown)) == "40003");
  CHECK(std::string(sqlstate_of(Reason::ClusterRefusing)) == "08006");
  // What PgBouncer and PostgreSQL send for the same events.
  CHECK(std::string(sqlstate_of(Reason::TooManyClients)) == "53300");
  CHECK(std::string(sqlstate_of(Reason::NoSuchDatabase)) == "3D000");
  CHECK(std::string(sqlstate_of(Reason::PasswordFailed)) == "28P01");
  CHECK(std::string(sqlstate_of(Reason::ShuttingDown)) == "57P01");
  CHECK(std::string(sqlstate_of(Reason::QueryWaitTimeout)) == "57014");
  CHECK(std::string(sqlstate_of(Reason::IdleTransactionTimeout)) == "25P03");
  // Every server login failure is a connection or an authorization problem.
  for (Reason r : {Reason::ServerConnectFailed, Reason::ServerResolveFailed, Reason::ServerConnectTimeout,
                   Reason::ServerNoScramKeys, Reason::ServerWantsCleartext, Reason::ServerScramSignature}) {
    std::string cls = std::string(sqlstate_of(r)).substr(0, 2);
    INFO(reason_info(r).text);
    CHECK((cls == "08" || cls == "28"));
  }
}

TEST_CASE("reasons: messages fill their marks in order", "[reasons]") {
  CHECK(reason_text(Reason::NoSuchDatabase, {"shop"}) == "database \"shop\" does not exist");
  CHECK(reason_text(Reason::ClusterRefusing, {"main", "the standby is down"}) == "cluster main: the standby is down");
  CHECK(reason_text(Reason::ServerConnectFailed, {"db1:5432", "connection refused"}) ==
        "could not connect to server db1:5432: connection refused");
  CHECK(reason_text(Reason::ClusterRefusing, {"main"}) == "cluster main: ");  // a missing argument reads as ""
  CHECK(reason_text(Reason::TooManyClients) == "no more connections allowed (max_client_conn)");
  CHECK(reason_text(Reason::CertificateFailed, {""}) == "certificate authentication failed");
}
