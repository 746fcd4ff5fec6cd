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
the client's retry counts them).

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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from livelearn.errors import ConfigError
from livelearn.events import Event
from livelearn.spec import PREDICTIONS, WindowCount
from livelearn.tables.store import Store


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
