# A Rust build image made from the host's toolchain (build.sh copies its bin/ and lib/
# into the context) with the registry pre-fetched for this Cargo.lock, so
# deploy/Dockerfile's build stage compiles with no network: it stands in for the public
# rust image where no image registry is reachable.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain/ /usr/local/rust/
COPY cargo-home/ /usr/local/cargo/
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:$PATH \
    CARGO_HOME=/usr/local/cargo \
    CARGO_NET_OFFLINE=true
RUN cargo --version && rustc --version
