// PgBouncer 1.25's miscellaneous behaviour against the real PostgreSQL: the waiting
// shutdowns (SHUTDOWN WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS: TCP closes, the Unix
// socket stays open for the console only, a client mid-transaction finishes), a
// second SIGTERM / SIGINT exiting at once, the startup "options" parameter
// (-c name=value), login_notify_message and server_fast_close. The texts are
// PgBouncer's.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <csignal>
#include <string>

#include "harness.hpp"

using namespace itest;

namespace {

std::string admin_of(const Pooler& p) { return p.conninfo("admin", "admin", "pgbouncer"); }

// A pooler that also listens on a Unix socket in its own directory.
struct SocketPooler {
  std::string dir;
  PoolerConfig cfg;
  explicit SocketPooler(const std::string& name, const std::string& mode = "transaction") {
    dir = env().scratch + "/" + name;
    ::mkdir(dir.c_str(), 0777);
    ::chmod(dir.c_str(), 0777);
    cfg.pool_mode = mode;
    cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
  }
  std::string over_socket(const Pooler& p, const std::string& user, const std::string& password,
                          const std::string& db) const {
    return "host=" + dir + " port=" + std::to_string(p.port()) + " user=" + user + " password=" + password +
           " dbname=" + db + " connect_timeout=10";
  }
};

std::string error_of(const Result& r, const Conn& c) {
  return r.message().empty() ? c.error() : r.message() + " | " + c.error();
}

}  // namespace

TEST_CASE("SHUTDOWN WAIT_FOR_SERVERS: the transaction finishes, a new one is refused, the socket serves the console",
          "[misc125]") {
  if (env().use_pgbouncer) return;  // Debian's PgBouncer 1.18 closes the Unix socket too
  SocketPooler sp("misc-wfs");
  Pooler p(sp.cfg);
  Conn in_tx(p.conninfo());
  Conn idle(p.conninfo());
  REQUIRE(in_tx.ok());
  REQUIRE(idle.ok());
  REQUIRE(idle.value("SELECT 1") == "1");
  in_tx.exec_ok("BEGIN");
  REQUIRE(in_tx.value("SELECT 1") == "1");
  Conn admin(admin_of(p));
  REQUIRE(admin.ok());
  p.expect_exit();
  Result r = admin.exec("SHUTDOWN WAIT_FOR_SERVERS");
  INFO("SHUTDOWN WAIT_FOR_SERVERS: " << r.message());
  REQUIRE(r.ok());
  sleep_s(0.7);
  CHECK(p.running());

  // The transaction in flight goes on.
  CHECK(in_tx.value("SELECT 'in flight'") == "in flight");
  // A client between transactions that starts one is closed with PgBouncer's text.
  Result refused = idle.exec("SELECT 2", 10);
  std::string err = error_of(refused, idle);
  INFO("new transaction during the shutdown: " << err);
  CHECK_FALSE(refused.ok());
  CHECK(err.find("server shutting down") != std::string::npos);
  CHECK(p.log().find("closing because: server shutting down") != std::string::npos);
  // TCP no longer accepts; the Unix socket takes the console only.
  Conn tcp(p.conninfo());
  CHECK_FALSE(tcp.ok());
  Conn data(sp.over_socket(p, "app", "app", "appdb"));
  INFO("app over the socket: " << data.error());
  CHECK_FALSE(data.ok());
  CHECK(data.error().find("pooler is shutting down") != std::string::npos);
  Conn console(sp.over_socket(p, "admin", "admin", "pgbouncer"));
  INFO("console over the socket: " << console.error());
  REQUIRE(console.ok());
  CHECK_FALSE(console.value("SHOW VERSION").empty());
  Result resume = console.exec("RESUME");
  CHECK_FALSE(resume.ok());
  CHECK(resume.message().find("pooler is shutting down") != std::string::npos);
  CHECK(resume.sqlstate() == "08P01");

  // The end of the last transaction releases the last server: the process exits.
  Result commit = in_tx.exec("COMMIT");
  INFO("COMMIT: " << commit.message());
  CHECK(commit.ok());
  CHECK(p.wait_exit(5));
  CHECK(p.log().find("server connections dropped, exiting") != std::string::npos);
  struct stat st {};
  CHECK(::stat((sp.dir + "/.s.PGSQL." + std::to_string(p.port())).c_str(), &st) != 0);  // socket removed
}

TEST_CASE("SHUTDOWN WAIT_FOR_CLIENTS: connected clients keep being served, new ones only reach the console",
          "[misc125]") {
  if (env().use_pgbouncer) return;
  SocketPooler sp("misc-wfc");
  Pooler p(sp.cfg);
  auto c = std::make_unique<Conn>(p.conninfo());
  REQUIRE(c->ok());
  c->exec_ok("BEGIN");
  REQUIRE(c->value("SELECT 1") == "1");
  {
    Conn admin(admin_of(p));
    REQUIRE(admin.ok());
    p.expect_exit();
    Result r = admin.exec("SHUTDOWN WAIT_FOR_CLIENTS");
    INFO("SHUTDOWN WAIT_FOR_CLIENTS: " << r.message());
    REQUIRE(r.ok());
  }
  sleep_s(0.7);
  CHECK(p.running());
  CHECK(c->value("SELECT 'same transaction'") == "same transaction");
  c->exec_ok("COMMIT");
  CHECK(c->value("SELECT 'next transaction'") == "next transaction");  // unlike WAIT_FOR_SERVERS
  Conn tcp(p.conninfo());
  CHECK_FALSE(tcp.ok());
  Conn data(sp.over_socket(p, "app", "app", "appdb"));
  INFO("app over the socket: " << data.error());
  CHECK_FALSE(data.ok());
  CHECK(data.error().find("pooler is shutting down") != std::string::npos);
  {
    Conn console(sp.over_socket(p, "admin", "admin", "pgbouncer"));
    INFO("console over the socket: " << console.error());
    REQUIRE(console.ok());
    CHECK_FALSE(console.value("SHOW VERSION").empty());
  }
  p.signal(SIGUSR2);  // ignored during a shutdown
  CHECK(wait_for([&] { return p.log().find("got SIGUSR2 while shutting down, ignoring") != std::string::npos; }, 5));
  CHECK(p.running());
  c.reset();
  CHECK(p.wait_exit(5));
  CHECK(p.log().find("client connections dropped, exiting") != std::string::npos);
}

TEST_CASE("A second SIGTERM during the wait for clients exits at once", "[misc125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18's first SIGTERM is already immediate
  Pooler p;
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  REQUIRE(c.value("SELECT 1") == "1");
  p.signal(SIGTERM);
  sleep_s(0.7);
  CHECK(p.running());
  CHECK(c.value("SELECT 'still served'") == "still served");
  p.signal(SIGTERM);
  CHECK(p.wait_exit(5));
  CHECK(p.log().find("got SIGTERM while shutting down, fast exit") != std::string::npos);
  CHECK_FALSE(c.exec("SELECT 1", 5).ok());
}

TEST_CASE("SIGINT keeps a session-mode session; a second SIGINT exits at once", "[misc125]") {
  if (env().use_pgbouncer) return;
  PoolerConfig cfg;
  cfg.pool_mode = "session";
  Pooler p(cfg);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  std::string pid = c.value("SELECT pg_backend_pid()");
  p.signal(SIGINT);
  sleep_s(0.7);
  CHECK(p.running());
  // The session keeps its server (the same backend) between transactions.
  CHECK(c.value("SELECT pg_backend_pid()") == pid);
  Conn late(p.conninfo());
  CHECK_FALSE(late.ok());  // TCP no longer accepts
  p.signal(SIGINT);
  CHECK(p.wait_exit(5));
  CHECK(p.log().find("got SIGINT while shutting down, fast exit") != std::string::npos);
  CHECK_FALSE(c.exec("SELECT 1", 5).ok());
}

TEST_CASE("The options startup parameter sets tracked parameters with -c name=value", "[misc125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18 refuses options unless ignored
  Pooler p;
  {
    Conn c(p.conninfo() + " options='-c DateStyle=German,\\\\ YMD  --TimeZone=Europe/Lisbon'");
    INFO(c.error());
    REQUIRE(c.ok());
    CHECK(c.value("SHOW DateStyle") == "German, YMD");
    CHECK(c.value("SHOW TimeZone") == "Europe/Lisbon");
    // The server another client gets has the values of that client, not these.
    Conn other(p.conninfo());
    REQUIRE(other.ok());
    CHECK(other.value("SHOW TimeZone") != "Europe/Lisbon");
  }
  Conn untracked(p.conninfo() + " options='-c enable_seqscan=off'");
  INFO("untracked: " << untracked.error());
  CHECK_FALSE(untracked.ok());
  CHECK(untracked.error().find("unsupported startup parameter in options: enable_seqscan") != std::string::npos);
  Conn bad(p.conninfo() + " options='-d'");
  INFO("-d: " << bad.error());
  CHECK_FALSE(bad.ok());
  CHECK(bad.error().find("unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed") !=
        std::string::npos);
  Conn no_value(p.conninfo() + " options='-c TimeZone'");
  CHECK_FALSE(no_value.ok());

  // With options in ignore_startup_parameters, what is not tracked is skipped.
  PoolerConfig cfg;
  cfg.extra["ignore_startup_parameters"] = "[\"options\"]";
  p.reload(cfg);
  sleep_s(0.5);
  Conn ignored(p.conninfo() + " options='-c enable_seqscan=off -cTimeZone=Europe/Lisbon'");
  INFO("ignored: " << ignored.error());
  REQUIRE(ignored.ok());
  CHECK(ignored.value("SHOW enable_seqscan") == "on");
  CHECK(ignored.value("SHOW TimeZone") == "Europe/Lisbon");
}

TEST_CASE("login_notify_message is a NOTICE at login", "[misc125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.25
  PoolerConfig cfg;
  cfg.extra["login_notify_message"] = "\"You are now connected to pgpivot\"";
  Pooler p(cfg);
  CommandResult r = run_psql(p, "SELECT 40 + 2");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("NOTICE:  You are now connected to pgpivot") != std::string::npos);
  CHECK(r.output.find("42") != std::string::npos);

  PoolerConfig none;
  p.reload(none);
  sleep_s(0.5);
  CommandResult quiet = run_psql(p, "SELECT 40 + 2");
  INFO(quiet.output);
  CHECK(quiet.exit_code == 0);
  CHECK(quiet.output.find("NOTICE") == std::string::npos);
}

TEST_CASE("server_fast_close closes a session's marked server between transactions", "[misc125]") {
  if (env().use_pgbouncer) return;  // needs pgpivot's RECONNECT
  PoolerConfig cfg;
  cfg.pool_mode = "session";
  cfg.extra["server_fast_close"] = "true";
  Pooler p(cfg);
  Conn idle(p.conninfo());
  Conn in_tx(p.conninfo());
  REQUIRE(idle.ok());
  REQUIRE(in_tx.ok());
  std::string idle_pid = idle.value("SELECT pg_backend_pid()");
  in_tx.exec_ok("BEGIN");
  REQUIRE(in_tx.value("SELECT 1") == "1");
  Conn admin(admin_of(p));
  REQUIRE(admin.ok());
  admin.exec_ok("RECONNECT appdb");
  sleep_s(1.0);
  // The session between transactions lost its server, and its connection with it.
  Result r = idle.exec("SELECT 1", 10);
  std::string err = error_of(r, idle);
  INFO("idle session after RECONNECT: " << err);
  CHECK_FALSE(r.ok());
  CHECK(err.find("database configuration changed") != std::string::npos);
  CHECK(p.log().find("closing because: database configuration changed") != std::string::npos);
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  CHECK(wait_for([&] { return direct.value("SELECT count(*) FROM pg_stat_activity WHERE pid = " + idle_pid) == "0"; }, 5));
  // The session inside a transaction keeps its server until the transaction ends.
  CHECK(in_tx.value("SELECT 'in flight'") == "in flight");
  in_tx.exec_ok("COMMIT");
  sleep_s(1.0);
  CHECK_FALSE(in_tx.exec("SELECT 1", 10).ok());
  // New sessions get new servers.
  Conn fresh(p.conninfo());
  REQUIRE(fresh.ok());
  CHECK(fresh.value("SELECT 1") == "1");
}

// server_check_query as PgBouncer 1.25: "<empty>" (the default) sends an empty
// query, a custom query runs before a server idle longer than server_check_delay
// is handed out, "" turns the check off. A sequence the check query advances
// counts how often it ran.
TEST_CASE("server_check_query: the empty-query default, a custom query, and \"\" = no check", "[misc125]") {
  if (env().use_pgbouncer) return;  // PgBouncer 1.18's default is "select 1"
  Conn direct(direct_conninfo());
  REQUIRE(direct.ok());
  direct.exec_ok("DROP SEQUENCE IF EXISTS pgpivot_check_seq");
  direct.exec_ok("CREATE SEQUENCE pgpivot_check_seq");
  direct.exec_ok("GRANT USAGE, SELECT, UPDATE ON SEQUENCE pgpivot_check_seq TO app");
  auto checks_run = [&] { return std::stoi(direct.value("SELECT nextval('pgpivot_check_seq')")) - 1; };
  auto run_transactions = [](Pooler& p, int n) {
    Conn c(p.conninfo());
    REQUIRE(c.ok());
    std::string pid = c.value("SELECT pg_backend_pid()");
    for (int i = 1; i < n; i++) CHECK(c.value("SELECT pg_backend_pid()") == pid);  // the same, checked server
  };

  SECTION("the default: an empty query, and the server is kept") {
    PoolerConfig cfg;
    cfg.pool_mode = "transaction";
    cfg.default_pool_size = 1;
    cfg.extra["server_check_delay"] = "0";
    Pooler p(cfg);
    Conn admin(admin_of(p));
    REQUIRE(admin.ok());
    CHECK(cell(console_show(admin, "CONFIG"), {{"key", "server_check_query"}}, "value") == "<empty>");
    run_transactions(p, 5);
    CHECK(checks_run() == 0);
  }
  SECTION("a custom query runs once per hand-out after server_check_delay") {
    PoolerConfig cfg;
    cfg.pool_mode = "transaction";
    cfg.default_pool_size = 1;
    cfg.extra["server_check_delay"] = "0";
    cfg.extra["server_check_query"] = "\"SELECT nextval('pgpivot_check_seq')\"";
    Pooler p(cfg);
    run_transactions(p, 5);
    CHECK(checks_run() == 4);  // every hand-out of the idle server but the first: a fresh login needs none
  }
  SECTION("a custom query is not run within server_check_delay; \"\" never runs one") {
    for (std::string delay : {"3600", "0"}) {
      PoolerConfig cfg;
      cfg.pool_mode = "transaction";
      cfg.default_pool_size = 1;
      cfg.extra["server_check_delay"] = delay;
      cfg.extra["server_check_query"] = delay == "0" ? "\"\"" : "\"SELECT nextval('pgpivot_check_seq')\"";
      Pooler p(cfg);
      run_transactions(p, 5);
      INFO("server_check_delay = " << delay);
      CHECK(checks_run() == 0);
      direct.exec_ok("ALTER SEQUENCE pgpivot_check_seq RESTART");
    }
  }
  direct.exec_ok("DROP SEQUENCE pgpivot_check_seq");
}

// Peering (PgBouncer 1.19+): two processes share one port (so_reuseport), each
// with its own Unix socket and peer_id. A CancelRequest is a new connection, and
// the kernel hands it to either process; the one that did not issue the key sends
// it on to the peer named in its key ([peers]), so every cancel lands.
TEST_CASE("peering: cancels reach the process that owns the connection on a shared port", "[misc125]") {
  if (env().use_pgbouncer) return;  // the harness writes TOML
  std::string d1 = env().scratch + "/peer1", d2 = env().scratch + "/peer2";
  for (const auto& d : {d1, d2}) {
    ::mkdir(d.c_str(), 0777);
    ::chmod(d.c_str(), 0777);
  }
  auto peer_cfg = [&](int id, const std::string& dir, int port) {
    PoolerConfig cfg;
    cfg.pool_mode = "session";
    cfg.port = port;
    cfg.extra["so_reuseport"] = "true";
    cfg.extra["peer_id"] = std::to_string(id);
    cfg.extra["unix_socket_dir"] = "\"" + dir + "\"";
    cfg.extra["log_connections"] = "true";
    return cfg;
  };
  PoolerConfig c1 = peer_cfg(1, d1, 0);
  Pooler p1(c1);
  Pooler p2(peer_cfg(2, d2, p1.port()));
  const std::string port = std::to_string(p1.port());
  // p2's readiness check reached the shared port, i.e. maybe p1: wait for p2's own
  // socket before signalling it.
  struct stat st{};
  REQUIRE(wait_for([&] { return ::stat((d2 + "/.s.PGSQL." + port).c_str(), &st) == 0; }, 10, 0.05));
  PoolerConfig with_peers = c1;
  with_peers.port = p1.port();
  with_peers.extra_toml = "\n[peers]\n1 = { host = \"" + d1 + "\", port = " + port + " }\n2 = { host = \"" + d2 +
                          "\", port = " + port + " }\n";
  p1.reload(with_peers);
  PoolerConfig p2_peers = peer_cfg(2, d2, p1.port());
  p2_peers.extra_toml = with_peers.extra_toml;
  p2.reload(p2_peers);
  sleep_s(0.5);

  int canceled = 0;
  const int rounds = 8;
  for (int i = 0; i < rounds; ++i) {
    Conn c(p1.conninfo());  // lands on either process
    REQUIRE(c.ok());
    c.send("SELECT pg_sleep(10)");
    sleep_s(0.3);
    PGcancel* cancel = PQgetCancel(c.get());
    REQUIRE(cancel);
    char errbuf[256] = "";
    CHECK(PQcancel(cancel, errbuf, sizeof errbuf) == 1);  // a new connection: either process
    PQfreeCancel(cancel);
    double t0 = now_s();
    Result r = c.next_result(8);
    INFO("round " << i << " after " << now_s() - t0 << " s: " << r.message());
    CHECK(r.sqlstate() == "57014");
    CHECK(now_s() - t0 < 5);
    if (r.sqlstate() == "57014") canceled++;
    while (c.next_result(5).get()) {
    }
  }
  CHECK(canceled == rounds);
  // Both processes took connections and some cancels were forwarded (all of them
  // landing on the owner has odds of 2^-8 per run; the count is only reported).
  std::string logs = p1.log() + p2.log();
  std::size_t forwarded = 0;
  for (auto at = logs.find("cancel request forwarded to peer"); at != std::string::npos;
       at = logs.find("cancel request forwarded to peer", at + 1))
    forwarded++;
  WARN("cancels forwarded between the peers: " << forwarded << " of " << rounds);
  Conn admin(p1.conninfo("admin", "admin", "pgbouncer"));
  REQUIRE(admin.ok());
  Result peers = console_show(admin, "PEERS");
  INFO(dump(peers));
  CHECK(cell(peers, {{"peer_id", "2"}}, "host") == d2);
  CHECK(cell(peers, {{"peer_id", "2"}}, "port") == port);
}
