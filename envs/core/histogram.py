"""Latency histograms on log-spaced bins, and their quantiles.

An env that reports p50/p99 latencies over an episode of many requests keeps
a count per bin (a B-first integer array) instead of every latency: bins
``LATENCY_BIN_RATIO`` apart put any quantile within about half a percent of
the exact one, at a fixed size per sub-env.
"""

from __future__ import annotations

import math

import numpy as np

LATENCY_BIN_RATIO = 1.01
"""Latency histograms use log-spaced bins this far apart (percentiles within ~0.5%)."""
LATENCY_MIN_S = 0.01
LATENCY_MAX_S = 1e4
NUM_LATENCY_BINS = math.ceil(math.log(LATENCY_MAX_S / LATENCY_MIN_S) / math.log(LATENCY_BIN_RATIO)) + 2
"""Bin 0 holds latencies below LATENCY_MIN_S, the last bin those above LATENCY_MAX_S."""


def latency_bins(latency_s: np.ndarray) -> np.ndarray:
    """Histogram bin of each latency (log-spaced; 0 below LATENCY_MIN_S, the last bin above LATENCY_MAX_S)."""
    x = np.maximum(np.asarray(latency_s, np.float64), 1e-12)
    k = np.floor(np.log(x / LATENCY_MIN_S) / math.log(LATENCY_BIN_RATIO)).astype(np.int64) + 1
    return np.clip(k, 0, NUM_LATENCY_BINS - 1)


def bin_edges() -> np.ndarray:
    """(NUM_LATENCY_BINS + 1,) lower edges of the latency bins, s (bin 0 starts at 0)."""
    inner = LATENCY_MIN_S * LATENCY_BIN_RATIO ** np.arange(NUM_LATENCY_BINS)
    return np.concatenate([[0.0], inner])


def histogram_quantile(hist: np.ndarray, q: float) -> np.ndarray:
    """Quantile q of each row of latency histograms (k, bins), geometric interpolation within a bin; NaN if empty."""
    edges = bin_edges()
    counts = hist.astype(np.float64)
    total = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    target = q * total
    k = np.argmax(cum >= target[:, None], axis=1)
    below = np.where(k > 0, cum[np.arange(len(k)), k - 1], 0.0)
    inside = counts[np.arange(len(k)), k]
    frac = np.divide(target - below, inside, out=np.zeros_like(target), where=inside > 0)
    lo = np.maximum(edges[k], LATENCY_MIN_S / LATENCY_BIN_RATIO)
    hi = edges[k + 1]
    value = lo * (hi / lo) ** np.clip(frac, 0.0, 1.0)
    return np.where(total > 0, value, np.nan)
