"""The gate: where a model version is approved, rejected or rolled back.

A candidate carries its prequential scores of the most recent window of
samples (each scored before it learned it). The gate takes the samples of that
window that the incumbent (the version served or about to be) never learned,
scores them with the incumbent, and approves the candidate only if its metric
on them is no worse than the incumbent's by more than ``tolerance``: both
models judged on the same samples, neither having learned them.

It also watches the serving version: when its live metric (the scores it
actually served) is worse than the previous serving version's on the same
samples by more than ``tolerance`` (an AUC lower, an MAE higher), it rolls
back: the serving version is rejected and the previous one approved again, so
the servers swap back to it. Every decision is written to the Registry with its
reason, and logged.

With a canary (Policies.canary_share), a candidate that passes becomes the
canary instead of the incumbent: the servers score a share of the users with it.
Once it has served ``canary_samples`` joined samples, its live metric on them
(the scores it served) is set against the incumbent's on the samples the
incumbent served over the same event times: within ``tolerance``, the canary is
approved and every server swaps to it; otherwise it is rejected. The newest
candidate is judged next; those that waited behind it are retired unjudged.
A canary that cannot be judged is rejected, saying why, rather than left a canary
forever: once it has served the most samples the gate keeps of it (``live_window``)
while the incumbent served fewer than ``min_samples`` over their event times (too
few users outside the share), or once the incumbent has served three times what it
serves at the share while the canary serves ``canary_samples``, and the canary has not
(too few users in the share). Policies.canary_share is checked at load time so that
the first happens by chance only. A canary left when the share is set to 0 (no server
scores with it any more) is judged as a candidate is.

A version the gate needs whose model file is damaged, missing or unreadable (the
incumbent, or the previous serving version) is rejected with the reason, as the
trainer does with its own, and the gate goes on with the version before it: the
incumbent before it judges the candidate (none left: the candidate is approved as
the first one is), and a rollback is not judged against a version no server could
load.

A verdict is recorded only if the version is still what the gate judged (a candidate,
the canary, the version serving): one promoted, rejected or rolled back meanwhile (by
hand, ``livelearn models``) keeps what was done to it, and the verdict is dropped,
logged. A gate whose trainer was taken over (Registry.claim) stops at its next
verdict (Fenced), writing nothing: one gate decides at a time.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from livelearn.errors import Corrupt, NotFound
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import Features, hash_rows, unusable
from livelearn.log.base import Log, Record
from livelearn.models.base import Learner
from livelearn.registry import Registry, Version
from livelearn.spec import GATE_LIVE_WINDOW, GATE_MIN_SAMPLES, SAMPLES, Pipeline
from livelearn.train.metrics import auc, mae

log = logging.getLogger("livelearn.gate")

#: A sample as served: (its ts, features, the served score, the label).
Served = tuple[int, dict[str, Any], float, float]


@dataclass(frozen=True)
class Decision:
    version: int
    approved: bool
    reason: str
    candidate_metric: float | None
    incumbent_metric: float | None
    canary: bool = False  # approved to serve a share of the users first


class Gate:
    """Validates candidates of a Registry against samples read from a Log."""

    def __init__(self, log: Log, registry: Registry, target: str, tolerance: float,
                 min_samples: int = GATE_MIN_SAMPLES, live_window: int = GATE_LIVE_WINDOW,
                 rollback_samples: int = 1000, keep_versions: int | None = None,
                 hash_rows: Callable[[Sequence[Features], int], SparseBatch] = hash_rows,
                 canary_share: float = 0.0, canary_samples: int = 1000):
        """``hash_rows``: how feature rows become a model's input (Pipeline.hash_rows);
        ``canary_share`` above 0: a candidate that passes is a canary first (module
        docstring)."""
        self.log, self.registry, self.target, self.tolerance = log, registry, target, tolerance
        self.hash_rows = hash_rows
        self.keep_versions = keep_versions  # past versions whose files are kept (None: all)
        self.canary_share, self.canary_samples = canary_share, canary_samples
        self.min_samples, self.live_window = min_samples, max(live_window, canary_samples)
        self.rollback_samples = rollback_samples
        self._cursor: dict[tuple[str, int], int] = {}  # next sample offset to read
        self._served: dict[int, deque[Served]] = {}  # version -> samples it served
        self._unjudged: Counter[int] = Counter()  # version -> samples since its last judgement
        self._seen: Counter[int] = Counter()  # version -> samples read that it served
        # (canary, incumbent, the incumbent's samples seen) when the gate began watching them
        self._watched: tuple[int, int, int] | None = None
        self._since: dict[int, int] = {}  # version -> the serving time its samples were read in
        # version served again -> its serving time: the samples of an earlier ts are not read
        self._cut: dict[int, int] = {}
        self._cached: tuple[int, Learner] | None = None
        self._sound_canary: int | None = None  # the canary whose model file was checked

    @classmethod
    def of(cls, log: Log, registry: Registry, pipeline: Pipeline) -> Gate:
        """The gate of ``pipeline``, as its policies say."""
        policies = pipeline.policies
        return cls(log, registry, pipeline.target, policies.gate_tolerance,
                   keep_versions=policies.keep_versions, hash_rows=pipeline.hash_rows,
                   canary_share=policies.canary_share, canary_samples=policies.canary_samples)

    def step(self) -> list[Decision]:
        """Roll back a failing serving version, then judge every waiting candidate, oldest
        first (with canaries: the canary once it has served enough, then the newest
        candidate if no canary is left; without, a canary left from when the share was
        above 0 is judged as a candidate, since no server scores with it); then delete the
        model files of past versions beyond ``keep_versions``."""
        rollback = self.check_rollback()
        decisions = [] if rollback is None else [rollback]
        if self.canary_share:
            decisions += self._step_canary()
        else:  # a canary left from a share since set to 0 first: no server scores with it
            waiting = [*filter(None, [self.registry.canary()]),
                       *self.registry.versions("candidate")]
            decisions += [d for v in waiting if (d := self.judge(v)) is not None]
        if decisions and self.keep_versions is not None:
            self.registry.prune(self.keep_versions)
        return decisions

    def _step_canary(self) -> list[Decision]:
        """The canary's verdict if it has served enough; then, with no canary left, the
        newest candidate judged and the ones before it retired unjudged."""
        decisions = []
        canary = self.registry.canary()
        if canary is not None:
            verdict = self.check_canary(canary)
            if verdict is None:
                return []
            decisions.append(verdict)
        waiting = self.registry.versions("candidate")
        for older in waiting[:-1]:
            self.registry.set_status(older.id, "retired", f"superseded by v{waiting[-1].id} "
                                     f"before it was judged (one canary at a time)",
                                     was="candidate")
        return decisions + [d for v in waiting[-1:] if (d := self.judge(v)) is not None]

    def check_canary(self, canary: Version) -> Decision | None:
        """Approve or reject ``canary`` once it has served ``canary_samples`` joined
        samples: its live metric on them against the incumbent's on the samples the
        incumbent served over the same event times, each with the scores it served. A
        canary whose model file no server can load is rejected at once: it would never
        serve."""
        if self._sound_canary != canary.id:
            try:
                self.registry.check_file(canary.id)
            except Corrupt as e:
                return self._decide(canary, False, f"corrupt: {e}", None, None)
            self._sound_canary = canary.id
        self._read_served()
        name = canary.meta.get("metric", "auc")
        ours = _judgeable(self._served.get(canary.id, ()), name)
        incumbent = self.registry.incumbent()
        if incumbent is None:
            return None
        if len(ours) < self.canary_samples:
            return self._starved(canary, incumbent, len(ours))
        first, last = min(s[0] for s in ours), max(s[0] for s in ours)
        theirs = [s for s in _judgeable(self._served.get(incumbent.id, ()), name)
                  if first <= s[0] <= last]
        if len(theirs) < self.min_samples:
            if len(ours) < self.live_window:
                return None  # the more the canary serves, the longer the times compared
            return self._decide(canary, False, (
                f"canary: cannot be judged: over the event times of the {len(ours)} samples "
                f"it served (the most the gate keeps), v{incumbent.id} served {len(theirs)} "
                f"of the {self.min_samples} the gate needs; too few users are outside "
                f"canary_share {self.canary_share:g} (few users, or a share near 1)"), None, None)
        metric = auc if name == "auc" else mae
        a, b = (metric(np.array([s[2] for s in served]), np.array([s[3] for s in served]))
                for served in (ours, theirs))
        if math.isnan(a) or math.isnan(b):
            return self._decide(canary, False, f"canary: live {name} undefined on the "
                                f"samples served (one class only)", None, None)
        margin = (a - b) if name == "auc" else (b - a)
        verdict = "within" if margin >= -self.tolerance else "worse by more than"
        return self._decide(canary, margin >= -self.tolerance, (
            f"canary: live {name} {a:.4f} on the {len(ours)} samples it served vs "
            f"v{incumbent.id}'s {b:.4f} on the {len(theirs)} it served meanwhile: {verdict} "
            f"tolerance {self.tolerance}"), a, b)

    def _starved(self, canary: Version, incumbent: Version, served: int) -> Decision | None:
        """None while ``canary``, having ``served`` samples, may still serve its
        ``canary_samples``; its rejection once ``incumbent`` has served, since the gate
        began watching them, three times what it serves meanwhile at the share."""
        if self._watched is None or self._watched[:2] != (canary.id, incumbent.id):
            self._watched = (canary.id, incumbent.id, self._seen[incumbent.id])
        theirs = self._seen[incumbent.id] - self._watched[2]
        share = self.canary_share
        if theirs < 3 * self.canary_samples * (1 - share) / share:
            return None
        return self._decide(canary, False, (
            f"canary: cannot be judged: it served {served} of the {self.canary_samples} "
            f"samples it needs while v{incumbent.id} served {theirs}, three times what "
            f"v{incumbent.id} serves meanwhile at canary_share {share:g}; too few users are "
            f"in the share (few users, or a share near 0)"), None, None)

    def check_rollback(self) -> Decision | None:
        """Roll back when the serving version's live metric is worse than the previous
        serving version's by more than the tolerance.

        Both are measured on the same samples: the most recent ones the serving
        version scored live, with the scores it served, against the previous
        version's scores of them (it never learned them: they came after it). A
        version served again (promoted back, a rollback's target) is judged by what
        it served since: the version before it may have learned what it served before.
        """
        serving = self.registry.versions("serving")
        since = serving[-1].serving_since_ts if serving else None
        if since is None:
            return None
        current = serving[-1]
        self._serving_since(current.id, since)
        samples = self._served_by(current.id)  # read at every step, even with no previous
        # version: a version served again is told apart from what it served before
        previous = self.registry.previous_served(current)
        if previous is None or samples is None:
            return None
        model = self._load(previous)
        if model is None:
            return None
        name = current.meta.get("metric", "auc")
        samples = _judgeable(samples, name)
        if not samples:
            return None
        _, features, served, labels = zip(*samples, strict=True)
        rows = self.hash_rows(features, model.bits)
        metric = auc if name == "auc" else mae
        ours = metric(np.array(served), np.array(labels))
        theirs = metric(model.predict(rows), np.array(labels))
        margin = (ours - theirs) if name == "auc" else (theirs - ours)
        if math.isnan(margin) or margin >= -self.tolerance:
            return None
        worse = "fell below" if name == "auc" else "rose above"  # an error: lower is better
        reason = (f"rolled back: live {name} of v{current.id} {ours:.4f} on the "
                  f"{len(samples)} samples it served {worse} v{previous.id}'s "
                  f"{theirs:.4f} on them by more than {self.tolerance}")
        try:
            self.registry.rollback(reason, current.id)
        except NotFound:  # rolled back or superseded while the gate judged it
            log.info("v%d no longer serves: not rolled back (%s)", current.id, reason)
            return None
        log.warning("v%d %s", current.id, reason)
        return Decision(current.id, False, reason, ours, theirs)

    def _serving_since(self, version: int, since: int) -> None:
        """Note that ``version`` serves since event time ``since`` (ms); if it served
        before from another time (served again), drop the samples read of then."""
        if version not in self._since and self.registry.served_before(version):
            self._cut[version] = since  # a gate started since: the log holds both times
        if self._since.setdefault(version, since) != since:
            self._since[version] = self._cut[version] = since
            self._served.pop(version, None)
            self._unjudged.pop(version, None)

    def _served_by(self, version: int) -> list[Served] | None:
        """The most recent samples (at most ``live_window``) that ``version`` served, if
        there are ``rollback_samples`` and half as many came since the last look.

        Samples are read once, as they come (starting ``live_window`` offsets back),
        and kept per version for the versions served lately.
        """
        self._read_served()
        served = self._served.get(version, ())
        if len(served) < self.rollback_samples or \
                self._unjudged[version] < self.rollback_samples // 2:
            return None
        self._unjudged[version] = 0
        return list(served)

    def _read_served(self) -> None:
        """Read the samples written since the last call, keep them by the version that
        served them (for the 4 versions that served last), and count them among that
        version's samples not judged yet (those it cannot judge by, ``_served``, left
        out, and those a version served again served before its serving time, ``_cut``)."""
        for (topic, partition), end in self.log.end_offsets([SAMPLES]).items():
            at = self._cursor.setdefault((topic, partition), max(0, end - self.live_window))
            for record in self._read_range(topic, partition, at, end):
                found = _served(record.value, self.target)
                if found is not None and found[1][0] >= self._cut.get(found[0], found[1][0]):
                    version, served = found
                    self._served_lately(version).append(served)
                    self._unjudged[version] += 1
                    self._seen[version] += 1
                self._cursor[(topic, partition)] = record.offset + 1
        for old in list(self._served)[:-4]:  # keep the versions served lately
            del self._served[old]
        for old in self._unjudged.keys() - self._served.keys():  # and only their counts
            del self._unjudged[old]
        for old in self._seen.keys() - self._served.keys():
            del self._seen[old]
        for old in self._since.keys() - self._served.keys():  # and serving times
            del self._since[old]
            self._cut.pop(old, None)

    def _served_lately(self, version: int) -> deque[Served]:
        """The samples ``version`` served, its place moved last in ``_served``: the versions
        in the order they last served (not by number: an old version may serve again)."""
        served = self._served.pop(version, None)
        if served is None:
            served = deque(maxlen=self.live_window)
        self._served[version] = served
        return served

    def judge(self, candidate: Version) -> Decision | None:
        """Approve or reject ``candidate`` (a canary first, with canaries); None if it was
        no longer a candidate when the verdict was to be recorded."""
        incumbent, model = self._incumbent()
        if incumbent is None or model is None:
            return self._decide(candidate, True, "no version approved yet", None, None)
        samples, ours = self._unseen_window(candidate, incumbent)
        name = candidate.meta["metric"]
        if len(samples) < self.min_samples:
            return self._decide(candidate, False, f"only {len(samples)} recent samples that "
                                f"incumbent v{incumbent.id} has not learned; need "
                                f"{self.min_samples} to judge", None, None)
        labels = np.array([float(s["labels"][self.target]) for s in samples])
        theirs = model.predict(self.hash_rows([s["features"] for s in samples], model.bits))
        metric = auc if name == "auc" else mae
        a, b = metric(np.array(ours), labels), metric(theirs, labels)
        if math.isnan(a) or math.isnan(b):
            return self._decide(candidate, False, f"{name} undefined on the last "
                                f"{len(samples)} samples (one class only)", None, None)
        margin = (a - b) if name == "auc" else (b - a)
        verdict = "within" if margin >= -self.tolerance else "worse by more than"
        reason = (f"{name} {a:.4f} vs incumbent v{incumbent.id} {b:.4f} on the "
                  f"{len(samples)} most recent samples it has not learned: {verdict} "
                  f"tolerance {self.tolerance}")
        return self._decide(candidate, margin >= -self.tolerance, reason, a, b,
                            canary=self.canary_share > 0)

    def _unseen_window(self, candidate: Version, incumbent: Version
                       ) -> tuple[list[dict[str, Any]], list[float]]:
        """The candidate's recent samples that the incumbent never learned, and the
        candidate's prequential scores of them."""
        window = self.registry.details(candidate.id).get("window") or {}
        learned = {f"{t}/{p}": o for t, p, o in incumbent.meta.get("offsets", [])}
        samples: list[dict[str, Any]] = []
        scores: list[float] = []
        for where, offsets in window.get("offsets", {}).items():
            wanted = {o: s for o, s in zip(offsets, window["scores"][where], strict=True)
                      if o >= learned.get(where, 0)}
            topic, partition = where.rsplit("/", 1)
            for record in self._read_range(topic, int(partition), min(wanted, default=0),
                                           max(wanted, default=-1) + 1):
                if record.offset in wanted:
                    samples.append(orjson.loads(record.value))
                    scores.append(wanted[record.offset])
        return samples, scores

    def _read_range(self, topic: str, partition: int, lo: int, hi: int) -> list[Record]:
        """Records with offsets in [lo, hi) (offsets may have gaps) still in the log."""
        out: list[Record] = []
        lo = max(lo, self.log.start_offset(topic, partition))
        while lo < hi and (records := self.log.read(topic, partition, lo, 5000)):
            out += [r for r in records if r.offset < hi]
            lo = records[-1].offset + 1
        return out

    def _incumbent(self) -> tuple[Version | None, Learner | None]:
        """The incumbent and its learner; one whose file cannot be loaded is rejected and
        the incumbent after that taken."""
        while (incumbent := self.registry.incumbent()) is not None:
            model = self._load(incumbent)
            if model is not None:
                return incumbent, model
        return None, None

    def _load(self, version: Version) -> Learner | None:
        """The learner of ``version``; None if its file is damaged, missing or unreadable,
        and the version rejected, so that no one goes back to it."""
        if self._cached is None or self._cached[0] != version.id:
            try:
                self._cached = (version.id, self.registry.load(version.id))
            except Corrupt as e:
                if self.registry.set_status(version.id, "rejected", f"corrupt: {e}",
                                            was=version.status):
                    log.warning("v%d rejected: %s", version.id, e)
                return None
        return self._cached[1]

    def _decide(self, candidate: Version, approved: bool, reason: str,
                ours: float | None, theirs: float | None, canary: bool = False
                ) -> Decision | None:
        """Record the verdict: approved (a canary first if ``canary``) or rejected; None,
        and nothing recorded, if ``candidate``'s status changed since it was read."""
        status = "rejected" if not approved else "canary" if canary else "approved"
        if status == "canary":
            reason += (f"; a canary: it scores {self.canary_share:.0%} of the users until it "
                       f"has served {self.canary_samples} samples")
        if not self.registry.set_status(candidate.id, status, reason, was=candidate.status):
            log.info("v%d is no longer %s: verdict not recorded (%s: %s)", candidate.id,
                     candidate.status, status, reason)
            return None
        log.info("v%d %s: %s", candidate.id, status, reason)
        return Decision(candidate.id, approved, reason, ours, theirs, canary=status == "canary")


def _judgeable(samples: Iterable[Served], metric: str) -> list[Served]:
    """The samples a version's live ``metric`` is taken on: for AUC (a binary learner's),
    those labelled in [0, 1], the labels the trainer learns (it dead-letters the others:
    counted here, a label of 2 was a click and -1 none)."""
    if metric != "auc":
        return list(samples)
    return [s for s in samples if 0 <= s[3] <= 1]


def _served(value: bytes, target: str) -> tuple[int, Served] | None:
    """The version that served a sample record and (ts, features, score, label); None
    where no version served it or it cannot be judged by: not JSON, a score or label not
    a finite number, features the trainer cannot hash (it dead-letters such a sample;
    a producer other than our joiner may write one)."""
    try:
        sample = orjson.loads(value)
        version = sample.get("model_version") if type(sample) is dict else None
        if type(version) is not int:  # a labelled event's sample, say
            return None
        ts, features = sample["ts"], sample["features"]
        score, label = float(sample["score"]), float(sample["labels"][target])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None
    if type(ts) is not int or unusable(features) is not None \
            or not math.isfinite(score) or not math.isfinite(label):
        return None
    return version, (ts, features, score, label)
