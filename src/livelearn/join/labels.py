"""Labels declared as aggregates, so that every join engine can compute them.

A label function in Python serves the embedded joiner but cannot become Flink SQL.
``Labels`` is both: called with a window's events it gives the labels (so it is a
``FeedbackJoin.label``), and join.flink compiles each ``Agg`` to a SQL aggregate.

>>> from livelearn.events import Event
>>> labels = Labels(Agg("clicked", "any", "click"), Agg("dwell_s", "sum", "read", "seconds"))
>>> labels([Event("read", "u1", "r1", 1, {"request_id": "q", "seconds": 2.5})])
{'clicked': 0.0, 'dwell_s': 2.5}

An aggregate over no event is 0.0 (``any``, ``count``, ``sum``, ``max`` and ``min``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livelearn.errors import ConfigError, PipelineError, guarded
from livelearn.events import Event, show

#: How an aggregate combines the values of its stream's events in the window.
HOWS = ("any", "count", "sum", "max", "min")


@dataclass(frozen=True)
class Agg:
    """The label ``name``: ``how`` over the events of ``stream`` (their payload ``field``).

    ``any``: 1.0 if the window has an event of the stream, else 0.0; ``count``: how
    many; ``sum``, ``max``, ``min``: of the field's values as floats (0.0 for none).
    """

    name: str
    how: str
    stream: str
    field: str | None = None

    def __post_init__(self) -> None:
        if self.how not in HOWS:
            raise ConfigError(f"label '{self.name}': how must be one of {', '.join(HOWS)}, "
                              f"got {self.how!r}")
        if (self.field is None) != (self.how in ("any", "count")):
            raise ConfigError(f"label '{self.name}': '{self.how}' "
                              + ("takes no field" if self.field else "needs a payload field"))

    def of(self, events: Sequence[Event]) -> float:
        mine = [e for e in events if e.stream == self.stream]
        if self.how == "any":
            return float(bool(mine))
        if self.how == "count":
            return float(len(mine))
        values = [float(e.payload[self.field]) for e in mine]  # type: ignore[index]
        if not values:
            return 0.0
        if self.how == "sum":
            return sum(values)
        return max(values) if self.how == "max" else min(values)


class Labels:
    """A label function made of aggregates, in the order given."""

    def __init__(self, *aggs: Agg):
        if len({a.name for a in aggs}) != len(aggs):
            raise ConfigError("labels: two aggregates have the same name")
        self.aggs = aggs

    def __call__(self, events: Sequence[Event]) -> dict[str, float]:
        return {a.name: a.of(events) for a in self.aggs}

    def __repr__(self) -> str:
        return f"Labels{self.aggs!r}"


#: The demo's label function (livelearn.sim.pipeline.label), declared.
DEMO_LABELS = Labels(Agg("clicked", "any", "click"), Agg("dwell_s", "sum", "read", "seconds"))
#: Python label functions known to equal a declaration, until their specs declare it.
_KNOWN = {"livelearn.sim.pipeline.label": DEMO_LABELS}


def checked(label: Callable[[Any], dict[str, float]], what: str
            ) -> Callable[[Any], dict[str, float]]:
    """``label`` (the pipeline's own code) guarded as errors.guarded does, and raising
    PipelineError naming ``what`` where it returns anything but a dict: the joiner then
    dead-letters the sample as ``failed``, as for features, where the trainer took it
    and said only "TypeError: 'float' object is not subscriptable"."""
    call = guarded(label, what)

    def labels(arg: Any) -> dict[str, float]:
        value = call(arg)
        if not isinstance(value, dict):
            raise PipelineError(f"{what} returned {show(value)}; expected a dict of label "
                                f"names to values")
        return value

    return labels


def declared(label: Callable[[Sequence[Event]], dict[str, float]]) -> Labels:
    """The declaration of a label function; ConfigError if it has none."""
    if isinstance(label, Labels):
        return label
    name = f"{getattr(label, '__module__', '')}.{getattr(label, '__qualname__', '')}"
    if name in _KNOWN:
        return _KNOWN[name]
    raise ConfigError(f"label function {name}: a Flink join needs labels declared as "
                      "livelearn.join.labels.Labels(Agg(...), ...), not Python code")
