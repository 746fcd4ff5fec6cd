"""Impressions from a user's history become prediction records, as the server logs them.

A feedback join learns from what was served. For history that no livelearn
server served, ``livelearn ingest PIPELINE predictions FILE`` takes impression
records (``request_id``, ``ts``, ``user``, ``item``; optionally the ``score``
and ``model_version`` that were served, else 0) and builds each one's features
with the server's own function, ``pipeline.features(user_row, item_row, ts)``,
from the users and items tables as of the impression's ts (tables.asof).
Without a ``request_id`` field, it is a hash of the record's fields as read (ts in
ms, the default score and version where absent): the same impression in a CSV
row and a JSON line gets the same id, other fields aside.

The fields are checked as ingest checks an event's: ``ts`` integer ms or ISO
8601 (no zone means UTC), ``request_id``, ``user`` and ``item`` strings,
``score`` a finite float, ``model_version`` an int; text (a CSV cell) is
converted. A record with a field missing or of another type raises BadInput
naming the field, which ingest dead-letters; so does an impression of an item with
no row as of its ts (in no table, or its rows start later), as the server answers
such a candidate 422: it never serves one with an empty row. A user with no row is
a cold start, served an empty row, here as there.

A pipeline's windowed counters are counted as the server counts them
(serve.counters), in an in-memory store: from the counted feedback streams
already in the log (ingest those first: ``livelearn replay`` does), the
predictions already in it, and the impressions as they are read. Counts are
exact for an impressions file in time order; an impression that comes after
later ones in the file is not counted for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from livelearn.errors import BadInput, ConfigError, PipelineError, guarded
from livelearn.events import check_ts
from livelearn.features.hashing import unusable
from livelearn.ingest import event_time, typed_value
from livelearn.log.base import Log
from livelearn.serve.counters import ServedCounters
from livelearn.serve.limits import MAX_ID_CHARS
from livelearn.spec import PREDICTIONS, Pipeline
from livelearn.tables.asof import AsOfTable
from livelearn.tables.memory import MemoryStore


class Impressions:
    """Turns impression records into prediction records for one feedback pipeline."""

    def __init__(self, pipeline: Pipeline, data_dir: str | Path = ".", log: Log | None = None):
        if pipeline.users is None or pipeline.items is None:
            raise ConfigError(f"pipeline '{pipeline.name}': impressions need a feedback join "
                              f"with users and items tables")
        self.name = pipeline.name
        self.features = guarded(pipeline.features, f"pipeline '{pipeline.name}': the "
                                                   f"features function")
        self.users = AsOfTable.load(pipeline.users, data_dir)
        self.items = AsOfTable.load(pipeline.items, data_dir)
        # the whole history is kept: an impression may be older than the newest click
        self.served = ServedCounters(pipeline.counters, MemoryStore(retention_ms=2**53))
        if pipeline.counters and log is not None:
            self.served.add_logged(log, pipeline.schemas)

    def record(self, obj: Mapping[str, Any], now_ms: int | None = None
               ) -> tuple[str, bytes, int]:
        """The (key, value, ts) of the prediction record of one impression; BadInput naming
        the field if one is missing or of another type."""
        ts = check_ts(event_time(PREDICTIONS, obj.get("ts")), PREDICTIONS, now_ms)
        user, item = _id(obj, "user"), _id(obj, "item")
        shown = {"ts": ts, "user": user, "item": item,
                 "model_version": _field(obj, "model_version", int, 0),
                 "score": _field(obj, "score", float, 0.0)}
        # however the record spells them (a CSV row, a JSON line, a time in ISO 8601)
        rid = _field(obj, "request_id", str, None) or hashlib.blake2b(
            orjson.dumps(shown, option=orjson.OPT_SORT_KEYS), digest_size=10).hexdigest()
        item_row = self.items.get(item, ts)
        if not item_row:
            raise BadInput(self._no_row(item, ts))
        features = self.served.features(self.features, user, self.users.get(user, ts), [item],
                                        [item_row], ts)[0]
        record = {"request_id": rid, **shown, "features": features}
        try:
            problem = unusable(features)
            value = orjson.dumps(record)
        except orjson.JSONEncodeError as e:  # a numpy number, an int beyond 64 bits, ...
            problem = f"the features cannot be logged as JSON: {e}"
        if problem is not None:  # the server would not have served it either
            raise PipelineError(f"pipeline '{self.name}', request {rid!r}: {problem}")
        self.served.add_predictions([record])
        return rid, value, ts

    def _no_row(self, item: str, ts: int) -> str:
        """Why the server refuses a candidate ``item`` at ``ts`` (serve.tables): it is in no
        table, or its rows start later."""
        where = f"stream '{PREDICTIONS}', field 'item': item {item!r}"
        refused = "(the server refuses it: 422)"
        if item not in self.items:
            return f"{where} is not in table '{self.items.name}' {refused}"
        return (f"{where} has no row in table '{self.items.name}' as of ts {ts} (ms): its "
                f"rows start later {refused}")


_MISSING = object()


def _id(obj: Mapping[str, Any], name: str) -> str:
    """The user or item id of an impression; BadInput where /predict would refuse it (422):
    longer than ``MAX_ID_CHARS``, a sample of a user or item it never serves."""
    value: str = _field(obj, name, str)
    if len(value) > MAX_ID_CHARS:
        raise BadInput(f"stream '{PREDICTIONS}', field '{name}': {len(value)} characters, more "
                       f"than the {MAX_ID_CHARS} /predict takes (the server refuses it: 422)")
    return value


def _field(obj: Mapping[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """A field as ``kind``, text converted as ingest converts a CSV cell; ``default`` if
    the field is absent or empty, BadInput if there is no default."""
    value = obj.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise BadInput(f"stream '{PREDICTIONS}', field '{name}': missing "
                           f"(expected {kind.__name__})")
        return default
    return typed_value(PREDICTIONS, name, kind, value, typed=False)
