"""Every config value fails cleanly at make or runs cleanly: the property over every env's fields and num_envs.

For any value of any field (and of ``num_envs``), ``make_vec`` + reset + a
few random valid steps either finish with finite observations and rewards,
or make raises a ValueError/TypeError whose message names the field; never a
crash, a hang (the probe's time bound is a safety net, not a speed
assertion), a late failure at reset or step, or a non-finite result.
(``cloudgym.config_robustness.probe`` sorts each try; the fixed corpus of
``scripts/config_robustness.py`` runs here too, marked slow.)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloudgym
from cloudgym import config_robustness as cr
from cloudgym.envs.core import memory
from cloudgym.envs.dc_lifecycle import DCLifecycleConfig
from cloudgym.envs.fields import Range, check_fields
from cloudgym.envs.gpu_powercap import GPUPowerCapConfig
from cloudgym.envs.llm_router import LLMRouterConfig
from cloudgym.envs.toy_cluster import ToyClusterConfig, ToyClusterVectorEnv
from cloudgym.envs.workloads.fleet import ShockSpec

# ----------------------------------------------------------------------------- the property

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-3, max_value=200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.text(max_size=6),
    st.sampled_from(["False", "True", "4", "0.5", "nan", "trace", "mix", "lru"]),
)
CONTAINERS = st.one_of(
    st.lists(SCALARS, max_size=6).map(tuple),
    st.lists(st.floats(min_value=-1.0, max_value=3.0), max_size=6),
    st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(ShockSpec)] + ["x"]), SCALARS, max_size=3),
)


def values_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Bad-or-odd values for a field: its type's corpus, its range's edges, any scalar or container."""
    return st.one_of(st.sampled_from(cr.corpus_for(annotation)), SCALARS, CONTAINERS)


@pytest.mark.parametrize("env_id", cloudgym.ALL_ENV_IDS)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_config_value_runs_cleanly_or_is_named_at_make(env_id: str, data: st.DataObject) -> None:
    annotations = cr.field_annotations(env_id)
    ranges: dict[str, Range] = dict(getattr(cr.config_class(env_id), "FIELD_RANGES", {}))
    field = data.draw(st.sampled_from(["num_envs", *annotations]), label="field")
    if field == "num_envs":
        value = data.draw(st.one_of(st.sampled_from(cr.NUM_ENVS_CORPUS), SCALARS), label="value")
    else:
        edges = cr.edge_values(annotations[field], ranges[field]) if field in ranges else ()
        strategy = values_for(annotations[field])
        if edges:
            strategy = st.one_of(st.sampled_from(edges), strategy)
        value = data.draw(strategy, label="value")
    trial = cr.probe(env_id, field, value, timeout_s=120.0)
    assert trial.outcome.ok, f"{env_id} {field}={value!r}: {trial.outcome.value}: {trial.detail}"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", cloudgym.ALL_ENV_IDS)
def test_fixed_corpus_has_no_crash_hang_or_silent_result(env_id: str) -> None:
    trials = cr.run_corpus([env_id])
    bad = [t for t in trials if not t.outcome.ok]
    assert not bad, "\n".join(f"{t.field}={t.value!r}: {t.outcome.value}: {t.detail}" for t in bad[:10])
    assert {t.outcome for t in trials} == {cr.Outcome.NAMED, cr.Outcome.ACCEPTED}


def test_the_probe_calls_a_value_kept_in_a_field_of_another_type_silent() -> None:
    assert not cr.conforms(bool, "False")
    assert not cr.conforms(ShockSpec, {"demand_factor": -3})
    assert not cr.conforms(tuple[float, float], [0.1, 0.2])
    assert not cr.conforms(float, math.inf)
    assert cr.conforms(tuple[float, float], (0.1, 0.2))
    assert cr.conforms(float | None, None)
    assert cr.Outcome.SILENT not in {o for o in cr.Outcome if o.ok}


# ----------------------------------------------------------------------------- the checker's rules


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        # bools are bools: 'False' would be truthy
        (
            {"chunked_prefill": "False"},
            TypeError,
            r"LLMRouterConfig.chunked_prefill: got 'False' \(str\); expected a bool",
        ),
        ({"instances": 0}, TypeError, r"LLMRouterConfig.instances: got 0 \(int\); expected a tuple or list of str"),
        ({"slots": "4"}, TypeError, r"LLMRouterConfig.slots: got '4' \(str\); expected an integer"),
        ({"slots": 4.0}, TypeError, r"LLMRouterConfig.slots: got 4.0 \(float\); expected an integer \(give a whole"),
        ({"slots": 10**9}, ValueError, r"LLMRouterConfig.slots: got 1000000000; expected a value in \[2, 4096\]"),
        ({"target_load": math.nan}, ValueError, r"LLMRouterConfig.target_load: got nan; expected a finite real"),
        ({"mix": (0.5,)}, ValueError, r"LLMRouterConfig.mix: got 1 values \(0.5,\); expected 2"),
        ({"mix": (0.5, math.inf)}, ValueError, r"LLMRouterConfig.mix: element 1: got inf"),
        (
            {"arrival_rate_per_s": "1"},
            TypeError,
            r"LLMRouterConfig.arrival_rate_per_s: got '1' \(str\); expected a real",
        ),
        ({"arrival_cv": 10**400}, ValueError, r"LLMRouterConfig.arrival_cv: got .* \(int\); expected a finite real"),
    ],
)
def test_type_and_range_errors_name_class_field_value_and_what_is_allowed(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LLMRouterConfig(**kwargs)


def test_values_are_normalised_so_valid_configs_behave_the_same_whatever_their_types() -> None:
    config = ToyClusterConfig(num_nodes=np.int64(3), step_hours=1, price_range=[0.1, np.float64(0.2)])
    assert type(config.num_nodes) is int
    assert config.num_nodes == 3
    assert type(config.step_hours) is float
    assert config.price_range == (0.1, 0.2)
    assert all(type(p) is float for p in config.price_range)
    assert hash(config) == hash(ToyClusterConfig(num_nodes=3, step_hours=1.0, price_range=(0.1, 0.2)))
    assert LLMRouterConfig(chunked_prefill=np.bool_(True), max_batched_tokens=2048).chunked_prefill is True


def test_literal_choices_and_optional_fields() -> None:
    with pytest.raises(
        ValueError, match=r"DCLifecycleConfig.building_model: got 'rented' \(str\); expected one of 'rent', 'sunk'"
    ):
        DCLifecycleConfig(building_model="rented")
    with pytest.raises(TypeError, match=r"DCLifecycleConfig\.capacity_model: got 1"):
        DCLifecycleConfig(capacity_model=1)
    assert LLMRouterConfig(arrival_rate_per_s=None).arrival_rate_per_s is None
    assert LLMRouterConfig(arrival_rate_per_s=3).arrival_rate_per_s == 3.0


def test_nested_shocks_are_built_from_a_mapping_and_checked() -> None:
    from_yaml = DCLifecycleConfig(shocks={"demand_factor": 2.0, "price_factor": 0.5})
    assert from_yaml.shocks == ShockSpec(demand_factor=2.0, price_factor=0.5)
    with pytest.raises(
        ValueError, match=r"DCLifecycleConfig.shocks: ShockSpec.demand_factor: got -3.0; expected a value in \(0, 100\]"
    ):
        DCLifecycleConfig(shocks={"demand_factor": -3})
    with pytest.raises(TypeError, match=r"DCLifecycleConfig\.shocks: ShockSpec has no field demand"):
        DCLifecycleConfig(shocks={"demand": 2.0})
    with pytest.raises(TypeError, match=r"DCLifecycleConfig\.shocks: got 3 \(int\); expected a ShockSpec or a mapping"):
        DCLifecycleConfig(shocks=3)
    with pytest.raises(ValueError, match=r"ShockSpec\.demand_factor: got -3"):
        ShockSpec(demand_factor=-3)


def test_shocks_from_a_mapping_run_through_a_shock() -> None:
    env = gym.make_vec(
        "DCLifecycle-v0",
        num_envs=1,
        vectorization_mode="vector_entry_point",
        horizon_quarters=8,
        shock_window=(1, 2),
        shocks={"demand_factor": 2.0},
        fixed_shock_quarter=(1, 1, 1, 1),
    )
    env.reset(seed=0)
    for _ in range(4):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all()
        assert np.isfinite(reward).all()


def test_check_fields_leaves_unannotated_kinds_to_the_config() -> None:
    @dataclasses.dataclass(frozen=True)
    class Loose:
        anything: Any = None
        count: int = 1

    check_fields(Loose(anything=object()))
    with pytest.raises(TypeError, match=r"Loose\.count: got True"):
        check_fields(Loose(count=True))


# ----------------------------------------------------------------------------- num_envs and the state's bytes


@pytest.mark.parametrize(
    ("num_envs", "error"), [(0, ValueError), (10**8, ValueError), (2.0, TypeError), ("2", TypeError), (True, TypeError)]
)
def test_num_envs_is_checked_before_anything_is_allocated(num_envs: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="num_envs"):
        gym.make_vec("ToyCluster-v0", num_envs=num_envs, vectorization_mode="vector_entry_point")


def test_state_beyond_the_memory_limit_is_refused_naming_num_envs_and_the_sizing_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = ToyClusterVectorEnv(num_envs=1).core.state_nbytes()
    monkeypatch.setenv(memory.MAX_STATE_BYTES_ENV, str(10 * one))
    gym.make_vec("ToyCluster-v0", num_envs=10, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=r"num_envs=11 .*num_nodes, steps_per_episode, max_job_duration.*CLOUDGYM_MAX"):
        gym.make_vec("ToyCluster-v0", num_envs=11, vectorization_mode="vector_entry_point")
    monkeypatch.setenv(memory.MAX_STATE_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="CLOUDGYM_MAX_STATE_BYTES must be a positive integer"):
        gym.make_vec("ToyCluster-v0", num_envs=1, vectorization_mode="vector_entry_point")


def test_default_limit_refuses_a_batch_that_would_not_fit_the_machine() -> None:
    # GPUPowerCap's default sub-env holds ~1 MB; 65,536 of them would need ~60 GiB.
    with pytest.raises(ValueError, match=r"GPUPowerCapCore: num_envs=65536 .* the limit is 8 GiB"):
        gym.make_vec("GPUPowerCap-v0", num_envs=2**16, vectorization_mode="vector_entry_point")


def test_every_config_declares_ranges_for_its_numeric_fields() -> None:
    for env_id in cloudgym.ALL_ENV_IDS:
        cls = cr.config_class(env_id)
        hints = typing.get_type_hints(cls)
        ranges = getattr(cls, "FIELD_RANGES", {})
        numeric = [f.name for f in dataclasses.fields(cls) if cr.numeric_type(hints[f.name]) is not None]
        missing = [name for name in numeric if name not in ranges]
        assert not missing, f"{cls.__name__}: numeric fields without a range: {missing}"
    assert set(ShockSpec.FIELD_RANGES) == {f.name for f in dataclasses.fields(ShockSpec)}
    assert GPUPowerCapConfig.FIELD_RANGES["cap_delay_s"].high == 3600


def test_a_probe_past_its_time_limit_is_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared SIGALRM limit interrupts a probe and names it a hang, never a crash."""
    import time

    def stuck_make(*args: object, **kwargs: object) -> None:
        time.sleep(5.0)  # an env that never finishes making

    monkeypatch.setattr(cr.gym, "make_vec", stuck_make)
    trial = cr.probe("ToyCluster-v0", "num_nodes", 4, timeout_s=0.05)
    assert trial.outcome is cr.Outcome.HANG, trial
    assert "at make: time limit of 0.05 s reached" in trial.detail
    assert trial.seconds < 1.0
