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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from livelearn.errors import ConfigError
from livelearn.tables.store import Row, Snapshot, Store, Value, check_row, check_ts, url_options

#: Sweep counter keys idle for longer than the retention once per this many increments.
SWEEP_EVERY = 100_000


@dataclass
class _Versions:
    """One key's versions, ascending by ts (ms): ``rows[i]`` is valid from ``times[i]``."""

    times: list[int] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


@dataclass
class _Data:
    rows: dict[tuple[str, str], _Versions] = field(default_factory=dict)
    counters: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    increments: int = 0


_SHARED: dict[str, _Data] = {}
_SHARED_LOCK = threading.Lock()


class MemoryStore(Store):
    """Versions in sorted lists per (table, key); counters as {bucket: count} per (counter, key)."""

    def __init__(self, name: str = "", max_versions: int = 8, bucket_ms: int = 60_000,
                 retention_ms: int = 86_400_000):
        super().__init__(max_versions, bucket_ms, retention_ms)
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

    def incr_many(self, counter: str, increments: Iterable[tuple[str, int, int]]) -> None:
        batch = self.bucketed(counter, increments)
        with self._data.lock:
            for key, bucket, by in batch:
                buckets = self._data.counters.setdefault((counter, key), {})
                buckets[bucket] = buckets.get(bucket, 0) + by
                if len(buckets) > 2 * self.keep_buckets:
                    self._prune(buckets)
            self._data.increments += len(batch)
            if self._data.increments >= SWEEP_EVERY:
                self._sweep()

    def _prune(self, buckets: dict[int, int]) -> None:
        """Keep one key's ``keep_buckets`` newest buckets (RedisStore's script does the same)."""
        oldest_kept = max(buckets) - self.keep_buckets + 1
        for bucket in [b for b in buckets if b < oldest_kept]:
            del buckets[bucket]

    def _sweep(self) -> None:
        """Drop keys whose newest bucket is older than retention before the newest of all."""
        self._data.increments = 0
        counters = self._data.counters
        newest = max((max(b) for b in counters.values() if b), default=0)
        idle = [n for n, b in counters.items() if not b or max(b) <= newest - self.keep_buckets]
        for name in idle:
            del counters[name]

    def counts(self, counter: str, keys: Iterable[str], window_ms: int, as_of_ms: int
               ) -> dict[str, int]:
        window = self.window_buckets(counter, window_ms, as_of_ms)
        out: dict[str, int] = {}
        with self._data.lock:
            for key in keys:
                buckets = self._data.counters.get((counter, key), {})
                if len(window) < len(buckets):
                    out[key] = sum(buckets.get(b, 0) for b in window)
                else:
                    out[key] = sum(n for b, n in buckets.items() if b in window)
        return out

    def snapshot(self) -> Snapshot:
        rows: dict[str, dict[str, list[list[object]]]] = {}
        counters: dict[str, dict[str, dict[str, int]]] = {}
        with self._data.lock:
            for (table, key), v in self._data.rows.items():
                rows.setdefault(table, {})[key] = [[t, dict(r)] for t, r in zip(v.times, v.rows,
                                                                                strict=True)]
            for (counter, key), buckets in self._data.counters.items():
                counters.setdefault(counter, {})[key] = {str(b): n for b, n in buckets.items()}
        return {"format": 1, "bucket_ms": self.bucket_ms, "rows": rows, "counters": counters}

    def restore(self, snapshot: Snapshot) -> None:
        self.check_snapshot(snapshot)
        snapshot = copy.deepcopy(snapshot)
        with self._data.lock:
            self._data.rows.clear()
            self._data.counters.clear()
            for table, keys in snapshot["rows"].items():
                for key, versions in keys.items():
                    v = self._data.rows[(table, key)] = _Versions()
                    for ts_ms, row in versions:
                        self._put(v, check_row(table, key, row), ts_ms)
            for counter, keys in snapshot["counters"].items():
                for key, buckets in keys.items():
                    self._data.counters[(counter, key)] = {int(b): n for b, n in buckets.items()}
