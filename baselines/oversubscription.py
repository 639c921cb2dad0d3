"""Baselines of Oversubscription-v0: static ratios, P95 and moving-average sizing, headroom, human rules, oracles.

Every policy acts on the batched observation ``(B, N, 55)`` (one row per node;
columns in :mod:`cloudgym.envs.oversubscription`) and returns ``(B, N)`` ratio
levels. Human rules work alone (:class:`HumanRules`) or as constraints on any
policy (:class:`RuleConstrained`). The oracles read the core's state in
hindsight (:func:`robust_hindsight_levels`, :func:`hindsight_levels`: the
episode's future, which no observation shows; for experts only).

The report draws the paper's kind of figure: saved cores against the hot
node-window rate, one point per policy and the static ratios as a curve; a
markdown table of both metrics; and the prototype agent's K prototypes with
the trajectories they are anchored to and the ratio each maps to (when a
prototype checkpoint is shipped).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudgym.benchmarks import Benchmark, register_benchmark
from cloudgym.envs.core.cluster import Placements, ResourcePool
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.oversubscription import (
    COL_INTERACTIVE,
    COL_SOLD,
    HISTORY_HOURS,
    TRAIT_TRULY_SENSITIVE,
    OversubscriptionConfig,
    OversubscriptionCore,
    place_arrivals,
    slot_view,
)
from cloudgym.envs.workloads.vm import TICKS_PER_HOUR
from cloudgym.policy import BatchedPolicy, Policy, register_policy
from cloudgym.reports import EnvReport, Headline, register_report

if TYPE_CHECKING:
    import pandas as pd

ENV_ID = "Oversubscription-v0"

SIZING_MARGIN = 0.9
"""Sizing policies aim the predicted peak at this share of the hot threshold."""
MOVING_AVERAGE_HOURS = 6
"""Hours of hourly peaks the moving-average sizing averages."""
RULE_P95_DEMAND = 0.8
"""Human rule: a node whose P95 demand (of its last 24 hourly peaks, / cores) exceeds this..."""
RULE_P95_CAP = 1.1
"""...gets no ratio above this."""
RULE_INTERACTIVE_SHARE = 0.5
"""Human rule: a node whose sold vCPUs are more than this share interactive..."""
RULE_INTERACTIVE_CAP = 1.25
"""...gets no ratio above this (interactive VMs peak together every afternoon)."""


def peaks(obs: np.ndarray) -> np.ndarray:
    """(B, N, 24) peak 5-minute demand / cores of each of the last 24 hours, oldest first."""
    return obs[:, :, HISTORY_HOURS : 2 * HISTORY_HOURS]


def levels_at_most(ratio: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """(B, N) index of the largest of ``ratios`` not above ``ratio`` (the lowest when none is)."""
    level = np.searchsorted(np.asarray(ratios), ratio + 1e-9, side="right") - 1
    return np.clip(level, 0, len(ratios) - 1).astype(np.int64)


def rule_caps(obs: np.ndarray, config: OversubscriptionConfig) -> np.ndarray:
    """(B, N) the highest ratio level the human rules allow each node."""
    p95_demand = np.percentile(peaks(obs), 95, axis=2)
    cap = np.full(p95_demand.shape, config.max_ratio)
    cap = np.where(p95_demand > RULE_P95_DEMAND, np.minimum(cap, RULE_P95_CAP), cap)
    cap = np.where(obs[:, :, COL_INTERACTIVE] > RULE_INTERACTIVE_SHARE, np.minimum(cap, RULE_INTERACTIVE_CAP), cap)
    return levels_at_most(cap, config.ratios)


class StaticRatio(BatchedPolicy):
    """The same ratio on every node, every hour."""

    def __init__(self, env: CloudGymVectorEnv, level: int) -> None:
        super().__init__(env)
        self.level = level
        self.name = f"static_{env.config.ratios[level]:g}"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return np.full((self.num_envs, self.config.num_nodes), self.level, np.int64)


def _sized(per_vcpu_peak: np.ndarray, sold: np.ndarray, config: OversubscriptionConfig) -> np.ndarray:
    """Levels whose node, filled to the ratio with vCPUs peaking like its present ones, peaks below the margin."""
    target = SIZING_MARGIN * config.hot_threshold
    ratio = np.where(sold > 1e-6, target / np.maximum(per_vcpu_peak, 1e-6), config.max_ratio)
    return levels_at_most(ratio, config.ratios)


class P95Sizing(BatchedPolicy):
    """Ratio = margin x threshold / (P95 of the last 24 hourly peaks per sold vCPU)."""

    name = "p95_sizing"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        sold = obs[:, :, COL_SOLD]
        per_vcpu = np.percentile(peaks(obs), 95, axis=2) / np.maximum(sold, 1e-6)
        return _sized(per_vcpu, sold, self.config)


class MovingAverageSizing(BatchedPolicy):
    """Ratio = margin x threshold / (mean of the last 6 hourly peaks per sold vCPU)."""

    name = "moving_average"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        sold = obs[:, :, COL_SOLD]
        per_vcpu = peaks(obs)[:, :, -MOVING_AVERAGE_HOURS:].mean(axis=2) / np.maximum(sold, 1e-6)
        return _sized(per_vcpu, sold, self.config)


class Headroom(BatchedPolicy):
    """Worst-case headroom: new vCPUs may run flat out, so sell at most threshold - past 24 h peak above sold.

    The causal twin of the robust oracle: it assumes the present VMs peak
    as they did in the last 24 hours (the oracle knows how they will).
    """

    name = "headroom"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        c = self.config
        sold = obs[:, :, COL_SOLD]
        allowed = sold + c.hot_threshold - peaks(obs).max(axis=2)
        return levels_at_most(allowed, c.ratios)


class HumanRules(BatchedPolicy):
    """The operators' rules alone: the largest ratio they allow (1.1 on hot-P95 nodes, 1.25 if interactive-heavy)."""

    name = "human_rules"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return rule_caps(obs, self.config)


class RuleConstrained(BatchedPolicy):
    """Any policy with the human rules as constraints: its level, capped by the rules' level."""

    def __init__(self, env: CloudGymVectorEnv, inner: Policy) -> None:
        super().__init__(env)
        self.inner = inner
        self.name = f"{inner.name}+rules"

    def reset(self, env_ids: np.ndarray) -> None:
        self.inner.reset(env_ids)

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return np.minimum(np.asarray(self.inner.act(obs, action_mask)), rule_caps(obs, self.config))


# ----------------------------------------------------------------------------- hindsight, for experts only


def robust_hindsight_levels(
    core: OversubscriptionCore, horizon_hours: int = 24, arrival_peak: float = 1.0
) -> np.ndarray:
    """(B, N) for each node, the largest ratio level that keeps it cool whatever VMs arrive, in hindsight.

    For experts only. The present VMs' heat over the next
    ``horizon_hours`` is read from the episode's own future (their
    readings and departures); the VMs the coming hour may add are assumed
    to run at ``arrival_peak`` of their cores (1: flat out), up to the ratio (they fill ``ratio x cores`` minus
    the fewest vCPUs sold during the hour). The level is the largest whose
    worst case stays at or below each reading's threshold; a node hot with
    its present VMs alone gets the lowest. What this expert knows about
    the future (how its present VMs will behave) the observation's history
    predicts, which makes it a learnable target for imitation, unlike
    :func:`hindsight_levels`, whose choice turns on which VMs happen to
    arrive. Nothing of the core's state changes.
    """
    s, c = core.state, core.config
    start = core.stats.length * TICKS_PER_HOUR
    horizon = max(1, int(horizon_hours)) * TICKS_PER_HOUR
    span = np.minimum(start + horizon, c.episode_ticks) - start
    width = int(span.max())
    w = max(1, int(s.slot_high.max()))
    heat, sold, sensitive = _future_heat(
        core, s.slots.node[:, :w], s.slots.end[:, :w], s.slots.demand[:, 0, :w], _slot_columns(core, w), start, width
    )
    if c.workload_hints:
        share = np.divide(sensitive, sold, out=np.zeros_like(sold), where=sold > 0)
        limit = (c.hot_threshold - c.sensitive_tightening * share) * c.node_cores
    else:
        limit = np.full(heat.shape, c.hot_threshold * c.node_cores)
    within = np.arange(width)[None, None, :] < span[:, None, None]
    room = np.where(within, limit - heat, np.inf).min(axis=2)  # (B, N) cores of heat left at the worst tick
    # vCPUs sold at the end of the coming hour's departures (the fewest during the hour).
    last = start + TICKS_PER_HOUR - 1
    staying = (s.slots.end[:, :w] > last[:, None]) & (s.slots.node[:, :w] >= 0)
    sold_min = np.zeros((core.num_envs, c.num_nodes))
    rows, cols = np.nonzero(staying)
    np.add.at(sold_min, (rows, s.slots.node[rows, cols]), s.slots.demand[rows, 0, cols])
    allowed = (sold_min + room / arrival_peak) / c.node_cores  # the largest ratio whose worst case stays cool
    level = np.searchsorted(core.params.ratios, allowed + 1e-9, side="right") - 1
    return np.where(room < 0, 0, np.clip(level, 0, len(c.ratios) - 1))


def hindsight_levels(core: OversubscriptionCore, horizon_hours: int = 24) -> np.ndarray:
    """(B, N) for each node, the largest ratio level whose node stays cool, looking ahead in hindsight.

    For experts only (the look-ahead reads the episode's future arrivals
    and readings, which the observation never shows). Starting from every
    node at the largest ratio, the coming hour's placements are simulated
    on copies of the cluster; a node whose heat demand would exceed its
    threshold at any reading of the next ``horizon_hours`` hours (with the
    VMs it would then hold, each departing on schedule, and no later
    arrivals) is lowered one level, and the hour is simulated again, until
    no node changes. A node hot with its present VMs alone gets the
    lowest ratio. Nothing of the core's state changes.
    """
    s, c = core.state, core.config
    b, n = core.num_envs, c.num_nodes
    start = core.stats.length * TICKS_PER_HOUR
    horizon = max(1, int(horizon_hours)) * TICKS_PER_HOUR
    span = np.minimum(start + horizon, c.episode_ticks) - start  # (B,) ticks ahead within the episode
    width = int(span.max())
    w = max(1, int(s.slot_high.max()))
    present = _future_heat(
        core, s.slots.node[:, :w], s.slots.end[:, :w], s.slots.demand[:, 0, :w], _slot_columns(core, w), start, width
    )
    level = np.full((b, n), len(c.ratios) - 1, np.int64)
    hot_anyway = _hot(c, present, span)
    level[hot_anyway] = 0
    for _ in range(len(c.ratios) * n):
        added = _hour_of_arrivals(core, level, start, width)
        total = present if added is None else (present[0] + added[0], present[1] + added[1], present[2] + added[2])
        hot = _hot(c, total, span) & (level > 0)
        if not hot.any():
            break
        level[hot] -= 1
    return level


def _hour_of_arrivals(
    core: OversubscriptionCore, level: np.ndarray, start: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The coming hour's placements at ``level``, simulated on copies: their future heat, or None if none land."""
    s = core.state
    pool = ResourcePool(capacity=s.pool.capacity.copy(), used=s.pool.used.copy())
    slots = Placements(
        node=s.slots.node.copy(), item=s.slots.item.copy(), demand=s.slots.demand.copy(), end=s.slots.end.copy()
    )
    limit = core.ratio_limits(level)
    high = s.slot_high.copy()
    new_node: list[np.ndarray] = []
    new_vm: list[np.ndarray] = []
    for j in range(TICKS_PER_HOUR):
        tick = start + j
        slot_view(slots, max(1, int(high.max()))).expire(pool, tick.astype(np.float64))
        placed, vm, node, *_ = place_arrivals(s.vms, s.arrivals_at, pool, slots, high, tick, limit)
        if vm.size:
            new_node.append(np.where(placed, node, -1))
            new_vm.append(np.where(placed, vm, 0))
    if not new_node:
        return None
    nodes = np.concatenate(new_node, axis=1)
    vms = np.concatenate(new_vm, axis=1)
    columns = {f: np.take_along_axis(s.vms.util[f], vms, axis=1) for f in s.slot_params.util}
    columns["heat_weight"] = np.take_along_axis(s.vms.heat_weight, vms, axis=1)
    columns["traits"] = np.take_along_axis(s.vms.traits, vms[:, :, None], axis=1)
    columns["arrival"] = np.take_along_axis(s.vms.arrival, vms, axis=1)
    cores = np.take_along_axis(s.vms.cores, vms, axis=1).astype(np.float64)
    end = np.take_along_axis(s.vms.departure, vms, axis=1).astype(np.float64)
    return _future_heat(core, nodes, end, cores, columns, start, width)


def _slot_columns(core: OversubscriptionCore, width: int) -> dict[str, np.ndarray]:
    """The running VMs' columns (utilisation, heat weight, traits, arrival) over the first ``width`` slots."""
    s = core.state
    p = s.slot_params
    view = {f: a[:, :width] for f, a in p.util.items()}
    view["heat_weight"] = p.heat_weight[:, :width]
    # Traits of running VMs, gathered from the VM table by item (free slots read VM 0 with no cores).
    item = np.maximum(s.slots.item[:, :width], 0)
    view["traits"] = np.take_along_axis(s.vms.traits, item[:, :, None], axis=1)
    view["arrival"] = np.full(item.shape, -1, np.int64)
    return view


def _future_heat(
    core: OversubscriptionCore,
    node: np.ndarray,
    end: np.ndarray,
    cores: np.ndarray,
    columns: dict[str, np.ndarray],
    start: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node over ``width`` ticks from ``start`` (B,): (heat, sold, truly sensitive vCPUs), each (B, N, W).

    Items (B, K) on ``node`` (-1: none) count from their ``arrival`` until ``end`` (exclusive).
    """
    c = core.config
    b, k = node.shape
    n = c.num_nodes
    heat = np.zeros((b, n, width))
    sold = np.zeros((b, n, width))
    sensitive = np.zeros((b, n, width))
    if k == 0 or width == 0:
        return heat, sold, sensitive
    base = (np.arange(b) * n)[:, None] + np.maximum(node, 0)
    present_cores = np.where(node >= 0, cores, 0.0)
    util = {f: columns[f][:, :, None] for f in core.state.slot_params.util}
    chunk = max(1, min(width, 2_000_000 // max(b * k, 1)))
    for lo in range(0, width, chunk):
        hi = min(width, lo + chunk)
        ticks = start[:, None, None] + np.arange(lo, hi)[None, None, :]  # (B, 1, W)
        alive = (ticks < end[:, :, None]) & (ticks >= columns["arrival"][:, :, None])
        u = core.params.utilisation(util, ticks)
        weight = present_cores[:, :, None] * alive
        flat = (base[:, :, None] * (hi - lo) + np.arange(hi - lo)[None, None, :]).ravel()
        size = b * n * (hi - lo)
        shape = (b, n, hi - lo)
        contrib = u * weight * columns["heat_weight"][:, :, None]
        heat[:, :, lo:hi] = np.bincount(flat, weights=contrib.ravel(), minlength=size).reshape(shape)
        if c.workload_hints:
            sold[:, :, lo:hi] = np.bincount(flat, weights=weight.ravel(), minlength=size).reshape(shape)
            share = weight * (columns["traits"][:, :, TRAIT_TRULY_SENSITIVE] / np.maximum(cores, 1e-9))[:, :, None]
            sensitive[:, :, lo:hi] = np.bincount(flat, weights=share.ravel(), minlength=size).reshape(shape)
    return heat, sold, sensitive


def _hot(c: OversubscriptionConfig, future: tuple[np.ndarray, np.ndarray, np.ndarray], span: np.ndarray) -> np.ndarray:
    """(B, N) whether a node's heat exceeds its threshold at some tick within ``span`` (B,) ticks."""
    heat, sold, sensitive = future
    if c.workload_hints:
        share = np.divide(sensitive, sold, out=np.zeros_like(sold), where=sold > 0)
        limit = (c.hot_threshold - c.sensitive_tightening * share) * c.node_cores
    else:
        limit = c.hot_threshold * c.node_cores
    within = np.arange(heat.shape[2])[None, None, :] < span[:, None, None]
    return ((heat - limit > 1e-9) & within).any(axis=2)


class RobustOracle(BatchedPolicy):
    """Hindsight expert: the largest ratio that keeps each node cool over 24 h whatever VMs arrive.

    Reads :func:`robust_hindsight_levels` of the env's core (the present
    VMs' future); the expert the imitation agents learn from.
    """

    name = "oracle"

    def __init__(self, env: CloudGymVectorEnv, horizon_hours: int = 24) -> None:
        super().__init__(env)
        self.horizon_hours = horizon_hours

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return robust_hindsight_levels(self.env.core, self.horizon_hours)  # type: ignore[arg-type]


class ArrivalOracle(BatchedPolicy):
    """Hindsight look-ahead with the actual arrivals: the largest ratio whose next 24 h stay cool.

    Reads :func:`hindsight_levels` of the env's core: it knows which VMs come next hour and
    how they will run, which no observation predicts (an upper reference).
    """

    name = "oracle_arrivals"

    def __init__(self, env: CloudGymVectorEnv, horizon_hours: int = 24) -> None:
        super().__init__(env)
        self.horizon_hours = horizon_hours

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return hindsight_levels(self.env.core, self.horizon_hours)  # type: ignore[arg-type]


def _static_factory(level: int) -> Any:
    def factory(env: CloudGymVectorEnv) -> StaticRatio:
        return StaticRatio(env, level)

    return factory


def _p95_with_rules(env: CloudGymVectorEnv) -> RuleConstrained:
    return RuleConstrained(env, P95Sizing(env))


for _level, _ratio in enumerate(OversubscriptionConfig().ratios):
    register_policy(
        ENV_ID, f"static_{_ratio:g}", _static_factory(_level), description=f"ratio {_ratio:g} on every node"
    )
register_policy(ENV_ID, "p95_sizing", P95Sizing, description="ratio from the P95 of the last 24 hourly peaks")
register_policy(ENV_ID, "moving_average", MovingAverageSizing, description="ratio from the mean of the last 6 peaks")
register_policy(ENV_ID, "headroom", Headroom, description="sell at most (threshold - past 24 h peak) above sold")
register_policy(ENV_ID, "human_rules", HumanRules, description="operators' caps alone (1.1 if P95 > 0.8, ...)")
register_policy(ENV_ID, "p95_sizing+rules", _p95_with_rules, description="P95 sizing capped by the human rules")
register_policy(
    ENV_ID, "oracle", RobustOracle, kind="oracle", description="hindsight: cool for 24 h whatever arrives (the expert)"
)
register_policy(
    ENV_ID,
    "oracle_arrivals",
    ArrivalOracle,
    kind="oracle",
    in_comparison=False,
    description="hindsight look-ahead with the actual next-hour arrivals (slow; upper reference)",
)


# ----------------------------------------------------------------------------- report


def _policy_means(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["scenario"] == frame["scenario"].iloc[0]]
    stats = rows.groupby("policy", sort=False)[["saved_cores", "hot_rate_pct", "hot_node_windows"]].agg(
        ["mean", "std", "count"]
    )
    return stats


def plot_saved_vs_hot(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Saved cores vs hot node-window rate, one point per policy; static ratios as a curve; one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(frame["scenario"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(8.0 * len(scenarios), 5.0), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        rows = frame[frame["scenario"] == scenario]
        means = rows.groupby("policy", sort=False)[["saved_cores", "hot_rate_pct"]].mean()
        static = means[means.index.str.startswith("static_")]
        static = static.iloc[np.argsort([float(p.split("_")[1]) for p in static.index])]
        ax.plot(static["hot_rate_pct"], static["saved_cores"], "o-", color="grey", label="static ratios")
        for policy, (saved, hot) in static.iterrows():
            ax.annotate(
                str(policy).replace("static_", ""), (hot, saved), fontsize=7, xytext=(3, -9), textcoords="offset points"
            )
        others = means[~means.index.str.startswith("static_")]
        for policy, (saved, hot) in others.iterrows():
            name = str(policy)
            marker = "*" if "proto" in name else ("D" if "oracle" in name else "s")
            ax.scatter([hot], [saved], marker=marker, s=90 if marker == "*" else 40, zorder=3, label=name)
        ax.axvline(1.0, color="red", lw=0.8, ls="--", label="1% hot rate")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("hot node-windows, % of node-hours (symlog)")
        ax.set_ylabel("saved cores (time-averaged)")
        ax.set_title(f"{ENV_ID} ({scenario})")
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = out_dir / f"{ENV_ID}_saved_vs_hot.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def tradeoff_table(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Markdown table of saved cores and hot node-windows per policy, against the best static ratio under 1%."""
    lines = [f"# {ENV_ID}: saved cores and hot node-windows per policy", ""]
    for scenario, rows in frame.groupby("scenario", sort=False):
        stats = rows.groupby("policy", sort=False)[["saved_cores", "hot_node_windows", "hot_rate_pct"]].agg(
            ["mean", "std", "count"]
        )
        static = [p for p in stats.index if str(p).startswith("static_")]
        safe = [p for p in static if stats.loc[p, ("hot_rate_pct", "mean")] <= 1.0]
        best = max(safe, key=lambda p: stats.loc[p, ("saved_cores", "mean")]) if safe else None
        lines += [f"## scenario `{scenario}`", ""]
        if best is not None:
            lines += [f"Best static ratio with hot rate <= 1%: `{best}`.", ""]
        lines += [
            "| policy | saved cores | hot node-windows / episode | hot rate % "
            "| cores vs best safe static | hot windows vs it |",
            "|---|---|---|---|---|---|",
        ]
        for policy in stats.index:
            saved, s_std, n = (stats.loc[policy, ("saved_cores", k)] for k in ("mean", "std", "count"))
            hot = stats.loc[policy, ("hot_node_windows", "mean")]
            rate = stats.loc[policy, ("hot_rate_pct", "mean")]
            ci = 1.96 * (0.0 if not np.isfinite(s_std) else s_std) / np.sqrt(n)
            if best is not None:
                b_saved = stats.loc[best, ("saved_cores", "mean")]
                b_hot = stats.loc[best, ("hot_node_windows", "mean")]
                vs_cores = f"{100.0 * (saved / b_saved - 1.0):+.1f}%" if b_saved > 0 else "n/a"
                if hot > 0 and b_hot == 0:
                    vs_hot = "more (it has none)"
                elif hot > 0:
                    vs_hot = f"{b_hot / hot:.1f}x fewer" if b_hot >= hot else f"{hot / b_hot:.1f}x more"
                else:
                    vs_hot = "none in either" if b_hot == 0 else f"none (it has {b_hot:.2f})"
            else:
                vs_cores = vs_hot = "n/a"
            lines.append(f"| {policy} | {saved:.1f} ± {ci:.1f} | {hot:.2f} | {rate:.3f} | {vs_cores} | {vs_hot} |")
        lines.append("")
    path = out_dir / f"{ENV_ID}_tradeoff.md"
    path.write_text("\n".join(lines) + "\n")
    return [path]


def plot_prototypes(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The shipped prototype agents' K prototypes: anchored trajectories and the ratio each maps to."""
    from cloudgym.agents.checkpoints import shipped_checkpoints

    files = []
    for ckpt in shipped_checkpoints(ENV_ID):
        if ckpt.loader.endswith("load_protohail_policy") and ckpt.name in set(frame["policy"]):
            from cloudgym.agents.protohail import plot_prototypes as draw

            files.append(draw(ckpt.path, out_dir / f"{ENV_ID}_{ckpt.name}_prototypes.png"))
    return files


register_report(
    EnvReport(
        env_id=ENV_ID,
        scenarios={"default": {}},
        episodes=16,
        full_episodes=256,
        headline=Headline(label="episode return (saved cores, hot windows)"),
        bound="oracle_arrivals",
        looser_bounds=("oracle",),
        plots=(plot_saved_vs_hot, tradeoff_table, plot_prototypes),
    )
)


# ----------------------------------------------------------------------------- benchmark


def replay_benchmark(quick: bool) -> dict[str, float]:
    """Write a synthetic 30-day, 10,000-VM trace in the Azure format, then load and replay it under static 1.25.

    Timed: streaming the trace in (:func:`load_vm_trace`) and the replay (one
    sub-env, 720 hourly steps). Writing the files is set-up, reported apart.
    ``quick``: 300 VMs over 3 days.
    """
    import tempfile

    from cloudgym.envs.oversubscription import OversubscriptionVectorEnv
    from cloudgym.envs.workloads.vm import (
        TICKS_PER_DAY,
        cached_trace,
        mean_cores,
        mean_lifetime_hours,
        sample_vm_instance,
        write_vm_trace,
    )

    days, vms = (3, 300) if quick else (30, 10_000)
    load = 1.5
    # Physical cores whose arrival process (plus the starting population) yields ~10% more than `vms` VMs
    # over the span; the first `vms` by arrival are kept. The replayed cluster has those cores.
    cores = 1.1 * vms * mean_lifetime_hours() * mean_cores() / (load * (24 * days + mean_lifetime_hours()))
    nodes = max(2, round(cores / 48))
    rng = np.random.default_rng(0)
    instance = sample_vm_instance(rng, physical_cores=cores, load_factor=load, episode_ticks=days * TICKS_PER_DAY)
    instance = instance.take(np.arange(min(vms, instance.num_vms)))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_vm_trace(folder, instance, rng, episode_ticks=days * TICKS_PER_DAY)
        written = time.perf_counter() - started
        started = time.perf_counter()
        trace = cached_trace(folder)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        env = OversubscriptionVectorEnv(1, workload="trace", trace_dir=folder, num_nodes=nodes, hours=days * 24)
        env.reset(seed=0)
        level = np.full((1, nodes), 3, np.int64)  # static 1.25
        for _ in range(days * 24):
            _, _, _, _, info = env.step(level)
        replayed = time.perf_counter() - started
        metrics = {k: float(v[0]) for k, v in info["metrics"].items()}
    return {
        "vms": float(trace.num_vms),
        "readings": float(trace.readings),
        "days": float(days),
        "nodes": float(nodes),
        "write_s": written,
        "load_s": loaded,
        "replay_s": replayed,
        "load_and_replay_s": loaded + replayed,
        "hot_rate_pct": metrics["hot_rate_pct"],
        "saved_cores": metrics["saved_cores"],
    }


register_benchmark(
    Benchmark(
        env_id=ENV_ID,
        name="replay_30d_10k_vms",
        description="stream a 30-day, 10,000-VM Azure-format trace and replay it under static 1.25 (target < 60 s)",
        run=replay_benchmark,
    )
)
