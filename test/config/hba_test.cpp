// auth_hba_file / auth_ident_file (config/hba.hpp): PgBouncer's own table of rule cases
// (hba/hba_test.rules + hba_test.eval, copied from PgBouncer), then the parser's
// errors, the ident maps, and the loaders reading both files for auth_type = hba.
#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include "config/hba.hpp"
#include "config/load.hpp"
#include "helpers.hpp"

using namespace pgpivot::config;
using namespace pgpivot::config::test;

namespace {

const std::string kHbaDir = PGPIVOT_CONFIG_TEST_DIR "/hba";

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream in(line);
  std::string tok;
  while (std::getline(in, tok, '\t'))
    if (!tok.empty()) out.push_back(tok);
  return out;
}

// PgBouncer's hba_test.c: "unix" is the Unix socket, else an IPv4/IPv6 address.
HbaConn conn_of(const std::string& addr, const std::string& modifier) {
  HbaConn c;
  c.tls = modifier == "tls";
  c.physical_replication = modifier == "replication";
  if (addr == "unix") {
    c.unix_socket = true;
  } else if (inet_pton(AF_INET, addr.c_str(), c.addr.data()) == 1) {
    c.family = 4;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.addr.data()) == 1) {
    c.family = 6;
  }
  return c;
}

std::string method_for(const Hba& hba, HbaConn c, const std::string& db, const std::string& user) {
  c.db = db;
  c.user = user;
  const HbaRule* r = match_hba(hba, c);
  return r ? to_string(r->method) : "reject";
}

Hba parse(const std::string& hba_text, const std::string& ident_text, std::vector<HbaProblem>& problems) {
  Hba hba;
  parse_ident(ident_text, "ident.conf", hba, problems);
  parse_hba(hba_text, "hba.conf", hba, problems);
  return hba;
}

HbaProblem one_problem(const std::string& hba_text, const std::string& ident_text = "") {
  std::vector<HbaProblem> problems;
  Hba hba = parse(hba_text, ident_text, problems);
  REQUIRE(problems.size() == 1);
  CHECK(hba.rules.empty());
  return problems[0];
}

HbaConn tcp(const char* addr, bool tls = false) { return conn_of(addr, tls ? "tls" : ""); }

}  // namespace

TEST_CASE("hba: PgBouncer's hba_test.rules / hba_test.eval cases", "[hba]") {
  Hba hba;
  std::vector<HbaProblem> problems;
  load_hba(kHbaDir + "/hba_test.rules", "", hba, problems);
  INFO((problems.empty() ? "" : problems[0].message));
  REQUIRE(problems.empty());
  REQUIRE(hba.rules.size() == 33);

  std::ifstream eval(kHbaDir + "/hba_test.eval");
  REQUIRE(eval.good());
  std::string line;
  int n = 0, cases = 0;
  while (std::getline(eval, line)) {
    n++;
    if (line.empty() || line[0] == '#') continue;
    auto f = split_tabs(line);
    if (f.empty()) continue;
    REQUIRE(f.size() >= 4);
    INFO("hba_test.eval line " << n << ": " << line);
    CHECK(method_for(hba, conn_of(f[3], f.size() > 4 ? f[4] : ""), f[1], f[2]) == f[0]);
    cases++;
  }
  CHECK(cases == 72);
}

TEST_CASE("hba: first matching rule decides; types, names, addresses", "[hba]") {
  std::vector<HbaProblem> problems;
  Hba hba = parse(R"(# comment
local   sameuser  all                       peer
local   all       "all"                     trust
hostssl all       +x,a                      10.0.0.0/8   cert   # inline comment
host    d1,d2     @users                    10.0.0.0/8   scram-sha-256
host    all       all                       10.1.0.0 255.255.0.0 md5
hostnossl all     all                       ::1/128      password
host    all       all                       all          reject
)", "", problems);
  // "+x" is a group name: refused (PgBouncer does not support groups), reported at line 4.
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].line == 4);
  CHECK(problems[0].message == "group names (+x) are not supported");
  CHECK(problems[1].line == 5);  // @users cannot be read
  CHECK(problems[1].message.find("cannot read users") != std::string::npos);
  REQUIRE(hba.rules.size() == 5);

  HbaConn unix_conn = conn_of("unix", "");
  CHECK(method_for(hba, unix_conn, "bob", "bob") == "peer");        // sameuser
  CHECK(method_for(hba, unix_conn, "db", "bob") == "reject");       // "all" quoted is a name
  CHECK(method_for(hba, unix_conn, "db", "all") == "trust");
  CHECK(method_for(hba, tcp("10.1.2.3"), "db", "u") == "md5");       // address + separate mask
  CHECK(method_for(hba, tcp("10.2.2.3"), "db", "u") == "reject");    // "all" address: reject rule
  CHECK(method_for(hba, tcp("::1"), "db", "u") == "password");
  CHECK(method_for(hba, tcp("::1", true), "db", "u") == "reject");  // hostnossl skips TLS
  HbaConn repl = tcp("::1");
  repl.physical_replication = true;
  CHECK(method_for(hba, repl, "db", "u") == "reject");  // no rule names replication
}

TEST_CASE("hba: @file names, relative to the hba file", "[hba]") {
  TempDir dir;
  dir.write("users.txt", "# who\nann, bob\ncarl\n");
  std::string path = dir.write("hba.conf", "host all @users.txt 0.0.0.0/0 md5\nhost all all all reject\n");
  Hba hba;
  std::vector<HbaProblem> problems;
  load_hba(path, "", hba, problems);
  REQUIRE(problems.empty());
  for (const char* u : {"ann", "bob", "carl"}) CHECK(method_for(hba, tcp("1.2.3.4"), "db", u) == "md5");
  CHECK(method_for(hba, tcp("1.2.3.4"), "db", "dora") == "reject");
}

TEST_CASE("hba: every bad line is an error at its line", "[hba]") {
  CHECK(one_problem("hostx all all all trust\n").message == "unknown connection type \"hostx\"");
  CHECK(one_problem("\nhost all all all ident\n").line == 2);
  CHECK(one_problem("host all all all ident\n").message == "unsupported authentication method \"ident\"");
  CHECK(one_problem("host all all all\n").message == "expected an authentication method");
  CHECK(one_problem("host samerole all all trust\n").message == "samerole is not supported");
  CHECK(one_problem("host all all 10.0.0.0/33 trust\n").message == "invalid mask in \"10.0.0.0/33\"");
  CHECK(one_problem("host all all samenet trust\n").message == "cannot parse address \"samenet\"");
  CHECK(one_problem("host all all 10.0.0.0 trust\n").message == "cannot parse mask \"trust\"");
  CHECK(one_problem("host \"db all all trust\n").message == "expected a database");
  CHECK(one_problem("local all all trust extra\n").message == "option \"extra\" is not map=NAME");
  CHECK(one_problem("local all all peer map=nosuch\n").message == "ident map \"nosuch\" is not in the ident file");
  CHECK(one_problem("local all all peer map=m \"x\"\n", "m a b\n").message == "unexpected \"x\" after the method");
}

TEST_CASE("hba: an address with bits outside its mask is a warning, as PgBouncer", "[hba]") {
  std::vector<HbaProblem> problems;
  Hba hba = parse("host all all 192.168.1.1/0 md5\n", "", problems);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].warning);
  CHECK(hba.rules.size() == 1);
  CHECK(method_for(hba, tcp("8.8.8.8"), "db", "u") == "reject");  // 8.8.8.8 & 0 != 192.168.1.1
}

TEST_CASE("ident: maps, quoting, all, errors", "[hba]") {
  std::vector<HbaProblem> problems;
  Hba hba = parse("local all all peer map=m\nhostssl all all all cert map=\"q\"\n", R"(# MAPNAME SYSTEM PG
m   alice   alice
m   alice   "bob"
m   "carl"  all
q   x       y
bad
m   a b c
)", problems);
  // "map=\"q\"" is map= followed by a string: not map=NAME.
  REQUIRE(problems.size() == 3);
  CHECK(problems[0].file == "ident.conf");
  CHECK(problems[0].line == 6);
  CHECK(problems[1].line == 7);
  CHECK(problems[2].file == "hba.conf");
  REQUIRE(hba.maps.size() == 2);
  const IdentMap* m = hba.find_map("m");
  REQUIRE(m);
  CHECK(m->mappings.size() == 3);
  CHECK(ident_allows(*m, "alice", "alice"));
  CHECK(ident_allows(*m, "alice", "bob"));
  CHECK_FALSE(ident_allows(*m, "alice", "carl"));
  CHECK(ident_allows(*m, "carl", "anyone"));
  CHECK_FALSE(ident_allows(*m, "bob", "bob"));
  REQUIRE(hba.rules.size() == 1);
  CHECK(hba.rules[0].map == "m");
}

TEST_CASE("hba: ldap lines keep their options (refused at login: no LDAP)", "[hba]") {
  std::vector<HbaProblem> problems;
  Hba hba = parse("host all all all ldap ldapserver=x ldapport=389\n", "", problems);
  REQUIRE(problems.empty());
  REQUIRE(hba.rules.size() == 1);
  CHECK(hba.rules[0].method == AuthMethod::Ldap);
  CHECK(hba.rules[0].options == "ldapserver=x ldapport=389");
}

TEST_CASE("hba: the loaders read both files only for auth_type = hba", "[hba][ini]") {
  TempDir dir;
  std::string ident = dir.write("ident.conf", "m os pg\n");
  std::string rules = dir.write("hba.conf", "local all all peer map=m\nhost all all all md5\n");
  std::string bad = dir.write("bad.conf", "local all all trust\nhost all all nohost md5\n");
  auto ini = [&](const std::string& type, const std::string& file) {
    return load_ini_string("[pgbouncer]\nauth_type = " + type + "\nauth_hba_file = " + file +
                               "\nauth_ident_file = " + ident + "\n",
                           (dir.path() / "pgbouncer.ini").string());
  };
  auto ok = ini("hba", rules);
  INFO(dump(ok.errors));
  REQUIRE(ok.ok());
  CHECK(ok.config.hba.rules.size() == 2);
  CHECK(ok.config.hba.maps.size() == 1);

  auto broken = ini("hba", bad);
  Error e = the_error(broken, "pgbouncer.auth_hba_file");
  CHECK(e.file == bad);
  CHECK(e.line == 2);
  CHECK(e.message == "cannot parse address \"nohost\"");

  auto missing = ini("hba", (dir.path() / "nope.conf").string());
  CHECK(the_error(missing, "pgbouncer.auth_hba_file").message.find("cannot read hba file") == 0);

  auto other = ini("md5", bad);  // not read at all
  CHECK(other.ok());
  CHECK(other.config.hba.rules.empty());

  auto toml = load_toml_string("[pooler]\nauth_type = \"hba\"\nauth_hba_file = \"" + rules + "\"\nauth_ident_file = \"" +
                                   ident + "\"\n",
                               (dir.path() / "p.toml").string());
  INFO(dump(toml.errors));
  REQUIRE(toml.ok());
  CHECK(toml.config.hba == ok.config.hba);
}
