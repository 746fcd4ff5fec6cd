"""Declared feature transforms: what a pipeline's features become in a SparseBatch.

A ``FeatureSet`` lists transforms of named values; each row of its batch holds a
bias bucket (field 0), then one feature per transform whose inputs are present,
in declaration order (the n-th transform is field n, for field-aware models):

- ``Categorical(name)``: one-hot, the bucket of ``"name=value"`` (str, bool or int value);
- ``Numeric(name, scale)``: pass-through, the bucket of ``"name"``, value * scale;
- ``Bucketized(name, boundaries)``: one-hot, the bucket of ``"name@i"`` where i
  counts the boundaries <= value (so bucket 0 is below the first boundary);
- ``Cross(a, b, ...)``: one-hot, a bucket mixed from the buckets of ``"a=value"``,
  ``"b=value"``, ... (categorical values; absent if any is absent);
- ``Text(name, ngrams=1)``: a string as the bag of its words, the buckets of
  ``"name~word"``, all in the transform's one field (see ``Text``).

A name missing from a row, or None, or NaN for a number, leaves its feature out.
Categorical and Numeric hash exactly as ``hashing.hash_rows`` does, so a
FeatureSet of a row's names in their order gives hash_rows's batch, plus fields.

>>> features = FeatureSet([Categorical("country"), Numeric("age_h", scale=0.5),
...                        Bucketized("age_h", (1.0, 6.0, 24.0)), Cross("country", "topic")])
>>> batch = features.hash_rows([{"country": "FR", "topic": "tech", "age_h": 3.0},
...                             {"topic": "tech"}], bits=18)
>>> batch.offsets.tolist(), batch.fields.tolist()
([0, 5, 6], [0, 1, 2, 3, 4, 0])
>>> float(batch.values[2])
1.5
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from livelearn.errors import BadInput, ConfigError
from livelearn.features import scan as sc
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import BIAS, Features, value_text

_M64 = (1 << 64) - 1
_CROSS_SEED = 0x243F6A8885A308D3
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_CAT, _NUM, _BUCKET, _CROSS = 0, 1, 2, 3


@dataclass(frozen=True)
class Categorical:
    """One-hot of a str, bool or int value: the bucket of ``"name=value"``."""

    name: str


@dataclass(frozen=True)
class Numeric:
    """A number passed through: the bucket of ``"name"``, with value ``value * scale``
    (``scale`` a finite number, checked when declared)."""

    name: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int | float) or isinstance(self.scale, bool) \
                or not math.isfinite(self.scale):
            raise ConfigError(f"Numeric({self.name!r}): scale must be a finite number, "
                              f"got {self.scale!r}")


@dataclass(frozen=True)
class Bucketized:
    """One-hot of the interval of a number: ``"name@i"``, i = count of boundaries <= value."""

    name: str
    boundaries: tuple[float, ...]

    def __post_init__(self) -> None:
        b = list(self.boundaries)
        if not b or any(math.isnan(x) for x in b) or b != sorted(set(b)):
            raise ConfigError(f"Bucketized({self.name!r}): boundaries must be increasing "
                              f"numbers, got {self.boundaries}")


@dataclass(frozen=True)
class Cross:
    """One-hot of the combination of categorical values of two or more names."""

    names: tuple[str, ...]

    def __init__(self, *names: str):
        if len(names) < 2:
            raise ConfigError(f"Cross{names}: name two or more features")
        object.__setattr__(self, "names", tuple(names))


@dataclass(frozen=True)
class Text:
    """A string as the bag of its words: one bucket per distinct word, ``"name~word"``.

    Words are the runs of letters, digits and ``_`` of the lower-cased string;
    ``ngrams=2`` adds each pair of neighbouring words (``"name~red car"``), 3 the
    triples too. Each of a text's k tokens has the value 1/sqrt(k), so a long text
    weighs no more than a short one. A factorization machine learns a factor
    vector per word: the words' embeddings, of which a text's is their scaled sum.

    >>> batch = FeatureSet([Text("title")]).hash_rows([{"title": "Red car, red!"}], bits=18)
    >>> batch.fields.tolist(), [round(v, 3) for v in batch.values.tolist()]
    ([0, 1, 1], [1.0, 0.707, 0.707])
    """

    name: str
    ngrams: int = 1

    def __post_init__(self) -> None:
        if type(self.ngrams) is not int or not 1 <= self.ngrams <= 3:
            raise ConfigError(f"Text({self.name!r}): ngrams must be 1, 2 or 3, "
                              f"got {self.ngrams!r}")


Transform = Categorical | Numeric | Bucketized | Cross | Text
_KINDS = "Categorical, Numeric, Bucketized, Cross or Text"
_WORD = re.compile(r"\w+")
_REMEMBERED = 500  # texts up to this length have their tokens remembered (_tokens)


def cross_hash(tokens: Iterable[int]) -> int:
    """The 32-bit hash of a cross, from the full CRC-32s of its ``"name=value"`` tokens."""
    h = _CROSS_SEED
    for t in tokens:
        h ^= t
        h = ((h ^ (h >> 30)) * _MIX1) & _M64
        h = ((h ^ (h >> 27)) * _MIX2) & _M64
        h ^= h >> 31
    return h & 0xFFFFFFFF


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


class FeatureSet:
    """Transforms applied to feature dicts, hashed into a SparseBatch with fields."""

    def __init__(self, transforms: Sequence[Transform]):
        if isinstance(transforms, str) or not isinstance(transforms, Iterable):
            raise ConfigError(f"FeatureSet({transforms!r}): expected a list of transforms "
                              f"({_KINDS})")
        self.transforms = tuple(transforms)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise ConfigError(f"FeatureSet: {t!r} is not a transform; expected {_KINDS}")
        self.n_fields = len(self.transforms) + 1
        # the kernel assembles every field but the texts, which Python adds (_with_texts)
        self._texts = [(f, t) for f, t in enumerate(self.transforms, 1) if isinstance(t, Text)]
        self._plan = _Plan([t for t in self.transforms if not isinstance(t, Text)])
        self._kernel_fields = np.array(
            [0] + [f for f, t in enumerate(self.transforms, 1) if not isinstance(t, Text)],
            dtype=np.int32)
        #: The feature names the transforms read, each once, in declaration order.
        self.names: tuple[str, ...] = tuple(dict.fromkeys(
            n for t in self.transforms for n in _names(t)))

    @classmethod
    def infer(cls, row: Features) -> FeatureSet:
        """Categorical for str and bool values, Numeric for numbers, in the row's order."""
        return cls([Categorical(k) if isinstance(v, str | bool) else Numeric(k)
                    for k, v in row.items()])

    def __repr__(self) -> str:
        return f"FeatureSet({list(self.transforms)!r})"

    def hash_rows(self, rows: Sequence[Features], bits: int) -> SparseBatch:
        """The batch of ``rows``, fast (``features.scan``); the same as ``hash_rows_python``."""
        return self._hash(rows, bits, False)[0]

    def hash_pairs(self, pairs: Sequence[tuple[Features, float]],
                   bits: int) -> tuple[SparseBatch, np.ndarray]:
        """The batch of the rows of (row, label) pairs, and the labels as float64: what
        ``hash_rows`` of the rows and ``float`` of each label give, read in one pass."""
        return self._hash(pairs, bits, True)

    def _hash(self, items: Sequence[Any], bits: int,
              pairs: bool) -> tuple[SparseBatch, np.ndarray]:
        """(batch, labels) of rows or of pairs, fast where ``features.scan`` can read them."""
        seq = sc.sequence(items) if len(items) else None
        if seq is None:
            return self._hash_python(items, bits, pairs)
        plan = self._plan
        idx, val, fld, off, labels, redo, n_redo = _batch(  # type: ignore[call-arg]
            *sc.arguments(seq, pairs), *plan.arrays, plan.bias, (1 << bits) - 1)
        batch = SparseBatch(idx, val, off, fld)
        if self._texts:
            batch = self._with_texts(batch, items, pairs, bits)
        if n_redo:
            again = np.flatnonzero(redo).tolist()
            fixed, fixed_labels = self._hash_python([items[r] for r in again], bits, pairs,
                                                    again)
            batch = batch.replace_rows(again, fixed)
            labels[again] = fixed_labels
        return batch, labels

    def _with_texts(self, batch: SparseBatch, items: Sequence[Any], pairs: bool,
                    bits: int) -> SparseBatch:
        """The kernel's ``batch`` (every field but the texts, numbered 1, 2, ...) with the
        declared fields and the texts' tokens added in their places. A row the kernel
        must redo gets whatever its text gives: ``_hash`` replaces it whole."""
        rows = (item[0] if pairs and isinstance(item, tuple) and len(item) == 2 else item
                for item in items)
        texts = _batch_of(([x for f, t in self._texts for x in _text_features(f, t, row)]
                           if isinstance(row, Mapping) else [] for row in rows), bits)
        assert batch.fields is not None
        fields = SparseBatch(batch.indices, batch.values, batch.offsets,
                             self._kernel_fields[batch.fields])
        return fields.merge(texts)

    def _hash_python(self, items: Sequence[Any], bits: int, pairs: bool,
                     numbers: Sequence[int] | None = None) -> tuple[SparseBatch, np.ndarray]:
        """``_hash`` in Python; ``numbers``: the items' positions, for messages."""
        if not pairs:
            return self.hash_rows_python(items, bits), np.zeros(len(items))
        rows, labels = _split_pairs(items, range(len(items)) if numbers is None else numbers)
        return self.hash_rows_python(rows, bits), labels

    def hash_rows_python(self, rows: Sequence[Features], bits: int) -> SparseBatch:
        """The definition, in plain Python, that ``hash_rows`` reproduces."""
        return _batch_of((self._row(row) for row in rows), bits)

    def _row(self, row: Features) -> list[tuple[int, int, float]]:
        """(field, token, value) of each feature of ``row``, in field order."""
        out: list[tuple[int, int, float]] = [(0, _crc(BIAS), 1.0)]
        for f, t in enumerate(self.transforms, 1):
            h: int | None = None
            v = 1.0
            if isinstance(t, Text):
                out.extend(_text_features(f, t, row))
            elif isinstance(t, Categorical):
                h = _token(row, t.name)
            elif isinstance(t, Cross):
                parts = [_token(row, name) for name in t.names]
                h = None if None in parts else cross_hash(parts)  # type: ignore[arg-type]
            elif (x := _number(row, t.name)) is None:
                pass
            elif isinstance(t, Numeric):
                h, v = _crc(t.name), x * t.scale
            else:
                h = _crc(f"{t.name}@{bisect.bisect_right(t.boundaries, x)}")
            if h is not None:
                out.append((f, h, v))
        return out


def _batch_of(rows: Iterable[list[tuple[int, int, float]]], bits: int) -> SparseBatch:
    """The batch of rows of (field, token, value), each token masked to ``bits``."""
    mask = (1 << bits) - 1
    idx: list[int] = []
    val: list[float] = []
    fld: list[int] = []
    off = [0]
    for row in rows:
        for f, h, v in row:
            idx.append(h & mask)
            val.append(v)
            fld.append(f)
        off.append(len(idx))
    return SparseBatch(np.array(idx, dtype=np.int64), np.array(val, dtype=np.float64),
                       np.array(off, dtype=np.int64), np.array(fld, dtype=np.int32))


def _split_pairs(items: Sequence[Any], numbers: Sequence[int]) -> tuple[list[Any], np.ndarray]:
    """The rows and the float labels of (row, label) pairs; ``numbers``: their positions."""
    rows, labels = [], []
    for r, item in zip(numbers, items, strict=True):
        if not (isinstance(item, tuple) and len(item) == 2):
            raise BadInput(f"sample {r}: expected a (features, label) pair, "
                           f"got {type(item).__name__}")
        rows.append(item[0])
        try:
            labels.append(float(item[1]))
        except (TypeError, ValueError):
            raise BadInput(f"sample {r}: the label must be a number, got "
                           f"{type(item[1]).__name__} {item[1]!r}") from None
    return rows, np.array(labels, dtype=np.float64)


def _token(row: Features, name: str) -> int | None:
    """The full CRC-32 of ``"name=value"``, or None if absent."""
    v = row.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if not isinstance(v, str | bool | int):
        raise BadInput(f"feature {name!r}: categorical values must be str, bool or int, "
                       f"got {type(v).__name__} {v!r}")
    return _crc(f"{name}={value_text(v)}")


def _text_features(field: int, t: Text, row: Features) -> list[tuple[int, int, float]]:
    """(field, token, value) of the tokens of text ``t`` in ``row``."""
    tokens = _text_tokens(row, t)
    return [(field, token, 1.0 / math.sqrt(len(tokens))) for token in tokens]


def _text_tokens(row: Features, t: Text) -> list[int]:
    """The full CRC-32s of the distinct ``"name~word"`` (and n-gram) tokens, in order."""
    text = row.get(t.name)
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if not isinstance(text, str):
        raise BadInput(f"feature {t.name!r}: Text takes a string, got "
                       f"{type(text).__name__} {text!r}")
    return _tokens(t, text) if len(text) <= _REMEMBERED else _tokens.__wrapped__(t, text)


@functools.lru_cache(maxsize=1 << 14)
def _tokens(t: Text, text: str) -> list[int]:
    """``_text_tokens`` of one text, remembered if short: an item's title recurs in
    every sample of the item. The list is shared; it is read, never changed."""
    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i:i + n]) for n in range(1, t.ngrams + 1)
             for i in range(len(words) - n + 1)]
    return [_crc(f"{t.name}~{g}") for g in dict.fromkeys(grams)]


def _number(row: Features, name: str) -> float | None:
    v = row.get(name)
    if v is None:
        return None
    if isinstance(v, str) or not isinstance(v, numbers.Real):  # a numpy number is one
        raise BadInput(f"feature {name!r}: expected a number, got {type(v).__name__} {v!r}")
    x = float(v)
    return None if math.isnan(x) else x


class _Plan:
    """The transforms as arrays for the numba kernel."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = transforms
        self.bias = _crc(BIAS)
        self.names = list(dict.fromkeys(n for t in transforms for n in _names(t)))
        self.arrays = self._arrays()

    def _arrays(self) -> tuple[np.ndarray, ...]:
        """Per transform: op, argument (a name's slot), scale, token of a Numeric's name,
        its cross parts and bucket boundaries (flat, with offsets) and the buckets' tokens."""
        slot = {n: i for i, n in enumerate(self.names)}
        a: dict[str, list[Any]] = {k: [] for k in ("op", "arg", "scale", "crc", "parts", "bins",
                                                   "bin_tokens", "bin_tok_off")}
        a["part_off"], a["bin_off"] = [0], [0]
        for t in self.transforms:
            a["bin_tok_off"].append(len(a["bin_tokens"]))
            if isinstance(t, Categorical | Cross):
                a["op"].append(_CAT if isinstance(t, Categorical) else _CROSS)
                a["arg"].append(slot[t.name] if isinstance(t, Categorical) else -1)
                if isinstance(t, Cross):
                    a["parts"].extend(slot[n] for n in t.names)
            else:
                a["op"].append(_NUM if isinstance(t, Numeric) else _BUCKET)
                a["arg"].append(slot[t.name])
            a["scale"].append(t.scale if isinstance(t, Numeric) else 1.0)
            a["crc"].append(_crc(t.name) if isinstance(t, Numeric) else 0)
            if isinstance(t, Bucketized):
                a["bins"].extend(t.boundaries)
                a["bin_tokens"].extend(_crc(f"{t.name}@{i}") for i in range(len(t.boundaries) + 1))
            a["part_off"].append(len(a["parts"]))
            a["bin_off"].append(len(a["bins"]))
        ints = ("op", "arg", "crc", "parts", "part_off", "bin_off", "bin_tokens", "bin_tok_off")
        arrays = {k: np.array(v, dtype=np.int64 if k in ints else np.float64)
                  for k, v in a.items()}
        return (*_key_table(self.names), *(arrays[k] for k in (
            "op", "arg", "scale", "parts", "part_off", "bins", "bin_off", "bin_tokens",
            "bin_tok_off", "crc")))


def _names(t: Transform) -> tuple[str, ...]:
    return t.names if isinstance(t, Cross) else (t.name,)


def _key_table(names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """``scan.name_table`` of the names: from the CRC-32 of a name to its slot."""
    crcs = [_crc(n) for n in names]
    if len(set(crcs)) != len(crcs):
        raise ConfigError(f"feature names {names}: two have the same CRC-32; rename one")
    return sc.name_table(names)


@numba.njit(cache=True, inline="always")
def _cross(token, parts, lo, hi, kinds):  # type: ignore[no-untyped-def]
    h = np.uint64(_CROSS_SEED)
    for p in range(lo, hi):
        if kinds[parts[p]] > sc.INT:
            return -1
        h ^= np.uint64(token[parts[p]])
        h = (h ^ (h >> np.uint64(30))) * np.uint64(_MIX1)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(_MIX2)
        h ^= h >> np.uint64(31)
    return np.int64(h & np.uint64(0xFFFFFFFF))


@numba.njit(cache=True)
def _batch(seq, n, is_list, pairs, objects, table, true, false, keys, slots, text, starts,  # type: ignore[no-untyped-def]
           ops, arg, scale, parts, part_off, bins, bin_off, bin_tokens, bin_tok_off, name_crc,
           bias, mask):
    """Scan the rows (or pairs) and assemble them: (indices, values, fields, offsets,
    labels, rows to redo, how many)."""
    _, token, value, kind, slot, offsets, redo, labels = sc.read(
        seq, n, is_list, pairs, objects, table, true, false, keys, slots, text, starts)
    width = len(ops) + 1
    idx, val = np.empty(n * width, dtype=np.int64), np.empty(n * width)
    fld, off = np.empty(n * width, dtype=np.int32), np.zeros(n + 1, dtype=np.int64)
    _assemble(token, value, kind, slot, offsets, len(keys), ops, arg, scale, parts, part_off,
              bins, bin_off, bin_tokens, bin_tok_off, name_crc, bias, mask, idx, val, fld, off,
              redo)
    end = off[n]
    return idx[:end], val[:end], fld[:end], off, labels, redo, np.count_nonzero(redo)


@numba.njit(cache=True)
def _assemble(token, value, kind, slot, offsets, n_slots, ops, arg, scale, parts, part_off,  # type: ignore[no-untyped-def]
              bins, bin_off, bin_tokens, bin_tok_off, name_crc, bias, mask, idx, val, fld, off,
              redo):
    """Fill rows from the scanned tokens; mark the rows that Python must redo (a float
    where a category is declared, a string where a number is: Python says which)."""
    slot_token = np.zeros(n_slots, dtype=np.int64)
    slot_value = np.zeros(n_slots)
    slot_kind = np.full(n_slots, sc.NULL, dtype=np.int8)
    j = 0
    for r in range(len(offsets) - 1):
        slot_kind[:] = sc.NULL
        for t in range(offsets[r], offsets[r + 1]):
            s = slot[t]
            if s >= 0:
                slot_token[s], slot_value[s], slot_kind[s] = token[t], value[t], kind[t]
        idx[j], val[j], fld[j] = bias & mask, 1.0, 0
        j += 1
        for f in range(len(ops)):
            h, v = -1, 1.0
            if ops[f] == _CAT:
                k = slot_kind[arg[f]]
                if k == sc.NUM:
                    redo[r] = 1
                elif k != sc.NULL:
                    h = slot_token[arg[f]]
            elif ops[f] == _CROSS:
                h = _cross(slot_token, parts, part_off[f], part_off[f + 1], slot_kind)
                for p in range(part_off[f], part_off[f + 1]):
                    if slot_kind[parts[p]] == sc.NUM:
                        redo[r] = 1
            elif slot_kind[arg[f]] == sc.STR:
                redo[r] = 1
            elif slot_kind[arg[f]] != sc.NULL and not math.isnan(slot_value[arg[f]]):
                x = slot_value[arg[f]]
                if ops[f] == _NUM:
                    h, v = name_crc[f], x * scale[f]
                else:
                    lo, hi = bin_off[f], bin_off[f + 1]
                    h = bin_tokens[bin_tok_off[f] + np.searchsorted(bins[lo:hi], x, side="right")]
            if h >= 0:
                idx[j], val[j], fld[j] = h & mask, v, f + 1
                j += 1
        off[r + 1] = j
