// COPY streams through the pooler: 100 MB in and out, with the pooler's peak
// memory staying small (it must forward, not buffer whole).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "harness.hpp"

using namespace itest;

namespace {

constexpr size_t kTotalBytes = 100u * 1024 * 1024;
constexpr size_t kChunk = 64 * 1024;
constexpr long kMaxPeakPrivateKb = 8 * 1024;  // issue 17: peak private memory of a 100 MB COPY

// FNV-1a of one line; the sum over lines is independent of row order.
uint64_t line_hash(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

struct Digest {
  size_t bytes = 0;
  size_t rows = 0;
  uint64_t hash_sum = 0;
  std::string partial;  // a line split across chunks

  void feed(const char* data, size_t n) {
    bytes += n;
    size_t start = 0;
    for (size_t i = 0; i < n; ++i) {
      if (data[i] != '\n') continue;
      if (partial.empty()) {
        hash_sum += line_hash(data + start, i - start);
      } else {
        partial.append(data + start, i - start);
        hash_sum += line_hash(partial.data(), partial.size());
        partial.clear();
      }
      ++rows;
      start = i + 1;
    }
    partial.append(data + start, n - start);
  }
};

}  // namespace

TEST_CASE("100 MB COPY in and out through the pooler with a small peak of private memory", "[copy][memory]") {
  {
    Conn d(direct_conninfo());
    REQUIRE(d.ok());
    d.exec_ok("CREATE UNLOGGED TABLE IF NOT EXISTS itest_copy (id int, payload text)");
    d.exec_ok("GRANT ALL ON itest_copy TO app");
    d.exec_ok("TRUNCATE itest_copy");
  }
  PoolerConfig cfg;
  cfg.pool_mode = "transaction";
  cfg.default_pool_size = 2;
  Pooler p(cfg);
  Conn c(p.conninfo());
  REQUIRE(c.ok());
  PeakPrivate sampler(p.pid());

  // COPY FROM STDIN in 64 KiB chunks; rows of ~1 KiB cross chunk boundaries.
  Result start = c.exec("COPY itest_copy FROM STDIN");
  INFO("COPY FROM: " << start.message());
  REQUIRE(start.status() == PGRES_COPY_IN);
  Digest sent;
  std::string buf;
  buf.reserve(kChunk + 2048);
  std::string payload(1000, 'x');
  for (size_t id = 0; sent.bytes + buf.size() < kTotalBytes; ++id) {
    for (size_t i = 0; i < payload.size(); i += 97) payload[i] = static_cast<char>('a' + (id + i) % 26);
    buf += std::to_string(id);
    buf += '\t';
    buf += payload;
    buf += '\n';
    while (buf.size() >= kChunk) {
      REQUIRE(PQputCopyData(c, buf.data(), static_cast<int>(kChunk)) == 1);
      sent.feed(buf.data(), kChunk);
      buf.erase(0, kChunk);
    }
  }
  if (!buf.empty()) {
    REQUIRE(PQputCopyData(c, buf.data(), static_cast<int>(buf.size())) == 1);
    sent.feed(buf.data(), buf.size());
  }
  REQUIRE(PQputCopyEnd(c, nullptr) == 1);
  Result done = c.next_result(120);
  INFO("COPY FROM end: " << done.message());
  REQUIRE(done.status() == PGRES_COMMAND_OK);
  CHECK(std::stoul(PQcmdTuples(done.get())) == sent.rows);
  REQUIRE_FALSE(c.next_result(10).get());

  // COPY TO STDOUT: same bytes back.
  Result out = c.exec("COPY itest_copy TO STDOUT");
  INFO("COPY TO: " << out.message());
  REQUIRE(out.status() == PGRES_COPY_OUT);
  Digest received;
  for (;;) {
    char* data = nullptr;
    int n = PQgetCopyData(c, &data, 0);
    if (n < 0) break;
    received.feed(data, static_cast<size_t>(n));
    PQfreemem(data);
  }
  Result out_done = c.next_result(60);
  INFO("COPY TO end: " << out_done.message());
  REQUIRE(out_done.status() == PGRES_COMMAND_OK);
  REQUIRE_FALSE(c.next_result(10).get());

  CHECK(sent.bytes >= kTotalBytes);
  CHECK(received.rows == sent.rows);
  CHECK(received.bytes == sent.bytes);
  CHECK(received.hash_sum == sent.hash_sum);
  CHECK(c.value("SELECT count(*) FROM itest_copy") == std::to_string(sent.rows));

  long peak = sampler.peak();
  long rss = p.peak_rss_kb();
  INFO("pooler peak private memory (Anonymous) " << peak << " KiB; peak RSS (VmHWM, shared libraries included) "
                                                  << rss << " KiB");
  REQUIRE(peak > 0);
  if (!kSanitizedBuild) CHECK(peak < kMaxPeakPrivateKb);
}
