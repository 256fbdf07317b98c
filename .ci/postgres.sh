#!/usr/bin/env bash
# The history crate's tests against a real PostgreSQL server (the same tests that run on
# SQLite in test.sh): a cluster initialised in a temporary directory, started on a local
# port with Unix sockets in that directory, stopped (and removed) at the end whatever
# happens. Needs PostgreSQL's server binaries: the distribution's `postgresql` package
# (Debian: `apt-get install postgresql`); PG_BIN overrides where they are looked for.
# The server runs as the invoking user, or as `postgres` (then `nobody`) when that is root,
# since PostgreSQL refuses to run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PG_BIN="${PG_BIN:-$(find_pg_bin)}"
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]] && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "postgres.sh: installing the distribution's postgresql package" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; } \
        || true
    PG_BIN="$(find_pg_bin)"
fi
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
    echo "postgres.sh: no PostgreSQL server binaries (install the distribution's postgresql package, or set PG_BIN)" >&2
    exit 2
fi
PORT="${PG_PORT:-54329}"
DIR="$(mktemp -d /tmp/sheafbench-pg.XXXXXX)"
chmod 755 "$DIR"

as_server=()
if [[ "$(id -u)" == 0 ]]; then
    user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    chown "$user" "$DIR"
    as_server=(runuser -u "$user" --)
fi

stop() {
    "${as_server[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap stop EXIT

"${as_server[@]}" "$PG_BIN/initdb" -D "$DIR/data" -U sheafbench --auth=trust -E UTF8 \
    --no-sync >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 2; }
# Durability does not matter for a throw-away cluster: fsync off keeps the run short.
"${as_server[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50" \
    start >/dev/null || { cat "$DIR/server.log" >&2; exit 2; }

export SHEAFBENCH_TEST_POSTGRES="postgres://sheafbench@127.0.0.1:$PORT/postgres"
cargo test -p history "$@"
