"""Logistic regression trained by FTRL-Proximal (McMahan et al., 2013).

Per-coordinate learning rates, L1 (sparsity) and L2. Weights are computed lazily
from the accumulators ``z`` and ``n``; a kernel compiled by numba runs the
per-sample loop.

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

import numba
import numpy as np

from livelearn.features.batch import SparseBatch
from livelearn.models.base import Learner, register


@numba.njit(cache=True, inline="always")
def _weight(z: float, n: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    if abs(z) <= l1:
        return 0.0
    sign = 1.0 if z > 0 else -1.0
    return -(z - sign * l1) / ((beta + math.sqrt(n)) / alpha + l2)


@numba.njit(cache=True)
def _run(indices, values, offsets, y, z, n, alpha, beta, l1, l2, learn, out):  # type: ignore[no-untyped-def]
    for r in range(len(offsets) - 1):
        lo, hi = offsets[r], offsets[r + 1]
        wx = 0.0
        for k in range(lo, hi):
            i = indices[k]
            wx += _weight(z[i], n[i], alpha, beta, l1, l2) * values[k]
        wx = min(max(wx, -35.0), 35.0)
        p = 1.0 / (1.0 + math.exp(-wx))
        out[r] = p
        if learn:
            err = p - y[r]
            for k in range(lo, hi):
                i = indices[k]
                g = err * values[k]
                w = _weight(z[i], n[i], alpha, beta, l1, l2)
                sigma = (math.sqrt(n[i] + g * g) - math.sqrt(n[i])) / alpha
                z[i] += g - sigma * w
                n[i] += g * g


@register
class FTRL(Learner):
    """Hashed sparse logistic regression, FTRL-Proximal, over 2**bits weights."""

    name = "ftrl"
    task = "binary"

    def __init__(self, bits: int = 20, alpha: float = 0.1, beta: float = 1.0,
                 l1: float = 0.0, l2: float = 1.0):
        self.bits, self.alpha, self.beta, self.l1, self.l2 = bits, alpha, beta, l1, l2
        self.z = np.zeros(1 << bits)
        self.n = np.zeros(1 << bits)

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        out = np.empty(len(batch))
        labels = np.zeros(len(batch)) if y is None else np.asarray(y, dtype=np.float64)
        _run(batch.indices, batch.values, batch.offsets, labels, self.z, self.n,
             self.alpha, self.beta, self.l1, self.l2, y is not None, out)
        return out

    def predict(self, batch: SparseBatch) -> np.ndarray:
        return self._call(batch, None)

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        return self._call(batch, y)

    def state(self) -> dict[str, np.ndarray]:
        return {"z": self.z, "n": self.n}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.z = np.array(state["z"], dtype=np.float64)
        self.n = np.array(state["n"], dtype=np.float64)
