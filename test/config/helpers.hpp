// Shared helpers for the config tests: temporary directories and error lookup.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "config/load.hpp"

namespace pgpivot::config::test {

// A fresh directory under $TMPDIR, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pgpivot-config-XXXXXX").string();
    if (char* p = ::mkdtemp(tmpl.data())) path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

// The errors whose key is `key`.
inline std::vector<Error> errors_for(const std::vector<Error>& errors, const std::string& key) {
  std::vector<Error> out;
  for (const auto& e : errors)
    if (e.key == key) out.push_back(e);
  return out;
}

// All errors as "file:line: key: message" lines, for readable failure output.
inline std::string dump(const std::vector<Error>& errors) {
  std::string out;
  for (const auto& e : errors) out += e.to_string() + "\n";
  return out;
}

// Exactly one error (warning) for `key`, returned for further checks.
inline Error the_error(const LoadResult& r, const std::string& key) {
  auto es = errors_for(r.errors, key);
  INFO(dump(r.errors));
  REQUIRE(es.size() == 1);
  return es[0];
}

inline Error the_warning(const LoadResult& r, const std::string& key) {
  auto ws = errors_for(r.warnings, key);
  INFO(dump(r.warnings));
  REQUIRE(ws.size() == 1);
  return ws[0];
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace pgpivot::config::test
