"""Field-aware factorization machines (Juan et al., 2016) on hashed rows.

Each bucket has one latent vector per field, and the pair (a, b) interacts through
``<v[a, field(b)], v[b, field(a)]>``: O(k * features**2) per row. Pairs are
learned one after another within a row, as in libffm. The defaults step the
linear weights faster than the factors (``lr_w`` 0.25, ``lr`` 0.04): with many
pairs per row, factors that move as fast as the weights add noise before they
help. The bias (each row's first feature) pairs with no feature, as in libffm
(``bias_pairs=True`` pairs it, at three times the pairs' work on a row of two
features); a regressor then starts its intercept at the first label it learns
(``kernels.first_label``). One setting for all the benchmark's streams, chosen
on all of them.

Fields come from ``batch.fields`` (``features.transforms.FeatureSet`` fills it:
the bias is field 0, the n-th declared feature field n). A batch without fields,
such as ``hash_rows`` makes, takes the position of a feature in its row as its
field: right for rows that list the same names in the same order, as a
pipeline's features function does (a feedback join's server and samples sort them by
name). A field must be below ``n_fields``.

>>> from livelearn.features.hashing import hash_rows
>>> model = FFMClassifier(bits=10, n_fields=4, k=4, lr=0.1)
>>> rows = [{"u": u, "i": i} for u in "ab" for i in "xy"] * 300
>>> y = np.array([1.0, 0.0, 0.0, 1.0] * 300)
>>> _ = model.predict_then_learn(hash_rows(rows, bits=10), y)
>>> p = model.predict(hash_rows(rows[:4], bits=10))
>>> bool(p[0] > 0.8 and p[1] < 0.2 and p[2] < 0.2 and p[3] > 0.8)
True
"""

from __future__ import annotations

import numba
import numpy as np

from livelearn.errors import BadInput
from livelearn.features.batch import SparseBatch
from livelearn.models.base import as_labels, check_learned, check_params, register
from livelearn.models.fm import Factorization
from livelearn.models.kernels import factor, first_label, link, max_width, step, touch, within


@numba.njit(cache=True, inline="always", error_model="numpy")
def _interactions(indices, values, fld, lo, hi, mask, v, touched, std, seed, drawn):  # type: ignore[no-untyped-def]
    """The pairs' part of the score of the row's features in [lo, hi); ``drawn``: the
    row's factors are all drawn already."""
    total = 0.0
    for a in range(lo, hi):
        ia, fa, xa = indices[a] & mask, fld[a - lo], values[a]
        for b in range(a + 1, hi):
            ib, fb = indices[b] & mask, fld[b - lo]
            dot = 0.0
            if drawn:
                for f in range(v.shape[3]):
                    dot += v[ia, 0, fb, f] * v[ib, 0, fa, f]
            else:
                for f in range(v.shape[3]):
                    dot += (factor(v, touched, ia, fb, f, std, seed)
                            * factor(v, touched, ib, fa, f, std, seed))
            total += dot * xa * values[b]
    return total


@numba.njit(cache=True, inline="always", error_model="numpy")
def _learn_pairs(indices, values, fld, lo, hi, mask, v, err, lr, l2_v, adagrad):  # type: ignore[no-untyped-def]
    """Step the factors of each pair of the row's features in [lo, hi), one pair after
    another; returns whether a step ``kernels.spoiled`` a factor."""
    check = False
    for a in range(lo, hi):
        ia, fa, xa = indices[a] & mask, fld[a - lo], values[a]
        for b in range(a + 1, hi):
            ib, fb = indices[b] & mask, fld[b - lo]
            g = err * xa * values[b]
            for f in range(v.shape[3]):
                va, vb = v[ia, 0, fb, f], v[ib, 0, fa, f]
                check |= step(v, ia, fb, f, g * vb + l2_v * va, lr, adagrad)
                check |= step(v, ib, fa, f, g * va + l2_v * vb, lr, adagrad)
    return check


@numba.njit(cache=True, error_model="numpy")
def _run(indices, values, offsets, fields, has_fields, y, w, v, touched, seen, logistic, adagrad,  # type: ignore[no-untyped-def]
         lr_w, lr, l2, l2_v, std, seed, bias_pairs, learn, out):
    mask = w.shape[0] - 1
    skip = 0 if bias_pairs else 1  # the row's first feature, its bias, pairs with none
    fld = np.empty(max_width(offsets), dtype=np.int64)
    for r in range(len(offsets) - 1):
        lo, hi = offsets[r], offsets[r + 1]
        for kk in range(lo, hi):
            fld[kk - lo] = fields[kk] if has_fields else kk - lo
        if learn:
            touch(indices, lo + skip, hi, v, touched, std, seed)
        score = 0.0
        for kk in range(lo, hi):
            score += w[indices[kk] & mask, 0, 0, 0] * values[kk]
        score += _interactions(indices, values, fld[skip:], lo + skip, hi, mask, v, touched, std,
                               seed, learn)
        p = link(score, logistic)
        out[r] = p if logistic else within(p, seen)
        if not learn:
            continue
        err, check = p - y[r], False
        first_label(w, indices, lo, hi, err, seen, logistic, bias_pairs)
        seen[0], seen[1] = min(seen[0], y[r]), max(seen[1], y[r])
        for kk in range(lo, hi):
            i = indices[kk] & mask
            check |= step(w, i, 0, 0, err * values[kk] + l2 * w[i, 0, 0, 0], lr_w, adagrad)
        check |= _learn_pairs(indices, values, fld[skip:], lo + skip, hi, mask, v, err, lr,
                              l2_v, adagrad)
        if check:
            return r
    return -1


class _FFM(Factorization):
    def __init__(self, bits: int = 18, n_fields: int = 16, k: int = 4,
                 optimizer: str = "adagrad", lr: float = 0.04, lr_w: float = 0.25,
                 l2: float = 0.0, l2_v: float = 0.0, init_std: float = 0.1, seed: int = 0,
                 bias_pairs: bool = False):
        self.bits, self.n_fields, self.k, self.optimizer = bits, n_fields, k, optimizer
        self.lr, self.lr_w = lr, lr_w
        self.l2, self.l2_v, self.init_std, self.seed = l2, l2_v, init_std, seed
        self.bias_pairs = bias_pairs
        self._fields = n_fields
        check_params(self, at_least={"n_fields": 1})  # before _setup makes a table of them
        self._setup(bits, k, optimizer)

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        fields = self._check_fields(batch)
        out, labels = np.empty(len(batch)), as_labels(self, batch, y)
        spoilt = _run(batch.indices, batch.values, batch.offsets, fields,  # type: ignore[call-arg]
                      batch.fields is not None, labels, self._w, self._v, self._touched,
                      self._seen, *self._options(), y is not None, out)
        check_learned(self, batch, labels, spoilt)
        return out

    def _check_fields(self, batch: SparseBatch) -> np.ndarray:
        if batch.fields is None:
            widest = int(np.diff(batch.offsets).max()) if len(batch) else 0
            if widest > self.n_fields:
                raise BadInput(f"{type(self).__name__}: a row has {widest} features, so as many "
                               f"fields by position, but n_fields is {self.n_fields}")
            return np.zeros(0, dtype=np.int64)
        fields = np.asarray(batch.fields, dtype=np.int64)
        if len(fields) and (fields.min() < 0 or fields.max() >= self.n_fields):
            raise BadInput(f"{type(self).__name__}: fields must be in [0, {self.n_fields}), got "
                           f"[{fields.min()}, {fields.max()}]")
        return fields


@register
class FFMClassifier(_FFM):
    """Field-aware factorization machine for binary labels, log loss."""

    name = "ffm_classifier"
    task = "binary"


@register
class FFMRegressor(_FFM):
    """Field-aware factorization machine for numeric labels, squared loss; scores are
    clipped to the range of the labels learned so far, as ``FMRegressor``'s."""

    name = "ffm_regressor"
    task = "regression"
