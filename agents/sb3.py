"""Stable-Baselines3 glue: algorithms by name, per-env YAML hyperparameters, evaluation and loading.

Hyperparameters live in ``agents/hyperparams/<env_id>.yaml``, one section per
algorithm. Keys the training script reads itself (:data:`RUN_KEYS`) are taken
out; everything else goes to the algorithm's constructor, checked against
its signature so that a typo fails with the file and key named.
"""

from __future__ import annotations

import importlib
import inspect
import io
import zipfile
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
from stable_baselines3.common.policies import BasePolicy

from cloudgym.agents.checkpoints import CheckpointInfo, UntrustedCheckpointError
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


def yaml_safe(value: Any) -> Any:
    """A hyperparameter as checkpoint.yaml records it: plain YAML, classes by name (activation_fn: ReLU)."""
    if isinstance(value, Mapping):
        return {k: yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [yaml_safe(v) for v in value]
    if isinstance(value, type):
        return value.__name__
    return value


def sb3_act(policy: BasePolicy, obs: Any, action_mask: np.ndarray | None) -> np.ndarray:
    """Deterministic batched actions of an SB3 policy (masked for MaskablePPO's)."""
    if action_mask is not None and "action_masks" in inspect.signature(policy.predict).parameters:
        actions, _ = policy.predict(obs, deterministic=True, action_masks=action_mask)  # type: ignore[call-arg]
    else:
        actions, _ = policy.predict(obs, deterministic=True)
    return np.asarray(actions)


class SB3Policy(BatchedPolicy):
    """A trained SB3 policy network as a batched cloudgym policy."""

    name = "sb3"

    def __init__(self, env: CloudGymVectorEnv, policy: BasePolicy) -> None:
        super().__init__(env)
        self.policy = policy

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any:
        return sb3_act(self.policy, obs, action_mask)


WEIGHTS_ENTRY = "policy.pth"
"""The entry of SB3's model.zip that holds the policy's state dict (tensors only)."""


def sb3_policy_class(algo: str, spec: str) -> type[BasePolicy]:
    """The policy class a checkpoint records: one of the algorithm's aliases or a class inside cloudgym."""
    aliases = algorithm(algo).policy_aliases
    if spec in aliases:
        return aliases[spec]
    module, _, name = spec.partition(":")
    if not module.startswith("cloudgym.") or not name:
        raise UntrustedCheckpointError(
            f"policy {spec!r} is neither one of {algo}'s ({', '.join(aliases)}) nor a cloudgym class (module:Class)"
        )
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, BasePolicy)):
        raise UntrustedCheckpointError(f"policy {spec!r} is not an SB3 policy class")
    return cls


def load_sb3_weights(zip_path: Path) -> dict[str, torch.Tensor]:
    """The policy's state dict from an SB3 model.zip, read as tensors only (no pickled objects)."""
    with zipfile.ZipFile(zip_path) as archive:
        if WEIGHTS_ENTRY not in archive.namelist():
            raise ValueError(f"{zip_path}: no {WEIGHTS_ENTRY} inside (not an SB3 model)")
        raw = archive.read(WEIGHTS_ENTRY)
    try:
        state: dict[str, torch.Tensor] = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (or others) for anything but plain tensors
        raise UntrustedCheckpointError(f"{zip_path}:{WEIGHTS_ENTRY} holds more than tensors: {exc}") from None
    return state


def load_sb3_policy(info: CheckpointInfo, env: CloudGymVectorEnv, *, trust: bool = False) -> SB3Policy:
    """Checkpoint loader for SB3 models (``model.zip`` beside checkpoint.yaml).

    The policy network is rebuilt from what checkpoint.yaml records (``algo``,
    ``policy``, ``hyperparams.policy_kwargs``) and only its weights are read
    from the zip; SB3's pickled entries (``:serialized:`` in the zip's
    ``data``) are never read. A zip without that record is SB3's own format
    and loads only with ``trust=True`` (through SB3's unpickling loader).
    """
    weights = info.path / "model.zip"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: checkpoint weights missing")
    spec = info.extra.get("policy")
    if spec is None:
        if not trust:
            raise UntrustedCheckpointError(
                f"{info.path}: checkpoint.yaml does not record the SB3 policy class ('policy:'), so the model "
                "could only be rebuilt by unpickling the zip; load it only if you trust it (--trust-checkpoint)"
            )
        return SB3Policy(env, algorithm(info.algo).load(weights, device="cpu").policy)
    kwargs = _policy_kwargs(dict(info.hyperparams.get("policy_kwargs") or {}), info.path / "checkpoint.yaml")
    policy = sb3_policy_class(info.algo, str(spec))(
        env.single_observation_space, env.single_action_space, lambda _: 0.0, **kwargs
    )
    policy.load_state_dict(load_sb3_weights(weights))
    policy.set_training_mode(False)
    return SB3Policy(env, policy)


class PeriodicEvaluation(BaseCallback):
    """Every ``eval_freq`` env steps: evaluate the current model on held-out seeds, log ``eval/*``.

    With ``references`` (the default), the first and the final evaluation also
    log the best heuristic's and the bound's results on the same seeds under
    ``ref/<policy>/<column>`` (see :func:`cloudgym.reports.reference_results`),
    so the custom-scalars layout :func:`cloudgym.reports.write_tensorboard_layout`
    draws the agent's curve and those lines in one chart per metric.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any],
        eval_freq: int,
        episodes: int,
        *,
        references: bool = True,
    ) -> None:
        super().__init__()
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.eval_freq = eval_freq
        self.seeds = held_out_seeds(episodes)
        self.history: list[dict[str, float]] = []
        self._next = 0
        self.references = references
        self._reference_means: dict[str, dict[str, float]] | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.run_evaluation(final=False)
            self._next = self.num_timesteps + self.eval_freq
        return True

    def run_evaluation(self, *, final: bool = True) -> list[dict[str, Any]]:
        """Evaluate and log at the current step; reference lines at the first evaluation and when ``final``."""
        policy = self.model.policy

        def factory(env: CloudGymVectorEnv) -> SB3Policy:
            return SB3Policy(env, policy)

        rows = evaluate(factory, self.env_id, self.seeds, env_kwargs=self.env_kwargs, policy_name="agent")
        entry: dict[str, float] = {"step": float(self.num_timesteps)}
        for column in rows[0]:
            if column in ("env_id", "policy", "seed", "scenario"):
                continue
            mean, _ = summarise(rows, column)
            entry[column] = mean
            self.logger.record(f"eval/{column}", mean)
        if self.references and (final or not self.history):
            for name, means in self.reference_means().items():
                for column, mean in means.items():
                    self.logger.record(f"ref/{name}/{column}", mean)
        self.logger.dump(self.num_timesteps)
        self.history.append(entry)
        return rows

    def reference_means(self) -> dict[str, dict[str, float]]:
        """The reference policies' mean results on the evaluation seeds (computed once: they do not learn)."""
        if self._reference_means is None:
            from cloudgym.reports import reference_results

            self._reference_means = {
                name: {c: summarise(rows, c)[0] for c in rows[0] if c not in ("env_id", "policy", "seed", "scenario")}
                for name, rows in reference_results(self.env_id, self.env_kwargs, self.seeds).items()
            }
        return self._reference_means
