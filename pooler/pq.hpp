// libpq, loaded at run time: health checks (cluster.cpp) and `pgpivot ctl` are its
// only users, and linking it would map libpq with GnuTLS, Kerberos, LDAP, SASL,
// p11-kit and friends (~2.5 MB resident, GnuTLS initializing itself at load time)
// into every pgpivot, also one without clusters. <libpq-fe.h> is included for its
// types and declarations only; nothing here calls libpq directly.
#pragma once

#include <libpq-fe.h>

#include <string>

namespace pgpivot {

#define PGPIVOT_PQ_FUNCTIONS(X) \
  X(PQconnectStart)             \
  X(PQconnectPoll)              \
  X(PQconnectdb)                \
  X(PQsocket)                   \
  X(PQstatus)                   \
  X(PQerrorMessage)             \
  X(PQsetnonblocking)           \
  X(PQsendQuery)                \
  X(PQflush)                    \
  X(PQisBusy)                   \
  X(PQconsumeInput)             \
  X(PQgetResult)                \
  X(PQexec)                     \
  X(PQresultStatus)             \
  X(PQresultErrorMessage)       \
  X(PQresultErrorField)         \
  X(PQsetErrorVerbosity)        \
  X(PQgetisnull)                \
  X(PQntuples)                  \
  X(PQnfields)                  \
  X(PQfname)                    \
  X(PQgetvalue)                 \
  X(PQclear)                    \
  X(PQconninfo)                 \
  X(PQconninfoFree)             \
  X(PQfinish)

// The functions pgpivot uses, resolved with dlsym.
struct PqApi {
#define PGPIVOT_PQ_MEMBER(name) decltype(&::name) name = nullptr;
  PGPIVOT_PQ_FUNCTIONS(PGPIVOT_PQ_MEMBER)
#undef PGPIVOT_PQ_MEMBER
};

// Loads libpq.so.5 (RTLD_NOW | RTLD_LOCAL) on the first call. nullptr when it
// cannot be loaded or lacks a function; then *error (if given) says why, and
// every later call answers the same without trying again.
const PqApi* libpq(std::string* error = nullptr);

}  // namespace pgpivot
