// Cancel keys: the BackendKeyData pgpivot gives each client, and the lookup a
// CancelRequest makes (cancel.cpp, which also sends the request on to PostgreSQL).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pgpivot {

struct Client;
struct Server;

// BackendKeyData "pid" = worker << kCancelShardShift | (cancel slot + 1).
inline constexpr unsigned kCancelShardShift = 24;
inline constexpr std::uint32_t kCancelSlotMask = (1u << kCancelShardShift) - 1;

// With peering (peer_id > 0) the key carries the issuing process's peer id in its
// top 14 bits and a forwarding TTL in the next 2 (3 when issued), so a
// CancelRequest reaching another process on the shared port (so_reuseport) is
// sent on to its owner, at most 3 hops; 16 bits stay random.
inline constexpr unsigned kPeerShift = 18;
inline constexpr std::uint32_t kCancelTtlMask = 3u << 16;
[[nodiscard]] inline int key_peer(std::uint32_t key) { return int(key >> kPeerShift); }

// One worker's clients by cancel slot. The "pid" of a client's BackendKeyData is
// its slot (plus one) with the worker's number in the high bits, the key 32 random
// bits, as PostgreSQL's: a lookup costs an index, and the table 8 bytes per client.
class CancelTable {
 public:
  explicit CancelTable(int shard) : shard_(shard) {}
  void set_peer_id(int id) { peer_id_ = id; }  // at start-up (peer_id needs a restart)
  [[nodiscard]] int peer_id() const { return peer_id_; }
  void add(Client* c);     // gives c its cancel_pid and cancel_key (once)
  void remove(Client* c);  // the client is going away
  // The client a CancelRequest names, or nullptr (unknown pid, wrong key).
  [[nodiscard]] Client* find(std::uint32_t pid, std::uint32_t key) const;
  // The worker that handed out `pid`.
  [[nodiscard]] static int owner(std::uint32_t pid) { return int(pid >> kCancelShardShift); }

 private:
  int shard_;
  int peer_id_ = 0;
  std::vector<Client*> slots_;  // by pid - 1
  std::vector<std::uint32_t> free_;
};

// A CancelRequest for the query running on `s`, on a connection of its own
// (PostgreSQL's protocol: a new connection that sends the key and closes).
void send_cancel(uv_loop_t* loop, const Server& s);
// The same with a given key, to `host` (a Unix-socket directory, an address or a
// name, resolved off the loop) and `port`: a cancel forwarded to a peer.
void send_cancel_to(uv_loop_t* loop, const std::string& host, int port, std::uint32_t pid, std::uint32_t key);

}  // namespace pgpivot
