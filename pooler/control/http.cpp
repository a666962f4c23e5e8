// The stats endpoint: a deliberately small HTTP/1.x server on the pooler's libuv
// loop (stats_listen). GET /metrics answers in the Prometheus text format, GET
// /stats with a self-contained HTML status page; anything else gets a 4xx.
//
// Every connection gets one response and is closed. A client cannot hold the
// pooler up: reads are non-blocking, a request head is at most kMaxRequest bytes
// and must arrive within kRequestTimeoutMs, a response that the client does not
// read is dropped after kWriteTimeoutMs, and at most kMaxConns connections are
// open at once (the ones above get a 503 and are closed at once). What the two
// answer is made in control/metrics.cpp and control/stats_page.cpp.
#include <arpa/inet.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <initializer_list>

#include "pooler/control/http.hpp"

#include "pooler/control/metrics.hpp"
#include "pooler/control/stats_page.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {

constexpr std::size_t kMaxRequest = 8192;   // request line + headers
constexpr std::size_t kMaxConns = 64;
constexpr std::uint64_t kRequestTimeoutMs = 5000;
constexpr std::uint64_t kWriteTimeoutMs = 10000;
constexpr std::uint64_t kLingerMs = 2000;   // after the response: wait for the client's FIN

}  // namespace

struct HttpConn;

struct HttpServer {
  Pooler* pooler = nullptr;
  uv_tcp_t listener{};
  bool listening = false;  // the listener is initialised and not closed
  std::string where;       // host:port, for logs
  std::vector<HttpConn*> conns;
  char rbuf[4096];         // shared read buffer: each read is consumed before the next
};

struct HttpConn {
  HttpServer* srv = nullptr;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_write_t wreq{};
  uv_shutdown_t sreq{};
  std::string req;      // request head received so far (at most kMaxRequest bytes)
  std::string resp;     // the response while it is being written
  int handles = 0;      // open libuv handles; the object is freed when the last has closed
  bool responded = false;
  bool written = false;
  bool peer_eof = false;
  bool closing = false;
};

void HttpServerDeleter::operator()(HttpServer* h) const { delete h; }

namespace {

uv_stream_t* stream_of(HttpConn* c) { return reinterpret_cast<uv_stream_t*>(&c->tcp); }

void on_conn_handle_closed(uv_handle_t* h) {
  auto* c = static_cast<HttpConn*>(h->data);
  if (--c->handles == 0) delete c;
}

void close_conn(HttpConn* c) {
  if (c->closing) return;
  c->closing = true;
  auto& v = c->srv->conns;
  auto it = std::find(v.begin(), v.end(), c);
  if (it != v.end()) {
    *it = v.back();
    v.pop_back();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_conn_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_conn_handle_closed);
}

void on_timer(uv_timer_t* t);

void on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<HttpConn*>(req->data);
  if (!c->closing && status < 0) close_conn(c);
}

void on_written(uv_write_t* req, int status) {
  auto* c = static_cast<HttpConn*>(req->data);
  if (c->closing) return;
  c->written = true;
  std::string().swap(c->resp);
  if (status < 0 || c->peer_eof) {
    close_conn(c);
    return;
  }
  // Half-close and wait briefly for the client's FIN, so that closing does not
  // reset a connection whose response the client has not read yet.
  if (uv_shutdown(&c->sreq, stream_of(c), on_shutdown) != 0) {
    close_conn(c);
    return;
  }
  uv_timer_start(&c->timer, on_timer, kLingerMs, 0);
}

void respond(HttpConn* c, int status, const char* reason, const char* content_type, std::string_view body,
             std::string_view extra_headers = {}) {
  if (c->responded || c->closing) return;
  c->responded = true;
  std::string().swap(c->req);
  std::string& r = c->resp;
  r.reserve(body.size() + 320 + extra_headers.size());
  char line[160];
  std::snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", status, reason, body.size());
  r += line;
  r += "Content-Type: ";
  r += content_type;
  r += "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n";
  r += extra_headers;
  r += "\r\n";
  r += body;
  uv_buf_t b = uv_buf_init(r.data(), static_cast<unsigned>(r.size()));
  uv_timer_start(&c->timer, on_timer, kWriteTimeoutMs, 0);
  if (uv_write(&c->wreq, stream_of(c), &b, 1, on_written) != 0) close_conn(c);
}

void respond_error(HttpConn* c, int status, const char* reason, std::string_view extra_headers = {}) {
  std::string body = std::to_string(status) + " " + reason + "\n";
  respond(c, status, reason, "text/plain; charset=utf-8", body, extra_headers);
}

void on_timer(uv_timer_t* t) {
  auto* c = static_cast<HttpConn*>(t->data);
  if (c->closing) return;
  try {
    if (!c->responded) {
      respond_error(c, 408, "Request Timeout");
      return;
    }
  } catch (...) {
  }
  close_conn(c);  // the client does not read its response, or does not close
}

bool bad_byte(char ch) {
  auto u = static_cast<unsigned char>(ch);
  return (u < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || u == 0x7f;
}

// The whole request head is in `head` (up to and excluding the blank line).
void handle_request(HttpConn* c, std::string_view head) {
  for (char ch : head) {
    if (bad_byte(ch)) return respond_error(c, 400, "Bad Request");
  }
  std::size_t eol = head.find('\n');
  std::string_view line = head.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::size_t sp1 = line.find(' ');
  std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return respond_error(c, 400, "Bad Request");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || method.size() > 16 ||
      !std::all_of(method.begin(), method.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; })) {
    return respond_error(c, 400, "Bad Request");
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    if (version.substr(0, 5) == "HTTP/") return respond_error(c, 505, "HTTP Version Not Supported");
    return respond_error(c, 400, "Bad Request");
  }
  // Header lines must at least look like "name: value".
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 1);
  while (!rest.empty()) {
    std::size_t e = rest.find('\n');
    std::string_view h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 1);
    if (!h.empty() && h.back() == '\r') h.remove_suffix(1);
    std::size_t colon = h.find(':');
    if (colon == 0 || colon == std::string_view::npos || h.front() == ' ' || h.front() == '\t') {
      return respond_error(c, 400, "Bad Request");
    }
  }
  // Absolute form (http://host/path) as proxies send it; then drop ?query and #fragment.
  if (target.substr(0, 7) == "http://") {
    std::size_t slash = target.find('/', 7);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (target.empty() || target.front() != '/') return respond_error(c, 400, "Bad Request");
  target = target.substr(0, target.find_first_of("?#"));
  bool metrics = target == "/metrics";
  bool page = target == "/stats";
  if (!metrics && !page) return respond_error(c, 404, "Not Found");
  if (method != "GET") return respond_error(c, 405, "Method Not Allowed", "Allow: GET\r\n");
  try {
    Pooler* p = c->srv->pooler;
    WorldLock world_lock(p->hub(), p->shard());  // the figures of every worker
    if (metrics) {
      respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_metrics(*p));
    } else {
      respond(c, 200, "OK", "text/html; charset=utf-8", render_stats_page(*p),
              "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'\r\n");
    }
  } catch (const std::exception& e) {
    LOG_ERROR("stats_listen: cannot answer %.*s: %s", int(target.size()), target.data(), e.what());
    if (!c->responded) respond_error(c, 500, "Internal Server Error");
  }
}

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<HttpConn*>(h->data);
  *buf = uv_buf_init(c->srv->rbuf, sizeof c->srv->rbuf);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<HttpConn*>(s->data);
  if (c->closing) return;
  try {
    if (n < 0) {
      if (n == UV_EOF && !c->written && (c->responded || !c->req.empty())) {
        // Half-closed by the client: finish (or send) the answer, then close.
        c->peer_eof = true;
        uv_read_stop(s);
        if (!c->responded) respond_error(c, 400, "Bad Request");
        return;
      }
      close_conn(c);
      return;
    }
    if (n == 0 || c->responded) return;  // after the response, input is read and dropped
    if (std::size_t(n) > kMaxRequest - c->req.size()) {
      return respond_error(c, 431, "Request Header Fields Too Large");
    }
    c->req.append(buf->base, std::size_t(n));
    // Not HTTP at all (a TLS handshake, a PostgreSQL startup packet): say so at once.
    std::size_t eol = c->req.find('\n');
    std::string_view first(c->req.data(), eol == std::string::npos ? c->req.size() : eol);
    if (!first.empty() && !(first.front() >= 'A' && first.front() <= 'Z')) {
      return respond_error(c, 400, "Bad Request");
    }
    for (char ch : first) {
      if (bad_byte(ch)) return respond_error(c, 400, "Bad Request");
    }
    std::size_t end = c->req.find("\r\n\r\n");
    std::size_t end_lf = c->req.find("\n\n");
    if (end == std::string::npos && end_lf == std::string::npos) {
      if (c->req.size() >= kMaxRequest) respond_error(c, 431, "Request Header Fields Too Large");
      return;
    }
    std::size_t head_len = std::min(end, end_lf);
    std::string head = c->req.substr(0, head_len);
    handle_request(c, head);
  } catch (...) {
    close_conn(c);
  }
}

void on_http_connection(uv_stream_t* listener, int status) {
  auto* hs = static_cast<HttpServer*>(listener->data);
  if (status < 0) {
    LOG_WARN("stats_listen %s: accept failed: %s", hs->where.c_str(), uv_strerror(status));
    return;
  }
  HttpConn* c = nullptr;
  try {
    c = new HttpConn();
  } catch (...) {
    return;
  }
  c->srv = hs;
  uv_loop_t* loop = listener->loop;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->handles = 2;
  c->tcp.data = c;
  c->timer.data = c;
  c->wreq.data = c;
  c->sreq.data = c;
  if (uv_accept(listener, stream_of(c)) != 0) {
    close_conn(c);
    return;
  }
  if (hs->conns.size() >= kMaxConns) {
    static const char k503[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
        "Connection: close\r\n\r\ntoo many connections\n";
    uv_buf_t b = uv_buf_init(const_cast<char*>(k503), sizeof k503 - 1);
    uv_try_write(stream_of(c), &b, 1);
    close_conn(c);
    return;
  }
  try {
    hs->conns.push_back(c);
  } catch (...) {
    close_conn(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->timer, on_timer, kRequestTimeoutMs, 0);
  if (uv_read_start(stream_of(c), on_alloc, on_read) != 0) close_conn(c);
}

// "host:port", "[v6]:port", "*:port" (all IPv4 addresses), "localhost:port" or just "port" (127.0.0.1).
bool parse_listen(const std::string& spec, sockaddr_storage& ss, std::string& why) {
  std::string host = "127.0.0.1", port = spec;
  std::size_t colon = spec.rfind(':');
  if (colon != std::string::npos) {
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  }
  if (host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || p < 1 || p > 65535) {
    why = "\"" + spec + "\": expected host:port with a port from 1 to 65535";
    return false;
  }
  ss = {};
  if (uv_ip4_addr(host.c_str(), int(p), reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
      uv_ip6_addr(host.c_str(), int(p), reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
    why = "\"" + spec + "\": \"" + host + "\" is not an IP address (host names are not resolved)";
    return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Listener

bool http_start(HttpEndpoint& ep, Pooler& p) {
  const std::string& spec = p.settings().stats_listen;
  if (spec.empty()) return true;
  sockaddr_storage ss{};
  std::string why;
  if (!parse_listen(spec, ss, why)) {
    LOG_ERROR("stats_listen: %s", why.c_str());
    return false;
  }
  ep.reset(new HttpServer());
  HttpServer* h = ep.get();
  h->pooler = &p;
  h->where = spec;
  uv_tcp_init(p.loop(), &h->listener);
  h->listener.data = h;
  h->listening = true;
  int rc = uv_tcp_bind(&h->listener, reinterpret_cast<sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&h->listener), 64, on_http_connection);
  if (rc != 0) {
    LOG_ERROR("cannot listen on %s (stats_listen): %s", spec.c_str(), uv_strerror(rc));
    http_close(ep, true);
    return false;
  }
  LOG_INFO("stats endpoint on http://%s/metrics and /stats", spec.c_str());
  return true;
}

void http_close(HttpEndpoint& ep, bool connections) {
  if (!ep) return;
  if (ep->listening) {
    ep->listening = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&ep->listener), nullptr);
  }
  if (connections) {
    std::vector<HttpConn*> open = ep->conns;
    for (HttpConn* c : open) close_conn(c);
  }
}

}  // namespace pgpivot
