"""SparseBatch: the rows a learner sees, hashed into a compressed sparse row layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseBatch:
    """Row r has features ``indices[offsets[r]:offsets[r+1]]`` with those ``values``.

    ``indices`` are int64 buckets in [0, 2**bits), ``values`` float64, ``offsets``
    int64 of length rows + 1. ``fields`` (optional, int32, same length as
    ``indices``) names each feature's field for field-aware models.
    """

    indices: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    fields: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def slice(self, start: int, stop: int) -> SparseBatch:
        """Rows [start, stop) as a batch of their own."""
        lo, hi = self.offsets[start], self.offsets[stop]
        fields = None if self.fields is None else self.fields[lo:hi]
        return SparseBatch(self.indices[lo:hi], self.values[lo:hi],
                           self.offsets[start:stop + 1] - lo, fields)
