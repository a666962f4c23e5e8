// Connection I/O: lazily held read buffers, message streaming (forward / skip /
// inspect / hold) and an output queue that forwards peer bytes without copying.
//
// Flow: libuv reads into the free tail of the connection's buffer; process()
// walks message headers and, per the handler's Step, queues the bytes on the
// peer as borrowed segments. The source may not move or give back its buffer
// until every destination holding its bytes has written them (borrowed_by);
// when that destination drains, borrow_done() consumes them. Output is flushed
// once per loop iteration (uv_check), so several small messages go out in one
// write, and uv_try_write is tried before queueing an asynchronous write.
#include <cstdlib>
#include <cstring>

#include "pooler/pooler.hpp"
#include "protocol/wire.hpp"

namespace pgpivot {

BufferPool::~BufferPool() {
  for (char* p : free_) std::free(p);
}

char* BufferPool::take() {
  in_use_++;
  if (!free_.empty()) {
    char* p = free_.back();
    free_.pop_back();
    return p;
  }
  char* p = static_cast<char*>(std::malloc(size_));
  if (!p) std::abort();
  return p;
}

void BufferPool::give(char* p) {
  in_use_--;
  // Keep a modest reserve; beyond it memory goes back to the allocator.
  if (free_.size() < 256) {
    free_.push_back(p);
  } else {
    std::free(p);
  }
}

namespace {

void give_buffer(Pooler* pooler, char* p, bool big) {
  if (!p) return;
  if (big) {
    std::free(p);
  } else {
    pooler->buffers().give(p);
  }
}

// Ciphertext is read into one shared buffer: it is handed to OpenSSL before the
// read callback returns, so no TLS connection holds a read buffer of its own.
char g_cipher_buf[32768];

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(h->data);
  if (c->tls) {
    buf->base = g_cipher_buf;
    buf->len = sizeof g_cipher_buf;
    return;
  }
  if (!c->rbuf) {
    c->rbuf = c->pooler->buffers().take();
    c->rcap = c->pooler->buffers().size();
    c->rbuf_big = false;
    c->rpos = c->rparse = c->rend = 0;
  }
  if (c->rend == c->rcap && c->rpos > 0 && !c->borrowed_by) {
    std::memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
    c->rparse -= c->rpos;
    c->rend -= c->rpos;
    c->rpos = 0;
  }
  buf->base = c->rbuf + c->rend;
  buf->len = c->rcap - c->rend;
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<Conn*>(s->data);
  if (c->closing) return;
  if (nread > 0 && c->tls) {
    c->request_time = c->pooler->now();
    c->count_bytes(std::size_t(nread));
    c->tls_input(g_cipher_buf, std::size_t(nread));
    return;
  }
  if (nread > 0) {
    c->rend += std::uint32_t(nread);
    c->request_time = c->pooler->now();
    c->count_bytes(std::size_t(nread));
    c->process();
    return;
  }
  if (nread == UV_ENOBUFS) {
    c->update_reading();
    return;
  }
  if (nread < 0) {
    c->on_closed();
    return;
  }
  c->release_rbuf_if_empty();
}

void on_write(uv_write_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  c->wbusy = false;
  c->out_inflight.clear();
  c->bufs_inflight.clear();
  if (c->closing) return;
  if (status < 0) {
    c->on_closed();
    return;
  }
  c->flush();
}

}  // namespace

void Conn::queue(std::string_view bytes) {
  if (closing || bytes.empty()) return;
  auto off = std::uint32_t(out.size());
  out.append(bytes);
  if (!segs.empty() && !segs.back().ptr && segs.back().off + segs.back().len == off) {
    segs.back().len += std::uint32_t(bytes.size());
  } else {
    segs.push_back(Seg{nullptr, off, std::uint32_t(bytes.size())});
  }
  pooler->mark_dirty(this);
}

void Conn::queue_borrowed(const char* p, std::uint32_t n) {
  if (!segs.empty() && segs.back().ptr && segs.back().ptr + segs.back().len == p) {
    segs.back().len += n;
  } else {
    segs.push_back(Seg{p, 0, n});
  }
  pooler->mark_dirty(this);
}

void Conn::flush() {
  if (closing || wbusy) return;
  if (tls) {
    flush_tls();
    return;
  }
  if (segs.empty()) {
    on_drained();
    return;
  }
  // Own bytes move to out_inflight first so their pointers stay valid for the
  // asynchronous write while new own bytes collect in `out`.
  out_inflight.swap(out);
  out.clear();
  bufs_inflight.clear();
  std::size_t total = 0;
  for (const Seg& s : segs) {
    char* p = s.ptr ? const_cast<char*>(s.ptr) : out_inflight.data() + s.off;
    bufs_inflight.push_back(uv_buf_init(p, s.len));
    total += s.len;
  }
  segs.clear();
  int r = uv_try_write(&h.stream, bufs_inflight.data(), unsigned(bufs_inflight.size()));
  if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
  if (r < 0) {
    out_inflight.clear();
    bufs_inflight.clear();
    on_closed();
    return;
  }
  if (std::size_t(r) == total) {
    out_inflight.clear();
    bufs_inflight.clear();
    on_drained();
    return;
  }
  // Partial write: hand the rest to libuv and wait for the callback.
  std::size_t skip = std::size_t(r), first = 0;
  while (skip >= bufs_inflight[first].len) {
    skip -= bufs_inflight[first].len;
    first++;
  }
  bufs_inflight[first].base += skip;
  bufs_inflight[first].len -= skip;
  wbusy = true;
  wreq.data = this;
  int rc = uv_write(&wreq, &h.stream, bufs_inflight.data() + first, unsigned(bufs_inflight.size() - first), on_write);
  if (rc < 0) {
    wbusy = false;
    out_inflight.clear();
    bufs_inflight.clear();
    on_closed();
  }
}

// TLS: plaintext (own and borrowed) is encrypted at flush time, so the sources
// are released as soon as OpenSSL has copied their bytes; the ciphertext is then
// written like own bytes. While a write is pending nothing more is encrypted,
// which keeps the usual backpressure.
void Conn::flush_tls() {
  tls_encrypt_queue();
  if (closing) return;
  Conn* src = segs.empty() ? fwd_src : nullptr;
  if (src) fwd_src = nullptr;
  if (!tls_cipher_out.empty()) {
    out_inflight.swap(tls_cipher_out);
    tls_cipher_out.clear();
    bufs_inflight.assign(1, uv_buf_init(out_inflight.data(), unsigned(out_inflight.size())));
    int r = uv_try_write(&h.stream, bufs_inflight.data(), 1);
    if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
    if (r < 0) {
      out_inflight.clear();
      bufs_inflight.clear();
      if (src) src->borrow_done();
      on_closed();
      return;
    }
    if (std::size_t(r) < out_inflight.size()) {
      bufs_inflight[0].base += r;
      bufs_inflight[0].len -= unsigned(r);
      wbusy = true;
      wreq.data = this;
      if (uv_write(&wreq, &h.stream, bufs_inflight.data(), 1, on_write) < 0) {
        wbusy = false;
        if (src) src->borrow_done();
        on_closed();
        return;
      }
    } else {
      out_inflight.clear();
      bufs_inflight.clear();
    }
  }
  if (src) src->borrow_done();
  if (!wbusy && segs.empty()) on_drained();
}

void Conn::on_drained() {
  // Own bytes are rare after login (errors, internal queries): give their
  // memory back so an idle connection holds no output buffer either.
  if (out_inflight.capacity() > 0) std::string().swap(out_inflight);
  if (out.empty() && out.capacity() > 0) std::string().swap(out);
  if (segs.empty() && segs.capacity() > 0) std::vector<Seg>().swap(segs);
  if (Conn* src = fwd_src) {
    fwd_src = nullptr;
    src->borrow_done();
  }
  for (auto& [p, big] : orphans) give_buffer(pooler, p, big);
  orphans.clear();
  if (Conn* w = waiting_src) {
    waiting_src = nullptr;
    w->waiting_on = nullptr;
    if (!w->closing) w->process();
  }
}

void Conn::borrow_done() {
  borrowed_by = nullptr;
  if (closing) return;
  rpos = rparse;
  process();
}

void Conn::release_rbuf_if_empty() {
  if (rbuf && rpos == rend && !borrowed_by) {
    give_buffer(pooler, rbuf, rbuf_big);
    rbuf = nullptr;
    rcap = rpos = rparse = rend = 0;
    rbuf_big = false;
  }
}

// Make room so that `need` bytes starting at rpos fit in the buffer.
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
  give_buffer(pooler, rbuf, rbuf_big);
  rbuf = big;
  rcap = need;
  rbuf_big = true;
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
    if (p->fwd_src && p->fwd_src != this) {
      p->waiting_src = this;  // the peer still writes another source's bytes
      waiting_on = p;
      return false;
    }
    if (borrowed_by && borrowed_by != p) {
      borrowed_by->waiting_src = this;
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
    p->fwd_src = this;
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
  if (closing) return;
  bool room = !rbuf || rend < rcap || (rpos > 0 && !borrowed_by);
  bool want = want_read && room;
  if (want && !reading) {
    if (uv_read_start(&h.stream, on_alloc, on_read) == 0) reading = true;
  } else if (!want && reading) {
    uv_read_stop(&h.stream);
    reading = false;
  }
}

std::uint32_t Conn::max_packet() const {
  auto m = pooler->settings().max_packet_size;
  return m > 0x7fffffffLL ? 0x7fffffffU : std::uint32_t(m);
}

std::size_t Conn::memory_use() const {
  return sizeof(*this) + (rbuf ? rcap : 0) + out.capacity() + out_inflight.capacity() +
         segs.capacity() * sizeof(Seg);
}

void Conn::start_close() {
  if (closing) return;
  // A TLS alert OpenSSL produced (e.g. "certificate required") tells the peer why;
  // send it if the socket takes it right away.
  if (tls && !tls_cipher_out.empty() && !wbusy) {
    uv_buf_t b = uv_buf_init(tls_cipher_out.data(), unsigned(tls_cipher_out.size()));
    uv_try_write(&h.stream, &b, 1);
  }
  closing = true;
  if (reading) {
    uv_read_stop(&h.stream);
    reading = false;
  }
  // Bytes of ours that a peer still has to write: the peer frees our buffer.
  if (Conn* d = borrowed_by) {
    if (rbuf) d->orphans.emplace_back(rbuf, rbuf_big);
    d->fwd_src = nullptr;
    rbuf = nullptr;
    borrowed_by = nullptr;
  }
  // Bytes we held from a source will never be written: let it go on.
  if (Conn* src = fwd_src) {
    fwd_src = nullptr;
    segs.clear();
    src->borrow_done();
  }
  if (Conn* w = waiting_src) {
    waiting_src = nullptr;
    w->waiting_on = nullptr;
    w->process();
  }
  if (waiting_on) {
    if (waiting_on->waiting_src == this) waiting_on->waiting_src = nullptr;
    waiting_on = nullptr;
  }
  uv_close(&h.handle, [](uv_handle_t* hh) {
    auto* c = static_cast<Conn*>(hh->data);
    c->pooler->free_conn(c);
  });
}

void Conn::free_buffers() {
  give_buffer(pooler, rbuf, rbuf_big);
  rbuf = nullptr;
  for (auto& [p, big] : orphans) give_buffer(pooler, p, big);
  orphans.clear();
}

}  // namespace pgpivot
