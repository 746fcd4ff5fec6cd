"""A label in the events is served: /predict scores an event with the joiner's features.

Real parts: the fraud example's data, a SQLite log and a registry in tmp_path, a
replay, and the server over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import ServerThread
from livelearn.cli_data import utc
from livelearn.demo import free_port
from livelearn.events import decode_event
from livelearn.join.enrich import Enricher
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.serve.app import create_app
from livelearn.spec import Pipeline, load_pipeline
from livelearn.tables.offline import read_rows
from livelearn.tables.store import open_store
from test_run import _process, _wait

ROOT = Path(__file__).resolve().parent.parent
FRAUD = ROOT / "examples" / "fraud" / "pipeline.py"
HOUR = 3_600_000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data/ holding 6,000 transactions and the cards and merchants tables."""
    folder = tmp_path_factory.mktemp("fraud")
    subprocess.run([sys.executable, str(ROOT / "examples/fraud/generate_data.py"), "--out",
                    str(folder / "data"), "--rows", "6000"], check=True)
    return folder


@pytest.fixture
def pipeline() -> Pipeline:
    return load_pipeline(str(FRAUD))


@pytest.fixture
def replayed(tmp_path: Path, data: Path, pipeline: Pipeline) -> dict[str, Any]:
    log = SQLiteLog(tmp_path / "log.db")
    registry = Registry(tmp_path / "registry")
    replay(log, registry, pipeline, [("transactions", str(data / "data/transactions.jsonl"))],
           data)
    return {"log": log, "registry": registry}


@pytest.fixture
def server(replayed: dict[str, Any], pipeline: Pipeline, data: Path) -> Iterator[httpx.Client]:
    # counters keep a retention of event time behind the newest event (a day by default):
    # these tests ask for times all over the history's days
    store = open_store(f"memory://?retention_ms={30 * 24 * HOUR}")
    app = create_app(pipeline, replayed["log"], replayed["registry"], data, poll_s=0.05,
                     store=store)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as http:
        yield http


def _transactions(data: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (data / "data/transactions.jsonl").read_bytes()
            .splitlines()]


def _score(replayed: dict[str, Any], pipeline: Pipeline, version: int,
           features: dict[str, Any]) -> float:
    model = replayed["registry"].load(version)
    return float(model.predict(pipeline.hash_rows([features], model.bits))[0])


def test_predict_scores_with_the_features_the_joiner_builds(
        replayed: dict[str, Any], server: httpx.Client, pipeline: Pipeline, data: Path) -> None:
    """No skew: for events at times where a card's row changed and its counter is above 0,
    the server's score is the model's score of the features the Enricher computes for the
    same event, at the same ts, after the same events."""
    cards: dict[str, list[dict[str, Any]]] = {}
    for row in read_rows(pipeline.lookups[0].table, data):
        cards.setdefault(str(row["card_id"]), []).append(row)
    history = _transactions(data)
    start, end = history[0]["ts"], history[-1]["ts"]
    changed = next(card for card, rows in sorted(cards.items()) if any(
        start < r["updated_at"] < end and (r["risk"], r["country"]) !=
        (rows[0]["risk"], rows[0]["country"]) for r in rows[1:]))
    change = next(r["updated_at"] for r in cards[changed][1:] if start < r["updated_at"] < end)
    busy = [t for t in history if t["card"] == changed][:6]
    queries = sorted([(change - 1, changed), (change, changed), (change + 1, changed),
                      *[(t["ts"] + 1, changed) for t in busy], (busy[0]["ts"] + 2 * HOUR, changed),
                      (start + 5 * HOUR, "no-such-card")])
    events = [{"card": card, "merchant": "m3", "amount": 12.5 + i, "tx_id": f"q{i}", "ts": ts}
              for i, (ts, card) in enumerate(queries)]
    answer = server.post("/predict", json={"events": events})
    assert answer.status_code == 200, answer.text
    scores = answer.json()["scores"]
    assert [s["id"] for s in scores] == [e["tx_id"] for e in events]
    # the same times as ISO 8601 text, as README's HTTP table says /predict takes them
    iso = [{**e, "ts": utc(e["ts"])} for e in events]
    assert server.post("/predict", json={"events": iso}).json()["scores"] == scores

    enricher = Enricher(pipeline, data)
    for record in replayed["log"].read("transactions", 0, 0, 100_000):
        enricher.observe(decode_event(record.value, pipeline.schemas))
    built = [enricher.sample(decode_event({"stream": "transactions", "key": e["card"],
                                           "id": e["tx_id"], "ts": e["ts"],
                                           "payload": {**{k: e[k] for k in (
                                               "card", "merchant", "amount")},
                                               "is_fraud": False}},  # the label, not read
                                          pipeline.schemas))["features"] for e in events]
    for event, score, features in zip(events, scores, built, strict=True):
        assert score["score"] == _score(replayed, pipeline, score["model_version"], features), \
            (event, features)
    # the test is sensitive: the row changed between two of them, and counts were not all 0
    assert built[0]["risk"] != built[2]["risk"] or built[0]["country"] != built[2]["country"]
    assert {f["tx_last_hour"] for f in built} > {"0"}
    assert built[-1]["risk"] == "unknown" or built[0]["risk"] == "unknown"  # an unknown card


def test_counters_count_ingested_events_and_those_sent_to_feedback(
        tmp_path: Path, replayed: dict[str, Any], server: httpx.Client, pipeline: Pipeline,
        data: Path) -> None:
    """Events appended by `livelearn ingest` (another process) and by /feedback are both
    counted: the server's count is the joiner's."""
    ts = _transactions(data)[-1]["ts"] + 10 * HOUR
    ingested = tmp_path / "more.jsonl"
    ingested.write_bytes(b"".join(orjson.dumps(
        {"tx_id": f"new{i}", "card": "fresh", "merchant": "m3", "amount": 5.0,
         "ts": ts + i * 1000, "is_fraud": False}) + b"\n" for i in range(2)))
    done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", str(FRAUD),
                           "transactions", str(ingested), "--log",
                           f"sqlite:///{tmp_path / 'log.db'}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    sent = server.post("/feedback", json=[
        {"stream": "transactions", "key": "fresh", "id": f"fb{i}", "ts": ts + 5000 + i,
         "payload": {"card": "fresh", "merchant": "m3", "amount": 7.0, "is_fraud": True}}
        for i in range(2)])
    assert sent.json() == {"accepted": 2, "rejected": []}
    event = {"card": "fresh", "merchant": "m3", "amount": 1.0, "ts": ts + 60_000}
    expected = pipeline.features(decode_event(
        {"stream": "transactions", "key": "fresh", "id": "x", "ts": ts + 60_000,
         "payload": {"card": "fresh", "merchant": "m3", "amount": 1.0, "is_fraud": False}},
        pipeline.schemas), {"cards": {}, "merchants": _merchant(pipeline, data, "m3")},
        {"card_tx_1h": 4})
    deadline = time.monotonic() + 10
    while True:
        scored = server.post("/predict", json={"events": [event]}).json()["scores"][0]
        if scored["score"] == _score(replayed, pipeline, scored["model_version"], expected):
            break
        assert time.monotonic() < deadline, "the ingested events were never counted"
        time.sleep(0.05)
    metrics = server.get("/metrics").text
    assert "livelearn_feedback_events_total 2" in metrics
    assert "livelearn_events_scored_total" in metrics


def _merchant(pipeline: Pipeline, data: Path, merchant: str) -> dict[str, Any]:
    return next(r for r in read_rows(pipeline.lookups[1].table, data)
                if r["merchant_id"] == merchant)


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"events": [{"card": "c1", "merchant": "m1", "amount": 3.0, "is_fraud": True}]}, 422,
     "field 'events.0.is_fraud': the label of stream 'transactions' is what /predict "
     "predicts: leave it out (send labelled events to /feedback)"),
    ({"events": [{"card": "c1", "amount": 3.0}]}, 422,
     "field 'events.0': stream 'transactions', field 'merchant': missing (expected str)"),
    ({"events": [{"merchant": "m1", "amount": 3.0}]}, 422,
     "field 'events.0': stream 'transactions', field 'card': missing (the key)"),
    ({"events": [{"card": "c1", "merchant": "m1", "amount": "3"}]}, 422,
     "field 'events.0': stream 'transactions', field 'amount': expected float, got '3'"),
    ({"events": [{"card": "c1", "merchant": "m1", "amount": 3.0, "ts": 1_700_000_000}]}, 422,
     "field 'events.0': stream 'transactions', field 'ts': expected milliseconds since the "
     "epoch, got 1700000000 (seconds?)"),
    ({"events": []}, 422, "field 'events': List should have at least 1 item"),
    ({"events": [3]}, 422, "field 'events.0': Input should be a valid dictionary, got 3"),
    ({"event": []}, 422, "field 'events': Field required"),
    ({"events": [{"stream": "transactions", "key": "c1", "id": "x", "ts": 1,
                  "payload": {"card": "c1"}}]}, 422,
     "field 'events.0.payload': /predict takes an event's fields flat"),
])
def test_bad_requests_get_a_4xx_naming_the_field(server: httpx.Client, body: Any, status: int,
                                                 detail: str) -> None:
    answer = server.post("/predict", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"].startswith(detail), answer.json()["detail"]


def test_not_json_is_400_and_an_unknown_card_is_scored(server: httpx.Client) -> None:
    answer = server.post("/predict", content=b"{", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    scored = server.post("/predict", json={"events": [
        {"card": "nobody", "merchant": "nowhere", "amount": 1, "tx_id": 7}]})
    assert scored.status_code == 200, scored.text
    assert scored.json()["scores"][0]["id"] == "7"


def test_a_features_function_that_raises_is_a_500_naming_it(
        replayed: dict[str, Any], pipeline: Pipeline, data: Path) -> None:
    from dataclasses import replace

    def broken(event: Any, rows: Any, counts: Any) -> dict[str, Any]:
        raise KeyError("risk")

    app = create_app(replace(pipeline, features=broken), replayed["log"], replayed["registry"],
                     data)
    with ServerThread(app) as running:
        answer = httpx.post(f"{running.url}/predict", json={"events": [
            {"card": "c1", "merchant": "m1", "amount": 1.0, "tx_id": "t9"}]})
    assert answer.status_code == 500  # the event named: it said only the pipeline
    assert answer.json()["detail"] == ("pipeline 'fraud', event 't9': the features function "
                                       "raised KeyError: 'risk'")


def test_before_any_version_the_server_starts_and_says_it_has_no_model(
        tmp_path: Path, pipeline: Pipeline, data: Path) -> None:
    """It used to refuse to start: "nothing to serve: its label is in the events"."""
    log = SQLiteLog(tmp_path / "log.db")
    for topic in pipeline.topics:
        log.create_topic(topic)
    app = create_app(pipeline, log, Registry(tmp_path / "registry"), data)
    with ServerThread(app) as running:
        assert httpx.get(f"{running.url}/healthz").json() == {"status": "no model",
                                                              "model_version": None}
        answer = httpx.post(f"{running.url}/predict", json={"events": [
            {"card": "c1", "merchant": "m1", "amount": 1.0}]})
        assert answer.status_code == 503
        assert "no model version approved yet" in answer.json()["detail"]
        ready = httpx.get(f"{running.url}/readyz")
        assert (ready.status_code, ready.json()) == (503, {
            "ready": False, "detail": "no model version approved yet"})


def test_run_serves_the_fraud_pipeline_and_swaps_as_labelled_events_arrive(
        tmp_path: Path, data: Path) -> None:
    history = _transactions(data)
    (tmp_path / "first.jsonl").write_bytes(b"".join(orjson.dumps(t) + b"\n"
                                                    for t in history[:5500]))
    (tmp_path / "rest.jsonl").write_bytes(b"".join(orjson.dumps(t) + b"\n"
                                                   for t in history[5500:]))
    args = [str(FRAUD), "--workdir", "w", "--data", str(data)]
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args[:3],
                    "transactions", "first.jsonl"], cwd=tmp_path, check=True,
                   capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    event = {"card": "c1", "merchant": "m1", "amount": 20.0, "ts": history[-1]["ts"]}
    served: list[int] = []

    def version() -> bool:
        try:
            answer = httpx.post(f"{url}/predict", json={"events": [event]})
        except httpx.HTTPError:
            return False
        if answer.status_code == 200:
            served.append(int(answer.json()["model_version"]))
        return answer.status_code == 200

    with _process(["run", *args, "--port", str(port)], tmp_path) as process:
        _wait(version, "a first version served")
        assert process.stdout is not None
        assert process.stdout.readline() == f"serving on {url} (Ctrl-C to stop)\n".encode()
        assert httpx.get(f"{url}/dashboard").status_code == 200
        assert httpx.get(f"{url}/dashboard/data").json()["data"]["metric_by_version"][
            "metric"] == "auc"
        subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args[:3],
                        "transactions", "rest.jsonl"], cwd=tmp_path, check=True,
                       capture_output=True)
        _wait(lambda: version() and served[-1] > served[0], "a newer version served", 120)
