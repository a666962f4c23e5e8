// Text helpers and value checks shared by the TOML loader, the pgbouncer.ini loader,
// the settings table and the TOML writer (config/internal.hpp).
#include "config/internal.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace pgpivot::config {

namespace detail {

// ---------------------------------------------------------------- helpers

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

bool ends_with_ci(std::string_view s, std::string_view lower_suffix) {
  return s.size() >= lower_suffix.size() &&
         lower(s.substr(s.size() - lower_suffix.size())) == lower_suffix;
}

namespace {

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

}  // namespace

// The closest candidate when `word` looks like a typo of it, else "".
std::string suggest(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string w = lower(word);
  const size_t limit = w.size() >= 6 ? 2 : 1;
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(w, lower(c));
    if (d <= limit && d < w.size() && d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

std::string format_double(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

namespace {

bool is_base64(std::string_view s) {
  if (s.empty()) return false;
  size_t pad = 0;
  for (char c : s) {
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return false;  // '=' only at the end
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') return false;
  }
  return pad <= 2 && s.size() % 4 == 0;
}

}  // namespace

// "" when fine, else what is wrong with a password that claims to be a SCRAM secret.
std::string check_password(std::string_view pw) {
  constexpr std::string_view prefix = "SCRAM-SHA-256$";
  if (pw.substr(0, prefix.size()) != prefix) return {};
  const std::string bad =
      "malformed SCRAM secret; expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
  std::string_view rest = pw.substr(prefix.size());
  size_t colon = rest.find(':'), dollar = rest.find('$');
  if (colon == std::string_view::npos || dollar == std::string_view::npos || colon > dollar)
    return bad;
  std::string_view iter = rest.substr(0, colon);
  std::string_view salt = rest.substr(colon + 1, dollar - colon - 1);
  std::string_view keys = rest.substr(dollar + 1);
  size_t colon2 = keys.find(':');
  if (colon2 == std::string_view::npos) return bad;
  std::string_view stored = keys.substr(0, colon2), server = keys.substr(colon2 + 1);
  if (iter.empty() || iter.size() > 9 ||
      !std::all_of(iter.begin(), iter.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stol(std::string(iter)) < 1)
    return bad;
  if (!is_base64(salt) || !is_base64(stored) || !is_base64(server)) return bad;
  if (stored.size() != 44 || server.size() != 44) return bad;  // 32-byte SHA-256 keys
  return {};
}

namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace

// Reads a whole file; on failure returns nullopt and sets `why`.
std::optional<std::string> read_file(const std::string& path, std::string& why) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    why = "is a directory";
    return std::nullopt;
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = errno ? errno_text(errno) : "cannot open";
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    why = "read error";
    return std::nullopt;
  }
  return ss.str();
}
std::string int_problem(long long x, long long lo, long long hi) {
  if (x >= lo && x <= hi) return {};
  // Only an upper bound the setting itself has is named; the range of the type is
  // named when the value is beyond it.
  std::string range = (hi == INT_MAX || hi == LLONG_MAX) && x < lo
                          ? "must be >= " + std::to_string(lo)
                      : hi == LLONG_MAX ? "must be >= " + std::to_string(lo)
                                        : "must be between " + std::to_string(lo) + " and " + std::to_string(hi);
  return range + ", got " + std::to_string(x);
}

std::string duration_problem(double x, bool positive) {
  std::string problem;
  if (!std::isfinite(x))
    problem = "must be a finite number of seconds";
  else if (x < 0 || (positive && x == 0))
    problem = positive ? "must be > 0" : "must be >= 0";
  else if (x > kMaxDuration)
    problem = "must be <= " + std::to_string(static_cast<long long>(kMaxDuration)) + " seconds";
  if (problem.empty()) return {};
  return problem + ", got " + format_double(x);
}

bool valid_sslmode(std::string_view s) {
  const std::string l = lower(s);
  for (const char* m : {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
    if (l == m) return true;
  return false;
}

void load_hba_files(Config& cfg, const std::string& prefix, std::vector<Error>& errors,
                    std::vector<Error>& warnings) {
  cfg.hba = Hba{};
  const Pooler& p = cfg.pooler;
  if (p.auth_type != AuthType::Hba) return;
  std::vector<HbaProblem> problems;
  load_hba(p.auth_hba_file, p.auth_ident_file, cfg.hba, problems);
  for (HbaProblem& h : problems) {
    bool ident = !p.auth_ident_file.empty() && h.file == p.auth_ident_file;
    std::string key = prefix + (ident ? ".auth_ident_file" : ".auth_hba_file");
    std::string file = h.file.empty() ? cfg.path : h.file;
    (h.warning ? warnings : errors).push_back(Error{std::move(file), h.line, std::move(key), std::move(h.message)});
  }
}

}  // namespace detail

}  // namespace pgpivot::config
