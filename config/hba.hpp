// auth_type = hba: PgBouncer's pg_hba.conf-style rules (auth_hba_file) and
// pg_ident.conf-style user name maps (auth_ident_file). Pure: text in, rules out,
// and the first rule matching a connection's attributes. Read at load and RELOAD
// (load.cpp, ini.cpp); the pooler asks match_hba() at each login.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgpivot::config {

// How a client proves who it is: auth_type's methods plus hba's own.
enum class AuthMethod : std::uint8_t { Trust, Reject, Md5, Password, Peer, Cert, ScramSha256, Ldap };
[[nodiscard]] const char* to_string(AuthMethod m);  // as in the hba file ("password" for plain)

enum class HbaType : std::uint8_t { Local, Host, HostSsl, HostNoSsl };

// A DATABASE or USER field: `all`, `sameuser` and `replication` (DATABASE only),
// names (quoted ones taken literally), names read from @file.
struct HbaNames {
  bool all = false;
  bool sameuser = false;     // the database is named as the user
  bool replication = false;  // physical replication connections
  std::vector<std::string> names;
  friend bool operator==(const HbaNames&, const HbaNames&) = default;
};

// ADDRESS: `all`, or an IPv4/IPv6 address with a CIDR length or a separate mask.
struct HbaAddress {
  bool all = false;
  int family = 0;  // 4 or 6; 0 for local rules
  std::array<std::uint8_t, 16> addr{};
  std::array<std::uint8_t, 16> mask{};
  friend bool operator==(const HbaAddress&, const HbaAddress&) = default;
};

struct HbaRule {
  HbaType type = HbaType::Host;
  HbaNames db, user;
  HbaAddress address;
  AuthMethod method = AuthMethod::Reject;
  std::string map;      // map=NAME (peer, cert): a map of the ident file
  std::string options;  // the rest of an ldap line
  int line = 0;
  friend bool operator==(const HbaRule&, const HbaRule&) = default;
};

// One ident line: MAPNAME SYSTEM-USERNAME PG-USERNAME (PG-USERNAME may be `all`).
struct IdentMapping {
  std::string system_user;
  std::string pg_user;
  bool all = false;
  friend bool operator==(const IdentMapping&, const IdentMapping&) = default;
};

struct IdentMap {
  std::string name;
  std::vector<IdentMapping> mappings;  // in file order
  friend bool operator==(const IdentMap&, const IdentMap&) = default;
};

// The rules of auth_hba_file and the maps of auth_ident_file.
struct Hba {
  std::vector<HbaRule> rules;  // in file order: the first match decides
  std::vector<IdentMap> maps;
  [[nodiscard]] const IdentMap* find_map(std::string_view name) const;
  friend bool operator==(const Hba&, const Hba&) = default;
};

// A problem found while reading: file, line and what is wrong. Warnings do not stop
// the file from loading (an address with bits outside its mask, as PgBouncer).
struct HbaProblem {
  std::string file;
  int line = 0;
  std::string message;
  bool warning = false;
};

// Adds the maps of an ident file's text to `hba.maps`.
void parse_ident(std::string_view text, const std::string& path, Hba& hba, std::vector<HbaProblem>& problems);
// Adds the rules of an hba file's text to `hba.rules`; map= must name a map already
// in `hba.maps` (parse the ident file first). @file names are read relative to the
// directory of `path`.
void parse_hba(std::string_view text, const std::string& path, Hba& hba, std::vector<HbaProblem>& problems);
// Both files (ident_path may be ""); a file that cannot be read is a problem.
void load_hba(const std::string& hba_path, const std::string& ident_path, Hba& hba,
              std::vector<HbaProblem>& problems);

// What a rule is matched against.
struct HbaConn {
  bool unix_socket = false;
  int family = 0;  // 4 or 6 for TCP
  std::array<std::uint8_t, 16> addr{};
  bool tls = false;
  bool physical_replication = false;  // replication=true (not =database)
  std::string_view db, user;
};

// The first rule matching `c` (PgBouncer's order), or nullptr: no rule, reject.
[[nodiscard]] const HbaRule* match_hba(const Hba& hba, const HbaConn& c);
// Whether `map` lets the OS or certificate name `system_user` log in as `pg_user`.
[[nodiscard]] bool ident_allows(const IdentMap& map, std::string_view system_user, std::string_view pg_user);

}  // namespace pgpivot::config
