"""Property-based tests (hypothesis) of the event decoder and the joiner."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from livelearn.errors import BadInput
from livelearn.events import Event, decode_event
from livelearn.join.joiner import Joiner
from livelearn.log.base import Record
from livelearn.sim.pipeline import PIPELINE, label
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES

T0 = 1_767_571_200_000
W = 60_000
LATENESS = 30_000
INPUTS = [(PREDICTIONS, 0), ("click", 0), ("read", 0)]

texts = st.text(min_size=1, max_size=8)
events = st.builds(
    Event, stream=st.just("read"), key=texts, id=texts,
    ts=st.integers(T0, T0 + 10**9),
    payload=st.fixed_dictionaries({"request_id": texts,
                                   "seconds": st.floats(0, 1e6, allow_nan=False)}))


@given(events)
def test_a_valid_event_survives_the_round_trip(event: Event) -> None:
    assert decode_event(event.to_json(), PIPELINE.schemas, max_future_ms=None) == event


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_give_an_event_or_bad_input(raw: bytes | str) -> None:
    try:
        decode_event(raw, PIPELINE.schemas)
    except BadInput:
        pass


@st.composite
def histories(draw: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[int], list[int]]:
    """Predictions and feedback in ts order, a disorder within the lateness, duplicates."""
    n = draw(st.integers(1, 12))
    starts = sorted(draw(st.lists(st.integers(0, 200_000), min_size=n, max_size=n)))
    records: list[tuple[str, dict[str, Any]]] = []
    for i, t in enumerate(starts):
        records.append((PREDICTIONS, {"request_id": f"r{i}", "ts": T0 + t, "user": "u",
                                      "item": "p", "model_version": 1, "score": 0.5,
                                      "features": {"x": str(i)}}))
        for j, delay in enumerate(draw(st.lists(st.integers(0, W + 5_000), max_size=3))):
            rid = f"r{i}" if draw(st.booleans()) else f"ghost{i}"
            records.append(("click", {"stream": "click", "key": "u", "id": f"c{i}.{j}",
                                      "ts": T0 + t + delay, "payload": {"request_id": rid}}))
    records.sort(key=lambda r: r[1]["ts"])
    jitter = draw(st.lists(st.integers(0, LATENESS - 1), min_size=len(records),
                           max_size=len(records)))
    dupes = draw(st.lists(st.integers(0, len(records) - 1), max_size=4))
    return records, jitter, dupes


def _join(records: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[str]]:
    joiner = Joiner(INPUTS, PIPELINE.schemas, W, label, allowed_lateness_ms=LATENESS)
    out = []
    for offset, (topic, value) in enumerate(records):
        out += joiner.process(Record(topic, 0, offset, "k", orjson.dumps(value)))
    out += joiner.flush()
    samples = [o.value for o in out if o.topic == SAMPLES]
    reasons = sorted(o.value["reason"] for o in out if o.topic == DEAD_LETTERS)
    return samples, reasons


@settings(max_examples=200, deadline=None)
@given(histories())
def test_any_interleaving_and_any_duplicates_give_the_same_samples(
        history: tuple[list[tuple[str, dict[str, Any]]], list[int], list[int]]) -> None:
    """Reordered within the allowed lateness, with events repeated: same samples, and
    each repeat is dead-lettered: as a duplicate, as late once its window closed, or
    for the reason its original was (outside its window)."""
    records, jitter, dupes = history
    expected, expected_dead = _join(records)
    shuffled = [r for _, _, r in sorted(
        (r[1]["ts"] + j, i, r) for i, (r, j) in enumerate(zip(records, jitter, strict=True)))]
    for i in dupes:  # a copy right after the original
        shuffled.insert(shuffled.index(records[i]) + 1, records[i])
    samples, dead = _join(shuffled)
    assert samples == expected
    extra = list(dead)
    for reason in expected_dead:
        extra.remove(reason)
    assert len(extra) == len(dupes)
    assert set(extra) <= {"duplicate", "late", "outside_window"}
