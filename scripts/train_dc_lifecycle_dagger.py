"""Train a DCLifecycle-v0 agent by DAgger from the MPC planner, optionally fine-tuned with PPO.

    python scripts/train_dc_lifecycle_dagger.py --name dagger_mpc_realistic [--rounds 4] [--episodes 96] [--ship]
    python scripts/train_dc_lifecycle_dagger.py --name NAME --rounds 0 --init runs/DCLifecycle-v0/dagger_mpc_realistic \
        --ppo-timesteps N   # PPO fine-tuning of a DAgger run

Round 0 rolls the teacher (the rolling-horizon LP, ``mpc``) on training
episodes and records its actions; each later round rolls the *learner*
(argmax of its action heads) on fresh training episodes and asks the teacher
what it would do in every state the learner visits (DAgger), adding those
labels to the data set; after every round the policy network is refit by
cross-entropy on all action heads (the penalised objective is the teacher's:
the MPC's LP charges the unserved penalty). The value head regresses the
discounted return-to-go in $10M (for the optional PPO fine-tuning,
``--ppo-timesteps``). After each round the learner is scored on validation
seeds 500,000.. (TCO + unserved penalty); the best round is kept. Training
seeds come from ``SeedSequence(seed)`` (below 2**31, never the validation or
the held-out seeds). The env is the ``realistic`` preset with its default
action grid (per-cohort retire/keep entries included: the teacher retires
cohorts one by one).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import BasePolicy

import cloudgym
from cloudgym.agents.checkpoints import SB3_LOADER, reproduce_command, safe_name, ship, write_metadata
from cloudgym.agents.dc_lifecycle_agent import behaviour_clone, returns_to_go
from cloudgym.agents.sb3 import SB3Policy
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import evaluate, make_vector_env
from cloudgym.policy import make_policy

ENV_ID = "DCLifecycle-v0"
SCENARIO = "realistic"
REWARD_SCALE = 1e7  # $10M: keeps the value loss O(1); not imposed on evaluation


@dataclasses.dataclass
class Args:
    name: str = "dagger_mpc_realistic"
    rounds: int = 4
    episodes: int = 96
    epochs: int = 40
    lr: float = 1e-3
    net: int = 256
    val_episodes: int = 16
    ppo_timesteps: int = 0
    init: str = ""
    seed: int = 0
    out: Path = Path("runs")
    ship: bool = False


def rollout(
    env: CloudGymVectorEnv, seeds: list[int], learner: BasePolicy | None, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(obs, teacher actions, discounted return-to-go) of one episode per seed; the learner acts if given."""
    teacher = make_policy(ENV_ID, "mpc", env)
    obs, _ = env.reset(seed=seeds)
    teacher.reset(np.arange(len(seeds)))
    horizon = env.core.config.horizon_quarters
    all_obs, labels, rewards = [], [], []
    for _ in range(horizon):
        label = teacher.act(obs, None)
        act = label if learner is None else SB3Policy(env, learner).act(obs, None)
        all_obs.append(obs.copy())
        labels.append(label.copy())
        obs, reward, _, _, _ = env.step(act)
        rewards.append(reward)
    return np.concatenate(all_obs), np.concatenate(labels), returns_to_go(rewards, gamma)


def fit(model: PPO, obs: np.ndarray, actions: np.ndarray, returns: np.ndarray, epochs: int, lr: float) -> float:
    """Cross-entropy on every action head plus a small value regression; the last epoch's mean loss."""
    model.policy.set_training_mode(True)
    losses = behaviour_clone(model, obs, actions, returns, epochs, lr, None, batch_size=256, value_weight=0.01)
    model.policy.set_training_mode(False)
    return losses[-1]


def validation_score(model: PPO, episodes: int) -> tuple[float, float]:
    """Mean (TCO + penalty) in $M and unserved share of the learner on validation seeds 500,000.."""
    seeds = [500_000 + k for k in range(episodes)]
    rows = evaluate(lambda env: SB3Policy(env, model.policy), ENV_ID, seeds, env_kwargs={"scenario": SCENARIO})
    total = np.mean([r["tco_usd"] + r["cost_unserved_penalty_usd"] for r in rows]) / 1e6
    return float(total), float(np.mean([r["unserved_share"] for r in rows]))


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Args):
        if f.type in ("bool", bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        else:
            kind = {"int": int, "float": float, "Path": Path, "str": str}[str(f.type)]
            p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = Args(**vars(p.parse_args(argv)))
    safe_name(args.name)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    started = time.time()
    gamma = 0.995
    env_kwargs = {"scenario": SCENARIO, "reward_scale_usd": REWARD_SCALE}
    train_env = make_vector_env(ENV_ID, args.episodes, env_kwargs)
    hyper = {"learning_rate": 5e-5, "n_steps": 120, "batch_size": 480, "n_epochs": 5, "gamma": gamma,
             "gae_lambda": 0.95, "clip_range": 0.1, "ent_coef": 0.0,
             "policy_kwargs": {"net_arch": [args.net, args.net]}}  # fmt: skip
    ppo_env = make_vector_env(ENV_ID, 16, env_kwargs)
    model = PPO("MlpPolicy", SB3VecEnv(ppo_env), seed=args.seed, device="cpu", verbose=0, **hyper)  # type: ignore[arg-type]
    seeds = np.random.SeedSequence(args.seed).generate_state(args.rounds * args.episodes) % (2**31 - 1)
    data: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    history = []
    best = (np.inf, 0.0, -1)
    run_dir = args.out / ENV_ID / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.init:
        # Continue from an earlier run's kept model (more DAgger rounds, all on the
        # learner's states, or --rounds 0 --ppo-timesteps N: PPO fine-tuning only).
        model = PPO.load(Path(args.init) / "model.zip", env=SB3VecEnv(ppo_env), device="cpu")
        score, unserved = validation_score(model, args.val_episodes)
        history.append({"init": args.init, "val_total_musd": score, "val_unserved_share": unserved})
        print(history[-1], flush=True)
        best = (score, unserved, -1)
        model.save(run_dir / "model.zip")
    for r in range(args.rounds):
        chunk = [int(s) for s in seeds[r * args.episodes : (r + 1) * args.episodes]]
        data.append(rollout(train_env, chunk, None if r == 0 and not args.init else model.policy, gamma))
        obs, act, ret = (np.concatenate(parts) for parts in zip(*data))
        loss = fit(model, obs, act, ret, args.epochs, args.lr)
        score, unserved = validation_score(model, args.val_episodes)
        history.append({"round": r, "samples": int(obs.shape[0]), "loss": round(loss, 4), "val_total_musd": score,
                        "val_unserved_share": unserved, "seconds": round(time.time() - started, 1)})  # fmt: skip
        print(history[-1], flush=True)
        if score < best[0]:
            best = (score, unserved, r)
            model.save(run_dir / "model.zip")
    if args.ppo_timesteps > 0:
        model = PPO.load(run_dir / "model.zip", env=SB3VecEnv(ppo_env), device="cpu")
        model.learn(total_timesteps=args.ppo_timesteps, progress_bar=False)
        score, unserved = validation_score(model, args.val_episodes)
        history.append({"ppo_timesteps": args.ppo_timesteps, "val_total_musd": score, "val_unserved_share": unserved})
        print(history[-1], flush=True)
        if score < best[0]:
            best = (score, unserved, args.rounds)
            model.save(run_dir / "model.zip")
    write_metadata(
        run_dir,
        {
            "env_id": ENV_ID,
            "name": args.name,
            "loader": SB3_LOADER,
            "algo": "PPO",
            "policy": "MlpPolicy",
            "command": reproduce_command("python scripts/train_dc_lifecycle_dagger.py", argv),
            "seed": args.seed,
            "timesteps": int(sum(d[0].shape[0] for d in data) + args.ppo_timesteps),
            "num_envs": args.episodes,
            "env_kwargs": {},
            "scenario": SCENARIO,
            "trained_scenario": SCENARIO,
            "training_env_kwargs": env_kwargs,
            "hyperparams": {**hyper, "policy_kwargs": {"net_arch": [args.net, args.net]}},
            "dagger": {
                "teacher": "mpc",
                "rounds": args.rounds,
                "episodes_per_round": args.episodes,
                "epochs": args.epochs,
                "learning_rate": args.lr,
                "kept_round": int(best[2]),
                "selection": f"validation seeds 500000..{500_000 + args.val_episodes - 1}",
                "history": history,
            },
            "train_seconds": round(time.time() - started, 1),
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__, "torch": str(torch.__version__)},
        },
    )
    print(f"kept round {best[2]}: validation TCO + penalty ${best[0]:.2f} M, unserved {best[1]:.4f} -> {run_dir}")
    if args.init:
        print(f"started from {args.init}; its history is in its own checkpoint.yaml")
    if args.ship:
        ship(run_dir, args.name)
    return run_dir


if __name__ == "__main__":
    main()
