"""Paired statistics for comparing policies on the same held-out seeds.

Every comparison in compare.py is per seed: policy A and policy B ran the
same episode (same seed, same arrivals), so the per-seed difference removes
the episode-to-episode spread that dwarfs most policy differences. Three
numbers answer "does learning pay here?":

- :func:`paired_difference`: the mean of ``policy - reference`` over seeds
  with a 95% paired-t interval and the number of seeds the policy won;
- :func:`headroom_captured`: ``(policy - best heuristic) / (bound - best
  heuristic)`` on the headline metric, the share of the room between the
  best heuristic and a bound (a policy with hindsight) that the policy
  takes, with a 95% paired-bootstrap interval (resampling seeds, all three
  policies together, so the ratio keeps its pairing);
- :func:`sample_std`: the one spread convention (sample, ``ddof=1``) used by
  every table and log.

All functions take per-seed arrays in the same seed order and a direction
(``higher_is_better``); "better" and "won" follow it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 4000


def sample_std(values: ArrayLike) -> float:
    """Sample standard deviation (``ddof=1``); 0 for a single value, nan for none."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan
    return float(array.std(ddof=1)) if array.size > 1 else 0.0


def _t_quantile(dof: int) -> float:
    """Two-sided 95% Student-t quantile (scipy is a dependency of the report extra, not of the env library)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``policy - reference`` over paired seeds, in the metric's units."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    won: int
    """Seeds where the policy was strictly better (in the metric's direction)."""
    lost: int
    reference_mean: float

    @property
    def relative(self) -> float:
        """Mean difference / |reference mean| (nan when the reference mean is 0)."""
        return self.mean / abs(self.reference_mean) if self.reference_mean != 0 else math.nan

    @property
    def excludes_zero(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)


def _paired(policy: ArrayLike, reference: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(policy, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of one length, got shapes {p.shape} and {r.shape}")
    if p.size == 0:
        raise ValueError("paired values need at least one seed")
    return p, r


def paired_difference(policy: ArrayLike, reference: ArrayLike, *, higher_is_better: bool) -> PairedDifference:
    """Mean per-seed difference with a 95% paired-t interval (degenerate for one seed or zero spread)."""
    p, r = _paired(policy, reference)
    diff = p - r
    n = diff.size
    mean = float(diff.mean())
    if n > 1:
        half = _t_quantile(n - 1) * sample_std(diff) / math.sqrt(n)
    else:
        half = math.nan
    better = diff > 0 if higher_is_better else diff < 0
    worse = diff < 0 if higher_is_better else diff > 0
    return PairedDifference(
        n=n,
        mean=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        won=int(better.sum()),
        lost=int(worse.sum()),
        reference_mean=float(r.mean()),
    )


@dataclasses.dataclass(frozen=True)
class Headroom:
    """Share of the (bound - best heuristic) gap a policy captures; 1 = as good as the bound."""

    captured: float
    ci_low: float
    ci_high: float
    gap: float
    """mean(bound) - mean(best heuristic), signed so that positive means the bound is better."""

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.captured))


def headroom_captured(
    policy: ArrayLike,
    best_heuristic: ArrayLike,
    bound: ArrayLike,
    *,
    higher_is_better: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Headroom:
    """``(mean(policy) - mean(heuristic)) / (mean(bound) - mean(heuristic))`` with a paired bootstrap interval.

    The three arrays are per seed in one order. Undefined (nan) when the bound
    is not better than the heuristic on average: there is no room to capture.
    Bootstrap resamples whose gap is not positive count as undefined and are
    dropped from the interval, which is then nan if more than 5% of them were.
    """
    p, h = _paired(policy, best_heuristic)
    b, _ = _paired(bound, best_heuristic)
    sign = 1.0 if higher_is_better else -1.0
    gain, gap = sign * (p - h), sign * (b - h)
    mean_gap = float(gap.mean())
    if not mean_gap > 0:
        return Headroom(math.nan, math.nan, math.nan, mean_gap)
    captured = float(gain.mean()) / mean_gap
    if p.size < 2:
        return Headroom(captured, math.nan, math.nan, mean_gap)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, p.size, size=(resamples, p.size))
    gains, gaps = gain[picks].mean(axis=1), gap[picks].mean(axis=1)
    valid = gaps > 0
    if valid.mean() < 0.95:
        return Headroom(captured, math.nan, math.nan, mean_gap)
    ratios = gains[valid] / gaps[valid]
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Headroom(captured, float(low), float(high), mean_gap)
