#include "wire_client.hpp"

#include "harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace itest {

int connect_tcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all_fd(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

void put_u32(std::string& s, uint32_t v) {
  uint32_t n = htonl(v);
  s.append(reinterpret_cast<const char*>(&n), 4);
}

uint32_t get_u32(const std::string& s, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, s.data() + at, 4);
  return ntohl(v);
}

std::string message(char type, const std::string& body) {
  std::string m(1, type);
  put_u32(m, static_cast<uint32_t>(body.size() + 4));
  return m + body;
}

std::string startup_packet(const std::vector<std::pair<std::string, std::string>>& params,
                           std::uint32_t version) {
  std::string body;
  put_u32(body, version);
  for (const auto& [k, v] : params) {
    body += k;
    body += '\0';
    body += v;
    body += '\0';
  }
  body += '\0';
  std::string pkt;
  put_u32(pkt, static_cast<uint32_t>(body.size() + 4));
  return pkt + body;
}

std::string error_field(const std::string& payload, char code) {
  size_t i = 0;
  while (i < payload.size() && payload[i] != '\0') {
    char f = payload[i++];
    size_t end = payload.find('\0', i);
    if (end == std::string::npos) break;
    if (f == code) return payload.substr(i, end - i);
    i = end + 1;
  }
  return "";
}

void RawSocket::close() {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

bool RawSocket::read_exact(std::string& out, std::size_t n, double timeout_s, bool* eof) {
  if (eof) *eof = false;
  out.clear();
  double deadline = now_s() + timeout_s;
  while (out.size() < n) {
    int left_ms = static_cast<int>((deadline - now_s()) * 1000);
    if (left_ms <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, left_ms) <= 0) continue;
    char buf[65536];
    ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r <= 0) {
      if (eof) *eof = true;
      return false;
    }
    out.append(buf, static_cast<std::size_t>(r));
  }
  return true;
}

bool RawSocket::read_message(char& type, std::string& payload, double timeout_s, bool* eof) {
  std::string head;
  if (!read_exact(head, 5, timeout_s, eof)) return false;
  type = head[0];
  std::uint32_t len = get_u32(head, 1);
  if (len < 4 || len > (64u << 20)) return false;
  return read_exact(payload, len - 4, timeout_s, eof);
}

char RawSocket::read_until(char want, std::string& payload, double timeout_s) {
  double deadline = now_s() + timeout_s;
  for (;;) {
    char type = 0;
    if (!read_message(type, payload, std::max(0.05, deadline - now_s()))) return 0;
    if (type == want || type == 'E') return type;
  }
}

bool RawSocket::wait_closed(double timeout_s, std::string* rest) {
  double deadline = now_s() + timeout_s;
  for (;;) {
    int left_ms = static_cast<int>((deadline - now_s()) * 1000);
    if (left_ms <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, left_ms) <= 0) continue;
    char buf[4096];
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return true;
    if (rest) rest->append(buf, static_cast<std::size_t>(r));
  }
}

}  // namespace itest
