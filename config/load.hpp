// Loading and validating configuration files. Every problem found is reported,
// each naming file, line, key and what is wrong; nothing stops at the first one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pgpivot::config {

struct Error {
  std::string file;
  int line = 0;       // 0 when unknown
  std::string key;    // dotted path, e.g. "pooler.default_pool_size"
  std::string message;
  // "file:line: key: message" (line omitted when 0)
  [[nodiscard]] std::string to_string() const;
};

struct LoadResult {
  Config config;
  std::vector<Error> errors;
  // Settings that are accepted but have no effect (PgBouncer keys pgpivot does not
  // implement, or values it cannot honour); each names file, line and key. Loading
  // succeeds with warnings: print them.
  std::vector<Error> warnings;
  [[nodiscard]] bool ok() const { return errors.empty(); }
};

// Load a TOML config file (also reads auth_file if set). Unknown keys are errors.
[[nodiscard]] LoadResult load_toml_file(const std::string& path);
// Same, from text; `path` is used in error messages and to resolve relative paths.
[[nodiscard]] LoadResult load_toml_string(std::string_view text, const std::string& path);
// Load an unmodified pgbouncer.ini (also reads auth_file and %include files). PgBouncer
// keys pgpivot does not implement are warnings; anything else unknown is an error.
[[nodiscard]] LoadResult load_ini_file(const std::string& path);
// Same, from text; `path` names it in messages and anchors relative paths.
[[nodiscard]] LoadResult load_ini_string(std::string_view text, const std::string& path);
// By extension: a path ending in .ini (any case) is a pgbouncer.ini, anything else TOML.
[[nodiscard]] LoadResult load_file(const std::string& path);

// The native TOML text for `config`: settings that differ from the defaults plus the
// essential ones. load_toml_string() of the result gives back an equal Config (paths
// such as auth_file are written as stored, so load it from the same directory).
[[nodiscard]] std::string to_toml(const Config& config);

// PgBouncer userlist.txt: lines of `"user" "password"`; `""` inside quotes is a quote;
// lines starting with ';' or '#' and blank lines are ignored. Adds users to `users`
// (entries already present keep their other settings; password is set if empty, and
// then password_from_auth_file is set).
void load_userlist(const std::string& path, std::map<std::string, User>& users,
                   std::vector<Error>& errors);
void parse_userlist(std::string_view text, const std::string& path,
                    std::map<std::string, User>& users, std::vector<Error>& errors);

}  // namespace pgpivot::config
