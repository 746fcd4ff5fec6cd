"""The event envelope, schema checks, and the reasons an event is dead-lettered.

An event is ``stream``, ``key``, ``id``, ``ts`` and ``payload``. ``ts`` is event
time in integer milliseconds since the epoch, UTC. Events travel as JSON.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec
import orjson

from livelearn.errors import BadInput

#: A payload schema: field name -> the Python type it must have (int counts as float).
Schema = Mapping[str, type]

#: Anything earlier than this many milliseconds since the epoch (1973) is taken
#: for a timestamp in seconds by mistake.
MIN_TS_MS = 100_000_000_000
#: Anything later than this (the year 10000) is taken for microseconds or nanoseconds.
MAX_TS_MS = 253_402_300_800_000
#: Event times from here on (2001-09-09) have 13 digits of ms or more: an earlier one is
#: checked further where users write it (``digits_of_a_date``), at the cost of one
#: comparison for the others.
USUAL_FROM_MS = 10**12
#: How far ahead of the wall clock an event may claim to be, by default (5 minutes: the
#: clock skew Kerberos and request signing allow). One event ahead moves its input's
#: watermark ahead with it, and every present event of a label-in-event join is late
#: until the clock catches up: with a day allowed, one client's wrong clock cost a day.
MAX_FUTURE_MS = 300_000
#: How many levels of objects and arrays a record may nest, itself the first. A joiner's
#: checkpoint holds the events of its open windows a few levels down, and orjson writes at
#: most 255: a deeper event stopped the joiner at each checkpoint, again after each restart.
MAX_NESTING = 100


class Reason(StrEnum):
    """Why an event went to the dead-letter topic instead of into a sample."""

    MALFORMED = "malformed"  # not JSON, or not the declared schema
    LATE = "late"  # its window had already closed when it arrived
    ORPHAN = "orphan"  # feedback whose prediction never arrived
    DUPLICATE = "duplicate"  # an id already seen
    OUTSIDE_WINDOW = "outside_window"  # feedback before its prediction or after t + W
    FAILED = "failed"  # the pipeline's features or label raised on it, or made no JSON
    TOO_LARGE = "too_large"  # more bytes than the log takes in one record (Log.record_limit)
    LOST = "lost"  # records deleted by the log's retention before a role read them (--skip-lost)


#: JSON values as bytes the size of their text, for the records a log keeps (ingest's
#: events, the joiner's samples). Only for values JSON holds exactly: str keys, ints in
#: JSON_INTS, finite floats (it writes a larger int, an int key or a set, which orjson
#: refuses). orjson 3.12 and 3.13 give each text they make a buffer of 4 KB, which a
#: record kept keeps: a replay over ``memory://`` held 9.6 KB an event, and ran 20%
#: slower for the pages it touched.
plain_json = msgspec.json.Encoder().encode
#: The ints JSON readers take back as ints (64 bits, signed or unsigned): orjson reads a
#: larger one as a float, and refuses to write it.
JSON_INTS = range(-(2**63), 2**64)
#: JSON text as Python values, its integers exact whatever their size (orjson reads one
#: beyond 64 bits as a float, rounded): where ``wide_int`` is to find them.
exact_json = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a stream. ``ts`` is milliseconds since the epoch, UTC."""

    stream: str
    key: str
    id: str
    ts: int
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"stream": self.stream, "key": self.key, "id": self.id, "ts": self.ts,
             "payload": self.payload}
        )


def decode_event(raw: bytes | str | Mapping[str, Any], schemas: Mapping[str, Schema],
                 now_ms: int | None = None, max_future_ms: int | None = MAX_FUTURE_MS) -> Event:
    """Parse and check one event against its stream's schema; raise BadInput naming the field.

    >>> e = decode_event('{"stream":"click","key":"u1","id":"c1","ts":1700000000000,'
    ...                  '"payload":{"request_id":"r1"}}', {"click": {"request_id": str}})
    >>> e.payload["request_id"]
    'r1'
    >>> decode_event('{"stream":"click","key":"u1","id":"c1","ts":1700000000,'
    ...              '"payload":{"request_id":"r1"}}', {"click": {"request_id": str}})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    livelearn.errors.BadInput: stream 'click', field 'ts': expected milliseconds ... (seconds?)
    """
    obj = parse_object(raw)
    stream = _field(obj, "stream", str, "?")
    if stream not in schemas:
        known = ", ".join(sorted(schemas)) or "none"
        raise BadInput(f"stream '{stream}': unknown stream (known: {known})")
    key = _field(obj, "key", str, stream)
    event_id = _field(obj, "id", str, stream)
    for name, value in (("key", key), ("id", event_id)):
        if not value:
            raise BadInput(f"stream '{stream}', field '{name}': expected a non-empty string")
    ts = check_ts(obj.get("ts"), stream, now_ms, max_future_ms)
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise BadInput(f"stream '{stream}', field 'payload': expected an object, "
                       f"got {show(payload)}")
    for name, kind in schemas[stream].items():
        _field(payload, name, kind, stream, prefix="payload.")
    return Event(stream, key, event_id, ts, payload)


#: Declared types whose exact type() passes the schema check (float takes int too).
_EXACT: dict[type, tuple[type, ...]] = {str: (str,), int: (int,), float: (float, int),
                                        bool: (bool,), dict: (dict,), list: (list,)}


class EventDecoder:
    """``decode_event`` for one set of schemas, with the checks prepared once.

    Calling it gives what ``decode_event(raw, schemas, now_ms, max_future_ms)``
    gives, the same event or the same BadInput: a well-formed event is checked
    by exact types in one pass; anything else (bytes, a subclass, a wrong field)
    takes ``decode_event`` itself, so every message is the same.
    """

    def __init__(self, schemas: Mapping[str, Schema], max_future_ms: int | None = MAX_FUTURE_MS):
        self.schemas, self.max_future_ms = dict(schemas), max_future_ms
        self._checks = {stream: tuple((name, _EXACT[kind]) for name, kind in schema.items())
                        for stream, schema in self.schemas.items()
                        if all(kind in _EXACT for kind in schema.values())}

    def __call__(self, raw: bytes | str | Mapping[str, Any], now_ms: int | None = None) -> Event:
        if type(raw) is dict:
            try:
                stream, key, event_id = raw["stream"], raw["key"], raw["id"]
                ts, payload = raw["ts"], raw["payload"]
                checks = self._checks[stream] if type(stream) is str else None
                if (checks is not None and type(key) is str and key
                        and type(event_id) is str and event_id
                        and type(ts) is int and MIN_TS_MS <= ts <= MAX_TS_MS
                        and type(payload) is dict
                        and (self.max_future_ms is None or ts <= self.max_future_ms + (
                            int(time.time() * 1000) if now_ms is None else now_ms))):
                    for name, kinds in checks:
                        if type(payload[name]) not in kinds:
                            break
                    else:
                        return Event(stream, key, event_id, ts, payload)
            except KeyError:  # a field or the stream missing: decode_event says which
                pass
        return decode_event(raw, self.schemas, now_ms, self.max_future_ms)


def check_ts(ts: Any, stream: str | None, now_ms: int | None = None,
             max_future_ms: int | None = MAX_FUTURE_MS, field: str = "ts") -> int:
    """Check an event time in milliseconds; raise BadInput naming the ``stream``'s
    ``field`` (a flat record's is the stream's own, ``Stream.ts``; or, None, a request's
    field 'ts') for seconds or the far future."""
    where = f"field '{field}'" if stream is None else f"stream '{stream}', field '{field}'"
    check_ms(ts, where)
    if max_future_ms is not None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if ts > now + max_future_ms:
            digits_of_a_date(ts, where)  # 20251129103000 is the year 2611 as ms
            raise BadInput(f"{where}: {ts} is more than {max_future_ms} ms in the future "
                           f"(the clock here says {now})")
    return ts


def ahead_of_log(stream: str, ts: int, appended_ms: int) -> str:
    """Why an event of ``stream`` at ``ts``, whose record the log received at
    ``appended_ms`` (Record.appended_ms), more than MAX_FUTURE_MS before, is malformed:
    ``check_ts`` judged against the log's clock rather than this machine's, so that a
    replay of the log decides the same. A producer that wrote it to the log directly
    (neither ingest nor the server checked it) has its clock ahead, or its time wrong.
    The Flink join writes the same words in SQL (join.flink._ahead_of_log).

    >>> ahead_of_log("click", 1_731_000_000_000, 1_700_000_000_000) # doctest: +ELLIPSIS
    "stream 'click', field 'ts': 1731000000000 is more than 300000 ms after ... (1700000000000)..."
    """
    return (f"stream '{stream}', field 'ts': {ts} is more than {MAX_FUTURE_MS} ms after the "
            f"log received the event ({appended_ms}): its producer's clock is ahead, or its "
            f"time wrong; joined, it would move the watermark ahead with it and make every "
            f"present event after it late")


def check_ms(ts: Any, where: str) -> int:
    """``ts`` if it is integer milliseconds since the epoch; BadInput naming ``where`` (as
    "stream 'x', field 'ts'") for anything else, seconds (below MIN_TS_MS, as an int or as
    the float time.time() gives) and microseconds or nanoseconds (above MAX_TS_MS) included.

    >>> check_ms(1764410000.25, "field 'ts'")
    Traceback (most recent call last):
    livelearn.errors.BadInput: field 'ts': expected integer milliseconds since the epoch, got \
1764410000.25 (seconds? int(time.time() * 1000) gives ms)
    >>> check_ms(-1764410000123, "field 'ts'")
    Traceback (most recent call last):
    livelearn.errors.BadInput: field 'ts': expected milliseconds since the epoch, got \
-1764410000123, a time before 1970
    """
    if not isinstance(ts, int) or isinstance(ts, bool):
        hint = _number_hint(repr(ts)) if isinstance(ts, float) else ""  # time.time()'s?
        raise BadInput(f"{where}: expected integer milliseconds since the epoch, got "
                       f"{show(ts)}{hint}")
    if ts < 0:  # not "(seconds?)": a time before 1970 is none
        raise BadInput(f"{where}: expected milliseconds since the epoch, got {ts}, a time "
                       f"before 1970")
    if ts < MIN_TS_MS:
        raise BadInput(f"{where}: expected milliseconds since the epoch, got {ts} (seconds?)")
    if ts > MAX_TS_MS:
        raise BadInput(f"{where}: expected milliseconds since the epoch, got {show(ts)}, far "
                       f"in the future, after the year 9999 (microseconds or nanoseconds?)")
    return ts


def digits_of_a_date(ms: int, where: str) -> None:
    """BadInput naming ``where`` if integer ``ms`` reads as a date and time written as digits,
    YYYYMMDDhhmm or YYYYMMDDhhmmss of a year from 1900 to 2199 (as exports and warehouses
    write them), rather than ms since the epoch: read as ms, the one is a time in 1976 (every
    event in one summer, a table's rows seen before their time) and the other after the year
    2286 (a table's rows never seen; an event's, ahead of the clock). A date YYYYMMDD, which
    would be called seconds (before 1973), is named so too. Only for a time users wrote
    (ingest, the server, a table's ``as_of``), not one of the log's.

    >>> digits_of_a_date(202511291030, "field 'ts'")
    Traceback (most recent call last):
    livelearn.errors.BadInput: field 'ts': 202511291030 reads as 2025-11-29T10:30:00 written \
as digits (YYYYMMDDhhmm), not milliseconds since the epoch: write it as ISO 8601 text \
(2025-11-29T10:30:00Z) or ms
    >>> digits_of_a_date(200000000000, "f"), digits_of_a_date(1764410000123, "f")  # no month 00
    (None, None)
    """
    text = str(ms)
    form = {8: "YYYYMMDD", 12: "YYYYMMDDhhmm", 14: "YYYYMMDDhhmmss"}.get(len(text))
    if form is None or not "1900" <= text[:4] <= "2199":
        return
    month, day, hour, minute = (int(text[i:i + 2] or 0) for i in range(4, 12, 2))
    try:
        when = dt.datetime(int(text[:4]), month, day, hour, minute, int(text[12:] or 0))
    except ValueError:  # no such date or time: ms after all
        return
    raise BadInput(f"{where}: {ms} reads as {when.isoformat()} written as digits ({form}), "
                   f"not milliseconds since the epoch: write it as ISO 8601 text "
                   f"({when.isoformat()}Z) or ms")


def to_ms(value: Any, where: str, up: bool = False) -> Any:
    """A time given as text or a datetime, as integer ms since the epoch UTC; any other value
    as it came, for ``check_ms`` to judge. Text is digits (ms) or ISO 8601, a datetime or
    date from a table file likewise: no zone means UTC, and so does " UTC" after the time
    (as BigQuery writes it); spaces around the text are not part of it (a CSV row written
    "u1, 2024-01-01T00:00:00Z"), for ISO 8601 as for digits.
    BadInput naming ``where`` for text that is neither. A time between two ms (ISO 8601
    text may give nanoseconds, or more decimals) is rounded down (an event's time), or up
    with ``up`` (when a table's row starts to be valid: never before its time).

    >>> to_ms("2024-01-01T00:00:00", "f"), to_ms("1704067200000", "f"), to_ms(7, "f")
    (1704067200000, 1704067200000, 7)
    >>> to_ms("2004-03-28T05:20:14.843+02:00", "f"), to_ms("2004-03-28 03:20:14.843 UTC", "f")
    (1080444014843, 1080444014843)
    >>> to_ms("2024-01-01T00:00:00.000500", "f"), to_ms("2024-01-01T00:00:00.000500", "f", up=True)
    (1704067200000, 1704067200001)
    >>> ns = "2024-01-01T00:00:00.0000009Z"
    >>> to_ms(ns, "f"), to_ms(ns, "f", up=True)
    (1704067200000, 1704067200001)
    """
    if isinstance(value, str):
        digits = value.strip().removeprefix("-")
        if is_digits(digits):
            if len(digits) > 20:  # int() refuses more than 4,300 digits with a ValueError
                raise BadInput(f"{where}: expected milliseconds since the epoch, got a "
                               f"number of {len(digits)} digits")
            return int(value)
        text = value.strip()
        if text.endswith(" UTC"):  # as BigQuery exports a timestamp
            text = text[:-4] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadInput(f"{where}: expected milliseconds since the epoch or ISO 8601, "
                           f"got {show(value)}{_number_hint(text)}") from None
        if up and _beyond_microseconds(text):  # fromisoformat keeps 6 decimals only
            value += dt.timedelta(microseconds=1)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        # in integers: timestamp() * 1000 is a float, .843 s gave 842 ms one time in 150
        if up:
            return -((_EPOCH - value) // dt.timedelta(milliseconds=1))
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    return value


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: What ``check_ms`` adds for a time in float seconds, as time.time() gives it.
SECONDS_HINT = " (seconds? int(time.time() * 1000) gives ms)"


def _number_hint(text: str) -> str:
    """What a time that is not integer ms is likely to be, if ``text`` is a number of another
    form (time.time(), or a column pandas made floats): seconds, or ms not whole.

    >>> _number_hint("1764410000.123456"), _number_hint("1.76441e12"), _number_hint("NaN")
    (' (seconds? int(time.time() * 1000) gives ms)', ' (a number: write whole milliseconds, \
with no fraction or exponent)', '')
    """
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    if 0 < number < MIN_TS_MS:
        return SECONDS_HINT
    return " (a number: write whole milliseconds, with no fraction or exponent)"
#: The decimals of an ISO 8601 time's seconds after the sixth (nanoseconds).
_SUB_MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d[.,]\d{6}(\d+)")


def _beyond_microseconds(text: str) -> bool:
    """Whether ISO 8601 ``text`` gives its time to more than a microsecond, some decimal
    after the sixth not 0: ``fromisoformat`` drops them, which rounds down.

    >>> _beyond_microseconds("2024-01-01T00:00:00.0010005Z"), _beyond_microseconds("00:00:00.1")
    (True, False)
    """
    found = _SUB_MICROSECONDS.search(text)
    return found is not None and found[1].strip("0") != ""


def written_as_date(value: Any) -> bool:
    """Whether a time ``to_ms`` reads is a date (ISO 8601 text, a datetime), not a number:
    a date of any year is meant, where a number under MIN_TS_MS is seconds by mistake."""
    return isinstance(value, dt.date) or (
        isinstance(value, str) and not is_digits(value.strip().removeprefix("-")))


def is_digits(text: str) -> bool:
    """Whether ``text`` is one or more of the digits 0 to 9 (``str.isdigit`` takes "²"
    and "٣" too, which ``int`` refuses).

    >>> is_digits("2024"), is_digits("²"), is_digits("")
    (True, False, False)
    """
    return text.isascii() and text.isdigit()


def partition_key(event: Event) -> str:
    """The key that places an event in its topic's partition.

    Feedback (an event naming a ``request_id``) goes by that id, as its prediction
    does, so that a prediction and its feedback share a partition number and one
    joiner per partition number sees both. Other events go by their key.
    """
    rid = event.payload.get("request_id")
    return rid if isinstance(rid, str) else event.key


#: The fields of a prediction record, as the server logs it.
PREDICTION_SCHEMA: Schema = {"request_id": str, "ts": int, "user": str, "item": str,
                             "model_version": int, "score": float, "features": dict}


def decode_prediction(raw: bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check a prediction record; raise BadInput naming the field."""
    obj = parse_object(raw)
    for name, kind in PREDICTION_SCHEMA.items():
        _field(obj, name, kind, "predictions")
    check_ts(obj["ts"], "predictions", max_future_ms=None)
    return dict(obj)


def dead_letter(reason: Reason, detail: str, stream: str, raw: Any, source: str = ""
                ) -> dict[str, Any]:
    """The record written to the dead-letter topic: why, where from, and the event as it came.

    ``source`` says where it was read, as ``topic/partition@offset`` (empty at ingest).
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return {"reason": str(reason), "detail": detail, "stream": stream, "source": source,
            "event": raw}


def too_large(what: str, size: int, limit: int, topic: str, stream: str, raw: bytes | str,
              source: str = "") -> dict[str, Any]:
    """The dead letter of a record too large for ``topic`` (``limit``: Log.record_limit),
    holding the record's first 1,000 characters only, so that it fits."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return dead_letter(Reason.TOO_LARGE, f"{what} is {size} bytes, more than the {limit} a "
                       f"record of topic '{topic}' may have (the log's limit; on Kafka the "
                       f"topic's max.message.bytes): its first 1,000 characters are kept",
                       stream, text[:1000], source)


def lost_letter(group: str, topic: str, partition: int, offset: int, start: int
                ) -> dict[str, Any]:
    """The dead letter (reason ``lost``) of a gap that consumer ``group`` skipped: the
    records of ``topic`` partition ``partition`` from ``offset`` to ``start - 1`` were
    deleted before it read them, and it went on from ``start``, where the partition
    starts now. ``event`` holds the same as fields; ``records`` is an upper bound where
    offsets have gaps (Kafka's transaction markers take offsets)."""
    detail = (f"group '{group}' skipped offsets {offset} to {start - 1} of topic '{topic}' "
              f"partition {partition} (up to {start - offset} record(s)), deleted from "
              f"the log (by its retention, or by hand) before it read them; it went on "
              f"from offset {start}")
    return dead_letter(Reason.LOST, detail, topic, {
        "group": group, "topic": topic, "partition": partition, "first": offset,
        "last": start - 1, "records": start - offset}, f"{topic}/{partition}@{offset}")


def shortened(letter: Mapping[str, Any], size: int, limit: int, topic: str) -> dict[str, Any]:
    """The dead letter (too_large) that stands for ``letter``, of ``size`` bytes, more than
    ``topic`` takes: it holds ``letter``'s first 1,000 characters as JSON, its reason and
    detail first."""
    return too_large(f"dead letter ({letter['reason']})", size, limit, topic,
                     letter["stream"], orjson.dumps(letter), letter["source"])


def letter_value(letter: Mapping[str, Any], key: str, limit: int | None, topic: str) -> bytes:
    """``letter`` encoded for ``topic`` under ``key``: as it is if key and value fit in
    ``limit`` bytes (Log.record_limit; None: any size), else ``shortened``, so that a
    large bad record is dead-lettered rather than refused by the log."""
    value = orjson.dumps(letter)
    size = len(key.encode()) + len(value)
    if limit is None or size <= limit:
        return value
    return orjson.dumps(shortened(letter, size, limit, topic))


#: The fields of an event as the log holds it (Event): an envelope has no others.
ENVELOPE_FIELDS = ("stream", "key", "id", "ts", "payload")


def check_envelope(obj: Mapping[str, Any], stream: str) -> None:
    """BadInput naming a field of envelope ``obj`` (of ``stream``) outside
    ENVELOPE_FIELDS: the event would be stored without it, so a producer's typo or
    a payload field written beside the payload is refused rather than lost.

    >>> check_envelope({"key": "u1", "id": "c1", "ts": 1, "payload": {}, "page": 2}, "click")
    Traceback (most recent call last):
    livelearn.errors.BadInput: stream 'click', field 'page': an event has only the fields \
stream, key, id, ts and payload; put 'page' in payload, or it would be lost
    """
    for name in obj:
        if name not in ENVELOPE_FIELDS:
            raise BadInput(f"stream '{stream}', field '{name}': an event has only the fields "
                           f"stream, key, id, ts and payload; put '{name}' in payload, or it "
                           f"would be lost")


def check_payload(obj: Mapping[str, Any], stream: str) -> None:
    """BadInput if envelope ``obj`` (of ``stream``) has no ``payload``: most likely a flat
    record, as ``livelearn ingest`` reads one, sent where an envelope is taken (the
    server's /feedback); the message says where its fields go.

    >>> check_payload({"stream": "click", "user": "u1", "ts": 1, "request_id": "r1"}, "click")
    Traceback (most recent call last):
    livelearn.errors.BadInput: stream 'click': an event of /feedback is an envelope of the \
fields stream, key, id, ts and payload; this one has no payload (it has 'request_id', 'user'): \
put the stream's fields in payload, and the event's key in key
    """
    if "payload" in obj:
        return
    others = ", ".join(repr(name) for name in sorted(obj) if name not in ENVELOPE_FIELDS)
    raise BadInput(f"stream '{stream}': an event of /feedback is an envelope of the fields "
                   f"stream, key, id, ts and payload; this one has no payload"
                   f"{f' (it has {others})' if others else ''}: put the stream's fields in "
                   f"payload, and the event's key in key")


def parse_object(raw: bytes | str | Mapping[str, Any], what: str = "event",
                 exact: bool = False) -> Mapping[str, Any]:
    """A JSON object from text (a mapping passes as it is); BadInput naming ``what``.
    ``exact``: its integers beyond 64 bits are kept (``exact_json``), not read as floats,
    so that writing it fails (orjson refuses them) and ``wide_int`` finds them."""
    if isinstance(raw, Mapping):
        return raw
    obj = None
    if exact:
        try:
            obj = exact_json(raw)
        except (msgspec.MsgspecError, UnicodeError):
            pass  # orjson's error, below, says where the text is wrong
    try:
        obj = orjson.loads(raw) if obj is None else obj
    except orjson.JSONDecodeError as e:
        raise BadInput(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{what} must be a JSON object, got {show(obj)}")
    if too_deep(raw, obj):
        raise BadInput(f"{what} nests objects and arrays more than {MAX_NESTING} levels deep")
    return obj


def too_deep(text: bytes | str, value: Any) -> bool:
    """Whether ``value``, parsed from JSON ``text``, nests objects and arrays more than
    MAX_NESTING levels deep: only a text long enough and with more brackets than that
    is walked (a few hundred nanoseconds for a text of a few hundred bytes).

    >>> text = "[" * 101 + "]" * 101
    >>> too_deep("[[1]]", [[1]]), too_deep(text, orjson.loads(text)), too_deep(text[1:-1], [])
    (False, True, False)
    """
    if len(text) <= 2 * MAX_NESTING:  # each level takes two brackets
        return False
    if isinstance(text, bytes):
        brackets = text.count(b"{") + text.count(b"[")
    else:
        brackets = text.count("{") + text.count("[")
    return brackets > MAX_NESTING and _deeper(value, MAX_NESTING)


def _deeper(value: Any, levels: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``levels`` deep."""
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    return levels <= 0 or any(_deeper(child, levels - 1) for child in children)


def wide_int(value: Any, path: str = "") -> tuple[str, int] | None:
    """Where the first integer beyond 64 bits (outside JSON_INTS) in ``value`` is, as a
    field path (``payload.tags[1].id``; ``path`` is ``value``'s own), and the integer;
    None where it holds none. Only JSON parsed exact (``exact_json``, Python's json) holds
    such an integer; orjson reads one as a float, rounded.

    >>> wide_int({"a": 1, "b": [2, {"c": 2**64}]})
    ('b[1].c', 18446744073709551616)
    """
    if type(value) is int:
        return None if value in JSON_INTS else (path, value)
    if type(value) is dict:
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif type(value) is list:
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        if (found := wide_int(item, where)) is not None:
            return found
    return None


def wide_int_said(stream: str, where: str, value: int) -> str:
    """Why an event of ``stream`` whose field ``where`` holds ``value``, an integer beyond
    64 bits, is malformed (at ingest, a field declared int says "expected int" instead)."""
    digits = str(value) if value.bit_length() < 10_000 else None  # str() takes 4,300 digits
    quoted = f' ("{digits}")' if digits else ""
    return (f"stream '{stream}', field '{where}': {digits or 'a number'} is an integer of more "
            f"than 64 bits, which JSON readers such as orjson (livelearn's roles too) take for "
            f"a float, rounded: write it as text{quoted}")


def _field(obj: Mapping[str, Any], name: str, kind: type, stream: str, prefix: str = "") -> Any:
    if name not in obj:
        raise BadInput(f"stream '{stream}', field '{prefix}{name}': missing "
                       f"(expected {kind.__name__})")
    value = obj[name]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise BadInput(f"stream '{stream}', field '{prefix}{name}': expected "
                       f"{kind.__name__}, got {show(value)}")
    return value


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def utc(ms: int) -> str:
    """``ms`` since the epoch as ISO 8601 in UTC, to the millisecond.

    >>> utc(1767571259326)
    '2026-01-05T00:00:59.326Z'
    """
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
