"""The batched core every cloudgym environment stands on.

A :class:`BatchedCore` holds ``B`` independent sub-environments (clusters,
applications, datacenters) as numpy arrays whose first axis is ``B``. An
environment subclasses it and writes these hooks, and nothing else:

* ``_derive(config) -> Params``: everything fixed by the config, computed
  once: the single-env spaces, the instance :class:`~cloudgym.envs.workloads.generator.Generator`
  (synthetic, trace or toy, chosen here and nowhere else), derived constants
  and models. A frozen :class:`CoreParams` subclass;
* ``_init_state(params) -> State``: allocate the state, a dataclass of
  B-first arrays (dataclasses and dicts of them may nest); per-episode
  counters go in a field named ``counters``, which the base zeroes at reset;
* ``_load(env_ids, instances)``: write each restarting sub-env's instance
  (drawn by the base from ``params.generator`` with that sub-env's own rng)
  into its rows and set its starting state;
* ``_step(actions)``: the deterministic batched dynamics, reward and end of
  episode (no hidden randomness, no Python loop over ``B``);
* ``observe()``: the batched observation.

The base owns what every problem shares: per-sub-env seeding (each sub-env
draws from its own child of ``SeedSequence(seed).spawn(B)``, so sub-env *i*
of a batch behaves exactly like the same seed run alone), the sampling loop
over restarting sub-envs (:meth:`BatchedCore.instance_for_seed` gives a test
the exact instance a sub-env will see), episode statistics (return, length,
the env's domain metrics at the end of an episode), the time limit,
validation of actions at the edge, and row snapshots that let the shells
implement Gymnasium's NEXT_STEP autoreset without every environment having
to step only some of its rows.

Conventions an environment must keep (tests enforce them through batch
invariance and autoreset checks):

* every per-sub-env mutable quantity lives in ``self.state`` as an array whose
  first axis is ``B``; constants live in the frozen config and ``self.params``;
* ``_step`` steps every row; the shells roll back rows that must not move;
* info values are arrays with ``B`` first (object arrays for ragged data).
"""

from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core import memory, tree
from cloudgym.envs.core.memory import check_num_envs, check_state_bytes
from cloudgym.envs.workloads.generator import Generator

EPISODE_KEY = "episode_stats"
"""Info key of the env's own episode return and length ({"r", "l"}): not "episode", which Gymnasium's
RecordEpisodeStatistics wrappers write and refuse to find already there."""

Obs = Any  # np.ndarray (B, ...) or a dict of them, matching the batched observation space
Info = dict[str, Any]
SeedLike = int | np.random.SeedSequence | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """One domain metric an environment reports at the end of every episode."""

    name: str
    """Column in results.csv and tag suffix in TensorBoard (``eval/<name>``)."""
    unit: str
    """Unit in words, e.g. ``"s"``, ``"%"``, ``"GB-min"``, ``"$"``."""
    higher_is_better: bool | None
    """Direction for marking the best policy; ``None`` when neither is better (a count of requests)."""
    description: str
    """One line a reader of summary.md understands."""


@dataclasses.dataclass
class EpisodeStats:
    """Bookkeeping the base keeps for every sub-env."""

    length: np.ndarray  # (B,) int64, steps taken in the current episode
    ret: np.ndarray  # (B,) float64, undiscounted return of the current episode so far
    count: np.ndarray  # (B,) int64, episodes started since the sub-env was last seeded

    @classmethod
    def zeros(cls, num_envs: int) -> EpisodeStats:
        return cls(
            length=np.zeros(num_envs, np.int64),
            ret=np.zeros(num_envs, np.float64),
            count=np.zeros(num_envs, np.int64),
        )


class ScenarioPresets:
    """Mixin for a config class: named presets as data, ``SCENARIOS = {name: {field: value}}``."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def scenario(cls, name: str) -> Any:
        """The config of the named preset (the defaults with the preset's fields replaced)."""
        if name not in cls.SCENARIOS:
            raise ValueError(f"unknown {cls.__name__} scenario {name!r}; known: {', '.join(cls.SCENARIOS)}")
        return cls(**cls.SCENARIOS[name])


def make_config(config_cls: type, config: Any = None, **overrides: Any) -> Any:
    """Build a frozen config from an instance, a scenario name and keyword overrides.

    ``scenario="name"`` picks a named preset through ``config_cls.scenario(name)``;
    an unknown field raises a TypeError that names it and the closest field.
    """
    scenario = overrides.pop("scenario", None)
    if config is not None and not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__}, got {type(config).__name__}")
    if scenario is not None:
        if config is not None:
            raise TypeError("pass either config= or scenario=, not both")
        named = getattr(config_cls, "scenario", None)
        if named is None:
            raise TypeError(f"{config_cls.__name__} has no named scenarios")
        config = named(scenario)
    names = {f.name for f in dataclasses.fields(config_cls)}
    for key in overrides:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{config_cls.__name__} has no field {key!r}{hint} (fields: {', '.join(sorted(names))})")
    if config is None:
        return config_cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


def check_config(condition: bool, config: Any, message: str) -> None:
    """Raise a ValueError naming the config class when a validation condition fails."""
    if not condition:
        raise ValueError(f"{type(config).__name__}: {message}")


# ----------------------------------------------------------------------------- actions at the edge


def validate_actions(space: spaces.Space, actions: Any, num_envs: int) -> Any:
    """Check a batch of actions against the single-env action space; return it as arrays.

    Raises a ValueError or TypeError that names the problem: wrong shape, wrong
    dtype kind, a non-finite value, or a value outside the space (with the
    first offending sub-env).
    """
    if isinstance(space, spaces.Dict):
        if not isinstance(actions, Mapping):
            raise TypeError(f"expected a dict of action arrays for {space}, got {type(actions).__name__}")
        missing = set(space.spaces) - set(actions)
        extra = set(actions) - set(space.spaces)
        if missing or extra:
            raise ValueError(
                f"action keys differ from the space: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        return {k: validate_actions(sub, actions[k], num_envs) for k, sub in space.spaces.items()}
    arr = np.asarray(actions)
    if isinstance(space, spaces.Discrete):
        start, n = int(space.start), int(space.n)  # plain ints: gymnasium 1.2's stubs type them loosely
        return _check_integer_actions(arr, (num_envs,), start, start + n, space)
    if isinstance(space, spaces.MultiDiscrete):
        shape = (num_envs, *space.nvec.shape)
        return _check_integer_actions(arr, shape, space.start, space.start + space.nvec, space)
    if isinstance(space, spaces.MultiBinary):
        shape = (num_envs, *np.atleast_1d(space.n))
        return _check_integer_actions(arr, shape, 0, 2, space)
    if isinstance(space, spaces.Box):
        shape = (num_envs, *space.shape)
        if arr.shape != shape:
            raise ValueError(f"expected actions of shape {shape} for {space} with {num_envs} sub-envs, got {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"expected numeric actions for {space}, got dtype {arr.dtype}")
        arr = arr.astype(space.dtype, copy=False)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"non-finite action for sub-env {np.argwhere(bad)[0][0]}: {arr[np.argwhere(bad)[0][0]]}")
        outside = (arr < space.low) | (arr > space.high)
        if outside.any():
            where = tuple(np.argwhere(outside)[0])
            raise ValueError(
                f"action {arr[where]} at index {where} is outside the action space bounds "
                f"[{np.broadcast_to(space.low, space.shape)[where[1:]]}, "
                f"{np.broadcast_to(space.high, space.shape)[where[1:]]}]"
            )
        return arr
    raise TypeError(f"cloudgym does not validate actions of space type {type(space).__name__}")


def _check_integer_actions(
    arr: np.ndarray, shape: tuple[int, ...], low: Any, high: Any, space: spaces.Space
) -> np.ndarray:
    if arr.shape != shape:
        raise ValueError(f"expected actions of shape {shape} for {space}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        raise TypeError(f"expected integer actions for {space}, got dtype {arr.dtype}")
    low_b = np.broadcast_to(low, shape)
    high_b = np.broadcast_to(high, shape)
    outside = (arr < low_b) | (arr >= high_b)
    if outside.any():
        where = tuple(np.argwhere(outside)[0])
        raise ValueError(
            f"action {arr[where]} for sub-env {where[0]} is outside {space} "
            f"(valid: {low_b[where]}..{high_b[where] - 1})"
        )
    return arr


# ----------------------------------------------------------------------------- the core

ConfigT = TypeVar("ConfigT")
ParamsT = TypeVar("ParamsT", bound="CoreParams")
StateT = TypeVar("StateT")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoreParams:
    """What an env derives once from its config; an env subclasses it with its own constants."""

    observation_space: spaces.Space
    """The single-env observation space."""
    action_space: spaces.Space
    """The single-env action space."""
    generator: Generator[Any]
    """Makes one episode's instance from a sub-env's rng (synthetic, trace or toy)."""


class BatchedCore(ABC, Generic[ConfigT, ParamsT, StateT]):
    """B independent sub-environments of one problem, stepped in one numpy call.

    Subclasses set ``config_cls`` and ``metrics`` and implement the hooks
    named in the module docstring.
    """

    config_cls: ClassVar[type]
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    has_action_masks: ClassVar[bool] = False
    """True when :meth:`action_masks` returns masks (discrete actions that may be inadmissible)."""
    state_size_fields: ClassVar[tuple[str, ...]] = ()
    """Config fields that size one sub-env's state (named when num_envs x that state exceeds the memory limit)."""

    def __init__(self, num_envs: int, config: ConfigT) -> None:
        num_envs = check_num_envs(num_envs)
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config = config
        # Size one sub-env first: the state of num_envs of them must fit in the memory limit (refused
        # here, naming the fields, rather than by a MemoryError or the kernel's OOM killer later).
        self.num_envs = 1
        params: ParamsT = self._derive(config)
        state: StateT = self._init_state(params)
        check_state_bytes(type(self).__name__, num_envs, memory.row_bytes(params, state), self.state_size_fields)
        if num_envs > 1:
            self.num_envs = num_envs
            params = self._derive(config)
            state = self._init_state(params)
        self.stats = EpisodeStats.zeros(self.num_envs)
        self._roots: list[np.random.SeedSequence] = [np.random.SeedSequence() for _ in range(self.num_envs)]
        self._env_index = np.arange(self.num_envs)
        self.params: ParamsT = params
        self.single_observation_space: spaces.Space = self.params.observation_space
        self.single_action_space: spaces.Space = self.params.action_space
        self.state: StateT = state

    # ------------------------------------------------------------------ hooks an environment writes
    @abstractmethod
    def _derive(self, config: ConfigT) -> ParamsT:
        """Spaces, generator, derived constants and models: everything fixed by the config."""

    @abstractmethod
    def _init_state(self, params: ParamsT) -> StateT:
        """Allocate the state (B-first arrays); nothing else."""

    @abstractmethod
    def _load(self, env_ids: np.ndarray, instances: Sequence[Any]) -> None:
        """Write each listed sub-env's new instance into its rows and set its starting state."""

    @abstractmethod
    def _step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        """Advance every sub-env one step: (reward (B,), terminated (B,), truncated (B,), info of arrays)."""

    @abstractmethod
    def observe(self) -> Obs:
        """The batched observation of the current state."""

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Domain metrics of the episodes that just ended in ``env_ids``: name -> (len(env_ids),)."""
        return {}

    def action_masks(self) -> np.ndarray | None:
        """(B, n) booleans of admissible discrete actions, or None when every action is admissible."""
        return None

    def render_text(self, index: int) -> str:
        """Sub-env ``index``'s state as a few lines of text (``render_mode="ansi"``); envs override it."""
        return f"step {self.stats.length[index]}, return so far {self.stats.ret[index]:.6g}"

    @property
    def max_episode_steps(self) -> int | None:
        """Time limit in steps (episodes are truncated there); None when the env ends them itself."""
        return None

    # ------------------------------------------------------------------ seeding and resets
    def seed(self, seed: int | Sequence[int] | None, env_ids: np.ndarray | None = None) -> None:
        """Give sub-envs new seed roots.

        An int ``s`` gives sub-env *i* the child ``SeedSequence(s).spawn(B)[i]``;
        a sequence of ints gives sub-env *i* ``SeedSequence(s_i).spawn(1)[0]``,
        exactly what a single env seeded with ``s_i`` uses; None draws fresh entropy.
        """
        ids = self._env_index if env_ids is None else np.asarray(env_ids)
        if seed is None:
            roots = [np.random.SeedSequence() for _ in ids]
        elif isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            if seed < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed}")
            children = np.random.SeedSequence(int(seed)).spawn(self.num_envs)
            roots = [children[int(i)] for i in ids]
        else:
            seeds = list(seed)  # type: ignore[arg-type]
            if len(seeds) != len(ids):
                raise ValueError(f"got {len(seeds)} seeds for {len(ids)} sub-envs")
            for s in seeds:
                if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
                    raise ValueError(f"seeds must be non-negative integers, got {s!r}")
            roots = [np.random.SeedSequence(int(s)).spawn(1)[0] for s in seeds]
        for i, root in zip(ids, roots):
            self._roots[int(i)] = root
        self.stats.count[ids] = 0

    def reset_envs(self, env_ids: np.ndarray | Sequence[int]) -> None:
        """Start the next episode of each listed sub-env from its own seed root."""
        ids = np.asarray(env_ids, dtype=np.int64)
        if ids.size == 0:
            return
        generator = self.params.generator
        instances = [generator.sample(np.random.default_rng(self._roots[int(i)].spawn(1)[0])) for i in ids]
        self.stats.length[ids] = 0
        self.stats.ret[ids] = 0.0
        self.stats.count[ids] += 1
        counters = getattr(self.state, "counters", None)
        if counters is not None:
            tree.fill_rows(counters, self.num_envs, ids, 0)
        self._load(ids, instances)

    def instance_for_seed(self, seed: int, index: int = 0, num_envs: int = 1, episode: int = 0) -> Any:
        """The instance sub-env ``index`` of ``num_envs`` draws in its ``episode``-th episode after ``reset(seed)``.

        With the defaults: what a single env (or any sub-env given ``seed`` in a
        list of seeds) sees after ``reset(seed=seed)``.
        """
        root = np.random.SeedSequence(int(seed)).spawn(num_envs)[index]
        return self.params.generator.sample(np.random.default_rng(root.spawn(episode + 1)[episode]))

    # ------------------------------------------------------------------ stepping
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        """Step every sub-env with already validated actions; add episode statistics to info.

        ``info["episode_stats"]`` ({"r", "l"}) and ``info["metrics"]`` (the
        env's :class:`MetricSpec` names) hold values for the sub-envs whose
        episode ended, flagged by ``info["_episode_stats"]`` and
        ``info["_metrics"]``. (``info["episode"]`` is left to Gymnasium's
        ``RecordEpisodeStatistics`` wrappers, which refuse an info that has it.)
        """
        reward, terminated, truncated, info = self._step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        self.stats.length += 1
        self.stats.ret += reward
        limit = self.max_episode_steps
        if limit is not None:
            truncated = truncated | (self.stats.length >= limit)
        done = terminated | truncated
        valid = np.ones(self.num_envs, dtype=bool)
        info = dict(info)
        for key in list(info):
            if not key.startswith("_"):
                info.setdefault(f"_{key}", valid)
        if done.any():
            ended = np.flatnonzero(done)
            info[EPISODE_KEY] = {"r": np.where(done, self.stats.ret, 0.0), "l": np.where(done, self.stats.length, 0)}
            info[f"_{EPISODE_KEY}"] = done
            computed = self._episode_metrics(ended)
            names = [m.name for m in self.metrics]
            if set(computed) != set(names):
                raise RuntimeError(
                    f"{type(self).__name__}._episode_metrics returned {sorted(computed)}, declared {sorted(names)}"
                )
            metrics = {}
            for name in names:
                column = np.full(self.num_envs, np.nan)
                column[ended] = computed[name]
                metrics[name] = column
            info["metrics"] = metrics
            info["_metrics"] = done
        return reward, terminated, truncated, info

    # ------------------------------------------------------------------ row snapshots (NEXT_STEP autoreset)
    def snapshot(self, env_ids: np.ndarray) -> list[np.ndarray]:
        """Copies of the listed rows of every state array (and of the episode statistics)."""
        return tree.take_rows((self.stats, self.state), self.num_envs, env_ids)

    def restore(self, env_ids: np.ndarray, snapshot: list[np.ndarray]) -> None:
        """Write rows saved by :meth:`snapshot` back (the state layout must not have changed)."""
        tree.put_rows((self.stats, self.state), self.num_envs, env_ids, snapshot)

    def state_nbytes(self) -> int:
        """Bytes held by the state's arrays."""
        return tree.nbytes(self.state)

    def validate_actions(self, actions: Any) -> Any:
        """Validate a batch of actions at the edge (shape, dtype, range), naming any problem."""
        return validate_actions(self.single_action_space, actions, self.num_envs)
