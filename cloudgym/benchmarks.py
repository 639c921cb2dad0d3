"""Throughput benchmarks: the native batched env against gymnasium's SyncVectorEnv, side by side.

:func:`vector_throughput` measures, in one run and on the same trajectories,
the native vector env, ``gymnasium.vector.SyncVectorEnv`` over B single envs
(the B=1 views of the same core) and the SB3 adapter. Actions are recorded
once from a random admissible policy and replayed to all three; the Sync env
is seeded so that its sub-env *i* plays the same episode as the native one.

Envs add their own benchmarks (a 14-day replay, a million-request replay)
with :func:`register_benchmark` from their baselines module; ``scripts/bench.py``
runs them after the throughput table. Figures are ratios measured in one run,
never timed assertions in tests.
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from cloudgym.evaluation import make_vector_env
from cloudgym.policy import RandomPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class Benchmark:
    """An env-specific benchmark: ``run(quick)`` returns named measurements."""

    env_id: str
    name: str
    description: str
    run: Callable[[bool], Mapping[str, float]]


_BENCHMARKS: list[Benchmark] = []


def register_benchmark(benchmark: Benchmark) -> None:
    _BENCHMARKS.append(benchmark)


def benchmarks(env_ids: list[str]) -> list[Benchmark]:
    import cloudgym.baselines  # noqa: F401  (registers the env benchmarks)

    return [b for b in _BENCHMARKS if b.env_id in env_ids]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
        cores = len(names) or None
    except OSError:
        cores = None
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(), "numpy": np.__version__}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _record_actions(env_id: str, batch: int, steps: int, seed: int, env_kwargs: Mapping[str, Any]) -> list[Any]:
    env = make_vector_env(env_id, batch, env_kwargs)
    policy = RandomPolicy(env, seed=seed)
    env.reset(seed=[seed + i for i in range(batch)])
    actions = []
    for _ in range(steps):
        mask = env.action_masks() if env.core.has_action_masks else None
        a = policy.act(None, mask)
        env.step(a)
        actions.append(a)
    env.close()
    return actions


def _time_steps(step: Callable[[Any], Any], actions: list[Any], seconds: float) -> float:
    """Steps per second (each a step of the whole batch), replaying actions for up to ``seconds``."""
    done = 0
    start = time.perf_counter()
    while True:
        step(actions[done % len(actions)])
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or done >= len(actions):
            return done / elapsed


def vector_throughput(
    env_id: str, batch: int, *, seconds: float = 2.0, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Env-steps/s (sub-env steps) of native, SyncVectorEnv and SB3 adapter, and native/sync ratio."""
    from cloudgym.envs.core.sb3_vec_env import SB3VecEnv

    kwargs = dict(env_kwargs or {})
    native = make_vector_env(env_id, batch, kwargs)
    native.reset(seed=[seed + i for i in range(batch)])
    # Enough recorded steps to fill the time budget of the fastest env.
    probe = _time_steps(native.step, _record_actions(env_id, batch, 20, seed, kwargs), 0.2)
    steps = int(min(max(probe * seconds * 1.2, 20), 20_000))
    actions = _record_actions(env_id, batch, steps, seed, kwargs)

    native = make_vector_env(env_id, batch, kwargs)
    native.reset(seed=[seed + i for i in range(batch)])
    native_sps = _time_steps(native.step, actions, seconds) * batch
    native.close()

    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id, disable_env_checker=True, **kwargs) for _ in range(batch)]
    )
    sync.reset(seed=seed)
    sync_sps = _time_steps(sync.step, actions, seconds) * batch
    sync.close()

    adapter = SB3VecEnv(make_vector_env(env_id, batch, kwargs))
    adapter.seed(seed)
    adapter.reset()
    sb3_sps = _time_steps(adapter.step, actions, seconds) * batch
    adapter.close()
    return {
        "native_steps_per_s": native_sps,
        "sync_steps_per_s": sync_sps,
        "ratio": native_sps / sync_sps,
        "sb3_steps_per_s": sb3_sps,
    }


def rllib_sampling_throughput(
    env_id: str, envs_per_runner: int, *, seconds: float = 3.0, env_kwargs: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Env steps/s of one RLlib env runner over the native vector env and over SyncVectorEnv, and their ratio.

    Needs the ``rllib`` extra; see :func:`cloudgym.agents.rllib.sampling_throughput`.
    """
    from cloudgym.agents.rllib import sampling_throughput

    native = sampling_throughput(
        env_id, envs_per_runner, vectorize_mode="vector_entry_point", seconds=seconds, env_kwargs=env_kwargs
    )
    sync = sampling_throughput(env_id, envs_per_runner, vectorize_mode="sync", seconds=seconds, env_kwargs=env_kwargs)
    return {"rllib_native_steps_per_s": native, "rllib_sync_steps_per_s": sync, "rllib_ratio": native / sync}
