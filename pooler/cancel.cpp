// Cancel keys and CancelRequests: the table of this worker's keys, a request
// passed to the worker that owns its key, and the request sent on to PostgreSQL on
// a connection of its own.
#include "pooler/cancel.hpp"

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

}  // namespace

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
