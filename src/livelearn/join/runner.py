"""The join role: feeds the Joiner from the Log in a deterministic order, checkpoints it.

Records of all inputs are merged by (ts, input), looking only at the head of
each input, so the order (and with it every sample and dead letter) depends on
the log's contents alone, never on batch sizes or timing. While an input has
nothing to read the merge waits for it, unless it has been empty for
``idle_after_s`` seconds: then it is idle and left out of the watermark (the
one place where wall-clock timing can change a result, as in Flink). In a
final step, an input with nothing left is idle at once.

Each step writes its samples and dead letters and commits the input offsets
and the joiner's state in one atomic step of the Log.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from pathlib import Path

import orjson

from livelearn.join.joiner import Joiner, Output, outputs_by_topic
from livelearn.log.base import Checkpoint, Log, Record, TopicPartition
from livelearn.spec import DEAD_LETTERS, SAMPLES, FeedbackJoin, Pipeline

_MALFORMED_FIRST = -(2**63)


def _ts(record: Record) -> int:
    """The record's event time for the merge; unreadable records go first (to dead letters)."""
    try:
        ts = orjson.loads(record.value).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return _MALFORMED_FIRST
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else _MALFORMED_FIRST


def make_joiner(pipeline: Pipeline, inputs: list[TopicPartition], data_dir: str | Path = "."
                ) -> Joiner:
    """The Joiner of a pipeline: a feedback join, or a label-in-event join (window 0)
    whose enricher reads the pipeline's tables from ``data_dir``."""
    join = pipeline.feedback
    if isinstance(join, FeedbackJoin):
        return Joiner(inputs, pipeline.schemas, join.window_ms, join.label,
                      join.allowed_lateness_ms)
    from livelearn.join.enrich import Enricher

    return Joiner(inputs, pipeline.schemas, 0, _no_feedback, join.allowed_lateness_ms,
                  remember_closed_ms=join.allowed_lateness_ms + join.dedup_ms,
                  enricher=Enricher(pipeline, data_dir))


def _no_feedback(events: object) -> dict[str, float]:
    return {}


class JoinRunner:
    """Runs one pipeline's Joiner over a Log, as consumer group ``group``."""

    def __init__(self, log: Log, pipeline: Pipeline, group: str = "joiner",
                 idle_after_s: float = 5.0, read_batch: int = 2000,
                 data_dir: str | Path = "."):
        self.log, self.group = log, group
        self.idle_after_s, self.read_batch = idle_after_s, read_batch
        self.inputs = log.topic_partitions(pipeline.inputs)
        self.joiner = make_joiner(pipeline, self.inputs, data_dir)
        checkpoint = log.committed(group)
        if checkpoint.state is not None:
            self.joiner.restore(checkpoint.state)
        self.offsets = {tp: checkpoint.offsets.get(tp, 0) for tp in self.inputs}
        self._next_read = dict(self.offsets)
        self._buffers: dict[TopicPartition, deque[tuple[int, Record]]] = {
            tp: deque() for tp in self.inputs}
        self._empty_since: dict[TopicPartition, float] = {}
        self.counts: Counter[str] = Counter()

    def step(self, max_records: int = 10_000, final: bool = False) -> int:
        """Process up to ``max_records`` records; ``final`` drains all input and flushes.

        Returns how many input records were processed.
        """
        out: list[Output] = []
        done = 0
        while done < max_records:
            tp = self._next_input(final, out)
            if tp is None:
                break
            record = self._buffers[tp].popleft()[1]
            out.extend(self.joiner.process(record))
            self.offsets[tp] = record.offset + 1
            done += 1
        if final and not any(self._buffers.values()):
            out.extend(self.joiner.flush())
        if done or out:
            self._write(out)
        return done

    def _next_input(self, final: bool, out: list[Output]) -> TopicPartition | None:
        """The input whose head comes next in the merge, or None to wait."""
        best: tuple[int, int] | None = None
        best_tp = None
        for i, tp in enumerate(self.inputs):
            buffer = self._buffers[tp]
            if not buffer and not self._refill(tp):
                if self._idle(tp, out, exhausted=final):
                    continue
                return None
            key = (buffer[0][0], i)
            if best is None or key < best:
                best, best_tp = key, tp
        return best_tp

    def _refill(self, tp: TopicPartition) -> bool:
        records = self.log.read(*tp, self._next_read[tp], self.read_batch)
        if not records:
            self._empty_since.setdefault(tp, time.monotonic())
            return False
        self._buffers[tp].extend((_ts(r), r) for r in records)
        self._next_read[tp] = records[-1].offset + 1
        if self._empty_since.pop(tp, None) is not None and tp in self.joiner.idle:
            self.joiner.set_idle(tp, False)
        return True

    def _idle(self, tp: TopicPartition, out: list[Output], exhausted: bool) -> bool:
        """Whether to merge on without this empty input. An input at the end of a
        bounded log (``exhausted``) is idle at once, as a finished source is."""
        if tp in self.joiner.idle:
            return True
        if not exhausted and time.monotonic() - self._empty_since[tp] < self.idle_after_s:
            return False
        out.extend(self.joiner.set_idle(tp, True))
        return True

    def _write(self, out: list[Output]) -> None:
        for o in out:
            self.counts[o.value["reason"] if o.topic == DEAD_LETTERS else SAMPLES] += 1
        with self.log.atomic():
            for topic, items in outputs_by_topic(out).items():
                self.log.append(topic, items)
            self.log.commit(self.group, Checkpoint(dict(self.offsets), self.joiner.state()))
