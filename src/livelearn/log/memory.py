"""An in-memory Log (``memory://``): the whole protocol in one process, nothing on disk.

For evaluating a pipeline on history (``livelearn replay --log memory://``) and
for tests: the roles run exactly as over SQLite, without durability. Appends
and commits inside ``atomic()`` are undone together if it raises. One lock
keeps offsets dense when threads append at once. A record is read with the time
of its append (Record.appended_ms), kept once per append and partition.
"""

from __future__ import annotations

import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from livelearn.errors import ConfigError, NotFound
from livelearn.log.base import Appended, Checkpoint, Log, Record, TopicPartition, split


class MemoryLog(Log):
    """Topics as lists of (key, value) per partition, checkpoints in a dict.

    As in the SQLite log, the last records appended to a partition with their
    values ``decoded`` are read back with them (Log.append); the rest as bytes.
    """

    def __init__(self) -> None:
        self._topics: dict[str, list[list[tuple[str, bytes]]]] = {}
        # per partition, (first offset, ms since the epoch) of each append: its records' time
        self._times: dict[str, list[list[tuple[int, int]]]] = {}
        self._ids: dict[str, str] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._lock = threading.RLock()
        self._undo: list[tuple[str, int, int] | tuple[str, Checkpoint | None]] | None = None
        self._recent: dict[TopicPartition, Appended] = {}
        self._appended: list[tuple[TopicPartition, Appended]] = []  # in this atomic()

    @classmethod
    def from_url(cls, url: str) -> MemoryLog:
        if url.rstrip("/") != "memory:":
            raise ConfigError(f"log URL {url!r}: expected memory://")
        return cls()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self._lock:
            if self._undo is not None:  # nested: the outer one decides
                yield
                return
            self._undo = []
            try:
                yield
            except BaseException:
                self._rollback(self._undo)
                raise
            else:
                self._recent.update(self._appended)
            finally:
                self._undo, self._appended = None, []

    def _rollback(self, undo: list[tuple[str, int, int] | tuple[str, Checkpoint | None]]) -> None:
        for step in reversed(undo):
            if len(step) == 3:
                topic, partition, length = step
                del self._topics[topic][partition][length:]
                times = self._times[topic][partition]
                while times and times[-1][0] >= length:
                    times.pop()
            else:
                group, before = step
                if before is None:
                    self._checkpoints.pop(group, None)
                else:
                    self._checkpoints[group] = before

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        if partitions < 1:
            raise ConfigError(f"topic '{topic}': partitions must be >= 1, got {partitions}")
        with self._lock:
            self._topics.setdefault(topic, [[] for _ in range(partitions)])
            self._times.setdefault(topic, [[] for _ in range(partitions)])
            self._ids.setdefault(topic, uuid.uuid4().hex)
        self.same_partitions(topic, partitions)

    def topic_id(self, topic: str) -> str:
        self.partitions(topic)
        return self._ids[topic]

    def partitions(self, topic: str) -> int:
        found = self._topics.get(topic)
        if found is None:
            raise NotFound(f"topic '{topic}' does not exist in this memory log")
        return len(found)

    def append(self, topic: str, records: Iterable[tuple[str, bytes]],
               decoded: Sequence[Any] | None = None) -> int:
        by_partition = split(records, self.partitions(topic), decoded)
        with self.atomic():
            now = int(time.time() * 1000)
            for partition, (items, values) in by_partition.items():
                stored = self._topics[topic][partition]
                assert self._undo is not None
                self._undo.append((topic, partition, len(stored)))
                if values is not None:
                    self._appended.append(((topic, partition),
                                           Appended(len(stored), items, values, now)))
                times = self._times[topic][partition]
                if not times or times[-1][1] != now:
                    times.append((len(stored), now))
                stored.extend(items)
        return sum(len(items) for items, _ in by_partition.values())

    def read(self, topic: str, partition: int, offset: int, max_records: int = 1000
             ) -> list[Record]:
        self.partitions(topic)
        recent = self._recent.get((topic, partition))
        if recent is not None and recent.holds(offset):
            return recent.records(topic, partition, offset, max_records)
        stored = self._topics[topic][partition]
        end = min(len(stored), offset + max_records)
        times = self._times[topic][partition]
        i = bisect_right(times, offset, key=_first) - 1  # the append of ``offset``
        out: list[Record] = []
        while offset < end:  # the records of each append, with its time
            stop = min(end, times[i + 1][0]) if i + 1 < len(times) else end
            at = times[i][1]
            out += [Record(topic, partition, o, k, v, None, at)
                    for o, (k, v) in zip(range(offset, stop), stored[offset:stop], strict=True)]
            offset, i = stop, i + 1
        return out

    def end_offset(self, topic: str, partition: int) -> int:
        self.partitions(topic)
        return len(self._topics[topic][partition])

    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        with self._lock:
            if self._undo is not None:
                self._undo.append((group, self._checkpoints.get(group)))
            self._checkpoints[group] = Checkpoint(dict(checkpoint.offsets), checkpoint.state)

    def claim(self, group: str) -> Checkpoint:
        """The group's checkpoint: a memory log has one process, nothing to fence off."""
        return self.committed(group)

    def committed(self, group: str) -> Checkpoint:
        found = self._checkpoints.get(group)
        return Checkpoint() if found is None else Checkpoint(dict(found.offsets), found.state)


def _first(span: tuple[int, int]) -> int:
    return span[0]
