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
