"""Evaluate any baseline or checkpoint on any env, on held-out seeds.

    python scripts/evaluate.py --env ToyCluster-v0 --policy cheapest_fit
    python scripts/evaluate.py --env ToyCluster-v0 --policy agents/checkpoints/ToyCluster-v0/maskableppo
    python scripts/evaluate.py --env ToyCluster-v0 --list

Prints the mean and standard deviation of the return and of every domain
metric; ``--csv`` writes one row per episode (the results.csv columns).
Env config fields go in ``--env-kwargs`` as YAML (``"{num_nodes: 6}"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

import cloudgym
from cloudgym.agents.checkpoints import shipped_checkpoints
from cloudgym.cli import yaml_mapping
from cloudgym.evaluation import evaluate, held_out_seeds, summarise
from cloudgym.policy import policy_specs
from cloudgym.reports import results_frame


@dataclasses.dataclass
class Args:
    env: str
    policy: str | None
    episodes: int
    seed_offset: int
    env_kwargs: dict[str, Any] | None
    csv: Path | None
    list: bool
    trust_checkpoint: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--policy", help="a baseline name (see --list) or a checkpoint folder")
    p.add_argument("--episodes", type=int, default=16, help="held-out episodes (default 16)")
    p.add_argument("--seed-offset", type=int, default=0, help="start later in the held-out seeds")
    p.add_argument(
        "--env-kwargs",
        type=yaml_mapping,
        default=None,
        help="env config fields as a YAML mapping (default: a checkpoint's training scenario, else the env's defaults)",
    )
    p.add_argument("--csv", type=Path, help="write one row per episode here")
    p.add_argument("--list", action="store_true", help="list the env's registered policies and exit")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint format that loads by unpickling (RLlib, a foreign SB3 zip): it can run code",
    )
    args = Args(**vars(p.parse_args(argv)))
    if args.env_kwargs is not None and not isinstance(args.env_kwargs, dict):
        p.error(f"--env-kwargs must be a YAML mapping, got {args.env_kwargs!r}")
    if not args.list and args.policy is None:
        p.error("--policy is required (or --list)")
    return args


def _shown(path: Path) -> str:
    """A checkpoint folder as the user would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    # Small networks on few cores: one torch thread is several times faster than the default.
    torch.set_num_threads(int(os.environ.get("CLOUDGYM_TORCH_THREADS", "1")))
    if args.list:
        for name, spec in policy_specs(args.env).items():
            print(f"{name:<24} {spec.kind:<9} {spec.description}")
        # Shipped agents are evaluated by their folder (compare.py finds them there too).
        for info in shipped_checkpoints(args.env):
            print(f"{_shown(info.path):<24} {'agent':<9} {info.algo}, reproduce: {info.command}")
        return []
    assert args.policy is not None
    seeds = held_out_seeds(args.episodes, args.seed_offset)
    rows = evaluate(
        args.policy,
        args.env,
        seeds,
        env_kwargs=args.env_kwargs,
        progress=True,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(f"{args.env} / {rows[0]['policy']} on {len(rows)} held-out episodes (seeds {seeds[0]}..{seeds[-1]})")
    for column in rows[0]:
        if column in ("env_id", "policy", "seed", "scenario"):
            continue
        mean, std = summarise(rows, column)
        print(f"  {column:<28} {mean:>14.6g} ± {std:.3g}")
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        results_frame(rows).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return rows
