// PgBouncer's userlist.txt (auth_file): lines of `"user" "password"` (config/load.hpp).
#include "config/internal.hpp"
#include "config/load.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace pgpivot::config {

using namespace detail;

namespace {

// Parses one `"..."` token at `pos` ("" inside is a quote). Returns false on a syntax
// problem, with `why` set.
bool parse_quoted(std::string_view line, size_t& pos, std::string& out, std::string& why,
                  const char* what) {
  if (pos >= line.size() || line[pos] != '"') {
    why = std::string("expected a quoted ") + what;
    return false;
  }
  ++pos;
  out.clear();
  for (;;) {
    if (pos >= line.size()) {
      why = std::string("unterminated quoted ") + what;
      return false;
    }
    char c = line[pos++];
    if (c == '"') {
      if (pos < line.size() && line[pos] == '"') {
        out += '"';
        ++pos;
        continue;
      }
      break;
    }
    out += c;
  }
  if (pos < line.size() && line[pos] != ' ' && line[pos] != '\t') {
    why = std::string("unexpected text after the quoted ") + what;
    return false;
  }
  return true;
}

void skip_blanks(std::string_view line, size_t& pos) {
  while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
}

}  // namespace

void parse_userlist(std::string_view text, const std::string& path,
                    std::map<std::string, User>& users, std::vector<Error>& errors) {
  try {
    std::map<std::string, int> seen;  // name -> line, to catch duplicates in this file
    int line_no = 0;
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      if (nl == std::string_view::npos) nl = text.size();
      std::string_view line = text.substr(start, nl - start);
      start = nl + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      size_t pos = 0;
      skip_blanks(line, pos);
      if (pos >= line.size() || line[pos] == ';' || line[pos] == '#') continue;
      std::string name, password, why;
      if (!parse_quoted(line, pos, name, why, "user name")) {
        errors.push_back(Error{path, line_no, "", why + R"( (expected "user" "password"))"});
        continue;
      }
      skip_blanks(line, pos);
      if (pos >= line.size()) {
        errors.push_back(Error{path, line_no, "", "missing password for user \"" + name + "\""});
        continue;
      }
      if (!parse_quoted(line, pos, password, why, "password")) {
        errors.push_back(Error{path, line_no, "", why});
        continue;
      }
      // Anything after the password is ignored, as PgBouncer does.
      if (name.empty()) {
        errors.push_back(Error{path, line_no, "", "empty user name"});
        continue;
      }
      if (std::string problem = check_password(password); !problem.empty()) {
        errors.push_back(Error{path, line_no, "users." + name, problem});
        continue;
      }
      if (auto [it, fresh] = seen.emplace(name, line_no); !fresh) {
        errors.push_back(Error{path, line_no, "users." + name,
                               "duplicate user (first on line " + std::to_string(it->second) + ")"});
        continue;
      }
      auto [it, fresh] = users.try_emplace(name);
      if (fresh) it->second.name = name;
      if (it->second.password.empty()) {
        it->second.password = password;
        it->second.password_from_auth_file = true;
      }
    }
  } catch (const std::exception& e) {
    errors.push_back(Error{path, 0, "", std::string("internal error: ") + e.what()});
  } catch (...) {
    errors.push_back(Error{path, 0, "", "internal error"});
  }
}

void load_userlist(const std::string& path, std::map<std::string, User>& users,
                   std::vector<Error>& errors) {
  try {
    std::string why;
    auto text = read_file(path, why);
    if (!text) {
      errors.push_back(Error{path, 0, "", "cannot read auth file: " + why});
      return;
    }
    parse_userlist(*text, path, users, errors);
  } catch (...) {
    errors.push_back(Error{path, 0, "", "internal error"});
  }
}

}  // namespace pgpivot::config
