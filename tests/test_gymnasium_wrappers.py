"""Gymnasium's own wrappers and a CleanRL-style PPO loop run on every registered env.

``RecordEpisodeStatistics`` (single and vector) writes ``info["episode"]``
itself and refuses an info that already has it: the envs keep their own
statistics under ``info["episode_stats"]``. The loop is CleanRL's ppo.py in
miniature (vector env, the two wrappers and ``NormalizeObservation``), run for
a few thousand steps on each env's small config from the contract tests.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers import vector as vector_wrappers

import cloudgym
from tests.test_contract import MAIN_CASES

ENV_IDS = list(cloudgym.ALL_ENV_IDS)


def _kwargs(env_id: str) -> dict[str, Any]:
    return dict(MAIN_CASES[env_id].kwargs)


def _episode_steps(env_id: str) -> int:
    return MAIN_CASES[env_id].steps


def _random_actions(env: Any, rng: np.random.Generator) -> Any:
    masks = env.unwrapped.core.action_masks() if env.unwrapped.core.has_action_masks else None
    space = env.single_action_space
    if isinstance(space, spaces.Discrete):
        return (
            np.array([rng.choice(np.flatnonzero(m)) for m in masks])
            if masks is not None
            else rng.integers(space.n, size=env.num_envs)
        )
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(0, space.nvec, size=(env.num_envs, *space.nvec.shape))
    assert isinstance(space, spaces.Box)
    return rng.uniform(space.low, space.high, size=(env.num_envs, *space.shape)).astype(space.dtype)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_record_episode_statistics_single(env_id: str) -> None:
    env = RecordEpisodeStatistics(gym.make(env_id, **_kwargs(env_id)))
    env.reset(seed=3)
    env.action_space.seed(0)
    masked = env.unwrapped.core.has_action_masks
    total, info = 0.0, {}
    for _ in range(_episode_steps(env_id) * 4):
        mask = env.unwrapped.action_masks().astype(np.int8) if masked else None
        action = env.action_space.sample(mask=mask) if masked else env.action_space.sample()
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    else:
        pytest.fail(f"{env_id}: no episode ended in {_episode_steps(env_id) * 4} steps")
    assert "episode" in info
    assert "episode_stats" in info
    assert info["episode"]["r"] == pytest.approx(total, rel=1e-5, abs=1e-4)
    assert info["episode"]["l"] == info["episode_stats"]["l"]
    assert float(info["episode_stats"]["r"]) == pytest.approx(total, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_record_episode_statistics_vector(env_id: str) -> None:
    env = vector_wrappers.RecordEpisodeStatistics(
        gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **_kwargs(env_id))
    )
    env.reset(seed=[3, 17])
    rng = np.random.default_rng(0)
    returns = np.zeros(2)
    for _ in range(_episode_steps(env_id) * 4):
        _, reward, terminated, truncated, info = env.step(_random_actions(env, rng))
        returns += reward
        done = terminated | truncated
        if done.any():
            assert "episode" in info
            assert info["_episode"].tolist() == done.tolist()
            np.testing.assert_allclose(info["episode"]["r"][done], returns[done], rtol=1e-5, atol=1e-4)
            np.testing.assert_array_equal(info["episode"]["l"][done], info["episode_stats"]["l"][done])
            return
    pytest.fail(f"{env_id}: no episode ended")


# ----------------------------------------------------------------------------- a CleanRL-style PPO loop


class Agent(torch.nn.Module):
    """CleanRL's actor-critic over a flattened observation; categorical heads or a Gaussian for boxes."""

    def __init__(self, obs_dim: int, space: spaces.Space) -> None:
        super().__init__()
        if isinstance(space, spaces.Discrete):
            self.nvec = [int(space.n)]
        elif isinstance(space, spaces.MultiDiscrete):
            self.nvec = [int(n) for n in space.nvec.ravel()]
        else:
            self.nvec = []
            self.box = space
        out = sum(self.nvec) if self.nvec else int(np.prod(space.shape))
        self.actor = torch.nn.Sequential(torch.nn.Linear(obs_dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, out))
        self.critic = torch.nn.Sequential(torch.nn.Linear(obs_dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        self.log_std = torch.nn.Parameter(torch.zeros(out))

    def dist(self, obs: torch.Tensor) -> list[torch.distributions.Distribution]:
        logits = self.actor(obs)
        if self.nvec:
            return [torch.distributions.Categorical(logits=chunk) for chunk in torch.split(logits, self.nvec, dim=1)]
        return [torch.distributions.Normal(logits, self.log_std.exp())]

    def act(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        dists = self.dist(obs)
        if action is None:
            action = torch.stack([d.sample() for d in dists], dim=1) if self.nvec else dists[0].sample()
        if self.nvec:
            logp = sum(d.log_prob(action[:, i]) for i, d in enumerate(dists))
            entropy = sum(d.entropy() for d in dists)
        else:
            logp = dists[0].log_prob(action).sum(1)
            entropy = dists[0].entropy().sum(1)
        return action, logp, entropy, self.critic(obs).squeeze(1)


def _to_env(action: torch.Tensor, space: spaces.Space) -> np.ndarray:
    if isinstance(space, spaces.Discrete):
        return action[:, 0].numpy().astype(np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        return action.numpy().astype(np.int64).reshape(-1, *space.nvec.shape)
    assert isinstance(space, spaces.Box)
    flat = action.numpy().reshape(-1, *space.shape)
    return np.clip(flat, space.low, space.high).astype(space.dtype)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_cleanrl_style_ppo_loop(env_id: str) -> None:
    torch.manual_seed(0)
    num_envs, num_steps, iterations = 4, 128, 4  # 2,048 env steps
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **_kwargs(env_id))
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    envs = vector_wrappers.NormalizeObservation(envs)
    space = envs.single_action_space
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(obs_dim, space)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4)
    next_obs, _ = envs.reset(seed=list(range(num_envs)))
    episodes = 0
    for _ in range(iterations):
        obs_buf, act_buf, logp_buf, rew_buf, val_buf, done_buf = [], [], [], [], [], []
        for _ in range(num_steps):
            obs_t = torch.as_tensor(np.asarray(next_obs, np.float32).reshape(num_envs, -1))
            with torch.no_grad():
                action, logp, _, value = agent.act(obs_t)
            next_obs, reward, terminated, truncated, info = envs.step(_to_env(action, space))
            assert np.all(np.isfinite(next_obs))
            assert np.all(np.isfinite(reward))
            if "episode" in info:
                episodes += int(info["_episode"].sum())
            obs_buf.append(obs_t)
            act_buf.append(action)
            logp_buf.append(logp)
            val_buf.append(value)
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
            done_buf.append(torch.as_tensor(terminated | truncated, dtype=torch.float32))
        returns, running = [], torch.zeros(num_envs)
        for r, d in zip(reversed(rew_buf), reversed(done_buf)):
            running = r + 0.99 * running * (1.0 - d)
            returns.insert(0, running)
        b_obs, b_act = torch.cat(obs_buf), torch.cat(act_buf)
        b_logp, b_ret, b_val = torch.cat(logp_buf), torch.cat(returns), torch.cat(val_buf)
        adv = (b_ret - b_val - (b_ret - b_val).mean()) / ((b_ret - b_val).std() + 1e-8)
        _, new_logp, entropy, new_val = agent.act(b_obs, b_act)
        ratio = (new_logp - b_logp).exp()
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
        scale = b_ret.abs().mean() + 1e-8
        loss = pg + 0.5 * (((new_val - b_ret) / scale) ** 2).mean() - 0.01 * entropy.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert episodes > 0, (
        f"{env_id}: RecordEpisodeStatistics saw no episode in {num_envs * num_steps * iterations} steps"
    )
    envs.close()


@pytest.mark.parametrize("env_id", [e for e in ENV_IDS if gym.make(e, **_kwargs(e)).unwrapped.core.has_action_masks])
def test_masked_envs_put_the_mask_in_info(env_id: str) -> None:
    single = gym.make(env_id, **_kwargs(env_id))
    _, info = single.reset(seed=3)
    np.testing.assert_array_equal(info["action_mask"], single.unwrapped.action_masks())
    _, _, _, _, info = single.step(int(np.flatnonzero(info["action_mask"])[0]))
    np.testing.assert_array_equal(info["action_mask"], single.unwrapped.action_masks())
    vector = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **_kwargs(env_id))
    _, info = vector.reset(seed=[3, 17])
    np.testing.assert_array_equal(info["action_mask"], vector.unwrapped.action_masks())
    _, _, _, _, info = vector.step(np.array([np.flatnonzero(m)[0] for m in info["action_mask"]]))
    np.testing.assert_array_equal(info["action_mask"], vector.unwrapped.action_masks())


FRAME_WORDS = {
    "ToyCluster-v0": "arriving job",
    "FaaSKeepAlive-v0": "cold of",
    "LLMRouter-v0": "KV",
    "GPUPowerCap-v0": "row power",
    "Oversubscription-v0": "vCPUs sold",
    "DCLifecycle-v0": "MW provisioned",
}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_ansi_render_and_the_spec_in_help(env_id: str) -> None:
    single = gym.make(env_id, render_mode="ansi", **_kwargs(env_id))
    single.reset(seed=3)
    frame = single.render()
    assert isinstance(frame, str)
    assert FRAME_WORDS[env_id] in frame
    vector = gym.make_vec(
        env_id, num_envs=2, vectorization_mode="vector_entry_point", render_mode="ansi", **_kwargs(env_id)
    )
    vector.reset(seed=[3, 17])
    frames = vector.render()
    assert isinstance(frames, tuple)
    assert len(frames) == 2
    assert all(FRAME_WORDS[env_id] in f for f in frames)
    for shell in (single.unwrapped, vector.unwrapped):
        assert "## Action Space" in (type(shell).__doc__ or ""), "help(env.unwrapped) shows the spec"
    with pytest.raises(ValueError, match="render_mode"):
        gym.make(env_id, render_mode="human", **_kwargs(env_id))
