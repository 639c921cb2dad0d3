"""RLlib glue: observations as RLlib takes them, action masking, training to an evaluable checkpoint, Tune, bench.

The fast tests build envs and RLModules without a Ray runtime. The slow ones
start a small local Ray instance and always shut it down. The whole module is
skipped where the ``rllib`` extra is not installed (CI's newest-gymnasium venv).
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.agents.checkpoints import UntrustedCheckpointError
from tests.scripts import load_script

pytest.importorskip("ray.rllib", reason="the rllib extra is not installed")

import torch
from ray.rllib.core.columns import Columns

import cloudgym
from cloudgym.agents import rllib
from cloudgym.evaluation import make_vector_env

TOY = "ToyCluster-v0"
TIGHT_TOY = {"node_cores": 8, "steps_per_episode": 16}
"""Nodes too small to take every job: the action mask binds."""


# ----------------------------------------------------------------------------- observations


def _reference_flatten(space: spaces.Space, obs: object, n: int) -> np.ndarray:
    rows = []
    for i in range(n):
        if isinstance(space, spaces.Dict):
            row = {k: v[i] for k, v in obs.items()}  # type: ignore[attr-defined]
        else:
            row = obs[i]  # type: ignore[index]
        rows.append(spaces.flatten(space, row))
    return np.stack(rows).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_batched_flatten_equals_gymnasium_row_by_row(seed: int, n: int) -> None:
    space = spaces.Dict(
        {
            "load": spaces.Box(-1.0, 2.0, (2, 3), np.float32),
            "phase": spaces.Discrete(4, start=1),
            "tiers": spaces.MultiDiscrete([3, 2, 5]),
            "flags": spaces.MultiBinary(2),
        }
    )
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    batched = {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    got = rllib.flatten_observations(space, batched, n)
    assert got.shape == (n, spaces.flatdim(space))
    np.testing.assert_array_equal(got, _reference_flatten(space, batched, n))


def test_vector_env_for_rllib_is_the_native_env_with_masks_in_the_observation() -> None:
    env = rllib.make_rllib_env({"env_id": TOY, "env_kwargs": TIGHT_TOY, "masked": True, "num_envs": 5})
    assert isinstance(env, rllib.RLlibVectorEnv)
    assert isinstance(env.unwrapped, cloudgym.envs.toy_cluster.ToyClusterVectorEnv)
    obs, _ = env.reset(seed=3)
    for _ in range(20):
        assert env.single_observation_space.contains({k: v[0] for k, v in obs.items()})
        np.testing.assert_array_equal(obs[rllib.MASK_KEY], env.unwrapped.action_masks().astype(np.float32))
        native_obs = env.unwrapped.core.observe()
        np.testing.assert_array_equal(obs[rllib.OBSERVATIONS_KEY], native_obs)
        obs, *_ = env.step(np.argmax(obs[rllib.MASK_KEY], axis=1))


def test_single_env_for_rllib_matches_the_vector_env_row() -> None:
    single = rllib.make_rllib_env({"env_id": TOY, "env_kwargs": TIGHT_TOY, "masked": True})
    vector = rllib.make_rllib_env({"env_id": TOY, "env_kwargs": TIGHT_TOY, "masked": True, "num_envs": 1})
    assert isinstance(single, rllib.RLlibSingleEnv)
    obs_s, _ = single.reset(seed=11)
    obs_v, _ = vector.reset(seed=[11])
    for _ in range(10):
        for key in obs_s:
            np.testing.assert_array_equal(obs_s[key], obs_v[key][0])
        action = int(np.argmax(obs_s[rllib.MASK_KEY]))
        obs_s, *_ = single.step(action)
        obs_v, *_ = vector.step(np.array([action]))


def test_masking_needs_an_env_with_masks() -> None:
    env = make_vector_env(TOY, 2)
    env.core.has_action_masks = False  # as an env without masks declares it
    with pytest.raises(ValueError, match="has no action masks"):
        rllib.ObservationAdapter.for_env(env, masked=True)


def test_dqn_is_not_masked_and_says_so() -> None:
    spec = rllib.RunSpec(env_id=TOY, algo="DQN", masked=True)
    with pytest.raises(ValueError, match="DQN does not apply action masks"):
        spec.resolved_masked(env_has_masks=True)
    assert rllib.RunSpec(env_id=TOY, algo="DQN").resolved_masked(env_has_masks=True) is False
    assert rllib.RunSpec(env_id=TOY, algo="PPO").resolved_masked(env_has_masks=True) is True


# ----------------------------------------------------------------------------- masking RLModules


@pytest.mark.parametrize("module_cls", [rllib.MaskedPPOTorchRLModule, rllib.MaskedAPPOTorchRLModule])
def test_masked_module_never_gives_probability_to_a_masked_action(module_cls: type) -> None:
    torch.manual_seed(0)
    n, dim, batch = 5, 7, 64
    obs_space = spaces.Dict(
        {
            rllib.OBSERVATIONS_KEY: spaces.Box(-1.0, 1.0, (dim,), np.float32),
            rllib.MASK_KEY: spaces.Box(0.0, 1.0, (n,), np.float32),
        }
    )
    module = module_cls(
        observation_space=obs_space,
        action_space=spaces.Discrete(n),
        inference_only=False,
        model_config={"fcnet_hiddens": [16]},
    )
    rng = np.random.default_rng(0)
    mask = (rng.random((batch, n)) < 0.4).astype(np.float32)
    mask[np.arange(batch), rng.integers(0, n, batch)] = 1.0  # at least one admissible action per row
    obs = {
        rllib.OBSERVATIONS_KEY: torch.from_numpy(rng.uniform(-1, 1, (batch, dim)).astype(np.float32)),
        rllib.MASK_KEY: torch.from_numpy(mask),
    }
    dist_cls = module.get_exploration_action_dist_cls()
    for forward in (module.forward_exploration, module.forward_train):
        logits = forward({Columns.OBS: dict(obs)})[Columns.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, dim=-1).detach().numpy()
        assert np.all(probs[mask == 0] < 1e-30)
        sampled = dist_cls.from_logits(logits).sample().numpy()
        assert np.all(mask[np.arange(batch), sampled] == 1)
    values = module.compute_values({Columns.OBS: dict(obs)})
    assert values.shape == (batch,)
    if module_cls is rllib.MaskedAPPOTorchRLModule:
        module.make_target_networks()
        from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

        target = module.forward_target({Columns.OBS: dict(obs)})[TARGET_NETWORK_ACTION_DIST_INPUTS]
        assert np.all(torch.softmax(target, -1).detach().numpy()[mask == 0] < 1e-30)


def test_masked_module_rejects_an_unmasked_space() -> None:
    with pytest.raises(ValueError, match="Dict observation space"):
        rllib.MaskedPPOTorchRLModule(
            observation_space=spaces.Box(0, 1, (3,), np.float32),
            action_space=spaces.Discrete(2),
            model_config={},
        )


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown PPO hyperparameters \['learning_rat'\]"):
        rllib.check_hyperparams("PPO", {"learning_rat": 0.1}, where="test")
    rllib.check_hyperparams("PPO", {"lr": 0.1, "clip_param": 0.2, "fcnet_hiddens": [8]}, where="test")


# ----------------------------------------------------------------------------- training (slow)


@pytest.fixture
def no_ray_left() -> object:
    """Ray is down after the test, whatever happened in it."""
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()
    assert not ray.is_initialized()


def _event_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


# Episodes short enough that several end within the 2,048 training steps (rollout/ep_rew_mean exists).
SHORT_EPISODES: dict[str, dict[str, int]] = {"FaaSKeepAlive-v0": {"episode_minutes": 120, "warmup_minutes": 240}}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", [TOY, *cloudgym.ENV_IDS[:1]])  # the test env and the first real env
def test_ppo_trains_and_its_checkpoint_evaluates_through_evaluate_py(
    env_id: str, tmp_path: Path, no_ray_left: object
) -> None:
    train_rllib = load_script("train_rllib")
    evaluate_py = load_script("evaluate")
    env_kwargs = TIGHT_TOY if env_id == TOY else SHORT_EPISODES.get(env_id, {})
    kwargs_arg = ["--env-kwargs", repr(env_kwargs).replace("'", '"')] if env_kwargs else []
    run_dir = train_rllib.main(
        ["--env", env_id, "--timesteps", "2048", "--num-env-runners", "0", "--envs-per-runner", "8",
         "--eval-episodes", "4", "--out", str(tmp_path), "--set", "train_batch_size_per_learner=512",
         "--set", "minibatch_size=128", *kwargs_arg]
    )  # fmt: skip
    info = cloudgym.agents.checkpoints.read_checkpoint(run_dir)
    assert info.loader == rllib.LOADER
    assert info.timesteps >= 2048
    assert {"eval/return", "rollout/ep_rew_mean"} | {
        f"eval/{m}" for m in cloudgym.evaluation.metric_names(env_id, env_kwargs)
    } <= _event_tags(run_dir)

    with pytest.raises(UntrustedCheckpointError, match="unpickling"):  # RLlib's module checkpoint is pickled state
        evaluate_py.main(["--env", env_id, "--policy", str(run_dir), "--episodes", "4", *kwargs_arg])
    rows = evaluate_py.main(
        ["--env", env_id, "--policy", str(run_dir), "--episodes", "4", *kwargs_arg, "--csv", str(tmp_path / "e.csv"),
         "--trust-checkpoint"]
    )  # fmt: skip
    assert len(rows) == 4
    assert rows[0]["policy"] == info.name
    # The loaded checkpoint acts exactly as the module did at the end of training.
    assert np.mean([r["return"] for r in rows]) == pytest.approx(info.final_metrics["return"], rel=1e-9, abs=1e-9)
    if env_id == TOY:
        assert info.extra["action_masking"] is True
        assert all(r["rejected_jobs"] == 0 for r in rows)  # masks reached the policy


@pytest.mark.slow
def test_unmasked_policy_on_tight_toy_does_reject(tmp_path: Path) -> None:
    """The masking test above can fail: an unmasked policy on the same instances sends jobs where they do not fit."""
    from cloudgym.evaluation import evaluate, held_out_seeds

    rows = evaluate("first_fit", TOY, held_out_seeds(4), env_kwargs=TIGHT_TOY)
    assert all(r["rejected_jobs"] == 0 for r in rows)

    class Unmasked(cloudgym.policy.BatchedPolicy):
        def act(self, obs: object, action_mask: np.ndarray | None = None) -> np.ndarray:
            return np.zeros(self.num_envs, np.int64)

    rows = evaluate(Unmasked, TOY, held_out_seeds(4), env_kwargs=TIGHT_TOY)
    assert sum(r["rejected_jobs"] for r in rows) > 0


@pytest.mark.slow
def test_tune_sweep_writes_one_row_per_trial_and_plots(
    tmp_path: Path, no_ray_left: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import cloudgym.reports

    # The env's registered paper figures receive the baselines and every trial (FaaSKeepAlive-v0 draws
    # its cold-start vs wasted-memory plot this way); here a recording plot stands in for them.
    seen: list[set[str]] = []

    def recording_plot(frame: object, out_dir: Path) -> list[Path]:
        seen.append(set(frame["policy"]))  # type: ignore[index]
        return []

    registered = cloudgym.reports.get_report
    monkeypatch.setattr(
        cloudgym.reports, "get_report", lambda env_id: dataclasses.replace(registered(env_id), plots=(recording_plot,))
    )
    space = tmp_path / "toy.yaml"
    space.write_text(
        "env: ToyCluster-v0\nalgo: PPO\ntimesteps: 1024\neval_episodes: 4\nenvs_per_runner: 8\n"
        "max_concurrent: 2\nenv_kwargs: {node_cores: 8, steps_per_episode: 16}\n"
        "hyperparams: {train_batch_size_per_learner: 512, minibatch_size: 128}\n"
        "space:\n  seed: [0, 1]\n"
    )
    sweep = load_script("sweep")
    out = sweep.main(["--space", str(space), "--out", str(tmp_path / "out")])
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["seed"]) == [0, 1]
    assert trials["return"].notna().all()
    episodes = pd.read_csv(out / "results.csv")
    assert {"t00", "t01", "cheapest_fit", "random"} <= set(episodes["policy"])
    assert (episodes.groupby("policy").size() == 4).all()
    assert (out / "plots" / f"{TOY}_default_headline.png").exists()
    assert (out / "plots" / f"{TOY}_default_cost_usd_vs_active_node_hours.png").exists()
    assert seen == [{"t00", "t01", "cheapest_fit", "first_fit", "least_loaded", "random"}]
    # Every trial's checkpoint loads as a policy.
    for folder in trials["checkpoint"]:
        assert (Path(folder) / "checkpoint.yaml").exists()
        assert (Path(folder) / rllib.MODULE_DIR).is_dir()


def test_sweep_file_errors_name_the_key(tmp_path: Path) -> None:
    from cloudgym.agents.sweep import read_sweep

    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("env: Nope-v0\nspace: {seed: [0]}\n", "env must be one of"),
        ("env: ToyCluster-v0\nspace: {}\n", "space is empty"),
        ("env: ToyCluster-v0\nspace: {lr: [0.1]}\n", "must be 'seed', 'hyperparams.<key>'"),
        ("env: ToyCluster-v0\nspace: {hyperparams.lr: {normal: [0, 1]}}\n", "unknown distribution 'normal'"),
        ("env: ToyCluster-v0\nspace: {hyperparams.lerning_rate: [0.1]}\n", "unknown PPO hyperparameters"),
        ("env: ToyCluster-v0\ntimestep: 5\nspace: {seed: [0]}\n", "unknown keys \\['timestep'\\]"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_sweep(bad)


@pytest.mark.slow
def test_two_node_loopback_run_samples_on_both_nodes_and_leaves_nothing(tmp_path: Path, no_ray_left: object) -> None:
    two_nodes = load_script("rllib_two_nodes")
    per_node = two_nodes.main(
        ["--timesteps", "1024", "--envs-per-runner", "8", "--timeout", "240", "--out", str(tmp_path)]
    )
    assert per_node["head"] > 0
    assert per_node["worker"] > 0
    from cloudgym.agents.loopback import LoopbackCluster

    # No process anywhere still names a cloudgym loopback cluster folder.
    marker = b"/tmp/cgray-"
    left = [p for p in os.listdir("/proc") if p.isdigit() and marker in _cmdline(p)]
    assert left == [], f"Ray processes left: {left}"
    assert LoopbackCluster.node_role({"Resources": {"cloudgym_worker": 1.0}}) == "worker"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_bench_rllib_flag_prints_native_and_sync_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script("bench")
    out = bench.main(["--env", TOY, "--batch", "8", "--seconds", "0.5", "--no-extras", "--no-kernels", "--rllib"])
    (row,) = out["rllib_sampling"]
    assert row["rllib_native_steps_per_s"] > 0
    assert row["rllib_sync_steps_per_s"] > 0
    assert row["rllib_ratio"] == pytest.approx(row["rllib_native_steps_per_s"] / row["rllib_sync_steps_per_s"])
    assert "RLlib native steps/s" in capsys.readouterr().out


def test_sync_mode_builds_single_envs() -> None:
    env = gym.make_vec(
        "ToyCluster-v0", num_envs=2, vectorization_mode="sync", wrappers=[lambda e: rllib.RLlibSingleEnv(e, True)]
    )
    obs, _ = env.reset(seed=0)
    assert set(obs) == {rllib.OBSERVATIONS_KEY, rllib.MASK_KEY}


def test_joining_a_cluster_too_small_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """--address with more env runners than free CPUs names the numbers instead of hanging."""
    import ray

    calls: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append("init"))
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with pytest.raises(ValueError, match=r"has 2 free CPUs \(of 4\); 8 env runners need 8"):
        rllib.connect_ray("auto", num_cpus=8)
    assert calls == ["init", "shutdown"]
    assert rllib.connect_ray("auto", num_cpus=2)  # enough: joined
