"""Linear models on hashed rows, trained by plain SGD or AdaGrad, one sample at a time.

``LogisticRegression`` (log loss, scores are probabilities) and ``LinearRegression``
(squared loss, for numeric labels such as dwell time or a rating). With
``optimizer="sgd"`` each step is ``lr * gradient``; with ``"adagrad"`` each
coordinate's step is ``lr * gradient / sqrt(sum of its squared gradients)``.
``l2`` is applied to the coordinates a sample touches. Bucket indices are taken
modulo ``2**bits``.

>>> from livelearn.features.hashing import hash_rows
>>> model = LinearRegression(bits=8, lr=0.5)
>>> rows = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}] * 300
>>> _ = model.predict_then_learn(hash_rows(rows, bits=8), np.array([3.0, 5.0, 7.0] * 300))
>>> np.round(model.predict(hash_rows([{"x": 4.0}], bits=8)), 1)
array([9.])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from livelearn.errors import ConfigError
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
from livelearn.models.kernels import spoiled

OPTIMIZERS = ("sgd", "adagrad")


@numba.njit(cache=True, error_model="numpy")
def _run(indices, values, offsets, y, wg, logistic, adagrad, lr, l2, learn, out):  # type: ignore[no-untyped-def]
    mask = wg.shape[0] - 1
    for r in range(len(offsets) - 1):
        lo, hi = offsets[r], offsets[r + 1]
        p = 0.0
        for k in range(lo, hi):
            p += wg[indices[k] & mask, 0] * values[k]
        if logistic:
            p = 1.0 / (1.0 + math.exp(-min(max(p, -35.0), 35.0)))
        out[r] = p
        if not learn:
            continue
        err, check = p - y[r], False
        for k in range(lo, hi):
            i = indices[k] & mask
            g = err * values[k] + l2 * wg[i, 0]
            if adagrad:
                wg[i, 1] += g * g
                if wg[i, 1] > 0.0:
                    wg[i, 0] -= lr * g / math.sqrt(wg[i, 1])
            else:
                wg[i, 0] -= lr * g
            check |= spoiled(wg[i, 0], wg[i, 1])
        if check:
            return r
    return -1


class _Linear(OnePass):
    """Weights ``w`` and AdaGrad's sums of squared gradients ``g2``, side by side."""

    def __init__(self, bits: int = 20, optimizer: str = "adagrad", lr: float = 0.1,
                 l2: float = 0.0):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"{type(self).__name__}: optimizer must be one of {OPTIMIZERS}, "
                              f"got {optimizer!r}")
        self.bits, self.optimizer, self.lr, self.l2 = bits, optimizer, lr, l2
        check_params(self, positive=("lr",), non_negative=("l2",))
        self._wg = table((1 << bits, 2), populate=True)

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        out, labels = np.empty(len(batch)), as_labels(self, batch, y)
        spoilt = _run(batch.indices, batch.values, batch.offsets, labels, self._wg,
                      self.task == "binary", self.optimizer == "adagrad", self.lr, self.l2,
                      y is not None, out)
        check_learned(self, batch, labels, spoilt)
        return out

    def weights(self) -> np.ndarray:
        return self._wg[:, 0]

    def state(self) -> dict[str, np.ndarray]:
        return {"w": self._wg[:, 0], "g2": self._wg[:, 1]}

    def undo_point(self, batch: SparseBatch) -> Callable[[], None]:
        return undo_tables([self._wg], batch, 1 << self.bits)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._wg = state_columns(state, ("w", "g2"), 1 << self.bits)


@register
class LogisticRegression(_Linear):
    """Hashed sparse logistic regression (log loss) by SGD or AdaGrad."""

    name = "logistic_regression"
    task = "binary"


@register
class LinearRegression(_Linear):
    """Hashed sparse linear regression (squared loss) by SGD or AdaGrad."""

    name = "linear_regression"
    task = "regression"
