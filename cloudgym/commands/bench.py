"""Benchmark every env at its default config, in interleaved windows that hold on a shared machine.

    python scripts/bench.py                        # the README's figures (add --sb3-share)
    python scripts/bench.py --sb3-share            # + SB3 PPO's share of wall time in env.step
    python scripts/bench.py --env ToyCluster-v0 --batch 1 8 --quick --json bench.json   # the test's run

Every comparison records the actions once (seeded random admissible policy),
then alternates short windows (``--window`` s) of the contenders over the same
actions for ``--rounds`` rounds, and prints the median window throughput of
each (``+-`` half the range of its windows, in %) and the median per-round
ratio (``cloudgym.benchmarks``). Sections:

1. Throughput at each ``--batch`` B, default config: env-steps/s of the native
   vector env, of ``gymnasium.vector.SyncVectorEnv`` over B single envs and of
   the SB3 adapter. A smaller row an env registers
   (``register_throughput_config``) is measured beside it, labelled.
2. Setup and kernels: ``make_vec(num_envs=--setup-batch)`` + ``reset`` seconds,
   the first in a fresh process; then the native env with the compiled
   kernels against the numpy reference path (``CLOUDGYM_KERNELS=numpy``, read
   when an env is imported or built), each path in its own long-lived worker
   process, windows alternating over a pipe, at each ``--kernels-batch``.
   Where an env has no kernels, the ratio reads ~1.0x.
3. Scaling: Oversubscription's time per node-step at 16/32/64/128 nodes
   (``num_nodes``) at ``--scaling-batch``, and the 128/16 ratio.
4. ``--sb3-share``: the share of SB3 PPO's wall time spent in env.step
   (MaskablePPO where the env has masks, each env's
   ``agents/hyperparams/<env>.yaml``, ``--sb3-steps`` steps, one torch thread).
5. ``--rllib`` (needs the ``rllib`` extra): env steps/s one RLlib env runner
   samples with the native vector env and with SyncVectorEnv.
6. Each env's own benchmarks (long replays at trace scale), unless ``--no-extras``.

``--quick`` shortens everything not given explicitly (windows, rounds, setup
and kernel batch = the largest ``--batch``, two scaling sizes at B=8, SB3
steps, the env benchmarks at small scale): for tests, not for figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import cloudgym
from cloudgym.benchmarks import (
    KERNELS_ENV_VAR,
    SCALING,
    Series,
    benchmarks,
    kernel_comparison,
    machine,
    node_scaling,
    peak_rss_mb,
    record,
    sb3_step_share,
    throughput_config,
    vector_throughput,
)


@dataclasses.dataclass
class Args:
    env: list[str]
    batch: list[int]
    window: float
    rounds: int
    setup_batch: int
    kernels_batch: list[int]
    kernels: bool
    scaling_batch: int
    scaling: bool
    sb3_share: bool
    sb3_steps: int
    seconds: float
    json: Path | None
    extras: bool
    quick: bool
    rllib: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", default=list(cloudgym.ALL_ENV_IDS), choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--batch", nargs="+", type=int, default=[1, 64, 1024], help="batch sizes B (default 1 64 1024)")
    p.add_argument("--window", type=float, help="seconds per window (default 0.3; quick 0.05)")
    p.add_argument("--rounds", type=int, help="windows per contender (default 7; quick 3)")
    p.add_argument("--setup-batch", type=int, help="B of the make_vec + reset column (default 1024)")
    p.add_argument("--kernels-batch", nargs="+", type=int, help="B of kernels vs numpy path (default 64 1024)")
    p.add_argument("--no-kernels", dest="kernels", action="store_false", help="skip setup and kernels vs numpy")
    p.add_argument("--scaling-batch", type=int, help="B of the node-scaling sweep (default 256; quick 8)")
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the node-scaling sweep")
    p.add_argument("--sb3-share", action="store_true", help="also SB3 PPO's share of wall time in env.step")
    p.add_argument("--sb3-steps", type=int, help="PPO steps per env for --sb3-share (default 20000; quick 2000)")
    p.add_argument("--seconds", type=float, default=2.0, help="time budget per RLlib measurement")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--no-extras", dest="extras", action="store_false", help="skip the envs' own benchmarks")
    p.add_argument("--quick", action="store_true", help="short windows, small sizes (for tests, not for figures)")
    p.add_argument("--rllib", action="store_true", help="also RLlib sampling per env runner: native vs sync")
    ns = p.parse_args(argv)
    if any(b < 1 for b in ns.batch):
        p.error(f"--batch sizes must be >= 1, got {ns.batch}")
    quick = ns.quick
    ns.window = ns.window or (0.05 if quick else 0.3)
    ns.rounds = ns.rounds or (3 if quick else 7)
    ns.setup_batch = ns.setup_batch or (max(ns.batch) if quick else 1024)
    ns.kernels_batch = ns.kernels_batch or ([max(ns.batch)] if quick else [64, 1024])
    ns.scaling_batch = ns.scaling_batch or (8 if quick else 256)
    ns.sb3_steps = ns.sb3_steps or (2000 if quick else 20_000)
    for name in ("setup_batch", "scaling_batch", "sb3_steps", "rounds"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
    if ns.window <= 0:
        p.error(f"--window must be > 0 s, got {ns.window}")
    if any(b < 1 for b in ns.kernels_batch):
        p.error(f"--kernels-batch sizes must be >= 1, got {ns.kernels_batch}")
    return Args(**vars(ns))


def rate(series: dict[str, Any]) -> str:
    """A median env-steps/s with the spread of its windows: '1,234,567 +-3%'."""
    return f"{series['median']:,.0f} +-{100 * series['spread']:.0f}%"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_1min']}, "
        f"Python {info['python']}, numpy {info['numpy']}"
    )
    print(f"{args.rounds} alternating windows of {args.window} s per contender; medians, +- half the window range\n")

    # 1. Native vs SyncVectorEnv vs SB3 adapter, default configs (and a registered smaller row beside).
    header = (
        f"{'env':<22} {'config':<10} {'B':>5} {'native env-steps/s':>22} {'SyncVectorEnv':>18} {'ratio':>8} "
        f"{'SB3 adapter':>20} {'SB3/nat':>7}"
    )
    print(header + "\n" + "-" * len(header))
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    kept: dict[str, dict[int, Any]] = {}
    for env_id in args.env:
        extra = throughput_config(env_id)
        configs: list[tuple[str, dict[str, Any]]] = [("default", {})]
        if extra is not None:
            configs.append(("registered", dict(extra.env_kwargs)))
            notes.append(f"{env_id} 'registered': {dict(extra.env_kwargs)}: {extra.reason}")
        for label, kwargs in configs:
            for b in args.batch:
                r, rec = vector_throughput(env_id, b, window_s=args.window, rounds=args.rounds, env_kwargs=kwargs)
                if label == "default" and b in args.kernels_batch:
                    kept.setdefault(env_id, {})[b] = rec
                rows.append({"env_id": env_id, "config": label, "env_kwargs": kwargs, "batch": b, **r})
                print(
                    f"{env_id:<22} {label:<10} {b:>5} {rate(r['native']):>22} {rate(r['sync']):>18} "
                    f"{r['ratio']:>7.1f}x {rate(r['sb3']):>20} {r['sb3_vs_native']:>6.2f}x",
                    flush=True,
                )
    for note in notes:
        print(f"  * {note}")

    # 2. make_vec + reset in a fresh process, and the kernels against the numpy path.
    kernel_rows: list[dict[str, Any]] = []
    if args.kernels:
        print(
            f"\nSetup (make_vec(num_envs={args.setup_batch}) + reset, first in a fresh process) and native env "
            f"with kernels vs {KERNELS_ENV_VAR}=numpy, default configs"
        )
        header = (
            f"{'env':<22} {'setup s':>8} {'numpy path':>11} {'B':>5} {'kernels env-steps/s':>22} "
            f"{'numpy path':>18} {'ratio':>7}"
        )
        print(header + "\n" + "-" * len(header))
        for env_id in args.env:
            recordings = [
                kept.get(env_id, {}).get(b) or record(env_id, b, window_s=args.window, rounds=args.rounds)
                for b in args.kernels_batch
            ]
            k = kernel_comparison(
                env_id, recordings, setup_batch=args.setup_batch, window_s=args.window, rounds=args.rounds
            )
            kernel_rows.append(k)
            setup = k["setup"]
            for i, row in enumerate(k["rows"]):
                lead = (
                    f"{env_id:<22} {setup['kernels']['make_reset_s']:>8.2f} {setup['numpy']['make_reset_s']:>11.2f}"
                    if i == 0
                    else " " * 43
                )
                print(
                    f"{lead} {row['batch']:>5} {rate(row['kernels']):>22} {rate(row['numpy']):>18} "
                    f"{row['ratio']:>6.2f}x",
                    flush=True,
                )

    # 3. Time per node-step against the number of nodes.
    scaling_rows: list[dict[str, Any]] = []
    if args.scaling:
        for spec in SCALING:
            if spec.env_id not in args.env:
                continue
            values = spec.values[:2] if args.quick else spec.values
            s = node_scaling(spec, args.scaling_batch, values=values, window_s=args.window, rounds=args.rounds)
            scaling_rows.append(s)
            print(f"\n{spec.env_id}: time per {spec.unit}-step against {spec.field}, B={args.scaling_batch}")
            for row in s["rows"]:
                per = Series(windows=tuple(row["seconds_per_unit_step"]["windows"]))
                print(f"  {spec.field}={row['value']:<5} {1e9 * per.median:>9,.0f} ns +-{100 * per.spread:.0f}%")
            hi, lo = s["ratio_of"]
            print(f"  {hi}/{lo}: {s['ratio']:.2f}x", flush=True)

    # 4. SB3 PPO's share of wall time in env.step.
    share_rows: list[dict[str, Any]] = []
    if args.sb3_share:
        header = (
            f"{'env':<22} {'algo':<12} {'steps':>7} {'wall s':>8} {'env.step s':>10} {'step share':>10} "
            f"{'env share':>9}"
        )
        print(f"\nSB3 share of wall time in env.step (own hyperparameters, one torch thread)\n{header}")
        print("-" * len(header))
        for env_id in args.env:
            r = sb3_step_share(env_id, timesteps=args.sb3_steps)
            share_rows.append(r)
            print(
                f"{env_id:<22} {r['algo']:<12} {r['timesteps']:>7} {r['wall_s']:>8.1f} {r['step_s']:>10.1f} "
                f"{100 * r['step_share']:>9.0f}% {100 * r['env_share']:>8.0f}%",
                flush=True,
            )

    # 5. RLlib sampling (optional extra).
    rllib_rows = []
    if args.rllib:
        from cloudgym.benchmarks import rllib_sampling_throughput

        header = f"{'env':<22} {'B':>5} {'RLlib native steps/s':>21} {'RLlib sync steps/s':>19} {'ratio':>7}"
        print(f"\nRLlib sampling, one env runner (PPO module, explore=True)\n{header}\n" + "-" * len(header))
        for env_id in args.env:
            for b in args.batch:
                r = rllib_sampling_throughput(env_id, b, seconds=args.seconds)
                rllib_rows.append({"env_id": env_id, "batch": b, **r})
                print(
                    f"{env_id:<22} {b:>5} {r['rllib_native_steps_per_s']:>21,.0f} "
                    f"{r['rllib_sync_steps_per_s']:>19,.0f} {r['rllib_ratio']:>6.1f}x",
                    flush=True,
                )

    # 6. Each env's own benchmarks.
    extras = []
    if args.extras:
        for bench in benchmarks(args.env):
            print(f"\n{bench.env_id} / {bench.name}: {bench.description}", flush=True)
            result = dict(bench.run(args.quick))
            for key, value in result.items():
                print(f"  {key}: {value:,.4g}" if isinstance(value, float) else f"  {key}: {value}")
            extras.append({"env_id": bench.env_id, "name": bench.name, **result})

    settings = {k: v for k, v in dataclasses.asdict(args).items() if k != "json"}
    out: dict[str, Any] = {
        "machine": info,
        "settings": settings,
        "throughput": rows,
        "kernels": kernel_rows,
        "scaling": scaling_rows,
        "sb3_share": share_rows,
        "benchmarks": extras,
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.rllib:
        out["rllib_sampling"] = rllib_rows
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return out
