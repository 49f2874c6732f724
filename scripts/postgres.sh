#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the storage tests and bench/load.py.
#
#   export GOVERN_TEST_PG_URL="$(bash scripts/postgres.sh)"      # start (or reuse) it; prints the URL
#   bash scripts/postgres.sh stop                                 # stop it and delete its directory
#
# Installs Debian's `postgresql` package when no server binaries are there (apt-get, as root), then
# runs initdb + pg_ctl under $GOVERN_PG_DIR (default /tmp/govern-pg) on 127.0.0.1 and a free port, as the
# `postgres` user when run as root (the server refuses root). Idempotent: a cluster already running in
# that directory is reused, so a second call costs a few milliseconds. Only the URL goes to stdout;
# everything else goes to stderr. The cluster trusts local connections: it is for tests, never for data.
set -euo pipefail

DIR="${GOVERN_PG_DIR:-/tmp/govern-pg}"
DB="${GOVERN_PG_DB:-govern_test}"
USER_NAME=govern

say() { echo "postgres.sh: $*" >&2; }

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

if ! BIN="$(bindir)"; then
  if [ "$(id -u)" -ne 0 ]; then
    say "no PostgreSQL server found under /usr/lib/postgresql; install it: sudo apt-get install -y postgresql"
    exit 1
  fi
  say "installing Debian's postgresql package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
  BIN="$(bindir)" || { say "apt-get installed postgresql but no pg_ctl is under /usr/lib/postgresql/*/bin"; exit 1; }
fi

# run the server's tools as an unprivileged user when we are root
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
  if [ -f "$DIR/data/PG_VERSION" ]; then as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true; fi
  rm -rf "$DIR"
  exit 0
fi

url() { echo "postgresql+psycopg://$USER_NAME@127.0.0.1:$(cat "$DIR/port")/$DB"; }

if [ -f "$DIR/port" ] && as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  url
  exit 0
fi

mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  say "initdb in $DIR/data"
  as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi

# a free port on 127.0.0.1 (the kernel picks it; a race with another process taking it is retried below)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

started=""
for _ in 1 2 3; do
  port="$(free_port)"
  if as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c max_connections=200 -c fsync=off -c timezone=UTC" \
      start >&2; then
    started=yes
    break
  fi
done
[ -n "$started" ] || { say "the server did not start; see $DIR/server.log"; exit 1; }
echo "$port" > "$DIR/port"

psql_admin() { as_owner "$BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
# a superuser, because the tests create and drop one database per test
[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" = 1 ] \
  || psql_admin -c "CREATE ROLE $USER_NAME LOGIN SUPERUSER" >&2
[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" = 1 ] \
  || psql_admin -c "CREATE DATABASE $DB OWNER $USER_NAME" >&2
url
