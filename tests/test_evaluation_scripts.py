"""Policies, evaluation and the four scripts, end to end on the test env."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloudgym.envs.toy_cluster import ToyClusterVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds
from cloudgym.policy import make_policy, policy_specs

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "ToyCluster-v0"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "compare.py", "bench.py"])
def test_every_script_has_help(script: str) -> None:
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout


def test_evaluate_rows_equal_single_seed_runs_and_carry_metrics() -> None:
    seeds = held_out_seeds(5)
    rows = evaluate("cheapest_fit", ENV_ID, seeds)
    assert [r["seed"] for r in rows] == seeds
    assert list(rows[0])[:4] == ["env_id", "policy", "seed", "return"]
    assert {"cost_usd", "energy_kwh", "rejected_jobs", "active_node_hours"} <= set(rows[0])
    alone = evaluate("cheapest_fit", ENV_ID, [seeds[3]])
    assert alone[0] == rows[3]
    chunked = evaluate("cheapest_fit", ENV_ID, seeds, batch_size=2)
    assert chunked == rows


def test_unknown_policy_error_lists_the_known_ones() -> None:
    env = ToyClusterVectorEnv(num_envs=1)
    with pytest.raises(ValueError, match="Did you mean 'cheapest_fit'"):
        make_policy(ENV_ID, "cheapest_fitt", env)
    assert "random" in policy_specs(ENV_ID)


def test_random_policy_respects_action_masks() -> None:
    env = ToyClusterVectorEnv(num_envs=64, node_cores=6)
    obs, _ = env.reset(seed=0)
    policy = make_policy(ENV_ID, "random", env)
    for _ in range(40):
        mask = env.action_masks()
        actions = policy.act(obs, mask)
        assert mask[np.arange(64), actions][mask.any(axis=1)].all()
        obs, *_ = env.step(actions)


@pytest.mark.slow
def test_train_evaluate_compare_bench_end_to_end(tmp_path: Path) -> None:
    train = run_script(
        "train.py",
        "--env",
        ENV_ID,
        "--algo",
        "PPO",
        "--timesteps",
        "3000",
        "--out",
        str(tmp_path / "runs"),
        "--eval-episodes",
        "4",
        "--no-progress",
    )
    assert train.returncode == 0, train.stderr
    run_dir = tmp_path / "runs" / ENV_ID / "ppo_s0"
    assert (run_dir / "model.zip").exists()
    assert any(run_dir.glob("events.out.tfevents.*"))
    meta = (run_dir / "checkpoint.yaml").read_text()
    assert "python scripts/train.py --env ToyCluster-v0" in meta
    assert "final_metrics" in meta

    evaluated = run_script(
        "evaluate.py", "--env", ENV_ID, "--policy", str(run_dir), "--episodes", "3", "--csv", str(tmp_path / "eval.csv")
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert len(pd.read_csv(tmp_path / "eval.csv")) == 3

    out = tmp_path / "cmp"
    compared = run_script("compare.py", "--env", ENV_ID, "--episodes", "3", "--out", str(out))
    assert compared.returncode == 0, compared.stderr
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[:4]) == ["env_id", "policy", "seed", "return"]
    assert set(frame["policy"]) >= {"cheapest_fit", "first_fit", "least_loaded", "random"}
    assert (frame.groupby("policy").size() == 3).all()
    summary = (out / "summary.md").read_text()
    assert "## ToyCluster-v0" in summary
    assert "**" in summary
    assert list((out / "plots").glob("*.png"))
    assert list((out / "tb" / ENV_ID).glob("*/*/events.out.tfevents.*"))

    bench = run_script(
        "bench.py",
        "--env",
        ENV_ID,
        "--batch",
        "1",
        "8",
        "--seconds",
        "0.2",
        "--quick",
        "--json",
        str(tmp_path / "bench.json"),
    )
    assert bench.returncode == 0, bench.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["batch"] for r in result["throughput"]] == [1, 8]
    assert all(r["ratio"] > 0 for r in result["throughput"])


def test_bad_hyperparameter_key_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "hp.yaml"
    bad.write_text("PPO:\n  num_envs: 2\n  learning_rat: 0.1\n")
    result = run_script(
        "train.py", "--env", ENV_ID, "--hyperparams", str(bad), "--timesteps", "10", "--out", str(tmp_path)
    )
    assert result.returncode != 0
    assert "hp.yaml [PPO]: unknown keys ['learning_rat']" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["A2C", "DQN", "MaskablePPO"])
def test_train_runs_each_discrete_algorithm(algo: str, tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "--env",
        ENV_ID,
        "--algo",
        algo,
        "--timesteps",
        "1500",
        "--out",
        str(tmp_path),
        "--eval-episodes",
        "2",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ENV_ID / f"{algo.lower()}_s0" / "model.zip").exists()


def test_algorithm_that_cannot_handle_the_action_space_is_refused(tmp_path: Path) -> None:
    hp = tmp_path / "hp.yaml"
    hp.write_text("SAC:\n  num_envs: 2\n")
    result = run_script("train.py", "--env", ENV_ID, "--algo", "SAC", "--hyperparams", str(hp), "--out", str(tmp_path))
    assert result.returncode != 0
    assert "SAC needs a Box action space" in result.stderr


def test_reproduce_command_quotes_arguments_a_shell_would_split() -> None:
    from cloudgym.agents.checkpoints import reproduce_command

    command = reproduce_command("python scripts/train.py", ["--env", "FaaSKeepAlive-v0", "--env-kwargs", "{a: 1}"])
    assert command == "python scripts/train.py --env FaaSKeepAlive-v0 --env-kwargs '{a: 1}'"
    assert shlex.split(command)[-1] == "{a: 1}"


def test_evaluate_list_shows_registered_policies_and_shipped_agents() -> None:
    listing = run_script("evaluate.py", "--env", "LLMRouter-v0", "--list").stdout.splitlines()
    assert any(line.startswith("heuristic ") and "baseline" in line for line in listing)
    shipped = [line for line in listing if line.startswith("agents/checkpoints/LLMRouter-v0/maskable_ppo ")]
    assert len(shipped) == 1
    assert "reproduce: python scripts/train.py" in shipped[0]
