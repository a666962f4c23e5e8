// auth_hba_file and auth_ident_file, read as PgBouncer 1.25 reads them (config/hba.hpp).
// Unlike PgBouncer, which skips a line it cannot parse and goes on, every bad line is
// an error: the loaders then refuse the configuration (RELOAD keeps the rules in use).
#include "config/hba.hpp"
#include "config/internal.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>

namespace pgpivot::config {

namespace {

// ---------------------------------------------------------------- tokens

enum class Tok : std::uint8_t { Ident, String, Comma, Eol, Fail };

// PgBouncer's tokens: white space separates, `#` starts a comment, `,` is a token,
// `"..."` a string ("" inside is a quote) taken literally (a quoted "all" is a name).
class Tokens {
 public:
  explicit Tokens(std::string_view line) : s_(line) { next(); }
  [[nodiscard]] Tok kind() const { return kind_; }
  [[nodiscard]] const std::string& text() const { return text_; }
  [[nodiscard]] std::string_view rest() const { return s_.substr(pos_); }
  [[nodiscard]] bool is_kw(std::string_view kw) const { return kind_ == Tok::Ident && text_ == kw; }
  [[nodiscard]] bool is_name() const { return kind_ == Tok::Ident || kind_ == Tok::String; }
  bool eat(Tok k) {
    if (kind_ != k) return false;
    next();
    return true;
  }
  bool eat_kw(std::string_view kw) {
    if (!is_kw(kw)) return false;
    next();
    return true;
  }
  void end() { kind_ = Tok::Eol; }

  void next() {
    if (kind_ == Tok::Eol) return;
    text_.clear();
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) pos_++;
    if (pos_ == s_.size() || s_[pos_] == '#') {
      kind_ = Tok::Eol;
    } else if (s_[pos_] == ',') {
      kind_ = Tok::Comma;
      pos_++;
    } else if (s_[pos_] == '"') {
      quoted();
    } else {
      std::size_t end = pos_ + 1;
      while (end < s_.size() && s_[end] != ',' && s_[end] != '#' && s_[end] != '"' &&
             !std::isspace(static_cast<unsigned char>(s_[end])))
        end++;
      text_ = s_.substr(pos_, end - pos_);
      pos_ = end;
      kind_ = Tok::Ident;
    }
  }

 private:
  void quoted() {
    for (std::size_t i = pos_ + 1; i < s_.size(); i++) {
      if (s_[i] != '"') {
        text_ += s_[i];
      } else if (i + 1 < s_.size() && s_[i + 1] == '"') {
        text_ += '"';
        i++;
      } else {
        pos_ = i + 1;
        kind_ = Tok::String;
        return;
      }
    }
    kind_ = Tok::Fail;  // unterminated
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  Tok kind_ = Tok::Comma;
  std::string text_;
};

// Calls `fn(line_text, line_number)` for each line.
template <typename Fn>
void each_line(std::string_view text, Fn fn) {
  int n = 0;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    n++;
    fn(line, n);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

std::string relative_to(const std::string& parent, const std::string& name) {
  std::filesystem::path p(name);
  if (p.is_absolute()) return name;
  return (std::filesystem::path(parent).parent_path() / p).string();
}

// ---------------------------------------------------------------- hba lines

struct LineCtx {
  const std::string& path;
  int line;
  std::vector<HbaProblem>& problems;
  bool fail(std::string message) const {
    problems.push_back(HbaProblem{path, line, std::move(message)});
    return false;
  }
};

bool parse_names(HbaNames& out, Tokens& t, bool is_db, const LineCtx& ctx, int depth);

// An @file: its names, any number a line, comma- or space-separated.
bool parse_name_file(HbaNames& out, const std::string& file, bool is_db, const LineCtx& ctx, int depth) {
  if (depth > 10) return ctx.fail("@" + file + ": files included too deeply");
  std::string why;
  auto text = detail::read_file(file, why);
  if (!text) return ctx.fail("cannot read " + file + ": " + why);
  bool ok = true;
  each_line(*text, [&](std::string_view line, int n) {
    Tokens t(line);
    while (ok && t.kind() != Tok::Eol) {
      LineCtx inner{file, n, ctx.problems};
      if (!parse_names(out, t, is_db, inner, depth + 1)) ok = false;
    }
  });
  return ok;
}

bool parse_keyword(HbaNames& out, Tokens& t, bool is_db) {
  if (t.eat_kw("all")) return out.all = true;
  if (!is_db) return false;
  if (t.eat_kw("sameuser")) return out.sameuser = true;
  if (t.eat_kw("replication")) return out.replication = true;
  return false;
}

// A comma-separated list of names and keywords.
bool parse_names(HbaNames& out, Tokens& t, bool is_db, const LineCtx& ctx, int depth) {
  const char* field = is_db ? "database" : "user name";
  do {
    if (parse_keyword(out, t, is_db)) continue;
    if (is_db && (t.is_kw("samerole") || t.is_kw("samegroup")))
      return ctx.fail(t.text() + " is not supported");
    if (!t.is_name()) return ctx.fail(std::string("expected a ") + field);
    if (t.kind() == Tok::Ident && t.text()[0] == '+')
      return ctx.fail("group names (" + t.text() + ") are not supported");
    if (t.kind() == Tok::Ident && t.text()[0] == '@') {
      if (!parse_name_file(out, relative_to(ctx.path, t.text().substr(1)), is_db, ctx, depth)) return false;
    } else if (std::find(out.names.begin(), out.names.end(), t.text()) == out.names.end()) {
      out.names.push_back(t.text());
    }
    t.next();
  } while (t.eat(Tok::Comma));
  return true;
}

bool parse_mask_bits(HbaAddress& a, std::string_view bits) {
  if (bits.empty() || bits.size() > 3 || !std::all_of(bits.begin(), bits.end(), ::isdigit)) return false;
  int n = std::atoi(std::string(bits).c_str());
  if (n > (a.family == 4 ? 32 : 128)) return false;
  for (int i = 0; i < n / 8; i++) a.mask[i] = 255;
  if (n % 8) a.mask[n / 8] = std::uint8_t(255 << (8 - n % 8));
  return true;
}

bool parse_ip(std::string_view text, int& family, std::array<std::uint8_t, 16>& out) {
  std::string s(text);
  if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) {
    family = 6;
  } else if (inet_pton(AF_INET, s.c_str(), out.data()) == 1) {
    family = 4;
  } else {
    return false;
  }
  return true;
}

bool parse_address(HbaRule& r, Tokens& t, const LineCtx& ctx) {
  HbaAddress& a = r.address;
  if (t.eat_kw("all")) return a.all = true;
  if (t.kind() != Tok::Ident) return ctx.fail("expected an address");
  std::string text = t.text();
  std::size_t slash = text.find('/');
  std::string ip = text.substr(0, slash);
  if (!parse_ip(ip, a.family, a.addr)) return ctx.fail("cannot parse address \"" + ip + "\"");
  t.next();
  if (slash != std::string::npos) {
    if (!parse_mask_bits(a, std::string_view(text).substr(slash + 1))) return ctx.fail("invalid mask in \"" + text + "\"");
  } else {
    int mask_family = 0;
    if (t.kind() != Tok::Ident) return ctx.fail("expected a mask after \"" + ip + "\"");
    if (!parse_ip(t.text(), mask_family, a.mask) || mask_family != a.family)
      return ctx.fail("cannot parse mask \"" + t.text() + "\"");
    t.next();
  }
  bool outside = false;
  for (int i = 0; i < 16; i++) outside = outside || (a.addr[i] & ~a.mask[i]) != 0;
  if (outside)
    ctx.problems.push_back(HbaProblem{ctx.path, ctx.line, "address " + text + " has bits outside its mask", true});
  return true;
}

constexpr std::pair<std::string_view, AuthMethod> kMethods[] = {
    {"trust", AuthMethod::Trust},     {"reject", AuthMethod::Reject}, {"md5", AuthMethod::Md5},
    {"password", AuthMethod::Password}, {"peer", AuthMethod::Peer},   {"cert", AuthMethod::Cert},
    {"scram-sha-256", AuthMethod::ScramSha256}, {"ldap", AuthMethod::Ldap},
};

bool parse_method(HbaRule& r, Tokens& t, const Hba& hba, const LineCtx& ctx) {
  bool known = false;
  for (auto [name, m] : kMethods)
    if (t.is_kw(name)) {
      r.method = m;
      known = true;
    }
  if (!known) return ctx.fail(t.kind() == Tok::Eol ? "expected an authentication method"
                                                    : "unsupported authentication method \"" + t.text() + "\"");
  if (r.method == AuthMethod::Ldap) {
    r.options = detail::trim(t.rest());  // its options, left to the LDAP client
    t.end();
    return true;
  }
  t.next();
  if (t.kind() == Tok::Ident) {
    if (t.text().rfind("map=", 0) != 0) return ctx.fail("option \"" + t.text() + "\" is not map=NAME");
    r.map = t.text().substr(4);
    if (!hba.find_map(r.map)) return ctx.fail("ident map \"" + r.map + "\" is not in the ident file");
    t.next();
  }
  if (t.kind() != Tok::Eol) return ctx.fail("unexpected \"" + t.text() + "\" after the method");
  return true;
}

bool parse_type(HbaRule& r, Tokens& t) {
  constexpr std::pair<std::string_view, HbaType> kTypes[] = {
      {"local", HbaType::Local}, {"host", HbaType::Host}, {"hostssl", HbaType::HostSsl},
      {"hostnossl", HbaType::HostNoSsl}};
  for (auto [name, type] : kTypes)
    if (t.eat_kw(name)) {
      r.type = type;
      return true;
    }
  return false;
}

bool parse_hba_line(Tokens& t, Hba& hba, const LineCtx& ctx) {
  if (t.kind() == Tok::Eol) return true;
  HbaRule r;
  r.line = ctx.line;
  if (!parse_type(r, t)) return ctx.fail("unknown connection type \"" + t.text() + "\"");
  if (!parse_names(r.db, t, true, ctx, 0) || !parse_names(r.user, t, false, ctx, 0)) return false;
  if (r.type != HbaType::Local && !parse_address(r, t, ctx)) return false;
  if (!parse_method(r, t, hba, ctx)) return false;
  hba.rules.push_back(std::move(r));
  return true;
}

// ---------------------------------------------------------------- ident lines

bool parse_ident_line(Tokens& t, Hba& hba, const LineCtx& ctx) {
  if (t.kind() == Tok::Eol) return true;
  if (t.kind() != Tok::Ident) return ctx.fail("expected a map name");
  std::string name = t.text();
  t.next();
  IdentMapping m;
  if (!t.is_name()) return ctx.fail("expected a system user name");
  m.system_user = t.text();
  t.next();
  if (t.eat_kw("all")) {
    m.all = true;
  } else if (t.is_name()) {
    m.pg_user = t.text();
    t.next();
  } else {
    return ctx.fail("expected a database user name");
  }
  if (t.kind() != Tok::Eol) return ctx.fail("unexpected \"" + t.text() + "\": a line is MAPNAME SYSTEM-USERNAME PG-USERNAME");
  auto it = std::find_if(hba.maps.begin(), hba.maps.end(), [&](const IdentMap& x) { return x.name == name; });
  if (it == hba.maps.end()) it = hba.maps.insert(hba.maps.end(), IdentMap{name, {}});
  it->mappings.push_back(std::move(m));
  return true;
}

template <typename ParseLine>
void parse_lines(std::string_view text, const std::string& path, Hba& hba, std::vector<HbaProblem>& problems,
                 ParseLine parse_line) {
  each_line(text, [&](std::string_view line, int n) {
    Tokens t(line);
    parse_line(t, hba, LineCtx{path, n, problems});
  });
}

// ---------------------------------------------------------------- matching

bool name_match(const HbaNames& n, std::string_view name, std::string_view pair) {
  if (n.all || (n.sameuser && name == pair)) return true;
  return std::find(n.names.begin(), n.names.end(), name) != n.names.end();
}

bool address_match(const HbaAddress& a, const HbaConn& c) {
  if (a.all) return true;
  if (a.family != c.family) return false;
  int bytes = a.family == 4 ? 4 : 16;
  for (int i = 0; i < bytes; i++)
    if ((c.addr[i] & a.mask[i]) != a.addr[i]) return false;
  return true;
}

bool connection_match(const HbaRule& r, const HbaConn& c) {
  if (c.unix_socket) return r.type == HbaType::Local;
  if (r.type == HbaType::Local) return false;
  if (r.type == HbaType::HostSsl && !c.tls) return false;
  if (r.type == HbaType::HostNoSsl && c.tls) return false;
  return address_match(r.address, c);
}

}  // namespace

const char* to_string(AuthMethod m) {
  for (auto [name, x] : kMethods)
    if (x == m) return name.data();
  return "?";
}

const IdentMap* Hba::find_map(std::string_view name) const {
  for (const IdentMap& m : maps)
    if (m.name == name) return &m;
  return nullptr;
}

void parse_ident(std::string_view text, const std::string& path, Hba& hba, std::vector<HbaProblem>& problems) {
  parse_lines(text, path, hba, problems, parse_ident_line);
}

void parse_hba(std::string_view text, const std::string& path, Hba& hba, std::vector<HbaProblem>& problems) {
  parse_lines(text, path, hba, problems, parse_hba_line);
}

void load_hba(const std::string& hba_path, const std::string& ident_path, Hba& hba,
              std::vector<HbaProblem>& problems) {
  std::string why;
  if (!ident_path.empty()) {
    if (auto text = detail::read_file(ident_path, why))
      parse_ident(*text, ident_path, hba, problems);
    else
      problems.push_back(HbaProblem{ident_path, 0, "cannot read ident file: " + why});
  }
  if (hba_path.empty()) {
    problems.push_back(HbaProblem{"", 0, "auth_type hba needs auth_hba_file"});
  } else if (auto text = detail::read_file(hba_path, why)) {
    parse_hba(*text, hba_path, hba, problems);
  } else {
    problems.push_back(HbaProblem{hba_path, 0, "cannot read hba file: " + why});
  }
}

const HbaRule* match_hba(const Hba& hba, const HbaConn& c) {
  for (const HbaRule& r : hba.rules) {
    if (!connection_match(r, c)) continue;
    if (c.physical_replication ? !r.db.replication : !name_match(r.db, c.db, c.user)) continue;
    if (!name_match(r.user, c.user, c.db)) continue;
    return &r;
  }
  return nullptr;
}

bool ident_allows(const IdentMap& map, std::string_view system_user, std::string_view pg_user) {
  for (const IdentMapping& m : map.mappings)
    if (m.system_user == system_user && (m.all || m.pg_user == pg_user)) return true;
  return false;
}

}  // namespace pgpivot::config
