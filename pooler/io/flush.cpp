#include "pooler/io/flush.hpp"

#include <algorithm>

#include "pooler/io/conn.hpp"

namespace pgpivot {

void Flusher::start(uv_loop_t* loop, FreeFn free_conn, void* owner) {
  free_conn_ = free_conn;
  owner_ = owner;
  uv_check_init(loop, &check_);
  check_.data = this;
  uv_check_start(&check_, [](uv_check_t* c) { static_cast<Flusher*>(c->data)->flush(); });
  uv_idle_init(loop, &idle_);
  idle_.data = this;
}

void Flusher::stop() {
  if (stopped_) return;
  stopped_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
}

void Flusher::mark_dirty(Conn* c) {
  if (c->dirty || c->closing) return;
  c->dirty = true;
  dirty_.push_back(c);
  keep_awake();
}

void Flusher::keep_awake() {
  if (!idle_on_ && !stopped_) {
    uv_idle_start(&idle_, [](uv_idle_t*) {});
    idle_on_ = true;
  }
}

void Flusher::defer_free(Conn* c) {
  free_later_.push_back(c);
  keep_awake();
}

void Flusher::forget(Conn* c) {
  if (c->dirty) dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), c), dirty_.end());
}

void Flusher::flush() {
  if (!free_later_.empty()) {
    std::vector<Conn*> v;
    v.swap(free_later_);
    for (Conn* c : v) free_conn_(owner_, c);
  }
  while (!dirty_.empty()) {
    batch_.swap(dirty_);
    for (Conn* c : batch_) {
      c->dirty = false;
      if (!c->closing) c->flush();
    }
    batch_.clear();
  }
  if (idle_on_) {
    uv_idle_stop(&idle_);
    idle_on_ = false;
  }
}

}  // namespace pgpivot
