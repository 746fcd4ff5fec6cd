"""The checks a Pipeline passes when it is built: every message names the stream,
the field and the problem, so a spec with a mistake fails at load time."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from livelearn.errors import ConfigError
from livelearn.events import MAX_TS_MS, show
from livelearn.features.transforms import FeatureSet

if TYPE_CHECKING:
    from livelearn.spec import EventLabel, Pipeline, Stream


#: What a name of a pipeline is made of (a folder's name, a Kafka topic's).
PLAIN_NAME = "letters a-z and A-Z, digits, _, - and . (not . nor ..)"
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


def is_plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(_PLAIN.fullmatch(name)) and name not in (".", "..")


def check_pipeline(p: Pipeline) -> None:
    """Raise ConfigError for the first mistake in ``p``."""
    from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, EventLabel

    if not is_plain_name(p.name):
        raise ConfigError(f"pipeline {p.name!r}: a name is {PLAIN_NAME}: it names the work "
                          f"folder, livelearn-NAME, and the registry's pipeline")
    where = f"pipeline '{p.name}'"
    _check_parts(p)
    for name in ("window_ms", "allowed_lateness_ms"):
        _check_ms(where, name, getattr(p.feedback, name), 0)
    names = [s.name for s in p.feedback.streams]
    clash = {PREDICTIONS, SAMPLES, DEAD_LETTERS} & set(names)
    if clash or len(set(names)) != len(names):
        raise ConfigError(f"{where}: stream names must be unique and not "
                          f"{PREDICTIONS}/{SAMPLES}/{DEAD_LETTERS}, got {names}")
    if type(p.partitions) is not int or p.partitions < 1:
        raise ConfigError(f"{where}: partitions must be an integer >= 1, got {p.partitions!r}")
    _check_policies(where, p)
    for name in ("features", "learner"):
        if not callable(getattr(p, name)):
            raise ConfigError(f"{where}: {name} must be a function")
    _check_calls(p)
    if p.transforms is not None and not isinstance(p.transforms, FeatureSet):
        raise ConfigError(f"{where}: transforms must be a FeatureSet (features.transforms: "
                          f"FeatureSet([Categorical(...), Numeric(...), ...])), got "
                          f"{type(p.transforms).__name__}")
    if isinstance(p.feedback, EventLabel):
        if p.users is not None or p.items is not None:
            raise ConfigError(f"{where}: users and items are a feedback join's tables (its "
                              f"server scores a user's candidate items); a label in the "
                              f"events reads its tables as of each event through lookups="
                              f"(spec.Lookup(table, on=FIELD), ...)")
        _check_event_label(p, p.feedback)
    elif p.users is None or p.items is None:
        raise ConfigError(f"{where}: a feedback join needs users and items tables "
                          f"(the server looks candidates up in them)")
    elif p.lookups:
        raise ConfigError(f"{where}: lookups are for an EventLabel pipeline; a feedback "
                          f"join's server reads the users and items tables")
    elif p.users.name == p.items.name:
        raise ConfigError(f"{where}: the users and items tables are both named "
                          f"'{p.users.name}' (the server keeps each table under its name in "
                          f"the online store); give each its own")
    else:
        _check_served_counters(p)
        _check_declared_labels(p)


def _check_parts(p: Pipeline) -> None:
    """ConfigError naming a part of the spec of the wrong type, before anything reads it:
    a tuple of one without its comma, a name where an object belongs. Before, a TypeError
    or an AttributeError named no field ("'WindowCount' object is not iterable")."""
    from livelearn.spec import (
        EventLabel,
        FeedbackJoin,
        Lookup,
        Policies,
        Stream,
        Table,
        WindowCount,
    )

    where = f"pipeline '{p.name}'"
    if isinstance(p.feedback, EventLabel):
        _check_is(where, "the EventLabel's stream", p.feedback.stream, Stream)
        _check_all(where, "the EventLabel's counted", p.feedback.counted, Stream)
    elif isinstance(p.feedback, FeedbackJoin):
        _check_all(where, "the FeedbackJoin's streams", p.feedback.streams, Stream)
        if not p.feedback.streams:
            raise ConfigError(f"{where}: the FeedbackJoin has no streams: each prediction is "
                              f"labelled from the events of its streams that answer it "
                              f"(clicks), so it needs one at least")
    else:
        raise ConfigError(f"{where}: feedback must be a spec.FeedbackJoin or a spec.EventLabel, "
                          f"got {type(p.feedback).__name__}")
    for name in ("users", "items"):
        if getattr(p, name) is not None:
            _check_is(where, name, getattr(p, name), Table)
    _check_all(where, "lookups", p.lookups, Lookup)
    for lookup in p.lookups:
        _check_is(where, "the table of a Lookup", lookup.table, Table)
    _check_all(where, "counters", p.counters, WindowCount)
    for c in p.counters:
        if isinstance(c.stream, Stream):
            raise ConfigError(f"counter '{c.name}': stream must be a stream's name (text), got "
                              f"the Stream '{c.stream.name}': give '{c.stream.name}'")
    _check_is(where, "policies", p.policies, Policies)
    if type(p.target) is not str or not p.target:
        raise ConfigError(f"{where}: target must be the name of a label (text), got "
                          f"{p.target!r}")


def _check_is(where: str, what: str, value: object, cls: type) -> None:
    if not isinstance(value, cls):
        raise ConfigError(f"{where}: {what} must be a spec.{cls.__name__}, got {show(value)} "
                          f"({type(value).__name__})")


def _check_all(where: str, what: str, values: object, cls: type) -> None:
    """ConfigError unless ``values`` is a tuple (or a list) of ``cls``."""
    expected = f"{where}: {what} must be a tuple of spec.{cls.__name__}, got"
    if isinstance(values, cls):
        raise ConfigError(f"{expected} one {cls.__name__}: a tuple of one is written with a "
                          f"comma, (x,)")
    if not isinstance(values, (tuple, list)):
        raise ConfigError(f"{expected} {show(values)} ({type(values).__name__})")
    for value in values:
        if not isinstance(value, cls):
            raise ConfigError(f"{expected} {show(value)} ({type(value).__name__}) among them")


def _check_policies(where: str, p: Pipeline) -> None:
    from livelearn.spec import GATE_MIN_SAMPLES

    policies = p.policies
    for name in ("publish_every_samples", "publish_every_ms", "gate_window", "keep_versions",
                 "canary_samples"):
        value = getattr(policies, name)
        if type(value) is not int or value < 1:
            raise ConfigError(f"{where}, policies: {name} must be an integer >= 1, "
                              f"got {value!r}")
    if policies.gate_window < GATE_MIN_SAMPLES:  # its candidates could never be judged
        raise ConfigError(f"{where}, policies: gate_window must be at least "
                          f"{GATE_MIN_SAMPLES}, the samples the gate needs to judge a "
                          f"candidate, got {policies.gate_window}")
    tolerance = policies.gate_tolerance  # in the metric's units (AUC, MAE)
    if type(tolerance) not in (int, float) or not 0 <= tolerance < float("inf"):
        raise ConfigError(f"{where}, policies: gate_tolerance must be a number >= 0, "
                          f"got {policies.gate_tolerance!r}")
    share = policies.canary_share
    if type(share) not in (int, float) or not 0 <= share < 1:
        raise ConfigError(f"{where}, policies: canary_share must be a number in [0, 1) (the "
                          f"share of the users: 0.05 for 5%), got {share!r}")
    if share:
        _check_canary_share(where, share, policies.canary_samples)
    if share and (p.users is None or p.items is None):
        raise ConfigError(f"{where}, policies: canary_share is for a feedback join, whose "
                          f"samples carry the scores the servers logged: a label-in-event "
                          f"server logs no scores, so the gate could not judge a canary by "
                          f"them; leave canary_share at 0")


def _check_canary_share(where: str, share: float, canary_samples: int) -> None:
    """ConfigError if, while a canary serves the most samples the gate keeps of it, the
    incumbent serves fewer than the gate needs to judge the canary by: it would never be."""
    from livelearn.spec import GATE_LIVE_WINDOW, GATE_MIN_SAMPLES

    window = max(GATE_LIVE_WINDOW, canary_samples)
    theirs = window * (1 - share) / share
    if theirs < GATE_MIN_SAMPLES:
        most = math.floor(100 * window / (window + GATE_MIN_SAMPLES)) / 100
        raise ConfigError(f"{where}, policies: canary_share {share:g} leaves the incumbent "
                          f"too few users: while a canary serves the {window} samples the "
                          f"gate keeps of it, the incumbent serves about {theirs:.0f}, and "
                          f"the gate needs {GATE_MIN_SAMPLES} to judge the canary by: "
                          f"give a share of at most {most:g}")


def _check_event_label(p: Pipeline, label: EventLabel) -> None:
    stream = label.stream
    _check_ms(f"stream '{stream.name}'", "dedup_ms", label.dedup_ms, 0)
    if isinstance(label.label, str):
        _check_field(stream, label.label, "the label")
        if label.label != p.target:
            raise ConfigError(f"pipeline '{p.name}': target '{p.target}' is not a label; "
                              f"stream '{stream.name}' gives the label '{label.label}'")
        if stream.schema[label.label] not in (int, float, bool):
            raise ConfigError(f"stream '{stream.name}', field '{label.label}': the label "
                              f"must be int, float or bool, got "
                              f"{stream.schema[label.label].__name__}")
    elif not callable(label.label):
        raise ConfigError(f"stream '{stream.name}': label must be a payload field name or "
                          f"a function of the event")
    tables = [lk.table.name for lk in p.lookups]
    if len(set(tables)) != len(tables):
        raise ConfigError(f"pipeline '{p.name}': each table may be looked up once, "
                          f"got {tables}")
    for lk in p.lookups:
        if lk.on is not None:
            _check_field(stream, lk.on, f"lookup of table '{lk.table.name}'")
            kind = stream.schema[lk.on]
            if kind not in (str, int):  # str(1.0) or str(True) is no table's key
                raise ConfigError(f"stream '{stream.name}', field '{lk.on}': the lookup of "
                                  f"table '{lk.table.name}' reads it as a key, text or an "
                                  f"integer, but it is {kind.__name__}")
    _check_counters(p)


def _check_counters(p: Pipeline) -> None:
    streams = p.streams
    _check_counter_basics(p, list(streams))
    for c in p.counters:
        if c.of is not None:
            raise ConfigError(f"counter '{c.name}': 'of' is for a feedback join's served "
                              f"counters; the joiner asks for the labelled event's key or 'by'")
        if c.by is not None:
            _check_field(streams[c.stream], c.by, f"counter '{c.name}'")
            labelled = p.feedback.streams[0]
            _check_field(labelled, c.by, f"counter '{c.name}' (the value it is asked for)")


def _check_served_counters(p: Pipeline) -> None:
    from livelearn.spec import PREDICTIONS

    streams = p.streams
    _check_counter_basics(p, [PREDICTIONS, *streams])
    for c in p.counters:
        if c.of not in ("user", "item"):
            raise ConfigError(f"counter '{c.name}': 'of' must be 'user' or 'item' (whose count "
                              f"the server asks for), got {c.of!r}")
        if c.stream == PREDICTIONS and c.by not in ("user", "item"):
            raise ConfigError(f"counter '{c.name}': counting '{PREDICTIONS}', 'by' must be "
                              f"'user' or 'item', got {c.by!r}")
        if c.stream != PREDICTIONS and c.by is not None:
            _check_field(streams[c.stream], c.by, f"counter '{c.name}'")


def _check_declared_labels(p: Pipeline) -> None:
    """A feedback join's labels declared (join.labels.Labels) name the target: else
    every sample was dead-lettered by the trainer, which learned none."""
    from livelearn.join.labels import Labels

    label = p.feedback.label
    if isinstance(label, Labels) and p.target not in [a.name for a in label.aggs]:
        raise ConfigError(f"pipeline '{p.name}': target '{p.target}' is not a label; the "
                          f"labels declared are {', '.join(a.name for a in label.aggs)}")


def _check_counter_basics(p: Pipeline, streams: list[str]) -> None:
    names = [c.name for c in p.counters]
    if len(set(names)) != len(names):
        raise ConfigError(f"pipeline '{p.name}': counter names must be unique, got {names}")
    for c in p.counters:
        if c.stream not in streams:
            raise ConfigError(f"counter '{c.name}': stream '{c.stream}' is not a stream of "
                              f"pipeline '{p.name}' (streams: {', '.join(streams)})")
        _check_ms(f"counter '{c.name}'", "window_ms", c.window_ms, 1)


def _check_calls(p: Pipeline) -> None:
    """ConfigError unless ``features`` and the label function take the arguments the roles
    pass them: else every event was dead-lettered 'failed' on a TypeError, every request
    answered 500."""
    from livelearn.spec import EventLabel

    where = f"pipeline '{p.name}'"
    if isinstance(p.feedback, EventLabel):
        _check_takes(f"{where}: the joiner and the server call", "features", p.features,
                     "event, rows, counts")
        if callable(p.feedback.label):
            _check_takes(f"stream '{p.feedback.stream.name}': the joiner calls", "label",
                         p.feedback.label, "event")
        return
    if p.counters:
        _check_takes(f"{where}: with counters the server calls", "features", p.features,
                     "user_row, item_row, ts, counts")
    else:
        _check_takes(f"{where}: without counters the server calls", "features", p.features,
                     "user_row, item_row, ts")
    label = p.feedback.label
    if not callable(label):
        raise ConfigError(f"{where}: label must be a function of a window's events giving "
                          f"named labels (or join.labels.Labels), got {label!r}")
    _check_takes(f"{where}: the joiner calls", "label", label, "events",
                 " with a window's events")


def _check_takes(who_calls: str, name: str, function: Callable[..., object], args: str,
                 how: str = "") -> None:
    """ConfigError unless ``function``, the pipeline's ``name``, can be called with the
    positional arguments ``args`` (one whose signature Python cannot tell is taken)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*[None] * len(args.split(",")))
    except TypeError:
        takes = ", ".join(str(a.replace(annotation=inspect.Parameter.empty))
                          for a in signature.parameters.values())
        raise ConfigError(f"{who_calls} {name}({args}){how}, but {name} takes "
                          f"({takes})") from None


def _check_ms(where: str, name: str, value: object, least: int) -> None:
    """ConfigError unless ``value`` is an int of milliseconds >= ``least`` (not a float, a
    bool or text: "3600000" failed the comparison with a TypeError naming no field, and 0.5
    or NaN passed it), and at most MAX_TS_MS, the year 9999: a time plus or minus a longer
    one left 64 bits, and the joiner stopped with a traceback at its first checkpoint
    (10**30 ms: microseconds or nanoseconds by mistake). Not for publish_every_ms, which
    no time is added to: 10**15 is a natural "never"."""
    if type(value) is not int or value < least:
        raise ConfigError(f"{where}: {name} must be an integer number of milliseconds "
                          f">= {least}, got {value!r}")
    if value > MAX_TS_MS:
        raise ConfigError(f"{where}: {name} {value} ms is longer than any event time (at most "
                          f"{MAX_TS_MS}, the year 9999 since the epoch): microseconds or "
                          f"nanoseconds?")


def _check_field(stream: Stream, name: str, user: str) -> None:
    if name not in stream.schema:
        raise ConfigError(f"stream '{stream.name}', field '{name}': {user} reads it, but it "
                          f"is not in the schema (fields: {', '.join(stream.schema) or 'none'})")
