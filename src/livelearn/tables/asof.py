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
from pathlib import Path
from typing import Any

from livelearn.spec import Table
from livelearn.tables.offline import read_rows


class AsOfTable:
    """Rows by key with their validity times (ms since the epoch, UTC), ascending."""

    def __init__(self, name: str, versions: dict[str, tuple[list[int], list[dict[str, Any]]]]):
        self.name, self._versions = name, versions
        self._static = {k: rows[0] for k, (times, rows) in versions.items()
                        if len(rows) == 1 and times[0] == _ALWAYS}

    @classmethod
    def load(cls, table: Table, data_dir: str | Path = ".") -> AsOfTable:
        """Read ``table``'s file; a row's validity starts at its ``as_of`` (or always).

        BadInput (from tables.offline.read_rows) names the row and column of an
        empty key or of an ``as_of`` that is not ms (nor seconds), ISO 8601 or a
        timestamp."""
        dated: list[tuple[str, int, int, dict[str, Any]]] = []
        for i, row in enumerate(read_rows(table, data_dir)):
            since = _ALWAYS if table.as_of is None else row[table.as_of]
            dated.append((str(row[table.key]), since, i, row))
        dated.sort(key=lambda d: (d[0], d[1], d[2]))
        versions: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}
        for key, since, _, row in dated:
            times, rows = versions.setdefault(key, ([], []))
            times.append(since)
            rows.append(row)
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

