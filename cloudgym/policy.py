"""One batched policy protocol for heuristic baselines, oracles and trained agents.

A policy acts for every sub-env of a native vector env at once::

    policy = make_policy("LLMRouter-v0", "round_robin", env)
    policy.reset(np.arange(env.num_envs))           # sub-envs that start an episode
    actions = policy.act(obs, env.action_masks())   # (B, ...) actions

A policy that keeps state (a histogram, a hysteresis flag, a forecast) keeps
it per sub-env and clears the rows named in ``reset``. A policy built by a
factory receives the env, so an oracle may read the core's hindsight methods
(never the observation of another sub-env).

Policies are found by name through a registry: every env module's baselines
register theirs when :mod:`cloudgym.baselines` is imported, and a path to a
trained checkpoint (``agents/checkpoints/<env>/<name>``) loads as a policy too.
"""

from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.shells import CloudGymVectorEnv


@runtime_checkable
class Policy(Protocol):
    """What evaluate() and compare.py need of a policy."""

    name: str

    def reset(self, env_ids: np.ndarray) -> None:
        """Sub-envs ``env_ids`` start a new episode: forget what was kept for them."""

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any:
        """Actions for every sub-env from the batched observation (and admissible-action mask)."""


class BatchedPolicy(ABC):
    """Base class for policies: keeps the env, ignores resets unless overridden."""

    name = "policy"

    def __init__(self, env: CloudGymVectorEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.config = env.config

    def reset(self, env_ids: np.ndarray) -> None:
        return None

    @abstractmethod
    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any: ...


class RandomPolicy(BatchedPolicy):
    """Uniform over the action space (over admissible actions when there is a mask); seeded, batched."""

    name = "random"

    def __init__(self, env: CloudGymVectorEnv, seed: int = 0) -> None:
        super().__init__(env)
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> Any:
        space = self.env.single_action_space
        b = self.num_envs
        if isinstance(space, spaces.Discrete):
            if action_mask is None:
                start, n = int(space.start), int(space.n)  # plain ints: gymnasium 1.2's stubs type them loosely
                return self.rng.integers(start, start + n, size=b)
            # A uniform choice among admissible actions: argmax of random keys on the allowed set.
            keys = np.where(action_mask, self.rng.random(action_mask.shape), -1.0)
            return space.start + np.argmax(keys, axis=1)
        if isinstance(space, spaces.MultiDiscrete):
            return space.start + (self.rng.random((b, *space.nvec.shape)) * space.nvec).astype(np.int64)
        if isinstance(space, spaces.Box):
            low = np.broadcast_to(space.low, space.shape)
            high = np.broadcast_to(space.high, space.shape)
            return self.rng.uniform(low, high, size=(b, *space.shape)).astype(space.dtype)
        raise TypeError(f"RandomPolicy does not support {space}")


PolicyFactory = Callable[[CloudGymVectorEnv], Policy]
PolicyKind = Literal["baseline", "oracle", "agent"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """A named policy of one env."""

    env_id: str
    name: str
    factory: PolicyFactory
    description: str
    kind: PolicyKind = "baseline"
    in_comparison: bool = True
    """Whether compare.py runs it by default."""
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Env config fields the policy needs (e.g. the histogram range it reads); evaluate() applies them."""


_REGISTRY: dict[str, dict[str, PolicySpec]] = {}


def register_policy(
    env_id: str,
    name: str,
    factory: PolicyFactory,
    *,
    description: str,
    kind: PolicyKind = "baseline",
    in_comparison: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Make ``make_policy(env_id, name, env)`` build ``factory(env)``.

    ``env_kwargs`` are config fields the policy needs from its env;
    :func:`cloudgym.evaluation.evaluate` (and so compare.py) builds the env
    with them, over any scenario kwargs.
    """
    specs = _REGISTRY.setdefault(env_id, {})
    if name in specs:
        raise ValueError(f"policy {name!r} is already registered for {env_id}")
    specs[name] = PolicySpec(
        env_id=env_id,
        name=name,
        factory=factory,
        description=description,
        kind=kind,
        in_comparison=in_comparison,
        env_kwargs=dict(env_kwargs or {}),
    )


def _load_baselines() -> None:
    import cloudgym.baselines  # noqa: F401  (registers every env's baselines)


def policy_specs(env_id: str) -> dict[str, PolicySpec]:
    """Registered policies of an env, including ``random``, in registration order."""
    _load_baselines()
    specs = dict(_REGISTRY.get(env_id, {}))
    if "random" not in specs:
        specs["random"] = PolicySpec(
            env_id=env_id, name="random", factory=RandomPolicy, description="uniform over admissible actions"
        )
    return specs


def make_policy(env_id: str, policy: str | Path, env: CloudGymVectorEnv, *, trust: bool = False) -> Policy:
    """A registered policy by name, or a trained checkpoint by path (a folder with checkpoint.yaml).

    ``trust`` allows checkpoint formats that load by unpickling (see :mod:`cloudgym.agents.checkpoints`).
    """
    specs = policy_specs(env_id)
    if isinstance(policy, str) and policy in specs:
        built = specs[policy].factory(env)
        built.name = policy
        return built
    path = Path(policy)
    if path.exists():
        from cloudgym.agents.checkpoints import load_policy

        return load_policy(path, env, trust=trust)
    close = difflib.get_close_matches(str(policy), list(specs), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown policy {str(policy)!r} for {env_id}.{hint} Known: {', '.join(specs)}; "
        "or give the path of a checkpoint folder (agents/checkpoints/<env>/<name>)."
    )
