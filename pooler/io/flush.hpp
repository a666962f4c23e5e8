// Output batching for one worker: connections with queued bytes are written once
// per loop turn (a uv_check, after the poll phase has read everything ready), so a
// burst of messages to one peer leaves in one writev; connections closed without a
// socket are freed after the turn that closed them.
#pragma once

#include <uv.h>

#include <vector>

namespace pgpivot {

struct Conn;

class Flusher {
 public:
  // `free_conn` frees a connection (the worker's close callback).
  using FreeFn = void (*)(void* owner, Conn* c);
  void start(uv_loop_t* loop, FreeFn free_conn, void* owner);
  void stop();  // closes the handles (shutdown); nothing is flushed after this

  void mark_dirty(Conn* c);  // c has output: write it before the loop blocks again
  void defer_free(Conn* c);  // c has no socket: free it after this loop turn
  void forget(Conn* c);      // c is being freed
  void flush();              // the uv_check: deferred frees, then every dirty connection

 private:
  void keep_awake();  // an active idle handle keeps the loop from blocking before flush()

  uv_check_t check_{};
  uv_idle_t idle_{};
  bool idle_on_ = false;
  bool stopped_ = false;
  FreeFn free_conn_ = nullptr;
  void* owner_ = nullptr;
  std::vector<Conn*> dirty_;
  std::vector<Conn*> batch_;
  std::vector<Conn*> free_later_;
};

}  // namespace pgpivot
