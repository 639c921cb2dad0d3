"""One episode of LLM requests for a row of inference servers in two priority classes (GPUPowerCap-v0).

A row's servers share one load curve: the row's request rate rises and falls
together (a diurnal peak, bursts of traffic), which is what moves a row's
power, while each server's own arrivals add noise that averages out over the
row. The generator draws, from the caller's ``np.random.Generator``:

1. **a load curve** ``m(t)``, one value per second, as a share of the
   configured peak rate: ``log m`` is an Ornstein-Uhlenbeck process around an
   episode level drawn uniformly from ``level_range`` (where in the day the
   window falls), with stationary standard deviation ``volatility`` and time
   constant ``time_constant_s`` (how fast traffic swings). Both are our
   modelling choice, calibrated so that the row's power matches POLCA's
   production figures (peak ~79% of provisioned power, largest rise ~11.8%
   within 40 s; see the env's docstring);
2. **requests per priority class**: a renewal process at unit rate (the
   ``arrival_cv`` of the gaps; 1 is Poisson) warped through the cumulative
   rate ``n_instances x rate x m(t)``, so arrivals follow the curve exactly;
   prompt and output lengths come from the shared LLM workload generator
   (:func:`cloudgym.envs.workloads.llm.sample_requests`, coding and
   conversation shapes of the Azure 2023 trace);
3. **routing**: a round-robin load balancer per class sends the k-th request
   of a class to model instance ``k mod n`` of that class, so the capped row
   and the uncapped reference row receive identical requests on identical
   instances.

Instances ``0 .. n_hp - 1`` serve high priority (class 0), the rest low
priority (class 1). :class:`RowLoadGenerator` draws 1 and 2 for one episode
(the generator GPUPowerCap-v0 derives from its config). Nothing here knows
an environment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from cloudgym.envs.workloads.llm import sample_requests

HIGH, LOW = 0, 1
"""Priority classes: 0 = high priority (HP), 1 = low priority (LP)."""

LengthSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
"""(rng, n) -> (prompt tokens (n,), output tokens (n,)), both int and >= 1."""


@dataclasses.dataclass(frozen=True)
class RowRequests:
    """One episode's requests for a row, in arrival order."""

    arrival_s: np.ndarray  # (R,) float64, arrival time from the episode start, s (non-decreasing, < steps)
    prompt_tokens: np.ndarray  # (R,) int64, >= 1
    output_tokens: np.ndarray  # (R,) int64, >= 1
    priority: np.ndarray  # (R,) int64, HIGH (0) or LOW (1)
    instance: np.ndarray  # (R,) int64, model instance the balancer sends it to (HP instances first)
    load: np.ndarray  # (T,) float64, the load curve m(t): request rate as a share of the peak rate

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    def step_bounds(self, steps: int) -> np.ndarray:
        """(steps + 1,) index of the first request arriving in each 1-s step (and the count at the end)."""
        return np.searchsorted(self.arrival_s, np.arange(steps + 1, dtype=np.float64), side="left")


def sample_load_curve(
    rng: np.random.Generator,
    steps: int,
    *,
    level_range: tuple[float, float],
    volatility: float,
    time_constant_s: float,
    ramp_from: float = 1.0,
    ramp_s: float = 0.0,
) -> np.ndarray:
    """(steps,) per-second load as a share of the peak rate: exp of an OU process around the episode level.

    With ``ramp_from < 1`` the level itself rises linearly from ``ramp_from``
    times its value to its value over the first ``ramp_s`` seconds (traffic
    climbing towards a busy period).
    """
    low, high = level_range
    if not 0 < low <= high:
        raise ValueError(f"level_range must satisfy 0 < low <= high, got {level_range}")
    if volatility < 0 or time_constant_s <= 0:
        raise ValueError(f"need volatility >= 0 and time_constant_s > 0, got {volatility}, {time_constant_s}")
    if not 0 < ramp_from <= 1 or ramp_s < 0:
        raise ValueError(f"need 0 < ramp_from <= 1 and ramp_s >= 0, got {ramp_from}, {ramp_s}")
    mean = np.log(rng.uniform(low, high))
    rho = float(np.exp(-1.0 / time_constant_s))
    shocks = rng.standard_normal(steps)
    x = np.empty(steps)
    # Start from the stationary distribution, so the episode's first second is as likely to be busy as any other.
    x[0] = mean + volatility * shocks[0]
    innovation = volatility * np.sqrt(1.0 - rho * rho)
    for t in range(1, steps):  # a scalar recursion over one episode's seconds (run once per reset)
        x[t] = mean + rho * (x[t - 1] - mean) + innovation * shocks[t]
    ramp = np.ones(steps) if ramp_s == 0 else ramp_from + (1.0 - ramp_from) * np.minimum(np.arange(steps) / ramp_s, 1.0)
    return np.exp(x) * ramp


def warp_arrivals(unit_times: np.ndarray, rate_per_s: np.ndarray) -> np.ndarray:
    """Map arrivals of a unit-rate process through a piecewise-constant rate (one value per second).

    A point at cumulative intensity ``tau`` lands at the time ``t`` where
    ``integral_0^t rate = tau``; points beyond the last second's cumulative
    intensity are returned as ``inf`` (they arrive after the episode).
    """
    rate = np.asarray(rate_per_s, np.float64)
    if np.any(rate <= 0):
        raise ValueError("rates must be positive to warp arrivals")
    cumulative = np.concatenate([[0.0], np.cumsum(rate)])
    tau = np.asarray(unit_times, np.float64)
    second = np.searchsorted(cumulative, tau, side="right") - 1
    inside = second < rate.size
    out = np.full(tau.shape, np.inf)
    s = second[inside]
    out[inside] = s + (tau[inside] - cumulative[s]) / rate[s]
    return out


def unit_renewal(rng: np.random.Generator, horizon: float, cv: float) -> np.ndarray:
    """Points of a unit-rate renewal process (gamma gaps of coefficient of variation ``cv``) on [0, horizon)."""
    if cv <= 0:
        raise ValueError(f"arrival_cv must be positive, got {cv}")
    shape = 1.0 / cv**2
    # Draw enough gaps for the horizon with overwhelming probability, then top up if ever short.
    expected = horizon + 8.0 * np.sqrt(horizon + 1.0) * max(cv, 1.0) + 16.0
    times = np.cumsum(rng.gamma(shape, 1.0 / shape, size=int(expected)))
    while times.size and times[-1] < horizon:
        more = np.cumsum(rng.gamma(shape, 1.0 / shape, size=int(expected))) + times[-1]
        times = np.concatenate([times, more])
    return times[times < horizon]


def sample_row_requests(
    rng: np.random.Generator,
    *,
    steps: int,
    instances: Sequence[int],
    peak_rate_per_instance: float,
    load: np.ndarray,
    lengths: LengthSampler,
    arrival_cv: float = 1.0,
) -> RowRequests:
    """An episode of requests for ``instances[c]`` model instances in class c (HP first), following ``load``.

    The rate of class c at second t is ``instances[c] x peak_rate_per_instance x load[t]``.
    """
    if len(instances) != 2 or min(instances) < 0 or sum(instances) < 1:
        raise ValueError(f"instances must give (HP, LP) counts >= 0 with at least one instance, got {instances}")
    if peak_rate_per_instance <= 0:
        raise ValueError(f"peak_rate_per_instance must be positive, got {peak_rate_per_instance}")
    load = np.asarray(load, np.float64)
    if load.shape != (steps,):
        raise ValueError(f"load must have one value per step ({steps}), got shape {load.shape}")
    parts = []
    first = 0
    for cls, n in enumerate(instances):
        if n == 0:
            continue
        rate = n * peak_rate_per_instance * load
        unit = unit_renewal(rng, float(rate.sum()), arrival_cv)
        arrival = warp_arrivals(unit, rate)
        m = arrival.size
        prompt, output = lengths(rng, m)
        target = first + np.arange(m) % n  # round-robin within the class
        parts.append((arrival, prompt, output, np.full(m, cls), target))
        first += n
    arrival = np.concatenate([p[0] for p in parts])
    order = np.argsort(arrival, kind="stable")
    return RowRequests(
        arrival_s=arrival[order],
        prompt_tokens=np.concatenate([p[1] for p in parts]).astype(np.int64)[order],
        output_tokens=np.concatenate([p[2] for p in parts]).astype(np.int64)[order],
        priority=np.concatenate([p[3] for p in parts]).astype(np.int64)[order],
        instance=np.concatenate([p[4] for p in parts]).astype(np.int64)[order],
        load=load,
    )


def azure_lengths(mix: Sequence[float], max_context_tokens: int) -> LengthSampler:
    """Prompt and output lengths of the shared coding/conversation generator (Azure LLM trace 2023 shapes).

    ``mix`` gives the (coding, conversation) shares; prompts are clipped to
    the model's context and outputs to what is left of it (as
    :func:`cloudgym.envs.workloads.llm.sample_requests` does).
    """

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # Only the lengths are used: arrivals come from the row's load curve.
        requests = sample_requests(rng, n=n, rate_per_s=1.0, mix=mix, max_context_tokens=max_context_tokens)
        return requests.prompt_tokens, requests.output_tokens

    return sample


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowLoadGenerator:
    """One episode of a row's requests: a load curve (:func:`sample_load_curve`), then its requests per class.

    ``sample`` draws the curve, clips it at ``load_cap`` (which bounds how
    many requests an episode can hold) and draws the requests along it
    (:func:`sample_row_requests`), all from the one ``rng`` in that order.
    """

    steps: int
    """Seconds of load an episode draws."""
    instances: tuple[int, int]
    """Model instances of the (HP, LP) classes."""
    peak_rate_per_instance: float
    """Request rate per instance at load 1, requests/s."""
    level_range: tuple[float, float]
    """Range of the episode's mean load (share of the peak rate), drawn uniformly."""
    volatility: float
    """Stationary standard deviation of the log load."""
    time_constant_s: float
    """Time constant of the load's swings, s."""
    ramp_from: float = 1.0
    """The level climbs from this share of itself..."""
    ramp_s: float = 0.0
    """...to itself over this many seconds."""
    load_cap: float = math.inf
    """The curve is clipped at this share of the peak rate."""
    lengths: LengthSampler
    """Prompt and output lengths of n requests."""
    arrival_cv: float = 1.0
    """Coefficient of variation of the gaps between arrivals of a class (1: Poisson)."""

    def sample(self, rng: np.random.Generator) -> RowRequests:
        load = sample_load_curve(
            rng,
            self.steps,
            level_range=self.level_range,
            volatility=self.volatility,
            time_constant_s=self.time_constant_s,
            ramp_from=self.ramp_from,
            ramp_s=self.ramp_s,
        )
        return sample_row_requests(
            rng,
            steps=self.steps,
            instances=self.instances,
            peak_rate_per_instance=self.peak_rate_per_instance,
            load=np.minimum(load, self.load_cap),
            lengths=self.lengths,
            arrival_cv=self.arrival_cv,
        )
