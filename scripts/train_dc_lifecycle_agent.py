"""Train the DCLifecycle-v0 planner agent: behaviour cloning of the co-optimising policy, then PPO.

    python scripts/train_dc_lifecycle_agent.py --name ppo_bc_realistic [--timesteps N] [--ship]

A PPO agent started from random weights needs millions of quarters to stop
ruining datacenters (a uniform policy retires and under-buys at random and
pays ~10x the baseline's TCO), so the agent is warm-started: its policy
network first imitates ``co_optimising`` on training episodes (cross-entropy
on every action head) and its value network regresses the demonstrations'
discounted returns; PPO then fine-tunes it on the ``realistic`` preset.
Hyperparameters: the ``PPO_BC`` section of ``agents/hyperparams/DCLifecycle-v0.yaml``
(its ``bc_*`` keys are this script's). Training episodes use seeds drawn from
``SeedSequence(seed)``; evaluation uses the held-out seeds (1,000,000 on).
The checkpoint is an SB3 PPO ``model.zip`` with ``checkpoint.yaml``; its
``env_kwargs`` hold only the action grid the agent was trained with, so
compare.py runs it on the scenario it was trained on (``scenario`` records where it
learnt). The demonstrations and the cloning live in
``cloudgym.agents.dc_lifecycle_agent``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import cloudgym
from cloudgym.agents import dc_lifecycle_agent as agent
from cloudgym.agents.checkpoints import SB3_LOADER, reproduce_command, safe_name, ship, write_metadata
from cloudgym.agents.sb3 import HYPERPARAMS_DIR, PeriodicEvaluation, _policy_kwargs, yaml_safe
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.evaluation import make_vector_env, summarise

ENV_ID = agent.ENV_ID
TRAINING_ONLY = {"reward_scale_usd"}
"""Config fields used while training that the shipped checkpoint does not impose on evaluation."""
SECTION = "PPO_BC"
"""The YAML section this script reads (scripts/train.py reads ``PPO``: plain PPO from random weights)."""
SCRIPT_KEYS = {
    "num_envs",
    "total_timesteps",
    "eval_freq",
    "eval_episodes",
    "env_kwargs",
    "policy",
    "train_scenario",
    "bc_teacher",
    "bc_episodes",
    "bc_epochs",
    "bc_learning_rate",
}


@dataclasses.dataclass
class Args:
    name: str = "ppo_bc_realistic"
    timesteps: int | None = None
    seed: int = 0
    out: Path = Path("runs")
    hyperparams: Path = HYPERPARAMS_DIR / f"{ENV_ID}.yaml"
    ship: bool = False


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", type=safe_name, default="ppo_bc_realistic")
    p.add_argument("--timesteps", type=int, help="PPO fine-tuning env steps (default: the YAML's total_timesteps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--hyperparams", type=Path, default=HYPERPARAMS_DIR / f"{ENV_ID}.yaml")
    p.add_argument("--ship", action="store_true", help="copy the checkpoint into agents/checkpoints/")
    args = Args(**vars(p.parse_args(argv)))
    section = dict((yaml.safe_load(args.hyperparams.read_text()) or {})[SECTION])
    run = {k: section.pop(k) for k in list(section) if k in SCRIPT_KEYS}
    if "policy_kwargs" in section:
        section["policy_kwargs"] = _policy_kwargs(dict(section["policy_kwargs"]), args.hyperparams)
    grid = dict(run.get("env_kwargs") or {})
    env_kwargs = {"scenario": run.get("train_scenario", "realistic"), **grid}
    # The checkpoint records the action grid only: the reward scale matters to training, not to acting.
    recorded = {k: v for k, v in grid.items() if k not in TRAINING_ONLY}
    timesteps = int(args.timesteps if args.timesteps is not None else run["total_timesteps"])
    run_dir = args.out / ENV_ID / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    env = make_vector_env(ENV_ID, int(run["num_envs"]), env_kwargs)
    model = PPO(run.get("policy", "MlpPolicy"), SB3VecEnv(env), seed=args.seed, device="cpu", verbose=0, **section)
    model.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    obs, actions, returns = agent.demonstrations(
        run["bc_teacher"], env_kwargs, int(run["bc_episodes"]), args.seed, float(section.get("gamma", 0.99))
    )
    losses = agent.behaviour_clone(
        model, obs, actions, returns, int(run["bc_epochs"]), float(run["bc_learning_rate"]), args.seed
    )
    print(f"behaviour cloning of {run['bc_teacher']}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    evaluation = PeriodicEvaluation(ENV_ID, env_kwargs, int(run["eval_freq"]), int(run["eval_episodes"]))
    if timesteps > 0:
        model.learn(total_timesteps=timesteps, callback=evaluation, progress_bar=False)
    model.save(run_dir / "model.zip")
    evaluation.model = model
    rows = evaluation.run_evaluation()
    final = {c: summarise(rows, c)[0] for c in rows[0] if c not in ("env_id", "policy", "seed", "scenario")}
    command = reproduce_command("python scripts/train_dc_lifecycle_agent.py", argv)
    write_metadata(
        run_dir,
        {
            "env_id": ENV_ID,
            "name": args.name,
            "loader": SB3_LOADER,
            "algo": "PPO",
            "policy": "MlpPolicy",
            "command": command,
            "seed": args.seed,
            "timesteps": int(model.num_timesteps),
            "num_envs": int(run["num_envs"]),
            "env_kwargs": recorded,
            "scenario": env_kwargs["scenario"],
            "training_env_kwargs": env_kwargs,
            "hyperparams_file": args.hyperparams.name,
            "hyperparams": yaml_safe(section),
            "behaviour_cloning": {
                "teacher": run["bc_teacher"],
                "episodes": int(run["bc_episodes"]),
                "epochs": int(run["bc_epochs"]),
                "loss": [round(x, 4) for x in losses],
            },
            "eval_episodes": int(run["eval_episodes"]),
            "train_seconds": round(time.time() - started, 1),
            "final_metrics": {k: float(v) for k, v in final.items()},
            "eval_history": evaluation.history,
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__},
        },
    )
    print(f"held-out return {final['return']:.4g}, tco_usd {final['tco_usd']:.4g} -> {run_dir}")
    if args.ship:
        ship(run_dir, args.name)
    return run_dir


if __name__ == "__main__":
    main()
