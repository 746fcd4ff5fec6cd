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

    def take(self, rows: np.ndarray) -> SparseBatch:
        """The rows numbered ``rows``, in that order, as a batch of their own.

        >>> b = SparseBatch(np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]), np.array([0, 1, 3]))
        >>> t = b.take(np.array([1, 0]))
        >>> t.indices.tolist(), t.offsets.tolist()
        ([2, 3, 1], [0, 2, 3])
        """
        starts, lengths = self.offsets[rows], np.diff(self.offsets)[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        at = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        fields = None if self.fields is None else self.fields[at]
        return SparseBatch(self.indices[at], self.values[at], offsets, fields)

    def merge(self, other: SparseBatch) -> SparseBatch:
        """Each row joined with ``other``'s row of the same number, its features in
        field order (this batch's first where fields are equal). Both have fields."""
        assert self.fields is not None and other.fields is not None
        rows = np.concatenate([np.repeat(np.arange(len(self)), np.diff(self.offsets)),
                               np.repeat(np.arange(len(other)), np.diff(other.offsets))])
        fields = np.concatenate([self.fields, other.fields])
        order = np.lexsort((fields, rows))
        return SparseBatch(np.concatenate([self.indices, other.indices])[order],
                           np.concatenate([self.values, other.values])[order],
                           self.offsets + other.offsets, fields[order])

    def replace_rows(self, rows: list[int], fixed: SparseBatch) -> SparseBatch:
        """This batch with ``rows`` (increasing) replaced by the rows of ``fixed``, in order."""
        lengths = np.diff(self.offsets)
        lengths[rows] = np.diff(fixed.offsets)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        kept = np.setdiff1d(np.arange(len(self)), rows)
        old, new, redone = (positions(self.offsets, kept), positions(offsets, kept),
                            positions(offsets, np.array(rows, dtype=np.int64)))
        names = ("indices", "values") + (("fields",) if self.fields is not None else ())
        arrays = []
        for name in names:
            mine, theirs = getattr(self, name), getattr(fixed, name)
            out = np.empty(offsets[-1], dtype=mine.dtype)
            out[new], out[redone] = mine[old], theirs
            arrays.append(out)
        return SparseBatch(arrays[0], arrays[1], offsets, arrays[2] if len(arrays) > 2 else None)


def concat(batches: list[SparseBatch]) -> SparseBatch:
    """The rows of ``batches``, one after the other (fields kept if every batch has them)."""
    if len(batches) == 1:
        return batches[0]
    starts = np.cumsum([0] + [b.offsets[-1] for b in batches[:-1]])
    offsets = np.concatenate([[0]] + [b.offsets[1:] + s for b, s in zip(batches, starts,
                                                                         strict=True)])
    fields = (np.concatenate([b.fields for b in batches])  # type: ignore[misc]
              if all(b.fields is not None for b in batches) else None)
    return SparseBatch(np.concatenate([b.indices for b in batches]),
                       np.concatenate([b.values for b in batches]), offsets.astype(np.int64),
                       fields)


def positions(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The positions in the flat arrays of the items of ``rows``, in order."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    firsts = np.cumsum(lengths) - lengths
    return np.repeat(starts - firsts, lengths) + np.arange(lengths.sum())
