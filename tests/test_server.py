"""End to end over real HTTP: predict, feedback, join; the samples carry what was served."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.features.hashing import hash_rows
from livelearn.join.runner import JoinRunner
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ffm import FFMClassifier
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES
from livelearn.tables.offline import load_table
from livelearn.train.trainer import Trainer


@pytest.fixture
def world() -> NewsFeed:
    return NewsFeed(seed=3, impressions=2000, candidates=5, days=0.5, users=200, new_users=20)


@pytest.fixture
def loop(tmp_path: Path, log: SQLiteLog, world: NewsFeed) -> dict[str, Any]:
    write_tables(world, tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    trainer = Trainer(log, registry, PIPELINE)
    gate = Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance)
    gate.step()
    app = create_app(PIPELINE, log, registry, tmp_path / "tables", poll_s=0.02)
    return {"app": app, "registry": registry, "trainer": trainer, "gate": gate,
            "tables": tmp_path / "tables"}


def _predict(http: httpx.Client, user: str, items: list[str], ts: int) -> dict[str, Any]:
    response = http.post("/predict", json={"user_id": user, "items": items, "ts": ts})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_samples_carry_exactly_the_served_features_and_the_right_labels(
        loop: dict[str, Any], log: SQLiteLog, world: NewsFeed) -> None:
    users = load_table(PIPELINE.users, loop["tables"])
    posts = load_table(PIPELINE.items, loop["tables"])
    served: dict[str, dict[str, Any]] = {}
    clicked: set[str] = set()
    with ServerThread(loop["app"]) as server, httpx.Client(base_url=server.url) as http:
        for i, request in enumerate(world.requests()):
            if i == 40:
                break
            reply = _predict(http, request.user_id, request.candidates, request.ts)
            assert reply["model_version"] == 1
            for p in reply["predictions"]:
                served[p["request_id"]] = {**p, "user": request.user_id, "ts": request.ts}
            shown = [(p["request_id"], p["item"]) for p in reply["predictions"]]
            events = world.feedback(request, shown)
            clicked |= {e["payload"]["request_id"] for e in events if e["stream"] == "click"}
            bad = {"stream": "click", "key": "u", "id": "bad", "ts": request.ts,
                   "payload": {}}  # no request_id
            answer = http.post("/feedback", json=[*events, bad]).json()
            assert answer["accepted"] == len(events)
            assert "payload.request_id" in answer["rejected"][0]["error"]
        metrics = http.get("/metrics").text
        assert "livelearn_predictions_total 200" in metrics
        assert http.get("/healthz").json() == {"status": "ok", "model_version": 1}
        assert [m["version"] for m in http.get("/models").json()] == [1]
    JoinRunner(log, PIPELINE).step(100_000, final=True)
    samples = {s["id"]: s for s in (orjson.loads(r.value)
                                    for r in log.read(SAMPLES, 0, 0, 100_000))}
    assert set(samples) == set(served) and clicked
    for rid, sample in samples.items():
        s = served[rid]
        expected = PIPELINE.features(users.get(s["user"], {}), posts[s["item"]], s["ts"])
        assert sample["features"] == expected
        assert (sample["score"], sample["model_version"]) == (s["score"], s["model_version"])
        assert sample["labels"]["clicked"] == float(rid in clicked)
    dead = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 1000)]
    assert len(dead) == 40 and {d["reason"] for d in dead} == {"malformed"}


def _features_on_the_user_row(user: dict[str, Any], post: Mapping[str, Any],
                              ts: int) -> dict[str, Any]:
    """A features function that makes its features of the user's row, in place."""
    user["post"] = str(post["post_id"])
    user["topic"] = str(post["topic"])
    return user


def test_a_features_function_that_changes_the_user_row_changes_no_other_candidate(
        loop: dict[str, Any], log: SQLiteLog) -> None:
    """Each candidate's features function gets rows of its own: all of a request's
    candidates were given one user row, so one that changes it in place (and returns it)
    served and logged every candidate with the last one's post, where an impression of
    the same user, post and time (ingest) gets its own."""
    pipeline = replace(PIPELINE, features=_features_on_the_user_row)
    app = create_app(pipeline, log, loop["registry"], loop["tables"], poll_s=0.02)
    posts = load_table(PIPELINE.items, loop["tables"])
    items = sorted(posts)[:3]
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        reply = _predict(http, "u1", items, 1_767_571_200_000)
    assert [p["item"] for p in reply["predictions"]] == items
    logged = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 10)]
    assert [(r["item"], r["features"]["post"], r["features"]["topic"]) for r in logged] == [
        (item, item, posts[item]["topic"]) for item in items]


def test_a_field_aware_model_serves_the_fields_it_learned(
        tmp_path: Path, log: SQLiteLog, world: NewsFeed) -> None:
    """Without transforms a feature's field is its position in its row. Samples carry
    the features sorted by name (the Flink joiner's JSON sorts them too), so the trainer
    and the gate gave an FFM the fields of the sorted names, while the server scored the
    features function's order ("user" field 1, then "country"...): every served score
    was of other fields than those learned. The served score of a candidate is now the
    model's score of its sample's features."""
    pipeline = replace(PIPELINE, learner=lambda: FFMClassifier(bits=12, n_fields=16))
    write_tables(world, tmp_path / "tables")
    for topic in pipeline.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, pipeline)
    Gate(log, registry, pipeline.target, pipeline.policies.gate_tolerance).step()
    app = create_app(pipeline, log, registry, tmp_path / "tables", poll_s=0.02)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        reply = _predict(http, "u1", ["p0", "p1", "p2"], 1_767_571_200_000)
    JoinRunner(log, pipeline).step(100_000, final=True)
    samples = {s["id"]: s for s in (orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 10))}
    rows = [samples[p["request_id"]]["features"] for p in reply["predictions"]]
    model = registry.load(reply["model_version"])
    assert [p["score"] for p in reply["predictions"]] == \
        model.predict(pipeline.hash_rows(rows, model.bits)).tolist()


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u0", "items": ["no-such-post"], "ts": 1767571200000}, "no-such-post"),
    ({"user_id": "u0", "items": ["p0"], "ts": 1767571200}, "seconds"),
    ({"user_id": "u0", "items": []}, "items"),
    ({"items": ["p0"]}, "user_id"),
    ({"user_id": "u0", "items": ["p0"], "ts": "soon"}, "ts"),
])
def test_bad_requests_get_a_4xx_naming_the_field(loop: dict[str, Any], body: dict[str, Any],
                                                 field: str) -> None:
    with ServerThread(loop["app"]) as server:
        response = httpx.post(f"{server.url}/predict", json=body)
    assert 400 <= response.status_code < 500
    assert field in response.text


def test_a_new_version_is_swapped_in_while_requests_keep_succeeding(
        loop: dict[str, Any], log: SQLiteLog, world: NewsFeed) -> None:
    registry: Registry = loop["registry"]
    request = next(iter(world.requests()))
    versions = set()
    with ServerThread(loop["app"]) as server, httpx.Client(base_url=server.url) as http:
        model = PIPELINE.learner()
        rows = [PIPELINE.features({}, {"topic": "t"}, request.ts)] * 50
        model.learn(hash_rows(rows, model.bits), np.ones(50))
        version = registry.publish(model, {"metric": "auc"}, parent=1)
        registry.set_status(version.id, "approved", "test")
        deadline = time.monotonic() + 60
        while 2 not in versions and time.monotonic() < deadline:
            reply = _predict(http, request.user_id, request.candidates, request.ts)
            assert {p["model_version"] for p in reply["predictions"]} == {reply["model_version"]}
            versions.add(reply["model_version"])
    assert versions == {1, 2}
    assert registry.get(2).status == "serving" and registry.get(1).status == "retired"
    assert registry.get(2).serving_since_ts == request.ts


def test_a_flat_event_sent_to_feedback_is_told_what_feedback_takes(
        loop: dict[str, Any], log: SQLiteLog) -> None:
    """A flat record (as `livelearn ingest` and /predict of a label in the events take them)
    sent to /feedback was refused with "field 'key': missing (expected str)", though it held
    its key under the stream's key field: now the answer says that /feedback takes
    envelopes and where the fields go. The dead letter says the same."""
    flat = {"stream": "click", "user": "u1", "id": "c1", "ts": 1_767_571_200_000,
            "request_id": "r1"}
    with ServerThread(loop["app"]) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/feedback", json=[flat]).json()
    error = answer["rejected"][0]["error"]
    assert error == ("stream 'click': an event of /feedback is an envelope of the fields "
                     "stream, key, id, ts and payload; this one has no payload (it has "
                     "'request_id', 'user'): put the stream's fields in payload, and the "
                     "event's key in key"), error
    dead = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 1000)]
    assert [(d["reason"], d["detail"]) for d in dead] == [("malformed", error)]
