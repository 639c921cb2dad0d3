"""Trained-agent checkpoints: one folder each, a ``checkpoint.yaml`` beside the weights.

Layout: ``agents/checkpoints/<env_id>/<name>/checkpoint.yaml`` (shipped) or any
folder written by ``scripts/train.py --out``. The YAML records how to load the
agent (``loader``, a ``module:function`` that returns a policy), the env
kwargs it was trained on, its hyperparameters, the exact command that
reproduces it, the evaluation history logged during training and its final
metrics on held-out seeds. compare.py discovers shipped checkpoints and runs
them as policies beside the baselines.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.policy import Policy

CHECKPOINT_ROOT = Path(__file__).resolve().parent / "checkpoints"
"""Where shipped checkpoints live, one folder per env id."""

METADATA_FILE = "checkpoint.yaml"
SB3_LOADER = "cloudgym.agents.sb3:load_sb3_policy"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What checkpoint.yaml says."""

    path: Path
    env_id: str
    name: str
    loader: str
    algo: str
    env_kwargs: dict[str, Any]
    timesteps: int
    command: str
    hyperparams: dict[str, Any]
    eval_history: list[dict[str, float]]
    final_metrics: dict[str, float]
    extra: dict[str, Any]


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - the train extra brings it
        raise ImportError("reading checkpoints needs pyyaml: pip install 'cloudgym[train]'") from exc
    return yaml


def reproduce_command(program: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces a run: ``program`` and the arguments (``sys.argv[1:]`` if none), quoted.

    ``program`` is how the run was started, e.g. ``"python scripts/train.py"`` or
    ``"python scripts/train_faas_keepalive_agent.py"``; checkpoint.yaml records the result.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    return " ".join([program, *(shlex.quote(a) for a in args)])


def write_metadata(folder: Path, info: dict[str, Any]) -> Path:
    """Write checkpoint.yaml (keys of :class:`CheckpointInfo` except path)."""
    missing = {"env_id", "name", "loader", "algo", "command"} - set(info)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / METADATA_FILE
    out.write_text(_yaml().safe_dump(info, sort_keys=False))
    return out


def read_checkpoint(folder: str | Path) -> CheckpointInfo:
    """Parse a checkpoint folder's metadata, naming the file and field on any problem."""
    folder = Path(folder)
    meta_path = folder / METADATA_FILE if folder.is_dir() else folder
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no checkpoint metadata (expected {METADATA_FILE} in the folder)")
    data = _yaml().safe_load(meta_path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{meta_path}: expected a mapping at top level")
    for key in ("env_id", "name", "loader", "algo", "command"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{meta_path}: field {key!r} must be a string, got {data.get(key)!r}")
    known = {f.name for f in dataclasses.fields(CheckpointInfo)} - {"path", "extra"}
    return CheckpointInfo(
        path=meta_path.parent,
        env_id=data["env_id"],
        name=data["name"],
        loader=data["loader"],
        algo=data["algo"],
        env_kwargs=dict(data.get("env_kwargs") or {}),
        timesteps=int(data.get("timesteps", 0)),
        command=data["command"],
        hyperparams=dict(data.get("hyperparams") or {}),
        eval_history=list(data.get("eval_history") or []),
        final_metrics=dict(data.get("final_metrics") or {}),
        extra={k: v for k, v in data.items() if k not in known},
    )


def shipped_checkpoints(env_id: str) -> list[CheckpointInfo]:
    """Checkpoints shipped in the repository for an env, sorted by name."""
    root = CHECKPOINT_ROOT / env_id
    if not root.is_dir():
        return []
    return [read_checkpoint(p) for p in sorted(root.iterdir()) if (p / METADATA_FILE).exists()]


def resolve_loader(spec: str) -> Callable[[CheckpointInfo, CloudGymVectorEnv], Policy]:
    module, _, func = spec.partition(":")
    if not module or not func:
        raise ValueError(f"loader {spec!r} must read 'module:function'")
    loader: Callable[[CheckpointInfo, CloudGymVectorEnv], Policy] = getattr(importlib.import_module(module), func)
    return loader


def load_policy(folder: str | Path, env: CloudGymVectorEnv) -> Policy:
    """Build the policy a checkpoint folder holds, for a vector env of the same id."""
    info = read_checkpoint(folder)
    env_id = env.spec.id if env.spec is not None else None
    if env_id is not None and env_id != info.env_id:
        raise ValueError(f"{info.path}: checkpoint is for {info.env_id}, not {env_id}")
    policy = resolve_loader(info.loader)(info, env)
    policy.name = info.name
    return policy
