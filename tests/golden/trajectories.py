"""Golden trajectories: every env and scenario on fixed seeds and actions, recorded once and replayed.

A refactor or a compiled kernel must reproduce these bit for bit. Each case
runs the native vector env (B = 2, so autoreset and batch rows are exercised)
for a fixed number of steps with recorded actions, and stores per step a
digest of the observation, reward, terminated/truncated flags, the env's
info (its own keys, not Gymnasium's episode statistics, whose key belongs to
the wrappers) and the action masks. The actions themselves are stored, so
replaying does not depend on how a Gymnasium version samples a space.

Record again only when a change of behaviour is intended, and say so in the
commit: ``python -m tests.golden.trajectories --record``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import cloudgym  # noqa: F401  (registers the ids)

GOLDEN_DIR = Path(__file__).parent
SHARED_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
NUM_ENVS = 2
SEED = 20261205
EPISODE_INFO_KEYS = frozenset({"episode", "_episode", "episode_stats", "_episode_stats", "action_mask", "_action_mask"})
"""Info keys derived from what is digested anyway: episode statistics (from rewards; their key moved between
versions) and the action masks (digested under "masks")."""


@dataclasses.dataclass(frozen=True)
class Case:
    env_id: str
    name: str
    kwargs: dict[str, Any]
    steps: int
    needs_traces: bool = False

    @property
    def file(self) -> Path:
        return GOLDEN_DIR / "data" / f"{self.env_id}__{self.name}.json"


def _cases() -> Iterator[Case]:
    yield Case("ToyCluster-v0", "default", {"steps_per_episode": 12}, 30)
    for scenario in ("default", "toy_timer", "two_weeks", "fleet"):
        yield Case("FaaSKeepAlive-v0", scenario, {"scenario": scenario}, 40)
    yield Case("FaaSKeepAlive-v0", "short", {"warmup_minutes": 60, "episode_minutes": 20}, 50)
    yield Case(
        "FaaSKeepAlive-v0", "fleet_short", {"scenario": "fleet", "warmup_minutes": 30, "episode_minutes": 20}, 50
    )
    yield Case(
        "FaaSKeepAlive-v0",
        "trace2021",
        {
            "workload": "trace",
            "trace_path": str(SHARED_TRACES / "AzureFunctionsInvocationTrace2021_first998.csv"),
            "trace_format": "azure2021",
            "warmup_minutes": 10,
            "episode_minutes": 15,
        },
        40,
        needs_traces=True,
    )
    llm = ("default", "coding", "conversation", "high_load", "chunked", "heterogeneous", "oracle_lengths", "llama70b")
    for scenario in llm:
        yield Case("LLMRouter-v0", scenario, {"scenario": scenario}, 60)
    yield Case("LLMRouter-v0", "small", {"scenario": "small"}, 110)
    yield Case("LLMRouter-v0", "trace", {"scenario": "trace"}, 60, needs_traces=True)
    yield Case("LLMRouter-v0", "guided", {"guidance_weight": 0.5, "requests_per_episode": 30}, 70)
    for share in ("+0%", "+30%", "+50%"):
        yield Case("GPUPowerCap-v0", share.strip("+%") + "pct", {"scenario": share}, 25)
    yield Case("GPUPowerCap-v0", "small_row", {"base_servers": 5, "steps_per_episode": 30}, 70)
    for scenario in ("default", "workload_hints", "noisy_hints", "strict_threshold", "uncorrelated", "toy"):
        yield Case("Oversubscription-v0", scenario, {"scenario": scenario}, 30)
    yield Case("Oversubscription-v0", "toy_short", {"scenario": "toy", "hours": 6}, 40)
    for scenario in ("compass", "realistic"):
        yield Case("DCLifecycle-v0", scenario, {"scenario": scenario}, 90)


CASES: tuple[Case, ...] = tuple(_cases())
PLATFORM_FILE = GOLDEN_DIR / "data" / "_platform.json"


def platform_fingerprint() -> str:
    """Digest of numpy's transcendental functions on fixed inputs.

    numpy picks their implementation by CPU (SVML on AVX-512, others elsewhere), and they differ in the last
    bit for a few per cent of inputs: trajectories recorded on one kind of CPU are bit-identical only on a
    machine whose fingerprint is the same.
    """
    x = np.random.default_rng(0).uniform(0.01, 50.0, 4096)
    y = np.random.default_rng(1).uniform(-2.0, 3.0, 4096)
    funcs = (np.power(x, y), np.exp(y * 7.0), np.log(x), np.log1p(x), np.tanh(y), np.sin(x), np.cos(x))
    f32 = (np.exp(y.astype(np.float32)), np.log(x.astype(np.float32)))
    return digest([*funcs, *f32])


# ----------------------------------------------------------------------------- digests


def _update(h: Any, value: Any) -> None:
    """Feed a value into a hash canonically: arrays by dtype, shape and bytes; dicts by sorted key."""
    if value is None:
        h.update(b"None")
    elif isinstance(value, Mapping):
        for key in sorted(value):
            h.update(repr(key).encode())
            _update(h, value[key])
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"object{value.shape}".encode())
        for item in value.ravel():
            _update(h, item)
    elif isinstance(value, list | tuple):
        h.update(f"seq{len(value)}".encode())
        for item in value:
            _update(h, item)
    elif isinstance(value, np.generic | int | float | bool):
        _update(h, np.asarray(value))
    else:
        h.update(repr(value).encode())


def digest(value: Any) -> str:
    h = hashlib.sha256()
    _update(h, value)
    return h.hexdigest()[:20]


def _random_action(space: gym.spaces.Space, rng: np.random.Generator, mask: np.ndarray | None) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _random_action(sub, rng, None) for k, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Discrete):
        if mask is not None:
            return int(space.start) + int(rng.choice(np.flatnonzero(mask)))
        return int(space.start) + int(rng.integers(int(space.n)))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (space.start + rng.integers(0, space.nvec)).astype(space.dtype)
    if isinstance(space, gym.spaces.MultiBinary):
        return rng.integers(0, 2, size=space.shape).astype(space.dtype)
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high, size=space.shape).astype(space.dtype)
    raise TypeError(f"no golden action sampler for {type(space).__name__}")


def _stack(actions: list[Any]) -> Any:
    if isinstance(actions[0], Mapping):
        return {k: _stack([a[k] for a in actions]) for k in actions[0]}
    return np.asarray(actions)


def _to_json(actions: Any) -> Any:
    if isinstance(actions, Mapping):
        return {k: _to_json(v) for k, v in actions.items()}
    return {"dtype": actions.dtype.str, "data": actions.tolist()}


def _from_json(actions: Any) -> Any:
    if "dtype" in actions and "data" in actions:
        return np.asarray(actions["data"], dtype=np.dtype(actions["dtype"]))
    return {k: _from_json(v) for k, v in actions.items()}


def _masks(env: Any) -> np.ndarray | None:
    core = env.unwrapped.core if hasattr(env.unwrapped, "core") else env.core
    return core.action_masks() if core.has_action_masks else None


def run(case: Case, actions: list[Any] | None = None) -> dict[str, Any]:
    """Run one case; with ``actions`` replay them, else draw them from a seeded generator."""
    env = gym.make_vec(case.env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", **case.kwargs)
    rng = np.random.default_rng(SEED)
    obs, _ = env.reset(seed=SEED)
    steps: list[dict[str, str]] = [{"obs": digest(obs), "masks": digest(_masks(env))}]
    taken: list[Any] = []
    for t in range(case.steps):
        if actions is None:
            masks = _masks(env)
            batch = _stack(
                [
                    _random_action(env.single_action_space, rng, None if masks is None else masks[i])
                    for i in range(NUM_ENVS)
                ]
            )
        else:
            batch = actions[t]
        taken.append(batch)
        obs, reward, terminated, truncated, info = env.step(batch)
        own_info = {k: v for k, v in info.items() if k not in EPISODE_INFO_KEYS}
        steps.append(
            {
                "obs": digest(obs),
                "reward": digest(np.asarray(reward, np.float64)),
                "done": digest([np.asarray(terminated), np.asarray(truncated)]),
                "info": digest(own_info),
                "masks": digest(_masks(env)),
                "ended": int(np.sum(terminated | truncated)),
            }
        )
    env.close()
    return {"case": dataclasses.asdict(case), "actions": [_to_json(a) for a in taken], "steps": steps}


def load(case: Case) -> dict[str, Any]:
    record = json.loads(case.file.read_text())
    record["actions"] = [_from_json(a) for a in record["actions"]]
    return record


def record(cases: tuple[Case, ...] = CASES) -> None:
    PLATFORM_FILE.parent.mkdir(parents=True, exist_ok=True)
    PLATFORM_FILE.write_text(json.dumps({"numpy_fingerprint": platform_fingerprint()}) + "\n")
    for case in cases:
        result = run(case)
        case.file.parent.mkdir(parents=True, exist_ok=True)
        case.file.write_text(json.dumps(result, separators=(",", ":")) + "\n")
        ended = sum(s.get("ended", 0) for s in result["steps"])
        print(f"recorded {case.env_id} {case.name}: {case.steps} steps, {ended} episode ends")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help="write the golden files (only for intended changes)")
    parser.add_argument("--only", default=None, help="record only cases whose env id contains this")
    args = parser.parse_args()
    if not args.record:
        parser.error("nothing to do: pass --record (tests/test_golden.py replays them)")
    record(tuple(c for c in CASES if args.only is None or args.only in c.env_id))


if __name__ == "__main__":
    main()
