"""Several processes on one embedded pipeline: its log and registry are SQLite files that
commands share (a `run`, ingests, `models`, `dead-letters`, a server). A file another
process keeps locked is waited for a bounded time, then named in one line; readers go
on meanwhile. Real processes hold the locks, on real files."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import livelearn.log.sqlite
from conftest import ServerThread
from livelearn.cli import main
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.serve.holder import ModelHolder
from livelearn.train.trainer import Trainer
from test_ingest import PIPELINE, PIPELINE_FILE, T
from test_run import _ratings, _wait

#: A process that takes the write lock of the SQLite file argv[1], says so, and holds it
#: until its stdin is closed.
HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Another process holding the write lock of SQLite file ``path`` inside the block."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """The wait for another process's lock, made short for the test (30 s by default)."""
    monkeypatch.setattr(livelearn.log.sqlite, "LOCK_WAIT_S", 0.5)
    return 0.5


def test_an_ingest_into_a_log_locked_too_long_says_so_and_the_readers_go_on(
        tmp_path: Path, short_wait: float, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    ratings = str(_ratings(tmp_path / "r.jsonl", 0, 20))
    ingest = ["-q", "ingest", str(tmp_path / "p.py"), "ratings", ratings, "--workdir",
              str(tmp_path / "w")]
    assert main(ingest) == 0
    log = tmp_path / "w" / "log.db"
    capsys.readouterr()
    with _locked(log):
        assert main(ingest) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"livelearn: SQLite file {log} stayed locked by another process "
                              f"for 0.5 s, the longest livelearn waits (database is locked): "
                              f"is a command writing to it stopped (Ctrl-Z)"), err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert main(["-q", "dead-letters", str(tmp_path / "p.py"), "--workdir",
                     str(tmp_path / "w")]) == 0  # a reader does not wait for the writer
    assert len(SQLiteLog(log).read("ratings", 0, 0, 100)) == 20  # nothing of the second
    assert main(ingest) == 0


def test_models_waits_for_a_registry_locked_too_long_then_says_so(
        tmp_path: Path, short_wait: float, capsys: pytest.CaptureFixture[str]) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    Trainer(log, Registry(tmp_path / "reg"), PIPELINE)  # publishes v1
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    models = ["-q", "models", str(tmp_path / "p.py"), "--registry", str(tmp_path / "reg")]
    capsys.readouterr()
    with _locked(tmp_path / "reg" / "index.db"):
        assert main([*models, "promote", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"livelearn: SQLite file {tmp_path / 'reg' / 'index.db'} stayed "
                              f"locked by another process for 0.5 s"), err
        assert main([*models, "ls"]) == 0  # a reader does not wait for the writer
        assert "│ 1       │ -      │ candid" in capsys.readouterr().out
    assert Registry(tmp_path / "reg").get(1).status == "candidate"


def test_a_server_answers_503_naming_the_file_while_its_log_is_locked_too_long(
        tmp_path: Path, short_wait: float) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, PIPELINE)
    event = {"stream": "ratings", "key": "u1", "id": "r1", "ts": T,
             "payload": {"movie": "m1", "stars": 4.0}}
    with ServerThread(create_app(PIPELINE, log, registry, tmp_path)) as server:
        with _locked(tmp_path / "log.db"):
            refused = httpx.post(f"{server.url}/feedback", json=[event], timeout=30)
            assert refused.status_code == 503, refused.text
            assert f"SQLite file {tmp_path / 'log.db'} stayed locked" in refused.json()["detail"]


def test_a_servers_model_poll_on_a_registry_locked_too_long_says_so_in_one_line(
        tmp_path: Path, short_wait: float, caplog: pytest.LogCaptureFixture) -> None:
    """The poll that records the version served (its first request's time) waits for the
    index another process keeps locked, then fails: it logged a whole traceback for an
    error of livelearn's own, which names the file. Now one line says what failed and that
    the version served goes on serving; a traceback is for an unexpected error only."""
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, PIPELINE)  # publishes v1
    registry.promote(1, "test")
    holder = ModelHolder(registry, poll_s=0.01)
    holder.start()  # serves v1, recorded serving from a time not known yet
    try:
        with caplog.at_level(logging.INFO, logger="livelearn.serve"):
            with _locked(tmp_path / "reg" / "index.db"):
                holder.observe(T)  # the first request's time: the next poll records it
                _wait(lambda: "model poll failed" in caplog.text, "the poll to fail")
            _wait(lambda: "model poll works again" in caplog.text, "the poll to work again")
    finally:
        holder.stop()
    failed = [r for r in caplog.records if "model poll failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert failed[0].getMessage() == (
        f"model poll failed: Unavailable: SQLite file {tmp_path / 'reg' / 'index.db'} stayed "
        f"locked by another process for 0.5 s, the longest livelearn waits (database is "
        f"locked): is a command writing to it stopped (Ctrl-Z), or another program holding a "
        f"transaction open? Once it lets go, try again; still serving v1, trying again every "
        f"0.01 s (logged again if the error changes)")
    assert registry.get(1).serving_since_ts == T
