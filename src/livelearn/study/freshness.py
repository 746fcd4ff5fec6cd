"""The freshness study: the metric as a function of how often the served model is updated.

One pass over the labelled samples in the trainer's order (window end, then id).
One learner learns every sample, as the trainer does. For an update interval C,
a version is deployed at every multiple B of C (event time, ms since the epoch,
UTC): the learner as it was when it had learned every sample whose label was
final before B (window_end < B), serving from B + D (the deploy delay) until the
next deploy. A sample served at ts is scored by the newest version serving at
ts. No score uses a label that was not final D before the sample was served,
so the metric of C is what users would have seen with a model redeployed every C.

- ``0`` (every sample): each sample is scored by the learner just before it
  learns it: the trainer's prequential metric. Samples are learned in the order
  their labels became final, so this model knows labels that became final after
  some samples it scores were served (by up to the join window): a ceiling, not
  a deploy schedule.
- ``never``: the model after the warm-up, never updated.

Warm-up: the first ``warmup`` share of the samples is learned and scored by no
interval. Every interval's first version is the model after the warm-up,
serving D after its last label became final; samples served before then are not
scored either. Every interval is scored on the same samples.

No model is copied: the version serving sample i under interval C is the learner
after its first p samples (p: those whose label was final before the deploy), so
the pass scores sample i when it has learned exactly p samples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from livelearn.errors import ConfigError
from livelearn.events import MAX_TS_MS, utc
from livelearn.features.batch import SparseBatch, concat
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.base import Learner
from livelearn.prequential import auto_bucket_ms, json_float, metric_value
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.spec import Pipeline, new_learner
from livelearn.train.metrics import better
from livelearn.train.trainer import Trained
from livelearn.ui.report import Chart, write_report

#: Units of an interval or a delay, in ms, largest first.
UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
DEFAULT_INTERVALS = "0,1m,10m,1h,6h,1d,never"


def parse_duration(text: str, what: str) -> int:
    """``30s``, ``10m``, ``6h``, ``1d`` (or ``0``) in ms, at most the largest event time
    (MAX_TS_MS: the year 9999); ConfigError naming ``what``.

    >>> parse_duration("10m", "--delay")
    600000
    """
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip())
    if text.strip() == "0":
        return 0
    if match is None:
        raise ConfigError(f"{what} {text!r}: expected a whole number >= 0 and a unit: ms, s, "
                          f"m, h or d (such as 30s, 10m, 6h, 1d), or 0")
    ms = int(match[1]) * UNITS[match[2]]
    if ms > MAX_TS_MS:
        raise ConfigError(f"{what} {text!r}: longer than any event time (at most "
                          f"{MAX_TS_MS // UNITS['d']}d)")
    return ms


def parse_intervals(text: str) -> list[int | None]:
    """Comma-separated intervals in ms, shortest first: 0 (or ``every``) for every
    sample, None (``never``) last; ConfigError naming a bad one."""
    out: set[int | None] = set()
    for part in text.split(","):
        word = part.strip().lower()
        if word == "never":
            out.add(None)
        elif word == "every":
            out.add(0)
        else:
            out.add(parse_duration(word, "interval"))
    return sorted(out, key=lambda ms: math.inf if ms is None else ms)


def label_of(every_ms: int | None) -> str:
    """``every sample``, ``never``, or the interval in its largest whole unit (``90m``)."""
    if every_ms is None:
        return "never"
    if every_ms == 0:
        return "every sample"
    unit = next(u for u, ms in UNITS.items() if every_ms % ms == 0)
    return f"{every_ms // UNITS[unit]}{unit}"


@dataclass
class Samples:
    """Samples in the order the trainer learned them: event time and window end (ms),
    hashed rows and labels."""

    ts: np.ndarray
    ends: np.ndarray
    batch: SparseBatch
    labels: np.ndarray


class SampleRecorder:
    """Keeps what each trainer step learned (replay's ``on_trained``)."""

    def __init__(self) -> None:
        self._steps: list[Trained] = []

    def add(self, trained: Trained) -> None:
        self._steps.append(trained)

    def samples(self) -> Samples:
        steps = [t for t in self._steps if len(t.samples)]
        if not steps:
            raise ConfigError("no sample was learned: nothing to study (are the inputs empty, "
                              "or was every record dead-lettered?)")
        return Samples(np.array([s["ts"] for t in steps for s in t.samples], dtype=np.int64),
                       np.array([s["window_end"] for t in steps for s in t.samples],
                                dtype=np.int64),
                       concat([t.batch for t in steps]),
                       np.concatenate([t.labels for t in steps]))


def served_after(samples: Samples, every_ms: int | None, delay_ms: int, warm: int
                 ) -> np.ndarray | None:
    """For each sample, how many samples the version serving it had learned; None for
    every sample (each one scored just before it is learned)."""
    if every_ms == 0:
        return None
    if every_ms is None:
        return np.full(len(samples.ts), warm)
    deployed = (samples.ts - delay_ms) // every_ms * every_ms  # the last deploy's boundary
    learned = np.searchsorted(samples.ends, deployed, side="left")  # window_end < boundary
    return np.minimum(np.maximum(learned, warm), np.arange(len(samples.ts)))


def first_scored(samples: Samples, warmup: float, delay_ms: int) -> tuple[int, int]:
    """(samples in the warm-up, index of the first sample scored)."""
    warm = int(warmup * len(samples.ts))
    if warm == 0:
        return 0, 0
    serving_from = samples.ends[warm - 1] + 1 + delay_ms
    late = np.flatnonzero(samples.ts[warm:] >= serving_from)
    return warm, warm + int(late[0]) if len(late) else len(samples.ts)


def _none_scored(samples: Samples, warm: int, warmup: float, delay_ms: int) -> str:
    """Why no sample is scored: every sample after the warm-up was served before the
    warm-up's model serves (its last label final, plus the delay)."""
    serving_from = int(samples.ends[warm - 1]) + 1 + delay_ms
    delay = f" plus --delay {label_of(delay_ms)}" if delay_ms else ""
    shorter = ", a shorter --delay" if delay_ms else ""
    return (f"no sample is left to score: {len(samples.ts)} samples, the first {warm} of "
            f"them (--warmup {warmup}) the warm-up, whose model serves from "
            f"{utc(serving_from)} (its last label final{delay}), and the other "
            f"{len(samples.ts) - warm} were all served by {utc(int(samples.ts.max()))}; give "
            f"a history that goes on after then{shorter} or a smaller --warmup (0 scores "
            f"every sample)")


def _check_both_classes(labels: np.ndarray, warm: int) -> None:
    """ConfigError if the scored ``labels`` are of one class: no interval's AUC is defined,
    and a table of dashes would not say why."""
    positive = int((labels > 0.5).sum())
    if positive in (0, len(labels)):
        which = "positive (> 0.5)" if positive else "negative (<= 0.5)"
        raise ConfigError(f"AUC is not defined on the {len(labels)} samples scored (after "
                          f"the {warm} of the warm-up): every label is {which}, and AUC "
                          f"needs both classes; give a history with both (a smaller "
                          f"--warmup scores more of it)")


def score(samples: Samples, learner: Learner, plans: list[np.ndarray | None], start: int
          ) -> np.ndarray:
    """scores[k, i] for i >= start (nan before): sample i scored by the learner after it
    learned plans[k][i] samples, or for a None plan just before it learns sample i. The
    learner learns every sample, in order."""
    n, batch, labels = len(samples.ts), samples.batch, samples.labels
    scores = np.full((len(plans), n), np.nan)
    jobs = sorted((int(plan[a]), k, a, b) for k, plan in enumerate(plans) if plan is not None
                  for a, b in _runs(plan, start))
    learned, prequential = 0, np.empty(n)
    for q, k, a, b in jobs:  # q <= a: the model has not learned these samples
        if q > learned:
            prequential[learned:q] = learner.predict_then_learn(batch.slice(learned, q),
                                                                labels[learned:q])
            learned = q
        scores[k, a:b] = learner.predict(batch.slice(a, b))
    prequential[learned:] = learner.predict_then_learn(batch.slice(learned, n), labels[learned:])
    for k, plan in enumerate(plans):
        if plan is None:
            scores[k, start:] = prequential[start:]
    return scores


def _runs(plan: np.ndarray, start: int) -> list[tuple[int, int]]:
    """The slices [a, b) from ``start`` on where ``plan`` is constant."""
    edges = np.flatnonzero(np.diff(plan[start:])) + 1 + start
    cuts = [start, *edges.tolist(), len(plan)]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]


def study_history(pipeline: Pipeline, sources: list[tuple[str, str]], data_dir: str | Path,
                  scratch: Path, intervals: list[int | None], delay_ms: int = 0,
                  warmup: float = 0.1,
                  replayed: Callable[[dict[str, Any]], None] | None = None
                  ) -> tuple[FreshnessStudy, dict[str, Any]]:
    """Replay ``sources`` ((stream, file) pairs) through the pipeline's joiner and trainer
    (a SQLite log and a registry in ``scratch``: the events are not held in memory),
    then study the samples it learned. ``replayed`` is given the replay's report (its
    inputs and dead letters) before the study, which may find nothing to score."""
    recorder = SampleRecorder()
    # the study deploys its own versions: the trainer publishes (and the gate judges) once,
    # at the end (the longest publish_every_ms a spec takes is longer than any history)
    policies = replace(pipeline.policies, publish_every_samples=2**62,
                       publish_every_ms=MAX_TS_MS)
    report, _ = replay(SQLiteLog(scratch / "log.db"), Registry(scratch / "registry"),
                       replace(pipeline, policies=policies), sources, data_dir,
                       on_trained=recorder.add)
    if replayed is not None:
        replayed(report)
    study = FreshnessStudy(recorder.samples(), new_learner(pipeline), intervals, delay_ms, warmup)
    summary = {"pipeline": pipeline.name, **study.summary(), "events": report["events"],
               "dead_letters": report["dead_letters"], "inputs": report["inputs"]}
    return study, summary


class FreshnessStudy:
    """The metric of each update interval in ``intervals`` (ms; 0 every sample, None
    never) on ``samples``, from one pass of ``learner`` (a new one, as the trainer's)."""

    def __init__(self, samples: Samples, learner: Learner, intervals: list[int | None],
                 delay_ms: int = 0, warmup: float = 0.1):
        self.samples, self.intervals = samples, intervals
        self.delay_ms, self.warmup = delay_ms, warmup
        self.kind = "auc" if learner.task == "binary" else "mae"
        warm, self.start = first_scored(samples, warmup, delay_ms)
        if self.start >= len(samples.ts):
            raise ConfigError(_none_scored(samples, warm, warmup, delay_ms))
        if self.kind == "auc":
            _check_both_classes(samples.labels[self.start:], warm)
        self.plans = [served_after(samples, c, delay_ms, warm) for c in intervals]
        self.scores = score(samples, learner, self.plans, self.start)

    def summary(self) -> dict[str, Any]:
        labels, start = self.samples.labels[self.start:], self.start
        scored, kind = len(labels), self.kind
        rows = [{"every_ms": every, "label": label_of(every),
                 "metric_value": json_float(metric_value(kind, self.scores[k, start:], labels)),
                 "samples": scored,
                 "deploys": scored if plan is None else len(np.unique(plan[start:]))}
                for k, (every, plan) in enumerate(zip(self.intervals, self.plans, strict=True))]
        return {"metric": self.kind, "intervals": rows, "samples": len(self.samples.ts),
                "scored": scored, "warmup": self.warmup, "delay_ms": self.delay_ms,
                "scored_from_ts": int(self.samples.ts[start]),
                "scored_to_ts": int(self.samples.ts.max())}

    def charts(self) -> list[Chart]:
        return [_by_interval(self.summary()), self._over_time()]

    def _over_time(self) -> Chart:
        """The metric of each interval per bucket of event time (at most 25 buckets; an
        empty one, in a gap of the history, is a gap of the lines)."""
        ts, labels = self.samples.ts[self.start:], self.samples.labels[self.start:]
        t0 = int(ts.min())
        width = auto_bucket_ms(int(ts.max()) - t0)
        which = (ts - t0) // width
        buckets = np.arange(int(which.max()) + 1)
        xs = [(b + 0.5) * width / 3_600_000 for b in buckets.tolist()]
        series = {label_of(every): (xs, [metric_value(self.kind, self.scores[k, self.start:]
                                                      [which == b], labels[which == b])
                                         for b in buckets])
                  for k, every in enumerate(self.intervals)}
        return Chart(f"{self.kind} over event time, by update interval",
                     "hours of event time since the first sample scored", self.kind, series)


def table(summary: dict[str, Any]) -> str:
    """The summary's intervals as a text table."""
    heading = f"{summary['metric'].upper()} ({better(summary['metric'])})"
    lines = [f"{'interval':<14}{heading:>26}"
             f"{'samples':>12}{'versions':>12}"]
    for row in summary["intervals"]:
        value = "-" if row["metric_value"] is None else f"{row['metric_value']:.4f}"
        lines.append(f"{row['label']:<14}{value:>26}{row['samples']:>12,}{row['deploys']:>12,}")
    return "\n".join(lines)


def _by_interval(summary: dict[str, Any]) -> Chart:
    """The metric against the interval (log scale), every sample and never as lines."""
    rows = summary["intervals"]
    timed = [r for r in rows if r["every_ms"]]
    xs = [math.log10(r["every_ms"] / 60_000) for r in timed]
    ys = [math.nan if r["metric_value"] is None else r["metric_value"] for r in timed]
    span = [min(xs, default=0.0), max(xs, default=1.0)]
    series = {"redeployed every interval": (xs, ys)}
    for r in rows:
        if not r["every_ms"] and r["metric_value"] is not None:
            series[f"{r['label']} ({r['metric_value']:.4f})"] = (span, [r["metric_value"]] * 2)
    return Chart(f"{summary['metric']} against how often the served model is updated",
                 "update interval, log10 of minutes (0: 1 min, 1: 10 min, 2: 100 min, "
                 "3: 16.7 h)", summary["metric"], series,
                 markers=[(x, r["label"]) for x, r in zip(xs, timed, strict=True)])


def write_html(path: str | Path, study: FreshnessStudy, summary: dict[str, Any]) -> Path:
    """The summary, the metric against the interval and over event time, as a page."""
    shown = {k: v for k, v in summary.items() if k != "intervals"}
    shown.update({f"{summary['metric']} {r['label']}": r["metric_value"]
                  for r in summary["intervals"]})
    return write_report(path, "livelearn study freshness", shown, study.charts(),
                        notes=[__doc__ or ""])
