// The CockroachDB Physical Cluster Replication paths of failover (issue 14), driven
// against a stand-in: a small server speaking the PostgreSQL wire protocol with the
// answers a PCR pair gives (CockroachDB itself is not packaged in Debian).
//
// Each stand-in node has an application virtual cluster (`main`, where the pools'
// sessions go) and a system virtual cluster (sessions with options=-ccluster=system).
// On the standby cluster before cutover, `main` refuses SQL sessions with 08000
// "service unavailable for target tenant (main)"; its system cluster answers
// SHOW VIRTUAL CLUSTER main WITH REPLICATION STATUS with the replication status and
// the replicated time, which advances while the primary cluster replicates to it.
// `ALTER VIRTUAL CLUSTER main COMPLETE REPLICATION TO LATEST` then `... START SERVICE
// SHARED` is the cutover: `main` serves from then on. Any other SELECT is answered
// with the node's name, so a client sees which node it reached.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "failover_fixture.hpp"
#include "wire_client.hpp"

namespace {

class PcrStandIn {
 public:
  PcrStandIn(int port, std::string name, bool serving) : port_(port), name_(std::move(name)), serving_(serving) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 64) != 0)
      throw std::runtime_error("PCR stand-in: cannot listen on port " + std::to_string(port));
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~PcrStandIn() {
    stop_ = true;
    acceptor_.join();
    std::vector<std::thread> ts;
    {
      std::lock_guard g(mu_);
      ts.swap(sessions_);
    }
    for (auto& t : ts) t.join();
    ::close(lfd_);
  }

  // false: every session is dropped and new ones are closed at once (a pooler cut
  // off from this node; the replication between the clusters goes on regardless).
  void set_reachable(bool v) { reachable_ = v; }
  // The primary cluster replicates to this one: its replicated time is now.
  void replicated_now() {
    std::lock_guard g(mu_);
    replicated_at_ = wall_s();
  }
  bool serving() const { return serving_; }
  std::vector<std::string> system_statements() {
    std::lock_guard g(mu_);
    return system_statements_;
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{lfd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int fd = ::accept(lfd_, nullptr, nullptr);
      if (fd < 0) continue;
      if (!reachable_) {
        ::close(fd);
        continue;
      }
      std::lock_guard g(mu_);
      sessions_.emplace_back([this, fd] {
        session(fd);
        ::close(fd);
      });
    }
  }

  // Reads exactly n bytes, giving up when the node is stopped or cut off.
  bool read_n(int fd, char* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
      if (stop_ || !reachable_) return false;
      pollfd p{fd, POLLIN, 0};
      int r = ::poll(&p, 1, 100);
      if (r < 0) return false;
      if (r == 0) continue;
      ssize_t k = ::read(fd, buf + got, n - got);
      if (k <= 0) return false;
      got += static_cast<size_t>(k);
    }
    return true;
  }
  static uint32_t be32(const char* p) { return get_u32(std::string(p, 4), 0); }
  static void put16(std::string& s, uint16_t v) {
    s += char(v >> 8);
    s += char(v & 0xff);
  }
  static std::string msg(char type, const std::string& body) { return message(type, body); }
  static std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }
  static bool send_all(int fd, const std::string& s) { return send_all_fd(fd, s); }
  static std::string error(const char* severity, const char* code, const std::string& text) {
    return msg('E', "S" + cstr(severity) + "V" + cstr(severity) + "C" + cstr(code) + "M" + cstr(text) + '\0');
  }
  // One result set of text columns, one row.
  static std::string rows(const std::vector<std::string>& cols, const std::vector<std::string>& vals) {
    std::string rd;
    put16(rd, static_cast<uint16_t>(cols.size()));
    for (const auto& c : cols) {
      rd += cstr(c);
      put_u32(rd, 0);
      put16(rd, 0);
      put_u32(rd, 25);  // text
      put16(rd, 0xffff);
      put_u32(rd, 0xffffffff);
      put16(rd, 0);
    }
    std::string dr;
    put16(dr, static_cast<uint16_t>(vals.size()));
    for (const auto& v : vals) {
      put_u32(dr, static_cast<uint32_t>(v.size()));
      dr += v;
    }
    return msg('T', rd) + msg('D', dr) + msg('C', cstr("SELECT 1"));
  }

  void session(int fd) {
    char hdr[8];
    std::string options;
    for (;;) {
      if (!read_n(fd, hdr, 8)) return;
      uint32_t len = be32(hdr), code = be32(hdr + 4);
      if (len < 8 || len > 10000) return;
      std::string body(len - 8, '\0');
      if (!body.empty() && !read_n(fd, body.data(), body.size())) return;
      if (code == 80877103 || code == 80877104) {  // SSLRequest, GSSENCRequest: no
        if (!send_all(fd, "N")) return;
        continue;
      }
      if (code != 196608) return;  // a CancelRequest, or a protocol it does not speak
      for (size_t i = 0; i < body.size() && body[i];) {
        std::string k = body.c_str() + i;
        i += k.size() + 1;
        std::string v = i < body.size() ? body.c_str() + i : "";
        i += v.size() + 1;
        if (k == "options") options = v;
      }
      break;
    }
    const bool system = options.find("-ccluster=system") != std::string::npos;
    if (!system && !serving_) {
      send_all(fd, error("FATAL", "08000", "service unavailable for target tenant (main)"));
      return;
    }
    std::string hello = msg('R', std::string("\0\0\0\0", 4));
    for (auto [k, v] : {std::pair<const char*, const char*>{"server_version", "13.0.0"},
                        {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"}, {"DateStyle", "ISO, MDY"},
                        {"IntervalStyle", "postgres"}, {"TimeZone", "UTC"}, {"integer_datetimes", "on"},
                        {"standard_conforming_strings", "on"}, {"application_name", ""}})
      hello += msg('S', cstr(k) + cstr(v));
    std::string key;
    put_u32(key, static_cast<uint32_t>(::getpid()));
    put_u32(key, static_cast<uint32_t>(fd));
    hello += msg('K', key) + msg('Z', "I");
    if (!send_all(fd, hello)) return;
    for (;;) {
      char h[5];
      if (!read_n(fd, h, 5)) return;
      uint32_t len = be32(h + 1);
      if (len < 4 || len > (1u << 20)) return;
      std::string body(len - 4, '\0');
      if (!body.empty() && !read_n(fd, body.data(), body.size())) return;
      if (h[0] == 'X') return;
      if (h[0] != 'Q') {
        if (h[0] == 'S' && !send_all(fd, error("ERROR", "0A000", "the stand-in speaks the simple protocol only") +
                                             msg('Z', "I")))
          return;
        continue;
      }
      if (!send_all(fd, answer(std::string(body.c_str()), system) + msg('Z', "I"))) return;
    }
  }

  std::string answer(const std::string& q, bool system) {
    std::string upper = q;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    if (system) {
      std::lock_guard g(mu_);
      if (upper.find("SHOW VIRTUAL CLUSTER MAIN WITH REPLICATION STATUS") != std::string::npos) {
        char age[32];
        std::snprintf(age, sizeof age, "%.3f", wall_s() - replicated_at_);
        return rows({"status", "age"}, {status_, age});
      }
      if (upper.find("ALTER VIRTUAL CLUSTER MAIN COMPLETE REPLICATION TO LATEST") != std::string::npos) {
        system_statements_.push_back(q);
        status_ = "replication pending cutover";
        return msg('C', cstr("ALTER VIRTUAL CLUSTER"));
      }
      if (upper.find("ALTER VIRTUAL CLUSTER MAIN START SERVICE SHARED") != std::string::npos) {
        system_statements_.push_back(q);
        if (status_ != "replication pending cutover")
          return error("ERROR", "55000", "cannot start service: replication has not completed");
        status_ = "ready";
        serving_ = true;
        return msg('C', cstr("ALTER VIRTUAL CLUSTER"));
      }
    }
    if (upper.rfind("SELECT TRUE", 0) == 0) return rows({"bool"}, {"t"});
    if (upper.rfind("SELECT", 0) == 0) return rows({"node"}, {name_});
    std::string tag = upper.substr(0, upper.find_first_of(" ;"));
    return msg('C', cstr(tag));
  }

  int port_;
  std::string name_;
  std::atomic<bool> serving_;
  std::atomic<bool> reachable_{true};
  std::atomic<bool> stop_{false};
  int lfd_ = -1;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> sessions_;
  std::string status_ = "replicating";
  double replicated_at_ = wall_s();
  std::vector<std::string> system_statements_;
};

}  // namespace

TEST_CASE("failover (PCR stand-in): a refusing standby cluster is a standby, a replicating one a witness; "
          "the cutover is the promotion",
          "[failover][safety][pcr]") {
  if (skip_for_pgbouncer()) return;
  const int pa = port_base() + 46, pb = port_base() + 47;
  PcrStandIn a(pa, "cluster-a", /*serving=*/true);
  PcrStandIn b(pb, "cluster-b", /*serving=*/false);
  std::atomic<bool> replicating{true}, stop{false};
  std::thread repl([&] {
    while (!stop) {
      if (replicating) b.replicated_now();
      sleep_s(0.1);
    }
  });

  std::string base = env().scratch + "/failover-pcr";
  run_command("rm -rf " + sh_quote(base) + " && mkdir -p " + sh_quote(base));
  std::string promote = base + "/cutover.sh";
  {
    // docs/failover.md's promote_command, with psql in place of `cockroach sql`.
    std::ofstream out(promote);
    out << "#!/bin/sh\n"
        << "echo \"start $(date +%s.%N) target=$PGPIVOT_TARGET_HOST:$PGPIVOT_TARGET_PORT\" >>" << sh_quote(base + "/promote.log")
        << "\n"
        << "exec " << kPgBin << "/psql -X -v ON_ERROR_STOP=1 \"host=$PGPIVOT_TARGET_HOST port=$PGPIVOT_TARGET_PORT "
        << "user=root dbname=system sslmode=disable options=-ccluster=system\" "
        << "-c \"ALTER VIRTUAL CLUSTER main COMPLETE REPLICATION TO LATEST\" "
        << "-c \"ALTER VIRTUAL CLUSTER main START SERVICE SHARED\"\n";
  }
  ::chmod(promote.c_str(), 0755);

  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 4;
  cfg.extra["query_wait_timeout"] = "10";
  cfg.main_cluster = "primary = { host = \"127.0.0.1\", port = " + std::to_string(pa) +
                     " }\nstandby = { host = \"127.0.0.1\", port = " + std::to_string(pb) + " }";
  cfg.failover = "health_check_interval = 0.5\nhealth_check_timeout = 1\nfailure_threshold = 3\n"
                 "failover_timeout = 20\npromote_timeout = 10\n"
                 "role_query = \"SELECT true\"\nposition_query = \"\"\nlag_query = \"\"\n"
                 "witness_options = \"-ccluster=system\"\n"
                 "witness_query = \"SELECT status, extract(epoch FROM now() - replicated_time) FROM "
                 "[SHOW VIRTUAL CLUSTER main WITH REPLICATION STATUS]\"\n"
                 "promote_command = " + toml_str(promote);
  Pooler p(cfg);

  // Before cutover: the standby's application cluster refuses (08000): read-only,
  // not down; its system cluster says it replicates.
  Row row = wait_pair_up(p, 10);
  INFO("PCR pair, replicating: " << row_text(row));
  CHECK(row["primary_state"] == "up");
  CHECK(row["standby_state"] == "read-only");
  CHECK(contains_icase(row["standby_error"], "service unavailable for target tenant"));
  row = wait_cluster(p, "witness", "receiving", 10);
  CHECK(row["witness"] == "receiving");
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  CHECK(c.value("SELECT 'which node'") == "cluster-a");

  // The pooler is cut off from the primary cluster, which goes on replicating: no cutover.
  a.set_reachable(false);
  row = wait_cluster(p, "primary_state", "down", 10);
  CHECK(row["primary_state"] == "down");
  sleep_s(3 * 0.5 * 4 + 1);
  row = cluster_row(p);
  INFO("cut off from a primary cluster that still replicates: " << row_text(row));
  CHECK(row["active"] == "primary");
  CHECK(row["failovers"] == "0");
  CHECK(row["witness"] == "receiving");
  CHECK(b.system_statements().empty());
  CHECK_FALSE(b.serving());

  // The primary cluster is gone: the replicated time stops, the standby cluster is
  // cut over by promote_command, and the same client session goes on there.
  replicating = false;
  row = wait_cluster(p, "active", "standby", 30);
  INFO("after the primary cluster stopped replicating: " << row_text(row) << "\n" << read_text(base + "/promote.log")
                                                         << p.log().substr(p.log().size() > 3000 ? p.log().size() - 3000 : 0));
  CHECK(row["active"] == "standby");
  CHECK(row["failovers"] == "1");
  auto stmts = b.system_statements();
  REQUIRE(stmts.size() == 2);
  CHECK(contains_icase(stmts[0], "COMPLETE REPLICATION TO LATEST"));
  CHECK(contains_icase(stmts[1], "START SERVICE SHARED"));
  CHECK(b.serving());
  Result r = c.exec("SELECT 'which node'", 20);
  INFO(r.message());
  CHECK(r.value() == "cluster-b");
  CHECK(PQstatus(c.get()) == CONNECTION_OK);
  stop = true;
  repl.join();
}
