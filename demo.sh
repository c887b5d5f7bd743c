#!/usr/bin/env bash
# The whole pipeline with one command, on loopback:
#   generator -UDP-> producer -> three-node NATS JetStream cluster (R3)
#       -> receiver (JSON lines), player (display frames), archiver -> PostgreSQL
#          primary + synchronous streaming replica -> replayer serve
#       -> the web display (player --web) for a browser: live and archive, one cursor
# Installs what is missing (pinned nats-server into .tools/, PostgreSQL from the OS
# packages), builds in release mode, prints a status line every few seconds, and stops
# exactly what it started on Ctrl+C or after --duration.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./demo.sh [options]

  --duration S      stop after S seconds (default: run until Ctrl+C)
  --count N         aircraft in the generated fleet (default 20)
  --rate HZ         frames per second per aircraft (default 10)
  --style STYLE     normal | airshow (default normal)
  --log-dir DIR     where logs, configs and the receiver's JSON lines go
                    (default: a new directory under ${TMPDIR:-/tmp})
  --base-port P     first NATS client port; the cluster uses P..P+2, P+100..P+102 for
                    routes, P+200..P+202 for monitoring (default 14222)
  --udp-port P      producer's UDP port (default 30000)
  --metrics-port P  producer's Prometheus port; the archiver's is P+1, the alarmer's
                    P+3 (default 19464)
  --pg-port P       PostgreSQL primary port; the replica uses P+1 (default 15432)
  --web-port P      the web display on http://127.0.0.1:P/ (default 8080); its metrics
                    are on the metrics port + 2
  --sites N         also N range sites (0-4: north, south, east, west), each its own
                    nats-server (a leaf node of the centre, deploy/nats/site.conf), a
                    producer in site mode and a generator with its own fleet; the
                    centre's TSPI sources them. Site k (0-based) listens on the base
                    port + 3 + k, UDP port + 1 + k, metrics port + 4 + k; the centre
                    takes leaf nodes on the base port + 103..105
  --cut-site NAME S cut site NAME's link to the centre 10 s after the data starts, for
                    S seconds (its leaf connection disabled by a configuration reload,
                    as an operator would); the site keeps storing and the centre catches
                    up when the link is back
  --compose         run the same system with deploy/docker-compose.yml instead (as
                    root: installs Docker and debootstrap when missing, starts dockerd
                    when none runs, makes the images locally with
                    deploy/images/build.sh); --base-port, --udp-port, --metrics-port and
                    --web-port set the published ports (127.0.0.1 only)
  -h, --help        this text

Environment: TSPI_DEMO_BIN_DIR=DIR runs the programs already built in DIR (e.g.
target/debug) instead of building release binaries (with --compose: packages them).

Examples: ./demo.sh --duration 60 --count 50 --rate 50 --style airshow
          ./demo.sh --sites 2 --cut-site north 30
          sudo ./demo.sh --compose --duration 60
EOF
}

duration="" count=20 rate=10 style=normal log_dir="" base_port=14222 udp_port=30000 metrics_port=19464
pg_port=15432 compose=0 web_port=8080 sites=0 cut_site="" cut_seconds=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
    --count) count="${2:?}"; shift 2 ;;
    --rate) rate="${2:?}"; shift 2 ;;
    --style) style="${2:?}"; shift 2 ;;
    --log-dir) log_dir="${2:?}"; shift 2 ;;
    --base-port) base_port="${2:?}"; shift 2 ;;
    --udp-port) udp_port="${2:?}"; shift 2 ;;
    --metrics-port) metrics_port="${2:?}"; shift 2 ;;
    --pg-port) pg_port="${2:?}"; shift 2 ;;
    --web-port) web_port="${2:?}"; shift 2 ;;
    --sites) sites="${2:?--sites needs a number}"; shift 2 ;;
    --cut-site) cut_site="${2:?--cut-site needs a site name and seconds}"; cut_seconds="${3:?--cut-site needs seconds}"; shift 3 ;;
    --compose) compose=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in "$count" "$base_port" "$udp_port" "$metrics_port" "$pg_port" "$web_port" "$sites" "$cut_seconds" ${duration:+"$duration"}; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "demo.sh: '$v' is not a whole number" >&2; exit 2; }
done
all_sites=(north south east west)
[ "$sites" -le ${#all_sites[@]} ] || { echo "demo.sh: --sites is at most ${#all_sites[@]}" >&2; exit 2; }
site_names=("${all_sites[@]:0:$sites}")
if [ -n "$cut_site" ]; then
  [[ " ${site_names[*]} " == *" $cut_site "* ]] ||
    { echo "demo.sh: --cut-site $cut_site: no such site (with --sites $sites: ${site_names[*]:-none})" >&2; exit 2; }
  [ "$cut_seconds" -ge 1 ] || { echo "demo.sh: --cut-site needs at least 1 second" >&2; exit 2; }
  if [ -n "$duration" ] && [ $((10 + cut_seconds)) -ge "$duration" ]; then
    echo "demo.sh: the cut (10 s in, for $cut_seconds s) must end before --duration $duration" >&2; exit 2
  fi
fi
[ $((10000 + (sites + 1) * count)) -le 65535 ] || { echo "demo.sh: --count too large for distinct sensor ids across sites" >&2; exit 2; }
case "$style" in normal|airshow) ;; *) echo "demo.sh: --style must be normal or airshow" >&2; exit 2 ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

http_get() { # host port path -> body
  if command -v curl >/dev/null; then
    curl -fsS -m 2 "http://$1:$2$3"
    return
  fi
  (
    exec 4<>"/dev/tcp/$1/$2" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&4
    sed '1,/^\r$/d' <&4
  )
}
# Counters from the producer's and the archiver's Prometheus endpoints.
metric_at() { { http_get 127.0.0.1 "$1" /metrics 2>/dev/null || true; } | awk -v m="tspi_producer_$2" '$1 ~ "^"m {s += $2} END {printf "%d", s}'; }
metric() { metric_at "$metrics_port" "$1"; }
# Telemetry rows archived: every row the archiver wrote, less the alarmer's transitions
# (archived too, in the same stream).
archived() {
  local rows alarms
  rows=$({ http_get 127.0.0.1 $((metrics_port + 1)) /metrics 2>/dev/null || true; } | awk '$1 == "tspi_archiver_rows_written_total" {s += $2} END {printf "%d", s}')
  alarms=$(alarm_transitions)
  echo $((rows - alarms))
}
alarm_transitions() { { http_get 127.0.0.1 $((metrics_port + 3)) /metrics 2>/dev/null || true; } | awk '$1 ~ /^tspi_alarmer_transitions_total/ {s += $2} END {printf "%d", s}'; }
# Browser tabs connected to the web display.
tabs() { { http_get 127.0.0.1 $((metrics_port + 2)) /metrics 2>/dev/null || true; } | awk '$1 == "tspi_player_web_sessions" {s += $2} END {printf "%d", s}'; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
new_password() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# exactness SENT NAME=COUNT… : the verdict line; every count must equal SENT (> 0).
exactness() {
  local sent="$1" pair counts="" off=""
  shift
  for pair in "$@"; do
    counts+=", ${pair%%=*} ${pair#*=}"
    [ "${pair#*=}" = "$sent" ] || off+=", ${pair%%=*} ${pair#*=}"
  done
  if [ "$sent" -gt 0 ] && [ -z "$off" ]; then
    echo "demo: exact: sent $sent$counts"
  else
    echo "demo: NOT exact: sent $sent$off (all: sent $sent$counts)"
    return 1
  fi
}

if [ "$compose" = 1 ]; then
  [ "$sites" = 0 ] || { echo "demo.sh: --sites runs on loopback, without --compose" >&2; exit 2; }
  # shellcheck source=deploy/compose-demo.sh
  . deploy/compose-demo.sh
  run_compose_demo
  exit $?
fi

# One demo at a time: a second run says so instead of colliding on ports.
lock="${TMPDIR:-/tmp}/tspi-demo-${base_port}.pid"
if [ -f "$lock" ] && kill -0 "$(cat "$lock" 2>/dev/null)" 2>/dev/null; then
  echo "demo.sh: a demo is already running (pid $(cat "$lock"), ports from $base_port); stop it, or start another with --base-port" >&2
  exit 1
fi

for p in "$base_port" $((base_port + 1)) $((base_port + 2)) $((base_port + 100)) $((base_port + 101)) \
         $((base_port + 102)) $((base_port + 200)) $((base_port + 201)) $((base_port + 202)) "$metrics_port" \
         $((metrics_port + 1)) $((metrics_port + 2)) $((metrics_port + 3)) "$pg_port" $((pg_port + 1)) "$web_port" \
         $(for k in "${!site_names[@]}"; do echo $((base_port + 103 + k)) $((base_port + 3 + k)) $((base_port + 203 + k)) $((metrics_port + 4 + k)); done); do
  if port_busy "$p"; then
    echo "demo.sh: port $p on 127.0.0.1 is already in use (another NATS or PostgreSQL?); move the demo with --base-port, --metrics-port, --pg-port or --web-port" >&2
    exit 1
  fi
done
for p in "$udp_port" $(for k in "${!site_names[@]}"; do echo $((udp_port + 1 + k)); done); do
  if command -v ss >/dev/null && ss -Hlun "sport = :$p" | grep -q .; then
    echo "demo.sh: UDP port $p is already in use; pick another with --udp-port" >&2
    exit 1
  fi
done

echo "demo: the web display will be at http://127.0.0.1:$web_port/ — open it in a browser once the system is up"
tests/install-deps.sh --no-compose
nats_server="$root/.tools/nats/bin/nats-server"
if [ -n "${TSPI_DEMO_BIN_DIR:-}" ]; then
  bin="$(cd "$TSPI_DEMO_BIN_DIR" && pwd)"
  for p in producer receiver generator archiver player console replayer alarmer; do
    [ -x "$bin/$p" ] || { echo "demo.sh: TSPI_DEMO_BIN_DIR=$bin has no $p" >&2; exit 1; }
  done
  echo "demo: using the binaries in $bin" >&2
else
  command -v cargo >/dev/null || {
    echo "demo.sh: cargo is needed to build the programs (install Rust: https://rustup.rs), or point TSPI_DEMO_BIN_DIR at built binaries" >&2
    exit 1
  }
  echo "demo: building release binaries (first time takes a few minutes)" >&2
  cargo build --release --locked -q -p tspi-producer -p tspi-receiver -p tspi-generator \
    -p tspi-archiver -p tspi-player -p tspi-console -p tspi-replayer -p tspi-alarmer
  bin="$root/target/release"
fi

[ -n "$log_dir" ] || log_dir="$(mktemp -d "${TMPDIR:-/tmp}/tspi-demo.XXXXXX")"
mkdir -p "$log_dir"
log_dir="$(cd "$log_dir" && pwd)"
echo $$ > "$lock"

pids=() nats_pids=() pg_pids=() program_pids=()
# `spawn CMD…` runs CMD in the background in a process group of its own (set -m), so a
# Ctrl+C at the terminal reaches only this script, which then stops everything in order
# (a terminal's SIGINT to the whole group would take NATS down while the producer still
# drains into it). CMD is exec'd: $last_pid is the program's own PID.
spawn() { set -m; "$@" & last_pid=$!; set +m; pids+=("$last_pid"); }
program() { spawn "$@"; program_pids+=("$last_pid"); }
# stop SIGNAL PID… : signal each, then wait up to 10 s for all of them to exit.
stop() {
  local sig="$1" p alive
  shift
  for p in "$@"; do kill -"$sig" "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
}
stopping=0
cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "demo: stopping ${#pids[@]} processes" >&2
  local i p
  # The programs one by one, last started first (generator, then the readers, then the
  # producer), each draining on SIGTERM while NATS and PostgreSQL are still up; then
  # PostgreSQL (SIGINT: fast shutdown) and NATS.
  for (( i=${#program_pids[@]}-1; i>=0; i-- )); do stop TERM "${program_pids[$i]}"; done
  stop INT "${pg_pids[@]}"
  stop TERM "${nats_pids[@]}"
  # Only what is still running: a PID already reaped may belong to someone else by now.
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$lock"
  echo "demo: logs and data in $log_dir" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Real auth, as deployed: the accounts and per-program users of deploy/nats/accounts.conf,
# with passwords made for this run.
# Each site gets a leaf user at the centre: deploy's site-north, copied per site.
site_user_block() { awk '/\{ user: site-north,/ {on = 1} on {print} on && /^ *\} \}$/ {exit}' deploy/nats/accounts.conf; }
{
  while IFS= read -r line; do
    if [[ "$line" == *"{ user: site-north,"* ]]; then
      for name in "${site_names[@]}"; do
        [ "$name" = north ] || site_user_block | sed "s/north/$name/g; s/NORTH/${name^^}/g"
      done
    fi
    printf '%s\n' "$line"
  done < deploy/nats/accounts.conf
} > "$log_dir/accounts.conf"
users=(producer generator receiver archiver player console replayer alarmer admin site-north)
for name in "${site_names[@]}"; do [ "$name" = north ] || users+=("site-$name"); done
declare -A password
for u in "${users[@]}"; do password[$u]="$(new_password)"; done
password_var() { local v="${1^^}"; echo "${v//-/_}_PASSWORD"; }
( umask 077; for u in "${users[@]}"; do echo "$(password_var "$u")=${password[$u]}"; done > "$log_dir/passwords.env" )
# `as_user U; program "${ENV[@]}" BIN …` runs BIN with U's NATS user and inbox prefix; `env`
# execs BIN, so the PID kept is BIN's own.
as_user() { ENV=(env "NATS_USER=$1" "NATS_PASSWORD=${password[$1]}" "NATS_INBOX_PREFIX=_INBOX_$1"); }

nats_env=()
for u in "${users[@]}"; do nats_env+=("$(password_var "$u")=${password[$u]}"); done
urls=()
routes="nats-route://127.0.0.1:$((base_port + 100)), nats-route://127.0.0.1:$((base_port + 101)), nats-route://127.0.0.1:$((base_port + 102))"
for i in 0 1 2; do
  name="n$((i + 1))"
  mkdir -p "$log_dir/$name"
  cat > "$log_dir/$name.conf" <<EOF
server_name: $name
listen: 127.0.0.1:$((base_port + i))
http: 127.0.0.1:$((base_port + 200 + i))
jetstream {
  store_dir: "$log_dir/$name"
  # Acknowledged means on disk.
  sync_interval: always
  domain: centre
}
$(if [ "$sites" -gt 0 ]; then printf 'leafnodes {\n  listen: 127.0.0.1:%s\n  no_advertise: true\n}\n' $((base_port + 103 + i)); fi)
cluster {
  name: tspi-demo
  listen: 127.0.0.1:$((base_port + 100 + i))
  routes: [$routes]
}
include ./accounts.conf
EOF
  # Passwords reach accounts.conf as environment variables, as in deploy/.
  spawn env "${nats_env[@]}" "$nats_server" -c "$log_dir/$name.conf" -l "$log_dir/$name.log"
  nats_pids+=("$last_pid")
  urls+=("nats://127.0.0.1:$((base_port + i))")
done
nats_url="$(IFS=,; echo "${urls[*]}")"

echo "demo: waiting for the JetStream cluster to elect its leaders" >&2
for i in 0 1 2; do
  for _ in $(seq 1 300); do
    if http_get 127.0.0.1 $((base_port + 200 + i)) /healthz 2>/dev/null | grep -q '"ok"'; then break; fi
    sleep 0.2
  done
done

# PostgreSQL: a primary and a synchronous streaming replica (an acknowledged commit is on
# both). The server refuses to run as root, so then it runs as nobody.
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
# A prefix, not a function: a background command then IS the server (setpriv execs it), so
# the PID we keep is the one to stop.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups --); fi
chmod 755 "$log_dir"
mkdir -p "$log_dir/pg"
if [ "$(id -u)" -eq 0 ]; then chown nobody: "$log_dir/pg"; fi
echo "demo: PostgreSQL primary :$pg_port and replica :$((pg_port + 1))" >&2
"${as_pg[@]}" "$pgbin/initdb" -D "$log_dir/pg/primary" -U tspi --auth=trust -E UTF8 --locale=C >"$log_dir/pg/initdb.log" 2>&1
printf "%s\n" "listen_addresses = '127.0.0.1'" "unix_socket_directories = '$log_dir/pg'" \
  "wal_level = replica" "max_wal_senders = 5" "hot_standby = on" >> "$log_dir/pg/primary/postgresql.conf"
# TimescaleDB where this PostgreSQL has it (tests/install-deps.sh builds it): preloaded, as
# deployed, so the archive is hypertables; the replica's copy of the configuration says
# the same. Telemetry stays off (a range is air-gapped).
if ls "$pgbin"/../lib/timescaledb.so >/dev/null 2>&1; then
  printf "%s\n" "shared_preload_libraries = 'timescaledb'" "timescaledb.telemetry_level = off" \
    >> "$log_dir/pg/primary/postgresql.conf"
  echo "demo: the archive runs on TimescaleDB (preloaded)" >&2
fi
echo "host replication all 127.0.0.1/32 trust" >> "$log_dir/pg/primary/pg_hba.conf"
pg_wait() {
  for _ in $(seq 1 150); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$1" && return 0; sleep 0.2; done
  echo "demo: PostgreSQL on :$1 did not start; see $log_dir/pg" >&2
  exit 1
}
spawn "${as_pg[@]}" "$pgbin/postgres" -D "$log_dir/pg/primary" -p "$pg_port" 2>"$log_dir/pg/primary.log"
pg_pids+=("$last_pid")
pg_wait "$pg_port"
"${as_pg[@]}" "$pgbin/pg_basebackup" -D "$log_dir/pg/replica" -h 127.0.0.1 -p "$pg_port" -U tspi -R -X stream \
  --checkpoint=fast >"$log_dir/pg/basebackup.log" 2>&1
spawn "${as_pg[@]}" "$pgbin/postgres" -D "$log_dir/pg/replica" -p $((pg_port + 1)) 2>"$log_dir/pg/replica.log"
pg_pids+=("$last_pid")
pg_wait $((pg_port + 1))
psql_at() { local port="$1"; shift; "$pgbin/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U tspi "$@"; }
psql_at "$pg_port" -d postgres -c "CREATE DATABASE tspi" >/dev/null
psql_at "$pg_port" -d postgres -c "ALTER SYSTEM SET synchronous_standby_names = '*'" >/dev/null
psql_at "$pg_port" -d postgres -c "SELECT pg_reload_conf()" >/dev/null
database_url="host=127.0.0.1,127.0.0.1 port=$pg_port,$((pg_port + 1)) user=tspi dbname=tspi target_session_attrs=read-write"

export NATS_URL="$nats_url"
as_user producer; program "${ENV[@]}" "$bin/producer" --udp-host 127.0.0.1 --udp-port "$udp_port" \
  --metrics-addr "127.0.0.1:$metrics_port" 2> "$log_dir/producer.log"
producer_pid=$last_pid
for _ in $(seq 1 100); do
  http_get 127.0.0.1 "$metrics_port" /metrics >/dev/null 2>&1 && break
  kill -0 "$producer_pid" 2>/dev/null || { echo "demo: the producer exited: $(tail -n 1 "$log_dir/producer.log")" >&2; exit 1; }
  sleep 0.1
done

as_user console; "${ENV[@]}" "$bin/console" clients --json >/dev/null 2>"$log_dir/console.log" # creates TSPI_OPS
as_user receiver; program "${ENV[@]}" "$bin/receiver" --durable demo --deliver all \
  > "$log_dir/receiver.jsonl" 2> "$log_dir/receiver.log"
# The schema first: the replayer (below) reads an archive that must exist.
"$bin/archiver" migrate --database-url "$database_url" > "$log_dir/migrate.log" 2>&1 ||
  { echo "demo: archiver migrate failed: $(tail -n 1 "$log_dir/migrate.log")" >&2; exit 1; }
as_user archiver; program "${ENV[@]}" "$bin/archiver" --database-url "$database_url" \
  --metrics-addr "127.0.0.1:$((metrics_port + 1))" 2> "$log_dir/archiver.log"
# Alarms and range-safety boundaries around the demo's range (deploy/alarms/rules.toml).
as_user alarmer; program "${ENV[@]}" "$bin/alarmer" --rules deploy/alarms/rules.toml --origin 34.9,-117.9,700 \
  --metrics-addr "127.0.0.1:$((metrics_port + 3))" 2> "$log_dir/alarmer.log"
as_user player; program "${ENV[@]}" "$bin/player" --no-create-stream --rate 1 --operator demo \
  --client-id demo-player > "$log_dir/player.jsonl" 2> "$log_dir/player.log"
# History for the web display (scrubbing, the timeline) comes from the replayer.
as_user replayer; program "${ENV[@]}" "$bin/replayer" serve --database-url "$database_url" \
  > "$log_dir/replayer.out" 2> "$log_dir/replayer.log"
as_user player; program "${ENV[@]}" "$bin/player" --no-create-stream --operator demo \
  --web "127.0.0.1:$web_port" --origin 34.9,-117.9,700 --metrics-addr "127.0.0.1:$((metrics_port + 2))" \
  > "$log_dir/display.out" 2> "$log_dir/display.log"
display_pid=$last_pid
for _ in $(seq 1 100); do
  http_get 127.0.0.1 "$web_port" /healthz >/dev/null 2>&1 && break
  kill -0 "$display_pid" 2>/dev/null || { echo "demo: the web display exited: $(tail -n 1 "$log_dir/display.log")" >&2; exit 1; }
  sleep 0.1
done
# Range sites: each its own nats-server made from deploy/nats/site.conf and
# site-accounts.conf (a leaf node of every centre node, JetStream domain site-<name>), a
# producer in site mode as the site's producer user, and a generator with its own fleet.
site_pids=() site_confs=() site_metrics=()
for k in "${!site_names[@]}"; do
  name="${site_names[$k]}"
  dir="$log_dir/site-$name"
  mkdir -p "$dir/jetstream"
  sed "s/north/$name/g; s/NORTH/${name^^}/g" deploy/nats/site-accounts.conf > "$dir/site-accounts.conf"
  sed -e "s/north/$name/g; s/NORTH/${name^^}/g" -e "s|^listen: .*|listen: 127.0.0.1:$((base_port + 3 + k))|" \
    -e "s|^http: .*|http: 127.0.0.1:$((base_port + 203 + k))|" -e "s|^\( *\)store_dir: .*|\1store_dir: \"$dir/jetstream\"|" \
    deploy/nats/site.conf > "$dir/site.conf"
  leaf_urls=""
  for i in 0 1 2; do
    leaf_urls+="${leaf_urls:+, }nats-leaf://site-$name:${password[site-$name]}@127.0.0.1:$((base_port + 103 + i))"
  done
  site_producer_password="$(new_password)" site_admin_password="$(new_password)"
  ( umask 077; printf 'PRODUCER_PASSWORD=%s\nADMIN_PASSWORD=%s\n' "$site_producer_password" "$site_admin_password" > "$dir/passwords.env" )
  spawn env "PRODUCER_PASSWORD=$site_producer_password" "ADMIN_PASSWORD=$site_admin_password" \
    "CENTRE_LEAF_URLS=[$leaf_urls]" "$nats_server" -c "$dir/site.conf" -l "$dir/nats.log"
  nats_pids+=("$last_pid")
  site_pids+=("$last_pid")
  site_confs+=("$dir/site.conf")
  site_metrics+=($((metrics_port + 4 + k)))
  for _ in $(seq 1 150); do
    http_get 127.0.0.1 $((base_port + 203 + k)) /healthz 2>/dev/null | grep -q '"ok"' && break
    sleep 0.2
  done
  program env "NATS_URL=nats://127.0.0.1:$((base_port + 3 + k))" NATS_USER=producer \
    "NATS_PASSWORD=$site_producer_password" "NATS_INBOX_PREFIX=_INBOX_site-$name" "$bin/producer" --site "$name" \
    --udp-host 127.0.0.1 --udp-port $((udp_port + 1 + k)) --metrics-addr "127.0.0.1:$((metrics_port + 4 + k))" \
    2> "$dir/producer.log"
done
for k in "${!site_names[@]}"; do
  for _ in $(seq 1 300); do
    [ "$(metric_at "${site_metrics[$k]}" site_sourced)" = 1 ] && break
    sleep 0.1
  done
  if [ "$(metric_at "${site_metrics[$k]}" site_sourced)" = 1 ]; then
    echo "demo: site ${site_names[$k]} (nats://127.0.0.1:$((base_port + 3 + k)), producer udp $((udp_port + 1 + k))) is sourced by the centre" >&2
  else
    echo "demo: site ${site_names[$k]} is not sourced by the centre yet; see $log_dir/site-${site_names[$k]}/producer.log" >&2
  fi
done
# A site's link goes down as an operator would take it down: its leaf remote disabled
# by a configuration reload (and enabled again the same way).
site_link() { # k up|down
  local conf="${site_confs[$1]}"
  if [ "$2" = down ]; then
    sed -i 's/^\( *\)account: TSPI$/&\n\1disabled: true/' "$conf"
  else
    sed -i '/^ *disabled: true$/d' "$conf"
  fi
  kill -HUP "${site_pids[$1]}"
}

gen_pids=()
gen_args=(--count "$count" --rate "$rate" --style "$style" --metrics-interval 1s)
if [ -n "$duration" ]; then gen_args+=(--duration "$duration"); else gen_args+=(--continuous); fi
program "$bin/generator" --udp-target "127.0.0.1:$udp_port" "${gen_args[@]}" > "$log_dir/generator.jsonl" 2> "$log_dir/generator.log"
gen_pid=$last_pid
gen_pids+=("$last_pid")
for k in "${!site_names[@]}"; do
  program "$bin/generator" --udp-target "127.0.0.1:$((udp_port + 1 + k))" --sensor-base $((10000 + (k + 1) * count)) \
    "${gen_args[@]}" > "$log_dir/site-${site_names[$k]}/generator.jsonl" 2> "$log_dir/site-${site_names[$k]}/generator.log"
  gen_pids+=("$last_pid")
done
generators_running() { local p; for p in "${gen_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

echo "demo: web display up at http://127.0.0.1:$web_port/ (the map; ?view=range for the range view)"
echo "demo: NATS users and permissions from deploy/nats/accounts.conf (passwords: $log_dir/passwords.env)" >&2
echo "demo: cluster ${urls[*]}; producer udp 127.0.0.1:$udp_port, metrics http://127.0.0.1:$metrics_port/metrics" >&2
where=""
[ "$sites" -gt 0 ] && where=" at the centre and at each of $sites sites (${site_names[*]})"
echo "demo: ${count} aircraft x ${rate} Hz ($style)$where; Ctrl+C to stop${duration:+, or after ${duration}s}" >&2
if [ "$sites" -gt 0 ]; then
  echo "demo: to cut a site's link by hand: add 'disabled: true' to the remote in $log_dir/site-<name>/site.conf and kill -HUP its nats-server (remove the line and HUP again to restore)" >&2
fi
start=$(date +%s)
cut_state=none
[ -n "$cut_site" ] && cut_state=pending
cut_k=-1
for k in "${!site_names[@]}"; do [ "${site_names[$k]}" = "$cut_site" ] && cut_k=$k; done
while :; do
  sleep 2
  elapsed=$(( $(date +%s) - start ))
  if [ "$cut_state" = pending ] && [ "$elapsed" -ge 10 ]; then
    site_link "$cut_k" down
    cut_state=cut
    echo "demo: ${elapsed}s: cut site $cut_site's link to the centre for ${cut_seconds}s; it keeps storing"
  elif [ "$cut_state" = cut ] && [ "$elapsed" -ge $((10 + cut_seconds)) ]; then
    site_link "$cut_k" up
    cut_state=healed
    healed_at=$elapsed
    echo "demo: ${elapsed}s: site $cut_site's link is back; backlog $(metric_at "${site_metrics[$cut_k]}" site_backlog)"
  fi
  for p in "${pids[@]}"; do
    if [[ " ${gen_pids[*]} " != *" $p "* ]] && ! kill -0 "$p" 2>/dev/null; then
      echo "demo: process $p exited unexpectedly; see the logs in $log_dir" >&2
      exit 1
    fi
  done
  # Downstream counts first (each only grows), so no lag is negative and no count
  # runs ahead of the one upstream of it.
  lines=$(wc -l < "$log_dir/receiver.jsonl")
  rows=$(archived)
  published=$(metric published_total)
  received=$(metric datagrams_received_total)
  invalid=$(metric datagrams_invalid_total)
  dropped=$(metric datagrams_dropped_total)
  # Each site: what its producer stored and what the centre has not confirmed yet.
  site_status="" all_published=$published
  for k in "${!site_names[@]}"; do
    site_published=$(metric_at "${site_metrics[$k]}" published_total)
    backlog=$(metric_at "${site_metrics[$k]}" site_backlog)
    all_published=$((all_published + site_published))
    note=""
    if [ "$k" = "$cut_k" ] && [ "$cut_state" = cut ]; then note=" (link cut)"
    elif [ "$k" = "$cut_k" ] && [ "$cut_state" = healed ]; then
      if [ "$backlog" -le "$((count * rate))" ]; then
        echo "demo: site $cut_site caught up $(( $(date +%s) - start - healed_at ))s after its link came back"
        cut_state=done
      else note=" (catching up)"; fi
    fi
    site_status+=" | site ${site_names[$k]} published $site_published backlog $backlog$note"
  done
  # The generator reports once a second: take its first report written after the
  # producer's counters were read, so a line never shows more received than sent.
  reports=$(wc -l < "$log_dir/generator.jsonl")
  for _ in $(seq 1 15); do
    [ "$(wc -l < "$log_dir/generator.jsonl")" -gt "$reports" ] && break
    kill -0 "$gen_pid" 2>/dev/null || break
    sleep 0.1
  done
  sent=$(tail -n 1 "$log_dir/generator.jsonl" 2>/dev/null | sed -n 's/.*"datagrams":\([0-9]*\).*/\1/p' || true)
  frames=$(grep -c '"event":"frame"' "$log_dir/player.jsonl" || true)
  printf 'demo %4ss | sent %s | producer received %s published %s invalid %s dropped %s | receiver lines %s (lag %s) | archived rows %s (lag %s) | player frames %s | display tabs %s%s\n' \
    "$(( $(date +%s) - start ))" "${sent:-0}" "$received" "$published" "$invalid" "$dropped" "$lines" \
    "$(( all_published - lines ))" "$rows" "$(( all_published - rows ))" "${frames:-0}" "$(tabs)" "$site_status"
  if ! generators_running; then
    # Generators done (--duration): let the tail of the pipeline drain (each site's
    # backlog into the centre first), show a sample, stop.
    sleep 2
    for k in "${!site_names[@]}"; do
      for _ in $(seq 1 240); do [ "$(metric_at "${site_metrics[$k]}" site_backlog)" = 0 ] && break; sleep 0.5; done
      echo "demo: site ${site_names[$k]} published $(metric_at "${site_metrics[$k]}" published_total); not yet at the centre: $(metric_at "${site_metrics[$k]}" site_backlog)"
    done
    published=$(metric published_total)
    for k in "${!site_names[@]}"; do published=$((published + $(metric_at "${site_metrics[$k]}" published_total))); done
    for _ in $(seq 1 60); do [ "$(wc -l < "$log_dir/receiver.jsonl")" -ge "$published" ] && break; sleep 0.5; done
    lines=$(wc -l < "$log_dir/receiver.jsonl")
    echo "demo: generator finished: $(tail -n 1 "$log_dir/generator.jsonl")"
    echo "demo: receiver printed $lines lines; the last one:"
    tail -n 1 "$log_dir/receiver.jsonl"
    for _ in $(seq 1 60); do [ "$(archived)" -ge "$published" ] && break; sleep 0.5; done
    primary_rows=$(psql_at "$pg_port" -d tspi -c "SELECT count(*) FROM messages WHERE kind = 'telemetry'")
    replica_rows=$(psql_at $((pg_port + 1)) -d tspi -c "SELECT count(*) FROM messages WHERE kind = 'telemetry'")
    alarm_rows=$(psql_at "$pg_port" -d tspi -c "SELECT count(*) FROM messages WHERE kind = 'alarm'")
    echo "demo: archive holds $primary_rows telemetry rows on the primary, $replica_rows on the replica, and $alarm_rows alarm transitions (the alarmer published $(alarm_transitions))"
    echo "demo: the player's last frame:"
    grep '"event":"frame"' "$log_dir/player.jsonl" | tail -n 1 || true
    # Every generator's final report: what was sent, to the centre and to each site.
    sent=0
    for report in "$log_dir/generator.jsonl" "$log_dir"/site-*/generator.jsonl; do
      [ -f "$report" ] || continue
      datagrams="$(tail -n 1 "$report" | sed -n 's/.*"datagrams":\([0-9]*\).*/\1/p')"
      sent=$((sent + ${datagrams:-0}))
    done
    exactness "$sent" "published=$published" "receiver lines=$lines" \
      "distinct lines=$(sort -u "$log_dir/receiver.jsonl" | wc -l)" \
      "primary rows=$primary_rows" "replica rows=$replica_rows" || exit 1
    break
  fi
done
