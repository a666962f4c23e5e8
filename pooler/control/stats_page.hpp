// GET /stats (control/stats_page.cpp): the HTML status page.
#pragma once

#include <string>

namespace pgpivot {

class Pooler;

// Every worker's figures; call with the world stopped (workers/hub.hpp).
std::string render_stats_page(Pooler& pooler);

}  // namespace pgpivot
