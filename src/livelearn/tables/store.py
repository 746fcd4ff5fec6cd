"""The online Store: feature rows with their history, and windowed counters.

The servers read entity rows (users, items) and counters from it; several
``livelearn serve`` processes share one Store by opening the same URL. Backends
are chosen by URL from ``BACKENDS``; options go in the URL's query, so the URL
alone says how a store behaves:

- ``memory://`` a private store in this process; ``memory://NAME`` is shared by
  every store opened on that name in this process (never across processes).
  Lost on restart: keep a ``snapshot()`` if it must survive.
- ``redis://HOST:PORT/DB?namespace=NAME`` keys under ``NAME:`` (default
  ``livelearn``) in a Redis server. Durability is Redis's own (RDB / AOF as the
  server is configured).

Options: ``max_versions`` (default 8) and ``retention_ms`` (default one day), each a
positive integer of at most 2**53.
Stores that share data (one memory NAME; one Redis server, db and namespace)
must be opened with the same options.

Rows. ``put_rows(table, rows, ts_ms)`` writes a version of each row valid from
``ts_ms`` (ms since the epoch, UTC); a put at a time a key already has replaces
that version. ``get_rows(table, keys, as_of_ms)`` returns, per key, the version
with the largest ts <= ``as_of_ms`` (inclusive; ``None``: the newest), and
leaves out keys that have none: a read never sees a later version. Each key
keeps its ``max_versions`` newest versions; older ones are dropped, so a read
as of a time before the oldest kept version finds no row. Values are JSON
scalars: str, int (64-bit), finite float, bool, None.
``replace_table(table, versions)`` makes a table hold exactly ``versions``
(key -> ts_ms -> row): the keys it leaves out, and the other versions of those
it holds, are deleted, in one atomic batch; of several replaces of one table at
once, from any store on the same data, one wins whole (none leaves the union).

Counters. ``add(counter, key, ts_ms, event_id)`` counts one event;
``count(counter, key, window_ms, as_of_ms)`` is the number of events of that
key with ts in [as_of_ms - window_ms, as_of_ms): exact, the event at as_of_ms
and anything later never counted, whatever order events were added in (the
joiner's counters, features.counters, mean the same). An event id is counted
once per key, so a retried batch does not count twice. A key keeps the events
within ``retention_ms`` of its newest one or of the wall clock, whichever is
earlier, as each add finds them (by the adding process's clock): an event
ahead of the clock (a client's clock minutes ahead) expires no present one, and a
history replayed from the past expires behind its own newest event. One entry
each: memory grows with the events of a retention span (the memory store
deletes expired ones once they are half a key's, so holds up to twice that);
windows longer than ``retention_ms`` are refused. A key with no event for
longer than ``retention_ms`` may vanish (Redis: after that much wall-clock
time, at least one hour; memory: that much event time behind the newest event
of any key, or behind the wall clock if that is earlier).

>>> s = open_store("memory://")
>>> s.put_rows("items", {"i1": {"price": 3}}, ts_ms=1000)
>>> s.put_rows("items", {"i1": {"price": 4}}, ts_ms=2000)
>>> s.get_rows("items", ["i1", "i2"], as_of_ms=1999), s.get_rows("items", ["i1"])
({'i1': {'price': 3}}, {'i1': {'price': 4}})
>>> s.replace_table("items", {"i2": {0: {"price": 5}}})
>>> s.get_rows("items", ["i1", "i2"])
{'i2': {'price': 5}}
>>> for ts, event in ((1_000, "e1"), (59_999, "e2"), (60_000, "e3"), (60_000, "e3")):
...     s.add("clicks", "i1", ts, event)
>>> s.count("clicks", "i1", 60_000, 60_000), s.count("clicks", "i1", 60_000, 61_000)
(2, 3)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from livelearn.backends import open_backend
from livelearn.errors import BadInput, ConfigError
from livelearn.events import is_digits

#: URL scheme -> "module:class". Adding a backend is adding a file and a line here.
BACKENDS = {"memory": "livelearn.tables.memory:MemoryStore",
            "redis": "livelearn.tables.redis:RedisStore"}

#: A JSON scalar, the only kind of value a row holds.
Value = str | int | float | bool | None
Row = dict[str, Value]
#: What ``snapshot()`` returns and ``restore()`` takes (JSON-serialisable):
#: {"format": 2, "rows": {table: {key: [[ts_ms, row], ...]}},
#:  "counters": {counter: {key: [[ts_ms, event_id], ...]}}}, oldest first.
Snapshot = dict[str, Any]
#: One counted event: (key, ts_ms, event_id).
Counted = tuple[str, int, str]

DEFAULTS = {"max_versions": 8, "retention_ms": 86_400_000}
FORMAT = 2


class Store(ABC):
    """Feature rows by (table, key) with point-in-time reads; exact windowed counters."""

    #: Names the lifetime of the data read last: it changes when the backend may have
    #: lost writes or gone back to older ones (a Redis restarted: its run_id), before
    #: anything is read from the data after. Fixed for a memory store (cleared: it is
    #: empty, as a reader sees).
    incarnation = ""

    def __init__(self, max_versions: int = 8, retention_ms: int = 86_400_000):
        self.max_versions, self.retention_ms = max_versions, retention_ms

    @abstractmethod
    def put_rows(self, table: str, rows: Mapping[str, Mapping[str, Value]], ts_ms: int) -> None:
        """Write one version of each row, valid from ``ts_ms``; one atomic batch."""

    @abstractmethod
    def replace_table(self, table: str,
                      versions: Mapping[str, Mapping[int, Mapping[str, Value]]]) -> None:
        """Make ``table`` hold exactly ``versions`` (key -> ts_ms -> row; a key's newest
        ``max_versions`` kept), its other keys and versions deleted; one atomic batch."""

    @abstractmethod
    def get_rows(self, table: str, keys: Iterable[str], as_of_ms: int | None = None
                 ) -> dict[str, Row]:
        """Per key, the version with the largest ts <= ``as_of_ms``; keys without one left out."""

    @abstractmethod
    def add_many(self, counter: str, events: Iterable[Counted]) -> None:
        """Count each (key, ts_ms, event_id) not counted yet for its key; one batch."""

    @abstractmethod
    def counts(self, counter: str, keys: Iterable[str], window_ms: int, as_of_ms: int
               ) -> dict[str, int]:
        """Per key, its events with ts in [as_of_ms - window_ms, as_of_ms)."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Everything the store holds (exact when no one writes meanwhile)."""

    @abstractmethod
    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything the store holds with a snapshot's content."""

    def close(self) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Release connections; the data stays where the backend keeps it."""

    def add(self, counter: str, key: str, ts_ms: int, event_id: str) -> None:
        self.add_many(counter, [(key, ts_ms, event_id)])

    def count(self, counter: str, key: str, window_ms: int, as_of_ms: int) -> int:
        return self.counts(counter, [key], window_ms, as_of_ms)[key]

    def clear(self) -> None:
        """Drop every row and counter."""
        self.restore({"format": FORMAT, "rows": {}, "counters": {}})

    def checked(self, counter: str, events: Iterable[Counted]) -> list[Counted]:
        """The events as a list, after checking each is (str key, integer ts_ms, str id)."""
        out = list(events)
        for key, ts_ms, event_id in out:
            if not isinstance(key, str) or not isinstance(event_id, str):
                raise BadInput(f"counter '{counter}': expected a string key and event id, "
                               f"got {key!r} and {event_id!r}")
            check_ts(f"counter '{counter}'", ts_ms)
        return out

    def window(self, counter: str, window_ms: int, as_of_ms: int) -> tuple[int, int]:
        """[first, last] ms of the window [as_of_ms - window_ms, as_of_ms); checks it."""
        check_ts(f"counter '{counter}'", as_of_ms)
        if not 0 < window_ms <= self.retention_ms:
            raise ConfigError(f"counter '{counter}': window_ms must be in 1..{self.retention_ms} "
                              f"(the store's retention_ms), got {window_ms}")
        return as_of_ms - window_ms, as_of_ms - 1

    def check_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.get("format") != FORMAT:
            raise ConfigError(f"store snapshot: expected format {FORMAT}, got "
                              f"{snapshot.get('format')!r}")


def open_store(url: str, retention_ms: int | None = None) -> Store:
    """Open the store a URL names, for example ``redis://127.0.0.1:6379/0?max_versions=4``;
    ``retention_ms``, if given, where the URL sets none (else DEFAULTS')."""
    if retention_ms is not None and "retention_ms" not in dict(parse_qsl(urlsplit(url).query)):
        base, _, query = url.partition("?")
        url = f"{base}?{query}{'&' if query else ''}retention_ms={retention_ms}"
    store: Store = open_backend(url, BACKENDS, "store")
    return store


def url_options(url: str, extra: Iterable[str] = ()) -> dict[str, Any]:
    """The options in a URL's query: DEFAULTS' names as positive integers up to 2**53 (what
    every backend holds exactly: Redis refused a larger one at each count or row it wrote,
    where the store had opened), ``extra`` as text."""
    options: dict[str, Any] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name in extra:
            options[name] = value
        elif name in DEFAULTS:
            if not is_digits(value) or len(value) > 20 or not 0 < int(value) <= 2**53:
                raise ConfigError(f"store URL {url!r}: option '{name}' must be a positive "
                                  f"integer of at most 2**53 ({2**53}), got {value!r}")
            options[name] = int(value)
        else:
            raise ConfigError(f"store URL {url!r}: unknown option '{name}' (known: "
                              f"{', '.join([*DEFAULTS, *extra])})")
    return options


def check_row(table: str, key: str, row: Mapping[str, Value]) -> Row:
    """A copy of ``row`` after checking that it maps field names to JSON scalars."""
    if not isinstance(key, str):
        raise BadInput(f"table '{table}': keys must be strings, got {key!r}")
    if not isinstance(row, Mapping):
        raise BadInput(f"table '{table}', key {key!r}: a row must be a mapping, got {row!r}")
    for field, value in row.items():
        if not isinstance(field, str) or not is_scalar(value):
            raise BadInput(f"table '{table}', key {key!r}, field {field!r}: expected a string "
                           f"name and a JSON scalar (str, 64-bit int, finite float, bool, "
                           f"None), got {value!r}")
    return dict(row)


def check_ts(what: str, ts_ms: object) -> int:
    """``ts_ms`` if it is an integer time in ms that every backend stores exactly (< 2**53)."""
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or abs(ts_ms) >= 2**53:
        raise BadInput(f"{what}: ts_ms must be integer milliseconds since the epoch, "
                       f"got {ts_ms!r}")
    return ts_ms


def is_scalar(value: object) -> bool:
    """Whether a row may hold ``value``: a JSON scalar every store keeps exactly."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


__all__ = ["BACKENDS", "DEFAULTS", "Counted", "Row", "Snapshot", "Store", "Value", "check_row",
           "check_ts", "open_store", "url_options"]
