"""Windowed counters: how many events of a key came in the window before a time.

``count(key, t)`` is the number of events added for ``key`` with ts in
[t - window_ms, t): the event at t itself and anything later are never counted,
whatever order the events were added in. Queries must come in non-decreasing t
(the joiner emits samples in event-time order); entries too old for any later
query are dropped as queries move on, once they are half a key's entries (each
event then costs the same however many a key holds), so memory holds at most
two windows of events.

>>> c = WindowCounter(window_ms=1000)
>>> for ts in (100, 500, 900, 1500):
...     c.add("item1", ts)
>>> c.count("item1", 900), c.count("item1", 1200), c.count("item1", 1600), c.count("x", 1600)
(2, 2, 2, 0)
"""

from __future__ import annotations

import bisect
from typing import Any

#: Sweep keys that are never asked for once per this many adds.
SWEEP_EVERY = 100_000


class WindowCounter:
    """Counts of events per key over a sliding event-time window (ms)."""

    def __init__(self, window_ms: int):
        self.window_ms = window_ms
        self._times: dict[str, list[int]] = {}
        self._horizon = -(2**63)  # no query will look before this time again
        self._adds = 0

    def add(self, key: str, ts: int) -> None:
        """Count one event of ``key`` at ``ts`` (ms); out of order is fine."""
        times = self._times.get(key)
        if not times:
            self._times[key] = [ts]
        elif ts >= times[-1]:
            times.append(ts)
        else:
            bisect.insort(times, ts)
        self._adds += 1
        if self._adds % SWEEP_EVERY == 0:
            self._sweep()

    def count(self, key: str, ts: int) -> int:
        """Events of ``key`` with time in [ts - window_ms, ts)."""
        start = ts - self.window_ms
        self._horizon = max(self._horizon, start)
        times = self._times.get(key)
        if not times:
            return 0
        lo = bisect.bisect_left(times, start)
        count = bisect.bisect_left(times, ts, lo) - lo
        if lo * 2 > len(times):  # dropping fewer each time would move the rest each time
            del times[:lo]
        return count

    def _sweep(self) -> None:
        for key in list(self._times):
            times = self._times[key]
            del times[:bisect.bisect_left(times, self._horizon)]
            if not times:
                del self._times[key]

    def state(self) -> dict[str, Any]:
        """What the counter holds for queries to come, as plain JSON-able data."""
        h = self._horizon
        return {"horizon": h, "times": {k: v[bisect.bisect_left(v, h):] if v[0] < h else v
                                        for k, v in self._times.items() if v}}

    def restore(self, state: dict[str, Any]) -> None:
        self._horizon = state["horizon"]
        self._times = {k: list(v) for k, v in state["times"].items()}
