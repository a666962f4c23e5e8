// Tracked parameters and names, interned: equal values share one copy.
#include "pooler/params.hpp"

#include <cctype>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace pgpivot {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); i++) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

namespace {

std::vector<std::string>& extra_tracked() {
  static std::vector<std::string> names;
  return names;
}

}  // namespace

std::vector<std::string> set_extra_tracked(const std::vector<std::string>& names) {
  std::vector<std::string> left_out;
  auto& extra = extra_tracked();
  extra.clear();
  for (const auto& n : names) {
    if (n.empty() || tracked_index(n) >= 0) continue;
    if (kTrackedCount + int(extra.size()) >= kMaxTracked) {
      left_out.push_back(n);
      continue;
    }
    extra.push_back(n);
  }
  return left_out;
}

int tracked_count() { return kTrackedCount + int(extra_tracked().size()); }

const char* tracked_name(int i) { return i < kTrackedCount ? kTrackedParams[i] : extra_tracked()[i - kTrackedCount].c_str(); }

int tracked_index(std::string_view name) {
  for (int i = 0; i < kTrackedCount; i++) {
    if (iequals(name, kTrackedParams[i])) return i;
  }
  const auto& extra = extra_tracked();
  for (std::size_t i = 0; i < extra.size(); i++) {
    if (iequals(name, extra[i])) return kTrackedCount + int(i);
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Interned tracked-parameter sets.
struct TrackedParams::Rep {
  std::uint32_t refs = 0;
  std::string key;  // the serialized values, key of the intern table
  std::optional<std::string> v[kMaxTracked];
};

namespace {

// The intern tables and reference counts are shared by the workers; they change
// at logins and parameter changes, not per message.
std::mutex g_intern_mu;

std::unordered_map<std::string_view, TrackedParams::Rep*>& param_sets() {
  static std::unordered_map<std::string_view, TrackedParams::Rep*> table;
  return table;
}

const std::optional<std::string> kNoValue;

}  // namespace

TrackedParams::TrackedParams(const TrackedParams& o) : rep_(o.rep_) {
  std::lock_guard lk(g_intern_mu);
  if (rep_) rep_->refs++;
}

TrackedParams& TrackedParams::operator=(const TrackedParams& o) {
  std::lock_guard lk(g_intern_mu);
  if (o.rep_) o.rep_->refs++;
  assign(o.rep_);
  return *this;
}

TrackedParams::~TrackedParams() {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  assign(nullptr);
}

// Takes `r` (already counted) in place of the current set; g_intern_mu held.
void TrackedParams::assign(Rep* r) {
  if (rep_ && --rep_->refs == 0) {
    param_sets().erase(rep_->key);
    delete rep_;
  }
  rep_ = r;
}

const std::optional<std::string>& TrackedParams::get(int i) const { return rep_ ? rep_->v[i] : kNoValue; }

void TrackedParams::set(int i, std::optional<std::string> value) {
  if (get(i) == value) return;
  const int n = tracked_count();
  std::optional<std::string> v[kMaxTracked];
  for (int k = 0; k < n; k++) v[k] = k == i ? std::move(value) : get(k);
  std::string key;
  for (int k = 0; k < n; k++) {
    const auto& x = v[k];
    if (x) {
      key += '1';
      key += *x;
      key += '\0';
    } else {
      key += '0';
    }
  }
  std::lock_guard lk(g_intern_mu);
  auto& table = param_sets();
  Rep* r;
  if (auto it = table.find(key); it != table.end()) {
    r = it->second;
  } else {
    r = new Rep();
    r->key = std::move(key);
    for (int k = 0; k < n; k++) r->v[k] = std::move(v[k]);
    table.emplace(r->key, r);
  }
  r->refs++;
  assign(r);
}

// Interned names.
struct Name::Rep {
  std::uint32_t refs = 0;
  std::string s;
};

namespace {

std::unordered_map<std::string_view, Name::Rep*>& name_table() {
  static std::unordered_map<std::string_view, Name::Rep*> table;
  return table;
}

const std::string kEmptyName;

}  // namespace

Name::Name(std::string_view s) {
  if (s.empty()) return;
  std::lock_guard lk(g_intern_mu);
  auto& table = name_table();
  if (auto it = table.find(s); it != table.end()) {
    rep_ = it->second;
  } else {
    rep_ = new Rep();
    rep_->s = std::string(s);
    table.emplace(rep_->s, rep_);
  }
  rep_->refs++;
}

Name::Name(const Name& o) : rep_(o.rep_) {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  rep_->refs++;
}

Name& Name::operator=(const Name& o) {
  if (o.rep_) {
    std::lock_guard lk(g_intern_mu);
    o.rep_->refs++;
  }
  this->~Name();
  rep_ = o.rep_;
  return *this;
}

Name::~Name() {
  if (!rep_) return;
  std::lock_guard lk(g_intern_mu);
  if (--rep_->refs == 0) {
    name_table().erase(rep_->s);
    delete rep_;
  }
  rep_ = nullptr;
}

const std::string& Name::str() const { return rep_ ? rep_->s : kEmptyName; }

}  // namespace pgpivot
