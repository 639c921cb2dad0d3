"""Baselines of GPUPowerCap-v0: POLCA's two-threshold capping, no capping, a static frequency lock."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudgym.agents.checkpoints import shipped_checkpoints
from cloudgym.benchmarks import Benchmark, register_benchmark, register_throughput_config
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.gpu_powercap import GPUPowerCapConfig
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env
from cloudgym.policy import BatchedPolicy, make_policy, policy_specs, register_policy
from cloudgym.reports import EnvReport, Headline, pyplot, register_report, save_figure

if TYPE_CHECKING:
    import pandas as pd

ENV_ID = "GPUPowerCap-v0"
REPORT_EPISODES = 2
"""Held-out episodes per (level, policy) in compare.py's default run (each 3 minutes of a 40-server row)."""


def level_of(config: GPUPowerCapConfig, mhz: float) -> int:
    """Index of a frequency in the config's cap levels (a clear error when it is not one)."""
    levels = list(config.freq_levels_mhz)
    if mhz not in levels:
        raise ValueError(f"{mhz} MHz is not among freq_levels_mhz {levels}; the policy needs it")
    return levels.index(mhz)


def class_actions(config: GPUPowerCapConfig, hp: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """Actions from per-class cap levels (B,): (B, 2) by class, or (B, N) with per_server_caps."""
    if not config.per_server_caps:
        return np.stack([hp, lp], axis=1).astype(np.int64)
    n_hp, n_lp = config.servers_per_class
    return np.concatenate([np.repeat(hp[:, None], n_hp, axis=1), np.repeat(lp[:, None], n_lp, axis=1)], axis=1)


class NoCap(BatchedPolicy):
    """Every GPU at f_max; only the powerbrake protects the budget."""

    name = "no_cap"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        zero = np.zeros(self.num_envs, np.int64)
        return class_actions(self.config, zero, zero)


class StaticLock(BatchedPolicy):
    """Every GPU of the row locked at one frequency (1110 MHz: POLCA's ~20% peak-power saving) all the time."""

    name = "static_lock"

    def __init__(self, env: CloudGymVectorEnv, mhz: float = 1110.0) -> None:
        super().__init__(env)
        self.level = level_of(self.config, mhz)

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        lock = np.full(self.num_envs, self.level, np.int64)
        return class_actions(self.config, lock, lock)


class TwoThresholdCapper(BatchedPolicy):
    """POLCA's stage machine, shared by :class:`Polca` and the CEM agent (learned knobs), per sub-env.

    Stages: 0 none, 1 LP mild, 2 LP deep, 3 LP deep + HP. Above ``t1`` the
    stage rises to 1, above ``t2`` to 2, and if still above ``t2`` once that
    cap has had the out-of-band delay to act, to 3; it falls to 1 below
    ``t2 - hysteresis`` and to 0 below ``t1 - hysteresis``. A subclass sets
    the thresholds and the cap levels (scalars, or arrays over the batch).
    """

    t1: float | np.ndarray
    t2: float | np.ndarray
    hysteresis: float | np.ndarray
    lp_mild: int | np.ndarray
    lp_deep: int | np.ndarray
    hp_cap: int | np.ndarray

    def __init__(self, env: CloudGymVectorEnv) -> None:
        super().__init__(env)
        self.delay = self.config.cap_delay_s
        self.stage = np.zeros(self.num_envs, np.int64)
        self.since = np.zeros(self.num_envs, np.int64)  # steps since the stage last rose

    def reset(self, env_ids: np.ndarray) -> None:
        self.stage[env_ids] = 0
        self.since[env_ids] = 0

    def caps(self, escalate_on: np.ndarray, relax_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the stage machine one step; the (HP, LP) cap levels of the new stage.

        ``escalate_on`` is compared with the thresholds to raise the stage and
        ``relax_on`` with the thresholds less the hysteresis to lower it (POLCA
        uses the row power for both; the CEM controller adds a share of the
        40-s rise to each).
        """
        stage = self.stage
        self.since += 1
        above_t2 = escalate_on > self.t2
        to_deep = above_t2 & (stage < 2)
        to_hp = above_t2 & (stage == 2) & (self.since > self.delay)
        to_mild = (escalate_on > self.t1) & (stage < 1)
        stage = np.where(to_mild, 1, stage)
        stage = np.where(to_deep, 2, stage)
        stage = np.where(to_hp, 3, stage)
        self.since[to_deep | to_hp | to_mild] = 0
        stage = np.where((stage >= 2) & (relax_on < self.t2 - self.hysteresis), 1, stage)
        stage = np.where((stage >= 1) & (relax_on < self.t1 - self.hysteresis), 0, stage)
        self.stage = stage
        lp = np.select([stage >= 2, stage == 1], [self.lp_deep, self.lp_mild], 0)
        hp = np.where(stage == 3, self.hp_cap, 0)
        return hp, lp


class Polca(TwoThresholdCapper):
    """POLCA's controller (Patel et al. ASPLOS 2024, DOMAIN.md section 3), on the row's power share p.

    * p > T1 (80%): low-priority (LP) servers to 1275 MHz;
    * p > T2 (89%): LP to 1110 MHz, and if p is still above T2 once that cap
      has had the out-of-band delay to act, high-priority (HP) servers to 1305 MHz;
    * uncap with 5% hysteresis: below T2 - 5% (84%) HP back to f_max and LP
      back to 1275 MHz, below T1 - 5% (75%) LP back to f_max.

    The powerbrake above 100% is the env's.
    """

    name = "polca"

    def __init__(self, env: CloudGymVectorEnv, t1: float = 0.80, t2: float = 0.89, hysteresis: float = 0.05) -> None:
        super().__init__(env)
        self.t1, self.t2, self.hysteresis = t1, t2, hysteresis
        c = self.config
        self.lp_mild = level_of(c, 1275.0)
        self.lp_deep = level_of(c, 1110.0)
        self.hp_cap = level_of(c, 1305.0)

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        p = np.asarray(obs)[:, 0].astype(np.float64)
        hp, lp = self.caps(p, p)
        return class_actions(self.config, hp, lp)


register_policy(ENV_ID, "polca", Polca, description="POLCA: LP to 1275 MHz above 80%, LP 1110 + HP 1305 above 89%")
register_policy(ENV_ID, "no_cap", NoCap, description="no capping (the powerbrake alone)")
register_policy(ENV_ID, "static_lock", StaticLock, description="every GPU locked at 1110 MHz")


# ----------------------------------------------------------------------------- the paper's table and figure

LEVELS = (0, 10, 20, 30, 40)
"""Oversubscription levels of the report, % extra servers."""
SCENARIOS = {f"+{p}%": dict(GPUPowerCapConfig.SCENARIOS[f"+{p}%"]) for p in LEVELS}
"""The env's scenario per level (each with the uncapped reference row for the relative metrics)."""
TRACE_SCENARIO = "+30%"
"""The level whose row power over time the report draws."""
TABLE_COLUMNS = (
    ("powerbrakes", "brakes/ep"),
    ("breaker_trips", "trips/ep"),
    ("hp_throughput_loss_pct", "HP tput loss %"),
    ("lp_throughput_loss_pct", "LP tput loss %"),
    ("hp_p50_latency_change_pct", "HP p50 Δ%"),
    ("hp_p99_latency_change_pct", "HP p99 Δ%"),
    ("lp_p50_latency_change_pct", "LP p50 Δ%"),
    ("lp_p99_latency_change_pct", "LP p99 Δ%"),
    ("capped_pct", "capped %"),
    ("peak_power_pct", "peak power %"),
)


def paper_table(frame: pd.DataFrame) -> pd.DataFrame:
    """POLCA's table: per level and policy, mean brakes, trips, throughput loss and latency change per class.

    Losses and changes are against the uncapped row (same requests, every GPU
    at f_max, no power limit). ``work vs +0%`` is the output tokens the row
    served relative to the row without oversubscription (the +0% scenario
    without capping, the reference row of the deployment question).
    """
    import pandas as pd

    rows = []
    base = frame[(frame["scenario"] == "+0%") & (frame["policy"] == "no_cap")]["served_ktokens"].mean()
    for scenario in [s for s in SCENARIOS if s in set(frame["scenario"])]:
        at_level = frame[frame["scenario"] == scenario]
        for policy, group in at_level.groupby("policy", sort=False):
            row: dict[str, Any] = {"level": scenario, "policy": policy, "episodes": len(group)}
            for column, title in TABLE_COLUMNS:
                row[title] = float(group[column].mean()) if column in group else float("nan")
            row["work vs +0%"] = float(group["served_ktokens"].mean() / base) if base and base > 0 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def write_paper_table(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The table as markdown and as a figure."""
    plt = pyplot()

    table = paper_table(frame)
    md = out_dir / f"{ENV_ID}_table.md"
    lines = [
        f"# {ENV_ID}: POLCA's table (means over held-out episodes; changes against the uncapped row)",
        "",
        "| " + " | ".join(table.columns) + " |",
        "|" + "---|" * len(table.columns),
    ]
    for _, r in table.iterrows():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.to_numpy()]
        lines.append("| " + " | ".join(cells) + " |")
    md.write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(17.0, 0.32 * len(table) + 1.2))
    ax.axis("off")
    text = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.to_numpy()] for _, r in table.iterrows()]
    cell = ax.table(cellText=text, colLabels=list(table.columns), loc="center", cellLoc="center")
    cell.auto_set_font_size(False)
    cell.set_fontsize(7)
    cell.scale(1.0, 1.25)
    ax.set_title(f"{ENV_ID}: powerbrakes, throughput loss and latency change vs the uncapped row", fontsize=9)
    png = out_dir / f"{ENV_ID}_table.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [md, png]


def row_power_trace(policy: str | Path, env_kwargs: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """One episode's row power (% of budget), mean HP/LP clock and brake flag per step, for a policy or checkpoint."""
    env = make_vector_env(ENV_ID, 1, env_kwargs)
    built = make_policy(ENV_ID, policy, env)
    obs, _ = env.reset(seed=[seed])
    built.reset(np.arange(1))
    keys = ("row_power_pct", "hp_freq_mhz", "lp_freq_mhz", "braked")
    trace: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(env.config.steps_per_episode):
        obs, _, terminated, truncated, info = env.step(built.act(obs))
        for k in keys:
            trace[k].append(float(info[k][0]))
        if terminated[0] or truncated[0]:
            break
    env.close()
    return {k: np.asarray(v) for k, v in trace.items()}


def plot_row_power(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Row power over one held-out episode at +30% for each policy, with POLCA's thresholds and the budget."""
    plt = pyplot()

    if TRACE_SCENARIO not in set(frame["scenario"]):
        return []
    sources: dict[str, str | Path] = {name: name for name in policy_specs(ENV_ID)}
    sources.update({ckpt.name: ckpt.path for ckpt in shipped_checkpoints(ENV_ID)})
    policies = [p for p in frame[frame["scenario"] == TRACE_SCENARIO]["policy"].unique() if p in sources]
    seed = int(frame["seed"].min())
    fig, axes = plt.subplots(len(policies), 1, figsize=(10.0, 2.2 * len(policies) + 0.6), sharex=True, squeeze=False)
    for ax, policy in zip(axes[:, 0], policies):
        trace = row_power_trace(sources[policy], SCENARIOS[TRACE_SCENARIO], seed)
        t = np.arange(trace["row_power_pct"].size)
        ax.plot(t, trace["row_power_pct"], color="black", lw=0.9, label="row power")
        for level, style, label in ((80, ":", "T1 80%"), (89, "--", "T2 89%"), (100, "-", "budget")):
            ax.axhline(level, color="tab:red", ls=style, lw=0.8, label=label)
        brake_band = ax.get_xaxis_transform()
        ax.fill_between(t, 0, 1, where=trace["braked"] > 0, color="tab:red", alpha=0.2, transform=brake_band)
        twin = ax.twinx()
        twin.plot(t, trace["hp_freq_mhz"], color="tab:blue", lw=0.8, alpha=0.8, label="HP clock")
        twin.plot(t, trace["lp_freq_mhz"], color="tab:orange", lw=0.8, alpha=0.8, label="LP clock")
        twin.set_ylim(200, 1500)
        twin.set_ylabel("MHz", fontsize=7)
        ax.set_ylim(55, 110)
        ax.set_ylabel("% of budget", fontsize=7)
        ax.set_title(f"{policy} at {TRACE_SCENARIO} (seed {seed})", fontsize=8)
        if ax is axes[0, 0]:
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=6, ncol=7, loc="lower left")
    axes[-1, 0].set_xlabel("time in episode (s)")
    path = save_figure(fig, out_dir / f"{ENV_ID}_row_power.png")
    return [path]


register_report(
    EnvReport(
        env_id=ENV_ID,
        scenarios=SCENARIOS,
        episodes=REPORT_EPISODES,
        full_episodes=32,
        headline=Headline(label="episode return (served work, latency, brakes)"),
        bound="power_foresight",
        paper_policy="polca",
        agents_everywhere=True,
        policies=("polca", "no_cap", "static_lock"),
        plots=(write_paper_table, plot_row_power),
        tradeoff=("powerbrakes", "lp_p99_latency_change_pct"),
    )
)


# ----------------------------------------------------------------------------- calibration


def power_calibration(episodes: int, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Per held-out episode of the uncapped row (no capping, default +0% unless overridden): the row's peak power
    and its largest rise within 40 s, both in % of the budget (POLCA: peak ~79%, largest rise ~11.8%)."""
    kwargs = {"oversubscription": 0.0, **dict(env_kwargs or {})}
    env = make_vector_env(ENV_ID, episodes, kwargs)
    env.reset(seed=held_out_seeds(episodes))
    zero = NoCap(env).act(None)
    power = []
    for _ in range(env.config.steps_per_episode):
        _, _, _, _, info = env.step(zero)
        power.append(info["row_power_pct"])
    env.close()
    trace = np.asarray(power)
    window = min(40, trace.shape[0] - 1)
    rise = (trace[window:] - trace[:-window]).max(axis=0)
    return {"peak_power_pct": trace.max(axis=0), "max_rise_40s_pct": rise, "mean_power_pct": trace.mean(axis=0)}


def print_calibration(episodes: int = 32) -> None:
    """Print the calibration against POLCA's production figures (the numbers in docs/gpu_powercap.md).

    ``python -c "from cloudgym.baselines.gpu_powercap import print_calibration; print_calibration(32)"``
    """
    cal = power_calibration(episodes)
    peak, rise = cal["peak_power_pct"], cal["max_rise_40s_pct"]
    print(f"{episodes} held-out episodes of the uncapped +0% row (POLCA: peak ~79%, largest 40-s rise ~11.8%)")
    print(f"  peak power:  median {np.median(peak):.1f}%, range {peak.min():.1f}-{peak.max():.1f}%")
    print(f"  40-s rise:   median {np.median(rise):.1f}%, largest {rise.max():.1f}%")
    print(f"  mean power:  {cal['mean_power_pct'].mean():.1f}%")


# ----------------------------------------------------------------------------- benchmarks

THROUGHPUT_KWARGS = {"base_servers": 4, "oversubscription": 0.25, "warmup_s": 0, "slots_per_instance": 16}
"""A 5-server row without warm-up for bench.py's native-vs-SyncVectorEnv table."""

register_throughput_config(
    ENV_ID,
    THROUGHPUT_KWARGS,
    reason=(
        "a 5-server row: a single env of the default 52-server row is already a batch of 52 LLM instances, so "
        "SyncVectorEnv over it is vectorised too (see docs/gpu_powercap.md for the default row's ratio)"
    ),
)


def replay_row_hour(quick: bool) -> dict[str, float]:
    """An hour (quick: a minute) of the default +30% row under POLCA, one long episode: simulated s per wall s."""
    seconds = 60 if quick else 3600
    kwargs: dict[str, Any] = {"steps_per_episode": seconds, "track_reference": False}
    started = time.perf_counter()
    rows = evaluate("polca", ENV_ID, held_out_seeds(1), env_kwargs=kwargs)
    wall = time.perf_counter() - started
    return {
        "simulated_s": float(seconds),
        "wall_s": wall,
        "simulated_s_per_wall_s": seconds / wall,
        "llm_instances": float(GPUPowerCapConfig(**kwargs).num_servers),
        "powerbrakes": float(rows[0]["powerbrakes"]),
        "peak_power_pct": float(rows[0]["peak_power_pct"]),
    }


register_benchmark(
    Benchmark(
        env_id=ENV_ID,
        name="row_hour",
        description="one hour of a 52-server (+30%) Llama-2-70B row under POLCA, every iteration simulated",
        run=replay_row_hour,
    )
)


# ----------------------------------------------------------------------------- the bound


class PowerForesight(BatchedPolicy):
    """Hindsight bound: caps for the uncapped row's power ``cap_delay_s`` ahead, which no real controller knows.

    At each episode start it copies the sub-env into a branch and plays the
    whole episode there to read the uncapped reference row's power per
    second (same requests, every GPU at f_max: it does not depend on the
    caps). A command issued at step t lands at t + ``cap_delay_s``, so the
    controller looks at the highest uncapped power over the ``window``
    seconds from then (the first command, in effect from the start, over the
    first ``cap_delay_s + window``) and applies the deepest tier of ``TIERS``
    whose threshold that power exceeds, else no cap. Knowing the rise in
    advance, it can cap later and less than POLCA, which must leave margin
    for a 40-s rise it cannot see. The thresholds are the best of nine tier
    sets tried on 16 validation seeds (500,000 on) at +30% and +40% (mean
    return over both), never on held-out seeds. It is a bound in the sense
    of "the best we found with foresight", not a proven optimum. It needs
    ``track_reference`` (registered with it on).
    """

    name = "power_foresight"
    TIERS: tuple[tuple[float, float, float], ...] = (
        (0.94, 0.0, 1275.0),  # (uncapped power / budget above which, HP MHz (0 = f_max), LP MHz)
        (0.99, 0.0, 1110.0),
        (1.04, 1305.0, 1110.0),
        (1.08, 1110.0, 900.0),
    )

    def __init__(
        self,
        env: CloudGymVectorEnv,
        tiers: tuple[tuple[float, float, float], ...] = TIERS,
        window: int = 3,
    ) -> None:
        super().__init__(env)
        c = self.config
        if not c.track_reference:
            raise ValueError("power_foresight reads the uncapped reference row: make the env with track_reference=True")
        self.thresholds = np.array([t for t, _, _ in tiers])
        self.hp_levels = np.array([0 if hp == 0 else level_of(c, hp) for _, hp, _ in tiers])
        self.lp_levels = np.array([level_of(c, lp) for _, _, lp in tiers])
        self.window = window
        self.delay = c.cap_delay_s
        horizon = c.steps_per_episode + c.cap_delay_s + window
        self.future = np.zeros((self.num_envs, horizon))  # uncapped row power / budget per second of the episode
        self.step_index = np.zeros(self.num_envs, np.int64)

    def reset(self, env_ids: np.ndarray) -> None:
        env_ids = np.asarray(env_ids, np.int64)
        if env_ids.size == 0:
            return
        # A whole copy of the vector env (its arrays are sized by the loaded episodes, so rows cannot be
        # restored into an env reset on other seeds); only the rows starting an episode are read.
        branch_env = copy.deepcopy(self.env)
        branch_env._autoreset[:] = False
        branch = branch_env.core
        lowest = np.full(self.num_envs, len(self.config.freq_levels_mhz) - 1, np.int64)
        capped = class_actions(self.config, lowest, lowest)  # lowest clocks: the branch row itself never trips early
        trace = np.zeros((env_ids.size, self.config.steps_per_episode))
        alive = np.ones(env_ids.size, bool)
        for t in range(self.config.steps_per_episode):
            _, _, terminated, truncated, _ = branch_env.step(capped)
            share = branch.state.counters.reference_energy.last_w.sum(axis=1) / branch.params.budget_w
            trace[:, t] = np.where(alive, share[env_ids], trace[:, t - 1] if t else 0.0)
            alive &= ~(terminated | truncated)[env_ids]
        self.future[env_ids] = 0.0
        self.future[env_ids, : trace.shape[1]] = trace
        self.step_index[env_ids] = 0

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        t = self.step_index
        start = np.where(t == 0, 0, t + self.delay)
        stop = t + self.delay + self.window
        cols = np.arange(self.future.shape[1])
        ahead = np.where((cols >= start[:, None]) & (cols < stop[:, None]), self.future, 0.0).max(axis=1)
        tier = (ahead[:, None] > self.thresholds[None, :]).sum(axis=1)  # 0 = uncapped, k = the k-th tier
        hp = np.where(tier > 0, self.hp_levels[np.maximum(tier - 1, 0)], 0)
        lp = np.where(tier > 0, self.lp_levels[np.maximum(tier - 1, 0)], 0)
        self.step_index = t + 1
        return class_actions(self.config, hp, lp)


register_policy(
    ENV_ID,
    "power_foresight",
    PowerForesight,
    description="hindsight: caps for the uncapped row's power 40 s ahead (a bound, not a controller)",
    kind="oracle",
    env_kwargs={"track_reference": True},
)
