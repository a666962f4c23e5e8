// Unit tests of the registry (pooler/registry.hpp): which database and user a
// login finds, what RELOAD does to them, and the effective per-pool settings (a
// user's value, else the database's, else [pooler]'s). No loop, no socket.
#include <catch2/catch.hpp>

#include "pooler/registry.hpp"
#include "pooler/workers/hub.hpp"

using namespace pgpivot;

namespace {

config::Config base() {
  config::Config c;
  c.clusters["main"].name = "main";
  c.clusters["main"].primary.port = 55432;
  c.databases["appdb"].name = "appdb";
  c.databases["appdb"].cluster = "main";
  c.users["app"].name = "app";
  c.users["app"].password = "app";
  return c;
}

struct Fixture {
  config::Config cfg = base();
  Hub hub{1};
  Registry reg{cfg, nullptr, hub, 0};
  std::map<std::string, std::pair<config::Node, std::optional<config::Node>>> old_nodes;
  Fixture() { reg.apply(old_nodes); }
  void reload(config::Config next) {
    old_nodes.clear();
    for (const auto& [name, cl] : cfg.clusters) old_nodes[name] = {cl.primary, cl.standby};
    cfg = std::move(next);
    reg.apply(old_nodes);
  }
};

}  // namespace

TEST_CASE("registry: databases by name, the \"*\" fallback, and what RELOAD removes", "[registry]") {
  Fixture f;
  REQUIRE(f.reg.find_db("appdb"));
  CHECK(f.reg.find_db("appdb")->cluster == &f.cfg.clusters.at("main"));
  CHECK(f.reg.find_db("other") == nullptr);
  CHECK(f.reg.db("other") == nullptr);

  config::Config next = base();
  next.databases["*"].name = "*";
  next.databases["*"].cluster = "main";
  f.reload(next);
  DbEntry* appdb = f.reg.find_db("appdb");
  REQUIRE(appdb);
  REQUIRE(f.reg.find_db("other"));
  CHECK(f.reg.find_db("other")->cfg.name == "*");
  CHECK(f.reg.db("other") == nullptr);  // the console names databases exactly

  // appdb leaves the file: its entry stays (pools point at it) but is not found.
  next.databases.erase("appdb");
  f.reload(next);
  CHECK(f.reg.db("appdb") == nullptr);
  CHECK(f.reg.find_db("appdb")->cfg.name == "*");
  CHECK(f.reg.dbs().at("appdb").get() == appdb);
  CHECK(appdb->removed);

  // A database whose cluster does not exist is found by nobody.
  next = base();
  next.databases["appdb"].cluster = "gone";
  f.reload(next);
  CHECK(f.reg.find_db("appdb") == nullptr);
}

TEST_CASE("registry: users, forced users and a rotated password", "[registry]") {
  Fixture f;
  UserEntry* app = f.reg.find_user("app");
  REQUIRE(app);
  CHECK(f.reg.find_user("nobody") == nullptr);

  // A forced user known only from the database entry is made from its password;
  // a configured one is the configured entry.
  config::Config next = base();
  next.databases["appdb"].user = "owner";
  next.databases["appdb"].password = "secret";
  f.reload(next);
  UserEntry* owner = f.reg.forced_user(*f.reg.find_db("appdb"));
  CHECK(owner->cfg.password == "secret");
  CHECK(f.reg.forced_user(*f.reg.find_db("appdb")) == owner);
  next.databases["appdb"].user = "app";
  f.reload(next);
  CHECK(f.reg.forced_user(*f.reg.find_db("appdb")) == app);

  // A new password forgets what was derived from the old one.
  app->secret = proto::ScramSecret{};
  app->client_key = proto::Key32{};
  next.users["app"].password = "rotated";
  f.reload(next);
  CHECK(f.reg.find_user("app") == app);
  CHECK_FALSE(app->secret);
  CHECK_FALSE(app->client_key);
  // The same password keeps them.
  app->secret = proto::ScramSecret{};
  f.reload(next);
  CHECK(app->secret);

  next.users.erase("app");
  f.reload(next);
  CHECK(f.reg.find_user("app") == nullptr);
}

TEST_CASE("registry: a pool per (database, user), made once", "[registry]") {
  Fixture f;
  DbEntry* db = f.reg.find_db("appdb");
  UserEntry* u = f.reg.find_user("app");
  Pool* p = f.reg.get_pool(db, "appdb", u, "app");
  CHECK(f.reg.get_pool(db, "appdb", u, "app") == p);
  CHECK(p->server_db == "appdb");
  CHECK(p->shared == f.hub.pool_count("appdb", "app"));
  Pool* other = f.reg.get_pool(db, "appdb", u, "admin");
  CHECK(other != p);
  int n = 0;
  f.reg.each_pool([&](Pool*) { n++; });
  CHECK(n == 2);
  f.cfg.databases["appdb"].dbname = "real";
  config::Config next = f.cfg;
  f.reload(next);
  CHECK(f.reg.get_pool(db, "x", u, "app")->server_db == "real");
}

TEST_CASE("registry: effective settings: the user's, else the database's, else [pooler]'s", "[registry]") {
  Fixture f;
  config::Config next = base();
  next.pooler.default_pool_size = 20;
  next.pooler.reserve_pool_size = 1;
  next.pooler.min_pool_size = 2;
  next.pooler.pool_mode = config::PoolMode::Transaction;
  next.pooler.max_db_connections = 0;
  next.pooler.max_user_connections = 0;
  f.reload(next);
  Pool* p = f.reg.get_pool(f.reg.find_db("appdb"), "appdb", f.reg.find_user("app"), "app");
  CHECK(f.reg.pool_size(p) == 20);
  CHECK(f.reg.reserve_size(p) == 1);
  CHECK(f.reg.min_pool_size(p) == 2);
  CHECK(f.reg.pool_mode(p) == config::PoolMode::Transaction);
  CHECK(f.reg.slots(p) == 20);

  next.databases["appdb"].pool_size = 10;
  next.databases["appdb"].reserve_pool_size = 3;
  next.databases["appdb"].min_pool_size = 4;
  next.databases["appdb"].pool_mode = config::PoolMode::Session;
  f.reload(next);
  CHECK(f.reg.pool_size(p) == 10);
  CHECK(f.reg.reserve_size(p) == 3);
  CHECK(f.reg.min_pool_size(p) == 4);
  CHECK(f.reg.pool_mode(p) == config::PoolMode::Session);

  next.users["app"].pool_size = 5;
  next.users["app"].reserve_pool_size = 0;
  next.users["app"].pool_mode = config::PoolMode::Statement;
  f.reload(next);
  CHECK(f.reg.pool_size(p) == 5);
  CHECK(f.reg.reserve_size(p) == 0);
  CHECK(f.reg.pool_mode(p) == config::PoolMode::Statement);
  CHECK(f.reg.slots(p) == 5);

  // The slots are the smallest of pool_size and the database's and user's caps (0 = none).
  next.pooler.max_db_connections = 3;
  f.reload(next);
  CHECK(f.reg.max_db_connections(p) == 3);
  CHECK(f.reg.slots(p) == 3);
  next.databases["appdb"].max_db_connections = 0;  // the database's own "none" wins over [pooler]'s
  next.users["app"].max_user_connections = 2;
  f.reload(next);
  CHECK(f.reg.max_db_connections(p) == 0);
  CHECK(f.reg.max_user_connections(p) == 2);
  CHECK(f.reg.slots(p) == 2);
}

TEST_CASE("registry: an unknown user's fake SCRAM secret is stable and unusable", "[registry]") {
  Fixture f;
  proto::ScramSecret a = f.reg.fake_secret("ghost"), b = f.reg.fake_secret("ghost");
  proto::ScramSecret c = f.reg.fake_secret("phantom");
  CHECK(a.salt.size() == 16);
  CHECK(a.salt == b.salt);  // the same salt at every attempt, as a real user's
  CHECK(a.salt != c.salt);
  CHECK(a.iterations == 4096);
  CHECK(a.stored_key != b.stored_key);  // no fixed key anyone could learn
  // Another worker (same hub) answers with the same salt.
  Registry other(f.cfg, nullptr, f.hub, 1);
  CHECK(other.fake_secret("ghost").salt == a.salt);
}
