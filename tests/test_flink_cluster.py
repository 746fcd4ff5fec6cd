"""The Flink SQL join submitted to a Flink session cluster, against the embedded joiner.

scripts/flink/start-cluster.sh starts a standalone cluster (a JobManager and a
TaskManager on 127.0.0.1) from the distribution in PyFlink's venv; `livelearn join
--engine flink --until-idle --flink-address` submits the bounded job to it and waits,
and its samples must be the embedded joiner's on the same input log. An unbounded
join with --checkpoints, stopped halfway through its input and started again, must
resume from its checkpoint: every sample once; started with another window, it must
refuse to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import pytest

from livelearn.join import flink
from livelearn.log.kafka import KafkaLog
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES
from test_flink_join import (
    T0,
    N,
    _reasons,
    embedded,
    event,
    fill,
    flink_ready,
    prediction,
    read_all,
)

__all__ = ["flink_ready"]  # a fixture, used by name

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "flink"
#: How long a joiner has to start its job (the client plans it: half a minute to two on a
#: loaded 2-core machine) and commit its samples at a checkpoint (every 10 s): a bound on
#: a hung job, not a measure of a working one.
WAIT_S = 300


@pytest.fixture(scope="module")
def flink_address(flink_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HOST:PORT of a Flink session cluster that start-cluster.sh starts (about 25 s)."""
    data = tmp_path_factory.mktemp("flink-cluster")
    started = subprocess.run([str(SCRIPTS / "start-cluster.sh"), str(data)], capture_output=True,
                             text=True, timeout=120)
    try:
        if started.returncode:
            pytest.fail(f"scripts/flink/start-cluster.sh failed ({started.returncode}):\n"
                        f"{started.stderr[-3000:]}")
        yield started.stdout.strip().rpartition("FLINK_ADDRESS=")[2]
    finally:
        subprocess.run([str(SCRIPTS / "stop-cluster.sh"), str(data)], timeout=60, check=True)


def _jobs(address: str) -> list[dict[str, str]]:
    """The cluster's jobs: id and state."""
    with urllib.request.urlopen(f"http://{address}/jobs/overview", timeout=5) as r:
        return [{"jid": j["jid"], "state": j["state"]} for j in json.load(r)["jobs"]]


def test_the_cluster_gives_the_embedded_joiners_samples(flink_address: str,
                                                         kafka_bootstrap: str) -> None:
    ours = KafkaLog(kafka_bootstrap, prefix=f"e{uuid.uuid4().hex[:12]}.")
    theirs = KafkaLog(kafka_bootstrap, prefix=f"c{uuid.uuid4().hex[:12]}.")
    try:
        fill(ours)
        fill(theirs)
        want_samples, want_dead = embedded(ours)
        before = _jobs(flink_address)
        began = time.monotonic()
        # the demo pipeline, whose label function is the declared DEMO_LABELS
        done = subprocess.run(
            [sys.executable, "-m", "livelearn", "-q", "join", "livelearn.sim.pipeline:PIPELINE",
             "--log", f"kafka://{kafka_bootstrap}?prefix={theirs.prefix}", "--engine", "flink",
             "--until-idle", "--flink-address", flink_address],
            capture_output=True, text=True, timeout=WAIT_S)  # bounds a hung job only
        took = time.monotonic() - began
        assert done.returncode == 0, done.stderr[-3000:]
        got_samples, got_dead = read_all(theirs, SAMPLES), read_all(theirs, DEAD_LETTERS)
    finally:
        ours.close()
        theirs.close()
    assert len(want_samples) == N
    assert sorted(got_samples, key=lambda s: s["id"]) == sorted(want_samples, key=lambda s: s["id"])
    assert _reasons(got_dead) == _reasons(want_dead)
    # it ran on the cluster, not in a local mini-cluster of the client
    known = {j["jid"] for j in before}
    assert [j["state"] for j in _jobs(flink_address) if j["jid"] not in known] == ["FINISHED"], took


def test_a_bad_flink_address_is_a_config_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "livelearn", "join", "livelearn.sim.pipeline:PIPELINE",
         "--log", "kafka://127.0.0.1:1", "--engine", "flink", "--flink-address", "nohost"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "HOST:PORT" in done.stderr


class _Recorder:
    """What fill() appends, per topic, to be appended to a log later and in parts."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, bytes]]] = {}

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        self.records.setdefault(topic, [])

    def append(self, topic: str, records: Iterable[tuple[str, bytes]]) -> int:
        self.records.setdefault(topic, []).extend(records)
        return 0


def _ticks() -> dict[str, list[tuple[str, bytes]]]:
    """A prediction and feedback a day after the input: every input's watermark passes
    the end of every window of the input, which closes them all."""
    ts = T0 + N * 7_000 + 86_400_000
    return {PREDICTIONS: [("tick", orjson.dumps(prediction("tick", ts)))],
            "click": [("u1", orjson.dumps(event("click", "tick", ts, "tick-c")))],
            "read": [("u1", orjson.dumps(event("read", "tick", ts, "tick-r", seconds=1.0)))]}



def _wait_for(what: str, check: Callable[[], bool], timeout_s: float,
              process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert process.poll() is None, f"the joiner ended:\n{output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s"
        time.sleep(0.5)


def test_a_restarted_unbounded_join_resumes_from_its_checkpoint(
        flink_address: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    """Half the input, an unbounded join on the cluster until its first checkpoint
    committed samples, stopped (SIGTERM: it cancels its job); the rest of the input;
    the join started again from the same checkpoint directory: the predictions whose
    windows were open at the stop come from the restored state, and every sample comes
    once, as the embedded joiner makes them from the whole input. Then a join of another
    window is refused that directory."""
    whole = _Recorder()
    fill(whole)  # type: ignore[arg-type]
    ticks = _ticks()
    ours = KafkaLog(kafka_bootstrap, prefix=f"e{uuid.uuid4().hex[:12]}.")
    theirs = KafkaLog(kafka_bootstrap, prefix=f"k{uuid.uuid4().hex[:12]}.")
    command = [sys.executable, "-m", "livelearn", "-q", "join", "livelearn.sim.pipeline:PIPELINE",
               "--log", f"kafka://{kafka_bootstrap}?prefix={theirs.prefix}", "--engine", "flink",
               "--flink-address", flink_address, "--checkpoints", str(tmp_path / "checkpoints")]
    try:
        for topic, records in whole.records.items():
            ours.create_topic(topic)
            theirs.create_topic(topic)
            ours.append(topic, records + ticks.get(topic, []))
            theirs.append(topic, records[:len(records) // 2])
        want = [s for s in embedded(ours)[0] if s["id"] != "tick"]
        before = _jobs(flink_address)
        began = time.monotonic()
        first = _run(command, tmp_path / "first.txt")
        try:
            _wait_for("committed samples", lambda: bool(read_all(theirs, SAMPLES)), WAIT_S, first,
                      tmp_path / "first.txt")
        finally:
            _stop(first)
        assert first.returncode == 143, (tmp_path / "first.txt").read_text()[-3000:]
        kept = flink.newest_checkpoint(tmp_path / "checkpoints")
        assert kept is not None
        halfway = read_all(theirs, SAMPLES)
        assert 0 < len(halfway) < N
        for topic, records in whole.records.items():
            theirs.append(topic, records[len(records) // 2:] + ticks.get(topic, []))
        second = _run(command, tmp_path / "second.txt")
        try:
            _wait_for("every sample", lambda: len(read_all(theirs, SAMPLES)) >= N, WAIT_S, second,
                      tmp_path / "second.txt")
        finally:
            _stop(second)
        # the stopped clients' JVMs were killed: what they unpacked went with their folders
        assert not list((tmp_path / "tmp").iterdir())
        took = time.monotonic() - began
        got = read_all(theirs, SAMPLES)
    finally:
        ours.close()
        theirs.close()
    assert len(want) == N
    assert len(got) == N, (len(got), took)  # none twice
    assert sorted(got, key=lambda s: s["id"]) == sorted(want, key=lambda s: s["id"])
    # both jobs were cancelled, none is left running on the cluster (cancelling takes a moment)
    deadline = time.monotonic() + 60
    while True:
        known = {j["jid"] for j in before}
        states = sorted(j["state"] for j in _jobs(flink_address) if j["jid"] not in known)
        if states == ["CANCELED"] * 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == ["CANCELED"] * 2
    # started again with another window: refused, before any job is submitted
    other = tmp_path / "other_window.py"
    other.write_text("import dataclasses\nfrom livelearn.sim.pipeline import PIPELINE as DEMO\n"
                     "PIPELINE = dataclasses.replace(DEMO, feedback=dataclasses.replace("
                     "DEMO.feedback, window_ms=300_000))\n")
    refused = subprocess.run([*command[:5], str(other), *command[6:]], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.startswith(
        f"livelearn: the Flink join's checkpoint directory {tmp_path / 'checkpoints'} was made "
        "with window 600000 ms; the pipeline now says 300000 ms."), refused.stderr
    assert len([j for j in _jobs(flink_address) if j["jid"] not in known]) == 2


def _run(command: list[str], output: Path) -> subprocess.Popen[bytes]:
    """``command`` started, its output to ``output``, its temporary files in a folder
    ``tmp`` beside it."""
    tmp = output.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    with output.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TMPDIR": str(tmp)})


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
