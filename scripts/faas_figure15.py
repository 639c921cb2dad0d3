"""FaaSKeepAlive-v0: the paper's Figure 15 on held-out apps, and the shipped agent against the best baselines.

    python scripts/faas_figure15.py --apps 1024

Runs fixed keep-alive 10-120 min, no unloading, hybrid 1-4 h, the hindsight
oracle and the shipped agent (``--agent``) on the same held-out apps
(``held_out_seeds``, one app per seed, default scenario) and prints, per
policy, the p75 app cold-start %, the wasted memory time normalised to fixed
10 min as the paper normalises it (loaded idle minutes summed over apps;
``paper_points``) and memory-weighted (GB-min), and the mean return. Then
the agent against the best fixed and the best hybrid policy by mean return:
mean paired difference per app, 95% CI (paired t), apps won, and the
difference as a share of the baseline's |return|.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cloudgym.agents.checkpoints import CHECKPOINT_ROOT
from cloudgym.baselines.faas_keepalive import FIXED_KEEPALIVE_MIN, HYBRID_RANGES_MIN, paper_points
from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "FaaSKeepAlive-v0"


@dataclasses.dataclass
class Args:
    apps: int
    agent: Path
    first_seed: int | None


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", type=int, default=1024, help="held-out apps (one per seed)")
    p.add_argument("--agent", type=Path, default=CHECKPOINT_ROOT / ENV_ID / "hazard_mlp", help="checkpoint folder")
    p.add_argument("--first-seed", type=int, default=None, help="seeds first..first+apps (default: held-out seeds)")
    args = Args(**vars(p.parse_args(argv)))
    seeds = (
        held_out_seeds(args.apps)
        if args.first_seed is None
        else np.arange(args.first_seed, args.first_seed + args.apps)
    )
    names = [f"fixed_{m}" for m in FIXED_KEEPALIVE_MIN] + ["no_unload"]
    names += [f"hybrid_{r // 60}h" for r in HYBRID_RANGES_MIN] + ["oracle"]
    rows = []
    started = time.time()
    for name in names:
        rows += evaluate(name, ENV_ID, seeds)
        print(f"{name}: {time.time() - started:.0f}s", flush=True)
    rows += evaluate(args.agent, ENV_ID, seeds, policy_name="agent")
    frame = pd.DataFrame(rows)
    points = paper_points(frame).set_index("policy")
    print(f"\n{args.apps} apps, seeds {int(seeds[0])}.., {time.time() - started:.0f}s\n")
    print("| policy | p75 app cold-start % | WMT % of fixed_10 (paper: idle minutes) | WMT (GB-min) | mean return |")
    print("|---|---|---|---|---|")
    for name, row in points.iterrows():
        print(
            f"| {name} | {row['p75_cold_start_pct']:.1f} | {row['wmt_pct_of_fixed10']:.0f} | "
            f"{row['wmt_gb_pct_of_fixed10']:.0f} | {row['mean_return']:.3f} |"
        )
    ret = frame.pivot(index="seed", columns="policy", values="return")
    for family in ("fixed_", "hybrid_"):
        cands = [c for c in ret.columns if c.startswith(family)]
        best = max(cands, key=lambda c: float(ret[c].mean()))
        diff = (ret["agent"] - ret[best]).to_numpy()
        half = stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size)
        base = abs(float(ret[best].mean()))
        low, high = diff.mean() - half, diff.mean() + half
        print(
            f"agent - {best}: {diff.mean():+.4f} per app (95% CI {low:+.4f} .. {high:+.4f}), "
            f"{100.0 * diff.mean() / base:+.1f}% of |{best}| = {base:.4f} "
            f"(CI {100.0 * low / base:+.1f}% .. {100.0 * high / base:+.1f}%), "
            f"apps won {int((diff > 0).sum())} / tied {int((diff == 0).sum())} / lost {int((diff < 0).sum())}"
        )
    return frame


if __name__ == "__main__":
    main()
