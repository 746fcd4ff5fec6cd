"""An in-memory Store (``memory://`` or ``memory://NAME``): the embedded default.

``memory://`` is private to the object; ``memory://NAME`` shares its data with
every store opened on the same NAME in this process, never across processes.
Nothing is on disk: the content is lost when the process ends, unless a
``snapshot()`` is kept and ``restore()``d. One lock per data set makes each
batch atomic for readers in other threads.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from livelearn.errors import ConfigError
from livelearn.tables.store import (
    FORMAT,
    Counted,
    Row,
    Snapshot,
    Store,
    Value,
    check_row,
    check_ts,
    url_options,
)

#: Sweep counter keys idle for longer than the retention once per this many events.
SWEEP_EVERY = 100_000


@dataclass
class _Versions:
    """One key's versions, ascending by ts (ms): ``rows[i]`` is valid from ``times[i]``."""

    times: list[int] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


@dataclass
class _Counted:
    """One counter key's events: ``times`` ascending, ``ids`` beside them, ``seen`` the
    ts of each id. Events before ``floor`` have expired: they are not counted and their
    ids may come again. Each add raises the floor to the retention before the newest
    event or the wall clock, whichever is earlier (as Redis trims: tables.redis), so an
    event ahead of the clock expires no present one. Expired events are deleted once
    they are half the lists, so that an event costs the same however many a key holds."""

    times: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    floor: int = -(2**53)

    def live(self) -> int:
        """The index of the first event not expired."""
        return bisect.bisect_left(self.times, self.floor)

    def add(self, ts_ms: int, event_id: str, retention_ms: int, now_ms: int) -> None:
        seen = self.seen.get(event_id)
        if seen is not None and seen >= self.floor:
            return
        i = bisect.bisect_right(self.times, ts_ms)
        self.times.insert(i, ts_ms)
        self.ids.insert(i, event_id)
        self.seen[event_id] = ts_ms
        self.floor = max(self.floor, min(self.times[-1], now_ms) - retention_ms)
        old = self.live()
        if old * 2 > len(self.times):
            for ts, expired in zip(self.times[:old], self.ids[:old], strict=True):
                if self.seen.get(expired) == ts:  # not an id that came again since
                    del self.seen[expired]
            del self.times[:old], self.ids[:old]


@dataclass
class _Data:
    rows: dict[tuple[str, str], _Versions] = field(default_factory=dict)
    counters: dict[tuple[str, str], _Counted] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    added: int = 0


_SHARED: dict[str, _Data] = {}
_SHARED_LOCK = threading.Lock()


class MemoryStore(Store):
    """Versions in sorted lists per (table, key); counted events in sorted lists per
    (counter, key)."""

    def __init__(self, name: str = "", max_versions: int = 8, retention_ms: int = 86_400_000):
        super().__init__(max_versions, retention_ms)
        self.name = name
        if not name:
            self._data = _Data()
        else:
            with _SHARED_LOCK:
                self._data = _SHARED.setdefault(name, _Data())

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        parts = urlsplit(url)
        if parts.path.strip("/"):
            raise ConfigError(f"store URL {url!r}: expected memory:// or memory://NAME")
        return cls(parts.netloc, **url_options(url))

    def put_rows(self, table: str, rows: Mapping[str, Mapping[str, Value]], ts_ms: int) -> None:
        check_ts(f"table '{table}'", ts_ms)
        checked = {key: check_row(table, key, row) for key, row in rows.items()}
        with self._data.lock:
            for key, row in checked.items():
                self._put(self._data.rows.setdefault((table, key), _Versions()), row, ts_ms)

    def replace_table(self, table: str,
                      versions: Mapping[str, Mapping[int, Mapping[str, Value]]]) -> None:
        checked = {key: {check_ts(f"table '{table}'", ts): check_row(table, key, row)
                         for ts, row in rows.items()} for key, rows in versions.items()}
        with self._data.lock:
            held = self._data.rows
            for stale in [k for k in held if k[0] == table and k[1] not in checked]:
                del held[stale]
            for key, rows in checked.items():
                held.pop((table, key), None)
                if not rows:
                    continue
                v = held[(table, key)] = _Versions()
                for ts_ms in sorted(rows):
                    self._put(v, rows[ts_ms], ts_ms)

    def _put(self, versions: _Versions, row: Row, ts_ms: int) -> None:
        i = bisect.bisect_left(versions.times, ts_ms)
        if i < len(versions.times) and versions.times[i] == ts_ms:
            versions.rows[i] = row
            return
        versions.times.insert(i, ts_ms)
        versions.rows.insert(i, row)
        excess = len(versions.times) - self.max_versions
        if excess > 0:
            del versions.times[:excess], versions.rows[:excess]

    def get_rows(self, table: str, keys: Iterable[str], as_of_ms: int | None = None
                 ) -> dict[str, Row]:
        found: dict[str, Row] = {}
        with self._data.lock:
            for key in keys:
                versions = self._data.rows.get((table, key))
                if versions is None:
                    continue
                i = (len(versions.times) if as_of_ms is None
                     else bisect.bisect_right(versions.times, as_of_ms))
                if i:
                    found[key] = dict(versions.rows[i - 1])
        return found

    def add_many(self, counter: str, events: Iterable[Counted]) -> None:
        batch = self.checked(counter, events)
        now_ms = int(time.time() * 1000)
        with self._data.lock:
            for key, ts_ms, event_id in batch:
                counted = self._data.counters.setdefault((counter, key), _Counted())
                counted.add(ts_ms, event_id, self.retention_ms, now_ms)
            self._data.added += len(batch)
            if self._data.added >= SWEEP_EVERY:
                self._sweep(now_ms)

    def _sweep(self, now_ms: int) -> None:
        """Drop keys whose newest event is older than the retention before the newest of
        all or the wall clock, whichever is earlier."""
        self._data.added = 0
        counters = self._data.counters
        newest = max((c.times[-1] for c in counters.values() if c.times), default=0)
        idle = min(newest, now_ms) - self.retention_ms
        for name in [n for n, c in counters.items() if not c.times or c.times[-1] < idle]:
            del counters[name]

    def counts(self, counter: str, keys: Iterable[str], window_ms: int, as_of_ms: int
               ) -> dict[str, int]:
        first, last = self.window(counter, window_ms, as_of_ms)
        out: dict[str, int] = {}
        with self._data.lock:
            for key in keys:
                counted = self._data.counters.get((counter, key))
                if counted is None or not counted.times:
                    out[key] = 0
                    continue
                times = counted.times
                lo = bisect.bisect_left(times, max(first, counted.floor))
                out[key] = max(0, bisect.bisect_right(times, last) - lo)
        return out

    def snapshot(self) -> Snapshot:
        rows: dict[str, dict[str, list[list[object]]]] = {}
        counters: dict[str, dict[str, list[list[object]]]] = {}
        with self._data.lock:
            for (table, key), v in self._data.rows.items():
                rows.setdefault(table, {})[key] = [[t, dict(r)] for t, r in zip(v.times, v.rows,
                                                                                strict=True)]
            for (counter, key), c in self._data.counters.items():
                live = c.live()
                counters.setdefault(counter, {})[key] = [
                    [t, i] for t, i in zip(c.times[live:], c.ids[live:], strict=True)]
        return {"format": FORMAT, "rows": rows, "counters": counters}

    def restore(self, snapshot: Snapshot) -> None:
        self.check_snapshot(snapshot)
        snapshot = copy.deepcopy(snapshot)
        now_ms = int(time.time() * 1000)
        with self._data.lock:
            self._data.rows.clear()
            self._data.counters.clear()
            for table, keys in snapshot["rows"].items():
                for key, versions in keys.items():
                    v = self._data.rows[(table, key)] = _Versions()
                    for ts_ms, row in versions:
                        self._put(v, check_row(table, key, row), ts_ms)
            for counter, keys in snapshot["counters"].items():
                for key, events in keys.items():
                    counted = self._data.counters[(counter, key)] = _Counted()
                    for _, ts_ms, event_id in self.checked(counter, [(key, *e) for e in events]):
                        counted.add(ts_ms, event_id, self.retention_ms, now_ms)
