"""Shared numerics of the env library: normal distribution, counter-based hashing, "never".

A leaf module (numpy only, nothing of cloudgym), so that generators, the
core and the envs use one copy of each.
"""

from __future__ import annotations

import math

import numpy as np

NEVER = np.int64(2**62)
"""A step index that never comes (far beyond any horizon, and safe to add small offsets to in int64)."""


# ----------------------------------------------------------------------------- the normal distribution


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, absolute error < 1.5e-7), vectorised."""
    x = np.abs(np.asarray(z, np.float64)) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def normal_cdf_fast(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF by the tanh approximation (error below 2e-4), cheaper than :func:`normal_cdf`.

    The VM generator maps normal draws onto published quantile tables with it: an error of 2e-4 in
    probability is far below those tables' resolution. (Replacing it by :func:`normal_cdf` would
    change every Oversubscription-v0 instance.)
    """
    return 0.5 * (1.0 + np.tanh(0.7978845608 * (z + 0.044715 * z**3)))


def normal_ppf(u: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9), vectorised."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    p = np.clip(np.asarray(u, np.float64), 1e-300, 1 - 1e-16)
    out = np.empty_like(p)
    low, high = p < 0.02425, p > 1 - 0.02425
    mid = ~(low | high)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    for sel, sign, tail in ((low, 1.0, p[low]), (high, -1.0, 1 - p[high])):
        q = np.sqrt(-2 * np.log(tail))
        out[sel] = (
            sign
            * (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
            / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        )
    return out


# ----------------------------------------------------------------------------- counter-based hashing
# Pure functions of a counter: a draw depends on (key, step) alone, not on which other items are computed
# with it. Two widths: 32-bit where 16- and 12-bit fields suffice (VM utilisation, the hot loop), 64-bit
# where two 32-bit uniforms come out of one hash (FaaS events).

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def hash32(x: np.ndarray) -> np.ndarray:
    """A fast 32-bit integer hash (lowbias32, C. Wellons): uniform bits from a counter, elementwise."""
    x = x ^ (x >> np.uint32(16))
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def hash32_in_place(x: np.ndarray, scratch: np.ndarray) -> None:
    """:func:`hash32` without allocating (``scratch`` is overwritten)."""
    np.right_shift(x, np.uint32(16), out=scratch)
    x ^= scratch
    x *= np.uint32(0x7FEB352D)
    np.right_shift(x, np.uint32(15), out=scratch)
    x ^= scratch
    x *= np.uint32(0x846CA68B)
    np.right_shift(x, np.uint32(16), out=scratch)
    x ^= scratch


def mix64_in_place(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array, in place (a bijection whose outputs look independent)."""
    np.bitwise_xor(x, x >> np.uint64(30), out=x)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x
