"""Why the worst-case headroom rule beats the prototype agent: their decisions on the same states.

    python scripts/oversub_rule_vs_agent.py --agent agents/checkpoints/Oversubscription-v0/protohail --episodes 32

Rolls out one driver policy (``--driver headroom`` by default) on validation seeds
500,000.. and, on every node-hour it visits, asks the headroom rule, the agent
and the robust hindsight expert for their level. A decision above the expert's
sells more than stays cool whatever arrives (the over-shoots that make hot
windows); below it strands cores. Prints, per bucket of interactive share,
24 h peak and hour of day,
each policy's mean level, over-shoot rate and mean shortfall, and the share of
node-hours the driver ran hot next.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cloudgym.agents.oversub_imitation import act_levels
from cloudgym.agents.protohail import load_model
from cloudgym.baselines.oversubscription import Headroom, peaks, robust_hindsight_levels
from cloudgym.envs.oversubscription import COL_COS, COL_INTERACTIVE, COL_SIN
from cloudgym.evaluation import make_vector_env

VALIDATION_BASE = 500_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", type=Path, default=Path("agents/checkpoints/Oversubscription-v0/protohail"))
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--driver", choices=["headroom", "agent"], default="headroom")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, saved = load_model(args.agent)
    q = saved["risk_quantile"]
    env = make_vector_env("Oversubscription-v0", args.episodes)
    rule = Headroom(env)
    obs, _ = env.reset(seed=[VALIDATION_BASE + i for i in range(args.episodes)])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("rule", "agent", "expert", "inter", "peak", "hour", "hot")}
    for _ in range(int(env.config.hours)):
        r = rule.act(obs)
        a = act_levels(model, obs, 1.0, q)
        e = robust_hindsight_levels(env.core)  # type: ignore[arg-type]
        cols["rule"].append(r)
        cols["agent"].append(a)
        cols["expert"].append(e)
        cols["inter"].append(obs[:, :, COL_INTERACTIVE])
        cols["peak"].append(peaks(obs).max(axis=2))
        cols["hour"].append(np.round(np.arctan2(obs[:, :, COL_SIN], obs[:, :, COL_COS]) / (2 * np.pi) * 24) % 24)
        obs, _, _, _, _ = env.step(r if args.driver == "headroom" else a)
        cols["hot"].append(peaks(obs)[:, :, -1] > 1.0)
    env.close()
    d = {k: np.concatenate([x.reshape(-1) for x in v]) for k, v in cols.items()}
    ratios = np.asarray(env.config.ratios)

    def line(name: str, m: np.ndarray) -> str:
        out = f"{name:<26} n={m.sum():>7} hot-next={100 * d['hot'][m].mean():6.3f}%"
        for pol in ("rule", "agent", "expert"):
            lv = d[pol][m]
            over = (lv > d["expert"][m]).mean()
            short = np.maximum(ratios[d["expert"][m]] - ratios[lv], 0).mean()
            out += f" | {pol} ratio {ratios[lv].mean():.3f} over {100 * over:5.1f}% short {short:.3f}"
        return out

    print(f"driver {args.driver}, {args.episodes} validation episodes, {d['rule'].size} node-hours")
    print(line("all", np.ones_like(d["hot"])))
    print(line("hot next hour", d["hot"]))
    for lo, hi in ((0, 0.25), (0.25, 0.5), (0.5, 1.01)):
        print(line(f"interactive {lo}-{hi}", (d["inter"] >= lo) & (d["inter"] < hi)))
    for lo, hi in ((0, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 3)):
        print(line(f"24h peak {lo}-{hi}", (d["peak"] >= lo) & (d["peak"] < hi)))
    for lo, hi in ((0, 6), (6, 10), (10, 14), (14, 18), (18, 24)):
        print(line(f"hour {lo}-{hi}", (d["hour"] >= lo) & (d["hour"] < hi)))


if __name__ == "__main__":
    main()
