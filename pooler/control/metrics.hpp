// GET /metrics (control/metrics.cpp): the Prometheus text format of what the console shows.
#pragma once

#include <cstdint>
#include <string>

namespace pgpivot {

class Pooler;

// Every worker's figures; call with the world stopped (workers/hub.hpp).
std::string render_metrics(Pooler& pooler);
// Milliseconds as seconds with three decimals ("1.250"), as Prometheus counts time.
std::string ms_to_s(std::uint64_t ms);

}  // namespace pgpivot
