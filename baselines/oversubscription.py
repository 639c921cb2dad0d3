"""Baselines of Oversubscription-v0: static ratios, P95 and moving-average sizing, headroom, human rules, oracles.

Every policy acts on the batched observation ``(B, N, 55)`` (one row per node;
columns in :mod:`cloudgym.envs.oversubscription`) and returns ``(B, N)`` ratio
levels. Human rules work alone (:class:`HumanRules`) or as constraints on any
policy (:class:`RuleConstrained`). The oracles read the core's hindsight
methods (never the observation of the future).

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
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.oversubscription import (
    COL_INTERACTIVE,
    COL_SOLD,
    HISTORY_HOURS,
    OversubscriptionConfig,
)
from cloudgym.policy import BatchedPolicy, Policy, register_policy
from cloudgym.reports import EnvReport, register_report

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


class RobustOracle(BatchedPolicy):
    """Hindsight expert: the largest ratio that keeps each node cool over 24 h whatever VMs arrive.

    Reads ``env.core.robust_hindsight_levels`` (the present VMs' future);
    the expert the imitation agents learn from.
    """

    name = "oracle"

    def __init__(self, env: CloudGymVectorEnv, horizon_hours: int = 24) -> None:
        super().__init__(env)
        self.horizon_hours = horizon_hours

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return self.env.core.robust_hindsight_levels(self.horizon_hours)  # type: ignore[attr-defined]


class ArrivalOracle(BatchedPolicy):
    """Hindsight look-ahead with the actual arrivals: the largest ratio whose next 24 h stay cool.

    Reads ``env.core.hindsight_levels``: it knows which VMs come next hour and
    how they will run, which no observation predicts (an upper reference).
    """

    name = "oracle_arrivals"

    def __init__(self, env: CloudGymVectorEnv, horizon_hours: int = 24) -> None:
        super().__init__(env)
        self.horizon_hours = horizon_hours

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return self.env.core.hindsight_levels(self.horizon_hours)  # type: ignore[attr-defined]


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

    from cloudgym.envs.oversubscription import OversubscriptionVectorEnv, cached_trace
    from cloudgym.envs.workloads.vm import (
        TICKS_PER_DAY,
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
