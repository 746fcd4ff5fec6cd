#!/usr/bin/env bash
# Stop the broker that start.sh started in DATA_DIR: TERM, then KILL after 30 s.
# Only a process whose command line is that broker's is signalled.
set -euo pipefail
data="${1:?usage: stop.sh DATA_DIR}"
data="$(cd "$data" && pwd)"
pidfile="$data/broker.pid"
[[ -f "$pidfile" ]] || exit 0
pid="$(cat "$pidfile")"

ours() {
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $data/server.properties"
}

if ours; then
    kill "$pid"
    for _ in $(seq 150); do
        ours || break
        sleep 0.2
    done
    if ours; then kill -9 "$pid"; fi
fi
rm -f "$pidfile"
