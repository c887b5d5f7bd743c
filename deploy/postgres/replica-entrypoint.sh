#!/bin/sh
# Streaming replica: clone the primary once (pg_basebackup -R writes the standby
# settings), then run as a hot standby. Promote with `pg_ctl promote` (or
# `SELECT pg_promote()`) when the primary is gone; the archiver's multi-host URL with
# target_session_attrs=read-write follows.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$PRIMARY_HOST" -p 5432; do sleep 1; done
  export PGPASSWORD="$PG_REPLICATION_PASSWORD"
  pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U replicator -D "$PGDATA" -R -X stream --checkpoint=fast
  chmod 700 "$PGDATA"
fi
exec postgres -D "$PGDATA" -c timescaledb.telemetry_level=off
