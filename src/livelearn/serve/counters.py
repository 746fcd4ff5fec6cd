"""The windowed counters of a feedback join, kept in the online Store by the servers.

A pipeline's ``WindowCount``s (spec) count the feedback events a server
accepts (under the event's key or payload field ``by``) and the predictions
it serves (under their ``user`` or ``item``), each under its event id (a
prediction's request_id), so several servers count into one Redis store and a
retried batch counts once. At /predict a candidate's count is read as of the
request's ts for its ``of`` id: events with ts in [ts - window_ms, ts), never
the request itself nor anything later (tables.store).

Counts are added after the events are durable in the Log: a server that dies
in between leaves those events uncounted (counting is at most once per id;
the client's retry counts them). A server starting counts what the log holds
(``add_logged``), so one restarted on a fresh in-memory store serves the
counts it would have had, and one on a shared store changes nothing.

>>> from livelearn import spec
>>> from livelearn.tables.store import open_store
>>> served = ServedCounters([
...     spec.WindowCount("item_views_1h", "predictions", 3_600_000, by="item", of="item"),
...     spec.WindowCount("user_clicks_1h", "clicks", 3_600_000, of="user")],
...     open_store("memory://"))
>>> served.add_predictions([{"request_id": "r1", "ts": 1_000, "user": "u1", "item": "i1"}])
>>> served.counts("u1", ["i1", "i2"], ts=1_001)
[{'item_views_1h': 1, 'user_clicks_1h': 0}, {'item_views_1h': 0, 'user_clicks_1h': 0}]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from livelearn.errors import BadInput, ConfigError, NotFound
from livelearn.events import Event, Schema, decode_event
from livelearn.features.hashing import Features
from livelearn.log.base import Log
from livelearn.spec import PREDICTIONS, WindowCount
from livelearn.tables.store import Store

#: Records read from the log per batch by ``add_logged``.
BATCH = 10_000


class ServedCounters:
    """Reads and feeds the counters of one feedback pipeline in ``store``."""

    def __init__(self, counters: Sequence[WindowCount], store: Store):
        for c in counters:
            if c.window_ms > store.retention_ms:
                raise ConfigError(f"counter '{c.name}': window_ms {c.window_ms} is longer than "
                                  f"the store's retention_ms {store.retention_ms} (set "
                                  f"?retention_ms= in the store URL)")
        self.counters, self.store = tuple(counters), store

    def counts(self, user: str, items: Sequence[str], ts: int) -> list[dict[str, int]]:
        """Each candidate's counts as of ``ts`` (ms), in the order of ``items``."""
        out: list[dict[str, int]] = [{} for _ in items]
        for c in self.counters:
            keys = [user] if c.of == "user" else items
            found = self.store.counts(c.name, keys, c.window_ms, ts)
            for counts, item in zip(out, items, strict=True):
                counts[c.name] = found[user if c.of == "user" else item]
        return out

    def features(self, features: Callable[..., Features], user: str,
                 user_row: Mapping[str, Any], items: Sequence[str],
                 item_rows: Sequence[Mapping[str, Any]], ts: int) -> list[Features]:
        """Each candidate's ``features(user_row, item_row, ts[, counts])``: with counts as
        of ``ts`` when the pipeline has counters."""
        if not self.counters:
            return [features(user_row, row, ts) for row in item_rows]
        return [features(user_row, row, ts, counts) for row, counts in
                zip(item_rows, self.counts(user, items, ts), strict=True)]

    def add_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Count prediction records (request_id, ts, user, item) in the counters of predictions."""
        records = list(records)
        for c in self.counters:
            if c.stream == PREDICTIONS:
                self.store.add_many(c.name, [(str(r[c.by or "item"]), r["ts"], r["request_id"])
                                             for r in records])

    def add_events(self, events: Iterable[Event]) -> None:
        """Count feedback events in the counters of their streams."""
        events = list(events)
        for c in self.counters:
            batch = [(e.key if c.by is None else str(e.payload[c.by]), e.ts, e.id)
                     for e in events if e.stream == c.stream]
            if batch:
                self.store.add_many(c.name, batch)

    def add_logged(self, log: Log, schemas: Mapping[str, Schema]) -> int:
        """Count every prediction and feedback event of a counted stream that ``log``
        holds (the joiner dead-letters those that fail their schema; they are not
        counted); the store keeps what its retention allows. Returns how many."""
        added = 0
        for topic in sorted({c.stream for c in self.counters}):
            for values in _batches(log, topic):
                if topic == PREDICTIONS:
                    predictions = [r for r in map(_prediction, values) if r is not None]
                    self.add_predictions(predictions)
                    added += len(predictions)
                else:
                    events = list(_events(values, schemas))
                    self.add_events(events)
                    added += len(events)
        return added


def _batches(log: Log, topic: str) -> Iterator[list[bytes]]:
    """The record values of ``topic``, partition by partition, a batch at a time."""
    try:
        partitions = log.topic_partitions([topic])
    except NotFound:
        return
    for tp in partitions:
        offset = log.start_offset(*tp)
        while records := log.read(*tp, offset, BATCH):
            yield [r.value for r in records]
            offset = records[-1].offset + 1


def _prediction(value: bytes) -> dict[str, Any] | None:
    """A prediction record, or None where it lacks what is counted."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if (isinstance(record, dict) and type(record.get("ts")) is int
            and isinstance(record.get("request_id"), str)
            and isinstance(record.get("user"), str) and isinstance(record.get("item"), str)):
        return record
    return None


def _events(values: list[bytes], schemas: Mapping[str, Schema]) -> Iterator[Event]:
    for value in values:
        try:
            yield decode_event(value, schemas)
        except BadInput:
            continue
