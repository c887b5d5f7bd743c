#!/bin/sh
# Runs once, when the primary's data directory is created (docker-entrypoint-initdb.d).
# Roles: the archiver writes, the replayer and players read, a replication user feeds the
# streaming replica, a monitoring role reads the statistics for postgres_exporter. The
# archiver creates the schema itself (`archiver migrate`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE archiver LOGIN PASSWORD '${PG_ARCHIVER_PASSWORD}';
CREATE ROLE tspi_reader LOGIN PASSWORD '${PG_READER_PASSWORD}';
CREATE ROLE replicator LOGIN REPLICATION PASSWORD '${PG_REPLICATION_PASSWORD}';
-- postgres_exporter (deploy/observability): the statistics views, nothing else.
CREATE ROLE tspi_monitor LOGIN PASSWORD '${PG_MONITOR_PASSWORD}' IN ROLE pg_monitor;
GRANT CONNECT ON DATABASE ${POSTGRES_DB} TO archiver, tspi_reader, tspi_monitor;
GRANT CREATE, USAGE ON SCHEMA public TO archiver;
GRANT USAGE ON SCHEMA public TO tspi_reader;
-- Tables the archiver creates later are readable by the reader role.
ALTER DEFAULT PRIVILEGES FOR ROLE archiver IN SCHEMA public GRANT SELECT ON TABLES TO tspi_reader;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
cat >> "$PGDATA/postgresql.conf" <<CONF
wal_level = replica
max_wal_senders = 5
hot_standby = on
# An acknowledged commit is on the replica too: a promoted replica has every archived row.
synchronous_standby_names = '*'
CONF
