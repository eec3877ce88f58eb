#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the distributed-tuning test and for trying
# `octbench tune --storage postgresql://...` locally. Nothing outside $PGDATA_DIR is touched.
#
#   bash .ci/postgres.sh start    # install (Debian, as root, if missing), initdb, start
#   bash .ci/postgres.sh url      # print the SQLAlchemy URL, e.g. for OCTBENCH_TEST_POSTGRES_URL
#   bash .ci/postgres.sh stop     # stop the server and delete its data folder
#
# Environment: OCTBENCH_PG_PORT (default 55432), OCTBENCH_PG_DIR (default /tmp/octbench-pg-PORT).
# The server trusts local connections (initdb -A trust): for tests only, never for real data.
set -euo pipefail

PORT="${OCTBENCH_PG_PORT:-55432}"
PGDATA_DIR="${OCTBENCH_PG_DIR:-/tmp/octbench-pg-$PORT}"
DB=octbench

# initdb refuses to run as root: root runs the server as the `postgres` user.
if [ "$(id -u)" = 0 ]; then PGUSER_NAME=postgres; else PGUSER_NAME="$(id -un)"; fi

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bindir() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$found" ] && command -v pg_ctl >/dev/null; then found="$(dirname "$(command -v pg_ctl)")"; fi
    echo "$found"
}

start() {
    local bin
    bin="$(bindir)"
    if [ -z "$bin" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "postgres.sh: installing PostgreSQL from Debian packages" >&2
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq postgresql >/dev/null
            bin="$(bindir)"
        fi
        if [ -z "$bin" ]; then
            echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
            return 1
        fi
    fi
    if [ -f "$PGDATA_DIR/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        echo "postgres.sh: already running on 127.0.0.1:$PORT" >&2
        return 0
    fi
    rm -rf "$PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres "$PGDATA_DIR"; fi
    as_owner "$bin/initdb" -D "$PGDATA_DIR" -A trust -U "$PGUSER_NAME" >/dev/null
    as_owner "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
        -o "-k /tmp -p $PORT -c listen_addresses=127.0.0.1" start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" "$DB"
    echo "postgres.sh: PostgreSQL running on 127.0.0.1:$PORT (data in $PGDATA_DIR)" >&2
}

stop() {
    local bin
    bin="$(bindir)"
    if [ -n "$bin" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$PGDATA_DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) echo "postgresql://$PGUSER_NAME@127.0.0.1:$PORT/$DB" ;;
    *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
