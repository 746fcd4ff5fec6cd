"""Hot swaps: under load (bench/serve_swap.py, shortened) and when a version misbehaves.

A new version every second under load costs no request; a version that cannot
be loaded leaves the served one serving, and so does an index that fails the
polls; a swap the Registry was too busy to record is recorded on the next poll.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from conftest import ServerThread
from livelearn.errors import LivelearnError
from livelearn.events import MAX_FUTURE_MS
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.base import Learner
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.serve.holder import ModelHolder
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed, Request

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve_swap.py"


def test_swapping_versions_under_load_fails_no_request(tmp_path: Path) -> None:
    out = tmp_path / "serve_swap.json"
    run = subprocess.run([sys.executable, str(BENCH), "--seconds", "3", "--json", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    result = orjson.loads(out.read_bytes())
    assert result["failed"] == 0, result["phases"]
    assert result["swaps"] >= 2
    assert result["requests"] > 100 and result["concurrency"] >= 100
    for key in ("p50_ms", "p99_ms", "p50_ms_no_swap", "p99_ms_no_swap"):
        assert 0 < result[key] < 30_000, key
    no_swap, swap = result["phases"]["no_swap"], result["phases"]["swap"]
    assert no_swap["versions_served"] == [1] and no_swap["swaps"] == 0
    assert len(swap["versions_served"]) >= 2  # responses came from the swapped-in versions too
    assert "no swap" in run.stdout and "swap" in run.stdout


def _version(registry: Registry, parent: int | None) -> int:
    version = registry.publish(PIPELINE.learner(), {"metric": "auc"}, parent).id
    registry.set_status(version, "approved", "test")
    return version


def _one_version_served(tmp_path: Path, log: SQLiteLog
                        ) -> tuple[Registry, FastAPI, Request]:
    """A news-feed server over ``log`` with v1 approved (polling every 20 ms), and a
    request of its world."""
    world = NewsFeed(seed=3, impressions=100, candidates=5, days=0.1, users=20, new_users=2)
    write_tables(world, tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    _version(registry, None)
    app = create_app(PIPELINE, log, registry, tmp_path / "tables", poll_s=0.02)
    return registry, app, next(iter(world.requests()))


def test_each_version_loaded_is_warmed_before_it_serves_and_a_failed_warm_up_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry, warmed = Registry(tmp_path), []

    def warm(learner: Learner) -> None:
        warmed.append(learner)
        if len(warmed) == 2:
            raise ValueError("no bias")

    holder = ModelHolder(registry, warm=warm)
    _version(registry, None)
    assert holder.refresh() and warmed == [holder.current()[1]]
    with caplog.at_level(logging.WARNING, logger="livelearn.serve"):
        _version(registry, 1)
        assert holder.refresh() and holder.version == 2 and warmed[1] is holder.current()[1]
    assert [r.getMessage() for r in caplog.records] == [
        "v2 failed to score an empty row: ValueError: no bias"]


def test_a_version_that_cannot_be_loaded_is_skipped_and_the_served_one_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(tmp_path)
    holder = ModelHolder(registry)
    assert holder.refresh() is False and holder.version is None  # nothing approved yet
    _version(registry, None)
    assert holder.refresh() is True and holder.version == 1
    broken = _version(registry, 1)
    registry.file(broken).write_bytes(b"not a model")
    with caplog.at_level(logging.ERROR, logger="livelearn.serve"):
        assert holder.refresh() is False and holder.refresh() is False
    assert holder.version == 1 and registry.get(1).status == "serving"
    assert [r.getMessage() for r in caplog.records] == [
        f"could not load v2: model file {registry.file(2)} of v2 is damaged or missing "
        f"(SHA-256 does not match the registry); still serving v1"]
    _version(registry, 1)
    assert holder.refresh() is True and holder.version == 3
    assert registry.get(3).status == "serving" and registry.get(1).status == "retired"


def test_a_version_whose_file_is_restored_is_loaded_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server skipped a version it once failed to load for good: its file restored from a
    backup (`models promote` then checks it and says "servers swap it in"), the running
    servers went on serving the version before."""
    registry = Registry(tmp_path)
    _version(registry, None)
    holder = ModelHolder(registry)
    holder.refresh()
    restored = _version(registry, 1)
    whole = registry.file(restored).read_bytes()
    registry.file(restored).write_bytes(whole[:100])
    with caplog.at_level(logging.ERROR, logger="livelearn.serve"):
        assert holder.refresh() is False and holder.refresh() is False  # tried, logged once
    assert len(caplog.records) == 1 and holder.version == 1
    registry.file(restored).write_bytes(whole)
    assert holder.refresh() is True and holder.version == restored
    assert registry.get(restored).status == "serving"


def test_a_version_whose_file_is_restored_keeping_its_time_is_loaded_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A byte of the file flipped in place (bit rot: same size, same mtime), the file then
    restored from a backup by a copy that keeps its mtime (`cp -p`, `rsync -a`): it changed
    (its ctime says so), and it is tried again. Before, a server judged by mtime and size,
    the same as the damaged file's, and never tried it again."""
    registry = Registry(tmp_path)
    _version(registry, None)
    holder = ModelHolder(registry)
    holder.refresh()
    restored = _version(registry, 1)
    path = registry.file(restored)
    whole, stat = path.read_bytes(), path.stat()
    path.write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with caplog.at_level(logging.ERROR, logger="livelearn.serve"):
        assert holder.refresh() is False and holder.version == 1
    assert "damaged" in caplog.text
    time.sleep(0.01)  # a ctime of its own, on a file system whose clock ticks coarsely
    path.write_bytes(whole)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert holder.refresh() is True and holder.version == restored


def test_a_canary_whose_file_is_restored_is_loaded_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As the version served: a canary that failed to load is tried again once its file
    changes. Before, a server that failed to load it never held it (the incumbent scored
    its share of the users) while it stayed the canary."""
    registry = Registry(tmp_path)
    _version(registry, None)
    canary = registry.publish(PIPELINE.learner(), {"metric": "auc"}, 1).id
    registry.set_status(canary, "canary", "test")
    whole = registry.file(canary).read_bytes()
    registry.file(canary).write_bytes(whole[:100])
    holder = ModelHolder(registry, canary_share=0.5)
    with caplog.at_level(logging.ERROR, logger="livelearn.serve"):
        holder.refresh()
        holder.refresh()
    assert holder.canary is None and len(caplog.records) == 1  # tried, logged once
    registry.file(canary).write_bytes(whole)
    holder.refresh()
    assert holder.canary == canary


def test_an_unloadable_first_version_stops_the_server_from_starting(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.file(_version(registry, None)).write_bytes(b"not a model")
    with pytest.raises(LivelearnError, match="v000001.npz"):
        ModelHolder(registry).start()


class _BusyOnce(Registry):
    """A Registry whose first mark_serving fails as SQLite does when locked too long."""

    busy = True

    def mark_serving(self, version: int, event_ts: int | None) -> None:
        if self.busy:
            self.busy = False
            raise sqlite3.OperationalError("database is locked")
        super().mark_serving(version, event_ts)


def test_recording_a_swap_is_retried_when_the_registry_was_busy(tmp_path: Path) -> None:
    registry = _BusyOnce(tmp_path)
    _version(registry, None)
    holder = ModelHolder(registry)
    with pytest.raises(sqlite3.OperationalError):
        holder.refresh()
    assert holder.version == 1 and registry.get(1).status == "approved"  # served, not recorded
    holder.observe(1_767_571_200_000)
    assert holder.refresh() is False  # nothing new to swap in, but the record is made now
    assert registry.get(1).status == "serving"
    assert registry.get(1).serving_since_ts == 1_767_571_200_000


class _RolledBackWhileLoading(Registry):
    """A Registry in which a gate retires the version being loaded, during the load."""

    def load(self, version: int) -> Learner:
        learner = super().load(version)
        if version == 2:
            self.set_status(version, "retired", "rolled back while a server loaded it")
        return learner


def test_a_version_rolled_back_while_it_loads_is_not_marked_serving(tmp_path: Path) -> None:
    registry = _RolledBackWhileLoading(tmp_path)
    _version(registry, None)
    holder = ModelHolder(registry)
    holder.refresh()
    _version(registry, 1)
    assert holder.refresh() is True and holder.version == 2  # it did swap in
    assert registry.get(2).status == "retired" and registry.get(1).status == "serving"
    assert holder.refresh() is True and holder.version == 1  # and swaps back on the next poll


def test_a_version_swapped_in_before_any_request_gets_the_first_requests_time(
        tmp_path: Path) -> None:
    """A server just (re)started has no event time yet: the version it swaps in is recorded
    serving at once, and its serving time filled in with the first request's, so the gate
    can judge it and roll it back to the one before."""
    t = 1_767_571_200_000
    registry = Registry(tmp_path)
    first = ModelHolder(registry)
    _version(registry, None)
    first.refresh()
    first.observe(t)
    first.refresh()
    assert registry.get(1).serving_since_ts == t
    restarted = ModelHolder(registry)  # a new server: its clock has not started
    _version(registry, 1)
    assert restarted.refresh() is True and restarted.version == 2
    assert registry.get(2).status == "serving" and registry.get(2).serving_since_ts is None
    restarted.observe(t + 5_000)
    restarted.observe(t + 9_000)
    restarted.refresh()
    assert registry.get(2).serving_since_ts == t + 5_000
    assert registry.previous_served(registry.get(2)).id == 1
    restarted.refresh()  # nothing more to record
    reasons = [d["reason"] for d in registry.decisions() if d["version"] == 2]
    assert reasons[-2:] == ["swapped in at event time None",
                            f"serving since event time {t + 5_000}: its first request"]


def test_a_request_ahead_of_the_wall_clock_moves_the_event_clock_no_further(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A request may carry a ts up to 5 minutes ahead (a client's clock); it is scored as of
    that ts, but the server's event clock goes no further than the wall clock: it went
    there for good, and every version swapped in afterwards was recorded serving from
    then (Registry.previous_served, the rollback's baseline, ordered versions by it)."""
    registry, app, request = _one_version_served(tmp_path, log)
    ahead = int(time.time() * 1000) + MAX_FUTURE_MS - 60_000
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        reply = http.post("/predict", json={"user_id": request.user_id,
                                            "items": request.candidates, "ts": ahead})
        assert reply.status_code == 200, reply.text
        # v1 is recorded serving from the request's time at the next poll (holder._mark)
        _until(lambda: registry.get(1).serving_since_ts is not None, "v1's serving time")
        _version(registry, 1)
        _until(lambda: registry.get(2).status == "serving", "v2 to be swapped in")
        now = int(time.time() * 1000)
        metrics = http.get("/metrics").text
    clock = int(metrics.partition("\nlivelearn_event_clock_ms ")[2].split()[0])
    assert 0 < clock <= now
    assert registry.get(1).serving_since_ts <= registry.get(2).serving_since_ts <= now
    assert registry.previous_served(registry.get(2)).id == 1


def _until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_running_server_serves_on_through_a_damaged_version_and_a_broken_index(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    """A real server on 127.0.0.1 polling every 20 ms. A version whose file is damaged is
    skipped with one line that says why (it said only "could not load v2", the reason in
    a traceback); an index that fails every poll is logged once, not 50 times a second,
    and once more when it works again."""
    registry, app, request = _one_version_served(tmp_path, log)
    body = {"user_id": request.user_id, "items": request.candidates, "ts": request.ts}
    with caplog.at_level(logging.INFO, logger="livelearn.serve"), ServerThread(app) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        def served() -> int:
            reply = http.post("/predict", json=body)
            assert reply.status_code == 200, reply.text
            return int(reply.json()["model_version"])

        assert served() == 1
        registry.file(_version(registry, 1)).write_bytes(b"damaged")
        _until(lambda: "could not load v2" in caplog.text, "v2 to be tried")
        assert served() == 1
        with sqlite3.connect(tmp_path / "registry" / "index.db") as db:
            db.execute("ALTER TABLE versions RENAME TO held")
        time.sleep(0.5)  # about 25 polls, each failing
        assert served() == 1
        with sqlite3.connect(tmp_path / "registry" / "index.db") as db:
            db.execute("ALTER TABLE held RENAME TO versions")
        _until(lambda: "model poll works again" in caplog.text, "the polls to work again")
        _version(registry, 1)
        _until(lambda: served() == 3, "v3 to be swapped in")
    lines = [r.getMessage() for r in caplog.records if r.name == "livelearn.serve"
             and r.levelno >= logging.ERROR or "poll works" in r.getMessage()]
    assert lines == [
        f"could not load v2: model file {registry.file(2)} of v2 is damaged or missing "
        f"(SHA-256 does not match the registry); still serving v1",
        "model poll failed; still serving v1, trying again every 0.02 s (logged again if the "
        "error changes)",
        "model poll works again; serving v1"]
