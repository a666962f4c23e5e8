// libcurl's multi interface on the libuv loop (see http_client.hpp): curl tells
// which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call back
// (CURLMOPT_TIMERFUNCTION); uv_poll_t and uv_timer_t do the waiting and hand the
// events back with curl_multi_socket_action. Handles are freed in their close callbacks.
#include "pooler/coord/http_client.hpp"

#include <curl/curl.h>

#include <mutex>
#include <vector>

namespace pgpivot::coord {

struct HttpClient::Req {
  unsigned id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body_out;  // the POST body (curl reads it from here)
  HttpResult result;
  bool too_long = false;
  std::pair<std::string*, bool*> sink{&result.body, &too_long};  // what on_write fills
  Done done;
  char errbuf[CURL_ERROR_SIZE] = {0};
};

struct HttpClient::Sock {
  uv_poll_t poll;
  HttpClient* owner;
  int fd;
};

namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t on_write(char* data, size_t size, size_t n, void* userp) {
  auto* body = static_cast<std::pair<std::string*, bool*>*>(userp);
  size_t len = size * n;
  if (body->first->size() + len > HttpClient::kMaxBody) {
    *body->second = true;
    return 0;  // curl fails the transfer (CURLE_WRITE_ERROR)
  }
  body->first->append(data, len);
  return len;
}

}  // namespace

HttpClient::HttpClient(uv_loop_t* loop) : loop_(loop) {
  global_init();
  CURLM* m = curl_multi_init();
  multi_ = m;
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer);
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

HttpClient::~HttpClient() { close(); }

void HttpClient::close() {
  if (closed_) return;
  closed_ = true;
  auto* m = static_cast<CURLM*>(multi_);
  // Removing a handle makes curl release its sockets (CURL_POLL_REMOVE): their polls close.
  for (auto& [easy, r] : reqs_) {
    curl_multi_remove_handle(m, static_cast<CURL*>(easy));
    curl_easy_cleanup(static_cast<CURL*>(easy));
    curl_slist_free_all(r->headers);
    delete r;
  }
  reqs_.clear();
  curl_multi_cleanup(m);
  multi_ = nullptr;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

unsigned HttpClient::request(const std::string& url, bool post, const std::string& post_body, double timeout_s,
                             Done done, const HttpTls* tls) {
  if (closed_) return 0;  // shutting down: nobody waits for an answer any more
  auto* r = new Req;
  r->id = next_id_++;
  r->done = std::move(done);
  r->body_out = post_body;
  CURL* e = curl_easy_init();
  r->easy = e;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for name lookups
  long ms = long(timeout_s * 1000);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms > 0 ? ms : 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &r->sink);
  if (post) {
    r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body_out.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, long(r->body_out.size()));
  }
  if (tls) {
    if (!tls->ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, tls->ca_file.c_str());
    if (!tls->cert_file.empty()) curl_easy_setopt(e, CURLOPT_SSLCERT, tls->cert_file.c_str());
    if (!tls->key_file.empty()) curl_easy_setopt(e, CURLOPT_SSLKEY, tls->key_file.c_str());
  }
  reqs_[e] = r;
  CURLMcode rc = curl_multi_add_handle(static_cast<CURLM*>(multi_), e);
  if (rc != CURLM_OK) {
    // Answered from the loop, as every other outcome.
    reqs_.erase(e);
    r->result.error = curl_multi_strerror(rc);
    curl_easy_cleanup(e);
    auto* idle = new uv_timer_t;
    uv_timer_init(loop_, idle);
    idle->data = r;
    uv_timer_start(idle, [](uv_timer_t* t) {
      auto* req = static_cast<Req*>(t->data);
      req->done(std::move(req->result));
      curl_slist_free_all(req->headers);
      delete req;
      uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    }, 0, 0);
  }
  return r->id;
}

int HttpClient::on_socket(void* easy, int fd, int what, void* userp, void* socketp) {
  (void)easy;
  auto* self = static_cast<HttpClient*>(userp);
  auto* s = static_cast<Sock*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      curl_multi_assign(static_cast<CURLM*>(self->multi_), fd, nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), [](uv_handle_t* h) { delete static_cast<Sock*>(h->data); });
    }
    return 0;
  }
  if (!s) {
    s = new Sock;
    s->owner = self;
    s->fd = fd;
    if (uv_poll_init_socket(self->loop_, &s->poll, fd) != 0) {
      delete s;
      return -1;
    }
    s->poll.data = s;
    curl_multi_assign(static_cast<CURLM*>(self->multi_), fd, s);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, &HttpClient::on_poll);
  return 0;
}

int HttpClient::on_timer(void* multi, long timeout_ms, void* userp) {
  (void)multi;
  auto* self = static_cast<HttpClient*>(userp);
  if (!self->timer_) return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_);
  } else {
    // Even 0 goes through the loop: curl must not be re-entered from its own callback.
    uv_timer_start(self->timer_, &HttpClient::on_timeout, std::uint64_t(timeout_ms), 0);
  }
  return 0;
}

void HttpClient::on_poll(uv_poll_t* h, int status, int events) {
  auto* s = static_cast<Sock*>(h->data);
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  s->owner->drive(s->fd, flags);
}

void HttpClient::on_timeout(uv_timer_t* t) { static_cast<HttpClient*>(t->data)->drive(CURL_SOCKET_TIMEOUT, 0); }

void HttpClient::drive(int fd, int flags) {
  if (closed_) return;
  int running = 0;
  curl_multi_socket_action(static_cast<CURLM*>(multi_), fd, flags, &running);
  reap();
}

// Finished transfers: out of the multi handle first, callbacks after (they may
// start new requests).
void HttpClient::reap() {
  std::vector<Req*> done;
  CURLMsg* msg;
  int left = 0;
  auto* m = static_cast<CURLM*>(multi_);
  while ((msg = curl_multi_info_read(m, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* e = msg->easy_handle;
    CURLcode code = msg->data.result;
    Req* r = nullptr;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, reinterpret_cast<char**>(&r));
    if (!r) continue;
    if (code == CURLE_OK) {
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->result.status);
    } else {
      r->result.status = 0;
      r->result.error = r->too_long ? "answer longer than 4 MiB" : r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
      r->result.body.clear();
    }
    curl_multi_remove_handle(m, e);
    reqs_.erase(e);
    done.push_back(r);
  }
  for (Req* r : done) {
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    Done cb = std::move(r->done);
    HttpResult res = std::move(r->result);
    delete r;
    if (!closed_ && cb) cb(std::move(res));
  }
}

}  // namespace pgpivot::coord
