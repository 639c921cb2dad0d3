"""The installed ``cloudgym`` command and ``python -m cloudgym``: listings, subcommands, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"


def cloudgym(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "cloudgym", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "CLOUDGYM_TORCH_THREADS": "1", **(env or {})},
    )


def test_listing_names_envs_scenarios_and_shipped_agents(tmp_path: Path) -> None:
    out = cloudgym(cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for text in ("LLMRouter-v0", "+30%", "realistic", "hazard_mlp", "protohail_hitl", "commands: evaluate"):
        assert text in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--env", "ToyCluster-v0", "--policy", "cheapest_fitt"], "unknown policy 'cheapest_fitt'"),
        (["evaluate", "--env", "ToyCluster-v0", "--policy", "random", "--env-kwargs", "{a: ["], "not valid YAML"),
        (["evaluate", "--env", "ToyCluster-v0", "--policy", "random", "--env-kwargs", "[1]"], "a YAML mapping"),
        (["evaluate", "--env", "ToyCluster-v0", "--policy", "random", "--env-kwargs", "{num_nodes: 0}"], "num_nodes"),
        (["train", "--env", "ToyCluster-v0", "--algo", "PPO", "--name", "../../x"], "one path component"),
        (["fly"], "unknown command 'fly'"),
    ],
)
def test_mistakes_end_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    out = cloudgym(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_non_editable_install_outside_the_checkout(tmp_path: Path) -> None:
    """The built wheel, installed (no editable links) into a folder, runs every command from elsewhere."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        timeout=600,
    )
    wheel = next(wheels.glob("cloudgym-*.whl"))
    assert any(n.endswith("checkpoints/LLMRouter-v0/maskable_ppo/model.zip") for n in zipfile.ZipFile(wheel).namelist())
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=600,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(site)}

    def run(*args: str, extra: dict[str, str] | None = None) -> str:
        out = cloudgym(*args, cwd=work, env={**env, **(extra or {})})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    where = subprocess.run(
        [sys.executable, "-c", "import cloudgym; print(cloudgym.__file__)"],
        capture_output=True, text=True, cwd=work, env={**os.environ, **env}, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(site)), f"imported {where} instead of the installed copy"
    assert "ToyCluster-v0" in run("evaluate", "--env", "ToyCluster-v0", "--policy", "cheapest_fit", "--episodes", "2")
    shipped = str(site / "cloudgym/agents/checkpoints/FaaSKeepAlive-v0/hazard_mlp")
    assert "hazard_mlp" in run("evaluate", "--env", "FaaSKeepAlive-v0", "--policy", shipped, "--episodes", "2")
    run("compare", "--env", "ToyCluster-v0", "--episodes", "2", "--out", str(work / "results"))
    assert (work / "results").is_dir()
    if SHARED_TRACES.is_dir():
        out = run(
            "evaluate", "--env", "LLMRouter-v0", "--policy", "round_robin", "--episodes", "1",
            "--env-kwargs", "{scenario: trace, requests_per_episode: 100}",
            extra={"CLOUDGYM_TRACES": str(SHARED_TRACES)},
        )  # fmt: skip
        assert "e2e_mean_s" in out
