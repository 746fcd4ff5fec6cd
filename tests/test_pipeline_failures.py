"""The pipeline's own code failing on an input, in the joiner: that input is
dead-lettered (reason ``failed``, the function and its error in the detail), every
other one joined, and a restarted joiner goes on instead of failing again."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from livelearn import spec
from livelearn.events import Event
from livelearn.ingest import ingest
from livelearn.join.runner import JoinRunner
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.sim.pipeline import PIPELINE as FEED
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES

T0 = 1_704_067_200_000
TX = spec.Stream("tx", {"amount": float}, key="card", id="id")


def features(event: Event, rows: Mapping[str, Mapping[str, Any]],
             counts: Mapping[str, int]) -> dict[str, Any]:
    amount = event.payload["amount"]
    odd = {7: {"big": 2**70}, 8: {"small": np.float32(1)}, 9: {1: "a key not a string"},
           10: None}
    return odd[amount] if amount in odd else {"log_amount": math.log1p(amount)}  # < -1 raises


def label(event: Event) -> dict[str, float]:
    return {"y": 1 / (event.payload["amount"] - 6)}  # raises at 6


PIPELINE = spec.Pipeline(
    name="failing", feedback=spec.EventLabel(TX, label=label), features=features,
    learner=lambda: FTRL(bits=10), target="y",
    policies=spec.Policies(publish_every_samples=10**9, publish_every_ms=10**12))


def _joined(tmp_path: Path, amounts: list[float]) -> tuple[list[dict[str, Any]],
                                                           list[dict[str, Any]]]:
    events = [{"id": f"e{i}", "card": "c1", "ts": T0 + i, "amount": a}
              for i, a in enumerate(amounts)]
    (tmp_path / "tx.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    ingest(log, PIPELINE, "tx", tmp_path / "tx.jsonl")
    while JoinRunner(log, PIPELINE, data_dir=tmp_path).step(3, final=True):
        pass  # a new runner at every step: restarts go on past the failures
    return ([orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 100)],
            [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 100)])


def test_an_event_the_features_or_label_fail_on_is_dead_lettered(tmp_path: Path) -> None:
    samples, dead = _joined(tmp_path, [1.0, -5.0, 2.0, 6.0, 7.0, 8.0, 9.0, 3.0, 10.0])
    assert [s["id"] for s in samples] == ["e0", "e2", "e7"]
    assert [(d["reason"], d["stream"]) for d in dead] == [("failed", "tx")] * 6
    details = [d["detail"] for d in dead]
    assert details[0] == ("pipeline 'failing', event 'e1': the features function raised "
                          "ValueError: math domain error")
    assert details[1] == ("pipeline 'failing': the label function raised ZeroDivisionError: "
                          "float division by zero")
    # which function gave which feature: it said "Dict key must be str" only
    assert details[2] == ("sample 'e4' cannot be written as JSON: Integer exceeds 64-bit "
                          "range; the features function gave feature 'big' "
                          "1180591620717411303424 (int)")
    assert details[3] == ("sample 'e5' cannot be written as JSON: Type is not JSON "
                          "serializable: numpy.float32; the features function gave feature "
                          "'small' np.float32(1.0) (float32)")
    assert details[4] == ("sample 'e6' cannot be written as JSON: Dict key must be str; the "
                          "features function gave a feature named 1 (int): a name is text")
    # the trainer said "features is None", naming neither the function nor the pipeline
    assert details[5] == ("pipeline 'failing', event 'e8': the features function returned "
                          "None; expected a dict of feature names to values")
    assert orjson.loads(dead[0]["event"])["payload"]["amount"] == -5.0  # the event as read
    assert str(2**70) in dead[2]["event"]  # the sample as made, shown


def test_a_window_whose_label_fails_is_dead_lettered(tmp_path: Path) -> None:
    def clicked_unless_r1(events: Sequence[Event]) -> dict[str, float]:
        if any(e.payload["request_id"] == "r1" for e in events):
            raise RuntimeError("no label for r1")
        return {"clicked": float(bool(events))}

    pipeline = replace(FEED, feedback=replace(FEED.feedback, label=clicked_unless_r1))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in pipeline.topics:
        log.create_topic(topic)
    log.append(PREDICTIONS, [(f"r{i}", orjson.dumps({
        "request_id": f"r{i}", "ts": T0 + i, "user": "u1", "item": "p1", "model_version": 1,
        "score": 0.5, "features": {"topic": "t1"}})) for i in range(3)])
    log.append("click", [("u1", orjson.dumps({
        "stream": "click", "key": "u1", "id": f"c{i}", "ts": T0 + 1_000 + i,
        "payload": {"request_id": f"r{i}"}})) for i in range(3)])
    while JoinRunner(log, pipeline, idle_after_s=0).step(final=True):
        pass
    assert [orjson.loads(r.value)["id"] for r in log.read(SAMPLES, 0, 0, 10)] == ["r0", "r2"]
    (dead,) = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert dead["reason"] == "failed" and dead["stream"] == PREDICTIONS
    assert dead["detail"] == ("request 'r1': pipeline 'news_feed': the label function raised "
                              "RuntimeError: no label for r1")


def test_a_label_function_that_returns_no_dict_is_named(tmp_path: Path) -> None:
    """The trainer took such a sample and said only "sample cannot be learned (TypeError:
    'float' object is not subscriptable)", naming neither the function nor the pipeline."""
    def odd(event: Event) -> Any:
        return {"y": 1.0} if event.payload["amount"] < 5 else event.payload["amount"]

    events = [{"id": f"e{i}", "card": "c1", "ts": T0 + i, "amount": a}
              for i, a in enumerate([1.0, 7.5])]
    (tmp_path / "tx.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    pipeline = replace(PIPELINE, feedback=replace(PIPELINE.feedback, label=odd))
    log = SQLiteLog(tmp_path / "tx.db")
    for topic in pipeline.topics:
        log.create_topic(topic)
    ingest(log, pipeline, "tx", tmp_path / "tx.jsonl")
    while JoinRunner(log, pipeline, data_dir=tmp_path).step(final=True):
        pass
    assert [orjson.loads(r.value)["id"] for r in log.read(SAMPLES, 0, 0, 10)] == ["e0"]
    (dead,) = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert (dead["reason"], dead["stream"]) == ("failed", "tx")
    assert dead["detail"] == ("pipeline 'failing': the label function returned 7.5; "
                              "expected a dict of label names to values")

    def clicked(events: Sequence[Event]) -> Any:  # a feedback join's: a float, not a dict
        return float(bool(events))

    feed = replace(FEED, feedback=replace(FEED.feedback, label=clicked))
    log = SQLiteLog(tmp_path / "feed.db")
    for topic in feed.topics:
        log.create_topic(topic)
    log.append(PREDICTIONS, [("r0", orjson.dumps({
        "request_id": "r0", "ts": T0, "user": "u1", "item": "p1", "model_version": 1,
        "score": 0.5, "features": {"topic": "t1"}}))])
    while JoinRunner(log, feed, idle_after_s=0).step(final=True):
        pass
    assert log.read(SAMPLES, 0, 0, 10) == []
    (dead,) = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert (dead["reason"], dead["stream"]) == ("failed", PREDICTIONS)
    assert dead["detail"] == ("request 'r0': pipeline 'news_feed': the label function "
                              "returned 0.0; expected a dict of label names to values")


def test_a_record_nested_too_deep_for_a_checkpoint_is_dead_lettered(tmp_path: Path) -> None:
    """An event or a prediction nested more than events.MAX_NESTING levels, written by a
    producer other than ingest (which refuses it): the joiner stopped at its checkpoint,
    which orjson writes at most 255 levels deep, and again after every restart."""
    deep = b"[" * 250 + b"]" * 250
    records = {
        "tx": (PIPELINE, b'{"stream":"tx","key":"c1","id":"deep","ts":%d,'
                         b'"payload":{"amount":1.0,"x":%s}}' % (T0, deep)),
        PREDICTIONS: (FEED, b'{"request_id":"deep","ts":%d,"user":"u1","item":"i1",'
                            b'"model_version":1,"score":0.5,"features":{"x":%s}}' % (T0, deep)),
    }
    for topic, (pipeline, record) in records.items():
        log = SQLiteLog(tmp_path / f"{topic}.db")
        for name in pipeline.topics:
            log.create_topic(name)
        log.append(topic, [("k", record)])
        # not final, the inputs without records idle at once: what is open is checkpointed
        JoinRunner(log, pipeline, data_dir=tmp_path, idle_after_s=0).step()
        assert log.committed("joiner").offsets  # the checkpoint was written
        [dead] = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0)]
        assert (dead["reason"], dead["stream"]) == ("malformed", topic)
        assert dead["detail"].endswith("nests objects and arrays more than 100 levels deep")
