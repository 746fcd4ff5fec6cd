"""The Flink SQL join against the embedded joiner, on the same input log in a real Kafka.

The Flink side runs in PyFlink's own venv (flink.flink_python); when it is missing, the test
makes it with scripts/flink/setup.sh (as .ci/run does first), so it never skips.
"""

from __future__ import annotations

import dataclasses
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from livelearn.cli import main
from livelearn.errors import ConfigError
from livelearn.events import MAX_TS_MS, Event, ahead_of_log
from livelearn.join import flink
from livelearn.join.labels import DEMO_LABELS, Agg, Labels, declared
from livelearn.join.runner import JoinRunner, make_joiner
from livelearn.log.base import Log, Record
from livelearn.log.kafka import KafkaLog
from livelearn.sim.pipeline import PIPELINE, label
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, FeedbackJoin, Pipeline

T0 = 1_767_571_200_000
N = 300
SETUP = Path(__file__).resolve().parents[1] / "scripts" / "flink" / "setup.sh"
#: The longest a Flink join of these tests may take: a bound on a hung job, not a measure.
FLINK_TIMEOUT_S = 300


def with_label(label: Callable[[Sequence[Event]], dict[str, float]]) -> Pipeline:
    """The demo pipeline with another label function."""
    assert isinstance(PIPELINE.feedback, FeedbackJoin)
    return dataclasses.replace(PIPELINE, feedback=dataclasses.replace(PIPELINE.feedback,
                                                                       label=label))


#: The demo pipeline with its labels declared (the embedded joiner calls them too).
DECLARED = with_label(DEMO_LABELS)


def prediction(rid: str, ts: int) -> dict[str, Any]:
    return {"request_id": rid, "ts": ts, "user": f"u{ts % 7}", "item": f"p{ts % 5}",
            "model_version": 3, "score": 0.125 + (ts % 11) / 16,
            "features": {"topic": f"t{ts % 3}", "user_x_topic": f"u1|t{ts % 3}", "n": 1.5}}


def event(stream: str, rid: str, ts: int, eid: str, **payload: Any) -> dict[str, Any]:
    return {"stream": stream, "key": "u1", "id": eid, "ts": ts,
            "payload": {"request_id": rid, **payload}}


def fill(log: KafkaLog) -> None:
    """Predictions every 7 s; a click on every third within its window (two on some),
    reads on every fifth, an orphan click and a malformed one; each topic out of order
    by up to 30 s (less than the allowed lateness); and at the ends of the topics a
    click and a prediction that come far too late."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    rng = random.Random(7)
    preds, clicks, reads = [], [], []
    for i in range(N):
        ts = T0 + i * 7_000
        preds.append(prediction(f"r{i}", ts))
        if i % 3 == 0:
            clicks.append(event("click", f"r{i}", ts + rng.randrange(600_001), f"c{i}"))
        if i % 12 == 0:
            clicks.append(event("click", f"r{i}", ts + 600_000, f"c{i}b"))
        if i % 5 == 0:
            reads.append(event("read", f"r{i}", ts + 20_000, f"d{i}",
                               seconds=rng.randrange(1, 40) / 2))
        if i % 10 == 0:
            reads.append(event("read", f"r{i}", ts, f"e{i}", seconds=4.0))
        if i == 40:
            clicks.append(event("click", "ghost", ts, "orphan1"))
            clicks.append({"stream": "click", "key": "u1", "id": "bad", "ts": ts // 1000,
                           "payload": {"request_id": "r1"}})
    for records in (preds, clicks, reads):
        records.sort(key=lambda r: r["ts"] + rng.randrange(30_000))
    clicks.append(event("click", "r5", T0 + 5 * 7_000 + 1, "late1"))
    preds.append(prediction("old", T0 + 1))
    log.append(PREDICTIONS, [(p["request_id"], orjson.dumps(p)) for p in preds])
    log.append("click", [("u1", orjson.dumps(c)) for c in clicks])
    log.append("read", [("u1", orjson.dumps(r)) for r in reads])


def read_records(log: Log, topic: str) -> list[Record]:
    """Every record of ``topic`` (partition 0). Each read goes on after the offset of the
    last record read, not after as many records as were read: a transactional topic (the
    samples of an unbounded Flink job, the embedded joiner's outputs) has offsets that
    hold transaction markers, no records."""
    records: list[Record] = []
    while batch := log.read(topic, 0, records[-1].offset + 1 if records else 0, 1000):
        records += batch
    return records


def read_all(log: Log, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_records(log, topic)]


@pytest.fixture(scope="module")
def flink_ready() -> None:
    """PyFlink's venv and the Kafka connector, made by scripts/flink/setup.sh if missing."""
    if flink.flink_python(must_exist=False).exists() and flink.kafka_jar(must_exist=False).exists():
        return
    done = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        pytest.fail(f"scripts/flink/setup.sh failed (.ci/run runs it before the tests):\n"
                    f"{done.stderr[-3000:]}")


def embedded(log: Log) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runner = JoinRunner(log, DECLARED, idle_after_s=0)
    while runner.step(10_000, final=True):
        pass
    return read_all(log, SAMPLES), read_all(log, DEAD_LETTERS)


Outputs = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def both_joiners(kafka_bootstrap: str, fill: Callable[[KafkaLog], None]
                 ) -> tuple[Outputs, Outputs]:
    """The samples and dead letters of the embedded joiner and of the Flink job, each run
    on a log of its own that ``fill`` filled."""
    ours = KafkaLog(kafka_bootstrap, prefix=f"e{uuid.uuid4().hex[:12]}.")
    theirs = KafkaLog(kafka_bootstrap, prefix=f"f{uuid.uuid4().hex[:12]}.")
    try:
        fill(ours)
        fill(theirs)
        want = embedded(ours)
        # JVM start, planning, the job: 10 s to 2 minutes, as the machine is fast and
        # loaded (the 2-core machines of 2026-11-29 took 100 s at a load of 3); the
        # timeout bounds a hung one
        flink.run_flink_join(DECLARED, f"kafka://{kafka_bootstrap}?prefix={theirs.prefix}",
                             timeout_s=FLINK_TIMEOUT_S)
        return want, (read_all(theirs, SAMPLES), read_all(theirs, DEAD_LETTERS))
    finally:
        ours.close()
        theirs.close()


def test_flink_gives_the_embedded_joiners_samples(flink_ready: None, kafka_bootstrap: str
                                                   ) -> None:
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap, fill)
    assert len(want_samples) == N
    by_id = sorted(got_samples, key=lambda s: s["id"])
    assert by_id == sorted(want_samples, key=lambda s: s["id"])
    assert sum(s["labels"]["clicked"] for s in by_id) == len(range(0, N, 3))
    assert _reasons(got_dead) == _reasons(want_dead) == [
        ("late", "click", "late1"), ("late", "predictions", "old"),
        ("malformed", "click", "bad"), ("orphan", "click", "orphan1")]


def test_until_idle_both_engines_print_the_same_summary(
        flink_ready: None, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`livelearn join --until-idle` ends with what it read and wrote, with --engine flink
    as without: records read, samples, dead letters by reason. Before, the Flink one
    printed nothing."""
    said = []
    for engine in ("embedded", "flink"):
        log = KafkaLog(kafka_bootstrap, prefix=f"s{uuid.uuid4().hex[:12]}.")
        try:
            fill(log)
            assert main(["-q", "join", f"{__file__}:DECLARED", "--log",
                         f"kafka://{kafka_bootstrap}?prefix={log.prefix}", "--until-idle",
                         "--engine", engine]) == 0
        finally:
            log.close()
        said.append(capsys.readouterr().out)
    records = (N + 1) + (N // 3 + N // 12 + 2 + 1) + (N // 5 + N // 10)
    assert said[0] == said[1] == (f"{records} records read, {N} samples, 4 dead letters "
                                  f"(late 2, malformed 1, orphan 1)\n")


#: The samples and dead-letters topics' max.message.bytes in the test below: a sample or
#: dead letter may have 31,744 bytes (less the framing). Small, but a batch of the other
#: samples fits in it (librdkafka does not split a batch the topic refuses).
SMALL = 32_768


def _small_limits(log: KafkaLog) -> None:
    """The pipeline's topics, samples and dead letters taking records of SMALL bytes."""
    admin = AdminClient({"bootstrap.servers": log.bootstrap})
    made = [NewTopic(log.prefix + topic, 1, 1, config={"max.message.bytes": str(SMALL)})
            for topic in (SAMPLES, DEAD_LETTERS)]
    for future in admin.create_topics(made).values():
        future.result(10)
    for topic in DECLARED.topics:
        log.create_topic(topic)


def fill_large(log: KafkaLog) -> None:
    """Twenty predictions; one whose features are 12,000 characters of 3 bytes each (it
    fits in characters, not in bytes), one with 3,000 clicks in its window (its sample
    lists their ids), and one malformed (no score) of 40,000 characters, whose dead
    letter is too large in turn."""
    _small_limits(log)
    preds = [prediction(f"r{i}", T0 + i * 7_000) for i in range(20)]
    preds[3]["features"]["wide"] = "\u20ac" * 12_000
    preds[8]["features"]["note"] = "x" * 40_000
    del preds[8]["score"]
    clicks = [event("click", "r5", T0 + 5 * 7_000 + i, f"busy{i:04d}") for i in range(3_000)]
    clicks.append(event("click", "r6", T0 + 6 * 7_000 + 5, "c6"))
    log.append(PREDICTIONS, [(p["request_id"], orjson.dumps(p)) for p in preds])
    log.append("click", [("u1", orjson.dumps(c)) for c in clicks])


def test_a_sample_or_dead_letter_too_large_for_its_topic_is_dead_lettered_by_both(
        flink_ready: None, kafka_bootstrap: str) -> None:
    """Samples and dead letters over the topic's max.message.bytes: both joiners write a
    too_large dead letter (the embedded one in runner.JoinRunner, the Flink job routing
    them in SQL) and the other samples in full; the Flink job does not fail. Equal:
    reason, stream, source, and the detail of a sample's letter (its size is the same
    here, as both joiners' JSON of it has the same length); a shortened letter's detail
    names the letter's reason and a size over the limit (its malformed detail is worded
    otherwise by each joiner). The event kept is the first 1,000 characters of each
    joiner's own JSON (Flink's has its keys sorted)."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_large)
    limit = SMALL - 1024  # KafkaLog.record_limit: less the framing
    ids = sorted(f"r{i}" for i in range(20) if i not in (3, 5, 8))
    assert sorted(s["id"] for s in want_samples) == ids
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert next(s for s in got_samples if s["id"] == "r6")["feedback"] == ["c6"]

    def letters(dead: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(dead, key=lambda d: d["detail"])

    want, got = letters(want_dead), letters(got_dead)
    assert [(d["reason"], d["stream"], d["source"]) for d in got] == \
        [(d["reason"], d["stream"], d["source"]) for d in want] == [
            ("too_large", PREDICTIONS, "predictions/0@8"), ("too_large", PREDICTIONS, ""),
            ("too_large", PREDICTIONS, "")]
    assert [len(d["event"]) for d in got] == [len(d["event"]) for d in want] == [1000] * 3
    shortened = re.compile(rf"dead letter \(malformed\) is (\d+) bytes, more than the {limit} "
                           rf"a record of topic 'dead_letters' may have \(the log's limit; on "
                           rf"Kafka the topic's max.message.bytes\): its first 1,000 "
                           rf"characters are kept")
    for letter in (want[0], got[0]):
        match = shortened.fullmatch(letter["detail"])
        assert match is not None and int(match.group(1)) > limit, letter["detail"]
        assert letter["event"].startswith('{"reason":"malformed","detail":"')
    assert [d["detail"] for d in got[1:]] == [d["detail"] for d in want[1:]]
    sizes = []
    for letter, rid in zip(got[1:], ("r3", "r5"), strict=True):
        match = re.fullmatch(rf"sample '{rid}' is (\d+) bytes, more than the {limit} a record "
                             r"of topic 'samples' may have .*", letter["detail"])
        assert match is not None and int(match.group(1)) > limit, letter["detail"]
        sizes.append(int(match.group(1)))
    # r3's sample has fewer characters than the limit (a euro sign is 3 bytes in UTF-8)
    assert sizes[0] - 2 * 12_000 < limit


def fill_mistyped(log: KafkaLog) -> None:
    """Ten predictions, each with a read; then predictions and reads whose numbers are of
    another JSON type: a string, a boolean, a fraction where an integer is declared."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    preds = [prediction(f"r{i}", T0 + i * 7_000) for i in range(10)]
    reads = [event("read", f"r{i}", T0 + i * 7_000 + 5, f"d{i}", seconds=2.5) for i in range(10)]
    bad = {"score": "high", "model_version": 1.5, "ts": str(T0 + 2_000)}
    for i, (name, value) in enumerate(bad.items()):
        preds.append({**prediction(f"bad_{name}", T0 + 1_000 + i), name: value})
    preds.append({**prediction("bad_ts_fraction", T0 + 3_000), "ts": T0 + 3_000.5})
    reads += [event("read", "r1", T0 + 7_010, "string_seconds", seconds="2.5"),
              event("read", "r2", T0 + 14_010, "true_seconds", seconds=True)]
    # a number or an empty string where a string is declared
    preds += [{**prediction("bad_user", T0 + 4_000), "user": 7},
              prediction("7", T0 + 5_000)]
    reads += [{**event("read", "r3", T0 + 21_010, "number_key", seconds=1.0), "key": 5},
              {**event("read", "r3", T0 + 21_011, "empty_key", seconds=1.0), "key": ""},
              {**event("read", "r3", T0 + 21_012, "", seconds=1.0)},
              event("read", 7, T0 + 5_010, "number_request_id", seconds=1.0)]  # type: ignore[arg-type]
    log.append(PREDICTIONS, [(str(p["request_id"]), orjson.dumps(p)) for p in preds])
    log.append("read", [("u1", orjson.dumps(r)) for r in reads])


def test_numbers_of_another_json_type_are_malformed_for_both(flink_ready: None,
                                                             kafka_bootstrap: str) -> None:
    """A string where a number is declared (a score "high", seconds "2.5", a ts in
    quotes), a boolean, or a fraction where an integer is; a number where a string is (a
    user, a key, a request_id), or an empty key or id: both joiners dead-letter it as
    malformed and make the other samples. Before, the Flink job failed on the first
    (JSON_VALUE ... RETURNING DOUBLE throws on a string: ClassCastException), every
    restart again, and took "2.5" for 2.5 and 1.5 for 1; later, it took 7 for "7" (a
    read of request_id 7 labelled prediction "7") and an empty key or id for one."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_mistyped)
    assert sorted(s["id"] for s in want_samples) == ["7", *(f"r{i}" for i in range(10))]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert all(s["labels"]["dwell_s"] == 2.5 for s in got_samples if s["id"] != "7")
    assert _reasons(got_dead) == _reasons(want_dead) == [
        ("malformed", "predictions", "bad_model_version"),
        ("malformed", "predictions", "bad_score"), ("malformed", "predictions", "bad_ts"),
        ("malformed", "predictions", "bad_ts_fraction"),
        ("malformed", "predictions", "bad_user"), ("malformed", "read", ""),
        ("malformed", "read", "empty_key"), ("malformed", "read", "number_key"),
        ("malformed", "read", "number_request_id"),
        ("malformed", "read", "string_seconds"), ("malformed", "read", "true_seconds")]


def fill_after_year_9999(log: KafkaLog) -> None:
    """Five predictions, each with a read; a prediction and a read whose ts is in
    microseconds (after the year 9999), and one whose ts is the last millisecond the
    embedded joiner takes (events.MAX_TS_MS), too late for any window."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    preds = [prediction(f"r{i}", T0 + i * 7_000) for i in range(5)]
    reads = [event("read", f"r{i}", T0 + i * 7_000 + 5, f"d{i}", seconds=1.0) for i in range(5)]
    preds.insert(2, prediction("micros", T0 * 1000))
    reads.insert(2, event("read", "r1", T0 * 1000, "micros_read", seconds=1.0))
    preds.append(prediction("year_10000", MAX_TS_MS))
    log.append(PREDICTIONS, [(p["request_id"], orjson.dumps(p)) for p in preds])
    log.append("read", [("u1", orjson.dumps(r)) for r in reads])


def test_a_time_after_the_year_9999_is_malformed_for_both(flink_ready: None,
                                                          kafka_bootstrap: str) -> None:
    """A ts in microseconds is a malformed dead letter, as events.check_ms says; before,
    Flink's rowtime of it was NULL and the job failed ("rowtimeIndex should not be null"),
    at every restart. The embedded joiner's last millisecond is a sample of no feedback
    for both."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_after_year_9999)
    assert sorted(s["id"] for s in want_samples) == [*(f"r{i}" for i in range(5)), "year_10000"]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert _reasons(got_dead) == _reasons(want_dead) == [
        ("malformed", "predictions", "micros"), ("malformed", "read", "micros_read")]


def fill_infinite(log: KafkaLog) -> None:
    """Five predictions, each with a read; a prediction whose score and a read whose
    seconds is a number beyond a double's range (1e400, infinite as a double); so is one
    in a prediction's features (a 400-digit integer in another's), and one in a payload
    field no schema declares of a click in r3's window. A string "1e400" in the features
    and numbers just within a double's range are no fault."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    preds = [orjson.dumps(prediction(f"r{i}", T0 + i * 7_000)) for i in range(5)]
    reads = [orjson.dumps(event("read", f"r{i}", T0 + i * 7_000 + 5, f"d{i}", seconds=1.0))
             for i in range(5)]
    huge = {**prediction("huge", T0 + 1), "score": 0.5}
    preds.insert(2, orjson.dumps(huge).replace(b'"score":0.5', b'"score":1e400'))
    reads.insert(2, orjson.dumps(event("read", "r1", T0 + 7_010, "huge_read", seconds=1.0)
                                 ).replace(b'"seconds":1.0', b'"seconds":1e400'))
    for rid, number in (("huge_feature", b"-1E+400"), ("long_feature", b"9" * 400)):
        preds.append(orjson.dumps(prediction(rid, T0 + 4 * 7_000 + 1)).replace(
            b'"n":1.5', b'"n":[1,{"x":' + number + b"}]"))
    fine = prediction("fine", T0 + 4 * 7_000 + 2)
    fine["features"] |= {"text": "1e400 \\\" 1e999", "big": 1.7e308, "tiny": -2.5e-300}
    preds.append(orjson.dumps(fine))
    click = orjson.dumps(event("click", "r3", T0 + 3 * 7_000 + 9, "huge_click", weight=0.5))
    log.append(PREDICTIONS, [("k", p) for p in preds])
    log.append("read", [("u1", r) for r in reads])
    log.append("click", [("u1", click.replace(b'"weight":0.5', b'"weight":1e400'))])


def test_a_number_beyond_a_double_is_malformed_for_both(flink_ready: None,
                                                         kafka_bootstrap: str) -> None:
    """As JSON, 1e400 is no number a sample can hold (orjson refuses it: the embedded
    joiner's malformed), wherever it is in the record. Before, the Flink job made a sample
    of score "Infinity" (a string) and a read of seconds 1e400 gave r1 a dwell_s of
    "Infinity"; and, later, one in the features passed into the sample as 1E+400 (the
    trainer dead-lettered it), one in an undeclared payload field labelled r3 clicked."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_infinite)
    assert sorted(s["id"] for s in want_samples) == ["fine", *(f"r{i}" for i in range(5))]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert not any(s["labels"]["clicked"] for s in got_samples)
    assert _reasons(got_dead) == _reasons(want_dead) == [
        ("malformed", "click", "huge_click"), ("malformed", "predictions", "huge"),
        ("malformed", "predictions", "huge_feature"),
        ("malformed", "predictions", "long_feature"), ("malformed", "read", "huge_read")]


YEAR_MS = 365 * 86_400_000


def fill_ahead(now: int) -> Callable[[KafkaLog], None]:
    """Ten predictions of the last hour (before ``now``), each with a click and a read; a
    click and a read in the middle of their topics, and a prediction at the end, a year
    ahead of ``now``: a producer writing to the log directly with its clock ahead (the
    topics take the broker's time, LogAppendTime)."""
    def fill(log: KafkaLog) -> None:
        for topic in DECLARED.topics:
            log.create_topic(topic)
        start = now - 3_600_000
        preds = [prediction(f"r{i}", start + i * 7_000) for i in range(10)]
        clicks = [event("click", f"r{i}", start + i * 7_000 + 5, f"c{i}") for i in range(10)]
        reads = [event("read", f"r{i}", start + i * 7_000 + 9, f"d{i}", seconds=1.5)
                 for i in range(10)]
        clicks.insert(4, event("click", "r4", now + YEAR_MS, "ahead_click"))
        reads.insert(6, event("read", "r6", now + YEAR_MS, "ahead_read", seconds=1.0))
        preds.append(prediction("ahead_prediction", now + YEAR_MS))
        log.append(PREDICTIONS, [(p["request_id"], orjson.dumps(p)) for p in preds])
        log.append("click", [("u1", orjson.dumps(c)) for c in clicks])
        log.append("read", [("u1", orjson.dumps(r)) for r in reads])

    return fill


def test_an_event_far_ahead_of_its_records_time_is_malformed_for_both(
        flink_ready: None, kafka_bootstrap: str) -> None:
    """A click and a read a year ahead of when the broker wrote them: both joiners
    dead-letter each as malformed, in events.ahead_of_log's words, and the events after it
    join. Before, the Flink job took them: each moved its source's watermark a year ahead,
    and every later click or read was dead-lettered late (their predictions labelled 0).
    A prediction is not judged so, by either."""
    filler, prefixes = fill_ahead(int(time.time() * 1000)), []

    def fill(log: KafkaLog) -> None:
        prefixes.append(log.prefix)
        filler(log)

    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap, fill)
    assert sorted(s["id"] for s in want_samples) == ["ahead_prediction",
                                                     *(f"r{i}" for i in range(10))]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert all(s["labels"] == {"clicked": 1.0, "dwell_s": 1.5} for s in got_samples
               if s["id"] != "ahead_prediction")
    assert _reasons(got_dead) == _reasons(want_dead) == [
        ("malformed", "click", "ahead_click"), ("malformed", "read", "ahead_read")]
    for dead, prefix in zip((want_dead, got_dead), prefixes, strict=True):
        log = KafkaLog(kafka_bootstrap, prefix=prefix)
        for letter in dead:  # each joiner's log got the records at times of its own
            topic, _, offset = letter["source"].partition("/0@")
            record = {r.offset: r for r in read_records(log, topic)}[int(offset)]
            assert record.appended_ms is not None
            assert letter["detail"] == ahead_of_log(letter["stream"], orjson.loads(
                record.value)["ts"], record.appended_ms)
        log.close()
    assert sorted((d["source"], d["event"]) for d in got_dead) == \
        sorted((d["source"], d["event"]) for d in want_dead)


#: Feedback ids of equal ts, in the order of Python's str (code points), which the embedded
#: joiner lists them in: a space and "!" sort before the quote JSON puts after "c", a quote
#: before "#" (JSON escapes it as \"), U+FF01 before an emoji (Java's strings compare
#: UTF-16 units: an emoji's surrogates come first).
TIED_IDS = (["c", "c a", "c!"], ['d"', "d#"], ["\uff01", "\U0001f600"])


def fill_tied(log: KafkaLog) -> None:
    """Four predictions; three with feedback events of the same ts whose ids sort apart
    as text and as JSON (TIED_IDS), given in reverse order."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    preds = [prediction(f"r{i}", T0 + i * 7_000) for i in range(4)]
    clicks = [event("click", f"r{i}", T0 + i * 7_000 + 9, eid)
              for i, ids in enumerate(TIED_IDS) for eid in reversed(ids)]
    log.append(PREDICTIONS, [(p["request_id"], orjson.dumps(p)) for p in preds])
    log.append("click", [("u1", orjson.dumps(c)) for c in clicks])


def test_feedback_of_equal_ts_is_listed_in_id_order_by_both(flink_ready: None,
                                                            kafka_bootstrap: str) -> None:
    """A sample lists its feedback ids in (ts, id) order, ids compared as Python compares
    str; before, the Flink job compared them as JSON text in UTF-16 ("c a" and "c!" before
    "c", "d#" before 'd"', an emoji before U+FF01), so the two joiners' samples differed."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_tied)
    assert [s["feedback"] for s in sorted(want_samples, key=lambda s: s["id"])] == \
        [*TIED_IDS, []]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert got_dead == want_dead == []


def fill_surrogates(log: KafkaLog) -> None:
    """Four predictions, each with a click; a prediction whose features and a click whose
    id escape half a surrogate pair ("\\ud800" alone, "\\udc00\\ud800" reversed), one
    preceded by an escaped backslash; and ids that are text: an escaped backslash before
    "ud800", a pair escaped in capitals."""
    for topic in DECLARED.topics:
        log.create_topic(topic)
    preds = [orjson.dumps(prediction(f"r{i}", T0 + i * 7_000)) for i in range(4)]
    preds.append(orjson.dumps(prediction("lone", T0 + 1)).replace(b'"n":1.5',
                                                                   b'"s":"a\\ud800b"'))
    ids = [b"c0", b"lone\\udc00\\ud800", b"c2\\\\ud800", b"c3\\uD83D\\uDE00", b"c\\\\\\ud800"]
    clicks = [orjson.dumps(event("click", f"r{i % 4}", T0 + i % 4 * 7_000 + i, "ID")
                           ).replace(b'"ID"', b'"' + eid + b'"') for i, eid in enumerate(ids)]
    log.append(PREDICTIONS, [("k", p) for p in preds])
    log.append("click", [("u1", c) for c in clicks])


def test_a_surrogate_escaped_unpaired_is_malformed_for_both(flink_ready: None,
                                                            kafka_bootstrap: str) -> None:
    """JSON that escapes half a surrogate pair holds no text (orjson refuses it: the
    embedded joiner's malformed), wherever it is in the record. Before, the Flink job
    made a sample of such a prediction, and listed such a click's id in r1's sample with
    a "?" in place of the escapes."""
    (want_samples, want_dead), (got_samples, got_dead) = both_joiners(kafka_bootstrap,
                                                                      fill_surrogates)
    assert [s["feedback"] for s in sorted(want_samples, key=lambda s: s["id"])] == \
        [["c0"], [], ["c2\\ud800"], ["c3\U0001f600"]]
    assert sorted(got_samples, key=lambda s: s["id"]) == \
        sorted(want_samples, key=lambda s: s["id"])
    assert [(d["reason"], d["stream"]) for d in sorted(got_dead, key=lambda d: d["stream"])] \
        == [(d["reason"], d["stream"]) for d in sorted(want_dead, key=lambda d: d["stream"])] \
        == [("malformed", "click"), ("malformed", "click"), ("malformed", PREDICTIONS)]


def _reasons(dead: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    def ident(d: dict[str, Any]) -> str:
        try:
            e = orjson.loads(d["event"])
        except orjson.JSONDecodeError:  # not JSON to orjson (a number such as 1e400)
            found = re.search(r'"id":"([^"]*)"', d["event"]) or \
                re.search(r'"request_id":"([^"]*)"', d["event"])
            assert found is not None, d
            return found.group(1)
        return str(e.get("id", e.get("request_id")))

    return sorted((d["reason"], d["stream"], ident(d)) for d in dead)


def test_the_jobs_jvm_keeps_its_temporary_files_in_the_jobs_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flink unpacks its planner (about 50 MB) into the JVM's temporary folder, which a
    killed JVM leaves behind: the job's folder, removed when the job ends, holds it. A
    user's JVM_ARGS come after, so their own -Djava.io.tmpdir counts."""
    monkeypatch.delenv("JVM_ARGS", raising=False)
    assert flink.jvm_args(tmp_path) == f"-Djava.io.tmpdir={tmp_path / 'jvm'} {flink.JVM_ARGS}"
    assert (tmp_path / "jvm").is_dir()
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g -Djava.io.tmpdir=/var/tmp")
    assert flink.jvm_args(tmp_path).endswith(" -Xmx1g -Djava.io.tmpdir=/var/tmp")


def test_labels_declared_equal_the_demo_function() -> None:
    events = [Event("click", "u", "c1", 5, {"request_id": "r"}),
              Event("read", "u", "d1", 6, {"request_id": "r", "seconds": 2.5}),
              Event("read", "u", "d2", 7, {"request_id": "r", "seconds": 4})]
    for window in ([], events[:1], events[1:], events):
        assert DEMO_LABELS(window) == label(window)
    assert declared(label) is DEMO_LABELS


def test_a_python_label_function_cannot_become_sql() -> None:
    def mine(events: Any) -> dict[str, float]:
        return {}

    with pytest.raises(ConfigError, match="declared as"):
        flink.flink_sql(with_label(mine))
    assert isinstance(declared(DEMO_LABELS), Labels)


def test_the_sql_names_the_topics_window_lateness_and_record_limits() -> None:
    sql = flink.flink_sql(PIPELINE, "kafka://h:1?prefix=p.", max_message_bytes=1_048_588)
    assert "'topic' = 'p.predictions'" in sql and "'topic' = 'p.dead_letters'" in sql
    assert "INTERVAL '0 00:10:00.000' DAY TO SECOND(3)" in sql  # W
    assert "`rt` - INTERVAL '0 00:01:00.000' DAY TO SECOND(3)" in sql  # allowed lateness
    # Kafka's default max.message.bytes, less the framing, as KafkaLog.record_limit says
    assert "WHERE (`bytes` IS NULL OR `bytes` <= 1047564)" in sql
    assert "more than the 1047564 a record of topic ''dead_letters'' may have" in sql
    assert "'properties.max.request.size' = '1048588'" in sql
    with pytest.raises(ConfigError, match="expected more than 1024"):
        flink.flink_sql(PIPELINE, "kafka://h:1", max_message_bytes=1024)


def test_windows_up_to_999_days_become_intervals_flink_takes(flink_ready: None) -> None:
    """Flink SQL's DAY TO SECOND interval holds 2 digits of days: a window or lateness of
    100 days or more made a job Flink refused when it started. 100 to 999 days are
    written DAY(3) now (Flink's largest precision), which the real engine takes; 1,000 days
    or more are refused when the job is built, naming the field."""
    day = 86_400_000
    lengths = [99 * day + 1, 100 * day, 999 * day + 86_399_999]
    intervals = [flink._interval(ms) for ms in lengths]
    assert [i.endswith(" DAY TO SECOND(3)") for i in intervals] == [True, False, False]
    sql = flink.flink_sql(with_window(100 * day), "kafka://h:1", max_message_bytes=1_048_588)
    assert "INTERVAL '100 00:00:00.000' DAY(3) TO SECOND(3)" in sql
    script = ("import sys\n"
              "from pyflink.table import EnvironmentSettings, TableEnvironment\n"
              "t = TableEnvironment.create(EnvironmentSettings.in_batch_mode())\n"
              "for i in sys.argv[1:]:\n"
              "    q = \"SELECT TIMESTAMP '1970-01-01 00:00:00' + \" + i\n"
              "    print(list(t.execute_sql(q).collect())[0][0].isoformat())\n")
    done = subprocess.run([str(flink.flink_python()), "-c", script, *intervals],
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["1970-04-10T00:00:00.001000", "1970-04-11T00:00:00",
                                   "1972-09-26T23:59:59.999000"], done.stderr[-3000:]
    for name in ("window_ms", "allowed_lateness_ms"):
        join = dataclasses.replace(DECLARED.feedback, **{name: 1000 * day})
        with pytest.raises(ConfigError, match=f"takes a {name} under 86400000000 ms"):
            flink.flink_sql(dataclasses.replace(DECLARED, feedback=join), "kafka://h:1",
                            max_message_bytes=1_048_588)


def test_labels_must_name_a_stream_and_a_number_field() -> None:
    for agg, problem in ((Agg("clicked", "any", "like"), "no feedback stream 'like'"),
                         (Agg("clicked", "sum", "read", "request_id"), "no number field")):
        with pytest.raises(ConfigError, match=problem):
            flink.flink_sql(with_label(Labels(agg)))


def with_window(window_ms: int) -> Pipeline:
    """The demo pipeline (labels declared) with another window."""
    assert isinstance(DECLARED.feedback, FeedbackJoin)
    return dataclasses.replace(DECLARED, feedback=dataclasses.replace(DECLARED.feedback,
                                                                       window_ms=window_ms))


def _checkpointed(directory: Path) -> None:
    """A completed checkpoint in ``directory``, as Flink leaves one."""
    (directory / "0123abcd" / "chk-3").mkdir(parents=True)
    (directory / "0123abcd" / "chk-3" / "_metadata").write_bytes(b"")


def test_a_checkpoint_directory_records_what_its_join_was_made_with(tmp_path: Path) -> None:
    """No JVM: the launcher writes the embedded joiner's made_with into a new directory,
    takes it back as it is, and takes an older livelearn's directory (checkpoints, no
    file) as made with the pipeline, writing the file."""
    fresh, old = tmp_path / "new", tmp_path / "old"
    config = flink.checkpoint_config(fresh, DECLARED)
    assert "execution.state-recovery.path" not in config
    embedded_made_with = make_joiner(DECLARED, []).made_with
    assert orjson.loads((fresh / flink.MADE_WITH).read_bytes()) == embedded_made_with
    _checkpointed(fresh)
    config = flink.checkpoint_config(fresh, DECLARED)
    assert config["execution.state-recovery.path"].endswith("/0123abcd/chk-3")
    _checkpointed(old)
    assert "execution.state-recovery.path" in flink.checkpoint_config(old, DECLARED)
    assert orjson.loads((old / flink.MADE_WITH).read_bytes()) == embedded_made_with
    assert sorted(p.name for p in old.iterdir()) == ["0123abcd", flink.MADE_WITH]


def test_checkpoints_made_with_another_window_are_refused(tmp_path: Path) -> None:
    flink.checkpoint_config(tmp_path, DECLARED)
    _checkpointed(tmp_path)
    written = (tmp_path / flink.MADE_WITH).read_bytes()
    with pytest.raises(ConfigError) as refused:
        flink.checkpoint_config(tmp_path, with_window(300_000))
    assert str(refused.value) == (
        f"the Flink join's checkpoint directory {tmp_path.resolve()} was made with window "
        "600000 ms; the pipeline now says 300000 ms. The samples would mix the two: put the "
        "old value back, or start over with a new --checkpoints DIR in a new log and registry "
        "(another ?prefix= in --log, a new --registry) and ingest the events again")
    assert (tmp_path / flink.MADE_WITH).read_bytes() == written
    # without a completed checkpoint there is no state to mix: the directory is the new join's
    (tmp_path / "0123abcd" / "chk-3" / "_metadata").unlink()
    flink.checkpoint_config(tmp_path, with_window(300_000))
    assert orjson.loads((tmp_path / flink.MADE_WITH).read_bytes())["window_ms"] == 300_000


def test_without_pyflink_or_the_connector_the_error_says_how_to_get_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever livelearn is installed (a wheel has no scripts/), the error gives the
    commands that make what is missing, where it will be looked for."""
    venv, lib = tmp_path / "venv", tmp_path / "lib"
    monkeypatch.setenv("LIVELEARN_FLINK_VENV", str(venv))
    monkeypatch.setenv("LIVELEARN_FLINK_LIB", str(lib))
    monkeypatch.delenv("LIVELEARN_FLINK_PYTHON", raising=False)
    monkeypatch.delenv("LIVELEARN_FLINK_JAR", raising=False)
    with pytest.raises(ConfigError, match=rf"no PyFlink at {venv}/bin/python: make its venv "
                                          rf"with `python3 -m venv {venv} && {venv}/bin/pip "
                                          rf"install apache-flink==2.3.0`"):
        flink.flink_python()
    with pytest.raises(ConfigError, match=rf"no Flink Kafka connector at {lib}/.*jar: fetch "
                                          rf"it .* -DoutputDirectory={lib}`"):
        flink.kafka_jar()


def test_on_an_empty_log_it_creates_the_topics_and_ends(flink_ready: None, kafka_bootstrap: str
                                                        ) -> None:
    log = KafkaLog(kafka_bootstrap, prefix=f"n{uuid.uuid4().hex[:12]}.")
    try:
        flink.run_flink_join(DECLARED, f"kafka://{kafka_bootstrap}?prefix={log.prefix}",
                             timeout_s=FLINK_TIMEOUT_S)
        assert read_all(log, SAMPLES) == read_all(log, DEAD_LETTERS) == []
    finally:
        log.close()


def test_the_job_process_is_told_to_stop_when_its_joiner_is_killed(tmp_path: Any) -> None:
    """`livelearn join --engine flink` killed (SIGKILL, no clean-up): the job's process gets
    SIGTERM all the same (it then cancels its job), instead of joining on unseen."""
    import signal
    import sys
    import time

    child = ("import signal, sys, time, pathlib\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(tmp_path)!r}, "
             "'stopped').write_text('yes'), sys.exit(143)))\n"
             f"pathlib.Path({str(tmp_path)!r}, 'started').write_text('yes')\n"
             "time.sleep(60)\n")
    parent = ("import sys, os\nfrom livelearn.join.flink import _run_session\n"
              f"_run_session([sys.executable, '-c', {child!r}], dict(os.environ), "
              "sys.stdout, None)\n")
    joiner = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    joiner.send_signal(signal.SIGKILL)
    joiner.wait()
    while not (tmp_path / "stopped").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "stopped").read_text() == "yes"
