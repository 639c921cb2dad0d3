"""Ray RLlib glue: any cloudgym env in RLlib's env runners, action masking, checkpoints as policies.

Each RLlib env runner builds the env through :func:`make_rllib_env`. With
``gym_env_vectorize_mode="vector_entry_point"`` (what :func:`build_config`
sets) RLlib calls it once with ``num_envs``, and it builds the env's native
vector env through the id's registered ``vector_entry_point`` (B sub-envs
stepped in one numpy call). With ``"sync"`` RLlib calls it once per sub-env
without ``num_envs`` and wraps B single envs in gymnasium's SyncVectorEnv
(only ``scripts/bench.py --rllib`` does that, to measure the difference).

RLlib's default models take a flat float vector. :class:`ObservationAdapter`
flattens any cloudgym observation (Box, Discrete, MultiDiscrete, Dict of
those) in one batched call, exactly as ``gymnasium.spaces.flatten`` does row
by row. For an env with action masks and a policy-gradient algorithm (PPO,
APPO) the observation becomes ``{"observations": flat, "action_mask": mask}``
and the RLModules here (:class:`MaskedPPOTorchRLModule`,
:class:`MaskedAPPOTorchRLModule`, RLlib's own action-masking pattern) add
``log(mask)`` to the action logits in every forward pass, so a masked action
is never sampled and carries no probability in the loss. DQN is not masked:
its target ``max_a' Q(s', a')`` runs inside RLlib's DQN learner, which takes
no mask of the next observation, and a -inf Q-value there turns the target
of a state with no admissible action into NaN; DQN therefore sees the flat
observation and learns the env's own penalty for an inadmissible action.

A trained module is saved with ``RLModule.save_to_path`` beside a
``checkpoint.yaml`` whose loader is :func:`load_rllib_policy`, so
``scripts/evaluate.py --policy DIR`` and ``scripts/compare.py`` run it like
any other policy; evaluation needs the ``rllib`` extra (for the module's
classes) but starts no Ray runtime.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from gymnasium import spaces
from gymnasium.vector import VectorObservationWrapper
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import make_vector_env
from cloudgym.policy import BatchedPolicy

ALGORITHMS: dict[str, type[AlgorithmConfig]] = {"PPO": PPOConfig, "APPO": APPOConfig, "DQN": DQNConfig}
MASKING_ALGORITHMS = ("PPO", "APPO")
"""Algorithms whose RLModule here applies the env's action mask (see the module docstring for DQN)."""

LOADER = "cloudgym.agents.rllib:load_rllib_policy"
ENV_NAME = "cloudgym"
"""The name :func:`make_rllib_env` is registered under with Ray Tune's env registry."""
MODULE_DIR = "rl_module"
"""Sub-folder of a checkpoint that holds the RLModule (``RLModule.save_to_path``)."""
OBSERVATIONS_KEY = "observations"
MASK_KEY = "action_mask"

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    # Small, CPU-friendly settings that learn on the toy env in a few thousand steps.
    "PPO": {
        "lr": 1e-3,
        "gamma": 0.9,
        "train_batch_size_per_learner": 1024,
        "minibatch_size": 256,
        "num_epochs": 5,
        "entropy_coeff": 0.01,
        "fcnet_hiddens": [64, 64],
    },
    "APPO": {
        "lr": 1e-3,
        "gamma": 0.9,
        "train_batch_size_per_learner": 512,
        "entropy_coeff": 0.01,
        "fcnet_hiddens": [64, 64],
    },
    "DQN": {
        "lr": 5e-4,
        "gamma": 0.9,
        "train_batch_size_per_learner": 64,
        "num_steps_sampled_before_learning_starts": 500,
        "fcnet_hiddens": [64, 64],
    },
}
"""Starting hyperparameters per algorithm; an env's YAML (section ``rllib-<ALGO>``) overrides them."""

MODEL_KEYS = {"fcnet_hiddens", "fcnet_activation", "head_fcnet_hiddens", "vf_share_layers"}
"""Hyperparameter keys that configure the network (RLlib's DefaultModelConfig), not the algorithm."""

RUN_KEYS = {
    "envs_per_runner": "sub-envs of the native vector env in each env runner",
    "total_timesteps": "env steps to train for",
    "env_kwargs": "config fields of the env (a mapping)",
    "eval_freq": "env steps between periodic evaluations on held-out seeds",
    "eval_episodes": "held-out episodes per evaluation",
}


# ----------------------------------------------------------------------------- observations


def flat_size(space: spaces.Space) -> int:
    """Length of the flat vector of one observation (gymnasium.spaces.flatdim)."""
    return int(spaces.flatdim(space))


def flatten_observations(space: spaces.Space, obs: Any, num_envs: int) -> np.ndarray:
    """(B, flat_size) float32: row i equals ``gymnasium.spaces.flatten(space, obs[i])``, in one batched call."""
    if isinstance(space, spaces.Box):
        return np.asarray(obs, dtype=np.float32).reshape(num_envs, -1)
    if isinstance(space, spaces.Discrete):
        out = np.zeros((num_envs, int(space.n)), np.float32)
        out[np.arange(num_envs), np.asarray(obs).reshape(num_envs) - space.start] = 1.0
        return out
    if isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        idx = np.asarray(obs).reshape(num_envs, -1) - space.start.reshape(-1) + offsets
        out = np.zeros((num_envs, int(nvec.sum())), np.float32)
        np.put_along_axis(out, idx, 1.0, axis=1)
        return out
    if isinstance(space, spaces.MultiBinary):
        return np.asarray(obs, dtype=np.float32).reshape(num_envs, -1)
    if isinstance(space, spaces.Dict):
        return np.concatenate(
            [flatten_observations(sub, obs[key], num_envs) for key, sub in space.spaces.items()], axis=1
        )
    if isinstance(space, spaces.Tuple):
        return np.concatenate([flatten_observations(sub, o, num_envs) for sub, o in zip(space.spaces, obs)], axis=1)
    raise TypeError(f"cannot flatten observations of space type {type(space).__name__} for RLlib")


def _flat_box(space: spaces.Space) -> spaces.Box:
    flat = spaces.flatten_space(space)
    assert isinstance(flat, spaces.Box)
    return spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), flat.shape, np.float32)


def mask_size(action_space: spaces.Space) -> int:
    """Length of an action mask: n for Discrete, the sum of nvec for MultiDiscrete (RLlib's logit layout)."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(action_space.nvec.sum())
    raise TypeError(f"action masks need a Discrete or MultiDiscrete action space, not {action_space}")


@dataclasses.dataclass(frozen=True)
class ObservationAdapter:
    """Turns a batch of cloudgym observations (and masks) into what RLlib's models take."""

    space: spaces.Space
    """The env's single observation space."""
    masked_actions: int | None
    """Length of the action mask when the policy is masked, else None."""

    @classmethod
    def for_env(cls, env: CloudGymVectorEnv, masked: bool) -> ObservationAdapter:
        if masked and not env.core.has_action_masks:
            raise ValueError(f"{env.spec.id if env.spec else env}: has no action masks to apply")
        return cls(env.single_observation_space, mask_size(env.single_action_space) if masked else None)

    @property
    def rllib_space(self) -> spaces.Space:
        flat = _flat_box(self.space)
        if self.masked_actions is None:
            return flat
        return spaces.Dict(
            {
                OBSERVATIONS_KEY: flat,
                MASK_KEY: spaces.Box(0.0, 1.0, (self.masked_actions,), np.float32),
            }
        )

    def __call__(self, obs: Any, masks: np.ndarray | None, num_envs: int) -> Any:
        flat = flatten_observations(self.space, obs, num_envs)
        if self.masked_actions is None:
            return flat
        if masks is None:
            raise ValueError("this policy was trained with action masks: pass the env's action_masks()")
        return {OBSERVATIONS_KEY: flat, MASK_KEY: np.asarray(masks, np.float32).reshape(num_envs, -1)}


class RLlibVectorEnv(VectorObservationWrapper):
    """A cloudgym native vector env as RLlib's env runner takes it (flat observations, masks inside)."""

    def __init__(self, env: CloudGymVectorEnv, masked: bool) -> None:
        super().__init__(env)
        self.cloudgym_env = env
        self.adapter = ObservationAdapter.for_env(env, masked)
        self.single_observation_space = self.adapter.rllib_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: Any) -> Any:
        masks = self.cloudgym_env.action_masks() if self.adapter.masked_actions is not None else None
        return self.adapter(observations, masks, self.cloudgym_env.num_envs)


class RLlibSingleEnv(gym.ObservationWrapper[Any, Any, Any]):
    """The single env (B=1 view) with the same observations, for RLlib's ``sync`` vectorisation."""

    def __init__(self, env: gym.Env[Any, Any], masked: bool) -> None:
        super().__init__(env)
        self.single_env = env.unwrapped
        core = self.single_env.core  # type: ignore[attr-defined]
        if masked and not core.has_action_masks:
            raise ValueError(f"{env.spec.id if env.spec else env}: has no action masks to apply")
        self.adapter = ObservationAdapter(env.observation_space, mask_size(env.action_space) if masked else None)
        self.observation_space = self.adapter.rllib_space

    def observation(self, observation: Any) -> Any:
        batched = _add_batch_axis(observation)
        masks = self.single_env.action_masks()[None] if self.adapter.masked_actions is not None else None  # type: ignore[attr-defined]
        return _take_first(self.adapter(batched, masks, 1))


def _add_batch_axis(obs: Any) -> Any:
    if isinstance(obs, Mapping):
        return {k: _add_batch_axis(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_add_batch_axis(v) for v in obs)
    return np.asarray(obs)[None]


def _take_first(obs: Any) -> Any:
    if isinstance(obs, Mapping):
        return {k: v[0] for k, v in obs.items()}
    return obs[0]


def make_rllib_env(env_config: Mapping[str, Any]) -> Any:
    """RLlib's env creator: the native vector env when given ``num_envs``, else one single env.

    ``env_config``: ``env_id``, ``env_kwargs`` (config fields of the env) and
    ``masked`` (put the action mask into the observation).
    """
    import cloudgym  # noqa: F401  (registers the ids in this worker process)

    # An env runner owns one CPU: torch's default intra-op threads fight over it (and over
    # the cores other processes use) and made one small forward pass 25x slower here.
    torch.set_num_threads(1)
    env_id = str(env_config["env_id"])
    env_kwargs = dict(env_config.get("env_kwargs") or {})
    masked = bool(env_config.get("masked", False))
    num_envs = env_config.get("num_envs")
    if num_envs is None:
        return RLlibSingleEnv(gym.make(env_id, disable_env_checker=True, **env_kwargs), masked)
    return RLlibVectorEnv(make_vector_env(env_id, int(num_envs), env_kwargs), masked)


# ----------------------------------------------------------------------------- masking RLModules


def _split_masked(batch: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(mask, batch with the flat observations under OBS), without touching the caller's batch."""
    obs = batch[Columns.OBS]
    if not isinstance(obs, Mapping) or MASK_KEY not in obs:
        raise ValueError(
            f"a masked RLModule needs observations {{{OBSERVATIONS_KEY!r}, {MASK_KEY!r}}} (cloudgym's RLlibVectorEnv "
            f"with masked=True); got {type(obs).__name__}"
        )
    out = dict(batch)
    out[Columns.OBS] = obs[OBSERVATIONS_KEY]
    return obs[MASK_KEY], out


def _log_mask(mask: torch.Tensor) -> torch.Tensor:
    # log(0) = -inf would give NaN gradients through 0 * inf; the most negative float32 does not.
    return torch.clamp(torch.log(mask), min=torch.finfo(torch.float32).min)


class _ActionMasking:
    """Adds log(mask) to the action logits of a PPO-family module in every forward pass."""

    def __init__(self, *args: Any, observation_space: spaces.Space | None = None, **kwargs: Any) -> None:
        if not isinstance(observation_space, spaces.Dict) or MASK_KEY not in observation_space.spaces:
            raise ValueError(
                f"a masked RLModule needs a Dict observation space with {OBSERVATIONS_KEY!r} and {MASK_KEY!r}, "
                f"got {observation_space}"
            )
        self._space_with_mask = observation_space
        # The networks are built for the flat observations alone.
        super().__init__(*args, observation_space=observation_space[OBSERVATIONS_KEY], **kwargs)  # type: ignore[call-arg]

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        self.observation_space = self._space_with_mask

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, inner = _split_masked(batch)
        out: dict[str, Any] = super()._forward(inner, **kwargs)  # type: ignore[misc]
        out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] + _log_mask(mask)
        return out

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, inner = _split_masked(batch)
        out: dict[str, Any] = super()._forward_train(inner, **kwargs)  # type: ignore[misc]
        out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] + _log_mask(mask)
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        if embeddings is None:
            _, batch = _split_masked(batch)
        return super().compute_values(batch, embeddings)  # type: ignore[misc]


class MaskedPPOTorchRLModule(_ActionMasking, DefaultPPOTorchRLModule):  # type: ignore[misc]
    """RLlib's default PPO module, with the env's action mask applied to its logits."""


class MaskedAPPOTorchRLModule(_ActionMasking, DefaultAPPOTorchRLModule):  # type: ignore[misc]
    """RLlib's default APPO module (with target networks), with the action mask applied to all logits."""

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        mask, inner = _split_masked(batch)
        out: dict[str, Any] = super().forward_target(inner)
        out[TARGET_NETWORK_ACTION_DIST_INPUTS] = out[TARGET_NETWORK_ACTION_DIST_INPUTS] + _log_mask(mask)
        return out


MASKED_MODULES: dict[str, type[RLModule]] = {"PPO": MaskedPPOTorchRLModule, "APPO": MaskedAPPOTorchRLModule}


# ----------------------------------------------------------------------------- configuration


def load_hyperparams(env_id: str, algo: str, path: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run settings, hyperparameters) of an env for an RLlib algorithm.

    Starts from :data:`DEFAULT_HYPERPARAMS`; the section ``rllib-<ALGO>`` of
    ``agents/hyperparams/<env_id>.yaml`` (when the file has one) overrides
    it. Run keys (:data:`RUN_KEYS`) are taken out; the rest must be
    ``AlgorithmConfig.training`` arguments or :data:`MODEL_KEYS`.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown RLlib algorithm {algo!r}; known: {', '.join(ALGORITHMS)}")
    params = dict(DEFAULT_HYPERPARAMS[algo])
    run: dict[str, Any] = {}
    file = path or HYPERPARAMS_DIR / f"{env_id}.yaml"
    section = f"rllib-{algo}"
    if file.exists():
        data = yaml.safe_load(file.read_text()) or {}
        if section in data:
            given = dict(data[section] or {})
            run = {k: given.pop(k) for k in list(given) if k in RUN_KEYS}
            check_hyperparams(algo, given, where=f"{file} [{section}]")
            params.update(given)
    elif path is not None:
        raise FileNotFoundError(f"{file}: no such hyperparameter file")
    return run, params


def check_hyperparams(algo: str, params: Mapping[str, Any], where: str) -> None:
    """Raise a ValueError naming every key that is neither a training argument of ``algo`` nor a model key."""
    accepted = training_arguments(algo) | MODEL_KEYS
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"{where}: unknown {algo} hyperparameters {unknown}; model keys: {sorted(MODEL_KEYS)}")


def training_arguments(algo: str) -> set[str]:
    """Names ``<Algo>Config.training`` accepts (its own and AlgorithmConfig's)."""
    names: set[str] = set()
    for cls in ALGORITHMS[algo].__mro__:
        method = cls.__dict__.get("training")
        if method is not None:
            names |= set(inspect.signature(method).parameters) - {"self", "kwargs"}
    return names


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything that defines one RLlib training run (what checkpoint.yaml records)."""

    env_id: str
    algo: str = "PPO"
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    num_env_runners: int = 0
    """Remote env runners (0: sample in the driver's own env runner)."""
    envs_per_runner: int = 16
    """Sub-envs of the native vector env in each env runner."""
    vectorize_mode: str = "vector_entry_point"
    """``vector_entry_point`` (the native batched env) or ``sync`` (SyncVectorEnv over single envs)."""
    seed: int = 0
    masked: bool | None = None
    """Apply action masks; None: whenever the env has them and the algorithm supports it."""

    def resolved_masked(self, env_has_masks: bool) -> bool:
        if self.masked is None:
            return env_has_masks and self.algo in MASKING_ALGORITHMS
        if self.masked and self.algo not in MASKING_ALGORITHMS:
            raise ValueError(f"{self.algo} does not apply action masks here (only {', '.join(MASKING_ALGORITHMS)})")
        if self.masked and not env_has_masks:
            raise ValueError(f"{self.env_id} has no action masks")
        return self.masked


def env_has_masks(env_id: str, env_kwargs: Mapping[str, Any]) -> bool:
    env = make_vector_env(env_id, 1, env_kwargs)
    has = bool(env.core.has_action_masks)
    env.close()
    return has


def check_algorithm_fits(algo: str, env_id: str, env_kwargs: Mapping[str, Any]) -> None:
    env = make_vector_env(env_id, 1, env_kwargs)
    space = env.single_action_space
    env.close()
    if algo == "DQN" and not isinstance(space, spaces.Discrete):
        raise ValueError(f"DQN needs a Discrete action space; {env_id}'s is {space}")


def register_rllib_env() -> None:
    """Register :func:`make_rllib_env` as ``"cloudgym"`` with the connected Ray cluster (remote runners look it up)."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_rllib_env)


def build_config(spec: RunSpec, env: Any = ENV_NAME) -> AlgorithmConfig:
    """The RLlib AlgorithmConfig of a run: our env creator, native vectorisation, masking module, hyperparameters.

    ``env`` is the registered name (call :func:`register_rllib_env` once Ray
    is up) or, for an env runner built in-process, :func:`make_rllib_env` itself.
    """
    if spec.algo not in ALGORITHMS:
        raise ValueError(f"unknown RLlib algorithm {spec.algo!r}; known: {', '.join(ALGORITHMS)}")
    if spec.vectorize_mode not in ("vector_entry_point", "sync"):
        raise ValueError(f"vectorize_mode must be 'vector_entry_point' or 'sync', got {spec.vectorize_mode!r}")
    check_algorithm_fits(spec.algo, spec.env_id, spec.env_kwargs)
    check_hyperparams(spec.algo, spec.hyperparams, where="hyperparameters")
    masked = spec.resolved_masked(env_has_masks(spec.env_id, spec.env_kwargs))
    params = dict(spec.hyperparams)
    model = {k: params.pop(k) for k in list(params) if k in MODEL_KEYS}
    config = (
        ALGORITHMS[spec.algo]()
        .environment(
            env=env,
            env_config={"env_id": spec.env_id, "env_kwargs": dict(spec.env_kwargs), "masked": masked},
            disable_env_checking=True,
        )
        .env_runners(
            num_env_runners=spec.num_env_runners,
            num_envs_per_env_runner=spec.envs_per_runner,
            gym_env_vectorize_mode=spec.vectorize_mode,
            num_cpus_per_env_runner=1,
        )
        .learners(num_learners=0)
        .framework("torch")
        .debugging(seed=spec.seed)
        .reporting(metrics_num_episodes_for_smoothing=20)
        .training(**params)
        .callbacks(on_sample_end=count_runner_samples)
        .rl_module(
            rl_module_spec=RLModuleSpec(module_class=MASKED_MODULES[spec.algo] if masked else None, model_config=model)
        )
    )
    return config


# ----------------------------------------------------------------------------- where samples come from

RUNNER_STEPS_ATTR = "cloudgym_env_steps_sampled"


def count_runner_samples(*, env_runner: Any, samples: Sequence[Any], **_: Any) -> None:
    """RLlib ``on_sample_end`` callback: count the env steps this env runner itself sampled.

    RLlib's own ``num_env_steps_sampled_lifetime`` of an env runner is
    overwritten by the merged, cluster-wide count after each iteration, so it
    cannot say which runner sampled what.
    """
    steps = sum(len(episode) for episode in samples)
    setattr(env_runner, RUNNER_STEPS_ATTR, getattr(env_runner, RUNNER_STEPS_ATTR, 0) + steps)


@dataclasses.dataclass(frozen=True)
class RunnerReport:
    """Where one remote env runner ran and how many env steps it sampled."""

    worker_index: int
    node_id: str
    pid: int
    env_steps: int
    num_envs: int
    vector_env: str


def runner_reports(algo: Any) -> list[RunnerReport]:
    """One report per remote env runner of a live Algorithm."""

    def report(runner: Any) -> RunnerReport:
        import os

        import ray

        env = runner.env.unwrapped if runner.env is not None else None
        return RunnerReport(
            worker_index=int(runner.worker_index),
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
            env_steps=int(getattr(runner, RUNNER_STEPS_ATTR, 0)),
            num_envs=int(runner.num_envs),
            vector_env=type(env).__name__,
        )

    return list(algo.env_runner_group.foreach_env_runner(report, local_env_runner=False))


# ----------------------------------------------------------------------------- policies


class RLlibPolicy(BatchedPolicy):
    """A trained RLlib module as a batched cloudgym policy (greedy: the distribution's mode)."""

    name = "rllib"

    def __init__(self, env: CloudGymVectorEnv, module: RLModule, masked: bool) -> None:
        super().__init__(env)
        self.module = module
        self.adapter = ObservationAdapter.for_env(env, masked)
        space = env.single_action_space
        self._box = space if isinstance(space, spaces.Box) else None

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any:
        if self.adapter.masked_actions is not None and action_mask is None:
            action_mask = self.env.action_masks()
        inputs = self.adapter(obs, action_mask, self.num_envs)
        batch = {Columns.OBS: _to_tensor(inputs)}
        with torch.no_grad():
            out = self.module.forward_inference(batch)
        if Columns.ACTIONS in out:  # DQN's module picks its greedy action itself
            actions = out[Columns.ACTIONS]
        else:
            dist = self.module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            actions = dist.to_deterministic().sample()
        actions = actions.cpu().numpy()
        if self._box is not None:
            # RLlib's default normalize_actions: module outputs live in [-1, 1] and are unsquashed to the bounds.
            low, high = self._box.low, self._box.high
            actions = low + (np.clip(actions, -1.0, 1.0) + 1.0) * (high - low) / 2.0
            return actions.astype(self._box.dtype)
        return actions.astype(np.int64)


def _to_tensor(inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    return torch.from_numpy(np.ascontiguousarray(inputs))


def load_rllib_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> RLlibPolicy:
    """Checkpoint loader for RLlib modules (``rl_module/`` beside checkpoint.yaml)."""
    folder = info.path / MODULE_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: RLlib module missing (written by scripts/train_rllib.py)")
    module = RLModule.from_checkpoint(str(folder.resolve()))
    if isinstance(module, torch.nn.Module):
        module.eval()
    return RLlibPolicy(env, module, masked=bool(info.extra.get("action_masking", False)))


def module_policy_factory(module: RLModule, masked: bool) -> Any:
    """A policy factory ``(env) -> RLlibPolicy`` over a live module (periodic evaluation)."""

    def factory(env: CloudGymVectorEnv) -> RLlibPolicy:
        return RLlibPolicy(env, module, masked)

    return factory


def finite_mean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


# ----------------------------------------------------------------------------- Ray and the training loop

OBJECT_STORE_BYTES = 100 * 1024**2
"""Object store of a local Ray instance: RLlib moves small episodes and weights, not data sets."""


def connect_ray(address: str | None, num_cpus: int) -> bool:
    """Join the cluster at ``address`` (``auto`` or ``HOST:PORT``) or start a small local instance.

    Returns whether this call started Ray (and so should shut it down).
    Inside a Ray Tune trial Ray is already up and this does nothing. A joined
    cluster with fewer free CPUs than ``num_cpus`` (one per env runner) is
    refused at once, with the numbers: RLlib would otherwise wait forever for
    env runners that cannot be placed.
    """
    import os

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here; never phone home
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
        free = float(ray.available_resources().get("CPU", 0.0))
        if free < num_cpus:
            total = float(ray.cluster_resources().get("CPU", 0.0))
            ray.shutdown()
            raise ValueError(
                f"the Ray cluster at {address} has {free:g} free CPUs (of {total:g}); {num_cpus} env runners need "
                f"{num_cpus} (one each): lower --num-env-runners or add nodes"
            )
    return True


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    timesteps: int
    seconds: float
    final_metrics: dict[str, float]
    eval_history: list[dict[str, float]]
    masked: bool


EVAL_SKIP_COLUMNS = ("env_id", "policy", "seed", "scenario")


def evaluate_module(
    module: RLModule, masked: bool, env_id: str, env_kwargs: Mapping[str, Any], episodes: int
) -> list[dict[str, Any]]:
    """Held-out evaluation of a live module, one row per episode (the seeds compare.py uses)."""
    from cloudgym.evaluation import evaluate, held_out_seeds

    return evaluate(
        module_policy_factory(module, masked),
        env_id,
        held_out_seeds(episodes),
        env_kwargs=env_kwargs,
        policy_name="agent",
    )


def row_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of return, each metric and episode length over evaluation rows."""
    return {c: finite_mean([r[c] for r in rows]) for c in rows[0] if c not in EVAL_SKIP_COLUMNS}


def train(
    spec: RunSpec,
    *,
    timesteps: int,
    run_dir: Path,
    eval_freq: int,
    eval_episodes: int,
    log: Any = print,
    on_trained: Any = None,
) -> TrainResult:
    """Train until ``timesteps`` env steps are sampled, evaluating on held-out seeds every ``eval_freq``.

    Ray must be connected (:func:`connect_ray`). TensorBoard events go to
    ``run_dir`` with the tags SB3 runs and compare.py use (``eval/return``,
    ``eval/<metric>``, plus ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``
    and ``time/fps`` from RLlib's own counters). The final module is saved to
    ``run_dir/rl_module``. ``on_trained(algo)``, when given, sees the
    Algorithm before it is stopped (the two-node script asks its env runners
    where they ran).
    """
    import time

    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_LEN_MEAN,
        EPISODE_RETURN_MEAN,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )
    from torch.utils.tensorboard import SummaryWriter

    from cloudgym.evaluation import write_eval_scalars

    if timesteps < 1 or eval_freq < 1 or eval_episodes < 1:
        raise ValueError("timesteps, eval_freq and eval_episodes must be >= 1")
    register_rllib_env()
    config = build_config(spec)
    masked = bool(config.env_config["masked"])
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(run_dir))
    algo = config.build_algo()
    metrics = _metric_names(spec)
    history: list[dict[str, float]] = []

    def evaluate_now(step: int) -> list[dict[str, Any]]:
        rows = evaluate_module(current_module(algo), masked, spec.env_id, spec.env_kwargs, eval_episodes)
        write_eval_scalars(writer, rows, step, metrics)
        writer.flush()
        history.append({"step": float(step), **row_means(rows)})
        log(f"  step {step:>8}: held-out return {history[-1]['return']:.4g}")
        return rows

    started = time.time()
    sampled = 0
    next_eval = 0
    try:
        while sampled < timesteps:
            if sampled >= next_eval:
                evaluate_now(sampled)
                next_eval = sampled + eval_freq
            tick = time.time()
            before = sampled
            result = algo.train()
            sampled = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME])
            runners = result.get(ENV_RUNNER_RESULTS, {})
            for tag, key in (("rollout/ep_rew_mean", EPISODE_RETURN_MEAN), ("rollout/ep_len_mean", EPISODE_LEN_MEAN)):
                value = runners.get(key)
                if value is not None and np.isfinite(value):
                    writer.add_scalar(tag, float(value), sampled)
            writer.add_scalar("time/fps", (sampled - before) / max(time.time() - tick, 1e-9), sampled)
        rows = evaluate_now(sampled)
        current_module(algo).save_to_path(str((run_dir / MODULE_DIR).resolve()))
        if on_trained is not None:
            on_trained(algo)
    finally:
        writer.close()
        algo.stop()
    return TrainResult(
        run_dir=run_dir,
        timesteps=sampled,
        seconds=time.time() - started,
        final_metrics=row_means(rows),
        eval_history=history,
        masked=masked,
    )


def current_module(algo: Any) -> RLModule:
    """The Algorithm's inference module with the learner's latest weights (the local env runner's copy)."""
    group = algo.env_runner_group
    if group is None:
        raise RuntimeError("the Algorithm has no env runner group")
    group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    module = algo.get_module()
    if module is None:
        raise RuntimeError("the Algorithm has no default module")
    return module


def _metric_names(spec: RunSpec) -> list[str]:
    env = make_vector_env(spec.env_id, 1, spec.env_kwargs)
    names = [m.name for m in env.core.metrics]
    env.close()
    return names


def checkpoint_metadata(
    spec: RunSpec, result: TrainResult, *, name: str, command: str, eval_episodes: int
) -> dict[str, Any]:
    """checkpoint.yaml's contents for an RLlib run (see cloudgym.agents.checkpoints)."""
    import ray

    import cloudgym

    return {
        "env_id": spec.env_id,
        "name": name,
        "loader": LOADER,
        "algo": spec.algo,
        "command": command,
        "seed": spec.seed,
        "timesteps": result.timesteps,
        "env_kwargs": dict(spec.env_kwargs),
        "hyperparams": {k: _plain(v) for k, v in spec.hyperparams.items()},
        "num_env_runners": spec.num_env_runners,
        "envs_per_runner": spec.envs_per_runner,
        "action_masking": result.masked,
        "eval_episodes": eval_episodes,
        "train_seconds": round(result.seconds, 1),
        "final_metrics": {k: float(v) for k, v in result.final_metrics.items()},
        "eval_history": result.eval_history,
        "versions": {"cloudgym": cloudgym.__version__, "ray": ray.__version__, "numpy": np.__version__},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------- sampling throughput


def sampling_throughput(
    env_id: str,
    envs_per_runner: int,
    *,
    vectorize_mode: str,
    seconds: float = 3.0,
    env_kwargs: Mapping[str, Any] | None = None,
    algo: str = "PPO",
) -> float:
    """Env steps/s one RLlib env runner samples (RLModule inference and episode bookkeeping included).

    Builds a ``SingleAgentEnvRunner`` in this process (no Ray runtime) over
    the env's native vector env (``vector_entry_point``) or gymnasium's
    SyncVectorEnv of single envs (``sync``), samples once to warm up, then
    times ``sample()`` calls of 8 steps per sub-env for about ``seconds``.
    """
    import time

    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    _, params = load_hyperparams(env_id, algo)
    spec = RunSpec(
        env_id=env_id,
        algo=algo,
        env_kwargs=dict(env_kwargs or {}),
        hyperparams=params,
        num_env_runners=0,
        envs_per_runner=envs_per_runner,
        vectorize_mode=vectorize_mode,
    )
    runner = SingleAgentEnvRunner(config=build_config(spec, env=make_rllib_env))
    try:
        chunk = 8 * envs_per_runner
        runner.sample(num_timesteps=chunk, explore=True)
        steps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            episodes = runner.sample(num_timesteps=chunk, explore=True)
            steps += sum(len(e) for e in episodes)
        return steps / (time.perf_counter() - start)
    finally:
        runner.stop()
