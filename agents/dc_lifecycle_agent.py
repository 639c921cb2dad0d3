"""Train the DCLifecycle-v0 planner agent: behaviour cloning of the co-optimising policy, then PPO.

    python -m cloudgym.agents.dc_lifecycle_agent --name ppo_bc_realistic [--timesteps N] [--ship]

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
compare.py runs it on every scenario (``trained_scenario`` records where it
learnt).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import cloudgym
from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, SB3_LOADER, reproduce_command, write_metadata
from cloudgym.agents.sb3 import HYPERPARAMS_DIR, PeriodicEvaluation, _policy_kwargs, yaml_safe
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.evaluation import make_vector_env, summarise
from cloudgym.policy import make_policy

ENV_ID = "DCLifecycle-v0"
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


def demonstrations(
    teacher: str, env_kwargs: dict[str, Any], episodes: int, seed: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(obs, actions, discounted return-to-go) of ``teacher`` on ``episodes`` training episodes."""
    env = make_vector_env(ENV_ID, episodes, env_kwargs)
    policy = make_policy(ENV_ID, teacher, env)
    obs, _ = env.reset(seed=seed)
    policy.reset(np.arange(episodes))
    horizon = env.core.config.horizon_quarters
    all_obs, all_act, rewards = [], [], []
    for _ in range(horizon):
        actions = policy.act(obs, None)
        all_obs.append(obs)
        all_act.append(actions)
        obs, reward, _, _, _ = env.step(actions)
        rewards.append(reward)
    env.close()
    rew = np.array(rewards)  # (T, B)
    ret = np.zeros_like(rew)
    running = np.zeros(rew.shape[1])
    for t in range(horizon - 1, -1, -1):
        running = rew[t] + gamma * running
        ret[t] = running
    return np.concatenate(all_obs), np.concatenate(all_act), ret.reshape(-1)


def behaviour_clone(
    model: PPO, obs: np.ndarray, actions: np.ndarray, returns: np.ndarray, epochs: int, lr: float, seed: int
) -> list[float]:
    """Fit the policy's action heads to the teacher's actions and its value head to the returns; losses per epoch."""
    policy = model.policy
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    act_t = torch.as_tensor(actions, dtype=torch.long)
    ret_t = torch.as_tensor(returns, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(obs_t.shape[0], generator=gen)
        total = 0.0
        for start in range(0, obs_t.shape[0], 512):
            idx = order[start : start + 512]
            values, log_prob, _ = policy.evaluate_actions(obs_t[idx], act_t[idx])
            loss = -log_prob.mean() + 0.5 * torch.nn.functional.mse_loss(values.flatten(), ret_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / obs_t.shape[0])
    return losses


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="ppo_bc_realistic")
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
    obs, actions, returns = demonstrations(
        run["bc_teacher"], env_kwargs, int(run["bc_episodes"]), args.seed, float(section.get("gamma", 0.99))
    )
    losses = behaviour_clone(
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
    command = reproduce_command("python -m cloudgym.agents.dc_lifecycle_agent", argv)
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
            "trained_scenario": env_kwargs["scenario"],
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
        target = CHECKPOINT_ROOT / ENV_ID / args.name
        target.mkdir(parents=True, exist_ok=True)
        for f in ("model.zip", "checkpoint.yaml"):
            shutil.copy2(run_dir / f, target / f)
        print(f"shipped to {target}")
    return run_dir


if __name__ == "__main__":
    main()
