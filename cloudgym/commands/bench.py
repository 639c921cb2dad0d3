"""Benchmark every env: native batched env vs gymnasium's SyncVectorEnv, side by side in one run.

    python scripts/bench.py [--env ID ...] [--batch 1 64 1024] [--json FILE] [--rllib]

For each env and batch size B: env-steps/s (sub-env steps) of the native
vector env, of ``gymnasium.vector.SyncVectorEnv`` over B single envs measured
in the same run on the same trajectories, their ratio, and the SB3 adapter's
env-steps/s. An env may register a smaller config for this table
(``cloudgym.benchmarks.register_throughput_config``); the table then says
which and why. Then each env's own benchmarks (long replays at trace scale),
unless ``--no-extras``. With ``--rllib`` (needs the ``rllib`` extra), also
the env steps/s one RLlib env runner samples (PPO's RLModule, RLlib's episode
bookkeeping) with B sub-envs as the native vector env and as SyncVectorEnv
over B single envs, side by side. The README's figures come from this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import cloudgym
from cloudgym.benchmarks import benchmarks, machine, peak_rss_mb, throughput_config, vector_throughput


@dataclasses.dataclass
class Args:
    env: list[str]
    batch: list[int]
    seconds: float
    json: Path | None
    extras: bool
    quick: bool
    rllib: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", default=list(cloudgym.ALL_ENV_IDS), choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--batch", nargs="+", type=int, default=[1, 64, 1024], help="batch sizes B")
    p.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--no-extras", dest="extras", action="store_false", help="skip the envs' own benchmarks")
    p.add_argument("--quick", action="store_true", help="env benchmarks at a small scale (for tests)")
    p.add_argument("--rllib", action="store_true", help="also RLlib sampling per env runner: native vs sync")
    return Args(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if any(b < 1 for b in args.batch):
        raise SystemExit("--batch sizes must be >= 1")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}")
    header = f"{'env':<22} {'B':>5} {'native steps/s':>15} {'sync steps/s':>13} {'ratio':>7} {'sb3 steps/s':>12}"
    print(header)
    print("-" * len(header))
    rows = []
    notes = []
    for env_id in args.env:
        config = throughput_config(env_id)
        if config.env_kwargs:
            notes.append(f"{env_id}: measured with {dict(config.env_kwargs)}: {config.reason}")
        for b in args.batch:
            r = vector_throughput(env_id, b, seconds=args.seconds, env_kwargs=config.env_kwargs)
            rows.append({"env_id": env_id, "batch": b, "env_kwargs": dict(config.env_kwargs), **r})
            print(
                f"{env_id:<22} {b:>5} {r['native_steps_per_s']:>15,.0f} {r['sync_steps_per_s']:>13,.0f} "
                f"{r['ratio']:>6.1f}x {r['sb3_steps_per_s']:>12,.0f}",
                flush=True,
            )
    for note in notes:
        print(f"  * {note}")
    rllib_rows = []
    if args.rllib:
        from cloudgym.benchmarks import rllib_sampling_throughput

        header = f"{'env':<22} {'B':>5} {'RLlib native steps/s':>21} {'RLlib sync steps/s':>19} {'ratio':>7}"
        print(f"\nRLlib sampling, one env runner (PPO module, explore=True)\n{header}\n" + "-" * len(header))
        for env_id in args.env:
            for b in args.batch:
                r = rllib_sampling_throughput(
                    env_id, b, seconds=args.seconds, env_kwargs=throughput_config(env_id).env_kwargs
                )
                rllib_rows.append({"env_id": env_id, "batch": b, **r})
                print(
                    f"{env_id:<22} {b:>5} {r['rllib_native_steps_per_s']:>21,.0f} "
                    f"{r['rllib_sync_steps_per_s']:>19,.0f} {r['rllib_ratio']:>6.1f}x",
                    flush=True,
                )
    extras = []
    if args.extras:
        for bench in benchmarks(args.env):
            print(f"\n{bench.env_id} / {bench.name}: {bench.description}", flush=True)
            result = dict(bench.run(args.quick))
            for key, value in result.items():
                print(f"  {key}: {value:,.4g}" if isinstance(value, float) else f"  {key}: {value}")
            extras.append({"env_id": bench.env_id, "name": bench.name, **result})
    out = {"machine": info, "throughput": rows, "benchmarks": extras, "peak_rss_mb": peak_rss_mb()}
    if args.rllib:
        out["rllib_sampling"] = rllib_rows
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    return out
