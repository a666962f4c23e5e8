// The admin console next to the real thing: Debian's PgBouncer (1.18) and pgpivot
// run with equivalent configs against the same PostgreSQL; pgpivot's SHOW output
// must carry every PgBouncer 1.18 column in the same relative order (pgpivot
// follows PgBouncer 1.25, which has more columns), and the same workload must give
// the same SHOW POOLS counts. Also: `pgpivot --convert` turns a pgbouncer.ini into
// a TOML that configures the same pooler ([convert]).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace itest;

namespace {

const char* const kPgBouncer = "/usr/sbin/pgbouncer";

// Every SHOW command that PgBouncer 1.18 and pgpivot both have.
const char* const kShowCommands[] = {"POOLS",     "CLIENTS", "SERVERS", "STATS", "STATS_TOTALS",
                                     "STATS_AVERAGES", "TOTALS",  "DATABASES", "USERS", "LISTS",
                                     "CONFIG",    "MEM",     "VERSION"};

// Columns PgBouncer itself renamed between 1.18 and 1.25 (pgpivot has 1.25's name).
const std::map<std::string, std::map<std::string, std::string>> kRenamedSince118 = {
    {"DATABASES", {{"reserve_pool", "reserve_pool_size"}}},  // renamed in PgBouncer 1.24
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  ::chmod(path.c_str(), 0644);
}

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

// A pooler process started from a command line (PgBouncer under runuser, or pgpivot
// from an .ini file), logging to a file; stopped and reaped in the destructor.
// The user pgpivot runs as: -u is required as root (the tests run as root, as CI does).
std::string run_user() {
  struct passwd* pw = ::getpwuid(::geteuid());
  return pw ? pw->pw_name : "root";
}

class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path, int port)
      : log_path_(log_path) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("cannot open " + log_path);
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::signal(SIGPIPE, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv(args[0], args.data());
      _exit(127);
    }
    ::close(log_fd);
    auto t0 = std::chrono::steady_clock::now();
    while (!tcp_port_accepts(port)) {
      if (!running() || seconds_since(t0) > 10) {
        std::string text = log();
        stop();
        throw std::runtime_error(argv.back() + " did not accept connections on port " +
                                 std::to_string(port) + "; log:\n" + text);
      }
      sleep_s(0.02);
    }
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool running() {
    if (exited_) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }

  // SIGTERM to the pooler itself (under runuser: runuser's child, so that runuser
  // does not spend its 2 s grace period), SIGKILL when it lingers.
  void stop() {
    if (!running()) return;
    std::vector<pid_t> kids = children_of(pid_);
    for (pid_t k : kids) ::kill(k, SIGTERM);
    if (kids.empty()) ::kill(pid_, SIGQUIT);  // pgpivot: SIGQUIT is the immediate shutdown
    auto t0 = std::chrono::steady_clock::now();
    while (running() && seconds_since(t0) < 5) sleep_s(0.02);
    if (running()) {
      for (pid_t k : children_of(pid_)) ::kill(k, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      exited_ = true;
    }
  }

  std::string log() const { return read_text(log_path_); }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
};

struct Observation {
  std::string who;
  std::map<std::string, std::vector<std::string>> columns;  // SHOW X -> column names
  std::vector<std::string> totals_rows;                     // SHOW TOTALS: the "name" column
  std::vector<std::string> lists_rows;                      // SHOW LISTS: the "list" column
  std::map<std::string, std::string> phase1, phase2;        // SHOW POOLS counts of appdb/app
  std::string pools1, pools2;                               // SHOW POOLS as text
};

const char* const kCounts[] = {"cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used"};

std::map<std::string, std::string> app_pool_counts(Conn& admin, std::string& text) {
  Result r = admin.exec("SHOW POOLS");
  text = dump(r);
  INFO("SHOW POOLS: " << text);
  REQUIRE(r.ok());
  std::map<std::string, std::string> out;
  for (const char* k : kCounts) out[k] = "<no appdb/app row>";
  int db = PQfnumber(r.get(), "database"), user = PQfnumber(r.get(), "user");
  for (int row = 0; row < r.rows(); ++row) {
    if (r.value(row, db) != "appdb" || r.value(row, user) != "app") continue;
    for (const char* k : kCounts) {
      int c = PQfnumber(r.get(), k);
      out[k] = c < 0 ? "<no column>" : r.value(row, c);
    }
  }
  return out;
}

// Runs the same workload and the same SHOW commands against a pooler on `port`.
Observation observe(const std::string& who, int port) {
  Observation ob;
  ob.who = who;
  INFO("observing " << who << " on port " << port);
  auto ci = [&](const std::string& user, const std::string& db) {
    return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=" + db + " user=" + user +
           " password=" + user + " connect_timeout=10";
  };
  Conn admin(ci("admin", "pgbouncer"));
  INFO("console login: " << admin.error());
  REQUIRE(admin.ok());

  // Nine clients log in one after the other (the first login opens a server).
  std::vector<std::unique_ptr<Conn>> cl;
  for (int i = 0; i < 9; ++i) {
    cl.push_back(std::make_unique<Conn>(ci("app", "appdb")));
    INFO("client " << i << ": " << cl.back()->error());
    REQUIRE(cl.back()->ok());
  }
  // Phase 1: three clients that ran a transaction and went idle, two inside one.
  for (int i = 0; i < 3; ++i) {
    cl[i]->exec_ok("BEGIN");
    REQUIRE(cl[i]->value("SELECT 1") == "1");
  }
  for (int i = 0; i < 3; ++i) cl[i]->exec_ok("COMMIT");
  for (int i = 3; i < 5; ++i) {
    cl[i]->exec_ok("BEGIN");
    REQUIRE(cl[i]->value("SELECT 1") == "1");
  }
  sleep_s(0.2);
  ob.phase1 = app_pool_counts(admin, ob.pools1);

  // Phase 2: the pool of 5 is full and one more client waits for it.
  for (int i = 5; i < 8; ++i) {
    cl[i]->exec_ok("BEGIN");
    REQUIRE(cl[i]->value("SELECT 1") == "1");
  }
  cl[8]->send("SELECT 'waited'");
  sleep_s(0.5);
  ob.phase2 = app_pool_counts(admin, ob.pools2);
  cl[3]->exec_ok("COMMIT");
  Result waited = cl[8]->next_result(10);
  INFO("the waiting client: " << waited.message());
  CHECK(waited.value() == "waited");
  cl[8]->next_result(5);
  for (int i = 4; i < 8; ++i) cl[i]->exec_ok("COMMIT");

  for (const char* what : kShowCommands) {
    Result r = admin.exec(std::string("SHOW ") + what);
    INFO(who << ": SHOW " << what << ": " << r.message());
    CHECK(r.ok());
    std::vector<std::string> cols;
    for (int c = 0; r.get() && c < PQnfields(r.get()); ++c) cols.push_back(PQfname(r.get(), c));
    ob.columns[what] = cols;
    if (std::string(what) == "TOTALS" || std::string(what) == "LISTS") {
      auto& rows = std::string(what) == "TOTALS" ? ob.totals_rows : ob.lists_rows;
      for (int row = 0; row < r.rows(); ++row) rows.push_back(r.value(row, 0));
    }
  }
  return ob;
}

// "" when `want` (PgBouncer's) is a subsequence of `have` (pgpivot's), else what breaks it.
std::string subsequence_problem(const std::vector<std::string>& want, const std::vector<std::string>& have,
                                const std::map<std::string, std::string>& renamed = {}) {
  std::size_t pos = 0;
  for (std::string w : want) {
    auto rn = renamed.find(w);
    if (rn != renamed.end()) w = rn->second;
    std::size_t found = pos;
    while (found < have.size() && have[found] != w) found++;
    if (found == have.size()) {
      bool anywhere = false;
      for (const auto& h : have) anywhere = anywhere || h == w;
      return anywhere ? "\"" + w + "\" is out of PgBouncer's order" : "\"" + w + "\" is missing";
    }
    pos = found + 1;
  }
  return "";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void compare(const Observation& bouncer, const Observation& pivot) {
  for (const char* what : kShowCommands) {
    auto renamed = kRenamedSince118.count(what) ? kRenamedSince118.at(what) : std::map<std::string, std::string>{};
    const auto& want = bouncer.columns.at(what);
    const auto& have = pivot.columns.at(what);
    std::string problem = subsequence_problem(want, have, renamed);
    INFO("SHOW " << what << " (" << pivot.who << ")\n  PgBouncer 1.18: " << join(want)
                 << "\n  pgpivot:        " << join(have));
    CHECK(problem == "");
    CHECK_FALSE(want.empty());
  }
  {
    // SHOW TOTALS and SHOW LISTS carry their fields as rows.
    std::string problem = subsequence_problem(bouncer.totals_rows, pivot.totals_rows);
    INFO("SHOW TOTALS rows (" << pivot.who << ")\n  PgBouncer 1.18: " << join(bouncer.totals_rows)
                              << "\n  pgpivot:        " << join(pivot.totals_rows));
    CHECK(problem == "");
  }
  {
    std::string problem = subsequence_problem(bouncer.lists_rows, pivot.lists_rows);
    INFO("SHOW LISTS rows (" << pivot.who << ")\n  PgBouncer 1.18: " << join(bouncer.lists_rows)
                             << "\n  pgpivot:        " << join(pivot.lists_rows));
    CHECK(problem == "");
  }
  for (const char* k : kCounts) {
    INFO("SHOW POOLS after 3 idle + 2 in-transaction clients, " << k << "\n  PgBouncer:\n"
                                                                   << bouncer.pools1 << "  " << pivot.who
                                                                   << ":\n" << pivot.pools1);
    CHECK(pivot.phase1.at(k) == bouncer.phase1.at(k));
  }
  for (const char* k : kCounts) {
    INFO("SHOW POOLS with the pool of 5 full and one client waiting, "
         << k << "\n  PgBouncer:\n" << bouncer.pools2 << "  " << pivot.who << ":\n" << pivot.pools2);
    CHECK(pivot.phase2.at(k) == bouncer.phase2.at(k));
  }
}

}  // namespace

TEST_CASE("SHOW columns and SHOW POOLS counts match PgBouncer 1.18 on the same workload", "[compat][admin]") {
  struct passwd* pg = ::getpwnam("postgres");
  if (::access(kPgBouncer, X_OK) != 0 || ::access("/usr/sbin/runuser", X_OK) != 0 || !pg) {
    WARN("no " << kPgBouncer << ", runuser or postgres user: PgBouncer comparison skipped");
    return;
  }
  const int port = free_port();
  const std::string dir = env().scratch + "/compat-" + std::to_string(port);
  ::mkdir(dir.c_str(), 0755);
  ::chmod(dir.c_str(), 0755);
  if (::chown(dir.c_str(), pg->pw_uid, pg->pw_gid) != 0) { /* readable anyway: 0755 / 0644 */ }

  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 5;
  cfg.max_client_conn = 100;
  cfg.users = {{"app", "app"}, {"admin", "admin"}};

  // PgBouncer's files: userlist.txt with the same plain-text passwords, and an
  // .ini equivalent to the TOML render_toml() writes for cfg.
  const std::string userlist = dir + "/userlist.txt";
  const std::string ini = dir + "/pgbouncer.ini";
  std::string users_text;
  for (const auto& [user, password] : cfg.users) users_text += "\"" + user + "\" \"" + password + "\"\n";
  write_text(userlist, users_text);
  std::ostringstream o;
  o << "[databases]\nappdb = host=127.0.0.1 port=" << env().pg_port << " dbname=appdb\n\n"
    << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port << "\nunix_socket_dir =\n"
    << "pool_mode = " << cfg.pool_mode << "\ndefault_pool_size = " << cfg.default_pool_size
    << "\nmax_client_conn = " << cfg.max_client_conn << "\nauth_type = " << cfg.auth_type
    << "\nauth_file = " << userlist << "\nadmin_users = admin\n";
  write_text(ini, o.str());
  for (const std::string& f : {userlist, ini}) {
    if (::chown(f.c_str(), pg->pw_uid, pg->pw_gid) != 0) { /* 0644 is enough */ }
  }

  Observation bouncer;
  {
    Child pgb({"/usr/sbin/runuser", "-u", "postgres", "--", kPgBouncer, ini}, dir + "/pgbouncer.log", port);
    bouncer = observe("PgBouncer 1.18", port);
    INFO("PgBouncer log:\n" << pgb.log());
    REQUIRE(pgb.running());
  }

  Observation from_toml;
  {
    Pooler p(cfg);
    from_toml = observe("pgpivot (TOML)", p.port());
  }
  compare(bouncer, from_toml);

  // The same .ini for pgpivot, once it can read PgBouncer's format.
  CommandResult check = run_command(env().pgpivot_bin + " --check " + ini);
  if (check.exit_code != 0) {
    WARN("pgpivot --check " << ini << " fails, so pgpivot was compared from the equivalent TOML only:\n"
                            << check.output);
    return;
  }
  Observation from_ini;
  {
    Child pivot({env().pgpivot_bin, "-u", run_user(), ini}, dir + "/pgpivot-ini.log", port);
    from_ini = observe("pgpivot (pgbouncer.ini)", port);
    INFO("pgpivot log:\n" << pivot.log());
    REQUIRE(pivot.running());
  }
  compare(bouncer, from_ini);
}

// ---------------------------------------------------------------------------
// pgpivot --convert: a realistic pgbouncer.ini and the TOML the converter prints
// for it must configure the same pooler. Both are started, one after the other on
// the same port, and their consoles must show the same databases and settings.

namespace {

std::string sh_quote(const std::string& s) { return "'" + replace_all(s, "'", "'\\''") + "'"; }

// Runs a shell command line, keeping its stdout apart from its stderr.
struct Split {
  int exit_code = -1;
  std::string out, err;
};
Split run_split(const std::string& command, const std::string& err_path) {
  Split res;
  std::fflush(nullptr);
  FILE* f = ::popen((command + " 2>" + sh_quote(err_path)).c_str(), "r");
  if (!f) {
    res.err = "popen failed";
    return res;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) res.out.append(buf, n);
  int st = ::pclose(f);
  res.exit_code = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  res.err = read_text(err_path);
  return res;
}

// One SHOW result without the live counters, and its text for messages.
struct Show {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::string text;
};

// Columns that count live connections: they depend on who is connected right now
// (the console session itself shows up in the pgbouncer row), not on the config.
bool is_live_counter(const std::string& column) {
  return column == "current_connections" || column == "current_client_connections";
}

Show show(Conn& admin, const std::string& what) {
  Result r = admin.exec("SHOW " + what);
  INFO("SHOW " << what << ": " << r.message());
  REQUIRE(r.ok());
  Show s;
  s.text = dump(r);
  std::vector<int> keep;
  for (int c = 0; c < PQnfields(r.get()); ++c) {
    if (is_live_counter(PQfname(r.get(), c))) continue;
    keep.push_back(c);
    s.columns.push_back(PQfname(r.get(), c));
  }
  for (int row = 0; row < r.rows(); ++row) {
    std::vector<std::string> v;
    for (int c : keep) v.push_back(r.value(row, c));
    s.rows.push_back(std::move(v));
  }
  return s;
}

// Value of `column` in the row whose first column is `name` ("<none>" when absent).
std::string cell(const Show& s, const std::string& name, const std::string& column) {
  int c = -1;
  for (size_t i = 0; i < s.columns.size(); ++i)
    if (s.columns[i] == column) c = static_cast<int>(i);
  if (c < 0) return "<no column " + column + ">";
  for (const auto& row : s.rows)
    if (!row.empty() && row[0] == name) return row[static_cast<size_t>(c)];
  return "<no row " + name + ">";
}

struct Snapshot {
  Show databases, config;
};

// Logs in to the console of the pooler on `port` as an admin_users member, takes
// SHOW DATABASES and SHOW CONFIG, then checks that clients get through.
Snapshot snapshot(const std::string& who, int port) {
  INFO(who << " on port " << port);
  auto ci = [&](const std::string& user, const std::string& password, const std::string& db) {
    return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=" + db + " user=" + user +
           " password=" + password + " connect_timeout=10";
  };
  Snapshot snap;
  {
    // "ops" is the second name in admin_users; its password is only in userlist.txt.
    Conn admin(ci("ops", "ops-secret", "pgbouncer"));
    INFO("console login as ops: " << admin.error());
    REQUIRE(admin.ok());
    snap.databases = show(admin, "DATABASES");
    snap.config = show(admin, "CONFIG");
  }
  {
    Conn app(ci("app", "app", "appdb"));
    INFO("app@appdb: " << app.error());
    REQUIRE(app.ok());
    CHECK(app.value("SELECT 1") == "1");
  }
  {
    // Session-mode database with its own pool settings and a connect_query.
    Conn rep(ci("app", "app", "reports"));
    INFO("app@reports: " << rep.error());
    REQUIRE(rep.ok());
    CHECK(rep.value("SELECT 1") == "1");
    CHECK(rep.value("SELECT current_database()") == "appdb");
    // application_name_add_host = 1: the client's (empty) name plus its address,
    // which the pool then sets over the database's application_name, as PgBouncer does.
    CHECK_THAT(rep.value("SELECT current_setting('application_name')"),
               Catch::Matchers::StartsWith(" - 127.0.0.1:"));
  }
  {
    // Not in [databases]: the "*" fallback, same database name on the server.
    Conn fb(ci("app", "app", "postgres"));
    INFO("app@postgres (via *): " << fb.error());
    REQUIRE(fb.ok());
    CHECK(fb.value("SELECT current_database()") == "postgres");
  }
  {
    // Forced user: the server login is app's (password from auth_file), whoever the client is.
    Conn mt(ci("admin", "admin", "maint"));
    INFO("admin@maint (user=app): " << mt.error());
    REQUIRE(mt.ok());
    CHECK(mt.value("SELECT current_user") == "app");
    CHECK(mt.value("SELECT current_database()") == "postgres");
  }
  return snap;
}

void compare_show(const std::string& what, const Show& ini, const Show& toml) {
  INFO("SHOW " << what << "\n--- pgpivot from pgbouncer.ini:\n"
               << ini.text << "--- pgpivot from the converted TOML:\n" << toml.text);
  REQUIRE(ini.columns == toml.columns);
  CHECK(ini.rows.size() == toml.rows.size());
  for (size_t i = 0; i < std::max(ini.rows.size(), toml.rows.size()); ++i) {
    std::string a = i < ini.rows.size() ? join(ini.rows[i]) : "<no row>";
    std::string b = i < toml.rows.size() ? join(toml.rows[i]) : "<no row>";
    INFO("row " << i << " (" << join(ini.columns) << ")");
    CHECK(a == b);
  }
}

}  // namespace

TEST_CASE("pgpivot --convert: the TOML gives the same SHOW DATABASES and SHOW CONFIG as the pgbouncer.ini",
          "[compat][admin][convert]") {
  const int port = free_port();
  const std::string dir = env().scratch + "/convert-" + std::to_string(port);
  ::mkdir(env().scratch.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  const std::string pg = std::to_string(env().pg_port);
  const std::string bin = env().pgpivot_bin;

  // Plain-text passwords, as many PgBouncer installations keep them; "ops" exists
  // only here (console only), "stats" is a stats_users member.
  write_text(dir + "/userlist.txt",
             "\"app\" \"app\"\n\"admin\" \"admin\"\n\"ops\" \"ops-secret\"\n\"stats\" \"stats\"\n");
  // A production-style pgbouncer.ini: every setting below differs from the default
  // (except the ones a real file spells out anyway), and auth_file is relative.
  const std::string ini = dir + "/pgbouncer.ini";
  write_text(ini,
             ";; pgbouncer.ini of the reporting service\n"
             "[databases]\n"
             "appdb = host=127.0.0.1 port=" + pg + " dbname=appdb\n"
             "reports = host=127.0.0.1 port=" + pg + " dbname=appdb pool_size=3 min_pool_size=0 reserve_pool=2 "
             "pool_mode=session max_db_connections=8 application_name=reports connect_query='SELECT 1'\n"
             "maint = host=127.0.0.1 port=" + pg + " dbname=postgres user=app pool_size=2\n"
             "archive = host=localhost port=" + pg + " dbname=postgres pool_mode=statement\n"
             "* = host=127.0.0.1 port=" + pg + "\n"
             "\n"
             "[users]\n"
             "app = pool_mode=transaction max_user_connections=40\n"
             "\n"
             "[pgbouncer]\n"
             "listen_addr = 127.0.0.1\n"
             "listen_port = " + std::to_string(port) + "\n"
             "unix_socket_dir =\n"
             "auth_type = scram-sha-256\n"
             "auth_file = userlist.txt\n"
             "admin_users = admin, ops\n"
             "stats_users = stats\n"
             "pool_mode = transaction\n"
             "default_pool_size = 7\n"
             "min_pool_size = 1\n"
             "reserve_pool_size = 1\n"
             "reserve_pool_timeout = 2.5\n"
             "max_client_conn = 150\n"
             "max_db_connections = 30\n"
             "server_lifetime = 1800\n"
             "server_idle_timeout = 120\n"
             "query_wait_timeout = 30\n"
             "client_idle_timeout = 600\n"
             "stats_period = 30\n"
             "log_connections = 0\n"
             "ignore_startup_parameters = extra_float_digits, search_path\n"
             "application_name_add_host = 1\n");

  CommandResult check_ini = run_command(bin + " --check " + sh_quote(ini));
  INFO("pgpivot --check pgbouncer.ini:\n" << check_ini.output);
  REQUIRE(check_ini.exit_code == 0);

  Split conv = run_split(bin + " --convert " + sh_quote(ini), dir + "/convert.stderr");
  INFO("pgpivot --convert (exit " << conv.exit_code << ")\nstdout:\n" << conv.out << "stderr:\n" << conv.err);
  REQUIRE(conv.exit_code == 0);
  REQUIRE_FALSE(conv.out.empty());
  // The ini carries the port, so the TOML needs no editing.
  CHECK(conv.out.find("listen_port = " + std::to_string(port) + "\n") != std::string::npos);
  const std::string toml = dir + "/pgpivot.toml";
  write_text(toml, conv.out);

  CommandResult check_toml = run_command(bin + " --check " + sh_quote(toml));
  INFO("pgpivot --check pgpivot.toml:\n" << check_toml.output);
  REQUIRE(check_toml.exit_code == 0);

  Snapshot from_ini, from_toml;
  {
    Child pivot({bin, "-u", run_user(), ini}, dir + "/pgpivot-ini.log", port);
    from_ini = snapshot("pgpivot from pgbouncer.ini", port);
    INFO("pgpivot log:\n" << pivot.log());
    REQUIRE(pivot.running());
  }
  {
    Child pivot({bin, "-u", run_user(), toml}, dir + "/pgpivot-toml.log", port);
    from_toml = snapshot("pgpivot from pgpivot.toml", port);
    INFO("pgpivot log:\n" << pivot.log());
    REQUIRE(pivot.running());
  }

  // The ini was read as written (so that equal output is not equally wrong).
  {
    const Show& d = from_ini.databases;
    INFO("SHOW DATABASES from pgbouncer.ini:\n" << d.text);
    CHECK(cell(d, "appdb", "pool_size") == "7");
    CHECK(cell(d, "appdb", "min_pool_size") == "1");
    CHECK(cell(d, "appdb", "max_connections") == "30");
    CHECK(cell(d, "reports", "database") == "appdb");
    CHECK(cell(d, "reports", "pool_size") == "3");
    CHECK(cell(d, "reports", "min_pool_size") == "0");
    CHECK(cell(d, "reports", "reserve_pool_size") == "2");
    CHECK(cell(d, "reports", "pool_mode") == "session");
    CHECK(cell(d, "reports", "max_connections") == "8");
    CHECK(cell(d, "maint", "force_user") == "app");
    CHECK(cell(d, "maint", "pool_size") == "2");
    CHECK(cell(d, "archive", "host") == "localhost");
    CHECK(cell(d, "archive", "pool_mode") == "statement");
    CHECK(cell(d, "*", "port") == pg);
    const Show& c = from_ini.config;
    INFO("SHOW CONFIG from pgbouncer.ini:\n" << c.text);
    const std::pair<const char*, const char*> expected[] = {
        {"listen_port", nullptr},          {"pool_mode", "transaction"},   {"default_pool_size", "7"},
        {"min_pool_size", "1"},            {"reserve_pool_size", "1"},     {"reserve_pool_timeout", "2.5"},
        {"max_client_conn", "150"},        {"max_db_connections", "30"},   {"auth_type", "scram-sha-256"},
        {"admin_users", "admin,ops"},      {"stats_users", "stats"},       {"server_lifetime", "1800"},
        {"server_idle_timeout", "120"},    {"query_wait_timeout", "30"},   {"client_idle_timeout", "600"},
        {"stats_period", "30"},            {"log_connections", "0"},       {"application_name_add_host", "1"},
        {"ignore_startup_parameters", "extra_float_digits,search_path"}};
    for (const auto& [k, v] : expected) CHECK(cell(c, k, "value") == (v ? v : std::to_string(port)));
  }

  compare_show("DATABASES", from_ini.databases, from_toml.databases);
  compare_show("CONFIG", from_ini.config, from_toml.config);

  // The usual way to convert: from the ini's directory, by its relative name, and
  // the TOML saved somewhere else. It must still find the same userlist.txt.
  const std::string elsewhere = dir + "/elsewhere";
  ::mkdir(elsewhere.c_str(), 0755);
  Split rel = run_split("cd " + sh_quote(dir) + " && " + sh_quote(bin) + " --convert pgbouncer.ini",
                        dir + "/convert-relative.stderr");
  INFO("cd " << dir << " && pgpivot --convert pgbouncer.ini (exit " << rel.exit_code << ")\nstdout:\n"
             << rel.out << "stderr:\n" << rel.err);
  REQUIRE(rel.exit_code == 0);
  write_text(elsewhere + "/pgpivot.toml", rel.out);
  CommandResult check_rel = run_command(bin + " --check " + sh_quote(elsewhere + "/pgpivot.toml"));
  INFO("pgpivot --check elsewhere/pgpivot.toml:\n" << check_rel.output);
  CHECK(check_rel.exit_code == 0);
}
