// Run-time loading of libpq (see pq.hpp).
#include "pooler/pq.hpp"

#include <dlfcn.h>

#include <cstdlib>

namespace pgpivot {

namespace {

struct Loaded {
  PqApi api;
  bool ok = false;
  std::string error;
};

Loaded load() {
  Loaded l;
  // libpq links libldap, which links GnuTLS; GnuTLS initializes itself (and reads
  // its system configuration and p11-kit modules) in a load-time constructor unless
  // this is set. pgpivot never uses LDAP or GnuTLS, libpq's own TLS is OpenSSL.
  // The variable is removed again right away when pgpivot set it, so that hooks
  // (promote_command, ...) do not inherit it.
  const bool set_here = std::getenv("GNUTLS_NO_IMPLICIT_INIT") == nullptr;
  if (set_here) setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0);
  void* h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
  if (set_here) unsetenv("GNUTLS_NO_IMPLICIT_INIT");
  if (!h) {
    const char* e = dlerror();
    l.error = std::string("cannot load libpq: ") + (e ? e : "dlopen(\"libpq.so.5\") failed");
    return l;
  }
#define PGPIVOT_PQ_RESOLVE(name)                                                     \
  l.api.name = reinterpret_cast<decltype(&::name)>(dlsym(h, #name));                 \
  if (!l.api.name) {                                                                 \
    l.error = "cannot load libpq: libpq.so.5 has no function " #name;                \
    dlclose(h);                                                                      \
    return l;                                                                        \
  }
  PGPIVOT_PQ_FUNCTIONS(PGPIVOT_PQ_RESOLVE)
#undef PGPIVOT_PQ_RESOLVE
  l.ok = true;  // never unloaded: libpq registers atexit handlers and thread keys
  return l;
}

}  // namespace

const PqApi* libpq(std::string* error) {
  static const Loaded loaded = load();
  if (!loaded.ok) {
    if (error) *error = loaded.error;
    return nullptr;
  }
  return &loaded.api;
}

}  // namespace pgpivot
