"""Bad input on the HTTP API, sent as raw bytes to a real server on 127.0.0.1.

Each case gets a 4xx whose ``detail`` names the field or the problem and what was
expected, or, for one bad event inside a /feedback batch, a dead-letter record
with its reason, while the rest of the batch is stored; and the server goes on
serving good requests afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS, PREDICTIONS
from livelearn.train.trainer import Trainer

LIMIT = 64 * 1024  # the body limit of the server under test, in bytes
NOW = int(time.time() * 1000)
JSON = "application/json"


@pytest.fixture
def server(tmp_path: Path, log: SQLiteLog) -> Iterator[ServerThread]:
    world = NewsFeed(seed=3, impressions=200, candidates=5, days=0.5, users=50, new_users=5)
    write_tables(world, tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    app = create_app(PIPELINE, log, registry, tmp_path / "tables", max_body_bytes=LIMIT)
    with ServerThread(app) as running:
        yield running


def _post(server: ServerThread, path: str, body: bytes | Iterator[bytes],
          content_type: str | None = JSON) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(server.url + path, content=body, headers=headers, timeout=30)


def _still_serves(server: ServerThread) -> None:
    good = _post(server, "/predict", b'{"user_id": "u0", "items": ["p0", "p1"]}')
    assert good.status_code == 200, good.text
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def _topic(log: SQLiteLog, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in log.read(topic, 0, 0, 10_000)]


PREDICT_CASES = [
    # (case, body, content type, status, what the message must name)
    ("malformed JSON", b'{"user_id": "u0", "items": [', JSON, 400,
     ["not valid JSON", "column 29"]),
    ("NaN", b'{"user_id": "u0", "items": ["p0"], "ts": NaN}', JSON, 400, ["not valid JSON"]),
    ("number beyond a double", b'{"user_id": "u0", "items": ["p0"], "ts": 1e400}', JSON, 400,
     ["not valid JSON", "infinity"]),
    ("lone surrogate", b'{"user_id": "\\ud800", "items": ["p0"]}', JSON, 400,
     ["not valid JSON", "surrogate"]),
    ("non-UTF-8 bytes", b'{"user_id": "\xff\xfe", "items": ["p0"]}', JSON, 400,
     ["not UTF-8", "0xff", "offset 13"]),
    ("nested too deep", b'{"user_id": "u0", "items": ["p0"], "x": ' + b"[" * 500 + b"]" * 500
     + b"}", JSON, 400, ["nested more than 100 deep"]),
    ("text/plain", b'{"user_id": "u0", "items": ["p0"]}', "text/plain", 415,
     ["Content-Type", "application/json", "text/plain"]),
    ("a charset not UTF-8", b'{"user_id": "u0", "items": ["p0"]}',
     "application/json; charset=latin-1", 415, ["Content-Type", "in UTF-8", "latin-1"]),
    ("no content type", b'{"user_id": "u0", "items": ["p0"]}', None, 415,
     ["Content-Type", "application/json"]),
    ("empty body", b"", JSON, 422, ["request body", "required"]),
    ("array, not object", b'["p0"]', JSON, 422, ["request body", "dictionary"]),
    ("missing user_id", b'{"items": ["p0"]}', JSON, 422, ["'user_id'", "required"]),
    ("user_id of wrong type", b'{"user_id": 5, "items": ["p0"]}', JSON, 422,
     ["'user_id'", "valid string", "got 5"]),
    ("items not a list", b'{"user_id": "u0", "items": "p0"}', JSON, 422,
     ["'items'", "valid list", "got 'p0'"]),
    ("an item of wrong type", b'{"user_id": "u0", "items": ["p0", 7]}', JSON, 422,
     ["'items.1'", "valid string"]),
    ("no items", b'{"user_id": "u0", "items": []}', JSON, 422, ["'items'", "at least 1"]),
    ("unknown item", b'{"user_id": "u0", "items": ["no-such-post"]}', JSON, 422,
     ["'items'", "no-such-post", "not in table 'posts'"]),
    ("ts a string", b'{"user_id": "u0", "items": ["p0"], "ts": "soon"}', JSON, 422,
     ["'ts'", "valid integer", "got 'soon'"]),
    ("ts a float", b'{"user_id": "u0", "items": ["p0"], "ts": 1.7e12}', JSON, 422,
     ["'ts'", "valid integer"]),
    ("ts a boolean", b'{"user_id": "u0", "items": ["p0"], "ts": true}', JSON, 422,
     ["'ts'", "valid integer"]),
    ("ts in seconds", b'{"user_id": "u0", "items": ["p0"], "ts": %d}' % (NOW // 1000), JSON,
     422, ["'ts'", "milliseconds", "seconds?"]),
    ("ts far in the future", b'{"user_id": "u0", "items": ["p0"], "ts": %d}' % (NOW * 10),
     JSON, 422, ["'ts'", "in the future"]),
    ("ts an hour ahead", b'{"user_id": "u0", "items": ["p0"], "ts": %d}' % (NOW + 3_600_000),
     JSON, 422, ["'ts'", "in the future"]),
    # a date and time written as digits: read as ms, the year 1976, scored in silence
    ("ts of YYYYMMDDhhmm", b'{"user_id": "u0", "items": ["p0"], "ts": 202601051030}', JSON,
     422, ["'ts'", "reads as 2026-01-05T10:30:00 written as digits (YYYYMMDDhhmm)"]),
    ("ts of YYYYMMDDhhmmss", b'{"user_id": "u0", "items": ["p0"], "ts": 20260105103000}',
     JSON, 422, ["'ts'", "reads as 2026-01-05T10:30:00 written as digits (YYYYMMDDhhmmss)"]),
    ("ts beyond 64 bits", b'{"user_id": "u0", "items": ["p0"], "ts": 1%s}' % (b"0" * 30),
     JSON, 422, ["'ts'", "in the future"]),
    ("a misspelled field", b'{"user_id": "u0", "items": ["p0"], "timestamp": %d}' % NOW, JSON,
     422, ["field 'timestamp'", "not permitted", f"got {NOW}"]),
    ("huge payload", b'{"user_id": "u0", "items": ["' + b"x" * (2 * LIMIT) + b'"]}', JSON,
     413, ["too large", f"limit is {LIMIT} bytes"]),
]


@pytest.mark.parametrize(("body", "content_type", "status", "names"),
                         [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_a_bad_predict_request_gets_a_4xx_naming_the_problem(
        server: ServerThread, log: SQLiteLog, body: bytes, content_type: str | None,
        status: int, names: list[str]) -> None:
    response = _post(server, "/predict", body, content_type)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) < 400
    for name in names:
        assert name in detail
    assert "stream 'predict'" not in detail  # a request is no stream
    assert _topic(log, PREDICTIONS) == []  # nothing served, nothing logged
    _still_serves(server)


FEEDBACK_BODY_CASES = [
    ("malformed JSON", b'[{"stream": "click",', JSON, 400, ["not valid JSON"]),
    ("non-UTF-8 bytes", b'[{"stream": "click", "key": "\xff"}]', JSON, 400, ["not UTF-8"]),
    ("an object, not a list", b'{"stream": "click"}', JSON, 422,
     ["request body", "valid list"]),
    ("form content type", b"[]", "application/x-www-form-urlencoded", 415, ["Content-Type"]),
    ("huge batch", orjson.dumps([{"stream": "click", "key": "u", "id": str(i), "ts": NOW,
                                  "payload": {"request_id": "r"}} for i in range(2000)]),
     JSON, 413, ["too large", f"limit is {LIMIT} bytes", "smaller batches"]),
]


@pytest.mark.parametrize(("body", "content_type", "status", "names"),
                         [c[1:] for c in FEEDBACK_BODY_CASES],
                         ids=[c[0] for c in FEEDBACK_BODY_CASES])
def test_a_bad_feedback_body_gets_a_4xx_and_stores_nothing(
        server: ServerThread, log: SQLiteLog, body: bytes, content_type: str,
        status: int, names: list[str]) -> None:
    response = _post(server, "/feedback", body, content_type)
    assert response.status_code == status, response.text
    for name in names:
        assert name in response.json()["detail"]
    assert _topic(log, "click") == [] and _topic(log, DEAD_LETTERS) == []
    _still_serves(server)


def _event(stream: str = "click", **change: Any) -> bytes:
    event = {"stream": stream, "key": "u1", "id": "e1", "ts": NOW, "payload": {"request_id": "r1"}}
    return orjson.dumps({**event, **change})


def _without(field: str) -> bytes:
    event = orjson.loads(_event())
    del event[field]
    return orjson.dumps(event)


BIG = b"1" + b"0" * 30  # an integer beyond 64 bits: Python's json reads it, orjson cannot store it

BAD_EVENTS = [
    # (case, the event as raw JSON, what its rejection and dead letter must name)
    ("unknown stream", _event("share"), ["stream 'share'", "unknown stream", "click, read"]),
    ("ts in seconds", _event(ts=NOW // 1000), ["field 'ts'", "milliseconds", "seconds?"]),
    ("ts far in the future", _event(ts=NOW + 3 * 86_400_000), ["field 'ts'", "future"]),
    ("ts an hour ahead", _event(ts=NOW + 3_600_000), ["field 'ts'", "300000 ms in the future"]),
    ("ts a string", _event(ts="2026-01-01"), ["field 'ts'", "integer milliseconds"]),
    ("ts of YYYYMMDDhhmm", _event(ts=202601051030),  # stored as 1976, in silence
     ["stream 'click', field 'ts'", "reads as 2026-01-05T10:30:00 written as digits"]),
    ("ts missing", _without("ts"), ["field 'ts'"]),
    ("key missing", _without("key"), ["field 'key'", "missing"]),
    ("id of wrong type", _event(id=7), ["field 'id'", "expected str", "got 7"]),
    ("key empty", _event(key=""), ["field 'key'", "non-empty string"]),
    ("id empty", _event(id=""), ["field 'id'", "non-empty string"]),
    ("payload not an object", _event(payload=[1]), ["field 'payload'", "expected an object"]),
    ("payload field missing", _event(payload={}), ["field 'payload.request_id'", "missing"]),
    ("payload field of wrong type", _event("read", payload={"request_id": "r1", "seconds": "x"}),
     ["stream 'read'", "field 'payload.seconds'", "expected float", "got 'x'"]),
    ("integer beyond 64 bits", _event(payload={"request_id": "r1", "n": 0}).replace(
        b'"n":0', b'"n":' + BIG), ["stream 'click', field 'payload.n'", BIG.decode(),
                                    "more than 64 bits", "write it as text"]),
    ("not an object", b"42", ["must be a JSON object", "got 42"]),
    ("a field beside the payload", _event(page=2),
     ["stream 'click'", "field 'page'", "put 'page' in payload"]),
]


@pytest.mark.parametrize(("event", "names"), [c[1:] for c in BAD_EVENTS],
                         ids=[c[0] for c in BAD_EVENTS])
def test_a_bad_event_in_a_batch_is_dead_lettered_with_its_reason(
        server: ServerThread, log: SQLiteLog, event: bytes, names: list[str]) -> None:
    response = _post(server, "/feedback", b"[" + _event(id="good") + b"," + event + b"]")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 1 and [r["index"] for r in answer["rejected"]] == [1]
    for name in names:
        assert name in answer["rejected"][0]["error"]
    assert [e["id"] for e in _topic(log, "click")] == ["good"]
    [dead] = _topic(log, DEAD_LETTERS)
    assert dead["reason"] == "malformed" and dead["detail"] == answer["rejected"][0]["error"]
    if BIG in event:  # kept as Python's repr, since JSON cannot hold it here
        assert BIG.decode() in dead["event"]
    else:
        assert orjson.loads(dead["event"]) == orjson.loads(event)
    _still_serves(server)


def test_a_body_streamed_past_the_limit_without_content_length_gets_413(
        server: ServerThread) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "u0", "items": ["'
        for _ in range(2 * LIMIT // 4096):
            yield b"x" * 4096
        yield b'"]}'

    response = _post(server, "/predict", chunks())
    assert response.status_code == 413
    assert f"more than {LIMIT} bytes came" in response.json()["detail"]
    _still_serves(server)


def test_metrics_count_rejected_feedback(server: ServerThread) -> None:
    body = b"[" + b",".join([_event(id="a"), _event("share"), _event(ts=1)]) + b"]"
    assert _post(server, "/feedback", body).json()["accepted"] == 1
    metrics = httpx.get(server.url + "/metrics").text
    assert "livelearn_feedback_events_total 1\n" in metrics
    assert "livelearn_feedback_rejected_total 2\n" in metrics


def test_the_readme_states_the_servers_limits() -> None:
    """The limits a client meets, as the code has them, where users look for them."""
    from livelearn.events import MAX_FUTURE_MS
    from livelearn.serve.app import PredictRequest
    from livelearn.serve.limits import MAX_BODY_BYTES, MAX_DEPTH

    assert MAX_FUTURE_MS == 300_000  # "5 minutes ahead"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    items = PredictRequest.model_json_schema()["properties"]["items"]
    user = PredictRequest.model_json_schema()["properties"]["user_id"]
    for stated in (f"at most {MAX_BODY_BYTES / 2**20:g} MiB ({MAX_BODY_BYTES:,} bytes",
                   f"nested at most {MAX_DEPTH} deep",
                   f"1 to {items['maxItems']:,} ids of 1 to {items['items']['maxLength']} "
                   f"characters", f"`user_id` (1 to {user['maxLength']} characters)",
                   "at most 5 minutes ahead", "no other field"):
        assert stated in readme, stated


def test_a_compressed_body_gets_415_naming_the_encoding(server: ServerThread) -> None:
    """Before: a gzipped body got 400 'not UTF-8', and one sent uncompressed under
    Content-Encoding: gzip was taken as it came."""
    import gzip

    body = b'{"user_id": "u0", "items": ["p0"]}'
    for content in (gzip.compress(body), body):
        response = httpx.post(server.url + "/predict", content=content, timeout=30, headers={
            "content-type": JSON, "content-encoding": "gzip"})
        assert (response.status_code, response.json()) == (415, {
            "detail": "header 'Content-Encoding': 'gzip' is not supported; send the body "
                      "uncompressed"})
    _still_serves(server)
