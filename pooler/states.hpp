// The states of client and server connections, and which transitions between them
// exist (PgBouncer's change_client_state / change_server_state). Every state change
// goes through Pooler::client_change_state / server_change_state, which check it here.
// No libuv, no sockets: unit-tested in test/pooler/test_states.cpp.
#pragma once

#include <cstdint>

namespace pgpivot {

enum class ClientState : std::uint8_t {
  Login,    // startup, authentication, waiting for the pool's parameters
  Idle,     // logged in, no server linked (cl_active without a link)
  Waiting,  // has a request, waits for a server (cl_waiting)
  Active,   // linked to a server (cl_active)
  Cancel,   // carries a CancelRequest
  Closing,
};
inline constexpr int kClientStates = 6;

enum class ServerState : std::uint8_t {
  Login,   // connecting and authenticating (sv_login)
  Idle,    // ready, unlinked (sv_idle)
  Active,  // linked to a client (sv_active)
  Used,    // released, must be checked before reuse (sv_used)
  Tested,  // running the reset or check query (sv_tested)
  Closing,
};
inline constexpr int kServerStates = 6;

// As SHOW CLIENTS / SHOW SERVERS name them (an idle client is "active" there).
[[nodiscard]] const char* to_string(ClientState s);
[[nodiscard]] const char* to_string(ServerState s);
// The enumerator's own name ("Idle"), for log lines.
[[nodiscard]] const char* state_name(ClientState s);
[[nodiscard]] const char* state_name(ServerState s);

// Whether a connection in state `from` may go to `to`. Staying in a state is allowed
// (it moves the connection to the back of its list) except for Cancel and Closing;
// Closing is reached from everywhere and left never.
[[nodiscard]] bool allowed(ClientState from, ClientState to);
[[nodiscard]] bool allowed(ServerState from, ServerState to);

}  // namespace pgpivot
