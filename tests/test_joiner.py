"""The feedback join, checked against its semantics (joiner.py's docstring) rule by rule."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from livelearn.errors import ConfigError
from livelearn.join.joiner import Joiner, Output
from livelearn.join.runner import STATE_BYTES_PER_RECORD, JoinRunner
from livelearn.log.base import Checkpoint, Record
from livelearn.log.sqlite import SQLiteLog
from livelearn.sim.pipeline import PIPELINE, label
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES

T0 = 1_767_571_200_000
W = 600_000
INPUTS = [(PREDICTIONS, 0), ("click", 0), ("read", 0)]


def prediction(rid: str, ts: int, **features: Any) -> dict[str, Any]:
    return {"request_id": rid, "ts": ts, "user": "u1", "item": "p1", "model_version": 1,
            "score": 0.25, "features": features or {"topic": "t1"}}


def click(rid: str, ts: int, eid: str | None = None) -> dict[str, Any]:
    return {"stream": "click", "key": "u1", "id": eid or f"c-{rid}-{ts}", "ts": ts,
            "payload": {"request_id": rid}}


class Feed:
    """Feeds a Joiner records as the runner would, with offsets per input."""

    def __init__(self, lateness: int = 0):
        self.joiner = Joiner(INPUTS, PIPELINE.schemas, W, label, allowed_lateness_ms=lateness)
        self.offsets: dict[str, int] = {}
        self.out: list[Output] = []

    def send(self, topic: str, value: dict[str, Any] | bytes) -> list[Output]:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        got = self.joiner.process(Record(topic, 0, offset, "k", raw))
        self.out += got
        return got

    def tick(self, ts: int) -> None:
        """Move every input's event time to ``ts`` with a click nobody asked for... no:
        with predictions and clicks of a bystander request, so the watermark moves."""
        self.send(PREDICTIONS, prediction(f"tick{ts}", ts))
        self.send("click", click(f"tick{ts}", ts))
        self.send("read", {"stream": "read", "key": "u", "id": f"r{ts}", "ts": ts,
                           "payload": {"request_id": f"tick{ts}", "seconds": 1.0}})

    def samples(self) -> dict[str, dict[str, Any]]:
        return {o.key: o.value for o in self.out if o.topic == SAMPLES}

    def dead(self) -> list[tuple[str, str]]:
        return [(o.value["reason"], o.value["stream"]) for o in self.out
                if o.topic == DEAD_LETTERS]


def test_a_click_inside_the_window_labels_the_served_features() -> None:
    f = Feed()
    f.send(PREDICTIONS, prediction("r1", T0, topic="sports", user_x_topic="u1|sports"))
    f.send("click", click("r1", T0 + W))  # the end of the window is inclusive
    f.tick(T0 + W)
    assert "r1" not in f.samples()  # the watermark has not passed t + W yet
    f.tick(T0 + W + 1)
    sample = f.samples()["r1"]
    assert sample["labels"] == {"clicked": 1.0, "dwell_s": 0.0}
    assert sample["features"] == {"topic": "sports", "user_x_topic": "u1|sports"}
    assert (sample["ts"], sample["window_end"], sample["score"]) == (T0, T0 + W, 0.25)


def test_no_feedback_gives_the_labels_of_nothing() -> None:
    f = Feed()
    f.send(PREDICTIONS, prediction("r1", T0))
    f.tick(T0 + W + 1)
    assert f.samples()["r1"]["labels"] == {"clicked": 0.0, "dwell_s": 0.0}


def test_reads_sum_into_dwell() -> None:
    f = Feed()
    f.send(PREDICTIONS, prediction("r1", T0))
    for i, seconds in enumerate((10.0, 2.5)):
        f.send("read", {"stream": "read", "key": "u1", "id": f"read{i}", "ts": T0 + 1000 * i,
                        "payload": {"request_id": "r1", "seconds": seconds}})
    f.tick(T0 + W + 1)
    assert f.samples()["r1"]["labels"]["dwell_s"] == 12.5


def test_late_orphan_duplicate_outside_and_malformed_go_to_dead_letters() -> None:
    f = Feed()
    f.send(PREDICTIONS, prediction("r1", T0))
    f.send(PREDICTIONS, prediction("r1", T0))  # duplicate request_id
    f.send("click", click("r1", T0 + 5, eid="c1"))
    f.send("click", click("r1", T0 + 6, eid="c1"))  # duplicate event id
    f.send("click", click("r1", T0 - 1))  # before its prediction: outside the window
    f.send("click", b"{not json")  # malformed
    f.send("click", {**click("r1", T0), "ts": T0 // 1000})  # seconds: malformed
    f.send("click", click("ghost", T0 + 10))  # no such prediction: orphan once passed
    f.tick(T0 + W + 1)
    f.send("click", click("r1", T0 + 7))  # its window is closed: late
    reasons = sorted(r for r, _ in f.dead())
    assert reasons == ["duplicate", "duplicate", "late", "malformed", "malformed", "orphan",
                       "outside_window"]
    assert f.samples()["r1"]["labels"]["clicked"] == 1.0
    assert f.samples()["r1"]["feedback"] == ["c1"]


def test_feedback_before_its_prediction_is_held_until_it_comes() -> None:
    f = Feed()
    f.send("click", click("r1", T0 + 5))
    f.send(PREDICTIONS, prediction("r1", T0))
    f.tick(T0 + W + 1)
    assert f.samples()["r1"]["labels"]["clicked"] == 1.0
    assert f.dead() == []


def test_allowed_lateness_holds_the_watermark_back() -> None:
    f = Feed(lateness=60_000)
    f.send(PREDICTIONS, prediction("r1", T0))
    f.tick(T0 + W + 30_000)
    f.send("click", click("r1", T0 + 100))  # out of order, but within the lateness
    f.tick(T0 + W + 60_001)
    assert f.samples()["r1"]["labels"]["clicked"] == 1.0


def test_emission_order_is_window_end_then_request_id() -> None:
    f = Feed()
    for rid, ts in (("b", T0), ("a", T0), ("c", T0 - 5)):
        f.send(PREDICTIONS, prediction(rid, ts))
    f.tick(T0 + W + 1)
    assert [k for k in f.samples() if not k.startswith("tick")] == ["c", "a", "b"]


def test_state_round_trip_continues_exactly() -> None:
    a, b = Feed(), Feed()
    for f in (a, b):
        f.send(PREDICTIONS, prediction("r1", T0))
        f.send("click", click("ghost", T0 + 3))
    b.joiner.restore(a.joiner.state())
    for f in (a, b):
        f.send("click", click("r1", T0 + 5))
        f.tick(T0 + W + 1)
    assert a.out == b.out


def _fill(log: SQLiteLog, n: int) -> None:
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    preds, clicks = [], []
    for i in range(n):
        ts = T0 + i * 7_000
        preds.append((f"r{i}", orjson.dumps(prediction(f"r{i}", ts))))
        if i % 3 == 0:
            clicks.append(("u1", orjson.dumps(click(f"r{i}", ts + 45_000))))
    log.append(PREDICTIONS, preds)
    log.append("click", clicks + [("u1", orjson.dumps(click("r5", T0 + 5 * 7_000 + 1)))])
    log.append("read", [("u1", orjson.dumps({"stream": "read", "key": "u1", "id": "x",
                                             "ts": T0, "payload": {"request_id": "r0",
                                                                   "seconds": 3.0}}))])


def _run(log: SQLiteLog, steps: list[int], read_batch: int) -> list[bytes]:
    """Run the join in steps of these sizes (a new runner each step: a restart), then drain."""
    for size in steps:
        JoinRunner(log, PIPELINE, read_batch=read_batch, idle_after_s=0).step(size)
    runner = JoinRunner(log, PIPELINE, read_batch=read_batch, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    return [r.value for t in (SAMPLES, DEAD_LETTERS) for r in log.read(t, 0, 0, 100_000)]


@pytest.mark.parametrize(("steps", "read_batch"), [([], 1), ([1, 7, 50], 7), ([333] * 3, 1000)])
def test_the_log_alone_decides_the_samples(tmp_path: Any, steps: list[int], read_batch: int
                                           ) -> None:
    """Same input log -> same samples and dead letters, whatever the batches and restarts."""
    reference = SQLiteLog(tmp_path / "ref.db")
    _fill(reference, 500)
    expected = _run(reference, [], 10_000)
    other = SQLiteLog(tmp_path / "other.db")
    _fill(other, 500)
    assert _run(other, steps, read_batch) == expected
    samples = [orjson.loads(v) for v in expected if b'"labels"' in v]
    assert len(samples) == 500
    assert sum(s["labels"]["clicked"] for s in samples) == len(range(0, 500, 3))


def test_a_large_state_waits_for_records_worth_writing_it(tmp_path: Any) -> None:
    """Steps of a few records do not write the state again each time: a write waits
    until the records read since are worth the state in size, or for checkpoint_ms.
    A restart meanwhile reads the unwritten records again: nothing is lost."""
    log = SQLiteLog(tmp_path / "log.db")
    _fill(log, 500)
    runner = JoinRunner(log, PIPELINE, idle_after_s=0, checkpoint_ms=10**9)
    runner.step(300)  # the first step writes: nothing was written before
    first = log.committed(runner.group)
    assert sum(first.offsets.values()) == 300
    state = len(first.state or b"")
    assert state > 20 * STATE_BYTES_PER_RECORD  # the open windows of 600 s of predictions
    for _ in range(20):
        assert runner.step(1) == 1
    assert log.committed(runner.group) == first  # not yet worth it
    samples_then = log.end_offset(SAMPLES, 0)
    restarted = JoinRunner(log, PIPELINE, idle_after_s=0, checkpoint_ms=10**9)
    assert restarted.step(state // STATE_BYTES_PER_RECORD + 1) > 20  # worth it: written
    assert sum(log.committed(runner.group).offsets.values()) > 320
    assert log.end_offset(SAMPLES, 0) != samples_then
    while restarted.step(10_000, final=True):
        pass
    reference = SQLiteLog(tmp_path / "ref.db")
    _fill(reference, 500)
    assert _run(log, [], 10_000) == _run(reference, [], 10_000)


def _stopped_midway(log: SQLiteLog) -> Checkpoint:
    """The checkpoint of a joiner of PIPELINE stopped after 300 of 500 predictions and
    their clicks: it holds open windows."""
    _fill(log, 500)
    JoinRunner(log, PIPELINE, idle_after_s=0).step(300)  # a first step writes
    checkpoint = log.committed("joiner")
    assert checkpoint.state is not None and orjson.loads(checkpoint.state)["open"]
    return checkpoint


@pytest.mark.parametrize(("change", "said"), [
    ({"window_ms": W // 2}, "window 600000 ms; the pipeline now says 300000 ms"),
    ({"allowed_lateness_ms": 0}, "allowed lateness 60000 ms; the pipeline now says 0 ms"),
    ({"streams": PIPELINE.feedback.streams[:1]}, "streams click, read; the pipeline now "
                                                 "says click"),
], ids=["window", "allowed lateness", "streams"])
def test_a_joiner_restarted_with_another_join_refuses_to_start(tmp_path: Any,
                                                               change: dict[str, Any],
                                                               said: str) -> None:
    """Its open windows were joined one way, new ones would be joined another: it says
    what changed, in one line, and writes nothing."""
    log = SQLiteLog(tmp_path / "log.db")
    before = _stopped_midway(log)
    samples = log.end_offset(SAMPLES, 0)
    changed = replace(PIPELINE, feedback=replace(PIPELINE.feedback, **change))
    with pytest.raises(ConfigError) as refused:
        JoinRunner(log, changed, idle_after_s=0)
    message = str(refused.value)
    assert message.startswith(f"the joiner's checkpoint in group 'joiner' was made with "
                              f"{said}. The samples would mix the two: put the old "
                              f"value back, or start over in a new log and registry (a new "
                              f"--workdir; ")
    assert "\n" not in message
    assert log.committed("joiner") == before and log.end_offset(SAMPLES, 0) == samples


def test_a_joiner_restarted_with_other_labels_and_features_runs_on(tmp_path: Any) -> None:
    """The label function and the features may change: the windows still open when the
    joiner stopped are labelled the new way, as every later one."""
    log = SQLiteLog(tmp_path / "log.db")
    _stopped_midway(log)
    done = log.end_offset(SAMPLES, 0)
    changed = replace(PIPELINE, features=lambda user, item, ts: {"new": 1.0},
                      feedback=replace(PIPELINE.feedback, label=lambda events: {"clicked": 2.0}))
    runner = JoinRunner(log, changed, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    labels = [orjson.loads(r.value)["labels"] for r in log.read(SAMPLES, 0, 0, 1000)]
    assert len(labels) == 500 and 0 < done < 500
    assert labels[done:] == [{"clicked": 2.0}] * (500 - done)


def test_a_checkpoint_of_an_older_livelearn_restores(tmp_path: Any) -> None:
    """A checkpoint written before joiners recorded what they were made with is taken
    as made with the pipeline of now; the next write records it."""
    log = SQLiteLog(tmp_path / "log.db")
    before = _stopped_midway(log)
    assert before.state is not None
    state = orjson.loads(before.state)
    made_with = state.pop("made_with", None)
    with log.atomic():
        log.commit("joiner", Checkpoint(before.offsets, orjson.dumps(state)))
    runner = JoinRunner(log, PIPELINE, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    after = log.committed("joiner").state
    assert after is not None and orjson.loads(after)["made_with"] == made_with
    assert made_with == {"labelled": None, "streams": ["click", "read"], "window_ms": W,
                         "allowed_lateness_ms": 60_000, "counters": {}}
    reference = SQLiteLog(tmp_path / "ref.db")
    _fill(reference, 500)
    assert _run(log, [], 10_000) == _run(reference, [], 10_000)


def test_outputs_wait_at_most_checkpoint_ms(tmp_path: Any) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    _fill(log, 500)
    runner = JoinRunner(log, PIPELINE, idle_after_s=0, checkpoint_ms=1_000)
    runner.step(300)
    runner.step(1)
    assert sum(log.committed(runner.group).offsets.values()) == 300  # not yet
    time.sleep(1.1)
    runner.step(1)
    assert sum(log.committed(runner.group).offsets.values()) == 302


@pytest.mark.parametrize("step", [1, 2, 3, 10_000])
def test_a_final_step_ends_the_input_only_when_the_log_has_no_more(tmp_path: Any,
                                                                   step: int) -> None:
    """A final step whose reads happen to leave nothing buffered (one input done, the
    other read up to a step's end) must not flush: the clicks still in the log label
    their windows, whatever the step size."""
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    log.append(PREDICTIONS, [(f"r{i}", orjson.dumps(prediction(f"r{i}", T0 + i * 10_000)))
                             for i in range(2)])
    log.append("click", [("u1", orjson.dumps(click(f"r{i}", T0 + 45_000 + i * 10_000)))
                         for i in range(2)])
    runner = JoinRunner(log, PIPELINE, read_batch=1, idle_after_s=0)
    while runner.step(step, final=True):
        pass
    samples = [orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 100)]
    assert [s["labels"]["clicked"] for s in samples] == [1.0, 1.0]
    assert log.read(DEAD_LETTERS, 0, 0, 100) == []
