"""A server on Redis whose tables and counters are lost (Redis restarted without
persistence, a FLUSHDB) puts them back from its data files and goes on serving the
same features and scores; while Redis is down it answers 503; an item that is in
no table still gets 422."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from conftest import ROOT, ServerThread
from livelearn import spec
from livelearn.deploy.gate import Gate
from livelearn.errors import BadInput, ConfigError, Unavailable
from livelearn.events import Event
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.serve.tables import ServedTables
from livelearn.spec import PREDICTIONS
from livelearn.tables.store import open_store
from livelearn.train.trainer import Trainer

T0 = 1_704_067_200_000
HOUR = 3_600_000
CLICKS = spec.Stream("clicks", {"request_id": str}, key="user", id="id")


def features(user: Mapping[str, Any], item: Mapping[str, Any], ts: int,
             counts: Mapping[str, int]) -> dict[str, Any]:
    return {"plan": str(user.get("plan")), "x": float(item.get("x") or 0), **counts}


def label(events: list[Event]) -> dict[str, float]:
    return {"clicked": float(bool(events))}


PIPELINE = spec.Pipeline(
    name="lost", feedback=spec.FeedbackJoin(streams=(CLICKS,), window_ms=HOUR, label=label),
    users=spec.Table("users", "users.csv", key="user_id"),
    items=spec.Table("items", "items.csv", key="item_id", as_of="updated_at"),
    counters=(spec.WindowCount("item_views_1h", PREDICTIONS, HOUR, by="item", of="item"),),
    features=features, learner=lambda: FTRL(bits=10), target="clicked")


class OwnRedis:
    """A redis-server of this module's own (no persistence), so it can be stopped,
    restarted empty and flushed without touching the session's."""

    def __init__(self, data: Path):
        self.data, self.port = data, 0

    def start(self) -> None:
        out = subprocess.run([str(ROOT / "scripts" / "redis" / "start.sh"), str(self.data),
                              *([str(self.port)] if self.port else [])],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        self.port = int(out.strip().rpartition(":")[2])

    def stop(self) -> None:
        pid = int((self.data / "redis.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server {pid} did not stop")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path, log: SQLiteLog, own_redis: OwnRedis) -> Iterator[ServerThread]:
    """A server of PIPELINE on own_redis, its first version approved; i1's x is 1 from
    T0 - 1 h and 2 from T0 + 5 ms."""
    (tmp_path / "users.csv").write_text("user_id,plan\nu1,pro\nu2,free\n")
    (tmp_path / "items.csv").write_text(f"item_id,updated_at,x\ni1,{T0 - HOUR},1\n"
                                        f"i1,{T0 + 5},2\ni2,{T0 - HOUR},3\n")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    store = open_store(f"redis://127.0.0.1:{own_redis.port}/0")
    with ServerThread(create_app(PIPELINE, log, registry, tmp_path, store=store)) as running:
        yield running


def _served(http: httpx.Client, user: str, items: list[str], ts: int) -> list[Any]:
    """(item, score) of each candidate, after checking the answer is a 200."""
    reply = http.post("/predict", json={"user_id": user, "items": items, "ts": ts})
    assert reply.status_code == 200, reply.text
    return [(p["item"], p["score"]) for p in reply.json()["predictions"]]


def _logged(log: SQLiteLog) -> list[tuple[str, str, int, dict[str, Any], float]]:
    """(user, item, ts - T0, features, score) of each prediction logged, in order."""
    return [(r["user"], r["item"], r["ts"] - T0, r["features"], r["score"])
            for r in (orjson.loads(x.value) for x in log.read(PREDICTIONS, 0, 0, 1000))]


def _reloads(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "livelearn.serve" and r.levelno == logging.WARNING]


def test_a_redis_restarted_empty_gets_the_tables_and_counters_back(
        server: ServerThread, own_redis: OwnRedis, log: SQLiteLog,
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis down: 503; back up empty: the same features (rows as of the request, the
    counts of what was served before) and the same score, the tables put back once."""
    caplog.set_level(logging.WARNING, logger="livelearn.serve")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        _served(http, "u1", ["i1", "i2"], T0)
        before = _served(http, "u1", ["i1", "i2"], T0 + 10)
        assert http.get("/readyz").json() == {"ready": True, "model_version": 1}
        own_redis.stop()
        down = http.post("/predict", json={"user_id": "u1", "items": ["i1"], "ts": T0 + 10})
        assert down.status_code == 503, down.text
        assert "Redis is unreachable" in down.json()["detail"]
        ready = http.get("/readyz")  # a load balancer sends the requests elsewhere
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert "Redis is unreachable" in ready.json()["detail"]
        own_redis.start()
        assert http.get("/readyz").json() == {"ready": True, "model_version": 1}  # put back
        assert _served(http, "u1", ["i1", "i2"], T0 + 10) == before
        assert _served(http, "u1", ["i1", "i2"], T0 + 10) == before
    logged = _logged(log)
    assert [row[:4] for row in logged[2:]] == [row[:4] for row in logged[2:4]] * 3
    assert logged[2][3] == {"plan": "pro", "x": 2.0, "item_views_1h": 1}
    assert len(_reloads(caplog)) == 1, _reloads(caplog)
    assert "lost" in _reloads(caplog)[0]


def test_concurrent_requests_after_a_flushdb_all_get_the_rows_put_back_once(
        server: ServerThread, own_redis: OwnRedis, log: SQLiteLog,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="livelearn.serve")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = _served(http, "u2", ["i2", "i1"], T0)
        own_redis.client().flushdb()
        with ThreadPoolExecutor(8) as pool:
            after = list(pool.map(lambda _: _served(http, "u2", ["i2", "i1"], T0), range(16)))
    assert after == [before] * 16
    assert {orjson.dumps(row[3]) for row in _logged(log)} == {  # logged sorted by name
        orjson.dumps({"item_views_1h": 0, "plan": "free", "x": 3.0}),
        orjson.dumps({"item_views_1h": 0, "plan": "free", "x": 1.0})}
    assert len(_reloads(caplog)) == 1, _reloads(caplog)


def test_an_item_in_no_table_still_gets_a_422_and_nothing_is_reloaded(
        server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="livelearn.serve")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        unknown = http.post("/predict", json={"user_id": "u1", "items": ["i1", "nope"],
                                              "ts": T0})
        too_early = http.post("/predict", json={"user_id": "u1", "items": ["i2"],
                                                "ts": T0 - 2 * HOUR})
        _served(http, "new-user", ["i1"], T0)  # a user in no table: a cold start, a 200
    assert (unknown.status_code, unknown.json()) == (
        422, {"detail": "field 'items': item 'nope' is not in table 'items'"})
    assert (too_early.status_code, too_early.json()) == (
        422, {"detail": f"field 'items': item 'i2' has no row in table 'items' as of ts "
                        f"{T0 - 2 * HOUR} (ms): its rows start later (the store keeps a "
                        f"key's 8 newest)"})
    assert _reloads(caplog) == []


def test_a_memory_store_cleared_gets_its_tables_back_by_the_same_path(tmp_path: Path) -> None:
    """No Redis needed: a shared memory store cleared loses its tables as Redis does; while
    a file is missing the request gets Unavailable (503) and the next one tries again."""
    (tmp_path / "users.csv").write_text("user_id,plan\nu1,pro\n")
    (tmp_path / "items.csv").write_text(f"item_id,updated_at,x\ni1,{T0 - HOUR},1\n")
    loads: list[int] = []
    store = open_store("memory://lost-tables")
    tables = ServedTables(store, [PIPELINE.users, PIPELINE.items], tmp_path,
                          recount=lambda: loads.append(1))
    before = tables.rows("u1", ["i1"], T0)
    assert before == ({"user_id": "u1", "plan": "pro"},
                      [{"item_id": "i1", "updated_at": T0 - HOUR, "x": 1}])
    with pytest.raises(BadInput, match="item 'i2' is not in table 'items'"):
        tables.rows("u1", ["i2"], T0)
    assert len(loads) == 1
    items = (tmp_path / "items.csv").rename(tmp_path / "gone.csv")
    store.clear()
    with pytest.raises(Unavailable, match=r"lost table\(s\) 'users', 'items' and loading "
                                          r"them again failed: table 'items': no file"):
        tables.rows("u1", ["i1"], T0)
    items.rename(tmp_path / "items.csv")
    assert tables.rows("u1", ["i1"], T0) == before
    assert len(loads) == 2


def test_a_redis_restarted_from_an_older_snapshot_gets_the_counts_of_the_log_back(
        server: ServerThread, own_redis: OwnRedis, log: SQLiteLog,
        caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that crashed and restarted from its last RDB snapshot holds the tables, the
    markers and the counters as they were then: the predictions served since are counted
    again from the log, as after a restart with nothing kept."""
    caplog.set_level(logging.WARNING, logger="livelearn.serve")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        _served(http, "u1", ["i1"], T0)
        own_redis.client().save()  # the snapshot: i1 viewed once
        _served(http, "u1", ["i1"], T0 + 10)
        own_redis.stop()  # no save on the way down (--save ''): as a crash
        own_redis.start()  # loads the snapshot
        _served(http, "u1", ["i1"], T0 + 20)
    last = _logged(log)[-1]
    assert last[3]["item_views_1h"] == 2, _logged(log)
    assert any("restarted" in message for message in _reloads(caplog)), _reloads(caplog)


def test_a_server_on_a_store_holding_another_pipelines_tables_is_refused(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Two pipelines on one Redis namespace (the default, livelearn): each server's start
    replaced the other's users and items tables, and the other served their rows as its
    own, without a word. The marks name the pipeline that loaded a table, and a server of
    another is refused at its start, naming both and the way out."""
    (tmp_path / "users.csv").write_text("user_id,plan\nu1,pro\n")
    (tmp_path / "items.csv").write_text(f"item_id,updated_at,x\ni1,{T0 - HOUR},1\n")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    store = open_store("memory://two-pipelines")
    create_app(PIPELINE, log, Registry(tmp_path / "a"), tmp_path, store=store)
    other = dataclasses.replace(PIPELINE, name="other")
    with pytest.raises(ConfigError, match=r"the online store holds table 'users' of pipeline "
                                          r"'lost', not of 'other': .*\?namespace="):
        create_app(other, log, Registry(tmp_path / "b"), tmp_path, store=store)
    create_app(PIPELINE, log, Registry(tmp_path / "a"), tmp_path, store=store)  # its own
