"""Numba helpers shared by the learners' kernels.

Kernels of other modules inline some of these: numba's cache notices a change to
a kernel's own file only, so after editing this file, delete the ``*.nbi`` and
``*.nbc`` files under ``src/livelearn/models/__pycache__``.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def max_width(offsets: np.ndarray) -> int:
    """The largest number of features in one row."""
    width = 0
    for r in range(len(offsets) - 1):
        width = max(width, offsets[r + 1] - offsets[r])
    return width


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SQRT12 = math.sqrt(12.0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def init_value(seed: int, counter: int, std: float) -> float:
    """Uniform noise of standard deviation ``std``, from splitmix64 of (seed, counter)."""
    x = np.uint64(seed) * _GOLDEN + np.uint64(counter) * _MIX1 + _GOLDEN
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    u = np.float64(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return std * _SQRT12 * (u - 0.5)


@numba.njit(cache=True, inline="always", error_model="numpy")
def step(params, i, j, f, g, lr, adagrad):  # type: ignore[no-untyped-def]
    """One SGD or AdaGrad step on ``params[i, 0, j, f]`` (accumulator at ``[i, 1, j, f]``);
    returns whether it ``spoiled`` either."""
    if adagrad:
        params[i, 1, j, f] += g * g
        acc = params[i, 1, j, f]
        # subtracting 0.0 leaves any value as it is; no branch, so loops over f vectorize
        params[i, 0, j, f] -= lr * g / math.sqrt(acc) if acc > 0.0 else 0.0
    else:
        params[i, 0, j, f] -= lr * g
    return spoiled(params[i, 0, j, f], params[i, 1, j, f])


@numba.njit(cache=True, inline="always", error_model="numpy")
def spoiled(a, b):  # type: ignore[no-untyped-def]
    """Whether either number is not finite (x - x is nan for nan and inf): or-ed over what
    a row's learning wrote, it says a parameter was spoiled (models.base.Diverged). An or
    of booleans, not a sum of floats, so that loops over factors still vectorize."""
    return (a - a != 0.0) | (b - b != 0.0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def touch(indices, lo, hi, v, touched, std, seed):  # type: ignore[no-untyped-def]
    """Draw the initial factors of the row's buckets that were never learned from."""
    mask = v.shape[0] - 1
    per = v.shape[2] * v.shape[3]
    for kk in range(lo, hi):
        i = indices[kk] & mask
        if touched[i]:
            continue
        touched[i] = 1
        for j in range(v.shape[2]):
            for f in range(v.shape[3]):
                v[i, 0, j, f] = init_value(seed, i * per + j * v.shape[3] + f, std)


@numba.njit(cache=True, inline="always", error_model="numpy")
def factor(v, touched, i, j, f, std, seed):  # type: ignore[no-untyped-def]
    """``v[i, 0, j, f]``, or the value it will be drawn with if bucket i was never learned."""
    if touched[i]:
        return v[i, 0, j, f]
    return np.float32(init_value(seed, (i * v.shape[2] + j) * v.shape[3] + f, std))  # as stored


@numba.njit(cache=True, inline="always", error_model="numpy")
def link(score, logistic):  # type: ignore[no-untyped-def]
    if logistic:
        return 1.0 / (1.0 + math.exp(-min(max(score, -35.0), 35.0)))
    return score


@numba.njit(cache=True, inline="always", error_model="numpy")
def first_label(w, indices, lo, hi, err, seen, logistic, bias_pairs):  # type: ignore[no-untyped-def]
    """A regressor whose bias pairs with no factor, about to learn its first label: move
    the bias weight (the row's first feature) by the whole error, so that the intercept
    starts at that label. Only that weight can learn the intercept then, and AdaGrad's
    steps would take thousands of samples to reach labels far from 0."""
    if not logistic and not bias_pairs and seen[0] > seen[1] and hi > lo:
        w[indices[lo] & (w.shape[0] - 1), 0, 0, 0] -= err


@numba.njit(cache=True, inline="always", error_model="numpy")
def within(score, seen):  # type: ignore[no-untyped-def]
    """A regressor's score clipped to [lowest, highest] label learned (``seen``), if any;
    nan stays nan (min and max would turn it into a bound)."""
    if seen[0] > seen[1] or math.isnan(score):
        return score
    return min(max(score, seen[0]), seen[1])
