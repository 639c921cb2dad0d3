"""Baselines of DCLifecycle-v0: the public simulator's refresh policies, a co-optimising heuristic, an oracle.

Refresh-only policies (the simulator Azure/AI-Lifecycle-Compass's, with its
semantics): ``baseline`` buys the newest generation when demand exceeds
capacity (exactly the shortfall) and retires at 5 years; ``replace_all``
also retires every older cohort the quarter a new generation is released;
``extend_<k>y`` retires at 5 + k years (maintenance x1.15 past 5);
``skip_<gen>`` never buys that generation (buys the newest other one);
``disaggregated`` is the baseline with prefill on the newest and decode on
older generations. ``co_optimising`` is a hand-written policy over all three
stages; ``perfect_foresight`` plans the whole episode knowing its demand
path and shocks (see :mod:`cloudgym.agents.dc_lifecycle_planner`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudgym.benchmarks import Benchmark, register_benchmark
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.dc_lifecycle import COST_CATEGORIES, DCLifecycleCore
from cloudgym.evaluation import make_vector_env
from cloudgym.policy import BatchedPolicy, register_policy
from cloudgym.reports import EnvReport, Headline, pyplot, register_report, register_value_bound, save_figure

if TYPE_CHECKING:
    import pandas as pd

ENV_ID = "DCLifecycle-v0"


class RefreshPolicy(BatchedPolicy):
    """A fixed refresh rule: buy the (newest non-skipped) shortfall, retire at an age, optional replace-all.

    The newest non-skipped released generation is read from the observation's
    release flags; a generation's name is static roadmap data. Replace-all
    retires every cohort of an older generation in the quarter a new
    (non-skipped) generation first appears, as the simulator does.
    """

    name = "refresh"

    def __init__(
        self,
        env: CloudGymVectorEnv,
        *,
        lifetime_years: int = 5,
        replace_all: bool = False,
        skip: tuple[str, ...] = (),
        disaggregate: bool = False,
        cover: float = 1.0,
        build_margin: float = 1.3,
        oversubscription: float = 1.0,
    ) -> None:
        super().__init__(env)
        core: DCLifecycleCore = env.core  # type: ignore[assignment]
        self.core = core
        c = core.config
        unknown = set(skip) - set(core.params.roadmap.names)
        if unknown:
            raise ValueError(f"cannot skip unknown generations {sorted(unknown)}; roadmap: {core.params.roadmap.names}")
        self.allowed = np.array([n not in skip for n in core.params.roadmap.names])
        self.lifetime_idx = list(c.lifetime_years_levels).index(lifetime_years)
        self.cover_idx = list(c.buy_cover_levels).index(cover)
        self.replace_all = replace_all
        self.disaggregate = int(disaggregate)
        self.last_choice = np.full(self.num_envs, -1, np.int64)
        self.build_margin = build_margin
        self.over_idx = list(c.oversubscription_levels).index(oversubscription)
        self.over = oversubscription

    def reset(self, env_ids: np.ndarray) -> None:
        self.last_choice[env_ids] = -1

    def build(self, obs: np.ndarray) -> np.ndarray:
        """Lumps to order so that provisioned power covers installed power x margin one lead time ahead.

        The traditional rule (margin 1.3, no oversubscription) provisions every
        server's nameplate with headroom; the installed power's trend is the
        observed demand growth. Only a ``sunk`` building is built.
        """
        c = self.core.config
        if c.building_model != "sunk":
            return np.zeros(obs.shape[0], np.int64)
        head = obs[:, :13].astype(np.float64)
        growth = 1.0 + np.clip(head[:, 2], 0.0, 0.5)
        lump_share, pending_share, installed_share = head[:, 8], head[:, 9], head[:, 10]
        need = installed_share / self.over * growth ** (c.build_lead_quarters + 1) * self.build_margin
        short = need - (1.0 + pending_share)
        want = np.where(short > 0, np.ceil(short / np.maximum(lump_share, 1e-9)), 0)
        lumps = np.asarray(c.build_lumps)
        return np.minimum(np.searchsorted(lumps, want, side="left"), len(lumps) - 1)

    def base_action(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions with defaults, newest released index, chosen generation index) per sub-env."""
        core = self.core
        released = obs[:, core.params.obs_slices["released"]] > 0.5
        newest = released.sum(axis=1) - 1
        choosable = released & self.allowed[None, :]
        has = choosable.any(axis=1)
        last_allowed = np.where(has, choosable.shape[1] - 1 - np.argmax(choosable[:, ::-1], axis=1), newest)
        actions = np.zeros((self.num_envs, core.action_size), np.int64)
        lag = np.clip(newest - last_allowed, 0, core.config.max_generation_lag - 1)
        actions[:, 0] = lag
        actions[:, 1] = self.cover_idx
        actions[:, 2] = self.lifetime_idx
        actions[:, 7] = self.disaggregate
        actions[:, 4] = self.build(obs)
        actions[:, 5] = self.over_idx
        return actions, newest, newest - lag

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        actions, newest, choice = self.base_action(obs)
        if self.replace_all:
            fresh = (choice != self.last_choice) & (self.last_choice >= 0)
            # Retire every cohort at least (newest - choice + 1) releases behind: all older than the choice.
            actions[:, 3] = np.where(fresh, newest - choice + 1, 0)
        self.last_choice = choice.copy()
        return actions


class CoOptimisingPolicy(RefreshPolicy):
    """The three stages by hand; ``stages`` picks which are on (to measure each one's cut).

    * refresh: buy the released generation (of the ``max_generation_lag``
      newest) with the most capacity per dollar of its 5-year cost (price,
      maintenance, energy, provisioning, all read from the observation),
      which skips generations that bring little; retire at 8 years (the
      simulator's best extension is 3 years);
    * build (sunk building): provision one lead time ahead of the installed
      power's trend with 20% headroom instead of the traditional 30% (a sweep
      of 5-100% headroom put 20% first with oversubscription on);
    * operation: the highest oversubscription whose POLCA capping costs at
      most 3% throughput, full clock, and disaggregation (newest generation
      prefills, older ones decode) when older generations are alive and the
      capacity model splits phases (``llm_slo``).
    """

    name = "co_optimising"

    def __init__(self, env: CloudGymVectorEnv, *, stages: tuple[str, ...] = ("refresh", "build", "operation")) -> None:
        unknown = set(stages) - {"refresh", "build", "operation"}
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; known: refresh, build, operation")
        core: DCLifecycleCore = env.core  # type: ignore[assignment]
        c = core.config
        over = 1.0
        if "operation" in stages:
            ok = core.params.throughput_factor[:, 0] >= 0.97
            over = c.oversubscription_levels[int(np.flatnonzero(ok)[-1])]
        super().__init__(
            env,
            lifetime_years=8 if "refresh" in stages else 5,
            build_margin=1.2 if "build" in stages else 1.3,
            oversubscription=over,
        )
        self.stages = stages
        self.split_phases = "operation" in stages and c.capacity_model == "llm_slo"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        core, c = self.core, self.core.config
        actions, newest, _ = self.base_action(obs)
        sl = core.params.obs_slices
        if "refresh" in self.stages:
            released = obs[:, sl["released"]] > 0.5
            rel_cap = obs[:, sl["relative_capacity"]].astype(np.float64)
            price = obs[:, sl["price_musd"]].astype(np.float64) * 1e6
            server_w = obs[:, sl["server_w_20kw"]].astype(np.float64) * 20e3
            years = c.amortization_years
            provisioning = c.power_provisioning_usd_per_w + c.cooling_provisioning_usd_per_w
            provisioning += c.facility_usd / c.facility_w
            run_cost = (
                price
                + years * c.maintenance_usd_per_server_year
                + years * 8760 * server_w / 1000 * c.utilization * c.energy_usd_per_kwh * (1 + c.cooling_opex_ratio)
                + server_w / self.over * provisioning * years / c.building_life_years
            )
            value = np.where(released, rel_cap / np.maximum(run_cost, 1.0), -np.inf)
            window = np.arange(value.shape[1])[None, :] > (newest[:, None] - c.max_generation_lag)
            best = np.argmax(np.where(window, value, -np.inf), axis=1)
            actions[:, 0] = np.clip(newest - best, 0, c.max_generation_lag - 1)
        if self.split_phases:
            actions[:, 7] = (obs[:, sl["servers_by_gen"]] > 0).sum(axis=1) >= 2
        return actions


def _factory(**kwargs: Any) -> Any:
    def make(env: CloudGymVectorEnv) -> RefreshPolicy:
        return RefreshPolicy(env, **kwargs)

    return make


register_policy(ENV_ID, "baseline", _factory(), description="the simulator's baseline: newest on shortfall, 5 y")
register_policy(
    ENV_ID, "replace_all", _factory(replace_all=True), description="retire all older cohorts at each release"
)
for _k in range(1, 6):
    register_policy(
        ENV_ID,
        f"extend_{_k}y",
        _factory(lifetime_years=5 + _k),
        description=f"retire at {5 + _k} years",
        in_comparison=_k in (1, 3),
    )
for _gen in ("V100", "A100", "H100", "H200", "B100", "B200"):
    register_policy(
        ENV_ID,
        f"skip_{_gen.lower()}",
        _factory(skip=(_gen,)),
        description=f"baseline that never buys {_gen}",
        in_comparison=_gen == "H200",
    )
register_policy(ENV_ID, "disaggregated", _factory(disaggregate=True), description="baseline + prefill new / decode old")
register_policy(ENV_ID, "co_optimising", CoOptimisingPolicy, description="hand-written build+refresh+operation")
register_policy(
    ENV_ID,
    "coopt_refresh",
    lambda env: CoOptimisingPolicy(env, stages=("refresh",)),
    description="co-optimising policy, refresh stage only",
)
register_policy(
    ENV_ID,
    "coopt_refresh_operation",
    lambda env: CoOptimisingPolicy(env, stages=("refresh", "operation")),
    description="co-optimising policy, refresh and operation stages",
)


# ----------------------------------------------------------------------------- report


def plot_tco(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """15-year TCO per policy with the unserved penalty stacked on it, labelled with (TCO + penalty) / baseline's.

    ``random`` is left out of this figure and the breakdown (its costs dwarf the rest).
    """
    plt = pyplot()

    frame = frame[frame["policy"] != "random"]
    scenarios = list(frame["scenario"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.0 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        rows = frame[frame["scenario"] == scenario]
        means = rows.groupby("policy", sort=False)[["tco_usd", "cost_unserved_penalty_usd"]].mean() / 1e9
        total = means.sum(axis=1)
        base = total.get("baseline", np.nan)
        x = np.arange(len(means))
        ax.bar(x, means["tco_usd"].values, color="tab:blue", label="TCO")
        ax.bar(x, means["cost_unserved_penalty_usd"].values, bottom=means["tco_usd"].values, color="tab:red",
               alpha=0.4, label="unserved penalty")  # fmt: skip
        for i, v in enumerate(total.values):
            ax.text(i, v, f"{v / base:.2f}x", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, list(means.index), rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("$B over 15 years")
        ax.set_title(f"{scenario}: TCO + penalty (label: ratio to baseline)", fontsize=9)
        ax.legend(fontsize=7)
    path = save_figure(fig, out_dir / f"{ENV_ID}_tco_ratio.png")
    return [path]


def plot_breakdown(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The cost breakdown as a stacked bar per policy (the paper's TCO-breakdown figure), per scenario."""
    plt = pyplot()

    frame = frame[frame["policy"] != "random"]
    scenarios = list(frame["scenario"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.8), squeeze=False)
    columns = [f"cost_{c}_usd" for c in COST_CATEGORIES if f"cost_{c}_usd" in frame.columns]
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, len(columns)))
    for ax, scenario in zip(axes[0], scenarios):
        means = frame[frame["scenario"] == scenario].groupby("policy", sort=False)[columns].mean() / 1e9
        bottom = np.zeros(len(means))
        for col, color in zip(columns, colors):
            ax.bar(range(len(means)), means[col].values, bottom=bottom, color=color, label=col[5:-4])
            bottom += means[col].values
        ax.set_xticks(range(len(means)), list(means.index), rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("$B over 15 years")
        ax.set_title(f"{scenario}: cost breakdown")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    path = save_figure(fig, out_dir / f"{ENV_ID}_cost_breakdown.png")
    return [path]


def fleet_trajectory(policy: Any, seed: int, env_kwargs: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """(T, G) servers per generation per quarter of one episode, and the generation names."""
    from cloudgym.evaluation import make_vector_env
    from cloudgym.policy import make_policy

    env = make_vector_env(ENV_ID, 1, env_kwargs)
    built = make_policy(ENV_ID, policy, env) if isinstance(policy, str | Path) else policy(env)
    obs, _ = env.reset(seed=[seed])
    built.reset(np.arange(1))
    rows = []
    for _ in range(env.core.config.horizon_quarters):
        obs, _, term, trunc, info = env.step(built.act(obs, None))
        rows.append(info["servers_by_gen"][0])
        if term[0] or trunc[0]:
            break
    names = list(env.core.params.roadmap.names)
    env.close()
    return np.array(rows), names


def plot_fleet(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Servers per generation per quarter (stacked), one panel per policy, first held-out seed, per scenario."""
    plt = pyplot()

    from cloudgym.agents.checkpoints import shipped_checkpoints

    shipped = {c.name: c for c in shipped_checkpoints(ENV_ID)}
    files = []
    for scenario in frame["scenario"].unique():
        rows = frame[frame["scenario"] == scenario]
        policies = list(rows["policy"].unique())
        seed = int(rows["seed"].min())
        cols = min(4, len(policies))
        nrows = int(np.ceil(len(policies) / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 2.8 * nrows), squeeze=False, sharex=True)
        for ax, policy in zip(axes.ravel(), policies):
            kwargs = dict(SCENARIOS.get(str(scenario), {}))
            source: Any = policy
            if policy in shipped:
                kwargs.update(shipped[policy].env_kwargs)
                source = shipped[policy].path
            try:
                fleet, names = fleet_trajectory(source, seed, kwargs)
            except ValueError:
                ax.set_title(f"{policy} (not rebuilt)", fontsize=8)
                continue
            used = fleet.sum(axis=0) > 0
            colors = plt.get_cmap("tab20")(np.arange(len(names)) % 20)  # one colour per generation in every panel
            ax.stackplot(
                np.arange(fleet.shape[0]) / 4,
                fleet[:, used].T,
                labels=np.array(names)[used],
                colors=colors[used],
            )
            ax.set_title(policy, fontsize=8)
            ax.legend(fontsize=5, loc="upper left")
        for ax in axes[-1]:
            ax.set_xlabel("years")
        fig.suptitle(f"{ENV_ID} {scenario}: servers per generation (seed {seed})", fontsize=9)
        path = save_figure(fig, out_dir / f"{ENV_ID}_{scenario}_fleet.png", dpi=100)
        files.append(path)
    return files


def _llm_model_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("cloudgym.envs.core.llm") is not None


SCENARIOS: dict[str, dict[str, Any]] = {"compass": {"scenario": "compass"}}
if _llm_model_present():  # realistic capacity comes from the LLM instance model
    SCENARIOS["realistic"] = {"scenario": "realistic"}


register_report(
    EnvReport(
        env_id=ENV_ID,
        scenarios=SCENARIOS,
        episodes=6,
        full_episodes=64,
        headline=Headline(label="TCO + unserved penalty", unit="$M", higher_is_better=False, scale=-1.0),
        bound="perfect_foresight",
        looser_bounds=("lp_relaxation",),
        paper_policy="co_optimising",
        plots=(plot_tco, plot_breakdown, plot_fleet),
        tradeoff=("unserved_share", "tco_usd"),
    )
)


def _replay_benchmark(quick: bool) -> dict[str, float]:
    """One full 15-year episode of the baseline for 1,024 datacenters (64 when quick), both presets."""
    import time

    from cloudgym.evaluation import evaluate, held_out_seeds

    n = 64 if quick else 1024
    out: dict[str, float] = {}
    for scenario in SCENARIOS:
        start = time.perf_counter()
        rows = evaluate("baseline", ENV_ID, held_out_seeds(n), env_kwargs={"scenario": scenario}, batch_size=n)
        out[f"{scenario}_episodes_per_s"] = n / (time.perf_counter() - start)
        out[f"{scenario}_mean_tco_busd"] = float(np.mean([r["tco_usd"] for r in rows]) / 1e9)
    return out


register_benchmark(
    Benchmark(
        env_id=ENV_ID,
        name="fleet_replay",
        description="15-year episodes of the baseline policy, 1,024 datacenters in one batch",
        run=_replay_benchmark,
    )
)


def _perfect_foresight(env: CloudGymVectorEnv) -> BatchedPolicy:
    from cloudgym.agents.dc_lifecycle_planner import PerfectForesightPolicy  # scipy: imported when used

    return PerfectForesightPolicy(env)


register_policy(
    ENV_ID,
    "perfect_foresight",
    _perfect_foresight,
    description="LP (HiGHS) plan over the known episode, executed through the actions",
    kind="oracle",
)


def _lp_relaxation(env_kwargs: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, list[float]]:
    """The perfect-foresight LP's optimum per seed (integrality relaxed: a lower bound on any policy's cost)."""
    from cloudgym.agents.dc_lifecycle_planner import plan_episode  # scipy: imported when used

    env = make_vector_env(ENV_ID, len(seeds), env_kwargs)
    env.reset(seed=[int(s) for s in seeds])
    scale = env.config.reward_scale_usd
    returns = [-plan_episode(env.core, i).objective_usd / scale for i in range(len(seeds))]  # type: ignore[arg-type]
    env.close()
    return {"return": returns}


register_value_bound(
    ENV_ID,
    "lp_relaxation",
    _lp_relaxation,
    description="the perfect-foresight LP's relaxed optimum (computed, not played: a lower bound on TCO + penalty)",
)


def _mpc(env: CloudGymVectorEnv) -> BatchedPolicy:
    from cloudgym.agents.dc_lifecycle_mpc import MPCPolicy  # scipy: imported when used

    return MPCPolicy(env)


register_policy(
    ENV_ID,
    "mpc",
    _mpc,
    description="rolling-horizon LP (HiGHS) re-solved each quarter on a trend + roadmap forecast, no foresight",
)
