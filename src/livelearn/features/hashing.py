"""Feature hashing: named feature values -> buckets of a fixed-size weight table.

A string (or bool) value is one-hot: bucket of ``"name=value"``, value 1.0. A
number passes through: bucket of ``"name"``, the number as value. Every row also
gets a bias bucket, first. Hashes are CRC-32, stable across processes and machines.

>>> batch = hash_rows([{"topic": "sports", "age_h": 2.0}], bits=18)
>>> len(batch), len(batch.indices)
(1, 3)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numba
import numpy as np

from livelearn.events import show
from livelearn.features import scan as sc
from livelearn.features.batch import SparseBatch

FeatureValue = str | int | float | bool
Features = Mapping[str, FeatureValue]

BIAS = "__bias__"


def bucket(token: str, bits: int) -> int:
    """The bucket of one token, in [0, 2**bits)."""
    return zlib.crc32(token.encode()) & ((1 << bits) - 1)


def value_text(value: str | int) -> str:
    """The text a str, bool or int value is hashed by: what JSON logs it as
    (the characters of a str, True or False, the digits of an int), also for a subclass,
    whose own ``str()`` may differ (an Enum member mixed with str gives ``Country.FR``
    where its JSON, which the trainer reads, is ``"fr"``).

    >>> import enum
    >>> value_text(enum.Enum("C", {"FR": "fr"}, type=str).FR), value_text(True), value_text(3)
    ('fr', 'True', '3')
    """
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return str.__str__(value) if isinstance(value, str) else int.__repr__(value)


def unusable(row: object) -> str | None:
    """What makes one row of features impossible to hash or log as JSON, naming the
    feature; None if nothing does. Values must be str, bool, int or finite float.

    >>> unusable({"topic": "sports", "age_h": float("nan")})
    "feature 'age_h': expected a number, a string or a bool, got nan"
    """
    if not isinstance(row, Mapping):
        return f"expected a mapping of feature names to values, got {show(row)}"
    for name, value in row.items():
        if not isinstance(name, str):
            return f"feature name {show(name)}: expected a string"
        if not isinstance(value, str | int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            return f"feature {name!r}: expected a number, a string or a bool, got {show(value)}"
    return None


def hash_rows(rows: Sequence[Features], bits: int) -> SparseBatch:
    """Hash feature dicts into a SparseBatch (a bias bucket first in every row).

    Fast path: ``features.scan`` reads the rows at native speed; the rows it
    cannot read (see there) are hashed in Python, so the output is always that
    of ``hash_rows_python``.
    """
    tokens = sc.scan(rows) if len(rows) else None
    if tokens is None:
        return hash_rows_python(rows, bits)
    mask = (1 << bits) - 1
    indices = np.empty(len(tokens.key) + len(rows), dtype=np.int64)
    values = np.empty(len(indices))
    offsets = tokens.offsets + np.arange(len(rows) + 1)
    redo = tokens.status.copy()
    _place(tokens.key, tokens.token, tokens.value, tokens.kind, offsets,
           zlib.crc32(BIAS.encode()) & mask, mask, indices, values, redo)
    batch = SparseBatch(indices, values, offsets)
    again = np.flatnonzero(redo).tolist()
    if again:
        batch = batch.replace_rows(again, hash_rows_python([rows[r] for r in again], bits))
    return batch


@numba.njit(cache=True)
def _place(key, token, value, kind, offsets, bias, mask, indices, values, redo):  # type: ignore[no-untyped-def]
    """Fill the rows; mark in ``redo`` the rows with a null, for Python to say what is wrong."""
    for r in range(len(offsets) - 1):
        lo = offsets[r]
        indices[lo], values[lo] = bias, 1.0
        for k in range(lo + 1, offsets[r + 1]):
            t, kt = k - r - 1, kind[k - r - 1]
            number = kt == sc.INT or kt == sc.NUM
            indices[k] = (key[t] if number else token[t]) & mask
            values[k] = value[t] if number else 1.0
            if kt == sc.NULL:
                redo[r] = 1


def hash_rows_python(rows: Sequence[Features], bits: int) -> SparseBatch:
    """``hash_rows`` in plain Python: the definition that the fast path reproduces."""
    mask = (1 << bits) - 1
    crc = zlib.crc32
    bias = crc(BIAS.encode()) & mask
    indices: list[int] = []
    values: list[float] = []
    offsets = [0]
    for row in rows:
        indices.append(bias)
        values.append(1.0)
        for name, value in row.items():
            if isinstance(value, str | bool):
                value = value if type(value) is str else value_text(value)
                indices.append(crc(f"{name}={value}".encode()) & mask)
                values.append(1.0)
            else:
                indices.append(crc(name.encode()) & mask)
                values.append(float(value))
        offsets.append(len(indices))
    return SparseBatch(np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.float64),
                       np.asarray(offsets, dtype=np.int64))
