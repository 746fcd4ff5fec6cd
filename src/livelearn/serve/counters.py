"""The windowed counters of a feedback join, kept in the online Store by the servers.

A pipeline's ``WindowCount``s (spec) count the feedback events a server
accepts (under the event's key or payload field ``by``) and the predictions
it serves (under their ``user`` or ``item``), each under its event id (a
prediction's request_id), so several servers count into one Redis store and a
retried batch counts once. At /predict a candidate's count is read as of the
request's ts for its ``of`` id: events with ts in [ts - window_ms, ts), never
the request itself nor anything later (tables.store).

Feedback events are counted after they are durable in the Log: a store that
refuses them then (Redis down) fails no request, and a server that dies in
between counts none; the follow below (or the next start) counts them from the
log, each id once. Predictions are counted before they are logged,
so that a request the store refuses (503) logs nothing for the joiner to
label; one whose log append then fails (503) stays counted, not logged, until
its events leave their windows (serve.app). A server starting counts what the
log holds (``add_logged``), so one restarted on a fresh in-memory store serves
the counts it would have had, and one on a shared store changes nothing. While
it serves, it follows the counted streams in the log (``add_new``, every poll of
the ``follow`` thread): events another producer appended (``livelearn
ingest``, another server, any client of the log) are counted within a poll of
being appended, the server's own a second time for nothing (one count per id).
Both count the events the joiner takes: those that pass their schema, of the
stream of their topic, whose ts is at most five minutes (events.MAX_FUTURE_MS)
after the log received them,
judged by the log's time, so every server, whenever it reads them, counts the
same.
Predictions are not followed: each server counts those it serves.

The label-in-event server reads an event's counts with ``count`` (one key as of
one ts), as the joiner reads its counters (features.event_features).

The store keeps a key's events for its retention behind the newest, or behind
the wall clock when the newest is ahead of it (a request may carry a ts up to 5
minutes ahead: it expires no present event): by default the longest window plus an
hour (``retention_for``), so a request's ts may be up to an hour behind the
newest event counted, or behind now, and its counts stay exact.

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

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from livelearn.errors import BadInput, ConfigError, Lost, NotFound
from livelearn.events import MAX_FUTURE_MS, MAX_TS_MS, MIN_TS_MS, Event, EventDecoder, Schema
from livelearn.features.event_features import event_key
from livelearn.features.hashing import Features
from livelearn.log.base import Log, Record, TopicPartition
from livelearn.spec import PREDICTIONS, RESERVED_PREFIX, WindowCount
from livelearn.tables.store import Store

logger = logging.getLogger("livelearn.serve")

#: The counter a readiness check counts in (``ready``): one event, the same each time.
PROBE = f"{RESERVED_PREFIX}ready"
#: Records read from the log per batch by ``add_logged`` and ``add_new``.
BATCH = 10_000
#: How far behind the newest event counted (or the wall clock, if earlier) a request's
#: ts may be and its counts stay exact, with the retention ``retention_for`` gives: an
#: hour, in ms.
SLACK_MS = 3_600_000


def retention_for(counters: Sequence[WindowCount]) -> int | None:
    """The store retention (ms) that ``counters`` need: the longest window plus
    ``SLACK_MS``; None without counters. A server's store keeps a key's events that
    long behind its newest, or behind the wall clock if that is earlier (memory and
    Redis grow with what it keeps), unless its URL says ``?retention_ms=``."""
    return max(c.window_ms for c in counters) + SLACK_MS if counters else None


class ServedCounters:
    """Reads and feeds the counters of one feedback pipeline in ``store``."""

    def __init__(self, counters: Sequence[WindowCount], store: Store):
        for c in counters:
            if c.window_ms > store.retention_ms:
                raise ConfigError(f"counter '{c.name}': window_ms {c.window_ms} is longer than "
                                  f"the store's retention_ms {store.retention_ms} (set "
                                  f"?retention_ms= in the store URL)")
        self.counters, self.store = tuple(counters), store
        self._next: dict[TopicPartition, int] = {}  # where add_new reads on, per partition
        self._reading = threading.Lock()

    def ready(self) -> None:
        """Unavailable if the store refuses the writes /predict makes (a Redis at its
        maxmemory answers reads and refuses writes): where predictions are counted, one
        event is counted in the reserved counter ``PROBE``, the same each time."""
        if any(c.stream == PREDICTIONS for c in self.counters):
            self.store.add_many(PROBE, [("probe", 0, "probe")])

    def count(self, counter: WindowCount, key: str, ts: int) -> int:
        """Events of ``key`` in ``counter`` with ts in [ts - window_ms, ts) (ms)."""
        return self.store.counts(counter.name, [key], counter.window_ms, ts)[key]

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
        of ``ts`` when the pipeline has counters. Each call gets copies of the rows, its
        own: a function that changes them in place changes no other candidate's."""
        if not self.counters:
            return [features(dict(user_row), dict(row), ts) for row in item_rows]
        return [features(dict(user_row), dict(row), ts, counts) for row, counts in
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
            batch = [(event_key(e, c.by), e.ts, e.id) for e in events if e.stream == c.stream]
            if batch:
                self.store.add_many(c.name, batch)

    def add_logged(self, log: Log, schemas: Mapping[str, Schema]) -> int:
        """Count the predictions and feedback events of the counted streams that ``log``
        got in the store's retention before now (``_batches``; the joiner dead-letters
        those that fail their schema, they are not counted); the store keeps what its
        retention allows. Returns how many.
        ``add_new`` goes on from where this read up to."""
        with self._reading:
            self._next.clear()
            return self._add(log, schemas, sorted({c.stream for c in self.counters}))

    def add_new(self, log: Log, schemas: Mapping[str, Schema]) -> int:
        """Count the events of the counted streams (not predictions) appended to ``log``
        since the last read (``add_logged`` or this); returns how many."""
        with self._reading:
            return self._add(log, schemas, self.followed)

    @property
    def followed(self) -> list[str]:
        """The streams ``add_new`` reads: those counted, but predictions."""
        return sorted({c.stream for c in self.counters} - {PREDICTIONS})

    def follow(self, log: Log, schemas: Mapping[str, Schema], every_s: float,
               stop: threading.Event) -> None:
        """Call ``add_new`` every ``every_s`` seconds until ``stop`` is set (a thread's
        target). A read that fails is logged once, again if its error changes, and once
        more when reads work again; the next poll goes on from where the last one got."""
        failing: str | None = None
        while not stop.wait(every_s):
            try:
                self.add_new(log, schemas)
            except Exception as e:  # a log or store down must not stop the server
                if f"{type(e).__name__}: {e}" != failing:
                    failing = f"{type(e).__name__}: {e}"
                    logger.exception("counting the log's new events failed; the counters "
                                     "miss them until it works again (tried every %g s)",
                                     every_s)
                continue
            if failing is not None:
                failing = None
                logger.info("counting the log's new events works again")

    def _add(self, log: Log, schemas: Mapping[str, Schema], topics: list[str]) -> int:
        added = 0
        decode = EventDecoder(schemas, max_future_ms=None)  # judged by the log's time
        for topic in topics:
            for records in self._batches(log, topic):
                if topic == PREDICTIONS:
                    predictions = [p for p in (_prediction(r.value) for r in records)
                                   if p is not None]
                    self.add_predictions(predictions)
                    added += len(predictions)
                else:
                    events = list(_events(records, decode))
                    self.add_events(events)
                    added += len(events)
        return added

    def _batches(self, log: Log, topic: str) -> Iterator[list[Record]]:
        """The records of ``topic`` from where the last read left off, partition by
        partition, a batch at a time. The first time, from the first record appended
        within the store's retention and ``MAX_FUTURE_MS`` before now (``Log.offset_since``):
        an event appended earlier is older than that (its time was at most MAX_FUTURE_MS
        ahead of the clock when it was taken), so a server's start reads the last hours,
        not a log of months. Records the log deleted before they were read (its retention)
        are skipped, with a WARNING: older than the log keeps, they are most likely older
        than any window."""
        try:
            partitions = log.topic_partitions([topic])
        except NotFound:
            return
        since = int(time.time() * 1000) - self.store.retention_ms - MAX_FUTURE_MS
        for tp in partitions:
            offset = self._next.get(tp)
            if offset is None:
                offset = self._next[tp] = log.offset_since(*tp, since)
            while True:
                try:
                    records = log.read(*tp, offset, BATCH)
                except Lost:
                    start = log.start_offset(*tp)
                    logger.warning("counters: records %d to %d of %s[%d] were deleted by the "
                                   "log's retention before they were counted", offset,
                                   start - 1, *tp)
                    offset = self._next[tp] = start
                    continue
                if not records:
                    break
                yield records
                offset = self._next[tp] = records[-1].offset + 1


def _prediction(value: bytes) -> dict[str, Any] | None:
    """A prediction record, or None where it lacks what is counted."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if (isinstance(record, dict) and type(record.get("ts")) is int
            and MIN_TS_MS <= record["ts"] <= MAX_TS_MS  # as the joiner checks it
            and isinstance(record.get("request_id"), str)
            and isinstance(record.get("user"), str) and isinstance(record.get("item"), str)):
        return record
    return None


def _events(records: list[Record], decode: EventDecoder) -> Iterator[Event]:
    """The events of ``records`` that the joiner takes: those that pass their schema, of
    the stream of the topic they were read from, whose ts is at most MAX_FUTURE_MS after
    the log received them (Record.appended_ms), whatever this machine's clock says when
    it reads them (join.joiner)."""
    for record in records:
        try:
            event = decode(record.value)
        except BadInput:
            continue
        appended = record.appended_ms
        if event.stream == record.topic and (appended is None
                                             or event.ts <= appended + MAX_FUTURE_MS):
            yield event
