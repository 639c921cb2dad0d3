"""An AI datacenter's 15 years: the GPU roadmap, model-size trend and demand path of one episode.

The figures follow DOMAIN.md section 5 and the public simulator
Azure/AI-Lifecycle-Compass (``dc_tco``, MIT) that Stojkovic et al. (arXiv
2509.26534) released with the paper; nothing here is copied from it, the
numbers are its published defaults:

* **GPU roadmap** (:data:`KNOWN_GPUS`): seven NVIDIA generations with release
  quarter, TDP, price, HBM bandwidth and capacity, NVLink bandwidth and the
  per-*server* compute figure the simulator uses, plus the dense FP16 tensor
  TFLOPS of one GPU from NVIDIA's datasheets (for the LLM instance model).
  Later generations, one a year from the last known one, come from a linear
  fit of every metric over the known seven (:func:`gpu_roadmap`), floored as
  the simulator floors them (no metric below half the last known value).
* **Served model size** (:data:`YEARLY_MEDIAN_PARAMS`): the yearly median
  parameter count of Epoch AI's notable models 2015-2025 (as the simulator's
  notebook 02 prints it), then a linear trend fitted to those medians. Each
  year half the first two quarters' demand runs on the new full-size model
  and the rest on a distilled model at 10% of last year's size; the last two
  quarters run entirely on the distilled model (:func:`model_schedule`).
* **Demand** grows x1.0355 per quarter from 4e6 (the simulator's "requests/s",
  which it compares with tokens/s; :class:`DCLifecycleConfig` documents how
  each preset maps units).
* **Shocks** (the simulator's scenario switches): demand x3, model size x0.8,
  hardware capability x3 and GPU price x0.6 from a shock year on. The
  ``compass`` preset places a switched-on shock at year 5 as the simulator
  does; :class:`FleetGenerator` with ``shock_probability > 0`` draws
  whether each shock happens and in which quarter, per episode.

:meth:`FleetGenerator.sample` returns a :class:`FleetInstance`: frozen arrays
the env replays; everything random about an episode is drawn there from the
sub-env's own generator.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from cloudgym.envs.fields import Range, check_fields, positive, unit_interval

# ----------------------------------------------------------------------------- the roadmap

GPU_FIELDS = (
    "release_quarter",
    "tdp_w",
    "price_usd",
    "hbm_tb_s",
    "hbm_gb",
    "nvlink_gb_s",
    "server_tflops",
    "fp16_tflops",
)
"""Per-GPU metrics of a generation (server_tflops is per 8-GPU server, as the simulator tabulates it)."""

KNOWN_GPUS: tuple[tuple[str, str, float, float, float, float, float, float, float], ...] = (
    # name, release, TDP W, price $, HBM TB/s, HBM GB, NVLink GB/s,
    # simulator TFLOPS per server, dense FP16 TFLOPS per GPU
    ("P100", "Q1'16", 300.0, 9_428.0, 0.7322, 16.0, 160.0, 21.22, 21.2),
    ("V100", "Q1'18", 250.0, 11_458.0, 0.897, 32.0, 300.0, 31.33, 125.0),
    ("A100", "Q2'21", 400.0, 18_000.0, 2.09, 80.0, 600.0, 77.97, 312.0),
    ("H100", "Q4'23", 700.0, 27_000.0, 3.44, 80.0, 900.0, 267.6, 989.0),
    ("H200", "Q4'24", 700.0, 35_000.0, 5.007, 141.0, 900.0, 267.6, 989.0),
    ("B100", "Q2'25", 1000.0, 30_000.0, 4.2, 96.0, 1800.0, 248.3, 1750.0),
    ("B200", "Q4'25", 1000.0, 40_000.0, 4.2, 192.0, 1800.0, 248.3, 2250.0),
)
"""DOMAIN.md's roadmap (the simulator's ``configs/hardware.yaml``) plus NVIDIA's dense FP16 tensor TFLOPS."""

YEARLY_MEDIAN_PARAMS: tuple[tuple[int, float], ...] = (
    (2015, 1.63e7),
    (2016, 3.2e7),
    (2017, 3.4e7),
    (2018, 8.65e7),
    (2019, 2.28e8),
    (2020, 2.435e8),
    (2021, 1.6715e9),
    (2022, 4.75e9),
    (2023, 1.1e10),
    (2024, 7.0e10),
    (2025, 3.2e10),
)
"""Median parameter count of Epoch AI's notable models per publication year (the simulator's p50 column)."""


def quarter_index(label: str, base_year: int) -> int:
    """Quarter index of a release label such as ``"Q2'21"`` relative to Q1 of ``base_year``."""
    if len(label) != 5 or label[0] != "Q" or label[2] != "'" or label[1] not in "1234" or not label[3:].isdigit():
        raise ValueError(f'release quarter {label!r} must read like "Q2\'21"')
    year = 2000 + int(label[3:])
    return (year - base_year) * 4 + int(label[1]) - 1


@dataclasses.dataclass(frozen=True)
class GpuRoadmap:
    """Every GPU generation the horizon can see, oldest first (G generations)."""

    names: tuple[str, ...]  # (G,) generation names; projected ones are "Future<year>"
    release_quarter: np.ndarray  # (G,) int64, first quarter it can be bought (may lie past the horizon)
    tdp_w: np.ndarray  # (G,) float64, W per GPU
    price_usd: np.ndarray  # (G,) float64, $ per GPU
    hbm_tb_s: np.ndarray  # (G,) float64, HBM bandwidth per GPU, TB/s
    hbm_gb: np.ndarray  # (G,) float64, HBM capacity per GPU, GB
    nvlink_gb_s: np.ndarray  # (G,) float64, NVLink bandwidth per GPU, GB/s
    server_tflops: np.ndarray  # (G,) float64, the simulator's compute figure per 8-GPU server, TFLOPS
    fp16_tflops: np.ndarray  # (G,) float64, dense FP16 tensor TFLOPS per GPU

    @property
    def size(self) -> int:
        return len(self.names)


def gpu_roadmap(base_year: int, horizon_quarters: int, release_interval_years: float = 1.0) -> GpuRoadmap:
    """The known generations plus linearly projected ones, one every ``release_interval_years`` to the horizon.

    As in the simulator: future releases fall at the last known release plus
    k intervals for k = 1 .. ceil((horizon end - last release) / interval), and
    each projected metric is the linear fit over the known generations
    (against release year), floored at half the last known value.
    """
    if release_interval_years <= 0:
        raise ValueError(f"release_interval_years must be positive, got {release_interval_years}")
    names = [g[0] for g in KNOWN_GPUS]
    years = np.array([2000 + int(g[1][3:]) + (int(g[1][1]) - 1) / 4 for g in KNOWN_GPUS])
    known = np.array([[quarter_index(g[1], base_year), *g[2:]] for g in KNOWN_GPUS], dtype=np.float64)
    end_year = base_year + horizon_quarters / 4
    count = max(0, int(np.ceil((end_year - years[-1]) / release_interval_years - 1e-9)))
    future_years = years[-1] + release_interval_years * np.arange(1, count + 1)
    rows = [known]
    if count:
        projected = np.empty((count, known.shape[1]))
        projected[:, 0] = np.round((future_years - base_year) * 4)
        for j in range(1, known.shape[1]):
            slope, intercept = np.polyfit(years, known[:, j], 1)
            projected[:, j] = np.maximum(slope * future_years + intercept, 0.5 * known[-1, j])
        rows.append(projected)
        names += [f"Future{int(y)}" for y in future_years]
    table = np.concatenate(rows)
    columns = {name: table[:, i] for i, name in enumerate(GPU_FIELDS)}
    return GpuRoadmap(
        names=tuple(names),
        release_quarter=columns.pop("release_quarter").astype(np.int64),
        **columns,
    )


def yearly_model_params(base_year: int, years: int) -> np.ndarray:
    """(years,) served full-size model parameter count for each calendar year of the horizon.

    Known medians where the dataset has the year; a linear fit over all known
    medians after the last one (the simulator's ``trend: linear``); the
    earliest median before the first; at least 1e6 parameters.
    """
    known_years = np.array([y for y, _ in YEARLY_MEDIAN_PARAMS], dtype=np.float64)
    known = np.array([p for _, p in YEARLY_MEDIAN_PARAMS])
    slope, intercept = np.polyfit(known_years, known, 1)
    out = np.empty(years)
    for k in range(years):
        year = base_year + k
        if year < known_years[0]:
            out[k] = known[0]
        elif year <= known_years[-1]:
            out[k] = known[int(year - known_years[0])]
        else:
            out[k] = slope * year + intercept
    return np.maximum(out, 1e6)


def model_schedule(
    yearly_params: np.ndarray, horizon_quarters: int, *, migration_fraction: float, distilled_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per quarter: (share of demand on the primary model, primary params, secondary params).

    Quarters 1-2 of a year: ``migration_fraction`` of demand on the new
    full-size model, the rest on last year's model distilled to
    ``distilled_fraction``; quarters 3-4: everything on this year's distilled
    model (the simulator's schedule).
    """
    q = np.arange(horizon_quarters)
    year = q // 4
    size = yearly_params[np.minimum(year, yearly_params.size - 1)]
    previous = yearly_params[np.maximum(year - 1, 0)]
    early = (q % 4) < 2
    share = np.where(early, migration_fraction, 1.0)
    primary = np.where(early, size, size * distilled_fraction)
    secondary = np.where(early, previous * distilled_fraction, size * distilled_fraction)
    return share, primary, secondary


# ----------------------------------------------------------------------------- one episode


@dataclasses.dataclass(frozen=True)
class ShockSpec:
    """The simulator's four scenario shocks and how an episode draws them."""

    demand_factor: float = 3.0
    """Demand jumps to this multiple of its trend level at the shock and plateaus there (alpha)."""
    model_size_factor: float = 0.8
    """Model sizes from the shock on are capped at this share of the shock quarter's size (beta)."""
    hardware_factor: float = 3.0
    """Generations released from the shock on get this multiple of the last earlier one's compute,
    bandwidth and memory (gamma), growing 5%/year after."""
    hardware_growth_per_year: float = 0.05
    """Post-shock capability growth per year (epsilon)."""
    price_factor: float = 0.6
    """Generations released from the shock on cost this share of the last earlier one's price (delta)..."""
    price_recovery_per_year: float = 0.10
    """... recovering linearly by this much per year, never above the projected price (eta)."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Multipliers of demand, capability and price: positive (a negative demand or price is no shock),
        # bounded so an episode's demand and capacities stay finite.
        "demand_factor": positive(100),
        "model_size_factor": positive(10),
        "hardware_factor": positive(100),
        "hardware_growth_per_year": unit_interval(),
        "price_factor": positive(10),
        "price_recovery_per_year": Range(0, 10),
    }

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class FleetInstance:
    """What one episode replays: demand, served models and this episode's roadmap prices and capabilities."""

    demand: np.ndarray  # (T,) float64, demand per quarter (units: see the env's config)
    primary_share: np.ndarray  # (T,) float64, share of demand on the primary model
    primary_params: np.ndarray  # (T,) float64, parameters of the primary model
    secondary_params: np.ndarray  # (T,) float64, parameters of the secondary (distilled) model
    price_usd: np.ndarray  # (G,) float64, $ per GPU of each generation in this episode
    hbm_tb_s: np.ndarray  # (G,) float64, HBM bandwidth per GPU in this episode, TB/s
    hbm_gb: np.ndarray  # (G,) float64, HBM capacity per GPU in this episode, GB
    server_tflops: np.ndarray  # (G,) float64, the simulator's compute figure per server in this episode
    fp16_tflops: np.ndarray  # (G,) float64, dense FP16 TFLOPS per GPU in this episode
    shock_quarter: np.ndarray  # (4,) int64, quarter of the demand, model-size, hardware and price shocks; -1 = none


SHOCK_NAMES = ("demand", "model_size", "hardware", "price")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetGenerator:
    """Draws one episode of an AI datacenter: demand path, served models, shocks and this episode's roadmap.

    ``growth_noise`` is the standard deviation of a log-normal factor on each
    quarter's growth (0 gives the simulator's deterministic curve).
    ``fixed_shock_quarter[k] >= 0`` forces shock k at that quarter (the
    simulator's switches); otherwise shock k happens with probability
    ``shock_probability[k]`` at a quarter uniform in ``shock_window``.
    Draws are made in a fixed order whatever the switches, so one seed gives
    one demand path under every shock setting.
    """

    roadmap: GpuRoadmap
    """Every generation the horizon can see (:func:`gpu_roadmap`)."""
    horizon_quarters: int
    """Quarters per episode."""
    base_year: int
    """Calendar year of quarter 0."""
    initial_demand: float
    """Demand in quarter 0."""
    growth_per_quarter: float
    """Trend growth factor per quarter."""
    growth_noise: float
    """Std of the log-normal noise on each quarter's growth."""
    migration_fraction: float
    """Share of demand on the new full-size model in the first two quarters of a year."""
    distilled_fraction: float
    """Size of a distilled model relative to its full-size model."""
    shocks: ShockSpec
    """Magnitudes of the four shocks."""
    shock_probability: tuple[float, float, float, float]
    """Per-episode probability of each shock (:data:`SHOCK_NAMES` order)."""
    shock_window: tuple[int, int]
    """Quarters between which a drawn shock happens (uniform, inclusive)."""
    fixed_shock_quarter: tuple[int, int, int, int] = (-1, -1, -1, -1)
    """Force a shock at this quarter (>= 0), -1 = drawn or none."""

    def sample(self, rng: np.random.Generator) -> FleetInstance:
        t = self.horizon_quarters
        noise = rng.normal(0.0, 1.0, size=t)
        happens = rng.random(4)
        when = rng.integers(self.shock_window[0], self.shock_window[1] + 1, size=4)
        shock_q = np.full(4, -1, np.int64)
        for k in range(4):
            if self.fixed_shock_quarter[k] >= 0:
                shock_q[k] = self.fixed_shock_quarter[k]
            elif happens[k] < self.shock_probability[k]:
                shock_q[k] = when[k]
        share, primary, secondary = self._models(int(shock_q[1]))
        return FleetInstance(
            demand=self._demand(noise, int(shock_q[0])),
            primary_share=share,
            primary_params=primary,
            secondary_params=secondary,
            price_usd=self._prices(int(shock_q[3])),
            **self._specs(int(shock_q[2])),
            shock_quarter=shock_q,
        )

    def _demand(self, noise: np.ndarray, shock_q: int) -> np.ndarray:
        """(T,) the trend with noisy growth, jumping to ``demand_factor`` x its level at the demand shock."""
        t = self.horizon_quarters
        steps = np.full(t, np.log(self.growth_per_quarter))
        steps[1:] += self.growth_noise * noise[1:]
        steps[0] = 0.0
        demand = self.initial_demand * np.exp(np.cumsum(steps))
        if shock_q >= 0 and shock_q < t:
            demand[shock_q:] = self.shocks.demand_factor * demand[shock_q]
        return demand

    @functools.cached_property
    def _yearly(self) -> np.ndarray:
        """(years,) the served model size per year: fixed by the fields, so computed once (read-only)."""
        yearly = yearly_model_params(self.base_year, (self.horizon_quarters + 3) // 4)
        yearly.setflags(write=False)
        return yearly

    @functools.cached_property
    def _schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model schedule without a model-size shock, computed once; read-only, as every instance shares it."""
        schedule = model_schedule(
            self._yearly,
            self.horizon_quarters,
            migration_fraction=self.migration_fraction,
            distilled_fraction=self.distilled_fraction,
        )
        for part in schedule:
            part.setflags(write=False)
        return schedule

    def _models(self, shock_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per quarter: (primary share, primary params, secondary params), capped from the model-size shock on."""
        t, distilled = self.horizon_quarters, self.distilled_fraction
        yearly, schedule = self._yearly, self._schedule
        if not (shock_q >= 0 and shock_q < t):
            return schedule
        # The simulator caps the per-quarter size series, then derives the schedule from it.
        per_quarter = np.repeat(yearly, 4)[:t]
        cap = self.shocks.model_size_factor * per_quarter[shock_q]
        per_quarter = per_quarter.copy()
        per_quarter[shock_q:] = cap
        q = np.arange(t)
        prev = per_quarter[np.maximum(q // 4 - 1, 0) * 4]
        early = (q % 4) < 2
        primary = np.where(early, per_quarter, per_quarter * distilled)
        secondary = np.where(early, prev * distilled, per_quarter * distilled)
        return schedule[0], primary, secondary

    def _specs(self, shock_q: int) -> dict[str, np.ndarray]:
        """(G,) capabilities this episode: from the hardware shock on, gamma x the last earlier generation's."""
        roadmap = self.roadmap
        specs = {name: getattr(roadmap, name).copy() for name in ("hbm_tb_s", "hbm_gb", "server_tflops", "fp16_tflops")}
        if shock_q < 0:
            return specs
        rel = roadmap.release_quarter
        before = np.flatnonzero(rel < shock_q)
        base = before[-1] if before.size else 0
        after = rel >= shock_q
        growth = self.shocks.hardware_factor * (1 + self.shocks.hardware_growth_per_year) ** ((rel - shock_q) / 4.0)
        return {name: np.where(after, values[base] * growth, values) for name, values in specs.items()}

    def _prices(self, shock_q: int) -> np.ndarray:
        """(G,) $ per GPU this episode: from the price shock on, delta x the last earlier price, recovering."""
        roadmap = self.roadmap
        price = roadmap.price_usd.copy()
        if shock_q < 0:
            return price
        rel = roadmap.release_quarter
        before = np.flatnonzero(rel < shock_q)
        base_cost = roadmap.price_usd[before[-1] if before.size else 0]
        years_after = (rel - shock_q) / 4.0
        shocks = self.shocks
        shocked = base_cost * shocks.price_factor * (1 + shocks.price_recovery_per_year * years_after)
        return np.where(rel >= shock_q, np.minimum(shocked, price), price)
