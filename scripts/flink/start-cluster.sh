#!/usr/bin/env bash
# Start a standalone Flink session cluster (one JobManager, one TaskManager) on
# 127.0.0.1 from the Flink distribution inside PyFlink's venv: no download.
#
#   scripts/flink/start-cluster.sh DATA_DIR    prints FLINK_ADDRESS=127.0.0.1:PORT
#   scripts/flink/stop-cluster.sh DATA_DIR
#
# FLINK_ADDRESS is the JobManager's REST address, what `livelearn join --engine flink
# --flink-address` submits to. The cluster's config (DATA_DIR/conf: REST and RPC
# ports free at the first start, small memory, 2 task slots), logs (DATA_DIR/log)
# and pid files stay in DATA_DIR. Starting again on a DATA_DIR that holds a config
# reuses it, ports included; on a running cluster it only prints where. Needs
# scripts/flink/setup.sh first (LIVELEARN_FLINK_VENV, default
# ~/.cache/livelearn/flink/venv).
set -euo pipefail
data="${1:?usage: start-cluster.sh DATA_DIR}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
venv="${LIVELEARN_FLINK_VENV:-$HOME/.cache/livelearn/flink/venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "no PyFlink venv at $venv: run scripts/flink/setup.sh" >&2
    exit 1
fi
home="$("$venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
conf="$data/conf"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_config() {
    local rest rpc opts
    rest="$(free_port)"
    rpc="$(free_port)"
    while [[ "$rpc" == "$rest" ]]; do rpc="$(free_port)"; done
    # the distribution's JVM options (--add-opens ... that Java 17 needs)
    opts="$(sed -n 's/^ *all: *//p' "$home/conf/config.yaml" | head -n 1)"
    mkdir -p "$conf" "$data/log"
    cp "$home"/conf/log4j*.properties "$home"/conf/logback*.xml "$conf/"
    cat > "$conf/config.yaml" <<YAML
env.java.opts.all: $opts
env.log.dir: $data/log
env.pid.dir: $data
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $rpc
jobmanager.bind-host: 127.0.0.1
jobmanager.memory.process.size: 1200m
jobmanager.execution.failover-strategy: region
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: 2
taskmanager.memory.process.size: 1g
taskmanager.memory.managed.fraction: 0.1
parallelism.default: 1
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $rest
YAML
    echo "127.0.0.1:$rest" > "$conf/masters"
    echo "127.0.0.1" > "$conf/workers"
}

rest_port() {
    sed -n 's/^rest.port: *//p' "$conf/config.yaml"
}

answers() {
    python3 - "$1" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/overview", timeout=2) as r:
        ok = json.load(r).get("taskmanagers", 0) > 0
except Exception:
    ok = False
sys.exit(0 if ok else 1)
PY
}

[[ -f "$conf/config.yaml" ]] || write_config
port="$(rest_port)"
if ! answers "$port"; then
    export FLINK_CONF_DIR="$conf" FLINK_LOG_DIR="$data/log"
    # the daemons outlive this script, in a session of their own
    setsid "$home/bin/start-cluster.sh" >> "$data/log/start.out" 2>&1 < /dev/null
    deadline=$((SECONDS + 90))
    until answers "$port"; do
        if ((SECONDS > deadline)); then
            echo "the Flink cluster did not answer on port $port in 90 s; the end of its logs:" >&2
            tail -n 20 "$data"/log/*.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi
echo "FLINK_ADDRESS=127.0.0.1:$port"
