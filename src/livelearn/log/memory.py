"""An in-memory Log (``memory://``): the whole protocol in one process, nothing on disk.

For evaluating a pipeline on history (``livelearn replay --log memory://``) and
for tests: the roles run exactly as over SQLite, without durability. Appends
and commits inside ``atomic()`` are undone together if it raises. One lock
keeps offsets dense when threads append at once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from livelearn.errors import ConfigError, NotFound
from livelearn.log.base import Checkpoint, Log, Record, partition_for


class MemoryLog(Log):
    """Topics as lists of (key, value) per partition, checkpoints in a dict.

    Values appended ``decoded`` are not kept decoded: the log holds every record,
    and holding their parsed objects too would cost more than parsing them.
    """

    def __init__(self) -> None:
        self._topics: dict[str, list[list[tuple[str, bytes]]]] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._lock = threading.RLock()
        self._undo: list[tuple[str, int, int] | tuple[str, Checkpoint | None]] | None = None

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
            finally:
                self._undo = None

    def _rollback(self, undo: list[tuple[str, int, int] | tuple[str, Checkpoint | None]]) -> None:
        for step in reversed(undo):
            if len(step) == 3:
                topic, partition, length = step
                del self._topics[topic][partition][length:]
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

    def partitions(self, topic: str) -> int:
        found = self._topics.get(topic)
        if found is None:
            raise NotFound(f"topic '{topic}' does not exist in this memory log")
        return len(found)

    def append(self, topic: str, records: Iterable[tuple[str, bytes]],
               decoded: Sequence[Any] | None = None) -> int:
        n = self.partitions(topic)
        by_partition: dict[int, list[tuple[str, bytes]]]
        if n == 1:
            by_partition = {0: [(key, value) for key, value in records]}
        else:
            by_partition = defaultdict(list)
            for key, value in records:
                by_partition[partition_for(key, n)].append((key, value))
        with self._lock:
            for partition, items in by_partition.items():
                stored = self._topics[topic][partition]
                if self._undo is not None:
                    self._undo.append((topic, partition, len(stored)))
                stored.extend(items)
        return sum(len(items) for items in by_partition.values())

    def read(self, topic: str, partition: int, offset: int, max_records: int = 1000
             ) -> list[Record]:
        self.partitions(topic)
        stored = self._topics[topic][partition][offset:offset + max_records]
        return [Record(topic, partition, i, k, v)
                for i, (k, v) in zip(range(offset, offset + len(stored)), stored, strict=True)]

    def end_offset(self, topic: str, partition: int) -> int:
        self.partitions(topic)
        return len(self._topics[topic][partition])

    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        with self._lock:
            if self._undo is not None:
                self._undo.append((group, self._checkpoints.get(group)))
            self._checkpoints[group] = Checkpoint(dict(checkpoint.offsets), checkpoint.state)

    def committed(self, group: str) -> Checkpoint:
        found = self._checkpoints.get(group)
        return Checkpoint() if found is None else Checkpoint(dict(found.offsets), found.state)
