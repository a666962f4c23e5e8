// The stats endpoint: a deliberately small HTTP/1.x server on the pooler's libuv
// loop (stats_listen). GET /metrics answers in the Prometheus text format, GET
// /stats with a self-contained HTML status page; anything else gets a 4xx.
//
// Every connection gets one response and is closed. A client cannot hold the
// pooler up: reads are non-blocking, a request head is at most kMaxRequest bytes
// and must arrive within kRequestTimeoutMs, a response that the client does not
// read is dropped after kWriteTimeoutMs, and at most kMaxConns connections are
// open at once (the ones above get a 503 and are closed at once).
//
// The values are the ones the admin console shows: pgpivot_pool_* as SHOW POOLS,
// pgpivot_stats_* as SHOW STATS (per database), pgpivot_database_* as SHOW
// DATABASES, pgpivot_cluster_* and the failover metrics as SHOW CLUSTERS.
#include <arpa/inet.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <initializer_list>

#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {

constexpr std::size_t kMaxRequest = 8192;   // request line + headers
constexpr std::size_t kMaxConns = 64;
constexpr std::uint64_t kRequestTimeoutMs = 5000;
constexpr std::uint64_t kWriteTimeoutMs = 10000;
constexpr std::uint64_t kLingerMs = 2000;   // after the response: wait for the client's FIN
constexpr int kPageRefreshS = 5;
constexpr std::size_t kPageFailovers = 20;  // recent failovers on the page

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
      respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", p->render_metrics());
    } else {
      respond(c, 200, "OK", "text/html; charset=utf-8", p->render_stats_page(),
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

// ---------------------------------------------------------------------------
// Prometheus text format (version 0.0.4)

class Prom {
 public:
  using Labels = std::initializer_list<std::pair<const char*, std::string_view>>;
  explicit Prom(std::string& out) : out_(out) {}

  void family(const char* name, const char* type, const char* help) {
    name_ = name;
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(Labels labels, std::string_view value) {
    out_ += name_;
    if (labels.size()) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        for (char ch : v) {
          if (ch == '\\') out_ += "\\\\";
          else if (ch == '"') out_ += "\\\"";
          else if (ch == '\n') out_ += "\\n";
          else out_ += ch;
        }
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(Labels labels, std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "%" PRIu64, v);
    sample(labels, std::string_view(b));
  }

 private:
  std::string& out_;
  const char* name_ = "";
};

// Exact decimal seconds from microseconds / milliseconds.
std::string us_to_s(std::uint64_t us) {
  char b[40];
  std::snprintf(b, sizeof b, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
  return b;
}
std::string ms_to_s(std::uint64_t ms) {
  char b[40];
  std::snprintf(b, sizeof b, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);
  return b;
}

const char* node_name(int side) { return side ? "standby" : "primary"; }


// ---------------------------------------------------------------------------
// HTML

void esc(std::string& out, std::string_view s) {
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
}

std::string fmt_utc(std::uint64_t epoch) {
  if (!epoch) return "";
  time_t t = time_t(epoch);
  tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tmv);
  return buf;
}

std::string fmt_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  char b[32];
  std::snprintf(b, sizeof b, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return b;
}

std::string fmt_ms(std::uint64_t us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", double(us) / 1000.0);
  return b;
}

const char* badge_class(std::string_view state) {
  if (state == "up") return "up";
  if (state == "down") return "down";
  if (state == "read-only") return "ro";
  return "unk";
}

class Html {
 public:
  explicit Html(std::string& out) : out_(out) {}
  void raw(std::string_view s) { out_ += s; }
  void text(std::string_view s) { esc(out_, s); }
  void num(std::uint64_t v) { out_ += std::to_string(v); }
  // A table cell: text (left aligned) or a number.
  void td(std::string_view s) {
    out_ += "<td class=\"t\">";
    esc(out_, s);
    out_ += "</td>";
  }
  void tdn(std::uint64_t v) {
    out_ += "<td>";
    num(v);
    out_ += "</td>";
  }
  void tdn(std::string_view s) {
    out_ += "<td>";
    esc(out_, s);
    out_ += "</td>";
  }
  void td_badge(std::string_view state) {
    out_ += "<td class=\"t\"><span class=\"b ";
    out_ += badge_class(state);
    out_ += "\">";
    esc(out_, state);
    out_ += "</span></td>";
  }
  void head(std::initializer_list<const char*> cols, std::size_t text_cols) {
    out_ += "<table><thead><tr>";
    std::size_t i = 0;
    for (const char* col : cols) {
      out_ += i++ < text_cols ? "<th class=\"t\">" : "<th>";
      out_ += col;
      out_ += "</th>";
    }
    out_ += "</tr></thead><tbody>";
  }
  void empty_row(std::size_t cols, const char* what) {
    out_ += "<tr><td class=\"t empty\" colspan=\"" + std::to_string(cols) + "\">";
    out_ += what;
    out_ += "</td></tr>";
  }
  void end_table() { out_ += "</tbody></table>"; }

 private:
  std::string& out_;
};

const char kStyle[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px 32px;"
    "color:#1d2330;background:#f5f6f8}"
    "h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:26px 0 8px;color:#2a3140}"
    ".sub{color:#5b6475;margin-bottom:16px}.sub a{color:#2f5fb3}"
    ".cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:4px}"
    ".card{background:#fff;border-radius:6px;padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.1);min-width:120px}"
    ".card span{display:block;color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}"
    ".card b{font-size:22px}"
    "table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.1);border-radius:6px;"
    "overflow:hidden}"
    "th,td{padding:6px 12px;border-bottom:1px solid #e4e7ec;text-align:right;white-space:nowrap;"
    "font-variant-numeric:tabular-nums}"
    "th{background:#eceff4;font-weight:600;color:#38404f;font-size:12px}"
    "tr:last-child td{border-bottom:none}.t{text-align:left}.empty{color:#7a8294;font-style:italic}"
    ".b{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600}"
    ".up{background:#d6f4dc;color:#176a2b}.down{background:#fbdad7;color:#a1261c}"
    ".ro{background:#dae7fb;color:#1d4f91}.unk{background:#e7e9ed;color:#555d6b}"
    ".warn{color:#a1261c;font-weight:600}";

}  // namespace

// ---------------------------------------------------------------------------
// Listener

bool Pooler::start_http() {
  const std::string& spec = cfg_.pooler.stats_listen;
  if (spec.empty()) return true;
  sockaddr_storage ss{};
  std::string why;
  if (!parse_listen(spec, ss, why)) {
    LOG_ERROR("stats_listen: %s", why.c_str());
    return false;
  }
  http_.reset(new HttpServer());
  HttpServer* h = http_.get();
  h->pooler = this;
  h->where = spec;
  uv_tcp_init(loop_, &h->listener);
  h->listener.data = h;
  h->listening = true;
  int rc = uv_tcp_bind(&h->listener, reinterpret_cast<sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&h->listener), 64, on_http_connection);
  if (rc != 0) {
    LOG_ERROR("cannot listen on %s (stats_listen): %s", spec.c_str(), uv_strerror(rc));
    close_http(true);
    return false;
  }
  LOG_INFO("stats endpoint on http://%s/metrics and /stats", spec.c_str());
  return true;
}

void Pooler::close_http(bool connections) {
  if (!http_) return;
  if (http_->listening) {
    http_->listening = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&http_->listener), nullptr);
  }
  if (connections) {
    std::vector<HttpConn*> open = http_->conns;
    for (HttpConn* c : open) close_conn(c);
  }
}

// ---------------------------------------------------------------------------
// /metrics


std::string Pooler::render_metrics() {
  auto& clusters_ = control()->clusters().all();
  auto groups = pool_groups();
  std::string out;
  out.reserve(8192 + groups.size() * 1600 + clusters_.size() * 1200);
  Prom m(out);
  int client_count_ = 0;
  for (Pooler* w : world()) client_count_ += w->client_count_;

  m.family("pgpivot_info", "gauge", "pgpivot's version; always 1.");
  m.sample({{"version", PGPIVOT_VERSION}}, 1);

  // Process-wide (SHOW STATE, SHOW LISTS).
  std::map<std::pair<std::string, std::string>, PoolCounts> counts;
  std::uint64_t servers = 0;
  for (auto& [k, g] : groups) {
    counts[k] = group_counts(g);
    servers += counts[k].servers();
  }
  m.family("pgpivot_client_connections", "gauge", "Client connections, including those still logging in.");
  m.sample({}, std::uint64_t(std::max(client_count_, 0)));
  m.family("pgpivot_max_client_connections", "gauge", "max_client_conn.");
  m.sample({}, std::uint64_t(std::max(cfg_.pooler.max_client_conn, 0)));
  m.family("pgpivot_server_connections", "gauge", "Server connections of all pools, in every state.");
  m.sample({}, servers);
  m.family("pgpivot_paused", "gauge", "1 while PAUSE (all databases) is in effect.");
  m.sample({}, paused_all_ ? 1 : 0);
  m.family("pgpivot_suspended", "gauge", "1 while SUSPEND is in effect.");
  m.sample({}, suspended_ ? 1 : 0);

  // Pools: the columns of SHOW POOLS, one series per (database, user).
  // Counts add up over the workers' parts of a pool.
  auto pool_family = [&](const char* name, const char* help, auto value) {
    m.family(name, "gauge", help);
    for (auto& [k, n] : counts) m.sample({{"database", k.first}, {"user", k.second}}, value(n));
  };
  pool_family("pgpivot_pool_client_active",
              "Clients linked to a server or idle between transactions (SHOW POOLS cl_active).",
              [](const PoolCounts& n) { return n.cl_active; });
  pool_family("pgpivot_pool_client_waiting",
              "Clients waiting for a server connection or for the login to finish (SHOW POOLS cl_waiting).",
              [](const PoolCounts& n) { return n.cl_waiting; });
  pool_family("pgpivot_pool_server_active", "Server connections linked to a client (SHOW POOLS sv_active).",
              [](const PoolCounts& n) { return n.sv_active; });
  pool_family("pgpivot_pool_server_idle", "Server connections ready for use (SHOW POOLS sv_idle).",
              [](const PoolCounts& n) { return n.sv_idle; });
  pool_family("pgpivot_pool_server_used",
              "Released server connections not checked yet (SHOW POOLS sv_used).",
              [](const PoolCounts& n) { return n.sv_used; });
  pool_family("pgpivot_pool_server_tested",
              "Server connections running the reset or check query (SHOW POOLS sv_tested).",
              [](const PoolCounts& n) { return n.sv_tested; });
  pool_family("pgpivot_pool_server_login", "Server connections logging in (SHOW POOLS sv_login).",
              [](const PoolCounts& n) { return n.sv_login; });
  m.family("pgpivot_pool_maxwait_seconds", "gauge",
           "How long the oldest waiting client has waited (SHOW POOLS maxwait + maxwait_us).");
  for (auto& [k, n] : counts) m.sample({{"database", k.first}, {"user", k.second}}, ms_to_s(n.maxwait_ms));
  m.family("pgpivot_pool_size", "gauge", "Configured server connections for the pool (pool_size).");
  for (auto& [k, g] : groups) {
    m.sample({{"database", k.first}, {"user", k.second}}, std::uint64_t(std::max(pool_size(g.front()), 0)));
  }

  // Databases: SHOW DATABASES.
  auto db_family = [&](const char* name, const char* help, auto value) {
    m.family(name, "gauge", help);
    for (auto& [dn, d] : dbs_) {
      if (d->removed || !d->cluster) continue;
      m.sample({{"database", dn}}, value(d.get()));
    }
  };
  db_family("pgpivot_database_current_connections",
            "Server connections of the database, all users (SHOW DATABASES current_connections).",
            [](DbEntry* d) { return std::uint64_t(std::max(d->counts->servers.load(), 0)); });
  db_family("pgpivot_database_max_connections",
            "max_db_connections of the database; 0 = no limit (SHOW DATABASES max_connections).",
            [&](DbEntry* d) {
              int v = d->cfg.max_db_connections >= 0 ? d->cfg.max_db_connections : cfg_.pooler.max_db_connections;
              return std::uint64_t(std::max(v, 0));
            });
  db_family("pgpivot_database_current_client_connections",
            "Client connections of the database (SHOW DATABASES current_client_connections).",
            [](DbEntry* d) { return std::uint64_t(std::max(d->counts->clients.load(), 0)); });
  db_family("pgpivot_database_paused", "1 while the database is paused (SHOW DATABASES paused).",
            [&](DbEntry* d) { return std::uint64_t(d->paused || paused_all_ ? 1 : 0); });
  db_family("pgpivot_database_disabled", "1 while the database is disabled (SHOW DATABASES disabled).",
            [](DbEntry* d) { return std::uint64_t(d->disabled ? 1 : 0); });

  // Statistics: SHOW STATS' totals, per database.
  std::map<std::string, StatsSum> per_db = stats_by_database();
  struct StatHelp {
    const char* metric;
    const char* help;
  };
  // In stat_counters() order.
  static const StatHelp kHelp[kStatCounters] = {
      {"pgpivot_stats_server_assignment_count_total",
       "Times a server connection was assigned to a client (SHOW STATS total_server_assignment_count)."},
      {"pgpivot_stats_xact_count_total", "Transactions pooled (SHOW STATS total_xact_count)."},
      {"pgpivot_stats_query_count_total", "Queries pooled (SHOW STATS total_query_count)."},
      {"pgpivot_stats_received_bytes_total", "Bytes received from clients (SHOW STATS total_received)."},
      {"pgpivot_stats_sent_bytes_total", "Bytes sent to clients (SHOW STATS total_sent)."},
      {"pgpivot_stats_xact_time_seconds_total",
       "Time spent in transactions, idle in transaction included (SHOW STATS total_xact_time)."},
      {"pgpivot_stats_query_time_seconds_total", "Time spent in queries (SHOW STATS total_query_time)."},
      {"pgpivot_stats_wait_time_seconds_total",
       "Time clients waited for a server connection (SHOW STATS total_wait_time)."},
      {"pgpivot_stats_client_parse_count_total",
       "Prepared statements created by clients (SHOW STATS total_client_parse_count)."},
      {"pgpivot_stats_server_parse_count_total",
       "Prepared statements created on servers (SHOW STATS total_server_parse_count)."},
      {"pgpivot_stats_bind_count_total", "Prepared statements bound (SHOW STATS total_bind_count)."},
      {"pgpivot_stats_client_login_count_total", "Client logins (SHOW STATS total_client_login_count)."},
  };
  for (std::size_t i = 0; i < kStatCounters; i++) {
    const StatCounter& k = stat_counters()[i];
    m.family(kHelp[i].metric, "counter", kHelp[i].help);
    for (auto& [db, sum] : per_db) {
      std::uint64_t v = sum.totals().*k.member;
      m.sample({{"database", db}}, k.kind == StatCounter::Time ? us_to_s(v) : std::to_string(v));
    }
  }

  // Clusters: SHOW CLUSTERS.
  std::vector<ClusterRt*> cls;
  for (auto& [name, cl] : clusters_) {
    if (!cl->removed) cls.push_back(cl.get());
  }
  m.family("pgpivot_cluster_node_up", "gauge",
           "1 when the node answers health checks (state up or read-only), else 0; "
           "only nodes of clusters with a standby are checked.");
  for (ClusterRt* cl : cls) {
    if (!cl->cfg->standby) continue;
    for (int side = 0; side < 2; side++) {
      NodeState st = cl->state(side);
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}, {"state", to_string(st)}},
               std::uint64_t(st == NodeState::Up || st == NodeState::ReadOnly ? 1 : 0));
    }
  }
  m.family("pgpivot_cluster_node_active", "gauge", "1 for the node the cluster's pools connect to (SHOW CLUSTERS active).");
  for (ClusterRt* cl : cls) {
    for (int side = 0; side < (cl->cfg->standby ? 2 : 1); side++) {
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}}, std::uint64_t(cl->active_standby() == (side == 1)));
    }
  }
  m.family("pgpivot_cluster_health_check_duration_seconds", "gauge",
           "Duration of the node's last health check (SHOW CLUSTERS last_check_ms).");
  for (ClusterRt* cl : cls) {
    if (!cl->cfg->standby) continue;
    for (int side = 0; side < 2; side++) {
      m.sample({{"cluster", cl->name}, {"node", node_name(side)}}, us_to_s(cl->last_check_us[side]));
    }
  }
  m.family("pgpivot_cluster_mode", "gauge",
           "1 for the cluster's current mode: normal, draining (switchover/failback waits for transactions), "
           "promoting, no_writable_node, two_writable_nodes or starting (SHOW CLUSTERS mode).");
  for (ClusterRt* cl : cls) {
    using failover::Mode;
    Mode cur = cl->has_standby() ? cl->fsm.mode() : Mode::Normal;
    for (auto [mode, name] : {std::pair{Mode::Normal, "normal"}, {Mode::Draining, "draining"},
                              {Mode::Promoting, "promoting"}, {Mode::NoWritable, "no_writable_node"},
                              {Mode::TwoWritable, "two_writable_nodes"}, {Mode::Starting, "starting"}}) {
      m.sample({{"cluster", cl->name}, {"mode", name}}, std::uint64_t(cur == mode ? 1 : 0));
    }
  }
  m.family("pgpivot_cluster_epoch", "gauge",
           "The cluster's epoch: 1 + completed moves since the state file began (SHOW CLUSTERS epoch).");
  for (ClusterRt* cl : cls)
    if (cl->has_standby()) m.sample({{"cluster", cl->name}}, cl->fsm.epoch());
  m.family("pgpivot_cluster_lag_bytes", "gauge",
           "WAL bytes the node that is not active lags behind the active one, from the last checks "
           "(SHOW CLUSTERS lag_bytes); absent while unknown.");
  for (ClusterRt* cl : cls) {
    if (!cl->has_standby()) continue;
    if (auto lag = cl->fsm.lag_bytes()) m.sample({{"cluster", cl->name}}, std::uint64_t(*lag));
  }
  m.family("pgpivot_cluster_witness_receiving", "gauge",
           "1 when the node that is not active still receives from the active one (SHOW CLUSTERS witness), "
           "labelled with the witness state.");
  for (ClusterRt* cl : cls) {
    if (!cl->has_standby()) continue;
    auto w = cl->fsm.witness(double(uv_hrtime()) / 1e9);
    m.sample({{"cluster", cl->name}, {"witness", failover::to_string(w)}},
             std::uint64_t(w == failover::Witness::Receiving ? 1 : 0));
  }
  m.family("pgpivot_failovers_total", "counter",
           "Completed moves of the cluster to the other node: failovers, switchovers and failbacks "
           "(SHOW CLUSTERS failovers).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, cl->failovers);
  m.family("pgpivot_last_failover_duration_seconds", "gauge",
           "Duration of the cluster's last completed move; 0 before the first (SHOW CLUSTERS last_failover_ms).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, ms_to_s(cl->last_failover_ms));
  m.family("pgpivot_last_failover_timestamp_seconds", "gauge",
           "Unix time when the cluster's last completed move started; 0 before the first (SHOW CLUSTERS "
           "last_failover).");
  for (ClusterRt* cl : cls) m.sample({{"cluster", cl->name}}, cl->last_failover_wall);
  return out;
}

// ---------------------------------------------------------------------------
// /stats

std::string Pooler::render_stats_page() {
  auto& clusters_ = control()->clusters().all();
  auto& failover_log_ = control()->clusters().log();
  auto groups = pool_groups();
  std::string out;
  out.reserve(16384 + groups.size() * 600 + clusters_.size() * 600);
  Html h(out);
  int client_count_ = 0;
  for (Pooler* w : world()) client_count_ += w->client_count_;
  std::uint64_t wall = std::uint64_t(time(nullptr));
  h.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"" + std::to_string(kPageRefreshS) + "\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>pgpivot status</title><style>");
  h.raw(kStyle);
  h.raw("</style></head><body>\n<h1>pgpivot status</h1><div class=\"sub\">pgpivot " PGPIVOT_VERSION " &middot; ");
  h.text(fmt_utc(wall));
  h.raw(" &middot; refreshes every " + std::to_string(kPageRefreshS) +
        " s &middot; <a href=\"/metrics\">Prometheus metrics</a></div>\n");

  // Summary cards.
  std::uint64_t servers = 0, waiting = 0;
  for (auto& [k, g] : groups) {
    PoolCounts n = group_counts(g);
    servers += n.servers();
    for (Pool* p : g) waiting += p->cl_waiting.size();
  }
  auto card = [&](const char* label, const std::string& value, bool warn = false) {
    h.raw("<div class=\"card\"><span>");
    h.raw(label);
    h.raw(warn ? "</span><b class=\"warn\">" : "</span><b>");
    h.text(value);
    h.raw("</b></div>");
  };
  h.raw("<div class=\"cards\">");
  card("clients", std::to_string(client_count_) + " / " + std::to_string(cfg_.pooler.max_client_conn));
  card("waiting clients", std::to_string(waiting), waiting > 0);
  card("server connections", std::to_string(servers));
  card("pools", std::to_string(groups.size()));
  card("state", suspended_ ? "suspended" : paused_all_ ? "paused" : "running", suspended_ || paused_all_);
  h.raw("</div>\n");

  // Pools, as SHOW POOLS.
  h.raw("<h2>Pools</h2>");
  h.head({"database", "user", "pool_mode", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
          "sv_login", "pool_size", "maxwait (s)"},
         3);
  for (auto& [k, g] : groups) {
    Pool* p = g.front();
    PoolCounts c = group_counts(g);
    h.raw("<tr class=\"pool\" data-pool=\"");
    h.text(p->db_name + "/" + p->user_name);
    h.raw("\">");
    h.td(p->db_name);
    h.td(p->user_name);
    h.td(config::to_string(pool_mode(p)));
    for (std::uint64_t v : {c.cl_active, c.cl_waiting, c.sv_active, c.sv_idle, c.sv_used, c.sv_tested, c.sv_login})
      h.tdn(v);
    h.tdn(std::uint64_t(std::max(pool_size(p), 0)));
    h.tdn(ms_to_s(c.maxwait_ms));
    h.raw("</tr>\n");
  }
  if (groups.empty()) h.empty_row(12, "no pools yet: a pool appears when its first client logs in");
  h.end_table();

  // Statistics per database, as SHOW STATS.
  // Average times weighted by their events over pools and workers (control/stats.hpp).
  std::map<std::string, StatsSum> per_db = stats_by_database();
  h.raw("<h2>Statistics</h2>");
  h.head({"database", "transactions", "queries", "xacts/s", "queries/s", "avg xact (ms)", "avg query (ms)",
          "avg wait (ms)", "received", "sent", "logins"},
         1);
  for (auto& [db, sum] : per_db) {
    const PoolStats& tot = sum.totals();
    PoolStats avg = sum.averages();
    h.raw("<tr class=\"stats\">");
    h.td(db);
    h.tdn(tot.xact_count);
    h.tdn(tot.query_count);
    h.tdn(avg.xact_count);
    h.tdn(avg.query_count);
    h.tdn(fmt_ms(avg.xact_time));
    h.tdn(fmt_ms(avg.query_time));
    h.tdn(fmt_ms(avg.wait_time));
    h.tdn(fmt_bytes(tot.received));
    h.tdn(fmt_bytes(tot.sent));
    h.tdn(tot.client_login_count);
    h.raw("</tr>\n");
  }
  if (per_db.empty()) h.empty_row(11, "no statistics yet");
  h.end_table();

  // Clusters, as SHOW CLUSTERS.
  h.raw("<h2>Clusters</h2>");
  h.head({"cluster", "active", "mode", "primary", "primary state", "standby", "standby state", "failovers",
          "last failover", "last duration (s)"},
         7);
  bool any_cluster = false;
  for (auto& [name, cl] : clusters_) {
    if (cl->removed) continue;
    any_cluster = true;
    const config::Cluster& cc = *cl->cfg;
    h.raw("<tr class=\"cluster\" data-cluster=\"");
    h.text(name);
    h.raw("\">");
    h.td(name);
    h.td(cl->active_standby() ? "standby" : "primary");
    h.td(cc.standby ? cl->fsm.mode_name() : std::string("normal"));
    h.td(cc.primary.host + ":" + std::to_string(cc.primary.port));
    h.td_badge(cc.standby ? to_string(cl->state(0)) : "unchecked");
    if (cc.standby) {
      h.td(cc.standby->host + ":" + std::to_string(cc.standby->port));
      h.td_badge(to_string(cl->state(1)));
    } else {
      h.td("");
      h.td("");
    }
    h.tdn(cl->failovers);
    h.tdn(fmt_utc(cl->last_failover_wall));
    h.tdn(cl->last_failover_wall ? ms_to_s(cl->last_failover_ms) : std::string());
    h.raw("</tr>\n");
  }
  if (!any_cluster) h.empty_row(10, "no clusters configured");
  h.end_table();

  // Recent failovers, newest first, as SHOW FAILOVERS.
  h.raw("<h2>Recent failovers</h2>");
  h.head({"cluster", "kind", "started", "moved to", "result", "duration (s)", "clients held", "client errors"}, 5);
  std::size_t shown = 0;
  for (auto it = failover_log_.rbegin(); it != failover_log_.rend() && shown < kPageFailovers; ++it, ++shown) {
    const FailoverEvent& ev = *it;
    h.raw("<tr class=\"failover\">");
    h.td(ev.cluster);
    h.td(ev.kind);
    h.td(fmt_utc(ev.start_wall));
    h.td(ev.to);
    h.td(ev.result);
    h.tdn(ms_to_s(ev.duration_ms));
    h.tdn(std::uint64_t(std::max(ev.clients_held, 0)));
    h.tdn(std::uint64_t(std::max(ev.client_errors, 0)));
    h.raw("</tr>\n");
  }
  if (!shown) h.empty_row(8, "no failovers since pgpivot started");
  h.end_table();
  h.raw("\n</body></html>\n");
  return out;
}

}  // namespace pgpivot
