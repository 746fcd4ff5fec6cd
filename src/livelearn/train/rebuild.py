"""Where a restarted trainer reads back the ids it had learned (train.dedup.RecentIds).

A version does not list the ids its trainer remembered (at thousands of samples
a second, millions of ids: tens of MB in every version). It records, per samples
partition, a range of offsets that holds them, ``from`` (inclusive) to ``to``
(exclusive), and the offsets in it that were read but not learned (``skip``, as
runs ``[topic, partition, first offset, count]``: the rest of a step that a publish
cut is one run a partition); a restart reads the range again (``read_back``).
Its size does not grow with the stream's rate. Ids a version of an earlier
livelearn listed, still within the horizon, are listed (``ids``) until they are
forgotten.

Why the ids read back are the ones remembered: a RecentIds keeps an id iff its
window end lies within the horizon of the newest window end added, whatever the
order ids are added in (tests/test_properties.py). ``Marks`` forgets a batch of
a partition only once its largest window end lies beyond the horizon of the
newest learned, so every learned sample still remembered lies in [from, to):
``to`` is past the last record the trainer took from the partition (not the
reader's position: it buffers records not taken yet). In that range, the
samples read but not learned yet (the rest of a step cut by a publish, those
held back) are in ``skip``, and left out with any other sample of the same id; a
record that is not a sample the trainer did not learn either. (A sample whose
features cannot be hashed is dead-lettered, and its id counted as learned, so
that ``skip`` stays short: a feature NaN in many samples would make it long.)
So a restart adds the same ids, with the same newest end. (An id written twice
with two window ends would keep the end added last: read back, a partition at a
time, that may be the other one.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from livelearn.log.base import Log, Record, TopicPartition, read_again

#: A place in the log: (topic, partition, offset).
Where = tuple[str, int, int]
#: The window end of a record that is not a sample: forgotten at once.
_NONE = -(2**63)
#: Records read at a time by ``read_back``.
READ_BATCH = 5000


class Marks:
    """Per samples partition, where each batch the trainer took starts and its largest
    window end, oldest first: what ``rebuild`` needs to say where the ids are."""

    def __init__(self) -> None:
        self._marks: dict[TopicPartition, deque[tuple[int, int]]] = {}
        #: past the last record taken from each partition, by this trainer or (restored
        #: by ``read_back``) the one whose version it resumed
        self.frontier: dict[TopicPartition, int] = {}
        self._taken: dict[TopicPartition, int] = {}  # the same, by this trainer alone
        # the skip of the version resumed, until this trainer takes those records again
        self._pending: list[Where] = []
        self.listed: list[tuple[int, str]] = []  # ids listed by the version resumed

    def note(self, batch: Iterable[tuple[Record, Any]]) -> None:
        """Mark a batch of records taken, each with its sample (a dict) or why not;
        a partition's records come in offset order."""
        firsts: dict[TopicPartition, list[int]] = {}
        for record, sample in batch:
            tp = (record.topic, record.partition)
            end = sample["window_end"] if type(sample) is dict else _NONE
            mark = firsts.get(tp)
            if mark is None:
                firsts[tp] = [record.offset, end, record.offset]
            else:
                mark[1], mark[2] = max(mark[1], end), record.offset
        for tp, (first, end, last) in firsts.items():
            self._marks.setdefault(tp, deque()).append((first, end))
            self._taken[tp] = last + 1
            self.frontier[tp] = max(self.frontier.get(tp, last + 1), last + 1)

    def resumed(self, skip: Iterable[Where], listed: list[tuple[int, str]]) -> None:
        """The version resumed skipped ``skip`` (kept in this trainer's versions until it
        takes those records again) and listed ``listed``."""
        self._pending, self.listed = sorted(skip), listed

    def rebuild(self, oldest: int | None, unlearned: Iterable[Where]) -> dict[str, Any]:
        """A version's ``rebuild``, the marks of samples older than ``oldest`` (window
        end, ms: forgotten) dropped; ``unlearned``: the samples read, not learned yet."""
        starts = {tp: self._start(tp, oldest) for tp in self.frontier}
        self._pending = [w for w in self._pending if w[2] >= self._taken.get(w[:2], -1)]
        skip = {*unlearned, *self._pending}
        self.listed = [(end, sid) for end, sid in self.listed
                       if oldest is None or end >= oldest]
        rebuild: dict[str, Any] = {
            "from": [[t, p, o] for (t, p), o in sorted(starts.items())],
            "to": [[t, p, o] for (t, p), o in sorted(self.frontier.items())],
            "skip": _runs(skip)}
        if self.listed:
            rebuild["ids"] = [[end, sid] for end, sid in self.listed]
        return rebuild

    def _start(self, tp: TopicPartition, oldest: int | None) -> int:
        """Where the samples of ``tp`` not older than ``oldest`` start (the marks of older
        ones dropped): the smallest first offset left (the marks read back and those
        taken again after a restart overlap), else the frontier."""
        marks = self._marks.get(tp)
        while marks and oldest is not None and marks[0][1] < oldest:
            marks.popleft()
        return min((first for first, _ in marks or ()), default=self.frontier[tp])


def read_back(log_: Log, key: Callable[[Record], tuple[Any, Any]], rebuild: dict[str, Any],
              marks: Marks) -> list[tuple[int, str]]:
    """The (window end, id) of the samples learned in a version's ``rebuild`` (see the
    module's docstring), read from the log; ``marks`` take the ranges read, as if this
    trainer had taken them. ``key`` is the reader's (trainer._sample_key): what is not a
    sample to it was not learned."""
    skip = {(t, p, o) for t, p, first, n in rebuild["skip"] for o in range(first, first + n)}
    ends = {(t, p): o for t, p, o in rebuild["to"]}
    starts = {(t, p): o for t, p, o in rebuild["from"]}
    learned: list[tuple[int, str]] = []
    skipped: set[str] = set()
    for tp, end in ends.items():
        for records in read_again(log_, tp, starts.get(tp, end), end, "the ids learned from "
                                  "them are forgotten, and a sample among them written "
                                  "again would be learned again", READ_BATCH):
            batch = [(r, key(r)[1]) for r in records]
            marks.note(batch)
            for record, sample in batch:
                if type(sample) is not dict:
                    continue
                if record[:3] in skip:
                    skipped.add(sample["id"])
                else:
                    learned.append((sample["window_end"], sample["id"]))
        marks.frontier[tp] = max(marks.frontier.get(tp, end), end)
    marks.resumed(skip, [(int(end), str(sid)) for end, sid in rebuild.get("ids", [])])
    return [(end, sid) for end, sid in learned if sid not in skipped] + marks.listed


def _runs(places: Iterable[Where]) -> list[list[Any]]:
    """``places`` as runs of consecutive offsets, [topic, partition, first, count], in order."""
    runs: list[list[Any]] = []
    for t, p, o in sorted(set(places)):
        last = runs[-1] if runs else None
        if last is not None and last[:2] == [t, p] and last[2] + last[3] == o:
            last[3] += 1
        else:
            runs.append([t, p, o, 1])
    return runs
