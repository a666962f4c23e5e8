// Read buffers and output queues on free lists (io/buffers.hpp, io/conn.hpp).
#include "pooler/io/buffers.hpp"

#include <cstdlib>
#include <string>
#include <vector>

#include "pooler/io/conn.hpp"

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
  if (free_.size() < keep_) {
    free_.push_back(p);
  } else {
    std::free(p);
  }
}

// A read buffer goes back where its capacity says it came from.
void ReadBuffers::give(char* p, std::uint32_t cap) {
  if (!p) return;
  if (cap == msg_.size()) {
    msg_.give(p);
  } else if (cap == stream_.size()) {
    stream_.give(p);
  } else {
    std::free(p);
  }
}

namespace {

// Capacities an OutQ may keep on the free list; larger ones are shrunk.
constexpr std::size_t kKeepBytes = 16384, kKeepSegs = 64;

}  // namespace

OutQPool::~OutQPool() {
  for (Conn::OutQ* q : free_) delete q;
}

Conn::OutQ* OutQPool::take() {
  in_use_++;
  if (free_.empty()) return new Conn::OutQ();
  Conn::OutQ* q = free_.back();
  free_.pop_back();
  return q;
}

void OutQPool::give(Conn::OutQ* q) {
  in_use_--;
  q->out.clear();
  q->segs.clear();
  q->out_inflight.clear();
  q->bufs_inflight.clear();
  q->tls_cipher_out.clear();
  q->fwd_src = q->waiting_src = nullptr;
  for (auto& [p, cap] : q->orphans) bufs_.give(p, cap);
  q->orphans.clear();
  if (free_.size() >= 1024) {
    delete q;
    return;
  }
  if (q->out.capacity() > kKeepBytes) std::string().swap(q->out);
  if (q->out_inflight.capacity() > kKeepBytes) std::string().swap(q->out_inflight);
  if (q->tls_cipher_out.capacity() > kKeepBytes) std::string().swap(q->tls_cipher_out);
  if (q->segs.capacity() > kKeepSegs) std::vector<Conn::Seg>().swap(q->segs);
  if (q->bufs_inflight.capacity() > kKeepSegs) std::vector<uv_buf_t>().swap(q->bufs_inflight);
  free_.push_back(q);
}

}  // namespace pgpivot
