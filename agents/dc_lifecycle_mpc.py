"""Rolling-horizon (model-predictive) planner of DCLifecycle-v0: the LP re-solved each quarter on a forecast.

Unlike the perfect-foresight plan (:mod:`cloudgym.agents.dc_lifecycle_planner`),
this planner uses only what an operator knows in quarter ``q``:

* the past: this quarter's demand, the alive cohorts (generation, servers,
  age), the building's provisioned power and the lumps already on order,
  and the released generations' prices and capacity this quarter;
* the published plans: the demand trend (``demand_growth_per_quarter``),
  the GPU release roadmap (release quarters, specs, list prices) and the
  served-model schedule, i.e. the episode *without shocks*.

The forecast: demand grows at the trend from this quarter's level (flat
once a jump of more than ``jump_ratio`` in one quarter has been seen, as the
demand shock plateaus), times ``1 + margin`` beyond this quarter for the
noise the building's lead time must absorb; a generation's capacity per
server in a future quarter is its shock-free figure scaled by what is seen
now (its own ratio of this quarter's capacity to the shock-free one if it
is released, the newest released generation's otherwise), and unreleased
prices are the roadmap's scaled the same way. No future demand, shock or
unreleased generation's real figures are read.

Each quarter it solves the LP of the planner (servers bought and kept per
cohort, building ordered, demand left unserved) over the next ``horizon``
quarters from the current fleet and building, and executes the first
quarter through the env's actions: the planned generation at the smallest
cover level reaching the planned capacity, cohorts the plan keeps less than
half of retired, the planned building rounded up to whole lumps. Capex of a
server or a lump is charged for the quarters of it inside the window (the
rent it would pay), so a short window does not make late purchases free.
The operating point (oversubscription, full clock, no disaggregation) is
the one whose first plan is cheapest, held for the episode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.dc_lifecycle import HOURS_PER_QUARTER, DCLifecycleCore
from cloudgym.envs.workloads.fleet import FleetGenerator
from cloudgym.policy import BatchedPolicy


@dataclasses.dataclass(frozen=True)
class Forecast:
    """What sub-env ``i`` expects from quarter ``q`` on, built from the present and the published plans."""

    quarter: int  # the quarter the forecast starts at
    demand: np.ndarray  # (H,) demand expected in quarters q .. q+H-1 (index 0: this quarter's, known)
    capacity: np.ndarray  # (H, G) capacity per server of each generation, before the operating point's factor
    price: np.ndarray  # (G,) $ per server of each generation


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """The first quarter of a window plan."""

    objective_usd: float  # the window's forecast cost, $ (sunk costs excluded)
    buy: np.ndarray  # (G,) servers to buy this quarter per generation
    keep: np.ndarray  # (T,) servers of each existing cohort slot kept in service this quarter
    order_w: float  # building W to order this quarter


def shock_free_capacity(core: DCLifecycleCore) -> np.ndarray:
    """(T, G) capacity per server of the published roadmap and model schedule (the episode without shocks)."""
    gen = core.params.generator
    if not isinstance(gen, FleetGenerator):
        raise TypeError(f"the MPC forecast needs the synthetic fleet generator, got {type(gen).__name__}")
    calm = dataclasses.replace(gen, shock_probability=(0.0, 0.0, 0.0, 0.0), fixed_shock_quarter=(-1, -1, -1, -1))
    instance = calm.sample(np.random.default_rng(0))  # capacities do not depend on the demand draw
    return np.asarray(core.params.capacity.tables([instance]).capacity[0])


def forecast(
    core: DCLifecycleCore,
    i: int,
    calm_capacity: np.ndarray,
    horizon: int,
    *,
    demand_growth: float,
    margin: float,
) -> Forecast:
    """Sub-env ``i``'s forecast from its current quarter; reads only the present state and the published plans."""
    c, s, p = core.config, core.state, core.params
    q = int(core.quarter[i])
    end = min(c.horizon_quarters, q + horizon)
    steps = np.arange(end - q)
    demand = s.demand[i, q] * demand_growth**steps * np.where(steps > 0, 1.0 + margin, 1.0)
    released = p.released[q]
    newest = int(p.newest_released[q])
    now = s.capacity[i, q]  # this quarter's figures: observable for released generations
    calm_now = calm_capacity[q]
    ratio = np.where(released & (calm_now > 0), now / np.where(calm_now > 0, calm_now, 1.0), 1.0)
    ratio = np.where(released, ratio, ratio[newest] if newest >= 0 else 1.0)
    capacity = calm_capacity[q:end] * ratio[None, :]
    capacity[0] = np.where(released, now, capacity[0])
    list_price = p.roadmap.price_usd * c.gpus_per_server
    price_ratio = s.price[i, newest] / list_price[newest] if newest >= 0 else 1.0
    price = np.where(released, s.price[i], list_price * price_ratio)
    return Forecast(q, demand, capacity, price)


def solve_window(core: DCLifecycleCore, i: int, fc: Forecast, over_idx: int) -> StepPlan:
    """The LP over the forecast window from sub-env ``i``'s current fleet and building; its first quarter."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    c, s, p = core.config, core.state, core.params
    q, n = fc.quarter, fc.demand.shape[0]
    end = q + n
    over = c.oversubscription_levels[over_idx]
    throughput = float(p.throughput_factor[over_idx, 0])
    energy_factor = float(p.energy_factor[over_idx, 0])
    life, window = c.max_lifetime_years * 4, c.amortization_quarters
    server_w = p.server_w
    rate_w = (c.power_provisioning_usd_per_w + c.cooling_provisioning_usd_per_w + c.facility_usd / c.facility_w) / (
        c.building_life_years * 4
    )
    per_rack = np.maximum(np.floor(c.rack_power_w * over / server_w + 1e-9), 1.0)
    energy_q = server_w / 1000 * c.utilization * HOURS_PER_QUARTER * c.energy_usd_per_kwh * energy_factor
    opex_q = c.network_opex_usd_per_year / 4 + energy_q * (1 + c.cooling_opex_ratio)
    sunk = c.building_model == "sunk"
    if not sunk:
        opex_q = opex_q + server_w / over * rate_w
    maint = c.maintenance_usd_per_server_year / 4
    capacity = fc.capacity * throughput

    cost: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    b_ub: list[float] = []

    def var(price: float) -> int:
        cost.append(price)
        return len(cost) - 1

    def row(entries: list[tuple[int, float]], bound: float) -> None:
        r = len(b_ub)
        for col, val in entries:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        b_ub.append(bound)

    # Cohorts: (bought quarter, generation, servers now or -1 for a new one, slot or -1).
    by_quarter: dict[int, list[tuple[int, int]]] = {k: [] for k in range(q, end)}  # quarter -> (y column, gen)
    first_y: dict[int, int] = {}  # existing slot -> its y column in quarter q
    alive = s.cohort_alive[i]
    for slot in map(int, np.flatnonzero(alive > 0)):
        g, prev = int(s.cohort_gen[i, slot]), -1
        for k in range(q, min(end, slot + life)):
            extended = k - slot >= c.default_lifetime_years * 4
            col = var(maint * (c.extended_maintenance_factor if extended else 1.0) + opex_q[g])
            if prev < 0:
                row([(col, 1.0)], alive[slot])
            else:
                row([(col, 1.0), (prev, -1.0)], 0.0)
            first_y.setdefault(slot, col)
            by_quarter[k].append((col, g))
            prev = col
    buy_cols: dict[int, int] = {}  # generation -> x column for this quarter's purchase
    for t in range(q, end):
        newest = int(p.newest_released[t])
        for g in range(max(newest - c.max_generation_lag + 1, 0), newest + 1):
            if capacity[t - q, g] <= 0:
                continue
            x = var((fc.price[g] + c.rack_cost_usd / per_rack[g] + c.network_capex_usd) * min(window, end - t) / window)
            if t == q:
                buy_cols[g] = x
            prev = x
            for k in range(t, min(end, t + life)):
                extended = k - t >= c.default_lifetime_years * 4
                col = var(maint * (c.extended_maintenance_factor if extended else 1.0) + opex_q[g])
                row([(col, 1.0), (prev, -1.0)], 0.0)
                by_quarter[k].append((col, g))
                prev = col
    u_cols = [var(c.unserved_penalty_usd) for _ in range(n)]
    k_cols: dict[int, int] = {}  # order quarter -> column (orders arriving inside the window)
    if sunk:
        for t in range(q, end):
            if t + c.build_lead_quarters < end:
                k_cols[t] = var(rate_w * (end - t - c.build_lead_quarters))
        # Power in service in each quarter: now, plus what is already on order (this quarter's arrival included).
        known = s.building.provisioned_w[i] + np.cumsum(s.building.arrivals_w[i, q:end])
    for k in range(q, end):
        entries = [(col, -capacity[k - q, g]) for col, g in by_quarter[k]]
        row([*entries, (u_cols[k - q], -1.0)], -fc.demand[k - q])
        if sunk:
            power = [(col, server_w[g]) for col, g in by_quarter[k]]
            arrived = [(col, -over) for t, col in k_cols.items() if t + c.build_lead_quarters <= k]
            row([*power, *arrived], over * known[k - q])
    a_ub = coo_matrix((vals, (rows, cols)), shape=(len(b_ub), len(cost))).tocsr()
    result = linprog(np.asarray(cost), A_ub=a_ub, b_ub=np.asarray(b_ub), bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"MPC window LP failed for sub-env {i} in quarter {q}: {result.message}")
    sol = result.x
    buy = np.zeros(p.roadmap.size)
    for g, col in buy_cols.items():
        buy[g] = sol[col]
    keep = np.zeros(c.horizon_quarters)
    for slot, col in first_y.items():
        keep[slot] = sol[col]
    order = float(sol[k_cols[q]]) if q in k_cols else 0.0
    return StepPlan(float(result.fun), buy, keep, order)


class MPCPolicy(BatchedPolicy):
    """Re-solves the window LP every quarter on a forecast from the present, executes the first quarter.

    Needs ``cohort_actions`` (per-cohort retirement). ``horizon`` quarters per
    window; ``margin`` on future demand (the building's lead time meets noisy
    growth); ``jump_ratio``: one-quarter demand growth above which the demand
    shock is taken to have happened (the forecast is flat from then on).
    The defaults (16 quarters, no margin) were the best of horizons 12-28 and
    margins 0-10% on validation seeds 500,000..500,015 of ``realistic``.
    """

    name = "mpc"

    def __init__(
        self, env: CloudGymVectorEnv, *, horizon: int = 16, margin: float = 0.0, jump_ratio: float = 1.5
    ) -> None:
        super().__init__(env)
        self.core: DCLifecycleCore = env.core  # type: ignore[assignment]
        if not self.core.config.cohort_actions:
            raise ValueError("mpc needs cohort_actions=True (it retires cohorts one by one)")
        if horizon < 1:
            raise ValueError(f"mpc horizon must be at least 1 quarter, got {horizon}")
        self.horizon, self.margin, self.jump_ratio = horizon, margin, jump_ratio
        self.calm_capacity = shock_free_capacity(self.core)
        self.over_idx = np.full(self.num_envs, -1, np.int64)
        self.jumped = np.zeros(self.num_envs, bool)
        self.last_demand = np.full(self.num_envs, np.nan)

    def reset(self, env_ids: np.ndarray) -> None:
        self.over_idx[env_ids] = -1
        self.jumped[env_ids] = False
        self.last_demand[env_ids] = np.nan

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        core, c = self.core, self.core.config
        s = core.state
        t_max = c.horizon_quarters
        actions = np.zeros((self.num_envs, core.action_size), np.int64)
        actions[:, 2] = len(c.lifetime_years_levels) - 1  # cohorts retire by the plan, not by age
        covers = np.asarray(c.buy_cover_levels)
        lump_w = c.build_lump_mw * 1e6
        lumps = np.asarray(c.build_lumps)
        quarters = core.quarter
        for i in range(self.num_envs):
            q = int(quarters[i])
            demand_now = s.demand[i, q]
            if np.isfinite(self.last_demand[i]) and demand_now > self.jump_ratio * self.last_demand[i]:
                self.jumped[i] = True
            self.last_demand[i] = demand_now
            growth = 1.0 if self.jumped[i] else c.demand_growth_per_quarter
            fc = forecast(core, i, self.calm_capacity, self.horizon, demand_growth=growth, margin=self.margin)
            if self.over_idx[i] < 0:
                plans = [solve_window(core, i, fc, o) for o in range(len(c.oversubscription_levels))]
                self.over_idx[i] = int(np.argmin([pl.objective_usd for pl in plans]))
                plan = plans[self.over_idx[i]]
            else:
                plan = solve_window(core, i, fc, int(self.over_idx[i]))
            over_idx = int(self.over_idx[i])
            actions[i, 5] = over_idx
            alive = s.cohort_alive[i]
            retire = (alive > 0) & (plan.keep < 0.5 * alive)
            actions[i, 8 : 8 + t_max] = np.where(retire, 1, 2)
            newest = int(core.params.newest_released[q])
            if plan.buy.sum() >= 0.5 and newest >= 0:
                factor = core.params.throughput_factor[over_idx, 0]
                g = int(np.argmax(plan.buy * fc.capacity[0]))
                actions[i, 0] = int(np.clip(newest - g, 0, c.max_generation_lag - 1))
                gen = np.maximum(s.cohort_gen[i], 0)
                current = (s.capacity[i, q, gen] * np.where(retire, 0.0, alive)).sum() * factor
                target = current + (plan.buy * s.capacity[i, q]).sum() * factor
                ok = np.flatnonzero(covers >= target / demand_now - 1e-9)
                actions[i, 1] = int(ok[0]) if ok.size else len(covers) - 1
            elif 1.0 in c.buy_cover_levels:
                # Nothing to buy: cover 1.0 buys nothing either while the kept fleet covers this quarter's
                # demand (the same action), and gives an imitator one steady label instead of two.
                gen = np.maximum(s.cohort_gen[i], 0)
                kept = (s.capacity[i, q, gen] * np.where(retire, 0.0, alive)).sum()
                if kept * core.params.throughput_factor[over_idx, 0] >= demand_now * (1 + 1e-9):
                    actions[i, 1] = c.buy_cover_levels.index(1.0)
            if c.building_model == "sunk" and plan.order_w > 1e-6:
                want = np.ceil(plan.order_w / lump_w - 1e-6)
                actions[i, 4] = min(int(np.searchsorted(lumps, want, side="left")), len(lumps) - 1)
        return actions
