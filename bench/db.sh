#!/usr/bin/env bash
# Backup and verify of about 1 GB (pgbench -i -s 70) in a database of its own on the local
# PostgreSQL: `windlass db backup` and `windlass db verify` timed end to end, and pg_dump and
# pg_restore run alone on the same data, to show the share the tools themselves take (the rest
# is Windlass: snapshot row counts, sha256 of the archive, manifest, scratch database).
#
#   WINDLASS_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres bash bench/db.sh
#   SCALE=10 BIN=target/debug/windlass bash bench/db.sh     # smaller and quicker
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need psql pgbench pg_dump pg_restore
: "${WINDLASS_TEST_DATABASE_URL:?set it to a PostgreSQL server URL whose role may create databases}"
ADMIN=$WINDLASS_TEST_DATABASE_URL
SCALE=${SCALE:-70}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/windlass}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p windlass first (or set BIN)" >&2; exit 1; }
DB=windlass_bench_db_$$
# The admin URL with its database replaced (keeps user, host, port and any ?query).
with_db() { python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$ADMIN" "$1"; }
URL=$(with_db "$DB")
drop_dbs() { psql -X -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${DB}_alone WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'drop_dbs; cleanup' EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

psql -X -q "$ADMIN" -c "CREATE DATABASE $DB"
echo "pgbench -i -s $SCALE ..." >&2
pgbench -i -q -s "$SCALE" "$URL" >/dev/null 2>&1
SIZE=$(psql -X -At "$URL" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")

mkdir -p "$WORK/p"
cat >"$WORK/p/windlass.toml" <<TOML
[project]
name = "bench"
[environments.bench]
[services.app]
run = "true"
[env]
DATABASE_URL = { secret = true }
[database]
url = { secret = "DATABASE_URL" }
backup = { dir = "$WORK/backups" }
TOML
export DATABASE_URL=$URL

t0=$(now); "$BIN" db backup bench --config "$WORK/p/windlass.toml" >"$WORK/backup.out"; t1=$(now)
t2=$(now); "$BIN" db verify bench --config "$WORK/p/windlass.toml" >"$WORK/verify.out"; t3=$(now)
DUMP=$(ls "$WORK/backups/bench/"*.dump)
DUMP_SIZE=$(du -h "$DUMP" | cut -f1)

t4=$(now); pg_dump -Fc -f "$WORK/alone.dump" "$URL"; t5=$(now)
psql -X -q "$ADMIN" -c "CREATE DATABASE ${DB}_alone"
t6=$(now); pg_restore --exit-on-error --no-owner --no-privileges -d "$(with_db "${DB}_alone")" "$WORK/alone.dump"; t7=$(now)

backup=$(secs "$t0" "$t1"); verify=$(secs "$t2" "$t3"); dump=$(secs "$t4" "$t5"); restore=$(secs "$t6" "$t7")
share() { python3 -c "print(f'{100 * $1 / $2:.0f}%')"; }
cat <<REPORT
database: $SIZE (pgbench scale $SCALE), archive: $DUMP_SIZE
| operation | windlass | the tool alone | tool's share |
|---|---|---|---|
| backup (pg_dump -Fc) | ${backup} s | ${dump} s | $(share "$dump" "$backup") |
| verify (pg_restore into a scratch db) | ${verify} s | ${restore} s | $(share "$restore" "$verify") |
REPORT
cat "$WORK/backup.out" "$WORK/verify.out"
