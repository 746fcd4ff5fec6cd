"""Streaming metrics for prequential evaluation: score each sample, then learn it.

Three kinds, each as a plain batch function and as a streaming state:

- ``"auc"``: ROC AUC, ties count 1/2 (:func:`auc`, :class:`StreamingAUC`);
- ``"log_loss"``: mean binary cross-entropy (:func:`log_loss`, :class:`StreamingLogLoss`);
- ``"mae"``: mean absolute error (:func:`mae`, :class:`StreamingMAE`).

A streaming metric takes a batch at a time (``update(scores, labels)``),
answers with ``get()``, counts the samples it has seen in ``count`` and merges
with another partial state of its type: ``a + b`` equals one metric that saw
a's samples and b's. :class:`WindowedMetric` gives the exact metric over the
most recent ``size`` samples.

Every state can be saved and restored: ``state()`` is a small JSON-able dict
(a StreamingAUC's binned counts, packed; a mean's sum and count; a window's
scores and labels), and :func:`metric_from_state` (``WindowedMetric.from_state``)
gives back a metric equal to the one saved, bit for bit: a restarted trainer
goes on with the metric it had (train.trainer).

Conventions, the same everywhere:

- ``scores`` and ``labels`` are 1-d (anything else is flattened) and of equal
  length; a nan in either is refused with :class:`~livelearn.errors.BadInput`.
- For AUC a label is positive when it is > 0.5 (so 0/1, booleans and 0.0/1.0
  all work). Log loss takes labels in [0, 1] and scores as P(label = 1): a batch
  with a label outside [0, 1] is refused (BadInput naming it), and not counted.
- nan means "not defined yet": no samples, or for AUC only one class seen.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike

from livelearn.errors import BadInput, ConfigError, Corrupt

#: Scores are clipped to [EPS, 1 - EPS] (inclusive) before taking logarithms.
EPS = 1e-15
KINDS = ("auc", "log_loss", "mae")


def _pair(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both as flat float64 arrays; BadInput on unequal lengths or nan."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(s) != len(y):
        raise BadInput(f"metrics: got {len(s)} scores but {len(y)} labels; expected equal lengths")
    if np.isnan(s).any() or np.isnan(y).any():
        raise BadInput("metrics: scores and labels must not contain nan")
    return s, y


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown metric kind {kind!r}; expected one of {', '.join(KINDS)}")


# ---------------------------------------------------------------- batch functions


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Exact ROC AUC: P(score of a random positive > that of a random negative).

    A tie between a positive and a negative counts 1/2. nan when either class
    is absent (including no samples at all).

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auc([0.5, 0.5], [0, 1])
    0.5
    >>> auc([0.2, 0.9], [1, 1])
    nan
    """
    s, y = _pair(scores, labels)
    positive = y > 0.5
    n_pos = int(positive.sum())
    n_neg = len(s) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    rank_sum = float(mid_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _check_outcomes(y: np.ndarray) -> None:
    """BadInput naming the first label outside [0, 1]: log loss is of a probability's
    outcome (a label of 2 would give a negative loss)."""
    outside = (y < 0.0) | (y > 1.0)
    if outside.any():
        r = int(np.flatnonzero(outside)[0])
        raise BadInput(f"log loss: label {float(y[r])!r} (row {r}) is outside [0, 1]; it takes "
                       f"labels 0 or 1 (or a probability), and scores as P(label = 1)")


def _log_losses(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    _check_outcomes(y)
    p = np.clip(s, EPS, 1.0 - EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def log_loss(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean binary cross-entropy in nats; scores clipped to [1e-15, 1 - 1e-15].

    nan when there are no samples.

    >>> round(log_loss([0.9, 0.2], [1, 0]), 6)
    0.164252
    >>> log_loss([0.0], [1]) < 35    # clipped, so finite
    True
    """
    s, y = _pair(scores, labels)
    return float(_log_losses(s, y).mean()) if len(s) else float("nan")


def mae(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Mean absolute error, in the targets' unit. nan when there are no samples.

    >>> mae([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
    0.5
    """
    p, t = _pair(predictions, targets)
    return float(np.abs(p - t).mean()) if len(p) else float("nan")


def better(name: str) -> str:
    """Which way metric ``name`` improves, as a chart or table says it.

    >>> better("auc"), better("mae")
    ('higher is better', 'lower is better')
    """
    return {"auc": "higher is better", "mae": "lower is better"}.get(name, "")


# ---------------------------------------------------------------- streaming states


class Metric(ABC):
    """A metric over every sample seen, updated a batch at a time and mergeable."""

    #: One of KINDS.
    kind: ClassVar[str]
    #: Samples seen so far.
    count: int

    @abstractmethod
    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch of (score, label) pairs."""

    @abstractmethod
    def get(self) -> float:
        """The metric over every sample seen; nan when not defined yet."""

    @abstractmethod
    def __add__(self, other: Self) -> Self:
        """A new state equal to one that saw self's samples and other's."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The state as a JSON-able dict, with its ``kind``: :func:`metric_from_state`
        makes it a metric again."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """The metric whose ``state()`` this is; Corrupt if it is not one."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(): {self.get():.6g} over {self.count} samples"


def _pack(counts: np.ndarray) -> str:
    """Non-negative integer counts as text: in the smallest unsigned type that holds them,
    compressed (zeros and small counts take little room), base64. ``"u1:..."``."""
    dtype = np.dtype(np.min_scalar_type(int(counts.max(initial=0)))).newbyteorder("<")
    data = zlib.compress(counts.astype(dtype).tobytes(), 1)
    return f"u{dtype.itemsize}:{base64.b64encode(data).decode()}"


def _unpack(text: Any, length: int) -> np.ndarray:
    """The ``length`` counts (int64) that :func:`_pack` gave ``text`` for; Corrupt if not."""
    try:
        size, data = text.split(":", 1)
        raw = zlib.decompress(base64.b64decode(data, validate=True))
        counts = np.frombuffer(raw, dtype=np.dtype(f"<{size}")).astype(np.int64)
    except (AttributeError, ValueError, TypeError, binascii.Error, zlib.error) as e:
        raise Corrupt(f"metrics: packed counts that cannot be read ({e})") from None
    if len(counts) != length:
        raise Corrupt(f"metrics: {len(counts)} packed counts; expected {length}")
    return counts


def _field(state: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``state[name]``, of type ``kind``; Corrupt naming it if missing or of another."""
    value = state.get(name) if isinstance(state, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Corrupt(f"metrics: a saved state whose {name!r} is {value!r}")
    return value


def _check_state_kind(state: dict[str, Any], kind: str) -> None:
    got = _field(state, "kind", str)
    if got != kind:
        raise Corrupt(f"metrics: a saved state of kind {got!r}; expected {kind!r}")


def _count_into(histogram: np.ndarray, index: np.ndarray) -> None:
    """Add one to ``histogram[i]`` for each i in ``index``, in O(len(index)) for small batches."""
    if len(index) * 16 < len(histogram):
        np.add.at(histogram, index, 1)
    else:
        histogram += np.bincount(index, minlength=len(histogram))


class StreamingAUC(Metric):
    """ROC AUC over every sample seen, in O(bins) memory.

    Scores are clipped to [0, 1] and counted in ``bins`` equal-width bins per
    class; bin i holds [i/bins, (i+1)/bins), the last bin also holds 1.0. Scores
    that share a bin count as tied (1/2), so the result is the exact AUC of the
    binned scores: with the default 2**16 bins it is within 1e-3 of :func:`auc`
    on continuous scores. Merging is exact.

    >>> m = StreamingAUC()
    >>> m.update([0.1, 0.4], [0, 0])
    >>> m.get()
    nan
    >>> m.update([0.35, 0.8], [1, 1])
    >>> m.get(), m.count
    (0.75, 4)
    """

    kind = "auc"

    def __init__(self, bins: int = 2**16) -> None:
        if not isinstance(bins, int) or bins < 1:
            raise ConfigError(f"StreamingAUC: bins must be a positive integer, got {bins!r}")
        self.bins = bins
        self.count = 0
        self._pos = np.zeros(bins, dtype=np.int64)
        self._neg = np.zeros(bins, dtype=np.int64)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        s, y = _pair(scores, labels)
        index = np.minimum((np.clip(s, 0.0, 1.0) * self.bins).astype(np.int64), self.bins - 1)
        positive = y > 0.5
        _count_into(self._pos, index[positive])
        _count_into(self._neg, index[~positive])
        self.count += len(s)

    def get(self) -> float:
        n_pos, n_neg = int(self._pos.sum()), int(self._neg.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        neg = self._neg.astype(np.float64)
        neg_below = np.cumsum(neg) - neg  # negatives in strictly lower bins
        wins = float(self._pos @ (neg_below + 0.5 * neg))
        return wins / (float(n_pos) * float(n_neg))

    def __add__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        if other.bins != self.bins:
            raise ConfigError(f"StreamingAUC: cannot merge {self.bins} bins with {other.bins}")
        merged = type(self)(self.bins)
        merged._pos = self._pos + other._pos
        merged._neg = self._neg + other._neg
        merged.count = self.count + other.count
        return merged

    def state(self) -> dict[str, Any]:
        """The binned counts of each class, packed (~10 KB after 5,000 samples, at most
        ~200 KB with 2**16 bins), and the count.

        >>> m = StreamingAUC(bins=4)
        >>> m.update([0.1, 0.9, 0.8], [0, 1, 0])
        >>> StreamingAUC.from_state(m.state()).get() == m.get()
        True
        """
        return {"kind": self.kind, "bins": self.bins, "count": self.count,
                "pos": _pack(self._pos), "neg": _pack(self._neg)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        _check_state_kind(state, cls.kind)
        bins = _field(state, "bins", int)
        if bins < 1:
            raise Corrupt(f"metrics: a saved StreamingAUC of {bins} bins")
        metric = cls(bins)
        metric._pos = _unpack(state.get("pos"), bins)
        metric._neg = _unpack(state.get("neg"), bins)
        metric.count = _field(state, "count", int)
        return metric


class _MeanMetric(Metric):
    """A mean of per-sample losses: a running sum and a count."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0

    @staticmethod
    @abstractmethod
    def _losses(s: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample losses of a batch."""

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        s, y = _pair(scores, labels)
        self._sum += float(self._losses(s, y).sum())
        self.count += len(s)

    def get(self) -> float:
        return self._sum / self.count if self.count else float("nan")

    def __add__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        merged = type(self)()
        merged._sum = self._sum + other._sum
        merged.count = self.count + other.count
        return merged

    def state(self) -> dict[str, Any]:
        """The sum of the losses and their count (a float written in JSON reads back
        exactly)."""
        return {"kind": self.kind, "sum": self._sum, "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        _check_state_kind(state, cls.kind)
        metric = cls()
        metric._sum = float(_field(state, "sum", (int, float)))
        metric.count = _field(state, "count", int)
        return metric


class StreamingLogLoss(_MeanMetric):
    """Mean log loss over every sample seen (see :func:`log_loss`).

    >>> m = StreamingLogLoss()
    >>> m.update([0.9], [1]); m.update([0.2], [0])
    >>> round(m.get(), 6), m.count
    (0.164252, 2)
    """

    kind = "log_loss"

    @staticmethod
    def _losses(s: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _log_losses(s, y)


class StreamingMAE(_MeanMetric):
    """Mean absolute error over every sample seen (see :func:`mae`).

    >>> a, b = StreamingMAE(), StreamingMAE()
    >>> a.update([1.0, 2.0], [1.5, 2.0]); b.update([4.0], [3.0])
    >>> (a + b).get(), (a + b).count
    (0.5, 3)
    """

    kind = "mae"

    @staticmethod
    def _losses(s: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.abs(s - y)


_STREAMING: dict[str, type[Metric]] = {
    "auc": StreamingAUC,
    "log_loss": StreamingLogLoss,
    "mae": StreamingMAE,
}
_BATCH: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "auc": auc,
    "log_loss": log_loss,
    "mae": mae,
}


def make_metric(kind: str) -> Metric:
    """A fresh streaming metric of ``kind`` ("auc", "log_loss" or "mae").

    >>> make_metric("mae")
    StreamingMAE(): nan over 0 samples
    """
    _check_kind(kind)
    return _STREAMING[kind]()


def metric_from_state(state: dict[str, Any]) -> Metric:
    """The streaming metric whose ``state()`` this is; Corrupt if it is not one.

    >>> m = make_metric("mae")
    >>> m.update([1.0, 2.0], [1.5, 2.0])
    >>> metric_from_state(m.state())
    StreamingMAE(): 0.25 over 2 samples
    """
    kind = _field(state, "kind", str)
    if kind not in _STREAMING:
        raise Corrupt(f"metrics: a saved state of unknown kind {kind!r}")
    return _STREAMING[kind].from_state(state)


class WindowedMetric:
    """The exact metric over the most recent ``size`` samples (fewer until that many came).

    The window is a ring buffer of scores and labels; ``get()`` runs the batch
    function on it. ``count`` is every sample seen, not only those in the window.
    ``a + b`` is the window after a's samples followed by b's.

    >>> w = WindowedMetric("mae", size=2)
    >>> w.update([1.0, 5.0, 2.0], [0.0, 4.0, 4.0])
    >>> w.get(), w.count
    (1.5, 3)
    >>> w.arrays()
    (array([5., 2.]), array([4., 4.]))
    """

    def __init__(self, kind: str, size: int) -> None:
        _check_kind(kind)
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"WindowedMetric: size must be a positive integer, got {size!r}")
        self.kind = kind
        self.size = size
        self.count = 0
        self._scores = np.zeros(size, dtype=np.float64)
        self._labels = np.zeros(size, dtype=np.float64)
        self._next = 0  # slot the next sample goes to
        self._filled = 0  # slots that hold a sample: min(size, samples put in)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch; only its last ``size`` samples can stay in the window."""
        s, y = _pair(scores, labels)
        if self.kind == "log_loss":
            _check_outcomes(y)
        self.count += len(s)
        self._filled = min(self.size, self._filled + len(s))
        if len(s) >= self.size:
            self._scores[:] = s[-self.size :]
            self._labels[:] = y[-self.size :]
            self._next = 0
            return
        slots = (self._next + np.arange(len(s))) % self.size
        self._scores[slots] = s
        self._labels[slots] = y
        self._next = (self._next + len(s)) % self.size

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the window's (scores, labels), oldest first."""
        if self._filled < self.size:
            return self._scores[: self._filled].copy(), self._labels[: self._filled].copy()
        order = np.r_[self._next : self.size, 0 : self._next]
        return self._scores[order], self._labels[order]

    def get(self) -> float:
        """The batch metric over the window; nan when not defined (see module notes)."""
        return _BATCH[self.kind](*self.arrays())

    def state(self) -> dict[str, Any]:
        """The window's scores and labels, oldest first, and ``count``: lists of floats,
        ~20 bytes a sample in JSON."""
        scores, labels = self.arrays()
        return {"kind": self.kind, "size": self.size, "count": self.count,
                "scores": scores.tolist(), "labels": labels.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowedMetric:
        """The window whose ``state()`` this is (more samples than ``size``: the most
        recent stay); Corrupt if it is not one.

        >>> w = WindowedMetric("mae", size=2)
        >>> w.update([1.0, 5.0, 2.0], [0.0, 4.0, 4.0])
        >>> v = WindowedMetric.from_state(w.state())
        >>> v.arrays(), v.count
        ((array([5., 2.]), array([4., 4.])), 3)
        """
        kind, size = _field(state, "kind", str), _field(state, "size", int)
        if kind not in KINDS or size < 1:
            raise Corrupt(f"metrics: a saved window of kind {kind!r} and size {size}")
        window = cls(kind, size)
        scores, labels = _field(state, "scores", list), _field(state, "labels", list)
        try:
            window.update(scores, labels)
        except (BadInput, TypeError, ValueError) as e:
            raise Corrupt(f"metrics: a saved window that cannot be read ({e})") from None
        count = _field(state, "count", int)
        if count < len(scores):
            raise Corrupt(f"metrics: a saved window of {len(scores)} samples out of {count}")
        window.count = count
        return window

    def __add__(self, other: WindowedMetric) -> WindowedMetric:
        if not isinstance(other, WindowedMetric):
            return NotImplemented
        if (other.kind, other.size) != (self.kind, self.size):
            raise ConfigError(
                f"WindowedMetric: cannot merge {self.kind}/{self.size} "
                f"with {other.kind}/{other.size}"
            )
        merged = WindowedMetric(self.kind, self.size)
        merged.update(*self.arrays())
        merged.update(*other.arrays())
        merged.count = self.count + other.count
        return merged

    def __repr__(self) -> str:
        return (
            f"WindowedMetric({self.kind!r}, size={self.size}): "
            f"{self.get():.6g} over the last {min(self.count, self.size)} samples"
        )
