// etcd's v3 JSON gateway over HttpClient (etcd.hpp).
#include "pooler/coord/etcd.hpp"

#include <openssl/evp.h>

#include <memory>

namespace pgpivot::coord {

void Etcd::configure(const config::Coordination& c) {
  endpoints_.clear();
  for (auto e : c.endpoints) {
    while (!e.empty() && e.back() == '/') e.pop_back();
    endpoints_.push_back(e);
  }
  if (endpoints_.empty()) endpoints_.push_back("http://127.0.0.1:2379");
  timeout_ = c.request_timeout;
  tls_ = {c.tls_ca_file, c.tls_cert_file, c.tls_key_file};
}

void Etcd::call(const std::string& api, const json& body, Reply done) {
  attempt(api, body.dump(), std::move(done), endpoints_.size());
}

void Etcd::attempt(std::string api, std::string body, Reply done, size_t tries_left) {
  size_t which = current_ % endpoints_.size();
  std::string url = endpoints_[which] + "/v3/" + api;
  auto shared = std::make_shared<std::tuple<std::string, std::string, Reply>>(api, body, std::move(done));
  http_.request(url, true, body, timeout_,
                [this, shared, which, tries_left](HttpResult&& r) {
                  auto& [api, body, done] = *shared;
                  if (r.status == 200) {
                    json j = json::parse(r.body, nullptr, false);
                    if (j.is_object()) {
                      done(true, j, "");
                    } else {
                      done(false, json(), "etcd sent no JSON object");
                    }
                    return;
                  }
                  // No answer, or the member cannot serve (no leader, shutting down):
                  // the next endpoint, once each.
                  bool next = r.status == 0 || r.status >= 500;
                  std::string err = endpoints_[which] + ": ";
                  if (r.status == 0) {
                    err += r.error;
                  } else {
                    json j = json::parse(r.body, nullptr, false);
                    err += "HTTP " + std::to_string(r.status);
                    if (j.is_object() && j.contains("error") && j["error"].is_string())
                      err += ": " + j["error"].get<std::string>();
                    else if (j.is_object() && j.contains("message") && j["message"].is_string())
                      err += ": " + j["message"].get<std::string>();
                  }
                  if (next && tries_left > 1) {
                    if (current_ % endpoints_.size() == which) current_++;
                    attempt(api, body, std::move(done), tries_left - 1);
                    return;
                  }
                  done(false, json(), err);
                },
                tls_.ca_file.empty() && tls_.cert_file.empty() ? nullptr : &tls_);
}

std::string Etcd::b64(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()), int(raw.size()));
  out.resize(n > 0 ? size_t(n) : 0);
  return out;
}

std::string Etcd::unb64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return {};
  std::string out(3 * (text.size() / 4) + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), int(text.size()));
  if (n < 0) return {};
  size_t len = size_t(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (text.back() == '=') len--;
  if (text.size() > 1 && text[text.size() - 2] == '=') len--;
  out.resize(len);
  return out;
}

std::string Etcd::prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& c = prefix.back();
    if (static_cast<unsigned char>(c) < 0xff) {
      c = char(static_cast<unsigned char>(c) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

long long Etcd::num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const json& v = j[key];
  if (v.is_number_integer()) return v.get<long long>();
  if (v.is_string()) {
    try {
      return std::stoll(v.get<std::string>());
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

}  // namespace pgpivot::coord
