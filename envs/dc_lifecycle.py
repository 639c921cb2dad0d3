"""DCLifecycle-v0: build, refresh and operate an AI datacenter over 15 years, one quarter per step.

## Description
After Stojkovic, Zhang, Goiri and Bianchini, "Rearchitecting Datacenter
Lifecycle for AI" (arXiv 2509.26534), who co-optimise three stages of an AI
datacenter's life and report up to 40% lower TCO than traditional planning:

* **build**: provisioned power and cooling of the building;
* **hardware refresh**: which GPU generation to buy and how much, when to
  retire, extend or skip;
* **operation**: power oversubscription of the building (POLCA), GPU
  frequency caps (DynamoLLM), prefill/decode disaggregation across the
  newest and older generations (Splitwise).

The fleet is a set of *cohorts*, one per purchase quarter: ``n`` servers of
one generation bought together, racked together (batches never share racks),
retired together. Every quarter demand must be served by the alive fleet;
what it cannot serve is counted and charged ``unserved_penalty_usd`` per
unit and quarter (never dropped silently). Every dollar lands in one ledger
category, and the step's breakdown is in ``info["cost/<category>"]``.

Three presets (``gym.make("DCLifecycle-v0", scenario=...)``):

* ``compass`` (the default) follows the public simulator that came with the
  paper, Azure/AI-Lifecycle-Compass (``dc_tco``, default configuration): its
  GPU roadmap, demand curve (4e6 x 1.0355^q), model-size trend and
  migration/distillation schedule, its *simplified* batch-1 roofline capacity
  (``min(8 x HBM GB/s, server TFLOPS x 1000, NVLink term x 0.3) / (2 x
  params in B)`` per server, with the 0.5/0.5 full/distilled mix), its cost
  model (servers, racks and Ethernet amortised over 5 years even after early
  retirement and cut at the horizon; power $7/W, cooling $2.5/W and $1M per
  8 MW over 15 years charged every quarter like a rent on installed plus
  stranded power; energy at 75% utilisation and $0.04/kWh; cooling opex 20%
  of energy; maintenance $5,200 per server-year, x1.15 past 5 years), and its
  policies' semantics (buy the shortfall ``ceil((demand - capacity) /
  per-server capacity)`` of one generation; retire whole batches).
  Departures, each because the env has to let a policy choose what the
  simulator fixes: (1) the simulator compares demand in "requests/s" with
  capacity in tokens/s; this preset keeps that (both are "demand units")
  so its ratios are comparable, and ``realistic`` fixes the units;
  (2) purchases may be of any of the ``max_generation_lag`` newest released
  generations (the simulator's ``skip_generations`` is a policy choice here);
  (3) the operation knobs exist (level 0 of each is the simulator's
  behaviour); with oversubscription o a rack holds ``floor(o x 50 kW /
  server W)`` servers and the provisioning rent is charged on
  ``installed W / o + stranded W``; (4) the build action is ignored (the
  simulator's building is a rent that follows the fleet); (5) unserved demand
  is penalised (the simulator always buys the whole shortfall, so its
  policies never leave any); (6) the disaggregated policy's capacity is the
  simulator's own formula (the newest half of the *batches* serve prefill
  at 40% of their capacity, the older half decode at 60%, all sized for the
  larger model), kept for comparability even though it models no phase split.
* ``realistic`` keeps units straight and makes the building real: demand is
  generated (output) tokens/s and a server's capacity is the tokens/s the
  LLM instance model (``cloudgym.envs.core.llm``) sustains with continuous
  batching under TTFT 400 ms / TBT 100 ms SLOs for the served model on that
  generation's GPUs; the building is a sunk investment in lumps of
  ``build_lump_mw`` that arrive ``build_lead_quarters`` after the order and
  are amortised over the building's life from arrival whether used or not;
  servers can only be installed within ``oversubscription x provisioned``
  power; demand growth is noisy and the four shocks are drawn per episode
  with random timing.
* ``paper`` is the setting closest to the paper's: ``realistic``'s units
  and sunk building, but the simulator's deterministic demand curve and no
  shocks (as the paper's headline runs), and the building in 8 MW blocks
  (the simulator's facility unit): coarse, lumpy building is where
  co-optimising the build stage with the refresh stage pays most
  (``docs/dc_lifecycle.md`` has the measured cut).

Paper figure reproduced: the refresh-stage ratios of the public simulator
(its ``dc-tco sweep`` on the default configuration), by the env's refresh
baselines under ``compass``; ``docs/dc_lifecycle.md`` has the measured table
and the commands.

## Action Space
``MultiDiscrete`` (flattened; :meth:`DCLifecycleCore.action_fields` names
each entry):

| index | field | values |
|-------|-------|--------|
| 0 | ``buy_generation`` | 0 = newest released generation, k = k-th older released one |
| 1 | ``buy_cover`` | ``buy_cover_levels``: buy until capacity >= level x demand (0: no purchase) |
| 2 | ``lifetime`` | ``lifetime_years_levels``: cohorts retire at this age |
| 3 | ``retire_lagging`` | k >= 1 retires cohorts k or more releases behind the newest (1: replace all) |
| 4 | ``build`` | ``build_lumps``: lumps of ``build_lump_mw`` ordered now (``sunk`` building only) |
| 5 | ``oversubscription`` | ``oversubscription_levels``: installed server W per provisioned W |
| 6 | ``frequency`` | ``frequency_levels``: GPU clock cap, share of the maximum |
| 7 | ``disaggregate`` | 1 = prefill on the newest generation, decode on older ones |
| 8+t | ``cohort_<t>`` | per cohort bought in quarter t: 0 rules above, 1 retire now, 2 keep |

The ``cohort_<t>`` entries exist only with ``cohort_actions``; "keep"
exempts the cohort from the lifetime rule this quarter (never past
``max_lifetime_years``, never from ``retire_lagging``). Lifetimes past
``default_lifetime_years`` pay x1.15 maintenance; ``buy_generation`` is
clipped to the oldest released generation; ``build`` is ignored under the
``rent`` building.

A purchase the building cannot power is cut to what fits (the rest is
counted as blocked). A cohort slot that holds no servers ignores its entry.

## Observation Space
``Box(-100, 100, (13 + 6G + 2T,), float32)`` with G generations on the
roadmap and T quarters; values are O(1) (logs of counts, shares):

| index | observation |
|-------|-------------|
| 0 | quarter / T |
| 1 | log10(this quarter's demand) / 10 |
| 2 | demand growth over the last quarter (ratio - 1) |
| 3 | share of demand on the primary model |
| 4 | log10(primary model params) / 12 |
| 5 | log10(secondary model params) / 12 |
| 6 | alive capacity / demand (before this quarter's action) |
| 7 | unserved share of demand last quarter |
| 8 | MW of one build lump / provisioned MW (0 under ``rent``) |
| 9 | MW ordered and not yet arrived / provisioned MW |
| 10 | installed server MW / provisioned MW (1 under ``rent``) |
| 11 | log10(1 + alive servers) / 6 |
| 12 | mean age of alive servers, years / 10 |
| 13 + g | released (1) or not yet (0), generation g |
| 13 + G + g | log10(1 + alive servers of g) / 6 |
| 13 + 2G + g | capacity per server of g this quarter / that of the newest released generation (0 unreleased) |
| 13 + 3G + g | price per server of g / $1M (0 unreleased) |
| 13 + 4G + g | server W of g / 20 kW (0 unreleased) |
| 13 + 5G + g | releases behind the newest released / 5 (0 unreleased) |
| 13 + 6G + t | log10(1 + alive servers of the cohort bought in quarter t) / 6 |
| 13 + 6G + T + t | age of that cohort, years / 10 (0 when it holds no servers) |

No unreleased generation's specs or prices are visible, and no future demand.

## Rewards
``-(quarter TCO + unserved penalty) / reward_scale_usd`` (default $1M), so
an episode's return is minus the 15-year TCO plus penalties in $M. The
quarter's dollars per category are in ``info["cost/<category>"]``
(:data:`COST_CATEGORIES`); they sum to ``-reward x reward_scale_usd``.

## Starting State
No servers; the building (``sunk`` only) holds ``initial_building_mw``.
Quarter 0's demand is served by what the first action buys.

## Episode End
Terminated after ``horizon_quarters`` quarters.

## Arguments
``gym.make("DCLifecycle-v0", scenario="compass"|"realistic", **fields)``:
any field of :class:`DCLifecycleConfig`.

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.accounting import Ledger
from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, ScenarioPresets, check_config
from cloudgym.envs.core.building import BuildingModel, BuildingPower, RentedBuilding, SunkBuilding
from cloudgym.envs.core.llm.capacity import llm_server_rates
from cloudgym.envs.core.power import budget_capped_operation
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields, positive, unit_interval
from cloudgym.envs.numerics import NEVER
from cloudgym.envs.workloads.fleet import (
    FleetGenerator,
    FleetInstance,
    GpuRoadmap,
    ShockSpec,
    gpu_roadmap,
)

COST_CATEGORIES = (
    "it_capex",
    "rack_capex",
    "network_capex",
    "network_opex",
    "power_provisioning",
    "cooling_provisioning",
    "facility",
    "energy",
    "cooling_opex",
    "maintenance",
    "unserved_penalty",
)
"""Ledger categories, $; all but ``unserved_penalty`` make up the TCO."""

TCO_CATEGORIES = COST_CATEGORIES[:-1]
OBS_BOUND = 100.0
"""Observations are clipped to [-OBS_BOUND, OBS_BOUND] (they are O(1) by construction)."""
HOURS_PER_QUARTER = 8760.0 / 4

ACTION_FIELDS = (
    "buy_generation",
    "buy_cover",
    "lifetime",
    "retire_lagging",
    "build",
    "oversubscription",
    "frequency",
    "disaggregate",
)


USD_FIELDS = (
    "rack_cost_usd",
    "network_capex_usd",
    "network_opex_usd_per_year",
    "power_provisioning_usd_per_w",
    "cooling_provisioning_usd_per_w",
    "facility_usd",
    "energy_usd_per_kwh",
    "maintenance_usd_per_server_year",
    "unserved_penalty_usd",
)
"""Prices in the config: non-negative, at most MAX_USD."""
MAX_USD = 1e12
"""Largest price a config may set, $ (beyond any real one, and finite summed over 400 quarters of a fleet)."""
MAX_GRID = 64
"""Most levels in an action grid (one discrete choice each)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DCLifecycleConfig(ScenarioPresets):
    """Configuration of DCLifecycle-v0 (defaults: the ``compass`` preset)."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "compass": {},  # the defaults: the public simulator
        "realistic": {  # units, a sunk building, noisy growth and random shocks
            "capacity_model": "llm_slo",
            "building_model": "sunk",
            "demand_growth_noise": 0.03,
            "shock_probability": (0.25, 0.25, 0.25, 0.25),
            "unserved_penalty_usd": 2.0,
            "initial_building_mw": 0.5,
            "build_lump_mw": 2.0,
        },
        "paper": {  # realistic's units and sunk building, the paper's deterministic setting, 8 MW building blocks
            "capacity_model": "llm_slo",
            "building_model": "sunk",
            "unserved_penalty_usd": 2.0,
            "initial_building_mw": 0.5,
            "build_lump_mw": 8.0,
        },
    }

    # --- horizon and roadmap
    base_year: int = 2016
    """Calendar year of quarter 0 (the roadmap's release quarters are relative to it)."""
    horizon_quarters: int = 60
    """Quarters per episode (the simulator: 15 years)."""
    release_interval_years: float = 1.0
    """Years between projected future generations."""
    gpus_per_server: int = 8
    """GPUs per server."""
    gpu_share_of_server_power: float = 0.5
    """GPU share of server nameplate power (the simulator: server W = 16 x GPU TDP)."""
    max_generation_lag: int = 3
    """How many of the newest released generations a purchase may choose from."""

    # --- capacity and demand
    capacity_model: Literal["compass_roofline", "llm_slo"] = "compass_roofline"
    """compass_roofline: the simulator's batch-1 roofline (demand units/s); llm_slo: the LLM instance model's
    tokens/s under TTFT/TBT SLOs with batching."""
    network_perf_multiplier: float = 0.3
    """Interconnect multiplier of the roofline's NVLink term (the simulator: Ethernet 0.3)."""
    initial_demand: float = 4e6
    """Demand in quarter 0 (compass: the simulator's "req/s" compared with tokens/s; realistic: output tokens/s)."""
    demand_growth_per_quarter: float = 1.0355
    """Trend growth factor per quarter (~15%/year)."""
    demand_growth_noise: float = 0.0
    """Std of the log-normal noise on each quarter's growth."""
    migration_fraction: float = 0.5
    """Share of demand on the new full-size model in the first two quarters of a year."""
    distilled_fraction: float = 0.1
    """Size of a distilled model relative to its full-size model."""
    prompt_tokens: int = 1020
    """Prompt tokens per request (llm_slo capacity; the conversation trace's median)."""
    output_tokens: int = 129
    """Generated tokens per request (llm_slo capacity)."""
    ttft_slo_s: float = 0.4
    """Time-to-first-token SLO, s (llm_slo capacity)."""
    tbt_slo_s: float = 0.1
    """Time-between-tokens SLO, s (llm_slo capacity)."""

    # --- shocks
    shocks: ShockSpec = dataclasses.field(default_factory=ShockSpec)
    """Magnitudes of the four shocks."""
    shock_probability: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Per-episode probability of the demand, model-size, hardware and price shocks."""
    shock_window: tuple[int, int] = (8, 40)
    """Quarters between which a drawn shock happens (uniform, inclusive)."""
    fixed_shock_quarter: tuple[int, int, int, int] = (-1, -1, -1, -1)
    """Force a shock at this quarter (>= 0; the simulator's switches put it at 20), -1 = drawn or none."""

    # --- costs (the simulator's defaults)
    amortization_years: int = 5
    """Servers, racks and network are paid evenly over this many years from purchase, even if retired earlier."""
    default_lifetime_years: int = 5
    """Natural lifetime; cohorts older than this pay extended maintenance."""
    max_lifetime_years: int = 10
    """No cohort serves longer than this."""
    rack_power_w: float = 50_000.0
    """Power of one rack, W."""
    rack_cost_usd: float = 2_000.0
    """Price of one rack, $."""
    network_capex_usd: float = 300.0
    """Network capex per server, $ (Ethernet)."""
    network_opex_usd_per_year: float = 75.0
    """Network opex per server-year, $."""
    power_provisioning_usd_per_w: float = 7.0
    """Power provisioning, $/W."""
    cooling_provisioning_usd_per_w: float = 2.5
    """Cooling provisioning, $/W."""
    facility_usd: float = 1_000_000.0
    """Facility cost per facility_w, $."""
    facility_w: float = 8_000_000.0
    """Power of one facility, W."""
    building_life_years: int = 15
    """Building provisioning is amortised over this many years."""
    energy_usd_per_kwh: float = 0.04
    """Energy price, $/kWh."""
    utilization: float = 0.75
    """Average draw as a share of server nameplate power (at full clock, no capping)."""
    cooling_opex_ratio: float = 0.2
    """Cooling opex as a share of energy cost (PUE 1.2)."""
    maintenance_usd_per_server_year: float = 5_200.0
    """Maintenance per server-year, $."""
    extended_maintenance_factor: float = 1.15
    """Maintenance multiplier past default_lifetime_years."""
    unserved_penalty_usd: float = 50.0
    """SLA price: $ per unit of demand left unserved for one quarter."""
    reward_scale_usd: float = 1e6
    """Reward = -(quarter's dollars) / reward_scale_usd."""

    # --- building
    building_model: Literal["rent", "sunk"] = "rent"
    """rent: the simulator's provisioning charged on installed + stranded power; sunk: lumps with a lead time."""
    initial_building_mw: float = 2.0
    """Provisioned MW at quarter 0 (sunk only)."""
    build_lump_mw: float = 8.0
    """MW per build lump (sunk only)."""
    build_lead_quarters: int = 4
    """Quarters from ordering a lump to its arrival (sunk only)."""

    # --- operation
    peak_draw_fraction: float = 0.79
    """Fleet peak draw as a share of nameplate at full clock (POLCA: inference rows peak at ~79%)."""
    gpu_idle_fraction: float = 0.2
    """GPU idle draw as a share of TDP (power model)."""
    freq_power_exponent: float = 2.3
    """alpha of dynamic power in (f/f_max)^alpha (POLCA)."""
    freq_throughput_exponent: float = 0.3
    """beta of throughput in (f/f_max)^beta (POLCA: 1410->1110 MHz costs <= 7%)."""
    kv_transfer_overhead: float = 0.05
    """Share of decode capacity lost to moving KV caches between generations when disaggregated (llm_slo)."""

    # --- action grids
    buy_cover_levels: tuple[float, ...] = (0.0, 1.0, 1.05, 1.1, 1.25, 1.5)
    """Target capacity / demand of a purchase; 0 = buy nothing."""
    lifetime_years_levels: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10)
    """Retirement ages a policy may set."""
    build_lumps: tuple[int, ...] = (0, 1, 2, 4, 8)
    """Lumps a policy may order in one quarter."""
    oversubscription_levels: tuple[float, ...] = (1.0, 1.15, 1.3, 1.45)
    """Installed server W per provisioned W."""
    frequency_levels: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
    """GPU clock caps as a share of the maximum."""
    cohort_actions: bool = True
    """Add one retire/keep/extend entry per cohort to the action."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        "base_year": Range(1900, 2200, low_open=True, high_open=True, why="a calendar year"),
        "horizon_quarters": at_least(4, 400, why="quarters of one sub-env's arrays"),
        "release_interval_years": Range(
            0.05, 100, why="one generation array entry per release: (B, T, G) tables; several may share a quarter"
        ),
        "gpus_per_server": at_least(1, 64),
        "gpu_share_of_server_power": unit_interval(low_open=True),
        "max_generation_lag": at_least(1, MAX_GRID),
        "network_perf_multiplier": positive(100),
        # Demand grows by up to 2x a quarter for 400 quarters: every amount stays finite.
        "initial_demand": positive(1e15),
        "demand_growth_per_quarter": Range(0.5, 2),
        "demand_growth_noise": Range(0, 1, why="std of the log growth"),
        "migration_fraction": unit_interval(),
        "distilled_fraction": unit_interval(low_open=True),
        "prompt_tokens": at_least(1, 1 << 17),
        "output_tokens": at_least(1, 1 << 17),
        "ttft_slo_s": positive(3600),
        "tbt_slo_s": positive(3600),
        "shock_probability": unit_interval(),
        "shock_window": at_least(0),
        "fixed_shock_quarter": at_least(-1),
        "amortization_years": at_least(1, 100),
        "default_lifetime_years": at_least(1, 100),
        "max_lifetime_years": at_least(1, 100),
        "rack_power_w": Range(1, 1e8),
        "facility_w": Range(1, 1e12),
        "building_life_years": at_least(1, 100),
        **dict.fromkeys(USD_FIELDS, at_least(0, MAX_USD)),
        "utilization": unit_interval(low_open=True),
        "cooling_opex_ratio": at_least(0, 100),
        "extended_maintenance_factor": at_least(1, 100),
        "reward_scale_usd": Range(1e-3, MAX_USD),
        "initial_building_mw": at_least(0, 1e6),
        "build_lump_mw": positive(1e6),
        "build_lead_quarters": at_least(0, 400),
        "peak_draw_fraction": unit_interval(low_open=True),
        "gpu_idle_fraction": unit_interval(high_open=True),
        "freq_power_exponent": at_least(1, 10),
        "freq_throughput_exponent": unit_interval(),
        "kv_transfer_overhead": unit_interval(high_open=True),
        "buy_cover_levels": at_least(0, 100),
        "lifetime_years_levels": at_least(1),
        "build_lumps": at_least(0, 1024),
        "oversubscription_levels": at_least(1, 10),
        "frequency_levels": unit_interval(low_open=True),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        check_config(
            self.capacity_model in ("compass_roofline", "llm_slo"),
            self,
            f"capacity_model must be 'compass_roofline' or 'llm_slo', got {self.capacity_model!r}",
        )
        check_config(
            self.building_model in ("rent", "sunk"),
            self,
            f"building_model must be 'rent' or 'sunk', got {self.building_model!r}",
        )
        t = self.horizon_quarters
        lo, hi = self.shock_window
        check_config(
            lo <= hi < t,
            self,
            f"shock_window must satisfy 0 <= lo <= hi < horizon_quarters ({t}), got {self.shock_window}",
        )
        check_config(
            all(q < t for q in self.fixed_shock_quarter),
            self,
            f"fixed_shock_quarter must be four quarters in [-1, horizon_quarters={t}), got {self.fixed_shock_quarter}",
        )
        check_config(
            self.default_lifetime_years <= self.max_lifetime_years,
            self,
            "need 1 <= default_lifetime_years <= max_lifetime_years",
        )
        check_config(
            self.building_life_years * 4 >= t,
            self,
            f"building_life_years ({self.building_life_years}) must cover horizon_quarters ({t}): "
            "a lump never expires within an episode",
        )
        self._check_action_grids()

    def _check_action_grids(self) -> None:
        grids = ("buy_cover_levels", "lifetime_years_levels", "build_lumps", "oversubscription_levels")
        for name in (*grids, "frequency_levels"):
            size = len(getattr(self, name))
            least = 2 if name == "buy_cover_levels" else 1
            check_config(least <= size <= MAX_GRID, self, f"{name} needs {least} to {MAX_GRID} levels, got {size}")
        check_config(
            all(y <= self.max_lifetime_years for y in self.lifetime_years_levels),
            self,
            f"lifetime_years_levels must lie in [1, max_lifetime_years={self.max_lifetime_years}]",
        )
        check_config(
            self.default_lifetime_years in self.lifetime_years_levels,
            self,
            "lifetime_years_levels must include default_lifetime_years",
        )

    @property
    def amortization_quarters(self) -> int:
        return self.amortization_years * 4


@dataclasses.dataclass(frozen=True)
class CapacityTables:
    """Per-server rates of k episodes, (k, T, G): episode, quarter t, generation g, at full clock."""

    capacity: np.ndarray  # (k, T, G) float64, demand units/s one server serves (mixed serving)
    prefill: np.ndarray  # (k, T, G) float64, llm_slo only: prefill-only rate, in output tokens/s of the request shape
    decode: np.ndarray  # (k, T, G) float64, llm_slo only: decode-only output tokens/s
    split_capacity: np.ndarray  # (k, T, G) float64, compass only: capacity on the larger of the two models


def stacked(instances: Sequence[FleetInstance], field: str) -> np.ndarray:
    """(k, ...) one field of k instances, stacked (the batched reset writes every row at once)."""
    return np.stack([getattr(inst, field) for inst in instances])


def per_cohort(table: np.ndarray, rows: np.ndarray, q: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """(B, T) ``table[b, q[b], gen[b, t]]`` of a C-contiguous (B, T, G) table: each cohort's entry this quarter.

    One ``np.take`` on flat indices (what ``take_along_axis(table[rows, q], gen, axis=1)`` gives, without the
    (B, G) copy and the index grids).
    """
    _, t, g = table.shape
    return np.take(table, ((rows * t + q) * g)[:, None] + gen)


class CapacityModel(Protocol):
    """What one server of a generation serves, and what a fleet serves when prefill and decode are split."""

    def tables(self, instances: Sequence[FleetInstance]) -> CapacityTables:
        """The per-server tables of k episodes, all at once (computed once per episode, at reset)."""

    def disaggregated(self, s: DCLifecycleState, rows: np.ndarray, q: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """(B,) capacity of the alive fleet in quarter ``q`` with disaggregation; ``factor`` (B,) is the throughput
        multiplier of the operating point."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompassRoofline:
    """The public simulator's simplified batch-1 roofline (demand units/s) and its disaggregation formula."""

    roadmap: GpuRoadmap
    gpus_per_server: int
    network_perf_multiplier: float

    def roofline(self, hbm_tb_s: np.ndarray, server_tflops: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(..., T, G) the simulator's per-server roofline for the model of each quarter, units/s.

        ``hbm_tb_s`` and ``server_tflops`` (..., G) are an episode's (or k episodes') GPU figures and
        ``params`` (..., T) its model sizes; elementwise, so k episodes give each one's table bit for bit.
        """
        size_b = params[..., :, None] / 1e9  # (..., T, 1) billions of parameters
        ops = 2.0 * size_b
        memory = self.gpus_per_server * hbm_tb_s[..., None, :] * 1000.0 / ops
        compute = server_tflops[..., None, :] * 1000.0 / ops
        # The simulator's interconnect term: 2 all-reduces x 2 x hidden x layers x 2 bytes per token over NVLink.
        layers = np.floor(0.8 * np.sqrt(size_b) * 100.0)
        hidden = np.floor(np.sqrt(size_b * 1e9 / (12.0 * np.maximum(layers, 1.0)))) * 12.0
        net_bytes = 8.0 * hidden * layers
        link = self.gpus_per_server * self.roadmap.nvlink_gb_s[None, :] * self.network_perf_multiplier
        network = np.where(net_bytes > 0, link / np.maximum(net_bytes / 1e9, 1e-300), np.inf)
        return np.minimum(np.minimum(memory, compute), network)

    def tables(self, instances: Sequence[FleetInstance]) -> CapacityTables:
        hbm, tflops = stacked(instances, "hbm_tb_s"), stacked(instances, "server_tflops")
        primary_params, secondary_params = stacked(instances, "primary_params"), stacked(instances, "secondary_params")
        primary = self.roofline(hbm, tflops, primary_params)
        secondary = self.roofline(hbm, tflops, secondary_params)
        share = stacked(instances, "primary_share")[:, :, None]
        larger = self.roofline(hbm, tflops, np.maximum(primary_params, secondary_params))
        zeros = np.zeros(primary.shape)
        return CapacityTables(
            capacity=share * primary + (1 - share) * secondary, prefill=zeros, decode=zeros, split_capacity=larger
        )

    @functools.cached_property
    def newest_first(self) -> np.ndarray:
        """(G,) int16 sort key of each generation: 0 for the latest release quarter, 1 for the one before, ...

        Generations released in the same quarter share a key. int16 keys make the stable sort a radix sort.
        """
        releases, dense = np.unique(self.roadmap.release_quarter, return_inverse=True)
        return (releases.size - 1 - dense).astype(np.int16)

    def disaggregated(self, s: DCLifecycleState, rows: np.ndarray, q: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """The simulator's disaggregated capacity: batches ordered newest generation first (then by purchase),
        the first half of them at prefill_fraction 0.4 of their capacity on the larger model, the rest at 0.6."""
        alive = s.cohort_alive > 0
        gen = np.maximum(s.cohort_gen, 0)
        b, t = alive.shape
        # A stable sort by release, newest first, keeps cohorts of one release in purchase order; dead cohorts last.
        key = np.where(alive, self.newest_first[gen], np.iinfo(np.int16).max)
        order = np.argsort(key, axis=1, kind="stable")
        rank = np.empty((b, t), np.int64)  # rank[i, order[i, j]] = j
        rank.ravel()[(np.arange(b) * t)[:, None] + order] = np.arange(t)
        half = alive.sum(axis=1) // 2
        share = np.where(rank < half[:, None], 0.4, 0.6)
        per_server = per_cohort(s.split_capacity, rows, q, gen)
        return (per_server * s.cohort_alive * share * factor[:, None]).sum(axis=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlmSlo:
    """Tokens/s from the LLM instance model under TTFT/TBT SLOs, and Splitwise across generations."""

    roadmap: GpuRoadmap
    gpus_per_server: int
    prompt_tokens: int
    output_tokens: int
    ttft_slo_s: float
    tbt_slo_s: float
    kv_transfer_overhead: float

    def tables(self, instances: Sequence[FleetInstance]) -> CapacityTables:
        """(k, T, G) tables from the LLM instance model: mixed, prefill-only and decode-only output tokens/s per server.

        A server's 8 GPUs hold ``8 / tp`` instances of the served model, where
        the tensor-parallel degree ``tp`` is the LLM model's choice (weights plus
        room for the KV cache); a model wider than a server spreads over
        ``tp / 8`` servers. ``capacity`` is the SLO-bound throughput with
        continuous batching (prefills mixed into decode batches); ``prefill``
        and ``decode`` are what the server sustains doing only one phase (for
        disaggregation), all in output tokens/s of the request shape.

        The k episodes share most (GPU spec, model size) pairs (only the
        hardware and model-size shocks make new ones), so each distinct pair
        is solved once (:meth:`rates`) and the tables are gathered from the
        distinct pairs' rates.
        """
        k, g = len(instances), self.roadmap.size
        roadmap = self.roadmap
        specs = np.stack(
            [
                stacked(instances, "fp16_tflops"),
                stacked(instances, "hbm_tb_s"),
                stacked(instances, "hbm_gb"),
                np.broadcast_to(roadmap.nvlink_gb_s, (k, g)),
                np.broadcast_to(roadmap.tdp_w, (k, g)),
            ],
            axis=-1,
        )  # (k, G, 5) the spec of generation g in episode i
        spec_values, spec_code = np.unique(specs.reshape(k * g, 5), axis=0, return_inverse=True)
        spec_code = spec_code.reshape(k, g)
        params = np.stack([stacked(instances, "primary_params"), stacked(instances, "secondary_params")])  # (2, k, T)
        size_values, size_code = np.unique(params, return_inverse=True)
        size_code = size_code.reshape(params.shape)
        needed = np.zeros((spec_values.shape[0], size_values.size), bool)
        for model in range(2):
            needed[spec_code[:, None, :], size_code[model][:, :, None]] = True
        rates = np.zeros((*needed.shape, 3))  # (distinct specs, distinct sizes, (mixed, prefill, decode))
        for a, b in zip(*np.nonzero(needed)):
            tflops, hbm, mem, nvlink, tdp = (float(x) for x in spec_values[a])
            rates[a, b] = self.rates((tflops, hbm, mem, nvlink, tdp), float(size_values[b]))
        # (k, T, G, 3) per episode, quarter and generation, for the primary and the secondary model.
        primary = rates[spec_code[:, None, :], size_code[0][:, :, None]]
        secondary = rates[spec_code[:, None, :], size_code[1][:, :, None]]
        share = stacked(instances, "primary_share")[:, :, None]
        mixed, pre, dec = (share * primary[..., j] + (1 - share) * secondary[..., j] for j in range(3))
        return CapacityTables(capacity=mixed, prefill=pre, decode=dec, split_capacity=np.zeros(mixed.shape))

    def rates(self, spec: tuple[float, float, float, float, float], params: float) -> tuple[float, float, float]:
        """(mixed, prefill-only, decode-only) output tokens/s of one server of ``spec`` serving ``params``."""
        return llm_server_rates(
            spec,
            params,
            self.gpus_per_server,
            self.prompt_tokens,
            self.output_tokens,
            self.ttft_slo_s,
            self.tbt_slo_s,
        )

    def disaggregated(self, s: DCLifecycleState, rows: np.ndarray, q: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """Splitwise across generations: the newest alive generation prefills for older ones that decode.

        With new-pool rates P_N (prefill only) and M_N (mixed) and old-pool
        rates D_O (decode only, less ``kv_transfer_overhead``) and M_O (mixed),
        a share phi of the new pool prefills for a share psi = phi P_N / D_O of
        the old pool, the rest of both serve mixed: throughput phi P_N + (1 -
        phi) M_N + (1 - psi) M_O, linear in phi, so the best split is phi = 0
        or the largest phi with psi <= 1.
        """
        alive = s.cohort_alive
        gen = np.maximum(s.cohort_gen, 0)
        release = np.where(alive > 0, self.roadmap.release_quarter[gen], -1)
        newest = release.max(axis=1, keepdims=True)
        new = (alive > 0) & (release == newest)

        def pool(table: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return (per_cohort(table, rows, q, gen) * alive * mask).sum(axis=1) * factor

        old = (alive > 0) & ~new
        p_new, m_new = pool(s.prefill, new), pool(s.capacity, new)
        d_old, m_old = pool(s.decode, old) * (1 - self.kv_transfer_overhead), pool(s.capacity, old)
        phi = np.where(p_new > 0, np.minimum(1.0, d_old / np.maximum(p_new, 1e-300)), 0.0)
        split = phi * p_new + (1 - phi) * m_new + (1 - phi * p_new / np.maximum(d_old, 1e-300)) * m_old
        return np.maximum(split, m_new + m_old)


def capacity_model(config: DCLifecycleConfig, roadmap: GpuRoadmap) -> CapacityModel:
    """The config's capacity model (the one place that reads ``capacity_model``)."""
    if config.capacity_model == "compass_roofline":
        return CompassRoofline(
            roadmap=roadmap,
            gpus_per_server=config.gpus_per_server,
            network_perf_multiplier=config.network_perf_multiplier,
        )
    return LlmSlo(
        roadmap=roadmap,
        gpus_per_server=config.gpus_per_server,
        prompt_tokens=config.prompt_tokens,
        output_tokens=config.output_tokens,
        ttft_slo_s=config.ttft_slo_s,
        tbt_slo_s=config.tbt_slo_s,
        kv_transfer_overhead=config.kv_transfer_overhead,
    )


def building_model(config: DCLifecycleConfig) -> BuildingModel:
    """The config's building model (the one place that reads ``building_model``)."""
    if config.building_model == "sunk":
        return SunkBuilding(
            initial_mw=config.initial_building_mw,
            lump_mw=config.build_lump_mw,
            lead_quarters=config.build_lead_quarters,
        )
    return RentedBuilding()


def fleet_generator(config: DCLifecycleConfig, roadmap: GpuRoadmap) -> FleetGenerator:
    """The generator of the config's episodes."""
    return FleetGenerator(
        roadmap=roadmap,
        horizon_quarters=config.horizon_quarters,
        base_year=config.base_year,
        initial_demand=config.initial_demand,
        growth_per_quarter=config.demand_growth_per_quarter,
        growth_noise=config.demand_growth_noise,
        migration_fraction=config.migration_fraction,
        distilled_fraction=config.distilled_fraction,
        shocks=config.shocks,
        shock_probability=config.shock_probability,
        shock_window=config.shock_window,
        fixed_shock_quarter=config.fixed_shock_quarter,
    )


def operation_factors(config: DCLifecycleConfig) -> tuple[np.ndarray, np.ndarray]:
    """(throughput, energy) multipliers (O, F) per (oversubscription, frequency) level (POLCA-style capping)."""
    c = config
    return budget_capped_operation(
        oversubscription_levels=c.oversubscription_levels,
        frequency_levels=c.frequency_levels,
        peak_draw_fraction=c.peak_draw_fraction,
        gpu_share_of_server_power=c.gpu_share_of_server_power,
        gpu_idle_fraction=c.gpu_idle_fraction,
        freq_power_exponent=c.freq_power_exponent,
        freq_throughput_exponent=c.freq_throughput_exponent,
    )


def observation_slices(g: int, t: int) -> dict[str, slice]:
    """Where each block of the observation lies (the docstring's table), G generations and T quarters."""
    head = 13
    return {
        "head": slice(0, head),
        "released": slice(head, head + g),
        "servers_by_gen": slice(head + g, head + 2 * g),
        "relative_capacity": slice(head + 2 * g, head + 3 * g),
        "price_musd": slice(head + 3 * g, head + 4 * g),
        "server_w_20kw": slice(head + 4 * g, head + 5 * g),
        "behind": slice(head + 5 * g, head + 6 * g),
        "cohort_servers": slice(head + 6 * g, head + 6 * g + t),
        "cohort_age": slice(head + 6 * g + t, head + 6 * g + 2 * t),
    }


def action_nvec(config: DCLifecycleConfig) -> np.ndarray:
    """Choices per entry of the flattened action (the docstring's table)."""
    c = config
    nvec = [
        c.max_generation_lag,
        len(c.buy_cover_levels),
        len(c.lifetime_years_levels),
        c.max_generation_lag + 1,
        len(c.build_lumps),
        len(c.oversubscription_levels),
        len(c.frequency_levels),
        2,
    ]
    if c.cohort_actions:
        nvec += [3] * c.horizon_quarters
    return np.array(nvec, dtype=np.int64)


@dataclasses.dataclass
class DCLifecycleCounters:
    """Per-episode tallies and last quarter's outcome (the base zeroes them at every reset)."""

    last_capacity: np.ndarray  # (B,) float64, capacity after last quarter's action
    last_unserved: np.ndarray  # (B,) float64, unserved share of demand last quarter
    unserved_total: np.ndarray  # (B,) float64, unserved demand summed over quarters
    demand_total: np.ndarray  # (B,) float64, demand summed over quarters
    servers_bought: np.ndarray  # (B,) float64, servers bought this episode
    blocked_servers: np.ndarray  # (B,) float64, servers a purchase wanted that the building could not power
    stranded_w_quarters: np.ndarray  # (B,) float64, stranded W summed over quarters
    built_w: np.ndarray  # (B,) float64, W ordered this episode
    server_quarters: np.ndarray  # (B,) float64, alive server-quarters
    age_server_quarters: np.ndarray  # (B,) float64, sum of age (quarters) x servers over quarters


@dataclasses.dataclass
class DCLifecycleState:
    """State of B datacenters."""

    # --- the episode's instance
    demand: np.ndarray  # (B, T) float64, demand per quarter (demand units/s)
    primary_share: np.ndarray  # (B, T) float64, share of demand on the primary model
    primary_params: np.ndarray  # (B, T) float64, parameters of the primary model
    secondary_params: np.ndarray  # (B, T) float64, parameters of the secondary (distilled) model
    capacity: np.ndarray  # (B, T, G) float64, demand units/s one server of g serves in quarter t at full clock
    prefill: np.ndarray  # (B, T, G) float64, llm_slo only: request rate/s one server of g prefills, x output tokens
    decode: np.ndarray  # (B, T, G) float64, llm_slo only: output tokens/s one server of g decodes
    split_capacity: np.ndarray  # (B, T, G) float64, compass only: per-server capacity on the larger model
    price: np.ndarray  # (B, G) float64, $ per server of each generation this episode
    shock_quarter: np.ndarray  # (B, 4) int64, quarter of each shock, -1 = none
    # --- the fleet: one cohort per purchase quarter
    cohort_gen: np.ndarray  # (B, T) int64, generation bought in quarter t, -1 = nothing bought
    cohort_bought: np.ndarray  # (B, T) float64, servers bought in quarter t
    cohort_alive: np.ndarray  # (B, T) float64, servers of that cohort still in service (bought or 0)
    cohort_racks: np.ndarray  # (B, T) float64, racks the cohort occupies while alive
    cohort_rack_stranded_w: np.ndarray  # (B, T) float64, W of its racks no server uses (>= 0 by construction)
    cohort_retired_q: np.ndarray  # (B, T) int64, quarter it was retired (NEVER while alive or never bought)
    # --- the building and the money
    building: BuildingPower  # (B,) provisioned W, (B, T) W arriving per quarter
    ledger: Ledger  # (B, C) $ per category
    counters: DCLifecycleCounters


@dataclasses.dataclass(frozen=True, kw_only=True)
class DCLifecycleParams(CoreParams):
    """What DCLifecycle-v0 derives once from its config."""

    roadmap: GpuRoadmap
    """Every generation the horizon can see (G of them)."""
    server_w: np.ndarray  # (G,) float64, nameplate W of one server of each generation
    throughput_factor: np.ndarray  # (O, F) float64, throughput multiplier per oversubscription and clock level
    energy_factor: np.ndarray  # (O, F) float64, energy multiplier per oversubscription and clock level
    capacity: CapacityModel
    """Per-server capacity tables and disaggregation (``capacity_model``)."""
    building: BuildingModel
    """How building power is provisioned and paid for (``building_model``)."""
    obs_slices: Mapping[str, slice]
    """Where each block of the observation lies (the docstring's table)."""
    quarters: np.ndarray  # (T,) int64, 0 .. T-1 (cohort t is bought in quarter t)
    released: np.ndarray  # (T, G) bool, whether generation g can be bought in quarter t
    newest_released: np.ndarray  # (T,) int64, newest generation released by quarter t (-1 = none)
    buy_cover_levels: np.ndarray  # (C,) float64, the config's levels as an array
    lifetime_years_levels: np.ndarray  # (L,) int64
    build_lumps: np.ndarray  # (K,) int64
    oversubscription_levels: np.ndarray  # (O,) float64


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(name="tco_usd", unit="$", higher_is_better=False, description="15-year TCO (no penalties)"),
    MetricSpec(
        name="unserved_share",
        unit="share",
        higher_is_better=False,
        description="demand left unserved, summed over quarters / demand summed over quarters",
    ),
    *(
        MetricSpec(name=f"cost_{c}_usd", unit="$", higher_is_better=False, description=f"episode total of {c}")
        for c in COST_CATEGORIES
    ),
    MetricSpec(
        name="servers_bought", unit="servers", higher_is_better=None, description="servers bought in the episode"
    ),
    MetricSpec(
        name="blocked_servers",
        unit="servers",
        higher_is_better=False,
        description="servers wanted that the building could not power",
    ),
    MetricSpec(
        name="mean_stranded_mw",
        unit="MW",
        higher_is_better=False,
        description="provisioned power no server uses, mean over quarters",
    ),
    MetricSpec(
        name="mean_fleet_age_years", unit="years", higher_is_better=None, description="server-weighted mean age"
    ),
    MetricSpec(name="built_mw", unit="MW", higher_is_better=None, description="building MW ordered (sunk)"),
)
"""The domain metrics every episode reports (``info["metrics"]``)."""


class DCLifecycleCore(BatchedCore[DCLifecycleConfig, DCLifecycleParams, DCLifecycleState]):
    config_cls = DCLifecycleConfig
    state_size_fields = ("horizon_quarters", "release_interval_years")
    metrics = METRICS

    # ------------------------------------------------------------------ params, state, resets
    def _derive(self, config: DCLifecycleConfig) -> DCLifecycleParams:
        c, t = config, config.horizon_quarters
        roadmap = gpu_roadmap(c.base_year, t, c.release_interval_years)
        g = roadmap.size
        throughput, energy = operation_factors(c)
        released = roadmap.release_quarter[None, :] <= np.arange(t)[:, None]
        return DCLifecycleParams(
            action_space=spaces.MultiDiscrete(action_nvec(c)),
            observation_space=spaces.Box(-OBS_BOUND, OBS_BOUND, (13 + 6 * g + 2 * t,), np.float32),
            generator=fleet_generator(c, roadmap),
            roadmap=roadmap,
            server_w=c.gpus_per_server * roadmap.tdp_w / c.gpu_share_of_server_power,
            throughput_factor=throughput,
            energy_factor=energy,
            capacity=capacity_model(c, roadmap),
            building=building_model(c),
            obs_slices=observation_slices(g, t),
            quarters=np.arange(t),
            released=released,
            newest_released=released.sum(axis=1) - 1,  # generations are sorted by release
            buy_cover_levels=np.asarray(c.buy_cover_levels),
            lifetime_years_levels=np.asarray(c.lifetime_years_levels),
            build_lumps=np.asarray(c.build_lumps),
            oversubscription_levels=np.asarray(c.oversubscription_levels),
        )

    def _init_state(self, params: DCLifecycleParams) -> DCLifecycleState:
        b, t, g = self.num_envs, self.config.horizon_quarters, params.roadmap.size
        return DCLifecycleState(
            demand=np.zeros((b, t)),
            primary_share=np.zeros((b, t)),
            primary_params=np.ones((b, t)),
            secondary_params=np.ones((b, t)),
            capacity=np.zeros((b, t, g)),
            prefill=np.zeros((b, t, g)),
            decode=np.zeros((b, t, g)),
            split_capacity=np.zeros((b, t, g)),
            price=np.zeros((b, g)),
            shock_quarter=np.full((b, 4), -1, np.int64),
            cohort_gen=np.full((b, t), -1, np.int64),
            cohort_bought=np.zeros((b, t)),
            cohort_alive=np.zeros((b, t)),
            cohort_racks=np.zeros((b, t)),
            cohort_rack_stranded_w=np.zeros((b, t)),
            cohort_retired_q=np.full((b, t), NEVER, np.int64),
            building=BuildingPower.zeros(b, t),
            ledger=Ledger.zeros(b, COST_CATEGORIES),
            counters=DCLifecycleCounters(**{f.name: np.zeros(b) for f in dataclasses.fields(DCLifecycleCounters)}),
        )

    def _load(self, env_ids: np.ndarray, instances: Sequence[FleetInstance]) -> None:
        s, p = self.state, self.params
        s.demand[env_ids] = stacked(instances, "demand")
        s.primary_share[env_ids] = stacked(instances, "primary_share")
        s.primary_params[env_ids] = stacked(instances, "primary_params")
        s.secondary_params[env_ids] = stacked(instances, "secondary_params")
        s.price[env_ids] = stacked(instances, "price_usd") * self.config.gpus_per_server
        s.shock_quarter[env_ids] = stacked(instances, "shock_quarter")
        tables = p.capacity.tables(instances)
        s.capacity[env_ids] = tables.capacity
        s.prefill[env_ids] = tables.prefill
        s.decode[env_ids] = tables.decode
        s.split_capacity[env_ids] = tables.split_capacity
        s.cohort_gen[env_ids] = -1
        s.cohort_bought[env_ids] = 0.0
        s.cohort_alive[env_ids] = 0.0
        s.cohort_racks[env_ids] = 0.0
        s.cohort_rack_stranded_w[env_ids] = 0.0
        s.cohort_retired_q[env_ids] = NEVER
        p.building.reset(s.building, env_ids)
        s.ledger.reset_envs(env_ids)

    # ------------------------------------------------------------------ helpers
    @property
    def quarter(self) -> np.ndarray:
        """(B,) the quarter the next action decides (clipped to the last one)."""
        return np.minimum(self.stats.length, self.config.horizon_quarters - 1)

    def released(self, quarter: np.ndarray) -> np.ndarray:
        """(B, G) whether each generation can be bought in ``quarter`` (B,), quarters in [0, T)."""
        return self.params.released[quarter]

    def newest_released(self, quarter: np.ndarray) -> np.ndarray:
        """(B,) index of the newest generation released by ``quarter`` (B,), quarters in [0, T)."""
        return self.params.newest_released[quarter]

    def alive_capacity(self, quarter: np.ndarray, freq_idx: np.ndarray, over_idx: np.ndarray) -> np.ndarray:
        """(B, T) capacity of each cohort in ``quarter`` under the operation levels (mixed serving)."""
        s = self.state
        cap = per_cohort(s.capacity, self._env_index, quarter, np.maximum(s.cohort_gen, 0))
        return cap * s.cohort_alive * self.params.throughput_factor[over_idx, freq_idx][:, None]

    def installed_w(self) -> np.ndarray:
        """(B,) nameplate W of the alive servers."""
        return (self.state.cohort_alive * self.params.server_w[np.maximum(self.state.cohort_gen, 0)]).sum(axis=1)

    def servers_by_generation(self) -> np.ndarray:
        """(B, G) alive servers of each generation."""
        s, g = self.state, self.params.roadmap.size
        # bincount adds the cohorts in index order, as np.add.at did (same sums, bit for bit), without its overhead.
        flat = (self._env_index * g)[:, None] + np.maximum(s.cohort_gen, 0)
        return np.bincount(flat.ravel(), weights=s.cohort_alive.ravel(), minlength=self.num_envs * g).reshape(
            self.num_envs, g
        )

    @property
    def action_size(self) -> int:
        """Entries of the flattened action."""
        return len(ACTION_FIELDS) + (self.config.horizon_quarters if self.config.cohort_actions else 0)

    def action_fields(self) -> list[str]:
        """Names of the entries of the flattened action."""
        names = list(ACTION_FIELDS)
        if self.config.cohort_actions:
            names += [f"cohort_{t}" for t in range(self.config.horizon_quarters)]
        return names

    # ------------------------------------------------------------------ the step
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c, p = self.state, self.config, self.params
        rows, q = self._env_index, self.quarter
        s.ledger.begin_step()
        newest = self.newest_released(q)
        freq_idx, disagg = actions[:, 6], actions[:, 7]
        p.building.open_quarter(s.building, rows, q)  # lumps ordered earlier arrive now
        self._retire(actions, q, newest)
        installed_w = self.installed_w()
        # Oversubscription cannot fall below what the installed fleet already needs.
        over_idx = p.building.oversubscription(actions[:, 5], p.oversubscription_levels, installed_w, s.building)
        over = p.oversubscription_levels[over_idx]
        capacity = self._fleet_capacity(q, freq_idx, over_idx, disagg)
        bought = self._purchase(actions, q, newest, over_idx, capacity, installed_w)
        capacity = np.where(bought > 0, self._fleet_capacity(q, freq_idx, over_idx, disagg), capacity)
        s.counters.built_w += p.building.order(p.build_lumps[actions[:, 4]], rows, q, s.building)
        stranded_w = self._charge(q, over, over_idx, freq_idx)
        demand = s.demand[rows, q]
        unserved = np.maximum(demand - capacity, 0.0)
        s.ledger.charge("unserved_penalty", unserved * c.unserved_penalty_usd)
        self._tally(q, demand, capacity, unserved)
        terminated = self.stats.length + 1 >= c.horizon_quarters
        reward = -s.ledger.step_total() / c.reward_scale_usd
        info: Info = {
            **s.ledger.step_breakdown(),
            "demand": demand,
            "capacity": capacity,
            "unserved": unserved,
            "servers_bought": bought,
            "servers_by_gen": self.servers_by_generation(),  # after this quarter's purchase
            "stranded_w": stranded_w,
        }
        return reward, terminated, np.zeros(self.num_envs, bool), info

    def _retire(self, actions: np.ndarray, q: np.ndarray, newest: np.ndarray) -> None:
        """Retire cohorts by the lifetime rule, lagging generations, per-cohort overrides and the age limit."""
        s, c, p = self.state, self.config, self.params
        life_idx, lagging = actions[:, 2], actions[:, 3]
        alive = s.cohort_alive > 0
        age = q[:, None] - p.quarters[None, :]  # (B, T) quarters since purchase
        lifetime_q = p.lifetime_years_levels[life_idx] * 4
        retire = alive & (age >= lifetime_q[:, None])
        if c.cohort_actions:
            override = actions[:, 8 : 8 + c.horizon_quarters]
            retire &= override != 2  # "keep" exempts a cohort from the lifetime rule only
            retire |= alive & (override == 1)
        # Releases behind: how many generations were released after this cohort's and by this quarter.
        behind = newest[:, None] - np.maximum(s.cohort_gen, 0)
        retire |= alive & (lagging[:, None] >= 1) & (behind >= lagging[:, None])
        retire |= alive & (age >= c.max_lifetime_years * 4)
        s.cohort_alive[retire] = 0.0
        s.cohort_retired_q[retire] = np.broadcast_to(q[:, None], retire.shape)[retire]

    def _purchase(
        self,
        actions: np.ndarray,
        q: np.ndarray,
        newest: np.ndarray,
        over_idx: np.ndarray,
        capacity: np.ndarray,
        installed_w: np.ndarray,
    ) -> np.ndarray:
        """Buy the cover level's shortfall of the chosen generation, what the building can power; (B,) bought."""
        s, c, p = self.state, self.config, self.params
        rows, over = self._env_index, p.oversubscription_levels[over_idx]
        cover = p.buy_cover_levels[actions[:, 1]]
        buy_gen = np.maximum(newest - actions[:, 0], 0)
        can_buy = (newest >= 0) & (cover > 0)
        per_server = s.capacity[rows, q, buy_gen] * p.throughput_factor[over_idx, actions[:, 6]]
        shortfall = np.maximum(cover * s.demand[rows, q] - capacity, 0.0)
        wanted = np.where(can_buy & (per_server > 0), np.ceil(shortfall / np.maximum(per_server, 1e-300)), 0.0)
        srv_w = p.server_w[buy_gen]
        bought = p.building.fit_purchase(wanted, over, installed_w, srv_w, s.building)
        s.counters.blocked_servers += wanted - bought
        s.counters.servers_bought += bought
        s.cohort_gen[rows, q] = np.where(bought > 0, buy_gen, -1)
        s.cohort_bought[rows, q] = bought
        s.cohort_alive[rows, q] = bought
        per_rack = np.maximum(np.floor(c.rack_power_w * over / srv_w + 1e-9), 1.0)
        racks = np.ceil(bought / per_rack)
        s.cohort_racks[rows, q] = racks
        s.cohort_rack_stranded_w[rows, q] = racks * c.rack_power_w - bought * srv_w / over
        s.cohort_retired_q[rows, q] = NEVER
        return bought

    def _fleet_capacity(
        self, q: np.ndarray, freq_idx: np.ndarray, over_idx: np.ndarray, disagg: np.ndarray
    ) -> np.ndarray:
        """(B,) capacity of the alive fleet in quarter ``q``, disaggregated where asked."""
        total = self.alive_capacity(q, freq_idx, over_idx).sum(axis=1)
        if not disagg.any():
            return total
        factor = self.params.throughput_factor[over_idx, freq_idx]
        split = self.params.capacity.disaggregated(self.state, self._env_index, q, factor)
        return np.where(disagg == 1, split, total)

    def _charge(self, q: np.ndarray, over: np.ndarray, over_idx: np.ndarray, freq_idx: np.ndarray) -> np.ndarray:
        """Charge the quarter's costs to the ledger (after retirements and the purchase); (B,) stranded W."""
        s, c, p = self.state, self.config, self.params
        gen = np.maximum(s.cohort_gen, 0)
        age = q[:, None] - p.quarters[None, :]
        bought = s.cohort_bought
        # Amortised capex: every cohort bought within the last amortisation window pays, retired or not.
        window = c.amortization_quarters
        paying = (s.cohort_gen >= 0) & (age >= 0) & (age < window)
        price = np.take(s.price, (self._env_index * s.price.shape[1])[:, None] + gen)
        paying_bought = paying * bought
        s.ledger.charge("it_capex", (paying_bought * price).sum(axis=1) / window)
        s.ledger.charge("rack_capex", (paying * s.cohort_racks).sum(axis=1) * c.rack_cost_usd / window)
        s.ledger.charge("network_capex", paying_bought.sum(axis=1) * c.network_capex_usd / window)
        alive = s.cohort_alive
        s.ledger.charge("network_opex", alive.sum(axis=1) * c.network_opex_usd_per_year / 4)
        maint = np.where(age >= c.default_lifetime_years * 4, c.extended_maintenance_factor, 1.0)
        s.ledger.charge("maintenance", (alive * maint).sum(axis=1) * c.maintenance_usd_per_server_year / 4)
        installed_w = self.installed_w()
        energy_kwh = installed_w / 1000 * c.utilization * HOURS_PER_QUARTER * p.energy_factor[over_idx, freq_idx]
        energy = energy_kwh * c.energy_usd_per_kwh
        s.ledger.charge("energy", energy)
        s.ledger.charge("cooling_opex", energy * c.cooling_opex_ratio)
        stranded = p.building.stranded_w(s.cohort_rack_stranded_w, alive, installed_w, over, s.building)
        s.counters.stranded_w_quarters += stranded
        provisioned = p.building.paid_w(installed_w, over, stranded, s.building)
        life_q = c.building_life_years * 4
        s.ledger.charge("power_provisioning", provisioned * c.power_provisioning_usd_per_w / life_q)
        s.ledger.charge("cooling_provisioning", provisioned * c.cooling_provisioning_usd_per_w / life_q)
        s.ledger.charge("facility", provisioned / c.facility_w * c.facility_usd / life_q)
        return stranded

    def _tally(self, q: np.ndarray, demand: np.ndarray, capacity: np.ndarray, unserved: np.ndarray) -> None:
        """Add the quarter to the episode's counters."""
        k, alive = self.state.counters, self.state.cohort_alive
        k.unserved_total += unserved
        k.demand_total += demand
        k.last_unserved[:] = unserved / demand
        k.last_capacity[:] = capacity
        k.server_quarters += alive.sum(axis=1)
        k.age_server_quarters += (alive * np.maximum(q[:, None] - self.params.quarters[None, :], 0)).sum(axis=1)

    # ------------------------------------------------------------------ observation and metrics
    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        s, p = self.state, self.params
        rows, q = self._env_index, self.quarter
        t_max = self.config.horizon_quarters
        demand = s.demand[rows, q]
        prev = s.demand[rows, np.maximum(q - 1, 0)]
        released = self.released(q)
        newest = self.newest_released(q)
        alive = s.cohort_alive
        gen = np.maximum(s.cohort_gen, 0)
        per_server = s.capacity[rows, q]  # (B, G)
        g = per_server.shape[1]
        cap_alive = (np.take(per_server, (rows * g)[:, None] + gen) * alive).sum(axis=1)
        installed_w = (alive * p.server_w[gen]).sum(axis=1)
        servers = alive.sum(axis=1)
        age_q = np.maximum(q[:, None] - p.quarters[None, :], 0)
        mean_age = (alive * age_q).sum(axis=1) / np.maximum(servers, 1.0) / 4
        building = p.building.observe(installed_w, q, s.building)
        newest_cap = per_server[rows, np.maximum(newest, 0)]
        rel_cap = np.where(released, per_server / np.maximum(newest_cap, 1e-300)[:, None], 0.0)
        behind = np.where(released, (newest[:, None] - np.arange(p.roadmap.size)[None, :]) / 5.0, 0.0)
        head = np.stack(
            [
                q / t_max,
                np.log10(demand) / 10,
                demand / np.maximum(prev, 1e-300) - 1,
                s.primary_share[rows, q],
                np.log10(s.primary_params[rows, q]) / 12,
                np.log10(s.secondary_params[rows, q]) / 12,
                cap_alive / demand,
                s.counters.last_unserved,
                *building.T,
                np.log10(1 + servers) / 6,
                mean_age / 10,
            ],
            axis=1,
        )
        obs = np.concatenate(
            [
                head,
                released,
                np.log10(1 + self.servers_by_generation()) / 6,
                rel_cap,
                np.where(released, s.price / 1e6, 0.0),
                np.where(released, p.server_w[None, :] / 20e3, 0.0),
                behind,
                np.log10(1 + alive) / 6,
                np.where(alive > 0, age_q / 40.0, 0.0),
            ],
            axis=1,
        )
        # In place: the clip's temporaries cost as much as the rest of the observation at large B.
        return np.clip(obs, -OBS_BOUND, OBS_BOUND, out=obs).astype(np.float32)

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s, k = self.state, self.state.counters
        total = s.ledger.total[env_ids]
        return {
            "tco_usd": total[:, : len(TCO_CATEGORIES)].sum(axis=1),
            "unserved_share": k.unserved_total[env_ids] / np.maximum(k.demand_total[env_ids], 1e-300),
            **{f"cost_{name}_usd": total[:, i] for i, name in enumerate(COST_CATEGORIES)},
            "servers_bought": k.servers_bought[env_ids].copy(),
            "blocked_servers": k.blocked_servers[env_ids].copy(),
            "mean_stranded_mw": k.stranded_w_quarters[env_ids] / self.config.horizon_quarters / 1e6,
            "mean_fleet_age_years": k.age_server_quarters[env_ids] / np.maximum(k.server_quarters[env_ids], 1.0) / 4,
            "built_mw": k.built_w[env_ids] / 1e6,
        }


def text_frame(core: DCLifecycleCore, i: int) -> str:
    """Sub-env ``i`` as text: the quarter, demand against capacity, the building, servers by generation."""
    s = core.state
    q = int(min(core.stats.length[i], core.config.horizon_quarters - 1))
    by_gen = core.servers_by_generation()[i]
    lines = [
        f"quarter {core.stats.length[i]}/{core.config.horizon_quarters}, demand {s.demand[i, q]:.3g}, "
        f"capacity last quarter {s.counters.last_capacity[i]:.3g}, unserved {100 * s.counters.last_unserved[i]:.1f}%",
        f"  building: {s.building.provisioned_w[i] / 1e6:.2f} MW provisioned, "
        f"{s.building.arrivals_w[i, q:].sum() / 1e6:.2f} MW on order; cost so far ${s.ledger.episode_total()[i]:.4g}",
    ]
    lines += [f"  generation {g}: {n:.0f} servers" for g, n in enumerate(by_gen) if n > 0] or ["  no servers yet"]
    return "\n".join(lines)


class DCLifecycleVectorEnv(CloudGymVectorEnv):
    core_cls = DCLifecycleCore


class DCLifecycleEnv(CloudGymEnv):
    core_cls = DCLifecycleCore
