"""A Kafka broker that goes away under a command: the command ends with one line saying
which request failed, not among librdkafka's own messages (a line for each failed
connection, several a second), which show only with ``livelearn -v``. On a broker of the
test's own, started and stopped by scripts/kafka (start.sh, stop.sh)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import KAFKA_SCRIPTS
from livelearn.demo import free_port
from livelearn.log.kafka import KafkaLog
from test_ingest import PIPELINE_FILE, T

LINE = f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}\n'


def test_a_broker_gone_is_one_line_and_librdkafkas_messages_are_for_v(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    data = tmp_path / "kafka"
    started = subprocess.run([str(KAFKA_SCRIPTS / "start.sh"), str(data)], capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip().rpartition("KAFKA_BOOTSTRAP=")[2]
    try:
        # two ingests from stdin, without and with -v, each writing its first batch (one
        # Kafka transaction) while the broker is up
        ingests = {flags: subprocess.Popen(
            [sys.executable, "-m", "livelearn", *flags, "ingest", str(tmp_path / "p.py"),
             "ratings", "-", "--log", f"kafka://{bootstrap}?prefix=p{len(flags)}.&timeout=5"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for flags in ((), ("-v",))}
        for ingest in ingests.values():
            assert ingest.stdin is not None
            ingest.stdin.write(LINE * 2000)  # ingest.BATCH: one transaction
            ingest.stdin.flush()
        for n in range(2):
            log, deadline = KafkaLog(bootstrap, f"p{n}.", timeout_s=5), time.monotonic() + 30
            while not log.end_offset("ratings", 0) >= 2000:
                assert time.monotonic() < deadline, "the first batch was not written"
                time.sleep(0.2)
            log.close()
    finally:
        subprocess.run([str(KAFKA_SCRIPTS / "stop.sh"), str(data)], timeout=60, check=True)
    done = {flags: ingest.communicate(LINE * 10, timeout=60)[1].splitlines()
            for flags, ingest in ingests.items()}
    for flags, ingest in ingests.items():
        assert ingest.returncode == 2, done[flags]
        assert done[flags][-1].startswith(f"livelearn: kafka://{bootstrap}: a transaction of "
                                          f"10 records failed: ")
    assert len(done[()]) <= 3, done[()]  # a line per failed connection before: 19 in 5 s
    assert any(" livelearn.log.librdkafka ERROR FAIL " in x and "Connection refused" in x
               for x in done[("-v",)]), done[("-v",)]


def test_a_wrong_address_is_one_line_and_v_shows_the_attempts_meanwhile(tmp_path: Path
                                                                         ) -> None:
    """Nothing listens at the address: the command ends after the URL's timeout with one
    line naming it; with -v, librdkafka's line for each failed connection shows while it
    waits (they were held until a client was polled, and nothing polled at start)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "one.jsonl").write_text(LINE)
    address = f"127.0.0.1:{free_port()}"
    for flags in ((), ("-v",)):
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "livelearn", *flags, "ingest", str(tmp_path / "p.py"),
             "ratings", str(tmp_path / "one.jsonl"), "--log", f"kafka://{address}?timeout=3"],
            capture_output=True, text=True, timeout=60)
        lines = done.stderr.splitlines()
        assert done.returncode == 2, lines
        assert time.monotonic() - began < 20, lines
        assert lines[-1] == (f"livelearn: kafka://{address}: creating topic 'predictions' "
                             f"failed: no answer in 3 s (is {address} a Kafka broker's "
                             f"address? livelearn -v shows each attempt to connect)"), lines
        refused = [x for x in lines if " livelearn.log.librdkafka ERROR FAIL " in x
                   and "Connection refused" in x]
        assert bool(refused) == bool(flags), lines
        assert flags or len(lines) == 1, lines
