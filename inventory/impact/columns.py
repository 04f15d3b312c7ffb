"""A column of strings for the in-memory graph: one per asset, shared between processes.

100k natural keys and names as Python ``str`` objects cost about 20 MB in every
process that holds the graph, and every gunicorn worker holds it.  A graph
opened from its on-disk snapshot (``inventory.impact.snapshot``) keeps them as
one memory-mapped UTF-8 buffer and its offsets instead, shared by every process
that maps the file; strings are decoded when read.  A graph loaded from the
database keeps the Python list it read (no encoding on the way in).  Either way
a patch (``inventory.impact.changes``) never copies the whole column: changed
and appended strings go in a small overlay.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np


class StringColumn(Sequence[str]):
    """``n`` strings: a Python list, or a UTF-8 buffer with offsets (``offsets[i]:offsets[i+1]``),
    with an overlay of replaced or appended strings on top."""

    __slots__ = ("_list", "_offsets", "_blob", "_base_n", "_overlay", "_n")

    def __init__(self, values: list[str] | None = None, *, offsets: np.ndarray | None = None,
                 blob: np.ndarray | None = None, overlay: dict[int, str] | None = None,
                 n: int | None = None) -> None:
        self._list = values
        if values is not None:
            self._base_n = len(values)
            self._offsets = self._blob = None
        else:
            assert offsets is not None and blob is not None
            self._base_n = int(offsets.size) - 1
            # memoryviews: indexing gives Python ints and slicing costs no copy.
            self._offsets = memoryview(np.ascontiguousarray(offsets, dtype=np.int64)).cast("B").cast("q")
            self._blob = memoryview(np.ascontiguousarray(blob, dtype=np.uint8)).cast("B")
        self._overlay = overlay or {}
        self._n = self._base_n if n is None else n

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if i < 0:
            i += self._n
        if self._overlay:
            found = self._overlay.get(i)
            if found is not None:
                return found
        if not 0 <= i < self._base_n:
            raise IndexError(i)
        if self._list is not None:
            return self._list[i]
        return str(self._blob[self._offsets[i]:self._offsets[i + 1]], "utf-8")  # type: ignore[index]

    def __iter__(self) -> Iterator[str]:
        for i in range(self._n):
            yield self[i]

    def take(self, idx: Iterable[int]) -> list[str]:
        """The strings at ``idx`` (a list of non-negative indices), in that order."""
        overlay = self._overlay
        if overlay:
            idx = list(idx)
            if max(idx, default=0) >= self._n:
                raise IndexError(max(idx))
            base_n = self._base_n
            base = self._take_base([i if i < base_n else 0 for i in idx]) if base_n else [""] * len(idx)
            get = overlay.get
            return [get(i, value) for i, value in zip(idx, base)]   # appended ones are all in the overlay
        return self._take_base(idx)

    def _take_base(self, idx: Iterable[int]) -> list[str]:
        if self._list is not None:
            values = self._list
            return [values[i] for i in idx]
        blob, offsets = self._blob, self._offsets
        return [str(blob[offsets[i]:offsets[i + 1]], "utf-8") for i in idx]  # type: ignore[index]

    def tolist(self) -> list[str]:
        return self.take(range(self._n))

    # ------------------------------------------------------------ changing (a new column)

    def patched(self, changes: dict[int, str], n: int) -> "StringColumn":
        """A new column of ``n`` strings: this one with ``changes`` (index -> string; indices
        from ``len(self)`` on are appended).  This column is left as it was."""
        overlay = {**self._overlay, **changes} if self._overlay else dict(changes)
        if self._list is not None and len(overlay) * 8 > self._base_n:
            # Mostly changed: a plain list again.
            values = self.tolist() + [""] * (n - self._n)
            for i, value in changes.items():
                values[i] = value
            return StringColumn(values)
        column = StringColumn.__new__(StringColumn)
        column._list, column._offsets, column._blob = self._list, self._offsets, self._blob
        column._base_n, column._overlay, column._n = self._base_n, overlay, n
        return column

    # ------------------------------------------------------------ storing

    def encoded(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets int64[n+1], UTF-8 bytes as uint8) for the snapshot."""
        if self._list is None and not self._overlay and self._n == self._base_n:
            return (np.frombuffer(self._offsets, dtype=np.int64).copy(),  # type: ignore[arg-type]
                    np.frombuffer(self._blob, dtype=np.uint8))  # type: ignore[arg-type]
        data = [s.encode("utf-8") for s in self]
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)), out=offsets[1:])
        return offsets, np.frombuffer(b"".join(data), dtype=np.uint8)

    @classmethod
    def decoded(cls, offsets: np.ndarray, blob: np.ndarray) -> "StringColumn":
        return cls(offsets=offsets, blob=blob)


def as_column(values: Sequence[str]) -> StringColumn:
    return values if isinstance(values, StringColumn) else StringColumn(list(values))
