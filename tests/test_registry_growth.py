"""A registry that has run for long: the work of each prune and each dashboard poll stays
that of the few newest versions, however many were published before (their rows stay)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from livelearn.models import FTRL
from livelearn.registry import Registry


def _long_run(path: Path, pruned: int) -> Registry:
    """A registry as a long run leaves it: ``pruned`` past versions whose files were
    pruned (rows and decisions kept, written here directly for speed), then 60 versions
    with files, each approved in turn."""
    registry = Registry(path)
    meta = orjson.dumps({"pipeline": "p", "trainer": "trainer", "samples": 1, "metric": "auc"})
    with sqlite3.connect(path / "index.db") as db:
        db.executemany("INSERT INTO versions VALUES (?, ?, ?, ?, ?, NULL, '')", [
            (i, i - 1, "rejected" if i % 2 else "retired", time.time(), meta)
            for i in range(1, pruned + 1)])
        db.executemany("INSERT INTO decisions (version, status, reason, at) VALUES "
                       "(?, ?, 'test', 0)", [(i, s) for i in range(1, pruned + 1)
                                             for s in ("rejected", "model file pruned")])
    db.close()
    for _ in range(60):
        v = registry.publish(FTRL(bits=4), {"trainer": "trainer", "metric": "auc"}, None)
        registry.set_status(v.id, "approved", "test")
    return registry


def _steps(registry: Registry, call: Callable[[], object]) -> int:
    """Thousands of SQLite virtual-machine steps ``call`` makes the registry's connection
    run: the rows it reads, not the time it takes."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    db = registry._db()
    db.set_progress_handler(tick, 1000)
    try:
        call()
    finally:
        db.set_progress_handler(None, 1000)
    return steps[0]


def test_a_prune_reads_the_newest_versions_not_every_one_ever_published(tmp_path: Path
                                                                        ) -> None:
    """The gate prunes after every verdict: at a version a second, a prune that read every
    row would cost more every day the loop runs."""
    short, long = _long_run(tmp_path / "short", 100), _long_run(tmp_path / "long", 20_000)
    for registry, first in ((short, 101), (long, 20_001)):
        # the newest approved one is the incumbent: 59 past versions with files, 50 kept
        assert registry.prune(keep=50) == list(range(first, first + 9))
        assert registry.prune(keep=50) == []
        kept = [v.id for v in registry.versions() if not v.pruned]
        assert kept == list(range(first + 9, first + 60))
    more = [registry.publish(FTRL(bits=4), {"trainer": "trainer"}, None)
            for registry in (short, long) for _ in range(3)]
    for v in more:
        (short if v.id < 1000 else long).set_status(v.id, "rejected", "test")
    a, b = (_steps(r, lambda r=r: r.prune(keep=50)) for r in (short, long))
    assert b <= a + 5, (a, b)
    assert [v.id for v in long.versions() if not v.pruned][0] == 20_013


def test_the_dashboards_verdicts_read_the_newest_versions_only(tmp_path: Path) -> None:
    short, long = _long_run(tmp_path / "short", 100), _long_run(tmp_path / "long", 20_000)
    a, b = (_steps(r, lambda r=r: r.verdicts(since=r.newest(50)[-1].id)) for r in (short, long))
    assert b <= a + 5, (a, b)
    assert len(long.verdicts(since=long.newest(50)[-1].id)) == 50
