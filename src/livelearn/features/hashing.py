"""Feature hashing: named feature values -> buckets of a fixed-size weight table.

A string (or bool) value is one-hot: bucket of ``"name=value"``, value 1.0. A
number passes through: bucket of ``"name"``, the number as value. Every row also
gets a bias bucket. Hashes are CRC-32, stable across processes and machines.

>>> batch = hash_rows([{"topic": "sports", "age_h": 2.0}], bits=18)
>>> len(batch), len(batch.indices)
(1, 3)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from livelearn.features.batch import SparseBatch

FeatureValue = str | int | float | bool
Features = Mapping[str, FeatureValue]

BIAS = "__bias__"


def bucket(token: str, bits: int) -> int:
    """The bucket of one token, in [0, 2**bits)."""
    return zlib.crc32(token.encode()) & ((1 << bits) - 1)


def hash_rows(rows: Sequence[Features], bits: int) -> SparseBatch:
    """Hash feature dicts into a SparseBatch (a bias bucket first in every row)."""
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
                indices.append(crc(f"{name}={value}".encode()) & mask)
                values.append(1.0)
            else:
                indices.append(crc(name.encode()) & mask)
                values.append(float(value))
        offsets.append(len(indices))
    return SparseBatch(np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.float64),
                       np.asarray(offsets, dtype=np.int64))
