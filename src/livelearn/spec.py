"""The pipeline spec: streams, tables, the feedback join, features, the learner, policies.

A Pipeline is plain data plus a few functions. Every role reads the same spec,
so the server builds exactly the features the joiner passes on and the trainer
learns. A spec with a mistake fails when it is built, naming what is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livelearn.errors import ConfigError
from livelearn.events import Event, Schema
from livelearn.features.hashing import Features
from livelearn.models.base import Learner

#: Topics every pipeline has besides its feedback streams.
PREDICTIONS, SAMPLES, DEAD_LETTERS = "predictions", "samples", "dead_letters"


@dataclass(frozen=True)
class Stream:
    """A stream of events; ``schema`` maps each payload field to its Python type."""

    name: str
    schema: Schema


@dataclass(frozen=True)
class Table:
    """An offline table: a CSV, Parquet or JSON-lines file keyed by one column.

    A relative ``path`` is resolved against the data directory given to the role.
    """

    name: str
    path: str
    key: str


@dataclass(frozen=True)
class FeedbackJoin:
    """Join each prediction at time t with its feedback events of ts in [t, t + window_ms].

    ``label`` turns those events (in ts order) into named labels, for example
    ``{"clicked": 1.0, "dwell_s": 42.0}``. ``allowed_lateness_ms`` holds the
    watermark back to wait for events that arrive out of order.
    """

    streams: Sequence[Stream]
    window_ms: int
    label: Callable[[Sequence[Event]], dict[str, float]]
    allowed_lateness_ms: int = 0


@dataclass(frozen=True)
class Policies:
    """When the trainer publishes a version, and how the gate judges it.

    A version is published every ``publish_every_samples`` samples or every
    ``publish_every_ms`` of event time, whichever comes first. The gate approves
    a candidate whose metric over the last ``gate_window`` samples is no worse
    than the incumbent's on the same samples by more than ``gate_tolerance``.
    """

    publish_every_samples: int = 5000
    publish_every_ms: int = 3_600_000
    gate_window: int = 5000
    gate_tolerance: float = 0.01


@dataclass(frozen=True)
class Pipeline:
    """A whole learning loop: what is served, what is joined, what is learned.

    ``features(user_row, item_row, ts_ms)`` builds the served features of one
    candidate; rows are dicts from the two tables (empty for an unknown key).
    ``target`` names the label the learner learns.
    """

    name: str
    feedback: FeedbackJoin
    users: Table
    items: Table
    features: Callable[[Mapping[str, Any], Mapping[str, Any], int], Features]
    learner: Callable[[], Learner]
    target: str
    policies: Policies = field(default_factory=Policies)
    partitions: int = 1

    def __post_init__(self) -> None:
        if self.feedback.window_ms < 0 or self.feedback.allowed_lateness_ms < 0:
            raise ConfigError(f"pipeline '{self.name}': window_ms and allowed_lateness_ms "
                              f"must be >= 0")
        names = [s.name for s in self.feedback.streams]
        clash = {PREDICTIONS, SAMPLES, DEAD_LETTERS} & set(names)
        if clash or len(set(names)) != len(names):
            raise ConfigError(f"pipeline '{self.name}': feedback stream names must be unique "
                              f"and not {PREDICTIONS}/{SAMPLES}/{DEAD_LETTERS}, got {names}")
        if self.partitions < 1:
            raise ConfigError(f"pipeline '{self.name}': partitions must be >= 1")

    @property
    def schemas(self) -> dict[str, Schema]:
        return {s.name: s.schema for s in self.feedback.streams}

    @property
    def topics(self) -> list[str]:
        return [PREDICTIONS, *self.schemas, SAMPLES, DEAD_LETTERS]


def load_pipeline(ref: str) -> Pipeline:
    """Load ``module:attribute`` or ``path/to/file.py[:attribute]`` (default attribute PIPELINE)."""
    target, _, attr = ref.partition(":") if not ref.endswith(".py") else (ref, "", "")
    if target.endswith(".py") or Path(target).is_file():
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"pipeline {ref!r}: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"_livelearn_pipeline_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"pipeline {ref!r}: cannot import {target!r} ({e})") from None
    obj = getattr(module, attr or "PIPELINE", None)
    if callable(obj) and not isinstance(obj, Pipeline):
        obj = obj()
    if not isinstance(obj, Pipeline):
        raise ConfigError(f"pipeline {ref!r}: {attr or 'PIPELINE'} is not a livelearn Pipeline")
    return obj
