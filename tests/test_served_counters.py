"""A feedback join's windowed counters: two servers count into one Redis store and read
each candidate's counts as of the request, never later; history replays count the same."""

from __future__ import annotations

import csv
import dataclasses
import random
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis

from conftest import ServerThread
from livelearn import spec
from livelearn.demo import free_port
from livelearn.deploy.gate import Gate
from livelearn.errors import ConfigError
from livelearn.events import Event
from livelearn.log import Log, open_log
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.serve.app import create_app
from livelearn.serve.counters import ServedCounters, retention_for
from livelearn.spec import PREDICTIONS
from livelearn.tables.store import open_store
from livelearn.train.trainer import Trainer
from test_store_conformance import private_redis

T0 = 1_704_067_200_000
HOUR = 3_600_000
CLICKS = spec.Stream("clicks", {"request_id": str, "item": str}, key="user", id="id")
COUNTERS = (spec.WindowCount("item_views_1h", PREDICTIONS, HOUR, by="item", of="item"),
            spec.WindowCount("item_clicks_1h", "clicks", HOUR, by="item", of="item"),
            spec.WindowCount("user_clicks_1h", "clicks", HOUR, of="user"))


def features(user: Mapping[str, Any], item: Mapping[str, Any], ts: int,
             counts: Mapping[str, int]) -> dict[str, Any]:
    return {"item": str(item.get("item_id")), **counts}


def label(events: list[Event]) -> dict[str, float]:
    return {"clicked": float(bool(events))}


PIPELINE = spec.Pipeline(
    name="counted", feedback=spec.FeedbackJoin(streams=(CLICKS,), window_ms=HOUR, label=label),
    users=spec.Table("users", "users.csv", key="user_id"),
    items=spec.Table("items", "items.csv", key="item_id"),
    counters=COUNTERS, features=features, learner=lambda: FTRL(bits=12), target="clicked")


def _tables(folder: Path, users: int = 5, items: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, key, n in (("users", "user_id", users), ("items", "item_id", items)):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([key, "x"])
            w.writerows([[f"{name[0]}{i}", i] for i in range(n)])
    return folder


def _serving(tmp_path: Path, log: Log) -> tuple[Path, Registry]:
    """The tables' folder and a registry with a first version approved, for create_app."""
    tables = _tables(tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    return tables, registry


def _click(user: str, rid: str, item: str, ts: int, id: str) -> dict[str, Any]:
    return {"stream": "clicks", "key": user, "id": id, "ts": ts,
            "payload": {"request_id": rid, "item": item}}


def test_two_servers_share_counters_in_redis_as_of_each_request(
        tmp_path: Path, log: SQLiteLog, redis_address: str) -> None:
    tables, registry = _serving(tmp_path, log)
    url = f"redis://{redis_address}/0?namespace=t{uuid.uuid4().hex}"
    apps = [create_app(PIPELINE, log, registry, tables, store=open_store(url)) for _ in "ab"]
    with ServerThread(apps[0]) as a, ServerThread(apps[1]) as b, \
            httpx.Client(base_url=a.url) as http_a, httpx.Client(base_url=b.url) as http_b:

        def counts(http: httpx.Client, user: str, items: list[str], ts: int) -> list[Any]:
            reply = http.post("/predict", json={"user_id": user, "items": items, "ts": ts})
            assert reply.status_code == 200, reply.text
            return [(p["request_id"], p["item"]) for p in reply.json()["predictions"]]

        shown = counts(http_a, "u1", ["i1", "i2"], T0)
        counts(http_b, "u2", ["i1"], T0 + 10)
        click = _click("u1", shown[0][0], "i1", T0 + 20, "c1")
        for _ in range(2):  # a retried batch counts once
            assert http_a.post("/feedback", json=[click]).json()["accepted"] == 1
        counts(http_b, "u1", ["i1", "i2"], T0 + 30)
        counts(http_b, "u1", ["i1"], T0 + 20)  # as of before the click: its ts is not < 20
        counts(http_a, "u1", ["i1"], T0 + 20 + HOUR)  # the click is the window's first ms
        counts(http_a, "u1", ["i1"], T0 + 21 + HOUR)
    served = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 100)]
    got = [(r["user"], r["item"], r["ts"] - T0, {k: v for k, v in r["features"].items()
                                                 if k != "item"}) for r in served]

    def c(views: int, clicks: int, user_clicks: int) -> dict[str, int]:
        return {"item_views_1h": views, "item_clicks_1h": clicks, "user_clicks_1h": user_clicks}

    assert got == [
        ("u1", "i1", 0, c(0, 0, 0)), ("u1", "i2", 0, c(0, 0, 0)),
        ("u2", "i1", 10, c(1, 0, 0)),
        ("u1", "i1", 30, c(2, 1, 1)), ("u1", "i2", 30, c(1, 0, 1)),
        ("u1", "i1", 20, c(2, 0, 0)),
        ("u1", "i1", 20 + HOUR, c(2, 1, 1)),  # views at 30 and 20; the click at 20
        ("u1", "i1", 21 + HOUR, c(2, 0, 0)),  # views at 30 and 20+HOUR
    ]


def test_feedback_appended_while_redis_is_down_is_accepted_and_counted_once_it_is_back(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Redis down: a /feedback batch the log took is answered 200, not 503 (its client
    would send it again, and the log would hold each event twice); the server counts it
    from the log once Redis is back, as any event another producer appended."""
    tables, registry = _serving(tmp_path, log)
    port = free_port()
    with private_redis(tmp_path, port=port) as address:
        store = open_store(f"redis://{address}/0")
        with ServerThread(create_app(PIPELINE, log, registry, tables, poll_s=0.02,
                                     store=store)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as http:
            Redis.from_url(f"redis://{address}/0").shutdown(nosave=True)
            answer = http.post("/feedback", json=[_click("u1", "r1", "i1", T0, "c1")])
            with private_redis(tmp_path, port=port):  # back, empty
                served = http.post("/predict", json={"user_id": "u1", "items": ["i1"],
                                                     "ts": T0 + 10})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert [r.value for r in log.read("clicks", 0, 0, 10)] == [
        orjson.dumps(_click("u1", "r1", "i1", T0, "c1"))]
    assert served.status_code == 200, served.text
    logged = orjson.loads(log.read(PREDICTIONS, 0, 0, 1)[0].value)
    assert logged["features"]["user_clicks_1h"] == 1


def test_requests_ahead_of_the_clock_are_refused_past_five_minutes_and_counted_within(
        tmp_path: Path, log: SQLiteLog, redis_address: str) -> None:
    """A /predict and a /feedback three hours ahead (a client's clock) are refused: the
    server took a day ahead, and one such event moved a joiner's watermark there. Four
    minutes ahead they are counted, and a present request after them sees the present
    events (the store expires behind its newest event or the wall clock, whichever is
    earlier: test_store_conformance takes events hours ahead to it directly)."""
    tables, registry = _serving(tmp_path, log)
    url = f"redis://{redis_address}/0?namespace=t{uuid.uuid4().hex}"
    app = create_app(PIPELINE, log, registry, tables,
                     store=open_store(url, retention_for(PIPELINE.counters)))
    now = int(time.time() * 1000)
    ahead = now + 4 * 60_000
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:

        def predict(ts: int) -> str:
            reply = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": ts})
            assert reply.status_code == 200, reply.text
            return str(reply.json()["predictions"][0]["request_id"])

        def click(rid: str, ts: int, id: str) -> None:
            reply = http.post("/feedback", json=[_click("u1", rid, "i1", ts, id)])
            assert reply.json() == {"accepted": 1, "rejected": []}

        click(predict(now - 2_000), now - 1_000, "c1")
        far = http.post("/predict", json={"user_id": "u1", "items": ["i1"],
                                          "ts": now + 3 * HOUR})
        assert far.status_code == 422 and "in the future" in far.text
        refused = http.post("/feedback", json=[_click("u1", "r", "i1", now + 3 * HOUR, "c9")])
        assert refused.json()["accepted"] == 0
        assert "300000 ms in the future" in refused.json()["rejected"][0]["error"]
        click(predict(ahead), ahead + 5, "c2")
        predict(now)
        predict(ahead + 10)
    served = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 100)]
    assert [(r["ts"] - now, r["features"]) for r in served[2:]] == [
        (0, {"item": "i1", "item_views_1h": 1, "item_clicks_1h": 1, "user_clicks_1h": 1}),
        (ahead + 10 - now, {"item": "i1", "item_views_1h": 3, "item_clicks_1h": 2,
                            "user_clicks_1h": 2})]


def test_a_predict_that_a_full_redis_refuses_logs_nothing(tmp_path: Path, log_url: str
                                                          ) -> None:
    """Redis at its maxmemory (noeviction) refuses to count a request's predictions: the
    request gets 503 and the log holds none of its predictions. Before, they were logged
    first, and the joiner made each a sample labelled not clicked although the client
    got an error and showed nothing. /readyz says so meanwhile (it said ready: Redis
    answered its reads)."""
    log = open_log(log_url)
    tables, registry = _serving(tmp_path, log)
    with private_redis(tmp_path) as address:
        redis = Redis.from_url(f"redis://{address}/0")
        app = create_app(PIPELINE, log, registry, tables, store=open_store(f"redis://{address}/0"))
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:

            def predict(user: str, ts: int) -> httpx.Response:
                return http.post("/predict", json={"user_id": user, "items": ["i1", "i2"],
                                                   "ts": ts})

            assert predict("u1", T0).status_code == 200
            redis.config_set("maxmemory-policy", "noeviction")
            redis.config_set("maxmemory", "1")  # below what it holds: every write refused
            try:
                full = predict("u2", T0 + 10)
                unready = http.get("/readyz")
            finally:
                redis.config_set("maxmemory", "0")
            assert full.status_code == 503 and "Redis is full" in full.json()["detail"], \
                full.text
            assert unready.status_code == 503, unready.text
            assert "Redis is full" in unready.json()["detail"]
            assert http.get("/readyz").json() == {"ready": True, "model_version": 1}
            again = predict("u3", T0 + 20)
            assert again.status_code == 200, again.text
        redis.close()
    logged = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 100)]
    log.close()
    assert [(r["user"], r["item"]) for r in logged] == [
        ("u1", "i1"), ("u1", "i2"), ("u3", "i1"), ("u3", "i2")]
    assert [r["features"]["item_views_1h"] for r in logged] == [0, 0, 1, 1]  # u2's: none


def test_a_prediction_larger_than_the_topic_takes_is_refused_before_it_is_counted(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """Features of an item too large for a record of the predictions topic (Kafka's 1 MB):
    the request gets 500 naming the size, and nothing is counted or logged. Before, the
    predictions were counted, then the append refused them: the request's item was counted
    as shown though no one was shown it, and the next request's counts said so."""
    log = open_log(f"kafka://{kafka_bootstrap}?prefix=t{uuid.uuid4().hex[:12]}.")

    def big(user: Mapping[str, Any], item: Mapping[str, Any], ts: int,
            counts: Mapping[str, int]) -> dict[str, Any]:
        text = "x" * 2_000_000 if item.get("item_id") == "i2" else ""
        return {**features(user, item, ts, counts), "text": text}

    tables, registry = _serving(tmp_path, log)
    app = create_app(dataclasses.replace(PIPELINE, features=big), log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        refused = http.post("/predict", json={"user_id": "u1", "items": ["i1", "i2"],
                                              "ts": T0})
        served = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": T0 + 10})
    assert refused.status_code == 500, refused.text
    assert "bytes, more than" in refused.json()["detail"], refused.text
    assert served.status_code == 200, served.text
    logged = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 100)]
    log.close()
    assert [(r["item"], r["features"]["item_views_1h"]) for r in logged] == [("i1", 0)]


def test_a_server_restarted_on_a_fresh_store_serves_the_same_counts(
        tmp_path: Path, log: SQLiteLog) -> None:
    tables, registry = _serving(tmp_path, log)

    def served(ts: int) -> Any:
        app = create_app(PIPELINE, log, registry, tables)  # a private memory:// store
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
            reply = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": ts})
            rid = reply.json()["predictions"][0]["request_id"]
            http.post("/feedback", json=[_click("u1", rid, "i1", ts + 5, f"c{ts}")])
        return orjson.loads(log.read(PREDICTIONS, 0, log.end_offset(PREDICTIONS, 0) - 1,
                                     1)[0].value)["features"]

    assert served(T0)["item_views_1h"] == 0
    assert served(T0 + 10) == {"item": "i1", "item_views_1h": 1, "item_clicks_1h": 1,
                               "user_clicks_1h": 1}
    assert served(T0 + 20) == {"item": "i1", "item_views_1h": 2, "item_clicks_1h": 2,
                               "user_clicks_1h": 2}


def test_a_servers_start_counts_only_what_the_log_got_within_the_stores_retention(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A log of months is not read at every start: records appended longer ago than the
    store keeps events (and five minutes) are older than any window. Before: each start
    read every record (130,000 a second here), as long as the log was old."""
    _serving(tmp_path, log)
    now = int(time.time() * 1000)

    def shown(rid: str, ts: int) -> tuple[str, bytes]:
        return "u1", orjson.dumps({"request_id": rid, "ts": ts, "user": "u1", "item": "i1",
                                   "model_version": 1, "score": 0.5, "features": {}})

    log.append(PREDICTIONS, [shown(f"old{i}", now - 30 * 86_400_000 + i) for i in range(3)])
    with sqlite3.connect(tmp_path / "log.db") as db:  # the first ones appended a month ago
        db.execute("UPDATE batches SET appended = appended - 30 * 86400")
    log.append(PREDICTIONS, [shown("new", now - 1000)])
    served = ServedCounters(COUNTERS, open_store("memory://", retention_for(COUNTERS)))
    assert served.add_logged(log, PIPELINE.schemas) == 1
    assert served.count(COUNTERS[0], "i1", now) == 1


def test_a_click_ahead_of_when_the_log_got_it_is_not_counted_whatever_the_servers_clock(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A click whose ts is more than five minutes after the log received it (its producer's
    clock ahead) is a malformed dead letter of the joiner: a server does not count it,
    judging by the log's time as the joiner does. Before, it judged by its own clock when
    it read the click: a server that followed it while it was ahead did not count it, one
    started minutes later did (and two replicas, their clocks apart, differed)."""
    _serving(tmp_path, log)
    now = int(time.time() * 1000)
    log.append("clicks", [("u1", orjson.dumps(_click("u1", "r1", "i1", now + 60_000, "a")))])
    with sqlite3.connect(tmp_path / "log.db") as db:  # the log received it ten minutes ago
        db.execute("UPDATE batches SET appended = appended - 600")
    log.append("clicks", [("u1", orjson.dumps(_click("u1", "r2", "i1", now - 1000, "b")))])
    served = ServedCounters(COUNTERS, open_store("memory://", retention_for(COUNTERS)))
    assert served.add_logged(log, PIPELINE.schemas) == 1
    assert served.count(COUNTERS[2], "u1", now + 120_000) == 1


def test_an_event_of_another_stream_in_a_counted_topic_is_not_counted(log: SQLiteLog) -> None:
    """A view that a producer wrote to the clicks topic is a malformed dead letter of the
    joiner (stream 'views' read from topic 'clicks'): a server does not count it either.
    Before, it counted it under the views counter, an event the joiner never took."""
    views = spec.WindowCount("user_views_1h", "views", HOUR, of="user")
    for topic in ("clicks", "views"):
        log.create_topic(topic)
    view = {"stream": "views", "key": "u1", "id": "v1", "ts": T0, "payload": {}}
    log.append("clicks", [("u1", orjson.dumps(view))])
    log.append("views", [("u1", orjson.dumps({**view, "id": "v2"}))])
    served = ServedCounters([COUNTERS[2], views], open_store("memory://", 2 * HOUR))
    assert served.add_logged(log, {**PIPELINE.schemas, "views": {}}) == 1
    assert served.count(views, "u1", T0 + 1) == 1


def test_a_prediction_the_joiner_refuses_is_not_counted_and_the_server_starts(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A prediction record with a ts after the year 9999 (2**60 ms, another producer's):
    the joiner dead-letters it, and the server's start stopped at it (the store refused
    its ts), at every start."""
    tables, registry = _serving(tmp_path, log)
    bad = {"request_id": "bad", "ts": 2**60, "user": "u1", "item": "i1", "model_version": 1,
           "score": 0.5, "features": {}}
    log.append(PREDICTIONS, [("u1", orjson.dumps(bad)),
                             ("u1", orjson.dumps({**bad, "request_id": "good", "ts": T0}))])
    app = create_app(PIPELINE, log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": T0 + 10})
    served = orjson.loads(log.read(PREDICTIONS, 0, 2)[0].value)
    assert served["features"]["item_views_1h"] == 1  # the good one


def test_replayed_impressions_count_exactly_as_of_each_impression(tmp_path: Path) -> None:
    tables = _tables(tmp_path, users=4, items=3)
    rng = random.Random(5)
    impressions, clicks = [], []
    for n in range(400):
        ts = T0 + n * 30_000 + rng.randrange(0, 3)  # ~3.3 hours, some at the same ms
        user, item = f"u{rng.randrange(4)}", f"i{rng.randrange(3)}"
        impressions.append({"request_id": f"r{n}", "ts": ts, "user": user, "item": item})
        if rng.random() < 0.3:
            clicks.append({"id": f"c{n}", "request_id": f"r{n}", "user": user, "item": item,
                           "ts": ts + rng.randrange(0, 600_000)})
    for name, rows in (("imps", impressions), ("clicks", sorted(clicks, key=lambda c: c["ts"]))):
        (tmp_path / f"{name}.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    log = SQLiteLog(tmp_path / "log.db")
    report, _ = replay(log, Registry(tmp_path / "registry"), PIPELINE,
                       [(PREDICTIONS, str(tmp_path / "imps.jsonl")),
                        ("clicks", str(tmp_path / "clicks.jsonl"))], data_dir=tables)
    assert report["samples"] == len(impressions)

    def scan(rows: list[dict[str, Any]], field: str, value: str, ts: int) -> int:
        return sum(1 for r in rows if r[field] == value and ts - HOUR <= r["ts"] < ts)

    served = [orjson.loads(r.value) for r in log.read(PREDICTIONS, 0, 0, 10_000)]
    assert len(served) == len(impressions)
    for r in served:
        assert r["features"] == {
            "item": r["item"], "item_views_1h": scan(impressions, "item", r["item"], r["ts"]),
            "item_clicks_1h": scan(clicks, "item", r["item"], r["ts"]),
            "user_clicks_1h": scan(clicks, "user", r["user"], r["ts"])}
    log.close()


@pytest.mark.parametrize(("change", "message"), [
    ({"counters": (spec.WindowCount("c", "clicks", HOUR, by="item"),)},
     "counter 'c': 'of' must be 'user' or 'item'"),
    ({"counters": (spec.WindowCount("c", PREDICTIONS, HOUR, of="item"),)},
     "counter 'c': counting 'predictions', 'by' must be 'user' or 'item'"),
    ({"counters": (spec.WindowCount("c", "clicks", HOUR, by="shop", of="item"),)},
     "stream 'clicks', field 'shop': counter 'c' reads it"),
    ({"counters": (spec.WindowCount("c", "views", HOUR, of="item"),)},
     "counter 'c': stream 'views' is not a stream of pipeline 'counted' "
     "(streams: predictions, clicks)"),
    ({"features": lambda user, item, ts: {}},
     "with counters the server calls features(user_row, item_row, ts, counts)"),
])
def test_served_counter_mistakes_fail_at_load_naming_the_counter(change: dict[str, Any],
                                                                  message: str) -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError) as e:
        replace(PIPELINE, **change)
    assert message in str(e.value)


def test_a_window_longer_than_the_store_keeps_is_refused_at_start(tmp_path: Path,
                                                                  log: SQLiteLog) -> None:
    with pytest.raises(ConfigError, match="counter 'item_views_1h': window_ms 3600000 is "
                                          "longer than the store's retention_ms 60000"):
        create_app(PIPELINE, log, Registry(tmp_path / "r"), _tables(tmp_path / "t"),
                   store=open_store("memory://?retention_ms=60000"))


def test_a_servers_store_keeps_the_longest_window_plus_an_hour_unless_its_url_says(
        tmp_path: Path, log: SQLiteLog) -> None:
    """What a server's store keeps follows the pipeline's counters (memory and Redis grow
    with it), not a fixed day: a window of two days needs no option, one of an hour keeps
    two hours of events, not 24."""
    assert retention_for(PIPELINE.counters) == 2 * HOUR
    assert retention_for(()) is None
    assert open_store("memory://", retention_for(PIPELINE.counters)).retention_ms == 2 * HOUR
    for url in ("memory://?retention_ms=7", "memory://?max_versions=2&retention_ms=7"):
        assert open_store(url, 5).retention_ms == 7
    store = open_store("memory://?max_versions=2", 5)
    assert (store.retention_ms, store.max_versions) == (5, 2)
    long = spec.WindowCount("item_views_2d", PREDICTIONS, 48 * HOUR, by="item", of="item")
    two_days = spec.Pipeline(
        name="counted", feedback=PIPELINE.feedback, users=PIPELINE.users, items=PIPELINE.items,
        counters=(long,), features=features, learner=PIPELINE.learner, target="clicked")
    tables, registry = _serving(tmp_path, log)
    app = create_app(two_days, log, registry, tables)  # before: longer than a day, refused
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        for ts in (T0, T0 + 36 * HOUR):
            reply = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": ts})
            assert reply.status_code == 200, reply.text
    served = [orjson.loads(r.value)["features"] for r in log.read(PREDICTIONS, 0, 0, 10)]
    assert [f["item_views_2d"] for f in served] == [0, 1]
