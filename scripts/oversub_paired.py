"""Paired comparison of Oversubscription-v0 policies on held-out seeds: saved cores and hot node-windows.

    python scripts/oversub_paired.py --episodes 256 \\
        agents/checkpoints/Oversubscription-v0/protohail_rule headroom static_1.2

Runs every policy (a registered baseline name or a checkpoint folder) on the
first ``--episodes`` held-out seeds (1,000,000..), then prints each one's mean
saved cores and hot node-windows per episode (and their total), and for the
first policy against each other one the mean paired difference with a 95%
paired-t interval and a 95% bootstrap interval (10,000 resamples of seeds),
and the seeds won / lost.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import stats

from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "Oversubscription-v0"


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> str:
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    boot = rng.choice(d, (10_000, len(d))).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return (
        f"{d.mean():+.4f} (t 95% CI {d.mean() - half:+.4f}..{d.mean() + half:+.4f}; "
        f"bootstrap {lo:+.4f}..{hi:+.4f}; won {(d > 0).sum()}, lost {(d < 0).sum()}, tied {(d == 0).sum()})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policies", nargs="+", help="baseline names or checkpoint folders; the first is compared to each")
    p.add_argument("--episodes", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = held_out_seeds(args.episodes)
    results = {}
    for name in args.policies:
        rows = evaluate(name, ENV_ID, seeds)
        results[name] = {
            k: np.array([float(r[k]) for r in rows]) for k in ("saved_cores", "hot_node_windows", "rejected_core_hours")
        }
        r = results[name]
        print(
            f"{name}: saved cores {r['saved_cores'].mean():.2f}, hot / episode {r['hot_node_windows'].mean():.4f} "
            f"(total {int(r['hot_node_windows'].sum())}), rejected core-hours {r['rejected_core_hours'].mean():.0f}",
            flush=True,
        )
    first = args.policies[0]
    rng = np.random.default_rng(0)
    for other in args.policies[1:]:
        for k in ("saved_cores", "hot_node_windows"):
            print(f"{first} - {other}, {k}: {paired(results[first][k], results[other][k], rng)}")
        hot = results[other]["hot_node_windows"].mean() / max(results[first]["hot_node_windows"].mean(), 1e-12)
        print(f"{other} hot / {first} hot = {hot:.1f}x")


if __name__ == "__main__":
    main()
