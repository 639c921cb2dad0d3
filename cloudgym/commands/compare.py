"""Compare every env's baselines and trained agents on the same held-out seeds.

    python scripts/compare.py [--env ID ...] [--episodes N] [--out DIR]

Writes ``DIR/results.csv`` (one row per env, policy and episode: env_id,
policy, seed, return, then the env's metric columns, then scenario and
episode length), ``DIR/summary.md`` (a table per env and scenario, the best
per column in bold), ``DIR/plots/*.png`` (returns per policy, and each env's
paper figure) and ``DIR/tb/`` (``tensorboard --logdir DIR/tb`` overlays
baselines and agents on the tags ``eval/<column>``). Shipped checkpoints
(``agents/checkpoints/<env>/<name>``) join the baselines automatically.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

import cloudgym
from cloudgym.reports import plan_runs, run_comparison, write_outputs


@dataclasses.dataclass
class Args:
    env: list[str]
    episodes: int | None
    out: Path
    policies: list[str] | None
    scenarios: list[str] | None
    agents: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", default=list(cloudgym.ALL_ENV_IDS), choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--episodes", type=int, help="held-out episodes per policy (default: each env's report)")
    p.add_argument("--out", type=Path, default=Path("results/compare"), help="output folder")
    p.add_argument("--policies", nargs="+", help="only these registered policies (one env at a time)")
    p.add_argument("--scenarios", nargs="+", help="only these scenarios (one env at a time)")
    p.add_argument("--no-agents", dest="agents", action="store_false", help="skip shipped checkpoints")
    args = Args(**vars(p.parse_args(argv)))
    if (args.policies or args.scenarios) and len(args.env) != 1:
        p.error("--policies and --scenarios need exactly one --env")
    if args.episodes is not None and args.episodes < 1:
        p.error("--episodes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # Small networks on few cores: one torch thread is several times faster than the default.
    torch.set_num_threads(int(os.environ.get("CLOUDGYM_TORCH_THREADS", "1")))
    started = time.time()
    runs = [
        run
        for env_id in args.env
        for run in plan_runs(env_id, policies=args.policies, agents=args.agents, scenarios=args.scenarios)
    ]
    frame = run_comparison(runs, args.episodes)
    written = write_outputs(frame, args.out)
    print(written["summary"].read_text())
    print(f"compared {len(runs)} (env, scenario, policy) runs in {time.time() - started:.0f}s")
    print(f"results:     {written['csv']}")
    print(f"summary:     {written['summary']}")
    print(f"plots:       {args.out / 'plots'} ({len(written['plots'])} files)")
    print(f"tensorboard: tensorboard --logdir {written['tensorboard']}")
    return args.out
