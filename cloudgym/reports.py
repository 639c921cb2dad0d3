"""What compare.py shows for each env, and how: scenarios, policies, tables, plots, TensorBoard.

Each env's baselines module registers an :class:`EnvReport`: the scenarios to
run (name -> env kwargs), how many held-out episodes by default, and plot
functions that draw the paper's own kind of figure from the results frame.
:func:`run_comparison` runs every (scenario, policy) on the same held-out
seeds and :func:`write_outputs` writes results.csv, summary.md, plots/ and
tb/ (one TensorBoard run per env, scenario and policy, tags ``eval/<column>``,
the same tags ``scripts/train.py`` logs, so baselines and agents overlay).

Running and writing need pandas, matplotlib and torch's TensorBoard writer
(the ``train`` extra), imported where used: baselines register their report
here without pulling them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudgym.agents.checkpoints import CheckpointInfo, shipped_checkpoints
from cloudgym.envs.core.batch import MetricSpec
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env
from cloudgym.policy import policy_specs

if TYPE_CHECKING:
    import pandas as pd

PlotFn = Callable[["pd.DataFrame", Path], list[Path]]
"""(results of one env, plots folder) -> files written."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvReport:
    """How compare.py runs and shows one env."""

    env_id: str
    scenarios: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: {"default": {}})
    """Scenario name -> env kwargs; every policy runs on every scenario."""
    episodes: int = 8
    """Held-out episodes per (scenario, policy) when compare.py is given no --episodes."""
    policies: tuple[str, ...] | None = None
    """Registered policy names to run; None runs every one registered with in_comparison."""
    plots: tuple[PlotFn, ...] = ()
    """The paper's figures, drawn from the results frame."""
    tradeoff: tuple[str, str] | None = None
    """(x metric, y metric) for the generic trade-off scatter, when the env has one."""


_REPORTS: dict[str, EnvReport] = {}


def register_report(report: EnvReport) -> None:
    if report.env_id in _REPORTS:
        raise ValueError(f"a report for {report.env_id} is already registered")
    _REPORTS[report.env_id] = report


def get_report(env_id: str) -> EnvReport:
    import cloudgym.baselines  # noqa: F401  (registers reports)

    return _REPORTS.get(env_id, EnvReport(env_id=env_id))


def metric_specs(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> tuple[MetricSpec, ...]:
    env = make_vector_env(env_id, 1, env_kwargs)
    specs = env.core.metrics
    env.close()
    return specs


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    env_id: str
    scenario: str
    env_kwargs: Mapping[str, Any]
    policy: str
    source: str | Path  # a registered name or a checkpoint folder
    kind: str


def plan_runs(
    env_id: str, *, policies: Sequence[str] | None = None, agents: bool = True, scenarios: Sequence[str] | None = None
) -> list[PlannedRun]:
    """Every (scenario, policy) compare.py runs for an env, baselines first, then shipped agents."""
    report = get_report(env_id)
    specs = policy_specs(env_id)
    if policies is not None:
        unknown = [p for p in policies if p not in specs]
        if unknown:
            raise ValueError(f"{env_id}: unknown policies {unknown}; known: {', '.join(specs)}")
        names = list(policies)
    elif report.policies is not None:
        names = list(report.policies)
    else:
        names = [n for n, s in specs.items() if s.in_comparison]
    chosen = dict(report.scenarios)
    if scenarios is not None:
        missing = [s for s in scenarios if s not in chosen]
        if missing:
            raise ValueError(f"{env_id}: unknown scenarios {missing}; known: {', '.join(chosen)}")
        chosen = {s: chosen[s] for s in scenarios}
    checkpoints: list[CheckpointInfo] = shipped_checkpoints(env_id) if agents and policies is None else []
    runs = []
    for scenario, kwargs in chosen.items():
        for name in names:
            runs.append(PlannedRun(env_id, scenario, kwargs, name, name, specs[name].kind))
        for ckpt in checkpoints:
            runs.append(PlannedRun(env_id, scenario, {**kwargs, **ckpt.env_kwargs}, ckpt.name, ckpt.path, "agent"))
    return runs


def run_comparison(runs: Sequence[PlannedRun], episodes: int | None, progress: bool = True) -> pd.DataFrame:
    """Evaluate every planned run on the same held-out seeds; one row per episode."""
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="compare", unit="run")
    for run in runs:
        n = episodes or get_report(run.env_id).episodes
        if bar is not None:
            bar.set_postfix_str(f"{run.env_id} {run.scenario} {run.policy}")
        rows.extend(
            evaluate(
                run.source,
                run.env_id,
                held_out_seeds(n),
                env_kwargs=run.env_kwargs,
                scenario=run.scenario,
                policy_name=run.policy,
            )
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results_frame(rows)


def results_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with the results.csv column order: env_id, policy, seed, return, metrics, the rest."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    head = ["env_id", "policy", "seed", "return"]
    tail = ["scenario", "episode_length"]
    middle = [c for c in frame.columns if c not in head and c not in tail]
    return frame[head + middle + [c for c in tail if c in frame.columns]]


# ----------------------------------------------------------------------------- writing


def summary_markdown(frame: pd.DataFrame) -> str:
    """A table per env and scenario: mean ± std of return and each metric, the best per column in bold."""
    lines = ["# cloudgym comparison", ""]
    for env_id, env_rows in frame.groupby("env_id", sort=False):
        specs = {m.name: m for m in metric_specs(str(env_id))}
        lines += [f"## {env_id}", ""]
        for scenario, rows in env_rows.groupby("scenario", sort=False):
            episodes = rows.groupby("policy", sort=False).size().max()
            lines += [f"### scenario `{scenario}` ({episodes} held-out episodes per policy)", ""]
            columns = ["return", *[c for c in specs if c in rows.columns]]
            stats = rows.groupby("policy", sort=False)[columns].agg(["mean", "std"])
            header = "| policy | " + " | ".join(_column_title(c, specs) for c in columns) + " |"
            lines += [header, "|" + "---|" * (len(columns) + 1)]
            best = {c: _best(stats[(c, "mean")], True if c == "return" else specs[c].higher_is_better) for c in columns}
            for policy in stats.index:
                cells = []
                for c in columns:
                    mean, std = stats.loc[policy, (c, "mean")], stats.loc[policy, (c, "std")]
                    text = f"{_fmt(mean)} ± {_fmt(std if np.isfinite(std) else 0.0)}"
                    cells.append(f"**{text}**" if policy in best[c] else text)
                lines.append(f"| {policy} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Metrics:", ""]
        lines += [f"- `{m.name}` ({m.unit}): {m.description}" for m in specs.values()]
        lines.append("")
    lines.append("Bold: best mean in the column (higher return is better; each metric's direction is listed).")
    return "\n".join(lines) + "\n"


def _column_title(column: str, specs: Mapping[str, MetricSpec]) -> str:
    if column == "return":
        return "return ↑"
    arrow = {True: " ↑", False: " ↓", None: ""}[specs[column].higher_is_better]
    return f"{column} ({specs[column].unit}){arrow}"


def _best(means: pd.Series, higher_is_better: bool | None) -> set[str]:
    finite = means[np.isfinite(means)]
    if higher_is_better is None or finite.empty:
        return set()
    target = finite.max() if higher_is_better else finite.min()
    return set(finite.index[np.isclose(finite, target, rtol=1e-9, atol=1e-12)])


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (report plots are written, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay the figure out, write it to ``path`` and close it; ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_returns(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """A bar per policy (mean return, 95% interval over episodes), one panel per scenario."""
    plt = pyplot()

    files = []
    for env_id, env_rows in frame.groupby("env_id", sort=False):
        scenarios = list(env_rows["scenario"].unique())
        fig, axes = plt.subplots(1, len(scenarios), figsize=(max(5.0, 4.5 * len(scenarios)), 4.0), squeeze=False)
        for ax, scenario in zip(axes[0], scenarios):
            rows = env_rows[env_rows["scenario"] == scenario]
            stats = rows.groupby("policy", sort=False)["return"].agg(["mean", "std", "count"])
            ci = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
            ax.barh(stats.index, stats["mean"], xerr=ci, color="tab:blue", alpha=0.8)
            ax.set_title(f"{scenario}")
            ax.set_xlabel("episode return (95% CI)")
            ax.invert_yaxis()
        fig.suptitle(f"{env_id}: return per policy on held-out seeds")
        path = save_figure(fig, out_dir / f"{env_id}_returns.png")
        files.append(path)
    return files


def plot_tradeoff(frame: pd.DataFrame, out_dir: Path, x: str, y: str) -> Path:
    """Mean of two metrics per policy (one marker each), one colour per scenario."""
    plt = pyplot()

    env_id = str(frame["env_id"].iloc[0])
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for scenario, rows in frame.groupby("scenario", sort=False):
        means = rows.groupby("policy", sort=False)[[x, y]].mean()
        ax.scatter(means[x], means[y], label=str(scenario))
        for policy, (vx, vy) in means.iterrows():
            ax.annotate(str(policy), (vx, vy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{env_id}: {y} vs {x}")
    if frame["scenario"].nunique() > 1:
        ax.legend(fontsize=7)
    path = save_figure(fig, out_dir / f"{env_id}_{y}_vs_{x}.png")
    return path


def write_tensorboard(
    frame: pd.DataFrame, tb_dir: Path, agent_steps: Mapping[tuple[str, str], CheckpointInfo]
) -> list[Path]:
    """One run per (env, scenario, policy) under ``tb_dir/<env>/<scenario>/<policy>``, tags ``eval/<column>``.

    Baselines are drawn as flat lines from step 0 to the longest agent's
    training steps; an agent's evaluation history from training is replayed at
    its own steps, then its final held-out result at its last step.
    """
    from torch.utils.tensorboard import SummaryWriter

    runs = []
    for (env_id, scenario, policy), rows in frame.groupby(["env_id", "scenario", "policy"], sort=False):
        columns = [c for c in rows.columns if c not in ("env_id", "policy", "seed", "scenario")]
        means = rows[columns].mean()
        longest = max([c.timesteps for (e, _), c in agent_steps.items() if e == env_id] or [1])
        run_dir = tb_dir / str(env_id) / str(scenario) / str(policy)
        writer = SummaryWriter(log_dir=str(run_dir))
        ckpt = agent_steps.get((str(env_id), str(policy)))
        if ckpt is not None:
            for entry in ckpt.eval_history:
                for column, value in entry.items():
                    if column != "step" and scenario == "default":
                        writer.add_scalar(f"eval/{column}", float(value), int(entry["step"]))
            steps = [max(ckpt.timesteps, 1)]
        else:
            steps = [0, longest]
        for step in steps:
            for column in columns:
                if np.isfinite(means[column]):
                    writer.add_scalar(f"eval/{column}", float(means[column]), step)
        writer.close()
        runs.append(run_dir)
    return runs


def write_outputs(frame: pd.DataFrame, out: Path) -> dict[str, Any]:
    """results.csv, summary.md, plots/*.png and tb/ under ``out``; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    csv = out / "results.csv"
    frame.to_csv(csv, index=False)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(frame))
    plots: list[Path] = []
    agents: dict[tuple[str, str], CheckpointInfo] = {}
    for env_id, env_rows in frame.groupby("env_id", sort=False):
        env_rows = env_rows.dropna(axis=1, how="all")
        report = get_report(str(env_id))
        plots += plot_returns(env_rows, plots_dir)
        if report.tradeoff is not None:
            plots.append(plot_tradeoff(env_rows, plots_dir, *report.tradeoff))
        for plot in report.plots:
            plots += plot(env_rows, plots_dir)
        for ckpt in shipped_checkpoints(str(env_id)):
            agents[(str(env_id), ckpt.name)] = ckpt
    tb = write_tensorboard(frame, out / "tb", agents)
    return {"csv": csv, "summary": summary, "plots": plots, "tensorboard": out / "tb", "tb_runs": tb}
