#!/usr/bin/env bash
# Stop the Flink session cluster that start-cluster.sh started in DATA_DIR (its
# TaskManager and JobManager, through Flink's own stop script and their pid files).
set -euo pipefail
data="${1:?usage: stop-cluster.sh DATA_DIR}"
data="$(cd "$data" && pwd)"
venv="${LIVELEARN_FLINK_VENV:-$HOME/.cache/livelearn/flink/venv}"
[[ -f "$data/conf/config.yaml" ]] || exit 0
home="$("$venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
export FLINK_CONF_DIR="$data/conf" FLINK_LOG_DIR="$data/log"
"$home/bin/stop-cluster.sh" >> "$data/log/stop.out" 2>&1 < /dev/null
