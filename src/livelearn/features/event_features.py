"""A label-in-event sample's features: one function for the joiner and the server.

For an event at ts t, ``EventFeatures`` calls ``pipeline.features(event, rows,
counts)`` with

- ``rows[table]``: each lookup's row of the event's key (or its payload field
  ``on``) as of t, empty when the key has none yet;
- ``counts[counter]``: each counter's events with the event's key (or its
  payload field ``by``) and ts in [t - window_ms, t).

Where the rows and counts come from is the caller's: the joiner reads its own
tables and counters (join.enrich), the server the online store (serve.scoring).
Which key each lookup and counter reads, and how the features function is
called, are decided here only, so training and serving cannot skew.

>>> from livelearn.events import Event
>>> from livelearn import spec
>>> from livelearn.models.ftrl import FTRL
>>> tx = spec.Stream("tx", {"shop": str, "fraud": bool}, key="card")
>>> p = spec.Pipeline(name="p", feedback=spec.EventLabel(tx, "fraud"), target="fraud",
...     lookups=(spec.Lookup(spec.Table("shops", "shops.csv", key="id"), on="shop"),),
...     counters=(spec.WindowCount("card_1h", "tx", 3_600_000),),
...     features=lambda e, rows, counts: {"kind": rows["shops"].get("kind", "?"),
...                                       "n": counts["card_1h"]},
...     learner=FTRL)
>>> event = Event("tx", "c1", "t1", 5_000, {"shop": "s1"})
>>> EventFeatures(p)(event, lambda table, key, ts: {"kind": f"{table}/{key}@{ts}"},
...                  lambda counter, key, ts: len(key))
{'kind': 'shops/s1@5000', 'n': 2}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from livelearn.errors import PipelineError, guarded
from livelearn.events import Event, show
from livelearn.features.hashing import Features
from livelearn.spec import Pipeline, WindowCount

#: (table name, key, ts in ms) -> the table's row of the key as of ts, empty when none.
RowOf = Callable[[str, str, int], Mapping[str, Any]]
#: (counter, key, ts in ms) -> the counter's events of the key with ts in [ts - window, ts).
CountOf = Callable[[WindowCount, str, int], int]


def event_key(event: Event, field: str | None) -> str:
    """What a lookup (``on``) or a counter (``by``) reads of an event: its key, or the
    payload field ``field`` as text."""
    return event.key if field is None else str(event.payload[field])


class EventFeatures:
    """``pipeline.features(event, rows, counts)`` as of the event's ts, guarded: where the
    pipeline's function raises, PipelineError names it and the event's id."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline.name
        self.function = guarded(pipeline.features, self.what)
        self.lookups = tuple((lk.table.name, lk.on) for lk in pipeline.lookups)
        self.counters = tuple(pipeline.counters)

    def __call__(self, event: Event, row_of: RowOf, count_of: CountOf) -> Features:
        ts, key, payload = event.ts, event.key, event.payload
        rows = {}  # loops, not comprehensions, and event_key inline: once per sample
        for table, on in self.lookups:
            rows[table] = row_of(table, key if on is None else str(payload[on]), ts)
        counts = {}
        for c in self.counters:
            counts[c.name] = count_of(c, key if c.by is None else str(payload[c.by]), ts)
        features = self.function(event, rows, counts)
        if not isinstance(features, dict):
            raise PipelineError(f"{self.what(event)} returned {show(features)}; expected a "
                                f"dict of feature names to values")
        return features

    def what(self, event: Event, *_: Any) -> str:
        """Whose features failed, said only where they do."""
        return f"pipeline '{self.pipeline}', event {event.id!r}: the features function"
