"""What a real Kafka broker does that the embedded log never does, and what a role makes
of it: records deleted by retention before a role read them, records larger than a
topic takes (max.message.bytes), topics made by hand with the wrong settings."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ServerThread
from livelearn import spec
from livelearn.deploy.gate import Gate
from livelearn.errors import ConfigError, Lost, TooLarge
from livelearn.ingest import ingest
from livelearn.join.runner import JoinRunner
from livelearn.log import Checkpoint, partition_for
from livelearn.log.kafka import KafkaLog
from livelearn.models.linear import LinearRegression
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES
from livelearn.train.trainer import Trainer
from test_ingest import PIPELINE_FILE, RATINGS, T
from test_log_conformance import _prediction, read_all

T0 = 1_700_000_000_000


def _predictions(log: KafkaLog, first: int, n: int) -> None:
    log.append(PREDICTIONS, [("u", orjson.dumps(_prediction(f"r{i}", T0 + i * 1000, "u")))
                             for i in range(first, first + n)])


def _delete_before(log: KafkaLog, topic: str, offset: int) -> None:
    """What retention does to old segments, now: the partition starts at ``offset``."""
    admin = AdminClient({"bootstrap.servers": log.bootstrap})
    tp = TopicPartition(log.prefix + topic, 0, offset)
    for future in admin.delete_records([tp]).values():
        future.result(10)


def test_records_deleted_before_a_joiner_read_them_stop_it_naming_what_was_lost(
        kafka: KafkaLog) -> None:
    _predictions(kafka, 0, 10)
    JoinRunner(kafka, PIPELINE, idle_after_s=0).step(4)
    assert kafka.committed("joiner").offsets[(PREDICTIONS, 0)] == 4
    _delete_before(kafka, PREDICTIONS, 7)
    assert kafka.start_offset(PREDICTIONS, 0) == 7
    runner = JoinRunner(kafka, PIPELINE, idle_after_s=0)
    with pytest.raises(Lost, match=r"group 'joiner' stops: .*up to 3 record\(s\) of topic "
                                   r"'predictions' partition 0 \(offsets 4 to 6\) were deleted"):
        runner.step(100)
    assert kafka.committed("joiner").offsets[(PREDICTIONS, 0)] == 4  # nothing skipped
    # a new group has nothing to lose: it starts where the topic starts now
    fresh = JoinRunner(kafka, PIPELINE, group="fresh", idle_after_s=0)
    assert fresh.step(100) == 3



def _flink_group_behind(kafka: KafkaLog) -> None:
    """Predictions 0 to 9, of which the Flink join's consumer group committed 4 and the
    retention deleted those before 7: 4 to 6 were never read."""
    _predictions(kafka, 0, 10)
    group = Consumer({"bootstrap.servers": kafka.bootstrap,
                      "group.id": kafka.prefix + "livelearn-flink-join"})
    group.commit(offsets=[TopicPartition(kafka.prefix + PREDICTIONS, 0, 4)], asynchronous=False)
    group.close()
    _delete_before(kafka, PREDICTIONS, 7)


def test_a_flink_join_whose_unread_records_were_deleted_stops_before_its_job_starts(
        kafka: KafkaLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flink's Kafka source went on from where the topic starts, skipping them without a
    word. The check runs before any job is submitted: no Flink needed."""
    _flink_group_behind(kafka)
    monkeypatch.setenv("LIVELEARN_FLINK_JAR", str(tmp_path / "connector.jar"))
    (tmp_path / "connector.jar").write_bytes(b"")  # found, never used: no job starts
    command = [sys.executable, "-m", "livelearn", "join", "livelearn.sim.pipeline:PIPELINE",
               "--log", f"kafka://{kafka.bootstrap}?prefix={kafka.prefix}", "--engine", "flink",
               "--checkpoints", str(tmp_path / "checkpoints")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert re.match(r"livelearn: group 'livelearn-flink-join' stops: kafka://.*: up to 3 "
                    r"record\(s\) of topic 'predictions' partition 0 \(offsets 4 to 6\) were "
                    r"deleted before they were read", done.stderr), done.stderr


#: Its samples hold the movie twice: an event that fits its topic makes a sample that may not.
TWICE = spec.Pipeline(name="movies", feedback=spec.EventLabel(RATINGS, label="stars"),
                      features=lambda e, rows, counts: {"movie": e.payload["movie"],
                                                        "again": e.payload["movie"]},
                      learner=lambda: LinearRegression(bits=10), target="stars")


def _rating(user: str, movie: str, i: int) -> str:
    return f'{{"user": "{user}", "movie": "{movie}", "stars": 4, "ts": {T + i}}}\n'


def test_records_larger_than_kafka_takes_are_dead_letters_and_the_roles_go_on(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """The broker takes records of about 1 MB (max.message.bytes, by default): an event
    of 2 MB is dead-lettered at ingest, and a sample of 1.2 MB by the joiner, each with
    reason too_large and its size; the records around them are written."""
    log = KafkaLog(kafka_bootstrap, f"k{uuid.uuid4().hex[:12]}.", timeout_s=10)
    for topic in TWICE.topics:
        log.create_topic(topic, 1)
    (tmp_path / "r.jsonl").write_text(
        _rating("u1", "m1", 0) + _rating("u2", "x" * 2_000_000, 1)
        + _rating("u3", "y" * 600_000, 2) + _rating("u4", "m4", 3)
        + _rating("u5", "z" * 2_000_000, 4).replace('"stars": 4', '"stars": "4"'))
    result = ingest(log, TWICE, "ratings", tmp_path / "r.jsonl")
    assert (result.events, result.dead) == (3, 2)
    assert result.first_errors and "r.jsonl:2: the event is 2000" in result.first_errors[0]
    assert "r.jsonl:5: stream 'ratings', field 'stars': expected float" in result.first_errors[1]
    runner = JoinRunner(log, TWICE, idle_after_s=0, data_dir=tmp_path)
    while runner.step(100, final=True):
        pass
    samples = [orjson.loads(r.value) for r in read_all(log, SAMPLES)]
    assert [s["user"] for s in samples] == ["u1", "u4"]
    dead = [orjson.loads(r.value) for r in read_all(log, DEAD_LETTERS)]
    assert [(d["reason"], d["source"], len(d["event"])) for d in dead] == [
        ("too_large", f"{tmp_path / 'r.jsonl'}:2", 1000),
        ("too_large", f"{tmp_path / 'r.jsonl'}:5", 1000), ("too_large", "", 1000)]
    # a malformed record too large for its dead letter: the letter keeps why, in brief
    assert dead[1]["detail"].startswith("dead letter (malformed) is 2000")
    assert '"detail":"stream \'ratings\', field \'stars\'' in dead[1]["event"]
    assert dead[2]["detail"].startswith("sample '") and " is 1200" in dead[2]["detail"]
    assert "a record of topic 'samples' may have" in dead[2]["detail"]
    assert runner.counts["too_large"] == 1
    log.close()


def test_a_bad_record_whose_dead_letter_kafka_would_refuse_is_dead_lettered_in_brief(
        kafka: KafkaLog, tmp_path: Path) -> None:
    """A dead letter holds its record as text, escaped once more: a bad sample or /feedback
    event of 600 KB of backslashes makes one of 1.2 MB. Before: the trainer stopped (and
    again at every restart), /feedback answered 500 and stored none of its events."""
    samples = [{"id": f"r{i}", "ts": T0 + i, "window_end": T0 + i, "score": 0.5,
                "features": {"topic": "t1", "note": "\\" * 300_000 if i else "n"},
                "labels": {"clicked": 2.0 if i else 1.0}} for i in range(2)]
    kafka.append(SAMPLES, [(s["id"], orjson.dumps(s)) for s in samples])
    trainer = Trainer(kafka, Registry(tmp_path / "registry"), PIPELINE)
    while trainer.step(final=True):
        pass
    assert (trainer.samples, trainer.malformed) == (1, 1)
    write_tables(NewsFeed(seed=1, impressions=10, users=5), tmp_path / "tables")
    app = create_app(PIPELINE, kafka, Registry(tmp_path / "registry"), tmp_path / "tables")
    now = int(time.time() * 1000)
    events = [{"stream": "click", "key": "u1", "id": "c0", "ts": now,
               "payload": {"request_id": 5, "note": "\\" * 300_000}},
              {"stream": "click", "key": "u1", "id": "c1", "ts": now,
               "payload": {"request_id": "r1"}}]
    with ServerThread(app) as server:
        response = httpx.post(f"{server.url}/feedback", json=events, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert [r.key for r in read_all(kafka, "click")] == ["r1"]
    dead = [orjson.loads(r.value) for r in read_all(kafka, DEAD_LETTERS)]
    assert [(d["reason"], d["stream"], d["detail"][:31]) for d in dead] == [
        ("too_large", SAMPLES, "dead letter (malformed) is 1200"),
        ("too_large", "click", "dead letter (malformed) is 1200")]
    assert "field 'payload.request_id': expected str" in dead[1]["event"]


def test_a_record_or_checkpoint_too_large_is_refused_naming_it_and_nothing_is_written(
        kafka: KafkaLog) -> None:
    """What a role that does not dead-letter meets (the server logging a prediction, a
    joiner whose state outgrew the checkpoint topic): one error naming the record, its
    size, the topic's limit and the setting to raise; the log goes on."""
    with pytest.raises(TooLarge, match=r"a record of key 'big' is 2000003 bytes, more than "
                                       r"the \d+ a record of topic 'k\w+\.predictions' may "
                                       r"have .*max\.message\.bytes=N"):
        with kafka.atomic():
            kafka.append(PREDICTIONS, [("small", b"{}"), ("big", b"x" * 2_000_000)])
    assert kafka.end_offset(PREDICTIONS, 0) == 0
    with pytest.raises(TooLarge, match=r"the checkpoint of group 'joiner' \(its state"):
        kafka.commit("joiner", Checkpoint({(PREDICTIONS, 0): 0}, b"s" * 70_000_000))
    assert kafka.committed("joiner") == Checkpoint()
    kafka.append(PREDICTIONS, [("small", b"{}")])
    assert kafka.end_offset(PREDICTIONS, 0) == 1


@pytest.mark.parametrize(("topic", "policy"), [("click", "compact"),
                                               ("__livelearn_checkpoints", "delete")])
def test_a_topic_made_before_with_a_cleanup_policy_that_loses_records_is_refused(
        kafka_bootstrap: str, topic: str, policy: str) -> None:
    """Compaction keeps the newest record of a key only (a stream's key is its user);
    deletion drops checkpoints after the retention: either would lose what a role needs."""
    prefix = f"k{uuid.uuid4().hex[:12]}."
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    made = NewTopic(prefix + topic, 1, 1, config={"cleanup.policy": policy})
    admin.create_topics([made])[prefix + topic].result(10)
    log = KafkaLog(kafka_bootstrap, prefix, timeout_s=10)
    with pytest.raises(ConfigError, match=rf"topic '{prefix}{topic}' in kafka://\S+ has "
                                          rf"cleanup.policy={policy}, which would"):
        log.create_topic("click")
        log.claim("joiner")
    log.close()


def _log_with_small_topics(bootstrap: str, max_message_bytes: int, topics: dict[str, int],
                           made: Iterable[str] = PIPELINE.topics) -> KafkaLog:
    """A KafkaLog whose ``topics`` (name -> partitions) were made beforehand with this
    ``max.message.bytes`` (as a managed Kafka's defaults or an operator would), and the
    ``made`` topics made by the log as usual."""
    prefix = f"k{uuid.uuid4().hex[:12]}."
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(prefix + topic, n, 1, config={"max.message.bytes": str(max_message_bytes)})
           for topic, n in topics.items()]
    for future in admin.create_topics(new).values():
        future.result(10)
    log = KafkaLog(bootstrap, prefix, timeout_s=10)
    for topic in made:
        log.create_topic(topic, topics.get(topic, 1))
    return log


def _records(n: int, size: int, tag: str = "") -> list[tuple[str, bytes]]:
    """``n`` records of ``size`` bytes (key and value), keys u0, u1, ... spread over
    partitions; the value names its position."""
    records = []
    for i in range(n):
        key = f"u{i % 7}"
        head = f"{tag}{i}:".encode()
        records.append((key, head + b"x" * (size - len(key) - len(head))))
    return records


def _in_order(log: KafkaLog, topic: str) -> list[tuple[str, bytes]]:
    return [(r.key, r.value) for p in range(log.partitions(topic)) for r in read_all(log, topic, p)]


def _expected(log: KafkaLog, topic: str, records: list[tuple[str, bytes]]
              ) -> list[tuple[str, bytes]]:
    """``records`` as each partition keeps them, in order, partition after partition."""
    n = log.partitions(topic)
    return [r for p in range(n) for r in records if partition_for(r[0], n) == p]


@pytest.mark.parametrize("atomic", [False, True])
def test_many_small_records_in_one_append_go_to_a_topic_whose_max_message_bytes_is_small(
        kafka_bootstrap: str, atomic: bool) -> None:
    """max.message.bytes limits a record batch, not one record; librdkafka batched up to
    1 MB per partition, and the broker refused 40 records of 1 KB (MSG_SIZE_TOO_LARGE)
    to a topic of 4096: a role stopped at every restart on valid data. Every record that
    fits is written now, in order; records just under the limit too, and one over it is
    still refused naming it."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {"click": 2})
    limit = log.record_limit("click")
    assert limit == 4096 - 1024
    small, full = _records(40, 1000), _records(12, limit, "full")
    with log.atomic() if atomic else nullcontext():
        assert log.append("click", small) == 40
        assert log.append("click", full) == 12
    assert _in_order(log, "click") == _expected(log, "click", small + full)
    with pytest.raises(TooLarge, match=rf"is {limit + 1} bytes, more than the {limit}"):
        log.append("click", _records(3, 10) + _records(1, limit + 1))
    assert len(_in_order(log, "click")) == 52  # nothing of it was written
    log.close()


def test_a_claimed_group_writes_many_small_records_and_its_checkpoint_to_small_topics(
        kafka_bootstrap: str) -> None:
    """A role claims its group before it writes (the producer of its transactions is made
    then, and is never made again: that would fence a newer process of the group), and may
    learn a topic's limit after: its transactions fit all the same, exactly once."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {SAMPLES: 1, DEAD_LETTERS: 3})
    log.claim("joiner")
    samples, letters = _records(300, 900, "s"), _records(100, 2000, "d")
    for i in range(2):
        with log.atomic():
            log.append(SAMPLES, samples[i * 150:(i + 1) * 150])
            log.append(DEAD_LETTERS, letters[i * 50:(i + 1) * 50])
            log.commit("joiner", Checkpoint({(PREDICTIONS, 0): i}, b"state" * 10))
    assert _in_order(log, SAMPLES) == samples
    assert _in_order(log, DEAD_LETTERS) == _expected(log, DEAD_LETTERS, letters)
    log.close()
    again = KafkaLog(kafka_bootstrap, log.prefix, timeout_s=10)
    assert again.claim("joiner") == Checkpoint({(PREDICTIONS, 0): 1}, b"state" * 10)
    again.close()


def test_livelearn_ingest_writes_many_small_events_to_a_stream_whose_max_message_bytes_is_small(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Through the command: 5,000 ratings of about 100 bytes into a topic of 4 KB."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {"ratings": 1}, made=())
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.jsonl").write_text("".join(_rating(f"u{i}", f"m{i}", i) for i in range(5000)))
    done = subprocess.run(
        [sys.executable, "-m", "livelearn", "-q", "ingest", str(tmp_path / "p.py"), "ratings",
         str(tmp_path / "r.jsonl"), "--log", f"kafka://{log.bootstrap}?prefix={log.prefix}"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "5000 events appended, 0 dead-lettered" in done.stdout
    events = [orjson.loads(r.value) for r in read_all(log, "ratings")]
    assert [e["key"] for e in events] == [f"u{i}" for i in range(5000)]
    log.close()


def test_a_joiner_writes_its_samples_to_a_samples_topic_whose_max_message_bytes_is_small(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Before, its first write of many samples failed, and again at every restart."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {SAMPLES: 1, DEAD_LETTERS: 1},
                                 made=TWICE.topics)
    (tmp_path / "r.jsonl").write_text("".join(_rating(f"u{i}", f"m{i}", i) for i in range(2000)))
    assert ingest(log, TWICE, "ratings", tmp_path / "r.jsonl").events == 2000
    runner = JoinRunner(log, TWICE, idle_after_s=0, data_dir=tmp_path)
    while runner.step(1000, final=True):
        pass
    assert [orjson.loads(r.value)["user"] for r in read_all(log, SAMPLES)] == [
        f"u{i}" for i in range(2000)]
    log.close()


def test_a_server_logs_many_predictions_and_feedback_to_topics_whose_max_message_bytes_is_small(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """One /predict of 40 candidates logs 40 predictions (about 16 KB with their features)
    and one /feedback of 200 clicks 200 events, each in one write: before, the broker
    refused them (MSG_SIZE_TOO_LARGE, a 503) from topics of 4 KB."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {PREDICTIONS: 1, "click": 2})
    world = NewsFeed(seed=3, impressions=200, candidates=5, days=0.5, users=50, new_users=5)
    write_tables(world, tmp_path / "tables")
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    app = create_app(PIPELINE, log, registry, tmp_path / "tables")
    items = [f"p{i}" for i in range(40)]
    now = int(time.time() * 1000)
    with ServerThread(app) as server:
        predicted = httpx.post(f"{server.url}/predict", json={"user_id": "u0", "items": items},
                               timeout=30)
        assert predicted.status_code == 200, predicted.text
        ids = [p["request_id"] for p in predicted.json()["predictions"]]
        clicks = [{"stream": "click", "key": "u0", "id": f"c{i}", "ts": now,
                   "payload": {"request_id": ids[i % 40]}} for i in range(200)]
        fed = httpx.post(f"{server.url}/feedback", json=clicks, timeout=30)
        assert fed.status_code == 200, fed.text
    logged = [orjson.loads(r.value) for r in read_all(log, PREDICTIONS)]
    assert [(p["request_id"], p["item"]) for p in logged] == list(zip(ids, items, strict=True))
    assert sum(len(r.value) for r in read_all(log, PREDICTIONS)) > 3 * 4096
    # by request_id, in the order posted
    assert [(k, orjson.loads(v)["id"]) for k, v in _in_order(log, "click")] == _expected(
        log, "click", [(ids[i % 40], c["id"]) for i, c in enumerate(clicks)])
    log.close()


def test_a_feedback_event_larger_than_its_topic_takes_is_rejected_and_the_others_stored(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """A /feedback event that passes its schema but is larger than its stream's topic takes
    (here 4 KB; on a default topic, a click of 600 KB, its request_id being its key too)
    is named in ``rejected`` and dead-lettered (too_large, its first 1,000 characters), as
    ``livelearn ingest`` does, and the batch's other events are stored. Before, the
    answer was 500 ('raise the topic's max.message.bytes') and none of them was stored."""
    log = _log_with_small_topics(kafka_bootstrap, 4096, {"click": 1})
    write_tables(NewsFeed(seed=1, impressions=10, users=5), tmp_path / "tables")
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    app = create_app(PIPELINE, log, registry, tmp_path / "tables")
    now = int(time.time() * 1000)
    events = [{"stream": "click", "key": "u1", "id": "c0", "ts": now,
               "payload": {"request_id": "r0", "note": "n" * 5000}},
              {"stream": "click", "key": "u1", "id": "c1", "ts": now,
               "payload": {"request_id": "r1"}}]
    with ServerThread(app) as server:
        response = httpx.post(f"{server.url}/feedback", json=events, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0]
    assert re.match(r"the event is 5\d\d\d bytes, more than the 3072 a record of topic "
                    r"'click' may have", body["rejected"][0]["error"]), body
    assert [r.key for r in read_all(log, "click")] == ["r1"]
    dead = [orjson.loads(r.value) for r in read_all(log, DEAD_LETTERS)]
    assert [(d["reason"], d["stream"], len(d["event"])) for d in dead] == [
        ("too_large", "click", 1000)]
    assert dead[0]["event"].startswith('{"stream":"click","key":"u1","id":"c0"')
    log.close()
