"""Trained-agent checkpoints: one folder each, a ``checkpoint.yaml`` beside the weights.

Layout: ``agents/checkpoints/<env_id>/<name>/checkpoint.yaml`` (shipped) or any
folder written by ``scripts/train.py --out``. The YAML records how to load the
agent (``loader``, a ``module:function`` that returns a policy), the env
kwargs it was trained on, its hyperparameters, the exact command that
reproduces it, the evaluation history logged during training and its final
metrics on held-out seeds. compare.py discovers shipped checkpoints and runs
them as policies beside the baselines.

Checkpoints load as data, never as code:

* ``loader:`` must name one of cloudgym's registered loaders (:data:`LOADERS`);
  no module named in a YAML file is ever imported;
* every file the loader reads carries a sha256 in ``files:``, checked before
  anything is read (a checkpoint without the record, or with a changed file,
  is refused);
* the registered loaders read weights with ``torch.load(weights_only=True)``
  or ``numpy.load(allow_pickle=False)``, and SB3 models are rebuilt from the
  algorithm and policy recorded in checkpoint.yaml rather than from the
  pickled entries of SB3's own zip;
* formats that can only be read by unpickling (RLlib's module checkpoints,
  an SB3 zip without cloudgym's record) load only with ``trust=True``
  (``--trust-checkpoint`` on the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import re
import shlex
import shutil
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


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
    """A registered checkpoint loader: where it lives and whether its format needs trust (unpickling)."""

    target: str
    """``module:function`` inside cloudgym, called as ``function(info, env, trust=...)``."""
    files: tuple[str, ...] = ()
    """The files of the folder it reads: each must carry a matching sha256 in checkpoint.yaml."""
    needs_trust: bool = False
    """True when the format can only be read by unpickling: refused unless the caller trusts the folder."""


LOADERS: dict[str, LoaderSpec] = {
    spec.target: spec
    for spec in (
        LoaderSpec(SB3_LOADER, files=("model.zip",)),
        LoaderSpec("cloudgym.agents.faas_keepalive:load_hazard_policy", files=("model.pt",)),
        LoaderSpec("cloudgym.agents.gpu_powercap_cem:load_policy"),  # its parameters live in checkpoint.yaml
        LoaderSpec("cloudgym.agents.gpu_powercap_forecast:load_policy"),  # its model lives in checkpoint.yaml
        LoaderSpec("cloudgym.agents.gpu_powercap_shield:load_policy"),  # its knobs live in checkpoint.yaml
        LoaderSpec("cloudgym.agents.oversub_imitation:load_imitation_policy", files=("model.pt",)),
        LoaderSpec("cloudgym.agents.protohail:load_protohail_policy", files=("model.pt",)),
        LoaderSpec("cloudgym.agents.rllib:load_rllib_policy", needs_trust=True),  # rl_module/ is pickled state
        LoaderSpec("cloudgym.agents.llm_router_dagger:load_dagger_policy", files=("model.npz",)),
    )
}
"""The only loaders a checkpoint.yaml may name (by their ``module:function``)."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint that would need code execution (unpickling) to load, or whose files are not as recorded."""


class UnsafeNameError(argparse.ArgumentTypeError, ValueError):
    """A name that would leave its folder (argparse shows this message as it is)."""


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def safe_name(name: str, what: str = "name") -> str:
    """A user-given run or checkpoint name that is one plain path component (no separators, no ``..``)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafeNameError(
            f"{what} {name!r} must be one path component of letters, digits and ._+- "
            "(it names a folder inside the output folder and may not leave it)"
        )
    return name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    files: dict[str, str]
    """File name (relative to the folder) -> sha256 of every file the loader reads."""
    extra: dict[str, Any]
    scenario: str | None = None
    """The compare.py scenario the agent was trained on (``scenario:``, the first if it lists several)."""
    trained_on: tuple[str, ...] = ()
    """Every compare.py scenario it was trained on (``scenario: [a, b]`` lists several); compare.py runs it there."""


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
    """Write checkpoint.yaml (keys of :class:`CheckpointInfo` except path), sealing the loader's files.

    The files the loader reads (:attr:`LoaderSpec.files`) must be in
    ``folder`` already: their sha256 goes into ``files:``.
    """
    missing = {"env_id", "name", "loader", "algo", "command"} - set(info)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    if info["loader"] not in LOADERS:
        raise ValueError(f"loader {info['loader']!r} is not registered; known: {', '.join(LOADERS)}")
    if "scenario" not in info:
        # Where the agent learnt, so compare.py evaluates it there: the report's scenario its env kwargs match.
        from cloudgym.reports import scenario_of

        info = {**info, "scenario": scenario_of(info["env_id"], info.get("env_kwargs") or {})}
    folder.mkdir(parents=True, exist_ok=True)
    sealed = {name: file_sha256(folder / name) for name in LOADERS[info["loader"]].files}
    out = folder / METADATA_FILE
    out.write_text(_yaml().safe_dump({**info, "files": sealed}, sort_keys=False))
    return out


def seal(folder: str | Path) -> dict[str, str]:
    """Record the sha256 of the files its loader reads in checkpoint.yaml's ``files:`` (a checkpoint you made).

    Rewrites only the ``files`` key; returns it.
    """
    meta_path = Path(folder) / METADATA_FILE
    data = _yaml().safe_load(meta_path.read_text())
    names = resolve_loader(str(data.get("loader"))).files
    data["files"] = {name: file_sha256(meta_path.parent / name) for name in names}
    meta_path.write_text(_yaml().safe_dump(data, sort_keys=False))
    return dict(data["files"])


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
    files = data.get("files") or {}
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ValueError(f"{meta_path}: field 'files' must map file names to sha256 hex digests")
    scenario = data.get("scenario")
    names = [scenario] if isinstance(scenario, str) else scenario
    if scenario is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{meta_path}: field 'scenario' must be a scenario name or a list of them, got {scenario!r}")
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
        files=dict(files),
        extra={k: v for k, v in data.items() if k not in known},
        scenario=names[0] if names else None,
        trained_on=tuple(names or ()),
    )


def shipped_checkpoints(env_id: str) -> list[CheckpointInfo]:
    """Checkpoints shipped in the repository for an env, sorted by name."""
    root = CHECKPOINT_ROOT / env_id
    if not root.is_dir():
        return []
    return [read_checkpoint(p) for p in sorted(root.iterdir()) if (p / METADATA_FILE).exists()]


def resolve_loader(spec: str) -> LoaderSpec:
    """The registered loader a checkpoint.yaml names; anything else is refused before any import."""
    loader = LOADERS.get(spec)
    if loader is None:
        raise UntrustedCheckpointError(
            f"loader {spec!r} is not one of cloudgym's registered checkpoint loaders "
            f"({', '.join(LOADERS)}); a checkpoint.yaml cannot name code to run"
        )
    return loader


def verify_files(info: CheckpointInfo, loader: LoaderSpec) -> None:
    """Check the sha256 of every file the loader will read against checkpoint.yaml's ``files:``."""
    for name in loader.files:
        path = info.path / name
        expected = info.files.get(name)
        if expected is None:
            raise UntrustedCheckpointError(
                f"{path}: no sha256 recorded for it in {METADATA_FILE}; if you made this checkpoint, record it with "
                f"`python -c \"from cloudgym.agents.checkpoints import seal; seal('{info.path}')\"`"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{path}: recorded in {METADATA_FILE} but missing")
        actual = file_sha256(path)
        if actual != expected:
            raise UntrustedCheckpointError(
                f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in {METADATA_FILE} "
                "(the file changed after the checkpoint was written)"
            )


def load_policy(folder: str | Path, env: CloudGymVectorEnv, *, trust: bool = False) -> Policy:
    """Build the policy a checkpoint folder holds, for a vector env of the same id.

    Nothing from the folder runs: the loader is one of :data:`LOADERS` and
    every file is checked against its recorded sha256 first. A format that
    needs unpickling loads only with ``trust=True``.
    """
    info = read_checkpoint(folder)
    env_id = env.spec.id if env.spec is not None else None
    if env_id is not None and env_id != info.env_id:
        raise ValueError(f"{info.path}: checkpoint is for {info.env_id}, not {env_id}")
    loader = resolve_loader(info.loader)
    if loader.needs_trust and not trust:
        raise UntrustedCheckpointError(
            f"{info.path}: {info.loader} reads its format by unpickling, which can run code stored in the "
            "checkpoint; load it only if you trust where it came from (--trust-checkpoint, or trust=True)"
        )
    if not trust:
        verify_files(info, loader)
    module, _, func = loader.target.partition(":")
    build: Callable[..., Policy] = getattr(importlib.import_module(module), func)
    # A loader whose format has a trusted-only path (SB3's own zip) takes the caller's word; the others need none.
    policy = build(info, env, trust=trust) if "trust" in inspect.signature(build).parameters else build(info, env)
    policy.name = info.name
    return policy


def ship(run_dir: str | Path, name: str | None = None) -> Path:
    """Copy a trained checkpoint into ``agents/checkpoints/<env>/<name>`` (default: the run folder's name).

    Copies ``checkpoint.yaml`` and the files its loader reads (and checks), nothing else; returns the target.
    """
    run_dir = Path(run_dir)
    info = read_checkpoint(run_dir)
    target = CHECKPOINT_ROOT / info.env_id / (name or run_dir.name)
    target.mkdir(parents=True, exist_ok=True)
    for file in (*resolve_loader(info.loader).files, METADATA_FILE):
        shutil.copy2(run_dir / file, target / file)
    print(f"shipped to {target}")
    return target
