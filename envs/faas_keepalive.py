"""FaaSKeepAlive-v0: keep serverless applications warm, or pre-warm them, minute by minute.

## Description
After Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing
the Serverless Workload at a Large Cloud Provider", USENIX ATC 2020. A
serverless platform loads an application's image into memory to run it; an
invocation that finds the image unloaded is a **cold start** (slow), and an
image kept loaded while it runs nothing is **wasted memory time** (WMT). Each
sub-env is one application (the batch axis is applications, as the platform
decides per app); every minute the policy sets the app's two windows,
measured from the end of its last execution:

* **pre-warm** PW: the image is unloaded right after an execution and loaded
  again PW minutes after it ended (PW = 0: it is never unloaded);
* **keep-alive** KA: once loaded, it stays loaded for KA more minutes.

At age a = minutes since the last execution ended, the image is loaded iff
PW <= a <= PW + KA (or the app is still executing). The env applies the
current action's windows every minute: a policy that keeps its windows
constant between invocations, as the paper's do, gets exactly the paper's
semantics; a learned policy may also revise them as time passes.

Per minute t and app: the invocations n_t come from the workload (a
calibrated Azure Functions 2019 generator, a toy timer app, or a public
trace; see :mod:`cloudgym.envs.workloads.faas`). If n_t > 0 and the image is
not loaded, the first invocation of the minute is cold and the other n_t - 1
warm (the cold start loads the image for them); otherwise all are warm. Every
invocation is counted once, as cold or warm. An execution occupies
ceil(mean duration / 60) minutes (usually just its own minute); a minute with
neither an invocation nor a running execution while the image is loaded
wastes the app's memory for that minute. The idle time that ends with an
invocation (the age a, in whole minutes, 1 = the next minute) is recorded in
the app's idle-time histogram (1-minute bins up to ``histogram_range_min``,
beyond it the out-of-bound (OOB) counter) and in a time-series forecast of
the next idle time: the inputs of the paper's hybrid histogram policy, kept
by the env so that the policy is a plain batched ``act(obs)``.

The keep-alive problem is close to a contextual bandit: the workload does not
react to the policy, so an action changes only the current minute's reward.

Before the episode, ``warmup_minutes`` of the same app's history are replayed
without a policy: the histogram and the forecast start from that history, as
a platform's would. Every cold start, invocation and wasted GB-minute of the
episode itself is counted.

## Action Space
``Box(0, 1, (2,), float32)``: (pre-warm, keep-alive), each encoded on a log
scale, minutes = round(expm1(x * log1p(WINDOW_SCALE_MIN))), so that 1, 10,
100 and 1000 minutes are equally easy to express and every whole minute up
to 28 days is exact (:func:`encode_minutes` gives the code of a number of
minutes). A keep-alive of exactly 1.0 means "never unload". A continuous
encoding, rather than a menu, lets the hybrid policy's exact windows (any
whole minute) and a learned policy share one space.

## Observation Space
``Box(low, high, (24,), float32)``: minutes are encoded as actions are
(:func:`encode_minutes`), counts and rates as log1p(x)/log1p(1e9)
(:func:`encode_count`); :func:`decode_minutes` and :func:`decode_count` invert
them exactly for whole numbers. ``OBS[name]`` gives each field's index.

| field              | observation                                                                 |
|--------------------|-----------------------------------------------------------------------------|
| age                | minutes since the last execution ended (1.0 if never run, 0 if running)     |
| has_run            | 1 if the app has run (in the warm-up or the episode)                         |
| busy               | 1 if an execution is still running this minute                               |
| loaded_last        | 1 if the image was loaded during the last minute                             |
| invoked_last       | 1 if the app was invoked in the last minute                                  |
| count_last         | invocations in the last minute (count code)                                  |
| rate_10min, rate_4h| invocations per minute, EWMA over ~10 min and ~4 h (count code)              |
| tod_sin, tod_cos   | time of day                                                                  |
| idle_recorded      | idle time recorded in the last minute (minute code; 0 if none)               |
| idle_hazard        | recorded in-range idle times equal to the current age / those >= it (0 if none) |
| idle_survival      | share of all recorded idle times >= the current age (in range; 0 beyond it)  |
| idle_times         | idle times recorded, in range and OOB (count code)                           |
| oob_share          | share of recorded idle times that were OOB                                   |
| cv                 | coefficient of variation of the histogram's bin counts x 1/8                 |
| p5, p99            | 5th and 99th percentile of in-range idle times (minute code; 0 if none)      |
| idle_forecast      | forecast of the next idle time (minute code of a fractional number; 0 if none) |
| memory             | memory of the image / 1536 MB                                                |
| trigger_*          | trigger groups present: http, timer, queue_like, other (0 when unknown)      |

## Rewards
``-(cold_start_weight x cold starts + memory_weight x wasted GB-minutes)`` of
the minute. The weights are config fields: sweeping their ratio traces the
cold-start vs memory Pareto curve. ``info`` carries the minute's
``cold_starts``, ``warm_starts``, ``invocations`` and ``wasted_gb_min``.

## Starting State
An app drawn by the workload from the sub-env's seed, after ``warmup_minutes``
of history; the image is loaded iff the policy's first windows say so.

## Episode End
Truncated after ``episode_minutes`` minutes (the app lives on).

## Arguments
``gym.make("FaaSKeepAlive-v0", memory_weight=0.1, ...)``: any field of
:class:`FaaSKeepAliveConfig`; ``scenario="toy_timer"`` or ``"two_weeks"``
picks a preset.

## Paper figure reproduced
Figure 15 (and 14): 75th-percentile per-app cold-start % against WMT
normalised to the 10-minute fixed keep-alive, for fixed keep-alive 10-120
minutes and the hybrid policy with 1-4 h histogram ranges
(``baselines/faas_keepalive.py`` draws it in ``scripts/compare.py``). On the
default scenario (256 held-out apps) the hybrid curve Pareto-dominates the
fixed one and hybrid 4 h has a far lower p75 cold-start % than fixed 10 min
(20% vs 100%), but it wastes 2.06x fixed 10's memory where the paper reports
less: memoryless and bursty apps with idle times between 10 minutes and the
range are kept loaded to 1.1 x p99. The calibrated generator replaces the
2019 trace, which cannot be downloaded here; ``docs/faas_keepalive.md`` has
the numbers.

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.batch import BatchedCore, Info, MetricSpec, check_config
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.workloads import faas

WINDOW_SCALE_MIN = 40320
"""Minutes that encode to 1.0 (28 days): the top of the log scale of windows and ages."""
_MINUTE_LOG = math.log1p(WINDOW_SCALE_MIN)
_MINUTE_LOG32 = np.float32(_MINUTE_LOG)
COUNT_SCALE = 1e9
_COUNT_LOG = math.log1p(COUNT_SCALE)
NEVER = np.int64(2**62)
"""A keep-alive that never ends; also minus the busy_until of an app that never ran."""
QUANTILES_PCT = (5, 99)
"""Percentiles of the idle-time histogram the env tracks (the hybrid policy's head and tail)."""
CV_SCALE = 0.125
"""Observation of the coefficient of variation: CV x 1/8 (a power of two, so exact)."""
SHORT_RATE_ALPHA = np.float32(1.0 / 10.0)
LONG_RATE_ALPHA = np.float32(1.0 / 240.0)
FORECAST_ALPHA = 0.5
"""Weight of the newest idle time in the log-space EWMA forecast (ARIMA(0,1,1)'s forecast with theta = 0.5)."""

OBS_FIELDS = (
    # changing every minute
    "age",
    "has_run",
    "busy",
    "loaded_last",
    "invoked_last",
    "count_last",
    "rate_10min",
    "rate_4h",
    "tod_sin",
    "tod_cos",
    "idle_recorded",
    "idle_hazard",
    "idle_survival",
    # changing only when an idle time is recorded (kept in the state, updated sparsely)
    "idle_times",
    "oob_share",
    "cv",
    "p5",
    "p99",
    "idle_forecast",
    # constant over the episode
    "memory",
    "trigger_http",
    "trigger_timer",
    "trigger_queue_like",
    "trigger_other",
)
OBS = {name: i for i, name in enumerate(OBS_FIELDS)}
"""Index of each observation field."""

MINUTE_CODES = (np.log1p(np.arange(WINDOW_SCALE_MIN + 1, dtype=np.float64)) / _MINUTE_LOG).astype(np.float32)
"""Code of every whole number of minutes 0..WINDOW_SCALE_MIN (a lookup table for the hot path)."""
_TOD_SIN = np.sin(2.0 * np.pi * np.arange(1440) / 1440).astype(np.float32)
_TOD_COS = np.cos(2.0 * np.pi * np.arange(1440) / 1440).astype(np.float32)


def encode_minutes(minutes: np.ndarray | float) -> np.ndarray:
    """Code in [0, 1] of a number of minutes (log scale; 1.0 = WINDOW_SCALE_MIN or more)."""
    m = np.clip(np.asarray(minutes, dtype=np.float64), 0.0, WINDOW_SCALE_MIN)
    return (np.log1p(m) / _MINUTE_LOG).astype(np.float32)


def decode_minutes(code: np.ndarray | float, whole: bool = True) -> np.ndarray:
    """Minutes of a code (float32 math; whole minutes by default, exact for codes of whole minutes)."""
    m = np.expm1(np.asarray(code, dtype=np.float32) * _MINUTE_LOG32)
    return np.rint(m) if whole else m


def encode_count(count: np.ndarray | float) -> np.ndarray:
    """Code in [0, 1] of a count or rate: log1p(x) / log1p(1e9) (float32)."""
    x = np.minimum(np.asarray(count, dtype=np.float32), np.float32(COUNT_SCALE))
    return np.log1p(x) * np.float32(1.0 / _COUNT_LOG)


def decode_count(code: np.ndarray | float, whole: bool = True) -> np.ndarray:
    n = np.expm1(np.asarray(code, dtype=np.float64) * _COUNT_LOG)
    return np.rint(n) if whole else n


def windows_action(prewarm_min: np.ndarray | float, keepalive_min: np.ndarray | float) -> np.ndarray:
    """(B, 2) float32 action for whole-minute windows; a keep-alive of inf or >= NEVER never unloads."""
    pw = np.asarray(prewarm_min, dtype=np.float64)
    ka = np.asarray(keepalive_min, dtype=np.float64)
    pw, ka = np.broadcast_arrays(pw, ka)
    out = np.empty((*pw.shape, 2), np.float32)
    out[..., 0] = encode_minutes(pw)
    out[..., 1] = np.where(ka >= NEVER, np.float32(1.0), encode_minutes(ka))
    return out


# ----------------------------------------------------------------------------- config


WORKLOADS = ("azure2019", "toy", "trace")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaaSKeepAliveConfig:
    """Configuration of FaaSKeepAlive-v0."""

    episode_minutes: int = 1440
    """Minutes per episode (one step each)."""
    warmup_minutes: int = 1440
    """Minutes of the app's history replayed before the episode (histogram and forecast only)."""
    workload: str = "azure2019"
    """'azure2019' (calibrated generator), 'toy' (periodic timer, known optimum) or 'trace' (trace_path)."""
    trace_path: str | None = None
    """A trace to replay when workload='trace': a 2021 CSV file or a folder of 2019 per-day files."""
    trace_format: str = "azure2021"
    """'azure2021' (one row per invocation) or 'azure2019' (per-function per-minute counts)."""
    cold_start_weight: float = 1.0
    """Cost of one cold start, reward units."""
    memory_weight: float = 0.05
    """Cost of one wasted GB-minute, reward units (by default a cold start costs as much as 20 GB-minutes:
    a 150 MB image kept idle for about 2.2 hours)."""
    histogram_range_min: int = 240
    """Range of the idle-time histogram in the observation, minutes (1-minute bins; beyond it: OOB)."""
    toy_period_range: tuple[int, int] = (3, 60)
    """Timer periods of the toy workload, minutes."""

    def __post_init__(self) -> None:
        check_config(self.episode_minutes >= 1, self, f"episode_minutes must be >= 1, got {self.episode_minutes}")
        check_config(self.warmup_minutes >= 0, self, f"warmup_minutes must be >= 0, got {self.warmup_minutes}")
        check_config(
            self.warmup_minutes + self.episode_minutes <= WINDOW_SCALE_MIN,
            self,
            f"warmup_minutes + episode_minutes must be <= {WINDOW_SCALE_MIN} (28 days), "
            f"got {self.warmup_minutes + self.episode_minutes}",
        )
        check_config(self.workload in WORKLOADS, self, f"workload must be one of {WORKLOADS}, got {self.workload!r}")
        if self.workload == "trace":
            check_config(self.trace_path is not None, self, "workload='trace' needs trace_path")
            check_config(
                self.trace_format in ("azure2021", "azure2019"),
                self,
                f"trace_format must be 'azure2021' or 'azure2019', got {self.trace_format!r}",
            )
            check_config(os.path.exists(str(self.trace_path)), self, f"trace_path {self.trace_path!r} does not exist")
        check_config(
            self.cold_start_weight >= 0 and self.memory_weight >= 0,
            self,
            "cold_start_weight and memory_weight must be non-negative",
        )
        check_config(
            math.isfinite(self.cold_start_weight) and math.isfinite(self.memory_weight),
            self,
            "weights must be finite",
        )
        check_config(
            2 <= self.histogram_range_min <= 1440,
            self,
            f"histogram_range_min must be in [2, 1440], got {self.histogram_range_min}",
        )
        low, high = self.toy_period_range
        check_config(1 <= low <= high, self, f"toy_period_range must satisfy 1 <= low <= high, got {(low, high)}")

    @property
    def total_minutes(self) -> int:
        return self.warmup_minutes + self.episode_minutes

    @classmethod
    def scenario(cls, name: str) -> FaaSKeepAliveConfig:
        """Named presets: 'default', 'toy_timer' (known optimum), 'two_weeks' (the paper's horizon)."""
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "toy_timer": {"workload": "toy", "warmup_minutes": 240, "episode_minutes": 480},
            "two_weeks": {"warmup_minutes": 1440, "episode_minutes": 13 * 1440},
        }
        if name not in presets:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(presets)}")
        return cls(**presets[name])


# ----------------------------------------------------------------------------- the idle-time histogram


_ALL = slice(None)


@dataclasses.dataclass
class IdleTimeHistogram:
    """Per-app histograms of idle times (1-minute bins 1..R, plus an OOB counter), batched.

    Adding an idle time is O(1) per app: the bin count, the sum of squared
    bin counts (for the CV) and, for the head (5th) and tail (99th)
    percentiles, the bin and the cumulative count through it are updated in
    place; a percentile is recomputed from its row only when the insertion
    moves it. The percentiles are nearest-rank: the smallest bin whose
    cumulative count reaches ceil(p/100 x n) (integer arithmetic, no rounding
    surprises). Trackers are separate 1-D arrays: gathering rows of 1-D
    arrays is several times faster in numpy than gathering rows of (B, 2).
    """

    counts: np.ndarray  # (B, R) int32, idle times per bin (bin j holds idle time j+1 minutes)
    n_in: np.ndarray  # (B,) int64, idle times within range
    n_oob: np.ndarray  # (B,) int64, idle times beyond the range
    sq_sum: np.ndarray  # (B,) int64, sum over bins of count^2
    head_bin: np.ndarray  # (B,) int64, bin of the 5th percentile
    head_cum: np.ndarray  # (B,) int64, cumulative count through head_bin
    tail_bin: np.ndarray  # (B,) int64, bin of the 99th percentile
    tail_cum: np.ndarray  # (B,) int64, cumulative count through tail_bin

    @classmethod
    def zeros(cls, num_envs: int, range_min: int) -> IdleTimeHistogram:
        def zeros() -> np.ndarray:
            return np.zeros(num_envs, np.int64)

        return cls(
            counts=np.zeros((num_envs, range_min), np.int32),
            n_in=zeros(),
            n_oob=zeros(),
            sq_sum=zeros(),
            head_bin=zeros(),
            head_cum=zeros(),
            tail_bin=zeros(),
            tail_cum=zeros(),
        )

    @property
    def range_min(self) -> int:
        return self.counts.shape[1]

    def _trackers(self) -> tuple[tuple[int, np.ndarray, np.ndarray], ...]:
        return ((QUANTILES_PCT[0], self.head_bin, self.head_cum), (QUANTILES_PCT[1], self.tail_bin, self.tail_cum))

    def clear(self, rows: np.ndarray) -> None:
        self.counts[rows] = 0
        for arr in (self.n_in, self.n_oob, self.sq_sum, self.head_bin, self.head_cum, self.tail_bin, self.tail_cum):
            arr[rows] = 0

    def add(self, rows: np.ndarray, idle_min: np.ndarray) -> None:
        """Record idle time ``idle_min[j]`` (whole minutes >= 1) for app ``rows[j]`` (rows distinct)."""
        if rows.size == 0:
            return
        width = self.range_min
        oob = idle_min > width
        if oob.any():
            self.n_oob[rows[oob]] += 1
            rows, idle_min = rows[~oob], idle_min[~oob]
            if rows.size == 0:
                return
        # Flat indices into the (B, R) counts: one gather and one scatter instead of 2-D fancy indexing.
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
        for pct, bins, cums in self._trackers():
            q_bin = bins[rows]
            q_cum = cums[rows] + (b <= q_bin)
            cums[rows] = q_cum
            target = (pct * n + 99) // 100
            stale |= q_cum < target
            stale |= q_cum - flat[base + q_bin] >= target
        if stale.any():
            self._recompute(rows[stale])

    def _recompute(self, rows: np.ndarray) -> None:
        cum = np.cumsum(self.counts[rows], axis=1, dtype=np.int64)
        n = self.n_in[rows]
        for pct, bins, cums in self._trackers():
            target = (pct * n + 99) // 100
            q_bin = np.argmax(cum >= target[:, None], axis=1)
            bins[rows] = q_bin
            cums[rows] = cum[np.arange(rows.size), q_bin]

    def percentile_minutes(self, q: int, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        """Head (q=0: 5th) or tail (q=1: 99th) percentile in minutes, 0 where the histogram is empty."""
        bins = self.head_bin if q == 0 else self.tail_bin
        return np.where(self.n_in[rows] > 0, bins[rows] + 1, 0)

    def cv(self, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        """Coefficient of variation of the R bin counts (0 where empty)."""
        r = self.range_min
        n = self.n_in[rows].astype(np.float64)
        mean = n / r
        var = np.maximum(self.sq_sum[rows] / r - mean * mean, 0.0)
        return np.where(n > 0, np.sqrt(var) / np.where(n > 0, mean, 1.0), 0.0)

    def oob_share(self, rows: np.ndarray | slice = _ALL) -> np.ndarray:
        total = self.n_in[rows] + self.n_oob[rows]
        return np.where(total > 0, self.n_oob[rows] / np.maximum(total, 1), 0.0)


# ----------------------------------------------------------------------------- state


@dataclasses.dataclass
class FaaSKeepAliveState:
    """State of B applications, one per sub-env."""

    # the instance (read-only within an episode)
    memory_gb: np.ndarray  # (B,) float64, memory of the loaded image, GB
    busy_minutes: np.ndarray  # (B,) int64, minutes one execution occupies (>= 1)
    proc: faas.ProcessArrays  # (B,) synthetic invocation processes (workload 'azure2019'; state inside)
    table: np.ndarray  # (B, T) int64, counts per minute (workloads 'toy' and 'trace'; T = 0 otherwise)
    # the app's dynamics
    has_run: np.ndarray  # (B,) bool, executed at least once (warm-up included)
    busy_until: np.ndarray  # (B,) int64, last minute of the latest execution (-NEVER if none)
    last_count: np.ndarray  # (B,) int64, invocations in the last minute
    loaded_last: np.ndarray  # (B,) bool, image loaded during the last minute
    rate_short: np.ndarray  # (B,) float32, EWMA of invocations/min, ~10 min
    rate_long: np.ndarray  # (B,) float32, EWMA of invocations/min, ~4 h
    hist: IdleTimeHistogram  # (B, R) idle-time histograms
    forecast_log: np.ndarray  # (B,) float64, EWMA of log(idle time, minutes); NaN before the first
    shorter: np.ndarray  # (B,) int64, in-range idle times recorded that are shorter than the current age
    # observation features that change only when an idle time is recorded, or never (float32 codes)
    obs_idle_recorded: np.ndarray  # (B,) float32, code of the idle time recorded in the last minute (0: none)
    obs_idle_times: np.ndarray  # (B,) float32, count code of idle times recorded
    obs_oob_share: np.ndarray  # (B,) float32, share of OOB idle times
    obs_cv: np.ndarray  # (B,) float32, CV of the bin counts x CV_SCALE
    obs_p5: np.ndarray  # (B,) float32, minute code of the 5th percentile
    obs_p99: np.ndarray  # (B,) float32, minute code of the 99th percentile
    obs_forecast: np.ndarray  # (B,) float32, minute code of the idle-time forecast
    obs_memory: np.ndarray  # (B,) float32, memory / MAX_MEMORY_MB
    obs_triggers: np.ndarray  # (B, 4) float32, trigger groups present (TRIGGER_GROUPS)
    # the episode's accounting
    cold: np.ndarray  # (B,) int64, cold starts this episode
    invocations: np.ndarray  # (B,) int64, invocations this episode
    wasted_gb_min: np.ndarray  # (B,) float64, wasted memory time this episode, GB-min
    loaded_idle_min: np.ndarray  # (B,) int64, minutes loaded with nothing running this episode


_TRACES: dict[tuple[str, str, float], faas.AppTrace] = {}


def cached_trace(path: str, trace_format: str) -> faas.AppTrace:
    """A trace file parsed once per process (keyed by path, format and modification time)."""
    key = (os.path.abspath(path), trace_format, os.path.getmtime(path))
    if key not in _TRACES:
        loader = faas.load_azure2021 if trace_format == "azure2021" else faas.load_azure2019
        _TRACES[key] = loader(path)
    return _TRACES[key]


class FaaSKeepAliveCore(BatchedCore[FaaSKeepAliveConfig, FaaSKeepAliveState]):
    config_cls = FaaSKeepAliveConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec(
            name="cold_start_pct",
            unit="%",
            higher_is_better=False,
            description="cold starts / invocations of the app (0 when never invoked in the episode)",
        ),
        MetricSpec(name="cold_starts", unit="starts", higher_is_better=False, description="cold starts of the app"),
        MetricSpec(name="invocations", unit="calls", higher_is_better=None, description="invocations of the app"),
        MetricSpec(
            name="wasted_gb_min",
            unit="GB-min",
            higher_is_better=False,
            description="memory loaded while nothing ran (wasted memory time)",
        ),
        MetricSpec(
            name="loaded_idle_min",
            unit="min",
            higher_is_better=False,
            description="minutes the image was loaded with nothing running",
        ),
        MetricSpec(name="memory_mb", unit="MB", higher_is_better=None, description="memory of the app's image"),
    )

    def _init_state(self) -> FaaSKeepAliveState:
        c, b = self.config, self.num_envs
        self.single_action_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        high = np.ones(len(OBS_FIELDS), np.float32)
        low = np.zeros(len(OBS_FIELDS), np.float32)
        high[OBS["cv"]] = np.float32(math.sqrt(c.histogram_range_min) * CV_SCALE)
        low[OBS["tod_sin"]] = low[OBS["tod_cos"]] = -1.0
        self.single_observation_space = spaces.Box(low, high, (len(OBS_FIELDS),), np.float32)
        self._trace = cached_trace(str(c.trace_path), c.trace_format) if c.workload == "trace" else None
        if self._trace is not None:
            self._trace_apps = np.flatnonzero(self._trace.invocations() > 0)
            if self._trace_apps.size == 0:
                raise ValueError(f"{c.trace_path}: the trace has no invoked app")
        table_minutes = c.total_minutes if c.workload in ("toy", "trace") else 0

        def codes() -> np.ndarray:
            return np.zeros(b, np.float32)

        return FaaSKeepAliveState(
            memory_gb=np.zeros(b),
            busy_minutes=np.ones(b, np.int64),
            proc=faas.ProcessArrays.zeros(b),
            table=np.zeros((b, table_minutes), np.int64),
            has_run=np.zeros(b, bool),
            busy_until=np.full(b, -NEVER, np.int64),
            last_count=np.zeros(b, np.int64),
            loaded_last=np.zeros(b, bool),
            rate_short=np.zeros(b, np.float32),
            rate_long=np.zeros(b, np.float32),
            hist=IdleTimeHistogram.zeros(b, c.histogram_range_min),
            forecast_log=np.full(b, np.nan),
            shorter=np.zeros(b, np.int64),
            obs_idle_recorded=codes(),
            obs_idle_times=codes(),
            obs_oob_share=codes(),
            obs_cv=codes(),
            obs_p5=codes(),
            obs_p99=codes(),
            obs_forecast=codes(),
            obs_memory=codes(),
            obs_triggers=np.zeros((b, 4), np.float32),
            cold=np.zeros(b, np.int64),
            invocations=np.zeros(b, np.int64),
            wasted_gb_min=np.zeros(b),
            loaded_idle_min=np.zeros(b, np.int64),
        )

    @property
    def max_episode_steps(self) -> int:
        return self.config.episode_minutes

    # ------------------------------------------------------------------ instances
    def sample_instance(self, rng: np.random.Generator) -> faas.AppProcess | faas.ToyApp | int:
        """The app a sub-env replays: a synthetic app, a toy app or a trace app index."""
        c = self.config
        if c.workload == "azure2019":
            return faas.sample_app(rng)
        if c.workload == "toy":
            return faas.sample_toy_app(rng, period_range=c.toy_period_range)
        assert self._trace is not None
        return int(self._trace_apps[int(rng.integers(0, self._trace_apps.size))])

    def _reset_envs(self, env_ids: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        s, c = self.state, self.config
        memory_mb = np.zeros(env_ids.size)
        duration_s = np.zeros(env_ids.size)
        triggers = np.zeros((env_ids.size, 4), np.float32)
        for j, (i, rng) in enumerate(zip(env_ids.tolist(), rngs)):
            app = self.sample_instance(rng)
            if isinstance(app, faas.AppProcess):
                s.proc.write(i, app)
                memory_mb[j], duration_s[j], triggers[j] = app.memory_mb, app.duration_s, app.triggers
            elif isinstance(app, faas.ToyApp):
                s.table[i] = app.counts(c.total_minutes)
                memory_mb[j], duration_s[j], triggers[j] = app.memory_mb, app.duration_s, (0, 1, 0, 0)
            else:
                trace = self._trace
                assert trace is not None
                s.table[i] = trace.dense_counts(app, 0, c.total_minutes)
                memory_mb[j], duration_s[j] = trace.memory_mb[app], trace.duration_s[app]
                triggers[j] = trace.triggers[app]
        s.memory_gb[env_ids] = memory_mb / 1024.0
        s.busy_minutes[env_ids] = np.maximum(1, np.ceil(duration_s / 60.0)).astype(np.int64)
        s.obs_memory[env_ids] = np.minimum(memory_mb / faas.MAX_MEMORY_MB, 1.0)
        s.obs_triggers[env_ids] = triggers
        s.has_run[env_ids] = False
        s.busy_until[env_ids] = -NEVER
        s.last_count[env_ids] = 0
        s.loaded_last[env_ids] = False
        s.rate_short[env_ids] = 0.0
        s.rate_long[env_ids] = 0.0
        s.hist.clear(env_ids)
        s.forecast_log[env_ids] = np.nan
        s.shorter[env_ids] = 0
        for codes in (s.obs_idle_recorded, s.obs_idle_times, s.obs_oob_share, s.obs_cv, s.obs_p5, s.obs_p99):
            codes[env_ids] = 0.0
        s.obs_forecast[env_ids] = 0.0
        if c.warmup_minutes:
            self._warm_up(env_ids)
        s.cold[env_ids] = 0
        s.invocations[env_ids] = 0
        s.wasted_gb_min[env_ids] = 0.0
        s.loaded_idle_min[env_ids] = 0

    def _warm_up(self, env_ids: np.ndarray) -> None:
        """Replay the warm-up minutes of the listed apps (no policy): history for histogram and forecast."""
        sub = _take_rows(self.state, env_ids)
        rows = np.arange(env_ids.size)
        for t in range(self.config.warmup_minutes):
            minute = np.full(env_ids.size, t, np.int64)
            _advance(sub, minute, self._counts(sub, minute, rows))
        _put_rows(self.state, env_ids, sub)

    def _counts(self, s: FaaSKeepAliveState, minute: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Invocations in each row's minute ``minute``; advances the synthetic processes."""
        if self.config.workload == "azure2019":
            return faas.process_counts(s.proc, minute)
        return s.table[rows, minute]

    def minute(self) -> np.ndarray:
        """(B,) the minute each app is about to live (warm-up included)."""
        return self.config.warmup_minutes + self.stats.length

    def upcoming_invocations(self) -> np.ndarray:
        """(B,) invocations of the minute about to be stepped: hindsight, for the oracle only."""
        s = self.state
        if self.config.workload != "azure2019":
            minute = np.minimum(self.minute(), s.table.shape[1] - 1)
            return s.table[self._env_index, minute]
        saved = (s.proc.burst_on.copy(), s.proc.next_timer.copy(), s.proc.next_client.copy())
        counts = faas.process_counts(s.proc, self.minute())
        s.proc.burst_on, s.proc.next_timer, s.proc.next_client = saved
        return counts

    # ------------------------------------------------------------------ stepping
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c = self.state, self.config
        minute = self.minute()
        prewarm = decode_minutes(actions[:, 0]).astype(np.int64)
        keepalive = decode_minutes(actions[:, 1]).astype(np.int64)
        keepalive[actions[:, 1] >= 1.0] = NEVER
        counts = self._counts(s, minute, self._env_index)
        cold, warm, wasted = _advance(s, minute, counts, prewarm, keepalive)
        s.cold += cold
        s.invocations += counts
        s.wasted_gb_min += wasted
        s.loaded_idle_min += wasted > 0
        reward = -(c.cold_start_weight * cold + c.memory_weight * wasted)
        info = {"cold_starts": cold, "warm_starts": warm, "invocations": counts, "wasted_gb_min": wasted}
        none = np.zeros(self.num_envs, bool)
        return reward, none, none, info

    def observe(self) -> np.ndarray:
        """(B, F) float32; built feature-major (one contiguous row per feature) and returned transposed."""
        s = self.state
        minute = self.minute()
        age = minute - s.busy_until
        out = np.empty((len(OBS_FIELDS), self.num_envs), np.float32)
        np.take(MINUTE_CODES, np.clip(age, 0, WINDOW_SCALE_MIN), out=out[OBS["age"]])
        out[OBS["has_run"]] = s.has_run
        out[OBS["busy"]] = age <= 0
        out[OBS["loaded_last"]] = s.loaded_last
        out[OBS["invoked_last"]] = s.last_count > 0
        out[OBS["count_last"]] = encode_count(s.last_count)
        out[OBS["rate_10min"]] = encode_count(s.rate_short)
        out[OBS["rate_4h"]] = encode_count(s.rate_long)
        first = int(minute[0])
        if (minute == first).all():  # the usual case: every app lives the same minute
            out[OBS["tod_sin"]] = _TOD_SIN[first % 1440]
            out[OBS["tod_cos"]] = _TOD_COS[first % 1440]
        else:
            tod = minute % 1440
            np.take(_TOD_SIN, tod, out=out[OBS["tod_sin"]])
            np.take(_TOD_COS, tod, out=out[OBS["tod_cos"]])
        out[OBS["idle_recorded"]] = s.obs_idle_recorded
        # Empirical hazard and survival of the current idle period from the app's own histogram.
        h = s.hist
        width = h.range_min
        in_range = (age >= 1) & (age <= width)
        rows = np.flatnonzero(in_range)
        at_age = np.zeros(self.num_envs, np.float32)
        at_age[rows] = h.counts.reshape(-1)[rows * width + age[rows] - 1]
        surviving = np.where(in_range, h.n_in - s.shorter, 0).astype(np.float32)
        out[OBS["idle_hazard"]] = at_age / np.maximum(surviving, 1.0)
        out[OBS["idle_survival"]] = surviving / np.maximum(h.n_in + h.n_oob, 1).astype(np.float32)
        out[OBS["idle_times"]] = s.obs_idle_times
        out[OBS["oob_share"]] = s.obs_oob_share
        out[OBS["cv"]] = s.obs_cv
        out[OBS["p5"]] = s.obs_p5
        out[OBS["p99"]] = s.obs_p99
        out[OBS["idle_forecast"]] = s.obs_forecast
        out[OBS["memory"]] = s.obs_memory
        out[OBS["trigger_http"] : OBS["trigger_other"] + 1] = s.obs_triggers.T
        return out.T

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s = self.state
        inv = s.invocations[env_ids]
        cold = s.cold[env_ids]
        return {
            "cold_start_pct": np.where(inv > 0, 100.0 * cold / np.maximum(inv, 1), 0.0),
            "cold_starts": cold.astype(np.float64),
            "invocations": inv.astype(np.float64),
            "wasted_gb_min": s.wasted_gb_min[env_ids].copy(),
            "loaded_idle_min": s.loaded_idle_min[env_ids].astype(np.float64),
            "memory_mb": s.memory_gb[env_ids] * 1024.0,
        }


def _advance(
    s: FaaSKeepAliveState,
    minute: np.ndarray,
    counts: np.ndarray,
    prewarm: np.ndarray | None = None,
    keepalive: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Live one minute of every row of ``s``: (cold starts, warm starts, wasted GB-min) per row.

    Without windows (the warm-up) nothing is loaded or wasted: only the
    app's history (histogram, forecast, rates, last execution) moves.
    """
    invoked = counts > 0
    busy = s.busy_until >= minute
    age = minute - s.busy_until
    if prewarm is not None and keepalive is not None:
        loaded = age >= prewarm
        loaded &= age - prewarm <= keepalive
        loaded &= s.has_run
        loaded |= busy
        cold = invoked & ~loaded
        idle_loaded = loaded & ~invoked
        idle_loaded &= ~busy
        wasted = s.memory_gb * idle_loaded
        s.loaded_last = loaded | invoked
        cold_count = cold.astype(np.int64)
    else:
        cold_count = np.zeros(counts.shape, np.int64)
        wasted = np.zeros(counts.shape)
        s.loaded_last = invoked | busy
    warm = counts - cold_count
    record = invoked & ~busy
    record &= s.has_run
    rows = np.flatnonzero(record)
    s.obs_idle_recorded[:] = 0.0
    if rows.size:
        idle = age[rows]
        s.hist.add(rows, idle)
        log_idle = np.log(idle.astype(np.float64))
        previous = s.forecast_log[rows]
        forecast = np.where(np.isnan(previous), log_idle, (1.0 - FORECAST_ALPHA) * previous + FORECAST_ALPHA * log_idle)
        s.forecast_log[rows] = forecast
        h = s.hist
        s.obs_idle_recorded[rows] = MINUTE_CODES[np.minimum(idle, WINDOW_SCALE_MIN)]
        total = h.n_in[rows] + h.n_oob[rows]
        s.obs_idle_times[rows] = encode_count(total)
        s.obs_oob_share[rows] = h.n_oob[rows] / total
        s.obs_cv[rows] = h.cv(rows) * CV_SCALE
        s.obs_p5[rows] = MINUTE_CODES[h.percentile_minutes(0, rows)]
        s.obs_p99[rows] = MINUTE_CODES[h.percentile_minutes(1, rows)]
        s.obs_forecast[rows] = encode_minutes(np.exp(forecast))
    # Idle minutes move the age on: idle times equal to the age just lived become shorter than the next one.
    still_idle = ~invoked
    still_idle &= ~busy
    still_idle &= s.has_run
    still_idle &= age <= s.hist.range_min
    waiting = np.flatnonzero(still_idle)
    s.shorter[~still_idle] = 0
    s.shorter[waiting] += s.hist.counts.reshape(-1)[waiting * s.hist.range_min + age[waiting] - 1]
    ran = np.flatnonzero(invoked)
    s.busy_until[ran] = np.maximum(s.busy_until[ran], minute[ran] + s.busy_minutes[ran] - 1)
    s.has_run |= invoked
    s.last_count = counts
    delta = counts.astype(np.float32)
    delta -= s.rate_short
    delta *= SHORT_RATE_ALPHA
    s.rate_short += delta
    delta = counts.astype(np.float32)
    delta -= s.rate_long
    delta *= LONG_RATE_ALPHA
    s.rate_long += delta
    return cold_count, warm, wasted


def _take_rows(obj: Any, rows: np.ndarray) -> Any:
    """A copy of a dataclass tree of B-first arrays restricted to ``rows``."""
    values = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            values[field.name] = value[rows]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            values[field.name] = _take_rows(value, rows)
        else:
            values[field.name] = value
    return type(obj)(**values)


def _put_rows(obj: Any, rows: np.ndarray, sub: Any) -> None:
    """Write the rows of ``sub`` (from :func:`_take_rows`) back into ``obj``, in place."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            value[rows] = getattr(sub, field.name)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _put_rows(value, rows, getattr(sub, field.name))


class FaaSKeepAliveVectorEnv(CloudGymVectorEnv):
    core_cls = FaaSKeepAliveCore


class FaaSKeepAliveEnv(CloudGymEnv):
    core_cls = FaaSKeepAliveCore
