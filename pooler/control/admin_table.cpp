// The console's result sets and tokenizer (admin_table.hpp).
#include "pooler/control/admin_table.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace pgpivot::console {

void Table::emit(std::string& out, const char* tag) const {
  proto::Writer w(out);
  w.begin('T').u16(std::uint16_t(cols_.size()));
  for (const auto& c : cols_) {
    w.cstr(c.name).u32(0).u16(0).u32(c.numeric ? 20 : 25).u16(c.numeric ? 8 : 0xffff).i32(-1).u16(0);
  }
  w.end();
  for (const auto& r : rows_) proto::data_row(out, r);
  proto::command_complete(out, tag);
}

std::string upper(std::string_view s) {
  std::string r(s);
  for (char& ch : r) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  return r;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& ch : r) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return r;
}

std::string fmt_time(std::uint64_t epoch) {
  if (!epoch) return "";
  time_t t = time_t(epoch);
  tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tmv);
  return buf;
}

std::string fmt_ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return p ? buf : "";
}

// Splits "SHOW pools;" into words; quoted identifiers keep their case.
std::vector<std::string> words(std::string_view sql) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < sql.size()) {
    char ch = sql[i];
    if (std::isspace(static_cast<unsigned char>(ch)) || ch == ';' || ch == ',') {
      i++;
      continue;
    }
    if (ch == '=') {
      out.emplace_back("=");
      i++;
      continue;
    }
    if (ch == '\'' || ch == '"') {
      std::string w;
      char q = ch;
      i++;
      while (i < sql.size()) {
        if (sql[i] == q) {
          if (i + 1 < sql.size() && sql[i + 1] == q) {
            w += q;
            i += 2;
            continue;
          }
          i++;
          break;
        }
        w += sql[i++];
      }
      out.push_back(std::string(1, q) + w);  // first char marks the quote kind
      continue;
    }
    std::size_t j = i;
    while (j < sql.size() && !std::isspace(static_cast<unsigned char>(sql[j])) && sql[j] != ';' && sql[j] != '=' &&
           sql[j] != ',') {
      j++;
    }
    out.emplace_back(sql.substr(i, j - i));
    i = j;
  }
  return out;
}

// Strips the quote marker words() leaves on quoted words; folds bare words to lower case.
std::string ident(const std::string& w) {
  if (!w.empty() && (w[0] == '"' || w[0] == '\'')) return w.substr(1);
  return lower(w);
}

}  // namespace pgpivot::console
