"""Ingest: a user's records (JSON lines, CSV, stdin) become events of a stream in the Log.

A record is either an event envelope (``key``, ``id``, ``ts``, ``payload``; a
``stream`` field, if any, must name the stream; no other field) or a flat
object, a CSV row included, whose fields are the payload and among which the
stream's declared ``key``, ``ts`` and ``id`` fields give the envelope. Without an id field the id
is a hash of the stream and the event as stored (``derived_id``: however the
record spells its values), so ingesting a file twice, or the same events from
another file, gives the same ids: the joiner dead-letters the second copy, as
duplicates where it still remembers the ids (``dedup_ms`` of event time behind
the newest events), as late before that; nothing is learned twice.

CSV cells are text: each declared field is converted to its type (int, float,
bool as true/false/1/0, dict and list as JSON); an empty cell of another column is
a missing value, null, as in a table. ``ts`` is integer milliseconds
since the epoch UTC, or ISO 8601 (no zone means UTC).

A record that fails (not JSON, a missing or mistyped field, a timestamp in
seconds) never stops the ingest: it goes to the dead-letter topic with reason
``malformed``, the error naming stream, field and problem, and its source as
``FILE:LINE``; one larger than the log takes in a record (Kafka's
max.message.bytes) with reason ``too_large`` and its first 1,000 characters.

Records are read as a stream and written ``BATCH`` at a time, each batch with its dead
letters in one atomic write. A log that fails meanwhile (a Kafka broker gone) ends the
ingest with Unavailable, whose message says from which line of the source on nothing was
written: ``from_line`` goes on from there.

>>> from livelearn.spec import Stream
>>> s = Stream("tx", {"amount": float, "fraud": bool}, key="card")
>>> to_event(s, {"card": "c1", "ts": "2024-01-01T00:00:00", "amount": "9.5", "fraud": "0"}).ts
1704067200000
>>> to_event(s, {"card": "c1", "ts": 1704067200000, "amount": "much", "fraud": "0"})
Traceback (most recent call last):
livelearn.errors.BadInput: stream 'tx', field 'amount': expected float, got 'much'
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import re
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Union

import msgspec
import orjson

from livelearn.errors import BadInput, ConfigError, PipelineError, Unavailable
from livelearn.events import (
    JSON_INTS,
    MAX_FUTURE_MS,
    MAX_NESTING,
    MIN_TS_MS,
    USUAL_FROM_MS,
    Event,
    Reason,
    check_envelope,
    check_ts,
    dead_letter,
    decode_event,
    digits_of_a_date,
    letter_value,
    parse_object,
    partition_key,
    plain_json,
    show,
    to_ms,
    too_deep,
    too_large,
    wide_int,
    wide_int_said,
    written_as_date,
)
from livelearn.log.base import Log
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, Pipeline, Stream
from livelearn.tables.offline import BOM, STRAY_BOM, csv_cells

#: Records appended to the log per write: few enough to stay in the CPU's caches
#: until written (a replay ingested 15% faster than with 20,000).
BATCH = 2_000
#: ``ingest``'s ``late_before`` when none is given: before every event time
NO_CUTOFF = -(2**63)
_TRUE, _FALSE = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n"}


@dataclass
class Ingested:
    """What an ingest did: events appended, records dead-lettered (first few reasons kept)."""

    events: int = 0
    dead: int = 0
    first_errors: list[str] | None = None
    #: the dead letters by reason (malformed, failed: the pipeline's code, too_large)
    reasons: Counter[str] = field(default_factory=Counter)
    #: the events appended whose ts is before ``ingest``'s ``late_before``
    behind: int = 0
    #: the line of the source up to which every record was written (or skipped)
    through: int = 0


def ingest(log: Log, pipeline: Pipeline, stream: str, source: str | Path,
           fmt: str | None = None, now_ms: int | None = None, data_dir: str | Path = ".",
           late_before: int | None = None, from_line: int = 1,
           progress: Callable[[Ingested, float | None], None] | None = None) -> Ingested:
    """Append the records of ``source`` (a path, or '-' for stdin) to ``stream``.

    ``stream`` may be ``predictions`` for a feedback join: the records are then
    impressions from history (livelearn.impressions; tables from ``data_dir``).
    The events appended whose ts (ms) is before ``late_before`` are counted in
    ``Ingested.behind`` (`livelearn ingest`: those the joiner, past them, dead-letters).
    The records that start before line ``from_line`` are skipped (an ingest that was
    stopped goes on: ``Ingested.through``). ``progress`` is called before the first record
    and after each write, with what was written so far (the same object, which stays up to
    date) and the share of the file read (None for stdin or a pipe).
    """
    convert = _converter(log, pipeline, stream, now_ms, data_dir)
    behind = NO_CUTOFF if late_before is None else late_before
    limit, dead_limit = log.record_limit(stream), log.record_limit(DEAD_LETTERS)
    result = Ingested(first_errors=[], through=from_line - 1)
    good: list[tuple[str, bytes]] = []
    dead: list[tuple[str, bytes]] = []
    reasons: list[str] = []  # of the dead letters, in turn
    first = 0  # the line of the first record not written yet (0: none is held)
    kind = _format(str(source), fmt)
    with _opened(source, kind) as f:
        share = _share_read(f)
        if progress is not None:
            progress(result, share())
        for line, raw in _records(f, str(source), kind, from_line):
            first = first or line
            letter = None
            try:
                if isinstance(raw, dict):
                    _check_row(stream, raw)
                elif not raw.isascii():
                    _check_line(stream, raw)
                key, value, ts = convert(raw)
                if limit is None or len(key) + len(value) <= limit:
                    good.append((key, value))
                    if ts < behind:
                        result.behind += 1
                else:  # more than the log takes in a record (Kafka's max.message.bytes)
                    letter = too_large("the event", len(key) + len(value), limit, stream,
                                       stream, _text(raw), f"{source}:{line}")
            except (BadInput, PipelineError) as e:  # the record's fault, or the pipeline's
                reason = Reason.MALFORMED if isinstance(e, BadInput) else Reason.FAILED
                letter = dead_letter(reason, str(e), stream, _text(raw), f"{source}:{line}")
            if letter is not None:
                dead.append((stream, letter_value(letter, stream, dead_limit, DEAD_LETTERS)))
                reasons.append(str(letter["reason"]))
                if len(result.first_errors or []) < 5:
                    result.first_errors.append(  # type: ignore[union-attr]
                        f"{letter['source']}: {letter['detail']}")
            if len(good) + len(dead) >= BATCH:
                _flush(log, stream, good, dead, reasons, result, (source, first, line))
                first = 0
                if progress is not None:
                    progress(result, share())
        if first:  # the records from line ``first`` to the last one read, ``line``
            _flush(log, stream, good, dead, reasons, result, (source, first, line))
    return result


def check_stream(pipeline: Pipeline, stream: str) -> None:
    """ConfigError unless ``stream`` takes records: one of the pipeline's streams, or
    predictions (impressions from history) for a feedback join."""
    if stream == PREDICTIONS and pipeline.labelled is None:
        return
    if stream not in pipeline.streams:
        raise ConfigError(f"stream '{stream}': not a stream of pipeline '{pipeline.name}' "
                          f"(streams: {', '.join(pipeline.inputs)})")


def _converter(log: Log, pipeline: Pipeline, stream: str, now_ms: int | None,
               data_dir: str | Path
               ) -> Callable[[str | dict[str, Any]], tuple[str, bytes, int]]:
    """The function from a record to the (key, value) appended to ``stream`` and the
    event's ts."""
    check_stream(pipeline, stream)
    if stream == PREDICTIONS and pipeline.labelled is None:
        from livelearn.impressions import Impressions

        impressions = Impressions(pipeline, data_dir, log)
        return lambda raw: impressions.record(_object(raw), now_ms)
    spec = pipeline.streams[stream]
    flat = _FlatJson(spec, now_ms)

    def convert(raw: str | dict[str, Any]) -> tuple[str, bytes, int]:
        done = flat(raw) if type(raw) is str else None
        if done is not None:
            return done
        try:
            event = to_event(spec, raw, now_ms)
            return partition_key(event), event.to_json(), event.ts
        except orjson.JSONEncodeError as e:  # an integer beyond 64 bits (read exact)
            raise _unwritable(spec.name, raw, e) from None

    return convert


def _unwritable(stream: str, raw: str | dict[str, Any], error: Exception) -> BadInput:
    """Why a record of ``stream`` that orjson cannot write (``error``) is malformed: most
    likely an integer beyond 64 bits, which to_event keeps exact where JSON text has one
    (and orjson would read as a float), named with its field."""
    found = wide_int(parse_object(raw, exact=True))
    if found is not None:
        return BadInput(wide_int_said(stream, *found))
    return BadInput(f"stream '{stream}': the event cannot be stored as JSON: {error}")


#: A 64-bit signed integer: a larger one, which orjson would read as a float, rounded
#: (and one of 2**63 to 2**64, which it reads exact), is to_event's to check.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def _json_value(levels: int) -> Any:
    """The type of a JSON value whose integers are _Int64, nesting ``levels`` containers."""
    value: Any = Union[None, bool, _Int64, float, str]  # noqa: UP007 (a value, not a hint)
    for _ in range(levels):
        value = Union[None, bool, _Int64, float, str, list[value], dict[str, value]]  # noqa: UP007
    return value


#: A JSON object as _FlatJson takes it: checked as msgspec parses it, as fast as orjson.
_flat_object = msgspec.json.Decoder(dict[str, _json_value(3)]).decode  # type: ignore[misc]


class _FlatJson:
    """``to_event``'s partition key, encoding and ts for a JSON line holding a flat record
    whose fields have exactly their declared types (the usual case), in one pass; None for
    any other line, which ``to_event`` then converts or rejects with its message: one not
    ``_flat_object`` (an integer beyond 64 signed bits, which orjson would read as a float,
    rounded; containers nested more than 3 levels) included."""

    def __init__(self, stream: Stream, now_ms: int | None):
        self.stream, self.now_ms = stream, now_ms
        self.checks = tuple((name, kind, kind is str) for name, kind in stream.schema.items())

    def __call__(self, line: str) -> tuple[str, bytes, int] | None:
        stream = self.stream
        try:
            obj = _flat_object(line)
        except (msgspec.MsgspecError, UnicodeError):  # not JSON, or a wide integer
            return None
        if type(obj) is not dict or ("payload" in obj and type(obj["payload"]) is dict) \
                or too_deep(line, obj):
            return None
        try:
            key, ts = obj[stream.key], obj[stream.ts]
        except KeyError:
            return None
        if type(key) is not str or not key or type(ts) is not int or ts < USUAL_FROM_MS or \
                ts > MAX_FUTURE_MS + (int(time.time() * 1000) if self.now_ms is None
                                      else self.now_ms):
            return None
        for name, kind, text in self.checks:
            value = obj[name] if name in obj else None
            if type(value) is not kind or (text and not value):
                return None
        if stream.id is None:  # obj is the event as stored: key, ts and payload
            event_id = derived_id(stream, key, ts, obj)
        else:
            event_id = obj.pop(stream.id, None)
            if type(event_id) is not str or not event_id:
                return None
        payload = obj  # the record without its time and id
        del payload[stream.ts]
        rid = payload.get("request_id")
        # parsed JSON, so JSON holds it exactly
        return (rid if type(rid) is str else key), plain_json(
            {"stream": stream.name, "key": key, "id": event_id, "ts": ts, "payload": payload}), ts


def _object(raw: str | dict[str, Any]) -> dict[str, Any]:
    return dict(parse_object(raw, "record"))


def _flush(log: Log, stream: str, good: list[tuple[str, bytes]],
           dead: list[tuple[str, bytes]], reasons: list[str], result: Ingested,
           at: tuple[str | Path, int, int]) -> None:
    """Write the records held, from line ``at[1]`` of source ``at[0]`` to line ``at[2]``;
    Unavailable if the log fails, saying how much of the source was written before
    (``result``)."""
    try:
        with log.atomic():
            if good:
                log.append(stream, good)
            if dead:
                log.append(DEAD_LETTERS, dead)
    except Unavailable as e:
        raise Unavailable(f"{e}. {written_before(result, at[0], at[1])}") from e
    result.through = at[2]
    result.events += len(good)
    result.dead += len(dead)
    result.reasons.update(reasons)
    for written in (good, dead, reasons):
        written.clear()


def written_before(result: Ingested, source: str | Path, line: int) -> str:
    """What an ingest that stopped at ``line`` of ``source`` (its log failed, Ctrl-C) had
    written: the records before that line, each batch in one atomic write; and how to
    go on."""
    name = "stdin" if str(source) == "-" else str(source)
    if not (result.events or result.dead):
        return f"Nothing of {name} was written"
    return (f"Of {name}, the records before line {line} were written ({result.events} "
            f"events, {result.dead} dead letters) and none from there on: ingest the rest "
            f"with --from-line {line} (ingested again, the joiner dead-letters the copies "
            f"of records ingested twice)")


def check_source(source: str | Path, fmt: str | None = None) -> None:
    """ConfigError unless ``source`` is '-' (stdin) or a file that can be read: a
    regular file or a pipe (``<(zcat events.jsonl.gz)``), not a folder; and, for a
    regular file read as JSON lines (``fmt``, else its suffix), unless its first line
    says so (``_check_json_lines``: not a JSON array, nor Parquet or gzip)."""
    name = str(source)
    if name == "-":
        return
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"{name}: no such file")
    if path.is_dir():
        raise ConfigError(f"{name}: a folder, not a file; give a JSON lines or CSV file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name}: cannot be read (permission denied)")
    if path.is_file() and _format(name, fmt) == "jsonl":  # a pipe's first line is read once
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            first = next((line for line in iter(lambda: f.readline(65_536), "")
                          if line.strip()), None)
        if first is not None:
            _check_json_lines(name, first)


def _format(name: str, fmt: str | None) -> str:
    """The format a file is read in: ``fmt``, else csv for a .csv file, else jsonl."""
    return fmt or ("csv" if name.lower().endswith(".csv") else "jsonl")


def read_records(source: str | Path, fmt: str | None = None, from_line: int = 1
                 ) -> Iterator[tuple[int, str | dict[str, Any]]]:
    """(line number, record) pairs: raw JSON text per line, or a dict per CSV row.

    ``fmt`` is "jsonl" or "csv"; by default the file's suffix decides (stdin: jsonl).
    ConfigError for a JSON lines file that holds a JSON array, or is Parquet or gzip.
    The text is UTF-8; a byte order mark at its start is skipped (a CSV row that holds
    one is dead-lettered, ``_check_row``). The line of a record is where it starts in the
    file (a CSV row may span lines); blank lines are skipped, and so are the records that
    start before line ``from_line``.
    """
    kind = _format(str(source), fmt)
    with _opened(source, kind) as f:
        yield from _records(f, str(source), kind, from_line)


@contextmanager
def _opened(source: str | Path, kind: str) -> Iterator[IO[str]]:
    """The text of ``source`` (a path, or '-' for stdin) in format ``kind``, open for
    reading; ConfigError for another format, or a file that cannot be read (check_source)."""
    name = str(source)
    if kind not in ("csv", "jsonl"):
        raise ConfigError(f"format {kind!r}: expected csv or jsonl")
    check_source(name, kind)
    # "utf-8-sig" skips a leading byte order mark (Excel writes one), which would
    # otherwise stick to the first CSV header or spoil the first JSON line; bytes
    # that are not UTF-8 become lone surrogates: the record is then dead-lettered;
    # newline="" keeps a quoted cell's line ends as written, from stdin as from a file
    f: IO[str] = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig",
                                   errors="surrogateescape", newline="") if name == "-"
                  else open(name, encoding="utf-8-sig", errors="surrogateescape", newline=""))
    try:
        yield f
    finally:
        if name != "-":
            f.close()


def _records(f: IO[str], name: str, kind: str, from_line: int
             ) -> Iterator[tuple[int, str | dict[str, Any]]]:
    """``read_records`` of ``f``, the text of file ``name`` (stdin: '-') in format ``kind``."""
    if kind == "csv":
        header, rows = csv_cells(f)
        _check_header(name, header)
        for at, cells in rows:  # a dict by the header, as csv.DictReader makes it
            if at < from_line:
                continue
            row: dict[Any, Any] = dict(zip(header, cells, strict=False))
            if len(cells) > len(header):
                row[None] = cells[len(header):]
            row.update(dict.fromkeys(header[len(cells):]))
            yield at, row
        return
    for _ in itertools.islice(f, from_line - 1):  # the lines before from_line, unread
        pass
    lines = ((i, line) for i, line in enumerate(f, start=from_line) if line.strip())
    first = next(lines, None)
    if first is not None:
        if name == "-":  # a file's first line was checked with the file
            _check_json_lines("stdin", first[1])
        yield first
    yield from lines


def _share_read(f: IO[str]) -> Callable[[], float | None]:
    """How much of ``f`` has been read, as a share of its size: a function; it gives None
    for stdin or a pipe (``<(zcat FILE)``), whose size is not known."""
    status = os.fstat(f.fileno())
    if not stat.S_ISREG(status.st_mode) or not status.st_size:
        return lambda: None
    fd, size = f.fileno(), status.st_size
    return lambda: min(1.0, os.lseek(fd, 0, os.SEEK_CUR) / size)  # read ahead: 8 KiB at most


def _check_header(name: str, header: list[str]) -> None:
    """ConfigError naming what is wrong with the header of CSV file ``name``: a name given
    twice (a row's dict kept the last of its cells only), a column of no name (each event
    held it as field "", in its derived id too) or one column only, whose name holds
    another separator than commas (every row was dead-lettered)."""
    twice = sorted({repr(n) for n in header if header.count(n) > 1})
    if twice:
        raise ConfigError(f"{name}: the CSV header names {', '.join(twice)} twice; give each "
                          f"column a name of its own")
    if "" in header:
        raise ConfigError(f"{name}: the CSV header's {_unnamed(header)}")
    other = next((c for c in ";\t|" if len(header) == 1 and c in header[0]), None)
    if other is not None:
        raise ConfigError(f"{name}: the CSV header is one column, {header[0]!r}: ingest reads "
                          f"cells separated by commas, and this file's seem separated by "
                          f"{other!r}")


def _unnamed(header: list[str]) -> str:
    """What is wrong with a CSV header with a column of no name, and its likely cause."""
    at = header.index("") + 1
    why = ("pandas writes its index so: to_csv(index=False) leaves it out" if at == 1 else
           "a comma at the end of the header?" if at == len(header) else "name it")
    return f"column {at} has no name ({why})"


def _check_json_lines(name: str, first: str) -> None:
    """ConfigError if the first line of a file read as JSON lines says it is not: a JSON
    array (some of its objects were taken, the others dead-lettered), a Parquet or a
    gzip file (a dead letter of binary text per "line")."""
    if first.lstrip().startswith("["):
        raise ConfigError(f"{name} holds a JSON array; ingest reads JSON lines, one object a "
                          f"line (jq -c '.[]' FILE makes them of an array)")
    if first.startswith("PAR1"):
        raise ConfigError(f"{name} is a Parquet file; ingest reads JSON lines or CSV (a "
                          f"table's file may be Parquet)")
    if first.startswith("\x1f\udc8b"):  # gzip's magic number, as surrogateescape reads it
        raise ConfigError(f"{name} is compressed (gzip); give <(zcat FILE), or - and pipe it "
                          f"in")
    if _CSV_HEADER.fullmatch(first.strip()):  # every row would be a dead letter: not JSON
        how = "give --format csv" if name == "stdin" else \
            "give ingest --format csv, or name the file .csv (as replay needs)"
        raise ConfigError(f"{name} reads as CSV, not JSON lines (its first line is "
                          f"{first.strip()[:200]!r}): {how}")


#: A CSV header: two or more names, each maybe quoted, separated by commas; no JSON object is.
_CSV_HEADER = re.compile(r'\s*"?[^",{}\[\]]+"?\s*(,\s*"?[^",{}\[\]]+"?\s*)+')


def to_event(stream: Stream, raw: str | bytes | Mapping[str, Any], now_ms: int | None = None
             ) -> Event:
    """One record as an event of ``stream``; BadInput naming the stream and field."""
    text = raw if isinstance(raw, str | bytes) else None
    # integers beyond 64 bits kept exact: orjson refuses to write them (_unwritable)
    obj = parse_object(raw, f"stream '{stream.name}': the record", exact=text is not None)
    if isinstance(obj.get("payload"), dict):
        return _envelope(stream, obj, now_ms)
    return _flat(stream, obj, now_ms, typed=text is not None)


def _envelope(stream: Stream, obj: Mapping[str, Any], now_ms: int | None) -> Event:
    if obj.get("stream", stream.name) != stream.name:
        raise BadInput(f"stream '{stream.name}', field 'stream': the record is of stream "
                       f"{obj.get('stream')!r}")
    body = {**obj, "stream": stream.name, "ts": event_time(stream.name, obj.get("ts"))}
    event = decode_event(body, {stream.name: stream.schema}, now_ms)
    check_envelope(obj, stream.name)
    return event


def _flat(stream: Stream, obj: Mapping[str, Any], now_ms: int | None, typed: bool) -> Event:
    key = _ident(stream.name, stream.key, obj.get(stream.key), "the key")
    ts = check_ts(event_time(stream.name, obj.get(stream.ts), stream.ts), stream.name, now_ms,
                  field=stream.ts)
    payload = {k: v for k, v in obj.items() if k != stream.ts and k != stream.id}
    if not typed:  # an empty cell is a missing value, as a JSON null (and in a table)
        payload.update((k, None) for k, v in obj.items() if v == "" and k in payload)
    for name, kind in stream.schema.items():
        value = payload.get(name)
        if value is None or value == "":
            raise BadInput(f"stream '{stream.name}', field '{name}': missing "
                           f"(expected {kind.__name__})")
        payload[name] = typed_value(stream.name, name, kind, value, typed)
    if stream.id is not None:
        event_id = _ident(stream.name, stream.id, obj.get(stream.id), "the id")
    else:
        event_id = derived_id(stream, key, ts, payload)
    return Event(stream.name, key, event_id, ts, payload)


def derived_id(stream: Stream, key: str, ts: int, payload: Mapping[str, Any]) -> str:
    """The id of an event of a stream without an id field: a hash of the event as stored
    (its key as text, its ts in ms, its payload with the declared fields of their
    types, a field whose value is null as one absent), so that however a record spells it
    (4 or 4.0, a time in ms or ISO 8601, a CSV row or a JSON line, a missing value as an
    empty cell, a null or no field) the same event gets the same id.

    >>> s = Stream("ratings", {"stars": float}, key="user")
    >>> row = to_event(s, {"user": "u1", "stars": "4", "ts": "2024-01-01T00:00:00Z"})
    >>> row.id == to_event(s, '{"user": "u1", "stars": 4.0, "ts": 1704067200000}').id
    True
    """
    if None in payload.values():
        payload = {k: v for k, v in payload.items() if v is not None}
    return hashlib.blake2b(stream.name.encode() + orjson.dumps(
        {**payload, stream.key: key, stream.ts: ts}, option=orjson.OPT_SORT_KEYS),
        digest_size=10).hexdigest()


def _ident(stream: str, name: str, value: Any, what: str) -> str:
    """A key or id field as text: a non-empty string, or an integer (JSON ids often are)."""
    if value is None or value == "":
        raise BadInput(f"stream '{stream}', field '{name}': missing ({what})")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise BadInput(f"stream '{stream}', field '{name}': expected a string or an integer "
                   f"({what}), got {show(value)}")


def typed_value(stream: str, name: str, kind: type, value: Any, typed: bool) -> Any:
    """A field's value as its declared type; text (CSV) is converted, JSON is checked.
    A float must be finite: JSON has no NaN or infinity (it would write null). An int
    must fit in 64 bits (events.JSON_INTS): orjson reads a larger one as a float."""
    if isinstance(value, str) and kind is not str and not typed:
        text, value = value, _convert(kind, value)
        if kind in (dict, list) and too_deep(text, value):  # as a JSON line's: orjson
            # writes 255 levels at most, and the ingest stopped with a traceback
            raise BadInput(f"stream '{stream}', field '{name}': nests objects and arrays "
                           f"more than {MAX_NESTING} levels deep")
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and type(value) is not bool and isinstance(value, int) \
            and abs(value) < 2**1023:  # else float() overflows
        value, ok = float(value), True
    wide = kind is int and ok and value not in JSON_INTS
    if not ok or wide or (kind is float and not math.isfinite(value)):
        raise BadInput(f"stream '{stream}', field '{name}': expected {kind.__name__}, "
                       f"got {show(value)}" + (" (more than 64 bits)" if wide else ""))
    return value


def _convert(kind: type, text: str) -> Any:
    try:
        if kind is bool:
            low = text.strip().lower()
            return True if low in _TRUE else False if low in _FALSE else text
        if kind in (dict, list):
            return orjson.loads(text)
        return kind(text)
    except (ValueError, orjson.JSONDecodeError):
        return text


def event_time(stream: str, value: Any, name: str = "ts") -> Any:
    """A record's time field as integer ms: digits and ISO 8601 text are converted
    (events.to_ms), other values come back for check_ts; BadInput if it is missing, or a
    date and time written as digits (events.digits_of_a_date)."""
    if value is None or value == "":
        raise BadInput(f"stream '{stream}', field '{name}': missing (the event time)")
    where = f"stream '{stream}', field '{name}'"
    ms = to_ms(value, where)
    if isinstance(ms, int) and ms < USUAL_FROM_MS:  # one comparison for the usual times
        if not written_as_date(value):
            digits_of_a_date(ms, where)  # 202511291030: 1976 as ms
        elif ms < MIN_TS_MS:  # not seconds
            raise BadInput(f"{where}: {value!r} is before 1973-03-03T09:46:40Z, the earliest "
                           f"event time taken (an earlier number is taken for seconds)")
    return ms


def _check_row(stream: str, row: Mapping[Any, Any]) -> None:
    """A CSV row has as many cells as the header, all of them UTF-8 and none holding a byte
    order mark (two files joined: the second one's stuck to a value, "\\ufeffu2" another
    key than "u2"); else BadInput."""
    if None in row:
        empty = " (all empty: a comma at the end of the row?)" if not any(row[None]) else ""
        raise BadInput(f"stream '{stream}': the row has {len(row[None])} more cells than "
                       f"the header{empty}")
    for name, value in row.items():
        for text in (name, value):
            if isinstance(text, str) and _clean(text) is not text:
                raise BadInput(f"stream '{stream}', field {_clean(name)!r}: not valid UTF-8")
        if isinstance(value, str) and not value.isascii() and BOM in value:
            raise BadInput(f"stream '{stream}', field {name!r}: {STRAY_BOM}")


def _check_line(stream: str, line: str) -> None:
    """A JSON line is all UTF-8; else BadInput naming the first bad byte and its column."""
    if _clean(line) is not line:
        at = next(i for i, c in enumerate(line) if "\udc80" <= c <= "\udcff")
        raise BadInput(f"stream '{stream}': the line is not valid UTF-8 (byte "
                       f"0x{ord(line[at]) - 0xdc00:02x} at column {at + 1})")


def _clean(text: str) -> str:
    """``text`` itself, or, if it holds bytes that were not UTF-8, with U+FFFD for them."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="surrogateescape").decode(errors="replace")
    return text


def _text(raw: str | Mapping[str, Any]) -> str:
    """A record as text for its dead letter (the cells of a CSV row as a JSON object)."""
    if isinstance(raw, str):
        return _clean(raw.rstrip("\n"))
    return orjson.dumps({_clean(str(k)): [_clean(str(c)) for c in v] if isinstance(v, list)
                         else _clean(v) if isinstance(v, str) else v
                         for k, v in raw.items()}).decode()




