// SHOW's views of single connections: CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS and
// FDS, with PgBouncer 1.25's columns. One row builder serves them all; SOCKETS adds
// PgBouncer's buffer columns, read from our connection's read buffer and output queue.
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <ctime>
#include <functional>

#include "pooler/control/admin.hpp"
#include "pooler/control/admin_table.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

using namespace console;

namespace {

// Bytes queued for writing to the connection.
std::uint64_t pending_output(const Conn* x) {
  if (!x->oq) return 0;
  std::uint64_t n = x->oq->out.size() + x->oq->tls_cipher_out.size();
  for (const auto& s : x->oq->segs) n += s.ptr ? s.len : 0;
  return n;
}

// PgBouncer's buffer columns (recv_pos, pkt_pos, pkt_remain, send_pos, send_remain,
// pkt_avail, send_avail) as our buffers have them.
void add_buffer_cells(std::vector<Cell>& r, const Conn* x) {
  r.push_back(num(x->rend));
  r.push_back(num(x->rparse));
  r.push_back(num(x->fwd_left));
  r.push_back(num(0));
  r.push_back(num(0));
  r.push_back(num(x->rend - x->rparse));
  r.push_back(num(pending_output(x)));
}

bool has_buffered(const Conn* x) { return x->rend > x->rpos || (x->oq && !x->oq->idle()); }

std::vector<Table::Col> conn_columns(bool debug) {
  std::vector<Table::Col> cols{
      {"type", false}, {"user", false}, {"database", false}, {"replication", false}, {"state", false},
      {"addr", false}, {"port", true}, {"local_addr", false}, {"local_port", true}, {"connect_time", false},
      {"request_time", false}, {"wait", true}, {"wait_us", true}, {"close_needed", true}, {"ptr", false},
      {"link", false}, {"remote_pid", true}, {"tls", false}, {"application_name", false},
      {"prepared_statements", true}, {"id", true}};
  if (debug) {
    for (const char* n : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"})
      cols.push_back({n, true});
  }
  return cols;
}

// A connection's times, read against its own worker's loop clock.
std::string wall(const Conn* x, Ms t0, std::uint64_t wall_now) {
  Ms tnow = std::max(x->pooler->now(), t0);
  return fmt_time(wall_now - (tnow - t0) / 1000);
}

std::vector<Cell> client_row(const Client* x, const std::string& db, const char* state, std::uint64_t wall_now) {
  Ms wait = x->state == ClientState::Waiting ? std::max(x->pooler->now(), x->wait_start) - x->wait_start : 0;
  int ai = tracked_index("application_name");
  return {str("C"), str(x->user_name), str(db.empty() ? "(nodb)" : db), str("none"), str(state),
          str(x->remote.host()), inum(x->remote.port), str(x->local_addr().host()), inum(x->local_addr().port),
          str(wall(x, x->connect_time, wall_now)), str(wall(x, x->request_time, wall_now)), num(wait / 1000),
          num((wait % 1000) * 1000), num(0), str(fmt_ptr(x)), str(fmt_ptr(x->server)), num(0),
          str(x->tls_description()), str(x->params.get(ai).value_or("")), num(x->prepared_count()), num(x->id)};
}

std::vector<Cell> server_row(const Server* s, const Pool* p, const char* state, std::uint64_t wall_now) {
  int ai = tracked_index("application_name");
  return {str("S"), str(p->user_name), str(p->db_name), str("none"), str(state), str(s->host),
          inum(s->server_port), str(s->local.host()), inum(s->local.port), str(wall(s, s->connect_time, wall_now)),
          str(wall(s, s->request_time, wall_now)), num(0), num(0), num(s->close_needed ? 1 : 0), str(fmt_ptr(s)),
          str(fmt_ptr(s->client)), num(s->pid), str(s->tls_description()), str(s->params.get(ai).value_or("")),
          num(s->prepared_on.size()), num(s->id)};
}

// The listening socket's address, as PgBouncer's "pooler" rows show it.
std::pair<std::string, int> listener_addr(const Listener& l) {
  if (l.unix_socket) return {"unix", 0};
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {"", 0};
  NetAddr a;
  a.set(ss);
  return {a.host(), a.port};
}

}  // namespace

void Console::show_conns(std::string& out, const std::string& what) {
  std::vector<Pool*> pools = p_.world_pools();  // every worker's pools
  std::uint64_t wall_now = std::uint64_t(time(nullptr));
  Table t(conn_columns(false));
  if (what == "CLIENTS") {
    for (Pool* p : pools) {
      p->each_client([&](Client* x) {
        // PgBouncer's states: a client without a server is idle.
        const char* state = x->state == ClientState::Waiting ? "waiting"
                            : x->state == ClientState::Login ? "login"
                            : x->server                      ? "active"
                                                             : "idle";
        t.row(client_row(x, p->db_name, state, wall_now));
      });
    }
  } else {
    for (Pool* p : pools) {
      p->each_server([&](Server* s) { t.row(server_row(s, p, to_string(s->state), wall_now)); });
    }
  }
  t.emit(out);
}

// SHOW SOCKETS / ACTIVE_SOCKETS: every client and server with PgBouncer's list names
// as states and the buffer columns; ACTIVE_SOCKETS only those with buffered bytes.
void Console::show_sockets(std::string& out, const std::string& what) {
  bool only_active = what == "ACTIVE_SOCKETS";
  std::uint64_t wall_now = std::uint64_t(time(nullptr));
  Table t(conn_columns(true));
  auto add = [&](std::vector<Cell> r, const Conn* x) {
    if (only_active && !has_buffered(x)) return;
    add_buffer_cells(r, x);
    t.row(std::move(r));
  };
  for (Pool* p : p_.world_pools()) {
    auto clients = [&](std::initializer_list<ClientState> states, const char* name) {
      p->each_client([&](Client* x) { add(client_row(x, p->db_name, name, wall_now), x); }, states);
    };
    auto servers = [&](ServerState st, const char* name) {
      p->each_server([&](Server* s) { add(server_row(s, p, name, wall_now), s); }, {st});
    };
    clients({ClientState::Idle, ClientState::Active}, "cl_active");
    clients({ClientState::Waiting, ClientState::Login}, "cl_waiting");
    servers(ServerState::Active, "sv_active");
    servers(ServerState::Idle, "sv_idle");
    servers(ServerState::Used, "sv_used");
    servers(ServerState::Tested, "sv_tested");
    servers(ServerState::Login, "sv_login");
  }
  for (Pooler* x : p_.world()) {  // logging in, no pool yet
    x->cl_login_.for_each<Client>([&](Client* c) { add(client_row(c, "", "cl_login", wall_now), c); });
  }
  t.emit(out);
}

// SHOW FDS: the listening sockets, then every client and server socket with what
// PgBouncer's online restart would hand over. pgpivot has no takeover: the rows are
// informational, no descriptor is attached, and no password or SCRAM key is shown.
void Console::show_fds(std::string& out, const std::string&) {
  Table t({{"fd", true}, {"task", false}, {"user", false}, {"database", false}, {"addr", false}, {"port", true},
           {"cancel", true}, {"link", true}, {"client_encoding", false}, {"std_strings", false},
           {"datestyle", false}, {"timezone", false}, {"password", false}, {"scram_client_key", false},
           {"scram_server_key", false}});
  auto param = [](const TrackedParams& ps, const char* name) -> Cell {
    const auto& v = ps.get(tracked_index(name));
    return v ? str(*v) : std::nullopt;
  };
  for (Pooler* x : p_.world()) {
    for (const auto& l : x->listeners_) {
      if (l->closed) continue;
      auto [addr, port] = listener_addr(*l);
      t.row({inum(l->fd), str("pooler"), std::nullopt, std::nullopt, str(addr), inum(port), num(0), num(0),
             std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt});
    }
  }
  auto addr_of = [](const NetAddr& a) { return a.family == AF_UNIX ? std::string("unix") : a.host(); };
  auto row = [&](const Conn* c, const char* task, const std::string& user, const std::string& db,
                 const std::string& addr, int port, std::uint64_t cancel, const Conn* link, const TrackedParams& ps,
                 bool tls) {
    if (tls) return;  // as PgBouncer: TLS sockets cannot be handed over
    t.row({inum(c->fd), str(task), str(user), str(db), str(addr), inum(port),
           num(cancel), inum(link ? link->fd : 0), param(ps, "client_encoding"),
           param(ps, "standard_conforming_strings"), param(ps, "DateStyle"), param(ps, "TimeZone"), std::nullopt,
           std::nullopt, std::nullopt});
  };
  for (Pooler* x : p_.world()) {
    x->cl_login_.for_each<Client>([&](Client* c) {
      row(c, "client", c->user_name, c->db_name, addr_of(c->remote), c->remote.port, (std::uint64_t(c->cancel_pid) << 32) | c->cancel_key,
          nullptr, c->params, !c->tls_description().empty());
    });
  }
  for (Pool* p : p_.world_pools()) {
    if (p->admin) continue;
    p->each_client([&](Client* c) {
      row(c, "client", c->user_name, p->db_name, addr_of(c->remote), c->remote.port, (std::uint64_t(c->cancel_pid) << 32) | c->cancel_key,
          c->server, c->params, !c->tls_description().empty() || (c->server && !c->server->tls_description().empty()));
    });
    p->each_server([&](Server* s) {
      row(s, "server", p->user_name, p->db_name, s->host, s->server_port, (std::uint64_t(s->pid) << 32) | s->key, s->client,
          s->params, !s->tls_description().empty() || (s->client && !s->client->tls_description().empty()));
    });
  }
  t.emit(out);
}

}  // namespace pgpivot
