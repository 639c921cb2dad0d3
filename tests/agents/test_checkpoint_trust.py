"""Checkpoints load as data, never as code: crafted checkpoints are refused and their payloads never run."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from cloudgym.agents.checkpoints import (
    CHECKPOINT_ROOT,
    METADATA_FILE,
    UntrustedCheckpointError,
    file_sha256,
    load_policy,
    safe_name,
    seal,
)
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import make_vector_env

SB3_CHECKPOINT = CHECKPOINT_ROOT / "Oversubscription-v0" / "ppo"
TORCH_CHECKPOINT = CHECKPOINT_ROOT / "Oversubscription-v0" / "protohail"


class _Payload:
    """Unpickling this touches a marker file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def _edit_yaml(folder: Path, **changes: Any) -> None:
    path = folder / METADATA_FILE
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _env(env_id: str = "Oversubscription-v0") -> CloudGymVectorEnv:
    return make_vector_env(env_id, 1, {})


def _poison_sb3_zip(folder: Path, marker: Path) -> None:
    """Rewrite model.zip's ``data`` with a ``:serialized:`` entry whose unpickling touches ``marker``."""
    zip_path = folder / "model.zip"
    with zipfile.ZipFile(zip_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    evil = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data["policy_class"] = {":type:": "<class 'type'>", ":serialized:": evil}
    data["observation_space"] = {":type:": "<class 'gymnasium.spaces.box.Box'>", ":serialized:": evil}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    seal(folder)  # an attacker who edits the zip also edits the recorded hash


def test_the_payload_does_run_when_unpickled(tmp_path: Path) -> None:
    # Guard for the tests below: the marker they look for is what this payload really writes.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_serialized_entry_in_sb3_zip_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = _copy(SB3_CHECKPOINT, tmp_path)
    _poison_sb3_zip(folder, marker)
    env = _env()
    policy = load_policy(folder, env)  # rebuilt from checkpoint.yaml's record: data's pickles are never read
    obs, _ = env.reset(seed=1_000_000)
    safe_actions = policy.act(obs, env.action_masks() if env.core.has_action_masks else None)
    reference = load_policy(SB3_CHECKPOINT, _env())
    np.testing.assert_array_equal(safe_actions, reference.act(obs, None))
    assert not marker.exists()


def test_sb3_zip_without_the_record_needs_trust(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = _copy(SB3_CHECKPOINT, tmp_path)
    _poison_sb3_zip(folder, marker)
    _edit_yaml(folder, policy=None)
    with pytest.raises(UntrustedCheckpointError, match="trust"):
        load_policy(folder, _env())
    assert not marker.exists()


def test_loader_must_be_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "evil_loader_module.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = _copy(TORCH_CHECKPOINT, tmp_path)
    for loader in ("evil_loader_module:load", "os:system", "cloudgym.agents.sb3:load_hyperparams"):
        _edit_yaml(folder, loader=loader)
        with pytest.raises(UntrustedCheckpointError, match="not one of cloudgym's registered"):
            load_policy(folder, _env())
    assert not marker.exists()


def test_yaml_cannot_switch_to_an_unpickling_loader(tmp_path: Path) -> None:
    folder = _copy(TORCH_CHECKPOINT, tmp_path)
    _edit_yaml(folder, loader="cloudgym.agents.rllib:load_rllib_policy")
    with pytest.raises(UntrustedCheckpointError, match="unpickling"):
        load_policy(folder, _env())


def test_pickled_object_in_a_torch_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = _copy(TORCH_CHECKPOINT, tmp_path)
    saved = torch.load(folder / "model.pt", weights_only=True)
    saved["extra"] = _Payload(marker)
    torch.save(saved, folder / "model.pt")
    seal(folder)
    with pytest.raises(pickle.UnpicklingError):
        load_policy(folder, _env())
    assert not marker.exists()


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    folder = _copy(TORCH_CHECKPOINT, tmp_path)
    with (folder / "model.pt").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(UntrustedCheckpointError, match="does not match"):
        load_policy(folder, _env())


def test_unrecorded_file_is_refused(tmp_path: Path) -> None:
    folder = _copy(TORCH_CHECKPOINT, tmp_path)
    _edit_yaml(folder, files={})
    with pytest.raises(UntrustedCheckpointError, match="no sha256 recorded"):
        load_policy(folder, _env())
    seal(folder)
    assert load_policy(folder, _env()) is not None


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "/tmp/x", "", ".hidden", "x\\y"])
def test_names_cannot_leave_their_folder(name: str) -> None:
    with pytest.raises(ValueError, match="one path component"):
        safe_name(name)


def test_train_script_refuses_a_name_outside_the_runs_folder(capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--env", "ToyCluster-v0", "--algo", "PPO", "--name", "../../x"])
    assert "one path component" in capsys.readouterr().err


def test_every_shipped_checkpoint_is_sealed() -> None:
    for meta in sorted(CHECKPOINT_ROOT.glob(f"*/*/{METADATA_FILE}")):
        recorded = yaml.safe_load(meta.read_text()).get("files")
        assert isinstance(recorded, dict), f"{meta}: no files: record"
        for name, digest in recorded.items():
            assert file_sha256(meta.parent / name) == digest, f"{meta.parent / name} differs from its record"
