"""Bad config values through ``gym.make_vec``: every one must fail at make naming its field, or run cleanly.

:func:`probe` makes an env with one config field (or ``num_envs``) set to a
value, resets it and takes a few random valid steps, under a time bound and
an address-space bound, and sorts what happened into an :class:`Outcome`.
The only acceptable outcomes are ``named`` (a ValueError or TypeError at make
whose message contains the field's name) and ``accepted`` (make, reset and
the steps ran, every observation and reward finite). :data:`CORPUS` and
:func:`corpus_for` give the fixed values ``scripts/config_robustness.py``
tries per field for the table in docs/robustness.md; the property test
(tests/test_config_robustness.py) draws further values with hypothesis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np

import cloudgym
from cloudgym.agents.loopback import time_limit
from cloudgym.envs.fields import Range
from cloudgym.envs.registration import ENV_MODULES, TEST_ENV_MODULES

SMALL_BASES: Mapping[str, Mapping[str, Any]] = {
    "ToyCluster-v0": {"steps_per_episode": 12},
    "FaaSKeepAlive-v0": {"episode_minutes": 40, "warmup_minutes": 30},
    "LLMRouter-v0": {"instances": ("llama2-7b-a100",) * 3, "slots": 24, "requests_per_episode": 48},
    "GPUPowerCap-v0": {"base_servers": 4, "steps_per_episode": 25, "warmup_s": 10, "cap_delay_s": 5},
    "Oversubscription-v0": {"num_nodes": 3, "node_cores": 16, "hours": 5},
    "DCLifecycle-v0": {"horizon_quarters": 24, "shock_window": (2, 20)},
}
"""The small config each env's values are tried on (the defaults where they are quick), one field changed."""

NUM_ENVS = 2
"""Sub-envs of every probe."""
STEPS = 3
"""Random valid steps after reset."""
TIMEOUT_S = 30.0
"""Wall-clock bound of one probe (a safety net against hangs, far above what a probe takes)."""
MEMORY_HEADROOM = 3 << 30
"""Address space a probe may add to the process (bytes): a runaway allocation fails instead of swapping
the machine into its OOM killer."""


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    """make, reset and the steps ran; observations and rewards finite."""
    NAMED = "named"
    """A ValueError or TypeError at make whose message contains the field's name."""
    UNNAMED = "unnamed"
    """A ValueError or TypeError at make that does not name the field."""
    LATE = "late"
    """Accepted at make, then an error at reset or step."""
    CRASH = "crash"
    """Any other exception at make (MemoryError, OverflowError, ZeroDivisionError, ...)."""
    HANG = "hang"
    """Did not finish within the time bound."""
    NON_FINITE = "non-finite"
    """Ran, but an observation or a reward was NaN or infinite."""
    SILENT = "silent"
    """Accepted, but the config holds a value not of the field's type (``'False'`` in a bool field)."""

    @property
    def ok(self) -> bool:
        return self in (Outcome.ACCEPTED, Outcome.NAMED)


@dataclasses.dataclass(frozen=True)
class Trial:
    env_id: str
    field: str
    value: Any
    outcome: Outcome
    detail: str
    """The error's type and message, or what was non-finite; empty when accepted."""
    seconds: float
    """Wall-clock time of the probe (on whatever else the machine was doing)."""


class ProbeTimeout(BaseException):
    """Raised by the alarm inside a probe (a BaseException, so env code's ``except Exception`` lets it through)."""


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _memory_bound(headroom: int) -> Iterator[None]:
    size = _vm_size()
    if size is None or not sys.platform.startswith("linux"):
        yield
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _finite(tree: Any) -> bool:
    if isinstance(tree, Mapping):
        return all(_finite(v) for v in tree.values())
    arr = np.asarray(tree)
    return not np.issubdtype(arr.dtype, np.inexact) or bool(np.isfinite(arr).all())


def probe(
    env_id: str,
    field: str,
    value: Any,
    base: Mapping[str, Any] | None = None,
    *,
    steps: int = STEPS,
    timeout_s: float = TIMEOUT_S,
    memory_headroom: int = MEMORY_HEADROOM,
    seed: int = 0,
) -> Trial:
    """Make ``env_id`` (``NUM_ENVS`` sub-envs) with ``field=value`` over ``base``, reset and step; sort the result."""
    kwargs = dict(SMALL_BASES[env_id] if base is None else base)
    num_envs: Any = NUM_ENVS
    if field == "num_envs":
        num_envs = value
    else:
        kwargs[field] = value

    start = time.perf_counter()

    def trial(outcome: Outcome, detail: str = "") -> Trial:
        return Trial(env_id, field, value, outcome, detail, time.perf_counter() - start)

    stage = "make"
    try:
        with time_limit(timeout_s, ProbeTimeout), _memory_bound(memory_headroom):
            try:
                env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
            except (ValueError, TypeError) as err:
                named = field in str(err)
                return trial(Outcome.NAMED if named else Outcome.UNNAMED, f"{type(err).__name__}: {err}")
            if field != "num_envs":
                held = getattr(env.unwrapped.config, field)
                if not conforms(field_annotations(env_id)[field], held):
                    return trial(Outcome.SILENT, f"the config holds {held!r} ({type(held).__name__})")
            stage = "reset"
            obs, _ = env.reset(seed=seed)
            if not _finite(obs):
                return trial(Outcome.NON_FINITE, "observation at reset")
            env.action_space.seed(seed)
            stage = "step"
            for _ in range(steps):
                obs, reward, _, _, _ = env.step(env.action_space.sample())
                if not _finite(obs):
                    return trial(Outcome.NON_FINITE, "observation")
                if not _finite(reward):
                    return trial(Outcome.NON_FINITE, f"reward {reward}")
            env.close()
    except ProbeTimeout as err:
        return trial(Outcome.HANG, f"at {stage}: {err}")
    except Exception as err:
        outcome = Outcome.CRASH if stage == "make" else Outcome.LATE
        return trial(outcome, f"at {stage}: {type(err).__name__}: {err}")
    return trial(Outcome.ACCEPTED)


def conforms(annotation: Any, value: Any) -> bool:
    """Whether a value a config holds is of its field's annotated type (bool, int, float, str, tuples, None)."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return type(value) is bool
    if annotation is int:
        return type(value) is int
    if annotation is float:
        return type(value) is float and math.isfinite(value)
    if annotation is str:
        return type(value) is str
    if origin is Literal:
        return value in typing.get_args(annotation) and type(value) is str
    if origin is tuple:
        args = typing.get_args(annotation)
        if type(value) is not tuple:
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(args[0], v) for v in value)
        return len(value) == len(args) and all(conforms(a, v) for a, v in zip(args, value))
    if origin is not None and type(None) in typing.get_args(annotation):
        return value is None or any(conforms(a, value) for a in typing.get_args(annotation) if a is not type(None))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


# ----------------------------------------------------------------------------- the fixed corpus

NAN, INF = math.nan, math.inf
GENERIC: tuple[Any, ...] = (None, True, "False", "4", "", [], {}, (1, 2, 3, 4, 5), -1, 1.5, NAN, INF, 10**100, 1e300)
"""Values tried on every field, whatever its type."""
BY_TYPE: Mapping[Any, tuple[Any, ...]] = {
    int: (0, 1, 2, 4.0, -(2**63), 2**31, 10**9, 2**63, 10**400, np.int64(3), np.float64(3.0), -INF),
    float: (0, 0.0, -0.0, -1e300, 1e-300, -INF, 10**400, np.float32(0.5), "0.5", 0.5, 2.0, 1e9),
    bool: (False, 0, 1, "True", np.bool_(True), "yes"),
    str: ("nonexistent", 4, b"x", "TRACE", " mix"),
}
"""Further values per scalar annotation."""


def _element_values(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return ("other", *typing.get_args(tp)[:1])
    if origin is not None and type(None) in typing.get_args(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return tuple(v for a in inner for v in _element_values(a))
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0]
        n = 2 if len(args) == 2 and args[1] is Ellipsis else len(args)
        good = {int: 1, float: 0.5, str: "x"}.get(item, 1)
        return (
            (),
            (good,) * (n - 1) if n > 1 else (good,) * 3,
            (good,) * (n + 1),
            [good] * n,
            (NAN,) * n,
            (INF,) * n,
            (-1,) * n,
            (0,) * n,
            (10**12,) * n,
            ("1",) * n,
            "ab",
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
        return (
            {},
            {"no_such_field": 1},
            {names[0]: -3},
            {names[0]: NAN},
            {names[0]: "3"},
            {names[0]: 1e300},
            dict.fromkeys(names, 0),
            tp(),
        )
    return BY_TYPE.get(tp, ())


def corpus_for(annotation: Any) -> tuple[Any, ...]:
    """The fixed values tried on a field of this annotation: :data:`GENERIC` and those of its type."""
    return GENERIC + _element_values(annotation)


NUM_ENVS_CORPUS: tuple[Any, ...] = (0, -1, 1, 3, 1.0, "2", True, None, 10**8, 2**16 + 1, 2**63, np.int32(2))
"""Values tried on ``num_envs``."""


def config_class(env_id: str) -> type:
    """The config dataclass of a registered env id."""
    module_name, name = {**ENV_MODULES, **TEST_ENV_MODULES}[env_id]
    module = __import__(f"cloudgym.envs.{module_name}", fromlist=["_"])
    return typing.cast(type, getattr(module, f"{name}Core").config_cls)


def field_annotations(env_id: str) -> dict[str, Any]:
    """Every init field of the env's config with its resolved annotation."""
    cls = config_class(env_id)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def numeric_type(annotation: Any) -> Any:
    """int or float for a numeric field or a tuple of them (None otherwise)."""
    for tp in (annotation, *typing.get_args(annotation)):
        if tp in (int, float):
            return tp
    return None


def edge_values(annotation: Any, bound: Range) -> tuple[Any, ...]:
    """Each finite end of a field's range and a value just beyond it (as a tuple for a tuple field)."""
    tp = numeric_type(annotation)
    if tp is None:
        return ()
    values: list[Any] = []
    for end, step in ((bound.low, -1), (bound.high, 1)):
        if end is None:
            continue
        if tp is int:
            values += [int(end), int(end) + step]
        else:
            values += [float(end), float(end) + step * max(abs(end) * 1e-3, 1e-6)]
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        n = 2 if len(args) == 2 and args[1] is Ellipsis else len(args)
        return tuple((v,) * n for v in values)
    return tuple(values)


def corpus(env_id: str) -> Iterator[tuple[str, Any]]:
    """(field, value) pairs of the fixed corpus of one env, ``num_envs`` and each range's ends included."""
    for value in NUM_ENVS_CORPUS:
        yield "num_envs", value
    ranges: Mapping[str, Range] = getattr(config_class(env_id), "FIELD_RANGES", {})
    for name, annotation in field_annotations(env_id).items():
        for value in corpus_for(annotation):
            yield name, value
        if name in ranges:
            for value in edge_values(annotation, ranges[name]):
                yield name, value


def run_corpus(env_ids: Sequence[str] | None = None) -> list[Trial]:
    """Probe every (field, value) of the fixed corpus of each env."""
    ids = list(env_ids) if env_ids is not None else list(cloudgym.ALL_ENV_IDS)
    return [probe(env_id, field, value) for env_id in ids for field, value in corpus(env_id)]


def table(trials: Sequence[Trial]) -> str:
    """A markdown table: per env, the inputs tried and how many ended in each outcome."""
    envs = list(dict.fromkeys(t.env_id for t in trials))
    columns = [Outcome.NAMED, Outcome.ACCEPTED, Outcome.UNNAMED, Outcome.LATE, Outcome.CRASH, Outcome.HANG]
    columns += [Outcome.NON_FINITE, Outcome.SILENT]
    head = "| env | fields | inputs tried | " + " | ".join(c.value for c in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    rows = [*envs, "total"]
    for env in rows:
        mine = [t for t in trials if env in ("total", t.env_id)]
        fields = len({(t.env_id, t.field) for t in mine})
        counts = [sum(t.outcome is c for t in mine) for c in columns]
        lines.append(f"| {env} | {fields} | {len(mine)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)
