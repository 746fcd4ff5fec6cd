"""Point-in-time tables: the row of a key as of an event time, never a later one.

A table with an ``as_of`` column keeps every row of a key, ordered by that
column; ``get(key, ts)`` returns the row with the largest ``as_of`` <= ts (the
last in file order among equal times), or an empty row when the key had none
yet. A table without ``as_of`` is static: one row per key, valid at every time.
Each ``get`` returns a new dict, the caller's own: a features function that changes
the row it is given in place changes no other event's row (as the server's store,
which reads each request's rows afresh).

>>> t = AsOfTable("prices", {"a": ([100, 200], [{"p": 1}, {"p": 2}])})
>>> t.get("a", 99), t.get("a", 100), t.get("a", 199), t.get("a", 10**13), t.get("b", 150)
({}, {'p': 1}, {'p': 1}, {'p': 2}, {})
"""

from __future__ import annotations

import bisect
import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from livelearn.spec import Table
from livelearn.tables.offline import LARGE, read_rows

log = logging.getLogger("livelearn.tables")

#: Rows of a table whose indexing is logged, when it starts and ends (2 million take
#: seconds), as is the indexing of a table of LARGE bytes.
LARGE_ROWS = 200_000


class AsOfTable:
    """Rows by key with their validity times (ms since the epoch, UTC), ascending."""

    def __init__(self, name: str, versions: dict[str, tuple[list[int], list[dict[str, Any]]]]):
        self.name, self._versions = name, versions
        self._static = {k: rows[0] for k, (times, rows) in versions.items()
                        if len(rows) == 1 and times[0] == _ALWAYS}

    @classmethod
    def load(cls, table: Table, data_dir: str | Path = ".") -> AsOfTable:
        """Read ``table``'s file; a row's validity starts at its ``as_of`` (or always).
        Indexing a large table (LARGE_ROWS rows, or a file of LARGE bytes) is logged when
        it starts and ends, as its reading is.

        BadInput (from tables.offline.read_rows) names the row and column of an
        empty key or of an ``as_of`` that is not ms (nor seconds), ISO 8601 or a
        timestamp."""
        with _collector_paused():
            rows = read_rows(table, data_dir)
            large = len(rows) >= LARGE_ROWS or \
                (Path(data_dir) / table.path).stat().st_size >= LARGE
            started = time.monotonic()
            if large:  # seconds: not in silence
                log.info("table '%s': indexing %d rows by %s", table.name, len(rows),
                         "key" if table.as_of is None else "key and as_of")
            versions = _by_key(rows, table.key, table.as_of)
        if large:
            log.info("table '%s': %d rows indexed (%d keys) in %.1f s", table.name, len(rows),
                     len(versions), time.monotonic() - started)
        return cls(table.name, versions)

    def get(self, key: str, ts: int) -> dict[str, Any]:
        """A copy of the row of ``key`` as of ``ts`` (ms), or an empty dict."""
        row = self._static.get(key)
        if row is not None:
            return dict(row)
        found = self._versions.get(key)
        if found is None:
            return {}
        i = bisect.bisect_right(found[0], ts) - 1
        return dict(found[1][i]) if i >= 0 else {}

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` has a row at any time."""
        return key in self._versions

    def __len__(self) -> int:
        return len(self._versions)


_ALWAYS = -(2**63)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (unless it was already): a table's rows,
    a million dicts that make no cycle, set it off every 700 of them, and its runs walked
    the rows made so far again and again: half the time a large table took to index."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _by_key(rows: list[dict[str, Any]], key: str, as_of: str | None
            ) -> dict[str, tuple[list[int], list[dict[str, Any]]]]:
    """Each key's rows with their validity times, by time ascending and in file order
    among equal times (a table's rows are read in file order)."""
    versions: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}
    for row in rows:
        since = _ALWAYS if as_of is None else row[as_of]
        found = versions.get(k := str(row[key]))
        if found is None:
            versions[k] = ([since], [row])
        else:
            found[0].append(since)
            found[1].append(row)
    for times, of_key in versions.values():  # most often sorted already: a snapshot per time
        if len(times) > 1 and times != sorted(times):
            order = sorted(range(len(times)), key=times.__getitem__)  # stable: file order
            times[:] = [times[i] for i in order]
            of_key[:] = [of_key[i] for i in order]
    return versions
