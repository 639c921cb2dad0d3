"""Paired comparison of a GPUPowerCap-v0 policy or checkpoint with POLCA on held-out seeds, per oversubscription level.

    python scripts/paired_gpu_powercap.py --policy agents/checkpoints/GPUPowerCap-v0/cem --levels 30:192 40:48
    python scripts/paired_gpu_powercap.py --knobs '{"hp": 1, "trend": 0.5}' --levels 30:192 40:48

For each ``level:episodes`` both policies play the same held-out episodes
(``held_out_seeds``, 1,000,000 and up; the uncapped reference row on) and the
script prints, per metric, both means, the mean paired difference (policy -
POLCA) with its 95% confidence interval (paired t) and the seeds on which the
policy did better, worse or the same.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import cloudgym.baselines  # noqa: F401  (registers POLCA)
from cloudgym.agents import gpu_powercap_shield as sh
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "GPUPowerCap-v0"
METRICS = ("powerbrakes", "hp_throughput_loss_pct", "lp_throughput_loss_pct", "peak_power_pct", "capped_pct")


def paired(mine: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Means, mean paired difference with its 95% paired-t interval, and seeds won/lost/tied (lower is better)."""
    d = mine - theirs
    n = d.size
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {
        "mine": float(mine.mean()),
        "polca": float(theirs.mean()),
        "diff": float(d.mean()),
        "ci_low": float(d.mean() - half),
        "ci_high": float(d.mean() + half),
        "won": int((d < 0).sum()),
        "lost": int((d > 0).sum()),
        "tied": int((d == 0).sum()),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=None, help="registered policy name or checkpoint folder")
    parser.add_argument(
        "--knobs", default=None, help="instead of --policy: JSON overrides of POLCA's knobs for the shielded controller"
    )
    parser.add_argument("--levels", nargs="+", default=["30:192"], help="level%%:episodes pairs, e.g. 30:192")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if (args.policy is None) == (args.knobs is None):
        parser.error("give exactly one of --policy and --knobs")
    policy: Any = args.policy
    if args.knobs is not None:
        params = {**sh.POLCA, **json.loads(args.knobs)}

        def shielded(env: CloudGymVectorEnv) -> sh.ShieldedCapper:
            return sh.ShieldedCapper(env, params)

        policy = shielded

    torch.set_num_threads(1)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for spec in args.levels:
        level, episodes = (int(x) for x in spec.split(":"))
        kwargs = {"oversubscription": level / 100.0, "track_reference": True}
        seeds = held_out_seeds(episodes)
        started = time.time()
        mine = evaluate(policy, ENV_ID, seeds, env_kwargs=kwargs)
        polca = evaluate("polca", ENV_ID, seeds, env_kwargs=kwargs)
        key = f"+{level}%"
        out[key] = {}
        print(f"{key}: {episodes} held-out episodes (seeds {seeds[0]}..{seeds[-1]}), {time.time() - started:.0f}s")
        for m in METRICS:
            a = np.array([r[m] for r in mine], np.float64)
            b = np.array([r[m] for r in polca], np.float64)
            res = paired(a, b)
            if m == "powerbrakes":
                res["episodes_braked_mine"] = int((a > 0).sum())
                res["episodes_braked_polca"] = int((b > 0).sum())
            out[key][m] = res
            print(
                f"  {m:24s} policy {res['mine']:8.4f}  POLCA {res['polca']:8.4f}  diff {res['diff']:+.4f} "
                f"[{res['ci_low']:+.4f}, {res['ci_high']:+.4f}]  "
                f"better/worse/same {res['won']}/{res['lost']}/{res['tied']}",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
