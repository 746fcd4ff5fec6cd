"""Records handed on within a process: the SQLite and in-memory logs keep the last
records this process appended with their values decoded, and a role reading them
here takes those objects instead of parsing the bytes. What it reads must not change."""

from __future__ import annotations

import enum
import math
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from livelearn.deploy.gate import Gate
from livelearn.events import plain_json
from livelearn.ingest import ingest
from livelearn.join.runner import JoinRunner, _plain
from livelearn.log.base import Log, Record
from livelearn.log.memory import MemoryLog
from livelearn.log.sqlite import SQLiteLog
from livelearn.loop import Loop
from livelearn.registry import Registry
from livelearn.spec import SAMPLES
from livelearn.train.trainer import Trainer
from test_point_in_time import PIPELINE, _history


def _values(n: int) -> list[dict[str, int]]:
    return [{"n": i} for i in range(n)]


@pytest.fixture(params=["sqlite", "memory"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Log:
    return SQLiteLog(tmp_path / "log.db") if request.param == "sqlite" else MemoryLog()


def test_a_process_reads_its_own_appends_decoded_and_another_reads_the_bytes(tmp_path: Path
                                                                              ) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    for partitions in (2, 1):
        log.create_topic(f"t{partitions}", partitions)
        values = _values(10)
        items = [(f"k{i}", orjson.dumps(v)) for i, v in enumerate(values)]
        log.append(f"t{partitions}", items, values)
        items.clear()  # the writer's lists are its own again
        values.clear()
    other = SQLiteLog(tmp_path / "log.db")  # another process, as far as decoding goes
    for topic, partition in (("t2", 0), ("t2", 1), ("t1", 0)):
        mine, theirs = log.read(topic, partition, 0, 100), other.read(topic, partition, 0, 100)
        assert mine and [r[:5] for r in mine] == [r[:5] for r in theirs]
        assert [r.decoded for r in mine] == [orjson.loads(r.value) for r in mine]
        assert all(r.decoded is None for r in theirs)
        # from an offset inside the last append, and no more than asked
        assert log.read(topic, partition, 1, 2) == mine[1:3]
    assert len(log.read("t1", 0, 0, 100)) == 10


def test_only_the_last_append_is_kept_and_a_read_before_it_gets_bytes(log: Log) -> None:
    log.create_topic("t", 2)
    first, second = _values(6), _values(10)[6:]
    log.append("t", [(f"k{v['n']}", orjson.dumps(v)) for v in first], first)
    log.append("t", [(f"k{v['n']}", orjson.dumps(v)) for v in second], second)
    for partition in range(2):
        records = log.read("t", partition, 0, 100)  # from the first: all, as bytes
        assert records and all(r.decoded is None for r in records)
        last = [r for r in records if orjson.loads(r.value) in second]
        assert [r.decoded for r in log.read("t", partition, last[0].offset, 100)] == [
            orjson.loads(r.value) for r in last]
    both = [orjson.loads(r.value) for p in range(2) for r in log.read("t", p, 0, 100)]
    assert sorted(both, key=lambda v: v["n"]) == first + second


def test_a_rolled_back_append_is_not_handed_on(log: Log) -> None:
    log.create_topic("t")
    with pytest.raises(RuntimeError), log.atomic():
        log.append("t", [("k", b'{"n":1}')], [{"n": 1}])
        raise RuntimeError("crash before the commit")
    log.append("t", [("k", b'{"n":2}')])
    [record] = log.read("t", 0, 0)
    assert record._replace(appended_ms=None) == Record("t", 0, 0, "k", b'{"n":2}')


class Tier(enum.StrEnum):
    GOLD = "gold"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, ("a", 1), ["a"],
                                   {"a": 1}, Tier.GOLD, np.float32(1.5), 2**64, -(2**63) - 1])
def test_a_sample_that_json_would_change_is_not_handed_on(value: object) -> None:
    sample = {"id": "s", "features": {"ok": "x", "odd": value}, "labels": {"y": 1.0}}
    assert not _plain(sample)
    assert not _plain({**sample, "features": {"ok": "x"}, "labels": {"y": value}})


def test_a_sample_with_a_key_not_a_str_or_features_not_a_dict_is_not_plain() -> None:
    assert not _plain({"id": "s", "features": {1: "x"}, "labels": {"y": 1.0}})
    assert not _plain({"id": "s", "features": ["x"], "labels": {"y": 1.0}})


def test_a_plain_sample_is_handed_on_as_it_is() -> None:
    sample = {"id": "s", "features": {"s": "x", "i": 3, "f": -0.5, "b": True, "n": None,
                                      "big": 2**64 - 1, "low": -(2**63), "e": 1e22},
              "labels": {"y": 0.0}}
    assert _plain(sample)
    assert orjson.loads(plain_json(sample)) == sample
    assert orjson.loads(orjson.dumps(sample)) == sample


def test_the_trainer_learns_the_same_from_handed_samples_as_from_the_file(tmp_path: Path
                                                                           ) -> None:
    """One process running joiner and trainer over SQLite or memory (samples handed on)
    against a trainer on its own connection to the file (samples parsed): the same
    scores, the same model."""
    _, events = _history(tmp_path, random.Random(7))
    runs = {}
    for name in ("parsed", "sqlite", "memory"):
        log = MemoryLog() if name == "memory" else SQLiteLog(tmp_path / f"{name}.db")
        loop = Loop(log, Registry(tmp_path / f"{name}-registry"), PIPELINE, tmp_path, turn=7)
        ingest(log, PIPELINE, "views", tmp_path / "views.jsonl")
        if name == "parsed":  # a trainer (and its gate) of its own log object: nothing
            own, registry = SQLiteLog(tmp_path / f"{name}.db"), Registry(  # handed on
                tmp_path / f"{name}-registry")
            loop.trainer, loop.gate = Trainer(own, registry, PIPELINE), Gate.of(own, registry,
                                                                                 PIPELINE)
        scores: list[np.ndarray] = []
        loop.on_trained = lambda trained, kept=scores: kept.append(trained.scores)
        loop.drain()
        last = loop.trainer.log.read(SAMPLES, 0, len(events) - 1)
        assert (last[0].decoded is None) == (name == "parsed")
        runs[name] = (np.concatenate(scores), loop.trainer.model.state())
    parsed, parsed_state = runs.pop("parsed")
    assert len(parsed) == len(events)
    for handed, handed_state in runs.values():
        assert np.array_equal(handed, parsed)
        assert all(np.array_equal(handed_state[k], parsed_state[k]) for k in parsed_state)


def test_a_joiner_on_its_own_hands_nothing_on(tmp_path: Path) -> None:
    """`livelearn join` has no trainer in its process: it keeps no sample decoded."""
    _, events = _history(tmp_path, random.Random(7))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    ingest(log, PIPELINE, "views", tmp_path / "views.jsonl")
    runner = JoinRunner(log, PIPELINE, data_dir=tmp_path)
    while runner.step(final=True):
        pass
    samples = log.read(SAMPLES, 0, 0, len(events))
    assert len(samples) == len(events) and all(r.decoded is None for r in samples)
