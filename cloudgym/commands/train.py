"""Train an SB3 agent on a cloudgym env, with TensorBoard logs and periodic held-out evaluation.

    python scripts/train.py --env ToyCluster-v0 --algo MaskablePPO
    tensorboard --logdir runs

Hyperparameters come from ``agents/hyperparams/<env>.yaml`` (section = algorithm).
Experience is collected through the SB3 adapter straight over the native
vector env (B sub-envs in one numpy call). Every ``eval_freq`` steps the
current policy runs on held-out seeds and logs ``eval/return`` and
``eval/<metric>``, the tags compare.py writes for baselines; the first and
last evaluation also log the best heuristic and the bound on the same seeds
as ``ref/<policy>/<metric>``, and a custom-scalars layout (TensorBoard's
"Custom Scalars" tab) draws the agent and those lines in one chart per
metric. The run folder
``<out>/<env>/<name>/`` receives the TensorBoard events, ``model.zip`` and
``checkpoint.yaml`` (config, final metrics, the command that reproduces it);
``--ship`` copies the checkpoint to ``agents/checkpoints/<env>/<name>/``
where compare.py finds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import cloudgym
from cloudgym.agents.checkpoints import SB3_LOADER, reproduce_command, safe_name, ship, write_metadata
from cloudgym.agents.sb3 import PeriodicEvaluation, algorithm, check_algorithm_fits, load_hyperparams, yaml_safe
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.evaluation import make_vector_env, summarise
from cloudgym.reports import write_tensorboard_layout


@dataclasses.dataclass
class Args:
    env: str
    algo: str = "PPO"
    timesteps: int | None = None
    seed: int = 0
    hyperparams: Path | None = None
    out: Path = Path("runs")
    name: str | None = None
    eval_episodes: int | None = None
    eval_freq: int | None = None
    ship: bool = False
    progress: bool = True


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, choices=cloudgym.ALL_ENV_IDS, help="env id")
    p.add_argument("--algo", default="PPO", help="PPO, A2C, DQN, SAC or MaskablePPO")
    p.add_argument("--timesteps", type=int, help="env steps (default: the YAML's total_timesteps)")
    p.add_argument("--seed", type=int, default=0, help="training seed (evaluation uses held-out seeds)")
    p.add_argument("--hyperparams", type=Path, help="YAML file (default: agents/hyperparams/<env>.yaml)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default: runs)")
    p.add_argument("--name", type=safe_name, help="run name, one folder name (default: <algo lower>_s<seed>)")
    p.add_argument("--eval-episodes", type=int, help="held-out episodes per evaluation (default: YAML or 8)")
    p.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: YAML or timesteps/10)")
    p.add_argument("--ship", action="store_true", help="copy the checkpoint into agents/checkpoints/<env>/<name>")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ns = p.parse_args(argv)
    return Args(**vars(ns))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # Small networks on few cores: one torch thread is several times faster than the default.
    torch.set_num_threads(int(os.environ.get("CLOUDGYM_TORCH_THREADS", "1")))
    run, algo_kwargs, hp_file = load_hyperparams(args.env, args.algo, args.hyperparams)
    timesteps = int(args.timesteps or run.get("total_timesteps", 100_000))
    num_envs = int(run.get("num_envs", 8))
    env_kwargs = dict(run.get("env_kwargs") or {})
    eval_episodes = int(args.eval_episodes or run.get("eval_episodes", 8))
    eval_freq = int(args.eval_freq or run.get("eval_freq", max(timesteps // 10, 1)))
    name = args.name or f"{args.algo.lower()}_s{args.seed}"
    run_dir = args.out / args.env / name
    run_dir.mkdir(parents=True, exist_ok=True)

    env = make_vector_env(args.env, num_envs, env_kwargs)
    check_algorithm_fits(args.algo, env)
    vec_env: VecEnv = SB3VecEnv(env)
    if run.get("normalize_reward", False):
        # Envs whose rewards are large sums (cores, dollars) train better on scaled rewards; the policy sees
        # raw observations, so the saved model needs no normalisation statistics to act.
        vec_env = VecNormalize(vec_env, norm_obs=False, norm_reward=True, gamma=float(algo_kwargs.get("gamma", 0.99)))
    model = algorithm(args.algo)(
        run.get("policy", "MlpPolicy"), vec_env, seed=args.seed, device="cpu", verbose=0, **algo_kwargs
    )
    model.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    write_tensorboard_layout(run_dir, args.env, env_kwargs)  # one chart per metric: the agent and ref/* lines
    evaluation = PeriodicEvaluation(args.env, env_kwargs, eval_freq, eval_episodes)
    started = time.time()
    model.learn(total_timesteps=timesteps, callback=evaluation, progress_bar=args.progress)
    elapsed = time.time() - started
    model.save(run_dir / "model.zip")
    rows = evaluation.run_evaluation(final=True)  # the final, held-out numbers that checkpoint.yaml records
    final = {c: summarise(rows, c)[0] for c in rows[0] if c not in ("env_id", "policy", "seed", "scenario")}
    command = reproduce_command("python scripts/train.py", argv)
    write_metadata(
        run_dir,
        {
            "env_id": args.env,
            "name": name,
            "loader": SB3_LOADER,
            "algo": args.algo,
            "policy": _plain_policy(run.get("policy", "MlpPolicy")),
            "command": command,
            "seed": args.seed,
            "timesteps": int(model.num_timesteps),
            "num_envs": num_envs,
            "env_kwargs": env_kwargs,
            "hyperparams_file": str(hp_file.name),
            "hyperparams": yaml_safe(algo_kwargs),
            "eval_episodes": eval_episodes,
            "train_seconds": round(elapsed, 1),
            "final_metrics": {k: float(v) for k, v in final.items()},
            "eval_history": evaluation.history,
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__},
        },
    )
    print(f"{args.env} {args.algo} {timesteps} steps in {elapsed:.0f}s -> {run_dir}")
    print("held-out return {:.4g}; ".format(final["return"]) + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
    if args.ship:
        ship(run_dir, name)
    return run_dir


def _plain_policy(policy: object) -> str:
    """The SB3 policy as checkpoint.yaml records it: an alias (MlpPolicy) or ``module:Class``."""
    return f"{policy.__module__}:{policy.__qualname__}" if isinstance(policy, type) else str(policy)
