// The failover safety tests' helpers (issue 14), shared by test_failover_safety.cpp
// and test_failover_safety_clients.cpp on top of failover_fixture.hpp: a
// promote_command that fails, hangs or promotes on demand, the pooler config the
// safety tests start from, rows counted per node, and SHOW FAILOVERS.
// (An anonymous namespace: each test file gets its own copy.)
#pragma once

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "failover_fixture.hpp"

namespace {

// A promote_command that does what the file `<base>/promote-mode` says: "fail"
// (exit 1), "hang" (sleep 6001, never returns), anything else: promote (PgPair's
// script). Every run is logged in promote.log as PgPair::promote_runs() reads it.
std::string controllable_promote(PgPair& pair) {
  std::string real = pair.promote_script();
  std::string path = pair.base + "/promote-ctl.sh";
  std::string log = sh_quote(pair.base + "/promote.log");
  std::ofstream out(path);
  out << "#!/bin/sh\n"
      << "mode=$(cat " << sh_quote(pair.base + "/promote-mode") << " 2>/dev/null)\n"
      << "case \"$mode\" in\n"
      << "  fail) echo \"start $(date +%s.%N) mode=fail\" >>" << log << "; echo \"end $(date +%s.%N) rc=1\" >>" << log
      << "; exit 1 ;;\n"
      << "  hang) echo \"start $(date +%s.%N) mode=hang\" >>" << log << "; sleep 6001; exit 0 ;;\n"
      << "  die) echo \"start $(date +%s.%N) mode=die\" >>" << log << "; runuser -u postgres -- " << kPgBin
      << "/pg_ctl stop -m immediate -D " << sh_quote(pair.standby_dir) << " >/dev/null 2>&1; echo \"end $(date +%s.%N) rc=0\" >>"
      << log << "; exit 0 ;;\n"
      << "esac\n"
      << "exec " << sh_quote(real) << "\n";
  out.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

[[maybe_unused]] void set_promote_mode(PgPair& pair, const std::string& mode) {
  std::ofstream(pair.base + "/promote-mode") << mode << "\n";
}

PoolerConfig safety_pooler(PgPair& pair, const std::string& more_failover = "", int primary_port_in_config = 0) {
  PoolerConfig cfg = failover_pooler(pair, 5, primary_port_in_config);
  cfg.failover = failover_toml(controllable_promote(pair));
  if (!more_failover.empty()) cfg.failover += "\n" + more_failover;
  cfg.extra["query_wait_timeout"] = "4";
  return cfg;
}

long count_rows(int port, const std::string& where = "true") {
  bool ok = false;
  std::string v = node_value(port, "SELECT count(*) FROM fo_log WHERE " + where, &ok);
  return ok ? std::atol(v.c_str()) : -1;
}

bool in_recovery(int port) { return node_value(port, "SELECT pg_is_in_recovery()") == "t"; }

// SHOW FAILOVERS as rows.
std::vector<Row> failover_events(const Pooler& p) {
  Result r = admin_exec(p, "SHOW FAILOVERS");
  return r.ok() ? rows_of(r) : std::vector<Row>{};
}

std::string events_text(const Pooler& p) {
  std::string s;
  for (auto& e : failover_events(p)) s += row_text(e) + "\n";
  return s.empty() ? "(none)" : s;
}

}  // namespace
