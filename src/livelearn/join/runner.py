"""The join role: feeds the Joiner from the Log in a deterministic order, checkpoints it.

Records of all inputs are merged by (ts, input) by a log.merge.MergedReader,
so the order (and with it every sample and dead letter) depends on the log's
contents alone, never on batch sizes or timing; an input the reader finds idle
is left out of the watermark.

A pipeline's joining can be split into N shards, one process each: shard K
takes partition numbers p with p % N == K of every input. Predictions and
their feedback are partitioned by request_id (events.partition_key), so each
shard sees whole windows.

The samples and dead letters are written, and the input offsets and the
joiner's state committed, in one atomic step of the Log, so a restarted joiner
takes up exactly where its last write left it; one whose pipeline now joins
otherwise (another window, allowed lateness, streams or counters: Joiner.restore)
refuses to start. The state written leaves out the ids of the windows emitted and
the counters, which grow with the traffic: it says where each input's records
within the joiner's horizon start (``_rewind``, from the marks of what each step
read), and a restarted joiner reads those again (Joiner.rebuild) before it goes on.
Records the log deleted before the joiner read them (its
retention) stop it (Lost), or with ``skip_lost`` are skipped: each gap is logged
and becomes a dead letter (reason lost) written in the same atomic step as the
offset past it, so a restart neither skips it again nor writes it twice. A write
is due when the records read since the last one are worth the state it writes
(``STATE_BYTES_PER_RECORD``), or when its outputs have waited ``checkpoint_ms``
(ten times the last write's time, if longer): under load that is every step, at
low traffic a state of many open windows is not written again for each few
records. In ``livelearn run``
(loop.Loop) the samples go with their decoded values (Log.append), so the trainer
in the same process need not parse them, where JSON gives them back unchanged
(``_plain``).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from livelearn.errors import ConfigError, Fenced
from livelearn.events import JSON_INTS, MAX_FUTURE_MS, lost_letter, plain_json, too_deep
from livelearn.join.joiner import NO_WATERMARK, Joiner, Output
from livelearn.join.labels import checked
from livelearn.log.base import (
    Checkpoint,
    Log,
    Record,
    TopicPartition,
    read_again,
    start_offsets,
)
from livelearn.log.merge import MergedReader
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES, FeedbackJoin, Pipeline

log = logging.getLogger("livelearn.join")

_MALFORMED_FIRST = -(2**63)

#: Records joined at a time within a step: few enough for what they make on the way
#: (parsed records, events, samples) to stay in the CPU's caches until encoded (a
#: replay ran 20% faster than with 5,000, 6% than with 1,000); a step writes and
#: checkpoints at most once, at its end.
CHUNK = 500

#: Outputs wait at most this long to be written (ms of wall clock), or ten times
#: as long as the last write took if that is longer: writing a large state then
#: takes at most about a tenth of the joiner's time...
CHECKPOINT_MS = 1_000
#: ... and are written sooner once the records read since the last write are at
#: least the joiner's state in size at this many bytes a record: writing the state
#: then costs at most that per record.
STATE_BYTES_PER_RECORD = 64


def _ts(record: Record) -> tuple[int, Any]:
    """The record's event time for the merge (unreadable records go first, to dead
    letters, and so do events more than MAX_FUTURE_MS after their append time, which
    the joiner dead-letters: held at their input's head, they would hold up the events
    behind them), and its value parsed, for the joiner to check (None if not JSON, or
    nested too deep: events.too_deep)."""
    value = record.decoded
    if value is None:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return _MALFORMED_FIRST, None
        if too_deep(record.value, value):
            return _MALFORMED_FIRST, None
    ts = value.get("ts") if type(value) is dict else None
    if type(ts) is not int:
        return _MALFORMED_FIRST, value
    appended = record.appended_ms
    if appended is not None and ts > appended + MAX_FUTURE_MS and record.topic != PREDICTIONS:
        return _MALFORMED_FIRST, value  # Joiner._decode dead-letters it
    return ts, value


def _plain(sample: dict[str, Any]) -> bool:
    """Whether JSON holds ``sample`` exactly: ``plain_json`` writes it, and parsing that
    gives it back equal.

    The joiner makes its own fields so; the features and labels come from the
    pipeline's functions, and are so when each key is a str and each value a str, a
    bool, None, an int in events.JSON_INTS or a finite float (JSON writes NaN as null and reads
    a tuple back as a list, for instance).
    """
    for values in (sample["features"], sample["labels"]):
        if type(values) is not dict:
            return False
        for name, value in values.items():
            kind = type(value)
            if type(name) is not str:
                return False
            if kind is float:
                if value - value != 0.0:  # NaN or infinite
                    return False
            elif kind is int:
                if value not in JSON_INTS:
                    return False
            elif kind is not str and kind is not bool and value is not None:
                return False
    return True


def make_joiner(pipeline: Pipeline, inputs: list[TopicPartition], data_dir: str | Path = "."
                ) -> Joiner:
    """The Joiner of a pipeline: a feedback join, or a label-in-event join (window 0)
    whose enricher reads the pipeline's tables from ``data_dir``."""
    join = pipeline.feedback
    if isinstance(join, FeedbackJoin):
        label = checked(join.label, f"pipeline '{pipeline.name}': the label function")
        return Joiner(inputs, pipeline.schemas, join.window_ms, label, join.allowed_lateness_ms)
    from livelearn.join.enrich import Enricher

    return Joiner(inputs, pipeline.schemas, 0, _no_feedback, join.allowed_lateness_ms,
                  remember_closed_ms=join.allowed_lateness_ms + join.dedup_ms,
                  enricher=Enricher(pipeline, data_dir))


def _no_feedback(events: object) -> dict[str, float]:
    return {}


#: Tries a joiner shard makes to record its count while other shards record theirs.
SHARD_TRIES = 20


def check_shards(log: Log, group: str, shard: tuple[int, int], reshard: bool = False) -> None:
    """ConfigError if joiner ``shard`` K/N of ``group`` would run beside shards of another
    count N: each takes the partitions p with p % N == K, so shards of two counts join
    some partitions twice and others not at all (a shard's group is its own:
    ``group-K-of-N``). The count is recorded in the log (group ``GROUP.shards``) by the
    first shard to start (a joiner of every partition records 1); a log without that
    record that has a checkpoint of ``group`` was joined whole (N = 1). ``reshard``
    records N in place of the other count: the shards of that one must be stopped.

    Recording is a compare-and-set, so that of shards of two counts started at the same
    instant one is refused: the shard claims the record (Log.claim), reads it again, and
    commits its count in an atomic block, which fails (Fenced) where another shard claimed
    the record meanwhile; it then reads what that one recorded and checks again. A shard
    whose count is recorded already neither claims nor writes anything, nor does one
    refused by what it reads first."""
    index, count = shard
    record = f"{group}.shards"
    claimed = False  # the first read is a plain one: most starts write nothing
    for _ in range(SHARD_TRIES):
        was = _shard_count(log, group, log.claim(record) if claimed else log.committed(record))
        if was is not None and was != count and not reshard:
            raise ConfigError(
                f"joiner shard {index}/{count}: the shards of group '{group}' of this log are "
                f"{was} (--shard {'0/1' if was == 1 else f'K/{was}'}), not {count}: shards of "
                f"two counts side by side would join some partitions twice and others not at "
                f"all. Start it with --shard K/{was}; or, to change the count, stop every "
                f"shard of {was} and start those of {count} with --reshard (a shard of a count "
                f"new to the log starts at its start; the trainer skips the samples written "
                f"again)")
        if was == count:
            return
        if not claimed:
            claimed = True
            continue
        try:
            with log.atomic():
                log.commit(record, Checkpoint({}, orjson.dumps({"shards": count})))
        except Fenced:  # another shard claimed the record since: read what it recorded
            continue
        if was is not None:
            logging.getLogger("livelearn.join").warning(
                "joiner group '%s' now runs in %d shard(s), in place of %d (--reshard)",
                group, count, was)
        return
    raise ConfigError(f"joiner shard {index}/{count}: other processes recorded the count of "
                      f"the shards of group '{group}' in this log each time this one tried "
                      f"({SHARD_TRIES} times): start it again once they have started")


def _shard_count(log: Log, group: str, recorded: Checkpoint) -> int | None:
    """The shard count of ``group`` that ``recorded`` (its ``GROUP.shards``) holds; 1 where
    it holds none but ``group`` has a checkpoint (a joiner of every partition that started
    before joiners recorded 1); None for a group no joiner started yet."""
    if recorded.state is not None:
        return int(orjson.loads(recorded.state)["shards"])
    return 1 if log.committed(group).offsets else None


def committed_watermark(log: Log, group: str = "joiner") -> int | None:
    """The watermark (event time, ms) of the last checkpoint the joiner of ``group`` wrote
    in ``log``; of a joiner in N shards (groups ``group-K-of-N``), the lowest of theirs.
    None where the joiner, or one of its shards, has none yet (it never wrote, or read
    nothing), or joins elsewhere (the Flink job keeps its state in Flink)."""
    shards = log.committed(f"{group}.shards").state
    count = 1 if shards is None else int(orjson.loads(shards)["shards"])
    marks = []
    for name in [group] if count == 1 else [f"{group}-{k}-of-{count}" for k in range(count)]:
        state = log.committed(name).state
        mark = None if state is None else orjson.loads(state).get("watermark")
        if mark is None or mark == NO_WATERMARK:
            return None
        marks.append(int(mark))
    return min(marks)


def check_topics(log: Log, group: str, topics: list[str],
                 offsets: dict[TopicPartition, int]) -> None:
    """ConfigError if an input topic that the checkpoint of ``group`` has ``offsets`` of is
    not the topic it read (Log.topic_id: deleted and made again, by hand or by the next
    ingest): the offsets count the records of the old one, and the joiner would skip as
    many of the new one's without a word. The ids of ``topics`` are recorded in the log
    (group ``GROUP.topics``) when they change; a checkpoint from before the record has
    them recorded as they are."""
    record = f"{group}.topics"
    state = log.committed(record).state
    had: dict[str, str] = orjson.loads(state) if state is not None else {}
    ids = {topic: log.topic_id(topic) for topic in topics}
    read = {topic for topic, _ in offsets}
    for topic, now in ids.items():
        if topic in read and had.get(topic, now) != now:
            raise ConfigError(
                f"joiner group '{group}': topic '{topic}' is not the one its checkpoint read "
                f"(id {had[topic]}, now {now}): it was deleted and made again, and the "
                f"checkpoint's offsets count the records of the old one, so the joiner would "
                f"skip as many of the new one's. Start over in a new log and registry "
                f"(another ?prefix= in the log URL or another file, a new --registry) and "
                f"ingest the events again")
    if {**had, **ids} != had:
        log.commit(record, Checkpoint({}, orjson.dumps({**had, **ids})))


class JoinRunner:
    """Runs one pipeline's Joiner over a Log, as consumer group ``group``."""

    def __init__(self, log: Log, pipeline: Pipeline, group: str = "joiner",
                 idle_after_s: float = 5.0, read_batch: int = CHUNK,
                 data_dir: str | Path = ".", shard: tuple[int, int] = (0, 1),
                 checkpoint_ms: int = CHECKPOINT_MS, hand_on: bool = False,
                 skip_lost: bool = False, reshard: bool = False):
        """``hand_on``: the samples also go to the Log decoded (Log.append), for a
        trainer in this process (loop.Loop) to take without parsing them; a joiner
        on its own would only hold them in memory. ``skip_lost``: go on past records
        the log deleted before this joiner read them (``--skip-lost``) rather than
        stop (Lost); each gap is a dead letter (reason lost), written with the
        checkpoint that moves the offset past it, so it is written exactly once.
        ``reshard``: take ``shard``'s count N although the log records another
        (``check_shards``)."""
        index, count = shard
        if not 0 <= index < count:
            raise ConfigError(f"joiner shard {index}/{count}: expected 0 <= K < N")
        check_shards(log, group, shard, reshard)
        self.log = log
        self.group = group if count == 1 else f"{group}-{index}-of-{count}"
        self.inputs = [tp for tp in log.topic_partitions(pipeline.inputs)
                       if tp[1] % count == index]
        self.joiner = make_joiner(pipeline, self.inputs, data_dir)
        whose = f"the joiner's checkpoint in group '{self.group}'"
        # ConfigError if made with another join or on other topics, before a running
        # joiner is fenced off
        committed = log.committed(self.group)
        self.joiner.check(committed.state, whose)
        check_topics(log, self.group, sorted({topic for topic, _ in self.inputs}),
                     committed.offsets)
        # the most bytes a record may have, by output topic (None: any size); asked before
        # the claim, so that Kafka's producer of the group batches no more than they take
        self._limits = {topic: log.record_limit(topic) for topic in (SAMPLES, DEAD_LETTERS)}
        checkpoint = log.claim(self.group)  # fences off an earlier joiner of the group
        if checkpoint.state is not None:
            self.joiner.restore(checkpoint.state, whose)
        # a new group starts where each input starts; one that committed an offset the
        # log no longer holds stops at its first read (Lost) rather than skip records,
        # unless told to skip them (the reader calls _on_lost)
        self.offsets = start_offsets(log, [tp for tp in self.inputs
                                           if tp not in checkpoint.offsets], self.group)
        self.offsets.update({tp: o for tp, o in checkpoint.offsets.items() if tp in self.inputs})
        self.resumed = any(tp in self.inputs for tp in checkpoint.offsets)  # not a new group
        # per input, (first offset, largest ts up to it) of what each step read: where the
        # records within the joiner's horizon start (_rewind)
        self._marks: dict[TopicPartition, deque[tuple[int, int]]] = {
            tp: deque() for tp in self.inputs}
        # restored from a state that holds everything: the newest ts it had read, until
        # which the states written hold everything too (_rewind)
        self._whole_until: int | None = None
        if checkpoint.state is not None:
            self._restart()
        self._out: list[Output] = []
        # what was read and made since the last write: records, outputs encoded by
        # topic, and if handed on the samples decoded (one per encoded sample, None
        # where not as written)
        self._unwritten = 0
        self._encoded: dict[str, list[tuple[str, bytes]]] = {}
        self._samples: list[dict[str, Any] | None] = []
        self.checkpoint_ms, self.hand_on = checkpoint_ms, hand_on
        self._due_at = -float("inf")  # time.monotonic() after which a write is due
        self.writes = 0
        self.state_bytes = 0  # of the state the last write committed
        # inputs skipped past a gap in this step: where each starts now
        self._skipped: dict[TopicPartition, int] = {}
        self.reader = MergedReader(log, self.inputs, _ts, self.offsets, idle_after_s,
                                   read_batch, on_idle=self._on_idle, group=self.group,
                                   on_lost=self._on_lost if skip_lost else None)
        self.counts: Counter[str] = Counter()  # the outputs made, by topic or reason
        self.written: Counter[str] = Counter()  # of those, the ones written

    def step(self, max_records: int = 10_000, final: bool = False) -> int:
        """Process up to ``max_records`` records. ``final``: the log is complete; the
        step that finds every input read to its end flushes every window.

        Records are read, joined and their outputs encoded a chunk at a time (what a
        chunk holds stays in the CPU's caches); the outputs and the checkpoint are
        written at the end if a write is due (always when ``final``). Returns how
        many input records were processed.
        """
        done, ended = 0, False
        firsts: dict[TopicPartition, int] = {}
        while done < max_records:
            out = self._out = []  # with what an input's idleness lets out meanwhile
            batch = self.reader.next_batch(final, min(CHUNK, max_records - done))
            out += self.joiner.process_many(batch)
            self._keep(out)
            if batch:
                if len(self.inputs) == 1:  # the batch is in offset order
                    firsts.setdefault(self.inputs[0], batch[0][0].offset)
                    self.offsets[self.inputs[0]] = batch[-1][0].offset + 1
                else:
                    for record, _ in batch:
                        firsts.setdefault(record[:2], record.offset)
                    self.offsets.update({record[:2]: record.offset + 1 for record, _ in batch})
            if self._skipped:  # past the gaps: what was read before one is in this batch
                for tp, start in self._skipped.items():
                    self.offsets[tp] = max(self.offsets[tp], start)
                self._skipped.clear()
            if not batch:  # in a final step: every input read to its end
                ended = final
                break
            done += len(batch)
        if ended:
            self._keep(self.joiner.flush())
        for tp, first in firsts.items():
            self._mark(tp, first, self.joiner.max_seen.get(tp))
        self._unwritten += done
        if final or self._unwritten * STATE_BYTES_PER_RECORD >= self.state_bytes \
                or time.monotonic() >= self._due_at:
            self.write_pending()
        return done

    def write_pending(self) -> bool:
        """Write what was read and made since the last write, now; whether there was any."""
        if not (self._unwritten or self._encoded):
            return False
        began = time.monotonic()
        state = self.joiner.state(self._rewind(), self._whole_until)
        with self.log.atomic():
            for topic, items in self._encoded.items():
                self.log.append(topic, items,
                                self._samples if topic == SAMPLES and self.hand_on else None)
            self.log.commit(self.group, Checkpoint(dict(self.offsets), state))
        self._unwritten, self._encoded, self._samples = 0, {}, []
        self.written = self.counts.copy()
        ended = time.monotonic()
        self._due_at = ended + max(self.checkpoint_ms / 1000, 10 * (ended - began))
        self.state_bytes = len(state)
        self.writes += 1
        return True

    def _mark(self, tp: TopicPartition, first: int, newest: int | None) -> None:
        """Note that the records of ``tp`` from offset ``first`` on (up to the next mark)
        have ts at most ``newest`` (None: none has a ts)."""
        self._marks[tp].append((first, _MALFORMED_FIRST if newest is None else newest))

    def _rewind(self) -> list[tuple[str, int, int]] | None:
        """For each input, the offset from which its records hold all those within the
        joiner's horizon behind the watermark (Joiner.state): the marks of the records
        all older than that are dropped. None (the state is written whole) while a
        restored whole state's records may still lie within the horizon."""
        oldest = self.joiner.watermark - self.joiner.horizon_ms
        if self._whole_until is not None:
            if oldest <= self._whole_until:
                return None
            self._whole_until = None
        rewind = []
        for tp in self.inputs:
            marks = self._marks[tp]
            while marks and marks[0][1] < oldest:
                marks.popleft()
            rewind.append((*tp, marks[0][0] if marks else self.offsets[tp]))
        return rewind

    def _restart(self) -> None:
        """After a restore: read each input again from its rewind offset up to its
        checkpoint offset (Joiner.rebuild), if the state was written compact; marking
        what was read. A state written whole (by an earlier livelearn, or until the
        records before such a one leave the horizon) is written whole until then."""
        rewind = self.joiner.rewind
        if rewind is None:
            seen = [ts for ts in self.joiner.max_seen.values() if ts is not None]
            self._whole_until = self.joiner.whole_until if self.joiner.whole_until is not None \
                else max(seen) if seen else None
            for tp in self.inputs:  # what it read: from where the input starts, as new as that
                if self.joiner.max_seen.get(tp) is not None:
                    self._mark(tp, self.log.start_offset(*tp), self.joiner.max_seen[tp])
            return
        began, read = time.monotonic(), 0
        spans = [((t, p), start) for t, p, start in rewind if (t, p) in self._marks]
        self.joiner.rebuilding(tp for tp, start in spans if start < self.offsets[tp])
        # merged as the join merges them (log.merge: by ts, then input), so that the
        # joiner's watermark moves as it did
        batch = max(500, 10_000 // max(1, len(spans)))  # what the merge holds: per input
        for *_, record, value in heapq.merge(*(self._read_again(tp, start, batch)
                                                for tp, start in spans)):
            self.joiner.rebuild(record, value)
            read += 1
        self.joiner.rebuilt()
        log.info("joiner group '%s': read %d records again in %.1f s to rebuild the ids and "
                 "counts its checkpoint leaves out", self.group, read, time.monotonic() - began)

    def _read_again(self, tp: TopicPartition, offset: int, batch: int
                    ) -> Iterator[tuple[int, int, int, Record, Any]]:
        """The records of ``tp`` from ``offset`` up to its checkpoint offset, each as (ts,
        input, offset, record, value parsed) (those the log deleted meanwhile, its
        retention, are skipped and said), marking each batch as read."""
        index = self.inputs.index(tp)
        for records in read_again(self.log, tp, offset, self.offsets[tp],
                                  f"joiner group '{self.group}' forgets the ids and counts "
                                  f"they gave", batch):
            keyed = [(*_ts(record), record) for record in records]
            self._mark(tp, records[0].offset, max(ts for ts, _, _ in keyed))
            for ts, value, record in keyed:
                yield ts, index, record.offset, record, value

    def _on_idle(self, tp: TopicPartition, idle: bool) -> None:
        self._out.extend(self.joiner.set_idle(tp, idle))

    def _on_lost(self, tp: TopicPartition, offset: int, start: int) -> None:
        """Records ``offset`` to ``start - 1`` of ``tp`` were deleted before they were read:
        the gap's dead letter goes with this step's outputs, and the offset to ``start``
        once the records read before it are (the reader returns them first)."""
        self._out.append(Output(DEAD_LETTERS, tp[0], lost_letter(self.group, *tp, offset, start)))
        self._skipped[tp] = start

    def _keep(self, out: list[Output]) -> None:
        """Count ``out`` and add it, encoded, to what the next write writes (the samples
        also decoded, to ``_samples``, if handed on), in order. An output larger than
        its topic takes becomes a dead letter (too_large), so the write can be made."""
        dumps, encoded, samples, limits = orjson.dumps, self._encoded, 0, self._limits
        decoded = self._samples if self.hand_on else None
        for output in out:
            plain = output.topic == SAMPLES and _plain(output.value)
            if plain:
                text = plain_json(output.value)
            else:  # orjson, for what it refuses
                try:
                    text = dumps(output.value)
                except orjson.JSONEncodeError as e:
                    output = self.joiner.unwritable(output.value, e)
                    text = dumps(output.value)
            limit = limits[output.topic]
            if limit is not None and len(text) + len(output.key) > limit:
                output = self.joiner.oversized(output, len(text) + len(output.key), limit)
                text = dumps(output.value)
            topic, key, value = output
            items = encoded.get(topic)
            if items is None:
                items = encoded[topic] = []
            items.append((key, text))
            if topic == SAMPLES:
                if decoded is not None:
                    decoded.append(value if plain else None)
                samples += 1
            else:
                self.counts[value["reason"]] += 1
        if samples:
            self.counts[SAMPLES] += samples
