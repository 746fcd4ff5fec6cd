"""The Learner protocol: score hashed rows, learn from them one sample at a time.

Learning is sequential per sample: learning a stream in batches of 1, 7 or 1000
gives the same state. Hyperparameters are the constructor's arguments and
nothing else (``params()`` returns them), so a version is rebuilt exactly from
``params()`` and ``state()``. Saved files are numpy ``.npz`` archives read with
``allow_pickle=False``: loading a model never runs code. The one exception is an
adapter around another library's model (River, scikit-learn, PyTorch): its file
holds a pickle, and ``load_learner`` refuses it unless called with ``trusted=True``.
"""

from __future__ import annotations

import inspect
import math
import mmap
import os
import pickle
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import orjson

from livelearn.errors import BadInput, ConfigError, PipelineError, missing_extra
from livelearn.events import show
from livelearn.features.batch import SparseBatch


class Learner(ABC):
    """An online model over SparseBatch rows. Classifiers score with P(label = 1).

    A learner of your own subclasses this, sets ``name`` and ``bits`` (its rows are
    hashed into 2**bits buckets), and is decorated with ``@register``, so that the
    Registry can load the versions saved of it (the module defining it must be
    imported wherever they are loaded: a pipeline's file is).
    """

    #: The name a saved file records, to find the class again on load.
    name: ClassVar[str]
    #: "binary" (scores are probabilities, metric AUC) or "regression" (metric MAE).
    task: ClassVar[str] = "binary"
    #: True for adapters whose state is a pickle: loading one runs code (see load_learner).
    pickled: ClassVar[bool] = False
    #: Rows are hashed into 2**bits buckets for it (features.hashing).
    bits: int

    @abstractmethod
    def predict(self, batch: SparseBatch) -> np.ndarray:
        """Scores of the rows, without learning."""

    @abstractmethod
    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        """For each row in order: score it, then learn from it. Returns the scores."""

    def learn(self, batch: SparseBatch, y: np.ndarray) -> None:
        """Learn from the rows in order."""
        self.predict_then_learn(batch, y)

    def undo_point(self, batch: SparseBatch) -> Callable[[], None] | None:
        """What learning ``batch`` may change of this learner, kept: a function that puts
        it back, or None where that cannot be kept cheaply. The trainer's way past a
        sample whose learning spoils the learner (Diverged): without it (None), the
        trainer keeps a copy of its ``state()`` before each batch (``set_state`` puts it
        back) and checks after it that every parameter is a finite number
        (``not_finite``): O(its state) a batch (an adapter's: a pickle); where ``state()``
        fails, it stops at such a sample."""
        return None

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """The learned arrays; with ``params()`` they rebuild the model exactly."""

    @abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the learned arrays by those of ``state()``."""

    def params(self) -> dict[str, Any]:
        """The constructor's arguments, read from its signature."""
        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n != "self"}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Learner:
        """The learner of ``params()`` as saved (a subclass reads older files' here)."""
        return cls(**params)

    def clone(self) -> Learner:
        """A fresh, untrained learner with the same hyperparameters."""
        return type(self)(**self.params())

    def copy(self) -> Learner:
        """An independent learner with the same hyperparameters and state."""
        twin = self.clone()
        twin.set_state({k: v.copy() for k, v in self.state().items()})
        return twin


class OnePass(Learner):
    """A learner that scores and learns in one pass over a batch, ``_call(batch, y)``:
    without labels (None) it only scores."""

    @abstractmethod
    def _call(self, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
        """The scores of the rows, each scored before it is learned when ``y`` is given."""

    def predict(self, batch: SparseBatch) -> np.ndarray:
        return self._call(batch, None)

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        return self._call(batch, y)


#: name -> class, filled by ``register``; ``load_learner`` rebuilds from it.
LEARNERS: dict[str, type[Learner]] = {}


def register(cls: type[Learner]) -> type[Learner]:
    """Class decorator: make a learner loadable by its ``name``; ConfigError if another
    class has that name (a module run again may register its class again)."""
    taken = LEARNERS.get(cls.name)
    if taken is not None and _path(taken) != _path(cls):
        raise ConfigError(f"learner name {cls.name!r} is taken by {_path(taken)}: give "
                          f"{cls.__qualname__} a name of its own")
    LEARNERS[cls.name] = cls
    return cls


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def save_learner(learner: Learner, path: str | Path) -> None:
    """Write params and state to an .npz file (no pickle, except for a ``pickled`` adapter)."""
    if learner.pickled:
        meta = orjson.dumps({"name": learner.name, "pickled": True})
        arrays = {"state.pickle": np.frombuffer(pickle.dumps(learner), dtype=np.uint8)}
    else:
        meta = orjson.dumps({"name": learner.name, "params": learner.params()})
        arrays = {f"state.{k}": v for k, v in learner.state().items()}
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(meta, dtype=np.uint8), **arrays)  # type: ignore[arg-type]


def load_learner(path: str | Path, *, trusted: bool = False) -> Learner:
    """Rebuild a learner saved by ``save_learner``; it scores bit for bit as the saved one.

    A file of a ``pickled`` adapter is unpickled only with ``trusted=True``: unpickling
    runs code, so pass it only for files that you or your own pipeline wrote.
    """
    meta, state = _read(path)
    if meta.get("pickled") is True:
        return _unpickle(path, meta["name"], state.get("pickle", np.zeros(0, np.uint8)), trusted)
    cls = LEARNERS.get(meta["name"])
    if cls is None:
        raise ConfigError(f"model file {path}: unknown learner {meta['name']!r} "
                          f"(known: {', '.join(sorted(LEARNERS))})")
    try:
        learner = cls.from_params(meta["params"])
    except TypeError as e:  # parameters of another version or class: a ConfigError is kept
        raise BadInput(f"model file {path}: its params {show(meta['params'])} do not build a "
                       f"{cls.__name__} ({e})") from None
    learner.set_state(state)
    return learner


def _read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The meta and the state arrays of a model file; BadInput naming the file if it is
    not one that ``save_learner`` wrote (another file, or one truncated or damaged)."""
    try:
        with open(path, "rb") as f:  # closed here: numpy leaves it open if zipfile fails
            start = f.read(4)
            if start != b"PK\x03\x04":  # what every .npz (a zip archive) starts with
                raise ValueError(f"not an .npz archive: it starts with {start!r}")
            f.seek(0)
            with np.load(f, allow_pickle=False) as data:
                meta = orjson.loads(data["__meta__"].tobytes())
                state = {k.removeprefix("state."): data[k] for k in data.files
                         if k != "__meta__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise BadInput(f"model file {path}: not a livelearn model ({type(e).__name__}: "
                       f"{e})") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("name"), str)
            and (meta.get("pickled") is True or isinstance(meta.get("params"), dict))):
        raise BadInput(f"model file {path}: not a livelearn model (its __meta__ is "
                       f"{show(meta)}; expected an object with a name and params)")
    return meta, state


def _unpickle(path: str | Path, name: str, data: np.ndarray, trusted: bool) -> Learner:
    if not trusted:
        raise BadInput(f"model file {path}: the {name!r} adapter is stored as a pickle, and "
                       f"unpickling runs code; load it with trusted=True only if you trust "
                       f"where the file comes from")
    try:
        learner = pickle.loads(data.tobytes())  # noqa: S301 - the caller vouched for the file
    except ModuleNotFoundError as e:  # the adapter's library, not installed here
        extra = missing_extra(e, f"model file {path} (the {name!r} adapter)")
        if extra is None:
            raise
        raise extra from e
    if not isinstance(learner, Learner):
        raise BadInput(f"model file {path}: holds a {type(learner).__name__}, not a Learner")
    return learner


#: The most hash bits a learner takes: CRC-32 hashes (features.hashing) fill no more buckets.
MAX_BITS = 32


def check_params(learner: Learner, at_least: dict[str, int] | None = None,
                 positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """ConfigError naming the learner and the first hyperparameter out of range: ``bits``
    an integer in [1, MAX_BITS], each of ``at_least`` an integer >= its bound (and a
    ``seed`` one that a kernel's int64 holds), each of ``positive`` a finite number > 0
    and of ``non_negative`` one >= 0 (a bool is neither)."""
    owner = type(learner).__name__
    for name, low in {"bits": 1, **(at_least or {})}.items():
        value = getattr(learner, name)
        high = {"bits": MAX_BITS, "seed": 2**63 - 1}.get(name)
        if type(value) is not int or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"{owner}: {name} must be an integer {bound}, got "
                              f"{_shown(value, int)}")
    for names, strict in ((positive, True), (non_negative, False)):
        for name in names:
            value = getattr(learner, name)
            if type(value) not in (int, float) or not math.isfinite(value) \
                    or value < 0 or (strict and value == 0):
                raise ConfigError(f"{owner}: {name} must be a finite number "
                                  f"{'>' if strict else '>='} 0, got {_shown(value, float)}")


def _shown(value: Any, kind: type) -> str:
    """A hyperparameter's value, and its type where that is what is wrong: a saved model's
    params are JSON, which holds Python's numbers and not numpy's."""
    if type(value) in (int, float, bool, str):
        return repr(value)
    return f"{value!r} (a {type(value).__name__}; expected a Python {kind.__name__})"


def score_problem(learner: Learner, scores: np.ndarray) -> tuple[int, str] | None:
    """The first of ``scores`` that ``learner`` must not give, and what is wrong with it:
    not a finite number, or outside [0, 1] for a binary learner; None if all are fine."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    bad = ~finite | ((scores < 0) | (scores > 1) if learner.task == "binary" else False)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    why = ("not a finite number" if not finite[i] else
           "outside [0, 1], where a binary learner's P(label = 1) lies")
    return i, f"the score {float(scores[i])!r}: {why}"


def undo_tables(tables: Sequence[np.ndarray], batch: SparseBatch, size: int,
                whole: Sequence[np.ndarray] = ()) -> Callable[[], None]:
    """``Learner.undo_point`` of a learner whose state is ``tables`` of ``size`` rows (one a
    bucket), of which the rows that ``batch`` indexes are kept, and the arrays ``whole``
    (not of buckets, however long), kept whole.

    >>> w = np.zeros(8)
    >>> undo = undo_tables([w], SparseBatch(np.array([3, 11]), np.ones(2), np.array([0, 2])), 8)
    >>> w[3] = 5.0
    >>> undo()
    >>> float(w[3])
    0.0
    """
    rows = batch.indices & (size - 1)
    kept = ([(t, rows, t.take(rows, axis=0)) for t in tables]
            + [(t, slice(None), t.copy()) for t in whole])

    def undo() -> None:
        for table, at, values in kept:  # a bucket repeated: each copy holds the same
            table[at] = values

    return undo


def not_finite(learner: Learner) -> bool:
    """Whether a parameter of ``learner`` is not a finite number: in the float arrays of
    its ``state()``, or for a ``pickled`` adapter in any float, array or tensor it holds
    (its library's model: a River estimator's weights, a scikit-learn ``coef_``, a
    PyTorch module's parameters and its optimizer's state)."""
    seen: set[int] = set()
    stack: list[Any] = [learner if learner.pickled else learner.state()]
    while stack:
        obj = stack.pop()
        if isinstance(obj, float):
            if not math.isfinite(obj):
                return True
        elif isinstance(obj, np.ndarray):
            if obj.dtype.kind in "fc" and not np.isfinite(obj).all():
                return True
        elif isinstance(obj, str | bytes | int | type | ModuleType) or obj is None \
                or id(obj) in seen:
            continue
        elif hasattr(obj, "is_floating_point") and hasattr(obj, "isfinite"):  # a tensor
            if obj.is_floating_point() and not bool(obj.isfinite().all()):
                return True
        else:
            seen.add(id(obj))
            stack.extend(_parts(obj))
    return False


def _parts(obj: Any) -> list[Any]:
    """What ``not_finite`` looks into: a container's items, a River VectorDict's values,
    an object's attributes."""
    if isinstance(obj, dict):
        return [*obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return [*obj]
    if type(obj).__name__ == "VectorDict" and hasattr(obj, "to_dict"):
        return [*obj.to_dict().values()]
    return [*vars(obj).values()] if hasattr(obj, "__dict__") else []


class Diverged(PipelineError):
    """Learning row ``row`` of a batch left a parameter of the learner that is not a finite
    number. The learner stops there (the rows after it are neither scored nor learned) and
    is spoiled: rebuild it, or load the version saved before."""

    def __init__(self, message: str, row: int, values: str = ""):
        super().__init__(message)
        self.row, self.values = row, values  # values: the row's largest value and its label


def check_learned(learner: Learner, batch: SparseBatch, labels: np.ndarray, row: int) -> None:
    """Diverged if a kernel said that learning ``row`` (-1: none) spoiled a parameter,
    naming the row's values and label: not finite, or so large that a square overflows."""
    if row < 0:
        return
    values = batch.values[batch.offsets[row]:batch.offsets[row + 1]]
    label = float(labels[row])
    largest = float(np.max(np.abs(values))) if len(values) else 0.0
    if not math.isfinite(label) or not np.isfinite(values).all():
        cause = "a value or label that is not a finite number"
    else:
        cause = "a learning rate too high, or a value or label too large"
    what = f"largest |value| {largest:.6g}, label {label:.6g}"
    raise Diverged(f"{type(learner).__name__}: learning row {row} of the batch ({what}) "
                   f"left a weight that is not a finite number ({cause}; scale large numeric "
                   f"features, e.g. with log1p); the learner is spoiled: rebuild it or load "
                   f"its last saved version", row, what)


def as_labels(learner: Learner, batch: SparseBatch, y: np.ndarray | None) -> np.ndarray:
    """The labels as contiguous float64, one per row (zeros when ``y`` is None); BadInput
    for a label not a finite number, or outside [0, 1] for a binary learner."""
    if y is None:
        return np.zeros(len(batch))
    labels = np.ascontiguousarray(y, dtype=np.float64)
    if labels.shape != (len(batch),):
        raise BadInput(f"labels: expected {len(batch)} (one per row), got shape {labels.shape}")
    binary = learner.task == "binary"
    if len(labels) == 0:
        return labels
    low, high = labels.min(), labels.max()  # nan if any label is nan
    if (0.0 <= low and high <= 1.0) if binary else (-math.inf < low and high < math.inf):
        return labels
    bad = ~np.isfinite(labels) | (((labels < 0) | (labels > 1)) if binary else False)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        allowed = "a number in [0, 1] (0 or 1, or a probability)" if binary else "a finite number"
        raise BadInput(f"labels: row {r} is {float(labels[r])!r}; {type(learner).__name__} learns "
                       f"{allowed}")
    return labels


def table(shape: tuple[int, ...], dtype: type = np.float64,
          populate: bool = False) -> np.ndarray:
    """A zeroed, contiguous table in its own anonymous memory, of ordinary 4 KB pages.

    Without ``populate``, the operating system zeroes a page when it is first
    written, so memory grows with the buckets used: for factor tables, large and
    sparsely touched. ``populate`` maps and zeroes every page now, in one system call,
    for tables that hashed features soon spread over: on this project's VM that took
    5 ms for 16 MB, where faulting the same pages one by one while learning took 9 to
    11 ms. numpy asks for transparent huge pages for large arrays, which can stall a
    first write while memory is compacted; these tables ask for none.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    now = getattr(mmap, "MAP_POPULATE", 0) if populate else 0  # Linux only
    if now and size > physical_memory():  # the process would be killed, not refused
        raise _too_large(size, "more than this machine's memory")
    try:
        memory = (mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | now) if now
                  else mmap.mmap(-1, max(size, 1)))
    except OSError as e:
        raise _too_large(size, e.strerror or str(e)) from None
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # for systems where huge pages are the default
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype, count=math.prod(shape)).reshape(shape)


def physical_memory() -> int:
    """Bytes of memory this machine has (no bound where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def _too_large(size: int, why: str) -> ConfigError:
    return ConfigError(f"a learner's table of {size / 2**30:.1f} GiB cannot be made ({why}, "
                       f"{physical_memory() / 2**30:.1f} GiB): lower its bits (each one less "
                       f"halves its tables)")


def state_array(state: dict[str, np.ndarray], key: str, shape: tuple[int, ...],
                dtype: type = np.float64) -> np.ndarray:
    """A fresh ``table`` holding ``state[key]``, checked against the model's ``shape``."""
    if key not in state:
        raise BadInput(f"model state: missing array {key!r} (has {sorted(state)})")
    given = np.asarray(state[key])
    if given.shape != shape:
        raise BadInput(f"model state {key!r}: expected shape {shape}, got {given.shape}")
    if given.dtype.kind not in "biuf":
        raise BadInput(f"model state {key!r}: expected numbers, got an array of {given.dtype}")
    array = table(shape, dtype, populate=True)
    array[...] = given
    return array


def state_columns(state: dict[str, np.ndarray], keys: tuple[str, ...], rows: int) -> np.ndarray:
    """A fresh ``table`` of ``rows`` by ``len(keys)``: column c holds ``state[keys[c]]``."""
    array = table((rows, len(keys)), populate=True)
    for c, key in enumerate(keys):
        array[:, c] = state_array(state, key, (rows,))
    return array
