"""One suite over every Log backend: SQLite and a real Kafka broker.

Kafka: ``LIVELEARN_KAFKA=host:port`` names a broker to use; otherwise one is
started for the session (conftest.py's kafka_bootstrap). Each test keeps to topics
under a prefix of its own. Offsets are only assumed to increase: Kafka's
transaction markers leave gaps.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from livelearn import spec
from livelearn.demo import free_port
from livelearn.errors import ConfigError, Corrupt, Fenced, NotFound, Unavailable
from livelearn.join.runner import JoinRunner
from livelearn.log import Checkpoint, Log, Record, open_log, partition_for
from livelearn.log.kafka import CHECKPOINTS, KafkaLog
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.sim.pipeline import PIPELINE
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES


@pytest.fixture
def any_log(log_url: str) -> Iterator[Log]:
    """An empty log of each backend in turn (log_url, in conftest.py, names them)."""
    log = open_log(log_url)
    yield log
    log.close()


def offsets_increase(records: list[Record]) -> bool:
    return all(a.offset < b.offset for a, b in zip(records, records[1:], strict=False))


def read_all(log: Log, topic: str, partition: int = 0, offset: int = 0) -> list[Record]:
    records: list[Record] = []
    while batch := log.read(topic, partition, offset, 1000):
        records += batch
        offset = batch[-1].offset + 1
    return records


def test_append_and_read_in_offset_order(any_log: Log) -> None:
    any_log.create_topic("t", partitions=1)
    assert any_log.append("t", [("k", b"a"), ("k", b"b"), ("j", b"c")]) == 3
    records = any_log.read("t", 0, 0)
    assert [(r.key, r.value) for r in records] == [("k", b"a"), ("k", b"b"), ("j", b"c")]
    assert offsets_increase(records) and records[0].offset >= 0
    assert [r.value for r in any_log.read("t", 0, records[1].offset, max_records=1)] == [b"b"]
    assert any_log.end_offset("t", 0) > records[-1].offset


def _mixed(log: Log) -> list[bytes]:
    """Ten records, some appended alone and some in atomic blocks (gaps on Kafka)."""
    log.create_topic("t")
    values = [str(i).encode() for i in range(10)]
    log.append("t", [("k", v) for v in values[:3]])
    with log.atomic():
        log.append("t", [("k", v) for v in values[3:6]])
    log.append("t", [("k", values[6])])
    for v in values[7:]:
        with log.atomic():
            log.append("t", [("k", v)])
    return values


def test_read_from_any_offset_in_the_middle(any_log: Log) -> None:
    values = _mixed(any_log)
    records = read_all(any_log, "t")
    assert [r.value for r in records] == values and offsets_increase(records)
    for i, record in enumerate(records):
        assert read_all(any_log, "t", 0, record.offset) == records[i:]
        assert read_all(any_log, "t", 0, record.offset + 1) == records[i + 1:]
    pages = [any_log.read("t", 0, records[4].offset, max_records=3)]
    pages.append(any_log.read("t", 0, pages[-1][-1].offset + 1, max_records=3))
    assert [r.value for page in pages for r in page] == values[4:10]


def test_end_offset_is_past_every_record_and_reading_there_is_prompt(any_log: Log) -> None:
    any_log.create_topic("e", partitions=2)
    assert [any_log.end_offset("e", p) for p in (0, 1)] == [0, 0]
    values = _mixed(any_log)
    end = any_log.end_offset("t", 0)
    assert end > read_all(any_log, "t")[-1].offset
    started = time.monotonic()
    assert any_log.read("t", 0, end) == [] and any_log.read("e", 1, 0) == []
    assert time.monotonic() - started < 2.0
    any_log.append("t", [("k", b"later")])
    later = any_log.read("t", 0, end)
    assert [r.value for r in later] == [b"later"] and later[0].offset >= end
    assert len(read_all(any_log, "t")) == len(values) + 1


def test_offset_since_skips_the_records_appended_before(any_log: Log) -> None:
    any_log.create_topic("t", partitions=1)
    any_log.append("t", [("k", b"a"), ("k", b"b")])
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    any_log.append("t", [("k", b"c")])
    assert [r.value for r in any_log.read("t", 0, any_log.offset_since("t", 0, cut))] == [b"c"]
    assert any_log.offset_since("t", 0, 0) == any_log.start_offset("t", 0)
    # before the epoch: ingest of impressions counts every record a log holds (a store
    # whose retention is 2**53 ms), which Kafka's ListOffsets took for a special value
    assert any_log.offset_since("t", 0, -2**53) == any_log.start_offset("t", 0)
    assert any_log.offset_since("t", 0, cut + 3_600_000) == any_log.end_offset("t", 0)


def test_a_topic_keeps_its_id_and_another_logs_topic_has_another(log_url: str,
                                                                  tmp_path: Path) -> None:
    """The id a trainer records with each version (Log.topic_id): the same topic opened
    again has the same, another topic or another log's topic of the same name another."""
    log = open_log(log_url)
    log.create_topic("t")
    log.create_topic("u")
    made = log.topic_id("t")
    assert made == log.topic_id("t") != log.topic_id("u")
    assert open_log(log_url).topic_id("t") == made
    with pytest.raises(NotFound, match="topic 'absent' does not exist"):
        log.topic_id("absent")
    other = open_log(f"sqlite:///{tmp_path / 'other.db'}" if log_url.startswith("sqlite")
                     else log_url.replace("prefix=t", "prefix=o"))
    other.create_topic("t")
    assert other.topic_id("t") != made


def test_keys_choose_partitions_and_keep_their_order(any_log: Log) -> None:
    any_log.create_topic("t", partitions=4)
    any_log.create_topic("t", partitions=4)  # exists: nothing changes
    with pytest.raises(ConfigError, match="topic 't' has 4 partition"):
        any_log.create_topic("t", partitions=9)  # a log keeps the count it was made with
    assert any_log.partitions("t") == 4
    any_log.append("t", [(f"k{i % 7}", str(i).encode()) for i in range(100)])
    seen = 0
    for p in range(4):
        records = read_all(any_log, "t", p)
        assert offsets_increase(records)
        assert all(partition_for(r.key, 4) == p for r in records)
        for key in {r.key for r in records}:
            values = [int(r.value) for r in records if r.key == key]
            assert values == sorted(values)
        seen += len(records)
    assert seen == 100


def test_commit_stores_offsets_and_state_together(any_log: Log) -> None:
    assert any_log.committed("g") == Checkpoint()
    any_log.commit("g", Checkpoint({("t", 0): 5, ("u", 1): 2}, b"state"))
    assert any_log.committed("g") == Checkpoint({("t", 0): 5, ("u", 1): 2}, b"state")
    any_log.commit("g", Checkpoint({("t", 0): 6}))
    any_log.commit("h", Checkpoint({("t", 0): 1}, b""))
    assert any_log.committed("g") == Checkpoint({("t", 0): 6})
    assert any_log.committed("h") == Checkpoint({("t", 0): 1}, b"")


def test_atomic_rolls_back_appends_and_commit_together(any_log: Log) -> None:
    any_log.create_topic("t")
    with pytest.raises(RuntimeError), any_log.atomic():
        any_log.append("t", [("k", b"x")])
        any_log.commit("g", Checkpoint({("t", 0): 1}))
        raise RuntimeError("crash between write and checkpoint")
    assert any_log.read("t", 0, 0) == []
    assert any_log.committed("g") == Checkpoint()
    with any_log.atomic():
        any_log.append("t", [("k", b"y")])
        any_log.commit("g", Checkpoint({("t", 0): 1}, b"s"))
    assert [r.value for r in any_log.read("t", 0, 0)] == [b"y"]
    assert any_log.committed("g") == Checkpoint({("t", 0): 1}, b"s")


def _damage(log: Log, group: str, newest_only: bool) -> None:
    """Damage the state of the group's newest checkpoint (or of every one) in place:
    a SQL update for SQLite, a damaged copy of the record under its key for Kafka."""
    if isinstance(log, SQLiteLog):
        with sqlite3.connect(log.path) as conn:
            conn.execute("UPDATE checkpoints SET state = ? WHERE grp = ?"
                         + (" AND slot = 0" if newest_only else ""), (b"damaged", group))
        return
    assert isinstance(log, KafkaLog)
    ours = [r for r in read_all(log, CHECKPOINTS) if r.key.startswith(f"{group}/")]
    newest = {r.key: r for r in ours}
    targets = [ours[-1]] if newest_only else list(newest.values())
    log.append(CHECKPOINTS, [(r.key, r.value + b"x") for r in targets])


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(
        any_log: Log, caplog: pytest.LogCaptureFixture) -> None:
    any_log.commit("g", Checkpoint({("t", 0): 1}, b"one"))
    any_log.commit("g", Checkpoint({("t", 0): 2}, b"two"))
    _damage(any_log, "g", newest_only=True)
    assert any_log.committed("g") == Checkpoint({("t", 0): 1}, b"one")
    warnings = [r for r in caplog.records if r.name == "livelearn.log"]
    assert len(warnings) == 1 and "resuming from the one before it" in warnings[0].message
    _damage(any_log, "g", newest_only=False)
    with pytest.raises(Corrupt, match="every checkpoint of group 'g'"):
        any_log.committed("g")
    any_log.commit("g", Checkpoint({("t", 0): 3}, b"three"))  # a new commit heals it
    assert any_log.committed("g") == Checkpoint({("t", 0): 3}, b"three")


def test_survives_reopen_from_its_url(log_url: str) -> None:
    first = open_log(log_url)
    first.create_topic("t", partitions=2)
    first.append("t", [("k", b"v")])
    first.commit("g", Checkpoint({("t", 1): 1}, b"s"))
    first.close()
    again = open_log(log_url)
    try:
        assert again.partitions("t") == 2
        assert [r.value for r in again.read("t", partition_for("k", 2), 0)] == [b"v"]
        assert again.committed("g") == Checkpoint({("t", 1): 1}, b"s")
    finally:
        again.close()


def _append_many(url: str, name: str) -> None:
    log = open_log(url)
    for i in range(200):
        log.append("t", [(name, f"{name}{i}".encode())])
    log.close()


def test_several_processes_append_to_one_topic(log_url: str) -> None:
    log = open_log(log_url)
    log.create_topic("t")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(log_url, n)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = read_all(log, "t")
    log.close()
    assert len(records) == 400 and offsets_increase(records)
    for name in ("a", "b"):
        assert [r.value for r in records if r.key == name] == [
            f"{name}{i}".encode() for i in range(200)]


def test_unknown_topics_are_clear(any_log: Log) -> None:
    with pytest.raises(NotFound, match="topic 'nope'"):
        any_log.partitions("nope")
    with pytest.raises(NotFound, match="topic 'nope'"):
        any_log.append("nope", [("k", b"v")])


@pytest.mark.parametrize("url", ["kafka://", "kafka://h:1/path", "kafka://h:1?bogus=1",
                                 "kafka://h:1?replication=two", "kafka://h:1?prefix=a/b",
                                 "kafka://127.0.0.1", "kafka://h:port", "kafka://h:1,h2",
                                 # librdkafka's ValueError at the first request, before
                                 "kafka://h:1?timeout=-1", "kafka://h:1?timeout=nan",
                                 "kafka://h:1?replication=0", "kafka://h:²"])
def test_bad_kafka_urls_are_clear(url: str) -> None:
    with pytest.raises(ConfigError, match="kafka"):
        open_log(url)


def test_kafka_errors_say_what_to_do(kafka_bootstrap: str) -> None:
    log = open_log(f"kafka://{kafka_bootstrap}?replication=3&prefix=r{uuid.uuid4().hex[:8]}.")
    with pytest.raises(ConfigError, match="refused topic .* replication 3"):
        log.create_topic("t")
    log.close()
    nobody = open_log(f"kafka://127.0.0.1:{free_port()}?timeout=1")
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"kafka://127\.0\.0\.1:\d+: looking up topic 't'"):
        nobody.partitions("t")
    assert time.monotonic() - started < 10
    nobody.close()


_ZOMBIE = """
import os, sys
from livelearn.log import open_log
log = open_log(sys.argv[1])
producer = log._transactional_producer("g")  # what atomic() does, stopped before its commit
producer.begin_transaction()
log._send(producer, [(log.prefix + "t", 0, "k", b"zombie"),
                     log._checkpoint_record("g", log.committed("g"), 1)])
os._exit(9)
"""


def test_kafka_a_role_restarted_after_kill_9_fences_its_former_self(kafka_bootstrap: str
                                                                    ) -> None:
    url = f"kafka://{kafka_bootstrap}?prefix=z{uuid.uuid4().hex[:8]}."
    log = open_log(url)
    log.create_topic("t")
    log.commit("g", Checkpoint({("t", 0): 0}, b"before"))
    zombie = subprocess.run([sys.executable, "-c", _ZOMBIE, url], timeout=60)
    assert zombie.returncode == 9  # it wrote, then died inside its transaction
    assert log.read("t", 0, 0) == []  # its open transaction is invisible...
    assert log.committed("g") == Checkpoint({("t", 0): 0}, b"before")
    started = time.monotonic()
    with log.atomic():  # ...and the restarted role aborts it at once, not after a timeout
        log.append("t", [("k", b"restarted")])
        log.commit("g", Checkpoint({("t", 0): 1}, b"after"))
    assert time.monotonic() - started < 10
    assert [r.value for r in read_all(log, "t")] == [b"restarted"]
    assert log.committed("g") == Checkpoint({("t", 0): 1}, b"after")
    log.close()


# -- the joiner over every backend: the same input log gives byte-identical outputs -----

T0 = 1_767_571_200_000


def _fill(log: Log, n: int) -> None:
    """Predictions and clicks (every third request clicked, one click early) on inputs
    of 3 partitions, so the backends must agree on partition_for too."""
    for topic in PIPELINE.topics:
        log.create_topic(topic, 1 if topic in (SAMPLES, DEAD_LETTERS) else 3)
    preds: list[tuple[str, bytes]] = []
    clicks: list[tuple[str, bytes]] = []
    for i in range(n):
        ts = T0 + i * 7_000
        preds.append((f"u{i % 5}", orjson.dumps(_prediction(f"r{i}", ts, f"u{i % 5}"))))
        if i % 3 == 0:
            clicks.append((f"u{i % 5}", orjson.dumps(_click(f"r{i}", ts + 45_000, i))))
    log.append(PREDICTIONS, preds)
    log.append("click", clicks + [("u0", orjson.dumps(_click("r5", T0 + 35_001, -1)))])


def _prediction(rid: str, ts: int, user: str) -> dict[str, Any]:
    return {"request_id": rid, "ts": ts, "user": user, "item": "p1", "model_version": 1,
            "score": 0.25, "features": {"topic": "t1"}}


def _click(rid: str, ts: int, i: int) -> dict[str, Any]:
    return {"stream": "click", "key": "u", "id": f"c{i}", "ts": ts,
            "payload": {"request_id": rid}}


def _join(log: Log, steps: list[int], read_batch: int) -> list[bytes]:
    """Run the join in steps (a new runner each: a restart), drain it, read its outputs."""
    for size in steps:
        JoinRunner(log, PIPELINE, read_batch=read_batch, idle_after_s=0).step(size)
    runner = JoinRunner(log, PIPELINE, read_batch=read_batch, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    return [r.value for t in (SAMPLES, DEAD_LETTERS) for r in read_all(log, t)]


def test_the_joiner_writes_the_same_bytes_on_every_backend(any_log: Log, tmp_path: Path
                                                            ) -> None:
    reference = SQLiteLog(tmp_path / "reference.db")
    _fill(reference, 300)
    expected = _join(reference, [], 10_000)
    reference.close()
    _fill(any_log, 300)
    assert _join(any_log, [1, 7, 100, 100], 7) == expected
    samples = [orjson.loads(v) for v in expected if b'"labels"' in v]
    assert len(samples) == 300
    assert sum(s["labels"]["clicked"] for s in samples) == len(range(0, 300, 3))


def test_sqlite_reads_across_and_inside_its_batches(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of the SQLite log hold batches of records: any offset, any count reads the same."""
    import livelearn.log.sqlite as sq

    monkeypatch.setattr(sq, "BATCH_RECORDS", 4)
    log = SQLiteLog(tmp_path / "log.db")
    log.create_topic("t")
    values = [f"v{i}".encode() * (i % 3) for i in range(23)]  # empty values too
    log.append("t", [(f"k{i}", v) for i, v in enumerate(values[:10])])
    log.append("t", [("é", v) for v in values[10:11]])
    with log.atomic():
        log.append("t", [(f"k{i}", v) for i, v in enumerate(values[11:], start=11)])
    assert log.end_offset("t", 0) == 23
    for offset in range(24):
        for count in (1, 3, 4, 5, 100):
            got = log.read("t", 0, offset, count)
            assert [r.offset for r in got] == list(range(offset, min(23, offset + count)))
            assert [r.value for r in got] == values[offset:offset + count]
    assert log.read("t", 0, 10, 1)[0].key == "é"


def test_sqlite_converts_a_file_of_one_row_per_record(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
            CREATE TABLE records (
                topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
                key TEXT NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
            INSERT INTO topics VALUES ('t', 2);""")
        conn.executemany("INSERT INTO records VALUES ('t', ?, ?, ?, ?)",
                         [(p, o, f"k{p}{o}", f"{p}/{o}".encode()) for p in (0, 1)
                          for o in range(3)])
    log = SQLiteLog(path)
    assert [(r.offset, r.key, r.value) for r in log.read("t", 1, 1)] == [
        (1, "k11", b"1/1"), (2, "k12", b"1/2")]
    log.append("t", [("k", b"new")])
    assert log.end_offset("t", partition_for("k", 2)) == 4


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///rel/log.db is relative to the working folder, sqlite:////abs/log.db absolute
    (README's role commands say sqlite:///ll/log.db for the ll folder beside them)."""
    monkeypatch.chdir(tmp_path)
    assert Path(SQLiteLog.from_url("sqlite:///ll/log.db").path) == Path("ll/log.db")
    assert (tmp_path / "ll" / "log.db").exists()
    absolute = tmp_path / "abs" / "log.db"
    assert SQLiteLog.from_url(f"sqlite:///{absolute}").path == str(absolute)
    assert absolute.exists()
    with pytest.raises(ConfigError, match="sqlite:////absolute/path.db"):
        SQLiteLog.from_url("sqlite:///")


def test_a_newer_claim_fences_the_earlier_claimant_off(log_url: str) -> None:
    """Two processes' logs claim one group: the earlier one's next atomic write fails,
    Fenced, and leaves no trace; the newer one writes on."""
    first, second = open_log(log_url), open_log(log_url)
    try:
        first.create_topic("t")
        assert first.claim("g") == Checkpoint()
        with first.atomic():
            first.append("t", [("k", b"one")])
            first.commit("g", Checkpoint({("t", 0): 1}, b"one"))
        assert second.claim("g") == Checkpoint({("t", 0): 1}, b"one")
        with pytest.raises(Fenced, match="group 'g' of .* was taken over by another process"):
            with first.atomic():
                first.append("t", [("k", b"two, from the fenced one")])
                first.commit("g", Checkpoint({("t", 0): 2}, b"two"))
        with second.atomic():
            second.append("t", [("k", b"two")])
            second.commit("g", Checkpoint({("t", 0): 2}, b"two"))
        assert [r.value for r in read_all(second, "t")] == [b"one", b"two"]
        assert second.committed("g") == Checkpoint({("t", 0): 2}, b"two")
        second.claim("h")  # another group: the first one's commits of it go on
        with first.atomic():
            first.commit("h2", Checkpoint({("t", 0): 2}))
    finally:
        first.close()
        second.close()


def test_joiner_shards_of_another_count_beside_them_are_refused(any_log: Log) -> None:
    """Shards K/2 run over four partitions: a shard 1/4 (it would join partition 1 again,
    beside shard 1/2) and a joiner of all partitions (0/1) are refused, naming both counts,
    before they claim or write anything; another shard K/2 starts. Before, each ran on,
    joining some partitions twice and others not at all. --reshard (``reshard``) takes
    the new count, once the old shards are stopped."""
    pipeline = dataclasses.replace(PIPELINE, partitions=4)
    for topic in pipeline.topics:
        any_log.create_topic(topic, 4)
    JoinRunner(any_log, pipeline, shard=(0, 2), idle_after_s=0).step(10)
    for shard in ((1, 4), (0, 1)):
        with pytest.raises(ConfigError) as refused:
            JoinRunner(any_log, pipeline, shard=shard, idle_after_s=0)
        assert str(refused.value).startswith(
            f"joiner shard {shard[0]}/{shard[1]}: the shards of group 'joiner' of this log "
            f"are 2 (--shard K/2), not {shard[1]}: ")
        assert "--reshard" in str(refused.value)
    JoinRunner(any_log, pipeline, shard=(1, 2), idle_after_s=0).step(10)
    JoinRunner(any_log, pipeline, shard=(3, 4), idle_after_s=0, reshard=True).step(10)
    with pytest.raises(ConfigError, match="are 4 .--shard K/4., not 2: "):
        JoinRunner(any_log, pipeline, shard=(0, 2), idle_after_s=0)


def _start_shard(url: str, shard: tuple[int, int], together: Any, said: Any) -> None:
    """A process that starts joiner ``shard`` as soon as another is ready to (``together``,
    a barrier of two), and says (``said``) its count and whether it started."""
    log = open_log(url)
    try:
        log.committed("joiner.shards")  # made ready: Kafka's reader connected
        together.wait(60)
        try:
            JoinRunner(log, dataclasses.replace(PIPELINE, partitions=6), shard=shard,
                       idle_after_s=0)
            said.put((shard[1], "started"))
        except ConfigError as e:
            said.put((shard[1], str(e)))
    finally:
        log.close()


def test_two_shards_of_two_counts_started_together_are_not_both_let_in(log_url: str) -> None:
    """Shards 0/2 and 0/3 started at the same instant, on a log no shard joined yet: one
    starts, the other is refused naming the first one's count, round after round. Before,
    both could read that no count was recorded, record their own and run, joining some
    partitions twice (on Kafka, most rounds)."""
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(4):
        url = (log_url.replace("log.db", f"log{round_}.db") if log_url.startswith("sqlite")
               else f"{log_url}r{round_}.")
        log = open_log(url)
        for topic in PIPELINE.topics:
            log.create_topic(topic, 6)
        log.close()
        together, said = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_start_shard, args=(url, (0, n), together, said))
                 for n in (2, 3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0
        outcomes = dict(said.get(timeout=10) for _ in procs)
        started = [n for n, outcome in outcomes.items() if outcome == "started"]
        assert len(started) == 1, (round_, outcomes)
        refused = 5 - started[0]
        assert outcomes[refused].startswith(
            f"joiner shard 0/{refused}: the shards of group 'joiner' of this log are "
            f"{started[0]} (--shard K/{started[0]}), not {refused}: "), outcomes


def test_a_joiner_of_every_partition_refuses_shards_beside_it(any_log: Log) -> None:
    """A joiner of all partitions (group 'joiner') has committed: a shard K/2 is
    refused, naming both counts; the joiner itself starts again."""
    pipeline = dataclasses.replace(PIPELINE, partitions=2)
    for topic in pipeline.topics:
        any_log.create_topic(topic, 2)
    any_log.append(PREDICTIONS, [("r1", orjson.dumps(_prediction("r1", T0, "u1")))])
    JoinRunner(any_log, pipeline, idle_after_s=0).step(10, final=True)
    with pytest.raises(ConfigError, match=r"^joiner shard 1/2: the shards of group 'joiner' "
                                          r"of this log are 1 \(--shard 0/1\), not 2: "):
        JoinRunner(any_log, pipeline, shard=(1, 2), idle_after_s=0)
    JoinRunner(any_log, pipeline, idle_after_s=0).step(10)


def test_each_record_says_when_the_log_received_it(log_url: str) -> None:
    """Record.appended_ms: SQLite's batch's append time, Kafka's message timestamp; the
    same on every read, in this process (a value handed on decoded too) as in another."""
    log = open_log(log_url)
    log.create_topic("t")
    before = int(time.time() * 1000)
    log.append("t", [("k", b"{}")])
    with log.atomic():
        log.append("t", [("k", b'{"n":1}'), ("j", b'{"n":2}')], [{"n": 1}, {"n": 2}])
    after = int(time.time() * 1000)
    records = read_all(log, "t")
    assert [r.value for r in records] == [b"{}", b'{"n":1}', b'{"n":2}']
    for r in records:
        assert r.appended_ms is not None and before - 1 <= r.appended_ms <= after + 1
    other = open_log(log_url)
    assert [r.appended_ms for r in read_all(other, "t")] == [r.appended_ms for r in records]
    other.close()
    log.close()


VIEWS = spec.Stream("views", {"item": str, "y": float}, key="user", id="id")
#: A label-in-event pipeline: each view is a sample, labelled by its field y.
RATED = spec.Pipeline(name="rated", feedback=spec.EventLabel(VIEWS, label="y"),
                      features=lambda event, rows, counts: {"item": event.payload["item"]},
                      learner=lambda: FTRL(bits=8), target="y")
YEAR_MS = 365 * 86_400_000


def _producer_ahead(log: Log, pipeline: spec.Pipeline) -> int:
    """What a producer writes to the log directly (no ingest, no /feedback): events of
    the last minutes, one of them (the third) a year ahead. Returns that one's ts."""
    for topic in pipeline.topics:
        log.create_topic(topic)
    now = int(time.time() * 1000)
    ahead = now + YEAR_MS
    if pipeline is PIPELINE:  # predictions and their clicks, one click far ahead
        log.append(PREDICTIONS, [("u", orjson.dumps(_prediction(f"r{i}", now - 600_000 + i,
                                                                "u"))) for i in range(6)])
        clicks = [_click(f"r{i}", now - 600_000 + i + 1_000, i) for i in range(6)]
    else:
        clicks = [{"stream": "views", "key": "u", "id": f"v{i}", "ts": now - 600_000 + i,
                   "payload": {"item": "i1", "y": 1.0}} for i in range(6)]
    clicks[2]["ts"] = ahead
    log.append(clicks[0]["stream"], [("u", orjson.dumps(c)) for c in clicks])
    return ahead


def _outputs(log: Log, pipeline: spec.Pipeline, group: str, steps: list[int]) -> list[Any]:
    """Join as group ``group`` in ``steps`` (a new runner each: a restart), then to the end;
    the samples and dead letters it wrote."""
    before = {t: log.end_offset(t, 0) for t in (SAMPLES, DEAD_LETTERS)}
    for size in steps:
        JoinRunner(log, pipeline, group=group, read_batch=2, idle_after_s=0).step(size)
    runner = JoinRunner(log, pipeline, group=group, read_batch=2, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    return [orjson.loads(r.value) for t in (SAMPLES, DEAD_LETTERS)
            for r in read_all(log, t, offset=before[t])]


@pytest.mark.parametrize("pipeline", [PIPELINE, RATED], ids=["feedback", "label_in_event"])
def test_an_event_far_ahead_of_when_the_log_got_it_is_dead_lettered_not_its_watermark(
        any_log: Log, pipeline: spec.Pipeline) -> None:
    """A producer's clock a year ahead: that event is malformed, and the events after it
    still join (before, it moved the watermark a year ahead: each was late). The same
    log gives the same outputs to a joiner run again, or restarted at every step."""
    ahead = _producer_ahead(any_log, pipeline)
    outputs = _outputs(any_log, pipeline, "joiner", [])
    letters = [o for o in outputs if "reason" in o]
    samples = [o for o in outputs if "reason" not in o]
    assert [letter["reason"] for letter in letters] == ["malformed"]
    assert f"field 'ts': {ahead} is more than 300000 ms after" in letters[0]["detail"]
    assert orjson.loads(letters[0]["event"])["ts"] == ahead
    if pipeline is PIPELINE:
        assert [s["labels"]["clicked"] for s in samples] == [1, 1, 0, 1, 1, 1]
    else:
        assert sorted(s["id"] for s in samples) == ["v0", "v1", "v3", "v4", "v5"]
    assert _outputs(any_log, pipeline, "again", []) == outputs
    assert _outputs(any_log, pipeline, "restarted", [1, 1, 1, 2, 1]) == outputs


def test_kafka_judges_by_the_brokers_clock_a_producer_whose_clock_is_ahead(
        kafka_bootstrap: str) -> None:
    """A user's app producing to a topic livelearn made, its clock a year ahead: the
    message's own timestamp says so too, but the topic keeps the broker's (LogAppendTime;
    with CreateTime, a broker of Kafka 4 refuses such a timestamp and the app's batch
    with it), and the joiner dead-letters the event."""
    from confluent_kafka import KafkaError, Message, Producer

    prefix = f"t{uuid.uuid4().hex[:12]}."
    log = KafkaLog(kafka_bootstrap, prefix, timeout_s=10)
    for topic in RATED.topics:
        log.create_topic(topic)
    now = int(time.time() * 1000)
    producer, errors = Producer({"bootstrap.servers": kafka_bootstrap}), []

    def delivered(error: KafkaError | None, message: Message[bytes, bytes]) -> None:
        errors.append(error)

    for i, ts in enumerate([now - 1_000, now + YEAR_MS, now]):
        event = {"stream": "views", "key": "u", "id": f"v{i}", "ts": ts,
                 "payload": {"item": "i1", "y": 1.0}}
        producer.produce(prefix + "views", orjson.dumps(event), b"u", timestamp=ts,
                         on_delivery=delivered)
    assert producer.flush(10) == 0 and errors == [None, None, None]
    assert all(r.appended_ms is not None and r.appended_ms < now + 60_000
               for r in read_all(log, "views"))
    outputs = _outputs(log, RATED, "joiner", [])
    assert [o["id"] for o in outputs if "reason" not in o] == ["v0", "v2"]
    assert [o["reason"] for o in outputs if "reason" in o] == ["malformed"]
    log.close()
