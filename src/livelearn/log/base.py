"""The Log protocol: durable, partitioned topics that every role talks through.

Offsets are integers per (topic, partition) that only increase, from 0 on. They
may have gaps (Kafka's transaction markers and aborted records take offsets; the
embedded backends leave none), so a reader goes on from the offset of the last
record it got plus one and never counts records by subtracting offsets. A
record's key chooses its partition, so all records of one key stay in order. A
consumer group commits its input offsets together with its checkpointed state,
in one atomic step; ``atomic()`` widens that step to the outputs written inside
it where the backend can (SQLite: one transaction; Kafka: one Kafka transaction).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from livelearn.errors import ConfigError, Fenced, Lost

#: A position in the log: (topic, partition).
TopicPartition = tuple[str, int]


class Record(NamedTuple):
    """One record read from the log: where it is, its key and its value.

    ``decoded`` is the value already parsed (``orjson.loads(value)``) when this
    process appended the record with it (see ``Log.append``), else None. It is
    shared, never to be changed. ``appended_ms`` is when the log received the
    record, in integer ms since the epoch (SQLite: its batch's append time; Kafka:
    the message's timestamp, the broker's clock in the topics livelearn creates,
    LogAppendTime; memory: its append), or None where not known. It is stored
    with the record, so every read of it gives the same: a role may judge a record
    by it (the joiner dead-letters an event far ahead of it) and still decide the
    same on every replay.
    """

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    decoded: Any = None
    appended_ms: int | None = None


@dataclass
class Checkpoint:
    """What a consumer group committed: the next offset to read per partition, and its state."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    state: bytes | None = None


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key: stable across processes, machines and backends."""
    return zlib.crc32(key.encode()) % partitions


def split(records: Iterable[tuple[str, bytes]], partitions: int,
          decoded: Sequence[Any] | None = None
          ) -> dict[int, tuple[list[tuple[str, bytes]], list[Any] | None]]:
    """Records by the partition of their key, in order, with their ``decoded`` values
    if given (see ``Log.append``), in new lists: a backend may keep them, whatever the
    caller then does with its own."""
    if partitions == 1:
        items = list(records)
        return {0: (items, None if decoded is None else list(decoded))} if items else {}
    out: dict[int, tuple[list[tuple[str, bytes]], list[Any] | None]] = {}
    for i, (key, value) in enumerate(records):
        items, values = out.setdefault(partition_for(key, partitions),
                                       ([], None if decoded is None else []))
        items.append((key, value))
        if values is not None:
            values.append(decoded[i])  # type: ignore[index]
    return out


class Appended(NamedTuple):
    """Records appended in one go from offset ``first`` with their values decoded, at
    ``appended_ms`` (Record.appended_ms): what a backend keeps of a partition's last
    append for readers in the same process."""

    first: int
    items: list[tuple[str, bytes]]
    decoded: list[Any]
    appended_ms: int | None = None

    def holds(self, offset: int) -> bool:
        return self.first <= offset < self.first + len(self.items)

    def records(self, topic: str, partition: int, offset: int, max_records: int
                ) -> list[Record]:
        """The records from ``offset`` on (one that ``holds``), at most ``max_records``."""
        start = offset - self.first
        end = min(len(self.items), start + max_records)
        items, decoded, appended = self.items, self.decoded, self.appended_ms
        return [Record(topic, partition, self.first + i, *items[i], decoded[i], appended)
                for i in range(start, end)]


def claimant() -> str:
    """Who claims a group, for the message of the process it fences off."""
    return f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}"


def fenced(group: str, where: str, by: str) -> Fenced:
    """The error of a role whose group another process claimed after it."""
    return Fenced(f"group '{group}' of {where} was taken over by another process ({by}): "
                  f"this one stops without writing its last outputs. Run one process per "
                  f"group: one joiner per shard, one trainer per registry")


def lost(where: str, topic: str, partition: int, offset: int, start: int, by: str) -> Lost:
    """The error of a read from ``offset``, below where the partition now starts
    (``start``): the records between were deleted ``by`` a retention before being read."""
    return Lost(f"{where}: up to {start - offset} record(s) of topic '{topic}' partition "
                f"{partition} (offsets {offset} to {start - 1}) were deleted before they were "
                f"read, by {by}: going on would skip them. Nothing brings them back: to go on "
                f"without them, run the role again with --skip-lost (it logs each gap and "
                f"writes it to the dead letters, reason lost), or start over in a new log and "
                f"registry; keep the retention longer than the log's readers may stop")


def skipping(group: str, topic: str, partition: int, offset: int, start: int) -> None:
    """Say (WARNING) that group ``group`` goes on from ``start`` past the records ``offset``
    to ``start - 1`` of a partition, deleted before it read them (``--skip-lost``)."""
    logging.getLogger("livelearn.log").warning(
        "group '%s' skips offsets %d to %d of topic '%s' partition %d (up to %d record(s)), "
        "deleted from the log before it read them (--skip-lost): it goes on from offset %d, "
        "and the gap goes to the dead letters (reason lost)", group, offset, start - 1, topic,
        partition, start - offset, start)


def read_again(log: Log, tp: TopicPartition, start: int, end: int, what: str,
               batch: int = 10_000) -> Iterator[list[Record]]:
    """The records of ``tp`` from offset ``start`` up to ``end`` (exclusive), ``batch`` at
    a time: what a restarted role reads again to rebuild what its checkpoint leaves out
    (join.runner, train.rebuild). Records the log deleted meanwhile (its retention) are
    skipped with a WARNING saying that ``what`` they gave is forgotten."""
    offset = start
    while offset < end:
        try:
            records = log.read(*tp, offset, min(batch, end - offset))
        except Lost:
            now = log.start_offset(*tp)
            if now <= offset:
                raise
            logging.getLogger("livelearn.log").warning(
                "records %d to %d of topic '%s' partition %d were deleted (the log's "
                "retention) before a restart read them again: %s", offset, now - 1, *tp, what)
            offset = now
            continue
        records = [r for r in records if r.offset < end]
        if not records:
            return
        yield records
        offset = records[-1].offset + 1


def start_offsets(log: Log, inputs: Iterable[TopicPartition], group: str
                  ) -> dict[TopicPartition, int]:
    """Where group ``group`` starts reading ``inputs`` it has no offset of (a new group, or
    a new partition): where each starts now. Records a retention deleted before the group
    read any are not skipped in silence: a WARNING says how many, per partition."""
    offsets = {tp: log.start_offset(*tp) for tp in inputs}
    for (topic, partition), start in offsets.items():
        if start:
            logging.getLogger("livelearn.log").warning(
                "group '%s' starts reading topic '%s' partition %d at offset %d, where it "
                "starts now: the %d record(s) before were deleted by the log's retention "
                "before this group read any", group, topic, partition, start, start)
    return offsets


def checksum(offsets: bytes, state: bytes | None) -> str:
    """The SHA-256 a checkpoint is stored with, so a damaged one is detected on load."""
    digest = hashlib.sha256(offsets)
    digest.update(b"\x00" if state is None else b"\x01" + state)
    return digest.hexdigest()


def sound(offsets: object, state: object, digest: object) -> bool:
    """Whether a stored checkpoint's offsets and state match the checksum stored with
    them. Parts of another type than were written (text where bytes were, as a
    hand-edited SQLite file can hold) are as damaged as a wrong checksum."""
    return (isinstance(offsets, bytes) and (state is None or isinstance(state, bytes))
            and isinstance(digest, str) and checksum(offsets, state) == digest)


class Log(ABC):
    """Topics with partitions, append, read from an offset, committed offsets per group."""

    @abstractmethod
    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create a topic if it does not exist; ConfigError if it exists with another
        partition count (``same_partitions``)."""

    def same_partitions(self, topic: str, partitions: int) -> None:
        """ConfigError if ``topic`` has another partition count than ``partitions``: the
        samples, checkpoints and shards of a log are made for one count."""
        have = self.partitions(topic)
        if have != partitions:
            raise ConfigError(f"topic '{topic}' has {have} partition(s), the pipeline says "
                              f"{partitions}: a log keeps the count it was made with (use a "
                              f"new log, or the pipeline's first count)")

    @abstractmethod
    def partitions(self, topic: str) -> int:
        """How many partitions a topic has; NotFound if it does not exist."""

    @abstractmethod
    def topic_id(self, topic: str) -> str:
        """An id of ``topic``'s sequence of records: the same for as long as this log holds
        the topic, another for a topic made anew (another log's, or one deleted and
        created again), whose offsets count other records. NotFound if it does not exist.
        A trainer records it in each version: the version's offsets are that topic's."""

    @abstractmethod
    def append(self, topic: str, records: Iterable[tuple[str, bytes]],
               decoded: Sequence[Any] | None = None) -> int:
        """Append (key, value) records in order; return how many were written.

        Outside ``atomic()`` the records are durable, and readable, when it returns.
        ``decoded``, one per record, is each value parsed (exactly ``orjson.loads``
        of it, or None where not known): a backend may keep the last ones for
        readers in this process (``Record.decoded``), so a role that reads what
        another wrote in the same process does not parse it again.
        """

    @abstractmethod
    def read(self, topic: str, partition: int, offset: int, max_records: int = 1000
             ) -> list[Record]:
        """Records of one partition from ``offset`` on, in offset order, at most ``max_records``.

        Returns what is there now, without waiting for more (so possibly fewer than
        ``max_records``); an empty list means there is nothing more yet. Lost if
        ``offset`` is below ``start_offset``: records not read yet were deleted.
        """

    def record_limit(self, topic: str) -> int | None:
        """The most bytes a record's key and value together may have in ``topic``, or None
        where any size goes. ``append`` refuses a larger one (TooLarge), writing nothing
        of the call; a role dead-letters it first (reason ``too_large``)."""
        return None

    def start_offset(self, topic: str, partition: int) -> int:
        """The offset of the partition's first record still held: a backend that deletes
        old records (Kafka's retention) moves it up; 0 where none are ever deleted."""
        return 0

    def offset_since(self, topic: str, partition: int, appended_ms: int) -> int:
        """Where a reader that needs only the records appended at or after ``appended_ms``
        (the wall clock, ms since the epoch) starts: no record before this offset was
        appended since (where the partition ends if none was). Where a backend keeps no
        append times (memory), where the partition starts."""
        return self.start_offset(topic, partition)

    @abstractmethod
    def end_offset(self, topic: str, partition: int) -> int:
        """Where the partition ends now: above every readable record, at most the offset
        the next appended record will get (equal to it where offsets are dense)."""

    @abstractmethod
    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        """Store a group's offsets and state together, atomically."""

    @abstractmethod
    def claim(self, group: str) -> Checkpoint:
        """Take the group over and return its ``committed`` checkpoint: from now on a
        commit of the group by any earlier claimant (another process that runs the same
        role) raises Fenced, and writes nothing of its atomic block. The newest claimant
        wins, as with Kafka's transactional producers: a role restarted while its former
        self still runs (hung, or started twice by mistake) fences that one off."""

    @abstractmethod
    def committed(self, group: str) -> Checkpoint:
        """The group's last sound commit, or an empty Checkpoint.

        A commit whose checksum fails is skipped for the one before it, with one
        warning; Corrupt if no commit of the group is sound.
        """

    def fell_back(self, group: str, where: str) -> None:
        """Warn that the group's newest commit is damaged and the one before it is taken:
        once per group (a role reads its checkpoint before and after it claims the group)."""
        warned: set[str] = self.__dict__.setdefault("_fell_back", set())
        if group not in warned:
            warned.add(group)
            logging.getLogger("livelearn.log").warning(
                "checkpoint of group '%s' in %s is corrupt (checksum); resuming from the one "
                "before it", group, where)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Appends and a commit made inside happen together or not at all, where supported."""
        yield

    def close(self) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Release connections. The log stays on disk."""

    def topic_partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [(t, p) for t in topics for p in range(self.partitions(t))]

    def end_offsets(self, topics: Iterable[str]) -> Mapping[TopicPartition, int]:
        return {tp: self.end_offset(*tp) for tp in self.topic_partitions(topics)}
