"""The memory:// Log keeps the protocol, and a replay over it equals one over SQLite."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest

from livelearn.errors import ConfigError, NotFound
from livelearn.log import open_log
from livelearn.log.base import Checkpoint
from livelearn.log.memory import MemoryLog
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.replay import replay
from test_point_in_time import PIPELINE, _history


def test_protocol() -> None:
    log = open_log("memory://")
    log.create_topic("t", 3)
    with pytest.raises(ConfigError, match="has 3 partition"):
        log.create_topic("t", 5)  # a log keeps the count it was made with
    assert log.partitions("t") == 3
    log.append("t", [(f"k{i % 4}", str(i).encode()) for i in range(40)])
    records = [r for p in range(3) for r in log.read("t", p, 0, 100)]
    assert sorted(int(r.value) for r in records) == list(range(40))
    for p in range(3):
        end = log.end_offset("t", p)
        assert [r.offset for r in log.read("t", p, 2, 3)] == list(range(2, min(5, end)))
    with pytest.raises(RuntimeError), log.atomic():
        log.append("t", [("k0", b"x")])
        log.commit("g", Checkpoint({("t", 0): 1}, b"s"))
        raise RuntimeError
    assert sum(log.end_offset("t", p) for p in range(3)) == 40
    assert log.committed("g") == Checkpoint()
    with pytest.raises(NotFound, match="topic 'nope'"):
        log.read("nope", 0, 0)
    with pytest.raises(ConfigError, match="expected memory://"):
        MemoryLog.from_url("memory://x")


def test_replay_equals_sqlite(tmp_path: Path) -> None:
    _history(tmp_path, random.Random(9))
    source = [("views", str(tmp_path / "views.jsonl"))]
    reports, samples = [], []
    for name, log in (("sqlite", SQLiteLog(tmp_path / "log.db")), ("memory", MemoryLog())):
        report, _ = replay(log, Registry(tmp_path / name), PIPELINE, source, data_dir=tmp_path)
        reports.append({k: v for k, v in report.items() if k not in ("seconds", "events_per_s")})
        samples.append([orjson.loads(r.value) for r in log.read("samples", 0, 0, 10**6)])
    assert reports[0] == reports[1] and samples[0] == samples[1] and samples[0]


def test_each_record_says_when_it_was_appended() -> None:
    """Record.appended_ms, for records read back decoded and as bytes, on every read."""
    log = MemoryLog()
    log.create_topic("t", 2)
    before = int(time.time() * 1000)
    log.append("t", [(f"k{i}", b"{}") for i in range(6)])
    with pytest.raises(RuntimeError), log.atomic():
        log.append("t", [("k0", b"{}")])
        raise RuntimeError("rolled back: no time of its own")
    log.append("t", [("k1", b'{"n":1}')], [{"n": 1}])
    time.sleep(0.01)
    log.append("t", [(f"k{i}", b"[]") for i in range(6)])
    after = int(time.time() * 1000)
    records = [r for p in range(2) for r in log.read("t", p, 0, 100)]
    one_by_one = [r for p in range(2) for o in range(log.end_offset("t", p))
                  for r in log.read("t", p, o, 1)]
    assert len(records) == 13 and any(r.decoded == {"n": 1} for r in one_by_one)
    times = [r.appended_ms for r in records]
    assert all(t is not None and before <= t <= after for t in times)
    assert times == [r.appended_ms for r in one_by_one]
    first, last = ({r.appended_ms for r in records if r.value == v} for v in (b"{}", b"[]"))
    assert len(first) == len(last) == 1 and first.pop() < last.pop()
