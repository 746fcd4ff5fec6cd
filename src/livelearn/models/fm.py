"""Factorization machines (Rendle, 2010) on hashed rows, trained one sample at a time.

The score of a row x is ``sum_j w_j x_j + sum_{a<b} <v_a, v_b> x_a x_b``: a linear
part plus pairwise interactions through k latent factors per bucket, computed in
O(k * features). ``FMClassifier`` puts it through a sigmoid (log loss);
``FMRegressor`` uses it as is (squared loss), its scores clipped to the range
of the labels learned so far, as Vowpal Wabbit clips them (learning uses the
unclipped score, so the model still moves outside that range). Steps are SGD or
AdaGrad, per coordinate, as in ``models.linear``: ``lr`` for the factors,
``lr_w`` for the linear weights. The bias (each row's first feature, where
``hash_rows`` and ``FeatureSet`` put it) pairs with the other features like
any feature: on the benchmark's streams that scored better than leaving it out
(``bias_pairs=False``), where FM's pairs cost little.

Latent factors start as small uniform noise, drawn from a hash of (seed, bucket,
factor) when a bucket is first learned from: the factor table takes memory only
for the buckets it touches (the linear table is zeroed when the model is built),
and the state does not depend on how the stream was batched. Bucket indices are
taken modulo ``2**bits``.

>>> from livelearn.features.hashing import hash_rows
>>> model = FMClassifier(bits=10, k=4, lr=0.1)
>>> rows = [{"u": u, "i": i} for u in "ab" for i in "xy"] * 300
>>> y = np.array([1.0, 0.0, 0.0, 1.0] * 300)  # an XOR: no linear model learns it
>>> _ = model.predict_then_learn(hash_rows(rows, bits=10), y)
>>> p = model.predict(hash_rows(rows[:4], bits=10))
>>> bool(p[0] > 0.8 and p[1] < 0.2 and p[2] < 0.2 and p[3] > 0.8)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from livelearn.errors import ConfigError
from livelearn.features.batch import SparseBatch
from livelearn.models.base import (
    Learner,
    OnePass,
    as_labels,
    check_learned,
    check_params,
    register,
    state_array,
    table,
    undo_tables,
)
from livelearn.models.kernels import factor, first_label, link, max_width, step, touch, within
from livelearn.models.linear import OPTIMIZERS


@numba.njit(cache=True, error_model="numpy")
def _run(indices, values, offsets, y, w, v, touched, seen, logistic, adagrad, lr_w, lr, l2,  # type: ignore[no-untyped-def]
         l2_v, std, seed, bias_pairs, learn, out):
    mask, k = w.shape[0] - 1, v.shape[3]
    skip = 0 if bias_pairs else 1  # the row's first feature, its bias, pairs with none
    s = np.empty(k)
    vrow = np.empty((max_width(offsets), k))
    for r in range(len(offsets) - 1):
        lo, hi = offsets[r], offsets[r + 1]
        if learn:
            touch(indices, lo + skip, hi, v, touched, std, seed)
        score, sq = 0.0, 0.0
        for f in range(k):
            s[f] = 0.0
        for kk in range(lo, hi):
            score += w[indices[kk] & mask, 0, 0, 0] * values[kk]
        for kk in range(lo + skip, hi):
            i, x = indices[kk] & mask, values[kk]
            for f in range(k):
                vf = factor(v, touched, i, 0, f, std, seed)
                vrow[kk - lo, f] = vf
                s[f] += vf * x
                sq += (vf * x) ** 2
        for f in range(k):
            score += 0.5 * s[f] * s[f]
        p = link(score - 0.5 * sq, logistic)
        out[r] = p if logistic else within(p, seen)
        if not learn:
            continue
        err, check = p - y[r], False
        first_label(w, indices, lo, hi, err, seen, logistic, bias_pairs)
        seen[0], seen[1] = min(seen[0], y[r]), max(seen[1], y[r])
        for kk in range(lo, hi):
            i, x = indices[kk] & mask, values[kk]
            check |= step(w, i, 0, 0, err * x + l2 * w[i, 0, 0, 0], lr_w, adagrad)
        for kk in range(lo + skip, hi):
            i, x = indices[kk] & mask, values[kk]
            for f in range(k):
                vf = vrow[kk - lo, f]
                check |= step(v, i, 0, f, err * x * (s[f] - vf * x) + l2_v * vf, lr, adagrad)
        if check:
            return r
    return -1


class Factorization(OnePass):
    """Linear weights ``w`` and latent factors ``v``, each beside its AdaGrad accumulator.

    ``w`` has shape (2**bits, 2, 1, 1) and ``v`` (2**bits, 2, fields, k): index 0 of
    the second axis holds the parameters, index 1 their sums of squared gradients.
    ``touched`` marks the buckets whose factors have been drawn; ``seen`` holds the lowest
    and highest label learned (regressors clip their scores to them).
    """

    _fields = 1
    bits: int
    k: int
    optimizer: str
    lr: float
    lr_w: float
    l2: float
    l2_v: float
    init_std: float
    seed: int
    bias_pairs: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Learner:
        # files saved before ``lr_w`` existed stepped the linear weights with ``lr``, and
        # those saved before ``bias_pairs`` existed paired the bias with every feature
        return cls(**{"lr_w": params["lr"], "bias_pairs": True, **params})

    def _setup(self, bits: int, k: int, optimizer: str) -> None:
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"{type(self).__name__}: optimizer must be one of {OPTIMIZERS}, "
                              f"got {optimizer!r}")
        check_params(self, at_least={"k": 1, "seed": 0}, positive=("lr", "lr_w"),
                     non_negative=("l2", "l2_v", "init_std"))
        self._w = table((1 << bits, 2, 1, 1), populate=True)
        self._v = table((1 << bits, 2, self._fields, k), np.float32)
        self._touched = table((1 << bits,), np.uint8, populate=True)
        self._seen = np.array([np.inf, -np.inf])

    def _options(self) -> tuple[Any, ...]:
        return (self.task == "binary", self.optimizer == "adagrad", self.lr_w, self.lr, self.l2,
                self.l2_v, self.init_std, self.seed, self.bias_pairs)

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        out, labels = np.empty(len(batch)), as_labels(self, batch, y)
        spoilt = _run(batch.indices, batch.values, batch.offsets, labels,  # type: ignore[call-arg]
                      self._w, self._v, self._touched, self._seen, *self._options(),
                      y is not None, out)
        check_learned(self, batch, labels, spoilt)
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"w": self._w, "v": self._v, "touched": self._touched, "seen": self._seen}

    def undo_point(self, batch: SparseBatch) -> Callable[[], None]:
        return undo_tables([self._w, self._v, self._touched], batch, 1 << self.bits,
                           whole=[self._seen])

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._w = state_array(state, "w", self._w.shape)
        self._v = state_array(state, "v", self._v.shape, np.float32)
        self._touched = state_array(state, "touched", self._touched.shape, np.uint8)
        # a file saved before regressors clipped their scores has no range: none yet
        self._seen = state_array({"seen": np.array([np.inf, -np.inf]), **state}, "seen", (2,))


class _FM(Factorization):
    def __init__(self, bits: int = 20, k: int = 8, optimizer: str = "adagrad", lr: float = 0.1,
                 lr_w: float = 0.1, l2: float = 0.0, l2_v: float = 0.0, init_std: float = 0.1,
                 seed: int = 0, bias_pairs: bool = True):
        self.bits, self.k, self.optimizer, self.lr, self.lr_w = bits, k, optimizer, lr, lr_w
        self.l2, self.l2_v, self.init_std, self.seed = l2, l2_v, init_std, seed
        self.bias_pairs = bias_pairs
        self._setup(bits, k, optimizer)


@register
class FMClassifier(_FM):
    """Factorization machine for binary labels: scores are P(label = 1), log loss."""

    name = "fm_classifier"
    task = "binary"


@register
class FMRegressor(_FM):
    """Factorization machine for numeric labels, squared loss; scores are clipped to the
    range of the labels learned so far."""

    name = "fm_regressor"
    task = "regression"
