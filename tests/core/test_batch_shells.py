"""The base core and the shells: seeding, partial resets, info masks, errors at the edge."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from cloudgym.envs.core.batch import validate_actions
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.toy_cluster import ToyClusterEnv, ToyClusterVectorEnv

ENV_ID = "ToyCluster-v0"


def test_int_seed_gives_each_sub_env_its_own_spawned_child() -> None:
    venv = ToyClusterVectorEnv(num_envs=4)
    obs, _ = venv.reset(seed=11)
    assert len({row.tobytes() for row in obs}) == 4  # independent streams
    alone = ToyClusterVectorEnv(num_envs=1)
    first, _ = alone.reset(seed=11)
    np.testing.assert_array_equal(first[0], obs[0])  # spawn(B)[0] does not depend on B
    single = ToyClusterEnv()
    single_obs, _ = single.reset(seed=11)
    np.testing.assert_array_equal(single_obs, obs[0])


def test_seed_list_gives_sub_env_i_the_single_env_stream() -> None:
    venv = ToyClusterVectorEnv(num_envs=3)
    obs, _ = venv.reset(seed=[5, 6, 7])
    for i, seed in enumerate([5, 6, 7]):
        single_obs, _ = ToyClusterEnv().reset(seed=seed)
        np.testing.assert_array_equal(obs[i], single_obs)


def test_reset_without_seed_continues_with_new_episodes() -> None:
    venv = ToyClusterVectorEnv(num_envs=2)
    a, _ = venv.reset(seed=1)
    b, _ = venv.reset()
    assert not np.array_equal(a, b)
    again = ToyClusterVectorEnv(num_envs=2)
    again.reset(seed=1)
    c, _ = again.reset()
    np.testing.assert_array_equal(b, c)  # deterministic


def test_partial_reset_touches_only_masked_sub_envs() -> None:
    venv = ToyClusterVectorEnv(num_envs=3)
    venv.reset(seed=2)
    for _ in range(5):
        obs, *_ = venv.step(np.zeros(3, np.int64))
    after, _ = venv.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(after[[0, 2]], obs[[0, 2]])
    assert venv.core.stats.length.tolist() == [5, 0, 5]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"options": {"reset_mask": np.array([1, 0, 1])}}, ValueError, "bool array"),
        ({"options": {"bogus": 1}}, ValueError, "unknown reset options"),
        ({"seed": [1, 2]}, ValueError, "2 seeds for 3 sub-envs"),
        ({"seed": -4}, ValueError, "non-negative"),
    ],
)
def test_bad_reset_arguments_are_named(kwargs: dict, error: type[Exception], message: str) -> None:
    venv = ToyClusterVectorEnv(num_envs=3)
    with pytest.raises(error, match=message):
        venv.reset(**kwargs)


def test_step_before_reset_and_after_episode_end_raise() -> None:
    venv = ToyClusterVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(2, np.int64))
    single = ToyClusterEnv(steps_per_episode=2)
    with pytest.raises(RuntimeError, match="reset"):
        single.step(0)
    single.reset(seed=0)
    single.step(0)
    _, _, terminated, _, info = single.step(0)
    assert terminated
    assert set(info["metrics"]) == {"cost_usd", "energy_kwh", "rejected_jobs", "active_node_hours"}
    with pytest.raises(RuntimeError, match="episode has ended"):
        single.step(0)


def test_render_mode_and_num_envs_are_checked() -> None:
    with pytest.raises(ValueError, match="render_mode must be one of"):
        gym.make(ENV_ID, render_mode="human")
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        ToyClusterVectorEnv(num_envs=0)


def test_info_is_a_dict_of_arrays_with_masks() -> None:
    venv = ToyClusterVectorEnv(num_envs=3, steps_per_episode=3)
    venv.reset(seed=0)
    for _ in range(3):
        _, _, terminated, _, info = venv.step(np.zeros(3, np.int64))
        for key, value in info.items():
            if not key.startswith("_") and not isinstance(value, dict):
                assert value.shape[0] == 3
                assert info[f"_{key}"].dtype == np.bool_
    assert terminated.all()
    assert info["_episode_stats"].all()
    assert np.all(info["episode_stats"]["l"] == 3)


def test_validate_actions_names_shape_dtype_and_range() -> None:
    space = gym.spaces.Discrete(4)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        validate_actions(space, np.zeros(3, np.int64), 2)
    with pytest.raises(TypeError, match="integer"):
        validate_actions(space, np.zeros(2), 2)
    with pytest.raises(ValueError, match="outside Discrete"):
        validate_actions(space, np.array([0, 4]), 2)
    box = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    with pytest.raises(ValueError, match="outside the action space bounds"):
        validate_actions(box, np.array([[0.5, 1.5]]), 1)
    with pytest.raises(ValueError, match="non-finite"):
        validate_actions(box, np.array([[np.nan, 0.5]]), 1)
    multi = gym.spaces.MultiDiscrete([3, 2])
    with pytest.raises(ValueError, match="outside MultiDiscrete"):
        validate_actions(multi, np.array([[2, 2]]), 1)
    np.testing.assert_array_equal(validate_actions(multi, np.array([[2, 1]]), 1), [[2, 1]])


def test_make_vec_returns_the_native_env_not_a_sync_wrapper() -> None:
    venv = gym.make_vec(ENV_ID, num_envs=5, vectorization_mode="vector_entry_point", num_nodes=3)
    assert isinstance(venv, CloudGymVectorEnv)
    assert venv.num_envs == 5
    assert venv.single_action_space == gym.spaces.Discrete(3)
    assert venv.action_space.shape == (5,)
