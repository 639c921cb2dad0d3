"""Compare every env's baselines, trained agents and bounds on the same held-out seeds.

    python scripts/compare.py [--env ID ...] [--episodes N] [--out DIR]
    python scripts/compare.py --full [--readme README.md]   # the README's results table

Writes ``DIR/results.md`` (the results table: per env and scenario, the
headline metric of random, the best heuristic, the paper's policy, each
shipped agent and the bounds, each compared per seed with the best
heuristic: mean difference with a 95% interval, seeds won and headroom
captured), ``DIR/results.csv`` (one row per env, policy and episode),
``DIR/summary.md`` (the results table, then every metric per env and
scenario, the best per column in bold), ``DIR/plots/*.png`` and ``DIR/tb/``
(``tensorboard --logdir DIR/tb`` overlays baselines and agents on the tags
``eval/<column>``). Shipped checkpoints (``agents/checkpoints/<env>/<name>``)
join on the scenario they were trained on.

Without ``--full`` each env runs its short count of episodes (``make demo``)
and slow bounds are skipped (the output says which); ``--full`` runs each
env's full count with every bound, reading and writing bound episodes in a
per-seed cache (``--cache``, default ``results/cache``), and ``--readme``
rewrites, between the README's results markers, the section of each env
this run compared, with its command and wall time (``--env X`` refreshes one).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

import cloudgym
from cloudgym.reports import RESULTS_LEGEND, get_report, plan_runs, results_table, run_comparison, write_outputs


@dataclasses.dataclass
class Args:
    env: list[str]
    episodes: int | None
    out: Path
    policies: list[str] | None
    scenarios: list[str] | None
    agents: bool
    full: bool
    cache: Path | None
    readme: Path | None


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", default=list(cloudgym.ALL_ENV_IDS), choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--episodes", type=int, help="held-out episodes per policy (default: each env's report)")
    p.add_argument("--out", type=Path, default=Path("results/compare"), help="output folder")
    p.add_argument("--policies", nargs="+", help="only these registered policies (one env at a time)")
    p.add_argument("--scenarios", nargs="+", help="only these scenarios (one env at a time)")
    p.add_argument("--no-agents", dest="agents", action="store_false", help="skip shipped checkpoints")
    p.add_argument("--full", action="store_true", help="each env's full episode count and every bound (slow)")
    p.add_argument(
        "--cache", type=Path, default=Path("results/cache"), help="per-seed cache of bound episodes (with --full)"
    )
    p.add_argument("--no-cache", dest="cache", action="store_const", const=None, help="recompute the bounds")
    p.add_argument("--readme", type=Path, help="write the results table into this README (needs --full)")
    args = Args(**vars(p.parse_args(argv)))
    if (args.policies or args.scenarios) and len(args.env) != 1:
        p.error("--policies and --scenarios need exactly one --env")
    if args.episodes is not None and args.episodes < 1:
        p.error("--episodes must be >= 1")
    if args.readme is not None and not args.full:
        p.error("--readme writes the full results table: add --full")
    if args.readme is not None and README_BEGIN not in args.readme.read_text():
        p.error(f"{args.readme} has no {README_BEGIN} ... {README_END} markers to write the table between")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # Small networks on few cores: one torch thread is several times faster than the default.
    torch.set_num_threads(int(os.environ.get("CLOUDGYM_TORCH_THREADS", "1")))
    started = time.time()
    runs = [
        run
        for env_id in args.env
        for run in plan_runs(
            env_id, policies=args.policies, agents=args.agents, scenarios=args.scenarios, full=args.full
        )
    ]
    frame = run_comparison(runs, args.episodes, full=args.full, cache_dir=args.cache if args.full else None)
    written = write_outputs(frame, args.out)
    elapsed = time.time() - started
    print(written["summary"].read_text())
    episodes = frame.groupby("env_id", sort=False)["seed"].nunique()
    print("held-out episodes per policy: " + ", ".join(f"{e} {n}" for e, n in episodes.items()))
    if not args.full:
        skipped = [f"{e}: {get_report(e).bound}" for e in args.env if not get_report(e).bound_in_demo]
        print(
            "short run (make demo): fewer seeds than the README's table"
            + (f"; slow bounds skipped ({', '.join(skipped)})" if skipped else "")
            + ". The full table: python scripts/compare.py --full"
        )
    elif args.cache is not None:
        print(f"bound episodes read from the cache {args.cache}: {frame.attrs.get('cached_rows', 0)}")
    print(f"compared {len(runs)} (env, scenario, policy) runs in {elapsed:.0f}s")
    print(f"results table: {written['table']}")
    print(f"results:     {written['csv']}")
    print(f"summary:     {written['summary']}")
    print(f"plots:       {args.out / 'plots'} ({len(written['plots'])} files)")
    print(f"tensorboard: tensorboard --logdir {written['tensorboard']}")
    if args.readme is not None:
        write_readme_table(args.readme, frame, argv, elapsed)
        print(f"README:      {args.readme} (results table rewritten)")
    return args.out


README_BEGIN = "<!-- results-table:begin (written by compare.py --full --readme README.md) -->"
README_END = "<!-- results-table:end -->"


def write_readme_table(readme: Path, frame: pd.DataFrame, argv: list[str] | None, seconds: float) -> None:
    """Rewrite, between the README's results markers, the section of each env this run compared.

    Each env's section carries the command, wall time and date of the run
    that wrote it, so one env can be re-run (``--env X``) without touching the others.
    """
    import platform
    import sys

    text = readme.read_text()
    head, rest = text.split(README_BEGIN, 1)
    if README_END not in rest:
        raise ValueError(f"{readme}: {README_BEGIN} has no {README_END} after it")
    block, tail = rest.split(README_END, 1)
    sections = {
        env: block.split(f"<!-- env:{env} -->", 1)[1].split(f"<!-- /env:{env} -->", 1)[0]
        for env in cloudgym.ALL_ENV_IDS
        if f"<!-- env:{env} -->" in block
    }
    command = " ".join(["python scripts/compare.py", *(sys.argv[1:] if argv is None else argv)])
    cached = int(frame.attrs.get("cached_rows", 0))
    cache_note = f", {cached} bound episodes read from the per-seed cache" if cached else ""
    when = time.strftime("%Y-%m-%d", time.gmtime())
    for env_id, rows in frame.groupby("env_id", sort=False):
        sections[str(env_id)] = (
            f"\n{results_table(rows, legend=False).replace('#### ', '##### ').rstrip()}\n\n"
            f"*Written by `{command}` ({seconds / 60:.1f} min for the run, {when}, "
            f"{os.cpu_count()} cores {platform.machine()}{cache_note}).*\n"
        )
    body = "".join(
        f"<!-- env:{env} -->{sections[env]}<!-- /env:{env} -->\n" for env in cloudgym.ALL_ENV_IDS if env in sections
    )
    readme.write_text(f"{head}{README_BEGIN}\n{body}\n{RESULTS_LEGEND}\n{README_END}{tail}")
