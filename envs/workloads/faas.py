"""Serverless (FaaS) workloads: per-application invocation counts per minute, after Azure Functions.

Three sources produce the instances FaaSKeepAlive-v0 replays, one application
each:

* :func:`sample_app`: a synthetic application calibrated to the Azure
  Functions 2019 characterisation (Shahrad et al., "Serverless in the Wild",
  USENIX ATC 2020, section 3; the figures are in ``shared/DOMAIN.md``). It is
  *procedural*: an :class:`AppProcess` holds a handful of numbers per app and
  the counts of minute ``t`` are computed on the fly by :func:`process_counts`
  with counter-based randomness keyed on (app key, minute), so a 14-day,
  50,000-app replay never materialises its 10^9 (app, minute) cells.
* :func:`sample_toy_app`: a periodic timer app whose optimal keep-alive
  windows are known in closed form (tests).
* :func:`load_azure2019` and :func:`load_azure2021`: loaders for the two public
  Azure Functions trace formats, aggregated to applications and stored
  sparsely (:class:`AppTrace`); :meth:`AppTrace.dense_counts` cuts one app's
  minutes out for an episode.

Calibration of the generator (each a modelling choice fitted to a published
figure; ``tests/workloads/test_faas.py`` measures every one of them):

* Daily invocations per app: log10 ~ Normal(mu=-0.874, sigma=2.759) truncated
  to [0, 8] (1 to 10^8 a day: "8 orders of magnitude"). The two parameters
  solve P(<= 24/day) = 45% ("at most once per hour") and P(<= 1440/day) =
  81% ("at most once per minute"); the top 18.6% of apps then carry 99.9% of
  invocations (paper: 99.6%).
* Trigger combination of the app: Figure 3(b)'s 13 combinations at their
  ATC shares (H 43.27%, T 13.36%, Q 9.47%, ...), the remaining 9.6% spread
  equally over 12 other combinations (:data:`~cloudgym.envs.workloads.faas_targets.OTHER_COMBINATIONS`,
  ours). Functions per app: 1: 54%, 2: 16%, 3: 10%, 4-5: 8%, 6-10: 7%,
  11-30: 5% (Figure 1); every 1-function app has a single trigger (so
  P(1 function | one trigger) = 0.54 / 0.75), every app at least one
  function per trigger of its combination, the other functions' triggers
  drawn within the combination by Figure 2's shares of functions.
* Inter-arrival regularity (Figure 6): an app's invocations, all functions
  pooled, are one renewal stream of invoked minutes whose CV is drawn from
  the Figure 6 curve of the app's class: "no timers", "only timers", or
  timer plus another trigger (that curve solved from "at least one timer"
  and "only timers" with Figure 3's shares). The CV's quantile is
  rank-correlated with the rate's (Gaussian copula, :data:`CV_RATE_CORRELATION`)
  and capped so that at least :data:`MIN_BURSTS_PER_HORIZON` bursts fit in
  14 days: rare apps cannot show high CVs. Intervals are
  1 + (M - 1) x factor minutes (mean M = 1 / P(invoked minute)): up to CV
  (M - 1) / M a jittered period (a share of exponential), above it bursts
  of consecutive minutes separated by exponential silences
  (:func:`renewal_shape`). CV 0: timer-only apps fire every timer function at
  the cron period (1, 2, 5, 10, 15, 30 min, 1, 2, 3, 4, 6, 12, 24 h) nearest
  their rate; other CV-0 apps invoke every M whole minutes. An invoked
  minute holds a zero-truncated Poisson count whose mean keeps the app's
  daily invocations. ``python -m cloudgym.envs.workloads.faas_calibration``
  prints every statistic beside its target.
* Diurnal cycle: the count of an invoked minute has mean rate x (1 + a
  sin(2 pi (t + phase) / 1440)), a ~ U(0, 2/3), phase within +-2 h of a
  common clock: fleet load swings over a base of about half the peak.
* Mean execution time: lognormal(mu=-0.38, sigma=2.36) s, capped at 600 s
  (the Consumption plan's limit); an execution occupies ceil(duration / 60)
  minutes.
* Memory: Burr XII(c=11.652, k=0.221, scale=107.083 MB), capped at 1536 MB
  (the Consumption plan's limit): 90% of apps under 400 MB.

FaaSKeepAlive-v0 gets its episodes from one of three generators, chosen
once from its config, each making a sub-env's fleet of K apps
(:class:`AppFleet`) from the sub-env's rng: :class:`SyntheticFleetGenerator`,
:class:`ToyTimerFleetGenerator` and :class:`TraceFleetGenerator`. Each also
makes the batched :class:`InvocationSource` that replays its fleets
(:class:`ProcessArrays` for synthetic apps, :class:`CountTable` for the
others), so the env steps every kind through the same three calls.

The trace loaders never guess: a malformed row raises a :class:`TraceFormatError`
naming the file, the line and the problem; apps without a memory or duration
record get the population median, and the trace says which ones
(``memory_imputed``, ``duration_imputed``).
"""

from __future__ import annotations

import array
import dataclasses
import math
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from cloudgym.envs.numerics import mix64_in_place, normal_ppf
from cloudgym.envs.workloads.faas_targets import (
    FIG2_FUNCTIONS_PCT,
    FIG3B_COMBINATIONS_PCT,
    FIG6_ATC,
    FIG6_CV_POINTS,
    OTHER_COMBINATIONS,
    mixed_timer_curve,
)
from cloudgym.envs.workloads.traces import (
    MAX_TRACE_SECONDS,
    TraceCache,
    TraceFormatError,
    csv_rows,
    find_trace,
    parse_float,
)

MINUTES_PER_DAY = 1440

# ----------------------------------------------------------------------------- triggers

TRIGGERS = ("http", "queue", "timer", "orchestration", "storage", "event", "others")
"""Trigger names as the 2019 trace spells them (column ``Trigger``)."""
TRIGGER_SHARES = (0.55, 0.15, 0.156, 0.07, 0.03, 0.02, 0.024)
"""Share of functions per trigger (paper, Figure 3(a)); 'others' takes the remainder."""
TRIGGER_GROUPS = ("http", "timer", "queue_like", "other")
"""The four trigger groups an app is described by (observation features)."""
_GROUP_OF = {
    "http": 0,
    "timer": 1,
    "queue": 2,
    "storage": 2,
    "event": 2,
    "orchestration": 3,
    "others": 3,
}

FUNCTIONS_PER_APP = ((1, 1, 0.54), (2, 2, 0.16), (3, 3, 0.10), (4, 5, 0.08), (6, 10, 0.07), (11, 30, 0.05))
"""(low, high, share): functions per app (paper, Figure 2(a)); uniform within a band."""

TIMER_PERIODS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440)
"""Cron-like timer periods, minutes."""

DAILY_LOG10_MU = -0.874
DAILY_LOG10_SIGMA = 2.759
DAILY_LOG10_RANGE = (0.0, 8.0)
"""Truncated normal of log10(daily invocations per app); see the module docstring."""

DURATION_LOG_MU = -0.38
DURATION_LOG_SIGMA = 2.36
MAX_DURATION_S = 600.0
BURR_C, BURR_K, BURR_SCALE_MB = 11.652, 0.221, 107.083
MAX_MEMORY_MB = 1536.0

CV_TAIL_MAX = 30.0
"""Largest designed inter-arrival CV: Figure 6 stops at CV 10 with 3-9% of apps beyond; their CVs are drawn
log-uniform in [10, CV_TAIL_MAX] (our choice: a 14-day app has a few thousand gaps at most)."""
LONG_GAPS_PER_HORIZON = 100.0
"""A stream with CV > 0 draws its mean interval so that at least this many long gaps fall in
:data:`CALIBRATION_HORIZON_MIN` on average: a busy app (invoked nearly every minute) is made of bursts of
consecutive minutes separated by silences, not an app that is never silent (whose CV would be 0)."""
CALIBRATION_HORIZON_MIN = 14 * 1440
"""The horizon of the published statistics (the 2019 trace's 14 days), minutes."""
CV_RATE_CORRELATION = 0.5
"""Gaussian-copula correlation between an app's rate quantile and its CV quantile (our choice). Figure 6's CVs
are realised ones: an app invoked a few times in 14 days cannot show a high CV (with g gaps the CV is at most
about sqrt(g)), so high CVs belong to apps busy enough to have bursts and silences. The copula keeps each
class's CV distribution as drawn and only moves high CVs to busier apps."""
MIN_BURSTS_PER_HORIZON = 3.0
"""A designed CV is capped at sqrt(2 x invoked minutes / this): at least this many bursts of about CV^2 / 2
consecutive minutes fit in the horizon (else the app's few invocations would form one burst and a CV of 0)."""
CLASS_NO_TIMER, CLASS_TIMER_ONLY, CLASS_MIXED_TIMER = 0, 1, 2
"""The app classes whose CV is drawn from a Figure 6 curve: no timer, timer only, timer and another trigger."""
CLASS_NAMES = ("no_timer", "timer_only", "mixed_timer")
DIURNAL_MAX_AMPLITUDE = 2.0 / 3.0
DIURNAL_PHASE_JITTER_MIN = 120


# ----------------------------------------------------------------------------- counter-based randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAMS = np.array([(j * 0xD1B54A32D192ED03) % 2**64 for j in range(3)], np.uint64)
_LOW32 = np.uint64(0xFFFFFFFF)
_U32 = 1.0 / 4294967296.0
EVENT_UNIFORMS = 6
"""Uniforms per (app, minute) of :func:`event_uniforms`: switch wait, on-wait, accept, count, next wait, client."""
START_MINUTE = np.uint64(2**63 + 0x5EED)
"""The counter of an app's start draws (never a real minute)."""


def event_uniforms(key: np.ndarray, minute: np.ndarray | int, pair: int | Sequence[int] | None = None) -> np.ndarray:
    """(EVENT_UNIFORMS, A) independent uniforms in (0, 1) (float64, 32-bit) for each app's minute ``minute``.

    A pure function of (key, minute) (counter-based randomness): an app's draws
    do not depend on which other apps are computed with it, nor on the minutes
    in which it had nothing to do. ``pair=j`` computes only uniforms 2j and
    2j + 1 (one hash), returned as (2, A); ``pair=(j, l)`` pairs j and l, as (4, A).
    ``minute`` is one minute for every app or one per app.
    """
    base = key + np.asarray(minute).astype(np.uint64) * _GOLDEN
    pairs = range(EVENT_UNIFORMS // 2) if pair is None else (pair,) if isinstance(pair, int) else tuple(pair)
    out = np.empty((2 * len(pairs), key.size))
    for i, j in enumerate(pairs):
        h = base + _STREAMS[j]
        h = mix64_in_place(h)
        np.right_shift(h, np.uint64(32), out=out[2 * i], casting="unsafe")
        np.bitwise_and(h, _LOW32, out=out[2 * i + 1], casting="unsafe")
    out += 0.5
    out *= _U32
    return out


SMALL_POISSON_MEAN = 8.0
"""Below this mean a Poisson count is drawn by exact inversion; above, by a normal approximation."""


POISSON_BLOCK_TERMS = 8
"""Terms of the chop-down search computed per round for all unfinished draws at once (a few hundred KB at most)."""
_MAX_POISSON_COUNT = 200
"""The chop-down search stops here (a u within rounding of 1; far in the tail of every small mean)."""
_DIVISORS = np.arange(_MAX_POISSON_COUNT + 1, dtype=np.float64)[:, None]


def zero_truncated_poisson(mean: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson(mean) conditioned on >= 1, by inversion of one uniform each (int64 >= 1; mean > 0).

    Means below :data:`SMALL_POISSON_MEAN` invert the exact CDF; larger means
    use the normal approximation of the untruncated law (at least 1), whose
    error only moves the number of warm invocations of an invoked minute.

    The exact inversion is the chop-down search: terms p_1 = mean / expm1(mean),
    p_k = p_(k-1) x (mean / k); the count is the first k whose running sum
    p_1 + ... + p_k exceeds u (at most 200). It runs in rounds over the
    unfinished draws, each round computing the next :data:`POISSON_BLOCK_TERMS`
    terms of all of them at once, term by term with the same floating-point
    operations in the same order as the one-term-at-a-time search (the
    counts are identical; tested), in far fewer numpy calls.
    """
    counts = np.ones(mean.shape, np.int64)
    small = mean < SMALL_POISSON_MEAN
    idx = np.flatnonzero(small)
    if idx.size:
        lam, uu = mean[idx], u[idx]
        p = lam / np.expm1(lam)  # P(K = 1 | K >= 1)
        cdf = p.copy()
        k = 1
        while True:
            going = uu >= cdf  # the count is beyond k
            if k >= _MAX_POISSON_COUNT or not going.any():
                break
            if not going.all():
                idx, lam, uu, p, cdf = idx[going], lam[going], uu[going], p[going], cdf[going]
            n_terms = min(POISSON_BLOCK_TERMS, _MAX_POISSON_COUNT - k)
            terms = np.divide(lam, _DIVISORS[k + 1 : k + 1 + n_terms])  # mean / j, made p_j below
            sums = np.empty_like(terms)
            terms[0] *= p
            np.add(cdf, terms[0], out=sums[0])
            for j in range(1, n_terms):
                terms[j] *= terms[j - 1]
                np.add(sums[j - 1], terms[j], out=sums[j])
            # The running sums rise with j (the terms are >= 0): the count is k + 1 + the number of sums <= u.
            counts[idx] = np.minimum(k + 1 + np.count_nonzero(sums <= uu, axis=0), _MAX_POISSON_COUNT)
            k += n_terms
            p, cdf = terms[-1], sums[-1]
    idx = np.flatnonzero(~small)
    if idx.size:
        lam = mean[idx]
        p0 = np.exp(-lam)
        z = normal_ppf(p0 + u[idx] * (1.0 - p0))
        counts[idx] = np.maximum(1, np.floor(lam + np.sqrt(lam) * z + 0.5)).astype(np.int64)
    return counts


# ----------------------------------------------------------------------------- synthetic apps


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppProcess:
    """Compact parameters of one synthetic app: its invocation process and resources."""

    key: int
    """64-bit key of the app's counter-based random stream."""
    rate_on: float
    """Poisson rate of a hand-made app's stream while its burst chain is on, invocations/min (before diurnal;
    :func:`sample_app` draws renewal streams instead and sets 0)."""
    p_off: float
    """Probability per minute that an on burst ends (0: never bursty)."""
    p_on: float
    """Probability per minute that an off period ends (1: always on)."""
    start_on: bool
    """Burst chain state at minute 0 (drawn from its stationary distribution)."""
    diurnal_amplitude: float
    """a in rate x (1 + a sin(2 pi (t + phase)/1440)); 0..1."""
    diurnal_phase_min: int
    """Phase of the diurnal cycle, minutes."""
    client_period_min: float
    """Renewal stream of invoked minutes: an interval is 1 + client_period_min x factor minutes, E[factor] = 1
    (0 and no ``client_phase_min``: no stream; see :class:`ProcessArrays`)."""
    client_exp_weight: float
    """w in factor = (1 - w) + w x Exponential(1) when a long gap is drawn: 0 periodic, 1 memoryless."""
    client_burst_p: float
    """Probability that an interval is a long gap (factor as above, / p); else the next minute (factor 0)."""
    client_rate: float
    """Poisson rate behind the stream's counts, invocations/min: an invoked minute holds a zero-truncated
    Poisson(client_rate x diurnal) count (0: one invocation)."""
    client_phase_min: float
    """First arrival of the stream, minutes (inf: none)."""
    timer_period_min: int
    """Period of the app's timer functions, minutes (0: no timer)."""
    timer_phase_min: int
    """First minute the timers fire, 0..period-1."""
    timer_count: int
    """Invocations per timer firing (the number of timer functions)."""
    daily_invocations: float
    """Target mean invocations per day (the calibrated draw)."""
    num_functions: int
    """Functions in the app."""
    memory_mb: float
    """Memory of the app's image when loaded, MB."""
    duration_s: float
    """Mean execution time, s."""
    triggers: tuple[bool, bool, bool, bool]
    """Whether the app has functions of each of :data:`TRIGGER_GROUPS`."""
    combination: str = ""
    """Trigger letters of the app as Figure 3(b) spells them (H T Q S E O o; "" for hand-made apps)."""
    functions: str = ""
    """Trigger letter of each function, as ``combination`` spells them ("" for hand-made apps)."""
    cv_class: int = -1
    """:data:`CLASS_NAMES` index of the Figure 6 curve its CV was drawn from (-1: hand-made app)."""
    target_cv: float = float("nan")
    """The inter-arrival CV its stream was designed for (the realised one differs by sampling)."""


def _log_uniform(u: float, low: float, high: float) -> float:
    return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


_STANDARD_NORMAL = statistics.NormalDist()
_TRIGGER_CDF = np.cumsum(TRIGGER_SHARES) / sum(TRIGGER_SHARES)
_BAND_CDF = np.cumsum([share for _, _, share in FUNCTIONS_PER_APP]) / sum(s for _, _, s in FUNCTIONS_PER_APP)
_LOG_TIMER_PERIODS = np.log(np.array(TIMER_PERIODS_MIN, float))


def _truncated_normal(u: float, mu: float, sigma: float, low: float, high: float) -> float:
    """Quantile ``u`` of Normal(mu, sigma) truncated to [low, high]."""
    cdf_low = _STANDARD_NORMAL.cdf((low - mu) / sigma)
    cdf_high = _STANDARD_NORMAL.cdf((high - mu) / sigma)
    p = min(max(cdf_low + u * (cdf_high - cdf_low), 1e-15), 1.0 - 1e-15)
    return min(max(mu + sigma * _STANDARD_NORMAL.inv_cdf(p), low), high)


def burr_memory_mb(u: np.ndarray | float) -> np.ndarray:
    """Burr XII(c, k, scale) quantile at ``u``, capped at :data:`MAX_MEMORY_MB`."""
    u = np.asarray(u, dtype=np.float64)
    x = BURR_SCALE_MB * ((1.0 - u) ** (-1.0 / BURR_K) - 1.0) ** (1.0 / BURR_C)
    return np.minimum(x, MAX_MEMORY_MB)


def burr_memory_mb_scalar(u: float) -> float:
    """:func:`burr_memory_mb` for one uniform (no array overhead)."""
    return min(BURR_SCALE_MB * ((1.0 - u) ** (-1.0 / BURR_K) - 1.0) ** (1.0 / BURR_C), MAX_MEMORY_MB)


_COMBOS = tuple(FIG3B_COMBINATIONS_PCT) + OTHER_COMBINATIONS
_COMBO_CDF = np.cumsum(
    [FIG3B_COMBINATIONS_PCT[c][0] for c in FIG3B_COMBINATIONS_PCT]
    + [(100.0 - sum(v[0] for v in FIG3B_COMBINATIONS_PCT.values())) / len(OTHER_COMBINATIONS)] * len(OTHER_COMBINATIONS)
)
_COMBO_CDF = _COMBO_CDF / _COMBO_CDF[-1]
_LETTER_TRIGGER = {
    "H": "http",
    "T": "timer",
    "Q": "queue",
    "S": "storage",
    "E": "event",
    "O": "orchestration",
    "o": "others",
}
_TRIGGER_LETTER = {v: k for k, v in _LETTER_TRIGGER.items()}
_SINGLE_SHARE = sum(FIG3B_COMBINATIONS_PCT[c][0] for c in FIG3B_COMBINATIONS_PCT if len(c) == 1) + sum(
    (100.0 - sum(v[0] for v in FIG3B_COMBINATIONS_PCT.values())) / len(OTHER_COMBINATIONS)
    for c in OTHER_COMBINATIONS
    if len(c) == 1
)
ONE_FUNCTION_SHARE_OF_SINGLE = FUNCTIONS_PER_APP[0][2] / (_SINGLE_SHARE / 100.0)
"""P(1 function | one trigger): every 1-function app has one trigger, so Figure 1's 54% of 1-function apps
all come from the single-trigger combinations; every other app draws its band among 2+ functions."""
_MULTI_BAND_CDF = np.cumsum([share for _, _, share in FUNCTIONS_PER_APP[1:]]) / sum(
    s for _, _, s in FUNCTIONS_PER_APP[1:]
)


def _fig6_curves() -> tuple[tuple[float, ...], ...]:
    return (FIG6_ATC["no_timer"], FIG6_ATC["timer_only"], mixed_timer_curve())


_CV_CURVES = _fig6_curves()


def sample_target_cv(u: float, cv_class: int) -> float:
    """Quantile ``u`` of the Figure 6 curve of ``cv_class``: linear in CV between read points, a point mass at
    0, log-uniform from 10 to :data:`CV_TAIL_MAX` above the last point."""
    cdf = _CV_CURVES[cv_class]
    if u < cdf[0]:
        return 0.0
    for i in range(1, len(FIG6_CV_POINTS)):
        if u < cdf[i]:
            lo, hi = FIG6_CV_POINTS[i - 1], FIG6_CV_POINTS[i]
            return lo + (hi - lo) * (u - cdf[i - 1]) / max(cdf[i] - cdf[i - 1], 1e-12)
    top = FIG6_CV_POINTS[-1]
    return top * (CV_TAIL_MAX / top) ** ((u - cdf[-1]) / max(1.0 - cdf[-1], 1e-12))


def renewal_shape(mean_interval: float, cv: float) -> tuple[float, float]:
    """(w, p) of a stream of invoked minutes with mean interval ``mean_interval`` >= 1 and interval CV ``cv``.

    Intervals are X = 1 + (M - 1) x factor, factor = B x ((1 - w) + w E) / p with B ~ Bernoulli(p),
    E ~ Exponential(1): E[X] = M. Up to cv = (M - 1) / M the stream is a jittered period (p = 1,
    w = cv M / (M - 1): std (M - 1) w); above, gaps of one minute (bursts in consecutive minutes) alternate
    with exponential silences (w = 1), p solving cv^2 = (2 - p)(M - 1)^2 / (p M^2).
    """
    excess = mean_interval - 1.0
    if cv <= 0.0 or excess <= 0.0:
        return 0.0, 1.0
    if cv * mean_interval <= excess:
        return cv * mean_interval / excess, 1.0
    return 1.0, 2.0 * excess * excess / (cv * cv * mean_interval * mean_interval + excess * excess)


def count_rate(mean_count: float) -> float:
    """The Poisson rate mu whose zero-truncated mean mu / (1 - exp(-mu)) is ``mean_count`` (>= 1), by Newton."""
    if mean_count <= 1.0 + 1e-12:
        return 1e-9
    mu = max(mean_count - 1.0, 1e-6) if mean_count < 2.0 else mean_count
    for _ in range(60):
        e = math.exp(-mu)
        f = mu / (1.0 - e) - mean_count
        df = (1.0 - e - mu * e) / (1.0 - e) ** 2
        step = f / df
        mu = max(mu - step, 1e-12)
        if abs(step) < 1e-12 * max(mu, 1.0):
            break
    return mu


def sample_app(rng: np.random.Generator) -> AppProcess:
    """One synthetic application calibrated to Azure Functions 2019 (see the module docstring)."""
    u = rng.random(13).tolist()
    key = int(rng.integers(0, 2**62, dtype=np.int64)) * 2 + 1
    log10_daily = _truncated_normal(u[0], DAILY_LOG10_MU, DAILY_LOG10_SIGMA, *DAILY_LOG10_RANGE)
    daily = 10.0**log10_daily
    # Trigger combination (Figure 3(b)), then the functions: one per trigger of the combination at least.
    combo = _COMBOS[min(int(np.searchsorted(_COMBO_CDF, u[1], side="right")), len(_COMBOS) - 1)]
    if len(combo) == 1 and u[2] < ONE_FUNCTION_SHARE_OF_SINGLE:
        n_func = 1
    else:
        band = min(int(np.searchsorted(_MULTI_BAND_CDF, rng.random(), side="right")), len(FUNCTIONS_PER_APP) - 2)
        low, high, _ = FUNCTIONS_PER_APP[band + 1]
        n_func = max(int(low + min(int(rng.random() * (high - low + 1)), high - low)), len(combo))
    kinds = [_LETTER_TRIGGER[c] for c in combo]
    weights = np.array([FIG2_FUNCTIONS_PCT[c] for c in combo])
    extra = rng.choice(len(combo), size=n_func - len(combo), p=weights / weights.sum()).tolist()
    kinds += [kinds[i] for i in extra]
    groups = [False, False, False, False]
    for kind in kinds:
        groups[_GROUP_OF[kind]] = True
    n_timer = kinds.count("timer")
    cv_class = CLASS_NO_TIMER if n_timer == 0 else CLASS_TIMER_ONLY if n_timer == n_func else CLASS_MIXED_TIMER
    z_rate = _STANDARD_NORMAL.inv_cdf(min(max(u[0], 1e-15), 1.0 - 1e-15))
    z_own = _STANDARD_NORMAL.inv_cdf(min(max(u[3], 1e-15), 1.0 - 1e-15))
    u_cv = _STANDARD_NORMAL.cdf(CV_RATE_CORRELATION * z_rate + math.sqrt(1.0 - CV_RATE_CORRELATION**2) * z_own)
    cv = sample_target_cv(u_cv, cv_class)
    # The app's invocations, all functions pooled, are one stream of invoked minutes with the designed CV.
    rate = daily / MINUTES_PER_DAY
    period = phase = timer_count = 0
    client_period = client_w = 0.0
    client_p = 1.0
    client_rate = 0.0
    client_phase = math.inf
    if cv_class == CLASS_TIMER_ONLY and cv == 0.0:
        # Timers alone and strictly periodic: every timer function fires at the cron period nearest its rate.
        target = MINUTES_PER_DAY * n_func / daily
        period = int(TIMER_PERIODS_MIN[int(np.argmin(np.abs(_LOG_TIMER_PERIODS - math.log(max(target, 1e-9)))))])
        phase = int(u[4] * period)
        timer_count = n_timer
    else:
        mean_interval = 1.0 / -math.expm1(-rate)
        if cv == 0.0:
            mean_interval = float(max(1, round(mean_interval)))  # a whole-minute period: CV exactly 0
        else:
            invoked = CALIBRATION_HORIZON_MIN / mean_interval
            cv = min(cv, math.sqrt(2.0 * invoked / MIN_BURSTS_PER_HORIZON))
            mean_interval = max(
                mean_interval, 1.0 + cv * math.sqrt(LONG_GAPS_PER_HORIZON / (2.0 * CALIBRATION_HORIZON_MIN))
            )
        client_w, client_p = renewal_shape(mean_interval, cv)
        client_period = mean_interval - 1.0
        client_rate = count_rate(rate * mean_interval)
        client_phase = u[5] * mean_interval
    amplitude = u[8] * DIURNAL_MAX_AMPLITUDE
    diurnal_phase = round((u[9] * 2.0 - 1.0) * DIURNAL_PHASE_JITTER_MIN)
    z = _STANDARD_NORMAL.inv_cdf(min(max(u[12], 1e-15), 1.0 - 1e-15))
    duration = min(math.exp(DURATION_LOG_MU + DURATION_LOG_SIGMA * z), MAX_DURATION_S)
    return AppProcess(
        key=key,
        rate_on=0.0,
        p_off=0.0,
        p_on=1.0,
        start_on=True,
        diurnal_amplitude=amplitude,
        diurnal_phase_min=diurnal_phase,
        client_period_min=float(client_period),
        client_exp_weight=float(client_w),
        client_burst_p=float(client_p),
        client_rate=float(client_rate),
        client_phase_min=float(client_phase),
        timer_period_min=period,
        timer_phase_min=phase,
        timer_count=timer_count,
        daily_invocations=float(daily),
        num_functions=n_func,
        memory_mb=burr_memory_mb_scalar(u[10]),
        duration_s=duration,
        triggers=(groups[0], groups[1], groups[2], groups[3]),
        combination=combo,
        functions="".join(_TRIGGER_LETTER[k] for k in kinds),
        cv_class=cv_class,
        target_cv=float(cv),
    )


NO_TIMER = np.iinfo(np.int64).max // 4
"""The minute of an event that never comes (no timer, no client, a chain that never switches)."""

DIURNAL = np.sin(2.0 * np.pi * np.arange(MINUTES_PER_DAY) / MINUTES_PER_DAY)
"""sin of the time of day, one value per minute."""
_DIURNAL_TWICE = np.concatenate([DIURNAL, DIURNAL])
"""DIURNAL over two days: ``_DIURNAL_TWICE[phase + t % 1440] == DIURNAL[(t + phase) % 1440]`` for phase in [0, 1440)."""


def _whole_minutes(x: np.ndarray) -> np.ndarray:
    """floor(x) as int64, NO_TIMER for values beyond it (inf: an event that never comes)."""
    return np.minimum(np.floor(x), float(NO_TIMER)).astype(np.int64)


@dataclasses.dataclass
class ProcessArrays:
    """The invocation processes of many apps, one row each, driven event by event by :func:`process_events`.

    An app drawn by :func:`sample_app` has a timer or a renewal stream of
    invoked minutes (``client_*``: intervals 1 + period x factor, see
    :func:`renewal_shape`; each invoked minute a zero-truncated Poisson count).
    Hand-made apps may also have a Poisson stream: its invocations have rate
    ``rate_on x (1 + a sin(...))`` while its burst chain is on. The stream is
    generated by thinning: candidate minutes are those in which a Poisson
    process at the peak rate ``rate_max = rate_on x (1 + a)`` has a point
    (exponential waits, floored to minutes); a candidate minute is invoked
    with probability (1 - exp(-rate)) / (1 - exp(-rate_max)), and then holds a
    zero-truncated Poisson(rate) count. Minute by minute that is exactly a
    Poisson(rate) count per minute, independent across minutes; the burst
    chain stays in a state for a geometric number of minutes. Timers are
    deterministic schedules. Only the apps with an event
    due in a minute (``next_event``) are touched, so the cost of a minute is
    the number of events, not the number of apps.
    """

    key: np.ndarray  # (A,) uint64, counter-based random key
    rate_on: np.ndarray  # (A,) float64, Poisson rate while on, invocations/min
    rate_max: np.ndarray  # (A,) float64, rate_on x (1 + amplitude): the candidates' rate, invocations/min
    p_candidate: np.ndarray  # (A,) float64, 1 - exp(-rate_max): probability that a minute is a candidate
    log_stay_on: np.ndarray  # (A,) float64, log(1 - p_off) (< 0; -1e-300 when the chain never switches off)
    log_stay_off: np.ndarray  # (A,) float64, log(1 - p_on) (-inf when an off period lasts no minute)
    amplitude: np.ndarray  # (A,) float64, diurnal amplitude
    phase: np.ndarray  # (A,) int64, diurnal phase, minutes, in [0, 1440)
    client_period: np.ndarray  # (A,) float64, mean excess of the stream's intervals over 1 minute, minutes
    client_w: np.ndarray  # (A,) float64, exponential weight w of a long gap (AppProcess.client_exp_weight)
    client_p: np.ndarray  # (A,) float64, probability that an interval is a long gap
    client_rate: np.ndarray  # (A,) float64, Poisson rate behind an invoked minute's count, invocations/min (0: 1)
    timer_period: np.ndarray  # (A,) int64, minutes; 0 = no timer
    timer_count: np.ndarray  # (A,) int64, invocations per timer firing
    burst_on: np.ndarray  # (A,) bool, state of the burst chain
    next_switch: np.ndarray  # (A,) int64, minute the burst chain next switches (NO_TIMER: never)
    next_candidate: np.ndarray  # (A,) int64, next candidate minute of the Poisson stream (NO_TIMER while off)
    next_timer: np.ndarray  # (A,) int64, next minute the timers fire (NO_TIMER when none)
    next_client: np.ndarray  # (A,) float64, time of the renewal stream's next invoked minute, minutes (inf: none)
    next_event: np.ndarray  # (A,) int64, the earliest of the four (the app has nothing to do before it)
    cv_class: np.ndarray  # (A,) int64, CLASS_NAMES index of the app's Figure 6 curve (-1: hand-made); bookkeeping
    target_cv: np.ndarray  # (A,) float64, the app's designed inter-arrival CV (NaN: hand-made); bookkeeping

    @classmethod
    def zeros(cls, n: int | tuple[int, ...]) -> ProcessArrays:
        never = np.full(n, NO_TIMER, np.int64)
        return cls(
            key=np.zeros(n, np.uint64),
            rate_on=np.zeros(n),
            rate_max=np.zeros(n),
            p_candidate=np.zeros(n),
            log_stay_on=np.full(n, -1e-300),
            log_stay_off=np.full(n, -np.inf),
            amplitude=np.zeros(n),
            phase=np.zeros(n, np.int64),
            client_period=np.zeros(n),
            client_w=np.zeros(n),
            client_p=np.ones(n),
            client_rate=np.zeros(n),
            timer_period=np.zeros(n, np.int64),
            timer_count=np.zeros(n, np.int64),
            burst_on=np.ones(n, bool),
            next_switch=never.copy(),
            next_candidate=never.copy(),
            next_timer=never.copy(),
            next_client=np.full(n, np.inf),
            next_event=never,
            cv_class=np.full(n, -1, np.int64),
            target_cv=np.full(n, np.nan),
        )

    def set_apps(self, rows: np.ndarray, apps: Sequence[AppProcess]) -> None:
        """Set rows ``rows`` to ``apps`` at minute 0 (their first events drawn from their keys)."""
        rows = np.asarray(rows, np.int64)
        if rows.size != len(apps):
            raise ValueError(f"{rows.size} rows for {len(apps)} apps")
        if rows.size == 0:
            return

        def column(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(a, name) for a in apps], dtype)

        self.key[rows] = np.array([a.key for a in apps], np.uint64)
        rate_on = column("rate_on", np.float64)
        amplitude = column("diurnal_amplitude", np.float64)
        p_off, p_on = column("p_off", np.float64), column("p_on", np.float64)
        self.rate_on[rows] = rate_on
        self.rate_max[rows] = rate_on * (1.0 + amplitude)
        self.p_candidate[rows] = -np.expm1(-self.rate_max[rows])
        with np.errstate(divide="ignore"):
            self.log_stay_on[rows] = np.minimum(np.log1p(-p_off), -1e-300)
            self.log_stay_off[rows] = np.minimum(np.log1p(-p_on), -1e-300)
        self.amplitude[rows] = amplitude
        self.phase[rows] = column("diurnal_phase_min", np.int64) % MINUTES_PER_DAY
        self.cv_class[rows] = column("cv_class", np.int64)
        self.target_cv[rows] = column("target_cv", np.float64)
        self.client_period[rows] = column("client_period_min", np.float64)
        self.client_w[rows] = column("client_exp_weight", np.float64)
        self.client_p[rows] = column("client_burst_p", np.float64)
        self.client_rate[rows] = column("client_rate", np.float64)
        self.next_client[rows] = column("client_phase_min", np.float64)
        timer = column("timer_period_min", np.int64)
        self.timer_period[rows] = timer
        self.timer_count[rows] = column("timer_count", np.int64)
        self.next_timer[rows] = np.where(timer > 0, column("timer_phase_min", np.int64), NO_TIMER)
        on = column("start_on", np.bool_)
        self.burst_on[rows] = on
        # The chain may already switch in minute 0; the stream's first candidate may be minute 0.
        u = event_uniforms(self.key[rows], np.full(rows.size, START_MINUTE))
        with np.errstate(divide="ignore"):
            stay = np.where(on, self.log_stay_on[rows], self.log_stay_off[rows])
            self.next_switch[rows] = _whole_minutes(np.log(u[0]) / stay)
            wait = _whole_minutes(-np.log(u[1]) / self.rate_max[rows])
        self.next_candidate[rows] = np.where(on, wait, NO_TIMER)
        self._update_next_event(rows)

    def _update_next_event(self, rows: np.ndarray) -> None:
        soonest = np.minimum(self.next_switch[rows], self.next_candidate[rows])
        np.minimum(soonest, self.next_timer[rows], out=soonest)
        np.minimum(soonest, _whole_minutes(self.next_client[rows]), out=soonest)
        self.next_event[rows] = soonest

    @classmethod
    def of(cls, apps: Sequence[AppProcess]) -> ProcessArrays:
        arrays = cls.zeros(len(apps))
        arrays.set_apps(np.arange(len(apps)), apps)
        return arrays

    def mutable(self) -> tuple[np.ndarray, ...]:
        """The arrays :func:`process_events` changes (to save and put back with :meth:`restore`)."""
        return (
            self.burst_on,
            self.next_switch,
            self.next_candidate,
            self.next_timer,
            self.next_client,
            self.next_event,
        )

    def restore(self, saved: Sequence[np.ndarray]) -> None:
        """Write copies saved from :meth:`mutable` back, in place (the arrays may be views of a state)."""
        for arr, old in zip(self.mutable(), saved):
            arr[...] = old

    # The InvocationSource interface (see below): what FaaSKeepAlive-v0's core calls.
    def load(self, rows: np.ndarray, invocations: Sequence[tuple[AppProcess, ...]]) -> None:
        """Set rows ``rows`` to the apps of consecutive fleets (K apps each), at minute 0."""
        self.set_apps(rows, [app for fleet in invocations for app in fleet])

    def events(self, minute: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`process_events`: (rows, counts >= 1) of the apps invoked in ``minute``; advances them."""
        return process_events(self, minute)

    def peek(self, minute: np.ndarray | int) -> np.ndarray:
        """(A,) invocations of each app in its coming minute ``minute``, leaving the processes where they were."""
        saved = [a.copy() for a in self.mutable()]
        counts = process_counts(self, minute)
        self.restore(saved)
        return counts


def _switch_chains(proc: ProcessArrays, due: np.ndarray, key: np.ndarray, t: np.ndarray | int) -> np.ndarray:
    """Switch the burst chains of the due apps whose switch is due: their next switch minutes, (due,).

    A chain that turns on draws its stream's first candidate minute (uniform pair 0).
    """
    next_switch = proc.next_switch[due]
    sw = np.flatnonzero(next_switch <= t)
    if sw.size:
        r = due[sw]
        ts = t[sw] if isinstance(t, np.ndarray) else t
        u = event_uniforms(key[sw], ts, 0)
        on = ~proc.burst_on[r]
        proc.burst_on[r] = on
        stay = np.where(on, proc.log_stay_on[r], proc.log_stay_off[r])
        switch = ts + 1 + _whole_minutes(np.log(u[0]) / stay)
        proc.next_switch[r] = switch
        next_switch[sw] = switch
        wait = _whole_minutes(-np.log(u[1]) / proc.rate_max[r])
        proc.next_candidate[r] = np.where(on, ts + np.minimum(wait, NO_TIMER - ts), NO_TIMER)
    return next_switch


def process_events(proc: ProcessArrays, minute: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """The apps invoked in their minute ``minute`` and their invocations: (rows, counts >= 1).

    Advances the processes of the apps with an event due. Must be called for
    consecutive minutes (0, 1, 2, ...) of each app. A pure function of (key,
    minute, state): sub-env *i* draws the same counts whatever else is in
    the batch. ``minute`` is one minute for every app or one per app.
    """
    due = np.flatnonzero(proc.next_event <= minute)
    if due.size == 0:
        return due, np.zeros(0, np.int64)
    # One minute for every app (the usual case) stays a scalar: no (due,) array of equal minutes to build and cut.
    per_app = np.ndim(minute) > 0
    t: np.ndarray | int = np.asarray(minute)[due] if per_app else int(minute)
    key = proc.key[due]
    counts = np.zeros(due.size, np.int64)
    # Uniforms by pairs, each pair one hash of (key, minute), computed only for the apps that use it:
    # 0: the chain's switch and first candidate wait, 1: accept and count, 2: next candidate wait and client.
    # The due apps' next events are gathered once, kept up to date here and give their next_event at the end.
    with np.errstate(divide="ignore"):
        # The burst chain moves first, so a burst's first minute can already hold invocations.
        next_switch = _switch_chains(proc, due, key, t)
        # Candidate minutes of the stream at its peak rate, thinned to the minute's rate.
        next_candidate = proc.next_candidate[due]
        cand = np.flatnonzero(next_candidate <= t)
        if cand.size:
            r = due[cand]
            if isinstance(t, np.ndarray):
                tc: np.ndarray | int = t[cand]
                mean = DIURNAL[(tc + proc.phase[r]) % MINUTES_PER_DAY]
            else:
                tc = t
                mean = _DIURNAL_TWICE[proc.phase[r] + t % MINUTES_PER_DAY]  # phase in [0, 1440): no modulo per app
            mean *= proc.amplitude[r]
            mean += 1.0
            mean *= proc.rate_on[r]
            u = event_uniforms(key[cand], tc, (1, 2))  # accept, count; next candidate wait, (client)
            thinned = np.expm1(np.negative(mean))
            np.negative(thinned, out=thinned)
            hit = np.flatnonzero(u[0] * proc.p_candidate[r] < thinned)
            if hit.size:
                counts[cand[hit]] = zero_truncated_poisson(mean[hit], u[1, hit])
            wait = _whole_minutes(np.negative(np.log(u[2])) / proc.rate_max[r])
            candidate = tc + 1 + np.minimum(wait, NO_TIMER - tc - 1)
            proc.next_candidate[r] = candidate
            next_candidate[cand] = candidate
    next_timer = proc.next_timer[due]
    fire = np.flatnonzero(next_timer <= t)
    if fire.size:
        r = due[fire]
        counts[fire] += proc.timer_count[r]
        timer = next_timer[fire] + proc.timer_period[r]
        proc.next_timer[r] = timer
        next_timer[fire] = timer
    # The renewal stream of invoked minutes: intervals are at least one minute, so it arrives at most once a
    # minute. A stream app has no Poisson stream, so the pairs of its candidates (1 and 2) are free to use.
    next_client = proc.next_client[due]
    arrive = np.flatnonzero(next_client < t + 1)
    if arrive.size:
        r = due[arrive]
        ta = t[arrive] if isinstance(t, np.ndarray) else t
        u = event_uniforms(key[arrive], ta, (1, 2))  # long gap?, count; (unused), exponential
        rate = proc.client_rate[r]
        n = np.ones(arrive.size, np.int64)
        counted = np.flatnonzero(rate > 0)
        if counted.size:
            rc = r[counted]
            tc_ = ta[counted] if isinstance(ta, np.ndarray) else ta
            mean = DIURNAL[(tc_ + proc.phase[rc]) % MINUTES_PER_DAY] * proc.amplitude[rc] + 1.0
            mean *= rate[counted]
            n[counted] = zero_truncated_poisson(mean, u[1, counted])
        counts[arrive] += n
        w, p = proc.client_w[r], proc.client_p[r]
        factor = np.where(u[0] < p, ((1.0 - w) - w * np.log(u[3])) / p, 0.0)
        client = next_client[arrive] + 1.0 + proc.client_period[r] * factor
        proc.next_client[r] = client
        next_client[arrive] = client
    soonest = np.minimum(next_switch, next_candidate, out=next_switch)
    np.minimum(soonest, next_timer, out=soonest)
    np.minimum(soonest, _whole_minutes(next_client), out=soonest)
    proc.next_event[due] = soonest
    invoked = np.flatnonzero(counts)
    return due[invoked], counts[invoked]


def process_counts(proc: ProcessArrays, minute: np.ndarray | int) -> np.ndarray:
    """(A,) invocations of each app in its minute ``minute`` (dense form of :func:`process_events`)."""
    out = np.zeros(proc.key.size, np.int64)
    rows, counts = process_events(proc, minute)
    out[rows] = counts
    return out


def simulate_counts(apps: Sequence[AppProcess], minutes: int) -> np.ndarray:
    """(A, minutes) int64 counts of synthetic apps from minute 0 (for tests and calibration)."""
    proc = ProcessArrays.of(apps)
    out = np.zeros((len(apps), minutes), np.int64)
    for t in range(minutes):
        rows, counts = process_events(proc, t)
        out[rows, t] = counts
    return out


# ----------------------------------------------------------------------------- toy apps (known optimum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyApp:
    """A timer app that fires ``count`` times every ``period_min`` minutes from ``phase_min`` on."""

    period_min: int
    phase_min: int
    count: int
    memory_mb: float
    duration_s: float

    def counts(self, minutes: int) -> np.ndarray:
        out = np.zeros(minutes, np.int64)
        out[self.phase_min :: self.period_min] = self.count
        return out


def sample_toy_app(rng: np.random.Generator, *, period_range: tuple[int, int] = (3, 60)) -> ToyApp:
    """A periodic timer app: period uniform in ``period_range`` minutes, sub-minute executions."""
    period = int(rng.integers(period_range[0], period_range[1] + 1))
    return ToyApp(
        period_min=period,
        phase_min=int(rng.integers(0, period)),
        count=int(rng.integers(1, 4)),
        memory_mb=float(rng.uniform(64.0, 512.0)),
        duration_s=float(rng.uniform(0.1, 30.0)),
    )


def toy_hybrid_waste_minutes_per_period(period_min: int) -> int:
    """Idle minutes per period that the hybrid policy keeps a period-P timer app loaded.

    The idle time before each firing is P minutes (the execution ends in its
    own minute), so p5 = p99 = P and the policy loads the image at age
    floor(0.9 P) and keeps it through ceil(1.1 P): loaded and idle at ages
    floor(0.9 P) .. P - 1.
    """
    return period_min - math.floor(0.9 * period_min)


# ----------------------------------------------------------------------------- traces


MAX_COUNT_PER_MINUTE = 10**9
"""Most invocations a function may have in one minute (16 million a second): more is a corrupt field."""
MAX_RECORDED_MEMORY_MB = float(1 << 20)
"""Largest memory the 2019 memory file may record for an app, MB (1 TiB, far above MAX_MEMORY_MB): more is corrupt."""


@dataclasses.dataclass(frozen=True)
class AppTrace:
    """Invocations per minute of A applications, stored sparsely (CSR over apps)."""

    app_ids: tuple[str, ...]  # (A,) application ids as the trace names them
    indptr: np.ndarray  # (A+1,) int64, app a's events are [indptr[a], indptr[a+1])
    minute: np.ndarray  # (E,) int64, minute of each event from the trace start, increasing within an app
    count: np.ndarray  # (E,) int64, invocations in that minute (> 0)
    minutes: int  # length of the trace, minutes
    memory_mb: np.ndarray  # (A,) float64, memory of each app's image, MB
    duration_s: np.ndarray  # (A,) float64, mean execution time, s
    triggers: np.ndarray  # (A, 4) bool, trigger groups (TRIGGER_GROUPS); all False when the trace has none
    memory_imputed: np.ndarray  # (A,) bool, memory is the population median (no record for this app)
    duration_imputed: np.ndarray  # (A,) bool, duration is the population median (no record)

    @property
    def num_apps(self) -> int:
        return len(self.app_ids)

    def invocations(self) -> np.ndarray:
        """(A,) total invocations per app."""
        owner = np.repeat(np.arange(self.num_apps), np.diff(self.indptr))
        return np.bincount(owner, weights=self.count, minlength=self.num_apps).astype(np.int64)

    def dense_counts(self, app: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """(length,) int64 invocations of app ``app`` in minutes [start, start + length); zeros past the end."""
        length = self.minutes - start if length is None else length
        out = np.zeros(length, np.int64)
        lo, hi = self.indptr[app], self.indptr[app + 1]
        minutes = self.minute[lo:hi] - start
        keep = (minutes >= 0) & (minutes < length)
        out[minutes[keep]] = self.count[lo:hi][keep]
        return out


def _build_trace(
    per_app: dict[str, dict[int, int]],
    minutes: int,
    memory: dict[str, float],
    duration: dict[str, float],
    triggers: dict[str, list[bool]],
) -> AppTrace:
    app_ids = tuple(sorted(per_app))
    indptr = np.zeros(len(app_ids) + 1, np.int64)
    minute_parts, count_parts = [], []
    for a, app in enumerate(app_ids):
        events = per_app[app]
        m = np.fromiter(sorted(events), np.int64, len(events))
        c = np.array([events[int(x)] for x in m], np.int64)
        keep = c > 0
        minute_parts.append(m[keep])
        count_parts.append(c[keep])
        indptr[a + 1] = indptr[a] + int(keep.sum())
    mem = np.array([memory.get(a, np.nan) for a in app_ids], np.float64)
    dur = np.array([duration.get(a, np.nan) for a in app_ids], np.float64)
    mem_missing, dur_missing = np.isnan(mem), np.isnan(dur)
    # Apps without a record get the median of those with one (a documented, flagged imputation).
    mem[mem_missing] = np.median(mem[~mem_missing]) if (~mem_missing).any() else 256.0
    dur[dur_missing] = np.median(dur[~dur_missing]) if (~dur_missing).any() else 1.0
    trig = np.array([triggers.get(a, [False] * 4) for a in app_ids], bool).reshape(len(app_ids), 4)
    return AppTrace(
        app_ids=app_ids,
        indptr=indptr,
        minute=np.concatenate(minute_parts) if minute_parts else np.zeros(0, np.int64),
        count=np.concatenate(count_parts) if count_parts else np.zeros(0, np.int64),
        minutes=minutes,
        memory_mb=mem,
        duration_s=dur,
        triggers=trig,
        memory_imputed=mem_missing,
        duration_imputed=dur_missing,
    )


_INVOCATION_FILE = re.compile(r"invocations_per_function_md\.anon\.d(\d+)\.csv(\.gz|\.xz|\.bz2)?$")
_INVOCATION_HEADER = ["HashOwner", "HashApp", "HashFunction", "Trigger", *[str(m) for m in range(1, 1441)]]
_DURATION_HEADER = [
    "HashOwner",
    "HashApp",
    "HashFunction",
    "Average",
    "Count",
    "Minimum",
    "Maximum",
    *[f"percentile_Average_{p}" for p in (0, 1, 25, 50, 75, 99, 100)],
]
_MEMORY_HEADER = [
    "HashOwner",
    "HashApp",
    "SampleCount",
    "AverageAllocatedMb",
    *[f"AverageAllocatedMb_pct{p}" for p in (1, 5, 25, 50, 75, 95, 99, 100)],
]


def _number(path: Path, line: int, column: str, text: str, *, integer: bool = False, high: float = math.inf) -> float:
    value = parse_float(path, line, column, text, high=high)
    if integer and value != int(value):
        raise TraceFormatError(path, line, f"{text!r} is not a whole number", column)
    return value


def _side_file(root: Path, stem: str) -> Path | None:
    """``root/stem`` or its compressed form (.gz, .xz, .bz2), if one exists."""
    return next((p for p in (root / (stem + ext) for ext in ("", ".gz", ".xz", ".bz2")) if p.exists()), None)


def _refuse_duplicate(seen: dict[tuple[str, ...], int], key: tuple[str, ...], path: Path, line: int, what: str) -> None:
    # Duplicated rows would add a function's invocations (or weights) twice: refused, never merged.
    first = seen.setdefault(key, line)
    if first != line:
        raise TraceFormatError(path, line, f"{what} {'/'.join(key)} appears twice (first on line {first})")


def _read_invocations(
    path: Path, base: int, per_app: dict[str, dict[int, int]], triggers: dict[str, list[bool]]
) -> None:
    """Add one day's invocation file to ``per_app`` (minute ``base`` + m: count) and ``triggers``, per app."""
    functions: dict[tuple[str, ...], int] = {}
    for line, fields in csv_rows(path, _INVOCATION_HEADER):
        owner, app, func, trigger = (x.strip() for x in fields[:4])
        if not owner or not app or not func:
            raise TraceFormatError(path, line, "empty HashOwner, HashApp or HashFunction")
        if trigger not in _GROUP_OF:
            raise TraceFormatError(path, line, f"unknown Trigger {trigger!r} (known: {', '.join(TRIGGERS)})", "Trigger")
        _refuse_duplicate(functions, (owner, app, func), path, line, "function")
        try:
            counts = np.array(fields[4:], dtype=np.float64)
        except ValueError:
            bad = next(i for i, x in enumerate(fields[4:]) if not _is_float(x))
            raise TraceFormatError(path, line, f"{fields[4 + bad]!r} is not a number", str(bad + 1)) from None
        invalid = ~np.isfinite(counts) | (counts < 0) | (counts != np.floor(counts))
        invalid |= counts > MAX_COUNT_PER_MINUTE
        if invalid.any():
            bad = int(np.argmax(invalid))
            raise TraceFormatError(
                path,
                line,
                f"{fields[4 + bad]!r} is not a whole count in [0, {MAX_COUNT_PER_MINUTE:.0e}]",
                str(bad + 1),
            )
        key = f"{owner}/{app}"
        events = per_app.setdefault(key, {})
        for minute in np.flatnonzero(counts).tolist():
            events[base + minute] = events.get(base + minute, 0) + int(counts[minute])
        groups = triggers.setdefault(key, [False] * 4)
        groups[_GROUP_OF[trigger]] = True
    if not functions:
        raise TraceFormatError(path, 2, "no function rows after the header")


def load_azure2019(folder: str | os.PathLike[str], days: Sequence[int] | None = None) -> AppTrace:
    """Load the Azure Functions 2019 trace (per-day CSV files) aggregated to applications.

    ``folder`` holds ``invocations_per_function_md.anon.dNN.csv`` (required),
    and optionally ``function_durations_percentiles.anon.dNN.csv`` and
    ``app_memory_percentiles.anon.dNN.csv`` for the same days. ``days`` picks
    days by number (default: every day with an invocation file); minute m of
    day d lands at minute (d - first day) x 1440 + m - 1, so the days must be
    consecutive. An app is (HashOwner, HashApp); its counts are the sum over
    its functions; its duration the invocation-weighted mean of its
    functions' ``Average`` (ms -> s); its memory the sample-weighted mean of
    ``AverageAllocatedMb``; its triggers the groups of its functions'.

    Files may be gzip, xz or bzip2 compressed (``.csv.gz``, ...). A function
    (or, in the memory file, an app) appearing twice in one day's file is an
    error, never summed; counts above MAX_COUNT_PER_MINUTE and durations whose
    ``Average`` lies outside [``Minimum``, ``Maximum``] are errors too.
    """
    root = find_trace(folder)
    found = {int(m.group(1)): p for p in root.iterdir() if (m := _INVOCATION_FILE.search(p.name))}
    if not found:
        raise FileNotFoundError(f"{root}: no invocations_per_function_md.anon.dNN.csv files")
    chosen = sorted(found) if days is None else sorted(days)
    missing = [d for d in chosen if d not in found]
    if missing:
        raise FileNotFoundError(f"{root}: no invocation file for day(s) {missing} (found {sorted(found)})")
    if chosen != list(range(chosen[0], chosen[0] + len(chosen))):
        raise ValueError(f"days must be consecutive, got {chosen}")
    per_app: dict[str, dict[int, int]] = {}
    triggers: dict[str, list[bool]] = {}
    dur_sum: dict[str, float] = {}
    dur_weight: dict[str, float] = {}
    mem_sum: dict[str, float] = {}
    mem_weight: dict[str, float] = {}
    for offset, day in enumerate(chosen):
        _read_invocations(found[day], offset * MINUTES_PER_DAY, per_app, triggers)
        dpath = _side_file(root, f"function_durations_percentiles.anon.d{day:02d}.csv")
        if dpath is not None:
            seen: dict[tuple[str, ...], int] = {}
            for line, fields in csv_rows(dpath, _DURATION_HEADER):
                _refuse_duplicate(seen, tuple(x.strip() for x in fields[:3]), dpath, line, "function")
                key = f"{fields[0].strip()}/{fields[1].strip()}"
                average = _number(dpath, line, "Average", fields[3], high=MAX_TRACE_SECONDS * 1000.0)
                count = _number(dpath, line, "Count", fields[4], integer=True, high=MAX_COUNT_PER_MINUTE * 1440.0)
                low = _number(dpath, line, "Minimum", fields[5], high=MAX_TRACE_SECONDS * 1000.0)
                high = _number(dpath, line, "Maximum", fields[6], high=MAX_TRACE_SECONDS * 1000.0)
                if not low - 1e-9 * high <= average <= high * (1 + 1e-9):  # relative slack for printed decimals
                    raise TraceFormatError(
                        dpath, line, f"Average {average:g} ms is outside [Minimum {low:g}, Maximum {high:g}]", "Average"
                    )
                dur_sum[key] = dur_sum.get(key, 0.0) + average / 1000.0 * max(count, 1.0)
                dur_weight[key] = dur_weight.get(key, 0.0) + max(count, 1.0)
        mpath = _side_file(root, f"app_memory_percentiles.anon.d{day:02d}.csv")
        if mpath is not None:
            apps: dict[tuple[str, ...], int] = {}
            for line, fields in csv_rows(mpath, _MEMORY_HEADER):
                _refuse_duplicate(apps, (fields[0].strip(), fields[1].strip()), mpath, line, "app")
                key = f"{fields[0].strip()}/{fields[1].strip()}"
                samples = _number(mpath, line, "SampleCount", fields[2], integer=True, high=1e12)
                average = _number(mpath, line, "AverageAllocatedMb", fields[3], high=MAX_RECORDED_MEMORY_MB)
                mem_sum[key] = mem_sum.get(key, 0.0) + average * max(samples, 1.0)
                mem_weight[key] = mem_weight.get(key, 0.0) + max(samples, 1.0)
    duration = {k: dur_sum[k] / dur_weight[k] for k in dur_sum if k in per_app}
    memory = {k: mem_sum[k] / mem_weight[k] for k in mem_sum if k in per_app}
    return _build_trace(per_app, len(chosen) * MINUTES_PER_DAY, memory, duration, triggers)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_azure2021(path: str | os.PathLike[str]) -> AppTrace:
    """Load the Azure Functions 2021 invocation trace (one row per invocation) as per-minute counts per app.

    Columns ``app, func, end_timestamp, duration`` (seconds from the trace
    start, at most MAX_TRACE_SECONDS; header row required; plain, gzip or xz).
    An invocation counts in the minute it starts,
    ``floor((end_timestamp - duration) / 60)``; an app's duration is the mean
    of its invocations'. The format has no memory or trigger columns: memory
    is imputed (flagged) and triggers are all False. Two identical rows (same
    app, func, end_timestamp and duration, which the trace's microsecond
    timestamps make impossible for two real invocations) are an error naming
    both lines, never counted twice.
    """
    path = find_trace(path)
    per_app: dict[str, dict[int, int]] = {}
    dur_sum: dict[str, float] = {}
    dur_n: dict[str, int] = {}
    last_minute = 0
    # Each row's identity, in typed arrays, to find duplicates after the pass (24 bytes a row).
    names: dict[tuple[str, str], int] = {}
    function = array.array("q")
    ends = array.array("d")
    durations = array.array("d")
    lines = array.array("q")
    for line, fields in csv_rows(path, ["app", "func", "end_timestamp", "duration"]):
        app, func = fields[0].strip(), fields[1].strip()
        if not app or not func:
            raise TraceFormatError(path, line, "empty app or func")
        end = _number(path, line, "end_timestamp", fields[2], high=MAX_TRACE_SECONDS)
        duration = _number(path, line, "duration", fields[3], high=MAX_TRACE_SECONDS)
        start = end - duration
        if start < -1e-6:
            raise TraceFormatError(
                path, line, f"duration {duration} exceeds end_timestamp {end} (start before 0)", "duration"
            )
        minute = int(max(start, 0.0) // 60)
        events = per_app.setdefault(app, {})
        events[minute] = events.get(minute, 0) + 1
        dur_sum[app] = dur_sum.get(app, 0.0) + duration
        dur_n[app] = dur_n.get(app, 0) + 1
        last_minute = max(last_minute, minute)
        function.append(names.setdefault((app, func), len(names)))
        ends.append(end)
        durations.append(duration)
        lines.append(line)
    if not per_app:
        raise TraceFormatError(path, 2, "no invocation rows")
    _refuse_duplicate_rows(path, function, ends, durations, lines)
    duration_s = {a: dur_sum[a] / dur_n[a] for a in dur_sum}
    return _build_trace(per_app, last_minute + 1, {}, duration_s, {})


def _refuse_duplicate_rows(
    path: Path,
    function: array.array[int],
    ends: array.array[float],
    durations: array.array[float],
    lines: array.array[int],
) -> None:
    f, e, d = (np.frombuffer(x, dt) for x, dt in ((function, np.int64), (ends, np.float64), (durations, np.float64)))
    order = np.lexsort((d, e, f))
    same = (np.diff(f[order]) == 0) & (np.diff(e[order]) == 0) & (np.diff(d[order]) == 0)
    if same.any():
        # lexsort is stable: of two equal rows the earlier line comes first. Report the earliest repeat.
        pairs = np.flatnonzero(same)
        k = int(pairs[np.argmin(np.frombuffer(lines, np.int64)[order[pairs + 1]])])
        first, second = lines[int(order[k])], lines[int(order[k + 1])]
        raise TraceFormatError(path, second, f"the row repeats line {first} (a duplicated invocation)")


# ----------------------------------------------------------------------------- episode instances and their generators


InvocationsT = TypeVar("InvocationsT")
InvocationsT_contra = TypeVar("InvocationsT_contra", contravariant=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppFleet(Generic[InvocationsT]):
    """One sub-env's K applications for an episode (K = 1: one app), whichever generator made them."""

    memory_mb: np.ndarray  # (K,) float64, memory of each app's image, MB
    duration_s: np.ndarray  # (K,) float64, mean execution time of each app, s
    triggers: np.ndarray  # (K, 4) bool, trigger groups present (TRIGGER_GROUPS)
    invocations: InvocationsT
    """The apps' invocations in the form their :class:`InvocationSource` loads (AppProcess parameters or counts)."""


class InvocationSource(Protocol[InvocationsT_contra]):
    """The invocations of N apps (one row each; arrays of a batched state): what a FaaS core calls.

    A synthetic source computes each minute's counts as it goes
    (:class:`ProcessArrays`); a table source reads them from dense counts
    (:class:`CountTable`). The core never asks which one it holds.
    """

    def load(self, rows: np.ndarray, invocations: Sequence[InvocationsT_contra]) -> None:
        """Start rows ``rows`` (K per fleet, fleet after fleet) on the fleets' invocations, at minute 0."""
        ...

    def events(self, minute: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, counts >= 1) of the apps invoked in their minute ``minute`` (called for minutes 0, 1, 2, ...)."""
        ...

    def peek(self, minute: np.ndarray | int) -> np.ndarray:
        """(N,) invocations of each app in its coming minute ``minute``, without moving on (hindsight)."""
        ...


@dataclasses.dataclass
class CountTable:
    """Invocations per minute of N apps as a dense table (toy and trace apps), one row each."""

    counts: np.ndarray  # (N, T) int64, invocations of each app per minute

    @classmethod
    def zeros(cls, shape: tuple[int, ...], minutes: int) -> CountTable:
        return cls(counts=np.zeros((*shape, minutes), np.int64))

    def load(self, rows: np.ndarray, invocations: Sequence[np.ndarray]) -> None:
        self.counts[rows] = np.concatenate(invocations)

    def _column(self, minute: np.ndarray | int) -> np.ndarray:
        if np.ndim(minute) == 0:
            return self.counts[:, minute]
        return self.counts[np.arange(self.counts.shape[0]), minute]

    def events(self, minute: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        column = self._column(minute)
        rows = np.flatnonzero(column)
        return rows, column[rows]

    def peek(self, minute: np.ndarray | int) -> np.ndarray:
        return self._column(np.minimum(minute, self.counts.shape[1] - 1))


class FleetGenerator(Protocol[InvocationsT]):
    """Makes a sub-env's fleet for an episode, and the batched source that replays such fleets."""

    def sample(self, rng: np.random.Generator) -> AppFleet[InvocationsT]: ...

    def source(self, shape: tuple[int, ...]) -> InvocationSource[InvocationsT]:
        """An empty source for ``shape`` apps (the state's arrays of the invocations)."""
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticFleetGenerator:
    """Apps of the generator calibrated to Azure Functions 2019 (:func:`sample_app`), drawn one after another."""

    apps_per_fleet: int = 1

    def sample(self, rng: np.random.Generator) -> AppFleet[tuple[AppProcess, ...]]:
        apps = tuple(sample_app(rng) for _ in range(self.apps_per_fleet))
        return AppFleet(
            memory_mb=np.array([app.memory_mb for app in apps]),
            duration_s=np.array([app.duration_s for app in apps]),
            triggers=np.array([app.triggers for app in apps], bool),
            invocations=apps,
        )

    def source(self, shape: tuple[int, ...]) -> ProcessArrays:
        return ProcessArrays.zeros(shape)


_TIMER_ONLY = (False, True, False, False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyTimerFleetGenerator:
    """Periodic timer apps (:func:`sample_toy_app`) whose optimal windows are known, drawn one after another."""

    minutes: int
    """Minutes of counts per app (warm-up and episode)."""
    period_range: tuple[int, int] = (3, 60)
    """Timer periods, minutes."""
    apps_per_fleet: int = 1

    def sample(self, rng: np.random.Generator) -> AppFleet[np.ndarray]:
        apps = [sample_toy_app(rng, period_range=self.period_range) for _ in range(self.apps_per_fleet)]
        return AppFleet(
            memory_mb=np.array([app.memory_mb for app in apps]),
            duration_s=np.array([app.duration_s for app in apps]),
            triggers=np.array([_TIMER_ONLY] * len(apps), bool),
            invocations=np.stack([app.counts(self.minutes) for app in apps]),
        )

    def source(self, shape: tuple[int, ...]) -> CountTable:
        return CountTable.zeros(shape, self.minutes)


_TRACES: TraceCache[AppTrace] = TraceCache(maxsize=4)
TRACE_FORMATS = ("azure2021", "azure2019")
"""Formats :func:`cached_trace` reads: one row per invocation (2021) or per-function per-minute counts (2019)."""


def cached_trace(path: str, trace_format: str) -> AppTrace:
    """A trace file (2021) or folder (2019) parsed once per process and version of its files.

    Keyed by each file's resolved path, size and modification time, so a file
    rewritten in place is read again.
    """
    if trace_format not in TRACE_FORMATS:
        raise ValueError(f"trace_format must be one of {TRACE_FORMATS}, got {trace_format!r}")
    found = find_trace(path)
    files = sorted(p for p in found.iterdir() if p.is_file()) if found.is_dir() else [found]
    loader = load_azure2021 if trace_format == "azure2021" else load_azure2019
    return _TRACES.get(files, lambda: loader(found), extra=trace_format)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TraceFleetGenerator:
    """Apps of a public trace, each drawn uniformly among the trace's invoked apps, replayed from its start."""

    trace: AppTrace
    minutes: int
    """Minutes of counts per app (warm-up and episode); zeros past the trace's end."""
    apps_per_fleet: int = 1
    invoked: np.ndarray = dataclasses.field(init=False)  # (A',) int64, the apps with at least one invocation

    def __post_init__(self) -> None:
        object.__setattr__(self, "invoked", np.flatnonzero(self.trace.invocations() > 0))

    @classmethod
    def from_file(cls, path: str, trace_format: str, *, minutes: int, apps_per_fleet: int = 1) -> TraceFleetGenerator:
        generator = cls(trace=cached_trace(path, trace_format), minutes=minutes, apps_per_fleet=apps_per_fleet)
        if generator.invoked.size == 0:
            raise ValueError(f"{path}: the trace has no invoked app")
        return generator

    def sample(self, rng: np.random.Generator) -> AppFleet[np.ndarray]:
        trace = self.trace
        apps = [int(self.invoked[int(rng.integers(0, self.invoked.size))]) for _ in range(self.apps_per_fleet)]
        return AppFleet(
            memory_mb=trace.memory_mb[apps],
            duration_s=trace.duration_s[apps],
            triggers=trace.triggers[apps],
            invocations=np.stack([trace.dense_counts(app, 0, self.minutes) for app in apps]),
        )

    def source(self, shape: tuple[int, ...]) -> CountTable:
        return CountTable.zeros(shape, self.minutes)


# ----------------------------------------------------------------------------- statistics for calibration


def interarrival_cv(counts: np.ndarray, min_gaps: int = 3) -> float:
    """CV of the gaps between an app's invocation minutes (NaN with fewer than ``min_gaps`` gaps).

    Measured at the trace's one-minute resolution: several invocations in one
    minute are one arrival of the app.
    """
    minutes = np.flatnonzero(counts)
    if minutes.size < min_gaps + 1:
        return float("nan")
    gaps = np.diff(minutes).astype(np.float64)
    return float(gaps.std() / gaps.mean())
