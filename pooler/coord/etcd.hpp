// etcd v3 through its JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/kv/put,
// /v3/kv/deleterange, /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke) over
// HttpClient: the endpoints are tried in turn, a request that gets no answer moves to
// the next one. Keys and values travel base64-encoded, 64-bit numbers as strings.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "pooler/coord/http_client.hpp"

namespace pgpivot::coord {

class Etcd {
 public:
  using json = nlohmann::json;
  // ok: an HTTP 200 with a JSON object; else `err` says why (etcd's own message when it sent one).
  using Reply = std::function<void(bool ok, const json& body, const std::string& err)>;

  Etcd(HttpClient& http, const config::Coordination& c) : http_(http) { configure(c); }
  void configure(const config::Coordination& c);
  // POST /v3/<api> with `body`.
  void call(const std::string& api, const json& body, Reply done);
  [[nodiscard]] const std::string& endpoint() const { return endpoints_[current_ % endpoints_.size()]; }

  static std::string b64(std::string_view raw);
  static std::string unb64(std::string_view text);
  // "/pgpivot/main/" -> "/pgpivot/main0": the range_end of a prefix.
  static std::string prefix_end(std::string prefix);
  // A 64-bit field of a gateway answer (a string, or absent = 0).
  static long long num(const json& j, const char* key);

 private:
  void attempt(std::string api, std::string body, Reply done, size_t tries_left);

  HttpClient& http_;
  std::vector<std::string> endpoints_;
  size_t current_ = 0;
  double timeout_ = 2;
  HttpTls tls_;
};

}  // namespace pgpivot::coord
