#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing (a pinned nats-server into
# .tools/, PostgreSQL from the OS packages), then runs every test of the workspace against
# real servers that the tests start themselves on loopback. Extra arguments go to
# `cargo test` (e.g. `tests/run.sh -p tspi-core`). The whole run (no arguments) first
# gates on formatting and on clippy with warnings as errors, so the workspace lints
# (unwrap_used, expect_used, …) are enforced, not only declared.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests/install-deps.sh
export TSPI_NATS_SERVER="$root/.tools/nats/bin/nats-server"
if [ "$#" -eq 0 ]; then
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi
exec cargo test --workspace --locked "$@"
