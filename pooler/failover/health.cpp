// Health checks: libpq's non-blocking API driven by the libuv loop. A role check
// runs role_query and, on a writable node, position_query; on a read-only node witness_query and
// lag_query (on their own connection when witness_options is set). What a check
// learns goes into ClusterRt::obs[side]; a finished role check reaches
// Clusters::check_result, which feeds the cluster's failover machine.
#include "pooler/failover/health.hpp"

#include <cstdlib>
#include <cstring>

#include <libpq-fe.h>

#include "pooler/failover/verdict.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

using failover::Verdict;
using failover::Witness;

namespace {

std::string conn_value(const std::string& v) {
  std::string out = "'";
  for (char ch : v) {
    if (ch == '\'' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "'";
}

// A plain-text password libpq can log in with ("" for hashes and SCRAM secrets).
std::string plain_password(const std::string& pw) {
  if (pw.rfind("md5", 0) == 0 && pw.size() == 35) return "";
  if (pw.rfind("SCRAM-SHA-256$", 0) == 0) return "";
  return pw;
}

}  // namespace

// Credentials for a node without its own: those the pools use for the cluster.
void health_credentials(const config::Config& cfg, const std::string& cluster, std::string& user,
                        std::string& password, std::string& dbname) {
  for (const auto& [name, db] : cfg.databases) {
    if (db.cluster != cluster || name == "*") continue;
    const std::string server_db = db.dbname.empty() ? name : db.dbname;
    if (!db.user.empty()) {
      std::string pw = plain_password(db.password);
      if (pw.empty()) {
        auto u = cfg.users.find(db.user);
        if (u != cfg.users.end()) pw = plain_password(u->second.password);
      }
      if (!pw.empty()) {
        user = db.user;
        password = pw;
        dbname = server_db;
        return;
      }
    }
  }
  for (const auto& [name, db] : cfg.databases) {
    if (db.cluster != cluster || name == "*" || !db.user.empty()) continue;
    for (const auto& [uname, u] : cfg.users) {
      std::string pw = plain_password(u.password);
      if (pw.empty()) continue;
      user = uname;
      password = pw;
      dbname = db.dbname.empty() ? name : db.dbname;
      return;
    }
  }
}

// One node's check: a libpq connection kept open between checks, polled through a
// uv_poll_t on its socket. The poll handle is re-created whenever libpq changes
// sockets and closed before libpq closes the descriptor.
struct HealthCheck {
  Pooler* pooler = nullptr;
  ClusterRt* cl = nullptr;
  int side = 0;
  bool witness_only = false;  // the witness/lag connection of witness_options
  PGconn* conn = nullptr;
  enum class St { Idle, Connecting, Querying } st = St::Idle;
  enum class Step { Role, Position, Witness, Lag };
  Step step = Step::Role;
  struct PollBox {
    uv_poll_t h{};
    HealthCheck* hc = nullptr;
  };
  PollBox* poll = nullptr;
  int poll_fd = -1;
  std::uint64_t start_us = 0;
  bool ready_for_query = false;  // connection established and idle
  Verdict verdict = Verdict::Unknown;
  std::string error;

  ~HealthCheck() { drop(); }

  const config::Failover& fo() const { return cl->cfg->failover; }

  void stop_poll() {
    if (!poll) return;
    poll->hc = nullptr;
    uv_poll_stop(&poll->h);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->h),
             [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
    poll = nullptr;
    poll_fd = -1;
  }

  void drop() {
    stop_poll();
    if (conn) PQfinish(conn);
    conn = nullptr;
    ready_for_query = false;
    st = St::Idle;
  }

  void watch(int events) {
    int fd = PQsocket(conn);
    if (fd < 0) {
      fail("no socket");
      return;
    }
    if (poll && poll_fd != fd) stop_poll();
    if (!poll) {
      poll = new PollBox();
      poll->hc = this;
      poll->h.data = poll;
      if (uv_poll_init(pooler->loop(), &poll->h, fd) != 0) {
        delete poll;
        poll = nullptr;
        fail("cannot poll the health check socket");
        return;
      }
      poll_fd = fd;
    }
    uv_poll_start(&poll->h, events, [](uv_poll_t* h, int status, int) {
      auto* box = static_cast<PollBox*>(h->data);
      if (!box->hc) return;
      // While connecting, libpq itself says best what went wrong (e.g. connection refused).
      if (status < 0 && box->hc->st != St::Connecting) {
        box->hc->fail(uv_strerror(status));
        return;
      }
      box->hc->drive();
    });
  }

  std::string conninfo() const {
    const config::Node& n = side == 0 ? cl->cfg->primary : *cl->cfg->standby;
    std::string ci = "host=" + conn_value(n.host) + " port=" + std::to_string(n.port);
    bool has_user = false, has_db = false, has_pw = false;
    for (const auto& [k, v] : n.options) {
      if (witness_only && k == "options") continue;
      ci += " " + k + "=" + conn_value(v);
      has_user = has_user || k == "user";
      has_db = has_db || k == "dbname";
      has_pw = has_pw || k == "password";
    }
    if (witness_only) ci += " options=" + conn_value(fo().witness_options);
    // The pool's TLS settings apply to health checks too, unless the node says otherwise.
    const auto& ps = pooler->settings();
    auto add = [&](const char* k, const std::string& v) {
      if (!v.empty() && !n.options.count(k)) ci += std::string(" ") + k + "=" + conn_value(v);
    };
    add("sslmode", ps.server_tls_sslmode);
    add("sslrootcert", ps.server_tls_ca_file);
    add("sslcert", ps.server_tls_cert_file);
    add("sslkey", ps.server_tls_key_file);
    // pgpivot's own server connections never use GSSAPI encryption; libpq's default
    // (prefer) would look for a Kerberos credential cache on every connect, which
    // initializes Kerberos (~0.5 MB of resident pages) for nothing.
    if (!n.options.count("gssencmode")) ci += " gssencmode=disable";
    if (!has_user) {
      // No monitor credentials of its own: log in as the pools do.
      std::string user, pw, db;
      health_credentials(pooler->cfg(), cl->name, user, pw, db);
      if (!user.empty()) {
        ci += " user=" + conn_value(user);
        if (!has_pw) ci += " password=" + conn_value(pw);
        if (!has_db) ci += " dbname=" + conn_value(db);
        has_db = true;
      } else {
        ci += " user=postgres";
      }
    }
    if (!has_db) ci += " dbname=postgres";
    ci += " application_name='pgpivot health check'";
    return ci;
  }

  // Starts one check (connecting first if needed).
  void start() {
    if (st != St::Idle) return;
    start_us = uv_hrtime() / 1000;
    verdict = Verdict::Unknown;
    error.clear();
    step = witness_only ? Step::Witness : Step::Role;
    if (witness_only && fo().witness_query.empty()) step = Step::Lag;
    if (conn && ready_for_query && PQstatus(conn) == CONNECTION_OK) {
      send_query();
      return;
    }
    drop();
    start_us = uv_hrtime() / 1000;
    conn = PQconnectStart(conninfo().c_str());
    if (!conn || PQstatus(conn) == CONNECTION_BAD) {
      fail(conn ? PQerrorMessage(conn) : "out of memory");
      return;
    }
    // Verbose errors carry the SQLSTATE: a refused login is not a dead node.
    PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
    PQsetnonblocking(conn, 1);
    st = St::Connecting;
    drive();
  }

  const std::string& query_of(Step s) const {
    switch (s) {
      case Step::Role: return fo().role_query;
      case Step::Position: return fo().position_query;
      case Step::Witness: return fo().witness_query;
      case Step::Lag: return fo().lag_query;
    }
    return fo().role_query;
  }

  void send_query() {
    if (!PQsendQuery(conn, query_of(step).c_str())) {
      fail(PQerrorMessage(conn));
      return;
    }
    st = St::Querying;
    int f = PQflush(conn);
    watch(f == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
  }

  void drive() {
    if (st == St::Connecting) {
      switch (PQconnectPoll(conn)) {
        case PGRES_POLLING_READING: watch(UV_READABLE); return;
        case PGRES_POLLING_WRITING: watch(UV_WRITABLE); return;
        case PGRES_POLLING_FAILED: fail(PQerrorMessage(conn), /*login=*/true); return;
        case PGRES_POLLING_OK:
          ready_for_query = true;
          send_query();
          return;
        default: watch(UV_READABLE | UV_WRITABLE); return;
      }
    }
    if (st != St::Querying) return;
    if (PQflush(conn) == 1) {
      watch(UV_READABLE | UV_WRITABLE);
      return;
    }
    if (!PQconsumeInput(conn)) {
      fail(PQerrorMessage(conn));
      return;
    }
    std::vector<std::vector<std::optional<std::string>>> rows;
    std::string err, sqlstate;
    bool got_rows = false;
    while (!PQisBusy(conn)) {
      PGresult* r = PQgetResult(conn);
      if (!r) break;
      auto rs = PQresultStatus(r);
      if (rs == PGRES_TUPLES_OK) {
        got_rows = true;
        for (int i = 0; i < PQntuples(r); i++) {
          std::vector<std::optional<std::string>> row;
          for (int j = 0; j < PQnfields(r); j++) {
            if (PQgetisnull(r, i, j))
              row.emplace_back(std::nullopt);
            else
              row.emplace_back(PQgetvalue(r, i, j));
          }
          rows.push_back(std::move(row));
        }
      } else if (rs != PGRES_COMMAND_OK) {
        err = PQresultErrorMessage(r);
        const char* st5 = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        sqlstate = st5 ? st5 : "";
      }
      PQclear(r);
    }
    if (PQisBusy(conn)) {
      watch(UV_READABLE);
      return;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
      fail(err.empty() ? PQerrorMessage(conn) : err);
      return;
    }
    if (poll) uv_poll_stop(&poll->h);
    st = St::Idle;
    step_done(rows, got_rows, err, sqlstate);
  }

  static std::string trim(std::string m) {
    // Verbose messages end with the server's source location: not for operators.
    if (auto at = m.find("\nLOCATION:"); at != std::string::npos) m.resize(at);
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    // One line for SHOW CLUSTERS and the log.
    std::string out;
    for (char c : m) {
      if (c == '\n' || c == '\t') c = ' ';
      if (c == ' ' && !out.empty() && out.back() == ' ') continue;
      out += c;
    }
    return out;
  }

  // One query of the check answered (or failed without losing the connection).
  void step_done(const std::vector<std::vector<std::optional<std::string>>>& rows, bool got_rows,
                 const std::string& err, const std::string& sqlstate) {
    failover::NodeView& o = cl->obs[side];
    switch (step) {
      case Step::Role: {
        std::optional<bool> w;
        if (!rows.empty() && !rows[0].empty() && rows[0][0]) w = failover::parse_bool(*rows[0][0]);
        if (!err.empty()) {
          verdict = failover::query_failure_verdict(sqlstate);
          error = "role_query failed: " + trim(err);
          return finish();
        }
        if (!w) {
          verdict = Verdict::Misconfigured;
          error = got_rows ? "role_query answered neither true nor false" : "role_query returned no row";
          return finish();
        }
        verdict = *w ? Verdict::Up : Verdict::ReadOnly;
        if (*w) {
          o.receive_lsn.reset();
          o.lag_direct.reset();
          o.witness = Witness::Unknown;
          if (!fo().position_query.empty()) return next(Step::Position);
          o.position.reset();
          return finish();
        }
        o.position.reset();
        if (!fo().witness_options.empty()) return finish();  // the witness check has its own connection
        if (!fo().witness_query.empty()) return next(Step::Witness);
        if (!fo().lag_query.empty()) return next(Step::Lag);
        return finish();
      }
      case Step::Position:
        o.position.reset();
        if (err.empty() && !rows.empty() && !rows[0].empty() && rows[0][0]) o.position = failover::parse_lsn(*rows[0][0]);
        return finish();
      case Step::Witness:
        witness_row(rows, err);
        if (!fo().lag_query.empty()) return next(Step::Lag);
        return finish();
      case Step::Lag: {
        std::optional<std::uint64_t> prev_lsn = o.receive_lsn;
        o.receive_lsn.reset();
        o.lag_direct.reset();
        if (err.empty() && !rows.empty() && !rows[0].empty() && rows[0][0]) {
          const std::string& v = *rows[0][0];
          if (auto lsn = failover::parse_lsn(v)) {
            if (prev_lsn && *lsn > *prev_lsn) o.lsn_advanced_at = double(uv_hrtime()) / 1e9;
            prev_lsn = lsn;
            o.receive_lsn = lsn;
          } else {
            char* end = nullptr;
            long long b = std::strtoll(v.c_str(), &end, 10);
            if (end && *end == 0 && !v.empty()) o.lag_direct = b;
          }
        }
        return finish();
      }
    }
  }

  // status, seconds since the upstream's last message, sender host, sender port.
  void witness_row(const std::vector<std::vector<std::optional<std::string>>>& rows, const std::string& err) {
    failover::NodeView& o = cl->obs[side];
    double now_s = double(uv_hrtime()) / 1e9;
    o.witness_at = now_s;
    o.follows_active = false;
    if (!err.empty()) {
      o.witness = Witness::Unknown;
      return;
    }
    if (rows.empty()) {
      o.witness = Witness::NotReceiving;
      return;
    }
    const auto& r = rows[0];
    if (r.empty() || !r[0]) {
      o.witness = Witness::Unknown;  // e.g. pg_stat_wal_receiver without pg_read_all_stats
      return;
    }
    const std::string& status = *r[0];
    bool receiving = status == "streaming" || status == "replicating";
    if (!receiving) {
      o.witness = Witness::NotReceiving;
      return;
    }
    o.heard_age = r.size() > 1 && r[1] ? std::atof(r[1]->c_str()) : 0;
    o.witness = Witness::Receiving;
    if (r.size() > 3 && r[3]) {
      // Its upstream is the active node when the sender's port (and host, unless both
      // are loopback) matches the active node's address.
      const config::Node& a = cl->active_standby() ? *cl->cfg->standby : cl->cfg->primary;
      std::string host = r[2] ? *r[2] : "";
      auto loopback = [](const std::string& h) { return h == "localhost" || h.rfind("127.", 0) == 0 || h == "::1"; };
      bool host_ok = host == a.host || (loopback(host) && loopback(a.host)) || (!host.empty() && host[0] == '/');
      o.follows_active = std::atoi(r[3]->c_str()) == a.port && host_ok;
      if (o.follows_active) o.followed_at = now_s;
    }
  }

  void next(Step s) {
    step = s;
    send_query();
  }

  void finish() {
    if (witness_only) return;  // what it learned is in obs; the role check reports
    cl->obs[side].verdict = verdict;
    cl->obs[side].error = error;
    pooler->clusters().check_result(cl, side, uv_hrtime() / 1000 - start_us);
  }

  void fail(const std::string& why, bool login = false) {
    std::string msg = trim(why);
    drop();
    if (witness_only) {
      cl->obs[side].witness = Witness::Unknown;
      return;
    }
    if (step != Step::Role && !login) {
      // The node answered its role query; a later query failed with the connection.
      verdict = Verdict::Down;
    } else {
      verdict = login ? failover::login_failure_verdict(why) : Verdict::Down;  // the raw text: "FATAL:  XXXXX:"
    }
    error = msg;
    finish();
  }

  void check_timeout(std::uint64_t now_us, double timeout_s) {
    if (st != St::Idle && now_us - start_us > std::uint64_t(timeout_s * 1e6)) fail("health_check_timeout");
  }
};

void HealthCheckDeleter::operator()(HealthCheck* h) const { delete h; }

HealthCheck* new_health_check(Pooler* p, ClusterRt* cl, int side, bool witness_only) {
  auto* h = new HealthCheck();
  h->pooler = p;
  h->cl = cl;
  h->side = side;
  h->witness_only = witness_only;
  return h;
}
void health_check_start(HealthCheck* h) { h->start(); }
void health_check_drop(HealthCheck* h) { h->drop(); }
void health_check_timeout(HealthCheck* h, std::uint64_t now_us, double timeout_s) { h->check_timeout(now_us, timeout_s); }

}  // namespace pgpivot
