// Listening sockets (TCP and Unix) and accept(); socket addresses.
#include "pooler/pooler.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>

namespace pgpivot {

void NetAddr::set(const sockaddr_storage& ss) {
  family = std::uint8_t(ss.ss_family);
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    port = ntohs(a->sin_port);
    std::memcpy(ip, &a->sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    port = ntohs(a->sin6_port);
    std::memcpy(ip, &a->sin6_addr, 16);
  }
}

NetAddr Client::local_addr() const {
  NetAddr a;
  if (unix_sock) {
    a.family = AF_UNIX;
  } else if (fd >= 0) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) a.set(ss);
  }
  return a;
}

std::string NetAddr::host() const {
  char buf[INET6_ADDRSTRLEN] = "";
  if (family == AF_UNIX) return "unix";
  if (family == AF_INET) uv_inet_ntop(AF_INET, ip, buf, sizeof buf);
  if (family == AF_INET6) uv_inet_ntop(AF_INET6, ip, buf, sizeof buf);
  return buf;
}

std::string NetAddr::str() const {
  if (family == AF_UNIX) return "unix";
  return host() + ":" + std::to_string(port);
}

// ---------------------------------------------------------------------------
// Listeners

void tune_socket(int fd, const config::Pooler& set) {
  if (set.tcp_keepalive) {
    int one = 1, idle = set.tcp_keepidle > 0 ? set.tcp_keepidle : 60;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    if (set.tcp_keepintvl > 0) ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &set.tcp_keepintvl, sizeof(int));
    if (set.tcp_keepcnt > 0) ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &set.tcp_keepcnt, sizeof(int));
  }
  if (set.tcp_user_timeout > 0) ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &set.tcp_user_timeout, sizeof(int));
  if (set.tcp_socket_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &set.tcp_socket_buffer, sizeof(int));
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &set.tcp_socket_buffer, sizeof(int));
  }
}

// A non-blocking, close-on-exec socket, or -errno.
int new_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

socklen_t sockaddr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? socklen_t(sizeof(sockaddr_in6)) : socklen_t(sizeof(sockaddr_in));
}


namespace {

void on_listener_ready(uv_poll_t* p, int, int) {
  auto* l = static_cast<Listener*>(p->data);
  l->pooler->accept_ready(l);
}

// Binds and listens; 0 or a libuv (negative errno) error code.
// With several workers each binds its own TCP socket with SO_REUSEPORT and the
// kernel spreads new connections over them.
int open_listener(Listener* l, uv_loop_t* loop, const sockaddr* sa, socklen_t len, int backlog, bool reuseport) {
  int fd = new_socket(sa->sa_family);
  if (fd < 0) return fd;
  int one = 1;
  if (sa->sa_family != AF_UNIX) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = -errno;
    ::close(fd);
    return e;
  }
  if (::bind(fd, sa, len) != 0 || ::listen(fd, backlog) != 0) {
    int e = -errno;
    ::close(fd);
    return e;
  }
  l->fd = fd;
  uv_poll_init_socket(loop, &l->poll, fd);
  l->poll.data = l;
  uv_poll_start(&l->poll, UV_READABLE, on_listener_ready);
  return 0;
}

void close_listener(Listener* l) {
  if (l->closed || l->fd < 0) return;
  l->closed = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), [](uv_handle_t* h) {
    auto* ls = static_cast<Listener*>(h->data);
    ::close(ls->fd);
    ls->fd = -1;
  });
}

}  // namespace

void listener_resume(Listener* l) { uv_poll_start(&l->poll, UV_READABLE, on_listener_ready); }

// Every listen_addr (one socket each, SO_REUSEPORT with several workers or with
// so_reuseport, so that several pgpivot processes can share the port) and, in
// worker 0, the Unix socket; false (logged) when one cannot be opened.
bool Pooler::open_listeners() {
  const auto& set = cfg_.pooler;
  std::string addrs = set.listen_addr;
  std::size_t pos = 0;
  bool any = false;
  while (pos <= addrs.size()) {
    std::size_t comma = addrs.find(',', pos);
    std::string a = addrs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? addrs.size() + 1 : comma + 1;
    a.erase(0, a.find_first_not_of(" \t"));
    a.erase(a.find_last_not_of(" \t") + 1);
    if (a.empty()) continue;
    if (a == "*") a = "0.0.0.0";
    if (a == "localhost") a = "127.0.0.1";
    sockaddr_storage ss{};
    if (uv_ip4_addr(a.c_str(), set.listen_port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
        uv_ip6_addr(a.c_str(), set.listen_port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      LOG_ERROR("listen_addr: cannot parse address \"%s\"", a.c_str());
      return false;
    }
    auto l = std::make_unique<Listener>();
    l->pooler = this;
    int rc = open_listener(l.get(), loop_, reinterpret_cast<sockaddr*>(&ss), sockaddr_len(ss),
                           std::max(set.listen_backlog, 1), hub_->threaded() || set.so_reuseport);
    if (rc != 0) {
      LOG_ERROR("cannot listen on %s:%d: %s", a.c_str(), set.listen_port, uv_strerror(rc));
      return false;
    }
    if (shard_ == 0) LOG_INFO("listening on %s:%d", a.c_str(), set.listen_port);
    listeners_.push_back(std::move(l));
    any = true;
  }
  if (!set.unix_socket_dir.empty() && shard_ == 0) {
    auto l = std::make_unique<Listener>();
    l->pooler = this;
    l->unix_socket = true;
    l->path = set.unix_socket_dir + "/.s.PGSQL." + std::to_string(set.listen_port);
    ::unlink(l->path.c_str());
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (l->path.size() >= sizeof sun.sun_path) {
      LOG_ERROR("cannot listen on unix socket %s: path too long", l->path.c_str());
      return false;
    }
    std::memcpy(sun.sun_path, l->path.c_str(), l->path.size() + 1);
    int rc = open_listener(l.get(), loop_, reinterpret_cast<sockaddr*>(&sun), socklen_t(sizeof sun),
                           std::max(set.listen_backlog, 1), false);
    if (rc != 0) {
      LOG_ERROR("cannot listen on unix socket %s: %s", l->path.c_str(), uv_strerror(rc));
      return false;
    }
    ::chmod(l->path.c_str(), 0777);
    LOG_INFO("listening on unix socket %s", l->path.c_str());
    listeners_.push_back(std::move(l));
    any = true;
  }
  if (!any && shard_ == 0) {
    LOG_ERROR("nothing to listen on: set listen_addr or unix_socket_dir");
    return false;
  }
  return true;
}

void Pooler::close_listeners(bool tcp_only) {
  for (auto& l : listeners_) {
    if (!l->closed && !(tcp_only && l->unix_socket)) {
      close_listener(l.get());
      if (l->unix_socket) ::unlink(l->path.c_str());
    }
  }
  http_close(http_, false);
}

// Accepts what is pending (bounded, so one busy listener cannot starve the loop).
void Pooler::accept_ready(Listener* l) {
  for (int i = 0; i < 256 && !l->closed; i++) {
    int fd = ::accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (l->unix_socket && hub_->threaded()) {
        // One worker listens on the Unix socket (SO_REUSEPORT is for TCP): it hands
        // the connections round-robin to all workers.
        int to = int(unix_rr_++ % std::uint32_t(hub_->size()));
        if (to != shard_ && hub_->post(to, {Hub::MsgKind::Accept, std::uint32_t(fd), 1})) continue;
      }
      on_accept(l->unix_socket, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // Out of descriptors: leave the connections in the backlog and stop watching the
      // socket (it would stay readable); the janitor tries again every 250 ms.
      if (!l->out_of_fds) LOG_WARN("accept failed: %s; new connections wait until descriptors free up", std::strerror(errno));
      l->out_of_fds = true;
      uv_poll_stop(&l->poll);
      return;
    }
    LOG_WARN("accept failed: %s", std::strerror(errno));
    return;
  }
}

void Pooler::on_accept(bool unix_socket, int fd) {
  auto* c = new Client();
  c->pooler = this;
  c->is_client = true;
  c->id = next_id();
  c->node.owner = c;
  c->unix_socket = c->unix_sock = unix_socket;
  if (!c->attach(fd)) {
    LOG_WARN("cannot watch a new connection; closed it");
    delete c;
    return;
  }
  if (!unix_socket) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tune_socket(fd, cfg_.pooler);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) c->remote.set(ss);
  } else {
    c->remote.family = AF_UNIX;
  }
  c->connect_time = c->request_time = now();
  if (suspended_) c->want_read = false;
  client_count_++;
  hub_->clients.fetch_add(1, std::memory_order_relaxed);
  cl_login_.push_back(&c->node);
  c->update_reading();
}

}  // namespace pgpivot
