"""Logistic regression trained by FTRL-Proximal (McMahan et al., 2013).

Per-coordinate learning rates, L1 (sparsity) and L2. Weights are computed lazily
from the accumulators ``z`` and ``n``, stored side by side so that one cache line
holds both; a kernel compiled by numba runs the per-sample loop. Bucket indices
are taken modulo ``2**bits``, so rows hashed with more bits fit a smaller model.

>>> from livelearn.features.hashing import hash_rows
>>> import numpy as np
>>> model = FTRL(bits=10, alpha=0.5)
>>> batch = hash_rows([{"x": "a"}, {"x": "b"}] * 200, bits=10)
>>> _ = model.predict_then_learn(batch, np.array([1.0, 0.0] * 200))
>>> p = model.predict(hash_rows([{"x": "a"}, {"x": "b"}], bits=10))
>>> bool(p[0] > 0.9 and p[1] < 0.1)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from livelearn.features.batch import SparseBatch
from livelearn.models.base import (
    OnePass,
    as_labels,
    check_learned,
    check_params,
    register,
    state_columns,
    table,
    undo_tables,
)
from livelearn.models.kernels import max_width


@numba.njit(cache=True, error_model="numpy")
def _run(indices, values, offsets, y, zn, alpha, beta, l1, l2, learn, out):  # type: ignore[no-untyped-def]
    mask = zn.shape[0] - 1
    per_alpha = 1.0 / alpha  # multiplications, not divisions, in the loops
    width = max_width(offsets)
    w, n_seen, root = np.empty(width), np.empty(width), np.empty(width)
    for r in range(len(offsets) - 1):
        lo, hi = offsets[r], offsets[r + 1]
        wx = 0.0
        for k in range(lo, hi):
            i = indices[k] & mask
            z, n = zn[i, 0], zn[i, 1]
            n_seen[k - lo], root[k - lo] = n, math.sqrt(n)
            wk = 0.0
            if abs(z) > l1:
                wk = -(z - math.copysign(l1, z)) / ((beta + root[k - lo]) * per_alpha + l2)
            w[k - lo] = wk
            wx += wk * values[k]
        wx = min(max(wx, -35.0), 35.0)
        p = 1.0 / (1.0 + math.exp(-wx))
        out[r] = p
        if not learn:
            continue
        err, total = p - y[r], 0.0
        for k in range(lo, hi):
            i = indices[k] & mask
            g = err * values[k]
            n = zn[i, 1]
            # sqrt(n) as scored, unless a bucket repeated in the row has moved n since
            before = root[k - lo] if n == n_seen[k - lo] else math.sqrt(n)
            grown = n + g * g
            sigma = (math.sqrt(grown) - before) * per_alpha
            z = zn[i, 0] + g - sigma * w[k - lo]
            zn[i, 0], zn[i, 1] = z, grown
            total += abs(z) + grown  # not finite if any z or n is not (both only add up)
        if not total < math.inf:
            return r
    return -1


@register
class FTRL(OnePass):
    """Hashed sparse logistic regression, FTRL-Proximal, over 2**bits weights.

    ``alpha`` and ``beta`` set the per-coordinate learning rate
    alpha / (beta + sqrt(sum of squared gradients)); ``l1`` and ``l2`` regularize.
    """

    name = "ftrl"
    task = "binary"

    def __init__(self, bits: int = 20, alpha: float = 0.1, beta: float = 1.0,
                 l1: float = 0.0, l2: float = 1.0):
        self.bits, self.alpha, self.beta, self.l1, self.l2 = bits, alpha, beta, l1, l2
        check_params(self, positive=("alpha",), non_negative=("beta", "l1", "l2"))
        self._zn = table((1 << bits, 2), populate=True)

    @property
    def z(self) -> np.ndarray:
        return self._zn[:, 0]

    @property
    def n(self) -> np.ndarray:
        return self._zn[:, 1]

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        out, labels = np.empty(len(batch)), as_labels(self, batch, y)
        spoilt = _run(batch.indices, batch.values, batch.offsets, labels, self._zn,
                      self.alpha, self.beta, self.l1, self.l2, y is not None, out)
        check_learned(self, batch, labels, spoilt)
        return out

    def weights(self) -> np.ndarray:
        """The weights that the accumulators give (zero where L1 prunes them)."""
        z, n = self.z, self.n  # the kernel's arithmetic, to the last bit
        w = -(z - np.sign(z) * self.l1) / ((self.beta + np.sqrt(n)) * (1.0 / self.alpha) + self.l2)
        return np.where(np.abs(z) > self.l1, w, 0.0)

    def state(self) -> dict[str, np.ndarray]:
        return {"z": self.z, "n": self.n}

    def undo_point(self, batch: SparseBatch) -> Callable[[], None]:
        return undo_tables([self._zn], batch, 1 << self.bits)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._zn = state_columns(state, ("z", "n"), 1 << self.bits)
