# TimescaleDB built from the vendored source against the PostgreSQL of postgresql.Dockerfile
# (the server-dev headers come from the same apt sources, so they are the same minor
# version); the files land in /out for build.sh to copy out.
ARG POSTGRESQL_IMAGE
FROM ${POSTGRESQL_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-server-dev-15 cmake make gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
ARG TIMESCALEDB_VERSION
COPY timescaledb-${TIMESCALEDB_VERSION}.tar.gz /tmp/
RUN cd /tmp && tar xzf timescaledb-${TIMESCALEDB_VERSION}.tar.gz \
 && cd timescaledb-${TIMESCALEDB_VERSION} \
 && ./bootstrap -DCMAKE_BUILD_TYPE=Release -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF >/dev/null \
 && make -C build -j"$(nproc)" >/dev/null \
 && make -C build install DESTDIR=/out >/dev/null
