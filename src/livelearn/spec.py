"""The pipeline spec: streams, tables, the feedback join, features, the learner, policies.

A Pipeline is plain data plus a few functions. Every role reads the same spec,
so the server builds exactly the features the joiner passes on and the trainer
learns. A spec with a mistake fails when it is built, naming the stream, the
field and the problem.

Two kinds of label:

- ``FeedbackJoin``: the server logs what it predicted; feedback events (clicks,
  reads) join with each prediction within a window. The server builds the
  features, ``features(user_row, item_row, ts)``, or with ``counters``
  ``features(user_row, item_row, ts, counts)`` (see serve.counters).
- ``EventLabel``: each event of one stream carries its own label (a rating, a
  chargeback) and goes through the same joiner with a window of zero. The joiner
  builds the features, ``features(event, rows, counts)``: ``rows`` are the
  ``lookups``' table rows as of the event's ts, ``counts`` the ``counters`` as of
  it (see join.enrich). Nothing from the event's future is ever seen.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from livelearn.errors import ConfigError, LivelearnError, missing_extra
from livelearn.events import Event, Schema, show
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import Features, hash_rows
from livelearn.features.transforms import FeatureSet
from livelearn.models.base import LEARNERS, Learner

#: The start of the names of livelearn's own tables in the online store (serve.tables).
RESERVED_PREFIX = "livelearn:"
#: Topics every pipeline has besides its feedback streams.
PREDICTIONS, SAMPLES, DEAD_LETTERS = "predictions", "samples", "dead_letters"
#: The types a schema may declare for a payload field.
FIELD_TYPES = (str, int, float, bool, dict, list)
#: File types an offline table may be read from.
TABLE_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl", ".ndjson")
#: The fewest samples the gate judges a candidate (or a canary's incumbent) by.
GATE_MIN_SAMPLES = 200
#: The most recent samples the gate keeps of each version that served (or serves a canary).
GATE_LIVE_WINDOW = 10_000


@dataclass(frozen=True)
class Stream:
    """A stream of events; ``schema`` maps each payload field to its Python type.

    ``key``, ``ts`` and ``id`` name the fields of a flat input record (a CSV row,
    a JSON object without ``payload``) that hold the event's key, its time
    (milliseconds since the epoch UTC, or ISO 8601) and its id. Without an id
    field, an ingested event's id is a hash of its record (see livelearn.ingest).
    """

    name: str
    schema: Schema
    key: str = "key"
    ts: str = "ts"
    id: str | None = None

    def __post_init__(self) -> None:
        from livelearn.spec_checks import PLAIN_NAME, is_plain_name

        if not is_plain_name(self.name):
            raise ConfigError(f"stream {self.name!r}: a name is {PLAIN_NAME}, as a Kafka "
                              f"topic's")
        if not isinstance(self.schema, Mapping):
            raise ConfigError(f"stream '{self.name}': schema must be a dict of field names to "
                              f"types ({{'amount': float}}), got {show(self.schema)} "
                              f"({type(self.schema).__name__})")
        for name, kind in self.schema.items():
            if kind not in FIELD_TYPES:
                raise ConfigError(f"stream '{self.name}', field '{name}': type must be one of "
                                  f"{', '.join(t.__name__ for t in FIELD_TYPES)}, got {kind!r}")
        # a flat record's time and id are taken out of its payload; a payload object in it
        # makes it an envelope (livelearn.ingest)
        if self.id is not None and self.id == self.key:
            raise ConfigError(f"stream '{self.name}': key and id name the same field "
                              f"'{self.key}'; an id tells events apart, a key groups them")
        for other, what in ((self.key, "key"), (self.id, "id")):
            if other == self.ts:  # the key, or the id, would be the event's time
                raise ConfigError(f"stream '{self.name}': {what} and ts name the same field "
                                  f"'{self.ts}'; ts is the event's time, the {what} "
                                  f"another field")
        for taken, what in ((self.ts, "time (ts)"), (self.id, "id")):
            if taken in self.schema:
                raise ConfigError(f"stream '{self.name}', field '{taken}': the event's {what}, "
                                  f"not a payload field; leave it out of the schema")
        if self.schema.get("payload") is dict:
            raise ConfigError(f"stream '{self.name}', field 'payload': an object named so "
                              f"makes a record an envelope (stream, key, id, ts, payload); "
                              f"rename the field")


@dataclass(frozen=True)
class Table:
    """An offline table: a CSV, Parquet or JSON (lines or an array) file keyed by one column.

    A relative ``path`` is resolved against the data directory given to the role.
    With ``as_of`` (a column of milliseconds since the epoch UTC, ISO 8601 text or
    timestamps, no zone meaning UTC; the rows hold it as ms), a key may have many
    rows and a lookup at time t sees the row with the largest ``as_of`` <= t,
    never a later one; without it the table is static, one row per key.
    """

    name: str
    path: str
    key: str
    as_of: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith(RESERVED_PREFIX):
            raise ConfigError(f"table {self.name!r}: expected a name, not empty nor starting "
                              f"with '{RESERVED_PREFIX}' (the server's own tables in the "
                              f"online store are named so)")
        if Path(self.path).suffix.lower() not in TABLE_SUFFIXES:
            raise ConfigError(f"table '{self.name}': {self.path} is not one of "
                              f"{', '.join(TABLE_SUFFIXES)}")
        glob = sorted(set("*?[") & set(self.path))
        if glob:  # DuckDB reads every file the pattern matches: c[a]rds.csv reads cards.csv
            raise ConfigError(f"table '{self.name}': {self.path} holds {' and '.join(glob)}, "
                              f"which DuckDB reads as a pattern of file names; rename the "
                              f"file or its folder")


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
class EventLabel:
    """Each event of ``stream`` is one sample, labelled from its own payload (window 0).

    ``label`` is a payload field (its value, as a float, is the label of that
    name) or a function of the event giving named labels. ``counted`` are other
    streams read only to feed ``Pipeline.counters``, each event id once (a copy is
    a duplicate while the watermark has not passed its ts by the longest window of
    the stream's counters, as the server counts an id once). An event id is remembered
    for ``dedup_ms`` of event time after its ts, to dead-letter a second copy as
    a duplicate (the joiner's memory holds the ids of that span; its checkpoint
    does not: a restarted joiner reads them again from the log).
    """

    stream: Stream
    label: str | Callable[[Event], dict[str, float]]
    counted: Sequence[Stream] = ()
    allowed_lateness_ms: int = 0
    dedup_ms: int = 3_600_000
    window_ms: int = field(default=0, init=False)

    @property
    def streams(self) -> tuple[Stream, ...]:
        return (self.stream, *self.counted)


@dataclass(frozen=True)
class Lookup:
    """Enrich an event with the row of ``table`` whose key is the event's key, or
    the payload field ``on``; the row as of the event's ts (empty when none)."""

    table: Table
    on: str | None = None


@dataclass(frozen=True)
class WindowCount:
    """How many events of ``stream`` with the same key (or payload field ``by``)
    came in the ``window_ms`` before a time t: ts in [t - window_ms, t).

    With an ``EventLabel``, the joiner asks for the count of each labelled
    event's key (or its field ``by``) as of its ts. With a ``FeedbackJoin``,
    the servers keep the counter in the online store and ask, as of the
    request's ts, for the count of the candidate's ``of`` id ("user" or
    "item"); ``stream`` is a feedback stream (counted by its key or field
    ``by``) or ``predictions``, what was served (``by`` "user" or "item").
    "Clicks on this item in the last hour", for clicks that carry the item::

        WindowCount("item_clicks_1h", "clicks", 3_600_000, by="item", of="item")
    """

    name: str
    stream: str
    window_ms: int
    by: str | None = None
    of: str | None = None


@dataclass(frozen=True)
class Policies:
    """When the trainer publishes a version, and how the gate judges it.

    A version is published every ``publish_every_samples`` samples or every
    ``publish_every_ms`` of event time, whichever comes first. The gate approves
    a candidate whose metric over the last ``gate_window`` samples is no worse
    than the incumbent's on the same samples by more than ``gate_tolerance`` (>= 0);
    the first candidate, with nothing to compare with, is approved. It needs
    ``GATE_MIN_SAMPLES`` (200) the incumbent never learned, so ``gate_window`` is at
    least that.
    Besides the model files of candidates and of the version served (or about to
    be), the Registry keeps those of the ``keep_versions`` newest others (what a
    rollback goes back to); older files are deleted (the gate does it), their
    rows, lineage and decisions stay.

    With ``canary_share`` above 0 (a pipeline whose server serves), a candidate
    that passes is first a canary: the servers score that share of the users
    with it (by a hash of the user id, so a user stays with one version) until
    it has served ``canary_samples`` joined samples; the gate then approves it if
    its live metric on them is no worse than the incumbent's on the samples it
    served meanwhile by more than ``gate_tolerance``, and rejects it otherwise. A
    share that leaves the incumbent too few samples beside the canary's (near 1) is
    refused; a canary that cannot be judged all the same (few users, all on one
    side) is rejected, saying so (deploy/gate.py).
    Candidates published meanwhile wait; the newest is judged next, the older
    ones retired unjudged.
    """

    publish_every_samples: int = 5000
    publish_every_ms: int = 3_600_000
    gate_window: int = 5000
    gate_tolerance: float = 0.01
    keep_versions: int = 50
    canary_share: float = 0.0
    canary_samples: int = 1000


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """A whole learning loop: what is served, what is joined, what is learned.

    With a ``FeedbackJoin``, ``features(user_row, item_row, ts_ms)`` builds the
    served features of one candidate; rows are dicts from the ``users`` and
    ``items`` tables (empty for an unknown key); with ``counters`` it takes
    their counts too, ``features(user_row, item_row, ts_ms, counts)``. With an ``EventLabel``,
    ``features(event, rows, counts)`` builds a sample's features (module
    docstring). ``target`` names the label the learner learns; ``learner()`` makes a
    fresh, untrained one, called by each role that learns (through ``new_learner``).
    ``transforms``, a ``features.transforms.FeatureSet``, declares how the features
    reach the learner (one-hot, numeric, buckets, crosses; FFM's fields); by default
    each is hashed by its name and value. Samples carry the features as built
    either way.
    """

    name: str
    feedback: FeedbackJoin | EventLabel
    features: Callable[..., Features]
    learner: Callable[[], Learner]
    target: str
    users: Table | None = None
    items: Table | None = None
    lookups: Sequence[Lookup] = ()
    counters: Sequence[WindowCount] = ()
    transforms: FeatureSet | None = None
    policies: Policies = field(default_factory=Policies)
    partitions: int = 1

    def __post_init__(self) -> None:
        from livelearn.spec_checks import check_pipeline

        check_pipeline(self)

    def hash_rows(self, rows: Sequence[Features], bits: int) -> SparseBatch:
        """The learner's input from feature rows, in the trainer, the gate and the server
        alike: the declared ``transforms``, or else every feature hashed by its name and
        value (features.hashing)."""
        if self.transforms is None:
            return hash_rows(rows, bits)
        return self.transforms.hash_rows(rows, bits)

    @property
    def labelled(self) -> Stream | None:
        """The stream whose events carry their own label, if the pipeline has one."""
        return self.feedback.stream if isinstance(self.feedback, EventLabel) else None

    @property
    def schemas(self) -> dict[str, Schema]:
        return {s.name: s.schema for s in self.feedback.streams}

    @property
    def streams(self) -> dict[str, Stream]:
        return {s.name: s for s in self.feedback.streams}

    @property
    def inputs(self) -> list[str]:
        """The joiner's input topics: predictions (for a feedback join) and the streams."""
        return [*([] if self.labelled else [PREDICTIONS]), *self.schemas]

    @property
    def topics(self) -> list[str]:
        return [PREDICTIONS, *self.schemas, SAMPLES, DEAD_LETTERS]


def new_learner(pipeline: Pipeline) -> Learner:
    """A fresh learner from ``pipeline.learner()``: ConfigError naming the pipeline if
    the factory raises or returns something that is not a Learner. A LivelearnError
    it raises (a learner's own check of its parameters) goes on as it is.

    Called where a role needs one, not when the spec is built: a big model is costly.
    """
    where = f"pipeline '{pipeline.name}'"
    try:
        learner = pipeline.learner()
    except LivelearnError:
        raise
    except Exception as e:
        factory = traceback.extract_tb(e.__traceback__)[1:2]  # the line of learner() itself
        at = f" at {factory[0].filename}:{factory[0].lineno}" if factory else ""
        raise _missing(e, f"{where}: learner(){at}") or \
            ConfigError(f"{where}: learner() raised {type(e).__name__}{at}: {e}") from e
    if not isinstance(learner, Learner):
        got = "None" if learner is None else f"{show(learner)} ({type(learner).__name__})"
        raise ConfigError(f"{where}: learner() returned {got}; expected a Learner (an "
                          f"object with predict_then_learn, state and set_state: a subclass "
                          f"of livelearn.models.base.Learner, such as FTRL)")
    _check_loadable(where, learner)
    fields = getattr(learner, "n_fields", None)
    if pipeline.transforms is not None and type(fields) is int and \
            fields < pipeline.transforms.n_fields:
        raise ConfigError(f"{where}: learner() returned a {type(learner).__name__} with "
                          f"n_fields={fields}, but the transforms make "
                          f"{pipeline.transforms.n_fields} fields (the bias and one per "
                          f"transform): give it n_fields={pipeline.transforms.n_fields}")
    return learner


def _check_loadable(where: str, learner: Learner) -> None:
    """ConfigError unless the roles can hash rows for ``learner`` (an integer ``bits``) and
    load its saved versions back (its class registered under its name, or a pickle)."""
    cls = type(learner)
    bits = getattr(learner, "bits", None)
    if type(bits) is not int:
        raise ConfigError(f"{where}: learner() returned a {cls.__qualname__} without an "
                          f"integer attribute 'bits' (got {show(bits)}): its rows are "
                          f"hashed into 2**bits buckets")
    name = getattr(cls, "name", None)
    registered = LEARNERS.get(name) if isinstance(name, str) else None
    if learner.pickled or registered is cls:
        return
    if registered is None:
        raise ConfigError(f"{where}: learner() returned a {cls.__qualname__}, but no learner "
                          f"class is registered as {name!r}: decorate {cls.__qualname__} with "
                          f"@livelearn.models.register, so that its saved versions can be "
                          f"loaded")
    raise ConfigError(f"{where}: learner() returned a {cls.__qualname__}, but {name!r} is "
                      f"registered as {registered.__qualname__}: give {cls.__qualname__} a "
                      f"name of its own and decorate it with @livelearn.models.register")


def load_pipeline(ref: str) -> Pipeline:
    """Load ``module:attribute`` or ``path/to/file.py[:attribute]`` (default attribute PIPELINE).

    A file that does not run (a syntax error, an import that fails, any exception)
    raises ConfigError naming the file, the line and the error.
    """
    target, _, attr = ref.partition(":") if not ref.endswith(".py") else (ref, "", "")
    path: Path | None = None
    if target.endswith(".py") or "/" in target or Path(target).is_file():  # not a module
        path = Path(target)
        if path.is_dir():
            raise ConfigError(f"pipeline {ref!r}: {path} is a folder; give the pipeline's "
                              f"Python file (.py)")
        if not path.is_file():
            raise ConfigError(f"pipeline {ref!r}: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"_livelearn_pipeline_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"pipeline {ref!r}: {path} is not a Python file (.py)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        with _reported(ref, path):
            spec.loader.exec_module(module)
    else:
        with _reported(ref, None):
            module = importlib.import_module(target)
    name = attr or "PIPELINE"
    if not hasattr(module, name):
        found = [k for k, v in vars(module).items() if isinstance(v, Pipeline)]
        also = f"; it defines {', '.join(found)}: give {target}:{found[0]}" if found else ""
        raise ConfigError(f"pipeline {ref!r}: {target} defines no {name}{also}")
    obj = getattr(module, name)
    if callable(obj) and not isinstance(obj, Pipeline):
        with _reported(ref, path):
            obj = obj()
    if not isinstance(obj, Pipeline):
        raise ConfigError(f"pipeline {ref!r}: {name} is {show(obj)} ({type(obj).__name__}), "
                          f"not a livelearn Pipeline")
    return obj


@contextmanager
def _reported(ref: str, path: Path | None) -> Iterator[None]:
    """Run a pipeline's code: a LivelearnError (a spec mistake) passes as it is, any
    other exception becomes a ConfigError naming the line it was raised at."""
    try:
        yield
    except LivelearnError:
        raise
    except Exception as e:
        raise _failed(ref, path, e) from e


def _failed(ref: str, path: Path | None, e: Exception) -> ConfigError:
    """A ConfigError naming the error and where it was raised: the innermost line of
    the pipeline's file ``path`` or, without one, of a module's top-level code."""
    if isinstance(e, SyntaxError):  # raised by the compiler: no frame of the file
        at = _at(path, e.filename or "?", e.lineno)
        return ConfigError(f"pipeline {ref!r}: {type(e).__name__} at {at}: {e.msg}")
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if _in(path, f.filename)] or \
        [f for f in frames if f.name == "<module>"]
    at = f" at {_at(path, mine[-1].filename, mine[-1].lineno)}" if mine else ""
    if isinstance(e, ModuleNotFoundError):
        return _missing(e, f"pipeline {ref!r}{at}") or \
            ConfigError(f"pipeline {ref!r}: cannot import {e.name!r}{at}: {e}")
    return ConfigError(f"pipeline {ref!r}: {type(e).__name__}{at}: {e}")


def _missing(e: Exception, what: str) -> ConfigError | None:
    """The error naming the extra to install, for an optional library not installed."""
    return missing_extra(e, what) if isinstance(e, ModuleNotFoundError) else None


def _in(path: Path | None, filename: str) -> bool:
    return path is not None and Path(filename).resolve() == path.resolve()


def _at(path: Path | None, filename: str, line: int | None) -> str:
    """"line N" of the pipeline's file ``path``, "FILE:N" of another."""
    return f"line {line}" if _in(path, filename) else f"{filename}:{line}"


def data_dir_of(ref: str) -> Path:
    """Where a pipeline's relative table paths point by default: its file's folder, or '.'."""
    target = ref if ref.endswith(".py") else ref.partition(":")[0]
    return Path(target).resolve().parent if Path(target).is_file() else Path(".")
