#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing (a pinned nats-server into
# .tools/, PostgreSQL from the OS packages), then runs every test of the workspace against
# real servers that the tests start themselves on loopback. Extra arguments go to
# `cargo test` (e.g. `tests/run.sh -p tspi-core`). The whole run (no arguments) first
# gates on formatting and on clippy with warnings as errors, so the workspace lints
# (unwrap_used, expect_used, …) are enforced, not only declared. At the end it prints the
# wall time of each phase, the count of tests passed, failed, ignored and skipped for want
# of a dependency (each skip named), and the slowest test binaries (also in
# target/test-times.txt).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

phases=()
started=$SECONDS
# phase NAME CMD… : run CMD and note how long it took.
phase() {
  local name="$1" t0=$SECONDS status=0
  shift
  "$@" || status=$?
  phases+=("$(printf '%-22s %5d s' "$name" $((SECONDS - t0)))")
  return "$status"
}
mkdir -p target
log="$root/target/test-output.log"
# A test that cannot run its subject here (no TimescaleDB, container engine or FUSE)
# appends a line to the skip log (tspi_test_support::skipped); the report counts them.
skip_log="$root/target/test-skips.txt"
: > "$skip_log"
export TSPI_SKIP_LOG="$skip_log"
report() {
  local status=$?
  {
    echo
    echo "test command: wall time per phase"
    printf '  %s\n' "${phases[@]}"
    printf '  %-22s %5d s\n' "total" $((SECONDS - started))
    if [ -f "$log" ]; then
      awk '/^test result:/ {for (i = 1; i <= NF; i++) {if ($(i + 1) ~ /^passed;/) p += $i; if ($(i + 1) ~ /^failed;/) f += $i; if ($(i + 1) ~ /^ignored;/) g += $i}} END {printf "tests: %d passed, %d failed, %d ignored", p, f, g}' "$log"
      skips=0
      [ -s "$skip_log" ] && skips=$(wc -l < "$skip_log")
      echo ", $skips skipped for want of a dependency (passed, but did not run their subject)"
      [ "$skips" = 0 ] || awk -F '\t' '{printf "  SKIPPED %s (%s): %s\n", $1, $2, $3}' "$skip_log"
      echo "slowest test binaries (cargo test's own 'finished in'):"
      awk '/^     Running / {name = ($2 == "unittests" ? $3 " (unit)" : $2)} /^test result:/ {for (i = 1; i <= NF; i++) if ($i == "in") {t = $(i + 1); sub(/s$/, "", t); printf "%8.1f s  %s\n", t, name}}' "$log" |
        sort -rn | head -n 12 | sed 's/^/  /'
    fi
  } | tee "$root/target/test-times.txt"
  exit "$status"
}
trap report EXIT

phase "install-deps" tests/install-deps.sh
export TSPI_NATS_SERVER="$root/.tools/nats/bin/nats-server"
# What install-deps put in place may not be skipped for want of: such a skip is a
# broken install (a test built against another PostgreSQL, say), so it fails instead.
if ls /usr/lib/postgresql/*/lib/timescaledb.so >/dev/null 2>&1; then
  export TSPI_REQUIRE="timescaledb${TSPI_REQUIRE:+,$TSPI_REQUIRE}"
fi
if [ "$#" -eq 0 ]; then
  phase "rustfmt" cargo fmt --all -- --check
  phase "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
fi
run_tests() { cargo test --locked "$@" 2>&1 | tee "$log"; }
if [ "$#" -gt 0 ]; then
  # The arguments choose what runs (`-p tspi-core`).
  build_chosen() { cargo build --workspace --bins --locked && cargo test --locked --no-run "$@"; }
  phase "build tests" build_chosen "$@"
  phase "run tests" run_tests "$@"
  exit 0
fi
# The programs themselves too: cargo builds a package's executables only for that
# package's own integration tests, and tests/e2e runs every program (the alarmer has none).
build_all() { cargo build --workspace --bins --locked && cargo test --workspace --locked --no-run; }
phase "build tests" build_all
# The compose demo's tests (tests/e2e/tests/compose_demo.rs) spend their minutes making
# images and waiting on containers at a few dozen messages a second: they run beside
# the rest instead of after it, and report at the end.
# Run as its own executable: a second `cargo test` would wait on the first's lock.
compose_log="$root/target/compose-test.log"
compose_bin="$(cargo test --locked -p tspi-e2e --test compose_demo --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*compose_demo-[^)]*\)).*/\1/p' | tail -n 1)"
[ -x "$compose_bin" ] || { echo "test command: no compose_demo test executable" >&2; exit 1; }
compose_started=$SECONDS
"$compose_bin" > "$compose_log" 2>&1 &
compose_pid=$!
# A failure here still waits for the compose tests: left running, they would stop their
# Docker engine under whatever runs next.
tests_status=0
phase "run tests" run_tests --workspace -- --skip a_compose_demo || tests_status=$?
compose_status=0
wait "$compose_pid" || compose_status=$?
phases+=("$(printf '%-22s %5d s' "compose tests (beside)" $((SECONDS - compose_started)))")
{ echo "     Running tests/compose_demo.rs ($compose_bin, beside the rest)"; cat "$compose_log"; } | tee -a "$log"
if [ "$compose_status" != 0 ]; then
  echo "test command: the compose demo's tests failed (above)" >&2
  exit "$compose_status"
fi
if [ "$tests_status" != 0 ]; then
  echo "test command: tests failed (above)" >&2
  exit "$tests_status"
fi
