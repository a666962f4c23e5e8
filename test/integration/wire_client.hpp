// Raw PostgreSQL protocol over a TCP socket, for what libpq never sends:
// malformed startup packets, forged SCRAM messages, slow or silent clients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace itest {

int connect_tcp(int port);  // blocking connect to 127.0.0.1:port; -1 on failure
bool send_all_fd(int fd, const std::string& bytes);
void put_u32(std::string& s, std::uint32_t v);                // big-endian
std::uint32_t get_u32(const std::string& s, std::size_t at);  // big-endian
std::string message(char type, const std::string& body);      // type + length + body
std::string startup_packet(const std::vector<std::pair<std::string, std::string>>& params,
                           std::uint32_t version = 0x00030000);
// Field `code` ('C' = SQLSTATE, 'M' = message) of an ErrorResponse payload.
std::string error_field(const std::string& payload, char code);

struct RawSocket {
  int fd = -1;
  explicit RawSocket(int port) : fd(connect_tcp(port)) {}
  ~RawSocket() { close(); }
  RawSocket(RawSocket&& o) noexcept : fd(o.fd) { o.fd = -1; }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  void close();
  bool send_all(const std::string& bytes) { return fd >= 0 && send_all_fd(fd, bytes); }
  // Exactly n bytes; false on EOF, error or timeout (eof set on EOF / reset).
  bool read_exact(std::string& out, std::size_t n, double timeout_s, bool* eof = nullptr);
  // One typed backend message; false on EOF/timeout.
  bool read_message(char& type, std::string& payload, double timeout_s, bool* eof = nullptr);
  // Reads messages until one of type `want` or an ErrorResponse; returns its type ('\0' on EOF/timeout).
  char read_until(char want, std::string& payload, double timeout_s);
  // True once the peer closed the connection; what came before is appended to rest.
  bool wait_closed(double timeout_s, std::string* rest = nullptr);
};

}  // namespace itest
