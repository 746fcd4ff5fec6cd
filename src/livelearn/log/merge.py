"""Several partitions of a Log read as one sequence, in a deterministic order.

Records are merged by a key of each record (event time for the joiner,
(window_end, id) for the trainer), looking only at the head of each input, so
the order depends on the log's contents alone, never on batch sizes or timing.
While an input has nothing to read the merge waits for it, unless it has been
empty for ``idle_after_s`` seconds: then it is idle and the merge goes on
without it (the one place where wall-clock timing can change a result, as in
Flink). In a final read (a bounded log), an input with nothing left is idle at
once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from livelearn.errors import Lost
from livelearn.log.base import Log, Record, TopicPartition, skipping

#: key(record) -> (sort key, anything decoded on the way, handed back with the record)
KeyFn = Callable[[Record], tuple[Any, Any]]
#: on_lost(input, offset, start): the records of ``input`` from ``offset`` to ``start - 1``
#: were deleted before they were read; the merge goes on from ``start``.
OnLost = Callable[[TopicPartition, int, int], None]


class MergedReader:
    """Reads ``inputs`` from ``offsets`` on, merged by ``key``, for consumer ``group``.

    An input whose next offset is no longer in the log (deleted by its retention before
    it was read) is Lost, naming it; or, given ``on_lost``, skipped to where the input
    starts now, with a WARNING naming the group, the input and the offsets skipped, and
    ``on_lost`` called (before any record after the gap is returned) to record the gap.
    """

    def __init__(self, log: Log, inputs: Sequence[TopicPartition], key: KeyFn,
                 offsets: dict[TopicPartition, int], idle_after_s: float = 5.0,
                 read_batch: int = 2000,
                 on_idle: Callable[[TopicPartition, bool], None] | None = None, *,
                 group: str, on_lost: OnLost | None = None):
        self.log, self.inputs, self.key, self.group = log, list(inputs), key, group
        self.idle_after_s, self.read_batch = idle_after_s, read_batch
        self.on_idle = on_idle or (lambda tp, idle: None)
        self.on_lost = on_lost
        self.idle: set[TopicPartition] = set()
        self._next_read = {tp: offsets.get(tp, 0) for tp in self.inputs}
        self._buffers: dict[TopicPartition, deque[tuple[Any, Record, Any]]] = {
            tp: deque() for tp in self.inputs}
        self._empty_since: dict[TopicPartition, float] = {}

    def next(self, final: bool = False) -> tuple[Record, Any] | None:
        """The next record in the merge and what ``key`` decoded of it, or None to wait."""
        got = self.next_batch(final, 1)
        return got[0] if got else None

    def next_batch(self, final: bool = False, limit: int = 2000) -> list[tuple[Record, Any]]:
        """The next records of the merge (at most ``limit``) and what ``key`` decoded of
        them: for the same log contents, those that calls of ``next`` would give, in
        the same order; empty to wait.

        A batch ends before a turn that would read the log or change an input's
        idleness, so ``on_idle`` is called between the same records as with ``next``.
        """
        out: list[tuple[Record, Any]] = []
        buffers = self._buffers
        while len(out) < limit:
            if out and not all(buffers[tp] for tp in self.inputs):
                break  # the next turn reads the log: it starts the next batch
            best: tuple[Any, int] | None = None
            second: tuple[Any, int] | None = None
            best_tp = None
            for i, tp in enumerate(self.inputs):
                buffer = buffers[tp]
                if not buffer and not self._refill(tp):
                    if self._is_idle(tp, exhausted=final):
                        continue
                    return out
                order = (buffer[0][0], i)
                if best is None or order < best:
                    best, second, best_tp = order, best, tp
                elif second is None or order < second:
                    second = order
            if best is None or best_tp is None:
                break
            buffer = buffers[best_tp]
            room = limit - len(out)
            if second is None:  # one input with records: its whole buffer, in order
                if room >= len(buffer):
                    out += [(r, d) for _, r, d in buffer]
                    buffer.clear()
                else:
                    out += [(r, d) for _, r, d in (buffer.popleft() for _ in range(room))]
                continue
            index = best[1]
            while buffer and room and (buffer[0][0], index) < second:
                _, record, decoded = buffer.popleft()
                out.append((record, decoded))
                room -= 1
        return out

    def _refill(self, tp: TopicPartition) -> bool:
        while True:
            try:
                records = self.log.read(*tp, self._next_read[tp], self.read_batch)
                break
            except Lost as e:
                start = None if self.on_lost is None else self.log.start_offset(*tp)
                if start is None or start <= self._next_read[tp]:
                    raise Lost(f"group '{self.group}' stops: {e}") from None
                self._skip_lost(tp, start)  # and read again from there
        if not records:
            self._empty_since.setdefault(tp, time.monotonic())
            return False
        key = self.key
        self._buffers[tp].extend([(order, r, decoded) for r in records
                                  for order, decoded in (key(r),)])
        self._next_read[tp] = records[-1].offset + 1
        self._empty_since.pop(tp, None)
        if tp in self.idle:
            self.idle.discard(tp)
            self.on_idle(tp, False)
        return True

    def _is_idle(self, tp: TopicPartition, exhausted: bool) -> bool:
        if tp in self.idle:
            return True
        waited = time.monotonic() - self._empty_since[tp]
        if not exhausted and waited < self.idle_after_s:
            return False
        self.idle.add(tp)
        self.on_idle(tp, True)
        return True

    def _skip_lost(self, tp: TopicPartition, start: int) -> None:
        """Go on from ``start``, where ``tp`` starts now, saying what is skipped (see the
        class)."""
        assert self.on_lost is not None
        offset = self._next_read[tp]
        skipping(self.group, *tp, offset, start)
        self.on_lost(tp, offset, start)
        self._next_read[tp] = start
