// The HTTP stats endpoint on stats_listen (http.cpp): GET /metrics (metrics.cpp)
// and /stats (stats_page.cpp), served from worker 0's loop.
#pragma once

#include <memory>

namespace pgpivot {

class Pooler;
struct HttpServer;
struct HttpServerDeleter {
  void operator()(HttpServer* h) const;
};
using HttpEndpoint = std::unique_ptr<HttpServer, HttpServerDeleter>;

// Listens on `p`'s stats_listen (nothing when it is empty); false, logged, when it
// is set but cannot be bound.
[[nodiscard]] bool http_start(HttpEndpoint& h, Pooler& p);
// Stops accepting; with `connections`, drops open requests too.
void http_close(HttpEndpoint& h, bool connections);

}  // namespace pgpivot
