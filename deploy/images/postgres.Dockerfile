# PostgreSQL 15 from Debian with TimescaleDB (files put in the build context by build.sh:
# built from the vendored source against this very PostgreSQL) and an entrypoint that does
# what the official image's does (postgres-entrypoint.sh).
ARG POSTGRESQL_IMAGE
FROM ${POSTGRESQL_IMAGE}
COPY timescaledb/ /
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh \
 && ls /usr/lib/postgresql/15/lib/timescaledb-*.so >/dev/null
ENV PGDATA=/var/lib/postgresql/data
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
