"""Learning sanity: PPO through the SB3 adapter (no DummyVecEnv) beats random on the test env."""

from __future__ import annotations

import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from cloudgym.agents.sb3 import SB3Policy
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.envs.toy_cluster import ToyClusterVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds


@pytest.mark.slow
@pytest.mark.parametrize("algo", [PPO, MaskablePPO])
def test_a_few_thousand_ppo_steps_beat_random(algo: type) -> None:
    env = SB3VecEnv(ToyClusterVectorEnv(num_envs=16, steps_per_episode=32))
    model = algo(
        "MlpPolicy", env, n_steps=32, batch_size=128, n_epochs=5, learning_rate=1e-3, gamma=0.9, seed=0, device="cpu"
    )
    model.learn(total_timesteps=6_000)
    seeds = held_out_seeds(32)
    trained = evaluate(
        lambda e: SB3Policy(e, model.policy), "ToyCluster-v0", seeds, env_kwargs={"steps_per_episode": 32}
    )
    random = evaluate("random", "ToyCluster-v0", seeds, env_kwargs={"steps_per_episode": 32})
    trained_return = np.mean([r["return"] for r in trained])
    random_return = np.mean([r["return"] for r in random])
    assert trained_return > random_return * 0.8  # returns are negative costs: at least 20% cheaper than random
