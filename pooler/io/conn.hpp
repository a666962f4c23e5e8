// One side of a proxied conversation (Conn): socket, read buffer, output queue,
// TLS; the I/O layer under both Client and Server (io/conn.cpp, io/tls.cpp).
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pooler/io/buffers.hpp"

typedef struct ssl_ctx_st SSL_CTX;  // OpenSSL's, declared as <openssl/types.h> does

namespace pgpivot {

class Pooler;
struct TlsConn;
struct TlsDeleter {
  void operator()(TlsConn* t) const;
};

using Ms = std::uint64_t;  // uv_now() milliseconds
// A duration from the config (seconds) in milliseconds; 0 (off) for s <= 0.
inline Ms secs(double s) { return s <= 0 ? 0 : Ms(s * 1000.0); }

// What a message handler decides for the message whose header was just seen.
enum class Step {
  Forward,  // stream the whole message to the peer
  Skip,     // drop the whole message
  Inspect,  // the whole message must be in the buffer; call on_message
  Hold,     // stop processing here (e.g. waiting for a server); keep the bytes
  Stop,     // the connection was closed or paused; stop processing
};

// An IPv4/IPv6 socket address in 20 bytes ("unix" for Unix-socket peers).
struct NetAddr {
  std::uint8_t family = 0;  // AF_INET, AF_INET6, AF_UNIX or 0 (unknown)
  std::uint16_t port = 0;
  std::uint8_t ip[16]{};
  void set(const sockaddr_storage& ss);
  [[nodiscard]] std::string host() const;
  [[nodiscard]] std::string str() const;  // "host:port", or "unix"
};

// One side of a proxied conversation: a socket, a lazily held read buffer, and
// an output queue that mixes bytes pgpivot generated with bytes borrowed from the
// peer's read buffer (forwarded without copying).
//
// The socket is watched with a uv_poll_t (160 bytes, against 264 for a libuv
// stream) and read and written with plain syscalls: pgpivot decides when and how
// much to read, and an idle client costs little more than this object.
struct Conn {
  union {
    uv_handle_t handle;
    uv_poll_t poll;
  } h{};
  Pooler* pooler = nullptr;
  std::uint64_t id = 0;
  int fd = -1;               // the socket; closed in the poll handle's close callback
  std::uint8_t events = 0;   // UV_READABLE / UV_WRITABLE being watched
  bool is_client = false;
  bool unix_sock = false;    // a Unix-domain socket
  bool connecting = false;   // non-blocking connect() in progress
  bool closing = false;      // uv_close called (or a deferred free); freed in the close callback
  bool reading = false;      // UV_READABLE watched
  bool want_read = true;     // false while held or blocked
  bool stream_hint = false;  // the last read took a whole block: read into a stream buffer next
  bool wbusy = false;        // an asynchronous write is in flight
  bool in_process = false;
  bool dirty = false;        // on the pooler's flush list
  bool exiting = false;      // inside the connection's exit path

  // Read side. Bytes [rpos, rend) are unconsumed; [rpos, rparse) were handled
  // but are borrowed by the peer's in-flight write.
  char* rbuf = nullptr;
  std::uint32_t rcap = 0;
  std::uint32_t rpos = 0, rparse = 0, rend = 0;
  std::uint32_t fwd_left = 0;   // bytes of the current message still to forward
  std::uint32_t skip_left = 0;  // bytes of the current message still to drop
  Conn* borrowed_by = nullptr;  // the peer whose write holds our bytes

  // Write side: everything lives in an OutQ taken from the pooler's free list
  // while output is pending and given back when it drains, so an idle
  // connection holds no output state (and a busy one allocates nothing per flush).
  struct Seg {
    const char* ptr;    // borrowed bytes, or nullptr for own bytes
    std::uint32_t off;  // offset into `out` for own bytes
    std::uint32_t len;
  };
  struct OutQ;
  OutQ* oq = nullptr;
  Conn* waiting_on = nullptr;      // the writer we wait for (we are its waiting_src)

  Ms connect_time = 0;
  Ms request_time = 0;  // last activity

  virtual ~Conn() = default;
  // Header seen: decide what to do with the message.
  virtual Step on_header(char type, std::uint32_t wire_size) = 0;
  // Whole message available (for Step::Inspect). data points at the type byte.
  virtual Step on_message(const char* data, std::uint32_t wire_size) = 0;
  // Bytes are forwarded to this peer; nullptr means drop.
  virtual Conn* peer() = 0;
  virtual void on_closed() = 0;       // socket error/EOF: run the connection's exit path
  virtual void after_forward() {}     // called after an inspected message was forwarded
  virtual void on_pass_end() {}       // end of a process() pass
  // A single raw byte is expected instead of a message (the answer to SSLRequest).
  virtual bool raw_byte_mode() { return false; }
  virtual void on_raw_byte(char b) { (void)b; }
  virtual void on_tls_ready() {}
  virtual void on_tls_error(const std::string& why) { (void)why; on_closed(); }
  virtual void count_bytes(std::size_t n) { (void)n; }  // statistics hook for bytes read
  virtual bool startup_framing() { return false; }
  virtual Step on_startup(const char* data, std::uint32_t len) { (void)data; (void)len; return Step::Stop; }

  virtual void on_protocol_error(const char* what) = 0;

  // Socket I/O (conn.cpp).
  bool attach(int sock);                         // watch `sock` (non-blocking); false: closed it
  void set_events(int ev);
  void do_read();                                // readable: one read, then process()
  bool write_iov();                              // false when the connection closed
  void write_more();                             // writable: continue the pending write
  virtual void on_connect(int status) { (void)status; }
  void queue(std::string_view bytes);            // own bytes
  void queue_borrowed(const char* p, std::uint32_t n);
  void flush();                                  // try to write; may go async
  void on_drained();
  void flush_tls();
  void borrow_done();
  void process();                                // handle buffered input
  void process_once();
  void update_reading();
  void release_rbuf_if_empty();
  bool read_room(BufferPool& bp);                // a buffer with room to read into; false when full
  void ensure_room(std::uint32_t need);
  void free_buffers();
  [[nodiscard]] std::uint32_t max_packet() const;

  // TLS (tls.cpp): plaintext stays in rbuf/segs; ciphertext goes through OpenSSL's memory BIOs.
  std::unique_ptr<TlsConn, TlsDeleter> tls;
  bool tls_start(SSL_CTX* ctx, bool accept, const std::string& verify_host, bool verify);
  bool tls_handshake();
  void tls_queue_cipher();
  void tls_input(const char* data, std::size_t n);
  bool tls_pump();
  [[nodiscard]] bool tls_has_pending() const;
  void tls_encrypt_queue();
  void tls_close_notify();
  [[nodiscard]] std::string tls_description() const;
  // After the handshake: the CommonName of the peer's verified certificate, read
  // from the SSL object when asked (nothing is kept per connection). nullopt when
  // the peer sent no certificate (or it did not verify); "" when it has no single
  // usable CommonName.
  [[nodiscard]] std::optional<std::string> tls_peer_common_name() const;
  [[nodiscard]] bool output_pending() const;
  OutQ& outq();                      // the output state, taken on first use
  [[nodiscard]] Conn* fwd_src() const;      // source whose bytes our queued/in-flight write borrows
  void maybe_release_outq();
  [[nodiscard]] std::size_t memory_use() const;
  void start_close();
};

// Output state of a connection with pending output (see Conn).
struct Conn::OutQ {
  std::string out;                      // own bytes not yet written
  std::vector<Seg> segs;                // pending output in order
  std::string out_inflight;             // own bytes of the in-flight write
  std::vector<uv_buf_t> bufs_inflight;  // iovec-compatible on Unix
  std::size_t wpos = 0;                 // first buffer of bufs_inflight not fully written
  Conn* fwd_src = nullptr;              // source whose rbuf our queued/in-flight write borrows
  Conn* waiting_src = nullptr;          // source that waits for our write to finish
  // Read buffers of sources closed while we still had their bytes queued; freed
  // when our output drains or we close.
  std::vector<std::pair<char*, std::uint32_t>> orphans;  // buffer, capacity
  std::string tls_cipher_out;           // TLS: ciphertext waiting to be written
  [[nodiscard]] bool idle() const {
    return out.empty() && segs.empty() && !fwd_src && !waiting_src && orphans.empty() && tls_cipher_out.empty();
  }
};

// Output queues on a free list: a connection takes one while it has output pending
// and gives it back when the output drains.
class OutQPool {
 public:
  explicit OutQPool(ReadBuffers& bufs) : bufs_(bufs) {}
  OutQPool(const OutQPool&) = delete;
  OutQPool& operator=(const OutQPool&) = delete;
  ~OutQPool();
  Conn::OutQ* take();
  void give(Conn::OutQ* q);  // also frees the orphaned read buffers it holds
  [[nodiscard]] std::size_t in_use() const { return in_use_; }
  [[nodiscard]] std::size_t free_count() const { return free_.size(); }

 private:
  ReadBuffers& bufs_;  // where orphaned read buffers go back
  std::vector<Conn::OutQ*> free_;
  std::size_t in_use_ = 0;
};

}  // namespace pgpivot
