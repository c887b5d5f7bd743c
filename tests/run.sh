#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing (a pinned nats-server into
# .tools/, PostgreSQL from the OS packages), then runs every test of the workspace against
# real servers that the tests start themselves on loopback. Extra arguments go to
# `cargo test` (e.g. `tests/run.sh -p tspi-core`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests/install-deps.sh
export TSPI_NATS_SERVER="$root/.tools/nats/bin/nats-server"
exec cargo test --workspace --locked "$@"
