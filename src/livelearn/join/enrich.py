"""Where a label-in-event sample gets its features: tables and counters as of its ts.

For a pipeline with an ``EventLabel``, the joiner hands each event of the
labelled stream to ``sample(event)`` once the watermark has passed its ts, in
(ts, id) order. Its features are ``pipeline.features(event, rows, counts)``:

- ``rows[table]``: the lookup's row as of the event's ts (tables.asof), empty
  when the key had no row yet;
- ``counts[counter]``: events of the counter's stream with the same key in
  [ts - window, ts) (features.counters): the event itself and its future are
  never counted.

``observe(event)`` feeds the counters with every event of the inputs, as it
arrives. The counters are the enricher's state; the tables are read once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from livelearn.errors import BadInput, guarded
from livelearn.events import Event
from livelearn.features.counters import WindowCounter
from livelearn.spec import EventLabel, Pipeline
from livelearn.tables.asof import AsOfTable


class Enricher:
    """Builds the samples of one label-in-event pipeline."""

    def __init__(self, pipeline: Pipeline, data_dir: str | Path = "."):
        if not isinstance(pipeline.feedback, EventLabel):
            raise TypeError("Enricher is for pipelines with an EventLabel")
        # the pipeline's own code: where it raises, the joiner dead-letters the event
        self.features = guarded(pipeline.features, f"pipeline '{pipeline.name}': the "
                                                   f"features function")
        self.stream = pipeline.feedback.stream.name
        self.label = guarded(_label_function(pipeline.feedback),
                             f"pipeline '{pipeline.name}': the label function")
        self.lookups = [(lk.table.name, AsOfTable.load(lk.table, data_dir), lk.on)
                        for lk in pipeline.lookups]
        self.counters = {c.name: (c, WindowCounter(c.window_ms)) for c in pipeline.counters}
        self._by_stream = [(c.stream, c.by, counter) for c, counter in self.counters.values()]
        self._counts = [(name, c.by, counter) for name, (c, counter) in self.counters.items()]

    def observe(self, event: Event) -> None:
        """Count an arriving event of any input in the counters that read its stream."""
        for stream, by, counter in self._by_stream:
            if stream == event.stream:
                counter.add(event.key if by is None else str(event.payload[by]), event.ts)

    def sample(self, event: Event) -> dict[str, Any]:
        """The sample of a labelled event, with features as of its ts."""
        ts, payload, key = event.ts, event.payload, event.key
        rows = {}
        for name, table, on in self.lookups:
            rows[name] = table.get(key if on is None else str(payload[on]), ts)
        counts = {}
        for name, by, counter in self._counts:
            counts[name] = counter.count(key if by is None else str(payload[by]), ts)
        return {"id": event.id, "ts": ts, "window_end": ts, "user": key, "item": None,
                "model_version": None, "score": None,
                "features": self.features(event, rows, counts), "labels": self.label(event),
                "feedback": []}

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
