// Health checks of cluster nodes (health.cpp): the narrow interface the cluster code uses.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.hpp"

namespace pgpivot {

class Pooler;
struct ClusterRt;
struct HealthCheck;

// witness_only: the check runs witness_query and lag_query on a connection with
// witness_options (CockroachDB: the system virtual cluster).
HealthCheck* new_health_check(Pooler* p, ClusterRt* cl, int side, bool witness_only);
void health_check_start(HealthCheck* h);
void health_check_drop(HealthCheck* h);  // settings changed: reconnect at the next check
void health_check_timeout(HealthCheck* h, std::uint64_t now_us, double timeout_s);

// The user, password and dbname the pools use for `cluster` (empty user: none with a
// plain-text password), for nodes that carry no monitor credentials of their own.
void health_credentials(const config::Config& cfg, const std::string& cluster, std::string& user,
                        std::string& password, std::string& dbname);

}  // namespace pgpivot
