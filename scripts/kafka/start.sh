#!/usr/bin/env bash
# Start a single-node Apache Kafka broker (KRaft, broker and controller in one
# process) from Maven Central's jars: no Docker, no Kafka distribution.
#
#   scripts/kafka/start.sh DATA_DIR [PORT]    prints KAFKA_BOOTSTRAP=127.0.0.1:PORT
#   scripts/kafka/stop.sh DATA_DIR
#
# PORT defaults to a free port on 127.0.0.1. The broker runs in the background in
# a session of its own; its pid (broker.pid), log (broker.log), config and data
# stay in DATA_DIR. Starting again on a DATA_DIR that holds a broker's config
# reuses that config, ports included; on a running broker it only prints where.
# The jars are gathered once by Maven into LIVELEARN_KAFKA_LIB (default
# ~/.cache/livelearn/kafka/lib) and again only when pom.xml changes.
set -euo pipefail
for tool in java mvn python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: the broker needs Java 17+ and Maven" \
             "(Debian: apt-get install -y openjdk-17-jre-headless maven)" >&2
        exit 1
    fi
done
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:?usage: start.sh DATA_DIR [PORT]}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
lib="${LIVELEARN_KAFKA_LIB:-$HOME/.cache/livelearn/kafka/lib}"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cluster_id() {  # as kafka-storage random-uuid makes one (never starting with '-'), no JVM
    python3 -c 'import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]).startswith("-"): pass
print(i)'
}

gather_jars() {
    local stamp="$lib/.pom.sha256" want
    want="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    rm -rf "$lib" && mkdir -p "$lib"
    if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$lib" > "$lib/.maven.log" 2>&1; then
        cat "$lib/.maven.log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
}

write_config() {
    local port="${1:-$(free_port)}" controller
    controller="$(free_port)"
    while [[ "$controller" == "$port" ]]; do controller="$(free_port)"; done
    sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller|g" -e "s|@DATA_DIR@|$data|g" \
        "$here/server.properties.template" > "$data/server.properties"
}

already_running() {
    [[ -f "$data/broker.pid" ]] && kill -0 "$(cat "$data/broker.pid")" 2>/dev/null
}

wait_for_port() {
    local port="$1" pid="$2" deadline=$((SECONDS + 90))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka broker exited during start; the end of $data/broker.log:" >&2
            tail -n 30 "$data/broker.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "kafka broker did not open port $port in 90 s; see $data/broker.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

format_storage() {
    [[ -f "$data/kraft-logs/meta.properties" ]] && return
    if ! "${java[@]}" kafka.tools.StorageTool format --config "$data/server.properties" \
            --cluster-id "$(cluster_id)" --standalone >> "$data/broker.log" 2>&1; then
        echo "formatting the broker's storage failed; the end of $data/broker.log:" >&2
        tail -n 30 "$data/broker.log" >&2
        exit 1
    fi
}

mkdir -p "$(dirname "$lib")"
exec 9> "$lib.lock"
flock 9  # one Maven run at a time fills the shared lib folder
gather_jars
exec 9>&-
[[ -f "$data/server.properties" ]] || write_config "${2:-}"
# A small heap (KAFKA_HEAP_OPTS overrides it) and a JIT tuned for a short life.
read -ra heap <<< "${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
java=(java "${heap[@]}" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
      -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$lib/*")
port="$(sed -n 's|^advertised.listeners=PLAINTEXT://127.0.0.1:||p' "$data/server.properties")"
if [[ -n "${2:-}" && "$2" != "$port" ]]; then
    echo "$data already holds a broker on port $port, not $2" >&2
    exit 1
fi
if ! already_running; then
    format_storage
    setsid nohup "${java[@]}" kafka.Kafka "$data/server.properties" >> "$data/broker.log" 2>&1 \
        < /dev/null &
    echo $! > "$data/broker.pid"
    wait_for_port "$port" "$!"
fi
echo "KAFKA_BOOTSTRAP=127.0.0.1:$port"
