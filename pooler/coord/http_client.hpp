// HTTP requests on a libuv loop through libcurl's multi interface: curl owns the
// protocol (HTTP/1.1, TLS, redirects off), the loop owns the waiting
// (curl_multi_socket_action driven by uv_poll_t per socket and one uv_timer_t).
// Nothing blocks the reactor: a request's callback runs from the loop when its
// answer, its error or its timeout comes. Used for etcd's v3 JSON gateway
// (coord/etcd.hpp) and Patroni's REST API (decider = "patroni").
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <string>

namespace pgpivot::coord {

struct HttpResult {
  long status = 0;    // HTTP status; 0 = no answer (see error)
  std::string body;   // at most kMaxBody bytes
  std::string error;  // curl's words when status is 0
};

struct HttpTls {
  std::string ca_file, cert_file, key_file;  // "" = curl's defaults / none
};

class HttpClient {
 public:
  static constexpr size_t kMaxBody = 4 << 20;  // an answer longer than this fails
  using Done = std::function<void(HttpResult&&)>;

  explicit HttpClient(uv_loop_t* loop);
  ~HttpClient();  // close() must have run (or the loop is gone with everything)
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // GET when `post` is false, else POST of JSON. `done` runs later from the loop,
  // exactly once, unless close() runs first (after close() nothing is sent). Returns an id.
  unsigned request(const std::string& url, bool post, const std::string& post_body, double timeout_s, Done done,
                   const HttpTls* tls = nullptr);
  // Drops every request (their callbacks do not run) and closes the uv handles.
  void close();
  [[nodiscard]] size_t in_flight() const { return reqs_.size(); }

 private:
  struct Req;
  struct Sock;
  static int on_socket(void* easy, int fd, int what, void* userp, void* socketp);
  static int on_timer(void* multi, long timeout_ms, void* userp);
  static void on_poll(uv_poll_t* h, int status, int events);
  static void on_timeout(uv_timer_t* t);
  void drive(int fd, int flags);
  void reap();

  uv_loop_t* loop_;
  void* multi_ = nullptr;          // CURLM*
  uv_timer_t* timer_ = nullptr;    // freed in its close callback
  std::map<void*, Req*> reqs_;     // CURL* -> request
  unsigned next_id_ = 1;
  bool closed_ = false;
};

}  // namespace pgpivot::coord
