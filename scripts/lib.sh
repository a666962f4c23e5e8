# Shared shell helpers for scripts/quickstart and scripts/test: installing the
# Debian packages, building, and throwaway PostgreSQL 15 clusters. Source it.
# shellcheck shell=bash

PGPIVOT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# What a fresh Debian 12 lacks to build and test pgpivot. scripts/fuzz builds with
# clang 16 (clang 14 cannot compile config/load.cpp: captured structured bindings);
# llvm brings llvm-symbolizer for readable sanitizer stacks. The [metrics] tests lint
# /metrics with promtool (package prometheus; it also installs a prometheus service,
# which apt starts where systemd runs) and screenshot /stats with headless chromium.
# A fresh Debian 12 also lacks what these bring: build-essential (dpkg-buildpackage
# checks for it), ca-certificates (PgBouncer's client TLS loads the default CA file
# and fails without it), man-db (test-package renders the man pages). [coordination]
# talks to etcd through libcurl and reads its JSON with nlohmann-json; the [fleet] and
# [patroni] tests start Debian's etcd (etcd-server; etcdctl is in etcd-client) and Patroni.
PGPIVOT_PACKAGES=(g++ pkg-config meson ninja-build libuv1-dev libtomlplusplus-dev libpq-dev
                  libssl-dev libsystemd-dev libcurl4-openssl-dev nlohmann-json3-dev etcd-server etcd-client patroni
                  catch2 build-essential ca-certificates debhelper dpkg-dev man-db postgresql pgbouncer clang libclang-rt-14-dev
                  clang-16 libclang-rt-16-dev llvm prometheus chromium python3-matplotlib)

log() { printf '[pgpivot] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the packages that are missing; apt-get update only when something is.
ensure_packages() {
  local missing=() p
  for p in "${PGPIVOT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 binaries not found in $PG_BIN"
}

# Configures build/ on first use (or when it is unusable), then builds incrementally.
build() {
  cd "$PGPIVOT_ROOT" || return 1
  if [ ! -f build/build.ninja ]; then
    if [ -d build/meson-private ]; then
      meson setup --wipe build --buildtype=debugoptimized || return 1
    else
      meson setup build --buildtype=debugoptimized || return 1
    fi
  fi
  ninja -C build
}

# From / : the caller's directory may be one postgres cannot enter (a checkout under /root).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# Where scratch directories go: .scratch/ in the repository, unless the postgres
# user cannot reach it (a checkout under /root, say) or the path is too long for
# PostgreSQL's Unix socket (108 bytes); then a directory under /tmp.
scratch_root() {
  local dir="$PGPIVOT_ROOT/.scratch"
  if [ ${#dir} -gt 70 ] || ! runuser -u postgres -- test -x "$PGPIVOT_ROOT" 2>/dev/null; then
    dir="/tmp/pgpivot-scratch-$(printf '%s' "$PGPIVOT_ROOT" | md5sum | cut -c1-8)"
  fi
  mkdir -p "$dir"
  chmod 0755 "$dir"
  printf '%s\n' "$dir"
}

# A directory that PostgreSQL (running as postgres) may own: owner postgres, 0700,
# and the same for its parent. Every ancestor above must be traversable by postgres.
pg_prepare_dir() {
  local dir="$1" parent
  parent="$(dirname "$dir")"
  mkdir -p "$dir"
  chown postgres:postgres "$parent" "$dir"
  chmod 0700 "$parent" "$dir"
  as_postgres test -w "$dir" || die "postgres cannot reach $dir (check the permissions of its ancestors)"
}

# Writes the settings of throwaway clusters to DIR/pgpivot.conf and makes
# postgresql.conf include it (a standby copies the include from its primary).
_pg_configure() {
  local dir="$1" port="$2" sockdir
  sockdir="$(dirname "$dir")"
  cat >"$dir/pgpivot.conf" <<EOF
# Written by scripts/lib.sh for a throwaway test cluster; rewritten on every start.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 5
hot_standby = on
logging_collector = off
EOF
  chown postgres:postgres "$dir/pgpivot.conf"
  grep -q "^include_if_exists = 'pgpivot.conf'" "$dir/postgresql.conf" ||
    echo "include_if_exists = 'pgpivot.conf'" >>"$dir/postgresql.conf"
  cat >"$dir/pg_hba.conf" <<'EOF'
# Written by scripts/lib.sh for a throwaway test cluster.
host    replication  postgres  127.0.0.1/32  trust
local   all          all                     trust
host    all          postgres  127.0.0.1/32  trust
host    all          md5user   127.0.0.1/32  md5
host    all          all       127.0.0.1/32  scram-sha-256
EOF
  chown postgres:postgres "$dir/pg_hba.conf"
}

_pg_running() { [ -f "$1/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" status -D "$1" >/dev/null 2>&1; }

_pg_ctl_start() {
  local dir="$1"
  if _pg_running "$dir"; then
    as_postgres "$PG_BIN/pg_ctl" restart -D "$dir" -m fast -w -t 60 -l "$dir.log" >/dev/null || return 1
  else
    as_postgres "$PG_BIN/pg_ctl" start -D "$dir" -w -t 60 -l "$dir.log" >/dev/null || {
      log "PostgreSQL in $dir did not start; last lines of $dir.log:"
      tail -n 20 "$dir.log" >&2
      return 1
    }
  fi
}

# psql as the postgres superuser over the cluster's Unix socket.
pg_psql() {
  local dir="$1" port="$2"; shift 2
  as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(dirname "$dir")" -p "$port" -U postgres "$@"
}

# pg_start_primary DIR PORT: initdb if needed, start, create the test roles,
# the database appdb and the pgbench tables in it.
pg_start_primary() {
  local dir="$1" port="$2"
  [ -n "$dir" ] && [ -n "$port" ] || die "usage: pg_start_primary DIR PORT"
  pg_prepare_dir "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "initdb $dir"
    as_postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir.initdb.log" 2>&1 || { cat "$dir.initdb.log" >&2; return 1; }
  fi
  _pg_configure "$dir" "$port"
  _pg_ctl_start "$dir" || return 1
  log "PostgreSQL primary running on 127.0.0.1:$port ($dir)"
  pg_psql "$dir" "$port" -d postgres <<'SQL' || return 1
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'admin') THEN CREATE ROLE admin LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'md5user') THEN CREATE ROLE md5user LOGIN; END IF;
END $$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE app PASSWORD 'app';
ALTER ROLE admin PASSWORD 'admin';
SET password_encryption = 'md5';
ALTER ROLE md5user PASSWORD 'md5pass';
SELECT 'CREATE DATABASE appdb OWNER app'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'appdb') \gexec
SQL
  if [ "$(pg_psql "$dir" "$port" -d appdb -tAc "SELECT to_regclass('public.pgbench_accounts') IS NOT NULL")" != t ]; then
    as_postgres "$PG_BIN/pgbench" -i -s 1 -q -h "$(dirname "$dir")" -p "$port" -U app appdb \
      >"$dir.pgbench-init.log" 2>&1 || { cat "$dir.pgbench-init.log" >&2; return 1; }
  fi
}

# pg_start_standby DIR PRIMARY_PORT PORT: a streaming standby of the primary.
pg_start_standby() {
  local dir="$1" primary_port="$2" port="$3"
  [ -n "$dir" ] && [ -n "$primary_port" ] && [ -n "$port" ] ||
    die "usage: pg_start_standby DIR PRIMARY_PORT PORT"
  pg_prepare_dir "$dir"
  if [ ! -f "$dir/standby.signal" ]; then
    rm -rf "${dir:?}"/* "$dir"/.[!.]* 2>/dev/null || true
    log "pg_basebackup from 127.0.0.1:$primary_port into $dir"
    as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$dir" \
      -R -c fast -X stream >"$dir.basebackup.log" 2>&1 || { cat "$dir.basebackup.log" >&2; return 1; }
  fi
  _pg_configure "$dir" "$port"
  if ! _pg_ctl_start "$dir"; then
    # A standby that fell too far behind (e.g. the primary was re-created): take it again, once.
    [ -z "${_PG_STANDBY_RETRY:-}" ] || return 1
    log "re-creating the standby in $dir"
    as_postgres "$PG_BIN/pg_ctl" stop -D "$dir" -m immediate >/dev/null 2>&1 || true
    rm -f "$dir/standby.signal"
    _PG_STANDBY_RETRY=1 pg_start_standby "$dir" "$primary_port" "$port"
    return
  fi
  log "PostgreSQL standby running on 127.0.0.1:$port ($dir)"
}

# pg_stop DIR: fast shutdown if running.
pg_stop() {
  local dir="$1"
  [ -f "$dir/postmaster.pid" ] || return 0
  as_postgres "$PG_BIN/pg_ctl" stop -D "$dir" -m fast -w -t 60 >/dev/null 2>&1 ||
    as_postgres "$PG_BIN/pg_ctl" stop -D "$dir" -m immediate -w >/dev/null 2>&1 || true
}

# Waits until something accepts TCP connections on 127.0.0.1:PORT (SECONDS, default 10).
wait_for_port() {
  local port="$1" seconds="${2:-10}" i
  for ((i = 0; i < seconds * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
