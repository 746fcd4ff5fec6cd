"""The replay report: prequential metrics over event time, as JSON and an HTML plot.

Each sample is scored by the model before it learns from it (train.trainer);
those scores against the labels give the overall metric (AUC for a binary
target, MAE for a regression) and the metric per bucket of event time: bucket
b holds the samples of ts in [start + b * bucket_ms, start + (b + 1) * bucket_ms).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from livelearn.train.metrics import auc, better, mae
from livelearn.train.trainer import Trained
from livelearn.ui.report import Chart, write_report

#: Bucket widths the automatic choice picks from (ms): minute, 5 min, 15 min, hour, 6 h, day, week.
NICE_MS = (60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000, 604_800_000)


class PrequentialRecord:
    """Collects (ts, score, label) of every trained sample."""

    def __init__(self, metric: str):
        self.metric = metric
        self._chunks: list[np.ndarray] = []

    def add(self, trained: Trained) -> None:
        ts = np.fromiter((s["ts"] for s in trained.samples), dtype=np.float64,
                         count=len(trained.samples))
        self._chunks.append(np.column_stack([ts, trained.scores, trained.labels]))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = np.vstack(self._chunks) if self._chunks else np.empty((0, 3))
        return data[:, 0], data[:, 1], data[:, 2]

    def value(self, scores: np.ndarray, labels: np.ndarray) -> float:
        return metric_value(self.metric, scores, labels)

    def buckets(self, bucket_ms: int | None = None) -> list[dict[str, Any]]:
        """The metric per bucket of event time, in time order (empty buckets left out)."""
        ts, scores, labels = self.arrays()
        if not len(ts):
            return []
        start, span = int(ts.min()), int(ts.max() - ts.min())
        width = bucket_ms or auto_bucket_ms(span)
        which = ((ts - start) // width).astype(np.int64)
        # each bucket's samples as one slice of an order (not a pass over all the samples
        # per bucket: a narrow --bucket-ms on a long history has as many buckets as samples)
        order = np.argsort(which, kind="stable")
        buckets, first = np.unique(which[order], return_index=True)
        ends = [*first.tolist()[1:], len(order)]
        out = []
        for b, lo, hi in zip(buckets.tolist(), first.tolist(), ends, strict=True):
            sel = order[lo:hi]
            out.append({"start_ts": start + b * width, "end_ts": start + (b + 1) * width,
                        "samples": hi - lo, "value": json_float(self.value(scores[sel],
                                                                          labels[sel]))})
        return out

    def summary(self, bucket_ms: int | None = None) -> dict[str, Any]:
        _, scores, labels = self.arrays()
        value = json_float(self.value(scores, labels))
        return {"metric": self.metric, "metric_value": value,
                "metric_note": None if value is not None else undefined_why(self.metric, labels),
                "samples": int(len(labels)), "buckets": self.buckets(bucket_ms)}


def undefined_why(metric: str, labels: np.ndarray) -> str:
    """Why the metric of ``labels`` is not defined: no sample, or (``metric`` "auc", the
    only one undefined on samples) labels of one class only."""
    if not len(labels):
        return "no sample was learned"
    which = "positive (> 0.5)" if labels[0] > 0.5 else "negative (<= 0.5)"
    return f"AUC is not defined: every one of the {len(labels)} labels is {which}, and it " \
           f"needs both classes"


def metric_value(metric: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC (``metric`` "auc") or MAE of the scores; nan for no sample."""
    if not len(labels):
        return math.nan
    return auc(scores, labels) if metric == "auc" else mae(scores, labels)


def auto_bucket_ms(span_ms: int, buckets: int = 24) -> int:
    """The smallest nice width that cuts ``span_ms`` into at most ``buckets`` buckets.

    >>> auto_bucket_ms(2 * 86_400_000)
    21600000
    """
    for width in NICE_MS:
        if span_ms / width <= buckets:
            return width
    return NICE_MS[-1] * math.ceil(span_ms / NICE_MS[-1] / buckets)


def write_html(path: str | Path, title: str, report: dict[str, Any]) -> Path:
    """The report as a page: its numbers, and the metric per bucket over event time."""
    xs, ys = _gapped(report.get("buckets", []))
    t0 = xs[0] if xs else 0.0
    since = (dt.datetime.fromtimestamp(t0 * 3600, dt.UTC).isoformat(timespec="minutes")
             if xs else "-")
    chart = Chart(f"prequential {report['metric']} over event time ({better(report['metric'])})",
                  f"hours since {since}",
                  str(report["metric"]), {report["metric"]: ([x - t0 for x in xs], ys)})
    summary = {k: v for k, v in report.items()
               if k != "buckets" and (k != "metric_note" or v is not None)}
    return write_report(path, title, summary, [chart], notes=[__doc__ or ""])


def _gapped(buckets: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Each bucket's start (hours since the epoch) and value, with a gap (nan) where the
    buckets between two are empty (left out of the report), so the line does not join
    across a span with no sample."""
    xs: list[float] = []
    ys: list[float] = []
    for before, b in zip([None, *buckets], buckets, strict=False):
        if before is not None and b["start_ts"] != before["end_ts"]:
            xs.append(before["end_ts"] / 3_600_000)
            ys.append(math.nan)
        xs.append(b["start_ts"] / 3_600_000)
        ys.append(math.nan if b["value"] is None else b["value"])
    return xs, ys


def json_float(value: float) -> float | None:
    """A float for JSON: None for nan."""
    return None if math.isnan(value) else float(value)
