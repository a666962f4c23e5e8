// Cancel keys: the BackendKeyData pgpivot gives each client, and the lookup a
// CancelRequest makes (cancel.cpp, which also sends the request on to PostgreSQL).
#pragma once

#include <uv.h>

#include <cstdint>
#include <vector>

namespace pgpivot {

struct Client;
struct Server;

// BackendKeyData "pid" = worker << kCancelShardShift | (cancel slot + 1).
inline constexpr unsigned kCancelShardShift = 24;
inline constexpr std::uint32_t kCancelSlotMask = (1u << kCancelShardShift) - 1;

// One worker's clients by cancel slot. The "pid" of a client's BackendKeyData is
// its slot (plus one) with the worker's number in the high bits, the key 32 random
// bits, as PostgreSQL's: a lookup costs an index, and the table 8 bytes per client.
class CancelTable {
 public:
  explicit CancelTable(int shard) : shard_(shard) {}
  void add(Client* c);     // gives c its cancel_pid and cancel_key (once)
  void remove(Client* c);  // the client is going away
  // The client a CancelRequest names, or nullptr (unknown pid, wrong key).
  [[nodiscard]] Client* find(std::uint32_t pid, std::uint32_t key) const;
  // The worker that handed out `pid`.
  [[nodiscard]] static int owner(std::uint32_t pid) { return int(pid >> kCancelShardShift); }

 private:
  int shard_;
  std::vector<Client*> slots_;  // by pid - 1
  std::vector<std::uint32_t> free_;
};

// A CancelRequest for the query running on `s`, on a connection of its own
// (PostgreSQL's protocol: a new connection that sends the key and closes).
void send_cancel(uv_loop_t* loop, const Server& s);

}  // namespace pgpivot
