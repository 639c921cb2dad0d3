"""The DCLifecycle-v0 planner agent's warm start: behaviour cloning of the co-optimising policy.

A PPO agent started from random weights needs millions of quarters to stop
ruining datacenters (a uniform policy retires and under-buys at random and
pays ~10x the baseline's TCO), so its policy network first imitates a
teacher (``co_optimising``) on training episodes (cross-entropy on every
action head) and its value network regresses the demonstrations' discounted
returns: :func:`demonstrations` collects them, :func:`behaviour_clone` fits
an SB3 PPO model to them. ``scripts/train_dc_lifecycle_agent.py`` then
fine-tunes it with PPO and ships the checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO

from cloudgym.evaluation import make_vector_env
from cloudgym.policy import make_policy

ENV_ID = "DCLifecycle-v0"


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
    return np.concatenate(all_obs), np.concatenate(all_act), returns_to_go(rewards, gamma)


def returns_to_go(rewards: list[np.ndarray], gamma: float) -> np.ndarray:
    """Discounted return from each step of (T steps of (B,) rewards), flattened step-major like the observations."""
    rew = np.array(rewards)  # (T, B)
    ret = np.zeros_like(rew)
    running = np.zeros(rew.shape[1])
    for t in range(rew.shape[0] - 1, -1, -1):
        running = rew[t] + gamma * running
        ret[t] = running
    return ret.reshape(-1)


def behaviour_clone(
    model: PPO,
    obs: np.ndarray,
    actions: np.ndarray,
    returns: np.ndarray,
    epochs: int,
    lr: float,
    seed: int | None,
    *,
    batch_size: int = 512,
    value_weight: float = 0.5,
) -> list[float]:
    """Fit the policy's action heads to the teacher's actions and its value head to the returns; losses per epoch.

    Minibatches are shuffled from ``seed`` (torch's global generator when None).
    """
    policy = model.policy
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    act_t = torch.as_tensor(actions, dtype=torch.long)
    ret_t = torch.as_tensor(returns, dtype=torch.float32)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(obs_t.shape[0], generator=gen)
        total = 0.0
        for start in range(0, obs_t.shape[0], batch_size):
            idx = order[start : start + batch_size]
            values, log_prob, _ = policy.evaluate_actions(obs_t[idx], act_t[idx])
            loss = -log_prob.mean() + value_weight * torch.nn.functional.mse_loss(values.flatten(), ret_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / obs_t.shape[0])
    return losses
