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
from cloudgym.stats import Headroom, headroom_captured, paired_difference, sample_std

if TYPE_CHECKING:
    import pandas as pd

PlotFn = Callable[["pd.DataFrame", Path], list[Path]]
"""(results of one env, plots folder) -> files written."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Headline:
    """The one number per episode an env's results table ranks policies by.

    ``scale x column`` of the results frame: DCLifecycle shows ``-return``
    (TCO plus the unserved penalty, in $M) as a cost, lower is better.
    """

    column: str = "return"
    label: str = "return"
    unit: str = ""
    higher_is_better: bool = True
    scale: float = 1.0

    def values(self, rows: pd.DataFrame) -> np.ndarray:
        return self.scale * rows[self.column].to_numpy(dtype=np.float64)

    @property
    def title(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{self.label} ({self.unit}) {arrow}" if self.unit else f"{self.label} {arrow}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvReport:
    """How compare.py runs and shows one env."""

    env_id: str
    scenarios: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: {"default": {}})
    """Scenario name -> env kwargs; every policy runs on every scenario."""
    episodes: int = 8
    """Held-out episodes per (scenario, policy) when compare.py is given no --episodes (``make demo``)."""
    full_episodes: int = 64
    """Held-out episodes per (scenario, policy) for ``compare.py --full`` (the README's results table),
    chosen so the paired intervals are narrower than the differences they report."""
    headline: Headline = Headline()
    """The metric the results table, the paired statistics and headroom captured use."""
    bound: str | None = None
    """A registered policy that sees what no real controller can (hindsight, the future): the top of the
    headroom. Runs in every comparison, whether or not it is ``in_comparison``."""
    bound_in_demo: bool = True
    """Whether the short default run (``make demo``) runs the bounds too; slow ones only run with ``--full``."""
    looser_bounds: tuple[str, ...] = ()
    """Further bounds shown in the table (e.g. an LP relaxation), not used for headroom."""
    paper_policy: str | None = None
    """The paper's own policy: compared per seed too when it is not the best heuristic."""
    agents_everywhere: bool = False
    """Run shipped agents on every scenario (rows named "<agent> (trained on X)" off their own), as the
    paper's table across levels needs; otherwise an agent runs only on the scenario it was trained on."""
    policies: tuple[str, ...] | None = None
    """Registered policy names to run; None runs every one registered with in_comparison."""
    plots: tuple[PlotFn, ...] = ()
    """The paper's figures, drawn from the results frame."""
    tradeoff: tuple[str, str] | None = None
    """(x metric, y metric) for the generic trade-off scatter, when the env has one."""


_REPORTS: dict[str, EnvReport] = {}

ValueBound = Callable[[Mapping[str, Any], Sequence[int]], Mapping[str, Sequence[float]]]
"""(env kwargs, seeds) -> results column -> one value per seed: a bound computed, not played (an LP's optimum)."""

_VALUE_BOUNDS: dict[str, dict[str, tuple[ValueBound, str]]] = {}


def register_value_bound(env_id: str, name: str, compute: ValueBound, *, description: str) -> None:
    """A bound that is a number per episode rather than a policy (e.g. a relaxation's optimum); reports name it
    in ``bound`` or ``looser_bounds`` like a policy. ``compute`` must give at least the env's headline column."""
    _VALUE_BOUNDS.setdefault(env_id, {})[name] = (compute, description)


def value_bounds(env_id: str) -> dict[str, tuple[ValueBound, str]]:
    get_report(env_id)  # registers the baselines (and their value bounds)
    return dict(_VALUE_BOUNDS.get(env_id, {}))


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


def scenario_of(env_id: str, env_kwargs: Mapping[str, Any]) -> str | None:
    """The report's scenario whose kwargs the given env kwargs all contain (the most specific one), or None."""
    matches = [
        (len(kwargs), name)
        for name, kwargs in get_report(env_id).scenarios.items()
        if all(k in env_kwargs and env_kwargs[k] == v for k, v in kwargs.items())
    ]
    return max(matches)[1] if matches else None


def plan_runs(
    env_id: str,
    *,
    policies: Sequence[str] | None = None,
    agents: bool = True,
    scenarios: Sequence[str] | None = None,
    full: bool = False,
) -> list[PlannedRun]:
    """Every (scenario, policy) compare.py runs for an env: baselines, the bounds, then shipped agents.

    The bounds run unless the report keeps them out of the short run
    (``bound_in_demo=False``) and ``full`` is not set.

    An agent runs on the scenario its checkpoint was trained on; on the others
    only when the report asks for it (``agents_everywhere``), named
    ``"<agent> (trained on <scenario>)"`` so no row hides where it learnt.
    """
    report = get_report(env_id)
    specs = policy_specs(env_id)
    computed = value_bounds(env_id)
    if policies is not None:
        unknown = [p for p in policies if p not in specs]
        if unknown:
            raise ValueError(f"{env_id}: unknown policies {unknown}; known: {', '.join(specs)}")
        names = list(policies)
    else:
        default = [n for n, s in specs.items() if s.in_comparison]
        names = list(report.policies) if report.policies is not None else default
        if full or report.bound_in_demo:
            names += [b for b in (report.bound, *report.looser_bounds) if b is not None and b not in names]
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
            kind = "oracle" if name in computed else specs[name].kind
            runs.append(PlannedRun(env_id, scenario, kwargs, name, name, kind))
        for ckpt in checkpoints:
            if scenario in ckpt.trained_on:
                label = ckpt.name
            elif report.agents_everywhere:
                label = f"{ckpt.name} (trained on {ckpt.scenario or 'an unrecorded scenario'})"
            else:
                continue
            runs.append(PlannedRun(env_id, scenario, {**kwargs, **ckpt.env_kwargs}, label, ckpt.path, "agent"))
    return runs


def agents_not_run(env_id: str, scenario: str) -> list[CheckpointInfo]:
    """Shipped agents compare.py leaves out of a scenario because they were trained on another."""
    if get_report(env_id).agents_everywhere:
        return []
    return [c for c in shipped_checkpoints(env_id) if scenario not in c.trained_on]


def run_comparison(
    runs: Sequence[PlannedRun],
    episodes: int | None,
    progress: bool = True,
    *,
    full: bool = False,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Evaluate every planned run on the same held-out seeds; one row per episode.

    ``episodes`` overrides each env's count (``full_episodes`` with ``full``,
    else ``episodes``). Bounds (policies of kind ``oracle``) are slow; with a
    ``cache_dir`` their rows are read from and written to a per-seed cache
    (see :func:`cached_evaluate`); ``frame.attrs["cached_rows"]`` counts the rows read back.
    """
    rows: list[dict[str, Any]] = []
    cached = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="compare", unit="run")
    for run in runs:
        report = get_report(run.env_id)
        n = episodes or (report.full_episodes if full else report.episodes)
        if bar is not None:
            bar.set_postfix_str(f"{run.env_id} {run.scenario} {run.policy}")
        if cache_dir is not None and run.kind == "oracle":
            run_rows, hits = cached_evaluate(run, held_out_seeds(n), cache_dir)
            cached += hits
        else:
            run_rows = _run_rows(run, held_out_seeds(n))
        rows.extend({**row, "kind": run.kind} for row in run_rows)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    frame = results_frame(rows)
    frame.attrs["cached_rows"] = cached
    return frame


def _run_rows(run: PlannedRun, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per seed: the policy played (evaluate), or a computed bound's values."""
    computed = value_bounds(run.env_id).get(str(run.source))
    if computed is None:
        return evaluate(
            run.source, run.env_id, seeds, env_kwargs=run.env_kwargs, scenario=run.scenario, policy_name=run.policy
        )
    columns = computed[0](run.env_kwargs, seeds)
    return [
        {"env_id": run.env_id, "policy": run.policy, "seed": int(seed)}
        | {column: float(values[i]) for column, values in columns.items()}
        | {"scenario": run.scenario}
        for i, seed in enumerate(seeds)
    ]


def code_fingerprint() -> str:
    """sha256 of the sources that decide an episode (envs, baselines, agents) and numpy's version."""
    import hashlib

    import cloudgym.agents
    import cloudgym.baselines
    import cloudgym.envs

    digest = hashlib.sha256(np.__version__.encode())
    for package in (cloudgym.envs, cloudgym.baselines, cloudgym.agents):
        root = Path(str(package.__file__)).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_evaluate(run: PlannedRun, seeds: Sequence[int], cache_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """``evaluate`` with rows kept per seed under ``cache_dir``; (rows in seed order, rows read from the cache).

    The key holds the env, its kwargs, the policy and :func:`code_fingerprint`,
    so any change to the env or policy code misses the cache instead of
    reading stale rows.
    """
    import hashlib
    import json

    key = json.dumps(
        {"env": run.env_id, "kwargs": dict(run.env_kwargs), "policy": str(run.source), "code": code_fingerprint()},
        sort_keys=True,
        default=str,
    )
    folder = cache_dir / run.env_id / run.policy / hashlib.sha256(key.encode()).hexdigest()[:16]
    found = {s: json.loads((folder / f"{s}.json").read_text()) for s in seeds if (folder / f"{s}.json").exists()}
    missing = [s for s in seeds if s not in found]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "key.json").write_text(key)
        fresh = _run_rows(run, missing)
        for seed, row in zip(missing, fresh):
            (folder / f"{seed}.json").write_text(json.dumps(row))
            found[seed] = row
    rows = [{**found[s], "scenario": run.scenario, "policy": run.policy} for s in seeds]
    return rows, len(seeds) - len(missing)


def results_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with the results.csv column order: env_id, policy, seed, return, metrics, the rest."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    head = ["env_id", "policy", "seed", "return"]
    tail = ["scenario", "kind", "episode_length"]
    middle = [c for c in frame.columns if c not in head and c not in tail]
    return frame[head + middle + [c for c in tail if c in frame.columns]]


# ----------------------------------------------------------------------------- writing


def summary_markdown(frame: pd.DataFrame) -> str:
    """A table per env and scenario: mean ± std of return and each metric, the best per column in bold."""
    lines = ["# Every metric", ""]
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


@dataclasses.dataclass(frozen=True)
class ScenarioResult:
    """The headline metric of one env and scenario, per policy and seed (seeds in one shared order)."""

    env_id: str
    scenario: str
    values: dict[str, np.ndarray]
    kinds: dict[str, str]
    best_heuristic: str | None
    bound: str | None


def scenario_results(frame: pd.DataFrame) -> list[ScenarioResult]:
    """Split a results frame into per (env, scenario) headline values, paired by seed.

    The best heuristic is the baseline (not random, not a bound) with the best
    mean headline; policies that did not run on every seed of the scenario are
    dropped from the pairing rather than compared on different episodes.
    """
    results = []
    for (env_id, scenario), rows in frame.groupby(["env_id", "scenario"], sort=False):
        report = get_report(str(env_id))
        headline = report.headline
        seeds = sorted(set(rows["seed"]))
        values: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        for policy, policy_rows in rows.groupby("policy", sort=False):
            by_seed = policy_rows.drop_duplicates("seed").set_index("seed").reindex(seeds)
            if by_seed[headline.column].isna().any():
                continue
            values[str(policy)] = headline.values(by_seed)
            kinds[str(policy)] = str(policy_rows["kind"].iloc[0]) if "kind" in policy_rows else "baseline"
        heuristics = {p: v for p, v in values.items() if kinds[p] == "baseline" and p != "random"}
        sign = 1.0 if headline.higher_is_better else -1.0
        best = max(heuristics, key=lambda p: sign * heuristics[p].mean()) if heuristics else None
        bound = _headroom_bound(report, values, best)
        results.append(ScenarioResult(str(env_id), str(scenario), values, kinds, best, bound))
    return results


def _headroom_bound(report: EnvReport, values: Mapping[str, np.ndarray], best: str | None) -> str | None:
    """The bound headroom is measured against: the tightest bound that beats the best heuristic on every seed
    (as a true bound does), else the first that beats it on average, else the report's bound (an executed
    plan can lose to a strong heuristic on some seeds; its relaxation cannot)."""
    present = [b for b in (report.bound, *report.looser_bounds) if b is not None and b in values]
    if not present or best is None:
        return present[0] if present else None
    sign = 1.0 if report.headline.higher_is_better else -1.0
    everywhere = [b for b in present if (sign * (values[b] - values[best]) > 0).all()]
    if everywhere:  # better on every seed, as a true bound is: the tightest of those
        return min(everywhere, key=lambda b: sign * (values[b].mean() - values[best].mean()))
    better = [b for b in present if sign * (values[b].mean() - values[best].mean()) > 0]
    return better[0] if better else present[0]


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.1f}%"


def _interval_pct(low: float, high: float) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"


RESULTS_LEGEND = (
    "Δ%: mean per-seed difference from the best heuristic, as a share of its mean, with a paired-t 95% "
    "interval; seeds won: seeds where the policy was better. Headroom captured: (policy - best heuristic) "
    "/ (bound - best heuristic) on the headline, paired-bootstrap 95% interval. Bounds use information no "
    "real controller has (hindsight or the future); sd is the sample standard deviation over seeds."
)


def results_table(frame: pd.DataFrame, *, legend: bool = True) -> str:
    """The README's results table: per env and scenario, the headline of random, the best heuristic, the
    paper's policy, each agent and the bounds, with paired differences, seeds won and headroom captured."""
    lines: list[str] = []
    for result in scenario_results(frame):
        report = get_report(result.env_id)
        headline = report.headline
        best = result.best_heuristic
        n = len(next(iter(result.values.values())))
        lines += [
            f"#### {result.env_id} · `{result.scenario}` · {headline.title} · {n} held-out seeds"
            + (f" · headroom against `{result.bound}`" if result.bound else ""),
            "",
            "| policy | role | mean ± sd | vs best heuristic: Δ% [95% CI] | seeds won | headroom captured [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        paper = report.paper_policy if report.paper_policy in result.values else None
        order = [p for p in ("random", best, paper) if p is not None and p in result.values]
        order += [p for p, k in result.kinds.items() if k == "agent"]
        order += [p for p in (report.bound, *report.looser_bounds) if p in result.values]
        for policy in dict.fromkeys(order):
            v = result.values[policy]
            sd = sample_std(v)
            sd = 0.0 if sd <= 1e-9 * abs(float(v.mean())) else sd  # float noise of a deterministic scenario
            cells = [f"{_fmt(float(v.mean()))} ± {_fmt(sd)}"]
            if best is None or policy == best:
                cells += ["reference", "", "0%" if policy == best and result.bound else "n/a"]
            else:
                d = paired_difference(v, result.values[best], higher_is_better=headline.higher_is_better)
                scale = abs(d.reference_mean) or 1.0
                cells.append(_pct(d.mean / scale) + _interval_pct(d.ci_low / scale, d.ci_high / scale))
                cells.append(f"{d.won}/{d.n}")
                if result.bound is not None:
                    h = headroom_captured(
                        v, result.values[best], result.values[result.bound], higher_is_better=headline.higher_is_better
                    )
                    cells.append(_headroom_cell(h))
                else:
                    cells.append("n/a (bound not run: short run, see --full)" if report.bound else "n/a (no bound)")
            lines.append(f"| {policy} | {_role(policy, result, report)} | " + " | ".join(cells) + " |")
        if paper is not None and paper != best:
            lines.append("")
            lines.append(_versus_paper(result, paper, headline))
        left_out = agents_not_run(result.env_id, result.scenario)
        if left_out:
            names = ", ".join(f"{c.name} (trained on `{c.scenario}`)" for c in left_out)
            lines += ["", f"Not run here, trained on another scenario: {names}."]
        lines.append("")
    if legend:
        lines.append(RESULTS_LEGEND)
    return "\n".join(lines) + "\n"


def _headroom_cell(h: Headroom) -> str:
    if not h.defined:
        return "no room (bound not better)"
    if not np.isfinite(h.ci_low):
        return f"{100 * h.captured:.0f}% [no interval: the bound's gap is not positive in over 5% of resamples]"
    return f"{100 * h.captured:.0f}% [{100 * h.ci_low:.0f}, {100 * h.ci_high:.0f}]"


def _role(policy: str, result: ScenarioResult, report: EnvReport) -> str:
    roles = []
    if policy == result.best_heuristic:
        roles.append("best heuristic")
    if policy == report.paper_policy:
        roles.append("paper's policy")
    if policy == report.bound or policy in report.looser_bounds:
        roles.append("bound (hindsight)" + (", used for headroom" if policy == result.bound else ""))
    if result.kinds.get(policy) == "agent":
        roles.append("trained agent")
    if policy == "random":
        roles.append("random")
    return ", ".join(roles) or result.kinds.get(policy, "")


def _versus_paper(result: ScenarioResult, paper: str, headline: Headline) -> str:
    """One line per agent: its paired difference from the paper's policy (when that is not the best heuristic)."""
    parts = []
    for policy, kind in result.kinds.items():
        if kind != "agent":
            continue
        d = paired_difference(result.values[policy], result.values[paper], higher_is_better=headline.higher_is_better)
        scale = abs(d.reference_mean) or 1.0
        parts.append(
            f"{policy} vs {paper}: {_pct(d.mean / scale)}{_interval_pct(d.ci_low / scale, d.ci_high / scale)}, "
            f"won {d.won}/{d.n}"
        )
    return f"Against the paper's policy ({paper}, not the best heuristic here): " + ("; ".join(parts) or "no agent.")


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


def axis_label(column: str, specs: Mapping[str, MetricSpec]) -> str:
    """A metric as an axis label: its description's head and its unit (not the raw column name)."""
    if column == "return":
        return "episode return"
    spec = specs.get(column)
    if spec is None:
        return column
    words = spec.description.split(" (")[0]
    return f"{words} ({spec.unit})" if spec.unit else words


def plot_returns(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per scenario, a dot per policy of the headline metric (mean and its 95% interval over seeds, unpaired).

    The random policy is left out (it is often so far off that it squashes
    the rest) and its mean is given in the figure's note instead; colours
    tell baselines, trained agents and bounds apart.
    """
    plt = pyplot()

    files = []
    for env_id, env_rows in frame.groupby("env_id", sort=False):
        headline = get_report(str(env_id)).headline
        for scenario, rows in env_rows.groupby("scenario", sort=False):
            values = rows.assign(_headline=headline.values(rows))
            stats = values.groupby("policy", sort=False)["_headline"].agg(["mean", "std", "count"])
            note = ""
            if "random" in stats.index and len(stats) > 1:
                note = f"random (not drawn): {_fmt(float(stats.loc['random', 'mean']))}"
                stats = stats.drop(index="random")
            ci = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
            fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(stats) + 1.6))
            kinds = values.groupby("policy", sort=False)["kind"].first() if "kind" in values else None
            rows_y = np.arange(len(stats))
            for kind, colour in _KIND_COLOURS.items():
                chosen = [i for i, p in enumerate(stats.index) if _kind(kinds, p) == kind]
                if chosen:  # a dot and its interval per policy: the axis zooms to the policies, not to zero
                    ax.errorbar(
                        stats["mean"].iloc[chosen],
                        rows_y[chosen],
                        xerr=ci.iloc[chosen],
                        fmt="o",
                        color=colour,
                        capsize=3,
                        label=kind,
                    )
            ax.set_yticks(rows_y, list(stats.index))
            ax.set_xlabel(f"{headline.label}" + (f" ({headline.unit})" if headline.unit else "") + ", mean and 95% CI")
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{env_id} · scenario {scenario} · {int(stats['count'].max())} held-out seeds", fontsize=9)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            if note:
                fig.text(0.01, 0.01, note, fontsize=7, color="dimgray")
            files.append(save_figure(fig, out_dir / f"{env_id}_{_slug(str(scenario))}_headline.png"))
    return files


_KIND_COLOURS = {"baseline": "tab:blue", "agent": "tab:orange", "oracle": "tab:gray"}


def _kind(kinds: pd.Series | None, policy: str) -> str:
    return str(kinds[policy]) if kinds is not None else "baseline"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "scenario"


def plot_tradeoff(frame: pd.DataFrame, out_dir: Path, x: str, y: str) -> list[Path]:
    """Per scenario, mean of two metrics per policy: one marker per policy, named in the legend."""
    plt = pyplot()

    env_id = str(frame["env_id"].iloc[0])
    specs = {m.name: m for m in metric_specs(env_id)}
    files = []
    markers = "osD^v<>pP*Xh"
    for scenario, rows in frame.groupby("scenario", sort=False):
        means = rows.groupby("policy", sort=False)[[x, y]].mean()
        fig, ax = plt.subplots(figsize=(7.0, 4.5))
        for k, (policy, (vx, vy)) in enumerate(means.iterrows()):
            marker = markers[k % len(markers)]
            ax.scatter([vx], [vy], marker=marker, s=45, color=plt.cm.tab20(k % 20), label=str(policy))
        ax.set_xlabel(axis_label(x, specs))
        ax.set_ylabel(axis_label(y, specs))
        ax.set_title(f"{env_id} · scenario {scenario}: {y} vs {x} (mean over held-out seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        files.append(save_figure(fig, out_dir / f"{env_id}_{_slug(str(scenario))}_{y}_vs_{x}.png"))
    return files


def reference_results(
    env_id: str, env_kwargs: Mapping[str, Any], seeds: Sequence[int], cache_dir: Path | None = Path("results/cache")
) -> dict[str, list[dict[str, Any]]]:
    """The best heuristic's and the bound's rows on ``seeds`` (what training logs under ``ref/``).

    The best heuristic is chosen on these seeds among the comparison's
    baselines (not random) by the headline metric; the bound's rows come
    through the per-seed cache when ``cache_dir`` is set.
    """
    report = get_report(env_id)
    specs = policy_specs(env_id)
    names = list(report.policies) if report.policies is not None else [n for n, s in specs.items() if s.in_comparison]
    candidates = [n for n in names if specs[n].kind == "baseline" and n != "random"]
    sign = 1.0 if report.headline.higher_is_better else -1.0
    found: dict[str, list[dict[str, Any]]] = {}
    best, best_score = None, -np.inf
    for name in candidates:
        rows = evaluate(name, env_id, seeds, env_kwargs=env_kwargs, policy_name=name)
        score = sign * float(np.mean([report.headline.scale * r[report.headline.column] for r in rows]))
        if score > best_score:
            best, best_score, found["best"] = name, score, rows
    results: dict[str, list[dict[str, Any]]] = {}
    if best is not None:
        results[best] = found["best"]
    if report.bound is not None and report.bound not in results:
        run = PlannedRun(env_id, "training", env_kwargs, report.bound, report.bound, "oracle")
        if cache_dir is None:
            results[report.bound] = evaluate(report.bound, env_id, seeds, env_kwargs=env_kwargs)
        else:
            results[report.bound] = cached_evaluate(run, seeds, cache_dir)[0]
    return results


def write_tensorboard_layout(run_dir: Path, env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """A custom-scalars layout in ``run_dir``: per metric one chart of ``eval/<metric>`` and ``ref/*/<metric>``."""
    from torch.utils.tensorboard import SummaryWriter

    columns = ["return", *[m.name for m in metric_specs(env_id, env_kwargs)]]
    charts = {c: ["Multiline", [f"^eval/{c}$", f"^ref/[^/]+/{c}$"]] for c in columns}
    writer = SummaryWriter(log_dir=str(run_dir))
    writer.add_custom_scalars({f"{env_id}: agent vs best heuristic and bound": charts})
    writer.close()


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
        columns = [c for c in rows.columns if c not in ("env_id", "policy", "seed", "scenario", "kind")]
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
    table = out / "results.md"
    table.write_text(results_table(frame))
    summary = out / "summary.md"
    summary.write_text("# Results (headline, paired by seed)\n\n" + table.read_text() + "\n" + summary_markdown(frame))
    plots: list[Path] = []
    agents: dict[tuple[str, str], CheckpointInfo] = {}
    for env_id, env_rows in frame.groupby("env_id", sort=False):
        env_rows = env_rows.dropna(axis=1, how="all")
        report = get_report(str(env_id))
        plots += plot_returns(env_rows, plots_dir)
        if report.tradeoff is not None:
            plots += plot_tradeoff(env_rows, plots_dir, *report.tradeoff)
        for plot in report.plots:
            plots += plot(env_rows, plots_dir)
        for ckpt in shipped_checkpoints(str(env_id)):
            agents[(str(env_id), ckpt.name)] = ckpt
    tb = write_tensorboard(frame, out / "tb", agents)
    return {
        "csv": csv,
        "table": table,
        "summary": summary,
        "plots": plots,
        "tensorboard": out / "tb",
        "tb_runs": tb,
    }
