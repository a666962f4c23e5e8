// Listening sockets (TCP and Unix) and the socket helpers the listeners and server
// connects share (io/listen.cpp).
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <string>

#include "config/config.hpp"

namespace pgpivot {

class Pooler;

// A listening socket watched with a uv_poll_t; accept4() runs in its callback.
struct Listener {
  uv_poll_t poll{};
  int fd = -1;
  Pooler* pooler = nullptr;
  bool unix_socket = false;
  bool closed = false;
  bool out_of_fds = false;  // accept failed for lack of descriptors: retried by the janitor
  std::string path;
};

// Watches the listener again (after accept ran out of descriptors).
void listener_resume(Listener* l);

// The TCP options of a client or server connection: tcp_keepalive (with tcp_keepidle,
// 60 s unless set, tcp_keepintvl, tcp_keepcnt), tcp_user_timeout, tcp_socket_buffer.
void tune_socket(int fd, const config::Pooler& set);
int new_socket(int family);  // non-blocking, close-on-exec; -errno on failure
socklen_t sockaddr_len(const sockaddr_storage& ss);

}  // namespace pgpivot
