"""Which samples the trainer has already learned: the ids near the newest window end.

A joiner's restart may write the samples of its last step again, and a joiner
that does not emit in order (Flink) interleaves window ends a little. A sample
is taken for already learned if its id was learned, or if its window end lies
more than ``horizon_ms`` behind the newest one learned (its id is forgotten by
then). It holds the ids of ``horizon_ms`` of event time, in memory only: a
version records where in the log they are, and a restart reads them back
(train.rebuild).

>>> seen = RecentIds(horizon_ms=1000)
>>> seen.add(5000, "a"); seen.add(4990, "b")
>>> seen.seen(5000, "a"), seen.seen(4995, "c"), seen.seen(3000, "d")
(True, False, True)
"""

from __future__ import annotations

import heapq
from collections import deque


class RecentIds:
    """Sample ids whose window end is within ``horizon_ms`` of the newest one."""

    def __init__(self, horizon_ms: int):
        self.horizon_ms = horizon_ms
        self._ids: dict[str, int] = {}
        # (window end, id) to forget, oldest first: those added in order of window end
        # (the usual case, a merge's order) queue up; any other waits in a heap
        self._in_order: deque[tuple[int, str]] = deque()
        self._heap: list[tuple[int, str]] = []
        self.newest: int | None = None

    def seen(self, window_end: int, sid: str) -> bool:
        too_old = self.newest is not None and window_end < self.newest - self.horizon_ms
        return too_old or sid in self._ids

    def add(self, window_end: int, sid: str) -> None:
        self._remember(window_end, sid)
        newest = self.newest
        if newest is None or window_end > newest:
            self.newest = window_end
        elif window_end >= newest - self.horizon_ms:
            return  # the horizon did not move and this id is inside it: nothing to forget
        self._forget()

    def _remember(self, window_end: int, sid: str) -> None:
        self._ids[sid] = window_end
        queue = self._in_order
        if not queue or window_end >= queue[-1][0]:
            queue.append((window_end, sid))
        else:
            heapq.heappush(self._heap, (window_end, sid))

    def _forget(self) -> None:
        """Drop the ids whose window end lies more than the horizon behind the newest."""
        assert self.newest is not None
        oldest, ids, queue = self.newest - self.horizon_ms, self._ids, self._in_order
        while queue and queue[0][0] < oldest:
            end, old = queue.popleft()
            if ids.get(old) == end:
                del ids[old]
        heap = self._heap
        while heap and heap[0][0] < oldest:
            end, old = heapq.heappop(heap)
            if ids.get(old) == end:
                del ids[old]

    def remembers(self, sid: str) -> bool:
        """Whether ``sid`` is among the ids kept (within the horizon)."""
        return sid in self._ids

    def add_new(self, window_end: int, sid: str) -> bool:
        """``add`` unless ``seen``; whether it was new."""
        if sid in self._ids or (self.newest is not None
                                and window_end < self.newest - self.horizon_ms):
            return False
        self.add(window_end, sid)
        return True

