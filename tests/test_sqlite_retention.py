"""The SQLite log's retention (``sqlite:///log.db?retention_hours=N``): old batches go,
each partition keeps where it ends, a reader of deleted records stops (Lost), and the
file stops growing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livelearn.errors import ConfigError, Lost
from livelearn.log.merge import MergedReader
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from test_ingest import PIPELINE_FILE
from test_run import _ratings

HALF_SECOND = 0.5 / 3600  # in hours


def test_batches_older_than_the_retention_are_deleted_and_their_readers_stop(
        tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db", retention_hours=HALF_SECOND)
    log.create_topic("t")
    for i in range(4):  # a batch per append, 0.2 s apart
        log.append("t", [(f"k{i}", f"v{i}{j}".encode()) for j in range(10)])
        time.sleep(0.2)
    time.sleep(0.4)
    log.append("t", [("k", b"last")])  # deletes those appended more than 0.5 s before
    start = log.start_offset("t", 0)
    assert 0 < start <= 40 and start % 10 == 0
    assert log.end_offset("t", 0) == 41
    assert [r.value for r in log.read("t", 0, start, 100)][-1] == b"last"
    with pytest.raises(Lost, match=rf"up to {start} record\(s\) of topic 't' partition 0 "
                                   rf"\(offsets 0 to {start - 1}\) were deleted before they "
                                   rf"were read, by the log's retention"):
        log.read("t", 0, 0, 100)
    reader = MergedReader(log, [("t", 0)], lambda r: (r.offset, None), {("t", 0): 3},
                          group="joiner")
    with pytest.raises(Lost, match=r"group 'joiner' stops: .*\(offsets 3 to"):
        reader.next_batch(final=True)


def test_each_partitions_newest_batch_is_kept_and_a_log_without_retention_keeps_all(
        tmp_path: Path) -> None:
    kept = SQLiteLog(tmp_path / "kept.db")
    short = SQLiteLog(tmp_path / "short.db", retention_hours=HALF_SECOND)
    for log in (kept, short):
        log.create_topic("a")
        log.create_topic("b")
        log.append("a", [("k", b"a0")])
        log.append("b", [("k", b"b0")])
    time.sleep(0.6)
    for log in (kept, short):
        log.append("a", [("k", b"a1")])
    assert [r.value for r in kept.read("a", 0, 0)] == [b"a0", b"a1"]
    assert short.start_offset("a", 0) == 1 and short.end_offset("a", 0) == 2
    # b's only batch is old, but it holds where b ends: kept, and b goes on from there
    assert [r.value for r in short.read("b", 0, 0)] == [b"b0"]
    short.append("b", [("k", b"b1")])
    assert short.end_offset("b", 0) == 2


def test_the_file_stops_growing(tmp_path: Path) -> None:
    """Freed pages are used again: the file holds about the retention's worth of records."""
    sizes = {}
    for name, hours in (("all", None), ("retained", 0.3 / 3600)):
        log = SQLiteLog(tmp_path / f"{name}.db", retention_hours=hours)
        log.create_topic("t")
        for _ in range(40):
            log.append("t", [(f"k{j}", b"x" * 200) for j in range(1000)])  # 200 KB a batch
            time.sleep(0.03)
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        sizes[name] = (tmp_path / f"{name}.db").stat().st_size
    assert sizes["all"] > 7_000_000
    assert sizes["retained"] < sizes["all"] / 2


def test_retention_is_an_option_of_the_url(tmp_path: Path) -> None:
    log = SQLiteLog.from_url(f"sqlite:///{tmp_path}/ll/log.db?retention_hours=168")
    assert log.path == f"{tmp_path}/ll/log.db" and log.retention_hours == 168
    with pytest.raises(ConfigError, match="retention_hours must be a number > 0, got 0"):
        SQLiteLog.from_url(f"sqlite:///{tmp_path}/log.db?retention_hours=0")
    with pytest.raises(ConfigError, match="retention_hours must be a number > 0, got 'week'"):
        SQLiteLog.from_url(f"sqlite:///{tmp_path}/log.db?retention_hours=week")
    with pytest.raises(ConfigError, match="unknown option.*retention; expected retention_hours"):
        SQLiteLog.from_url(f"sqlite:///{tmp_path}/log.db?retention=1")


def test_a_file_from_before_retention_gets_its_batches_append_time(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
            CREATE TABLE batches (
                topic TEXT NOT NULL, partition INTEGER NOT NULL, last INTEGER NOT NULL,
                first INTEGER NOT NULL, keys BLOB NOT NULL, sizes BLOB NOT NULL,
                vals BLOB NOT NULL, PRIMARY KEY (topic, partition, last));
            INSERT INTO topics VALUES ('t', 1);
            INSERT INTO batches
                VALUES ('t', 0, 1, 0, '["a","b"]', '[2,2]', CAST('v0v1' AS BLOB));""")
    opened = time.time()
    log = SQLiteLog(path, retention_hours=1)
    log.append("t", [("c", b"v2")])
    assert [r.value for r in log.read("t", 0, 0)] == [b"v0", b"v1", b"v2"]
    with sqlite3.connect(path) as conn:
        times = [t for (t,) in conn.execute("SELECT appended FROM batches ORDER BY last")]
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT last FROM batches WHERE appended < 1"
                            ).fetchall()
    assert all(opened - 1 <= t <= time.time() for t in times)
    assert "USING INDEX batches_appended" in str(plan)  # old batches found without a scan


def test_a_process_without_retention_reading_what_another_deleted_stops_too(
        tmp_path: Path) -> None:
    writer = SQLiteLog(tmp_path / "log.db", retention_hours=HALF_SECOND)
    reader = SQLiteLog(tmp_path / "log.db")
    writer.create_topic("t")
    writer.append("t", [("k", b"old")])
    time.sleep(0.6)
    writer.append("t", [("k", b"new")])
    with pytest.raises(Lost, match=r"retention \(of a process appending to it\)"):
        reader.read("t", 0, 0)
    assert [r.value for r in reader.read("t", 0, reader.start_offset("t", 0))] == [b"new"]


def test_roles_that_read_everything_resume_and_a_new_group_says_what_it_never_read(
        tmp_path: Path) -> None:
    """Real processes: a joiner restarted after the retention deleted what it had read goes
    on; a trainer started after it deleted samples no trainer read starts where the samples
    now start, saying so (it started there in silence)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    url = f"sqlite:///log.db?retention_hours={HALF_SECOND}"

    def livelearn(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", *args, "--log", url],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    for start in (0, 100):  # the second ingest and join delete what the first wrote
        livelearn("ingest", "p.py", "ratings", str(_ratings(tmp_path / f"{start}.jsonl",
                                                            start, 100)))
        time.sleep(0.6)
        assert "100 records read" in livelearn("join", "p.py", "--until-idle")
    log = SQLiteLog(tmp_path / "log.db")
    assert log.start_offset("ratings", 0) == 100 and log.start_offset("samples", 0) > 0
    said = livelearn("train", "p.py", "--registry", "reg", "--until-idle")
    start = log.start_offset("samples", 0)
    assert f"group 'trainer' starts reading topic 'samples' partition 0 at offset {start}, " \
           f"where it starts now: the {start} record(s) before were deleted by the log's " \
           f"retention before this group read any" in said
    assert Registry(tmp_path / "reg").versions()[-1].meta["samples"] == 200 - start == 100
