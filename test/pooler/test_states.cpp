// Unit tests of the connection state transitions (pooler/states.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "pooler/states.hpp"

using namespace pgpivot;

TEST_CASE("states: every client state has an exit, Closing none", "[states]") {
  for (int i = 0; i < kClientStates; i++) {
    auto from = ClientState(i);
    INFO(state_name(from));
    int exits = 0;
    for (int j = 0; j < kClientStates; j++) exits += (j != i && allowed(from, ClientState(j))) ? 1 : 0;
    if (from == ClientState::Closing) {
      CHECK(exits == 0);
      CHECK(!allowed(from, from));
    } else {
      CHECK(allowed(from, ClientState::Closing));  // a connection can always be closed
      CHECK(exits >= 1);
    }
  }
}

TEST_CASE("states: the client transitions pgpivot makes", "[states]") {
  using C = ClientState;
  CHECK(allowed(C::Login, C::Login));   // the pooler's login list to the pool's
  CHECK(allowed(C::Login, C::Idle));    // logged in
  CHECK(allowed(C::Login, C::Cancel));  // a CancelRequest instead of a startup
  CHECK(allowed(C::Idle, C::Waiting));
  CHECK(allowed(C::Waiting, C::Active));
  CHECK(allowed(C::Waiting, C::Idle));  // refused after query_wait_timeout
  CHECK(allowed(C::Active, C::Idle));   // transaction done
  CHECK(allowed(C::Active, C::Waiting));  // server lost with a replayable BEGIN
  CHECK(allowed(C::Login, C::Waiting));   // auth_query waits for a server of the auth pool
  CHECK(allowed(C::Waiting, C::Login));   // ... and the login goes on once it has one
  // And those it must not.
  CHECK(!allowed(C::Login, C::Active));
  CHECK(!allowed(C::Login, C::Closing) == false);
  CHECK(!allowed(C::Cancel, C::Waiting));
  CHECK(!allowed(C::Cancel, C::Idle));
  CHECK(!allowed(C::Cancel, C::Cancel));
  CHECK(!allowed(C::Idle, C::Login));
  CHECK(!allowed(C::Closing, C::Idle));
}

TEST_CASE("states: the server transitions pgpivot makes", "[states]") {
  using S = ServerState;
  for (int i = 0; i < kServerStates; i++) {
    auto from = S(i);
    INFO(state_name(from));
    CHECK(allowed(from, S::Closing) == (from != S::Closing));
  }
  CHECK(allowed(S::Login, S::Idle));
  CHECK(allowed(S::Idle, S::Active));
  CHECK(allowed(S::Idle, S::Tested));   // server_check_query before reuse
  CHECK(allowed(S::Active, S::Tested));  // reset query after a client
  CHECK(allowed(S::Active, S::Idle));
  CHECK(allowed(S::Tested, S::Idle));
  CHECK(!allowed(S::Login, S::Active));  // a server is handed out only once it is ready
  CHECK(!allowed(S::Tested, S::Active));  // nor while its check runs
  CHECK(!allowed(S::Closing, S::Login));
}

TEST_CASE("states: names", "[states]") {
  CHECK(std::string(to_string(ClientState::Idle)) == "active");  // SHOW CLIENTS, as PgBouncer
  CHECK(std::string(state_name(ClientState::Idle)) == "Idle");
  CHECK(std::string(to_string(ServerState::Tested)) == "tested");
  CHECK(std::string(state_name(ServerState::Closing)) == "Closing");
}
