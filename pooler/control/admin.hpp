// The admin console: the virtual databases "pgbouncer" and "pgpivot". Commands are
// looked up by name in a table (admin.cpp), SHOW's views in another (admin_show.cpp);
// the columns and their order are PgBouncer 1.25's.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pooler/reasons.hpp"

namespace pgpivot {

class Pooler;
struct Client;
struct DbEntry;
struct UserEntry;
struct Pool;

class Console {
 public:
  explicit Console(Pooler& p);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  void login(Client* c);                         // an admin client authenticated: welcome it
  void query(Client* c, std::string_view sql);   // one simple-protocol query of the console
  // Answers the commands that wait for a condition (PAUSE, WAIT_CLOSE, the moves)
  // whose condition now holds.
  void finish_pending();
  [[nodiscard]] bool has_pending() const { return !pending_.empty(); }
  void forget(Client* c);                        // a console client is closing

  // One command's words: w[0] is the command, `db` its first argument as an identifier.
  struct Args {
    const std::vector<std::string>& w;
    std::string_view sql;
    std::string cmd;
    std::string db;
  };

 private:
  struct Pending {
    Client* client;
    std::string command;            // PAUSE, WAIT_CLOSE, SWITCHOVER, FAILOVER, FAILBACK
    std::string db;                 // database (PAUSE, WAIT_CLOSE; "" = all) or cluster
    std::uint64_t moves_ended = 0;  // a move: the cluster's count at the start
  };
  using Handler = void (Console::*)(Client*, const Args&);
  struct Command {
    const char* name;
    Handler run;
    bool stats_users;    // stats_users may run it too (else admin_users only)
    bool db_must_exist;  // a first argument, when given, must name a database
  };
  static const Command kCommands[];
  using ShowHandler = void (Console::*)(std::string& out, const std::string& what);
  struct View {
    const char* name;
    ShowHandler run;
  };
  static const View kViews[];
  static const View* find_view(const std::string& what);  // nullptr: no such view

  void done(Client* c, const std::string& tag);
  void apply_tls(Client* c);  // after a SET of a TLS setting
  void error(Client* c, Reason why, std::initializer_list<std::string_view> args = {}, const std::string& detail = "");
  bool pending_done(const Pending& pa);
  bool need_db(Client* c, const Args& a);
  [[nodiscard]] bool db_exists(const std::string& name);

  // Commands (admin.cpp).
  void cmd_show(Client* c, const Args& a);
  void cmd_select(Client* c, const Args& a);
  void cmd_move(Client* c, const Args& a);  // SWITCHOVER, FAILOVER, FAILBACK, ABORT
  void cmd_pause(Client* c, const Args& a);
  void cmd_resume(Client* c, const Args& a);
  void cmd_suspend(Client* c, const Args& a);
  void cmd_enable(Client* c, const Args& a);  // ENABLE, DISABLE
  void cmd_reconnect(Client* c, const Args& a);
  void cmd_kill(Client* c, const Args& a);
  void cmd_kill_client(Client* c, const Args& a);
  void cmd_wait_close(Client* c, const Args& a);
  void cmd_reload(Client* c, const Args& a);
  void cmd_shutdown(Client* c, const Args& a);
  void cmd_set(Client* c, const Args& a);

  // SHOW's views (admin_show.cpp); each appends its result set to `out`.
  void show_pools(std::string& out, const std::string& what);
  void show_conns(std::string& out, const std::string& what);  // CLIENTS, SERVERS
  void show_stats(std::string& out, const std::string& what);  // STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS
  void show_databases(std::string& out, const std::string& what);
  void show_users(std::string& out, const std::string& what);
  void show_lists(std::string& out, const std::string& what);
  void show_config(std::string& out, const std::string& what);
  void show_mem(std::string& out, const std::string& what);
  void show_clusters(std::string& out, const std::string& what);
  void show_failovers(std::string& out, const std::string& what);
  void show_version(std::string& out, const std::string& what);
  void show_state(std::string& out, const std::string& what);
  void show_help(std::string& out, const std::string& what);
  // admin_sockets.cpp: one row per connection.
  void show_sockets(std::string& out, const std::string& what);  // SOCKETS, ACTIVE_SOCKETS
  void show_fds(std::string& out, const std::string& what);
  void show_peers(std::string& out, const std::string& what);  // PEERS, PEER_POOLS
  void show_dns(std::string& out, const std::string& what);    // DNS_HOSTS, DNS_ZONES

  Pooler& p_;
  std::vector<Pending> pending_;
  // The console's own database, user and pool (made at the first login).
  std::unique_ptr<DbEntry> db_;
  std::unique_ptr<UserEntry> user_;
  Pool* pool_ = nullptr;
};

}  // namespace pgpivot
