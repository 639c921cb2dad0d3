"""The contract every registered env keeps, checked once per env through the public API.

Each check of :mod:`cloudgym.envs.core.checks` (batch invariance,
determinism, NEXT_STEP autoreset, bad actions, the SB3 adapter, observations
in their space), Gymnasium's and SB3's ``check_env``, registration and
config errors run on every id in ``cloudgym.ALL_ENV_IDS``, on the small
config of :data:`CASES`. A few variants that take another code path of an
env (a fleet under a memory budget, per-server caps, a second workload or
capacity model) run the checks that concern them. A new env adds one line to
:data:`CASES` (its env test file then keeps only what is specific to it);
``test_every_registered_env_has_a_case`` fails until it does.

Only ``gym.make``, ``gym.make_vec`` and the shells' public attributes are
used here, so the checks hold whatever the core's internals look like.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import cloudgym
from cloudgym.envs.core import checks
from cloudgym.envs.registration import ENV_MODULES, TEST_ENV_MODULES
from tests.envs.small_configs import DC_SMALL, GPU_SMALL

ENV_CHECKER = "env_checker"
BATCH_INVARIANCE = "batch_invariance"
DETERMINISM = "determinism"
AUTORESET = "autoreset"
SB3_ADAPTER = "sb3_adapter"
BAD_ACTIONS = "bad_actions"
OBSERVATIONS = "observations"
EVERY_CHECK = frozenset({ENV_CHECKER, BATCH_INVARIANCE, DETERMINISM, AUTORESET, SB3_ADAPTER, BAD_ACTIONS, OBSERVATIONS})


@dataclasses.dataclass(frozen=True)
class Case:
    """One env configuration small enough for the contract checks to take about a second."""

    env_id: str
    kwargs: Mapping[str, Any]
    """Config fields given to gym.make / make_vec."""
    steps: int
    """Steps per check: enough for every sub-env to end an episode and start the next."""
    num_envs: int = 3
    """Sub-envs of the batched checks (and seeds of the batch invariance check)."""
    variant: str = ""
    """Empty for an env's main case; otherwise names the code path the variant covers."""
    checks: frozenset[str] = EVERY_CHECK
    """Which checks run on this case."""

    @property
    def id(self) -> str:
        return f"{self.env_id}[{self.variant}]" if self.variant else self.env_id


FAAS_SMALL = {"episode_minutes": 40, "warmup_minutes": 30}
FAAS_FLEET = {"episode_minutes": 60, "warmup_minutes": 30, "apps_per_fleet": 4, "memory_budget_gb": 0.3}

CASES: tuple[Case, ...] = (
    Case("ToyCluster-v0", {"steps_per_episode": 12}, steps=30, num_envs=4),
    Case("FaaSKeepAlive-v0", FAAS_SMALL, steps=90, num_envs=4),
    Case(
        "FaaSKeepAlive-v0",
        {**FAAS_SMALL, "workload": "toy"},
        steps=90,
        num_envs=4,
        variant="toy",
        checks=frozenset({BATCH_INVARIANCE}),
    ),
    # Four apps under a memory budget, evicted by LRU or by the policy's third action.
    Case(
        "FaaSKeepAlive-v0",
        {**FAAS_FLEET, "eviction": "lru"},
        steps=70,
        variant="fleet-lru",
        checks=EVERY_CHECK - {SB3_ADAPTER},
    ),
    Case("FaaSKeepAlive-v0", {**FAAS_FLEET, "eviction": "policy"}, steps=70, variant="fleet-policy"),
    # A long warm-up fills the idle-time histograms: the observation's features away from their start values.
    Case(
        "FaaSKeepAlive-v0",
        {"episode_minutes": 200, "warmup_minutes": 300},
        steps=200,
        num_envs=32,
        variant="long-history",
        checks=frozenset({OBSERVATIONS}),
    ),
    Case("LLMRouter-v0", {"scenario": "small"}, steps=60),
    Case("GPUPowerCap-v0", GPU_SMALL, steps=40),
    Case(
        "GPUPowerCap-v0",
        {**GPU_SMALL, "per_server_caps": True},
        steps=30,
        num_envs=2,
        variant="per-server-caps",
        checks=frozenset({BATCH_INVARIANCE}),
    ),
    Case(
        "Oversubscription-v0",
        {"num_nodes": 3, "node_cores": 16, "hours": 5, "workload_hints": True, "hint_error_rate": 0.2},
        steps=8,
    ),
    Case("DCLifecycle-v0", DC_SMALL, steps=30),
    Case(
        "DCLifecycle-v0",
        {"scenario": "realistic", "horizon_quarters": 24, "shock_window": (2, 20)},
        steps=26,
        num_envs=2,
        variant="realistic",
        checks=frozenset({BATCH_INVARIANCE, DETERMINISM}),
    ),
)
MAIN_CASES = {c.env_id: c for c in CASES if not c.variant}
SEEDS = (3, 17, 5, 99)


def cases_for(check: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if check in c.checks]


def test_every_registered_env_has_a_case() -> None:
    assert set(MAIN_CASES) == set(cloudgym.ALL_ENV_IDS), "add the new env's small config to CASES"
    assert all(c.env_id in MAIN_CASES for c in CASES)
    assert len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- registration and config errors


@pytest.mark.parametrize("env_id", cloudgym.ALL_ENV_IDS)
def test_registered_both_ways(env_id: str) -> None:
    assert (env_id in cloudgym.ENV_IDS) == (env_id in ENV_MODULES)
    assert (env_id in cloudgym.TEST_ENV_IDS) == (env_id in TEST_ENV_MODULES)
    module_name, name = {**ENV_MODULES, **TEST_ENV_MODULES}[env_id]
    module = importlib.import_module(f"cloudgym.envs.{module_name}")
    assert isinstance(gym.make(env_id).unwrapped, getattr(module, f"{name}Env"))
    assert isinstance(gym.make(f"cloudgym:{env_id}").unwrapped, getattr(module, f"{name}Env"))
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    assert isinstance(venv, getattr(module, f"{name}VectorEnv"))
    assert venv.metadata["autoreset_mode"].value == "NextStep"


@pytest.mark.parametrize("env_id", cloudgym.ALL_ENV_IDS)
def test_misspelt_config_fields_are_named(env_id: str) -> None:
    config = checks.make_single(env_id, **MAIN_CASES[env_id].kwargs).config
    for field in dataclasses.fields(config):
        typo: dict[str, Any] = {f"{field.name}x": 1}
        with pytest.raises(TypeError, match=f"no field '{field.name}x'; did you mean '{field.name}'"):
            gym.make(env_id, **typo)
        with pytest.raises(TypeError, match=f"no field '{field.name}x'; did you mean '{field.name}'"):
            gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **typo)


@pytest.mark.parametrize("env_id", cloudgym.ALL_ENV_IDS)
def test_unknown_scenario_and_wrong_config_type_are_named(env_id: str) -> None:
    config = checks.make_single(env_id, **MAIN_CASES[env_id].kwargs).config
    if hasattr(type(config), "scenario"):
        with pytest.raises(ValueError, match=r"unknown (\S+ )?scenario 'no-such-scenario'"):
            gym.make(env_id, scenario="no-such-scenario")
    else:
        with pytest.raises(TypeError, match="has no named scenarios"):
            gym.make(env_id, scenario="no-such-scenario")
    with pytest.raises(TypeError, match=f"config must be a {type(config).__name__}"):
        gym.make(env_id, config=object())


# ----------------------------------------------------------------------------- the checks of envs/core/checks.py


@pytest.mark.filterwarnings("ignore:Your observation  has an unconventional shape")
@pytest.mark.parametrize("case", cases_for(ENV_CHECKER))
def test_gymnasium_and_sb3_env_checkers(case: Case) -> None:
    gym_check_env(gym.make(case.env_id, disable_env_checker=True, **case.kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(case.env_id, disable_env_checker=True, **case.kwargs).unwrapped)


@pytest.mark.parametrize("case", cases_for(BATCH_INVARIANCE))
def test_batch_invariance(case: Case) -> None:
    seeds = list(SEEDS[: case.num_envs])
    checks.check_batch_invariance(case.env_id, seeds=seeds, steps=case.steps, env_kwargs=case.kwargs)


@pytest.mark.parametrize("case", cases_for(DETERMINISM))
def test_determinism(case: Case) -> None:
    checks.check_determinism(case.env_id, seed=7, num_envs=case.num_envs, steps=case.steps, env_kwargs=case.kwargs)


@pytest.mark.parametrize("case", cases_for(AUTORESET))
def test_autoreset(case: Case) -> None:
    # max_steps is a cap: the check stops once every sub-env has ended an episode.
    ends = checks.check_autoreset(
        case.env_id, seed=1, num_envs=case.num_envs, max_steps=4 * case.steps, env_kwargs=case.kwargs
    )
    assert ends >= case.num_envs


@pytest.mark.parametrize("case", cases_for(SB3_ADAPTER))
def test_sb3_adapter_matches_native(case: Case) -> None:
    checks.check_sb3_adapter(case.env_id, seed=4, num_envs=case.num_envs, steps=case.steps, env_kwargs=case.kwargs)


@pytest.mark.parametrize("case", cases_for(BAD_ACTIONS))
def test_bad_actions(case: Case) -> None:
    checks.check_bad_actions(case.env_id, env_kwargs=case.kwargs)


@pytest.mark.parametrize("case", cases_for(OBSERVATIONS))
def test_observations_stay_in_their_space(case: Case) -> None:
    checks.check_observations(case.env_id, seed=5, num_envs=case.num_envs, steps=case.steps, env_kwargs=case.kwargs)
