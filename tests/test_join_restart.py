"""A restarted joiner reads its inputs again to rebuild what its checkpoint leaves out.

The checkpoint holds the open windows, the pending feedback and the late ids, and
where each input's records within the joiner's horizon start; the ids of the
windows emitted and the counters, which grow with the traffic, are read back
from the log (Joiner.rebuild). A restart must then join exactly as a joiner never
stopped: the same samples, the same dead letters.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from livelearn import spec
from livelearn.events import Event
from livelearn.join.runner import JoinRunner
from livelearn.log.base import Checkpoint
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.sim.pipeline import PIPELINE as CLICKS
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES

T0 = 1_767_571_200_000
VIEWS = spec.Stream("views", {"item": str, "y": float}, key="user", id="id")


def _features(event: Event, rows: Any, counts: Any) -> dict[str, Any]:
    return {"item": event.payload["item"], "views_2m": float(counts["views_2m"])}


#: Ids remembered for a minute; counted for two (longer: a late event must stay uncounted
#: after its id is forgotten); five seconds of allowed lateness.
DENSE = spec.Pipeline(
    name="dense", feedback=spec.EventLabel(VIEWS, label="y", allowed_lateness_ms=5_000,
                                           dedup_ms=60_000),
    counters=(spec.WindowCount("views_2m", "views", 120_000, by="item"),),
    features=_features, learner=lambda: FTRL(bits=10), target="y")


def _views(n: int, seed: int, disorder_ms: int = 8_000, far: bool = False
           ) -> list[tuple[str, bytes]]:
    """``n`` events, 20 a second, out of order by up to ``disorder_ms`` (more than the
    allowed lateness: some late), with copies of events of the seconds before
    (duplicates) and a few malformed; ``far``: copies of events of 65 to 100 s
    before too (their ids forgotten: taken, and counted, again)."""
    rng, out, sent = random.Random(seed), [], []
    for i in range(n):
        ts = T0 + i * 50 + rng.randrange(-disorder_ms, 1)
        event = {"stream": "views", "key": f"u{rng.randrange(30)}", "id": f"e{i}", "ts": ts,
                 "payload": {"item": f"i{rng.randrange(7)}", "y": float(rng.random() < 0.3)}}
        if i % 97 == 5:
            event["payload"]["y"] = "no"  # malformed
        out.append((event["key"], orjson.dumps(event)))
        sent.append(event)
        if i % 23 == 0 and i:  # a copy of an event of the last ten seconds
            out.append((event["key"], orjson.dumps(sent[max(0, i - rng.randrange(200))])))
        if far and i % 31 == 0 and i >= 2_000:
            again = dict(sent[i - rng.randrange(1_300, 2_000)], ts=ts)
            out.append((again["key"], orjson.dumps(again)))
    return out


def _log(path: Path, pipeline: spec.Pipeline, records: dict[str, list[tuple[str, bytes]]]
         ) -> SQLiteLog:
    log = SQLiteLog(path)
    for topic in pipeline.topics:
        log.create_topic(topic)
    for topic, items in records.items():
        log.append(topic, items)
    return log


def _join(log: SQLiteLog, pipeline: spec.Pipeline, step: int) -> list[bytes]:
    """Join in steps of ``step`` records, each by a new runner (a restart), then drain;
    every sample and dead letter written."""
    while JoinRunner(log, pipeline, idle_after_s=0).step(step):
        pass
    runner = JoinRunner(log, pipeline, idle_after_s=0)
    while runner.step(10**6, final=True):
        pass
    return [r.value for t in (SAMPLES, DEAD_LETTERS) for r in log.read(t, 0, 0, 10**6)]


def test_a_label_in_event_joiner_restarted_at_every_step_joins_as_one_never_stopped(
        tmp_path: Path) -> None:
    records = {"views": _views(4_000, seed=1)}
    once = _join(_log(tmp_path / "once.db", DENSE, records), DENSE, 10**6)
    reasons = [orjson.loads(v)["reason"] for v in once if b'"reason"' in v]
    assert {"duplicate", "late", "malformed"} <= set(reasons)
    assert _join(_log(tmp_path / "restarted.db", DENSE, records), DENSE, 173) == once


def test_a_restart_counts_an_id_taken_again_once_forgotten_as_the_joiner_did(
        tmp_path: Path) -> None:
    """Ids sent again after their first copy was forgotten (dedup_ms) are taken and counted
    again, and a copy of such one is a duplicate: the rebuild decides each copy against the
    watermark of the records merged before it, as the joiner did (it counted only the first
    copy of an id, so that the counts after a restart were lower)."""
    records = {"views": _views(4_000, seed=4, far=True)}
    once = _join(_log(tmp_path / "once.db", DENSE, records), DENSE, 10**6)
    ids = [orjson.loads(v)["id"] for v in once if b'"reason"' not in v]
    assert len(ids) - len(set(ids)) > 20  # taken again
    assert _join(_log(tmp_path / "restarted.db", DENSE, records), DENSE, 173) == once


def test_the_checkpoint_does_not_grow_with_the_ids_and_counts_of_the_horizon(
        tmp_path: Path) -> None:
    """Every event of the 6 minutes below lies within the horizon (ten minutes of ids
    and counts): the states written hold the open windows and late ids, not them."""
    long = replace(DENSE, feedback=replace(DENSE.feedback, dedup_ms=600_000),
                   counters=(replace(DENSE.counters[0], window_ms=600_000),))
    log = _log(tmp_path / "log.db", long, {"views": _views(7_200, seed=2, disorder_ms=5_000)})
    runner = JoinRunner(log, long, idle_after_s=0)
    sizes, whole = [], []
    while runner.step(1_200):
        sizes.append(len(log.committed("joiner").state or b""))
        whole.append(len(runner.joiner.state()))  # what a checkpoint held before
    assert whole[-1] > 4 * whole[0] and whole[-1] > 10 * max(sizes)
    assert max(sizes) < 2 * sizes[0]


def test_a_checkpoint_that_holds_everything_restores_and_goes_on(tmp_path: Path) -> None:
    """A state written by an earlier livelearn (the ids and counters in it): the restarted
    joiner goes on from it, and from its own compact states after."""
    records = {"views": _views(6_000, seed=3)}
    once = _join(_log(tmp_path / "once.db", DENSE, records), DENSE, 10**6)
    log = _log(tmp_path / "old.db", DENSE, records)
    runner = JoinRunner(log, DENSE, idle_after_s=0)
    runner.step(700)
    written = log.committed("joiner")
    log.claim("joiner")
    log.commit("joiner", Checkpoint(written.offsets, runner.joiner.state()))  # everything
    assert orjson.loads(log.committed("joiner").state or b"")["rewind"] is None
    assert _join(log, DENSE, 311) == once
    assert orjson.loads(log.committed("joiner").state or b"")["rewind"] is not None


PAGES = spec.Stream("pages", {"item": str}, key="user", id="id")
#: Views labelled as in DENSE, counted by the pages of each item seen in the last two
#: minutes: a stream only counted.
PAGED = replace(DENSE, name="paged", feedback=replace(DENSE.feedback, counted=(PAGES,)),
                counters=(spec.WindowCount("pages_2m", "pages", 120_000, by="item"),),
                features=lambda e, rows, counts: {"item": e.payload["item"],
                                                  "pages_2m": float(counts["pages_2m"])})


def _pages(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` page views, 20 a second, out of order by up to 8 s, with copies of page views
    of the last ten seconds (duplicates), of 65 to 100 s before (kept: duplicates) and of
    150 to 200 s before (forgotten: counted again, in no sample), and a few malformed."""
    rng, out, sent = random.Random(seed), [], []
    for i in range(n):
        ts = T0 + i * 50 + rng.randrange(-8_000, 1)
        event = {"stream": "pages", "key": f"u{rng.randrange(30)}", "id": f"p{i}", "ts": ts,
                 "payload": {"item": f"i{rng.randrange(7)}"}}
        if i % 97 == 5:
            event["payload"]["item"] = 7  # malformed
        out.append((event["key"], orjson.dumps(event)))
        sent.append(event)
        if i % 23 == 0 and i:
            out.append((event["key"], orjson.dumps(sent[max(0, i - rng.randrange(200))])))
        if i % 29 == 0 and i >= 4_000:
            for back in (rng.randrange(1_300, 2_000), rng.randrange(3_000, 4_000)):
                out.append((event["key"], orjson.dumps(sent[i - back])))
    return out


def test_a_restart_counts_each_id_of_a_counted_stream_as_the_joiner_did(tmp_path: Path) -> None:
    """The copies of a stream only counted are duplicates while their ids are kept (the
    counter's window behind the watermark), counted once forgotten: a joiner restarted at
    every step decides each copy as the one never stopped, from the records read again."""
    records = {"views": _views(4_000, seed=5), "pages": _pages(8_000, seed=6)}
    once = _join(_log(tmp_path / "once.db", PAGED, records), PAGED, 10**6)
    letters = [orjson.loads(v) for v in once if b'"reason"' in v]
    assert sum(d["reason"] == "duplicate" and d["stream"] == "pages" for d in letters) > 300
    assert _join(_log(tmp_path / "restarted.db", PAGED, records), PAGED, 173) == once


def test_a_whole_checkpoint_keeps_the_ids_of_a_counted_stream(tmp_path: Path) -> None:
    """A state written whole holds the ids counted that are kept: a joiner restored from it
    (no records read again) still takes their copies as duplicates."""
    records = {"views": _views(4_000, seed=5), "pages": _pages(8_000, seed=6)}
    once = _join(_log(tmp_path / "once.db", PAGED, records), PAGED, 10**6)
    log = _log(tmp_path / "whole.db", PAGED, records)
    runner = JoinRunner(log, PAGED, idle_after_s=0)
    runner.step(5_000)
    written = log.committed("joiner")
    assert len(orjson.loads(runner.joiner.state())["counted"]) > 1_000
    log.claim("joiner")
    log.commit("joiner", Checkpoint(written.offsets, runner.joiner.state()))
    assert _join(log, PAGED, 10**6) == once


def _predictions_and_clicks() -> dict[str, list[tuple[str, bytes]]]:
    """A prediction a second for 20 minutes, each clicked 30 s later; then the click of
    the first prediction again (late: its window closed long ago), a copy of a
    prediction, and clicks of predictions never made (orphans)."""
    preds, clicks = [], []
    for i in range(1_200):
        rid, ts = f"r{i}", T0 + i * 1_000
        preds.append((rid, orjson.dumps({"request_id": rid, "ts": ts, "user": "u1",
                                         "item": "p1", "model_version": 1, "score": 0.5,
                                         "features": {"topic": "t"}})))
        clicks.append((rid, orjson.dumps({"stream": "click", "key": "u1", "id": f"c{i}",
                                          "ts": ts + 30_000, "payload": {"request_id": rid}})))
    clicks += [("r0", clicks[0][1].replace(b'"c0"', b'"c0-again"').replace(
        str(T0 + 30_000).encode(), str(T0 + 1_000_000).encode()))]
    preds += [preds[900]]
    clicks += [(f"x{i}", orjson.dumps({"stream": "click", "key": "u1", "id": f"x{i}",
                                       "ts": T0 + 1_100_000, "payload": {"request_id": f"x{i}"}}))
               for i in range(3)]
    return {PREDICTIONS: preds, "click": clicks}


def test_a_feedback_joiner_restarted_still_knows_the_windows_it_closed(tmp_path: Path) -> None:
    """Late feedback stays late and a copied prediction a duplicate after a restart: the
    closed windows' ids come back from the predictions read again."""
    records = _predictions_and_clicks()
    once = _join(_log(tmp_path / "once.db", CLICKS, records), CLICKS, 10**6)
    dead = sorted(orjson.loads(v)["reason"] for v in once if b'"reason"' in v)
    assert dead == ["duplicate", "late", "orphan", "orphan", "orphan"]
    assert _join(_log(tmp_path / "restarted.db", CLICKS, records), CLICKS, 257) == once
