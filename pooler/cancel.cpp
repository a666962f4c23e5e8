// Cancel keys and CancelRequests: the table of this worker's keys, a request
// passed to the worker that owns its key, and the request sent on to PostgreSQL on
// a connection of its own.
#include "pooler/cancel.hpp"

#include <netdb.h>

#include <string>

#include "pooler/pooler.hpp"
#include "protocol/messages.hpp"

namespace pgpivot {

void CancelTable::add(Client* c) {
  if (c->cancel_pid) return;
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = std::uint32_t(slots_.size());
    slots_.push_back(nullptr);
  }
  slots_[slot] = c;
  // The worker's number in the high bits: a CancelRequest reaching another worker
  // is passed on to this one.
  c->cancel_pid = std::uint32_t(shard_) << kCancelShardShift | (slot + 1);
  proto::random_bytes(reinterpret_cast<std::uint8_t*>(&c->cancel_key), sizeof c->cancel_key);
  if (peer_id_ > 0) c->cancel_key = std::uint32_t(peer_id_) << kPeerShift | kCancelTtlMask | (c->cancel_key & 0xffff);
}

void CancelTable::remove(Client* c) {
  if (!c->cancel_pid) return;
  std::uint32_t slot = (c->cancel_pid & kCancelSlotMask) - 1;
  if (slot < slots_.size() && slots_[slot] == c) {
    slots_[slot] = nullptr;
    free_.push_back(slot);
  }
  c->cancel_pid = 0;
}

Client* CancelTable::find(std::uint32_t pid, std::uint32_t key) const {
  if (owner(pid) != shard_) return nullptr;
  std::uint32_t slot = pid & kCancelSlotMask;
  if (slot == 0 || slot > slots_.size()) return nullptr;
  Client* c = slots_[slot - 1];
  return c && c->cancel_key == key ? c : nullptr;
}

void Pooler::handle_cancel(std::uint32_t pid, std::uint32_t key) {
  if (int me = cancels_.peer_id(); me > 0) {
    if (key_peer(key) != me) {
      forward_cancel(pid, key);
      return;
    }
    key |= kCancelTtlMask;  // as issued: a forwarded request has a lower TTL
  }
  int owner = CancelTable::owner(pid);
  if (owner != shard_) {
    if (owner < hub_->size()) hub_->post(owner, {Hub::MsgKind::Cancel, pid, key});
    return;
  }
  Client* c = cancels_.find(pid, key);
  Server* s = c ? c->server : nullptr;
  if (!s || !s->connected) return;
  send_cancel(loop_, *s);
}

// A CancelRequest for a key another pgpivot process (peer) issued: sent on to that
// peer's address from [peers], one TTL step less, as PgBouncer forwards it.
void Pooler::forward_cancel(std::uint32_t pid, std::uint32_t key) {
  int peer = key_peer(key);
  if ((key & kCancelTtlMask) == 0) {
    LOG_WARN("failed to forward cancel request to peer %d because its TTL was exhausted", peer);
    return;
  }
  auto it = cfg_.peers.find(peer);
  if (it == cfg_.peers.end()) {
    LOG_WARN("could not find peer %d to forward a cancel request to", peer);
    return;
  }
  const config::Node& n = it->second;
  if (cfg_.pooler.log_connections) LOG_INFO("cancel request forwarded to peer %d", peer);
  send_cancel_to(loop_, n.host.empty() ? cfg_.pooler.unix_socket_dir : n.host, n.port, pid, key - (1u << 16));
}

namespace {

// A short-lived connection that forwards a CancelRequest to a server.
struct CancelConn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h{};
  uv_connect_t req{};
  uv_write_t wreq{};
  std::string packet;
};

void close_cancel(CancelConn* x) {
  uv_close(&x->h.handle, [](uv_handle_t* h) { delete static_cast<CancelConn*>(h->data); });
}

void on_cancel_connect(uv_connect_t* req, int status) {
  auto* x = static_cast<CancelConn*>(req->data);
  if (status < 0) {
    close_cancel(x);
    return;
  }
  uv_buf_t b = uv_buf_init(x->packet.data(), unsigned(x->packet.size()));
  x->wreq.data = x;
  if (uv_write(&x->wreq, &x->h.stream, &b, 1, [](uv_write_t* w, int) {
        // PostgreSQL closes after reading the request; nothing comes back.
        close_cancel(static_cast<CancelConn*>(w->data));
      }) != 0) {
    close_cancel(x);
  }
}

void connect_cancel(uv_loop_t* loop, CancelConn* cc, const sockaddr* sa) {
  cc->req.data = cc;
  uv_tcp_init(loop, &cc->h.tcp);
  cc->h.handle.data = cc;
  if (uv_tcp_connect(&cc->req, &cc->h.tcp, sa, on_cancel_connect) != 0) close_cancel(cc);
}

struct CancelResolve {
  uv_getaddrinfo_t req{};
  CancelConn* cc = nullptr;
};

void on_cancel_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  auto* r = static_cast<CancelResolve*>(req->data);
  if (status < 0 || !res) {
    delete r->cc;  // no handle was initialised
  } else {
    connect_cancel(req->loop, r->cc, res->ai_addr);
  }
  uv_freeaddrinfo(res);
  delete r;
}

}  // namespace

void send_cancel_to(uv_loop_t* loop, const std::string& host, int port, std::uint32_t pid, std::uint32_t key) {
  auto* cc = new CancelConn();
  proto::cancel_request(cc->packet, pid, key);
  if (!host.empty() && host[0] == '/') {
    cc->req.data = cc;
    uv_pipe_init(loop, &cc->h.pipe, 0);
    cc->h.handle.data = cc;
    std::string path = host + "/.s.PGSQL." + std::to_string(port);
    uv_pipe_connect(&cc->req, &cc->h.pipe, path.c_str(), on_cancel_connect);
    return;
  }
  sockaddr_storage ss{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss)) == 0 ||
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) {
    connect_cancel(loop, cc, reinterpret_cast<const sockaddr*>(&ss));
    return;
  }
  auto* r = new CancelResolve();
  r->cc = cc;
  r->req.data = r;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  std::string p = std::to_string(port);
  if (uv_getaddrinfo(loop, &r->req, on_cancel_resolved, host.c_str(), p.c_str(), &hints) != 0) {
    delete cc;
    delete r;
  }
}

void send_cancel(uv_loop_t* loop, const Server& s) {
  auto* cc = new CancelConn();
  proto::cancel_request(cc->packet, s.pid, s.key);
  cc->req.data = cc;
  if (s.unix_sock) {
    uv_pipe_init(loop, &cc->h.pipe, 0);
    cc->h.handle.data = cc;
    std::string path = s.host + "/.s.PGSQL." + std::to_string(s.server_port);
    uv_pipe_connect(&cc->req, &cc->h.pipe, path.c_str(), on_cancel_connect);
    return;
  }
  uv_tcp_init(loop, &cc->h.tcp);
  cc->h.handle.data = cc;
  if (uv_tcp_connect(&cc->req, &cc->h.tcp, reinterpret_cast<const sockaddr*>(&s.sa), on_cancel_connect) != 0) {
    close_cancel(cc);
  }
}

}  // namespace pgpivot
