"""The FaaSKeepAlive-v0 agent: cost-weighted training finds the cheaper side; the shipped checkpoint loads and acts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloudgym.agents.checkpoints import shipped_checkpoints
from cloudgym.agents.faas_keepalive import HazardHyperparams, HazardModel, HazardPolicy, collect, fit, load_section
from cloudgym.envs.faas_keepalive import NEVER, OBS, OBS_FIELDS, FaaSKeepAliveVectorEnv, decode_minutes
from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "FaaSKeepAlive-v0"


def test_cost_weighted_fit_keeps_the_image_exactly_where_it_is_cheaper() -> None:
    # One feature carries the invocation probability p; keeping costs 0.2 when idle, unloading 1 when invoked:
    # keeping is cheaper iff p > 0.2 / 1.2 = 1/6.
    rng = np.random.default_rng(0)
    n = 60_000
    p = rng.uniform(0.0, 0.5, n)
    x = np.zeros((n, len(OBS_FIELDS)), np.float32)
    x[:, 0] = p
    y = (rng.random(n) < p).astype(np.float32)
    w = np.where(y > 0, 1.0, 0.2).astype(np.float32)
    hp = HazardHyperparams(hidden=(16,), epochs=4, learning_rate=3e-3, minibatch=1024)
    model, losses = fit(hp, x, y, w, seed=0)
    assert losses[-1] <= losses[0]
    probe = np.zeros((5, len(OBS_FIELDS)), np.float32)
    probe[:, 0] = [0.02, 0.1, 0.13, 0.22, 0.4]
    with torch.no_grad():
        keep = model(torch.as_tensor(probe)).numpy() >= 0
    assert keep.tolist() == [False, False, False, True, True]


def test_collect_drops_running_and_never_run_minutes() -> None:
    hp = HazardHyperparams(apps_per_batch=8, batches=2, env_kwargs={"episode_minutes": 30, "warmup_minutes": 30})
    x, y, w = collect(hp, seed=1)
    assert x.shape[0] == y.shape[0] == w.shape[0] > 0
    assert np.all(x[:, OBS["busy"]] == 0)
    assert np.all(x[:, OBS["has_run"]] == 1)
    memory_gb = x[:, OBS["memory"]] * 1536.0 / 1024.0
    np.testing.assert_allclose(w, np.where(y > 0, 1.0, 0.05 * memory_gb), rtol=1e-5)


def test_policy_windows_encode_the_decision() -> None:
    env = FaaSKeepAliveVectorEnv(num_envs=4, episode_minutes=30, warmup_minutes=120)
    obs, _ = env.reset(seed=3)
    torch.manual_seed(0)
    model = HazardModel(len(OBS_FIELDS), (8,))
    policy = HazardPolicy(env, model)
    action = policy.act(obs)
    load = policy.scores(obs) >= 0
    age = decode_minutes(obs[:, OBS["age"]])
    assert np.all(action[load, 0] == 0)
    assert np.all(action[load, 1] == 1.0)
    ran = obs[:, OBS["has_run"]] == 1  # an app that never ran has no age (its code is the top of the scale)
    np.testing.assert_array_equal(decode_minutes(action[~load & ran, 0]), age[~load & ran] + 1)
    env.step(action)  # valid in the action space
    with pytest.raises(ValueError, match="trained at"):
        HazardPolicy(env, model, (1.0, 0.5))
    assert NEVER > 0


def test_yaml_section_is_complete() -> None:
    hp = load_section()
    assert hp.hidden == (64, 64)
    assert hp.apps_per_batch * hp.batches >= 1024


def test_shipped_checkpoint_loads_beats_fixed_keepalive_on_a_few_apps() -> None:
    shipped = [c for c in shipped_checkpoints(ENV_ID) if c.algo == "HazardMLP"]
    if not shipped:
        pytest.skip("no HazardMLP checkpoint shipped")
    ckpt = shipped[0]
    assert (ckpt.path / "model.pt").stat().st_size < 200_000
    assert ckpt.command.startswith("python scripts/train_faas_keepalive_agent.py")
    seeds = held_out_seeds(16)
    kwargs = {**ckpt.env_kwargs, "warmup_minutes": 720, "episode_minutes": 720}
    agent = evaluate(ckpt.path, ENV_ID, seeds, env_kwargs=kwargs)
    fixed = evaluate("fixed_10", ENV_ID, seeds, env_kwargs=kwargs)
    assert np.mean([r["return"] for r in agent]) > np.mean([r["return"] for r in fixed])
