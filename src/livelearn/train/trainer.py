"""The train role: learns from samples prequentially and publishes versions.

Each sample is scored by the current model before the model learns from it
(prequential evaluation): those scores are the honest live metrics, overall
and over the most recent ``gate_window`` samples. A version is published every
``publish_every_samples`` samples or ``publish_every_ms`` of event time.

The trainer's checkpoint is the newest version it published: the model, the
input offsets it had reached and its sample count in that version's metadata;
where in the log the ids it learned lately are (train.rebuild: read back at a
restart, so a version's size does not grow with the stream's rate) and the state
of its metrics (the overall one, and the window's scores, labels and where each
sample is) in its details. A restarted trainer resumes from there and learns the
rest again, in order, so it ends in the same state as a run never interrupted,
and publishes the same metrics. A version of an earlier livelearn, which listed
the ids, resumes with that list. A version published before versions held the metrics' state resumes
with them from zero (said in a warning): the later versions' ``prequential``
covers the samples learned since. ``duplicates``, ``behind`` and ``malformed``
count what this trainer met since it was made (samples read again after a restart
are counted again), ``written`` the dead letters it wrote (each once, by any trainer of
the group): the dead-letter topic is the lasting record.

A sample whose learning leaves a weight that is not finite (models.base.Diverged:
a feature value or label too large) is put back (``Learner.undo_point``) and
dead-lettered, and the samples after it learned. A learner without an undo point
of its own (an adapter, a user's learner) has its state copied before each batch
and is checked after it (``models.base.not_finite``): where it is spoiled, the sample that spoiled
it is found, put back and dead-lettered alike, so no version is published spoiled.
A score the learner must not give (not finite; outside [0, 1] for a binary
learner), the fourth such sample since the last version (``MAX_SPOILING``: the
learner diverging), or one of a learner that cannot put back (nor copy its state),
stops the trainer with a PipelineError naming the learner and the sample, before
what it learned since its last version is published, as does an error of the
learner's own (another library's, in an adapter), naming the samples it was learning.
A sample the learner refuses (BadInput: more features than a field-aware learner has
fields, without transforms) is dead-lettered with its reason, and the others learned,
where the learner can put back what it learned (``undo_point``, or the copy kept);
where it refuses more than half of the first
``LABEL_CHECK`` samples, the trainer stops.

Samples the log deleted before the trainer read them (its retention) stop it
(Lost), or with ``skip_lost`` are skipped: each gap is logged and written to the
dead letters (reason lost) at once, then, as soon as every sample read before
it is learned, a version is published whose offsets are past it, so a restart
does not find it again.

Each dead letter is written once: with it, the log keeps which samples (and
gaps) past the newest version's offsets were dead-lettered (group
``GROUP.letters``), and a restart that reads them again skips their letters. A
version lists those its offsets passed (in its details): a restart falling back
past it (its file damaged) skips those too. Past ``LETTERS_LISTED`` letters in the
group's list, a version is published past them (the trainer's checkpoint), so the
list stays bounded while too few samples are learned to publish one.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import orjson

from livelearn.errors import BadInput, ConfigError, Corrupt, LivelearnError, PipelineError
from livelearn.events import Reason, dead_letter, letter_value, lost_letter, show
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import unusable
from livelearn.log.base import Checkpoint, Log, Record, TopicPartition, start_offsets
from livelearn.log.merge import MergedReader
from livelearn.models.base import (
    Diverged,
    Learner,
    check_learned,
    not_finite,
    score_problem,
)
from livelearn.registry import Registry, Version
from livelearn.spec import DEAD_LETTERS, SAMPLES, Pipeline, new_learner
from livelearn.train.dedup import RecentIds
from livelearn.train.metrics import Metric, WindowedMetric, make_metric, metric_from_state
from livelearn.train.rebuild import Marks, read_back

log = logging.getLogger("livelearn.train")
#: one warning per sample dead-lettered (`livelearn -q` counts them instead)
dead_log = logging.getLogger("livelearn.train.dead_letters")


def _dedup_horizon(pipeline: Pipeline) -> int:
    """How far (ms of event time) sample window ends may interleave: a window and
    the lateness, at least ten minutes."""
    join = pipeline.feedback
    spread = getattr(join, "window_ms", 0) + getattr(join, "allowed_lateness_ms", 0)
    return max(600_000, 2 * spread)


#: The merge key of a sample the trainer cannot learn: first, so it is dead-lettered at once.
_BAD = (-(2**63), "")
#: A binary learner stops, rather than learn from the few samples left, when more than half
#: of the first this many samples it reads have a label outside [0, 1] (a regression label).
LABEL_CHECK = 1000
#: Samples whose learning spoils the learner (models.base.Diverged) are put back and
#: dead-lettered, up to this many since the last version; the next one stops the trainer:
#: so many are not a few outliers but the learner diverging (a learning rate too high).
MAX_SPOILING = 3
#: Past this many dead letters listed (group ``GROUP.letters``: those past the newest
#: version's offsets, the list written whole each turn that writes one), a version is
#: published as the trainer's checkpoint, past them: they leave the list.
LETTERS_LISTED = 10_000


class _OutOfRange(str):
    """Why a sample cannot be learned: its label is outside [0, 1], and the learner binary."""


def _sample_key(target: str, learner: str = "the learner", binary: bool = False
                ) -> Callable[[Record], tuple[tuple[int, str], Any]]:
    """The merge key of a sample, (window_end, id), and the sample; or _BAD and why not.
    ``learner`` names the learner; a ``binary`` one cannot learn a label outside [0, 1]."""
    def key(record: Record) -> tuple[tuple[int, str], Any]:
        sample = None
        try:
            sample = record.decoded
            if sample is None:
                sample = orjson.loads(record.value)
            end, sid = sample["window_end"], sample["id"]
            label = sample["labels"][target]
            if (type(end) is int and type(sid) is str and isinstance(sample["features"], dict)
                    and type(sample["ts"]) is int and isinstance(label, int | float)):
                if not binary or 0 <= label <= 1:
                    return (end, sid), sample
                return _BAD, _OutOfRange(
                    f"sample cannot be learned: labels['{target}'] is {show(label)}; "
                    f"{_learns(learner, binary)}")
            problem = _wrong_field(sample)
            if problem is None:  # all but the label are right
                return _BAD, (f"sample cannot be learned: labels['{target}'] is "
                              f"{_label_said(label)}; {_learns(learner, binary)}")
        except (orjson.JSONDecodeError, TypeError, KeyError) as e:
            labels = sample.get("labels") if isinstance(sample, dict) else None
            if isinstance(labels, dict) and target not in labels:  # not "KeyError: 'y'"
                return _BAD, (f"sample cannot be learned: it has no label '{target}', the "
                              f"pipeline's target (its labels: "
                              f"{', '.join(map(repr, labels)) or 'none'}); does the label "
                              f"function give it?")
            problem = f"{type(e).__name__}: {e}"
        return _BAD, (f"sample cannot be learned ({problem}): expected a JSON object with "
                      f"integer ts and window_end, string id, features and labels['{target}']")
    return key


def _wrong_field(sample: dict[str, Any]) -> str | None:
    """Which field of a sample (but its labels) has the wrong type, and its value; None
    if none has."""
    for name, value, ok in (
            ("window_end", sample["window_end"], type(sample["window_end"]) is int),
            ("id", sample["id"], type(sample["id"]) is str),
            ("features", sample["features"], isinstance(sample["features"], dict)),
            ("ts", sample["ts"], type(sample["ts"]) is int)):
        if not ok:
            return f"{name} is {show(value)}"
    return None


def _learns(learner: str, binary: bool) -> str:
    """What the target's label must be, for ``learner``: the end of a dead letter's reason."""
    if binary:
        return (f"the binary learner {learner} learns a number in [0, 1]: 0 or 1, false or "
                f"true, or a probability")
    return f"the learner {learner} learns a number"


def _label_said(label: Any) -> str:
    """A label that is not a number (as the sample's JSON holds it), for a reason."""
    if label is None:
        return ("null (the label function gave None, NaN or an infinity: the sample's JSON "
                "holds those as null)")
    if not isinstance(label, str):
        return show(label)
    try:
        float(label)
    except ValueError:
        return f"{show(label)}, a string"
    return f"{show(label)}, a string (the label function gives the number's text, not the number)"


def _described(learner: Learner) -> str:
    """A learner's kind and hyperparameters, as ``FTRL(bits=18, alpha=0.1, ...)``."""
    try:
        params = ", ".join(f"{k}={v!r}" for k, v in learner.params().items())
    except Exception:  # a learner whose parameters cannot be read back: its kind alone
        params = "..."
    return f"{type(learner).__name__}({params})"


def _window_samples(window: dict[str, Any]
                    ) -> tuple[list[tuple[str, int, int]], list[float], list[float]]:
    """A version's window (Trainer._publish) in the order it was learned: where each
    sample is, its score and its label; ValueError if its parts do not add up."""
    columns = {where: (window["offsets"][where], window["scores"][where],
                       window["labels"][where]) for where in window["offsets"]}
    taken = dict.fromkeys(columns, 0)
    where_of: list[tuple[str, int, int]] = []
    scores: list[float] = []
    labels: list[float] = []
    for where, n in window["runs"]:
        offsets, their_scores, their_labels = columns[where]
        start = taken[where]
        taken[where] = stop = start + n
        topic, partition = where.rsplit("/", 1)
        where_of += [(topic, int(partition), o) for o in offsets[start:stop]]
        scores += their_scores[start:stop]
        labels += their_labels[start:stop]
    if any(taken[w] != len(c[0]) or len(c[0]) != len(c[1]) or len(c[0]) != len(c[2])
           for w, c in columns.items()):
        raise ValueError("its runs, offsets, scores and labels differ in length")
    return where_of, scores, labels


def _first(held: tuple[tuple[int, str], Any, Any]) -> tuple[int, str]:
    return held[0]


def _without(trained: Trained, dropped: np.ndarray) -> Trained:
    """``trained`` without the samples ``dropped`` (row numbers)."""
    keep = np.setdiff1d(np.arange(len(trained.samples)), dropped)
    return Trained([trained.samples[r] for r in keep.tolist()], trained.batch.take(keep),
                   trained.labels[keep], trained.scores[keep], trained.published)


@dataclass
class Trained:
    """What one step learned: the samples, their hashed rows, labels and prequential scores."""

    samples: list[dict[str, Any]]
    batch: SparseBatch
    labels: np.ndarray
    scores: np.ndarray
    published: list[Version] = field(default_factory=list)


def check_log(log: Log, registry: Registry, version: Version) -> None:
    """ConfigError if ``version`` learned the samples of another log (a new log beside
    an old registry, or the samples topic deleted and made again), or more samples than
    this log holds (the log older than the registry: restored from an earlier copy, or
    copied while the roles wrote): resumed here, the trainer would skip as many of this
    log's samples as the version's offsets count, learning none of them. A version
    published before the topic's id was recorded is known by its offsets only."""
    recorded = version.meta.get("topic_ids")
    inputs = log.topic_partitions([SAMPLES])
    for topic, partition, offset in version.meta["offsets"]:
        if (topic, partition) not in inputs:
            continue
        if recorded is not None and recorded.get(topic) != (ours := log.topic_id(topic)):
            why = (f"learned the samples of topic '{topic}' with id {recorded.get(topic)}, "
                   f"this log's has id {ours} (another log, or the topic made again)")
            whose = "the registry is another log's"
        elif offset > (end := log.end_offset(topic, partition)):
            why = (f"learned the samples up to offset {offset} of topic '{topic}' "
                   f"partition {partition}, but this log holds {end}")
            whose = ("the registry is another log's, or newer than this log (a log "
                     "restored from an earlier copy, or a folder copied while its roles "
                     "wrote: copy a stopped pipeline's)")
        else:
            continue
        raise ConfigError(f"registry {str(registry.path)!r}: v{version.id} {why}: "
                          f"{whose}. Give the log it was made with, or a new --registry "
                          f"(a new --workdir)")


def check_registry(log: Log, registry: Registry, pipeline: Pipeline, group: str = "trainer"
                   ) -> None:
    """ConfigError if ``registry`` is another pipeline's (Registry.check_pipeline), or if
    the newest version of trainer ``group`` learned another log's samples (check_log).
    Asked before a trainer claims its groups (and by Loop before its joiner claims its
    own), so that a trainer refused fences off none that runs."""
    registry.check_pipeline(pipeline.name)
    mine = [v for v in registry.versions() if v.meta.get("trainer") == group]
    if mine:
        check_log(log, registry, mine[-1])


class Trainer:
    """Trains one pipeline's learner from the samples topic, as consumer ``group``."""

    def __init__(self, log: Log, registry: Registry, pipeline: Pipeline, group: str = "trainer",
                 idle_after_s: float = 5.0, skip_lost: bool = False):
        """``skip_lost``: go on past samples the log deleted before this trainer read them
        (``--skip-lost``) rather than stop (Lost); see the module's docstring."""
        self.log, self.registry, self.pipeline, self.group = log, registry, pipeline, group
        self.idle_after_s, self.skip_lost = idle_after_s, skip_lost
        self.reader: MergedReader | None = None
        # read samples of the newest window end, not learned yet: (key, sample, where)
        self._held: list[tuple[tuple[int, str], dict[str, Any], tuple[str, int, int]]] = []
        self.policies = pipeline.policies
        self.inputs = log.topic_partitions([SAMPLES])
        # the samples topic's id in the log: a version's offsets count its records
        self.topic_ids = {SAMPLES: log.topic_id(SAMPLES)}
        self.model: Learner = new_learner(pipeline)
        self.kind = "auc" if self.model.task == "binary" else "mae"
        self.metric: Metric = make_metric(self.kind)
        self.window = WindowedMetric(self.kind, self.policies.gate_window)
        # (topic, partition, offset) of the samples in the window, oldest first
        self._recent: deque[tuple[str, int, int]] = deque(maxlen=self.policies.gate_window)
        self.offsets: dict[TopicPartition, int] = {}  # set by _resume
        self.samples = 0
        # in this process (not restored by _resume: see the module docstring)
        self.duplicates = 0  # samples skipped as already learned
        self.behind = 0  # of those, the ones taken for learned by their window end alone
        self.malformed = 0  # samples dead-lettered as impossible to learn
        self._out_of_range = 0  # of those, labels a binary learner cannot learn
        self._refused = 0  # of those, samples the learner refused (_learn_taken)
        self.lost = 0  # gaps dead-lettered: samples deleted before they were read
        # inputs skipped past a gap, whose offset is not past it yet: where each starts now
        self._gaps: dict[TopicPartition, int] = {}
        # ids of the samples read; the newest window end learned (where the ids a version
        # records end: a dead letter counts as learned)
        self._read_ids = RecentIds(_dedup_horizon(pipeline))
        self._learned_newest: int | None = None
        self._marks = Marks()  # where in the log the ids learned lately are
        # the newest window end learned from each input (see _caught_up), kept in versions
        self._newest_in: dict[TopicPartition, int] = {}
        self._last_learned_ts: int | None = None
        self._names_checked = pipeline.transforms is None  # see _check_names
        self.version: Version | None = None
        self._since_publish = 0
        self._spoiling = 0  # samples put back and dead-lettered since the last version
        self._last_publish_ts: int | None = None
        check_registry(log, registry, pipeline, group)  # before anything is claimed
        # the dead letters written since the offsets of the newest version (_write_letter);
        # claimed, as the group is: an earlier trainer still running writes no letter now
        # (on Kafka it made the group's producer again, fencing off this one's)
        state = orjson.loads(log.claim(f"{group}.letters").state or b"{}")
        # (of the samples topic as it is: one made again holds other samples at those offsets)
        self._lettered = {(t, p, o) for t, p, o in state.get("letters", [])} \
            if state.get("topic_ids") == self.topic_ids else set()
        self._unwritten: list[tuple[str, bytes]] = []  # letters of this turn (_write_letter)
        self._unwritten_reasons = Counter[str]()  # their reasons
        self.written = Counter[str]()  # the letters this trainer wrote, by reason
        self._letters_bound = LETTERS_LISTED  # more listed end a turn (_past_letters)
        self._resume()
        self._samples_at_start = self.samples

    def _resume(self) -> None:
        """Continue from the newest version this trainer published whose file is sound,
        fencing off an earlier trainer of the group first (not if the registry is another
        pipeline's or another log's: check_registry refused it before, and that trainer
        goes on)."""
        self.registry.claim(self.group)
        mine = [v for v in self.registry.versions() if v.meta.get("trainer") == self.group]
        declared = _described(self.model)
        for version in reversed(mine):
            check_log(self.log, self.registry, version)
            try:
                self.model = self.registry.load(version.id)
            except Corrupt as e:
                log.warning("%s; resuming from the version before it", e)
                self.registry.set_status(version.id, "rejected", f"corrupt: {e}")
                self._lettered.update(self._letters_behind(version))  # read again from here
                continue
            if _described(self.model) != declared:
                log.warning("pipeline '%s' declares the learner %s, but this trainer resumes "
                            "v%d, a %s: it goes on learning that one (train into a new "
                            "--registry to start the declared learner)", self.pipeline.name,
                            declared, version.id, _described(self.model))
            meta, details = version.meta, self.registry.details(version.id)
            self.version = version
            self.offsets = {(t, p): o for t, p, o in meta["offsets"]}
            self._restore_ids(details)
            self._newest_in = {(t, p): end for t, p, end in details.get("newest_in", [])}
            self.samples, self._last_publish_ts = meta["samples"], meta["event_ts"]
            self._restore_metrics(version, details)
            break
        self.offsets.update(start_offsets(self.log, [tp for tp in self.inputs
                                                     if tp not in self.offsets], self.group))
        if self.version is None:
            self.version = self._publish(ts=None)

    def _letters_behind(self, version: Version) -> set[tuple[str, int, int]]:
        """The letters written that ``version``'s offsets were past when it was published
        (``_publish``), no longer listed in group ``GROUP.letters``; none for a version of
        an earlier livelearn."""
        letters = self.registry.details(version.id).get("letters", [])
        return {(str(t), int(p), int(o)) for t, p, o in letters}

    def _merge_key(self) -> Callable[[Record], tuple[tuple[int, str], Any]]:
        """The merge key of this trainer's samples (_sample_key, for its learner)."""
        return _sample_key(self.pipeline.target, type(self.model).__name__,
                           self.model.task == "binary")

    def _restore_ids(self, details: dict[str, Any]) -> None:
        """The ids learned lately, as the version recorded them: read back from the log
        (train.rebuild, whose docstring says why they are the same ids), or listed by a
        version of an earlier livelearn. The samples read but not learned then are read
        again, so the ids read start as those learned."""
        if "rebuild" in details:
            ids = read_back(self.log, self._merge_key(), details["rebuild"], self._marks)
        else:
            ids = self._marks.listed = [(int(end), str(sid))
                                        for end, sid in details["learned_ids"]]
        self._read_ids = RecentIds(self._read_ids.horizon_ms)
        for end, sid in ids:
            self._read_ids.add(end, sid)
        self._learned_newest = self._read_ids.newest

    def _restore_metrics(self, version: Version, details: dict[str, Any]) -> None:
        """The overall metric and the window as ``version`` recorded them (``_publish``);
        from zero, with a warning, if it recorded none (published before versions held
        them) or its record cannot be read."""
        saved, window = details.get("metric_state"), details.get("window")
        why = "records no metric state (published by an earlier livelearn)"
        if saved is not None and isinstance(window, dict) and "runs" in window:
            try:
                metric = metric_from_state(saved)
                if metric.kind != self.kind:
                    raise Corrupt(f"a {metric.kind} metric; this trainer's is {self.kind}")
                where, scores, labels = _window_samples(window)
                recent = WindowedMetric.from_state(  # the most recent gate_window stay
                    {"kind": self.kind, "size": self.policies.gate_window,
                     "count": window["count"], "scores": scores, "labels": labels})
            except (LivelearnError, KeyError, TypeError, ValueError, AttributeError) as e:
                why = f"records a metric state that cannot be read ({e})"
            else:
                self.metric, self.window = metric, recent
                self._recent.extend(where)
                return
        log.warning("v%d %s: the prequential and window %s of the versions this trainer "
                    "publishes restart from zero, over the samples learned from now on",
                    version.id, why, self.kind)

    def step(self, max_records: int = 5000, final: bool = False) -> Trained | None:
        """Learn from up to ``max_records`` new samples; None when there are none.

        Partitions of the samples topic are merged by (window_end, id), the order
        one joiner emits in, so the model is the same whatever the partition
        count; ``final`` says the log is complete (an empty partition is done).
        Samples of the newest window end are held back until a later one (or the
        end of a complete log) shows that no more can tie with them, then learned
        sorted by id: a joiner that emits ties in any order (Flink's) gives the
        same model. A sample already learned (train.dedup.RecentIds), such as one
        a joiner's restart wrote again, is skipped; one of a partition that was idle
        meanwhile is learned late, even far behind the others (``_caught_up``).
        """
        try:
            return self._step(max_records, final)
        finally:  # also where the learner stopped the trainer: each is in the dead letters
            self._flush_letters()

    def _step(self, max_records: int, final: bool) -> Trained | None:
        """``step``, but for writing the turn's dead letters."""
        if self.reader is None:
            self.reader = MergedReader(self.log, self.inputs, self._merge_key(), self.offsets,
                                       self.idle_after_s, group=self.group,
                                       on_lost=self._on_lost if self.skip_lost else None)
        ready: list[tuple[tuple[int, str], dict[str, Any], tuple[str, int, int]]] = []
        exhausted = False
        read_ids = self._read_ids
        while len(ready) + len(self._held) < max_records \
                and len(self._lettered) <= self._letters_bound:  # else a turn ends here
            # at most as many as there is room for: each one read is held, skipped or a letter
            room = min(max_records - len(ready) - len(self._held),
                       self._letters_bound + 1 - len(self._lettered))
            batch = self.reader.next_batch(final, room)
            if not batch:
                exhausted = True
                break
            self._marks.note(batch)
            held = self._held
            for record, sample in batch:
                if type(sample) is not dict:  # why it cannot be learned
                    self._dead_letter(record, sample)
                    self._read_past(record)
                    continue
                end, sid = sample["window_end"], sample["id"]
                if not read_ids.add_new(end, sid) and not self._caught_up(record, end, sid):
                    self.duplicates += 1
                    if not read_ids.remembers(sid):
                        self._behind(end, sid)
                    continue
                if held and end > held[0][0][0]:
                    if len(held) > 1:
                        held.sort(key=_first)
                    ready += held
                    held.clear()
                held.append(((end, sid), sample, record[:3]))  # (topic, partition, offset)
        if (final and exhausted) or len(self._held) >= max_records:  # nothing more can tie
            # (or a tie larger than a step: learned as it stands, sorted by id)
            ready += sorted(self._held, key=_first)
            self._held = []
        trained = self._train([r[1] for r in ready], [r[2] for r in ready]) if ready else None
        if self._gaps:
            self._past_gaps()
        if len(self._lettered) > self._letters_bound:
            self._past_letters()
            if trained is None and not exhausted:  # a turn of letters alone: more to read
                trained = self._train([], [])
        return trained

    def _read_past(self, record: Record) -> None:
        """A sample dead-lettered as it was read: a version may resume past it (those read
        before it and not learned yet hold the version's offset back: ``_publish``)."""
        tp = (record.topic, record.partition)
        self.offsets[tp] = max(self.offsets.get(tp, 0), record.offset + 1)

    def _past_letters(self) -> None:
        """Publish a version (the trainer's checkpoint) past the letters listed, so that
        they leave the list, where it would take at least half of them (samples read and
        not learned yet, held back, hold its offsets back); the next try is once as many
        more are listed."""
        resume = self._resume_at(h[2] for h in self._held)
        behind = sum(o < resume.get((t, p), 0) for t, p, o in self._lettered)
        if 2 * behind >= len(self._lettered):
            learned = self._last_learned_ts
            self._publish(ts=self._last_publish_ts if learned is None else learned)
        self._letters_bound = len(self._lettered) + LETTERS_LISTED

    def _on_lost(self, tp: TopicPartition, offset: int, start: int) -> None:
        """Samples ``offset`` to ``start - 1`` of ``tp`` were deleted before they were read:
        the gap goes to the dead letters now, the offset past it once the samples read
        before it are learned (``_past_gaps``)."""
        self.lost += 1
        self._write_letter((*tp, offset), tp[0], lost_letter(self.group, *tp, offset, start))
        self._flush_letters()  # before the reader moves the group's offset past the gap
        self._gaps[tp] = start

    def _past_gaps(self) -> None:
        """Move the offset of each input past its gap once no sample read before the gap
        waits to be learned, and publish a version (the trainer's checkpoint) with it."""
        moved = False
        for tp, start in list(self._gaps.items()):
            if any(where[:2] == tp and where[2] < start for _, _, where in self._held):
                continue
            self.offsets[tp] = max(self.offsets.get(tp, start), start)
            del self._gaps[tp]
            moved = True
        if moved:
            learned = self._last_learned_ts
            self._publish(ts=self._last_publish_ts if learned is None else learned)

    def _caught_up(self, record: Record, window_end: int, sid: str) -> bool:
        """Whether a sample whose id is not remembered, lying over the horizon behind the
        newest learned, is new all the same: its partition was idle while the others went
        on (its joiner shard down or slow), and it is not behind its own partition's newest
        learned (one joiner writes a partition in window-end order, so only a sample written
        again lies behind that). Then it is learned late, out of the merge's order, rather
        than taken for learned and lost."""
        if self._read_ids.remembers(sid):
            return False
        newest = self._newest_in.get(record[:2])
        if newest is not None and window_end < newest - self._read_ids.horizon_ms:
            return False
        self._read_ids.add(window_end, sid)
        return True

    def _behind(self, window_end: int, sid: str) -> None:
        """A sample whose id is not remembered, too far behind the newest learned to tell:
        taken for learned (a joiner's restart writing old samples again), and said, in
        case it was not (a samples partition out of window-end order)."""
        self.behind += 1
        if self.behind == 1 or self.behind % 10_000 == 0:
            log.warning("%d sample(s) so far (%r, window end %d) lay over %d ms of event time "
                        "behind the newest learned, with ids no longer remembered: taken for "
                        "learned", self.behind, sid, window_end, self._read_ids.horizon_ms)

    def _dead_letter(self, record: Record, why: str) -> None:
        """A sample it cannot learn goes to the dead-letter topic (once, also where a
        restart reads it again: ``_write_letter``), and is skipped."""
        dead_log.warning("%s/%d@%d: %s", record.topic, record.partition, record.offset, why)
        self.malformed += 1
        self._write_letter(record[:3], SAMPLES, dead_letter(
            Reason.MALFORMED, str(why), SAMPLES, record.value,
            f"{record.topic}/{record.partition}@{record.offset}"))
        if type(why) is _OutOfRange:
            self._check_labels()

    def _check_labels(self) -> None:
        """Stop a binary learner fed regression labels (a rating, an amount): more than
        half of the first ``LABEL_CHECK`` samples it read had a label outside [0, 1]. It
        would learn from the few left (ratings of 0.5 and 1) and report their AUC."""
        self._out_of_range += 1
        if (read := self._most_of_the_first(self._out_of_range)) is not None:
            raise PipelineError(
                f"pipeline '{self.pipeline.name}': {self._out_of_range} of the first {read} "
                f"samples have labels['{self.pipeline.target}'] outside [0, 1], which the "
                f"binary learner {_described(self.model)} cannot learn (each is in the dead "
                f"letters): declare a regression learner (for instance "
                f"livelearn.models.linear.LinearRegression or livelearn.models.fm.FMRegressor), "
                f"or a label of 0 or 1")

    def _check_refused(self, why: str) -> None:
        """Stop where the learner refused more than half of the first ``LABEL_CHECK``
        samples read: not a few odd samples, but a learner declared wrong for them (an
        FFM of fewer fields than the features function's rows have)."""
        self._refused += 1
        if (read := self._most_of_the_first(self._refused)) is not None:
            raise PipelineError(
                f"pipeline '{self.pipeline.name}': the learner {_described(self.model)} "
                f"refused {self._refused} of the first {read} samples (each is in the dead "
                f"letters): {why}")

    def _most_of_the_first(self, count: int) -> int | None:
        """How many samples were read, if ``count`` (of one kind of sample it could not
        learn, this one included) has just become more than half of the first
        ``LABEL_CHECK`` read; else None."""
        read = count + self.samples - self._samples_at_start
        return read if count == LABEL_CHECK // 2 + 1 and read <= LABEL_CHECK else None

    def _write_letter(self, at: tuple[str, int, int], key: str, letter: dict[str, Any]
                      ) -> None:
        """Write ``letter``, of the sample (or the gap) at ``at`` (topic, partition, offset),
        to the dead-letter topic under ``key`` (at the end of the turn: ``_flush_letters``),
        unless it was written before a restart."""
        if at in self._lettered:
            return
        value = letter_value(letter, key, self.log.record_limit(DEAD_LETTERS), DEAD_LETTERS)
        self._lettered.add(at)
        self._unwritten.append((key, value))
        self._unwritten_reasons[letter["reason"]] += 1

    def _flush_letters(self) -> None:
        """Write the letters of the turn, and with them (group ``GROUP.letters``) where the
        letters not behind the newest version's offsets are, as a restart reads those
        samples again: once a turn, as the whole list is written each time (once a letter,
        a burst of n bad samples wrote it n times: n squared)."""
        if not self._unwritten:
            return
        resume = {} if self.version is None else {
            (t, p): o for t, p, o in self.version.meta["offsets"]}
        self._lettered = {(t, p, o) for t, p, o in self._lettered if o >= resume.get((t, p), 0)}
        with self.log.atomic():
            self.log.append(DEAD_LETTERS, self._unwritten)
            self.log.commit(f"{self.group}.letters",
                            Checkpoint({}, orjson.dumps({"topic_ids": self.topic_ids,
                                                         "letters": sorted(self._lettered)})))
        self._unwritten = []
        self.written += self._unwritten_reasons
        self._unwritten_reasons = Counter()

    def _train(self, samples: list[dict[str, Any]], where: list[tuple[str, int, int]]
               ) -> Trained:
        bits, hash_rows = self.model.bits, self.pipeline.hash_rows
        try:
            batch = hash_rows([s["features"] for s in samples], bits)
        except (TypeError, ValueError, BadInput):  # a value null, not a scalar, or not of
            samples, where = self._hashable(samples, where)  # the type its transform takes
            batch = hash_rows([s["features"] for s in samples], bits)
        if not self._names_checked and samples:
            self._check_names(samples)
        target = self.pipeline.target
        labels = np.array([float(s["labels"][target]) for s in samples])
        if self._last_publish_ts is None and samples:  # publish_every_ms runs from here
            self._last_publish_ts = int(samples[0]["ts"])
        trained = Trained(samples, batch, labels, np.empty(len(samples)))
        dead = np.zeros(len(samples), dtype=bool)  # dead-lettered by _learn_rows
        start = 0
        for cut in [*self._publish_points(samples), None]:
            stop = len(samples) if cut is None else cut
            trained.scores[start:stop], dead[start:stop] = self._learn(
                batch.slice(start, stop), labels[start:stop], samples[start:stop],
                where[start:stop])
            start = stop
            if cut is not None:
                trained.published.append(self._publish(ts=int(samples[cut - 1]["ts"]),
                                                       unlearned=where[cut:]))
        dropped = np.flatnonzero(dead)
        return _without(trained, dropped) if len(dropped) else trained

    def _hashable(self, samples: list[dict[str, Any]], where: list[tuple[str, int, int]]
                  ) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]]]:
        """The samples whose features can be hashed (``_unfit``), and where they are; the
        others dead-lettered, naming the feature."""
        keep = []
        for sample, (topic, partition, offset) in zip(samples, where, strict=True):
            problem = self._unfit(sample["features"])
            if problem is None:
                keep.append((sample, (topic, partition, offset)))
                continue
            # taken as learned (the rebuild reads it back as such: see train.rebuild)
            self._learned_until(sample["window_end"])
            self._dead_letter(Record(topic, partition, offset, sample["id"], orjson.dumps(sample)),
                              f"sample cannot be learned: {problem}")
        return [s for s, _ in keep], [w for _, w in keep]

    def _check_names(self, samples: list[dict[str, Any]]) -> None:
        """Warn, once, of the names the declared transforms read that none of the first
        samples has: a misspelled name is left out of every row without an error."""
        assert self.pipeline.transforms is not None
        self._names_checked = True
        present = set().union(*(s["features"] for s in samples))
        missing = [name for name in self.pipeline.transforms.names if name not in present]
        if missing:
            log.warning("pipeline '%s': the transforms read %s, which none of the first %d "
                        "samples has (their features: %s): nothing is learned from them. A "
                        "misspelled name?", self.pipeline.name, ", ".join(map(repr, missing)),
                        len(samples), ", ".join(sorted(present)))

    def _unfit(self, features: dict[str, Any]) -> str | None:
        """Why ``features`` cannot be hashed, naming the feature, or None: by the pipeline's
        transforms where it declares them (a Numeric given a str, for instance; what none
        of them reads, and a null, are left out, whatever samples share the turn), else by
        features.hashing.unusable (a value not a number, a string or a bool)."""
        if self.pipeline.transforms is None:
            problem = unusable(features)
            return None if problem is None else (f"{problem} (as the sample's JSON holds "
                                                 f"it: NaN and infinities are written as null)")
        try:
            self.pipeline.transforms.hash_rows([features], self.model.bits)
        except BadInput as e:
            return str(e)
        return None

    def dead_letters(self) -> Counter[str]:
        """The dead letters this trainer wrote, by reason: the samples it cannot learn as
        ``malformed``, its gaps as ``lost``; not those a trainer before it wrote (a sample
        met again after a restart, its letter written before, is not counted again)."""
        return +self.written

    def publish_now(self) -> Version | None:
        """Publish what was learned since the last version (at the end of a bounded run)."""
        if self._since_publish == 0:
            return None
        return self._publish(ts=self._last_learned_ts)

    def _publish_points(self, samples: list[dict[str, Any]]) -> list[int]:
        """Indices after which a version is due, by sample count or event time (none
        in a turn whose every sample was dead-lettered)."""
        points: list[int] = []
        if not samples:
            return points
        count, last = self._since_publish, self._last_publish_ts
        assert last is not None  # set by _train
        every_ms = self.policies.publish_every_ms
        if count + len(samples) < self.policies.publish_every_samples \
                and max(s["ts"] for s in samples) - last < every_ms:
            return points  # neither the count nor the time is reached in this batch
        for i, s in enumerate(samples):
            count += 1
            if count >= self.policies.publish_every_samples or \
                    s["ts"] - last >= every_ms:
                points.append(i + 1)
                count, last = 0, s["ts"]
        return points

    def _learn(self, batch: SparseBatch, labels: np.ndarray, samples: list[dict[str, Any]],
               where: list[tuple[str, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Learn the samples; their scores, and which were dead-lettered (``_learn_rows``),
        which are taken for learned all the same (their offsets and ids). A score the
        learner gave that it must not (nan among them) stops the trainer (``_stop``)."""
        if len(batch) == 0:
            return np.empty(0), np.zeros(0, dtype=bool)
        scores, dead = self._learn_rows(batch, labels, samples, where)
        learned, scored, truth, kept = len(batch), scores, labels, where
        if dead.any():
            rows = np.flatnonzero(~dead)
            learned, scored, truth = len(rows), scores[rows], labels[rows]
            kept = [where[r] for r in rows.tolist()]
        problem = score_problem(self.model, scored)
        if problem is not None:
            self._stop(f"gave sample {samples[where.index(kept[problem[0]])]['id']!r} "
                       f"{problem[1]}")
        self.metric.update(scored, truth)
        self.window.update(scored, truth)  # the same samples as _recent, in the same order
        self._recent.extend(kept[-(self._recent.maxlen or 0):])  # only the last ones stay
        self.offsets.update({(topic, partition): offset + 1 for topic, partition, offset in where})
        newest = self._newest_in
        for (topic, partition, _), sample in zip(where, samples, strict=True):
            if sample["window_end"] > newest.get((topic, partition), -(2**63)):
                newest[(topic, partition)] = sample["window_end"]
        self._learned_until(max(sample["window_end"] for sample in samples))
        self._last_learned_ts = int(samples[-1]["ts"])
        self.samples += learned
        self._since_publish += learned
        return scores, dead

    def _learned_until(self, window_end: int) -> None:
        if self._learned_newest is None or window_end > self._learned_newest:
            self._learned_newest = window_end

    def _learn_rows(self, batch: SparseBatch, labels: np.ndarray,
                    samples: list[dict[str, Any]], where: list[tuple[str, int, int]]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Score and learn each row in turn: the scores, and which rows were dead-lettered.
        A row whose learning leaves a weight that is not a finite number (Diverged: a
        value like 1e200) is put back, where the learner can (``Learner.undo_point``, or
        its state kept, for a learner without one: ``_kept_state``, checked after the
        batch, as such a learner may raise no Diverged itself), dead-lettered and scored
        nan, and the rows after it learned; the ``MAX_SPOILING`` + 1-th since the last
        version, or one the learner cannot put back, stops the trainer."""
        undo = self.model.undo_point(batch)
        kept = undo is None  # a learner that cannot say what it changes: a copy of it
        if kept:
            undo = self._kept_state()
        try:
            scores = self.model.predict_then_learn(batch, labels)
            if kept and undo is not None and not_finite(self.model):
                check_learned(self.model, batch, labels,
                              self._spoiling_row(batch, labels, samples, undo))
            return scores, np.zeros(len(scores), dtype=bool)
        except BadInput as e:  # a row it refuses (more features than an FFM has fields)
            if undo is None:
                raise
            undo()
            return self._learn_taken(batch, labels, samples, where, e)
        except Diverged as e:
            row, name = e.row, samples[e.row]["id"]
            if undo is None or self._spoiling == MAX_SPOILING:
                more = (f", as {self._spoiling} before it since the last version did (put "
                        f"back, in the dead letters)" if self._spoiling else "")
                self._stop(f"learned sample {name!r} into weights that are not finite "
                           f"numbers{more}")
            undo()
            self._spoiling += 1
            topic, partition, offset = where[row]
            self._dead_letter(Record(topic, partition, offset, name, orjson.dumps(
                samples[row], option=orjson.OPT_SERIALIZE_NUMPY)), f"sample cannot be learned: "
                f"learning it ({e.values}) left weights of {_described(self.model)} that are "
                f"not finite numbers (scale large numeric features, e.g. with log1p); they "
                f"were put back as they were before it")
        except Exception as e:
            if isinstance(e, LivelearnError):
                raise
            self._stop(f"raised {type(e).__name__} learning the samples {samples[0]['id']!r} "
                       f"to {samples[-1]['id']!r}: {e}")
        before = (self.model.predict_then_learn(batch.slice(0, row), labels[:row]) if row
                  else np.empty(0))  # learned again as before
        after, dead = self._learn_rows(batch.slice(row + 1, len(batch)), labels[row + 1:],
                                       samples[row + 1:], where[row + 1:])
        return (np.concatenate([before, [np.nan], after]),
                np.concatenate([np.zeros(row, dtype=bool), [True], dead]))

    def _kept_state(self) -> Callable[[], None] | None:
        """The undo point of a learner without one of its own (``Learner.undo_point``): a
        copy of its ``state()``, made now (an adapter's: a pickle), that ``set_state``
        puts back; None if that fails."""
        try:
            kept = {name: np.array(array) for name, array in self.model.state().items()}
        except Exception as e:  # a learner whose state() fails
            log.warning("the state of the learner %s cannot be kept (%s: %s): a sample that "
                        "spoils it stops the trainer; give it an undo_point "
                        "(models.base.Learner)", _described(self.model), type(e).__name__, e)
            return None

        def undo() -> None:  # copies again: it may be put back more than once
            self.model.set_state({name: array.copy() for name, array in kept.items()})

        return undo

    def _spoiling_row(self, batch: SparseBatch, labels: np.ndarray,
                      samples: list[dict[str, Any]], undo: Callable[[], None]) -> int:
        """The row of ``batch`` whose learning left a parameter of the learner (one without
        an undo point of its own) not finite, by halves: learned from the copy kept, the
        rows before it leave the learner sound, and with it they do not. A learner that
        was not sound before the batch stops the trainer."""
        undo()
        if not_finite(self.model):  # as resumed: a version published spoiled, say
            self._stop(f"held weights that are not finite numbers before it learned sample "
                       f"{samples[0]['id']!r}")
        sound, spoiled = 0, len(batch)  # rows [0, sound) leave it sound, [0, spoiled) not
        while spoiled - sound > 1:
            half = (sound + spoiled) // 2
            undo()
            try:
                self.model.predict_then_learn(batch.slice(0, half), labels[:half])
                ok = not not_finite(self.model)
            except Exception:  # its own error, on what it learned before: spoiled too
                ok = False
            sound, spoiled = (half, spoiled) if ok else (sound, half)
        return sound

    def _learn_taken(self, batch: SparseBatch, labels: np.ndarray,
                     samples: list[dict[str, Any]], where: list[tuple[str, int, int]],
                     error: BadInput) -> tuple[np.ndarray, np.ndarray]:
        """``_learn_rows`` of a batch the learner refused (``error``): the rows it refuses
        alone are dead-lettered with its reason and scored nan, the others learned."""
        refused: dict[int, str] = {}
        for r in range(len(batch)):
            try:
                self.model.predict(batch.slice(r, r + 1))
            except BadInput as e:
                refused[r] = str(e)
        if not refused:  # not a row's fault: the learner's own error
            raise error
        for r, why in refused.items():
            topic, partition, offset = where[r]
            self._dead_letter(Record(topic, partition, offset, samples[r]["id"],
                                     orjson.dumps(samples[r])),
                              f"sample cannot be learned: {why}")
            self._check_refused(why)
        rows = [r for r in range(len(batch)) if r not in refused]
        scores, dead = self._learn_rows(batch.take(np.array(rows, dtype=np.int64)), labels[rows],
                                        [samples[r] for r in rows], [where[r] for r in rows])
        all_scores, all_dead = np.full(len(batch), np.nan), np.ones(len(batch), dtype=bool)
        all_scores[rows], all_dead[rows] = scores, dead
        return all_scores, all_dead

    def _stop(self, what: str) -> NoReturn:
        """PipelineError for ``what`` the learner did that it must not (gave a score out of
        range, weights diverged): what it learned since the last version is not published
        (a restart resumes from that version)."""
        hint = (" (its weights diverged: lower its learning rate, or scale large numeric "
                "features, e.g. with log1p)" if "finite" in what else "")
        last = "" if self.version is None else f" since v{self.version.id}"
        raise PipelineError(f"pipeline '{self.pipeline.name}': the learner "
                            f"{_described(self.model)} {what}{hint}; nothing learned{last} "
                            f"is published")

    def _resume_at(self, unread: Iterable[tuple[str, int, int]]) -> dict[TopicPartition, int]:
        """Where a restart resumes each input: past the last sample learned, or at the
        first of ``unread`` (read, not learned yet) before it."""
        resume = dict(self.offsets)
        for topic, partition, offset in unread:
            if offset < resume.get((topic, partition), offset + 1):
                resume[(topic, partition)] = offset
        return resume

    def _publish(self, ts: int | None, unlearned: Sequence[tuple[str, int, int]] = ()
                 ) -> Version:
        """Publish the current model as a candidate, with its metrics and lineage.

        A restart resumes reading each partition at the version's offset: past the last
        sample learned, unless a sample read but not learned yet (``unlearned``, the
        rest of the turn, and the samples held back) lies before it, as one of a window
        end learned in id order may; the samples then read again are skipped by id.
        The details hold what a restart resumes from (``_resume``): where the ids learned
        lately are (``rebuild``: train.rebuild, with ``unlearned`` and the samples held
        back to skip), the newest window end learned from each partition (``newest_in``), the
        overall metric's state (``metric_state``), and the window: by partition
        (``"topic/partition"``), the offsets of its samples with their scores (what the gate
        reads) and labels, and in ``runs`` the order the samples were
        learned in, as runs of consecutive samples of one partition (``[["samples/0",
        5000]]`` for one partition), oldest first; and the dead letters written that its
        offsets are past (``letters``, as ``[topic, partition, offset]``), which a restart
        falling back past this version (its file damaged) reads again, and skips.
        """
        self._flush_letters()  # a version's offsets never pass a letter not written
        offsets: dict[str, list[int]] = {}
        scores: dict[str, list[float]] = {}
        labels: dict[str, list[float]] = {}
        runs: list[list[Any]] = []
        window_scores, window_labels = self.window.arrays()
        for (topic, partition, offset), score, label in zip(
                self._recent, window_scores.tolist(), window_labels.tolist(), strict=True):
            where = f"{topic}/{partition}"
            if where not in offsets:
                offsets[where], scores[where], labels[where] = [], [], []
            offsets[where].append(offset)
            scores[where].append(score)
            labels[where].append(label)
            if runs and runs[-1][0] == where:
                runs[-1][1] += 1
            else:
                runs.append([where, 1])
        unread = [*unlearned, *(h[2] for h in self._held)]
        resume = self._resume_at(unread)
        meta = {
            "pipeline": self.pipeline.name, "trainer": self.group, "samples": self.samples,
            "event_ts": ts,
            "offsets": [[t, p, o] for (t, p), o in sorted(resume.items())],
            "topic_ids": self.topic_ids,
            "metric": self.kind, "prequential": self.metric.get() if self.samples else None,
            "window": {"metric": self.window.get() if self.window.count else None,
                       "samples": len(self._recent)},
        }
        newest = self._learned_newest
        oldest = None if newest is None else newest - self._read_ids.horizon_ms
        behind = {at for at in self._lettered if at[2] < resume.get(at[:2], 0)}
        details = {"rebuild": self._marks.rebuild(oldest, unread),
                   "letters": sorted(behind),
                   "newest_in": [[t, p, end] for (t, p), end in sorted(self._newest_in.items())],
                   "metric_state": self.metric.state(),
                   "window": {"offsets": offsets, "scores": scores, "labels": labels,
                              "runs": runs, "count": self.window.count}}
        parent = None if self.version is None else self.version.id
        self.version = self.registry.publish(self.model, meta, parent, details)
        self._lettered -= behind  # the group's list drops them at its next write
        self._since_publish, self._spoiling, self._last_publish_ts = 0, 0, ts
        return self.version
