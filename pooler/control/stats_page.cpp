// GET /stats: a self-contained HTML status page (no scripts, no external
// resources) of the pools, databases, clusters and recent failovers, refreshed
// every few seconds; the same figures as SHOW POOLS, SHOW STATS and SHOW CLUSTERS.
#include "pooler/control/stats_page.hpp"

#include "pooler/control/metrics.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <initializer_list>

#include "pooler/control/snapshot.hpp"
#include "pooler/pooler.hpp"

namespace pgpivot {

namespace {

constexpr int kPageRefreshS = 5;
constexpr std::size_t kPageFailovers = 20;  // recent failovers on the page

void esc(std::string& out, std::string_view s) {
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
}

std::string fmt_utc(std::uint64_t epoch) {
  if (!epoch) return "";
  time_t t = time_t(epoch);
  tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tmv);
  return buf;
}

std::string fmt_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  char b[32];
  std::snprintf(b, sizeof b, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return b;
}

std::string fmt_ms(std::uint64_t us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", double(us) / 1000.0);
  return b;
}

const char* badge_class(std::string_view state) {
  if (state == "up") return "up";
  if (state == "down") return "down";
  if (state == "read-only") return "ro";
  return "unk";
}

class Html {
 public:
  explicit Html(std::string& out) : out_(out) {}
  void raw(std::string_view s) { out_ += s; }
  void text(std::string_view s) { esc(out_, s); }
  void num(std::uint64_t v) { out_ += std::to_string(v); }
  // A table cell: text (left aligned) or a number.
  void td(std::string_view s) {
    out_ += "<td class=\"t\">";
    esc(out_, s);
    out_ += "</td>";
  }
  void tdn(std::uint64_t v) {
    out_ += "<td>";
    num(v);
    out_ += "</td>";
  }
  void tdn(std::string_view s) {
    out_ += "<td>";
    esc(out_, s);
    out_ += "</td>";
  }
  void td_badge(std::string_view state) {
    out_ += "<td class=\"t\"><span class=\"b ";
    out_ += badge_class(state);
    out_ += "\">";
    esc(out_, state);
    out_ += "</span></td>";
  }
  void head(std::initializer_list<const char*> cols, std::size_t text_cols) {
    out_ += "<table><thead><tr>";
    std::size_t i = 0;
    for (const char* col : cols) {
      out_ += i++ < text_cols ? "<th class=\"t\">" : "<th>";
      out_ += col;
      out_ += "</th>";
    }
    out_ += "</tr></thead><tbody>";
  }
  void empty_row(std::size_t cols, const char* what) {
    out_ += "<tr><td class=\"t empty\" colspan=\"" + std::to_string(cols) + "\">";
    out_ += what;
    out_ += "</td></tr>";
  }
  void end_table() { out_ += "</tbody></table>"; }

 private:
  std::string& out_;
};

const char kStyle[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px 32px;"
    "color:#1d2330;background:#f5f6f8}"
    "h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:26px 0 8px;color:#2a3140}"
    ".sub{color:#5b6475;margin-bottom:16px}.sub a{color:#2f5fb3}"
    ".cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:4px}"
    ".card{background:#fff;border-radius:6px;padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.1);min-width:120px}"
    ".card span{display:block;color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}"
    ".card b{font-size:22px}"
    "table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.1);border-radius:6px;"
    "overflow:hidden}"
    "th,td{padding:6px 12px;border-bottom:1px solid #e4e7ec;text-align:right;white-space:nowrap;"
    "font-variant-numeric:tabular-nums}"
    "th{background:#eceff4;font-weight:600;color:#38404f;font-size:12px}"
    "tr:last-child td{border-bottom:none}.t{text-align:left}.empty{color:#7a8294;font-style:italic}"
    ".b{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600}"
    ".up{background:#d6f4dc;color:#176a2b}.down{background:#fbdad7;color:#a1261c}"
    ".ro{background:#dae7fb;color:#1d4f91}.unk{background:#e7e9ed;color:#555d6b}"
    ".warn{color:#a1261c;font-weight:600}";

}  // namespace

std::string render_stats_page(Pooler& pooler) {
  auto& clusters = pooler.control()->clusters().all();
  auto& flog = pooler.control()->clusters().log();
  auto groups = pool_groups(pooler);
  std::string out;
  out.reserve(16384 + groups.size() * 600 + clusters.size() * 600);
  Html h(out);
  int nclients = 0;
  for (Pooler* w : pooler.world()) nclients += w->client_count();
  std::uint64_t wall = std::uint64_t(time(nullptr));
  h.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"" + std::to_string(kPageRefreshS) + "\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>pgpivot status</title><style>");
  h.raw(kStyle);
  h.raw("</style></head><body>\n<h1>pgpivot status</h1><div class=\"sub\">pgpivot " PGPIVOT_VERSION " &middot; ");
  h.text(fmt_utc(wall));
  h.raw(" &middot; refreshes every " + std::to_string(kPageRefreshS) +
        " s &middot; <a href=\"/metrics\">Prometheus metrics</a></div>\n");

  // Summary cards.
  std::uint64_t servers = 0, waiting = 0;
  for (auto& [k, g] : groups) {
    PoolCounts n = group_counts(g);
    servers += n.servers();
    for (Pool* p : g) waiting += p->cl_waiting.size();
  }
  auto card = [&](const char* label, const std::string& value, bool warn = false) {
    h.raw("<div class=\"card\"><span>");
    h.raw(label);
    h.raw(warn ? "</span><b class=\"warn\">" : "</span><b>");
    h.text(value);
    h.raw("</b></div>");
  };
  h.raw("<div class=\"cards\">");
  card("clients", std::to_string(nclients) + " / " + std::to_string(pooler.cfg().pooler.max_client_conn));
  card("waiting clients", std::to_string(waiting), waiting > 0);
  card("server connections", std::to_string(servers));
  card("pools", std::to_string(groups.size()));
  card("state", pooler.suspended() ? "suspended" : pooler.paused_all() ? "paused" : "running", pooler.suspended() || pooler.paused_all());
  h.raw("</div>\n");

  // Pools, as SHOW POOLS.
  h.raw("<h2>Pools</h2>");
  h.head({"database", "user", "pool_mode", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
          "sv_login", "pool_size", "maxwait (s)"},
         3);
  for (auto& [k, g] : groups) {
    Pool* p = g.front();
    PoolCounts c = group_counts(g);
    h.raw("<tr class=\"pool\" data-pool=\"");
    h.text(p->db_name + "/" + p->user_name);
    h.raw("\">");
    h.td(p->db_name);
    h.td(p->user_name);
    h.td(config::to_string(pooler.registry().pool_mode(p)));
    for (std::uint64_t v : {c.cl_active, c.cl_waiting, c.sv_active, c.sv_idle, c.sv_used, c.sv_tested, c.sv_login})
      h.tdn(v);
    h.tdn(std::uint64_t(std::max(pooler.registry().pool_size(p), 0)));
    h.tdn(ms_to_s(c.maxwait_ms));
    h.raw("</tr>\n");
  }
  if (groups.empty()) h.empty_row(12, "no pools yet: a pool appears when its first client logs in");
  h.end_table();

  // Statistics per database, as SHOW STATS.
  // Average times weighted by their events over pools and workers (control/stats.hpp).
  std::map<std::string, StatsSum> per_db = stats_by_database(pooler);
  h.raw("<h2>Statistics</h2>");
  h.head({"database", "transactions", "queries", "xacts/s", "queries/s", "avg xact (ms)", "avg query (ms)",
          "avg wait (ms)", "received", "sent", "logins"},
         1);
  for (auto& [db, sum] : per_db) {
    const PoolStats& tot = sum.totals();
    PoolStats avg = sum.averages();
    h.raw("<tr class=\"stats\">");
    h.td(db);
    h.tdn(tot.xact_count);
    h.tdn(tot.query_count);
    h.tdn(avg.xact_count);
    h.tdn(avg.query_count);
    h.tdn(fmt_ms(avg.xact_time));
    h.tdn(fmt_ms(avg.query_time));
    h.tdn(fmt_ms(avg.wait_time));
    h.tdn(fmt_bytes(tot.received));
    h.tdn(fmt_bytes(tot.sent));
    h.tdn(tot.client_login_count);
    h.raw("</tr>\n");
  }
  if (per_db.empty()) h.empty_row(11, "no statistics yet");
  h.end_table();

  // Clusters, as SHOW CLUSTERS.
  h.raw("<h2>Clusters</h2>");
  h.head({"cluster", "active", "mode", "primary", "primary state", "standby", "standby state", "failovers",
          "last failover", "last duration (s)"},
         7);
  bool any_cluster = false;
  for (auto& [name, cl] : clusters) {
    if (cl->removed) continue;
    any_cluster = true;
    const config::Cluster& cc = *cl->cfg;
    h.raw("<tr class=\"cluster\" data-cluster=\"");
    h.text(name);
    h.raw("\">");
    h.td(name);
    h.td(cl->active_standby() ? "standby" : "primary");
    h.td(cc.standby ? cl->fsm.mode_name() : std::string("normal"));
    h.td(cc.primary.host + ":" + std::to_string(cc.primary.port));
    h.td_badge(cc.standby ? to_string(cl->state(0)) : "unchecked");
    if (cc.standby) {
      h.td(cc.standby->host + ":" + std::to_string(cc.standby->port));
      h.td_badge(to_string(cl->state(1)));
    } else {
      h.td("");
      h.td("");
    }
    h.tdn(cl->failovers);
    h.tdn(fmt_utc(cl->last_failover_wall));
    h.tdn(cl->last_failover_wall ? ms_to_s(cl->last_failover_ms) : std::string());
    h.raw("</tr>\n");
  }
  if (!any_cluster) h.empty_row(10, "no clusters configured");
  h.end_table();

  // Recent failovers, newest first, as SHOW FAILOVERS.
  h.raw("<h2>Recent failovers</h2>");
  h.head({"cluster", "kind", "started", "moved to", "result", "duration (s)", "clients held", "client errors"}, 5);
  std::size_t shown = 0;
  for (auto it = flog.rbegin(); it != flog.rend() && shown < kPageFailovers; ++it, ++shown) {
    const FailoverEvent& ev = *it;
    h.raw("<tr class=\"failover\">");
    h.td(ev.cluster);
    h.td(ev.kind);
    h.td(fmt_utc(ev.start_wall));
    h.td(ev.to);
    h.td(ev.result);
    h.tdn(ms_to_s(ev.duration_ms));
    h.tdn(std::uint64_t(std::max(ev.clients_held, 0)));
    h.tdn(std::uint64_t(std::max(ev.client_errors, 0)));
    h.raw("</tr>\n");
  }
  if (!shown) h.empty_row(8, "no failovers since pgpivot started");
  h.end_table();
  h.raw("\n</body></html>\n");
  return out;
}

}  // namespace pgpivot
