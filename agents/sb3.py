"""Stable-Baselines3 glue: algorithms by name, per-env YAML hyperparameters, evaluation and loading.

Hyperparameters live in ``agents/hyperparams/<env_id>.yaml``, one section per
algorithm. Keys the training script reads itself (:data:`RUN_KEYS`) are taken
out; everything else goes to the algorithm's constructor, checked against
its signature so that a typo fails with the file and key named.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds, summarise
from cloudgym.policy import BatchedPolicy

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "PPO": PPO,
    "A2C": A2C,
    "DQN": DQN,
    "SAC": SAC,
    "MaskablePPO": MaskablePPO,
}

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

RUN_KEYS = {
    "num_envs": "sub-envs in the native vector env that collects experience",
    "total_timesteps": "env steps to train for",
    "env_kwargs": "config fields of the env (a mapping)",
    "eval_freq": "env steps between periodic evaluations on held-out seeds",
    "eval_episodes": "held-out episodes per evaluation",
    "policy": "SB3 policy class name (MlpPolicy, MultiInputPolicy) or a custom one as module:Class",
    "normalize_reward": "scale rewards by a running estimate of the return's spread (VecNormalize, no obs change)",
}


def algorithm(name: str) -> type[BaseAlgorithm]:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None


def check_algorithm_fits(algo: str, env: CloudGymVectorEnv) -> None:
    """Fail early, naming the mismatch, when an algorithm cannot handle the env's action space."""
    space = env.single_action_space
    discrete = isinstance(space, spaces.Discrete | spaces.MultiDiscrete)
    if algo in ("DQN", "MaskablePPO") and not discrete:
        raise ValueError(f"{algo} needs discrete actions; this env's action space is {space}")
    if algo == "DQN" and not isinstance(space, spaces.Discrete):
        raise ValueError(f"DQN needs a Discrete action space; this env's is {space}")
    if algo == "SAC" and not isinstance(space, spaces.Box):
        raise ValueError(f"SAC needs a Box action space; this env's is {space}")
    if algo == "MaskablePPO" and not env.core.has_action_masks:
        raise ValueError("MaskablePPO needs action masks; this env has none (use PPO)")


def load_hyperparams(env_id: str, algo: str, path: Path | None = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(run settings, algorithm kwargs, file) for an env and algorithm from its YAML."""
    file = path or HYPERPARAMS_DIR / f"{env_id}.yaml"
    if not file.exists():
        raise FileNotFoundError(f"{file}: no hyperparameters for {env_id} (write one section per algorithm)")
    data = yaml.safe_load(file.read_text()) or {}
    if algo not in data:
        raise KeyError(f"{file}: no section for {algo} (sections: {', '.join(data) or 'none'})")
    section = dict(data[algo] or {})
    run = {k: section.pop(k) for k in list(section) if k in RUN_KEYS}
    accepted = set(inspect.signature(algorithm(algo).__init__).parameters) - {"self", "env", "policy"}
    unknown = sorted(set(section) - accepted)
    if unknown:
        raise ValueError(f"{file} [{algo}]: unknown keys {unknown}; run keys: {sorted(RUN_KEYS)}")
    if "policy_kwargs" in section:
        section["policy_kwargs"] = _policy_kwargs(dict(section["policy_kwargs"]), file)
    if isinstance(run.get("policy"), str) and ":" in run["policy"]:
        run["policy"] = _policy_class(run["policy"], file)
    return run, section, file


def _policy_class(spec: str, file: Path) -> type:
    """A custom policy named ``module:Class`` in the YAML (SB3 only knows its own aliases by name)."""
    module, _, name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{file}: policy {spec!r} cannot be imported ({exc})") from None
    if not isinstance(cls, type):
        raise ValueError(f"{file}: policy {spec!r} is not a class")
    return cls


def _policy_kwargs(kwargs: dict[str, Any], file: Path) -> dict[str, Any]:
    act = kwargs.get("activation_fn")
    if isinstance(act, str):
        if not hasattr(torch.nn, act):
            raise ValueError(f"{file}: activation_fn {act!r} is not a torch.nn module")
        kwargs["activation_fn"] = getattr(torch.nn, act)
    return kwargs


def sb3_act(model: BaseAlgorithm, obs: Any, action_mask: np.ndarray | None) -> np.ndarray:
    """Deterministic batched actions of an SB3 model (masked for MaskablePPO)."""
    if isinstance(model, MaskablePPO):
        actions, _ = model.predict(obs, deterministic=True, action_masks=action_mask)
    else:
        actions, _ = model.predict(obs, deterministic=True)
    return np.asarray(actions)


class SB3Policy(BatchedPolicy):
    """A trained SB3 model as a batched cloudgym policy."""

    name = "sb3"

    def __init__(self, env: CloudGymVectorEnv, model: BaseAlgorithm) -> None:
        super().__init__(env)
        self.model = model

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any:
        return sb3_act(self.model, obs, action_mask)


def load_sb3_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> SB3Policy:
    """Checkpoint loader for SB3 models (``model.zip`` beside checkpoint.yaml)."""
    weights = info.path / "model.zip"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: checkpoint weights missing")
    model = algorithm(info.algo).load(weights, device="cpu")
    return SB3Policy(env, model)


class PeriodicEvaluation(BaseCallback):
    """Every ``eval_freq`` env steps: evaluate the current model on held-out seeds, log ``eval/*``."""

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], eval_freq: int, episodes: int) -> None:
        super().__init__()
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.eval_freq = eval_freq
        self.seeds = held_out_seeds(episodes)
        self.history: list[dict[str, float]] = []
        self._next = 0

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.run_evaluation()
            self._next = self.num_timesteps + self.eval_freq
        return True

    def run_evaluation(self) -> list[dict[str, Any]]:
        model = self.model

        def factory(env: CloudGymVectorEnv) -> SB3Policy:
            return SB3Policy(env, model)

        rows = evaluate(factory, self.env_id, self.seeds, env_kwargs=self.env_kwargs, policy_name="agent")
        entry: dict[str, float] = {"step": float(self.num_timesteps)}
        for column in rows[0]:
            if column in ("env_id", "policy", "seed", "scenario"):
                continue
            mean, _ = summarise(rows, column)
            entry[column] = mean
            self.logger.record(f"eval/{column}", mean)
        self.logger.dump(self.num_timesteps)
        self.history.append(entry)
        return rows
