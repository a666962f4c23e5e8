// The fleet's keys as JSON and the quorum rule (fleet.hpp).
#include "pooler/failover/fleet.hpp"

#include <nlohmann/json.hpp>

namespace pgpivot::failover {

using json = nlohmann::json;

namespace {

std::optional<Verdict> parse_verdict(const std::string& s) {
  for (Verdict v : {Verdict::Unknown, Verdict::Up, Verdict::ReadOnly, Verdict::Down, Verdict::Misconfigured})
    if (s == to_string(v)) return v;
  return std::nullopt;
}

int parse_side(const json& j) {
  if (!j.is_string()) return -1;
  auto s = j.get<std::string>();
  return s == "primary" ? 0 : s == "standby" ? 1 : -1;
}

template <class F>
bool guarded(std::string_view text, F&& f) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  try {
    return f(j);
  } catch (const json::exception&) {
    return false;
  }
}

}  // namespace

std::optional<Op> parse_op(std::string_view s) {
  for (Op op : {Op::Failover, Op::Switchover, Op::Failback})
    if (s == to_string(op)) return op;
  return std::nullopt;
}

std::string encode(const ActiveKey& k) {
  json j = {{"active", side_name(k.active)}, {"epoch", k.epoch}};
  if (k.move) {
    j["move"] = {{"op", to_string(k.move->op)},
                 {"target", side_name(k.move->target)},
                 {"by", k.move->by},
                 {"id", k.move->id},
                 {"started", k.move->started_wall}};
  }
  return j.dump();
}

bool decode(std::string_view text, ActiveKey& out) {
  return guarded(text, [&](const json& j) {
    ActiveKey k;
    k.exists = true;
    k.active = parse_side(j.at("active"));
    k.epoch = j.at("epoch").get<std::uint64_t>();
    if (k.active < 0 || k.epoch == 0) return false;
    if (j.contains("move") && !j["move"].is_null()) {
      const json& m = j["move"];
      MoveIntent mi;
      auto op = parse_op(m.at("op").get<std::string>());
      mi.target = parse_side(m.at("target"));
      if (!op || mi.target < 0) return false;
      mi.op = *op;
      mi.by = m.at("by").get<std::string>();
      mi.id = m.at("id").get<std::string>();
      mi.started_wall = m.value("started", 0.0);
      k.move = mi;
    }
    k.mod_revision = out.mod_revision;
    out = k;
    return true;
  });
}

std::string encode(const InstanceView& v) {
  return json{{"name", v.name},
              {"epoch", v.epoch},
              {"active", side_name(v.active)},
              {"primary", to_string(v.verdict[0])},
              {"standby", to_string(v.verdict[1])},
              {"down", v.down},
              {"ack", v.ack},
              {"drained", v.drained}}
      .dump();
}

bool decode(std::string_view text, InstanceView& out) {
  return guarded(text, [&](const json& j) {
    InstanceView v;
    v.name = j.at("name").get<std::string>();
    v.epoch = j.at("epoch").get<std::uint64_t>();
    v.active = parse_side(j.at("active"));
    auto p = parse_verdict(j.at("primary").get<std::string>());
    auto s = parse_verdict(j.at("standby").get<std::string>());
    if (v.active < 0 || !p || !s) return false;
    v.verdict[0] = *p;
    v.verdict[1] = *s;
    v.down = j.at("down").get<bool>();
    v.ack = j.value("ack", std::string());
    v.drained = j.value("drained", false);
    out = std::move(v);
    return true;
  });
}

std::string encode(const Request& r) {
  return json{{"op", r.abort ? "abort" : to_string(r.op)}, {"from", r.from}, {"id", r.id}}.dump();
}

bool decode(std::string_view text, Request& out) {
  return guarded(text, [&](const json& j) {
    Request r;
    auto op = j.at("op").get<std::string>();
    if (op == "abort") {
      r.abort = true;
    } else if (auto o = parse_op(op)) {
      r.op = *o;
    } else {
      return false;
    }
    r.from = j.at("from").get<std::string>();
    r.id = j.at("id").get<std::string>();
    out = std::move(r);
    return true;
  });
}

Quorum quorum(const std::vector<InstanceView>& views, int active, std::uint64_t epoch) {
  Quorum q;
  q.live = int(views.size());
  for (const auto& v : views)
    if (v.down && v.active == active && v.epoch == epoch) q.down++;
  q.ok = q.live > 0 && 2 * q.down > q.live;
  if (!q.ok)
    q.why = std::to_string(q.down) + " of " + std::to_string(q.live) + " live instances see the " + side_name(active) +
            " down; a majority must";
  return q;
}

bool all_acked(const std::vector<InstanceView>& views, const std::string& self, const std::string& id, bool drained) {
  for (const auto& v : views) {
    if (v.name == self) continue;
    if (v.ack != id || (drained && !v.drained)) return false;
  }
  return true;
}

const char* to_string(Link l) {
  switch (l) {
    case Link::Off: return "off";
    case Link::Connecting: return "connecting";
    case Link::Ok: return "ok";
    case Link::Lost: return "lost";
  }
  return "?";
}

}  // namespace pgpivot::failover
