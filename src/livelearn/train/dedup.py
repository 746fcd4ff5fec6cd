"""Which samples the trainer has already learned: the ids near the newest window end.

A joiner's restart may write the samples of its last step again, and a joiner
that does not emit in order (Flink) interleaves window ends a little. A sample
is taken for already learned if its id was learned, or if its window end lies
more than ``horizon_ms`` behind the newest one learned (its id is forgotten by
then). The state is small: the ids of ``horizon_ms`` of event time.

>>> seen = RecentIds(horizon_ms=1000)
>>> seen.add(5000, "a"); seen.add(4990, "b")
>>> seen.seen(5000, "a"), seen.seen(4995, "c"), seen.seen(3000, "d")
(True, False, True)
"""

from __future__ import annotations

import heapq


class RecentIds:
    """Sample ids whose window end is within ``horizon_ms`` of the newest one."""

    def __init__(self, horizon_ms: int, state: list[list[int | str]] | None = None):
        self.horizon_ms = horizon_ms
        self._ids: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self.newest: int | None = None
        for end, sid in state or []:
            self.add(int(end), str(sid))

    def seen(self, window_end: int, sid: str) -> bool:
        too_old = self.newest is not None and window_end < self.newest - self.horizon_ms
        return too_old or sid in self._ids

    def add(self, window_end: int, sid: str) -> None:
        self._ids[sid] = window_end
        heap = self._heap
        heapq.heappush(heap, (window_end, sid))
        newest = self.newest
        if newest is None or window_end > newest:
            self.newest = newest = window_end
        elif window_end >= newest - self.horizon_ms:
            return  # the horizon did not move and this id is inside it: nothing to forget
        oldest = newest - self.horizon_ms
        while heap[0][0] < oldest:
            end, old = heapq.heappop(heap)
            if self._ids.get(old) == end:
                del self._ids[old]

    def add_new(self, window_end: int, sid: str) -> bool:
        """``add`` unless ``seen``; whether it was new."""
        if sid in self._ids or (self.newest is not None
                                and window_end < self.newest - self.horizon_ms):
            return False
        self.add(window_end, sid)
        return True

    def state(self) -> list[list[int | str]]:
        return [[end, sid] for sid, end in sorted(self._ids.items(), key=lambda x: (x[1], x[0]))]
