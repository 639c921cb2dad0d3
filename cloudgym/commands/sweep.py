"""Sweep RLlib training runs with Ray Tune over a YAML-declared space; one CSV row per trial, plots.

    python scripts/sweep.py --space agents/sweeps/ToyCluster-v0.yaml --out results/sweep-toy
    python scripts/sweep.py --space my_sweep.yaml --address auto      # on an existing Ray cluster

The space file (format in cloudgym.agents.sweep) names the env, algorithm,
steps per trial and the swept keys: ``seed``, ``hyperparams.<key>`` and
``env_kwargs.<field>`` (reward weights are env config fields), each a list
(grid search) or a distribution (random search). Every trial trains, saves
its checkpoint in its trial folder and is evaluated on held-out seeds.

Writes ``OUT/trials.csv`` (one row per trial: the swept values, then the mean
held-out return and metrics, the trial's checkpoint folder), ``OUT/results.csv``
(one row per held-out episode, the env's baselines beside the trials, each
trial a policy ``t<NN>``) and ``OUT/plots/``: return per policy, the env's
trade-off scatter, and the env's own paper figures (its registered report
plots) with the trials drawn as extra policies beside the baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import cloudgym  # noqa: F401  (registers the env ids)
from cloudgym.agents import rllib
from cloudgym.agents.sweep import SweepSpec, param_space, read_sweep, run_trial


@dataclasses.dataclass
class Args:
    space: Path
    out: Path
    address: str | None
    baselines: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", type=Path, required=True, help="sweep file (YAML)")
    p.add_argument("--out", type=Path, help="output folder (default: results/sweep-<file stem>)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local one)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="plot the trials alone")
    ns = p.parse_args(argv)
    if not ns.space.exists():
        p.error(f"{ns.space}: no such file")
    ns.out = ns.out or Path("results") / f"sweep-{ns.space.stem}"
    return Args(**vars(ns))


def main(argv: list[str] | None = None) -> Path:
    import pandas as pd
    from ray import tune

    from cloudgym.evaluation import held_out_seeds
    from cloudgym.reports import get_report, plan_runs, plot_returns, plot_tradeoff, results_frame, run_comparison

    args = parse_args(argv)
    spec: SweepSpec = read_sweep(args.space)
    out = args.out.resolve()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    started = time.time()

    started_ray = rllib.connect_ray(args.address, num_cpus=spec.max_concurrent)
    try:
        tuner = tune.Tuner(
            tune.with_resources(functools.partial(run_trial, spec=spec), {"cpu": 1}),
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1),
        )
        grid = tuner.fit()
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    rows, episodes = [], []
    for number, result in enumerate(sorted((grid[i] for i in range(len(grid))), key=lambda r: r.path)):
        label = f"t{number:02d}"
        row = {"trial": label, **(result.config or {})}
        if result.error is not None:
            row["error"] = str(result.error).splitlines()[0]
        else:
            row.update({k: v for k, v in (result.metrics or {}).items() if k in _metric_columns(result.metrics)})
            eval_csv = Path(result.path) / "eval.csv"
            frame = pd.read_csv(eval_csv)
            frame["policy"] = label
            episodes.append(frame)
        row["checkpoint"] = result.path
        rows.append(row)
    trials = pd.DataFrame(rows)
    trials.to_csv(out / "trials.csv", index=False)
    failed = int(trials["error"].notna().sum()) if "error" in trials else 0

    if args.baselines:
        report = get_report(spec.env_id)
        runs = [r for r in plan_runs(spec.env_id, agents=False) if r.scenario == next(iter(report.scenarios))]
        runs = [dataclasses.replace(r, env_kwargs={**r.env_kwargs, **spec.env_kwargs}) for r in runs]
        baseline_frame = run_comparison(runs, spec.eval_episodes, progress=False)
        episodes.insert(0, baseline_frame)
    frame = results_frame(pd.concat(episodes, ignore_index=True).to_dict("records"))
    frame["scenario"] = frame["scenario"].fillna("default")
    frame.to_csv(out / "results.csv", index=False)
    plots = plot_returns(frame, out / "plots")
    report = get_report(spec.env_id)
    if report.tradeoff is not None:
        plots += plot_tradeoff(frame, out / "plots", *report.tradeoff)
    for plot in report.plots:
        plots += plot(frame.dropna(axis=1, how="all"), out / "plots")

    print(trials.drop(columns=["checkpoint"]).to_string(index=False))
    print(
        f"\n{len(trials)} trials ({failed} failed) in {time.time() - started:.0f}s; held-out seeds "
        f"{held_out_seeds(spec.eval_episodes)[0]}.. ({spec.eval_episodes} episodes per trial)"
    )
    print(f"trials:   {out / 'trials.csv'}")
    print(f"episodes: {out / 'results.csv'}")
    print(f"plots:    {', '.join(str(p) for p in plots)}")
    if failed:
        raise SystemExit(f"{failed} trials failed (see the error column of {out / 'trials.csv'})")
    return out


def _metric_columns(metrics: dict[str, object] | None) -> list[str]:
    """The evaluation means a trial reported (not Tune's own bookkeeping)."""
    skip = {
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "training_iteration",
        "time_since_restore",
        "iterations_since_restore",
        "pid",
        "date",
        "hostname",
        "node_ip",
        "trial_id",
        "done",
        "checkpoint_dir_name",
        "config",
        "experiment_tag",
        "should_checkpoint",
    }
    return [k for k in (metrics or {}) if k not in skip and not isinstance((metrics or {})[k], dict)]
