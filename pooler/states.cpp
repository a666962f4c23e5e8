#include "pooler/states.hpp"

namespace pgpivot {

const char* to_string(ClientState s) {
  switch (s) {
    case ClientState::Login: return "login";
    case ClientState::Idle: return "active";  // as PgBouncer's SHOW CLIENTS: linked or not
    case ClientState::Waiting: return "waiting";
    case ClientState::Active: return "active";
    case ClientState::Cancel: return "cancel";
    case ClientState::Closing: return "closing";
  }
  return "?";
}

const char* to_string(ServerState s) {
  switch (s) {
    case ServerState::Login: return "login";
    case ServerState::Idle: return "idle";
    case ServerState::Active: return "active";
    case ServerState::Used: return "used";
    case ServerState::Tested: return "tested";
    case ServerState::Closing: return "closing";
  }
  return "?";
}

const char* state_name(ClientState s) {
  static const char* const names[kClientStates] = {"Login", "Idle", "Waiting", "Active", "Cancel", "Closing"};
  return unsigned(s) < unsigned(kClientStates) ? names[unsigned(s)] : "?";
}

const char* state_name(ServerState s) {
  static const char* const names[kServerStates] = {"Login", "Idle", "Active", "Used", "Tested", "Closing"};
  return unsigned(s) < unsigned(kServerStates) ? names[unsigned(s)] : "?";
}

namespace {

template <typename S>
constexpr unsigned bit(S s) {
  return 1u << unsigned(s);
}

}  // namespace

bool allowed(ClientState from, ClientState to) {
  using C = ClientState;
  if (to == C::Closing) return from != C::Closing;
  unsigned next = 0;
  switch (from) {
    // Login -> Login: from the pooler's login list to the pool's, to wait for its parameters.
    // Login -> Waiting -> Login: waiting in the auth pool for a server to run auth_query.
    case C::Login: next = bit(C::Login) | bit(C::Idle) | bit(C::Cancel) | bit(C::Waiting); break;
    case C::Idle: next = bit(C::Idle) | bit(C::Waiting) | bit(C::Active); break;
    // Waiting -> Idle: the request was refused (query_wait_timeout, a refusing cluster).
    case C::Waiting: next = bit(C::Waiting) | bit(C::Active) | bit(C::Idle) | bit(C::Login); break;
    // Active -> Waiting: the server was lost with only a BEGIN in flight (replayed).
    case C::Active: next = bit(C::Active) | bit(C::Idle) | bit(C::Waiting); break;
    case C::Cancel:
    case C::Closing: next = 0; break;
  }
  return next & bit(to);
}

bool allowed(ServerState from, ServerState to) {
  using S = ServerState;
  if (to == S::Closing) return from != S::Closing;
  unsigned next = 0;
  switch (from) {
    // Login -> Login: entering the pool's list; a connect_query runs from Idle (Tested).
    case S::Login: next = bit(S::Login) | bit(S::Idle); break;
    case S::Idle: next = bit(S::Idle) | bit(S::Active) | bit(S::Tested) | bit(S::Used); break;
    case S::Active: next = bit(S::Active) | bit(S::Idle) | bit(S::Tested) | bit(S::Used); break;
    case S::Used: next = bit(S::Used) | bit(S::Idle) | bit(S::Tested); break;
    case S::Tested: next = bit(S::Tested) | bit(S::Idle); break;
    case S::Closing: next = 0; break;
  }
  return next & bit(to);
}

}  // namespace pgpivot
