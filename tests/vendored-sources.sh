# Sourced by tests/install-deps.sh and deploy/images/build.sh: where the vendored
# third-party sources are.

# timescaledb_source ROOT VERSION: the TimescaleDB source tarball, from
# TSPI_TIMESCALEDB_SOURCE or the environment's ../shared/vendor beside the checkout
# (/work/shared/vendor for a clone elsewhere on such a machine); fails when there is none.
timescaledb_source() {
  local candidate
  for candidate in "${TSPI_TIMESCALEDB_SOURCE:-}" \
    "$1/../shared/vendor/timescaledb-$2.tar.gz" \
    "/work/shared/vendor/timescaledb-$2.tar.gz"; do
    [ -n "$candidate" ] && [ -f "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}
