"""GPUPowerCap-v0: power and request accounting, delay/brake/UPS semantics, POLCA (+ test_contract.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloudgym
from cloudgym.baselines import gpu_powercap as baselines
from cloudgym.envs.core.histogram import histogram_quantile, latency_bins
from cloudgym.envs.core.llm import EMPTY
from cloudgym.envs.gpu_powercap import (
    OBS_BASE,
    GPUPowerCapConfig,
    GPUPowerCapCore,
    GPUPowerCapEnv,
    GPUPowerCapVectorEnv,
)
from cloudgym.envs.workloads.llm_row import RowRequests
from cloudgym.evaluation import evaluate, held_out_seeds
from tests.envs.small_configs import GPU_SMALL

ENV_ID = "GPUPowerCap-v0"
SMALL = GPU_SMALL
"""Six servers, 25-s episodes: every contract check in a few seconds."""


def small_env(num_envs: int = 2, **overrides: object) -> GPUPowerCapVectorEnv:
    return GPUPowerCapVectorEnv(num_envs=num_envs, **{**SMALL, **overrides})


def core_of(env: GPUPowerCapVectorEnv) -> GPUPowerCapCore:
    core = env.core
    assert isinstance(core, GPUPowerCapCore)
    return core


# ----------------------------------------------------------------------------- contract


def test_registered_both_ways() -> None:
    assert ENV_ID in cloudgym.ENV_IDS
    assert isinstance(gym.make(ENV_ID, **SMALL).unwrapped, GPUPowerCapEnv)
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **SMALL)
    assert isinstance(venv, GPUPowerCapVectorEnv)
    assert venv.metadata["autoreset_mode"].value == "NextStep"
    assert venv.single_observation_space.shape == (OBS_BASE,)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("oversubscription", 0.6, r"GPUPowerCapConfig\.oversubscription: got 0\.6; expected a value in \[0, 0\.5\]"),
        ("instance", "llama-9b", "unknown instance preset"),
        ("gpus_per_server", 6, "multiple of the instance"),
        ("freq_levels_mhz", (1300.0, 1110.0), "must start at f_max"),
        ("freq_levels_mhz", (1410.0, 1500.0), "decrease"),
        ("brake_freq_mhz", 100.0, "brake_freq_mhz"),
        ("load_level", (0.9, 0.5), "load_level"),
        ("hp_share", 1.0, "hp_share"),
    ],
)
def test_impossible_config_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **{field: value})


def test_misspelt_field_and_scenarios() -> None:
    with pytest.raises(TypeError, match="did you mean 'oversubscription'"):
        gym.make(ENV_ID, oversubscriptions=0.2)
    config = GPUPowerCapConfig.scenario("+30%")
    assert config.oversubscription == pytest.approx(0.3)
    assert config.track_reference
    assert config.num_servers == 52
    assert [GPUPowerCapConfig.scenario(f"+{p}%").oversubscription for p in range(0, 60, 10)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    )
    with pytest.raises(ValueError, match="unknown GPUPowerCapConfig scenario"):
        GPUPowerCapConfig.scenario("+70%")


# ----------------------------------------------------------------------------- accounting


def test_a_reset_replays_the_generators_instance() -> None:
    env = small_env(2)
    env.reset(seed=9)
    core = core_of(env)
    req = core.instance_for_seed(9, index=1, num_envs=2)
    m = len(req)
    rows = core.state.requests
    np.testing.assert_array_equal(rows.prompt[1, :m], req.prompt_tokens)
    np.testing.assert_array_equal(rows.output[1, :m], req.output_tokens)
    np.testing.assert_array_equal(rows.instance[1, :m], req.instance)
    np.testing.assert_allclose(rows.arrival[1, :m], req.arrival_s, rtol=1e-6)
    assert np.all(np.isinf(rows.arrival[1, m:]))
    assert rows.step_first[1, 0] == 0
    assert rows.step_first[1, -1] == m  # every request arrives within the warm-up and the episode
    np.testing.assert_allclose(rows.load[1], req.load, rtol=1e-6)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    levels=st.lists(st.integers(0, 7), min_size=2, max_size=2),
    warmup=st.sampled_from([0, 8]),
)
def test_power_energy_and_requests_add_up(seed: int, levels: list[int], warmup: int) -> None:
    # Brakes happen at this threshold; the UPS never trips, so the 24 steps stay in one episode (the sums below
    # run over one episode, and the info of a row that autoresets is masked).
    env = small_env(2, warmup_s=warmup, cap_delay_s=0, brake_threshold=0.8, ups_ride_through_s=1000)
    core = core_of(env)
    s, p = core.state, core.params
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    row_energy = np.zeros(2)
    for _ in range(24):
        action = np.array([levels, rng.integers(0, 8, 2)])
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated.any()
        assert not truncated.any()
        power = s.telemetry.power_last
        assert np.all(power >= p.server_model.idle_w - 1e-9)  # never negative, never below idle
        np.testing.assert_allclose(info["row_power_pct"], 100 * power.sum(axis=1) / p.budget_w)
        row_energy += power.sum(axis=1)
        # Row energy == the sum of its servers' meters == the integral of row power.
        np.testing.assert_allclose(s.counters.energy.joules.sum(axis=1), row_energy)
        # Every request that arrived is completed, queued or running, or rejected, in both rows.
        acc = s.counters
        for row in range(2):
            part = slice(row * p.num_instances, (row + 1) * p.num_instances)
            live = (s.llm.status[:, part] != EMPTY).sum(axis=2) @ p.class_onehot
            np.testing.assert_array_equal(acc.completed[:, row] + live + acc.rejected[:, row], acc.arrived)
    np.testing.assert_allclose(s.counters.energy.kwh(), row_energy / 3.6e6)
    assert s.counters.brakes.sum() > 0  # the brake's throttled seconds were accounted too


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), warm=st.integers(0, 12), level=st.integers(1, 7))
def test_a_cap_never_raises_power_at_the_same_activity(seed: int, warm: int, level: int) -> None:
    """A capped server draws no more than the same GPU activity would at f_max.

    (Not "no more than the uncapped run of the same second": a server at f_max
    can finish its work and idle part of the second while the capped one stays
    busy, so its average draw may be lower; seed 1411, 12 warm-up steps, level 1
    is such a case.)
    """
    kwargs = {"cap_delay_s": 0, "brake_threshold": 10.0, "track_reference": False}
    capped = small_env(1, **kwargs)
    capped.reset(seed=seed)
    for _ in range(warm):
        capped.step(np.zeros((1, 2), np.int64))
    capped.step(np.full((1, 2), level))
    core = core_of(capped)
    telemetry = core.state.telemetry
    at_full_clock = core.params.server_model.power_w(telemetry.activity_last, core.params.f_max)
    np.testing.assert_allclose(
        telemetry.power_last, core.params.server_model.power_w(telemetry.activity_last, core.server_freq_mhz())
    )
    assert np.all(telemetry.power_last <= at_full_clock + 1e-9)
    assert np.all(core.server_freq_mhz() < 1410.0)


def test_reference_row_equals_the_row_when_nothing_is_capped() -> None:
    env = small_env(2, oversubscription=0.0, brake_threshold=10.0)
    env.reset(seed=11)
    for _ in range(SMALL["steps_per_episode"]):
        _, _, _, truncated, info = env.step(np.zeros((2, 2), np.int64))
    assert truncated.all()
    metrics = info["metrics"]
    for name in ("hp_throughput_loss_pct", "lp_throughput_loss_pct", "hp_p99_latency_change_pct"):
        np.testing.assert_array_equal(metrics[name], 0.0)
    counters = core_of(env).state.counters
    np.testing.assert_allclose(counters.energy.joules, counters.reference_energy.joules)


def test_caps_slow_the_row_but_not_the_reference() -> None:
    free, capped = small_env(1, brake_threshold=10.0), small_env(1, brake_threshold=10.0)
    for env, level in ((free, 0), (capped, 7)):
        env.reset(seed=5)
        for _ in range(SMALL["steps_per_episode"]):
            _, _, _, _, info = env.step(np.full((1, 2), level))
    f, c = core_of(free).state.counters, core_of(capped).state.counters
    np.testing.assert_array_equal(f.tokens[:, 1], c.tokens[:, 1])  # the reference row never sees the caps
    assert c.latency_hist[:, 0].sum() <= f.latency_hist[:, 0].sum()
    assert info["metrics"]["lp_p50_latency_change_pct"][0] > 0  # 900 MHz stretches prefill by ~57%


# ----------------------------------------------------------------------------- delay, brake, UPS


@pytest.mark.parametrize("delay", [0, 1, 7])
def test_a_cap_lands_exactly_cap_delay_s_later(delay: int) -> None:
    env = small_env(1, cap_delay_s=delay, brake_threshold=10.0, steps_per_episode=20)
    env.reset(seed=2)
    lp = []
    for t in range(20):
        action = np.array([[0, 5 if t == 3 else 0]])  # LP to 1110 MHz at step 3 only
        _, _, _, _, info = env.step(action)
        lp.append(info["lp_freq_mhz"][0])
        assert info["hp_freq_mhz"][0] == 1410.0
    expected = np.full(20, 1410.0)
    expected[3 + delay] = 1110.0
    np.testing.assert_array_equal(lp, expected)


def test_the_first_command_of_an_episode_is_in_effect_from_its_start() -> None:
    """The row was under its controller before the episode opened: the first command fills the pipeline."""
    delay = 6
    env = small_env(1, cap_delay_s=delay, brake_threshold=10.0, steps_per_episode=12)
    env.reset(seed=2)
    lp = []
    for t in range(12):
        _, _, _, _, info = env.step(np.array([[0, 5 if t == 0 else 0]]))
        lp.append(info["lp_freq_mhz"][0])
    assert lp == [1110.0] * (delay + 1) + [1410.0] * (12 - delay - 1)


def test_powerbrake_engages_after_its_delay_holds_and_repeats() -> None:
    delay, hold = 3, 4
    env = small_env(1, brake_threshold=0.3, brake_delay_s=delay, brake_hold_s=hold, ups_ride_through_s=100)
    env.reset(seed=3)
    freq, started = [], []
    for _ in range(2 * (delay + hold) + 1):
        _, _, terminated, _, info = env.step(np.zeros((1, 2), np.int64))
        assert not terminated[0]
        freq.append(info["hp_freq_mhz"][0])
        started.append(bool(info["brake_started"][0]))
    # Over budget from the first second: a brake is ordered at step 0, throttles steps delay .. delay + hold - 1,
    # releases, and is ordered again at the release step.
    expected = [1410.0] * delay + [288.0] * hold + [1410.0] * delay + [288.0] * hold + [1410.0]
    assert freq == expected
    assert [i for i, s in enumerate(started) if s] == [0, delay + hold, 2 * (delay + hold)]
    assert core_of(env).state.counters.brakes[0] == 3


def test_the_breaker_trips_after_the_ups_ride_through() -> None:
    env = small_env(1, brake_threshold=0.3, ups_ride_through_s=3, brake_delay_s=5)
    env.reset(seed=4)
    rewards = []
    for _ in range(4):
        _, reward, terminated, _, info = env.step(np.zeros((1, 2), np.int64))
        rewards.append(reward[0])
    assert terminated[0]  # the fourth consecutive second over budget
    assert info["metrics"]["breaker_trips"][0] == 1.0
    assert rewards[-1] < rewards[-2] - 4900  # the trip penalty (5000)
    _, reward, terminated, truncated, _ = env.step(np.zeros((1, 2), np.int64))
    assert reward[0] == 0.0  # NEXT_STEP autoreset
    assert not terminated[0]
    assert not truncated[0]


def test_the_brake_cuts_an_over_budget_row() -> None:
    """What the brake is for: at 288 MHz a row that was over budget falls well under it."""
    env = small_env(1, oversubscription=0.5, brake_threshold=0.8, brake_delay_s=1, brake_hold_s=5, warmup_s=20)
    env.reset(seed=6)
    powers, braked = [], []
    for _ in range(8):
        _, _, _, _, info = env.step(np.zeros((1, 2), np.int64))
        powers.append(info["row_power_pct"][0])
        braked.append(bool(info["braked"][0]))
    braked_arr, powers_arr = np.array(braked), np.array(powers)
    assert braked_arr.any()
    assert powers_arr[braked_arr].max() < powers_arr[~braked_arr].min()


# ----------------------------------------------------------------------------- metrics helpers


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(0.02, 5000.0), min_size=1, max_size=400), q=st.sampled_from([0.5, 0.9, 0.99]))
def test_histogram_quantiles_are_within_a_bin_of_the_exact_ones(values: list[float], q: float) -> None:
    x = np.asarray(values)
    hist = np.bincount(latency_bins(x), minlength=int(latency_bins(np.array([1e9]))[0]) + 1)[None]
    exact = np.percentile(x, 100 * q, method="inverted_cdf")
    assert histogram_quantile(hist, q)[0] == pytest.approx(exact, rel=0.011)


# ----------------------------------------------------------------------------- POLCA


def polca_obs(powers: list[float]) -> np.ndarray:
    obs = np.zeros((len(powers), OBS_BASE), np.float32)
    obs[:, 0] = powers
    return obs


def test_polca_thresholds_escalation_and_hysteresis() -> None:
    env = GPUPowerCapVectorEnv(num_envs=1, **{**SMALL, "cap_delay_s": 3})
    policy = baselines.Polca(env)
    policy.reset(np.arange(1))
    levels = list(GPUPowerCapConfig().freq_levels_mhz)
    lp_mild, lp_deep, hp_cap = levels.index(1275.0), levels.index(1110.0), levels.index(1305.0)
    seq = [0.70, 0.81, 0.85, 0.90, 0.90, 0.90, 0.90, 0.90, 0.86, 0.83, 0.78, 0.74]
    actions = [tuple(policy.act(polca_obs([p]))[0]) for p in seq]
    assert actions[0] == (0, 0)  # below T1
    assert actions[1] == (0, lp_mild)  # above T1: LP to 1275
    assert actions[2] == (0, lp_mild)  # above T1 - 5%, below T2: hold
    assert actions[3] == (0, lp_deep)  # above T2: LP to 1110
    assert actions[4:7] == [(0, lp_deep)] * 3  # the LP cap needs the 3-s delay to act first
    assert actions[7] == (hp_cap, lp_deep)  # still above T2 after it: HP to 1305
    assert actions[8] == (hp_cap, lp_deep)  # 86%: above T2 - 5%, keep
    assert actions[9] == (0, lp_mild)  # below 84%: HP uncapped, LP back to 1275
    assert actions[10] == (0, lp_mild)  # 78%: above T1 - 5%
    assert actions[11] == (0, 0)  # below 75%: uncapped
    policy.reset(np.arange(1))
    assert tuple(policy.act(polca_obs([0.70]))[0]) == (0, 0)


def test_baselines_fill_per_server_actions() -> None:
    env = GPUPowerCapVectorEnv(num_envs=2, **{**SMALL, "per_server_caps": True})
    n_hp, n_lp = env.config.servers_per_class
    lock = baselines.StaticLock(env).act(None)
    assert lock.shape == (2, n_hp + n_lp)
    assert np.all(lock == list(env.config.freq_levels_mhz).index(1110.0))
    polca = baselines.Polca(env).act(polca_obs([0.95, 0.5]))
    assert np.all(polca[0, n_hp:] > 0)
    assert np.all(polca[0, :n_hp] == 0)
    assert np.all(polca[1] == 0)
    with pytest.raises(ValueError, match="not among freq_levels_mhz"):
        baselines.StaticLock(env, mhz=1000.0)


# ----------------------------------------------------------------------------- the report and the headline


def test_paper_table_and_plots_from_a_small_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {name: {**SMALL, **kwargs, "steps_per_episode": 12} for name, kwargs in baselines.SCENARIOS.items()}
    monkeypatch.setattr(baselines, "SCENARIOS", small)
    import pandas as pd

    rows = []
    for name in ("+0%", "+30%"):
        for policy in ("no_cap", "polca"):
            rows += evaluate(policy, ENV_ID, held_out_seeds(2), env_kwargs=small[name], scenario=name)
    frame = pd.DataFrame(rows)
    table = baselines.paper_table(frame)
    assert list(table["level"]) == ["+0%", "+0%", "+30%", "+30%"]
    row = table[(table["level"] == "+30%") & (table["policy"] == "polca")].iloc[0]
    mine = frame[(frame["scenario"] == "+30%") & (frame["policy"] == "polca")]
    assert row["brakes/ep"] == pytest.approx(mine["powerbrakes"].mean())
    assert row["LP p99 Δ%"] == pytest.approx(mine["lp_p99_latency_change_pct"].mean())
    assert table.loc[table["level"] == "+0%", "work vs +0%"].iloc[0] == pytest.approx(1.0)
    files = baselines.write_paper_table(frame, tmp_path) + baselines.plot_row_power(frame, tmp_path)
    assert [f.suffix for f in files] == [".md", ".png", ".png"]
    assert all(f.stat().st_size > 0 for f in files)
    assert "| +30% | polca |" in files[0].read_text()


def test_row_power_is_calibrated_to_polcas_production_figures() -> None:
    """Uncapped +0% row: peaks near 79% of the budget, rises at most ~12% within 40 s (POLCA)."""
    cal = baselines.power_calibration(4)
    assert 75.0 <= np.median(cal["peak_power_pct"]) <= 83.0
    assert cal["max_rise_40s_pct"].max() <= 15.0
    assert np.all(cal["mean_power_pct"] < cal["peak_power_pct"])


@pytest.mark.slow
def test_polca_keeps_a_30_percent_oversubscribed_row_brake_free_where_no_capping_brakes() -> None:
    """The headline (POLCA, DOMAIN.md section 3) on two held-out episodes of the default +30% row."""
    seeds = held_out_seeds(2)
    polca = evaluate("polca", ENV_ID, seeds, scenario="+30%", env_kwargs=baselines.SCENARIOS["+30%"])
    no_cap = evaluate("no_cap", ENV_ID, seeds, scenario="+30%", env_kwargs=baselines.SCENARIOS["+30%"])
    assert all(r["powerbrakes"] == 0 and r["breaker_trips"] == 0 for r in polca)
    assert all(r["hp_throughput_loss_pct"] <= 1.0 and r["lp_throughput_loss_pct"] <= 2.0 for r in polca)
    assert sum(r["powerbrakes"] for r in no_cap) >= 2
    assert np.mean([r["lp_p99_latency_change_pct"] for r in no_cap]) > np.mean(
        [r["lp_p99_latency_change_pct"] for r in polca]
    )


def test_request_store_widens_to_the_largest_episode_and_keeps_each_row() -> None:
    """The (B, R) request arrays grow with the largest episode drawn (never past max_requests), rows stay exact."""
    venv = small_env(num_envs=3)
    core: GPUPowerCapCore = venv.core  # type: ignore[assignment]
    venv.reset(seed=5)
    store = core.state.requests
    first = [core.instance_for_seed(5, index=i, num_envs=3) for i in range(3)]
    assert max(len(r) for r in first) <= store.arrival.shape[1] <= core.config.max_requests
    # A busier episode in row 1 only: the store widens, row 0 and row 2 keep their requests.
    busy = dataclasses.replace(core.config, load_level=(3.0, 3.5))
    bigger = core_cls_sample(busy, seed=9)
    assert len(bigger) > store.arrival.shape[1]
    store.write(np.array([1]), [bigger], core.config.max_requests)
    assert store.arrival.shape[1] >= len(bigger)
    for i, req in ((0, first[0]), (1, bigger), (2, first[2])):
        m = len(req)
        horizon = store.load.shape[1]
        arrival = np.minimum(req.arrival_s.astype(np.float32), np.nextafter(np.float32(horizon), np.float32(0)))
        np.testing.assert_array_equal(store.arrival[i, :m], arrival)
        assert np.all(np.isinf(store.arrival[i, m:]))
        np.testing.assert_array_equal(store.prompt[i, :m], req.prompt_tokens)
        np.testing.assert_array_equal(store.output[i, :m], req.output_tokens)
        np.testing.assert_array_equal(store.instance[i, :m], req.instance)
        np.testing.assert_array_equal(store.step_first[i], req.step_bounds(horizon))
    with pytest.raises(RuntimeError, match=f"drew {len(bigger)} requests, more than the 10"):
        store.write(np.array([0]), [bigger], 10)


def core_cls_sample(config: GPUPowerCapConfig, seed: int) -> RowRequests:
    """One episode of ``config``'s generator."""
    sample: RowRequests = GPUPowerCapCore(1, config).params.generator.sample(np.random.default_rng(seed))
    return sample
