"""Where a label-in-event server scores an event: its features as the joiner builds them.

``POST /predict`` of a pipeline whose label is in the events takes events of
the labelled stream without their label, flat as ``livelearn ingest`` reads a
JSON line: ``{"events": [{"card": "c1", "merchant": "m1", "amount": 42.5}]}``
for examples/fraud. Each event has the stream's key field and every field of
its schema but the label, of its declared type (a float takes an integer); it
may have the stream's id field (a new id when absent) and its ts field (integer
ms since the epoch UTC, or ISO 8601 text, at most 5 minutes ahead; now when
absent), and other fields, which reach the features function in the payload as
they would from the log. An event that gives its label field is refused: the
score must not depend on what it predicts (send labelled events to /feedback).

Its features are ``features.event_features``'s, the joiner's own function, fed
from the online store: each lookup's row as of the event's ts (serve.tables;
an unknown key is an empty row, as in the joiner) and each counter's events in
[ts - window, ts) (serve.counters). The joiner counts the events of the log as
it reads them, the server as they are logged (/feedback) or within a poll of
being appended by another producer, so the two see the same counts once the
server has caught up with the log, but for two kinds of event
(docs/own-data.md): a labelled event the joiner dead-letters as late is counted
by the server only; an event of a counted stream that comes behind the joiner's
watermark is counted by the joiner only for the samples it emits after it. Both
count an id once (the joiner dead-letters a copy as a duplicate).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from livelearn.errors import BadInput
from livelearn.events import Event, show
from livelearn.features.event_features import EventFeatures
from livelearn.features.hashing import Features
from livelearn.ingest import to_event
from livelearn.serve.counters import ServedCounters
from livelearn.serve.tables import ServedTables
from livelearn.spec import EventLabel, Pipeline


class EventScorer:
    """Turns the events of a /predict request into events of the labelled stream, and
    each event into its features as of its ts."""

    def __init__(self, pipeline: Pipeline, tables: ServedTables, counters: ServedCounters):
        if not isinstance(pipeline.feedback, EventLabel):
            raise TypeError("EventScorer is for pipelines with an EventLabel")
        stream = pipeline.feedback.stream
        label = pipeline.feedback.label
        self.label = label if isinstance(label, str) else None
        schema = {k: v for k, v in stream.schema.items() if k != self.label}
        self.stream = dataclasses.replace(stream, schema=schema)
        self.tables, self.counters = tables, counters
        self.features = EventFeatures(pipeline)

    def event(self, obj: Any, where: str, now_ms: int) -> Event:
        """The event a request gave (``where``: its place, ``events.3``); BadInput (422)
        naming the field where it is not one of the stream."""
        stream = self.stream
        if not isinstance(obj, Mapping):
            raise BadInput(f"field '{where}': expected an object (an event of stream "
                           f"'{stream.name}'), got {show(obj)}")
        if self.label is not None and self.label in obj:
            raise BadInput(f"field '{where}.{self.label}': the label of stream "
                           f"'{stream.name}' is what /predict predicts: leave it out (send "
                           f"labelled events to /feedback)")
        if isinstance(obj.get("payload"), dict) and "payload" not in stream.schema:
            raise BadInput(f"field '{where}.payload': /predict takes an event's fields "
                           f"flat, as `livelearn ingest` reads a JSON line: "
                           f"{{{', '.join(repr(f) for f in (stream.key, *stream.schema))}, "
                           f"...}}")
        flat = dict(obj)
        if flat.get(stream.ts) is None:
            flat[stream.ts] = now_ms
        if stream.id is not None and flat.get(stream.id) is None:
            flat[stream.id] = uuid.uuid4().hex
        try:
            return to_event(stream, orjson.dumps(flat), now_ms)
        except TypeError as e:  # orjson: an integer beyond 64 bits, say
            raise BadInput(f"field '{where}': cannot be read as JSON: {e}") from None
        except BadInput as e:
            raise BadInput(f"field '{where}': {e}") from None

    def row_features(self, event: Event) -> Features:
        """The event's features as of its ts, from the store's rows and counts."""
        return self.features(event, self.tables.row, self.counters.count)
