"""Choose GPUPowerCap-v0's shielded capping controller by the tail of its brakes, then its losses; ship it.

    python scripts/train_gpu_powercap_shield.py [--name shielded] [--ship]

1. Training episodes (seeds 300,000 + i): ``envs`` vector envs, each a
   random scenario (+20..+40% servers; load level, volatility, time
   constant and ramp drawn around the env's defaults), ``episodes_per_env``
   episodes each. Every candidate of the grid (POLCA's own knobs first)
   plays all of them. A candidate passes if it brakes no more than POLCA in
   the episodes at or below +30% and in all of them, and the mean of the 5%
   highest episode peaks at or below +30% (CVaR) is at most POLCA's plus
   ``cvar_slack``.
2. Validation (seeds 500,000 + i, +30%, uncapped reference row on): the
   candidates that passed play ``validation_episodes`` beside POLCA; the one
   with the least low-priority throughput loss among those that lose less
   than POLCA in both classes (paired means) and never brake ships. Held-out
   seeds (1,000,000 and up) are never used.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cloudgym
from cloudgym.agents import gpu_powercap_shield as sh
from cloudgym.agents.checkpoints import reproduce_command, safe_name, ship, write_metadata
from cloudgym.agents.gpu_powercap_forecast import random_training_scenario
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import evaluate

ENV_ID = sh.ENV_ID
SHIELD = {"shield_gain": 1.0, "shield_lp": 5, "shield_hp": 2}
"""The shield of the shielded candidate: extrapolate the 40-s rise once; LP to 1110 MHz, HP to 1305 MHz at least
(deeper shields, LP to 900 MHz, braked more on validation: the prefill backlog a deep cap builds rebounds when
it lifts)."""
GRID: tuple[Mapping[str, float], ...] = (
    {},  # POLCA
    {"hp": 1},
    {"hp": 1, "hysteresis": 0.03},
    {"hp": 1, "hysteresis": 0.03, "trend": 0.3},
    {"hp": 1, "hysteresis": 0.03, "trend": 0.6, "t2": 0.90},
    {"hp": 1, "trend": 0.5},
    {"hp": 1, "trend": 0.5, "t1": 0.82},
    {"hp": 1, "hysteresis": 0.04, "trend": 0.5, "t2": 0.90},
    {"hp": 1, "hysteresis": 0.03, "trend": 0.3, **SHIELD, "shield_at": 0.98},
)
"""Candidates: overrides of POLCA's knobs (sh.POLCA)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Args:
    envs: int = 6
    """Training vector envs, each one random scenario."""
    episodes_per_env: int = 32
    """Training episodes per vector env."""
    validation_episodes: int = 48
    """Validation episodes at +30%."""
    cvar_slack: float = 0.3
    """How far (points of the budget) a candidate's peak CVaR may exceed POLCA's on the training episodes."""


def factory(params: Mapping[str, Any]) -> Any:
    def build(env: CloudGymVectorEnv) -> sh.ShieldedCapper:
        return sh.ShieldedCapper(env, params)

    return build


def column(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    return np.array([r[name] for r in rows], np.float64)


def cvar(values: np.ndarray, share: float = 0.05) -> float:
    top = np.sort(values)[::-1]
    return float(top[: max(1, int(len(top) * share))].mean())


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", type=safe_name, default="shielded", help="run name")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training scenarios and episodes")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="runs folder")
    parser.add_argument("--ship", action="store_true", help="copy the checkpoint into agents/checkpoints")
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    cli = parser.parse_args(argv)
    torch.set_num_threads(1)
    args = Args()
    grid = GRID
    if cli.quick:
        args = Args(envs=1, episodes_per_env=2, validation_episodes=2, cvar_slack=100.0)
        grid = GRID[:2]
    rng = np.random.default_rng(cli.seed)
    started = time.time()
    scenarios = [random_training_scenario(rng) for _ in range(args.envs)]
    candidates = [{**sh.POLCA, **g} for g in grid]

    # 1. Training episodes: the tail of the brakes and of the peak power.
    train: list[dict[str, Any]] = []
    for i, params in enumerate(candidates):
        brakes, peaks, low = [], [], []
        for e, kwargs in enumerate(scenarios):
            first = 300_000 + cli.seed * 10_000 + e * args.episodes_per_env
            rows = evaluate(factory(params), ENV_ID, range(first, first + args.episodes_per_env), env_kwargs=kwargs)
            brakes.append(column(rows, "powerbrakes"))
            peaks.append(column(rows, "peak_power_pct"))
            low.append(np.full(len(rows), kwargs["oversubscription"] <= 0.3))
        b, pk, lo = np.concatenate(brakes), np.concatenate(peaks), np.concatenate(low)
        entry = {
            "candidate": i,
            "brakes": float(b.sum()),
            "brakes_at_or_below_30": float(b[lo].sum()),
            "peak_cvar_at_or_below_30": cvar(pk[lo]) if lo.any() else float("nan"),
        }
        train.append(entry)
        print(f"train {i} {dict(grid[i])}: {entry} ({time.time() - started:.0f}s)", flush=True)
    polca = train[0]
    passed = [
        e["candidate"]
        for e in train
        if e["brakes_at_or_below_30"] <= polca["brakes_at_or_below_30"]
        and e["brakes"] <= polca["brakes"]
        and not e["peak_cvar_at_or_below_30"] > polca["peak_cvar_at_or_below_30"] + args.cvar_slack
    ]
    train_episodes = len(candidates) * args.envs * args.episodes_per_env

    # 2. Validation at +30% with the reference row: losses, paired with POLCA.
    seeds = [500_000 + i for i in range(args.validation_episodes)]
    kwargs30 = {"oversubscription": 0.3, "track_reference": True}
    ref = evaluate(factory(candidates[0]), ENV_ID, seeds, env_kwargs=kwargs30)
    ref_hp, ref_lp = (
        float(column(ref, "hp_throughput_loss_pct").mean()),
        float(column(ref, "lp_throughput_loss_pct").mean()),
    )
    validation: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    for i in passed:
        rows = ref if i == 0 else evaluate(factory(candidates[i]), ENV_ID, seeds, env_kwargs=kwargs30)
        hp, lp = column(rows, "hp_throughput_loss_pct").mean(), column(rows, "lp_throughput_loss_pct").mean()
        entry = {
            "candidate": i,
            "brakes": float(column(rows, "powerbrakes").sum()),
            "hp_loss": float(hp),
            "lp_loss": float(lp),
            "peak_max": float(column(rows, "peak_power_pct").max()),
        }
        validation.append(entry)
        print(f"validation {i}: {entry}", flush=True)
        ok = entry["brakes"] == 0 and (i == 0 or (hp < ref_hp and lp < ref_lp))
        if ok and (best is None or lp < best[0]):
            best = (lp, i)
    chosen = 0 if best is None else best[1]
    params = candidates[chosen]
    elapsed = time.time() - started
    run_dir = cli.out / ENV_ID / cli.name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_metadata(
        run_dir,
        {
            "env_id": ENV_ID,
            "name": cli.name,
            "loader": sh.LOADER,
            "algo": "grid selection on the tail of the brakes (training) and the losses (validation)",
            "command": reproduce_command("python scripts/train_gpu_powercap_shield.py", argv).strip(),
            "scenario": "+20..+40% (randomised load shapes) for the tail; +30% for the losses",
            "seed": cli.seed,
            "timesteps": train_episodes * 150,
            "env_kwargs": {},
            "hyperparams": {**dataclasses.asdict(args), "grid": [dict(g) for g in grid]},
            "params": {k: float(v) for k, v in params.items()},
            "chosen_candidate": chosen,
            "train_seconds": round(elapsed, 1),
            "training_scenarios": scenarios,
            "training": train,
            "validation": validation,
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__},
        },
    )
    print(f"{ENV_ID} shielded: {train_episodes} training episodes, {elapsed:.0f}s -> {run_dir}; chose {chosen}")
    if cli.ship:
        ship(run_dir, cli.name)
    return run_dir


if __name__ == "__main__":
    main()
