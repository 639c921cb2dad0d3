"""Perfect-foresight planner of DCLifecycle-v0: a linear program (scipy's HiGHS) over the whole episode.

Knowing the episode's demand path, model sizes, prices and shocks, the LP
chooses how many servers of each generation to buy each quarter, how many of
each cohort stay in service each quarter, how much building power to order
each quarter and how much demand to leave unserved, at one operating point
(oversubscription level, full clock, no disaggregation) held for the whole
episode. Its variables, for cohorts c = (purchase quarter t, generation g)
with g among the ``max_generation_lag`` newest released at t:

* ``x_c >= 0`` servers bought; ``y_{c,s}`` servers in service in quarter s,
  ``x_c >= y_{c,t} >= y_{c,t+1} >= ...`` (retire any time, never past
  ``max_lifetime_years``);
* ``u_s >= 0`` unserved demand; ``k_s >= 0`` W of building ordered (sunk).

Constraints: ``sum_c capacity[s, g] x throughput y_{c,s} + u_s >= demand_s``
and, for a sunk building, ``sum_c server W y_{c,s} <= o x provisioned_s``.
The objective is the env's cost model: amortised capex of ``x`` (cut at the
horizon, paid even after early retirement), per-server-quarter maintenance
(x1.15 past the natural lifetime), network, energy and cooling opex, the
provisioning rent on installed power (rent) or the amortised building
(sunk), and the unserved penalty. Integer servers and lumps, whole-cohort
retirement and rack rounding are relaxed, so the optimum over all
operating points is a **lower bound** on the TCO plus penalty of every
policy that holds one operating point and does not disaggregate (stranded
rack power is left out, which only lowers the bound further).

:class:`PerfectForesightPolicy` executes the plan in the env (the env's
actions are coarser than the plan: cover levels, whole cohorts, whole lumps),
so what it achieves lies above the bound; both are reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.dc_lifecycle import HOURS_PER_QUARTER, DCLifecycleCore
from cloudgym.policy import BatchedPolicy


@dataclasses.dataclass(frozen=True)
class Plan:
    """The LP's solution for one episode."""

    objective_usd: float  # TCO + penalty of the relaxed plan, $ (a lower bound)
    over_idx: int  # operating point: index into oversubscription_levels
    buy: np.ndarray  # (T, G) servers bought per quarter and generation
    alive: np.ndarray  # (T, G, T) servers of cohort (t, g) in service in quarter s
    order_w: np.ndarray  # (T,) building W ordered per quarter


def plan_episode(core: DCLifecycleCore, env_id: int, over_idx: int | None = None) -> Plan:
    """Solve the LP for sub-env ``env_id`` (its episode is already drawn); the best operating point unless given."""
    c = core.config
    levels = range(len(c.oversubscription_levels)) if over_idx is None else [over_idx]
    plans = [_solve(core, env_id, o) for o in levels]
    return min(plans, key=lambda p: p.objective_usd)


def _solve(core: DCLifecycleCore, i: int, over_idx: int) -> Plan:
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    c, s = core.config, core.state
    t_max, g_max = c.horizon_quarters, core.params.roadmap.size
    over = c.oversubscription_levels[over_idx]
    throughput = float(core.params.throughput_factor[over_idx, 0])
    energy_factor = float(core.params.energy_factor[over_idx, 0])
    life = c.max_lifetime_years * 4
    window = c.amortization_quarters
    demand = s.demand[i]
    capacity = s.capacity[i] * throughput  # (T, G)
    server_w = core.params.server_w
    rate_w = (c.power_provisioning_usd_per_w + c.cooling_provisioning_usd_per_w + c.facility_usd / c.facility_w) / (
        c.building_life_years * 4
    )
    per_rack = np.maximum(np.floor(c.rack_power_w * over / server_w + 1e-9), 1.0)
    energy_q = server_w / 1000 * c.utilization * HOURS_PER_QUARTER * c.energy_usd_per_kwh * energy_factor
    opex_q = c.network_opex_usd_per_year / 4 + energy_q * (1 + c.cooling_opex_ratio)  # (G,)
    if c.building_model == "rent":
        opex_q = opex_q + server_w / over * rate_w

    cohorts = []
    for t in range(t_max):
        newest = int(np.sum(core.params.roadmap.release_quarter <= t)) - 1
        for g in range(max(newest - c.max_generation_lag + 1, 0), newest + 1):
            if capacity[min(t, t_max - 1), g] > 0:
                cohorts.append((t, g))
    cost: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    b_ub: list[float] = []
    n_con = 0

    def var(price: float) -> int:
        cost.append(price)
        return len(cost) - 1

    x_index, y_index = {}, {}
    for t, g in cohorts:
        amort = min(window, t_max - t) / window
        x_index[(t, g)] = var((s.price[i, g] + c.rack_cost_usd / per_rack[g] + c.network_capex_usd) * amort)
        for q in range(t, min(t_max, t + life)):
            maint = c.maintenance_usd_per_server_year / 4
            if q - t >= c.default_lifetime_years * 4:
                maint *= c.extended_maintenance_factor
            y_index[(t, g, q)] = var(maint + opex_q[g])
    u_index = [var(c.unserved_penalty_usd) for _ in range(t_max)]
    sunk = c.building_model == "sunk"
    k_index = []
    if sunk:
        for q in range(t_max):
            arrive = q + c.build_lead_quarters
            k_index.append(var(rate_w * max(t_max - arrive, 0)) if arrive < t_max else -1)

    def row(entries: list[tuple[int, float]], bound: float) -> None:
        nonlocal n_con
        for col, val in entries:
            rows.append(n_con)
            cols.append(col)
            vals.append(val)
        b_ub.append(bound)
        n_con += 1

    # Alive never exceeds bought, never grows.
    for t, g in cohorts:
        row([(y_index[(t, g, t)], 1.0), (x_index[(t, g)], -1.0)], 0.0)
        for q in range(t + 1, min(t_max, t + life)):
            row([(y_index[(t, g, q)], 1.0), (y_index[(t, g, q - 1)], -1.0)], 0.0)
    by_quarter: dict[int, list[tuple[int, int]]] = {q: [] for q in range(t_max)}
    for t, g, q in y_index:
        by_quarter[q].append((t, g))
    for q in range(t_max):
        # Served + unserved >= demand  <=>  -capacity . y - u <= -demand.
        entries = [(y_index[(t, g, q)], -capacity[q, g]) for t, g in by_quarter[q]]
        row([*entries, (u_index[q], -1.0)], -demand[q])
        if sunk:
            power = [(y_index[(t, g, q)], server_w[g]) for t, g in by_quarter[q]]
            arrived = [(k_index[p], -over) for p in range(t_max) if k_index[p] >= 0 and p + c.build_lead_quarters <= q]
            row([*power, *arrived], over * c.initial_building_mw * 1e6)
    a_ub = coo_matrix((vals, (rows, cols)), shape=(n_con, len(cost))).tocsr()
    result = linprog(np.asarray(cost), A_ub=a_ub, b_ub=np.asarray(b_ub), bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"perfect-foresight LP failed for sub-env {i}: {result.message}")
    sol = result.x
    constant = c.initial_building_mw * 1e6 * rate_w * t_max if sunk else 0.0
    buy = np.zeros((t_max, g_max))
    alive = np.zeros((t_max, g_max, t_max))
    for (t, g), j in x_index.items():
        buy[t, g] = sol[j]
    for (t, g, q), j in y_index.items():
        alive[t, g, q] = sol[j]
    order = np.array([sol[j] if j >= 0 else 0.0 for j in k_index]) if sunk else np.zeros(t_max)
    return Plan(float(result.fun + constant), over_idx, buy, alive, order)


class PerfectForesightPolicy(BatchedPolicy):
    """Executes each sub-env's LP plan (solved when its episode starts) through the env's actions.

    Purchases: the planned generation at the smallest cover level that reaches
    the planned capacity; retirement: a cohort retires once the plan keeps
    less than half of it; building: whole lumps whenever the plan's cumulative
    orders run ahead of what was ordered; the plan's oversubscription level; full clock; no disaggregation.
    Needs ``cohort_actions`` (per-cohort retirement).
    """

    name = "perfect_foresight"

    def __init__(self, env: CloudGymVectorEnv) -> None:
        super().__init__(env)
        self.core: DCLifecycleCore = env.core  # type: ignore[assignment]
        if not self.core.config.cohort_actions:
            raise ValueError("perfect_foresight needs cohort_actions=True (it retires cohorts one by one)")
        self.plans: list[Plan | None] = [None] * self.num_envs
        self.bounds = np.full(self.num_envs, np.nan)
        self.ordered_w = np.zeros(self.num_envs)

    def reset(self, env_ids: np.ndarray) -> None:
        for i in env_ids:
            self.plans[int(i)] = None
        self.ordered_w[env_ids] = 0.0

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        core, c = self.core, self.core.config
        s = core.state
        t_max = c.horizon_quarters
        actions = np.zeros((self.num_envs, core.action_size), np.int64)
        actions[:, 2] = len(c.lifetime_years_levels) - 1
        covers = np.asarray(c.buy_cover_levels)
        lumps = np.asarray(c.build_lumps) * c.build_lump_mw * 1e6
        q_all = core.quarter
        for i in range(self.num_envs):
            plan = self.plans[i]
            if plan is None:
                plan = self.plans[i] = plan_episode(core, i)
                self.bounds[i] = plan.objective_usd
            q = int(q_all[i])
            newest = int(core.newest_released(q_all[i : i + 1])[0])
            actions[i, 5] = plan.over_idx
            # Retire cohorts the plan no longer keeps (whole cohorts), keep the others.
            bought = s.cohort_bought[i]
            kept = plan.alive[np.arange(t_max), np.maximum(s.cohort_gen[i], 0), q]
            retire = (s.cohort_alive[i] > 0) & (kept < 0.5 * np.maximum(bought, 1e-9))
            actions[i, 8 : 8 + t_max] = np.where(retire, 1, 2)
            # Purchase: the planned generation, smallest cover reaching the planned capacity.
            planned = plan.buy[q]
            if planned.sum() >= 0.5 and newest >= 0:
                g = int(np.argmax(planned))
                actions[i, 0] = int(np.clip(newest - g, 0, c.max_generation_lag - 1))
                factor = core.params.throughput_factor[plan.over_idx, 0]
                gen = np.maximum(s.cohort_gen[i], 0)
                survivors = np.where(retire, 0.0, s.cohort_alive[i])
                current = (s.capacity[i, q, gen] * survivors).sum() * factor
                target = current + (planned * s.capacity[i, q]).sum() * factor
                need = target / s.demand[i, q]
                ok = np.flatnonzero(covers >= need - 1e-9)
                actions[i, 1] = int(ok[0]) if ok.size else len(covers) - 1
            # Building: whole lumps once the plan's cumulative orders run ahead of what was ordered.
            deficit = plan.order_w[: q + 1].sum() - self.ordered_w[i]
            if c.building_model == "sunk" and deficit > 1e-6:
                ok = np.flatnonzero(lumps >= deficit - 1e-6)
                level = int(ok[0]) if ok.size else len(lumps) - 1
                actions[i, 4] = level
                self.ordered_w[i] += lumps[level]
        return actions
