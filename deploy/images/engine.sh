#!/usr/bin/env bash
# A Docker engine for the compose demo and its tests, on a machine without systemd:
#   deploy/images/engine.sh start STATE_DIR   a running engine answers, or, as root with
#                                            Debian's docker.io installed, dockerd is
#                                            started here (PID in STATE_DIR/dockerd.pid);
#                                            prints "running" or "started PID"
#   deploy/images/engine.sh stop STATE_DIR    stops the dockerd this script started (that
#                                            PID only), never an engine found running
# Exits 1 with one line on stderr when no engine can run here.
set -euo pipefail
action="${1:-}" state="${2:-}"
case "$action" in start|stop) ;; *) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;; esac
[ -n "$state" ] || { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
pid_file="$state/dockerd.pid"

if [ "$action" = stop ]; then
  [ -f "$pid_file" ] || exit 0
  pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pid_file"
  exit 0
fi

if ! command -v docker >/dev/null; then
  echo "engine: no docker client (apt-get install docker.io)" >&2
  exit 1
fi
if docker info >/dev/null 2>&1; then
  echo running
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "engine: no Docker engine answers and only root can start one here (docker info: $(docker info 2>&1 | tail -n 1))" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null; then
  echo "engine: no Docker engine answers and dockerd is not installed (apt-get install docker.io)" >&2
  exit 1
fi
mkdir -p "$state"
# The engine outlives this script: its own session, so a terminal's Ctrl+C reaches
# only whoever started it, who then stops it here.
setsid dockerd --host unix:///var/run/docker.sock > "$state/dockerd.log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$pid_file"
for _ in $(seq 1 150); do
  if docker info >/dev/null 2>&1; then
    echo "started $pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pid_file"
    echo "engine: dockerd exited: $(tail -n 1 "$state/dockerd.log")" >&2
    exit 1
  fi
  sleep 0.2
done
kill -TERM "$pid" 2>/dev/null || true
rm -f "$pid_file"
echo "engine: dockerd did not answer within 30 s: $(tail -n 1 "$state/dockerd.log")" >&2
exit 1
