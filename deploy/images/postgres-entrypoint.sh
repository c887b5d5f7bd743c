#!/usr/bin/env bash
# The entrypoint of the locally made TimescaleDB image (deploy/images/build.sh): what the
# official postgres / timescale/timescaledb images' docker-entrypoint.sh does, for the
# variables deploy/docker-compose.yml uses, so the compose file runs unchanged on either:
#   - as root: owns $PGDATA to postgres, then runs itself again as postgres;
#   - a new $PGDATA: initdb (POSTGRES_USER, POSTGRES_PASSWORD or
#     POSTGRES_HOST_AUTH_METHOD=trust, POSTGRES_INITDB_ARGS), TCP clients by
#     scram-sha-256, TimescaleDB preloaded (telemetry off with TIMESCALEDB_TELEMETRY=off);
#     then, on a server listening on its socket only, POSTGRES_DB and the timescaledb
#     extension in it, and /docker-entrypoint-initdb.d/* (*.sh run, or sourced when not
#     executable; *.sql and *.sql.gz through psql), and that server stops again;
#   - then `postgres "$@"` in the foreground, as PID 1.
# Anything but `postgres …` (or flags, which go to postgres) runs as given.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

say() { echo "postgres-entrypoint: $*" >&2; }

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA" 2>/dev/null || true
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    say "a new database needs POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile="$(mktemp)"
  printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags, as upstream.
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host="$auth" -E UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >&2
  rm -f "$pwfile"
  printf 'host all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  {
    echo "listen_addresses = '*'"
    echo "shared_preload_libraries = 'timescaledb'"
    if [ "${TIMESCALEDB_TELEMETRY:-}" = off ]; then echo "timescaledb.telemetry_level = off"; fi
  } >> "$PGDATA/postgresql.conf"

  # Initialisation on the socket only: nobody reaches a half-made database over TCP (the
  # compose health check asks TCP, so it turns healthy only after this).
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start >&2
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --host /var/run/postgresql)
  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
  fi
  "${psql[@]}" --dbname "$POSTGRES_DB" -c 'CREATE EXTENSION IF NOT EXISTS timescaledb' >&2
  export PGHOST=/var/run/postgresql PGUSER="$POSTGRES_USER"
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then say "running $f"; "$f"
        else say "sourcing $f"; # shellcheck disable=SC1090
          . "$f"; fi ;;
      *.sql) say "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
      *.sql.gz) say "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" >&2 ;;
      *) say "ignoring $f" ;;
    esac
  done
  unset PGHOST PGUSER
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  say "database initialised; starting PostgreSQL"
fi

exec "$@"
