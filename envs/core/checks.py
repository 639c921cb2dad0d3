"""Contract checks every cloudgym env must pass (its tests call them; so can a new env's author).

* :func:`check_batch_invariance`: sub-env *i* of a batch seeded with a list
  equals a single env seeded with the same entry, step for step, across an
  autoreset; with an int seed, sub-env *i* is the same whatever B is.
* :func:`check_determinism`: the same seed and actions give the same
  trajectory, info included.
* :func:`check_autoreset`: NEXT_STEP semantics: the step after an episode
  ends returns the next episode's first observation, zero reward and no
  done flag, and ignores that sub-env's action.
* :func:`check_bad_actions`: wrong shape, dtype and range raise errors that
  say what is wrong.
* :func:`check_sb3_adapter`: the SB3 adapter's trajectories equal the native
  env's, with ``terminal_observation`` for finished sub-envs.
* :func:`check_observations`: every observation lies in the single-env space
  and is finite, and so is every reward, across autoresets.

``tests/test_contract.py`` runs all of them on every registered env.

Actions come from :func:`probe_actions`: random admissible actions drawn from
a generator keyed by (sub-env seed, step), so that a sub-env receives the same
actions whether it runs alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv, take_row


def make_native(env_id: str, num_envs: int, **kwargs: Any) -> CloudGymVectorEnv:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env, CloudGymVectorEnv), f"{env_id} did not build a native cloudgym vector env"
    return env


def make_single(env_id: str, **kwargs: Any) -> CloudGymEnv:
    env = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
    assert isinstance(env, CloudGymEnv), f"{env_id} did not build a cloudgym single env"
    return env


def probe_actions(space: spaces.Space, masks: np.ndarray | None, keys: list[int], step: int | list[int]) -> Any:
    """One random admissible action per sub-env; sub-env j draws from ``default_rng([keys[j], step_j])``."""
    rows = []
    steps = [step] * len(keys) if isinstance(step, int) else step
    for j, key in enumerate(keys):
        rng = np.random.default_rng([key, steps[j]])
        if isinstance(space, spaces.Discrete):
            allowed = np.flatnonzero(masks[j]) if masks is not None else np.arange(int(space.n))
            if allowed.size == 0:
                allowed = np.arange(int(space.n))
            rows.append(space.start + rng.choice(allowed))
        elif isinstance(space, spaces.MultiDiscrete):
            rows.append(space.start + (rng.random(space.nvec.shape) * space.nvec).astype(np.int64))
        elif isinstance(space, spaces.Box):
            low = np.broadcast_to(space.low, space.shape)
            high = np.broadcast_to(space.high, space.shape)
            rows.append(rng.uniform(low, high).astype(space.dtype))
        elif isinstance(space, spaces.MultiBinary):
            rows.append(rng.integers(0, 2, size=space.shape).astype(np.int8))
        else:
            raise TypeError(f"probe_actions does not support {space}")
    return np.stack(rows)


def _equal(a: Any, b: Any, what: str) -> None:
    if isinstance(a, Mapping):
        assert set(a) == set(b), f"{what}: keys differ"
        for k in a:
            _equal(a[k], b[k], f"{what}[{k!r}]")
        return
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def _masks(env: CloudGymVectorEnv) -> np.ndarray | None:
    return env.action_masks() if env.core.has_action_masks else None


def check_batch_invariance(
    env_id: str, *, seeds: list[int], steps: int, env_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Sub-env i of a batch == a single env with seed ``seeds[i]``, for ``steps`` steps (with autoresets)."""
    kwargs = dict(env_kwargs or {})
    venv = make_native(env_id, len(seeds), **kwargs)
    obs, _ = venv.reset(seed=seeds)
    batched_obs, batched_rew, batched_done, batched_mask = [obs], [], [], []
    for t in range(steps):
        masks = _masks(venv)
        batched_mask.append(masks)
        obs, rew, term, trunc, _ = venv.step(probe_actions(venv.single_action_space, masks, seeds, t))
        batched_obs.append(obs)
        batched_rew.append(rew)
        batched_done.append((term, trunc))
    for i, seed in enumerate(seeds):
        env = make_single(env_id, **kwargs)
        obs_i, _ = env.reset(seed=seed)
        _equal(take_row(batched_obs[0], i), obs_i, f"sub-env {i} reset observation")
        restart = False
        for t in range(steps):
            if restart:
                # NEXT_STEP: the batch spends this step resetting sub-env i.
                obs_i, _ = env.reset()
                assert batched_rew[t][i] == 0.0, f"sub-env {i} step {t}: reward on an autoreset step"
                restart = False
            else:
                masks = batched_mask[t]
                single_mask = env.action_masks()[None] if masks is not None else None
                if masks is not None:
                    _equal(masks[i], single_mask[0], f"sub-env {i} step {t} action mask")  # type: ignore[index]
                action = probe_actions(env.action_space, single_mask, [seed], t)[0]
                obs_i, rew_i, term_i, trunc_i, _ = env.step(action)
                np.testing.assert_allclose(
                    batched_rew[t][i], rew_i, rtol=0, atol=0, err_msg=f"sub-env {i} step {t} reward"
                )
                assert (batched_done[t][0][i], batched_done[t][1][i]) == (term_i, trunc_i), f"sub-env {i} step {t} done"
                restart = term_i or trunc_i
            _equal(take_row(batched_obs[t + 1], i), obs_i, f"sub-env {i} step {t} observation")
    # With an int seed, sub-env i draws the same child whatever the batch size.
    small, large = make_native(env_id, 2, **kwargs), make_native(env_id, 3, **kwargs)
    obs_small, _ = small.reset(seed=seeds[0])
    obs_large, _ = large.reset(seed=seeds[0])
    for i in range(2):
        _equal(take_row(obs_small, i), take_row(obs_large, i), f"int seed: sub-env {i} with B=2 vs B=3")


def check_determinism(
    env_id: str, *, seed: int, num_envs: int, steps: int, env_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Two runs with the same seed and actions produce identical observations, rewards, flags and info."""
    trajectories = []
    for _ in range(2):
        env = make_native(env_id, num_envs, **dict(env_kwargs or {}))
        obs, _ = env.reset(seed=seed)
        keys = [seed * 1000 + i for i in range(num_envs)]
        record: list[Any] = [obs]
        for t in range(steps):
            out = env.step(probe_actions(env.single_action_space, _masks(env), keys, t))
            record.append(out)
        trajectories.append(record)
    for t, (a, b) in enumerate(zip(*trajectories)):
        if t == 0:
            _equal(a, b, "reset observation")
            continue
        for part, x, y in zip(("obs", "reward", "terminated", "truncated"), a[:4], b[:4]):
            _equal(x, y, f"step {t - 1} {part}")
        _compare_info(a[4], b[4], f"step {t - 1} info")


def _compare_info(a: Mapping[str, Any], b: Mapping[str, Any], what: str) -> None:
    assert set(a) == set(b), f"{what}: keys {sorted(a)} vs {sorted(b)}"
    for k in a:
        if isinstance(a[k], Mapping):
            _compare_info(a[k], b[k], f"{what}[{k!r}]")
        elif isinstance(a[k], np.ndarray) and a[k].dtype == object:
            for x, y in zip(a[k], b[k]):
                _equal(x, y, f"{what}[{k!r}]")
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}[{k!r}]")


def check_autoreset(
    env_id: str, *, seed: int, num_envs: int, max_steps: int, env_kwargs: Mapping[str, Any] | None = None
) -> int:
    """NEXT_STEP autoreset semantics; returns how many episode ends were checked (at least one)."""
    kwargs = dict(env_kwargs or {})
    env = make_native(env_id, num_envs, **kwargs)
    seeds = [seed + i for i in range(num_envs)]
    obs, _ = env.reset(seed=seeds)
    pending = np.zeros(num_envs, bool)
    ends = 0
    singles = [make_single(env_id, **kwargs) for _ in range(num_envs)]
    for i, single in enumerate(singles):
        single.reset(seed=seeds[i])
    for t in range(max_steps):
        masks = _masks(env)
        actions = probe_actions(env.single_action_space, masks, seeds, t)
        obs, rew, term, trunc, info = env.step(actions)
        for j in np.flatnonzero(pending):
            expected, _ = singles[j].reset()
            _equal(take_row(obs, int(j)), expected, f"sub-env {j}: observation after autoreset")
            assert rew[j] == 0.0, f"sub-env {j}: reward on an autoreset step"
            assert not term[j], f"sub-env {j}: terminated on an autoreset step"
            assert not trunc[j], f"sub-env {j}: truncated on an autoreset step"
            assert "_episode_stats" not in info or not info["_episode_stats"][j], (
                f"sub-env {j}: episode stats on an autoreset step"
            )
        for j in np.flatnonzero(~pending):
            singles[j].step(actions[j])
        done = term | trunc
        if done.any():
            assert "episode_stats" in info, "info lacks episode statistics at an episode end"
            assert np.array_equal(info["_episode_stats"], done), "info['_episode_stats'] must flag the ended sub-envs"
            assert np.array_equal(info["_metrics"], done), "info['metrics'] must flag ended sub-envs"
            for name, column in info["metrics"].items():
                assert np.all(np.isfinite(column[done])), f"metric {name} is not finite at episode end"
        ends += int(done.sum())
        pending = done
        if ends >= num_envs:
            break
    assert ends > 0, f"no episode ended within {max_steps} steps; give a smaller config"
    return ends


def check_observations(
    env_id: str, *, seed: int, num_envs: int, steps: int, env_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Every observation row (at reset, every step, after autoresets) is in the space and finite; rewards finite."""
    env = make_native(env_id, num_envs, **dict(env_kwargs or {}))
    space = env.single_observation_space
    keys = [seed * 1000 + i for i in range(num_envs)]
    obs, _ = env.reset(seed=seed)
    for t in range(steps + 1):
        for i in range(num_envs):
            row = take_row(obs, i)
            assert space.contains(row), f"step {t - 1}: sub-env {i} observation is outside {space}"
            _assert_finite(row, f"step {t - 1}: sub-env {i} observation")
        if t == steps:
            break
        obs, reward, _, _, _ = env.step(probe_actions(env.single_action_space, _masks(env), keys, t))
        assert np.all(np.isfinite(reward)), f"step {t}: non-finite reward {reward}"


def _assert_finite(value: Any, what: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _assert_finite(v, f"{what}[{k!r}]")
        return
    assert np.all(np.isfinite(value)), f"{what} is not finite"


def check_bad_actions(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """Out-of-space actions raise errors that name the problem."""
    import pytest

    env = make_native(env_id, 2, **dict(env_kwargs or {}))
    env.reset(seed=0)
    space = env.single_action_space
    good = probe_actions(space, _masks(env), [0, 1], 0)
    with pytest.raises(ValueError, match="shape"):
        env.step(good[:1])
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        with pytest.raises(TypeError, match="integer"):
            env.step(good.astype(np.float64))
        too_big = good.copy()
        too_big[0] = np.max(space.nvec if isinstance(space, spaces.MultiDiscrete) else int(space.n)) + 5
        with pytest.raises(ValueError, match="outside"):
            env.step(too_big)
    elif isinstance(space, spaces.Box):
        with pytest.raises(ValueError, match="non-finite"):
            env.step(np.full_like(good, np.nan))
        if np.all(np.isfinite(space.high)):
            with pytest.raises(ValueError, match="outside"):
                env.step(
                    good + (np.broadcast_to(space.high, space.shape) - np.broadcast_to(space.low, space.shape) + 1)
                )
    single = make_single(env_id, **dict(env_kwargs or {}))
    single.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        single.step(np.stack([good[0], good[0]]))


def check_sb3_adapter(
    env_id: str, *, seed: int, num_envs: int, steps: int, env_kwargs: Mapping[str, Any] | None = None
) -> None:
    """The SB3 adapter (SAME_STEP) reproduces the native env's (NEXT_STEP) episodes exactly.

    Each sub-env gets the same action at its k-th own step in both; rewards per
    episode, terminal observations (``infos[i]["terminal_observation"]``) and
    the next episodes' first observations must match, and only finished
    sub-envs get a non-empty info dict.
    """
    from cloudgym.envs.core.sb3_vec_env import SB3VecEnv

    kwargs = dict(env_kwargs or {})
    keys = [seed * 1000 + i for i in range(num_envs)]
    adapter = SB3VecEnv(make_native(env_id, num_envs, **kwargs))
    adapter.seed(seed)
    obs = adapter.reset()
    episodes_a: list[list[list[float]]] = [[[]] for _ in keys]
    ends_a: list[list[tuple[Any, Any]]] = [[] for _ in keys]
    for t in range(steps):
        masks = np.stack(adapter.env_method("action_masks")) if adapter.has_attr("action_masks") else None
        obs, rew, done, infos = adapter.step(probe_actions(adapter.action_space, masks, keys, [t] * num_envs))
        for i in range(num_envs):
            episodes_a[i][-1].append(float(rew[i]))
            if done[i]:
                assert {"terminal_observation", "episode", "TimeLimit.truncated", "metrics"} <= set(infos[i])
                ends_a[i].append((infos[i]["terminal_observation"], take_row(obs, i)))
                episodes_a[i].append([])
            else:
                assert not infos[i], "unfinished sub-envs must get empty info dicts"
    native = make_native(env_id, num_envs, **kwargs)
    obs_n, _ = native.reset(seed=seed)
    own_step = np.zeros(num_envs, int)
    pending = np.zeros(num_envs, bool)
    episodes_n: list[list[list[float]]] = [[[]] for _ in keys]
    ends_n: list[list[tuple[Any, Any]]] = [[] for _ in keys]
    last_terminal: list[Any] = [None] * num_envs
    while (own_step < steps).any() or pending.any():
        actions = probe_actions(native.single_action_space, _masks(native), keys, [int(k) for k in own_step])
        obs_n, rew, term, trunc, _ = native.step(actions)
        done = term | trunc
        for i in range(num_envs):
            if pending[i]:
                ends_n[i].append((last_terminal[i], take_row(obs_n, i)))
            elif own_step[i] < steps:
                episodes_n[i][-1].append(float(rew[i]))
                own_step[i] += 1
                if done[i]:
                    last_terminal[i] = take_row(obs_n, i)
                    episodes_n[i].append([])
        pending = done & ~pending
    for i in range(num_envs):
        a = [np.float32(r) for ep in episodes_a[i] for r in ep]
        n = [np.float32(r) for ep in episodes_n[i] for r in ep]
        assert a == n, f"sub-env {i}: rewards differ between the SB3 adapter and the native env"
        assert [len(ep) for ep in episodes_a[i]] == [len(ep) for ep in episodes_n[i]], (
            f"sub-env {i}: episode ends differ"
        )
        for k, ((term_a, first_a), (term_n, first_n)) in enumerate(zip(ends_a[i], ends_n[i])):
            _equal(term_a, term_n, f"sub-env {i} episode {k} terminal observation")
            _equal(first_a, first_n, f"sub-env {i} episode {k + 1} first observation")
