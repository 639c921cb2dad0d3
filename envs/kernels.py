"""Compiled kernels (numba) beside their numpy references: the switch, and numpy's summation order.

Where a numpy step is dominated by many small calls (a rank-by-rank
allocator, a per-tick loop), a module keeps its numpy implementation as the
slow, obvious reference and adds a numba kernel that computes the same
numbers bit for bit. :func:`enabled` chooses between them at call time:

* ``CLOUDGYM_KERNELS=numpy`` in the environment (read at import) runs the
  numpy references everywhere; ``numba`` (the default) runs the kernels;
* tests switch in-process with :func:`numpy_reference`.

Kernels are compiled on first use and cached on disk (``cache=True``), so
only the first process after an install pays for compilation.

A kernel that reproduces a numpy reduction must add in numpy's order:
``np.add.reduce`` over a contiguous axis sums pairwise
(:func:`numpy_sum`), not left to right. A leaf module like ``numerics``:
it imports nothing of cloudgym.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numba
import numpy as np

CHOICES = ("numba", "numpy")
"""Values of the ``CLOUDGYM_KERNELS`` environment variable."""


def _from_environment() -> bool:
    value = os.environ.get("CLOUDGYM_KERNELS", "numba").strip().lower()
    if value not in CHOICES:
        raise ValueError(f"CLOUDGYM_KERNELS must be one of {', '.join(CHOICES)}, got {value!r}")
    return value == "numba"


_enabled = _from_environment()


def enabled() -> bool:
    """Whether the compiled kernels run (else the numpy references)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Run the compiled kernels (True) or the numpy references (False) from now on, in this process."""
    global _enabled
    _enabled = bool(on)


@contextlib.contextmanager
def numpy_reference() -> Iterator[None]:
    """Run the numpy references inside the block (tests compare them with the kernels)."""
    before = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)


jit = numba.njit(cache=True, nogil=True)
"""The decorator of every kernel: compiled in nopython mode, cached on disk, no fastmath (bit-identical floats)."""


@jit
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """numpy's sum of up to 128 items: left to right below 8, else eight interleaved partial sums."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit
def numpy_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """Sum of the float64 ``a[lo:lo + n]`` in numpy's pairwise order (what ``a.sum()`` returns, bit for bit).

    numpy adds fewer than 8 items left to right from 0.0, up to 128 in eight
    interleaved partial sums, and more as the sum of two halves split at a
    multiple of 8. The halving is walked with an explicit stack (numba's
    recursion does not survive its on-disk cache).
    """
    if n <= 128:
        return _block_sum(a, lo, n)
    depth = 64
    frame_lo = np.empty(depth, np.int64)
    frame_n = np.empty(depth, np.int64)
    stage = np.empty(depth, np.int64)
    left = np.empty(depth)
    top = 0
    frame_lo[0], frame_n[0], stage[0] = lo, n, 0
    ret = 0.0
    while top >= 0:
        f_lo, f_n = frame_lo[top], frame_n[top]
        if f_n <= 128:
            ret = _block_sum(a, f_lo, f_n)
            top -= 1
            continue
        half = f_n // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            top += 1
            frame_lo[top], frame_n[top], stage[top] = f_lo, half, 0
        elif stage[top] == 1:
            left[top] = ret
            stage[top] = 2
            top += 1
            frame_lo[top], frame_n[top], stage[top] = f_lo + half, f_n - half, 0
        else:
            ret = left[top] + ret
            top -= 1
    return ret
