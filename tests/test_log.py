"""The SQLite Log: partitions, offsets, commits, atomicity, several processes on one file."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from livelearn.errors import ConfigError, Corrupt, NotFound
from livelearn.log import Checkpoint, open_log, partition_for
from livelearn.log.sqlite import SQLiteLog


def test_append_and_read_in_offset_order(log: SQLiteLog) -> None:
    log.create_topic("t", partitions=1)
    assert log.append("t", [("k", b"a"), ("k", b"b"), ("j", b"c")]) == 3
    records = log.read("t", 0, 0)
    assert [(r.offset, r.key, r.value) for r in records] == [(0, "k", b"a"), (1, "k", b"b"),
                                                             (2, "j", b"c")]
    assert [r.value for r in log.read("t", 0, 1, max_records=1)] == [b"b"]
    assert log.end_offset("t", 0) == 3


def test_keys_choose_partitions_and_keep_their_order(log: SQLiteLog) -> None:
    log.create_topic("t", partitions=4)
    log.append("t", [(f"k{i % 7}", str(i).encode()) for i in range(100)])
    seen = 0
    for p in range(4):
        records = log.read("t", p, 0, 1000)
        assert [r.offset for r in records] == list(range(len(records)))
        assert all(partition_for(r.key, 4) == p for r in records)
        for key in {r.key for r in records}:
            values = [int(r.value) for r in records if r.key == key]
            assert values == sorted(values)
        seen += len(records)
    assert seen == 100


def test_commit_stores_offsets_and_state_together(log: SQLiteLog) -> None:
    assert log.committed("g") == Checkpoint()
    log.commit("g", Checkpoint({("t", 0): 5, ("u", 1): 2}, b"state"))
    assert log.committed("g") == Checkpoint({("t", 0): 5, ("u", 1): 2}, b"state")


def test_atomic_rolls_back_appends_and_commit_together(log: SQLiteLog) -> None:
    log.create_topic("t")
    with pytest.raises(RuntimeError), log.atomic():
        log.append("t", [("k", b"x")])
        log.commit("g", Checkpoint({("t", 0): 1}))
        raise RuntimeError("crash between write and checkpoint")
    assert log.end_offset("t", 0) == 0
    assert log.committed("g") == Checkpoint()


def test_survives_reopen(tmp_path: Path) -> None:
    first = SQLiteLog(tmp_path / "l.db")
    first.create_topic("t")
    first.append("t", [("k", b"v")])
    first.close()
    again = open_log(f"sqlite:///{tmp_path / 'l.db'}")
    assert again.read("t", 0, 0)[0].value == b"v"


def test_unknown_topic_and_bad_url_are_clear(log: SQLiteLog) -> None:
    with pytest.raises(NotFound, match="topic 'nope'"):
        log.partitions("nope")
    with pytest.raises(ConfigError, match="expected one of sqlite://"):
        open_log("postgres://x")


def _append_many(path: str, name: str) -> None:
    log = SQLiteLog(path)
    for i in range(200):
        log.append("t", [(name, f"{name}{i}".encode())])


def test_several_processes_append_to_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteLog(path).create_topic("t")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, n)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = SQLiteLog(path).read("t", 0, 0, 10_000)
    assert [r.offset for r in records] == list(range(400))
    for name in ("a", "b"):
        assert [r.value for r in records if r.key == name] == [
            f"{name}{i}".encode() for i in range(200)]


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(
        log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    log.commit("g", Checkpoint({("t", 0): 1}, b"one"))
    log.commit("g", Checkpoint({("t", 0): 2}, b"two"))
    conn = sqlite3.connect(log.path)
    conn.execute("UPDATE checkpoints SET state = ? WHERE grp = 'g' AND slot = 0", (b"tw",))
    conn.commit()
    assert log.committed("g") == Checkpoint({("t", 0): 1}, b"one")
    assert "corrupt" in caplog.text
    conn.execute("UPDATE checkpoints SET state = ? WHERE grp = 'g'", (b"x",))
    conn.commit()
    with pytest.raises(Corrupt, match="every checkpoint of group 'g'"):
        log.committed("g")
