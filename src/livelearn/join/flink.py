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
  seen, minus the allowed lateness, as in the embedded joiner);
- joins them with an interval FULL JOIN on ``request_id``, ``f.ts BETWEEN p.ts AND
  p.ts + W``, then makes one sample per prediction with a session window of 2 ms on
  the prediction's rowtime per request_id: the join holds its output watermark back
  by W, so the window closes when the input watermark passes t + W, after the join
  has emitted every row of that prediction;
- labels with SQL aggregates compiled from join.labels (``any``, ``count``, ``sum``,
  ``max``, ``min`` of a stream's events), so a spec's labels must be declared there;
- writes samples (key request_id) and dead letters (key: the stream) to Kafka as the
  embedded joiner does: same fields, same JSON values.

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
- ``malformed`` checks types loosely (JSON_VALUE converts: a number where a string is
  declared passes); the detail names the first failed check in words of its own.
- JSON: object keys come out sorted (features included: equal as objects, not as
  text); floats are re-encoded by Java. ``sum`` adds in arrival order, so it may
  differ in the last bit from the embedded (ts, id) order for non-dyadic values.
- Several partitions per topic: Flink reads them in no event-time order (the embedded
  joiner merges them by ts), and an empty one holds its source's watermark back until
  the end of a bounded run (``IDLE_TIMEOUT`` of idleness in an unbounded one). Records
  that are in time give the same samples; records the embedded joiner calls late may
  join or make samples instead. Samples are placed by Kafka's default partitioner, not
  ``partition_for``. With one partition per topic (the default) none of this arises.
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
  sample twice (same ids). ``bounded=False`` runs until stopped, reading from the
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
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, urlsplit

import orjson

from livelearn.errors import ConfigError, Unavailable
from livelearn.events import MIN_TS_MS, lost_letter
from livelearn.files import replace_file
from livelearn.join.joiner import check_made_with, made_with
from livelearn.join.labels import Agg, Labels, declared
from livelearn.log import open_log
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, FeedbackJoin, Pipeline, Stream

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


def build_job(pipeline: Pipeline, log_url: str, bounded: bool = True,
              jar: str | Path | None = None, group: str = _GROUP) -> FlinkJob:
    """The Flink SQL job of a pipeline's feedback join over the Kafka log ``log_url``."""
    join = _feedback_join(pipeline)
    labels = declared(join.label)
    _check_labels(labels, join.streams)
    kafka = _kafka(log_url, bounded, group)
    w, lateness = join.window_ms, join.allowed_lateness_ms
    tables = [_source(kafka, PREDICTIONS, lateness), _checked_predictions(),
              _classified(PREDICTIONS, w), _PREDICTIONS]
    for stream in join.streams:
        tables += [_source(kafka, stream.name, lateness), _checked_feedback(stream),
                   _classified(stream.name, w)]
    tables += [_feedback(join.streams, labels), _joined(w, labels), _MATCHED,
               _sink(kafka, SAMPLES), _sink(kafka, DEAD_LETTERS)]
    inputs = [PREDICTIONS, *(s.name for s in join.streams)]
    inserts = [_samples(w, labels), _dead_letters(inputs, w)]
    return FlinkJob(_config(pipeline, bounded, jar), tables, inserts)


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
              bounded: bool = True) -> str:
    """The SQL script of the pipeline's Flink join (``livelearn flink-sql PIPELINE``)."""
    return build_job(pipeline, log_url, bounded, jar=kafka_jar(must_exist=False)).sql()


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
    return f"""CREATE TEMPORARY TABLE {_q("in_" + topic)} (
  `v` STRING,
  `kpartition` INT METADATA FROM 'partition' VIRTUAL,
  `koffset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `ts` AS TRY_CAST(JSON_VALUE(`v`, '$.ts') AS BIGINT),
  `rt` AS TO_TIMESTAMP_LTZ(COALESCE(TRY_CAST(JSON_VALUE(`v`, '$.ts') AS BIGINT), 0), 3),
  WATERMARK FOR `rt` AS `rt` - {_interval(lateness_ms)}
) WITH (
{_with(kafka.source(topic))}
)"""


def _sink(kafka: _Kafka, topic: str) -> str:
    return f"""CREATE TEMPORARY TABLE {_q("out_" + topic)} (`k` STRING, `v` STRING) WITH (
{_with(kafka.sink(topic))}
)"""


# -- checks: malformed and late records ------------------------------------------------


def _checked(name: str, checks: list[tuple[str, str]]) -> str:
    """A view of source ``in_name`` with ``malformed``: the first failed check's message."""
    cases = "\n".join(f"    WHEN NOT COALESCE({cond}, FALSE) THEN {_lit(msg)}"
                      for cond, msg in checks)
    return f"""CREATE TEMPORARY VIEW {_q("checked_" + name)} AS
SELECT *, {_lit(name + "/")} || CAST(`kpartition` AS STRING) || '@' || CAST(`koffset` AS STRING)
    AS `source`,
  CASE
{cases}
  END AS `malformed`
FROM {_q("in_" + name)}"""


def _ts_checks(stream: str) -> list[tuple[str, str]]:
    return [("`v` IS JSON OBJECT", "event must be a JSON object"),
            (f"`ts` >= {MIN_TS_MS}", f"stream '{stream}', field 'ts': expected integer "
             "milliseconds since the epoch")]


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
              ("JSON_VALUE(`v`, '$.key') IS NOT NULL", f"stream '{name}', field 'key': missing"),
              ("JSON_VALUE(`v`, '$.id') IS NOT NULL", f"stream '{name}', field 'id': missing"),
              ("JSON_QUERY(`v`, '$.payload') IS JSON OBJECT",
               f"stream '{name}', field 'payload': expected an object"),
              ("JSON_VALUE(`v`, '$.payload.request_id') IS NOT NULL",
               f"stream '{name}', field 'payload.request_id': expected str")]
    for fname, kind in stream.schema.items():
        if fname == "request_id":
            continue
        checks.append((_type_check(f"$.payload{_member(fname)}", kind),
                       f"stream '{name}', field 'payload.{fname}': expected {kind.__name__}"))
    return _checked(name, checks)


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
            (f"JSON_VALUE(`v`, {_lit('$.payload' + _member(a.field or ''))} RETURNING DOUBLE)"
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


def _samples(window_ms: int, labels: Labels) -> str:
    label_obj = ", ".join(f"KEY {_lit(a.name)} VALUE {_label_sql(a)}" for a in labels.aggs)
    # feedback ids in (ts, id) order: sort "\x01" + 20-digit ts + JSON id, then strip prefixes
    ordered = ("ARRAY_JOIN(ARRAY_SORT(ARRAY_AGG(CHR(1) || LPAD(CAST(`f_ts` AS STRING), 20, '0')"
               " || JSON_STRING(`f_id`))), ',')")
    ids = f"'[' || REGEXP_REPLACE(COALESCE({ordered}, ''), '\\x01[0-9]{{20}}', '') || ']'"
    return f"""INSERT INTO `out_samples`
SELECT `p_request_id`, JSON_OBJECT(
  KEY 'id' VALUE `p_request_id`,
  KEY 'ts' VALUE MAX(`p_ts`),
  KEY 'window_end' VALUE MAX(`p_ts`) + {window_ms},
  KEY 'user' VALUE JSON_VALUE(MAX(`p_v`), '$.user'),
  KEY 'item' VALUE JSON_VALUE(MAX(`p_v`), '$.item'),
  KEY 'model_version' VALUE TRY_CAST(JSON_VALUE(MAX(`p_v`), '$.model_version') AS BIGINT),
  KEY 'score' VALUE JSON_VALUE(MAX(`p_v`), '$.score' RETURNING DOUBLE),
  KEY 'features' VALUE JSON(JSON_QUERY(MAX(`p_v`), '$.features')),
  KEY 'labels' VALUE JSON_OBJECT({label_obj}),
  KEY 'feedback' VALUE JSON({ids}))
FROM TABLE(SESSION(TABLE `matched` PARTITION BY `p_request_id`, DESCRIPTOR(`p_rt`),
  {_SESSION_GAP}))
GROUP BY `window_start`, `window_end`, `p_request_id`"""


def _dead_letters(inputs: list[str], window_ms: int) -> str:
    """Malformed and late records of every input, and feedback that joined no prediction."""
    def letter(stream: str, reason: str, detail: str, source: str, event: str) -> str:
        return (f"JSON_OBJECT(KEY 'reason' VALUE {reason}, KEY 'detail' VALUE {detail}, "
                f"KEY 'stream' VALUE {stream}, KEY 'source' VALUE {source}, "
                f"KEY 'event' VALUE {event})")

    parts = [f"SELECT {_lit(name)}, "
             f"{letter(_lit(name), '`dead`', '`detail`', '`source`', '`v`')}\n"
             f"FROM {_q('c_' + name)} WHERE `dead` IS NOT NULL" for name in inputs]
    late = f"CURRENT_WATERMARK(`f_rt`) > `f_rt` - {_interval(window_ms)}"
    reason = f"CASE WHEN {late} THEN 'late' ELSE 'orphan' END"
    detail = ("'no window of request ''' || `f_request_id` || ''' open for ts ' || "
              "CAST(`f_ts` AS STRING)")
    parts.append(f"SELECT `f_stream`, "
                 f"{letter('`f_stream`', reason, detail, '`f_source`', '`f_v`')}\n"
                 f"FROM `joined` WHERE `p_request_id` IS NULL")
    return "INSERT INTO `out_dead_letters`\n" + "\nUNION ALL\n".join(parts)


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
    """The scalar at ``path`` (a SQL literal) as ``sql_type``, or NULL."""
    if sql_type == "BIGINT":  # JSON_VALUE returns no BIGINT; TRY_CAST refuses 1.5 and 1e3
        return f"TRY_CAST(JSON_VALUE({column}, {path}) AS BIGINT)"
    return f"JSON_VALUE({column}, {path} RETURNING {sql_type})"


def _interval(ms: int) -> str:
    """An interval of ``ms`` milliseconds (days up to 99)."""
    s, milli = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{s:02d}.{milli:03d}' DAY TO SECOND(3)"


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


def run_flink_join(pipeline: Pipeline, log_url: str, bounded: bool = True,
                   timeout_s: float | None = None, flink_address: str | None = None,
                   checkpoints: str | Path | None = None, skip_lost: bool = False) -> None:
    """Run the pipeline's Flink join from PyFlink's venv; return when it ends.

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
    job = build_job(pipeline, log_url, bounded, jar=kafka_jar())
    if checkpoints is not None:
        if bounded:
            raise ConfigError("a checkpoint directory is for an unbounded Flink join (a "
                              "bounded one reads the topics from their start every time)")
        extra |= checkpoint_config(Path(checkpoints), pipeline)
    job = FlinkJob(job.config | extra, job.tables, job.inserts)
    _prepare_topics(pipeline, log_url, None if bounded else _GROUP, skip_lost)
    with tempfile.TemporaryDirectory(prefix="livelearn-flink-") as tmp:
        spec, output = Path(tmp) / "job.json", Path(tmp) / "output.txt"
        spec.write_text(job.to_json())
        env = {**os.environ, "JVM_ARGS": os.environ.get("JVM_ARGS", JVM_ARGS),
               "FLINK_LOG_DIR": os.environ.get("FLINK_LOG_DIR", str(Path(tmp) / "log"))}
        with output.open("w") as out:
            code = _run_session([str(flink_python()), str(JOB_SCRIPT), str(spec)], env, out,
                                timeout_s)
        if code:
            raise Unavailable(f"the Flink join failed ({code}):\n"
                              + _summary(output.read_text(errors="replace")))


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
                    skip_lost: bool = False) -> None:
    """Create the pipeline's topics that do not exist yet (Flink's Kafka source needs
    them); with the unbounded job's consumer ``group``, Lost if records it had not read
    were deleted (the source would go on from the topic's start without a word), or with
    ``skip_lost`` a dead letter (reason lost) for each such gap, then the group's offset
    moved past it (KafkaLog.check_group)."""
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
