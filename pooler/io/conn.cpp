// Connection I/O: lazily held read buffers, message streaming (forward / skip /
// inspect / hold) and an output queue that forwards peer bytes without copying.
//
// Flow: libuv reads into the free tail of the connection's buffer; process()
// walks message headers and, per the handler's Step, queues the bytes on the
// peer as borrowed segments. The source may not move or give back its buffer
// until every destination holding its bytes has written them (borrowed_by);
// when that destination drains, borrow_done() consumes them. Output is flushed
// once per loop iteration (uv_check), so several small messages go out in one
// sendmsg(); only what the socket does not take waits for it to become writable.
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

namespace {

// Ciphertext is read into one buffer per reactor thread: it is handed to OpenSSL
// before the read returns, so no TLS connection holds a read buffer of its own.
thread_local char g_cipher_buf[32768];

static_assert(sizeof(uv_buf_t) == sizeof(iovec) && offsetof(uv_buf_t, base) == offsetof(iovec, iov_base) &&
              offsetof(uv_buf_t, len) == offsetof(iovec, iov_len));

void on_poll(uv_poll_t* p, int status, int ev) {
  auto* c = static_cast<Conn*>(p->data);
  if (c->closing) return;
  if (c->connecting) {
    // Writable (or an error) ends a non-blocking connect: SO_ERROR says how.
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (!err && status < 0) err = ECONNREFUSED;
    c->connecting = false;
    c->set_events(c->reading ? UV_READABLE : 0);
    c->on_connect(err ? -err : 0);
    return;
  }
  if (status < 0) {
    // POLLERR (e.g. a reset): libuv has stopped the handle. What the peer sent
    // before it (a FATAL ErrorResponse, say) is still read and handled first.
    c->events = 0;
    if (c->reading) c->do_read();
    if (!c->closing) c->on_closed();
    return;
  }
  if ((ev & UV_WRITABLE) && c->wbusy) {
    c->write_more();
    if (c->closing) return;
  }
  if ((ev & (UV_READABLE | UV_DISCONNECT)) && c->reading) c->do_read();
}

}  // namespace

bool Conn::attach(int sock) {
  if (uv_poll_init_socket(pooler->loop(), &h.poll, sock) != 0) {
    ::close(sock);
    return false;  // fd stays -1: start_close frees the connection without a handle
  }
  fd = sock;
  h.handle.data = this;
  return true;
}

void Conn::set_events(int ev) {
  if (closing || fd < 0 || ev == events) return;
  events = std::uint8_t(ev);
  if (ev) {
    if (uv_poll_start(&h.poll, ev, on_poll) != 0) events = 0;
  } else {
    uv_poll_stop(&h.poll);
  }
}

void Conn::do_read() {
  for (;;) {
    ssize_t n;
    if (tls) {
      n = ::recv(fd, g_cipher_buf, sizeof g_cipher_buf, 0);
    } else {
      // Large results and COPY data come in 64 kB reads: a sixteenth of the
      // syscalls per megabyte; only connections that are streaming hold one.
      if (!read_room(stream_hint ? pooler->stream_buffers() : pooler->buffers())) {
        update_reading();  // full: wait until the bytes are handled
        return;
      }
      n = ::recv(fd, rbuf + rend, rcap - rend, 0);
      if (n > 0) stream_hint = std::uint32_t(n) >= pooler->buffers().size();
    }
    if (n > 0) {
      request_time = pooler->now();
      count_bytes(std::size_t(n));
      if (tls) {
        tls_input(g_cipher_buf, std::size_t(n));
      } else {
        rend += std::uint32_t(n);
        process();
      }
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      release_rbuf_if_empty();
      return;
    }
    on_closed();  // EOF or a socket error
    return;
  }
}

// Writes bufs_inflight from wpos on, as far as the socket takes it.
bool Conn::write_iov() {
  OutQ& q = *oq;
  while (q.wpos < q.bufs_inflight.size()) {
    msghdr m{};
    m.msg_iov = reinterpret_cast<iovec*>(q.bufs_inflight.data() + q.wpos);
    m.msg_iovlen = std::min<std::size_t>(q.bufs_inflight.size() - q.wpos, IOV_MAX);
    ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      q.out_inflight.clear();
      q.bufs_inflight.clear();
      q.wpos = 0;
      wbusy = false;
      on_closed();
      return false;
    }
    auto left = std::size_t(n);
    while (left && q.wpos < q.bufs_inflight.size()) {
      uv_buf_t& b = q.bufs_inflight[q.wpos];
      if (left >= b.len) {
        left -= b.len;
        q.wpos++;
      } else {
        b.base += left;
        b.len -= left;
        left = 0;
      }
    }
  }
  return true;
}

void Conn::write_more() {
  if (!write_iov()) return;
  OutQ& q = *oq;
  if (q.wpos < q.bufs_inflight.size()) return;  // still more to go
  wbusy = false;
  q.out_inflight.clear();
  q.bufs_inflight.clear();
  q.wpos = 0;
  set_events(events & ~UV_WRITABLE);
  flush();
}

Conn::OutQ& Conn::outq() {
  if (!oq) oq = pooler->outqs().take();
  return *oq;
}

Conn* Conn::fwd_src() const { return oq ? oq->fwd_src : nullptr; }

bool Conn::output_pending() const { return wbusy || (oq && (!oq->segs.empty() || !oq->tls_cipher_out.empty())); }

// Gives the output state back when nothing is pending or borrowed any more.
void Conn::maybe_release_outq() {
  if (oq && !wbusy && oq->idle()) {
    pooler->outqs().give(oq);
    oq = nullptr;
  }
}

void Conn::queue(std::string_view bytes) {
  if (closing || bytes.empty()) return;
  OutQ& q = outq();
  auto off = std::uint32_t(q.out.size());
  q.out.append(bytes);
  if (!q.segs.empty() && !q.segs.back().ptr && q.segs.back().off + q.segs.back().len == off) {
    q.segs.back().len += std::uint32_t(bytes.size());
  } else {
    q.segs.push_back(Seg{nullptr, off, std::uint32_t(bytes.size())});
  }
  pooler->flusher().mark_dirty(this);
}

void Conn::queue_borrowed(const char* p, std::uint32_t n) {
  OutQ& q = outq();
  if (!q.segs.empty() && q.segs.back().ptr && q.segs.back().ptr + q.segs.back().len == p) {
    q.segs.back().len += n;
  } else {
    q.segs.push_back(Seg{p, 0, n});
  }
  pooler->flusher().mark_dirty(this);
}

void Conn::flush() {
  if (closing || wbusy) return;
  if (tls) {
    flush_tls();
    return;
  }
  if (!oq || oq->segs.empty()) {
    on_drained();
    return;
  }
  OutQ& q = *oq;
  // Own bytes move to out_inflight first so their pointers stay valid for the
  // asynchronous write while new own bytes collect in `out`.
  q.out_inflight.swap(q.out);
  q.out.clear();
  q.bufs_inflight.clear();
  for (const Seg& s : q.segs) {
    char* p = s.ptr ? const_cast<char*>(s.ptr) : q.out_inflight.data() + s.off;
    q.bufs_inflight.push_back(uv_buf_init(p, s.len));
  }
  q.segs.clear();
  q.wpos = 0;
  if (!write_iov()) return;
  if (q.wpos == q.bufs_inflight.size()) {
    q.out_inflight.clear();
    q.bufs_inflight.clear();
    q.wpos = 0;
    on_drained();
    return;
  }
  // The socket is full: the rest goes out when it is writable again.
  wbusy = true;
  set_events(events | UV_WRITABLE);
}

// TLS: plaintext (own and borrowed) is encrypted at flush time, so the sources
// are released as soon as OpenSSL has copied their bytes; the ciphertext is then
// written like own bytes. While a write is pending nothing more is encrypted,
// which keeps the usual backpressure.
void Conn::flush_tls() {
  if (!oq) {
    on_drained();
    return;
  }
  tls_encrypt_queue();
  if (closing) return;
  OutQ& q = *oq;
  Conn* src = q.segs.empty() ? q.fwd_src : nullptr;
  if (src) q.fwd_src = nullptr;
  if (!q.tls_cipher_out.empty()) {
    q.out_inflight.swap(q.tls_cipher_out);
    q.tls_cipher_out.clear();
    q.bufs_inflight.assign(1, uv_buf_init(q.out_inflight.data(), unsigned(q.out_inflight.size())));
    q.wpos = 0;
    if (!write_iov()) {
      if (src) src->borrow_done();
      return;
    }
    if (q.wpos < q.bufs_inflight.size()) {
      wbusy = true;
      set_events(events | UV_WRITABLE);
    } else {
      q.out_inflight.clear();
      q.bufs_inflight.clear();
      q.wpos = 0;
    }
  }
  if (src) src->borrow_done();
  if (!closing && !wbusy && (!oq || oq->segs.empty())) on_drained();
}

void Conn::on_drained() {
  if (!oq) return;
  OutQ& q = *oq;
  if (Conn* src = q.fwd_src) {
    q.fwd_src = nullptr;
    src->borrow_done();
  }
  if (closing || !oq) return;
  for (auto& [p, cap] : oq->orphans) pooler->read_buffers().give(p, cap);
  oq->orphans.clear();
  if (Conn* w = oq->waiting_src) {
    oq->waiting_src = nullptr;
    w->waiting_on = nullptr;
    if (!w->closing) w->process();
  }
  if (!closing) maybe_release_outq();
}

void Conn::borrow_done() {
  borrowed_by = nullptr;
  if (closing) return;
  rpos = rparse;
  process();
}

void Conn::release_rbuf_if_empty() {
  if (rbuf && rpos == rend && !borrowed_by) {
    pooler->read_buffers().give(rbuf, rcap);
    rbuf = nullptr;
    rcap = rpos = rparse = rend = 0;
  }
}

// Make room so that `need` bytes starting at rpos fit in the buffer.
// Room to read into: a buffer from `bp` when none is held, the unhandled bytes
// moved to the front when it is full (unless a peer's write still borrows them).
// False when it stays full.
bool Conn::read_room(BufferPool& bp) {
  if (!rbuf) {
    rbuf = bp.take();
    rcap = bp.size();
    rpos = rparse = rend = 0;
  }
  if (rend == rcap && rpos > 0 && !borrowed_by) {
    std::memmove(rbuf, rbuf + rpos, rend - rpos);
    rparse -= rpos;
    rend -= rpos;
    rpos = 0;
  }
  return rend < rcap;
}

void Conn::ensure_room(std::uint32_t need) {
  if (borrowed_by) return;  // cannot move bytes a peer still writes; retried in borrow_done
  if (rpos > 0) {
    std::memmove(rbuf, rbuf + rpos, rend - rpos);
    rparse -= rpos;
    rend -= rpos;
    rpos = 0;
  }
  if (need <= rcap) return;
  // A message we must see whole is larger than a block: use a heap buffer for it.
  char* big = static_cast<char*>(std::malloc(need));
  if (!big) std::abort();
  std::memcpy(big, rbuf, rend);
  pooler->read_buffers().give(rbuf, rcap);
  rbuf = big;
  rcap = need;
}

void Conn::process() {
  // With TLS, plaintext OpenSSL could not hand over while the buffer was full
  // comes out as room appears.
  do {
    process_once();
  } while (tls && !closing && !in_process && !borrowed_by && tls_has_pending() && tls_pump());
}

void Conn::process_once() {
  if (closing || in_process) return;
  in_process = true;
  std::uint32_t need = 0;  // bytes from rparse needed before we can go on
  Conn* dest = nullptr;    // where borrowed bytes went in this pass
  // Whether bytes may go to the current peer now; if not, wait for the writer
  // that still holds someone's borrowed bytes.
  auto can_forward = [&]() -> bool {
    Conn* p = peer();
    if (!p || p->closing) return true;
    if (p->fwd_src() && p->fwd_src() != this) {
      p->oq->waiting_src = this;  // the peer still writes another source's bytes
      waiting_on = p;
      return false;
    }
    if (borrowed_by && borrowed_by != p) {
      borrowed_by->outq().waiting_src = this;
      waiting_on = borrowed_by;
      return false;
    }
    return true;
  };
  auto forward = [&](std::uint32_t n) -> bool {
    if (!can_forward()) return false;
    Conn* p = peer();
    if (!p || p->closing) return true;  // nobody to receive: drop
    p->queue_borrowed(rbuf + rparse, n);
    p->oq->fwd_src = this;
    borrowed_by = p;
    dest = p;
    return true;
  };
  while (!closing) {
    std::uint32_t avail = rend - rparse;
    if (fwd_left) {
      if (!avail) break;
      std::uint32_t n = fwd_left < avail ? fwd_left : avail;
      if (!forward(n)) break;
      rparse += n;
      fwd_left -= n;
      continue;
    }
    if (skip_left) {
      if (!avail) break;
      std::uint32_t n = skip_left < avail ? skip_left : avail;
      rparse += n;
      skip_left -= n;
      continue;
    }
    if (!avail) break;
    if (raw_byte_mode()) {
      char b = rbuf[rparse++];
      on_raw_byte(b);
      continue;
    }
    const auto* d = reinterpret_cast<const std::uint8_t*>(rbuf + rparse);
    if (startup_framing()) {
      proto::Frame f = proto::frame_startup(d, avail);
      if (f.status == proto::FrameStatus::NeedMore) {
        need = 4;
        break;
      }
      if (f.status == proto::FrameStatus::Invalid) {
        on_protocol_error("invalid startup packet length");
        break;
      }
      if (avail < f.length) {
        need = f.length;
        break;
      }
      Step st = on_startup(rbuf + rparse, f.length);
      if (st == Step::Stop || closing) break;
      rparse += f.length;
      continue;
    }
    proto::Frame f = proto::frame_message(d, avail, max_packet());
    if (f.status == proto::FrameStatus::NeedMore) {
      need = std::uint32_t(proto::kHeaderSize);
      break;
    }
    if (f.status == proto::FrameStatus::Invalid) {
      on_protocol_error("invalid message length");
      break;
    }
    auto wire = std::uint32_t(f.wire_size());
    Step st = on_header(f.type, wire);
    if (closing) break;
    if (st == Step::Inspect) {
      if (avail < wire) {
        need = wire;
        break;
      }
      if (!can_forward()) break;
      st = on_message(rbuf + rparse, wire);
      if (closing) break;
      if (st == Step::Forward) {
        if (!forward(wire)) break;
        rparse += wire;
        after_forward();
        continue;
      }
      if (st == Step::Skip) {
        rparse += wire;
        continue;
      }
      break;  // Hold or Stop: the message stays in the buffer
    }
    if (st == Step::Forward) {
      fwd_left = wire;
      continue;
    }
    if (st == Step::Skip) {
      skip_left = wire;
      continue;
    }
    break;  // Hold / Stop
  }
  in_process = false;
  if (closing) return;
  (void)dest;
  on_pass_end();
  if (!borrowed_by) {
    rpos = rparse;
    if (rpos == rend) {
      release_rbuf_if_empty();
    } else if (need && rcap - rpos < need) {
      ensure_room(need);
    }
  }
  update_reading();
}

void Conn::update_reading() {
  if (closing || fd < 0) return;
  bool room = !rbuf || rend < rcap || (rpos > 0 && !borrowed_by);
  bool want = want_read && room;
  if (want != reading) {
    reading = want;
    if (!connecting) set_events(want ? events | UV_READABLE : events & ~UV_READABLE);
  }
}

std::uint32_t Conn::max_packet() const {
  auto m = pooler->settings().max_packet_size;
  return m > 0x7fffffffLL ? 0x7fffffffU : std::uint32_t(m);
}

std::size_t Conn::memory_use() const {
  std::size_t n = sizeof(*this) + (rbuf ? rcap : 0);
  if (oq) {
    n += sizeof(OutQ) + oq->out.capacity() + oq->out_inflight.capacity() + oq->tls_cipher_out.capacity() +
         oq->segs.capacity() * sizeof(Seg) + oq->bufs_inflight.capacity() * sizeof(uv_buf_t);
  }
  return n;
}

void Conn::start_close() {
  if (closing) return;
  // A TLS alert OpenSSL produced (e.g. "certificate required") tells the peer why,
  // and a close_notify that the session ended; sent if the socket takes them right away.
  if (tls && !wbusy && fd >= 0) tls_close_notify();
  if (tls && oq && !oq->tls_cipher_out.empty() && !wbusy && fd >= 0) {
    (void)::send(fd, oq->tls_cipher_out.data(), oq->tls_cipher_out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  closing = true;
  reading = false;
  // Bytes of ours that a peer still has to write: the peer frees our buffer.
  if (Conn* d = borrowed_by) {
    if (rbuf) d->outq().orphans.emplace_back(rbuf, rcap);
    d->oq->fwd_src = nullptr;
    rbuf = nullptr;
    borrowed_by = nullptr;
  }
  // Bytes we held from a source will never be written: let it go on.
  if (Conn* src = fwd_src()) {
    oq->fwd_src = nullptr;
    oq->segs.clear();
    src->borrow_done();
  }
  if (Conn* w = oq ? oq->waiting_src : nullptr) {
    oq->waiting_src = nullptr;
    w->waiting_on = nullptr;
    w->process();
  }
  if (waiting_on) {
    if (waiting_on->oq && waiting_on->oq->waiting_src == this) waiting_on->oq->waiting_src = nullptr;
    waiting_on = nullptr;
  }
  if (fd < 0) {  // no socket yet (e.g. a server still resolving its host name)
    pooler->flusher().defer_free(this);
    return;
  }
  // The peer sees the end now: the socket leaves ESTABLISHED at once (what was
  // written is still delivered before the FIN), not only when the close callback
  // runs at the end of this loop turn. A server's slot is given back as it closes,
  // and another worker may open a server in the same moment: the connections open
  // to PostgreSQL then never exceed the limits, even for an instant.
  ::shutdown(fd, SHUT_WR);
  uv_close(&h.handle, [](uv_handle_t* hh) {
    auto* c = static_cast<Conn*>(hh->data);
    ::close(c->fd);
    c->fd = -1;
    c->pooler->free_conn(c);
  });
}

void Conn::free_buffers() {
  pooler->read_buffers().give(rbuf, rcap);
  rbuf = nullptr;
  if (oq) {
    pooler->outqs().give(oq);  // also frees orphaned buffers
    oq = nullptr;
  }
}

}  // namespace pgpivot
