"""One role per group: a joiner or trainer started while another of its group runs fences
that one off. The earlier one stops at its next write, saying why, and writes nothing of
it; so nothing is written twice. Real processes on a real SQLite log and registry (the
Log conformance suite checks claims on Kafka too)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from livelearn.demo import free_port
from livelearn.errors import ConfigError, Fenced
from livelearn.ingest import ingest
from livelearn.log import open_log
from livelearn.log.sqlite import SQLiteLog
from livelearn.loop import Loop
from livelearn.registry import Registry
from livelearn.spec import DEAD_LETTERS, SAMPLES
from livelearn.train.trainer import Trainer
from test_ingest import PIPELINE, PIPELINE_FILE
from test_run import ROOT, T, _process, _ratings, _samples, _up, _wait


def _claims(path: Path, group: str) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT epoch FROM claims WHERE grp = ?", (group,)).fetchone()
    return 0 if row is None else int(row[0])


def _livelearn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livelearn", "-q", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_second_joiner_fences_off_the_first_which_stops_saying_why(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    role = ["p.py", "--log", "sqlite:///log.db"]
    assert _livelearn("ingest", "p.py", "ratings", str(_ratings(tmp_path / "a.jsonl", 0, 200)),
                      "--log", "sqlite:///log.db", cwd=tmp_path).returncode == 0
    log = SQLiteLog(tmp_path / "log.db")
    with _process(["join", *role], tmp_path) as first:
        _wait(lambda: len(_samples(log)) == 199, "the first joiner's samples")
        with _process(["join", *role], tmp_path) as second:
            _wait(lambda: _claims(tmp_path / "log.db", "joiner") == 2, "the second claim")
            ingest = _livelearn("ingest", "p.py", "ratings",
                                str(_ratings(tmp_path / "b.jsonl", 200, 100)),
                                "--log", "sqlite:///log.db", cwd=tmp_path)
            assert ingest.returncode == 0, ingest.stderr
            assert first.wait(30) == 2
            assert first.stdout is not None
            said = first.stdout.read().decode()
            assert "livelearn: group 'joiner' of log 'log.db' was taken over by another " \
                   f"process (pid {second.pid} on " in said
            assert "Run one process per group: one joiner per shard" in said
            _wait(lambda: len(_samples(log)) == 299, "the second joiner's samples")
            assert second.poll() is None
    ids = Counter(s["id"] for s in _samples(log))
    assert len(ids) == 299 and max(ids.values()) == 1


def test_a_second_trainer_fences_off_the_first(tmp_path: Path) -> None:
    """Two processes' registries (two Registry objects): the earlier trainer's next publish
    raises Fenced and publishes nothing; the newer one publishes on."""
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    first = Trainer(log, Registry(tmp_path / "reg"), PIPELINE)
    second = Trainer(log, Registry(tmp_path / "reg"), PIPELINE)
    assert [v.id for v in Registry(tmp_path / "reg").versions()] == [1]
    first._since_publish = second._since_publish = 1  # as if each had learned a sample
    with pytest.raises(Fenced, match="group 'trainer' of registry .* was taken over by "
                                     "another process"):
        first.publish_now()
    assert second.publish_now() is not None
    assert [v.id for v in Registry(tmp_path / "reg").versions()] == [1, 2]


def test_run_stops_serving_when_its_roles_are_fenced_off(tmp_path: Path) -> None:
    """`livelearn run` serves while its roles turn in a thread: roles that fail stop the
    server, and the command ends saying why, not a server left serving a model that no
    longer learns."""
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "50"], cwd=ROOT, check=True)
    port = free_port()
    pipeline = str(ROOT / "examples/clicks/pipeline.py")
    with _process(["run", pipeline, "--workdir", "w", "--data", ".", "--port", str(port)],
                  tmp_path) as run:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(url), "the server")
        joined = _livelearn("join", pipeline, "--log", "sqlite:///w/log.db", "--until-idle",
                            cwd=tmp_path)
        assert joined.returncode == 0, joined.stderr
        httpx.post(f"{url}/predict", json={"user_id": "u1", "items": ["i1"], "ts": T})
        assert run.wait(30) == 2
        assert run.stdout is not None
        said = run.stdout.read().decode()
        assert "livelearn: group 'joiner' of log '" in said
        assert "w/log.db' was taken over by another process" in said


def test_a_superseded_trainers_gate_stops_at_its_next_verdict_and_writes_nothing(
        tmp_path: Path) -> None:
    """An idle trainer taken over never publishes again, so only its gate can write: it
    judged candidates beside the new trainer's gate (twice, or undoing the other's verdict)
    and ran on for as long as it was left running."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    role = ["p.py", "--log", "sqlite:///log.db", "--registry", "reg"]
    assert _livelearn("ingest", "p.py", "ratings", str(_ratings(tmp_path / "a.jsonl", 0, 200)),
                      "--log", "sqlite:///log.db", cwd=tmp_path).returncode == 0
    assert _livelearn("join", "p.py", "--log", "sqlite:///log.db", "--until-idle",
                      cwd=tmp_path).returncode == 0
    registry = Registry(tmp_path / "reg")
    with _process(["train", *role], tmp_path) as first:
        _wait(lambda: registry.statuses() == ["approved"], "the first version approved")
        with _process(["train", *role], tmp_path) as second:
            _wait(lambda: _claims(tmp_path / "reg" / "index.db", "trainer") == 2,
                  "the second claim")
            second.send_signal(signal.SIGSTOP)  # only the superseded gate can judge now
            try:
                candidate = registry.publish(PIPELINE.learner(), {"metric": "mae"}, parent=1)
                assert first.wait(30) == 2
                assert first.stdout is not None
                assert "livelearn: group 'trainer' of registry 'reg' was taken over by " \
                       f"another process (pid {second.pid} on " in first.stdout.read().decode()
                assert registry.get(candidate.id).status == "candidate"
            finally:
                second.send_signal(signal.SIGCONT)
            _wait(lambda: registry.get(candidate.id).status != "candidate", "its verdict")
            assert second.poll() is None
    assert [d["version"] for d in registry.decisions()].count(candidate.id) == 1


def test_an_earlier_trainer_still_running_writes_no_dead_letter(log_url: str,
                                                                 tmp_path: Path) -> None:
    """Dead letters are written with the trainer's list of them (group trainer.letters),
    which no trainer claimed: an earlier trainer still running wrote letters after a newer
    one started, and on Kafka its first one made the group's transactional producer anew,
    fencing off the newer trainer's, which then stopped at its next letter (Fenced). Now
    the earlier one is fenced off at its next letter, the newer one goes on."""
    log = open_log(log_url)
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    first = Trainer(log, Registry(tmp_path / "reg"), PIPELINE)
    second = Trainer(open_log(log_url), Registry(tmp_path / "reg"), PIPELINE)  # a process
    log.append(SAMPLES, [("bad1", b"[]")])
    second.step(100, final=True)
    with pytest.raises(Fenced, match="trainer.letters"):
        first.step(100, final=True)
    log.append(SAMPLES, [("bad2", b"[]")])
    second.step(100, final=True)
    assert second.malformed == 2
    letters = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert [d["source"] for d in letters] == [f"{SAMPLES}/0@0", f"{SAMPLES}/0@1"]


def test_a_second_run_on_the_port_of_one_running_fails_before_taking_its_roles_over(
        tmp_path: Path) -> None:
    """A `run` started again by mistake, on the port the first one serves on, stops saying
    the port is in use: it took over no role, and the first one goes on joining."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    args, port = ["p.py", "--workdir", "w"], free_port()
    assert _livelearn("ingest", *args[:1], "ratings", str(_ratings(tmp_path / "a.jsonl", 0, 50)),
                      *args[1:], cwd=tmp_path).returncode == 0
    log = SQLiteLog(tmp_path / "w" / "log.db")
    with _process(["run", *args, "--port", str(port)], tmp_path) as first:
        _wait(lambda: _up(f"http://127.0.0.1:{port}"), "the first run's server")
        second = _livelearn("run", *args, "--port", str(port), cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr == f"livelearn: cannot serve on 127.0.0.1:{port}: Address already " \
                                f"in use (is another server there? choose another --port)\n"
        assert _claims(tmp_path / "w" / "log.db", "joiner") == 1
        assert _livelearn("ingest", *args[:1], "ratings",
                          str(_ratings(tmp_path / "b.jsonl", 50, 50)), *args[1:],
                          cwd=tmp_path).returncode == 0
        _wait(lambda: len(_samples(log)) == 99, "the first run's samples of both files")
        assert first.poll() is None


def test_a_trainer_or_run_refused_for_another_logs_registry_fences_off_none(
        tmp_path: Path) -> None:
    """A `train` given a running trainer's registry with another log (a mistaken --log),
    or a `run` given a registry another log's trainer wrote, is refused saying why before
    it claims anything: the running joiner and trainer go on. Before, the refused trainer
    had claimed the registry's trainer group (and a run the log's joiner group), and the
    running ones stopped at their next write."""
    log, other = SQLiteLog(tmp_path / "log.db"), SQLiteLog(tmp_path / "other.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
        other.create_topic(topic)
    running = Loop(log, Registry(tmp_path / "reg"), PIPELINE)
    Trainer(other, Registry(tmp_path / "others"), PIPELINE)
    with pytest.raises(ConfigError, match="the registry is another log's"):
        Trainer(other, Registry(tmp_path / "reg"), PIPELINE)
    with pytest.raises(ConfigError, match="the registry is another log's"):
        Loop(log, Registry(tmp_path / "others"), PIPELINE)
    ingest(log, PIPELINE, "ratings", _ratings(tmp_path / "a.jsonl", 0, 300))
    running.drain(final=True)
    assert running.trainer.samples == 300


def test_a_replay_then_live_holds_its_port_from_the_start_and_serves_on_it(
        tmp_path: Path) -> None:
    """`replay --then-live` checked its --port at the start, then bound it again once the
    history was in: a server started meanwhile on that port took it, and the replay, its
    roles' groups claimed, stopped on 'Address already in use'. Now it holds the port from
    the start (another server there is refused) and serves on it once the history is in.
    The history comes on stdin, held open: the replay waits for it, its joiner claimed."""
    from livelearn.cli_data import bound_socket

    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    port, db = free_port(), tmp_path / "w" / "log.db"

    def claimed() -> bool:
        try:
            return db.exists() and _claims(db, "joiner") == 1
        except sqlite3.Error:  # its tables not made yet
            return False

    with subprocess.Popen([sys.executable, "-m", "livelearn", "-q", "replay", "p.py",
                           "--workdir", "w", "--events", "ratings=-", "--then-live", "--port",
                           str(port)], cwd=tmp_path, stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as replay:
        assert replay.stdin is not None
        try:
            _wait(claimed, "the replay's joiner")
            with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}: "
                                                  f"Address already in use"):
                bound_socket("127.0.0.1", port).close()  # as `livelearn serve` binds
            replay.stdin.write(_ratings(tmp_path / "a.jsonl", 0, 50).read_bytes())
            replay.stdin.close()
            _wait(lambda: _up(f"http://127.0.0.1:{port}"), "the replay's server")
            assert replay.poll() is None
        finally:
            replay.terminate()
