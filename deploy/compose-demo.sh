# ./demo.sh --compose: the whole system from deploy/docker-compose.yml on this machine's
# Docker engine (started here when none runs, and stopped again), with images made
# locally by deploy/images/build.sh (no registry needed). Sourced by demo.sh after its
# flags are parsed; uses its variables (count, rate, style, duration, ports, log_dir)
# and helpers (http_get, metric_at, port_busy, exactness).
#
# The demo's stack is its own compose project (tspi-demo) with passwords and a display
# token made for the run (in the log directory, never deploy/.env), ports published on
# 127.0.0.1 only, and its volumes removed at the end: logs, the summary and the
# generator's report stay in the log directory.

compose_project=tspi-demo
dc=()

run_compose_demo() {
  if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: --compose makes its images (debootstrap) and may start Docker: run it as root" >&2
    return 1
  fi
  local p
  for p in "$base_port" $((base_port + 103)) "$metrics_port" $((metrics_port + 1)) $((metrics_port + 2)) $((metrics_port + 3)) "$web_port"; do
    if port_busy "$p"; then
      echo "demo.sh: port $p on 127.0.0.1 is already in use; move the demo with --base-port, --metrics-port or --web-port" >&2
      return 1
    fi
  done
  if command -v ss >/dev/null && ss -Hlun "sport = :$udp_port" | grep -q .; then
    echo "demo.sh: UDP port $udp_port is already in use; pick another with --udp-port" >&2
    return 1
  fi
  [ -n "$log_dir" ] || log_dir="$(mktemp -d "${TMPDIR:-/tmp}/tspi-demo.XXXXXX")"
  mkdir -p "$log_dir"
  log_dir="$(cd "$log_dir" && pwd)"

  tests/install-deps.sh --docker
  local engine
  engine="$(deploy/images/engine.sh start "$log_dir/engine")" || return 1
  case "$engine" in started*) echo "demo: started a Docker engine (dockerd, pid ${engine#started }) for the demo" >&2 ;; esac

  # From here on, whatever happens, the stack comes down and our engine stops.
  trap compose_cleanup EXIT
  trap 'exit 130' INT TERM

  local build_args=(--log-dir "$log_dir/images")
  if [ -n "${TSPI_DEMO_BIN_DIR:-}" ]; then
    build_args+=(--binaries "$TSPI_DEMO_BIN_DIR")
    echo "demo: making the images (the programs from $TSPI_DEMO_BIN_DIR)" >&2
  else
    echo "demo: making the images (the first time: a Debian base, PostgreSQL with TimescaleDB and a release build of the kit, many minutes)" >&2
  fi
  deploy/images/build.sh "${build_args[@]}" > "$log_dir/images.env" ||
    { echo "demo: making the images failed; see $log_dir/images" >&2; return 1; }

  local env_file="$log_dir/compose.env" line token
  token="$(new_password)$(new_password)"
  (
    umask 077
    while IFS= read -r line; do
      case "$line" in
        *PASSWORD=*) echo "${line%%=*}=$(new_password)" ;;
        DISPLAY_TOKEN=*) echo "DISPLAY_TOKEN=$token" ;;
        PUBLISH_ADDRESS=*|NATS_IMAGE=*|TIMESCALE_IMAGE=*) ;;
        *) echo "$line" ;;
      esac
    done < deploy/.env.example
    cat "$log_dir/images.env"
    echo "PUBLISH_ADDRESS=127.0.0.1"
    echo "NATS_PORT=$base_port"
    echo "LEAF_PORT=$((base_port + 103))"
    echo "PRODUCER_UDP_PORT=$udp_port"
    echo "PRODUCER_METRICS_PORT=$metrics_port"
    echo "ARCHIVER_METRICS_PORT=$((metrics_port + 1))"
    echo "DISPLAY_METRICS_PORT=$((metrics_port + 2))"
    echo "ALARMER_METRICS_PORT=$((metrics_port + 3))"
    echo "DISPLAY_PORT=$web_port"
  ) > "$env_file"
  dc=(docker-compose -p "$compose_project" --env-file "$env_file" -f deploy/docker-compose.yml --profile demo)

  echo "demo: starting the stack (compose project $compose_project)" >&2
  # The generator is the demo's own (below), for --duration and a report it can read.
  "${dc[@]}" up -d --scale generator=0 > "$log_dir/compose-up.log" 2>&1 ||
    { tail -n 20 "$log_dir/compose-up.log" >&2; echo "demo: docker-compose up failed" >&2; return 1; }
  echo "demo: waiting for the producer, the archiver and the web display" >&2
  local waited=0
  until [ -n "$(http_get 127.0.0.1 "$metrics_port" /metrics 2>/dev/null)" ] &&
        [ -n "$(http_get 127.0.0.1 $((metrics_port + 1)) /metrics 2>/dev/null)" ] &&
        [ "$(http_get 127.0.0.1 "$web_port" /healthz 2>/dev/null)" = ok ]; do
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -ge 180 ]; then
      echo "demo: the stack did not come up within 3 minutes:" >&2
      "${dc[@]}" ps >&2 || true
      return 1
    fi
  done
  echo "demo: web display up at http://127.0.0.1:$web_port/?token=$token (the map; add &view=range for the range view)"

  local gen_args=(generator --udp-target producer:30000 --count "$count" --rate "$rate" --style "$style" --metrics-interval 1s)
  if [ -n "$duration" ]; then gen_args+=(--duration "$duration"); else gen_args+=(--continuous); fi
  "${dc[@]}" run -d --no-deps --name "${compose_project}_demo_generator" generator "${gen_args[@]}" > /dev/null
  echo "demo: ${count} aircraft x ${rate} Hz ($style) into the compose stack; Ctrl+C to stop${duration:+, or after ${duration}s}" >&2

  local start now sent received published invalid dropped lines rows
  start=$(date +%s)
  while :; do
    sleep 3
    now=$(( $(date +%s) - start ))
    # Downstream first, as in the loopback demo: no count runs ahead of the one above it.
    lines=$(receiver_lines)
    rows=$(archived)
    published=$(metric published_total)
    received=$(metric datagrams_received_total)
    invalid=$(metric datagrams_invalid_total)
    dropped=$(metric datagrams_dropped_total)
    # The generator reports once a second: its first report after the producer's
    # counters were read, so a line never shows more received than sent.
    local reports
    reports=$(generator_reports)
    for _ in $(seq 1 15); do
      [ "$(generator_reports)" -gt "$reports" ] && break
      generator_running || break
      sleep 0.1
    done
    sent=$(generator_report | sed -n 's/.*"datagrams":\([0-9]*\).*/\1/p')
    printf 'demo %4ss | sent %s | producer received %s published %s invalid %s dropped %s | receiver lines %s (lag %s) | archived rows %s (lag %s) | containers up %s\n' \
      "$now" "${sent:-0}" "$received" "$published" "$invalid" "$dropped" "$lines" "$((published - lines))" \
      "$rows" "$((published - rows))" "$(docker ps -q --filter "label=com.docker.compose.project=$compose_project" | wc -l)"
    if ! generator_running; then
      break
    fi
  done

  local report
  report="$(generator_report)"
  sent=$(sed -n 's/.*"datagrams":\([0-9]*\).*/\1/p' <<<"$report")
  echo "demo: generator finished: $report"
  # The tail of the pipeline drains: every published datagram at the receiver and in
  # the archive (primary and replica), or two minutes have passed.
  published=$(metric published_total)
  local primary replica
  for _ in $(seq 1 120); do
    published=$(metric published_total)
    primary=$(archive_rows db-primary)
    replica=$(archive_rows db-replica)
    lines=$(receiver_lines)
    [ "$published" -ge "${sent:-0}" ] && [ "$lines" -ge "$published" ] &&
      [ "${primary%%|*}" -ge "$published" ] && [ "${replica%%|*}" -ge "$published" ] && break
    sleep 1
  done
  echo "demo: receiver printed $lines lines; the last one:"
  receiver_output | tail -n 1
  echo "demo: archive holds ${primary%%|*} rows on the primary, ${replica%%|*} on the replica"
  exactness "${sent:-0}" "published=$published" "receiver lines=$lines" \
    "distinct lines=$(receiver_output | sort -u | wc -l)" \
    "primary rows=${primary%%|*}" "primary distinct ids=${primary#*|}" "replica rows=${replica%%|*}"
}

# The receiver's JSON lines (its container's stdout; its log lines are on stderr).
receiver_output() { docker logs "${compose_project}_receiver_1" 2>/dev/null; }
receiver_lines() { receiver_output | wc -l; }
# The generator's newest report (one JSON line a second, the final one last).
generator_report() { docker logs "${compose_project}_demo_generator" 2>/dev/null | tail -n 1; }
generator_reports() { docker logs "${compose_project}_demo_generator" 2>/dev/null | wc -l; }
generator_running() { [ "$(docker inspect -f '{{.State.Running}}' "${compose_project}_demo_generator" 2>/dev/null)" = true ]; }
# "ROWS|DISTINCT MESSAGE IDS" of telemetry in the archive on one database server (its local socket,
# as the superuser); "0|0" while it cannot be asked.
archive_rows() {
  local out
  out="$("${dc[@]}" exec -T "$1" psql -X -q -t -A -U postgres -d tspi \
    -c "SELECT count(*) || '|' || count(DISTINCT msg_id) FROM messages WHERE kind = 'telemetry'" 2>/dev/null | tr -d '\r')" || true
  [[ "$out" =~ ^[0-9]+\|[0-9]+$ ]] && echo "$out" || echo "0|0"
}

compose_cleanup() {
  trap - EXIT
  echo
  echo "demo: stopping the compose stack" >&2
  if [ "${#dc[@]}" -gt 0 ]; then
    docker logs "${compose_project}_demo_generator" > "$log_dir/generator.jsonl" 2> "$log_dir/generator.log" || true
    "${dc[@]}" logs --no-color > "$log_dir/compose.log" 2>&1 || true
    docker rm -f "${compose_project}_demo_generator" > /dev/null 2>&1 || true
    # The demo's data goes with it (--volumes); its logs stay.
    "${dc[@]}" down --volumes --remove-orphans > "$log_dir/compose-down.log" 2>&1 ||
      echo "demo: docker-compose down failed; see $log_dir/compose-down.log" >&2
  fi
  deploy/images/engine.sh stop "$log_dir/engine"
  echo "demo: logs in $log_dir" >&2
}
