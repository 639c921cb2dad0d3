"""Per-app histograms of idle times, batched: the statistics FaaSKeepAlive-v0 keeps for its observation.

After Shahrad et al. (ATC 2020, section 4.2): the idle time that ends with an
invocation (whole minutes since the last execution ended) goes into the app's
histogram of 1-minute bins up to a range, beyond it into an out-of-bound
(OOB) counter. The hybrid policy reads the histogram's head and tail
percentiles, its coefficient of variation and its OOB share; this module
keeps them up to date in O(1) per recorded idle time. Its own module rather
than a part of :mod:`cloudgym.envs.workloads.faas` (already ~1,000 lines of
generators and trace loaders): the histogram describes what an app did, not
how its invocations are made.
"""

from __future__ import annotations

import dataclasses

import numpy as np

QUANTILES_PCT = (5, 99)
"""Percentiles of the idle-time histogram that are tracked (the hybrid policy's head and tail)."""

_ALL = slice(None)


@dataclasses.dataclass
class IdleTimeHistogram:
    """Per-app histograms of idle times (1-minute bins 1..R, plus an OOB counter), batched.

    Adding an idle time is O(1) per app: the bin count, the sum of squared
    bin counts (for the CV) and, for the head (5th) and tail (99th)
    percentiles, the bin and the cumulative counts through it and below it
    are updated in place (so whether the percentile moved is known without
    reading the row's bins); a percentile is recomputed from its row only
    when the insertion moves it. The percentiles are nearest-rank: the smallest bin whose
    cumulative count reaches ceil(p/100 x n) (integer arithmetic, no rounding
    surprises). Trackers are separate 1-D arrays: gathering rows of 1-D
    arrays is several times faster in numpy than gathering rows of (B, 2).
    Bin counts are uint16: a bin holds at most one idle time per minute
    lived, and an app lives fewer than 65536 minutes (FaaSKeepAlive-v0: at most 28 days).
    """

    counts: np.ndarray  # (..., R) uint16, idle times per bin (bin j holds idle time j+1 minutes)
    n_in: np.ndarray  # (...,) int64, idle times within range
    n_oob: np.ndarray  # (...,) int64, idle times beyond the range
    sq_sum: np.ndarray  # (...,) int64, sum over bins of count^2
    head_bin: np.ndarray  # (...,) int64, bin of the 5th percentile
    head_cum: np.ndarray  # (...,) int64, cumulative count through head_bin
    head_below: np.ndarray  # (...,) int64, cumulative count below head_bin (through head_bin - 1)
    tail_bin: np.ndarray  # (...,) int64, bin of the 99th percentile
    tail_cum: np.ndarray  # (...,) int64, cumulative count through tail_bin
    tail_below: np.ndarray  # (...,) int64, cumulative count below tail_bin

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], range_min: int) -> IdleTimeHistogram:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)

        def zeros() -> np.ndarray:
            return np.zeros(shape, np.int64)

        return cls(
            counts=np.zeros((*shape, range_min), np.uint16),
            n_in=zeros(),
            n_oob=zeros(),
            sq_sum=zeros(),
            head_bin=zeros(),
            head_cum=zeros(),
            head_below=zeros(),
            tail_bin=zeros(),
            tail_cum=zeros(),
            tail_below=zeros(),
        )

    @property
    def range_min(self) -> int:
        return self.counts.shape[-1]

    def _trackers(self) -> tuple[tuple[int, np.ndarray, np.ndarray, np.ndarray], ...]:
        return (
            (QUANTILES_PCT[0], self.head_bin, self.head_cum, self.head_below),
            (QUANTILES_PCT[1], self.tail_bin, self.tail_cum, self.tail_below),
        )

    def add(self, rows: np.ndarray, idle_min: np.ndarray) -> None:
        """Record idle time ``idle_min[j]`` (whole minutes >= 1) for app ``rows[j]`` (distinct rows of a flat view)."""
        if rows.size == 0:
            return
        width = self.range_min
        oob = idle_min > width
        if oob.any():
            self.n_oob[rows[oob]] += 1
            rows, idle_min = rows[~oob], idle_min[~oob]
            if rows.size == 0:
                return
        # Flat indices into the (N, R) counts: one gather and one scatter instead of 2-D fancy indexing.
        flat = self.counts.reshape(-1)
        base = rows * width
        b = idle_min - 1
        cell = base + b
        c = flat[cell]
        flat[cell] = c + 1
        self.sq_sum[rows] += 2 * c.astype(np.int64) + 1
        n = self.n_in[rows] + 1
        self.n_in[rows] = n
        stale = n == 1
        for pct, bins, cums, belows in self._trackers():
            # The percentile stays in its bin iff the count through the bin reaches the target and the count
            # below it does not.
            q_bin = bins[rows]
            q_cum = cums[rows] + (b <= q_bin)
            cums[rows] = q_cum
            q_below = belows[rows] + (b < q_bin)
            belows[rows] = q_below
            target = (pct * n + 99) // 100
            stale |= q_cum < target
            stale |= q_below >= target
        if stale.any():
            self._recompute(rows[stale])

    def _recompute(self, rows: np.ndarray) -> None:
        cum = np.cumsum(self.counts[rows], axis=1, dtype=np.int64)
        n = self.n_in[rows]
        at = np.arange(rows.size)
        for pct, bins, cums, belows in self._trackers():
            target = (pct * n + 99) // 100
            q_bin = np.argmax(cum >= target[:, None], axis=1)
            bins[rows] = q_bin
            cums[rows] = cum[at, q_bin]
            belows[rows] = np.where(q_bin > 0, cum[at, np.maximum(q_bin - 1, 0)], 0)

    def around(self, rows: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(in_range, at, shorter) of rows ``rows`` at idle ages ``age`` (whole minutes, one per row).

        ``in_range``: 1 <= age <= R; ``at``: idle times recorded equal to the
        age; ``shorter``: in-range idle times recorded shorter than it (both 0
        out of range). From the rows' bins: a cumulative sum per row.
        """
        width = self.range_min
        age_m1 = age - 1
        in_range = (age_m1 >= 0) & (age_m1 < width)
        cum = np.cumsum(self.counts[rows], axis=1, dtype=np.int64)
        bins = np.clip(age_m1, 0, width - 1)
        at = np.arange(rows.size)
        through = cum[at, bins]
        at_age = np.where(in_range, through - cum[at, np.maximum(bins - 1, 0)] * (bins > 0), 0)
        shorter = np.where(in_range & (bins > 0), cum[at, np.maximum(bins - 1, 0)], 0)
        return in_range, at_age, shorter

    def percentile_minutes(self, q: int, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        """Head (q=0: 5th) or tail (q=1: 99th) percentile in minutes, 0 where the histogram is empty."""
        bins = self.head_bin if q == 0 else self.tail_bin
        return self.percentile_minutes_of(self.n_in[rows], bins[rows])

    @staticmethod
    def percentile_minutes_of(n_in: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """:meth:`percentile_minutes` from rows' ``n_in`` and percentile bins, already gathered."""
        return np.where(n_in > 0, bins + 1, 0)

    def cv(self, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        """Coefficient of variation of the R bin counts (0 where empty)."""
        return self.cv_of(self.n_in[rows], self.sq_sum[rows])

    def cv_of(self, n_in: np.ndarray, sq_sum: np.ndarray) -> np.ndarray:
        """:meth:`cv` from rows' ``n_in`` and ``sq_sum``, already gathered."""
        r = self.range_min
        n = n_in.astype(np.float64)
        mean = n / r
        sd = sq_sum / r
        sd -= mean * mean
        np.maximum(sd, 0.0, out=sd)
        np.sqrt(sd, out=sd)  # 0 where the histogram is empty (n = sq_sum = 0)
        return np.divide(sd, mean, out=sd, where=n > 0)

    def oob_share(self, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        total = self.n_in[rows] + self.n_oob[rows]
        return np.where(total > 0, self.n_oob[rows] / np.maximum(total, 1), 0.0)
