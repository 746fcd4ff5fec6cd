#!/usr/bin/env bash
# Set up what the Flink SQL joiner needs, outside the project's own venv:
#
#   scripts/flink/setup.sh        prints FLINK_PYTHON=... and FLINK_KAFKA_JAR=...
#
# - PyFlink (apache-flink, pinned below as PYFLINK is in src/livelearn/join/flink.py) in
#   a venv of its own, LIVELEARN_FLINK_VENV (default ~/.cache/livelearn/flink/venv, where
#   livelearn looks for it wherever it is installed), since its pins of pandas, pyarrow
#   and apache-beam clash with the project's.
# - The Kafka SQL connector jar from Maven Central, into LIVELEARN_FLINK_LIB
#   (default ~/.cache/livelearn/flink/lib); the wheel has no Kafka connector.
#
# Idempotent: a venv whose stamp names the pinned version and a jar already in the
# cache are kept as they are. Needs python3 (3.9-3.12), Java 11+ and Maven.
set -euo pipefail
FLINK_VERSION=2.3.0
CONNECTOR=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2
for tool in java mvn python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: the Flink joiner needs Python 3, Java 11+ and Maven" \
             "(Debian: apt-get install -y openjdk-17-jre-headless maven)" >&2
        exit 1
    fi
done
venv="${LIVELEARN_FLINK_VENV:-$HOME/.cache/livelearn/flink/venv}"
lib="${LIVELEARN_FLINK_LIB:-$HOME/.cache/livelearn/flink/lib}"
jar="$lib/$(echo "$CONNECTOR" | cut -d: -f2)-$(echo "$CONNECTOR" | cut -d: -f3).jar"

install_pyflink() {
    local stamp="$venv/.livelearn-flink"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$FLINK_VERSION" && -x "$venv/bin/python" ]]; then
        return
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "apache-flink==$FLINK_VERSION"
    echo "$FLINK_VERSION" > "$stamp"
}

fetch_connector() {
    [[ -s "$jar" ]] && return
    mkdir -p "$lib"
    if ! mvn -q -B dependency:copy -Dartifact="$CONNECTOR" -Dtransitive=false \
            -DoutputDirectory="$lib" > "$lib/.maven.log" 2>&1; then
        cat "$lib/.maven.log" >&2
        exit 1
    fi
}

mkdir -p "$(dirname "$lib")"
exec 9> "$lib.lock"
flock 9  # one setup at a time
install_pyflink
fetch_connector
echo "FLINK_PYTHON=$venv/bin/python"
echo "FLINK_KAFKA_JAR=$jar"
