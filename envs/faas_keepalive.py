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
The paper's Figure 15 (cold starts against wasted memory for fixed and hybrid
keep-alive), what of it reproduces and why: ``docs/faas_keepalive.md``.

Before the episode, ``warmup_minutes`` of the same app's history are replayed
without a policy: the histogram and the forecast start from that history, as
a platform's would. Every cold start, invocation and wasted GB-minute of the
episode itself is counted.

The synthetic workload is event driven (:class:`~cloudgym.envs.workloads.faas.ProcessArrays`):
each app's next event (timer, next invoked minute of its renewal stream;
hand-made apps also a candidate minute of a Poisson stream or a switch of a
burst chain) is known, so a minute touches only
the apps with an event and the ~20% of apps that are invoked; the dynamics,
histograms and observation features are updated sparsely for those apps,
with a few whole-batch array operations per minute for the rest.

## Fleets under a memory budget (``apps_per_fleet``, ``memory_budget_gb``, ``eviction``)
With ``apps_per_fleet = K > 1`` a sub-env is a fleet of K apps drawn one
after another from its seed (observation (K, F), action (K, A), reward and
info summed over the fleet, metrics per fleet). With ``memory_budget_gb``
set, the images loaded in a minute must fit the budget together (in whole
KiB: an app's memory rounded up). Images claim the budget in this order:
(0) running executions and invoked images already loaded (they were loaded
last minute, so they fit), (1) invoked images that must be loaded, (2) idle
images the windows keep or pre-warm; within a class by the eviction priority
(highest first; all equal with ``eviction='lru'``), then most recently used,
then slot; each is admitted if it fits in what is left. An idle image that
does not fit is **evicted** (counted; if it was loaded) or its pre-warm is
refused (counted in info), and it stays unloaded until its next invocation.
An invoked image that does not fit is **rejected**: all its invocations of
the minute are counted as rejected (neither cold nor warm), run nowhere and
cost ``cold_start_weight`` each. The episode starts with every image
unloaded (executions of the warm-up end with it). ``eviction='policy'`` adds
a third action component per app: its keep priority in [0, 1]. The
observation gets two fields per app: ``evicted`` (1 while the image is
evicted) and ``budget_used`` (the fleet's loaded memory in the last minute /
the budget). The ``fleet`` scenario: 16 apps sharing 2 GB.

## Action Space
``Box(0, 1, (2,), float32)`` ((K, 2) for a fleet, (.., 3) with ``eviction='policy'``:
the third component is the keep priority): (pre-warm, keep-alive), each encoded on a log
scale, minutes = round(expm1(x * log1p(WINDOW_SCALE_MIN))), so that 1, 10,
100 and 1000 minutes are equally easy to express and every whole minute up
to 28 days is exact (:func:`encode_minutes` gives the code of a number of
minutes). A keep-alive of exactly 1.0 means "never unload". A continuous
encoding, rather than a menu, lets the hybrid policy's exact windows (any
whole minute) and a learned policy share one space.

## Observation Space
``Box(low, high, (24,), float32)`` ((K, 24) for a fleet, 26 fields with a budget): minutes are encoded as actions are
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
| evicted            | (with a budget) 1 while the image is evicted (until the next invocation)     |
| budget_used        | (with a budget) the fleet's loaded memory in the last minute / the budget    |

## Rewards
``-(cold_start_weight x cold starts + memory_weight x wasted GB-minutes)`` of
the minute. The weights are config fields: sweeping their ratio traces the
cold-start vs memory Pareto curve. ``info`` carries the minute's
``cold_starts``, ``warm_starts``, ``invocations`` and ``wasted_gb_min``; with a
budget also ``rejected_invocations`` (which cost ``cold_start_weight`` each),
``evictions``, ``prewarms_denied`` and ``loaded_gb``.

## Starting State
An app drawn by the workload from the sub-env's seed, after ``warmup_minutes``
of history; the image is loaded iff the policy's first windows say so.

## Episode End
Truncated after ``episode_minutes`` minutes (the app lives on).

## Arguments
``gym.make("FaaSKeepAlive-v0", memory_weight=0.1, ...)``: any field of
:class:`FaaSKeepAliveConfig` (``workload`` names one of :data:`GENERATORS`); ``scenario="toy_timer"``,
``"two_weeks"`` or ``"fleet"`` picks a preset (:attr:`FaaSKeepAliveConfig.SCENARIOS`).

## Version History
* v0: initial version (the fleet option, event-driven workload and sparse dynamics came before any release).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core import tree
from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, ScenarioPresets, check_config
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields
from cloudgym.envs.numerics import NEVER
from cloudgym.envs.workloads import faas
from cloudgym.envs.workloads.faas_histogram import IdleTimeHistogram
from cloudgym.envs.workloads.traces import find_trace

WINDOW_SCALE_MIN = 40320
"""Minutes that encode to 1.0 (28 days): the top of the log scale of windows and ages."""
_MINUTE_LOG = math.log1p(WINDOW_SCALE_MIN)
_MINUTE_LOG32 = np.float32(_MINUTE_LOG)
COUNT_SCALE = 1e9
_COUNT_LOG = math.log1p(COUNT_SCALE)
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
BUDGET_OBS_FIELDS = ("evicted", "budget_used")
"""Fields appended to each app's observation when the sub-env has a memory budget."""
OBS = {name: i for i, name in enumerate(OBS_FIELDS + BUDGET_OBS_FIELDS)}
"""Index of each observation field."""
PREWARM, KEEPALIVE, PRIORITY = 0, 1, 2
"""Index of each action component (PRIORITY only with eviction='policy')."""

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


def batched_action(core: Any, codes: np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """A policy's per-app (N, 2) window codes as the env's batched action: (B, 2), (B, K, 2), or with priority.

    ``core`` is the env's :class:`FaaSKeepAliveCore` (``env.core``). Under
    ``eviction='policy'`` the third component is ``priority`` (in [0, 1];
    default 0 for every app: all ties, so the env evicts least recently used
    first, the 'lru' order).
    """
    shape = (core.num_envs, *core.single_action_space.shape)
    if shape[-1] == 2:
        return np.array(codes, np.float32).reshape(shape)
    out = np.zeros((codes.shape[0], shape[-1]), np.float32)
    out[:, :2] = codes
    if priority is not None:
        out[:, PRIORITY] = priority
    return out.reshape(shape)


# ----------------------------------------------------------------------------- config


EVICTIONS = ("lru", "policy")

GENERATORS: Mapping[str, Callable[[FaaSKeepAliveConfig], faas.FleetGenerator[Any]]] = {
    "azure2019": lambda c: faas.SyntheticFleetGenerator(apps_per_fleet=c.apps_per_fleet),
    "toy": lambda c: faas.ToyTimerFleetGenerator(
        minutes=c.total_minutes, period_range=c.toy_period_range, apps_per_fleet=c.apps_per_fleet
    ),
    "trace": lambda c: faas.TraceFleetGenerator.from_file(
        str(c.trace_path), c.trace_format, minutes=c.total_minutes, apps_per_fleet=c.apps_per_fleet
    ),
}
"""The generator of each ``workload``: the calibrated synthetic apps, toy timers (known optimum), a trace."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaaSKeepAliveConfig(ScenarioPresets):
    """Configuration of FaaSKeepAlive-v0."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {},
        "toy_timer": {"workload": "toy", "warmup_minutes": 240, "episode_minutes": 480},  # known optimum
        "two_weeks": {"warmup_minutes": 1440, "episode_minutes": 13 * 1440},  # the paper's horizon
        # 16 apps sharing 2 GB, evicted by the policy's priority (LRU for policies that give none)
        "fleet": {"apps_per_fleet": 16, "memory_budget_gb": 2.0, "eviction": "policy"},
    }

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
    apps_per_fleet: int = 1
    """Applications per sub-env. 1: a sub-env is one app (observation (F,), action (A,)); K > 1: a fleet of K
    apps drawn from the sub-env's seed (observation (K, F), action (K, A)), sharing ``memory_budget_gb``."""
    memory_budget_gb: float | None = None
    """Memory the loaded images of a sub-env may occupy together, GB (None: unlimited). When they would
    exceed it, idle images are evicted in the ``eviction`` order (see the docstring's Fleets section)."""
    eviction: str = "lru"
    """Eviction order under a budget: 'lru' (least recently used idle image first) or 'policy' (a third
    action component per app is its keep priority in [0, 1]: the lowest is evicted first, ties LRU)."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Minutes index the 28-day window scale (episode + warm-up within it, checked below).
        "episode_minutes": at_least(1, WINDOW_SCALE_MIN),
        "warmup_minutes": at_least(0, WINDOW_SCALE_MIN),
        # Weights far beyond any sensible trade-off, still finite summed over an episode.
        "cold_start_weight": at_least(0, 1e6),
        "memory_weight": at_least(0, 1e6),
        "histogram_range_min": at_least(2, 1440, why="1-minute bins up to a day"),
        "toy_period_range": at_least(1, WINDOW_SCALE_MIN),
        "apps_per_fleet": at_least(1, 4096, why="apps of one sub-env's state"),
        "memory_budget_gb": Range(1e-3, 1e6, why="at least 1 MB: the budget is counted in whole kB"),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        check_config(
            self.warmup_minutes + self.episode_minutes <= WINDOW_SCALE_MIN,
            self,
            f"warmup_minutes + episode_minutes must be <= {WINDOW_SCALE_MIN} (28 days), "
            f"got {self.warmup_minutes + self.episode_minutes}",
        )
        known = tuple(GENERATORS)
        check_config(self.workload in known, self, f"workload must be one of {known}, got {self.workload!r}")
        check_config(
            self.trace_format in faas.TRACE_FORMATS,
            self,
            f"trace_format must be one of {faas.TRACE_FORMATS}, got {self.trace_format!r}",
        )
        if self.workload == "trace":
            check_config(self.trace_path is not None, self, "workload='trace' needs trace_path")
            try:  # found as the loader will find it: never relative to the working directory
                find_trace(str(self.trace_path))
            except FileNotFoundError as missing:
                raise ValueError(f"{type(self).__name__}.trace_path: {missing}") from None
        low, high = self.toy_period_range
        check_config(low <= high, self, f"toy_period_range must satisfy 1 <= low <= high, got {(low, high)}")
        check_config(self.eviction in EVICTIONS, self, f"eviction must be one of {EVICTIONS}, got {self.eviction!r}")

    @property
    def total_minutes(self) -> int:
        return self.warmup_minutes + self.episode_minutes

    @property
    def has_budget(self) -> bool:
        return self.memory_budget_gb is not None

    @property
    def policy_evicts(self) -> bool:
        """The action carries an eviction priority per app (else a full budget evicts least recently used)."""
        return self.eviction == "policy"


# ----------------------------------------------------------------------------- state


@dataclasses.dataclass
class AppState:
    """State of applications. In the env's state every array is (B, K, ...) (K = apps_per_fleet apps per
    sub-env); the core steps flat (N = B x K, ...) views of the same memory (``FaaSKeepAliveCore.apps``)."""

    # the instance (read-only within an episode)
    memory_gb: np.ndarray  # (B, K) float64, memory of the loaded image, GB
    memory_kb: np.ndarray  # (B, K) int64, the same rounded up to whole KiB (exact budget arithmetic)
    busy_minutes: np.ndarray  # (B, K) int64, minutes one execution occupies (>= 1)
    source: faas.InvocationSource[Any]  # (B, K, ...) the apps' invocations (ProcessArrays or CountTable)
    # the app's dynamics
    has_run: np.ndarray  # (B, K) bool, executed at least once (warm-up included)
    busy_until: np.ndarray  # (B, K) int64, last minute of the latest execution (-NEVER if none)
    loaded_last: np.ndarray  # (B, K) bool, image loaded during the last minute
    evicted: np.ndarray  # (B, K) bool, image evicted for the budget and not invoked since (kept unloaded)
    rate_short: np.ndarray  # (B, K) float32, EWMA of invocations/min, ~10 min
    rate_long: np.ndarray  # (B, K) float32, EWMA of invocations/min, ~4 h
    hist: IdleTimeHistogram  # (B, K, R) idle-time histograms
    forecast_log: np.ndarray  # (B, K) float64, EWMA of log(idle time, minutes); NaN before the first
    shorter: np.ndarray  # (B, K) int64, in-range idle times recorded that are shorter than the current age
    at_age: np.ndarray  # (B, K) int64, idle times recorded equal to the coming minute's age (0 out of range)
    in_range: np.ndarray  # (B, K) bool, the coming minute's age is within the histogram's range (1..R)
    # observation features kept in the state (float32 codes), updated only when they change
    obs_count_last: np.ndarray  # (B, K) float32, count code of the last minute's invocations
    obs_idle_recorded: np.ndarray  # (B, K) float32, code of the idle time recorded in the last minute (0: none)
    obs_idle_times: np.ndarray  # (B, K) float32, count code of idle times recorded
    obs_oob_share: np.ndarray  # (B, K) float32, share of OOB idle times
    obs_cv: np.ndarray  # (B, K) float32, CV of the bin counts x CV_SCALE
    obs_p5: np.ndarray  # (B, K) float32, minute code of the 5th percentile
    obs_p99: np.ndarray  # (B, K) float32, minute code of the 99th percentile
    obs_forecast: np.ndarray  # (B, K) float32, minute code of the idle-time forecast
    obs_memory: np.ndarray  # (B, K) float32, memory / MAX_MEMORY_MB
    obs_trigger_http: np.ndarray  # (B, K) float32, 1 if the app has HTTP functions (TRIGGER_GROUPS)
    obs_trigger_timer: np.ndarray  # (B, K) float32, 1 if it has timer functions
    obs_trigger_queue_like: np.ndarray  # (B, K) float32, 1 if it has queue, storage or event functions
    obs_trigger_other: np.ndarray  # (B, K) float32, 1 if it has other functions
    inv_idle_times: np.ndarray  # (B, K) float32, 1 / max(idle times recorded, 1) (for the survival feature)

    def triggers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The trigger group features, in TRIGGER_GROUPS order."""
        return (self.obs_trigger_http, self.obs_trigger_timer, self.obs_trigger_queue_like, self.obs_trigger_other)

    @classmethod
    def zeros(cls, shape: tuple[int, ...], range_min: int, source: faas.InvocationSource[Any]) -> AppState:
        """Apps that have never run: also the state every app restarts from at reset."""

        def z(dtype: Any = np.int64) -> np.ndarray:
            return np.zeros(shape, dtype)

        f32 = np.float32
        return cls(
            memory_gb=z(np.float64),
            memory_kb=z(),
            busy_minutes=np.ones(shape, np.int64),
            source=source,
            has_run=z(bool),
            busy_until=np.full(shape, -NEVER, np.int64),
            loaded_last=z(bool),
            evicted=z(bool),
            rate_short=z(f32),
            rate_long=z(f32),
            hist=IdleTimeHistogram.zeros(shape, range_min),
            forecast_log=np.full(shape, np.nan),
            shorter=z(),
            at_age=z(),
            in_range=z(bool),
            obs_count_last=z(f32),
            obs_idle_recorded=z(f32),
            obs_idle_times=z(f32),
            obs_oob_share=z(f32),
            obs_cv=z(f32),
            obs_p5=z(f32),
            obs_p99=z(f32),
            obs_forecast=z(f32),
            obs_memory=z(f32),
            obs_trigger_http=z(f32),
            obs_trigger_timer=z(f32),
            obs_trigger_queue_like=z(f32),
            obs_trigger_other=z(f32),
            inv_idle_times=np.ones(shape, f32),
        )


@dataclasses.dataclass
class AppCounters:
    """The episode's accounting per app (the base zeroes it at every reset); (B, K) in the state, flat to step."""

    cold: np.ndarray  # (B, K) int64, cold starts this episode
    invocations: np.ndarray  # (B, K) int64, invocations this episode (cold + warm + rejected)
    rejected: np.ndarray  # (B, K) int64, invocations rejected: no room in the budget to load the image
    wasted_gb_min: np.ndarray  # (B, K) float64, wasted memory time this episode, GB-min
    loaded_idle_min: np.ndarray  # (B, K) int64, minutes loaded with nothing running this episode
    evictions: np.ndarray  # (B, K) int64, loaded idle images evicted for the budget
    prewarms_denied: np.ndarray  # (B, K) int64, pre-warms (window opening) refused for the budget

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> AppCounters:
        values = {f.name: np.zeros(shape, np.int64) for f in dataclasses.fields(cls)}
        return cls(**{**values, "wasted_gb_min": np.zeros(shape)})


@dataclasses.dataclass
class FaaSKeepAliveState:
    """State of B sub-envs of K applications each."""

    apps: AppState  # (B, K, ...) per-application state
    counters: AppCounters  # (B, K) per-application episode accounting
    fleet_loaded_kb: np.ndarray  # (B,) int64, memory of the images loaded during the last minute, KiB


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaaSKeepAliveParams(CoreParams):
    """What FaaSKeepAlive-v0 derives once from its config (and its number of sub-envs)."""

    generator: faas.FleetGenerator[Any]
    """Makes a sub-env's K apps for an episode, and the state's source of their invocations."""
    apps_per_fleet: int
    """K, applications per sub-env."""
    policy_evicts: bool
    """The action carries an eviction priority per app (eviction='policy'); else the budget evicts LRU."""
    num_obs_fields: int
    """F, fields of an app's observation (24; 26 with a budget)."""
    budget_kb: int
    """A fleet's memory budget in whole KiB: int64 arithmetic keeps "never above the budget" exact (0: none)."""
    hist_base: np.ndarray  # (N,) int64, start of each app's row in the flattened (N, R) histogram counts


@dataclasses.dataclass
class MinuteOutcome:
    """What one minute did to each app (flat (N,) arrays)."""

    cold: np.ndarray  # (N,) int64, cold starts (0 or 1)
    invocations: np.ndarray  # (N,) int64, invocations (cold + warm + rejected)
    rejected: np.ndarray  # (N,) int64, invocations rejected for the budget
    wasted_gb_min: np.ndarray  # (N,) float64, wasted memory
    evictions: np.ndarray | None  # (N,) int64 with a budget, else None
    prewarms_denied: np.ndarray | None  # (N,) int64 with a budget, else None


METRICS = (
    MetricSpec(
        name="cold_start_pct",
        unit="%",
        higher_is_better=False,
        description="cold starts / invocations of the app (of the fleet's apps; 0 when never invoked)",
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
    MetricSpec(
        name="evictions",
        unit="evictions",
        higher_is_better=False,
        description="idle images evicted to stay within the memory budget (0 without a budget)",
    ),
    MetricSpec(
        name="rejected_invocations",
        unit="calls",
        higher_is_better=False,
        description="invocations rejected: the budget had no room to load the image (0 without a budget)",
    ),
)
"""What an episode reports per sub-env (a fleet's values are sums over its apps)."""


# ----------------------------------------------------------------------------- dynamics of one minute


def serve_minute(
    s: AppState,
    counters: AppCounters,
    age: np.ndarray,
    invoked: np.ndarray,
    counts: np.ndarray,
    prewarm: np.ndarray,
    keepalive: np.ndarray,
) -> MinuteOutcome:
    """Load the images the windows ask for and serve the invocations (no budget): cold starts and waste.

    At age a the image is loaded iff PW <= a <= PW + KA (or the app is
    executing); an invoked app whose image is not loaded pays one cold start.
    """
    busy = age <= 0
    loaded = age >= prewarm
    loaded &= (age - prewarm) <= keepalive
    loaded &= s.has_run
    loaded |= busy
    return _account(s, counters, loaded, loaded, busy, invoked, counts, np.zeros(age.size, np.int64), None, None)


def serve_minute_in_budget(
    s: AppState,
    counters: AppCounters,
    fleet_loaded_kb: np.ndarray,
    budget_kb: int,
    age: np.ndarray,
    invoked: np.ndarray,
    counts: np.ndarray,
    prewarm: np.ndarray,
    keepalive: np.ndarray,
    priority: np.ndarray | None,
) -> tuple[MinuteOutcome, np.ndarray, np.ndarray]:
    """:func:`serve_minute` for fleets under a memory budget: (outcome, apps invoked and served, their counts).

    Images claim the budget in this order: (0) running executions and
    invoked images already loaded (they fit: they were loaded last minute,
    within the budget), (1) invoked images that must be loaded, (2) idle
    images the windows keep or pre-warm; within a class by the eviction
    priority (highest first), then most recently used, then slot. Each is
    admitted if it fits in what is left (greedy, in that order). An invoked
    image that does not fit is rejected (all its invocations of the minute;
    removed from the invoked apps); an idle one is evicted (if it was
    loaded) or its pre-warm refused, and it stays unloaded until its next
    invocation.
    """
    busy = age <= 0
    loaded = age >= prewarm
    loaded &= (age - prewarm) <= keepalive
    loaded &= s.has_run
    loaded &= ~s.evicted
    loaded |= busy
    b, n = fleet_loaded_kb.size, age.size
    was_invoked = np.zeros(n, bool)
    was_invoked[invoked] = True
    resident = busy | (was_invoked & s.loaded_last)
    new_load = was_invoked & ~resident
    idle_want = loaded & ~busy & ~was_invoked
    admitted = _admit(s, budget_kb, b, resident, new_load, idle_want, priority)
    rejected = np.zeros(n, np.int64)
    lost = (new_load & ~admitted)[invoked]
    rejected[invoked[lost]] = counts[lost]
    invoked, counts = invoked[~lost], counts[~lost]
    dropped = idle_want & ~admitted
    evictions = (dropped & s.loaded_last).astype(np.int64)
    denied = (dropped & ~s.loaded_last).astype(np.int64)
    s.evicted |= dropped
    s.evicted[invoked] = False  # an invocation that loads the image ends its eviction
    counters.evictions += evictions
    counters.prewarms_denied += denied
    counters.rejected += rejected
    fleet_loaded_kb[...] = np.where(admitted, s.memory_kb, 0).reshape(b, -1).sum(axis=1)
    # The window (or the budget's eviction) decides the cold starts; what was admitted is what is loaded.
    outcome = _account(s, counters, loaded, admitted, busy, invoked, counts, rejected, evictions, denied)
    return outcome, invoked, counts


def _admit(
    s: AppState,
    budget_kb: int,
    num_fleets: int,
    resident: np.ndarray,
    new_load: np.ndarray,
    idle_want: np.ndarray,
    priority: np.ndarray | None,
) -> np.ndarray:
    """(N,) images admitted within each fleet's budget: all it wants where that fits, else greedily by class."""
    k = resident.size // num_fleets
    wanted = resident | new_load | idle_want
    demand = np.where(wanted, s.memory_kb, 0).reshape(num_fleets, k).sum(axis=1)
    admitted = wanted.copy()
    over = np.flatnonzero(demand > budget_kb)
    if over.size:
        rows = (over[:, None] * k + np.arange(k)).reshape(-1)
        klass = np.full(rows.size, 3, np.int8)
        klass[idle_want[rows]] = 2
        klass[new_load[rows]] = 1
        klass[resident[rows]] = 0
        keep = np.zeros(rows.size, np.float32) if priority is None else priority[rows]
        fleet = np.repeat(np.arange(over.size), k)
        slot = np.tile(np.arange(k), over.size)
        order = np.lexsort((slot, -s.busy_until[rows], -keep, klass, fleet)).reshape(over.size, k)
        memory = s.memory_kb[rows]
        take = klass == 0
        used = np.where(take, memory, 0).reshape(over.size, k).sum(axis=1)
        for j in range(k):  # a loop over the K slots of every fleet at once (never over B)
            pos = order[:, j]
            fits = (klass[pos] == 1) | (klass[pos] == 2)
            fits &= used + memory[pos] <= budget_kb
            take[pos] |= fits
            used += np.where(fits, memory[pos], 0)
        admitted[rows] = take
    return admitted


def _account(
    s: AppState,
    counters: AppCounters,
    loaded: np.ndarray,
    admitted: np.ndarray,
    busy: np.ndarray,
    invoked: np.ndarray,
    counts: np.ndarray,
    rejected: np.ndarray,
    evictions: np.ndarray | None,
    denied: np.ndarray | None,
) -> MinuteOutcome:
    """Cold starts, wasted memory and the episode's counters of a minute.

    ``loaded``: what the windows had loaded (an invoked app not in it is a
    cold start); ``admitted``: what is loaded after the budget (the same
    without one), which wastes memory where nothing runs.
    """
    n = loaded.size
    cold_invoked = ~loaded[invoked]  # the window (or the budget's eviction) had the image unloaded
    cold = np.zeros(n, np.int64)
    cold[invoked] = cold_invoked
    idle = admitted & ~busy
    idle[invoked] = False
    wasted = s.memory_gb * idle
    s.loaded_last[...] = admitted
    s.loaded_last[invoked] = True
    counters.cold[invoked] += cold_invoked
    all_counts = rejected.copy()
    all_counts[invoked] += counts
    counters.invocations += all_counts
    counters.wasted_gb_min += wasted
    counters.loaded_idle_min += idle
    return MinuteOutcome(cold, all_counts, rejected, wasted, evictions, denied)


def remember_minute(
    s: AppState, minute: np.ndarray | int, age: np.ndarray, invoked: np.ndarray, counts: np.ndarray
) -> None:
    """The app's history after a minute: idle times that ended (histogram, forecast), rates, last execution."""
    s.obs_idle_recorded[...] = 0.0
    s.obs_count_last[...] = 0.0
    if invoked.size:
        at = minute if np.ndim(minute) == 0 else np.asarray(minute)[invoked]
        record = invoked[(age[invoked] > 0) & s.has_run[invoked]]
        if record.size:
            record_idle_times(s, record, age[record])
        s.busy_until[invoked] = np.maximum(s.busy_until[invoked], at + s.busy_minutes[invoked] - 1)
        s.has_run[invoked] = True
        s.obs_count_last[invoked] = encode_count(counts)
    s.rate_short *= np.float32(1.0) - SHORT_RATE_ALPHA
    s.rate_long *= np.float32(1.0) - LONG_RATE_ALPHA
    if invoked.size:
        arrivals = counts.astype(np.float32)
        s.rate_short[invoked] += SHORT_RATE_ALPHA * arrivals
        s.rate_long[invoked] += LONG_RATE_ALPHA * arrivals


def record_idle_times(s: AppState, rows: np.ndarray, idle: np.ndarray) -> None:
    """Add the idle times that just ended to the histograms and forecasts, and refresh their features."""
    h = s.hist
    h.add(rows, idle)
    log_idle = np.log(idle.astype(np.float64))
    forecast = s.forecast_log[rows]
    first = np.isnan(forecast)
    forecast *= 1.0 - FORECAST_ALPHA
    forecast += FORECAST_ALPHA * log_idle
    np.copyto(forecast, log_idle, where=first)
    s.forecast_log[rows] = forecast
    s.obs_idle_recorded[rows] = MINUTE_CODES[np.minimum(idle, WINDOW_SCALE_MIN)]
    # Each per-app count is gathered once (the rows are ~20% of the apps every minute).
    n_in, oob = h.n_in[rows], h.n_oob[rows]
    total = n_in + oob
    s.obs_idle_times[rows] = encode_count(total)
    s.obs_oob_share[rows] = oob / total
    s.inv_idle_times[rows] = np.float32(1.0) / total.astype(np.float32)
    s.obs_cv[rows] = h.cv_of(n_in, h.sq_sum[rows]) * CV_SCALE
    s.obs_p5[rows] = MINUTE_CODES[h.percentile_minutes_of(n_in, h.head_bin[rows])]
    s.obs_p99[rows] = MINUTE_CODES[h.percentile_minutes_of(n_in, h.tail_bin[rows])]
    s.obs_forecast[rows] = encode_minutes(np.exp(forecast))


def track_coming_age(s: AppState, minute: np.ndarray | int, hist_base: np.ndarray) -> None:
    """``in_range`` and ``at_age`` of every app for its coming minute (one gather from the histograms)."""
    width = s.hist.range_min
    age_m1 = (minute - 1 - s.busy_until).view(np.uint64)  # negative ages wrap to huge
    in_range = np.less(age_m1, width, out=s.in_range)  # 1 <= age <= width
    cell = np.minimum(age_m1, width - 1).view(np.int64)  # any bin of the row where out of range
    cell += hist_base
    np.multiply(np.take(s.hist.counts.reshape(-1), cell), in_range, out=s.at_age)


class WindowDecoder:
    """Whole-minute (pre-warm, keep-alive) windows of each app's action codes (keep-alive code 1.0: NEVER).

    Decoding is a pure function of the codes, so the decoded windows of the
    last step are kept (outside the state) and only the apps whose codes
    changed are decoded again: a policy that keeps its windows between
    invocations, as the paper's do, costs two comparisons per app.
    """

    def __init__(self) -> None:
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._cache
        if cache is None or cache[0].shape != flat[:, :2].shape:
            codes = np.array(flat[:, :2])  # a copy: never an alias of the caller's action array
            cache = (codes, np.zeros(codes.shape[0], np.int64), np.zeros(codes.shape[0], np.int64))
            changed = np.arange(codes.shape[0])
        else:
            codes = cache[0]
            differs = codes[:, 0] != flat[:, PREWARM]
            differs |= codes[:, 1] != flat[:, KEEPALIVE]
            changed = np.flatnonzero(differs)
            codes[changed] = flat[changed, :2]
        if changed.size:
            new = codes[changed]
            cache[1][changed] = decode_minutes(new[:, 0]).astype(np.int64)
            cache[2][changed] = np.where(new[:, 1] >= 1.0, NEVER, decode_minutes(new[:, 1]).astype(np.int64))
        self._cache = cache
        return cache[1], cache[2]


# ----------------------------------------------------------------------------- the core


class FaaSKeepAliveCore(BatchedCore[FaaSKeepAliveConfig, FaaSKeepAliveParams, FaaSKeepAliveState]):
    config_cls = FaaSKeepAliveConfig
    state_size_fields = ("apps_per_fleet", "histogram_range_min")
    metrics: ClassVar[tuple[MetricSpec, ...]] = METRICS
    _track_idle_hazard = True  # see track_idle_hazard

    # ------------------------------------------------------------------ layout
    def _derive(self, config: FaaSKeepAliveConfig) -> FaaSKeepAliveParams:
        k = config.apps_per_fleet
        n_obs = len(OBS_FIELDS) + (len(BUDGET_OBS_FIELDS) if config.has_budget else 0)
        n_act = 3 if config.policy_evicts else 2
        high = np.ones(n_obs, np.float32)
        low = np.zeros(n_obs, np.float32)
        high[OBS["cv"]] = np.float32(math.sqrt(config.histogram_range_min) * CV_SCALE)
        low[OBS["tod_sin"]] = low[OBS["tod_cos"]] = -1.0
        obs_shape = (n_obs,) if k == 1 else (k, n_obs)
        act_shape = (n_act,) if k == 1 else (k, n_act)
        budget = config.memory_budget_gb
        return FaaSKeepAliveParams(
            observation_space=spaces.Box(
                np.broadcast_to(low, obs_shape).copy(), np.broadcast_to(high, obs_shape).copy(), obs_shape, np.float32
            ),
            action_space=spaces.Box(0.0, 1.0, act_shape, np.float32),
            generator=GENERATORS[config.workload](config),
            apps_per_fleet=k,
            policy_evicts=config.policy_evicts,
            num_obs_fields=n_obs,
            budget_kb=int(budget * 1024 * 1024) if budget is not None else 0,
            hist_base=np.arange(self.num_envs * k, dtype=np.int64) * config.histogram_range_min,
        )

    def _init_state(self, params: FaaSKeepAliveParams) -> FaaSKeepAliveState:
        shape = (self.num_envs, params.apps_per_fleet)
        return FaaSKeepAliveState(
            apps=AppState.zeros(shape, self.config.histogram_range_min, params.generator.source(shape)),
            counters=AppCounters.zeros(shape),
            fleet_loaded_kb=np.zeros(self.num_envs, np.int64),
        )

    @functools.cached_property
    def apps(self) -> AppState:
        """Flat (N, ...) views of ``state.apps``: what the dynamics step (writes go to the state)."""
        return tree.merge_leading(self.state.apps, 2)

    @functools.cached_property
    def counters(self) -> AppCounters:
        """Flat (N,) views of ``state.counters``."""
        return tree.merge_leading(self.state.counters, 2)

    @functools.cached_property
    def _windows(self) -> WindowDecoder:
        return WindowDecoder()

    @property
    def apps_per_fleet(self) -> int:
        return self.params.apps_per_fleet

    @property
    def num_apps(self) -> int:
        """N = B x K, applications in the batch."""
        return self.num_envs * self.params.apps_per_fleet

    @property
    def max_episode_steps(self) -> int:
        return self.config.episode_minutes

    def app_rows(self, env_ids: np.ndarray) -> np.ndarray:
        """Flat app rows (into ``self.apps``) of the listed sub-envs, K per sub-env in slot order."""
        k = self.apps_per_fleet
        return (np.asarray(env_ids, np.int64)[:, None] * k + np.arange(k)).reshape(-1)

    def per_env(self, values: np.ndarray) -> np.ndarray:
        """(B,) sums over each sub-env's apps of an (N,) per-app array."""
        if self.apps_per_fleet == 1:
            return values
        return values.reshape(self.num_envs, self.apps_per_fleet).sum(axis=1)

    # ------------------------------------------------------------------ instances
    def _fresh_apps(self, n: int) -> AppState:
        """``n`` apps that have never run (no instance loaded): what a restarting app starts from."""
        return AppState.zeros((n,), self.config.histogram_range_min, self.params.generator.source((n,)))

    def _load(self, env_ids: np.ndarray, instances: Sequence[faas.AppFleet[Any]]) -> None:
        s, c = self.apps, self.config
        rows = self.app_rows(env_ids)
        tree.put_rows(s, self.num_apps, rows, tree.batched(self._fresh_apps(1), 1))  # broadcast over the rows
        s.source.load(rows, [fleet.invocations for fleet in instances])
        memory_mb = np.concatenate([fleet.memory_mb for fleet in instances])
        duration_s = np.concatenate([fleet.duration_s for fleet in instances])
        triggers = np.concatenate([fleet.triggers for fleet in instances])
        s.memory_gb[rows] = memory_mb / 1024.0
        s.memory_kb[rows] = np.ceil(memory_mb * 1024.0).astype(np.int64)
        s.busy_minutes[rows] = np.maximum(1, np.ceil(duration_s / 60.0)).astype(np.int64)
        s.obs_memory[rows] = np.minimum(memory_mb / faas.MAX_MEMORY_MB, 1.0)
        for group, feature in enumerate(s.triggers()):
            feature[rows] = triggers[:, group]
        if c.warmup_minutes:
            self._warm_up(rows)
        if c.has_budget:
            # The episode starts with every image unloaded: executions of the warm-up end with it.
            s.busy_until[rows] = np.minimum(s.busy_until[rows], c.warmup_minutes - 1)
            s.loaded_last[rows] = False
            self.state.fleet_loaded_kb[env_ids] = 0
        self._start_idle_tracking(rows, c.warmup_minutes)

    def _warm_up(self, rows: np.ndarray) -> None:
        """Replay the warm-up minutes of the listed apps (no policy): history for histogram and forecast."""
        sub = self._fresh_apps(rows.size)
        every = np.arange(rows.size)
        tree.put_rows(sub, rows.size, every, tree.take_rows(self.apps, self.num_apps, rows))
        for t in range(self.config.warmup_minutes):
            invoked, counts = sub.source.events(t)
            age = t - sub.busy_until
            sub.loaded_last[...] = age <= 0  # nothing is kept loaded: only executions
            sub.loaded_last[invoked] = True
            remember_minute(sub, t, age, invoked, counts)
        tree.put_rows(self.apps, self.num_apps, rows, tree.batched(sub, rows.size))

    @property
    def track_idle_hazard(self) -> bool:
        """Whether every step keeps the trackers of ``idle_hazard`` and ``idle_survival`` up to date (default True).

        Those two observation features come from ``shorter``, ``at_age`` and
        ``in_range``, which a step normally advances for every app (a gather
        from the histograms). A replay whose policy reads neither (the hybrid
        policy reads only the histogram summary) may set this to False: steps
        then skip that work, and :meth:`observe` (and :meth:`features`)
        compute the two features from the histograms when asked, so the
        observation is the same either way (tested). Setting it back to True
        recomputes the trackers from the histograms.
        """
        return self._track_idle_hazard

    @track_idle_hazard.setter
    def track_idle_hazard(self, on: bool) -> None:
        if on and not self._track_idle_hazard:
            self._start_idle_tracking(np.arange(self.num_apps), self.app_minute())
        self._track_idle_hazard = bool(on)

    def _start_idle_tracking(self, rows: np.ndarray, minute: np.ndarray | int) -> None:
        """Set ``shorter``, ``at_age`` and ``in_range`` of the listed apps for their coming minute ``minute``."""
        s = self.apps
        s.in_range[rows], s.at_age[rows], s.shorter[rows] = s.hist.around(rows, minute - s.busy_until[rows])

    def minute(self) -> np.ndarray:
        """(B,) the minute each sub-env is about to live (warm-up included)."""
        return self.config.warmup_minutes + self.stats.length

    def app_minute(self) -> np.ndarray | int:
        """The minute every app is about to live: one int when all sub-envs agree (the usual case), else (N,)."""
        minute = self.minute()
        first = int(minute[0])
        if (minute == first).all():
            return first
        return np.repeat(minute, self.apps_per_fleet) if self.apps_per_fleet > 1 else minute

    # ------------------------------------------------------------------ stepping
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c, p = self.apps, self.config, self.params
        flat = actions.reshape(self.num_apps, -1)
        prewarm, keepalive = self._windows(flat)
        minute = self.app_minute()
        invoked, counts = s.source.events(minute)
        age = minute - s.busy_until
        if c.has_budget:
            priority = flat[:, PRIORITY] if p.policy_evicts else None
            out, invoked, counts = serve_minute_in_budget(
                s,
                self.counters,
                self.state.fleet_loaded_kb,
                p.budget_kb,
                age,
                invoked,
                counts,
                prewarm,
                keepalive,
                priority,
            )
        else:
            out = serve_minute(s, self.counters, age, invoked, counts, prewarm, keepalive)
        remember_minute(s, minute, age, invoked, counts)
        if self._track_idle_hazard:
            # Idle minutes move the age on: idle times equal to the age just lived become shorter than the next.
            s.shorter += s.at_age
            s.shorter[invoked] = 0
            track_coming_age(s, minute + 1, p.hist_base)
        penalised = out.cold + out.rejected if c.has_budget else out.cold
        reward = self.per_env(-(c.cold_start_weight * penalised + c.memory_weight * out.wasted_gb_min))
        cold = self.per_env(out.cold)
        inv = self.per_env(out.invocations)
        info: Info = {
            "cold_starts": cold,
            "warm_starts": inv - cold - (self.per_env(out.rejected) if c.has_budget else 0),
            "invocations": inv,
            "wasted_gb_min": self.per_env(out.wasted_gb_min),
        }
        if c.has_budget:
            assert out.evictions is not None
            assert out.prewarms_denied is not None
            info["rejected_invocations"] = self.per_env(out.rejected)
            info["evictions"] = self.per_env(out.evictions)
            info["prewarms_denied"] = self.per_env(out.prewarms_denied)
            info["loaded_gb"] = self.state.fleet_loaded_kb / (1024.0 * 1024.0)
        none = np.zeros(self.num_envs, bool)
        return reward, none, none, info

    def features(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Observation features by name as (N,) float32 arrays, for a policy that reads only a few of them.

        Equal to the columns of :meth:`observe` (flattened over sub-envs and
        apps); the features the state keeps (the histogram summary, memory,
        triggers) come without building the rest of the observation. A
        benchmark or a fast policy may use this instead of ``observe()``.
        """
        s = self.apps
        kept = {
            "idle_recorded": s.obs_idle_recorded,
            "idle_times": s.obs_idle_times,
            "oob_share": s.obs_oob_share,
            "cv": s.obs_cv,
            "p5": s.obs_p5,
            "p99": s.obs_p99,
            "idle_forecast": s.obs_forecast,
            "memory": s.obs_memory,
            "count_last": s.obs_count_last,
        }
        out: dict[str, np.ndarray] = {}
        full = None
        for name in names:
            if name in kept:
                out[name] = kept[name].copy()
                continue
            if name not in OBS or OBS[name] >= self.params.num_obs_fields:
                raise KeyError(f"unknown observation feature {name!r}; known: {', '.join(OBS)}")
            if full is None:
                full = self.observe().reshape(self.num_apps, -1)
            out[name] = np.ascontiguousarray(full[:, OBS[name]])
        return out

    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        """(B, F) or (B, K, F) float32; built feature-major (one contiguous row per feature), returned transposed."""
        s, c = self.apps, self.config
        minute = self.app_minute()
        age = minute - s.busy_until
        n_obs = self.params.num_obs_fields
        out = np.empty((n_obs, self.num_apps), np.float32)
        np.take(MINUTE_CODES, np.clip(age, 0, WINDOW_SCALE_MIN), out=out[OBS["age"]])
        out[OBS["has_run"]] = s.has_run
        out[OBS["busy"]] = age <= 0
        out[OBS["loaded_last"]] = s.loaded_last
        out[OBS["invoked_last"]] = s.obs_count_last > 0
        out[OBS["count_last"]] = s.obs_count_last
        out[OBS["rate_10min"]] = encode_count(s.rate_short)
        out[OBS["rate_4h"]] = encode_count(s.rate_long)
        if np.ndim(minute) == 0:
            out[OBS["tod_sin"]] = _TOD_SIN[int(minute) % 1440]
            out[OBS["tod_cos"]] = _TOD_COS[int(minute) % 1440]
        else:
            tod = np.asarray(minute) % 1440
            np.take(_TOD_SIN, tod, out=out[OBS["tod_sin"]])
            np.take(_TOD_COS, tod, out=out[OBS["tod_cos"]])
        out[OBS["idle_recorded"]] = s.obs_idle_recorded
        # Empirical hazard and survival of the current idle period from the app's own histogram.
        h = s.hist
        if self._track_idle_hazard:
            in_range, at_age, shorter = s.in_range, s.at_age, s.shorter
        else:  # not tracked by the steps: the same values from the histograms
            in_range, at_age, shorter = h.around(np.arange(self.num_apps), minute - s.busy_until)
        surviving = h.n_in - shorter
        surviving *= in_range
        alive = surviving.astype(np.float32)
        np.divide(at_age.astype(np.float32), np.maximum(alive, np.float32(1.0)), out=out[OBS["idle_hazard"]])
        np.multiply(alive, s.inv_idle_times, out=out[OBS["idle_survival"]])
        out[OBS["idle_times"]] = s.obs_idle_times
        out[OBS["oob_share"]] = s.obs_oob_share
        out[OBS["cv"]] = s.obs_cv
        out[OBS["p5"]] = s.obs_p5
        out[OBS["p99"]] = s.obs_p99
        out[OBS["idle_forecast"]] = s.obs_forecast
        out[OBS["memory"]] = s.obs_memory
        for group, feature in enumerate(s.triggers()):
            out[OBS["trigger_http"] + group] = feature
        if c.has_budget:
            out[OBS["evicted"]] = s.evicted
            used = self.state.fleet_loaded_kb / float(self.params.budget_kb)
            out[OBS["budget_used"]] = np.repeat(used, self.apps_per_fleet)
        obs = out.T
        return obs if self.apps_per_fleet == 1 else obs.reshape(self.num_envs, self.apps_per_fleet, n_obs)

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s, apps = self.state.counters, self.state.apps

        def total(values: np.ndarray) -> np.ndarray:
            return values[env_ids].sum(axis=1).astype(np.float64)

        inv = total(s.invocations)
        cold = total(s.cold)
        return {
            "cold_start_pct": np.where(inv > 0, 100.0 * cold / np.maximum(inv, 1), 0.0),
            "cold_starts": cold,
            "invocations": inv,
            "wasted_gb_min": total(s.wasted_gb_min),
            "loaded_idle_min": total(s.loaded_idle_min),
            "memory_mb": total(apps.memory_gb) * 1024.0,
            "evictions": total(s.evictions),
            "rejected_invocations": total(s.rejected),
        }


def text_frame(core: FaaSKeepAliveCore, i: int, max_apps: int = 8) -> str:
    """Sub-env ``i`` as text: each app's image (loaded or not), idle age, cold starts and waste so far."""
    k = core.params.apps_per_fleet
    apps, counters = core.state.apps, core.state.counters
    lines = [f"minute {core.stats.length[i]}/{core.config.episode_minutes}, {k} app(s)"]
    minute = int(core.stats.length[i]) + core.config.warmup_minutes
    for a in range(min(k, max_apps)):
        idle = minute - apps.busy_until[i, a] if apps.has_run[i, a] else None
        lines.append(
            f"  app {a}: {'loaded ' if apps.loaded_last[i, a] else 'unloaded'} {apps.memory_gb[i, a]:.2f} GB, "
            f"idle {'-' if idle is None else f'{idle} min'}, {counters.cold[i, a]} cold of "
            f"{counters.invocations[i, a]} invocations, {counters.wasted_gb_min[i, a]:.1f} GB-min wasted"
        )
    if k > max_apps:
        lines.append(f"  ... {k - max_apps} more")
    return "\n".join(lines)


class FaaSKeepAliveVectorEnv(CloudGymVectorEnv):
    core_cls = FaaSKeepAliveCore


class FaaSKeepAliveEnv(CloudGymEnv):
    core_cls = FaaSKeepAliveCore
