"""The server over real HTTP when the pipeline is at fault: a features function that raises
or returns what cannot be scored gets a 500 naming the feature, and the server goes on;
users and items tables with ISO 8601 ``as_of`` cells are served, each row as of the request."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import ServerThread
from livelearn import spec
from livelearn.deploy.gate import Gate
from livelearn.features.batch import SparseBatch
from livelearn.log import Log
from livelearn.log.sqlite import SQLiteLog
from livelearn.models import register
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.spec import PREDICTIONS
from livelearn.train.trainer import Trainer

T = 1_704_067_200_000
CLICKS = spec.Stream("clicks", {"request_id": str}, key="user", id="id")
FAULTS: dict[str, Any] = {"u4": float("nan"), "u5": [1], "u6": {"a": 1}, "u7": None,
                          "u8": np.float64(0.5)}


def features(user: Mapping[str, Any], item: Mapping[str, Any], ts: int) -> Any:
    uid = user.get("user_id")
    if uid == "u3":
        raise KeyError("plan")
    if uid == "u9":
        return None
    return {"plan": str(user.get("plan")), "x": FAULTS.get(str(uid), 1.0)}


PIPELINE = spec.Pipeline(
    name="faulty", feedback=spec.FeedbackJoin(streams=(CLICKS,), window_ms=60_000,
                                              label=lambda events: {"clicked": 0.0}),
    users=spec.Table("users", "users.csv", key="user_id", as_of="updated_at"),
    items=spec.Table("items", "items.csv", key="item_id", as_of="updated_at"),
    features=features, learner=lambda: FTRL(bits=10), target="clicked")


USERS = "user_id,updated_at,plan\n" + "".join(f"u{i},2023-12-31T00:00:00,pro\n" for i in range(10))


def _tables(tmp_path: Path, log: Log, users: str = USERS) -> None:
    (tmp_path / "users.csv").write_text(users)
    (tmp_path / "items.csv").write_text("item_id,updated_at\ni1,2023-12-31T00:00:00Z\n")
    for topic in PIPELINE.topics:
        log.create_topic(topic)


def _serving(tmp_path: Path, log: Log, users: str = USERS) -> ServerThread:
    """A server of PIPELINE over these users (and item i1), its first version approved."""
    _tables(tmp_path, log, users)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    return ServerThread(create_app(PIPELINE, log, registry, tmp_path, poll_s=0.02))


@pytest.fixture
def server(tmp_path: Path, log: SQLiteLog) -> Any:
    with _serving(tmp_path, log) as running:
        yield running


@pytest.mark.parametrize(("user", "detail"), [
    # README: the detail names the user and the item, where the function raised too
    ("u3", "pipeline 'faulty', user 'u3', item 'i1': the features function raised "
           "KeyError: 'plan'"),
    ("u4", "pipeline 'faulty', user 'u4', item 'i1': feature 'x': expected a number, "
           "a string or a bool, got nan"),
    ("u5", "pipeline 'faulty', user 'u5', item 'i1': feature 'x': expected a number, "
           "a string or a bool, got [1]"),
    ("u6", "pipeline 'faulty', user 'u6', item 'i1': feature 'x': expected a number, "
           "a string or a bool, got {'a': 1}"),
    ("u7", "pipeline 'faulty', user 'u7', item 'i1': feature 'x': expected a number, "
           "a string or a bool, got None"),
    ("u8", "pipeline 'faulty', user 'u8': the features cannot be logged as JSON: "
           "Type is not JSON serializable: numpy.float64"),
    ("u9", "pipeline 'faulty', user 'u9', item 'i1': expected a mapping of feature names "
           "to values, got None"),
])
def test_features_that_fail_get_a_500_naming_the_feature_and_the_server_goes_on(
        server: ServerThread, log: SQLiteLog, user: str, detail: str) -> None:
    with httpx.Client(base_url=server.url) as http:
        bad = http.post("/predict", json={"user_id": user, "items": ["i1"], "ts": T})
        assert (bad.status_code, bad.json()) == (500, {"detail": detail})
        good = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": T})
        assert good.status_code == 200, good.text
    logged = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 100)]
    assert [(p["user"], p["features"]) for p in logged] == [("u1", {"plan": "pro", "x": 1.0})]


def test_tables_with_iso_as_of_cells_are_served(server: ServerThread, log: SQLiteLog) -> None:
    reply = httpx.post(f"{server.url}/predict", json={"user_id": "u0", "items": ["i1"],
                                                      "ts": T})
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["predictions"][0]["score"], float)
    logged = orjson.loads(log.read(PREDICTIONS, 0, 0, 1)[0].value)
    assert logged["features"] == {"plan": "pro", "x": 1.0}


def test_a_request_gets_the_rows_as_of_its_time(tmp_path: Path, log: SQLiteLog) -> None:
    """The server reads the version of a row valid at the request's ts, as the joiner and
    ingested impressions do: never a later one, and none before the first."""
    users = "user_id,updated_at,plan\nu1,2023-12-31T00:00:00,free\nu1,2024-01-01T01:00:00,pro\n"
    with _serving(tmp_path, log, users) as server:
        statuses = [httpx.post(f"{server.url}/predict", json={
            "user_id": "u1", "items": ["i1"], "ts": ts}).status_code
            for ts in (T, T + 3_600_000, T - 86_400_001)]
    assert statuses == [200, 200, 422]  # the last one before i1's first row
    plans = [orjson.loads(r.value)["features"]["plan"] for r in log.read(PREDICTIONS, 0, 0, 9)]
    assert plans == ["free", "pro"]


def test_impressions_the_features_fail_on_are_dead_lettered(tmp_path: Path,
                                                             log: SQLiteLog) -> None:
    """Ingested impressions get their features from the same function: where it raises or
    returns what the server would not serve, the impression is dead-lettered ('failed')."""
    from livelearn.ingest import ingest

    _tables(tmp_path, log)
    (tmp_path / "shown.jsonl").write_bytes(b"\n".join(orjson.dumps(
        {"request_id": f"r{i}", "ts": T + i, "user": f"u{i}", "item": "i1"}) for i in range(10)))
    result = ingest(log, PIPELINE, PREDICTIONS, tmp_path / "shown.jsonl", data_dir=tmp_path)
    logged = [orjson.loads(r.value)["request_id"] for r in log.read(PREDICTIONS, 0, 0, 100)]
    dead = [orjson.loads(r.value) for r in log.read("dead_letters", 0, 0, 100)]
    assert logged == ["r0", "r1", "r2"]
    assert result.dead == 7 and {d["reason"] for d in dead} == {"failed"}
    assert dead[0]["detail"] == ("pipeline 'faulty': the features function raised KeyError: "
                                 "'plan'")
    assert dead[1]["detail"] == ("pipeline 'faulty', request 'r4': feature 'x': expected a "
                                 "number, a string or a bool, got nan")
    assert "cannot be logged as JSON: Type is not JSON serializable: numpy.float64" in \
        dead[5]["detail"]


@register
class _Sure(FTRL):
    """A classifier that says 7 for a probability."""

    name = "test_serve_sure"

    def predict(self, batch: SparseBatch) -> np.ndarray:
        return np.full(len(batch), 7.0)


def test_a_classifiers_score_outside_0_1_gets_a_500_naming_it(tmp_path: Path,
                                                              log: SQLiteLog) -> None:
    """Before: served as it came, a 'probability' of 7.0, with 200."""
    _tables(tmp_path, log)
    pipeline = dataclasses.replace(PIPELINE, learner=lambda: _Sure(bits=10))
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, pipeline)
    Gate(log, registry, pipeline.target, pipeline.policies.gate_tolerance).step()
    with ServerThread(create_app(pipeline, log, registry, tmp_path)) as server:
        reply = httpx.post(f"{server.url}/predict", json={"user_id": "u1", "items": ["i1"],
                                                          "ts": T})
    assert (reply.status_code, reply.json()) == (500, {"detail": (
        "pipeline 'faulty', user 'u1', item 'i1': the model gave the score 7.0: outside "
        "[0, 1], where a binary learner's P(label = 1) lies")})
    assert log.read(PREDICTIONS, 0, 0, 10) == []


def test_a_predict_whose_client_left_before_the_answer_logs_nothing(tmp_path: Path,
                                                                    log: SQLiteLog) -> None:
    """A client that gives up waiting (its timeout) was shown nothing: its predictions,
    logged, would be labelled not clicked. Before: logged, and answered 200 to no one."""
    def slow(user: Mapping[str, Any], item: Mapping[str, Any], ts: int) -> Any:
        if user.get("user_id") == "u2":
            time.sleep(0.6)
        return features(user, item, ts)

    _tables(tmp_path, log)
    pipeline = dataclasses.replace(PIPELINE, features=slow)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, pipeline)
    Gate(log, registry, pipeline.target, pipeline.policies.gate_tolerance).step()
    with ServerThread(create_app(pipeline, log, registry, tmp_path)) as server, \
            httpx.Client(base_url=server.url) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/predict", json={"user_id": "u2", "items": ["i1"], "ts": T},
                      timeout=0.2)
        time.sleep(0.8)  # the server done with it
        good = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": T})
        metrics = http.get("/metrics").text
    assert good.status_code == 200, good.text
    assert [orjson.loads(r.value)["user"] for r in log.read(PREDICTIONS, 0, 0, 10)] == ["u1"]
    assert 'livelearn_http_responses_total{path="/predict",status="499"} 1' in metrics
    assert "livelearn_predictions_total 1\n" in metrics
