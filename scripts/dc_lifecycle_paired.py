"""Paired table of DCLifecycle-v0 policies: TCO + unserved penalty per seed, as ratios to the baseline policy.

    python scripts/dc_lifecycle_paired.py --episodes 64 --scenario realistic \
        --policies baseline co_optimising mpc perfect_foresight agents/checkpoints/DCLifecycle-v0/ppo_bc_realistic \
        --out /tmp/dc_paired.json [--vs co_optimising mpc]

Every policy runs the same held-out seeds (``held_out_seeds(n)``: 1,000,000
on); per-seed rows are cached in ``--out`` (a policy already there is not
re-run), so the slow perfect-foresight plan is solved once. For each policy:
the mean of per-seed ratios of TCO and of TCO + penalty to the baseline's
(+- standard error), and its unserved share; for each ``--vs`` policy, the
mean paired difference of (TCO + penalty) / baseline's against it, its 95%
CI (paired t) and the seeds won.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "DCLifecycle-v0"


@dataclasses.dataclass
class Args:
    episodes: int = 64
    scenario: str = "realistic"
    policies: list[str] = dataclasses.field(default_factory=lambda: ["baseline", "co_optimising", "mpc"])
    vs: list[str] = dataclasses.field(default_factory=list)
    out: Path = Path("/tmp/dc_paired.json")
    env_kwargs: str = "{}"


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[float]]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--scenario", default="realistic")
    p.add_argument("--policies", nargs="+", default=["baseline", "co_optimising", "mpc"])
    p.add_argument("--vs", nargs="*", default=[], help="policies every other one is compared with, paired")
    p.add_argument("--out", type=Path, default=Path("/tmp/dc_paired.json"))
    p.add_argument("--env-kwargs", default="{}", help="JSON of config fields over the scenario's")
    args = Args(**vars(p.parse_args(argv)))
    seeds = held_out_seeds(args.episodes)
    env_kwargs = {"scenario": args.scenario, **json.loads(args.env_kwargs)}
    cache: dict[str, dict[str, list[float]]] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for policy in ["baseline", *args.policies]:
        name = Path(policy).name
        if name in cache and len(cache[name]["total"]) == len(seeds):
            continue
        started = time.time()
        rows = evaluate(policy, ENV_ID, seeds, env_kwargs=env_kwargs, trust_checkpoint=True)
        cache[name] = {
            "tco": [float(r["tco_usd"]) for r in rows],
            "total": [float(r["tco_usd"] + r["cost_unserved_penalty_usd"]) for r in rows],
            "unserved_share": [float(r["unserved_share"]) for r in rows],
        }
        args.out.write_text(json.dumps(cache))
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    base_tco, base_total = np.array(cache["baseline"]["tco"]), np.array(cache["baseline"]["total"])
    print(f"| policy | TCO / baseline | (TCO + penalty) / baseline | unserved share |  ({len(seeds)} seeds)")
    print("|---|---|---|---|")
    for policy in ["baseline", *args.policies]:
        row = cache[Path(policy).name]
        tco, total = np.array(row["tco"]) / base_tco, np.array(row["total"]) / base_total
        sem = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
        print(
            f"| {Path(policy).name} | {tco.mean():.4f} +- {sem(tco):.4f} | {total.mean():.4f} +- {sem(total):.4f} "
            f"| {np.mean(row['unserved_share']):.4f} |"
        )
    for ref in args.vs:
        ref_total = np.array(cache[ref]["total"]) / base_total
        for policy in args.policies:
            name = Path(policy).name
            if name == ref:
                continue
            diff = np.array(cache[name]["total"]) / base_total - ref_total
            half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
            print(
                f"{name} - {ref}: {diff.mean():+.4f} (95% CI {diff.mean() - half:+.4f} .. {diff.mean() + half:+.4f}),"
                f" {int((diff < 0).sum())}/{len(diff)} seeds won"
            )
    return cache


if __name__ == "__main__":
    main()
