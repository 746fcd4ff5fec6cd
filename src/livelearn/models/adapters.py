"""Bring your own model: River estimators, scikit-learn estimators, PyTorch modules.

Each adapter is a Learner over the same hashed rows as livelearn's own learners,
and needs its library (an optional extra: ``livelearn[river]``, ``[sklearn]``,
``[torch]``). Scores are prequential and do not depend on how a stream is
batched:

- ``RiverLearner`` learns one sample at a time (``learn_one``); a row reaches the
  estimator as ``{bucket: value}``.
- ``SklearnLearner`` and ``TorchLearner`` learn by mini-batches of exactly
  ``batch_size`` samples, buffered across calls: each row is scored by the model
  as it stood before the mini-batch that the row joins (TorchLearner scores
  those rows one by one, since a matrix product's rounding depends on its shape).

They have no ``undo_point``: the trainer keeps their state (a pickle) before each
batch and, where a sample left a parameter of the model not finite (a River
weight of -inf), puts it back and dead-letters the sample (train.trainer).

Their state is a pickle of the adapter, so ``save_learner`` writes one and
``load_learner`` reads it back only with ``trusted=True`` (unpickling runs code);
the Registry passes it for the versions its own trainer wrote.
"""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import numpy as np

from livelearn.errors import ConfigError, require
from livelearn.features.batch import SparseBatch, concat
from livelearn.models.base import Learner, OnePass, as_labels, check_params, register


class _Pickled(OnePass):
    """State is a pickle of the adapter: ``copy`` and saving go through it."""

    pickled = True
    bits: int

    def state(self) -> dict[str, np.ndarray]:
        return {"pickle": np.frombuffer(pickle.dumps(self), dtype=np.uint8)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        other = pickle.loads(state["pickle"].tobytes())  # noqa: S301 - state() of an adapter
        self.__dict__.update(other.__dict__)

    def copy(self) -> Learner:
        return copy.deepcopy(self)

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        return self._call(batch, as_labels(self, batch, y))


def _rows(batch: SparseBatch, mask: int) -> list[dict[int, float]]:
    """Each row as {bucket: value}, values of a repeated bucket added up."""
    rows = []
    idx, val, off = (batch.indices & mask).tolist(), batch.values.tolist(), batch.offsets.tolist()
    for r in range(len(batch)):
        row: dict[int, float] = {}
        for k in range(off[r], off[r + 1]):
            row[idx[k]] = row.get(idx[k], 0.0) + val[k]
        rows.append(row)
    return rows


@register
class RiverLearner(_Pickled):
    """Any River classifier (binary) or regressor, fed ``{bucket: value}`` dicts. A
    classifier learns a label as True where it is > 0.5, as the metrics count it.

    >>> from river import linear_model
    >>> from livelearn.features.hashing import hash_rows
    >>> model = RiverLearner(linear_model.LogisticRegression(), bits=10)
    >>> batch = hash_rows([{"x": "a"}, {"x": "b"}] * 50, bits=10)
    >>> _ = model.predict_then_learn(batch, np.array([1.0, 0.0] * 50))
    >>> p = model.predict(batch.slice(0, 2))
    >>> bool(p[0] > 0.5 > p[1])
    True
    """

    name = "river"

    def __init__(self, estimator: Any, bits: int = 20):
        base = require("river.base", "RiverLearner")
        if not isinstance(estimator, base.Classifier | base.Regressor):
            raise ConfigError(f"RiverLearner: expected a river classifier or regressor, "
                              f"got {type(estimator).__name__}")
        self.estimator: Any = estimator
        self.bits = bits
        check_params(self)
        self.classifier = isinstance(estimator, base.Classifier)

    @property
    def task(self) -> str:  # type: ignore[override]
        return "binary" if self.classifier else "regression"

    def clone(self) -> Learner:
        return RiverLearner(self.estimator.clone(), self.bits)

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        out = np.empty(len(batch))
        est = self.estimator
        for r, x in enumerate(_rows(batch, (1 << self.bits) - 1)):
            if self.classifier:
                out[r] = est.predict_proba_one(x).get(True, 0.0)
            else:
                out[r] = est.predict_one(x)
            if y is not None:
                est.learn_one(x, bool(y[r] > 0.5) if self.classifier else float(y[r]))
        return out


class _MiniBatch(_Pickled):
    """Buffers rows; the model learns from each full mini-batch of ``batch_size`` rows."""

    batch_size: int

    def _setup(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: batch_size must be >= 1")
        self._buffer: list[tuple[SparseBatch, np.ndarray]] = []
        self._buffered = 0

    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            return self._score(batch) if len(batch) else np.zeros(0)
        out, start = np.empty(len(batch)), 0
        while start < len(batch):
            stop = min(len(batch), start + self.batch_size - self._buffered)
            part = batch.slice(start, stop)
            out[start:stop] = self._score_rows(part)
            self._buffer.append((part, y[start:stop].copy()))
            self._buffered += stop - start
            if self._buffered == self.batch_size:
                self._learn(concat([b for b, _ in self._buffer]),
                            np.concatenate([t for _, t in self._buffer]))
                self._buffer, self._buffered = [], 0
            start = stop
        return out

    def _score(self, batch: SparseBatch) -> np.ndarray:
        raise NotImplementedError

    def _score_rows(self, batch: SparseBatch) -> np.ndarray:
        """Prequential scores; they must not depend on how the rows were grouped."""
        return self._score(batch)

    def _learn(self, batch: SparseBatch, y: np.ndarray) -> None:
        raise NotImplementedError


@register
class SklearnLearner(_MiniBatch):
    """A scikit-learn estimator with ``partial_fit``, fed a scipy CSR matrix of 2**bits columns.

    A classifier learns a label as class 1 where it is > 0.5, as the metrics count it,
    and scores with ``predict_proba`` (column of class 1), or the logistic of
    ``decision_function``; before its first mini-batch every score is 0.5 (0.0 for a
    regressor).

    >>> from sklearn.linear_model import SGDClassifier
    >>> from livelearn.features.hashing import hash_rows
    >>> model = SklearnLearner(SGDClassifier(loss="log_loss", random_state=0), bits=10,
    ...                        batch_size=10)
    >>> batch = hash_rows([{"x": "a"}, {"x": "b"}] * 100, bits=10)
    >>> _ = model.predict_then_learn(batch, np.array([1.0, 0.0] * 100))
    >>> p = model.predict(batch.slice(0, 2))
    >>> bool(p[0] > 0.5 > p[1])
    True
    """

    name = "sklearn"

    def __init__(self, estimator: Any, bits: int = 20, batch_size: int = 32):
        is_classifier = require("sklearn.base", "SklearnLearner").is_classifier
        if not hasattr(estimator, "partial_fit"):
            raise ConfigError(f"SklearnLearner: {type(estimator).__name__} has no partial_fit")
        self.estimator, self.bits, self.batch_size = estimator, bits, batch_size
        check_params(self)
        self.classifier = bool(is_classifier(estimator))
        self._fitted = False
        self._setup()

    @property
    def task(self) -> str:  # type: ignore[override]
        return "binary" if self.classifier else "regression"

    def clone(self) -> Learner:
        from sklearn.base import clone

        return SklearnLearner(clone(self.estimator), self.bits, self.batch_size)

    def _matrix(self, batch: SparseBatch) -> Any:
        from scipy.sparse import csr_matrix

        return csr_matrix((batch.values, batch.indices & ((1 << self.bits) - 1), batch.offsets),
                          shape=(len(batch), 1 << self.bits))

    def _score(self, batch: SparseBatch) -> np.ndarray:
        if not self._fitted:
            return np.full(len(batch), 0.5 if self.classifier else 0.0)
        x, est = self._matrix(batch), self.estimator
        if not self.classifier:
            return np.asarray(est.predict(x), dtype=np.float64)
        if hasattr(est, "predict_proba"):
            try:
                return np.asarray(est.predict_proba(x)[:, 1], dtype=np.float64)
            except AttributeError:  # e.g. SGDClassifier with a loss that has no probabilities
                pass
        return 1.0 / (1.0 + np.exp(-np.clip(est.decision_function(x), -35.0, 35.0)))

    def _learn(self, batch: SparseBatch, y: np.ndarray) -> None:
        x = self._matrix(batch)
        if self.classifier:
            self.estimator.partial_fit(x, (y > 0.5).astype(np.int64), classes=np.array([0, 1]))
        else:
            self.estimator.partial_fit(x, y)
        self._fitted = True


@register
class TorchLearner(_MiniBatch):
    """A PyTorch module trained over the stream by mini-batch stochastic gradient steps.

    ``optimizer`` is "adagrad" (the default: per-coordinate rates suit sparse
    embeddings), "sgd" or "adam".

    The module is called as ``module(indices, offsets, values)`` with the batch's
    CSR arrays as tensors (indices taken modulo 2**bits, offsets without the final
    total, as ``torch.nn.EmbeddingBag`` takes them) and returns one raw score per
    row: a logit for ``task="binary"`` (log loss), the prediction for
    ``"regression"`` (squared loss). ``dnn()`` builds such a module.
    """

    name = "torch"

    def __init__(self, module: Any, bits: int = 18, task: str = "binary", lr: float = 0.1,
                 batch_size: int = 32, optimizer: str = "adagrad", seed: int = 0):
        torch = require("torch", "TorchLearner")
        if task not in ("binary", "regression"):
            raise ConfigError(f"TorchLearner: task must be 'binary' or 'regression', got {task!r}")
        optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
                      "adam": torch.optim.Adam}
        if optimizer not in optimizers:
            raise ConfigError(f"TorchLearner: optimizer must be one of {sorted(optimizers)}, "
                              f"got {optimizer!r}")
        self.module, self.bits, self._task, self.lr = module, bits, task, lr
        self.batch_size, self.optimizer, self.seed = batch_size, optimizer, seed
        check_params(self, positive=("lr",))
        torch.manual_seed(seed)
        self._optimizer = optimizers[optimizer](module.parameters(), lr=lr)
        self._initial = copy.deepcopy(module.state_dict())
        self._setup()

    @property
    def task(self) -> str:  # type: ignore[override]
        return self._task

    def params(self) -> dict[str, Any]:
        return {"module": self.module, "bits": self.bits, "task": self._task, "lr": self.lr,
                "batch_size": self.batch_size, "optimizer": self.optimizer, "seed": self.seed}

    def clone(self) -> Learner:
        module = copy.deepcopy(self.module)
        module.load_state_dict(self._initial)
        return TorchLearner(module, self.bits, self._task, self.lr, self.batch_size,
                            self.optimizer, self.seed)

    def _forward(self, batch: SparseBatch) -> Any:
        import torch

        return self.module(torch.from_numpy(batch.indices & ((1 << self.bits) - 1)),
                           torch.from_numpy(batch.offsets[:-1].copy()),
                           torch.from_numpy(batch.values))

    def _score(self, batch: SparseBatch) -> np.ndarray:
        import torch

        with torch.no_grad():
            raw = self._forward(batch).reshape(-1)
            out = torch.sigmoid(raw) if self._task == "binary" else raw
        return out.double().numpy()

    def _score_rows(self, batch: SparseBatch) -> np.ndarray:
        """One forward pass per row: a matrix product's rounding depends on its shape."""
        return np.concatenate([self._score(batch.slice(r, r + 1)) for r in range(len(batch))])

    def _learn(self, batch: SparseBatch, y: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        raw = self._forward(batch).reshape(-1)
        target = torch.from_numpy(y).to(raw.dtype)
        if self._task == "binary":
            loss = F.binary_cross_entropy_with_logits(raw, target)
        else:
            loss = F.mse_loss(raw, target)
        self._optimizer.zero_grad()
        loss.backward()
        self._optimizer.step()


def dnn(bits: int = 18, dim: int = 16, hidden: tuple[int, ...] = (64,), seed: int = 0) -> Any:
    """A small DNN for TorchLearner: summed embeddings of the buckets, then an MLP."""
    return _dnn_class()(bits, dim, hidden, seed)


def _dnn_class() -> Any:
    """The DNN module class, made on first use so that importing this module needs no torch."""
    if "DNN" in globals():
        return globals()["DNN"]
    torch = require("torch", "livelearn.models.adapters.dnn")
    from torch import nn

    class DNN(nn.Module):
        def __init__(self, bits: int, dim: int, hidden: tuple[int, ...], seed: int) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.embed = nn.EmbeddingBag(1 << bits, dim, mode="sum")
            nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(dim))
            sizes, layers = [dim, *hidden], []
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

        def forward(self, indices: Any, offsets: Any, values: Any) -> Any:
            pooled = self.embed(indices, offsets, per_sample_weights=values.float())
            return self.mlp(pooled).squeeze(-1)

    DNN.__qualname__ = "DNN"
    globals()["DNN"] = DNN
    return DNN


def __getattr__(name: str) -> Any:
    """``DNN`` on demand, so that a pickled DNN loads in a fresh process."""
    if name == "DNN":
        return _dnn_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
