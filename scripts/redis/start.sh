#!/usr/bin/env bash
# Start a Redis server for livelearn's online store, bound to 127.0.0.1.
#
#   scripts/redis/start.sh DATA_DIR [PORT]    prints REDIS=127.0.0.1:PORT
#
# PORT defaults to a free port. The server runs in the background with no
# persistence (--save '' --appendonly no): its pid (redis.pid) and log
# (redis.log) are in DATA_DIR. Stop it with: kill "$(cat DATA_DIR/redis.pid)".
# redis-server comes from Debian's package redis-server (.ci/run installs it).
set -euo pipefail
data="${1:?usage: start.sh DATA_DIR [PORT]}"
port="${2:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

for tool in redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: install Debian's package redis-server" \
             "(apt-get install -y redis-server; .ci/run does it)" >&2
        exit 1
    fi
done
mkdir -p "$data"
data="$(cd "$data" && pwd)"

setsid redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --save '' \
    --appendonly no >>"$data/redis.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$data/redis.pid"

fail() {
    echo "redis-server $1 on 127.0.0.1:$port; the end of $data/redis.log:" >&2
    tail -n 20 "$data/redis.log" >&2 || true
    exit 1
}
deadline=$((SECONDS + 20))
until [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; do
    kill -0 "$pid" 2>/dev/null || fail "exited during start"
    ((SECONDS <= deadline)) || fail "did not answer PING in 20 s"
    sleep 0.05
done
kill -0 "$pid" 2>/dev/null || fail "exited (is another server on the port?)"
echo "REDIS=127.0.0.1:$port"
