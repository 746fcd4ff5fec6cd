"""The dashboard over real HTTP, on a real SQLite log and registry: what it shows matches the
registry and the server's counts, every string is escaped, its script fetches what exists."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS
from livelearn.train.trainer import Trainer
from livelearn.ui.dashboard import MAX_ROWS, DeadLetterCounts

SCRIPT = "<script>alert('pwned')</script>"


@pytest.fixture
def tables(tmp_path: Path, log: SQLiteLog) -> Path:
    world = NewsFeed(seed=3, impressions=200, candidates=5, days=0.5, users=50, new_users=5)
    write_tables(world, tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    return tmp_path / "tables"


def _publish(registry: Registry, samples: int, auc: float) -> int:
    """A small version published as the trainer does, with its metrics."""
    meta = {"metric": "auc", "samples": samples, "prequential": auc - 0.01,
            "window": {"metric": auc, "samples": 100}}
    return registry.publish(FTRL(bits=4), meta, parent=None).id


def _data(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/dashboard/data")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_serving(http: httpx.Client, version: int, since: bool = False) -> dict[str, Any]:
    """The data once ``version`` serves (and, with ``since``, once its serving time is in
    the registry: the server's next poll writes it after the first request)."""
    deadline = time.monotonic() + 30
    while (data := _data(http))["data"]["serving"]["version"] != version or (
            since and data["data"]["serving"]["since_ts"] is None):
        assert time.monotonic() < deadline, f"v{version} never served"
        time.sleep(0.05)
    return data


def test_the_page_shows_the_one_version_served(tmp_path: Path, log: SQLiteLog,
                                               tables: Path) -> None:
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)  # publishes v1
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    app = create_app(PIPELINE, log, registry, tables, poll_s=0.02)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/dashboard")
        root = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<p class="big">v1</p>' in page.text
    assert "Versions (1)" in page.text and "approved: no version approved yet" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert root.status_code in (302, 307) and root.headers["location"] == "/dashboard"


def test_the_page_says_so_when_nothing_is_published(tmp_path: Path, log: SQLiteLog,
                                                     tables: Path) -> None:
    app = create_app(PIPELINE, log, Registry(tmp_path / "registry"), tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/dashboard").text
        data = _data(http)["data"]
    assert "No version serves yet" in page and "No version published yet" in page
    assert data["serving"]["version"] is None
    assert (data["versions"], data["versions_total"]) == ([], 0)


def test_the_data_matches_the_registry_and_the_servers_counts(
        tmp_path: Path, log: SQLiteLog, tables: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first = _publish(registry, 1000, 0.70)
    registry.set_status(first, "approved", "no version approved yet")
    app = create_app(PIPELINE, log, registry, tables, poll_s=0.02)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        _wait_serving(http, first)
        rejected, approved, pending = (_publish(registry, n, auc) for n, auc in
                                       ((2000, 0.65), (3000, 0.74), (4000, 0.75)))
        registry.set_status(rejected, "rejected", "auc 0.65 vs incumbent v1 0.70: worse")
        registry.set_status(approved, "approved", "auc 0.74 vs incumbent v1 0.70: within")
        served = _wait_serving(http, approved)
        ok = http.post("/predict", json={"user_id": "u1", "items": ["p0", "p1"],
                                         "ts": 1767571200000})
        assert ok.status_code == 200, ok.text
        bad = {"stream": "click", "key": "u1", "id": "c1", "ts": 1767571200000, "payload": {}}
        assert http.post("/feedback", json=[bad]).json()["accepted"] == 0
        assert http.post("/predict", json={"user_id": "u1"}).status_code == 422
        data = _wait_serving(http, approved, since=True)["data"]
        metrics = http.get("/metrics").text
    assert served["data"]["serving"]["since_ts"] is None  # no request had come yet
    assert data["serving"]["version"] == approved
    assert data["serving"]["since_ts"] == 1767571200000
    statuses = {v.id: v.status for v in registry.versions()}
    assert statuses == {first: "retired", rejected: "rejected", approved: "serving",
                        pending: "candidate"}
    assert [(v["version"], v["status"]) for v in data["versions"]] == sorted(
        statuses.items(), reverse=True)
    rows = {v["version"]: v for v in data["versions"]}
    assert rows[rejected]["verdict"]["reason"] == "auc 0.65 vs incumbent v1 0.70: worse"
    assert rows[approved]["verdict"]["status"] == "approved"
    assert rows[pending]["verdict"] is None
    assert (rows[pending]["samples"], rows[pending]["window_metric"]) == (4000, 0.75)
    assert data["metric_by_version"]["window"] == [0.70, 0.65, 0.74, 0.75]
    assert data["counters"] == {"predictions": 2, "feedback_events": 0,
                                "feedback_rejected": 1, "model_swaps": 2}
    assert data["responses"] == [{"path": "/feedback", "status": 200, "count": 1},
                                 {"path": "/predict", "status": 200, "count": 1},
                                 {"path": "/predict", "status": 422, "count": 1}]
    assert data["dead_letters"]["counts"] == {"malformed": 1}
    assert 'livelearn_http_responses_total{path="/predict",status="422"} 1\n' in metrics


def test_every_string_from_a_pipeline_is_escaped(tmp_path: Path, log: SQLiteLog,
                                                 tables: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version = _publish(registry, 100, 0.6)
    registry.set_status(version, "approved", SCRIPT)
    rejected = _publish(registry, 200, 0.5)
    registry.set_status(rejected, "rejected", f"{SCRIPT} & <b>more</b>")
    app = create_app(PIPELINE, log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/dashboard").text
        sections = "".join(_data(http)["html"].values())
    for html in (page, sections):
        assert SCRIPT not in html and "<b>" not in html
        assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert page.count("<script>") == 1  # the page's own


def test_the_table_holds_the_newest_versions_and_says_how_many_are_hidden(
        tmp_path: Path, log: SQLiteLog, tables: Path) -> None:
    registry = Registry(tmp_path / "registry")
    for i in range(MAX_ROWS + 7):
        _publish(registry, 100 * (i + 1), 0.6 + i / 1000)
    registry.set_status(3, "approved", "by hand")
    app = create_app(PIPELINE, log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/dashboard").text
        data = _data(http)["data"]
    assert [v["version"] for v in data["versions"]] == list(range(MAX_ROWS + 7, 7, -1))
    assert (data["versions_total"], data["versions_hidden"]) == (MAX_ROWS + 7, 7)
    assert len(data["metric_by_version"]["version"]) == MAX_ROWS + 7  # the chart: all here
    assert f"7 older versions not shown (the newest {MAX_ROWS} of {MAX_ROWS + 7} are)" in page
    assert '<p class="big">v3</p>' in page


def test_the_pages_script_fetches_only_what_the_server_answers(
        tmp_path: Path, log: SQLiteLog, tables: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.set_status(_publish(registry, 100, 0.6), "approved", "by hand")
    app = create_app(PIPELINE, log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/dashboard").text
        fetched = re.findall(r"fetch\('([^']+)'", page)
        linked = re.findall(r'href="(/[^"]*)"', page)
        assert fetched == ["/dashboard/data"]
        for url in fetched + linked:
            assert http.get(url).status_code == 200, url


def test_dead_letters_are_counted_as_they_come_as_a_full_read_counts_them(
        log: SQLiteLog) -> None:
    log.create_topic(DEAD_LETTERS, partitions=2)
    reasons = ["late", "orphan", "malformed", "late", "duplicate"] * 9
    tally = DeadLetterCounts(log)
    assert tally.update(10) == {}
    for i, reason in enumerate(reasons):
        log.append(DEAD_LETTERS, [(f"k{i}", orjson.dumps({"reason": reason}))])
    assert sum(tally.update(10).values()) == 10 and tally.behind
    while tally.behind:
        tally.update(7)
    assert tally.update(7) == DeadLetterCounts(log).update() == dict(sorted(Counter(
        reasons).items()))
    assert (tally.read, tally.behind) == (len(reasons), False)


def test_a_verdict_is_the_last_approval_or_rejection_not_a_pruning_note(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first, second = _publish(registry, 100, 0.6), _publish(registry, 200, 0.5)
    registry.set_status(first, "approved", "no version approved yet")
    registry.set_status(second, "approved", "within tolerance")
    registry.set_status(second, "rejected", "rolled back: live auc fell")
    assert registry.prune(keep=0) == [second]
    assert registry.decisions()[-1]["reason"].startswith("model file pruned")
    verdicts = registry.verdicts()
    assert {v: d["reason"] for v, d in verdicts.items()} == {
        first: "no version approved yet", second: "rolled back: live auc fell"}
    assert set(registry.verdicts(since=second)) == {second}


def test_the_chart_holds_the_newest_versions_however_many_there_are(
        tmp_path: Path, log: SQLiteLog, tables: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll reads a bounded number of versions: the loop publishes for months."""
    import livelearn.ui.dashboard as dashboard

    monkeypatch.setattr(dashboard, "MAX_CHART", 12)
    registry = Registry(tmp_path / "registry")
    for i in range(20):
        _publish(registry, 100 * (i + 1), 0.6 + i / 1000)
    app = create_app(PIPELINE, log, registry, tables)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        data = _data(http)["data"]
    assert data["metric_by_version"]["version"] == list(range(9, 21))
    assert (data["versions_total"], len(data["versions"])) == (20, 12)


def test_dead_letters_the_logs_retention_deleted_before_a_poll_are_skipped_not_an_error(
        tmp_path: Path) -> None:
    """A dashboard left unopened for longer than the log's retention, or whose backlog
    of dead letters the retention deletes first, goes on counting from where the
    partition starts now, and says how many it never read; it does not fail at every
    poll from then on."""
    log = SQLiteLog(tmp_path / "log.db", retention_hours=0.5 / 3600)  # half a second
    log.create_topic(DEAD_LETTERS)
    tally = DeadLetterCounts(log)
    log.append(DEAD_LETTERS, [("k", orjson.dumps({"reason": "late"}))])
    assert tally.update() == {"late": 1}
    for reason in ("orphan", "orphan"):  # two batches, read by no poll, then deleted
        log.append(DEAD_LETTERS, [("k", orjson.dumps({"reason": reason}))])
    time.sleep(0.6)
    log.append(DEAD_LETTERS, [("k", orjson.dumps({"reason": "duplicate"}))])
    assert log.start_offset(DEAD_LETTERS, 0) == 3
    assert tally.update() == {"duplicate": 1, "late": 1}
    assert (tally.read, tally.skipped, tally.behind) == (2, 2, False)
    log.append(DEAD_LETTERS, [("k", orjson.dumps({"reason": "late"}))])
    assert tally.update() == {"duplicate": 1, "late": 2}
