// Hardening (issue #6), the client side: one test per bad-input case from clients
// that the other files do not cover yet. Slow and silent clients
// (client_login_timeout), a client that stops reading a large result
// (backpressure), descriptor exhaustion, malformed messages and forged SCRAM/md5
// answers from clients, malformed startup packets, and passwords and SCRAM secrets
// kept out of SHOW output, log lines and errors. Sick servers are in
// test_hardening_servers.cpp, the soak under pgbench in test_soak.cpp, the shared
// helpers in hardening_fixture.hpp.
//
// Covered elsewhere: startup packets that are too short, protocol 2.0, no user and
// SSLRequest (test_core_extra.cpp), max_client_conn (test_settings.cpp), wrong
// password vs unknown user (test_auth.cpp), servers dying under idle clients and a
// 50 MB row with bounded memory (test_core_extra.cpp), hostile HTTP clients
// (test_metrics.cpp).
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "hardening_fixture.hpp"

// ---------------------------------------------------------------------------
// Slow and silent clients

TEST_CASE("hardening: a silent client and a byte-per-second client are closed at client_login_timeout",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.extra["client_login_timeout"] = "2";
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());

  RawSocket silent(p.port());
  RawSocket slow(p.port());
  REQUIRE(silent.fd >= 0);
  REQUIRE(slow.fd >= 0);
  const std::string pkt = app_startup();
  double t0 = now_s();
  // The slow one sends its startup packet one byte every 0.5 s (it would need
  // pkt.size() / 2 seconds, far longer than client_login_timeout).
  size_t sent = 0;
  std::string silent_rest, slow_rest;
  bool silent_closed = false, slow_closed = false;
  while (now_s() - t0 < 10 && !(silent_closed && slow_closed)) {
    if (!slow_closed && sent < pkt.size()) {
      if (send_all_fd(slow.fd, pkt.substr(sent, 1))) sent++;
    }
    if (!silent_closed) silent_closed = silent.wait_closed(0.25, &silent_rest);
    if (!slow_closed) slow_closed = slow.wait_closed(0.25, &slow_rest);
    CHECK(other.value("SELECT 'meanwhile'", 5) == "meanwhile");
  }
  double took = now_s() - t0;
  INFO("closed after " << took << " s; slow client had sent " << sent << " of " << pkt.size() << " bytes");
  CHECK(silent_closed);
  CHECK(slow_closed);
  CHECK(sent < pkt.size());
  CHECK(took >= 1.5);
  CHECK(took < 8);
  CHECK(first_error_sqlstate(silent_rest) == "08P01");
  CHECK(first_error_sqlstate(slow_rest) == "08P01");
  require_serving(p);
}

TEST_CASE("hardening: a client that stops reading a large result: backpressure, bounded memory",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.default_pool_size = 3;
  Pooler p(cfg);
  {
    Conn warm(p.conninfo("app", ""));
    REQUIRE(warm.ok());
    REQUIRE(warm.value("SELECT count(*) FROM generate_series(1, 1000)") == "1000");
  }
  sleep_s(0.3);
  long before = private_kb(p.pid());
  REQUIRE(before > 0);

  RawSocket stuck(p.port());
  std::string e = trust_login(stuck);
  INFO("login: " << e);
  REQUIRE(e.empty());
  // About 1 GB of result that the client never reads.
  std::string q = "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)";
  REQUIRE(stuck.send_all(message('Q', q + '\0')));

  long peak = before;
  double t0 = now_s();
  while (now_s() - t0 < 4) {
    peak = std::max(peak, private_kb(p.pid()));
    sleep_s(0.1);
  }
  // The server still runs the query: pgpivot stopped reading from it.
  {
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    std::string n = d.value(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND query LIKE 'SELECT repeat(%' "
        "AND state = 'active'");
    CHECK(n == "1");
  }
  {
    Conn other(p.conninfo("app", ""));
    INFO("other client: " << other.error());
    REQUIRE(other.ok());
    CHECK(other.value("SELECT 'not blocked'", 10) == "not blocked");
  }
  INFO("pgpivot private memory " << before << " KiB before, peak " << peak << " KiB while the client did not read");
  if (!kSanitizedBuild) CHECK(peak - before < 16 * 1024);

  stuck.close();
  require_pool_settles(p, "appdb");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Descriptor exhaustion

TEST_CASE("hardening: file descriptor exhaustion: the pooler survives and accepts again", "[hardening]") {
  PoolerConfig cfg;
  cfg.auth_type = "trust";
  cfg.default_pool_size = 2;
  Pooler p(cfg);
  {
    Conn warm(p.conninfo("app", ""));
    REQUIRE(warm.ok());
    REQUIRE(warm.value("SELECT 1") == "1");  // one server connection stays open, idle
  }
  int base = open_fds(p.pid());
  REQUIRE(base > 0);
  const int kRoom = 20;
  rlimit rl{static_cast<rlim_t>(base + kRoom), static_cast<rlim_t>(base + kRoom)};
  rlimit old{};
  REQUIRE(::prlimit(p.pid(), RLIMIT_NOFILE, &rl, &old) == 0);

  // Logged-in idle clients until the pooler cannot take more.
  std::vector<RawSocket> clients;
  int refused = 0;
  // A refused login is one that does not finish: the connection waits in the listen
  // backlog. 2 s each (logins take milliseconds, under ASan too), and three of them
  // are enough: the descriptors are gone.
  for (int i = 0; i < kRoom + 15 && refused < 3; i++) {
    RawSocket s(p.port());
    if (s.fd < 0) {
      refused++;
      continue;
    }
    std::string e = trust_login(s, "appdb", 2);
    if (e.empty()) {
      clients.push_back(std::move(s));
    } else {
      refused++;
    }
  }
  INFO(base << " descriptors at rest, limit " << base + kRoom << "; " << clients.size() << " clients in, "
            << refused << " refused");
  CHECK(refused > 0);
  CHECK(clients.size() >= static_cast<size_t>(kRoom - 5));
  REQUIRE(p.running());
  // The clients that got in are served (the pool's server is already open).
  if (!clients.empty()) {
    RawSocket& s = clients.front();
    REQUIRE(s.send_all(message('Q', std::string("SELECT 1") + '\0')));
    std::string payload;
    char t = s.read_until('Z', payload, 10);
    INFO("query on an admitted client: " << (t == 'E' ? error_field(payload, 'M') : std::string(1, t)));
    CHECK(t == 'Z');
  }

  clients.clear();
  sleep_s(0.5);
  // Accept works again once descriptors are free.
  bool ok = wait_for([&] {
    Conn c(p.conninfo("app", ""), 5);
    return c.ok() && c.value("SELECT 'accepting again'") == "accepting again";
  }, 10, 0.5);
  CHECK(ok);
  std::vector<RawSocket> again;
  for (int i = 0; i < kRoom - 5; i++) {
    again.emplace_back(p.port());
    std::string e = trust_login(again.back());
    INFO("client " << i << " after the others left: " << e);
    CHECK(e.empty());
  }
  again.clear();
  ::prlimit(p.pid(), RLIMIT_NOFILE, &old, nullptr);
  require_pool_settles(p, "appdb");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Malformed and forged client messages

namespace {

// Startup as app and the AuthenticationSASL request.
void begin_scram(RawSocket& s, const std::string& user = "app") {
  REQUIRE(s.fd >= 0);
  REQUIRE(s.send_all(app_startup(user)));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 10);
}

std::string sasl_initial(const std::string& mechanism, const std::string& data) {
  std::string body = mechanism + '\0';
  put_u32(body, static_cast<uint32_t>(data.size()));
  return message('p', body + data);
}

// client-first, then the server-first's combined nonce.
std::string scram_first(RawSocket& s, const std::string& client_nonce = "rOprNGfwEbeRWgbNEkqO") {
  REQUIRE(s.send_all(sasl_initial("SCRAM-SHA-256", "n,,n=,r=" + client_nonce)));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  INFO("type " << type << " " << (type == 'E' ? error_field(payload, 'M') : ""));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 11);
  std::string server_first = payload.substr(4);
  REQUIRE(server_first.rfind("r=", 0) == 0);
  return server_first.substr(2, server_first.find(',') - 2);
}

std::string b64_decode(const std::string& in) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    size_t v = chars.find(c);
    if (v == std::string::npos) break;  // '=' padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Attribute `name` ("s", "i") of a SCRAM server-first-message.
std::string scram_attr(const std::string& msg, char name) {
  std::string key = std::string(1, name) + "=";
  size_t pos = msg.rfind(key, 0) == 0 ? 0 : msg.find("," + key);
  if (pos == std::string::npos) return "";
  if (pos > 0) pos++;
  size_t end = msg.find(',', pos);
  return msg.substr(pos + 2, end == std::string::npos ? std::string::npos : end - pos - 2);
}

// The server-first-message for `user`.
std::string server_first_for(int port, const std::string& user) {
  RawSocket s(port);
  begin_scram(s, user);
  REQUIRE(s.send_all(sasl_initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")));
  char type = 0;
  std::string payload;
  REQUIRE(s.read_message(type, payload, 5));
  REQUIRE(type == 'R');
  REQUIRE(get_u32(payload, 0) == 11);
  return payload.substr(4);
}

const std::string kZeroProof = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";  // 32 zero bytes

}  // namespace

TEST_CASE("hardening: forged, truncated and reordered SCRAM messages and a bad md5 response", "[hardening]") {
  PoolerConfig cfg;  // scram-sha-256
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());

  SECTION("bad nonce -> 28P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string nonce = scram_first(s);
    std::string forged = nonce;
    forged[forged.size() - 1] = forged.back() == 'A' ? 'B' : 'A';
    expect_error_then_close(s, message('p', "c=biws,r=" + forged + ",p=" + kZeroProof), "28P01");
  }
  SECTION("bad proof -> 28P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string nonce = scram_first(s);
    expect_error_then_close(s, message('p', "c=biws,r=" + nonce + ",p=" + kZeroProof), "28P01");
  }
  SECTION("bad proof for an unknown user -> the same 28P01") {
    RawSocket s(p.port());
    begin_scram(s, "no_such_user");
    std::string nonce = scram_first(s);
    expect_error_then_close(s, message('p', "c=biws,r=" + nonce + ",p=" + kZeroProof), "28P01");
  }
  SECTION("an unknown user's challenge looks like a real one: raw salt, same iterations, stable") {
    std::string known = server_first_for(p.port(), "app");
    std::string unknown = server_first_for(p.port(), "no_such_user");
    std::string again = server_first_for(p.port(), "no_such_user");
    INFO("known user: " << known << "\nunknown user: " << unknown);
    std::string salt = b64_decode(scram_attr(unknown, 's'));
    CHECK(salt.size() == b64_decode(scram_attr(known, 's')).size());
    CHECK(scram_attr(unknown, 'i') == scram_attr(known, 'i'));
    CHECK(scram_attr(again, 's') == scram_attr(unknown, 's'));
    // 16 random bytes all from [0-9a-f] happen once in 2^64 tries.
    CHECK(salt.find_first_not_of("0123456789abcdef") != std::string::npos);
  }
  SECTION("wrong mechanism -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, sasl_initial("SCRAM-SHA-1", "n,,n=,r=abc"), "08P01");
  }
  SECTION("truncated client-first -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, sasl_initial("SCRAM-SHA-256", "n,,n="), "08P01");
  }
  SECTION("SASLInitialResponse whose data length overruns the message -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string body = std::string("SCRAM-SHA-256") + '\0';
    put_u32(body, 1000);
    expect_error_then_close(s, message('p', body + "n,,n=,r=abc"), "08P01");
  }
  SECTION("client-final before client-first (reordered) -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, message('p', "c=biws,r=abc,p=" + kZeroProof), "08P01");
  }
  SECTION("md5: a response of the wrong length -> 28P01") {
    PoolerConfig md5cfg;
    md5cfg.auth_type = "md5";
    Pooler m(md5cfg);
    RawSocket s(m.port());
    REQUIRE(s.send_all(app_startup()));
    char type = 0;
    std::string payload;
    REQUIRE(s.read_message(type, payload, 5));
    REQUIRE(type == 'R');
    REQUIRE(get_u32(payload, 0) == 5);
    expect_error_then_close(s, message('p', std::string("md5abc") + '\0'), "28P01");
    require_serving(m);
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

TEST_CASE("scram_iterations: the secrets pgpivot derives, and unknown users' fake ones, use it", "[hardening]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18 has no scram_iterations
  PoolerConfig cfg;  // scram-sha-256, plain-text passwords in [users]
  cfg.extra["scram_iterations"] = "12345";
  Pooler p(cfg);
  std::string known = server_first_for(p.port(), "app");
  std::string unknown = server_first_for(p.port(), "no_such_user");
  INFO("known user: " << known << "\nunknown user: " << unknown);
  CHECK(scram_attr(known, 'i') == "12345");
  CHECK(scram_attr(unknown, 'i') == "12345");
  // And a real client logs in with it.
  Conn c(p.conninfo());
  INFO(c.error());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 1") == "1");
}

TEST_CASE("hardening: bad message lengths, messages before authentication, invalid message types",
          "[hardening]") {
  PoolerConfig cfg;
  cfg.extra["max_packet_size"] = "65536";
  Pooler p(cfg);
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  PoolerConfig tcfg = cfg;
  tcfg.auth_type = "trust";

  SECTION("a Query before authentication finishes -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    expect_error_then_close(s, message('Q', std::string("SELECT 1") + '\0'), "08P01");
  }
  SECTION("startup and a Query in one packet, before the authentication request -> 08P01") {
    RawSocket s(p.port());
    expect_error_then_close(s, app_startup() + message('Q', std::string("SELECT 1") + '\0'), "08P01");
  }
  SECTION("length < 4 before authentication -> 08P01") {
    RawSocket s(p.port());
    begin_scram(s);
    std::string bad(1, 'p');
    put_u32(bad, 3);
    expect_error_then_close(s, bad, "08P01");
  }
  SECTION("after login: length < 4 -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    std::string bad(1, 'Q');
    put_u32(bad, 2);
    expect_error_then_close(s, bad, "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  SECTION("after login: length > max_packet_size -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    std::string bad(1, 'Q');
    put_u32(bad, 65536 + 100);
    expect_error_then_close(s, bad + "SELECT 1", "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  SECTION("after login: a message type that is invalid there -> 08P01") {
    Pooler t(tcfg);
    RawSocket s(t.port());
    REQUIRE(trust_login(s).empty());
    expect_error_then_close(s, message('p', std::string("password") + '\0'), "08P01");
    RawSocket s2(t.port());
    REQUIRE(trust_login(s2).empty());
    expect_error_then_close(s2, message('z', "junk"), "08P01");
    require_pool_settles(t, "appdb");
    require_serving(t);
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

TEST_CASE("hardening: oversized, non-UTF-8 and unterminated startup packets", "[hardening]") {
  Pooler p;
  Conn other(p.conninfo());
  REQUIRE(other.ok());
  SECTION("longer than 10000 bytes -> 08P01") {
    RawSocket s(p.port());
    std::string pkt = startup_packet({{"user", "app"}, {"database", "appdb"}, {"application_name", std::string(10100, 'a')}});
    expect_error_then_close(s, pkt, "08P01");
  }
  SECTION("a length field far beyond 10000 -> 08P01, without waiting for the bytes") {
    RawSocket s(p.port());
    std::string pkt;
    put_u32(pkt, 1u << 30);
    put_u32(pkt, 0x00030000);
    expect_error_then_close(s, pkt, "08P01");
  }
  SECTION("a user name that is not UTF-8 -> 08P01") {
    RawSocket s(p.port());
    expect_error_then_close(s, startup_packet({{"user", "app\xff\xfe"}, {"database", "appdb"}}), "08P01");
  }
  SECTION("a parameter without its terminator -> 08P01") {
    RawSocket s(p.port());
    std::string body;
    put_u32(body, 0x00030000);
    body += std::string("user") + '\0' + "app";  // no NUL after the value, no final NUL
    std::string pkt;
    put_u32(pkt, static_cast<uint32_t>(body.size() + 4));
    expect_error_then_close(s, pkt + body, "08P01");
  }
  INFO("other client: " << other.error());
  CHECK(other.value("SELECT 'after'") == "after");
  require_serving(p);
}

// ---------------------------------------------------------------------------
// Secrets

TEST_CASE("hardening: passwords and SCRAM secrets appear in no SHOW output, log line or error", "[hardening]") {
  const std::string kPlain = "Pw-Zq81-never-shown";
  const std::string kDbPassword = "DbPw-77-never-shown";
  const std::string kStoredKey = "U3RvcmVkS2V5TXVzdE5ldmVyQmVTaG93bi0wMTIzNDU=";
  const std::string kServerKey = "U2VydmVyS2V5TXVzdE5ldmVyQmVTaG93bi0wMTIzNDU=";
  PoolerConfig cfg;
  cfg.users["secretuser"] = kPlain;
  cfg.users["scramuser"] = "SCRAM-SHA-256$4096:cGdwaXZvdC10ZXN0LXNhbHQ=$" + kStoredKey + ":" + kServerKey;
  cfg.extra_databases["pwdb"] = "cluster = \"main\"\ndbname = \"appdb\"\nuser = \"app\"\npassword = \"" +
                                kDbPassword + "\"";
  cfg.extra["log_connections"] = "true";
  cfg.extra["log_disconnections"] = "true";
  Pooler p(cfg);

  std::vector<std::string> seen;  // everything a client or the log shows
  for (const auto& [user, pw, db] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"secretuser", "wrong", "appdb"},
           {"secretuser", kPlain, "appdb"},  // logs in, then fails on the server (no such role)
           {"scramuser", "wrong", "appdb"},
           {"app", "app", "pwdb"},           // the database's password is wrong on the server
           {"no_such_user", kPlain, "appdb"}}) {
    Conn c(p.conninfo(user, pw, db), 10);
    if (c.ok()) {
      Result r = c.exec("SELECT 1", 10);
      seen.push_back(r.message());
    }
    seen.push_back(c.error());
  }
  Conn admin(p.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  for (const char* what : {"CONFIG", "DATABASES", "USERS", "POOLS", "CLIENTS", "SERVERS", "STATS", "LISTS"}) {
    Result r = admin.exec(std::string("SHOW ") + what);
    INFO("SHOW " << what << ": " << r.message());
    REQUIRE(r.ok());
    std::string text;
    for (int row = 0; row < r.rows(); row++)
      for (int col = 0; col < PQnfields(r.get()); col++) text += r.value(row, col) + "|";
    seen.push_back("SHOW " + std::string(what) + ": " + text);
  }
  sleep_s(0.3);
  seen.push_back("log: " + p.log());
  for (const std::string& text : seen) {
    for (const std::string& secret : {kPlain, kDbPassword, kStoredKey, kServerKey, std::string("md5pass")}) {
      INFO("looking for " << secret << " in: " << text.substr(0, 4000));
      CHECK(text.find(secret) == std::string::npos);
    }
  }
  require_serving(p);
}
