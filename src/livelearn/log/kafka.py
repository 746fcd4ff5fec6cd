"""The scaled-out Log on Apache Kafka (``kafka://host:port``), through confluent-kafka.

Topics are Kafka topics named ``prefix + topic``; a record's partition is
``partition_for(key, n)``, so SQLite and Kafka put every key in the same place.
A topic that exists already must keep every record: one compacted (or a
checkpoint topic that deletes) is a ConfigError.
Reads see committed data only (``isolation.level=read_committed``), so offsets
have gaps where transaction markers and aborted records sit; they only increase.

An append outside ``atomic()`` is acknowledged by the broker (acks=all) before it
returns. Inside ``atomic()`` appends and commits are kept until the block ends,
then written in one Kafka transaction whose ``transactional.id`` is tied to the
committing group, so a restarted role fences its former self: exactly-once.
A commit is a record in the compacted topic ``prefix + __livelearn_checkpoints``
under the key ``group/slot``; the two slots alternate, so the commit before the
newest one survives compaction and is there to fall back to if the newest is
damaged. A record is read with its message's timestamp (Record.appended_ms): the
topics livelearn creates say ``message.timestamp.type=LogAppendTime``, so it is
when the broker wrote the record, by the broker's clock; in a topic made before
with Kafka's default (CreateTime), when its producer sent it, by the producer's
clock. A read never
waits for records that are not there: it asks first where
the partition ends (its last stable offset) and stops there. A read from below
where the partition starts (records the topic's retention deleted) raises Lost:
it never skips them silently.

A topic's ``max.message.bytes`` bounds a record batch, not one record, and librdkafka
batches up to its producer's ``batch.size`` (1,000,000 bytes by default) per partition
and does not split a batch the broker refuses (MSG_SIZE_TOO_LARGE). So each producer is
made with a ``batch.size`` of at most the record_limit of the topics it writes: the
plain (idempotent) producers one per distinct batch.size, the topics of a default
max.message.bytes sharing librdkafka's default; the producer of a transaction of appends
only is made again, once, when a transaction needs a smaller one. A claimed group's
producer is made at ``claim()`` with the smallest record_limit the log knows then and
never made again (a new producer of its transactional.id would fence a newer process of
the group); a transaction of it that writes a topic of a smaller limit learned since is
sent in chunks that fit, each acknowledged before the next (``_send``). Every record
that fits its topic is written, in order; the default case is as before.

URL: ``kafka://host:port[,host:port...][?prefix=P&replication=R&timeout=S]``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from livelearn.errors import ConfigError, Corrupt, Lost, NotFound, TooLarge, Unavailable
from livelearn.events import is_digits
from livelearn.log.base import (
    Checkpoint,
    Log,
    Record,
    checksum,
    fenced,
    lost,
    partition_for,
    skipping,
    sound,
)

log = logging.getLogger("livelearn.log")


class _Detail(logging.LoggerAdapter):  # type: ignore[type-arg]
    """librdkafka's own messages, on logger ``livelearn.log.librdkafka`` at DEBUG (each
    prefixed with librdkafka's level), those it calls critical excepted. A broker gone,
    it logs each failed connection, several a second, and retries; the KafkaLog raises
    one error naming the request that failed when it gives up. ``livelearn -v`` shows
    them."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level < logging.CRITICAL:
            msg, level = f"{logging.getLevelName(level)} {msg}", logging.DEBUG
        super().log(level, msg, *args, **kwargs)


_librdkafka = _Detail(logging.getLogger("livelearn.log.librdkafka"))

#: The compacted topic (after the prefix) that holds every group's checkpoints.
CHECKPOINTS = "__livelearn_checkpoints"
_LEGAL = re.compile(r"[A-Za-z0-9._-]*")
#: How long a transaction that a crashed process left open holds readers back at most.
_TRANSACTION_TIMEOUT_MS = 15_000
#: How long a failed request waits at most to learn whether its topic was deleted
#: (KafkaLog._gone): with the broker away, the question waits out its timeout, and the
#: log's (30 s) would add that much to every failure of an outage.
_GONE_CHECK_S = 2.0
_MAX_MESSAGE = 64 * 2**20  # the largest checkpoint (offsets + state) a commit can store
#: The largest record batch our producers send (librdkafka refuses a larger record at once).
_PRODUCER_MAX = _MAX_MESSAGE + 2**20
#: Bytes of a record batch's framing around one record's key and value, with room to spare.
_FRAMING = 1024
#: librdkafka's default batch.size: the most bytes (framing included) a producer sends to
#: one partition in one record batch. A topic whose record_limit is smaller gets that.
_BATCH = 1_000_000
#: The most bytes a record adds to a batch besides its key and value (record batch v2:
#: varints of length, timestamp and offset deltas, key and value lengths, headers).
_RECORD_FRAMING = 40


def limit_of(max_message_bytes: int) -> int:
    """The most bytes (key and value) a record may have in a topic of this
    ``max.message.bytes``: at most the producer's, less ``_FRAMING`` (KafkaLog.record_limit).
    """
    return min(max_message_bytes, _PRODUCER_MAX) - _FRAMING


#: The settings of a topic livelearn creates: each record's timestamp is when the broker
#: wrote it (Record.appended_ms), whatever the clock of the producer that sent it (a user's
#: app writing events directly, its clock a year ahead, would stamp them ahead too).
_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
_CHECKPOINT_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(16 * 2**20),
                      "min.cleanable.dirty.ratio": "0.1", "max.message.bytes": str(_MAX_MESSAGE)}


@dataclass
class _Pending:
    """What an ``atomic()`` block of one thread has appended and committed so far."""

    depth: int = 0
    records: list[tuple[str, int, str, bytes]] = field(default_factory=list)
    commits: list[tuple[str, Checkpoint]] = field(default_factory=list)


class KafkaLog(Log):
    """A Log on a Kafka cluster. Safe to share between threads."""

    def __init__(self, bootstrap: str, prefix: str = "", replication: int = 1,
                 timeout_s: float = 30.0):
        if not _LEGAL.fullmatch(prefix):
            raise ConfigError(f"kafka topic prefix {prefix!r}: letters, digits, '.', '_', '-'")
        self.bootstrap, self.prefix = bootstrap, prefix
        self.replication, self.timeout_s = replication, timeout_s
        self._common: dict[str, Any] = {
            "bootstrap.servers": bootstrap, "logger": _librdkafka, "socket.nagle.disable": True}
        self._admin = AdminClient(dict(self._common))
        self._producers: dict[int, Producer] = {}  # batch.size -> idempotent producer
        self._transactional: dict[str, Producer] = {}  # by owner (group(s) or appends-)
        self._batch_of: dict[str, int] = {}  # owner -> its transactional producer's batch.size
        self._producers_lock = threading.Lock()
        self._consumer = self._new_consumer()
        self._ends = self._new_consumer()  # never assigned: no fetch holds up its questions
        self._reading: tuple[str, int, int] | None = None  # assigned (name, partition, next)
        self._known: set[str] = set()  # topics whose metadata the reading consumer has
        self._read_lock = threading.Lock()
        self._txn_lock = threading.Lock()
        self._local = threading.local()
        self._partitions: dict[str, int] = {}
        self._limits: dict[str, int] = {}  # topic -> record_limit
        self._batches: dict[str, int] = {}  # Kafka name -> the batch.size its records take
        self._slots: dict[str, int] = {}  # group -> the slot its newest commit is in
        self._instance = uuid.uuid4().hex[:12]

    def _new_consumer(self) -> Consumer:
        return Consumer({**self._common, **_CONSUMER,
                         "group.id": f"livelearn-reader-{uuid.uuid4()}"})

    @classmethod
    def from_url(cls, url: str) -> KafkaLog:
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc or parts.path not in ("", "/") or \
                not all(_has_port(broker) for broker in parts.netloc.split(",")):
            raise ConfigError(f"log URL {url!r}: expected kafka://host:port[?prefix=...]")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(query) - {"prefix", "replication", "timeout"}
        if unknown:
            raise ConfigError(f"log URL {url!r}: unknown option(s) {', '.join(sorted(unknown))};"
                              " expected prefix, replication, timeout")
        try:
            replication, timeout = int(query.get("replication", 1)), float(query.get("timeout", 30))
        except ValueError:
            replication, timeout = 0, 0.0  # not numbers: refused below
        # librdkafka takes neither a timeout of -1, NaN or infinity (ValueError), nor 0 s
        if replication < 1 or not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"log URL {url!r}: replication must be an integer >= 1 and "
                              f"timeout a number of seconds > 0")
        return cls(parts.netloc, query.get("prefix", ""), replication, timeout)

    # -- topics -------------------------------------------------------------------------

    def _name(self, topic: str) -> str:
        if not topic or not _LEGAL.fullmatch(topic):
            raise ConfigError(f"topic {topic!r}: Kafka allows letters, digits, '.', '_', '-'")
        return self.prefix + topic

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        if partitions < 1:
            raise ConfigError(f"topic '{topic}': partitions must be >= 1, got {partitions}")
        self._create(self._name(topic), partitions, _TOPIC_CONFIG)
        self.same_partitions(topic, partitions)
        self._keeps_every_record(topic, "compact", "would keep only the newest record of "
                                 "each key")

    def _create(self, name: str, partitions: int, config: dict[str, str]) -> None:
        new = NewTopic(name, num_partitions=partitions, replication_factor=self.replication,
                       config=config)
        future = self._admin.create_topics([new], operation_timeout=self.timeout_s,
                                           request_timeout=self.timeout_s)[name]
        deadline = time.monotonic() + self.timeout_s
        while not future.done() and time.monotonic() < deadline:
            self._admin.poll(0.1)  # hands librdkafka's messages meanwhile to the logger
        try:
            future.result(timeout=0)
        except KafkaException as e:
            code = e.args[0].code()
            if code in _REFUSED:
                raise ConfigError(f"kafka://{self.bootstrap} refused topic '{name}' with "
                                  f"{partitions} partitions, replication {self.replication}: "
                                  f"{e.args[0].str()}") from e
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise self._asking_failed(f"creating topic '{name}'", e) from e
        except TimeoutError as e:
            raise self._no_answer(f"creating topic '{name}'") from e
        self._await_metadata(name)

    def _await_metadata(self, name: str) -> None:
        """Wait until the new topic's partitions show in the metadata (they lag a little)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            meta = self._admin.list_topics(topic=name, timeout=self.timeout_s).topics.get(name)
            if meta is not None and meta.error is None and meta.partitions:
                return
            time.sleep(0.05)

    def partitions(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            name = self._name(topic)
            try:
                meta = self._admin.list_topics(topic=name, timeout=self.timeout_s).topics[name]
            except KafkaException as e:
                raise self._asking_failed(f"looking up topic '{name}'", e) from e
            if meta.error is not None or not meta.partitions:
                raise NotFound(f"topic '{topic}' does not exist in kafka://{self.bootstrap} "
                               f"(as '{name}')")
            n = self._partitions[topic] = len(meta.partitions)
        return n

    def topic_id(self, topic: str) -> str:
        """The broker's id of the topic (a UUID a topic gets when it is created)."""
        self.partitions(topic)
        name = self._name(topic)
        try:
            described = self._admin.describe_topics(TopicCollection([name]),
                                                     request_timeout=self.timeout_s)[name]
            return str(described.result(self.timeout_s).topic_id)
        except (KafkaException, TimeoutError) as e:
            raise self._gone([name]) or \
                self._asking_failed(f"asking topic '{name}' its id", e) from e

    def record_limit(self, topic: str) -> int:
        """The topic's max.message.bytes (the largest record batch the broker takes), and
        at most the producer's, less ``_FRAMING``; asked of the broker once. The producers
        send the topic's records in batches of at most that many bytes."""
        limit = self._limits.get(topic)
        if limit is None:
            limit = limit_of(int(self._setting(topic, "max.message.bytes")))
            self._batches[self._name(topic)] = max(1, min(_BATCH, limit))
            self._limits[topic] = limit
        return limit

    def _setting(self, topic: str, key: str) -> str:
        name = self._name(topic)
        resource = ConfigResource(ResourceType.TOPIC, name)
        try:
            config = self._admin.describe_configs([resource], request_timeout=self.timeout_s
                                                  )[resource].result(self.timeout_s)
            return str(config[key].value)
        except (KafkaException, TimeoutError) as e:
            raise self._asking_failed(f"asking topic '{name}' its {key}", e) from e

    def _keeps_every_record(self, topic: str, policy: str, which: str) -> None:
        """ConfigError if the topic, made before (by hand, say), has ``policy`` among its
        cleanup.policy: Kafka would delete records livelearn needs."""
        have = self._setting(topic, "cleanup.policy")
        if policy in have.split(","):
            raise ConfigError(f"topic '{self._name(topic)}' in kafka://{self.bootstrap} has "
                              f"cleanup.policy={have}, which {which} (delete the topic, "
                              f"or use another ?prefix=)")

    def _fits(self, topic: str, items: list[tuple[str, int, str, bytes]],
              what: Callable[[str], str]) -> None:
        """TooLarge naming the first of ``items`` larger than ``topic`` takes."""
        limit = self.record_limit(topic)
        for name, _, key, value in items:
            size = len(key.encode()) + len(value)
            if size > limit:
                raise TooLarge(
                    f"kafka://{self.bootstrap}: {what(key)} is {size} bytes, more than the "
                    f"{limit} a record of topic '{name}' may have (its max.message.bytes, "
                    f"less {_FRAMING} for the framing): nothing of it was written. Raise "
                    f"the topic's max.message.bytes (kafka-configs.sh --alter --entity-type "
                    f"topics --entity-name {name} --add-config max.message.bytes=N), or make "
                    f"it smaller")

    def _unavailable(self, doing: str, error: object) -> Unavailable:
        return Unavailable(f"kafka://{self.bootstrap}: {doing} failed: {error}")

    def _gone(self, names: Sequence[str]) -> NotFound | None:
        """NotFound naming the first of topics ``names`` (Kafka's names) that the broker says
        no longer exists (deleted while this process used it), else None: a request about
        it failed, and waiting for the broker would not bring it back."""
        for name in names:
            try:
                meta = self._admin.list_topics(
                    topic=name, timeout=min(self.timeout_s, _GONE_CHECK_S)).topics.get(name)
            except KafkaException:
                return None  # no answer soon: the broker is away (or slow), not the topic
            if meta is None or (meta.error is not None and
                                meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                topic = name[len(self.prefix):]
                self._partitions.pop(topic, None)
                return NotFound(
                    f"topic '{topic}' (as '{name}') no longer exists in kafka://"
                    f"{self.bootstrap}: it was deleted while this process used it, and its "
                    f"records with it. A role started again would make it anew, empty, and "
                    f"its offsets would count other records: start over in a new log and "
                    f"registry (another ?prefix= in the log URL, a new --registry) and ingest "
                    f"the events again")
        return None

    def _asking_failed(self, doing: str, error: KafkaException | TimeoutError) -> Unavailable:
        """A question to the broker (each asked with ``timeout_s``) that failed: one that
        no broker answered (none reachable at the address) says so, as ``_no_answer``,
        rather than librdkafka's raw error."""
        cause = error.args[0] if error.args else None
        if isinstance(error, TimeoutError) or (isinstance(cause, KafkaError)
                                               and cause.code() in _NO_BROKER):
            return self._no_answer(doing)
        return self._unavailable(doing, error)

    def _no_answer(self, doing: str) -> Unavailable:
        return self._unavailable(doing, f"no answer in {self.timeout_s:g} s (is "
                                 f"{self.bootstrap} a Kafka broker's address? livelearn -v "
                                 f"shows each attempt to connect)")

    # -- appends ------------------------------------------------------------------------

    def append(self, topic: str, records: Iterable[tuple[str, bytes]],
               decoded: Sequence[Any] | None = None) -> int:
        n, name = self.partitions(topic), self._name(topic)
        items = [(name, partition_for(key, n) if n > 1 else 0, key, value)
                 for key, value in records]
        self._fits(topic, items, lambda key: f"a record of key {key[:100]!r}")
        pending = self._pending()
        if pending.depth:
            pending.records += items
        elif items:
            batch = self._batches[name]
            self._send(self._plain(batch), items, batch)
        return len(items)

    def _plain(self, batch: int) -> Producer:
        """The idempotent producer (for appends outside ``atomic()``) of this batch.size."""
        producer = self._producers.get(batch)
        if producer is None:
            with self._producers_lock:
                producer = self._producers.get(batch)
                if producer is None:
                    producer = self._producers[batch] = Producer(
                        {**self._common, **_PRODUCER, "enable.idempotence": True,
                         "batch.size": batch})
        return producer

    def _send(self, producer: Producer, items: list[tuple[str, int, str, bytes]],
              batch: int = _BATCH) -> dict[tuple[str, int], int]:
        """Produce and wait for every acknowledgement; the last offset per partition.

        ``batch`` is the producer's batch.size: the records of a topic that takes smaller
        batches go in chunks that fit it, each acknowledged before the next is produced
        (so librdkafka cannot batch them together)."""
        errors: list[KafkaError] = []
        last: dict[tuple[str, int], int] = {}

        def delivered(error: KafkaError | None, message: Message[bytes, bytes]) -> None:
            if error is not None:
                errors.append(error)
            else:
                where = (message.topic() or "", message.partition() or 0)
                last[where] = max(last.get(where, -1), message.offset() or 0)

        batches = self._batches
        smaller = {name for name in {item[0] for item in items}
                   if batches.get(name, batch) < batch}  # each was asked its limit (_fits)
        held: dict[tuple[str, int], int] = {}  # bytes produced and not yet acknowledged
        for name, partition, key, value in items:
            if name in smaller:
                size = len(key.encode()) + len(value) + _RECORD_FRAMING
                were = held.get((name, partition), 0)
                if were and were + size > batches[name]:
                    self._acknowledged(producer, len(items), errors)
                    held.clear()
                    were = 0
                held[(name, partition)] = were + size
            self._produce(producer, name, partition, key, value, delivered)
        self._acknowledged(producer, len(items), errors)
        return last

    def _acknowledged(self, producer: Producer, n: int, errors: list[KafkaError]) -> None:
        """Wait until the broker acknowledged every record produced: Unavailable if it
        refused one (``errors``, filled by the delivery callback) or did not answer."""
        try:
            left = producer.flush(self.timeout_s)
        except SystemError as e:  # a fatal error (fenced) set while it calls `delivered`
            if isinstance(e.__cause__, KafkaException):
                raise e.__cause__ from None
            raise
        if errors:
            raise self._unavailable(f"appending {n} records",
                                    errors[0]) from KafkaException(errors[0])
        if left:
            raise self._unavailable(f"appending {n} records",
                                    f"{left} not acknowledged in {self.timeout_s} s")

    @staticmethod
    def _produce(producer: Producer, name: str, partition: int, key: str, value: bytes,
                 on_delivery: Callable[[KafkaError | None, Message[bytes, bytes]], None]
                 ) -> None:
        while True:
            try:
                producer.produce(name, value, key.encode(), partition, on_delivery=on_delivery)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)

    # -- reads --------------------------------------------------------------------------

    def read(self, topic: str, partition: int, offset: int, max_records: int = 1000
             ) -> list[Record]:
        name = self._partition(topic, partition)
        with self._read_lock:
            start, end = self._watermarks(name, partition)
            if offset < start:
                raise self._lost(topic, partition, offset, start)
            if offset >= end or max_records <= 0:
                return []
            self._seek(name, partition, offset)
            return self._poll(topic, name, partition, end, max_records)

    def start_offset(self, topic: str, partition: int) -> int:
        name = self._partition(topic, partition)
        with self._read_lock:
            return self._watermarks(name, partition)[0]

    def offset_since(self, topic: str, partition: int, appended_ms: int) -> int:
        """By the records' timestamps (when the broker wrote them, in the topics livelearn
        creates: LogAppendTime; else their producer's clock when it sent them, livelearn's
        producers leaving them so). A time before the epoch asks from 0: Kafka takes a
        negative time for a special request (-1 the end, -2 the start), and refuses the
        others."""
        appended_ms = max(appended_ms, 0)
        name = self._partition(topic, partition)
        doing = f"asking where '{name}' partition {partition} holds records since {appended_ms}"
        with self._read_lock:
            try:
                [found] = self._ends.offsets_for_times(
                    [TopicPartition(name, partition, appended_ms)], timeout=self.timeout_s)
            except KafkaException as e:
                raise self._asking_failed(doing, e) from e
            if found.error is not None:
                raise self._unavailable(doing, found.error)
            return found.offset if found.offset >= 0 else self._stable_end(name, partition)

    def _lost(self, topic: str, partition: int, offset: int, start: int) -> Lost:
        return lost(f"kafka://{self.bootstrap}", topic, partition, offset, start,
                    "the topic's retention (retention.ms, retention.bytes) or by hand")

    def _seek(self, name: str, partition: int, offset: int) -> None:
        """Assign the consumer to read from ``offset``, unless it is there already."""
        if self._reading != (name, partition, offset):
            if name not in self._known:  # else librdkafka may look the topic up a second later
                try:
                    self._consumer.list_topics(name, timeout=self.timeout_s)
                except KafkaException as e:  # the broker went away since it said where it ends
                    raise self._asking_failed(f"looking up topic '{name}'", e) from e
                self._known.add(name)
            self._consumer.assign([TopicPartition(name, partition, offset)])
            self._reading = (name, partition, offset)

    def _poll(self, topic: str, name: str, partition: int, end: int, max_records: int
              ) -> list[Record]:
        """Records up to ``end`` (the stable end seen before), stopping at ``max_records``."""
        records: list[Record] = []
        deadline = time.monotonic() + self.timeout_s
        while len(records) < max_records and time.monotonic() < deadline:
            message = self._consumer.poll(0.5)
            if message is None or (message.topic(), message.partition()) != (name, partition):
                continue
            offset, error = message.offset() or 0, message.error()
            if error is None:
                key = message.key()
                kind, at = message.timestamp()
                records.append(Record(topic, partition, offset, key.decode() if key else "",
                                      message.value() or b"", None,
                                      None if kind == TIMESTAMP_NOT_AVAILABLE else at))
                self._reading = (name, partition, offset + 1)
                if offset + 1 >= end:
                    return records
            elif error.code() == KafkaError._PARTITION_EOF:
                self._reading = (name, partition, offset)
                if offset >= end:  # an end that an earlier read reached is below ``end``
                    return records
            elif error.code() == KafkaError._AUTO_OFFSET_RESET:  # deleted since asked
                at = self._reading[2] if self._reading else 0
                self._reading = None
                raise self._lost(topic, partition, at, self._watermarks(name, partition)[0])
            else:
                self._forget(name)
                raise self._gone([name]) or \
                    self._unavailable(f"reading '{name}' partition {partition}", error)
        if not records:
            self._forget(name)
            raise self._gone([name]) or self._unavailable(
                f"reading '{name}' partition {partition}",
                f"nothing came in {self.timeout_s} s up to offset {end}")
        return records

    def _forget(self, name: str) -> None:
        """After a read of topic ``name`` that failed: the next read assigns its partition
        anew and looks its leader up first (``_seek``). Else a read again from the same
        offset kept the assignment as it was, and librdkafka, whose fetching of it stopped
        while the broker was away, may not fetch it again when the broker comes back: each
        read failed with nothing in the timeout, and a live role waited for good."""
        self._reading = None
        self._known.discard(name)

    def end_offset(self, topic: str, partition: int) -> int:
        name = self._partition(topic, partition)
        with self._read_lock:
            return self._stable_end(name, partition)

    def _partition(self, topic: str, partition: int) -> str:
        """The Kafka name of the topic; NotFound if it has no such partition."""
        if not 0 <= partition < self.partitions(topic):
            raise NotFound(f"topic '{topic}' has no partition {partition}")
        return self._name(topic)

    def _stable_end(self, name: str, partition: int) -> int:
        """The last stable offset: every committed record of the partition is below it."""
        return self._watermarks(name, partition)[1]

    def _watermarks(self, name: str, partition: int) -> tuple[int, int]:
        """The partition's start (its first record still held) and its last stable offset."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            # asked again every few seconds: a question in flight when the broker went
            # away is not answered when it comes back, but waits out its own timeout
            attempt = max(0.1, min(_ASK_AGAIN_S, deadline - time.monotonic()))
            try:
                low, high = self._ends.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=attempt, cached=False)
                return int(low), int(high)
            except KafkaException as e:
                # a new topic's leader, or a restarted broker's, may take a moment to be
                # known: librdkafka does not flag all of those answers retriable
                error = e.args[0]
                transient = error.retriable() or error.code() in _NOT_YET
                if not transient or time.monotonic() > deadline:
                    raise self._gone([name]) or self._unavailable(
                        f"asking where '{name}' partition {partition} ends", e) from e
                time.sleep(0.05)
                if error.code() in _NOT_YET:  # librdkafka may not look its leader up again
                    with suppress(KafkaException):
                        self._ends.list_topics(name, timeout=attempt)

    def check_group(self, group: str, topics: Iterable[str],
                    on_lost: Callable[[tuple[str, int], int, int], None] | None = None
                    ) -> None:
        """Lost if the Kafka consumer group ``group`` (of another client than livelearn's
        roles, which keep their offsets in their checkpoints: the Flink join's) committed
        an offset of ``topics`` below where its partition now starts. Such a client would
        skip the records deleted before it read them without a word.

        Given ``on_lost``, each such gap is logged instead (a WARNING naming the group,
        the partition and the offsets), ``on_lost((topic, partition), offset, start)``
        records it, and then the group's offset is committed at ``start``: the client
        goes on from there, and the gap is not found again (unless this process ends
        between the two: ``on_lost`` is then called again for it)."""
        where = self.topic_partitions(topics)
        consumer = Consumer({**self._common, **_CONSUMER, "group.id": self.prefix + group})
        try:
            committed = consumer.committed([TopicPartition(self._name(t), p) for t, p in where],
                                           timeout=self.timeout_s)
            moved = []
            for (topic, partition), at in zip(where, committed, strict=True):
                start = self._watermarks(at.topic, partition)[0]
                if 0 <= at.offset < start:
                    if on_lost is None:
                        raise Lost(f"group '{group}' stops: "
                                   f"{self._lost(topic, partition, at.offset, start)}")
                    skipping(group, topic, partition, at.offset, start)
                    on_lost((topic, partition), at.offset, start)
                    moved.append(TopicPartition(at.topic, partition, start))
            if moved:
                consumer.commit(offsets=moved, asynchronous=False)
        except KafkaException as e:
            raise self._asking_failed(f"asking group '{group}' where it is", e) from e
        finally:
            consumer.close()

    # -- checkpoints --------------------------------------------------------------------

    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        """Write the checkpoint into the slot that does not hold the group's newest one."""
        pending = self._pending()
        if pending.depth:
            pending.commits.append((group, checkpoint))
            return
        slot = self._next_slot(group)
        record = self._checkpoint_record(group, checkpoint, slot)
        batch = self._batches[record[0]]
        self._send(self._plain(batch), [record], batch)
        self._slots[group] = slot

    def _checkpoint_record(self, group: str, checkpoint: Checkpoint, slot: int
                           ) -> tuple[str, int, str, bytes]:
        self._ensure_checkpoints()
        record = (self.prefix + CHECKPOINTS, 0, f"{group}/{slot}", encode_checkpoint(checkpoint))
        self._fits(CHECKPOINTS, [record], lambda _: f"the checkpoint of group '{group}' (its "
                   f"state: what the role holds, such as a joiner's open windows)")
        return record

    def _next_slot(self, group: str) -> int:
        if group not in self._slots:
            newest = self._newest_first(group)
            self._slots[group] = int(newest[0].key.rsplit("/", 1)[1]) if newest else 1
        return 1 - self._slots[group]

    def claim(self, group: str) -> Checkpoint:
        """A new transactional producer for the group: starting it fences off every
        earlier one of the same ``transactional.id``, in whatever process. Its batch.size
        is the smallest the log knows now (a role asks the limits of the topics it writes
        before it claims, KafkaLog.record_limit)."""
        stale = self._transactional.pop(group, None)
        if stale is not None:
            stale.flush(self.timeout_s)
        self._transactional_producer(group)
        return self.committed(group)

    def committed(self, group: str) -> Checkpoint:
        records = self._newest_first(group)
        for i, record in enumerate(records):
            checkpoint = decode_checkpoint(record.value)
            if checkpoint is not None:
                if i:
                    self.fell_back(group, f"kafka://{self.bootstrap}")
                return checkpoint
        if records:
            raise Corrupt(f"every checkpoint of group '{group}' in kafka://{self.bootstrap} "
                          f"(topic '{self.prefix + CHECKPOINTS}') is corrupt")
        return Checkpoint()

    def _ensure_checkpoints(self) -> None:
        if CHECKPOINTS not in self._partitions:
            self._create(self.prefix + CHECKPOINTS, 1, _CHECKPOINT_CONFIG)
            self.partitions(CHECKPOINTS)
            self._keeps_every_record(CHECKPOINTS, "delete", "would delete checkpoints "
                                     "after the topic's retention")

    def _newest_first(self, group: str) -> list[Record]:
        """The newest record of each of the group's two slots, the newer one first."""
        self._ensure_checkpoints()
        slots = {f"{group}/0", f"{group}/1"}
        newest: dict[str, Record] = {}
        offset = self.start_offset(CHECKPOINTS, 0)
        while batch := self.read(CHECKPOINTS, 0, offset, 10_000):
            newest.update((r.key, r) for r in batch if r.key in slots)
            offset = batch[-1].offset + 1
        return sorted(newest.values(), key=lambda r: -r.offset)

    # -- transactions -------------------------------------------------------------------

    def _pending(self) -> _Pending:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = _Pending()
        return pending

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Appends and commits inside are written at the end, in one Kafka transaction.

        Nothing is sent before the block ends, so an exception inside leaves no trace.
        Nested blocks join the outermost one.
        """
        pending = self._pending()
        pending.depth += 1
        try:
            yield
        except BaseException:
            pending.depth -= 1
            if not pending.depth:
                self._local.pending = None
            raise
        pending.depth -= 1
        if not pending.depth:
            self._local.pending = None
            if pending.records or pending.commits:
                self._transact(pending)

    def _transact(self, pending: _Pending) -> None:
        groups = sorted({group for group, _ in pending.commits})
        owner = ",".join(groups) if groups else f"appends-{self._instance}"
        slots = {group: self._next_slot(group) for group in groups}
        items = list(pending.records)
        for group, checkpoint in pending.commits:
            items.append(self._checkpoint_record(group, checkpoint, slots[group]))
        need = min(self._batches[name] for name in {item[0] for item in items})
        with self._txn_lock:
            # a claimed group's producer is never made again: see _transactional_producer
            producer = self._transactional_producer(owner, None if groups else need)
            last = self._in_transaction(producer, owner, items)
        self._slots.update(slots)
        self._wait_until_stable(last)

    def _transactional_producer(self, owner: str, need: int | None = None) -> Producer:
        """The producer of ``owner``'s transactions, made if it has none (init_transactions
        fences every earlier producer of its transactional.id) with a batch.size of
        ``need``, or else the smallest the log knows. Given ``need`` (appends only, no
        commit), one of a larger batch.size is made again; a claimed group's is not, as
        that would fence a newer process of the group: ``_send`` sends in chunks."""
        producer = self._transactional.get(owner)
        if producer is not None and (need is None or self._batch_of[owner] <= need):
            return producer
        if producer is not None:
            producer.flush(self.timeout_s)  # no transaction is open: nothing is waiting
        batch = need if need is not None else min([_BATCH, *self._batches.values()])
        producer = Producer({**self._common, **_PRODUCER, "batch.size": batch,
                             "transactional.id": f"livelearn-{self.prefix}{owner}",
                             "transaction.timeout.ms": _TRANSACTION_TIMEOUT_MS})
        try:
            producer.init_transactions(self.timeout_s)
        except KafkaException as e:
            raise self._unavailable("starting a transaction", e) from e
        self._transactional[owner], self._batch_of[owner] = producer, batch
        return producer

    def _in_transaction(self, producer: Producer, owner: str,
                        items: list[tuple[str, int, str, bytes]]) -> dict[tuple[str, int], int]:
        try:
            producer.begin_transaction()
            last = self._send(producer, items, self._batch_of[owner])
            producer.commit_transaction(self.timeout_s)
            return last
        except (KafkaException, Unavailable) as e:
            self._abort(producer, owner, e, claimed=owner != f"appends-{self._instance}")
            if _is_fenced(e):
                raise fenced(owner, f"kafka://{self.bootstrap}", "a newer producer of "
                             f"transactional.id 'livelearn-{self.prefix}{owner}'") from e
            raise self._gone(sorted({item[0] for item in items})) or \
                self._unavailable(f"a transaction of {len(items)} records", e) from e

    def _abort(self, producer: Producer, owner: str, error: Exception, claimed: bool) -> None:
        """Abort the open transaction; a producer that cannot go on (fenced) is dropped, and
        so is one of appends only (not ``claimed`` by a group), whose next transaction gets
        a new one: after records that timed out (a broker away longer than the transaction
        timeout), librdkafka purged the next transaction's records once the broker was back
        (_PURGE_QUEUE), so a server's first request then got 503. A claimed group's
        producer is kept: making it again would fence a newer process of the group."""
        fatal = isinstance(error, KafkaException) and error.args[0].fatal()
        if not fatal:
            try:
                producer.abort_transaction(self.timeout_s)
                if claimed:
                    return
            except KafkaException:
                pass
        self._transactional.pop(owner, None)

    def _wait_until_stable(self, last: dict[tuple[str, int], int]) -> None:
        """Wait until readers can see what a transaction wrote: the commit markers are
        written after commit_transaction returns, and only then does the stable end move.
        A transaction that a crashed process left open before ours holds it back until the
        broker aborts it (at the latest after the transaction timeout)."""
        deadline = time.monotonic() + self.timeout_s + _TRANSACTION_TIMEOUT_MS / 1000
        with self._read_lock:
            for (name, partition), offset in last.items():
                while self._stable_end(name, partition) <= offset:
                    if time.monotonic() > deadline:
                        raise self._unavailable(f"committing to '{name}'",
                                                "the transaction did not become visible")
                    time.sleep(0.002)

    def close(self) -> None:
        for producer in (*self._producers.values(), *self._transactional.values()):
            producer.flush(self.timeout_s)
        self._transactional.clear()
        with self._read_lock:
            self._consumer.close()
            self._ends.close()


_REFUSED = {KafkaError.INVALID_REPLICATION_FACTOR, KafkaError.INVALID_PARTITIONS,
            KafkaError.INVALID_CONFIG, KafkaError.TOPIC_EXCEPTION,
            KafkaError.POLICY_VIOLATION}
#: What librdkafka answers a question that no broker answered within its timeout.
_NO_BROKER = {KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
_NOT_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError._UNKNOWN_PARTITION, *_NO_BROKER}
_ASK_AGAIN_S = 2.0
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
_PRODUCER = {"acks": "all", "linger.ms": 1, "message.max.bytes": _PRODUCER_MAX}
_CONSUMER = {"enable.auto.commit": False, "enable.auto.offset.store": False,
             "isolation.level": "read_committed", "enable.partition.eof": True,
             "auto.offset.reset": "error", "fetch.wait.max.ms": 10}


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """``sha256 \\n offsets-json \\n (- | + state)``: the SHA-256 covers offsets and state
    exactly as SQLiteLog's does."""
    offsets = orjson.dumps([[t, p, o] for (t, p), o in sorted(checkpoint.offsets.items())])
    state = b"-" if checkpoint.state is None else b"+" + checkpoint.state
    return b"\n".join((checksum(offsets, checkpoint.state).encode(), offsets, state))


def decode_checkpoint(value: bytes) -> Checkpoint | None:
    """The checkpoint a record holds, or None if it is damaged."""
    try:
        digest, offsets, marked = value.split(b"\n", 2)
        if marked != b"-" and marked[:1] != b"+":
            return None
        state = None if marked == b"-" else marked[1:]
        if not sound(offsets, state, digest.decode()):
            return None
        return Checkpoint({(t, p): o for t, p, o in orjson.loads(offsets)}, state)
    except (ValueError, TypeError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None


def _is_fenced(error: Exception) -> bool:
    """Whether a transaction failed because a newer producer of its id started."""
    if isinstance(error, Unavailable):
        error = error.__cause__ if isinstance(error.__cause__, KafkaException) else error
    return isinstance(error, KafkaException) and error.args[0].code() in _FENCED


def _has_port(broker: str) -> bool:
    """Whether ``host:port`` ends in a port number (librdkafka would take 9092 unsaid)."""
    host, _, port = broker.rpartition(":")
    return bool(host) and is_digits(port)
