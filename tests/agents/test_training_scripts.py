"""The training scripts of the shipped agents load, parse their arguments and record their own command."""

from __future__ import annotations

import shlex

import pytest
import yaml

from cloudgym.agents.checkpoints import CHECKPOINT_ROOT
from tests.scripts import SCRIPTS, load_script

AGENT_SCRIPTS = {
    "train_dc_lifecycle_agent": "DCLifecycle-v0",
    "train_dc_lifecycle_dagger": "DCLifecycle-v0",
    "train_faas_keepalive_agent": "FaaSKeepAlive-v0",
    "train_gpu_powercap_cem": "GPUPowerCap-v0",
    "train_gpu_powercap_forecast": "GPUPowerCap-v0",
    "train_gpu_powercap_shield": "GPUPowerCap-v0",
    "train_length_predictor": "LLMRouter-v0",
    "train_llm_router_dagger": "LLMRouter-v0",
}


@pytest.mark.parametrize("name", sorted(AGENT_SCRIPTS))
def test_script_parses_its_arguments_and_records_its_own_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script(name)
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    assert "--ship" in capsys.readouterr().out
    # checkpoint.yaml's command is what reproduces the run: this very file.
    assert f'reproduce_command("python scripts/{name}.py", argv)' in (SCRIPTS / f"{name}.py").read_text()


def test_every_shipped_command_runs_a_script_that_exists() -> None:
    commands = [
        yaml.safe_load(path.read_text())["command"]
        for path in sorted(CHECKPOINT_ROOT.glob("*/*/*.yaml"))
        if path.name in ("checkpoint.yaml", "predictor.yaml")
    ]
    assert len(commands) >= 10
    for command in commands:
        program = shlex.split(command.removeprefix("OMP_NUM_THREADS=1 "))
        assert program[0] == "python", command
        assert program[1].startswith("scripts/"), command
        assert (SCRIPTS.parent / program[1]).is_file(), command
