"""The feedback join as a Flink SQL job, built from the pipeline spec and run by PyFlink.

``build_job(pipeline, log_url)`` gives the job; ``flink_sql`` prints it as a script
(``livelearn flink-sql``); ``run_flink_join`` runs it on a local Flink in PyFlink's own
venv (``flink_python``: scripts/flink/setup.sh of the source tree makes it), as a
subprocess: PyFlink pins pandas, pyarrow and apache-beam; or, given a JobManager's REST
address, submits it from there to that Flink cluster (scripts/flink/start-cluster.sh
starts a local one), a checkpoint directory then being one the cluster's processes reach
at the same path. The job:

- reads predictions and each feedback stream from Kafka (raw JSON values; ``ts`` as a
  TIMESTAMP_LTZ(3) rowtime; watermark ``ts - allowed lateness``, emitted after every
  record, so the join's watermark is the smallest over the inputs of the largest ts
  seen, minus the allowed lateness, as in the embedded joiner); a feedback event whose
  ts is more than events.MAX_FUTURE_MS after its record's Kafka timestamp (when the
  broker wrote it, in the topics livelearn creates) is ``malformed`` and moves no
  watermark, as in the embedded joiner (Record.appended_ms), with the same detail
  (events.ahead_of_log); a prediction is not judged so, by either;
- joins them with an interval FULL JOIN on ``request_id``, ``f.ts BETWEEN p.ts AND
  p.ts + W``, then makes one sample per prediction with a session window of 2 ms on
  the prediction's rowtime per request_id: the join holds its output watermark back
  by W, so the window closes when the input watermark passes t + W, after the join
  has emitted every row of that prediction;
- labels with SQL aggregates compiled from join.labels (``any``, ``count``, ``sum``,
  ``max``, ``min`` of a stream's events), so a spec's labels must be declared there;
- writes samples (key request_id) and dead letters (key: the stream) to Kafka as the
  embedded joiner does: same fields, same JSON values;
- routes a sample larger than the samples topic takes to the dead letters instead, as
  a ``too_large`` letter (events.too_large: reason, size, limit, its first 1,000
  characters), and shortens a dead letter larger than the dead-letters topic takes
  (events.shortened), rather than failing the job's Kafka sink (and restarting into the
  same record). The limits are the topics' (KafkaLog.record_limit), asked of the broker
  when the job is built and written into the SQL. A record's size is counted in UTF-8
  bytes, key and value, exactly (CHAR_LENGTH counts characters: a record that may
  exceed the limit at four bytes a character is encoded and its bytes counted).

For the same input log it writes the embedded joiner's samples (tests/test_flink_join
checks it on a real broker), as long as no record sits right on a watermark boundary.
What differs, because Flink keeps no memory of closed windows nor of the ids it saw:

- Late: a record whose ts + W is below the watermark of its own source (the embedded
  joiner: a prediction whose t + W is below the join's watermark, feedback whose
  window was emitted). Feedback that joins no prediction is ``late`` if the join's
  watermark had passed its ts when it came, else ``orphan``; the embedded joiner also
  says ``outside_window`` (ts outside [t, t + W] of a known prediction). Its orphan
  letters keep the record's source and raw value (the embedded joiner's: none and
  the event re-encoded).
- Boundaries: a prediction that comes when the watermark is exactly t + W is not
  waited for (feedback after it is dead-lettered), and feedback that comes when the
  watermark is exactly its ts is not held for a prediction still to come.
- No ``duplicate`` dead letters: a second prediction with a known request_id gives a
  second sample (or shares the first's if within 2 ms), a repeated feedback event
  counts twice.
- ``malformed`` checks types as the embedded joiner does (``_json_value``: 7 is not a
  string, "2.5" not a float, 1.5 not an int; an event's key and id are non-empty
  strings). A number beyond a double's range anywhere in a record (1e400 in
  the features or a payload field no schema declares) makes it malformed, as orjson
  refuses it (``_numbers_within_doubles``), and so does a surrogate escaped unpaired
  (``"\\ud800"`` alone: ``_surrogates_paired``). A record of bytes that are not UTF-8
  is not: Flink's raw format decodes it, replacing them (the embedded joiner: malformed).
  The detail names the first failed check in words of its own.
- ``too_large``: the size in the detail is of Flink's JSON of the sample (or letter),
  which may differ from orjson's by the floats' encoding and the malformed details'
  wording; the 1,000 characters kept of a sample are of Flink's JSON, keys sorted
  (``feedback`` first). A sample's id is shown quoted as is (the embedded joiner uses
  Python's repr: other quotes and escapes for an id with a quote or control character).
- JSON: a sample's object keys come out sorted (features included: equal as objects,
  not as text; a dead letter's are in the embedded joiner's order); floats are
  re-encoded by Java. ``sum`` adds in arrival order, so it may differ in the last bit
  from the embedded (ts, id) order for non-dyadic values.
- Reading order: Flink reads each topic, and each partition, at its own pace, in no
  event-time order (the embedded joiner merges them all by ts), and an empty partition
  holds its source's watermark back until the end of a bounded run (``IDLE_TIMEOUT`` of
  idleness in an unbounded one). Records that come in time (ts not below the newest ts
  before them in their partition, less the allowed lateness) give the same samples. A
  record that comes behind that, and is still taken (a prediction whose window has not
  ended, feedback of an open window), may be joined by one joiner and dead-lettered by
  the other, either way, with one partition per topic as with several: the watermark
  when Flink joins it depends on how far it had read the other topics (docs/scale-out.md
  shows a case). Samples are placed by Kafka's default partitioner, not
  ``partition_for``.
- Retention: an unbounded job whose consumer group's next records were deleted before
  it read them is refused before it starts (Lost, as the embedded joiner stops; with
  ``skip_lost``, ``--skip-lost``, each gap is dead-lettered with reason lost and the
  group moved past it first), but records deleted while it runs, before it reads
  them, are skipped without a dead letter: Flink's Kafka source goes on from where
  the topic starts.
- Order: samples come in window-end order, ties in any order (embedded: (t + W,
  request_id)).
- Bounded runs (``until idle``) read every topic from its start to where it ended
  when the job started, then emit every open window; running one twice writes every
  sample twice (same ids). What one read and wrote (``Tally``) is counted in the
  topics once it ends. ``bounded=False`` runs until stopped, reading from the
  consumer group's offsets, with Kafka transactions committed on checkpoints every
  10 s. Given a checkpoint directory (``livelearn join --checkpoints DIR``), the
  checkpoints are kept there (retained when the job is cancelled, and left there
  when its process is killed) and a restart starts from the newest one: the open
  windows, the sources' offsets and the sink's pending transactions, so a stopped
  or killed joiner that is started again neither loses nor duplicates samples.
  Without one, a new process starts without the old one's open windows (it resumes
  at the consumer group's committed offsets), so it is not exactly once across
  restarts. What the job's state means depends on is recorded beside the
  checkpoints, as the embedded joiner's checkpoint records it (joiner.made_with: the
  streams, the window, the allowed lateness), and a job made otherwise refuses to
  start from them (``checkpoint_config``).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import orjson

from livelearn.errors import ConfigError, NotFound, Unavailable
from livelearn.events import MAX_FUTURE_MS, MAX_TS_MS, MIN_TS_MS, ahead_of_log, lost_letter
from livelearn.files import replace_file
from livelearn.join.joiner import check_made_with, made_with
from livelearn.join.labels import Agg, Labels, declared
from livelearn.log import Log, Record, TopicPartition, open_log
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, FeedbackJoin, Pipeline, Stream

#: Bytes a Kafka producer adds around a record's key and value, with room to spare (as
#: the framing KafkaLog.record_limit leaves).
_FRAMING = 1024
#: The largest finite double: a JSON number beyond it is malformed (_json_value).
_MAX_DOUBLE = "1.7976931348623157E308"
#: The Kafka consumer group of an unbounded job (after the log's prefix).
_GROUP = "livelearn-flink-join"
#: The session gap that closes a prediction's window one millisecond after its rowtime.
_SESSION_GAP = "INTERVAL '0.002' SECOND"
#: Where PyFlink's venv and the Kafka connector are by default (scripts/flink/setup.sh
#: puts them there): a folder of the user's, wherever livelearn is installed.
CACHE = Path.home() / ".cache" / "livelearn" / "flink"
#: What the venv holds (scripts/flink/setup.sh pins the same).
PYFLINK = "apache-flink==2.3.0"
_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
JOB_SCRIPT = Path(__file__).with_name("flink_job.py")
_JAR = "flink-sql-connector-kafka-5.0.0-2.2.jar"
#: JVM options for the local Flink cluster (notes: ~750 MB peak instead of ~1.1 GB).
JVM_ARGS = "-Xmx384m -XX:+UseSerialGC"
#: How long a stopped client has to cancel its job before its session is killed.
_CANCEL_S = 10


@dataclass(frozen=True)
class FlinkJob:
    """A Flink SQL job: configuration, the tables and views, and the INSERTs run together."""

    config: dict[str, str]
    tables: list[str] = field(default_factory=list)
    inserts: list[str] = field(default_factory=list)

    def sql(self) -> str:
        """The job as one script for Flink's SQL client."""
        sets = [f"SET {_lit(k)} = {_lit(v)};" for k, v in self.config.items()]
        body = "\n".join(f"{s};\n" for s in self.inserts)
        return "\n".join(sets) + "\n\n" + "".join(f"{t};\n\n" for t in self.tables) + \
            f"EXECUTE STATEMENT SET\nBEGIN\n{body}END;\n"

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "tables": self.tables,
                           "inserts": self.inserts}, indent=1)


@dataclass(frozen=True)
class _Kafka:
    bootstrap: str
    prefix: str
    bounded: bool
    group: str

    def options(self, topic: str) -> dict[str, str]:
        return {"connector": "kafka", "topic": self.prefix + topic,
                "properties.bootstrap.servers": self.bootstrap}

    def source(self, topic: str) -> dict[str, str]:
        start = ({"scan.startup.mode": "earliest-offset", "scan.bounded.mode": "latest-offset"}
                 if self.bounded else
                 {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest",
                  "properties.group.id": self.prefix + self.group})
        # a watermark after every record, as the embedded joiner moves it (not every 200 ms)
        return {**self.options(topic), **start, "value.format": "raw",
                "properties.isolation.level": "read_committed",
                "scan.watermark.emit.strategy": "on-event"}

    def sink(self, topic: str) -> dict[str, str]:
        guarantee = ({"sink.delivery-guarantee": "at-least-once"} if self.bounded else
                     {"sink.delivery-guarantee": "exactly-once",
                      "sink.transactional-id-prefix": f"{self.group}-{self.prefix}{topic}",
                      # the broker's default transaction.max.timeout.ms is 15 min
                      "properties.transaction.timeout.ms": "600000"})
        return {**self.options(topic), "key.format": "raw", "key.fields": "k",
                "value.format": "raw", "value.fields-include": "EXCEPT_KEY", **guarantee}


# -- building the job ------------------------------------------------------------------


def build_job(pipeline: Pipeline, log_url: str, limits: Mapping[str, int],
              bounded: bool = True, jar: str | Path | None = None,
              group: str = _GROUP) -> FlinkJob:
    """The Flink SQL job of a pipeline's feedback join over the Kafka log ``log_url``.

    ``limits``: the most bytes (key and value) a record of the samples and the
    dead-letters topic may have (KafkaLog.record_limit; ``record_limits`` asks the
    broker); they are written into the SQL. A larger sample becomes a ``too_large``
    dead letter, a larger dead letter is shortened (``too_large``), as in the embedded
    joiner, instead of failing the job's Kafka sink.
    """
    join, labels = _checked_join(pipeline, log_url)
    kafka = _kafka(log_url, bounded, group)
    w, lateness = join.window_ms, join.allowed_lateness_ms
    tables = [_source(kafka, PREDICTIONS, lateness), _checked_predictions(),
              _classified(PREDICTIONS, w), _PREDICTIONS]
    for stream in join.streams:
        tables += [_source(kafka, stream.name, lateness), _checked_feedback(stream),
                   _classified(stream.name, w)]
    inputs = [PREDICTIONS, *(s.name for s in join.streams)]
    sample_limit, letter_limit = limits[SAMPLES], limits[DEAD_LETTERS]
    tables += [_feedback(join.streams, labels), _joined(w, labels), _MATCHED,
               _samples_made(w, labels), _sized("samples_sized", "`k`, `v`", "samples_made",
                                                sample_limit),
               _letters(inputs, w, sample_limit),
               _sized("letters_sized", f"`k`, `reason`, `stream`, `source`, "
                      f"{_letter_text()} AS `v`", "letters", letter_limit),
               _sink(kafka, SAMPLES, sample_limit), _sink(kafka, DEAD_LETTERS, letter_limit)]
    inserts = [_samples(sample_limit), _dead_letters(letter_limit)]
    return FlinkJob(_config(pipeline, bounded, jar), tables, inserts)


def _checked_join(pipeline: Pipeline, log_url: str) -> tuple[FeedbackJoin, Labels]:
    """The pipeline's join and labels; ConfigError if they cannot become Flink SQL, or if
    ``log_url`` is not a Kafka log's."""
    join = _feedback_join(pipeline)
    labels = declared(join.label)
    _check_labels(labels, join.streams)
    for name in ("window_ms", "allowed_lateness_ms"):
        if getattr(join, name) >= _LONGEST_INTERVAL_MS:
            raise ConfigError(f"pipeline '{pipeline.name}': the Flink join takes a {name} "
                              f"under {_LONGEST_INTERVAL_MS} ms (1,000 days: Flink SQL's "
                              f"intervals hold 3 digits of days), got {getattr(join, name)}")
    _kafka(log_url, True, _GROUP)
    return join, labels


def _feedback_join(pipeline: Pipeline) -> FeedbackJoin:
    join = pipeline.feedback
    if not isinstance(join, FeedbackJoin):
        raise ConfigError(f"pipeline '{pipeline.name}': the Flink join handles a FeedbackJoin; "
                          "a label-in-event pipeline runs on the embedded joiner")
    return join


def _check_labels(labels: Labels, streams: Sequence[Stream]) -> None:
    schemas = {s.name: s.schema for s in streams}
    for a in labels.aggs:
        if a.stream not in schemas:
            raise ConfigError(f"label '{a.name}': no feedback stream '{a.stream}' (streams: "
                              f"{', '.join(schemas)})")
        kind = schemas[a.stream].get(a.field) if a.field is not None else float
        if kind not in (int, float):
            raise ConfigError(f"label '{a.name}': stream '{a.stream}' declares no number "
                              f"field '{a.field}'")


def flink_sql(pipeline: Pipeline, log_url: str = "kafka://localhost:9092",
              bounded: bool = True, max_message_bytes: int | None = None) -> str:
    """The SQL script of the pipeline's Flink join (``livelearn flink-sql PIPELINE``).

    The records' limits are asked of the broker (its samples and dead-letters topics
    must exist), or with ``max_message_bytes`` taken as both topics' setting."""
    _checked_join(pipeline, log_url)
    if max_message_bytes is None:
        limits = record_limits(log_url)
    elif max_message_bytes <= _FRAMING:
        raise ConfigError(f"max.message.bytes {max_message_bytes}: a record of Kafka takes "
                          f"{_FRAMING} bytes of it and more, expected more than {_FRAMING}")
    else:
        from livelearn.log.kafka import limit_of

        limits = dict.fromkeys((SAMPLES, DEAD_LETTERS), limit_of(max_message_bytes))
    return build_job(pipeline, log_url, limits, bounded,
                     jar=kafka_jar(must_exist=False)).sql()


def record_limits(log_url: str) -> dict[str, int]:
    """The most bytes a record of the samples and of the dead-letters topic may have,
    asked of the broker (KafkaLog.record_limit: their max.message.bytes); NotFound if
    either topic does not exist yet."""
    _kafka(log_url, True, _GROUP)  # ConfigError if not a Kafka URL
    log = open_log(log_url)  # a clear error if the kafka extra is not installed
    try:
        for topic in (SAMPLES, DEAD_LETTERS):
            try:
                log.partitions(topic)
            except NotFound as e:
                raise NotFound(f"{e}: the Flink job holds its max.message.bytes; `livelearn "
                               "join --engine flink` creates the pipeline's topics, or "
                               "give `livelearn flink-sql` --max-message-bytes N") from None
        return _limits(log)
    finally:
        log.close()


def _limits(log: Log) -> dict[str, int]:
    limits = {topic: log.record_limit(topic) for topic in (SAMPLES, DEAD_LETTERS)}
    return {topic: limit for topic, limit in limits.items() if limit is not None}


def _kafka(log_url: str, bounded: bool, group: str) -> _Kafka:
    parts = urlsplit(log_url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ConfigError(f"log URL {log_url!r}: the Flink join reads and writes Kafka, "
                          "kafka://host:port[?prefix=...]")
    prefix = dict(parse_qsl(parts.query)).get("prefix", "")
    return _Kafka(parts.netloc, prefix, bounded, group)


#: An unbounded job leaves a source out of the watermark once it has read nothing for
#: this long. Also at the job's start: with 5 s, a restored job on this 2-core machine
#: had its predictions source declared idle before it read anything, so the feedback
#: source's watermark alone orphaned the feedback held in the restored state (the
#: restart test failed 5 times in 5 one evening). An input that is really quiet holds
#: the samples back this long.
IDLE_TIMEOUT = "30 s"


def _config(pipeline: Pipeline, bounded: bool, jar: str | Path | None) -> dict[str, str]:
    config = {"pipeline.name": f"livelearn join {pipeline.name}", "parallelism.default": "1",
              "table.local-time-zone": "UTC",
              # unmatched predictions leave the join as soon as the watermark passes t + W,
              # before their session window closes (a delay would make them late there)
              "table.exec.interval-join.min-cleanup-interval": "0 ms"}
    if jar is not None:
        config["pipeline.jars"] = Path(jar).resolve().as_uri()
    if not bounded:
        config |= {"execution.checkpointing.interval": "10 s",
                   "table.exec.source.idle-timeout": IDLE_TIMEOUT,
                   "restart-strategy.type": "fixed-delay",
                   "restart-strategy.fixed-delay.attempts": "3"}
    return config


def _source(kafka: _Kafka, topic: str, lateness_ms: int) -> str:
    """Kafka ``topic`` as a table: ``v`` the record, ``ts`` its time, ``rt`` the rowtime of
    a ts events.check_ms takes, else the epoch (the record is malformed: _ts_checks). A
    rowtime must not be NULL, which TO_TIMESTAMP_LTZ is from the year 10000 on (a ts in
    microseconds): the job would fail; MAX_TS_MS itself is a millisecond earlier.

    A stream's topic (not the predictions', which the embedded joiner does not judge so
    either) also has ``appended``, the record's Kafka timestamp in ms (Record.appended_ms;
    NULL for a record without one), and an event more than MAX_FUTURE_MS after it has the
    epoch for its rowtime too (_ahead_of_log: malformed): the watermark is made here, at
    the source, so a filter downstream would come after the event had moved it."""
    ts = _json_value("'$.ts'", "BIGINT")
    latest, appended = str(MAX_TS_MS), ""
    if topic != PREDICTIONS:
        latest = f"LEAST({MAX_TS_MS}, COALESCE({_APPENDED} + {MAX_FUTURE_MS}, {MAX_TS_MS}))"
        appended = f"""
  `kts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  `ktype` STRING METADATA FROM 'timestamp-type' VIRTUAL,
  `appended` AS {_APPENDED},"""
    return f"""CREATE TEMPORARY TABLE {_q("in_" + topic)} (
  `v` STRING,
  `kpartition` INT METADATA FROM 'partition' VIRTUAL,
  `koffset` BIGINT METADATA FROM 'offset' VIRTUAL,{appended}
  `ts` AS {ts},
  `rt` AS TO_TIMESTAMP_LTZ(CASE WHEN {ts} BETWEEN {MIN_TS_MS} AND {latest}
    THEN LEAST({ts}, {MAX_TS_MS - 1}) ELSE 0 END, 3),
  WATERMARK FOR `rt` AS `rt` - {_interval(lateness_ms)}
) WITH (
{_with(kafka.source(topic))}
)"""


#: A record's Kafka timestamp (its ``kts`` and ``ktype`` metadata) in ms since the epoch,
#: or NULL if it has none (a computed column cannot name another: ``rt`` repeats it). The
#: job's time zone is UTC (_config), which EXTRACT reads a TIMESTAMP_LTZ in.
_APPENDED = ("CASE WHEN `ktype` <> 'NoTimestampType' THEN EXTRACT(EPOCH FROM `kts`) * 1000 + "
             "EXTRACT(MILLISECOND FROM `kts`) END")


def _sink(kafka: _Kafka, topic: str, limit: int) -> str:
    # Kafka's Java producer refuses a record over max.request.size or buffer.memory
    # (1 MB and 32 MB by default): room for the largest the topic takes
    room = limit + _FRAMING
    sizes = {"properties.max.request.size": str(room),
             "properties.buffer.memory": str(max(2 * room, 32 * 2**20))}
    return f"""CREATE TEMPORARY TABLE {_q("out_" + topic)} (`k` STRING, `v` STRING) WITH (
{_with(kafka.sink(topic) | sizes)}
)"""


# -- checks: malformed and late records ------------------------------------------------


def _checked(name: str, checks: list[tuple[str, str]],
             computed: Sequence[tuple[str, str]] = ()) -> str:
    """A view of source ``in_name`` with ``malformed``: the first failed check's message
    (``checks``: a condition and its message; then ``computed``: a condition and SQL that
    makes its message)."""
    cases = "\n".join(f"    WHEN NOT COALESCE({cond}, FALSE) THEN {msg}"
                      for cond, msg in [*((c, _lit(m)) for c, m in checks), *computed])
    return f"""CREATE TEMPORARY VIEW {_q("checked_" + name)} AS
SELECT *, {_lit(name + "/")} || CAST(`kpartition` AS STRING) || '@' || CAST(`koffset` AS STRING)
    AS `source`,
  CASE
{cases}
  END AS `malformed`
FROM {_q("in_" + name)}"""


def _ts_checks(stream: str) -> list[tuple[str, str]]:
    return [("`v` IS JSON OBJECT", "event must be a JSON object"),
            (_numbers_within_doubles(), f"stream '{stream}': a number beyond a double's "
             f"range (more than {_MAX_DOUBLE} in magnitude)"),
            (_surrogates_paired(), f"stream '{stream}': a \\u escape of half a surrogate "
             "pair (\\ud800 to \\udfff, unpaired), which is no text"),
            (f"`ts` BETWEEN {MIN_TS_MS} AND {MAX_TS_MS}", f"stream '{stream}', field 'ts': "
             "expected integer milliseconds since the epoch")]


#: A text that may hold a number beyond a double's range: one of 1e308 or more has an
#: exponent of three digits or more, or else 210 digits in a row before its point.
_BIG_NUMBER_HINT = r"[eE]\+?0*[1-9][0-9]{2}|[0-9]{210}"
#: A JSON string (its escapes included; possessive, so a long one takes no stack).
_JSON_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
#: The JSON numbers (outside strings) the hint may have seen.
_NUMBER = "-?[0-9][0-9.]*[eE][-+]?[0-9]+|-?[0-9]{210,}[0-9.]*"


def _numbers_within_doubles() -> str:
    """Whether every number of the record ``v`` is within a double's range, as orjson
    reads the embedded joiner's records (1e400 anywhere in them, features and undeclared
    payload fields included, makes them malformed; Flink's JSON functions read it as a
    decimal and write it on into the sample). Only a record the cheap ``_BIG_NUMBER_HINT``
    finds in has its numbers read (strings removed first), each as a double."""
    numbers = (f"TRY_CAST(REGEXP_EXTRACT_ALL(REGEXP_REPLACE(`v`, {_lit(_JSON_STRING)}, "
               f"'\"\"'), {_lit(_NUMBER)}, 0) AS ARRAY<DOUBLE>)")
    within = (f"COALESCE(ARRAY_MAX({numbers}) <= {_MAX_DOUBLE} AND ARRAY_MIN({numbers}) >= "
              f"-{_MAX_DOUBLE}, TRUE)")
    return f"CASE WHEN REGEXP(`v`, {_lit(_BIG_NUMBER_HINT)}) THEN {within} ELSE TRUE END"


#: A JSON escape of a UTF-16 surrogate, high (\ud800 to \udbff) or low.
_SURROGATE = r"\\u[dD][89a-fA-F]"
#: An escaped backslash, or a high surrogate's escape followed by a low one's: a pair.
_PAIRED = r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"


def _surrogates_paired() -> str:
    """Whether every surrogate escaped in the record ``v`` is half of a pair, as orjson
    reads the embedded joiner's records ("\\ud800" alone makes them malformed; Flink's
    JSON functions read it, and the sample written had a "?" in its place). Only a record
    that escapes a surrogate at all is searched: without its escaped backslashes and
    pairs, from left to right, it must have none left."""
    unpaired = f"REGEXP(REGEXP_REPLACE(`v`, {_lit(_PAIRED)}, ''), {_lit(_SURROGATE)})"
    return f"CASE WHEN REGEXP(`v`, {_lit(_SURROGATE)}) THEN NOT {unpaired} ELSE TRUE END"


def _checked_predictions() -> str:
    fields = [("request_id", "STRING"), ("user", "STRING"), ("item", "STRING"),
              ("model_version", "BIGINT"), ("score", "DOUBLE")]
    checks = _ts_checks(PREDICTIONS) + [
        (f"{_json_value(_lit('$' + _member(f)), t)} IS NOT NULL",
         f"stream 'predictions', field '{f}': missing or not {t}") for f, t in fields]
    checks.append(("JSON_QUERY(`v`, '$.features') IS JSON OBJECT",
                   "stream 'predictions', field 'features': expected an object"))
    return _checked(PREDICTIONS, checks)


def _classified(name: str, window_ms: int) -> str:
    """``dead``: malformed, or late when ts + W is below its own source's watermark (no
    window that holds it can still be open); ``detail`` says why."""
    late = f"`rt` + {_interval(window_ms)} < CURRENT_WATERMARK(`rt`)"
    return f"""CREATE TEMPORARY VIEW {_q("c_" + name)} AS
SELECT *,
  CASE WHEN `malformed` IS NOT NULL THEN 'malformed' WHEN {late} THEN 'late' END AS `dead`,
  COALESCE(`malformed`, 'ts ' || CAST(`ts` AS STRING) ||
    {_lit(" + the window is below the watermark of " + name)}) AS `detail`
FROM {_q("checked_" + name)}"""


_PREDICTIONS = """CREATE TEMPORARY VIEW `p` AS
SELECT JSON_VALUE(`v`, '$.request_id') AS `request_id`, `ts`, `rt`, `v`
FROM `c_predictions` WHERE `dead` IS NULL"""


def _checked_feedback(stream: Stream) -> str:
    name = stream.name
    checks = [*_ts_checks(name),
              (f"JSON_VALUE(`v`, '$.stream') = {_lit(name)}",
               f"field 'stream': expected '{name}' (read from topic '{name}')"),
              (f"{_json_value(_lit('$.key'), 'STRING')} <> ''",
               f"stream '{name}', field 'key': expected a non-empty string"),
              (f"{_json_value(_lit('$.id'), 'STRING')} <> ''",
               f"stream '{name}', field 'id': expected a non-empty string"),
              ("JSON_QUERY(`v`, '$.payload') IS JSON OBJECT",
               f"stream '{name}', field 'payload': expected an object"),
              (f"{_json_value(_lit('$.payload.request_id'), 'STRING')} IS NOT NULL",
               f"stream '{name}', field 'payload.request_id': expected str")]
    for fname, kind in stream.schema.items():
        if fname == "request_id":
            continue
        checks.append((_type_check(f"$.payload{_member(fname)}", kind),
                       f"stream '{name}', field 'payload.{fname}': expected {kind.__name__}"))
    return _checked(name, checks, [_ahead_of_log(name)])


def _ahead_of_log(stream: str) -> tuple[str, str]:
    """The check that an event of ``stream`` is at most MAX_FUTURE_MS after its record's
    Kafka timestamp (``appended``: _source), as Joiner._decode's, last as there; its
    message is events.ahead_of_log's, its numbers filled in by SQL."""
    marks = "|".join(_AHEAD_MARKS)
    words = re.split(f"({marks})", ahead_of_log(stream, *map(int, _AHEAD_MARKS)))
    detail = " || ".join(f"CAST({_AHEAD_MARKS[part]} AS STRING)" if part in _AHEAD_MARKS
                         else _lit(part) for part in words if part)
    return f"`appended` IS NULL OR `ts` <= `appended` + {MAX_FUTURE_MS}", detail


#: Numbers no event time is (events.check_ms refuses them) that stand for the columns in
#: events.ahead_of_log's message: the event's ts, its record's append time.
_AHEAD_MARKS = {"-9000000000000001": "`ts`", "-9000000000000002": "`appended`"}


def _type_check(path: str, kind: type) -> str:
    if kind in (dict, list):
        return f"JSON_QUERY(`v`, {_lit(path)}) IS JSON {'OBJECT' if kind is dict else 'ARRAY'}"
    sql_type = {str: "STRING", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN"}[kind]
    return f"{_json_value(_lit(path), sql_type)} IS NOT NULL"


# -- the join --------------------------------------------------------------------------


def _value_columns(labels: Labels) -> list[Agg]:
    """The aggregates that need a payload field, one column per (stream, field)."""
    seen: dict[str, Agg] = {}
    for a in labels.aggs:
        if a.field is not None:
            seen.setdefault(_column(a), a)
    return list(seen.values())


def _column(a: Agg) -> str:
    return f"{a.stream}.{a.field}"


def _feedback(streams: Sequence[Stream], labels: Labels) -> str:
    """Every valid feedback event, with the payload fields the labels aggregate."""
    values = _value_columns(labels)
    selects = []
    for s in streams:
        cols = ", ".join(
            (_json_value(_lit("$.payload" + _member(a.field or "")), "DOUBLE")
             if a.stream == s.name else "CAST(NULL AS DOUBLE)") + f" AS {_q(_column(a))}"
            for a in values)
        selects.append(
            f"SELECT {_lit(s.name)} AS `stream`, JSON_VALUE(`v`, '$.id') AS `id`,\n"
            f"  JSON_VALUE(`v`, '$.payload.request_id') AS `request_id`, `ts`, `rt`, `v`,"
            f" `source`{', ' + cols if cols else ''}\n"
            f"FROM {_q('c_' + s.name)} WHERE `dead` IS NULL")
    return "CREATE TEMPORARY VIEW `f` AS\n" + "\nUNION ALL\n".join(selects)


def _joined(window_ms: int, labels: Labels) -> str:
    values = "".join(f", f.{_q(_column(a))}" for a in _value_columns(labels))
    return f"""CREATE TEMPORARY VIEW `joined` AS
SELECT p.`request_id` AS `p_request_id`, p.`ts` AS `p_ts`, p.`rt` AS `p_rt`, p.`v` AS `p_v`,
  f.`stream` AS `f_stream`, f.`id` AS `f_id`, f.`request_id` AS `f_request_id`,
  f.`ts` AS `f_ts`, f.`rt` AS `f_rt`, f.`v` AS `f_v`, f.`source` AS `f_source`{values}
FROM `p` AS p
FULL OUTER JOIN `f` AS f
ON p.`request_id` = f.`request_id`
  AND f.`rt` BETWEEN p.`rt` AND p.`rt` + {_interval(window_ms)}"""


_MATCHED = ("CREATE TEMPORARY VIEW `matched` AS\n"
            "SELECT * FROM `joined` WHERE `p_request_id` IS NOT NULL")


def _label_sql(a: Agg) -> str:
    mine = f"`f_stream` = {_lit(a.stream)}"
    if a.how in ("any", "count"):
        n = f"COUNT(CASE WHEN {mine} THEN `f_id` END)"
        return (f"CAST({n} AS DOUBLE)" if a.how == "count" else
                f"CAST(CASE WHEN {n} > 0 THEN 1 ELSE 0 END AS DOUBLE)")
    return f"COALESCE({a.how.upper()}(CASE WHEN {mine} THEN {_q(_column(a))} END), 0.0)"


def _samples_made(window_ms: int, labels: Labels) -> str:
    """Every sample: its key ``k`` (the request_id) and its JSON ``v``."""
    label_obj = ", ".join(f"KEY {_lit(a.name)} VALUE {_label_sql(a)}" for a in labels.aggs)
    # feedback ids in (ts, id) order, ids compared as Python compares str, by code point: as
    # their UTF-8 bytes compare, in hex (Java compares UTF-16 units, and the JSON text of an
    # id has quotes and escapes). Sort "\x01" + 20-digit ts + hex id + " " + JSON id, then
    # strip all but the JSON id
    ordered = ("ARRAY_JOIN(ARRAY_SORT(ARRAY_AGG(CHR(1) || LPAD(CAST(`f_ts` AS STRING), 20, '0')"
               " || HEX(`f_id`) || ' ' || JSON_STRING(`f_id`))), ',')")
    ids = (f"'[' || REGEXP_REPLACE(COALESCE({ordered}, ''), '\\x01[0-9]{{20}}[0-9A-F]* ', '')"
           " || ']'")
    return f"""CREATE TEMPORARY VIEW `samples_made` AS
SELECT `p_request_id` AS `k`, JSON_OBJECT(
  KEY 'id' VALUE `p_request_id`,
  KEY 'ts' VALUE MAX(`p_ts`),
  KEY 'window_end' VALUE MAX(`p_ts`) + {window_ms},
  KEY 'user' VALUE JSON_VALUE(MAX(`p_v`), '$.user'),
  KEY 'item' VALUE JSON_VALUE(MAX(`p_v`), '$.item'),
  KEY 'model_version' VALUE TRY_CAST(JSON_VALUE(MAX(`p_v`), '$.model_version') AS BIGINT),
  KEY 'score' VALUE JSON_VALUE(MAX(`p_v`), '$.score' RETURNING DOUBLE),
  KEY 'features' VALUE JSON(JSON_QUERY(MAX(`p_v`), '$.features')),
  KEY 'labels' VALUE JSON_OBJECT({label_obj}),
  KEY 'feedback' VALUE JSON({ids})) AS `v`
FROM TABLE(SESSION(TABLE `matched` PARTITION BY `p_request_id`, DESCRIPTOR(`p_rt`),
  {_SESSION_GAP}))
GROUP BY `window_start`, `window_end`, `p_request_id`"""


def _sized(name: str, columns: str, source: str, limit: int) -> str:
    """View ``name``: ``columns`` of ``source`` (a key ``k`` and a value ``v`` among them)
    and ``bytes``, the record's size in bytes (UTF-8 key and value) where it may exceed
    ``limit``, NULL where it surely fits: where even four bytes a character (CHAR_LENGTH
    counts characters, of one to four bytes each) fit, so only large records are
    encoded. The size is exact: the length of the record's UTF-8 in base64, less its
    padding, times 3/4."""
    b64 = "TO_BASE64(ENCODE(`k` || `v`, 'UTF-8'))"
    exact = (f"CAST(CHAR_LENGTH({b64}) / 4 * 3 - (CHAR_LENGTH({b64}) - "
             f"CHAR_LENGTH(TRIM(TRAILING '=' FROM {b64}))) AS BIGINT)")
    return f"""CREATE TEMPORARY VIEW {_q(name)} AS
SELECT *, CASE WHEN 4 * (CHAR_LENGTH(`k`) + CHAR_LENGTH(`v`)) > {limit} THEN
  {exact} END AS `bytes`
FROM (SELECT {columns} FROM {_q(source)})"""


def _fits(limit: int) -> str:
    return f"(`bytes` IS NULL OR `bytes` <= {limit})"


def _samples(limit: int) -> str:
    return f"INSERT INTO `out_samples`\nSELECT `k`, `v` FROM `samples_sized` WHERE {_fits(limit)}"


def _too_large(what: str, limit: int, topic: str) -> str:
    """The detail of a ``too_large`` dead letter (events.too_large) of ``what`` (SQL)."""
    return (f"{what} || ' is ' || CAST(`bytes` AS STRING) || "
            + _lit(f" bytes, more than the {limit} a record of topic '{topic}' may have (the "
                   "log's limit; on Kafka the topic's max.message.bytes): its first 1,000 "
                   "characters are kept"))


def _letters(inputs: list[str], window_ms: int, sample_limit: int) -> str:
    """Every dead letter (key ``k``: its stream), as columns: malformed and late records of
    every input, feedback that joined no prediction, and samples larger than their topic
    takes (``too_large``, holding their first 1,000 characters, as events.too_large)."""
    def letter(stream: str, reason: str, detail: str, source: str, event: str) -> str:
        return (f"SELECT {stream} AS `k`, {reason} AS `reason`, {detail} AS `detail`, "
                f"{stream} AS `stream`, {source} AS `source`, {event} AS `event`")

    def text(value: str) -> str:
        return f"CAST({value} AS STRING)"

    parts = [f"{letter(text(_lit(name)), '`dead`', '`detail`', '`source`', '`v`')}\n"
             f"FROM {_q('c_' + name)} WHERE `dead` IS NOT NULL" for name in inputs]
    late = f"CURRENT_WATERMARK(`f_rt`) > `f_rt` - {_interval(window_ms)}"
    reason = f"CASE WHEN {late} THEN 'late' ELSE 'orphan' END"
    detail = ("'no window of request ''' || `f_request_id` || ''' open for ts ' || "
              "CAST(`f_ts` AS STRING)")
    parts.append(f"{letter('`f_stream`', text(reason), detail, '`f_source`', '`f_v`')}\n"
                 f"FROM `joined` WHERE `p_request_id` IS NULL")
    what = _too_large("'sample ''' || `k` || ''''", sample_limit, SAMPLES)
    big = letter(text(_lit(PREDICTIONS)), text(_lit("too_large")), what, text(_lit("")),
                 "SUBSTRING(`v`, 1, 1000)")
    parts.append(f"{big}\nFROM `samples_sized` WHERE `bytes` > {sample_limit}")
    return "CREATE TEMPORARY VIEW `letters` AS\n" + "\nUNION ALL\n".join(parts)


def _json_text(fields: list[tuple[str, str]]) -> str:
    """A JSON object of the string ``fields`` (name, SQL), its members in this order, as
    orjson writes the embedded joiner's dead letters (JSON_OBJECT sorts them)."""
    members = " || ',' || ".join(f"{_lit(json.dumps(name) + ':')} || "
                                 f"COALESCE(JSON_STRING({value}), 'null')"
                                 for name, value in fields)
    return f"'{{' || {members} || '}}'"


def _letter_text() -> str:
    """The JSON of a dead letter of view ``letters``, as the embedded joiner writes it."""
    return _json_text([(f, _q(f)) for f in ("reason", "detail", "stream", "source", "event")])


def _dead_letters(limit: int) -> str:
    """Every dead letter; one larger than the topic takes shortened (events.shortened)."""
    what = _too_large("'dead letter (' || `reason` || ')'", limit, DEAD_LETTERS)
    short = _json_text([("reason", "'too_large'"), ("detail", what), ("stream", "`stream`"),
                        ("source", "`source`"), ("event", "SUBSTRING(`v`, 1, 1000)")])
    return (f"INSERT INTO `out_dead_letters`\nSELECT `k`, CASE WHEN {_fits(limit)} THEN `v` "
            f"ELSE\n  {short} END\nFROM `letters_sized`")


# -- SQL text --------------------------------------------------------------------------


def _q(name: str) -> str:
    """An identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def _lit(text: str) -> str:
    """A string literal."""
    return "'" + text.replace("'", "''") + "'"


def _member(name: str) -> str:
    """A JSON path step to the member ``name``."""
    return f".{name}" if name.isidentifier() else "['" + name.replace("'", "\\'") + "']"


def _json_value(path: str, sql_type: str, column: str = "`v`") -> str:
    """The scalar at ``path`` (a SQL literal) as ``sql_type``, or NULL.

    A value is NULL where the JSON holds another type, as events.check refuses it: for
    STRING a number or a boolean (7 is not "7"); a number or a boolean where it holds a
    string ("2.5" is not a float), for BIGINT a number not written as
    digits (1.5, 1e3), for DOUBLE one beyond a double's range (1e400). Its text is
    cast: ``JSON_VALUE ... RETURNING DOUBLE`` (or BOOLEAN) fails the whole job on a value
    of another type (ClassCastException), and TRY_CAST alone takes "2.5" for 2.5, 1.5
    for 1 and 1e400 for Infinity."""
    text = f"JSON_VALUE({column}, {path})"
    wrapped = f"JSON_QUERY({column}, {path} WITH CONDITIONAL ARRAY WRAPPER)"
    if sql_type == "STRING":  # JSON_VALUE would take 7 for "7"
        return f"CASE WHEN {wrapped} LIKE '[\"%' THEN {text} END"
    typed = f"{wrapped} NOT LIKE '[\"%'"
    if sql_type == "BIGINT":
        typed += f" AND REGEXP({text}, '^-?[0-9]+$')"
    elif sql_type == "DOUBLE":  # 1e400 is no double: orjson refuses it, Java's is Infinity
        typed += f" AND ABS(TRY_CAST({text} AS DOUBLE)) <= {_MAX_DOUBLE}"
    return f"TRY_CAST(CASE WHEN {typed} THEN {text} END AS {sql_type})"


#: Flink SQL's day-time intervals hold at most 3 digits of days (DAY(3)); its planner
#: refuses a larger precision ("DAY_INTERVAL_TYPES precision is not supported: 4").
_LONGEST_INTERVAL_MS = 1000 * 86_400_000


def _interval(ms: int) -> str:
    """An interval of ``ms`` milliseconds, under 1,000 days (``_checked_join``): DAY TO
    SECOND holds 2 digits of days, DAY(3) TO SECOND 3 (kept for 100 days or more only,
    so that the SQL of shorter windows, and the checkpoints of their jobs, are as before)."""
    s, milli = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    day = "DAY" if d < 100 else "DAY(3)"
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{s:02d}.{milli:03d}' {day} TO SECOND(3)"


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"  {_lit(k)} = {_lit(v)}" for k, v in options.items())


# -- running it ------------------------------------------------------------------------


def flink_python(must_exist: bool = True) -> Path:
    """PyFlink's interpreter: LIVELEARN_FLINK_PYTHON, or that of the venv
    LIVELEARN_FLINK_VENV (default CACHE/venv)."""
    venv = Path(os.environ.get("LIVELEARN_FLINK_VENV", CACHE / "venv"))
    path = Path(os.environ.get("LIVELEARN_FLINK_PYTHON", venv / "bin" / "python"))
    if must_exist and not path.exists():
        raise ConfigError(f"no PyFlink at {path}: make its venv with `python3 -m venv {venv} "
                          f"&& {venv}/bin/pip install {PYFLINK}` (scripts/flink/setup.sh of "
                          "livelearn's source does it, and fetches the Kafka connector), or "
                          "set LIVELEARN_FLINK_PYTHON to a Python that has PyFlink")
    return path


def kafka_jar(must_exist: bool = True) -> Path:
    """The Kafka SQL connector jar: LIVELEARN_FLINK_JAR, or the one in LIVELEARN_FLINK_LIB
    (default CACHE/lib)."""
    lib = Path(os.environ.get("LIVELEARN_FLINK_LIB", CACHE / "lib"))
    path = Path(os.environ.get("LIVELEARN_FLINK_JAR", lib / _JAR))
    if must_exist and not path.exists():
        raise ConfigError(f"no Flink Kafka connector at {path}: fetch it from Maven Central "
                          f"with `mvn dependency:copy -Dartifact={_CONNECTOR} "
                          f"-Dtransitive=false -DoutputDirectory={lib}` (scripts/flink/setup.sh "
                          "of livelearn's source does it), or set LIVELEARN_FLINK_JAR")
    return path


def cluster_config(address: str) -> dict[str, str]:
    """The configuration that submits a job to the Flink cluster whose JobManager's REST
    API is at ``address`` (HOST:PORT) instead of running it in a local mini-cluster."""
    parts = urlsplit(address if "//" in address else "//" + address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"Flink address {address!r}: expected HOST:PORT, the JobManager's "
                          "REST address (scripts/flink/start-cluster.sh prints one)")
    return {"execution.target": "remote", "rest.address": parts.hostname,
            "rest.port": str(port)}


class Tally(NamedTuple):
    """What a bounded Flink join read and wrote, as the embedded joiner's --until-idle
    says it: the records of its inputs, and ``counts`` of the samples (under SAMPLES) and
    of the dead letters by reason."""

    read: int
    counts: Counter[str]


def run_flink_join(pipeline: Pipeline, log_url: str, bounded: bool = True,
                   timeout_s: float | None = None, flink_address: str | None = None,
                   checkpoints: str | Path | None = None, skip_lost: bool = False
                   ) -> Tally | None:
    """Run the pipeline's Flink join from PyFlink's venv; return when it ends, a bounded
    one with what it read and wrote (``_tally``).

    Without ``flink_address`` the job runs on a local mini-cluster in PyFlink's JVM;
    with it (HOST:PORT, a JobManager's REST address) it is submitted to that Flink
    cluster, the Kafka connector jar with it (``pipeline.jars``), and this process
    waits for it as a client. With ``checkpoints`` (a directory; an unbounded job only)
    the job keeps its checkpoints there and starts from the newest one it finds; if
    they were made with another window, allowed lateness or streams, ConfigError
    before any job starts (``checkpoint_config``). An unbounded job whose consumer group
    had not read records the topics' retention deleted is refused (Lost), or with
    ``skip_lost`` its group goes on from where each topic starts, each gap logged and
    written to the dead letters (reason lost) first (``_prepare_topics``).
    Bounded (the default): reads what the topics hold when it starts, then stops;
    unbounded: runs until stopped (Ctrl-C, SIGTERM). The client's
    processes (Python and the JVM it starts) run in a session of their own; on a
    timeout or an interrupt the client cancels the job (so none is left running on
    a cluster), then the session is ended. Raises Unavailable with the end of Flink's
    output if the job fails or does not end within ``timeout_s``.
    """
    extra = cluster_config(flink_address) if flink_address is not None else {}
    _checked_join(pipeline, log_url)  # before any topic is made
    jar = kafka_jar()
    if checkpoints is not None:
        if bounded:
            raise ConfigError("a checkpoint directory is for an unbounded Flink join (a "
                              "bounded one reads the topics from their start every time)")
        extra |= checkpoint_config(Path(checkpoints), pipeline)
    limits = _prepare_topics(pipeline, log_url, None if bounded else _GROUP, skip_lost)
    spans = _spans(pipeline, log_url) if bounded else None
    job = build_job(pipeline, log_url, limits, bounded, jar=jar)
    job = FlinkJob(job.config | extra, job.tables, job.inserts)
    with tempfile.TemporaryDirectory(prefix="livelearn-flink-") as tmp:
        spec, output = Path(tmp) / "job.json", Path(tmp) / "output.txt"
        spec.write_text(job.to_json())
        env = {**os.environ, "JVM_ARGS": jvm_args(Path(tmp)),
               "FLINK_LOG_DIR": os.environ.get("FLINK_LOG_DIR", str(Path(tmp) / "log"))}
        with output.open("w") as out:
            code = _run_session([str(flink_python()), str(JOB_SCRIPT), str(spec)], env, out,
                                timeout_s)
        if code:
            raise Unavailable(f"the Flink join failed ({code}):\n"
                              + _summary(output.read_text(errors="replace")))
    return _tally(pipeline, log_url, spans) if spans is not None else None


class _Spans(NamedTuple):
    """Where a bounded job's counts start (and end): per input partition, the records
    the job reads (from where it starts to where it ends when the job starts); per
    output partition, where it ends when the job starts."""

    inputs: dict[TopicPartition, tuple[int, int]]
    outputs: dict[TopicPartition, int]


def _spans(pipeline: Pipeline, log_url: str) -> _Spans:
    log = open_log(log_url)
    try:
        return _Spans({tp: (log.start_offset(*tp), log.end_offset(*tp))
                       for tp in log.topic_partitions(pipeline.inputs)},
                      dict(log.end_offsets((SAMPLES, DEAD_LETTERS))))
    finally:
        log.close()


def _tally(pipeline: Pipeline, log_url: str, spans: _Spans) -> Tally:
    """What the bounded job read (the inputs' records within ``spans``) and wrote: the
    samples and dead letters appended since ``spans``; of the dead letters, those of the
    join's streams only (a trainer's, of the samples, may come meanwhile)."""
    log = open_log(log_url)
    try:
        read = sum(len(batch) for tp, (start, end) in spans.inputs.items()
                   for batch in _batches(log, tp, start, end))
        counts = Counter[str]()
        for tp, start in spans.outputs.items():
            for batch in _batches(log, tp, start):
                if tp[0] == SAMPLES:
                    counts[SAMPLES] += len(batch)
                else:
                    letters = (orjson.loads(r.value) for r in batch)
                    counts.update(d["reason"] for d in letters
                                  if d.get("stream") in pipeline.inputs)
        return Tally(read, counts)
    finally:
        log.close()


def _batches(log: Log, tp: TopicPartition, start: int, end: int | None = None
             ) -> Iterator[list[Record]]:
    """The records of ``tp`` from ``start`` up to ``end`` (exclusive; None: where it ends
    now), a batch at a time."""
    offset = start
    while end is None or offset < end:
        batch = [r for r in log.read(*tp, offset, 10_000) if end is None or r.offset < end]
        if not batch:
            return
        yield batch
        offset = batch[-1].offset + 1


def jvm_args(tmp: Path) -> str:
    """The options of the client's JVM: JVM_ARGS's (ours by default), with its temporary
    files in ``tmp``, the job's folder, removed when the job ends. Flink unpacks its table
    planner there (about 50 MB), which the JVM deletes only when it exits by itself: a
    job stopped (SIGTERM, a timeout) ends with the JVM killed, and in the system's
    temporary folder each such run would leave the planner behind. A JVM_ARGS that sets
    -Djava.io.tmpdir keeps its own (the last one counts)."""
    jvm_tmp = tmp / "jvm"
    jvm_tmp.mkdir(exist_ok=True)
    return f"-Djava.io.tmpdir={jvm_tmp} {os.environ.get('JVM_ARGS', JVM_ARGS)}"


#: The file of a checkpoint directory that records what the job's state was made with.
MADE_WITH = "made_with.json"
#: What a refused start tells the user to do.
_START_OVER = ("put the old value back, or start over with a new --checkpoints DIR in a new "
               "log and registry (another ?prefix= in --log, a new --registry) and ingest "
               "the events again")


def checkpoint_config(directory: Path, pipeline: Pipeline) -> dict[str, str]:
    """Checkpoints of ``pipeline``'s join kept in ``directory`` (made if missing), and a
    start from the newest completed one there if any.

    The directory's ``MADE_WITH`` file records what the join's state means depends on
    (joiner.made_with): ConfigError, as the embedded joiner's, if the directory holds a
    completed checkpoint and the file says other values. Otherwise the file is written
    (atomically) with the pipeline's: in a new directory, one without it (made by an
    older livelearn: taken as made with this pipeline) or one without checkpoints.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    newest = newest_checkpoint(directory)
    join = _feedback_join(pipeline)
    now = made_with(pipeline.schemas, join.window_ms, join.allowed_lateness_ms, None)
    record = directory / MADE_WITH
    was = _read_made_with(record) if record.exists() else {}
    if newest is not None:
        check_made_with(was, now, f"the Flink join's checkpoint directory {directory}",
                        _START_OVER)
    if was != now:
        replace_file(record, orjson.dumps(now, option=orjson.OPT_INDENT_2), "checkpoint record")
    config = {"execution.checkpointing.dir": directory.as_uri(),
              "execution.checkpointing.externalized-checkpoint-retention":
                  "RETAIN_ON_CANCELLATION",
              "execution.checkpointing.num-retained": "2"}
    if newest is not None:
        config["execution.state-recovery.path"] = newest.as_uri()
    return config


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest completed checkpoint under ``directory`` (JOB_ID/chk-N holding its
    _metadata, the last file Flink writes), by the time its metadata was written."""
    done = [m.parent for m in directory.glob("*/chk-*/_metadata")]
    return max(done, key=lambda c: (c.joinpath("_metadata").stat().st_mtime_ns,
                                    int(c.name.partition("-")[2])), default=None)


def _read_made_with(path: Path) -> dict[str, object]:
    try:
        was = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        was = None
    if not isinstance(was, dict):
        raise ConfigError(f"{path}: expected the JSON object livelearn writes there (what "
                          "the checkpoints beside it were made with)")
    return was


def _prepare_topics(pipeline: Pipeline, log_url: str, group: str | None,
                    skip_lost: bool = False) -> dict[str, int]:
    """Create the pipeline's topics that do not exist yet (Flink's Kafka source needs
    them); with the unbounded job's consumer ``group``, Lost if records it had not read
    were deleted (the source would go on from the topic's start without a word), or with
    ``skip_lost`` a dead letter (reason lost) for each such gap, then the group's offset
    moved past it (KafkaLog.check_group). Returns the records' limits of the samples and
    dead-letters topics (``record_limits``)."""
    log = open_log(log_url)  # a clear error if the kafka extra is not installed
    from livelearn.log.kafka import KafkaLog

    assert isinstance(log, KafkaLog)

    def record(tp: tuple[str, int], offset: int, start: int) -> None:
        assert group is not None
        log.append(DEAD_LETTERS, [(tp[0], orjson.dumps(lost_letter(group, *tp, offset, start)))])

    try:
        for topic in pipeline.topics:
            log.create_topic(topic, pipeline.partitions)
        if group is not None:
            log.check_group(group, pipeline.inputs, record if skip_lost else None)
        return _limits(log)
    finally:
        log.close()


def _run_session(command: list[str], env: dict[str, str], out: IO[str],
                 timeout_s: float | None) -> int:
    """Run ``command`` in a new session; end the whole session if it does not end itself.

    A SIGTERM to this process (in its main thread) ends it with status 143 after the
    same clean-up: the session would otherwise outlive it."""
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=_die_with_parent)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if main else None
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"the Flink join did not end in {timeout_s} s") from e
    finally:
        if process.poll() is None:
            # the client cancels its job on SIGTERM (a cluster's job outlives the client)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_CANCEL_S)
            except subprocess.TimeoutExpired:
                pass
        _end_leftovers(process.pid)
        process.wait()
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM to it when this process dies, even killed
    (Linux's PR_SET_PDEATHSIG): the job script then cancels its job and ends its session,
    instead of joining on beside a restarted joiner."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # not Linux: a killed joiner leaves its job running
        pass


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _end_leftovers(session: int) -> None:
    """End what is left of a finished job's session (the JVM, if PyFlink left it)."""
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _summary(output: str, lines: int = 30) -> str:
    """The end of a Java/Python error output without its stack frames."""
    kept = [line for line in output.splitlines()
            if not line.lstrip().startswith(("at ", "... "))]
    return "\n".join(kept[-lines:])
