"""Evaluate any policy on any env: one row of domain metrics per held-out episode.

``evaluate(policy, env_id, seeds)`` runs one episode per seed in a single
native vector env (sub-env *i* seeded with ``seeds[i]``, so each row equals
the same seed run alone) and returns one row per episode::

    {"env_id", "policy", "seed", "return", <the env's metrics...>, "scenario", "episode_length"}

The metric columns are the env's :class:`~cloudgym.envs.core.batch.MetricSpec`
names, read from ``info["metrics"]`` at the end of each episode.

Seeds: training draws from ``SeedSequence(train_seed)`` children; evaluation
uses the held-out integers from :data:`HELD_OUT_SEED_BASE` up, which no
training run uses. Periodic evaluation during training uses the same held-out
seeds as compare.py (no checkpoint is selected on them: the last one ships),
so agents and baselines overlay on the same episodes in TensorBoard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import cloudgym  # noqa: F401  (registers the env ids)
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.policy import Policy, PolicyFactory, make_policy, policy_specs

HELD_OUT_SEED_BASE = 1_000_000
"""Evaluation seeds are HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + 1, ..."""

Row = dict[str, Any]


def held_out_seeds(episodes: int, offset: int = 0) -> list[int]:
    """The first ``episodes`` held-out seeds (after ``offset``)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    return list(range(HELD_OUT_SEED_BASE + offset, HELD_OUT_SEED_BASE + offset + episodes))


def make_vector_env(env_id: str, num_envs: int, env_kwargs: Mapping[str, Any] | None = None) -> CloudGymVectorEnv:
    """The native vector env of a registered id."""
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **dict(env_kwargs or {}))
    if not isinstance(env, CloudGymVectorEnv):
        raise TypeError(f"{env_id} is not a cloudgym env")
    return env


def metric_names(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> list[str]:
    env = make_vector_env(env_id, 1, env_kwargs)
    names = [m.name for m in env.core.metrics]
    env.close()
    return names


def evaluate(
    policy: str | Path | Policy | PolicyFactory,
    env_id: str,
    seeds: Sequence[int],
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    scenario: str = "default",
    policy_name: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
    trust_checkpoint: bool = False,
) -> list[Row]:
    """Run one episode per seed; rows in the order of ``seeds``.

    ``policy`` is a registered name, a checkpoint path, a factory
    ``(env) -> Policy``, or a policy already built for a vector env of
    ``len(seeds)`` sub-envs (then ``len(seeds)`` must not exceed ``batch_size``).
    A checkpoint runs on the env kwargs it was trained with (``env_kwargs``
    given here override them); with ``env_kwargs=None``, on its training
    scenario too (``scenario:`` in checkpoint.yaml); ``trust_checkpoint`` allows formats that load
    by unpickling (see :mod:`cloudgym.agents.checkpoints`).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    spec = policy_specs(env_id).get(policy) if isinstance(policy, str) else None
    if spec is not None and spec.env_kwargs:
        # A registered policy that needs env fields (e.g. the histogram range it reads) gets them.
        env_kwargs = {**dict(env_kwargs or {}), **spec.env_kwargs}
    elif spec is None and isinstance(policy, str | Path) and Path(policy).is_dir():
        from cloudgym.agents.checkpoints import read_checkpoint
        from cloudgym.reports import get_report

        info = read_checkpoint(policy)
        if env_kwargs is None:
            # No env given: the scenario the agent was trained on, under the checkpoint's own kwargs.
            env_kwargs = {**get_report(env_id).scenarios.get(info.scenario or "", {}), **info.env_kwargs}
            scenario = info.scenario or scenario
        else:
            env_kwargs = {**info.env_kwargs, **env_kwargs}
    rows: list[Row] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc=f"{env_id} {policy_name or policy}", unit="ep", leave=False)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        rows.extend(_evaluate_chunk(policy, env_id, chunk, env_kwargs, scenario, policy_name, bar, trust_checkpoint))
    if bar is not None:
        bar.close()
    return rows


def _evaluate_chunk(
    policy: str | Path | Policy | PolicyFactory,
    env_id: str,
    seeds: list[int],
    env_kwargs: Mapping[str, Any] | None,
    scenario: str,
    policy_name: str | None,
    bar: Any,
    trust_checkpoint: bool,
) -> list[Row]:
    env = make_vector_env(env_id, len(seeds), env_kwargs)
    built: Policy
    if isinstance(policy, str | Path):
        built = make_policy(env_id, policy, env, trust=trust_checkpoint)
    elif isinstance(policy, Policy) and not isinstance(policy, type):
        built = policy
    else:
        built = policy(env)  # a factory: (env) -> Policy
    name = policy_name or getattr(built, "name", str(policy))
    core = env.core
    names = [m.name for m in core.metrics]
    obs, _ = env.reset(seed=seeds)
    built.reset(np.arange(env.num_envs))
    finished = np.zeros(env.num_envs, bool)
    restarting = np.zeros(env.num_envs, bool)
    results: dict[int, Row] = {}
    while not finished.all():
        mask = env.action_masks() if core.has_action_masks else None
        actions = built.act(obs, mask)
        obs, _, terminated, truncated, info = env.step(actions)
        if restarting.any():
            # NEXT_STEP autoreset: those sub-envs now show their next episode's first observation.
            built.reset(np.flatnonzero(restarting))
        ended = terminated | truncated
        first_end = ended & ~finished
        for i in np.flatnonzero(first_end):
            row: Row = {
                "env_id": env_id,
                "policy": name,
                "seed": seeds[i],
                "return": float(info["episode_stats"]["r"][i]),
            }
            for metric in names:
                row[metric] = float(info["metrics"][metric][i])
            row["scenario"] = scenario
            row["episode_length"] = int(info["episode_stats"]["l"][i])
            results[int(i)] = row
        if bar is not None and first_end.any():
            bar.update(int(first_end.sum()))
        finished |= ended
        restarting = ended
    env.close()
    return [results[i] for i in range(len(seeds))]


def summarise(rows: Sequence[Row], column: str) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``, as every table uses) of a column over rows, NaN-aware."""
    values = np.array([r[column] for r in rows], dtype=np.float64)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def write_eval_scalars(writer: Any, rows: Sequence[Row], step: int, metrics: Sequence[str]) -> None:
    """Log the mean of ``return`` and each metric under ``eval/<name>`` (the tags baselines and agents share)."""
    for column in ["return", *metrics]:
        mean, _ = summarise(rows, column)
        if np.isfinite(mean):
            writer.add_scalar(f"eval/{column}", mean, step)
