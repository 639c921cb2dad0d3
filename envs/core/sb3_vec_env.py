"""Stable-Baselines3 ``VecEnv`` straight over a batched core (no DummyVecEnv in between).

SB3 expects SAME_STEP autoreset: when a sub-env finishes, the observation it
returns is already the first of the next episode and the last one travels in
``infos[i]["terminal_observation"]``. The adapter steps the core, resets the
finished rows at once, and builds an info dict with content only for them
(``terminal_observation``, ``TimeLimit.truncated``, ``episode`` as SB3's Monitor
writes it, and the env's domain ``metrics``). Importing this module needs
stable-baselines3 (the ``train`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from cloudgym.envs.core.shells import CloudGymVectorEnv, take_row


class SB3VecEnv(VecEnv):
    """SB3's VecEnv API over a native cloudgym vector env."""

    def __init__(self, env: CloudGymVectorEnv) -> None:
        if not isinstance(env, CloudGymVectorEnv):
            raise TypeError(f"SB3VecEnv wraps a cloudgym native vector env, got {type(env).__name__}")
        self.venv = env
        self.core = env.core
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: Any = None
        self._pending_seed: int | None = None
        self._has_masks = env.core.has_action_masks

    # ------------------------------------------------------------------ stepping
    def reset(self) -> Any:
        if self._pending_seed is not None:
            self.core.seed(self._pending_seed)
            self._pending_seed = None
        self.core.reset_envs(np.arange(self.num_envs))
        self.venv._started = True
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        actions = self.core.validate_actions(self._actions)
        reward, terminated, truncated, info = self.core.step(actions)
        done = np.asarray(terminated | truncated)
        obs = self.core.observe()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            ended = np.flatnonzero(done)
            episode = info["episode_stats"]
            metrics = info.get("metrics", {})
            for i in ended:
                infos[i] = {
                    "terminal_observation": take_row(obs, int(i)),
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                    "episode": {"r": float(episode["r"][i]), "l": int(episode["l"][i])},
                    "metrics": {k: float(v[i]) for k, v in metrics.items()},
                }
            self.core.reset_envs(ended)
            obs = self.core.observe()
        return obs, reward.astype(np.float32), done, infos

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the next reset: sub-env i draws from ``SeedSequence(seed).spawn(B)[i]``."""
        self._pending_seed = seed
        return [seed] * self.num_envs

    def close(self) -> None:
        self.venv.close()

    # ------------------------------------------------------------------ attributes and methods
    def has_attr(self, attr_name: str) -> bool:
        if attr_name == "action_masks":
            return self._has_masks
        return hasattr(self.venv, attr_name)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        idx = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in idx]
        raise AttributeError(f"SB3VecEnv supports env_method('action_masks') only, not {method_name!r}")

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
