"""What a real Kafka broker does that the embedded log never does, and what a role makes
of it: records deleted by retention before a role read them, records larger than a
topic takes (max.message.bytes), topics made by hand with the wrong settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from livelearn.errors import Lost
from livelearn.join.runner import JoinRunner
from livelearn.log.kafka import KafkaLog
from livelearn.sim.pipeline import PIPELINE
from livelearn.spec import PREDICTIONS
from test_log_conformance import _prediction

T0 = 1_700_000_000_000


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    """A KafkaLog with topics under a prefix of this test's own, the pipeline's made."""
    log = KafkaLog(kafka_bootstrap, f"k{uuid.uuid4().hex[:12]}.", timeout_s=10)
    for topic in PIPELINE.topics:
        log.create_topic(topic, 1)
    yield log
    log.close()


def _predictions(log: KafkaLog, first: int, n: int) -> None:
    log.append(PREDICTIONS, [("u", orjson.dumps(_prediction(f"r{i}", T0 + i * 1000, "u")))
                             for i in range(first, first + n)])


def _delete_before(log: KafkaLog, topic: str, offset: int) -> None:
    """What retention does to old segments, now: the partition starts at ``offset``."""
    admin = AdminClient({"bootstrap.servers": log.bootstrap})
    tp = TopicPartition(log.prefix + topic, 0, offset)
    for future in admin.delete_records([tp]).values():
        future.result(10)


def test_records_deleted_before_a_joiner_read_them_stop_it_naming_what_was_lost(
        kafka: KafkaLog) -> None:
    _predictions(kafka, 0, 10)
    JoinRunner(kafka, PIPELINE, idle_after_s=0).step(4)
    assert kafka.committed("joiner").offsets[(PREDICTIONS, 0)] == 4
    _delete_before(kafka, PREDICTIONS, 7)
    assert kafka.start_offset(PREDICTIONS, 0) == 7
    runner = JoinRunner(kafka, PIPELINE, idle_after_s=0)
    with pytest.raises(Lost, match=r"group 'joiner' stops: .*up to 3 record\(s\) of topic "
                                   r"'predictions' partition 0 \(offsets 4 to 6\) were deleted"):
        runner.step(100)
    assert kafka.committed("joiner").offsets[(PREDICTIONS, 0)] == 4  # nothing skipped
    # a new group has nothing to lose: it starts where the topic starts now
    fresh = JoinRunner(kafka, PIPELINE, group="fresh", idle_after_s=0)
    assert fresh.step(100) == 3
