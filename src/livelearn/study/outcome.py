"""What a run achieved: live vs frozen metrics, and how fresh the served model was.

- ``auc_live``: AUC of the scores the server actually served, against the
  labels, over the samples after the baseline's training share.
- ``auc_frozen``: AUC of a frozen baseline on the same samples: the same
  learner trained on the first ``baseline_samples`` samples, then never updated.
- ``auc_prequential``: the trainer's own scores, each made before learning.
- Freshness, in event time: for each sample, from the moment its label became
  final (its window closed, t + W) to the moment the first version that had
  learned it started serving (its first time: a version served again, a rollback's
  target say, learned nothing new since). Samples no served version learned are counted
  apart (``samples_not_served``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from livelearn.log.base import Log
from livelearn.registry import Registry
from livelearn.sim.client import ClientStats
from livelearn.spec import Pipeline, new_learner
from livelearn.train.metrics import auc
from livelearn.train.trainer import Trained
from livelearn.ui.dashboard import DeadLetterCounts
from livelearn.ui.report import Chart, write_json, write_report

HOUR_MS = 3_600_000
COLUMNS = ("index", "ts", "window_end", "label", "served", "frozen", "prequential")


class Outcome:
    """Collects every trained sample's scores, then summarizes and plots them."""

    def __init__(self, pipeline: Pipeline, baseline_samples: int):
        self.frozen = new_learner(pipeline)
        self.baseline_samples = baseline_samples
        self.learned = 0
        self._chunks: list[np.ndarray] = []

    def add(self, trained: Trained) -> None:
        """Take a trainer step's samples; the frozen baseline learns or scores them."""
        n = len(trained.samples)
        learn = max(0, min(n, self.baseline_samples - self.learned))
        frozen = np.full(n, np.nan)
        if learn:
            self.frozen.learn(trained.batch.slice(0, learn), trained.labels[:learn])
        if learn < n:
            frozen[learn:] = self.frozen.predict(trained.batch.slice(learn, n))
        s = trained.samples
        self._chunks.append(np.column_stack([
            np.arange(self.learned, self.learned + n), [x["ts"] for x in s],
            [x["window_end"] for x in s], trained.labels, [x["score"] for x in s], frozen,
            trained.scores]))
        self.learned += n

    def table(self) -> dict[str, np.ndarray]:
        data = np.vstack(self._chunks) if self._chunks else np.empty((0, len(COLUMNS)))
        return {name: data[:, i] for i, name in enumerate(COLUMNS)}

    def live_window_auc(self, size: int = 5000) -> tuple[float, float]:
        """(served, frozen) AUC over the most recent ``size`` samples after the baseline share."""
        t = self.table()
        keep = t["index"] >= self.baseline_samples
        labels = t["label"][keep][-size:]
        return auc(t["served"][keep][-size:], labels), auc(t["frozen"][keep][-size:], labels)

    def freshness_s(self, registry: Registry) -> tuple[np.ndarray, np.ndarray]:
        """(window_end, freshness in s) of each sample a served version learned."""
        t = self.table()
        began = registry.first_served()  # a rollback's target: when it first served
        served = [v for v in registry.versions() if v.id in began]
        if not served:
            return np.empty(0), np.empty(0)
        counts = np.array([v.meta["samples"] for v in served], dtype=np.float64)
        since = np.array([began[v.id] for v in served], dtype=np.float64)
        order = np.argsort(counts, kind="stable")
        counts, since = counts[order], np.minimum.accumulate(since[order][::-1])[::-1]
        first = np.searchsorted(counts, t["index"] + 1)  # first version with samples > index
        ok = first < len(counts)
        fresh = (since[first[ok]] - t["window_end"][ok]) / 1000
        return t["window_end"][ok], fresh

    def summary(self, log: Log, registry: Registry, stats: ClientStats, wall_s: float
                ) -> dict[str, Any]:
        t = self.table()
        keep = t["index"] >= self.baseline_samples
        _, fresh = self.freshness_s(registry)
        # each version once, by its last verdict: a rollback approves its target again
        statuses = Counter(v["status"] for v in registry.verdicts().values())
        return {
            "impressions": stats.impressions,
            "requests": stats.requests,
            "samples": int(len(t["index"])),
            "join_ratio": len(t["index"]) / max(1, stats.impressions),
            "click_rate": float(t["label"].mean()) if len(t["label"]) else math.nan,
            "dead_letters": dead_letter_counts(log),
            "versions": {"published": len(registry.versions()),
                         "approved": statuses["approved"], "rejected": statuses["rejected"],
                         "served": sum(1 for v in registry.versions() if v.serving_since_ts)},
            "auc_live": auc(t["served"][keep], t["label"][keep]),
            "auc_frozen": auc(t["frozen"][keep], t["label"][keep]),
            "auc_prequential": auc(t["prequential"][keep], t["label"][keep]),
            "evaluated_samples": int(keep.sum()),
            "freshness_p50_s": float(np.percentile(fresh, 50)) if len(fresh) else math.nan,
            "freshness_p95_s": float(np.percentile(fresh, 95)) if len(fresh) else math.nan,
            "samples_not_served": int(len(t["index"]) - len(fresh)),
            "wall_seconds": wall_s,
            "impressions_per_s": stats.impressions / wall_s,
        }

    def write_json(self, path: Path, summary: dict[str, Any]) -> None:
        write_json(path, summary, "summary")

    def write_report(self, path: Path, summary: dict[str, Any], registry: Registry) -> Path:
        return write_report(path, "livelearn demo: the news feed", summary, self.charts(registry),
                            notes=[__doc__ or ""])

    def charts(self, registry: Registry, buckets: int = 48) -> list[Chart]:
        t = self.table()
        if not len(t["ts"]):
            return []
        t0 = t["ts"].min()
        hours = (t["ts"] - t0) / HOUR_MS
        edges = np.linspace(0, hours.max() + 1e-9, buckets + 1)
        which = np.digitize(hours, edges) - 1
        mid = ((edges[:-1] + edges[1:]) / 2).tolist()

        def per_bucket(column: str) -> list[float]:
            scored = ~np.isnan(t[column])
            return [auc(t[column][(which == b) & scored], t["label"][(which == b) & scored])
                    for b in range(buckets)]

        ends, fresh = self.freshness_s(registry)
        fwhich = np.digitize((ends - t0) / HOUR_MS, edges) - 1
        p50 = [float(np.median(fresh[fwhich == b])) if (fwhich == b).any() else math.nan
               for b in range(buckets)]
        served = [((v.serving_since_ts - t0) / HOUR_MS, f"v{v.id}")
                  for v in registry.versions() if v.serving_since_ts and v.serving_since_ts >= t0]
        return [
            Chart("AUC over event time", "hours of event time", "AUC",
                  {"live (served scores)": (mid, per_bucket("served")),
                   "frozen baseline": (mid, per_bucket("frozen")),
                   "prequential (trainer)": (mid, per_bucket("prequential"))},
                  markers=served),
            Chart("Freshness: label final -> learned version serving", "hours of event time",
                  "seconds of event time (median)", {"freshness p50": (mid, p50)}),
            Chart("Click rate", "hours of event time", "clicks per impression",
                  {"click rate": (mid, [float(t["label"][which == b].mean())
                                        if (which == b).any() else math.nan
                                        for b in range(buckets)])}),
        ]


def dead_letter_counts(log: Log) -> dict[str, int]:
    """Dead letters in the log, by reason."""
    return DeadLetterCounts(log).update()
