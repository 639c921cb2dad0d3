"""Train any cloudgym env with Ray RLlib, on this machine or on an existing Ray cluster.

    python scripts/train_rllib.py --env ToyCluster-v0 --algo PPO --timesteps 20000
    python scripts/train_rllib.py --env ToyCluster-v0 --address auto --num-env-runners 8 --envs-per-runner 64
    tensorboard --logdir runs

Without ``--address`` a small local Ray instance is started (and stopped);
``--address auto`` or ``HOST:PORT`` joins a running cluster, whose nodes must
have cloudgym installed (``pip install 'cloudgym[rllib]'``). Each of the
``--num-env-runners`` env runners (0: sample in this process) builds the
env's native vector env of ``--envs-per-runner`` sub-envs through its
registered ``vector_entry_point``. Masked envs (action masks) train with a
masking RLModule for PPO and APPO. Hyperparameters: cloudgym.agents.rllib's
defaults per algorithm, overridden by a ``rllib-<ALGO>`` section of
``agents/hyperparams/<env>.yaml`` and then by ``--set key=value``.

The run folder ``<out>/<env>/<name>/`` receives TensorBoard events (tags
``eval/return``, ``eval/<metric>`` as in SB3 runs and compare.py,
``rollout/ep_rew_mean``), ``rl_module/`` and ``checkpoint.yaml``, which
``scripts/evaluate.py --policy <run folder>`` and compare.py load;
``--ship`` copies it into ``agents/checkpoints/<env>/<name>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

import cloudgym
from cloudgym.agents import rllib
from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, reproduce_command, safe_name, write_metadata
from cloudgym.cli import yaml_mapping


@dataclasses.dataclass
class Args:
    env: str
    algo: str = "PPO"
    address: str | None = None
    num_env_runners: int = 1
    envs_per_runner: int | None = None
    timesteps: int | None = None
    seed: int = 0
    out: Path = Path("runs")
    name: str | None = None
    eval_freq: int | None = None
    eval_episodes: int | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    set: list[str] = dataclasses.field(default_factory=list)
    hyperparams: Path | None = None
    ship: bool = False


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--algo", default="PPO", choices=list(rllib.ALGORITHMS))
    p.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local one)")
    p.add_argument("--num-env-runners", type=int, default=1, help="remote env runners (0: sample in this process)")
    p.add_argument("--envs-per-runner", type=int, help="sub-envs per env runner (default: YAML or 16)")
    p.add_argument("--timesteps", type=int, help="env steps (default: YAML or 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--name", type=safe_name, help="run name (default: rllib_<algo>_s<seed>)")
    p.add_argument("--eval-freq", type=int, help="env steps between held-out evaluations (default: timesteps/5)")
    p.add_argument("--eval-episodes", type=int, help="held-out episodes per evaluation (default: YAML or 8)")
    p.add_argument("--env-kwargs", type=yaml_mapping, default={}, help="env config fields as a YAML mapping")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter (YAML value)")
    p.add_argument("--hyperparams", type=Path, help="YAML file (default: agents/hyperparams/<env>.yaml)")
    p.add_argument("--ship", action="store_true", help="copy the checkpoint into agents/checkpoints/<env>/<name>")
    args = Args(**vars(p.parse_args(argv)))
    if not isinstance(args.env_kwargs, dict):
        p.error(f"--env-kwargs must be a YAML mapping, got {args.env_kwargs!r}")
    if args.num_env_runners < 0:
        p.error("--num-env-runners must be >= 0")
    for item in args.set:
        if "=" not in item:
            p.error(f"--set takes KEY=VALUE, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    run, params = rllib.load_hyperparams(args.env, args.algo, args.hyperparams)
    for item in args.set:
        key, _, value = item.partition("=")
        params[key.strip()] = yaml.safe_load(value)
    rllib.check_hyperparams(args.algo, params, where="--set")
    timesteps = int(args.timesteps or run.get("total_timesteps", 20_000))
    env_kwargs = {**dict(run.get("env_kwargs") or {}), **args.env_kwargs}
    spec = rllib.RunSpec(
        env_id=args.env,
        algo=args.algo,
        env_kwargs=env_kwargs,
        hyperparams=params,
        num_env_runners=args.num_env_runners,
        envs_per_runner=int(args.envs_per_runner or run.get("envs_per_runner", 16)),
        seed=args.seed,
    )
    eval_episodes = int(args.eval_episodes or run.get("eval_episodes", 8))
    eval_freq = int(args.eval_freq or run.get("eval_freq", max(timesteps // 5, 1)))
    name = args.name or f"rllib_{args.algo.lower()}_s{args.seed}"
    run_dir = args.out / args.env / name

    started_ray = rllib.connect_ray(args.address, num_cpus=max(args.num_env_runners, 1))
    try:
        print(f"{args.env} {args.algo}: {args.num_env_runners} env runners x {spec.envs_per_runner} sub-envs")

        def where_sampled(algo: Any) -> None:
            for r in rllib.runner_reports(algo):
                print(
                    f"env runner {r.worker_index} (pid {r.pid}, node {r.node_id[:12]}): "
                    f"{r.env_steps} env steps from a {r.vector_env} of {r.num_envs} sub-envs"
                )

        result = rllib.train(
            spec,
            timesteps=timesteps,
            run_dir=run_dir,
            eval_freq=eval_freq,
            eval_episodes=eval_episodes,
            on_trained=where_sampled,
        )
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    command = reproduce_command("python scripts/train_rllib.py", argv)
    write_metadata(
        run_dir, rllib.checkpoint_metadata(spec, result, name=name, command=command, eval_episodes=eval_episodes)
    )
    final = result.final_metrics
    print(f"{args.env} {args.algo} {result.timesteps} steps in {result.seconds:.0f}s -> {run_dir}")
    print(f"held-out return {final['return']:.4g}; " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
    if args.ship:
        target = CHECKPOINT_ROOT / args.env / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("events.out.tfevents.*"))
        print(f"shipped to {target}")
    return run_dir
