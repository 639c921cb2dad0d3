"""Throughput benchmarks that hold on a shared machine: interleaved windows over the same recorded actions.

A measurement taken back to back (first native for 2 s, then SyncVectorEnv
for 2 s) moves with whatever else the machine does in those seconds, and so
does the ratio. Every comparison here instead records the actions once (a
seeded random admissible policy), then alternates short windows (0.3 s by
default) of the contenders over those same actions for several rounds, and
reports the median window throughput of each, the spread of its windows, and
the median of the per-round ratios. A noisy window then moves one sample of
several, in both columns alike.

What is measured (``scripts/bench.py`` prints it and writes it as JSON):

* :func:`vector_throughput`: the native vector env, ``gymnasium.vector.SyncVectorEnv``
  over B single envs (seeded so that its sub-env *i* plays the native sub-env
  *i*'s episode) and the SB3 adapter, at each env's **default** config. An env
  may register a smaller row with :func:`register_throughput_config`; it is
  measured beside the default one, never instead of it.
* :func:`kernel_comparison`: the native env with the compiled kernels against
  the numpy reference path. The path is chosen when the env is imported or
  built, from the environment variable :data:`KERNELS_ENV_VAR`
  (``CLOUDGYM_KERNELS=numpy`` selects the numpy reference; unset is the
  library's default), so each path lives in its own long-lived worker
  process (:func:`serve_worker`) and the parent alternates their windows over
  a pipe. The first ``make_vec`` + ``reset`` in each fresh worker is the
  setup time a user sees (module import and any kernel compilation included).
* :func:`node_scaling`: time per node-step of one env at several sizes of a
  config field (Oversubscription's ``num_nodes``), interleaved likewise.
* :func:`sb3_step_share`: the share of SB3 PPO's wall time spent inside the
  env's step, with each env's own hyperparameter file and one torch thread.

Envs add their own benchmarks (a 14-day replay, a million-request replay)
with :func:`register_benchmark` from their baselines module; ``scripts/bench.py``
runs them after the tables. Figures are measured in one run, never timed
assertions in tests. This module needs only gymnasium and numpy at import;
SB3 and torch are imported by the functions that use them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import platform
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Protocol

import gymnasium as gym
import numpy as np

from cloudgym.evaluation import make_vector_env
from cloudgym.policy import RandomPolicy

KERNELS_ENV_VAR = "CLOUDGYM_KERNELS"
"""Environment variable read when an env is imported or built: ``numpy`` selects the numpy reference path."""

KERNEL_PATHS: Mapping[str, str | None] = {"kernels": None, "numpy": "numpy"}
"""The two paths of :func:`kernel_comparison` and the value of :data:`KERNELS_ENV_VAR` in each (None: unset)."""


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThroughputConfig:
    """A smaller config bench.py measures for one env beside (never instead of) its default config."""

    env_kwargs: Mapping[str, Any]
    reason: str
    """Why the extra row is worth reading (printed beside the figures)."""


_THROUGHPUT_CONFIGS: dict[str, ThroughputConfig] = {}


def register_throughput_config(env_id: str, env_kwargs: Mapping[str, Any], *, reason: str) -> None:
    """Make bench.py also measure ``env_id``'s native/Sync throughput with ``env_kwargs`` (say why in ``reason``)."""
    _THROUGHPUT_CONFIGS[env_id] = ThroughputConfig(env_kwargs=dict(env_kwargs), reason=reason)


def throughput_config(env_id: str) -> ThroughputConfig | None:
    """The extra (smaller) row an env registered for the throughput table, if any."""
    import cloudgym.baselines  # noqa: F401  (registers the env benchmarks)

    return _THROUGHPUT_CONFIGS.get(env_id)


def benchmarks(env_ids: list[str]) -> list[Benchmark]:
    import cloudgym.baselines  # noqa: F401  (registers the env benchmarks)

    return [b for b in _BENCHMARKS if b.env_id in env_ids]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalingSpec:
    """A config field whose size the step time should scale with linearly (time per unit-step ~ constant)."""

    env_id: str
    field: str
    values: tuple[int, ...]
    unit: str
    """What one unit of ``field`` is, for the printed column (``node`` gives "time per node-step")."""


SCALING: tuple[ScalingSpec, ...] = (
    ScalingSpec(env_id="Oversubscription-v0", field="num_nodes", values=(16, 32, 64, 128), unit="node"),
)
"""The size sweeps bench.py runs (the issue's target: 128 nodes within 1.5x of 16 nodes per node-step)."""


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
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": cpu,
        "cores": cores,
        "load_1min": round(load, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- interleaved windows


class Runner(Protocol):
    """One contender of an interleaved comparison."""

    name: str
    batch: int

    def window(self, seconds: float) -> tuple[int, float]:
        """Step for about ``seconds`` (at least one batch step): (batch steps done, seconds taken)."""
        ...

    def close(self) -> None: ...


class Replay:
    """Replays recorded batch actions through ``step``; rewinds (untimed) when the recording runs out.

    A window stops early at the end of the recording rather than time a
    reset; the next window starts from a rewound env (``rewind`` must bring
    it back to the state the recording started from).
    """

    def __init__(
        self,
        name: str,
        batch: int,
        actions: Sequence[Any],
        step: Callable[[Any], Any],
        rewind: Callable[[], Any],
        close: Callable[[], Any] = lambda: None,
    ) -> None:
        if not actions:
            raise ValueError(f"{name}: no recorded actions to replay")
        self.name = name
        self.batch = batch
        self.rewinds = 0
        self._actions = actions
        self._step = step
        self._rewind = rewind
        self._close = close
        self._pos = 0

    def window(self, seconds: float) -> tuple[int, float]:
        if self._pos >= len(self._actions):
            self._rewind()
            self._pos = 0
            self.rewinds += 1
        actions, step, end = self._actions, self._step, len(self._actions)
        pos = self._pos
        start = time.perf_counter()
        while True:
            step(actions[pos])
            pos += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or pos >= end:
                break
        done = pos - self._pos
        self._pos = pos
        return done, elapsed

    def close(self) -> None:
        self._close()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Series:
    """Throughputs of one contender's windows (env-steps/s: batch steps x B per second)."""

    windows: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.windows))

    @property
    def spread(self) -> float:
        """Half the range of the windows relative to their median (0.05: every window within about +-5%)."""
        return float((max(self.windows) - min(self.windows)) / 2 / self.median)

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "spread": self.spread, "windows": list(self.windows)}


def paired_ratio(a: Series, b: Series) -> float:
    """Median over rounds of a's window / b's window in the same round (each ratio from neighbouring windows)."""
    return float(np.median(np.asarray(a.windows) / np.asarray(b.windows)))


def interleave(runners: Sequence[Runner], *, window_s: float, rounds: int) -> dict[str, Series]:
    """Alternate windows of the runners for ``rounds`` rounds; env-steps/s of each window, per runner.

    Each runner first takes one untimed step (lazy allocations, first calls).
    The order within a round rotates, so no runner always follows the same
    one or always opens a round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0 s, got {window_s}")
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise ValueError(f"runner names must differ, got {names}")
    for runner in runners:
        runner.window(0.0)
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(rounds):
        for i in range(len(runners)):
            runner = runners[(i + k) % len(runners)]
            steps, seconds = runner.window(window_s)
            rates[runner.name].append(steps * runner.batch / seconds)
    return {name: Series(windows=tuple(w)) for name, w in rates.items()}


# ----------------------------------------------------------------------------- recorded actions


def record_actions(env: Any, *, seconds: float, min_steps: int, seed: int = 0) -> list[Any]:
    """Actions of a seeded random admissible policy, stepping ``env`` (already reset) for ``seconds`` of wall time.

    At least ``min_steps`` steps. Recording steps the env, so it runs at
    about the native rate (a little slower: the policy) and a recording of
    ``seconds`` covers about that much native replay.
    """
    policy = RandomPolicy(env, seed=seed)
    masked = env.core.has_action_masks
    actions: list[Any] = []
    start = time.perf_counter()
    while len(actions) < min_steps or time.perf_counter() - start < seconds:
        a = policy.act(None, env.action_masks() if masked else None)
        env.step(a)
        actions.append(a)
    return actions


def batch_seeds(seed: int, batch: int) -> list[int]:
    """Sub-env i plays seed + i, in every shell (SyncVectorEnv's reset(seed=s) seeds its envs so)."""
    return [seed + i for i in range(batch)]


def _native_replay_over(env: Any, actions: Sequence[Any], *, seed: int, name: str = "native") -> Replay:
    def rewind() -> None:
        env.reset(seed=batch_seeds(seed, env.num_envs))

    rewind()
    return Replay(name, env.num_envs, actions, env.step, rewind, env.close)


def sync_replay(env_id: str, batch: int, actions: Sequence[Any], *, seed: int, env_kwargs: Mapping[str, Any]) -> Replay:
    kwargs = dict(env_kwargs)
    env = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, disable_env_checker=True, **kwargs) for _ in range(batch)])

    def rewind() -> None:
        env.reset(seed=seed)

    rewind()
    return Replay("sync", batch, actions, env.step, rewind, env.close)


def sb3_replay(env_id: str, batch: int, actions: Sequence[Any], *, seed: int, env_kwargs: Mapping[str, Any]) -> Replay:
    """The SB3 adapter over its own native env, seeded like the native one (its SAME_STEP resets differ after
    the first episode end, which the recorded actions do not depend on: no env checks masks in step)."""
    from cloudgym.envs.core.sb3_vec_env import SB3VecEnv

    adapter = SB3VecEnv(make_vector_env(env_id, batch, env_kwargs))

    def rewind() -> None:
        adapter.core.seed(batch_seeds(seed, batch))
        adapter.reset()

    def step(a: Any) -> None:
        adapter.step_async(a)
        adapter.step_wait()

    rewind()
    return Replay("sb3", batch, actions, step, rewind, adapter.close)


# ----------------------------------------------------------------------------- native vs SyncVectorEnv vs SB3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recording:
    """Recorded actions of one env, config and B, shared by every comparison over them."""

    env_id: str
    batch: int
    env_kwargs: Mapping[str, Any]
    seed: int
    actions: list[Any]
    seconds: float
    """Wall time the recording took (random policy + native steps)."""


def recorded_native(
    env_id: str,
    batch: int,
    *,
    window_s: float,
    rounds: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    name: str = "native",
) -> tuple[Replay, Recording]:
    """Record enough actions for ``rounds`` native windows of ``window_s`` (a margin, the warm-up), then replay them.

    The env that recorded becomes the native replay (rewound to the same
    seeds), so a large default config is built once, not twice.
    """
    kwargs = dict(env_kwargs or {})
    env = make_vector_env(env_id, batch, kwargs)
    env.reset(seed=batch_seeds(seed, batch))
    start = time.perf_counter()
    actions = record_actions(env, seconds=1.5 * rounds * window_s, min_steps=rounds + 2, seed=seed)
    seconds = time.perf_counter() - start
    recording = Recording(env_id=env_id, batch=batch, env_kwargs=kwargs, seed=seed, actions=actions, seconds=seconds)
    return _native_replay_over(env, actions, seed=seed, name=name), recording


def record(
    env_id: str, batch: int, *, window_s: float, rounds: int, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None
) -> Recording:
    """A recording as :func:`recorded_native` makes it, without keeping its env."""
    replay, recording = recorded_native(
        env_id, batch, window_s=window_s, rounds=rounds, seed=seed, env_kwargs=env_kwargs
    )
    replay.close()
    return recording


def vector_throughput(
    env_id: str,
    batch: int,
    *,
    window_s: float = 0.3,
    rounds: int = 5,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Recording]:
    """Env-steps/s of native, SyncVectorEnv and SB3 adapter in alternating windows over one recording.

    ``ratio`` is native / Sync and ``sb3_vs_native`` SB3 / native, each the
    median of per-round ratios. SyncVectorEnv over a slow env at a large B
    may take longer than a window for one batch step; its windows are then
    single steps (fewer steps, the same per-env-step throughput). Returns the
    row and the recording (for :func:`kernel_comparison` over the same actions).
    """
    runners: list[Replay] = []
    try:
        native, r = recorded_native(env_id, batch, window_s=window_s, rounds=rounds, seed=seed, env_kwargs=env_kwargs)
        runners.append(native)
        runners.append(sync_replay(r.env_id, r.batch, r.actions, seed=r.seed, env_kwargs=r.env_kwargs))
        runners.append(sb3_replay(r.env_id, r.batch, r.actions, seed=r.seed, env_kwargs=r.env_kwargs))
        series = interleave(runners, window_s=window_s, rounds=rounds)
    finally:
        for runner in runners:
            runner.close()
    native_s, sync_s, sb3_s = series["native"], series["sync"], series["sb3"]
    row = {
        "native": native_s.as_dict(),
        "sync": sync_s.as_dict(),
        "sb3": sb3_s.as_dict(),
        "ratio": paired_ratio(native_s, sync_s),
        "sb3_vs_native": paired_ratio(sb3_s, native_s),
        "recorded_steps": len(r.actions),
        "record_s": r.seconds,
        "rewinds": {x.name: x.rewinds for x in runners},
    }
    return row, r


# ----------------------------------------------------------------------------- kernels vs the numpy path


class _Worker:
    """A long-lived ``python`` subprocess hosting one :class:`Replay` at a time, driven over its stdin/stdout."""

    def __init__(self, path: str) -> None:
        env = dict(os.environ)
        value = KERNEL_PATHS[path]
        env.pop(KERNELS_ENV_VAR, None)
        if value is not None:
            env[KERNELS_ENV_VAR] = value
        self.path = path
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from cloudgym.benchmarks import serve_worker; serve_worker()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def call(self, command: str, *args: Any) -> Any:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        pickle.dump((command, args), self._proc.stdin)
        self._proc.stdin.flush()
        try:
            ok, value = pickle.load(self._proc.stdout)
        except EOFError:
            raise RuntimeError(f"{self.path} worker (pid {self._proc.pid}) exited during {command!r}") from None
        if not ok:
            raise RuntimeError(f"{self.path} worker failed in {command!r}:\n{value}")
        return value

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.call("exit")
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class _RemoteReplay:
    """A :class:`Runner` whose replay runs in a :class:`_Worker` (the window is timed inside the worker)."""

    def __init__(self, worker: _Worker, batch: int) -> None:
        self.name = worker.path
        self.batch = batch
        self._worker = worker

    def window(self, seconds: float) -> tuple[int, float]:
        steps, elapsed = self._worker.call("window", seconds)
        return int(steps), float(elapsed)

    def close(self) -> None:
        self._worker.call("drop")


def serve_worker() -> None:
    """Entry point of a :class:`_Worker`: answer (command, args) pickles on stdin with (ok, value) on stdout.

    Commands: ``prepare(env_id, batch, env_kwargs, seed, actions)`` builds
    and resets the native env (returning make_vec and reset seconds) and,
    given actions, keeps a replay of them; ``window(seconds)``; ``drop``;
    ``info``; ``exit``. Anything the env prints goes to stderr, so that
    stdout carries only the protocol.
    """
    out: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    replay: Replay | None = None
    while True:
        try:
            command, args = pickle.load(inp)
        except EOFError:
            return
        try:
            if command == "exit":
                pickle.dump((True, None), out)
                out.flush()
                return
            if command == "prepare":
                env_id, batch, env_kwargs, seed, actions = args
                if replay is not None:
                    replay.close()
                    replay = None
                start = time.perf_counter()
                env = make_vector_env(env_id, batch, env_kwargs)
                made = time.perf_counter()
                env.reset(seed=batch_seeds(seed, batch))
                reset = time.perf_counter() - made
                if actions:
                    replay = _native_replay_over(env, actions, seed=seed)
                else:
                    env.close()
                value: Any = {"make_s": made - start, "reset_s": reset}
            elif command == "window":
                if replay is None:
                    raise RuntimeError("window before prepare(..., actions)")
                value = replay.window(*args)
            elif command == "drop":
                if replay is not None:
                    replay.close()
                replay = None
                value = None
            elif command == "info":
                value = {KERNELS_ENV_VAR: os.environ.get(KERNELS_ENV_VAR), "pid": os.getpid()}
            else:
                raise ValueError(f"unknown command {command!r} (known: prepare, window, drop, info, exit)")
            pickle.dump((True, value), out)
        except Exception:
            pickle.dump((False, traceback.format_exc()), out)
        out.flush()


@contextlib.contextmanager
def kernel_workers() -> Iterator[dict[str, _Worker]]:
    """One fresh worker process per path of :data:`KERNEL_PATHS`, closed on exit."""
    workers: dict[str, _Worker] = {}
    try:
        for path in KERNEL_PATHS:
            workers[path] = _Worker(path)
        yield workers
    finally:
        for worker in workers.values():
            worker.close()


def kernel_comparison(
    env_id: str,
    recordings: Sequence[Recording],
    *,
    setup_batch: int,
    window_s: float = 0.3,
    rounds: int = 5,
) -> dict[str, Any]:
    """Native env with the kernels vs the numpy path, each in its own fresh process, over the same recordings.

    First both workers build and reset the env at ``setup_batch`` (the first
    env of a fresh process: import and kernel compilation included; the
    setup column), then for each recording (default config, one per B) their
    windows alternate. ``ratio`` is kernels / numpy env-steps/s, the median
    of per-round ratios; it reads ~1.0x where an env has no kernels.
    """
    by_batch = {r.batch: r for r in recordings}
    rows: list[dict[str, Any]] = []
    with kernel_workers() as workers:
        info = {path: w.call("info") for path, w in workers.items()}
        # The setup batch first, so its make_vec + reset is the first in each process.
        first = by_batch.get(setup_batch)
        setup: dict[str, Any] = {}
        for path, worker in workers.items():
            if first is None:
                setup[path] = worker.call("prepare", env_id, setup_batch, {}, 0, None)
            else:
                setup[path] = worker.call(
                    "prepare", env_id, setup_batch, dict(first.env_kwargs), first.seed, first.actions
                )
        order = ([first] if first is not None else []) + [r for r in recordings if r.batch != setup_batch]
        for k, rec in enumerate(order):
            if k > 0 or first is None:
                for worker in workers.values():
                    worker.call("prepare", env_id, rec.batch, dict(rec.env_kwargs), rec.seed, rec.actions)
            runners = [_RemoteReplay(w, rec.batch) for w in workers.values()]
            try:
                series = interleave(runners, window_s=window_s, rounds=rounds)
            finally:
                for runner in runners:
                    runner.close()
            rows.append(
                {
                    "batch": rec.batch,
                    "kernels": series["kernels"].as_dict(),
                    "numpy": series["numpy"].as_dict(),
                    "ratio": paired_ratio(series["kernels"], series["numpy"]),
                }
            )
    return {
        "env_id": env_id,
        "setup_batch": setup_batch,
        "setup": {
            path: {**s, "make_reset_s": s["make_s"] + s["reset_s"], KERNELS_ENV_VAR: info[path][KERNELS_ENV_VAR]}
            for path, s in setup.items()
        },
        "rows": sorted(rows, key=lambda row: row["batch"]),
    }


# ----------------------------------------------------------------------------- scaling with a config field


def node_scaling(
    spec: ScalingSpec,
    batch: int,
    *,
    values: Sequence[int] | None = None,
    window_s: float = 0.3,
    rounds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Time per unit-step (one node for one step of one sub-env) at each value of the field, interleaved.

    ``ratio`` is the largest value's time per unit-step over the smallest's
    (median of per-round ratios): 1.0 means the step scales linearly.
    """
    values = tuple(values or spec.values)
    if len(values) < 2:
        raise ValueError(f"{spec.env_id} {spec.field}: need at least two values to compare, got {values}")
    runners: list[Replay] = []
    try:
        for v in values:
            replay, _ = recorded_native(
                spec.env_id, batch, window_s=window_s, rounds=rounds, seed=seed, env_kwargs={spec.field: v}, name=str(v)
            )
            runners.append(replay)
        series = interleave(runners, window_s=window_s, rounds=rounds)
    finally:
        for runner in runners:
            runner.close()
    # Seconds per unit-step of each window: 1 / (env-steps/s x units).
    per_unit = {v: Series(windows=tuple(1.0 / (w * v) for w in series[str(v)].windows)) for v in values}
    lo, hi = values[0], values[-1]
    return {
        "env_id": spec.env_id,
        "field": spec.field,
        "unit": spec.unit,
        "batch": batch,
        "rows": [{"value": v, "seconds_per_unit_step": per_unit[v].as_dict()} for v in values],
        "ratio": paired_ratio(per_unit[hi], per_unit[lo]),
        "ratio_of": [hi, lo],
    }


# ----------------------------------------------------------------------------- SB3 PPO's time in env.step


def sb3_algorithm_for(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> str:
    """MaskablePPO where the env has action masks and its hyperparameter file a MaskablePPO section, else PPO."""
    import yaml

    from cloudgym.agents.sb3 import HYPERPARAMS_DIR

    env = make_vector_env(env_id, 1, env_kwargs)
    masked = env.core.has_action_masks
    env.close()
    sections = yaml.safe_load((HYPERPARAMS_DIR / f"{env_id}.yaml").read_text()) or {}
    return "MaskablePPO" if masked and "MaskablePPO" in sections else "PPO"


def sb3_step_share(env_id: str, *, timesteps: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Share of SB3 PPO's ``learn`` wall time spent in the env's step, at the env's own hyperparameters.

    The algorithm is :func:`sb3_algorithm_for`'s, its settings (num_envs,
    env_kwargs, network, n_steps, epochs, VecNormalize) those of
    ``agents/hyperparams/<env>.yaml``; torch runs one thread, as
    scripts/train.py does by default. ``step_s`` times ``step_async`` +
    ``step_wait`` of the SB3 adapter (the native step, autoresets and the
    info dicts of finished sub-envs); ``env_share`` adds resets and action
    masks. The periodic evaluation of training is not run.
    """
    import torch

    from cloudgym.agents.sb3 import algorithm, load_hyperparams
    from cloudgym.envs.core.sb3_vec_env import SB3VecEnv

    class TimedSB3VecEnv(SB3VecEnv):
        def __init__(self, env: Any) -> None:
            super().__init__(env)
            self.seconds = {"step": 0.0, "reset": 0.0, "masks": 0.0}

        def reset(self) -> Any:
            start = time.perf_counter()
            try:
                return super().reset()
            finally:
                self.seconds["reset"] += time.perf_counter() - start

        def step_async(self, actions: np.ndarray) -> None:
            start = time.perf_counter()
            super().step_async(actions)
            self.seconds["step"] += time.perf_counter() - start

        def step_wait(self) -> Any:
            start = time.perf_counter()
            try:
                return super().step_wait()
            finally:
                self.seconds["step"] += time.perf_counter() - start

        def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
            start = time.perf_counter()
            try:
                return super().env_method(method_name, *args, indices=indices, **kwargs)
            finally:
                self.seconds["masks"] += time.perf_counter() - start

    algo = sb3_algorithm_for(env_id)
    run, algo_kwargs, hp_file = load_hyperparams(env_id, algo)
    env_kwargs = dict(run.get("env_kwargs") or {})
    num_envs = int(run.get("num_envs", 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timed = TimedSB3VecEnv(make_vector_env(env_id, num_envs, env_kwargs))
        vec_env: Any = timed
        if run.get("normalize_reward", False):
            from stable_baselines3.common.vec_env import VecNormalize

            gamma = float(algo_kwargs.get("gamma", 0.99))
            vec_env = VecNormalize(timed, norm_obs=False, norm_reward=True, gamma=gamma)
        model = algorithm(algo)(
            run.get("policy", "MlpPolicy"), vec_env, seed=seed, device="cpu", verbose=0, **algo_kwargs
        )
        start = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        wall = time.perf_counter() - start
        vec_env.close()
    finally:
        torch.set_num_threads(threads)
    s = timed.seconds
    return {
        "env_id": env_id,
        "algo": algo,
        "hyperparams_file": hp_file.name,
        "num_envs": num_envs,
        "env_kwargs": env_kwargs,
        "timesteps": int(model.num_timesteps),
        "wall_s": wall,
        "step_s": s["step"],
        "reset_s": s["reset"],
        "masks_s": s["masks"],
        "step_share": s["step"] / wall,
        "env_share": (s["step"] + s["reset"] + s["masks"]) / wall,
    }


# ----------------------------------------------------------------------------- RLlib


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
