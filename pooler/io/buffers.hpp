// Read buffers: fixed-size blocks on free lists, so that an idle connection holds
// none (io/buffers.cpp; the output queues' free list is OutQPool, io/conn.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pgpivot {

// Read buffers: fixed-size blocks on a free list, taken when bytes arrive and
// given back as soon as everything read has been handled, so an idle connection
// holds none.
class BufferPool {
 public:
  BufferPool(std::uint32_t size, std::size_t keep) : size_(size), keep_(keep) {}
  ~BufferPool();
  [[nodiscard]] std::uint32_t size() const { return size_; }
  char* take();
  void give(char* p);
  [[nodiscard]] std::size_t free_count() const { return free_.size(); }
  [[nodiscard]] std::size_t in_use() const { return in_use_; }

 private:
  std::uint32_t size_;
  std::size_t keep_;  // free blocks kept for reuse; beyond that they go back to malloc
  std::vector<char*> free_;
  std::size_t in_use_ = 0;
};

// The two block sizes connections read into: pkt_buf-sized blocks for messages, and
// 64 kB blocks for connections streaming large results or COPY.
class ReadBuffers {
 public:
  explicit ReadBuffers(std::uint32_t msg_size) : msg_(msg_size, 256), stream_(65536, 16) {}
  BufferPool& msg() { return msg_; }
  BufferPool& stream() { return stream_; }
  void give(char* p, std::uint32_t cap);  // back where its capacity says it came from

 private:
  BufferPool msg_;
  BufferPool stream_;
};

}  // namespace pgpivot
