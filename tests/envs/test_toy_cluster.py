"""ToyCluster-v0: config errors, the known optimum, the accounting (the generic checks: tests/test_contract.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from cloudgym.envs.toy_cluster import ToyClusterConfig, ToyClusterCore, ToyClusterVectorEnv
from cloudgym.envs.workloads.toy import optimal_cost_usd
from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "ToyCluster-v0"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_nodes", 1, r"ToyClusterConfig\.num_nodes: got 1; expected a value in \[2, 4096\]"),
        ("max_job_cores", 99, "max_job_cores must be in"),
        ("price_range", (0.5, 0.1), "price_range"),
    ],
)
def test_impossible_config_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **{field: value})


def test_cheapest_fit_reaches_the_known_optimum() -> None:
    config = ToyClusterConfig()
    assert config.optimum_is_known
    seeds = held_out_seeds(6)
    rows = evaluate("cheapest_fit", ENV_ID, seeds)
    core = ToyClusterCore(1, config)
    for seed, row in zip(seeds, rows):
        jobs = core.instance_for_seed(seed)  # the episode's instance, exactly as the env draws it
        optimum = optimal_cost_usd(jobs, idle_w=config.idle_w, core_w=config.core_w, step_hours=config.step_hours)
        assert row["cost_usd"] == pytest.approx(optimum, rel=1e-9)
    others = evaluate("least_loaded", ENV_ID, seeds)
    assert all(o["cost_usd"] > r["cost_usd"] for o, r in zip(others, rows))


def test_accounting_invariants_hold_every_step() -> None:
    venv = ToyClusterVectorEnv(num_envs=8, node_cores=8)  # tight nodes: rejections happen
    venv.reset(seed=0)
    core: ToyClusterCore = venv.core  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    rejections = np.zeros(8, int)
    for _ in range(200):
        obs, reward, _, _, info = venv.step(rng.integers(0, 4, size=8))
        s = core.state
        np.testing.assert_allclose(s.pool.used, s.jobs.usage(4), atol=1e-9)  # usage equals the slot table
        assert np.all(s.pool.used <= s.pool.capacity + 1e-9)
        assert np.all(reward <= 0)
        if "cost/energy" in info:  # absent on a step where every sub-env autoresets
            valid = info["_cost/energy"]
            costs = info["cost/energy"] + info["cost/rejection"]
            np.testing.assert_allclose(-reward[valid], 10.0 * costs[valid])
            assert np.all(reward[~valid] == 0.0)
            rejections += info["rejected"] & info["_rejected"]
        if "episode_stats" in info:
            ended = info["_episode_stats"]
            np.testing.assert_allclose(info["metrics"]["cost_usd"][ended], -info["episode_stats"]["r"][ended] / 10.0)
    assert np.all(obs >= 0)
    assert np.all(obs <= 1)
    assert rejections.sum() > 0  # the tight config did exercise rejection


def test_action_masks_mark_nodes_where_the_job_fits() -> None:
    venv = ToyClusterVectorEnv(num_envs=4, node_cores=8)
    venv.reset(seed=2)
    for _ in range(30):
        masks = venv.action_masks()
        core = venv.core
        cores, _ = core._current_job()
        np.testing.assert_array_equal(masks, core.state.pool.free[:, 0, :] >= cores[:, None])
        venv.step(np.argmax(masks, axis=1))
