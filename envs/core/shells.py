"""Thin Gymnasium shells over a :class:`~cloudgym.envs.core.batch.BatchedCore`.

* :class:`CloudGymVectorEnv`: the native ``gymnasium.vector.VectorEnv``
  (registered as ``vector_entry_point``): B sub-envs in one numpy call,
  Gymnasium's NEXT_STEP autoreset, info as a dict of arrays with ``_key``
  masks.
* :class:`CloudGymEnv`: the ``gymnasium.Env`` that is the B=1 view of the same
  core (registered as ``entry_point``).

An environment file declares each shell in two lines by naming its core.
The SB3 adapter lives in :mod:`cloudgym.envs.core.sb3_vec_env` so that the env
library itself needs only gymnasium and numpy.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from cloudgym.envs.core.batch import BatchedCore, Info, make_config

try:  # gymnasium >= 1.1 names the autoreset modes; 1.0 read the same string
    from gymnasium.vector import AutoresetMode

    NEXT_STEP: Any = AutoresetMode.NEXT_STEP
except ImportError:  # pragma: no cover - gymnasium 1.0
    NEXT_STEP = "NextStep"


RENDER_MODES = ["ansi"]
"""``render_mode="ansi"``: ``render()`` returns a text frame of the state (compare.py draws the plots)."""


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")


ACTION_MASK_KEY = "action_mask"
"""Info key of the admissible actions of a masked env (also ``env.action_masks()``, which sb3-contrib calls)."""


def take_row(obs: Any, i: int) -> Any:
    """Row ``i`` of a batched observation (an array or a dict of arrays), copied."""
    if isinstance(obs, Mapping):
        return {k: take_row(v, i) for k, v in obs.items()}
    return np.array(obs[i], copy=True)


def info_row(info: Info, i: int) -> dict[str, Any]:
    """The entries of a dict-of-arrays info that are valid for sub-env ``i``, as scalars."""
    row: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, Mapping):
            row[key] = {k: v[i] for k, v in value.items()}
        else:
            row[key] = value[i]
    return row


def mask_info_rows(info: Info, rows: np.ndarray) -> Info:
    """Mark ``rows`` invalid in every ``_key`` mask; drop keys left with no valid row."""
    out: Info = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is None:
            out[key] = value
            continue
        mask = mask.copy()
        mask[rows] = False
        if mask.any():
            out[key] = value
            out[f"_{key}"] = mask
    return out


def _spec_docstring(cls: type, view: str) -> None:
    """Give an env's shell its module's docstring (the Gymnasium-style spec), so help(env.unwrapped) shows it."""
    spec = sys.modules[cls.__module__].__doc__
    if spec and cls.__dict__.get("__doc__") is None:
        cls.__doc__ = f"{view}\n\n{spec}"


class CloudGymVectorEnv(VectorEnv):
    """Native vector env over a batched core (NEXT_STEP autoreset).

    Keyword arguments other than ``num_envs``, ``config`` and ``render_mode``
    are fields of the env's config (``scenario="name"`` picks a preset); a
    misspelt field raises a TypeError naming it.
    """

    core_cls: ClassVar[type[BatchedCore[Any, Any, Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _spec_docstring(cls, "The native vector env (B sub-envs in one numpy call) of:")

    metadata = {"autoreset_mode": NEXT_STEP, "render_modes": RENDER_MODES}  # noqa: RUF012 (Gymnasium declares it so)

    def __init__(self, num_envs: int = 1, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        _check_render_mode(render_mode)
        self.core = self.core_cls(num_envs, make_config(self.core_cls.config_cls, config, **overrides))
        self.num_envs = self.core.num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    @property
    def config(self) -> Any:
        return self.core.config

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, Info]:
        """Reset all sub-envs, or those in ``options["reset_mask"]``; ``seed`` an int or one int per sub-env."""
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"unknown reset options: {sorted(options)} (known: reset_mask)")
        if mask is None:
            ids = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}"
                )
            ids = np.flatnonzero(mask)
            if not self._started and ids.size != self.num_envs:
                raise ValueError("the first reset must reset every sub-env")
        if isinstance(seed, int | np.integer):
            self.core.seed(int(seed), env_ids=ids)
        elif seed is not None:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} sub-envs")
            self.core.seed([seeds[i] for i in ids], env_ids=ids)
        super().reset(seed=int(seed) if isinstance(seed, int | np.integer) else None)
        self.core.reset_envs(ids)
        self._autoreset[ids] = False
        self._started = True
        return self.core.observe(), self._mask_info({})

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Info]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self.core.validate_actions(actions)
        resetting = np.flatnonzero(self._autoreset)
        if resetting.size:
            self.core.reset_envs(resetting)
            saved = self.core.snapshot(resetting)
        reward, terminated, truncated, info = self.core.step(actions)
        terminated = np.array(terminated, dtype=bool)
        truncated = np.array(truncated, dtype=bool)
        if resetting.size:
            # NEXT_STEP: a sub-env that ended last step only resets now; its action is ignored.
            self.core.restore(resetting, saved)
            reward = reward.copy()
            reward[resetting] = 0.0
            terminated[resetting] = False
            truncated[resetting] = False
            info = mask_info_rows(info, resetting)
        self._autoreset = terminated | truncated
        return self.core.observe(), reward, terminated, truncated, self._mask_info(info)

    def _mask_info(self, info: Info) -> Info:
        """Add ``info["action_mask"]`` (B, n) for an env with action masks (the key RLlib and PettingZoo users read)."""
        masks = self.core.action_masks()
        if masks is not None:
            info = {**info, ACTION_MASK_KEY: masks, f"_{ACTION_MASK_KEY}": np.ones(self.num_envs, bool)}
        return info

    def action_masks(self) -> np.ndarray:
        """(B, n) admissible actions (all True for an env without masks)."""
        masks = self.core.action_masks()
        if masks is None:
            n = getattr(self.single_action_space, "n", None)
            if n is None:
                raise AttributeError(f"{type(self).__name__} has no discrete action masks")
            return np.ones((self.num_envs, int(n)), dtype=bool)
        return masks

    def render(self) -> Any:
        """With ``render_mode="ansi"``: a tuple of every sub-env's text frame (as SyncVectorEnv gives); else None."""
        if self.render_mode != "ansi":
            return None
        return tuple(self.core.render_text(i) for i in range(self.num_envs))


class CloudGymEnv(gym.Env[Any, Any]):
    """The single-env view (B = 1) of a batched core.

    ``reset(seed=s)`` gives the same episode as sub-env *i* of a vector env
    reset with a seed list whose *i*-th entry is ``s``.
    """

    core_cls: ClassVar[type[BatchedCore[Any, Any, Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _spec_docstring(cls, "The single env (the B=1 view of the batched core) of:")

    metadata = {"render_modes": RENDER_MODES}  # noqa: RUF012 (Gymnasium declares it so)

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        _check_render_mode(render_mode)
        self.render_mode = render_mode
        self.core = self.core_cls(1, make_config(self.core_cls.config_cls, config, **overrides))
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._episode_over = True

    @property
    def config(self) -> Any:
        return self.core.config

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if options:
            raise ValueError(f"unknown reset options: {sorted(options)}")
        if seed is not None:
            self.core.seed([seed])
        super().reset(seed=seed)
        self.core.reset_envs(np.zeros(1, np.int64))
        self._episode_over = False
        return take_row(self.core.observe(), 0), self._mask_info({})

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("the episode has ended (or never started); call reset() first")
        batched: Any
        if isinstance(self.action_space, gym.spaces.Dict):
            batched = {k: np.asarray(v)[None] for k, v in dict(action).items()}
        else:
            arr = np.asarray(action)
            if arr.shape != self.action_space.shape:
                raise ValueError(
                    f"expected an action of shape {self.action_space.shape} for {self.action_space}, got {arr.shape}"
                )
            batched = arr[None]
        reward, terminated, truncated, info = self.core.step(self.core.validate_actions(batched))
        self._episode_over = bool(terminated[0] or truncated[0])
        return (
            take_row(self.core.observe(), 0),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            self._mask_info(info_row(info, 0)),
        )

    def _mask_info(self, info: dict[str, Any]) -> dict[str, Any]:
        masks = self.core.action_masks()
        if masks is not None:
            info[ACTION_MASK_KEY] = masks[0].copy()
        return info

    def action_masks(self) -> np.ndarray:
        """Admissible actions of the single env (sb3-contrib's MaskablePPO calls this)."""
        masks = self.core.action_masks()
        if masks is None:
            n = getattr(self.action_space, "n", None)
            if n is None:
                raise AttributeError(f"{type(self).__name__} has no discrete action masks")
            return np.ones(int(n), dtype=bool)
        return masks[0].copy()

    def render(self) -> Any:
        """With ``render_mode="ansi"``: a text frame (str) of the state; otherwise None."""
        return self.core.render_text(0) if self.render_mode == "ansi" else None
