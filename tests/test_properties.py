"""Property-based tests (hypothesis) of the event decoder and the joiner."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livelearn.errors import BadInput
from livelearn.events import MIN_TS_MS, Event, EventDecoder, decode_event, partition_key
from livelearn.ingest import _FlatJson, to_event
from livelearn.join.joiner import Joiner
from livelearn.log.base import Record
from livelearn.sim.pipeline import PIPELINE, label
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, Stream
from livelearn.train.dedup import RecentIds

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


_VALUES = (st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats(allow_nan=False)
           | st.text(max_size=3) | st.just(MIN_TS_MS) | st.just(T0) | st.just({})
           | st.just([]) | st.just("click") | st.just("read"))


@st.composite
def near_events(draw: Any) -> dict[str, Any]:
    """Event envelopes of the demo's streams with any field missing or of any type."""
    event: dict[str, Any] = {"stream": draw(st.sampled_from(["click", "read", "x"])),
                             "key": "u", "id": "e", "ts": T0,
                             "payload": {"request_id": "r", "seconds": 1.5}}
    for name in ("request_id", "seconds", "stream", "key", "id", "ts", "payload"):
        where = event["payload"] if name in ("request_id", "seconds") else event
        change = draw(st.sampled_from(["keep", "drop", "value"]))
        if change == "drop":
            del where[name]
        elif change == "value":
            where[name] = draw(_VALUES)
    return event


def _outcome(decode: Any, raw: Any) -> Any:
    try:
        return decode(raw)
    except BadInput as e:
        return str(e)


@settings(max_examples=400)
@given(near_events(), st.sampled_from([None, 86_400_000]))
def test_the_joiners_decoder_gives_what_decode_event_gives(obj: dict[str, Any],
                                                           future: int | None) -> None:
    decoder = EventDecoder(PIPELINE.schemas, max_future_ms=future)
    expected = _outcome(lambda r: decode_event(r, PIPELINE.schemas, T0, future), obj)
    assert _outcome(lambda r: decoder(r, T0), obj) == expected
    assert type(_outcome(lambda r: decoder(r, T0), obj)) is type(expected)


def test_the_joiners_decoder_refuses_a_ts_after_the_year_9999_as_decode_event_does() -> None:
    """2**63 passed the joiner's quick check: never emitted, nor dead-lettered, and the
    watermark it raised made every later event late."""
    obj = {"stream": "click", "key": "u", "id": "c", "ts": 2**63, "payload": {"request_id": "r"}}
    for decode in (EventDecoder(PIPELINE.schemas, max_future_ms=None),
                   lambda raw: decode_event(raw, PIPELINE.schemas, max_future_ms=None)):
        with pytest.raises(BadInput, match="after the year 9999"):
            decode(obj)


@settings(max_examples=400)
@given(near_events())
def test_ingests_one_pass_gives_what_to_event_gives(obj: dict[str, Any]) -> None:
    stream = Stream("click", {"request_id": str, "seconds": float, "ok": bool}, key="key",
                    id="id")
    payload = obj.get("payload")
    flat = {"key": obj.get("key"), "id": obj.get("id"), "ts": obj.get("ts"),
            **(payload if isinstance(payload, dict) else {}), "ok": obj.get("stream") == "click"}
    line = json.dumps({k: v for k, v in flat.items() if v is not None})  # big ints too
    fast = _FlatJson(stream, T0)(line)
    try:
        event = to_event(stream, line, T0)
    except BadInput:
        assert fast is None
        return
    if fast is not None:  # the same event, though msgspec writes 1e16 where orjson 1e+16
        key, text, ts = fast
        value, expected = orjson.loads(text), orjson.loads(event.to_json())
        assert key == partition_key(event) and value == expected and ts == event.ts
        assert [type(v) for v in value["payload"].values()] == \
            [type(v) for v in expected["payload"].values()]


def test_ingests_one_pass_takes_the_usual_line() -> None:
    stream = Stream("click", {"request_id": str, "seconds": float}, key="key", id="id")
    line = f'{{"key": "u", "id": "e", "ts": {T0}, "request_id": "r", "seconds": 1.5}}'
    event = to_event(stream, line, T0)
    assert _FlatJson(stream, T0)(line) == (partition_key(event), event.to_json(), event.ts)


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


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from("abcdefghij")), max_size=60),
       st.booleans())
def test_recent_ids_remember_exactly_the_ids_within_the_horizon(
        adds: list[tuple[int, str]], in_order: bool) -> None:
    """Whatever the order of window ends: an id is remembered while its end lies
    within the horizon of the newest end, and forgotten after."""
    if in_order:
        adds = sorted(adds)
    ids, reference, newest = RecentIds(horizon_ms=1_000), {}, -1
    for end, sid in adds:
        ids.add(end, sid)
        reference[sid], newest = end, max(newest, end)
        reference = {s: e for s, e in reference.items() if e >= newest - 1_000}
        assert ids._ids == reference
        for probe in "abcdefghijk":
            assert ids.seen(end, probe) == (probe in reference or end < newest - 1_000)
