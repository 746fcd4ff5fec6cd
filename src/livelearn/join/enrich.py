"""Where a label-in-event sample gets its features: tables and counters as of its ts.

For a pipeline with an ``EventLabel``, the joiner hands each event of the
labelled stream to ``sample(event)`` once the watermark has passed its ts, in
(ts, id) order. Its features are ``pipeline.features(event, rows, counts)``:

- ``rows[table]``: the lookup's row as of the event's ts (tables.asof), empty
  when the key had no row yet;
- ``counts[counter]``: events of the counter's stream with the same key in
  [ts - window, ts) (features.counters): the event itself and its future are
  never counted.

Which key each lookup and counter reads, and the call of the features
function, are ``features.event_features``'s: the server scores an event with
the same function, reading the same tables and counters from the online store.

``observe(event)`` feeds the counters with every event of the inputs, as it
arrives. The counters are the enricher's state; the tables are read once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from livelearn.errors import BadInput
from livelearn.events import Event
from livelearn.features.counters import WindowCounter
from livelearn.features.event_features import CountOf, EventFeatures, RowOf, event_key
from livelearn.join.labels import checked
from livelearn.spec import EventLabel, Pipeline
from livelearn.tables.asof import AsOfTable


class Enricher:
    """Builds the samples of one label-in-event pipeline."""

    def __init__(self, pipeline: Pipeline, data_dir: str | Path = "."):
        if not isinstance(pipeline.feedback, EventLabel):
            raise TypeError("Enricher is for pipelines with an EventLabel")
        # the pipeline's own code: where it raises, the joiner dead-letters the event
        self.features = EventFeatures(pipeline)
        self.stream = pipeline.feedback.stream.name
        self.label = checked(_label_function(pipeline.feedback),
                             f"pipeline '{pipeline.name}': the label function")
        self.tables = {lk.table.name: AsOfTable.load(lk.table, data_dir)
                       for lk in pipeline.lookups}
        self.counters = {c.name: (c, WindowCounter(c.window_ms)) for c in pipeline.counters}
        self._by_stream = [(c.stream, c.by, counter) for c, counter in self.counters.values()]
        gets = {name: table.get for name, table in self.tables.items()}
        counts = {name: counter.count for name, (_, counter) in self.counters.items()}
        # what features.event_features reads rows and counts with, one call each
        self._row: RowOf = lambda table, key, ts: gets[table](key, ts)
        self._count: CountOf = lambda counter, key, ts: counts[counter.name](key, ts)

    def observe(self, event: Event) -> None:
        """Count an arriving event of any input in the counters that read its stream."""
        for stream, by, counter in self._by_stream:
            if stream == event.stream:
                counter.add(event_key(event, by), event.ts)

    def sample(self, event: Event) -> dict[str, Any]:
        """The sample of a labelled event, with features as of its ts."""
        return {"id": event.id, "ts": event.ts, "window_end": event.ts, "user": event.key,
                "item": None, "model_version": None, "score": None,
                "features": self.features(event, self._row, self._count),
                "labels": self.label(event), "feedback": []}

    def state(self) -> dict[str, Any]:
        return {name: counter.state() for name, (_, counter) in self.counters.items()}

    def restore(self, state: dict[str, Any]) -> None:
        for name, counter_state in state.items():
            self.counters[name][1].restore(counter_state)


def _label_function(spec: EventLabel) -> Callable[[Event], dict[str, float]]:
    if callable(spec.label):
        return spec.label
    name = spec.label

    def label(event: Event) -> dict[str, float]:
        value = event.payload[name]
        if value is None:
            raise BadInput(f"stream '{event.stream}', field 'payload.{name}': the label is null")
        return {name: float(value)}

    return label
