"""FaaSKeepAlive-v0: a slow reference simulator, the paper's sanity properties, baselines (+ test_contract.py)."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.baselines.faas_keepalive import (
    FixedKeepAlive,
    GreedyDual,
    HindsightOracle,
    HybridHistogram,
    break_even_shares,
    hybrid_waste_study,
    paper_points,
    plot_paper_figure,
    replay_apps,
    replay_benchmark,
    upcoming_invocations,
)
from cloudgym.envs.faas_keepalive import (
    MINUTE_CODES,
    NEVER,
    OBS,
    OBS_FIELDS,
    WINDOW_SCALE_MIN,
    FaaSKeepAliveConfig,
    FaaSKeepAliveCore,
    FaaSKeepAliveVectorEnv,
    batched_action,
    decode_count,
    decode_minutes,
    encode_count,
    encode_minutes,
    windows_action,
)
from cloudgym.envs.workloads.faas_histogram import IdleTimeHistogram
from cloudgym.evaluation import evaluate, held_out_seeds

ENV_ID = "FaaSKeepAlive-v0"
SMALL = {"episode_minutes": 40, "warmup_minutes": 30}
TRACE_2021 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "traces" / "AzureFunctionsInvocationTrace2021_first998.csv"
)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("episode_minutes", 0, r"FaaSKeepAliveConfig\.episode_minutes: got 0; expected a value in \[1, 40320\]"),
        ("warmup_minutes", 40000, "must be <= 40320"),
        ("workload", "azure2020", "workload must be one of"),
        ("workload", "trace", "needs trace_path"),
        ("memory_weight", -1.0, r"memory_weight: got -1\.0; expected a value in \[0, 1000000\]"),
        ("histogram_range_min", 1, r"histogram_range_min: got 1; expected a value in \[2, 1440\]"),
        ("toy_period_range", (5, 2), "toy_period_range"),
    ],
)
def test_impossible_config_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **{field: value})


def test_missing_trace_file_is_named() -> None:
    with pytest.raises(ValueError, match=r"FaaSKeepAliveConfig\.trace_path: .*looked in"):
        FaaSKeepAliveConfig(workload="trace", trace_path="/nonexistent/trace.csv")
    with pytest.raises(TypeError, match="did you mean 'memory_weight'"):
        gym.make(ENV_ID, memory_weigth=0.1)


def test_codes_invert_exactly() -> None:
    minutes = np.arange(WINDOW_SCALE_MIN + 1)
    np.testing.assert_array_equal(decode_minutes(encode_minutes(minutes)), minutes)
    np.testing.assert_array_equal(MINUTE_CODES, encode_minutes(minutes))
    counts = np.arange(100_000)
    np.testing.assert_array_equal(decode_count(encode_count(counts)), counts)
    action = windows_action([0, 7, 3], [10, NEVER, 0])
    assert action[1, 1] == 1.0
    assert action.dtype == np.float32
    np.testing.assert_array_equal(decode_minutes(action[:, 0]), [0, 7, 3])


# ----------------------------------------------------------------------------- the histogram against a slow reference


def _reference_summary(idle: list[int], width: int) -> tuple[int, int, float, int, int]:
    inside = [x for x in idle if x <= width]
    counts = np.bincount(np.array(inside, int) - 1, minlength=width)[:width] if inside else np.zeros(width)
    n = len(inside)
    if n == 0:
        return 0, len(idle), 0.0, 0, 0
    cv = float(counts.std() / counts.mean())
    ranked = sorted(inside)
    p5 = ranked[math.ceil(0.05 * n) - 1]
    p99 = ranked[math.ceil(0.99 * n) - 1]
    return n, len(idle) - n, cv, p5, p99


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 40), max_size=60), min_size=1, max_size=4))
def test_histogram_tracks_percentiles_exactly(streams: list[list[int]]) -> None:
    width = 30
    hist = IdleTimeHistogram.zeros(len(streams), width)
    longest = max(len(s) for s in streams)
    for t in range(longest):
        rows = np.array([i for i, s in enumerate(streams) if t < len(s)], np.int64)
        hist.add(rows, np.array([streams[i][t] for i in rows], np.int64))
        for i in rows:
            n, oob, cv, p5, p99 = _reference_summary(streams[i][: t + 1], width)
            assert hist.n_in[i] == n
            assert hist.n_oob[i] == oob
            assert hist.cv(np.array([i]))[0] == pytest.approx(cv, abs=1e-9)
            assert hist.percentile_minutes(0, np.array([i]))[0] == p5
            assert hist.percentile_minutes(1, np.array([i]))[0] == p99
            # The trackers: cumulative counts through and below each percentile's bin.
            for bins, cums, belows in (
                (hist.head_bin, hist.head_cum, hist.head_below),
                (hist.tail_bin, hist.tail_cum, hist.tail_below),
            ):
                if n:
                    assert cums[i] == hist.counts[i, : bins[i] + 1].sum()
                    assert belows[i] == hist.counts[i, : bins[i]].sum()


# ----------------------------------------------------------------------------- a slow reference of the dynamics


def _reference_minute(
    state: dict[str, int], count: int, minute: int, prewarm: int, keepalive: int, busy_minutes: int, memory_gb: float
) -> tuple[int, float]:
    """One minute of one app, written the obvious way: (cold starts, wasted GB-min)."""
    running = state["ran"] and state["busy_until"] >= minute
    loaded = running
    if state["ran"] and not running:
        age = minute - state["busy_until"]
        loaded = prewarm <= age <= prewarm + keepalive
    cold = 1 if count > 0 and not loaded else 0
    wasted = memory_gb if loaded and count == 0 and not running else 0.0
    if count > 0:
        state["busy_until"] = (
            max(state["busy_until"], minute + busy_minutes - 1) if state["ran"] else (minute + busy_minutes - 1)
        )
        state["ran"] = 1
    return cold, wasted


@pytest.mark.parametrize("workload", ["azure2019", "toy"])
def test_core_matches_the_reference_simulator(workload: str) -> None:
    b, steps = 48, 300
    env = FaaSKeepAliveVectorEnv(num_envs=b, episode_minutes=steps, warmup_minutes=0, workload=workload)
    env.reset(seed=15)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    states = [{"ran": 0, "busy_until": 0} for _ in range(b)]
    busy = core.apps.busy_minutes.copy()
    assert (busy > 1).any() or workload == "toy"  # the synthetic apps exercise long executions
    memory = core.apps.memory_gb.copy()
    for t in range(steps):
        prewarm = rng.integers(0, 6, b)
        keepalive = np.where(rng.random(b) < 0.1, NEVER, rng.integers(0, 15, b))
        _, reward, _, _, info = env.step(windows_action(prewarm, keepalive))
        for i in range(b):
            cold, wasted = _reference_minute(
                states[i], int(info["invocations"][i]), t, int(prewarm[i]), int(keepalive[i]), int(busy[i]), memory[i]
            )
            assert info["cold_starts"][i] == cold, f"app {i} minute {t}"
            assert info["wasted_gb_min"][i] == pytest.approx(wasted)
        assert np.all(info["cold_starts"] + info["warm_starts"] == info["invocations"])  # counted once each
        assert np.all(info["wasted_gb_min"] >= 0)
        np.testing.assert_allclose(reward, -(info["cold_starts"] + 0.05 * info["wasted_gb_min"]))


def test_idle_hazard_and_survival_match_the_histogram() -> None:
    env = FaaSKeepAliveVectorEnv(num_envs=48, episode_minutes=200, warmup_minutes=600, histogram_range_min=60)
    obs, _ = env.reset(seed=9)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(200):
        h, minute = core.apps.hist, core.minute()
        for i in range(48):
            age = int(minute[i] - core.apps.busy_until[i])
            if not core.apps.has_run[i] or age < 1 or age > 60:
                assert obs[i, OBS["idle_survival"]] == 0
                continue
            longer = int(h.counts[i, age - 1 :].sum())
            total = int(h.n_in[i] + h.n_oob[i])
            assert obs[i, OBS["idle_survival"]] == pytest.approx(longer / max(total, 1), rel=1e-6)
            assert obs[i, OBS["idle_hazard"]] == pytest.approx(h.counts[i, age - 1] / max(longer, 1), rel=1e-6)
            checked += 1
        obs, *_ = env.step(rng.random((48, 2)).astype(np.float32))
    assert checked > 1000


def test_an_action_buffer_reused_in_place_is_decoded_afresh() -> None:
    # The env keeps the last action codes to decode only changed windows: it must keep a copy, not the
    # caller's array (a policy that rewrites one buffer in place would otherwise look unchanged).
    reused = FaaSKeepAliveVectorEnv(num_envs=8, episode_minutes=60, warmup_minutes=0, workload="toy")
    copied = FaaSKeepAliveVectorEnv(num_envs=8, episode_minutes=60, warmup_minutes=0, workload="toy")
    reused.reset(seed=2)
    copied.reset(seed=2)
    rng = np.random.default_rng(3)
    buffer = windows_action(np.zeros(8), np.zeros(8))
    for _ in range(60):
        buffer[...] = windows_action(rng.integers(0, 3, 8), rng.integers(0, 20, 8))
        _, reward, _, _, info = reused.step(buffer)
        _, expected, _, _, expected_info = copied.step(buffer.copy())
        np.testing.assert_array_equal(reward, expected)
        np.testing.assert_array_equal(info["cold_starts"], expected_info["cold_starts"])


def test_untracked_idle_hazard_gives_the_same_observations() -> None:
    # With track_idle_hazard off, steps skip the hazard/survival trackers and observe() computes those features
    # from the histograms: every observation must equal the tracked env's, across resets and per-app minutes.
    def make() -> tuple[FaaSKeepAliveVectorEnv, FaaSKeepAliveCore]:
        env = FaaSKeepAliveVectorEnv(num_envs=40, episode_minutes=500, warmup_minutes=300, histogram_range_min=60)
        env.reset(seed=21)
        return env, env.core  # type: ignore[return-value]

    _, tracked = make()
    _, lazy = make()
    lazy.track_idle_hazard = False
    rng = np.random.default_rng(4)
    compared = 0
    for t in range(260):
        if t in (60, 151):
            ids = np.arange(t % 5, 40, 3)
            tracked.reset_envs(ids)
            lazy.reset_envs(ids)
        if t == 200:
            lazy.track_idle_hazard = True  # the trackers are recomputed and kept again from here
            np.testing.assert_array_equal(lazy.apps.in_range, tracked.apps.in_range)
            np.testing.assert_array_equal(lazy.apps.at_age, tracked.apps.at_age)
        obs = tracked.observe()
        np.testing.assert_array_equal(lazy.observe(), obs)
        features = lazy.features(["idle_hazard", "idle_survival"])
        np.testing.assert_array_equal(features["idle_hazard"], obs[:, OBS["idle_hazard"]])
        compared += int(np.count_nonzero(obs[:, OBS["idle_hazard"]]))
        actions = windows_action(rng.integers(0, 5, 40), rng.integers(0, 90, 40))
        tracked.step(actions)
        lazy.step(actions)
    assert compared > 500  # the hazard is not trivially zero


# ----------------------------------------------------------------------------- the paper's sanity properties


def _run(policy_cls: type, num_envs: int = 64, seed: int = 3, **kwargs: object) -> dict[str, np.ndarray]:
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in ("keepalive_min", "range_min")}
    env = FaaSKeepAliveVectorEnv(num_envs=num_envs, **kwargs)  # type: ignore[arg-type]
    obs, _ = env.reset(seed=seed)
    policy = policy_cls(env, **extra)
    policy.reset(np.arange(num_envs))
    totals = {"cold": np.zeros(num_envs), "inv": np.zeros(num_envs), "waste": np.zeros(num_envs)}
    for _ in range(env.config.episode_minutes):
        obs, _, _, trunc, info = env.step(policy.act(obs))
        totals["cold"] += info["cold_starts"]
        totals["inv"] += info["invocations"]
        totals["waste"] += info["wasted_gb_min"]
    assert trunc.all()
    totals["metrics_cold"] = info["metrics"]["cold_starts"]
    totals["metrics_waste"] = info["metrics"]["wasted_gb_min"]
    totals["metrics_inv"] = info["metrics"]["invocations"]
    return totals


def test_no_unloading_gives_only_first_invocation_cold_starts() -> None:
    out = _run(FixedKeepAlive, keepalive_min=float(NEVER), episode_minutes=600, warmup_minutes=0)
    np.testing.assert_array_equal(out["cold"], (out["inv"] > 0).astype(float))
    warmed = _run(FixedKeepAlive, keepalive_min=float(NEVER), episode_minutes=300, warmup_minutes=600)
    assert warmed["cold"].max() <= 1  # only apps that never ran in the warm-up pay one


def test_keepalive_zero_makes_every_invocation_minute_cold() -> None:
    # Toy apps execute for under a minute, so no invocation lands inside a running execution.
    env = FaaSKeepAliveVectorEnv(num_envs=16, episode_minutes=300, warmup_minutes=60, workload="toy")
    env.reset(seed=2)
    action = windows_action(np.zeros(16), np.zeros(16))
    for _ in range(300):
        _, _, _, _, info = env.step(action)
        np.testing.assert_array_equal(info["cold_starts"], info["invocations"] > 0)
    # Synthetic apps: every invocation-minute outside a running execution is cold.
    env = FaaSKeepAliveVectorEnv(num_envs=64, episode_minutes=300, warmup_minutes=60)
    env.reset(seed=2)
    core = env.core
    for _ in range(300):
        running = core.apps.busy_until >= core.minute()
        _, _, _, _, info = env.step(windows_action(np.zeros(64), np.zeros(64)))
        np.testing.assert_array_equal(info["cold_starts"], (info["invocations"] > 0) & ~running)


def test_hybrid_has_no_cold_start_on_a_periodic_timer_after_warm_up() -> None:
    config = {"workload": "toy", "toy_period_range": (3, 30), "warmup_minutes": 240, "episode_minutes": 480}
    env = FaaSKeepAliveVectorEnv(num_envs=32, **config)  # type: ignore[arg-type]
    obs, _ = env.reset(seed=8)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    fleets = [core.instance_for_seed(8, index=i, num_envs=32) for i in range(32)]
    table = np.concatenate([fleet.invocations for fleet in fleets])  # (apps, minutes) the toy timers' counts
    memory = core.apps.memory_gb.copy()
    np.testing.assert_array_equal(memory, np.concatenate([fleet.memory_mb for fleet in fleets]) / 1024.0)
    policy = HybridHistogram(env, 240)
    cold = np.zeros(32)
    waste = np.zeros(32)
    for _ in range(480):
        obs, _, _, _, info = env.step(policy.act(obs))
        cold += info["cold_starts"]
        waste += info["wasted_gb_min"]
    assert cold.sum() == 0
    # Closed form: loaded and idle at ages floor(0.9 P) .. P - 1 of every period, minute by minute.
    for i in range(32):
        fired = np.flatnonzero(table[i])
        period = int(fired[1] - fired[0])
        low = math.floor(0.9 * period)
        idle_loaded = 0
        for t in range(240, 720):
            last = fired[fired < t]
            if table[i, t] == 0 and last.size and low <= t - last[-1] <= math.ceil(1.1 * period):
                idle_loaded += 1
        assert waste[i] == pytest.approx(idle_loaded * memory[i])


def test_metrics_add_up_and_wmt_is_never_negative() -> None:
    out = _run(HybridHistogram, range_min=240, episode_minutes=200, warmup_minutes=200)
    np.testing.assert_array_equal(out["metrics_cold"], out["cold"])
    np.testing.assert_array_equal(out["metrics_inv"], out["inv"])
    np.testing.assert_allclose(out["metrics_waste"], out["waste"])
    assert np.all(out["waste"] >= 0)


def test_oracle_is_a_lower_bound() -> None:
    oracle = _run(HindsightOracle, episode_minutes=400, warmup_minutes=200)
    assert oracle["waste"].sum() == 0
    assert oracle["cold"].max() <= 1  # at most the first execution ever
    fixed = _run(FixedKeepAlive, keepalive_min=10.0, episode_minutes=400, warmup_minutes=200)
    assert np.all(oracle["cold"] <= fixed["cold"])


def test_hybrid_needs_its_histogram_range_and_evaluate_provides_it() -> None:
    env = FaaSKeepAliveVectorEnv(num_envs=2, **SMALL)
    with pytest.raises(ValueError, match="histogram_range_min=60"):
        HybridHistogram(env, 60)
    rows = evaluate("hybrid_1h", ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
    assert len(rows) == 2  # built with histogram_range_min=60 from the policy's registration


def test_hybrid_branches() -> None:
    env = FaaSKeepAliveVectorEnv(num_envs=4, **SMALL)
    policy = HybridHistogram(env, 240)
    obs = np.zeros((4, len(OBS)), np.float32)
    # 0: representative histogram; 1: too few idle times; 2: mostly OOB with a forecast of 1000 min; 3: flat (CV < 2).
    obs[:, OBS["idle_times"]] = encode_count([20, 3, 10, 400])
    obs[:, OBS["oob_share"]] = [0.0, 0.0, 0.8, 0.0]
    obs[:, OBS["cv"]] = np.float32([10.0, 10.0, 10.0, 1.5]) * 0.125
    obs[:, OBS["p5"]] = encode_minutes([30, 5, 5, 2])
    obs[:, OBS["p99"]] = encode_minutes([50, 9, 9, 200])
    obs[:, OBS["idle_forecast"]] = encode_minutes(1000.0)
    prewarm, keepalive, branch = policy.windows(obs)
    assert branch.tolist() == [0, 1, 2, 1]
    assert prewarm.tolist() == [27, 0, 850, 0]
    assert (prewarm + keepalive).tolist() == [55, 240, 1150, 240]


def test_trace_workload_replays_the_public_sample() -> None:
    if not TRACE_2021.exists():
        pytest.skip(f"{TRACE_2021} is absent (shared traces folder not mounted)")
    env = FaaSKeepAliveVectorEnv(
        num_envs=8, workload="trace", trace_path=str(TRACE_2021), warmup_minutes=0, episode_minutes=120
    )
    env.reset(seed=0)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    expected = np.array([core.instance_for_seed(0, index=i, num_envs=8).invocations.sum() for i in range(8)])
    total = np.zeros(8)
    for _ in range(120):
        _, _, _, _, info = env.step(windows_action(np.zeros(8), np.full(8, 10)))
        total += info["invocations"]
    np.testing.assert_array_equal(total, expected)
    assert expected.min() > 0


# ----------------------------------------------------------------------------- report and benchmark


def test_paper_points_and_plot(tmp_path: Path) -> None:
    rows = evaluate("fixed_10", ENV_ID, held_out_seeds(8), env_kwargs=SMALL)
    rows += evaluate("hybrid_4h", ENV_ID, held_out_seeds(8), env_kwargs=SMALL)
    rows += evaluate("fixed_60", ENV_ID, held_out_seeds(8), env_kwargs=SMALL)
    import pandas as pd

    frame = pd.DataFrame(rows)
    points = paper_points(frame).set_index("policy")
    assert points.loc["fixed_10", "wmt_pct_of_fixed10"] == pytest.approx(100.0)
    fixed60 = frame[frame["policy"] == "fixed_60"]
    fixed10 = frame[frame["policy"] == "fixed_10"]
    # The paper's normalisation: loaded idle minutes summed over apps; GB-min (memory-weighted) beside it.
    assert points.loc["fixed_60", "wmt_pct_of_fixed10"] == pytest.approx(
        100 * fixed60["loaded_idle_min"].sum() / fixed10["loaded_idle_min"].sum()
    )
    assert points.loc["fixed_60", "wmt_gb_pct_of_fixed10"] == pytest.approx(
        100 * fixed60["wasted_gb_min"].sum() / fixed10["wasted_gb_min"].sum()
    )
    assert points.loc["fixed_60", "wmt_pct_of_fixed10"] != points.loc["fixed_60", "wmt_gb_pct_of_fixed10"]
    invoked = fixed10[fixed10["invocations"] > 0]
    assert points.loc["fixed_10", "p75_cold_start_pct"] == pytest.approx(np.percentile(invoked["cold_start_pct"], 75))
    files = plot_paper_figure(frame, tmp_path)
    assert len(files) == 1
    assert files[0].stat().st_size > 10_000


def test_replay_in_two_processes_equals_one_process() -> None:
    # The benchmark splits its apps across worker processes; each app's results must not depend on the split.
    one = replay_apps(60, 240, workers=1)
    two = replay_apps(60, 240, workers=2)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["invocations"].sum() > 0
    for name in ("cold_starts", "invocations", "wasted_gb_min"):
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    # App i replays seed i wherever it sits: the first apps of a larger run are the same apps.
    three = replay_apps(61, 240, workers=3)
    np.testing.assert_array_equal(three["wasted_gb_min"][:60], one["wasted_gb_min"])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        replay_apps(10, 10, workers=0)


def test_replay_benchmark_runs_at_small_scale() -> None:
    result = replay_benchmark(True)
    assert result["invocations"] > 0
    assert 0 <= result["cold_start_pct"] <= 100
    assert result["replay_s"] > 0


@pytest.mark.slow
def test_hybrid_beats_fixed_ten_on_cold_starts_and_dominates_the_fixed_curve() -> None:
    seeds = held_out_seeds(96)
    import pandas as pd

    rows = []
    for name in ("fixed_10", "fixed_45", "hybrid_1h", "hybrid_4h"):
        rows += evaluate(name, ENV_ID, seeds)
    points = paper_points(pd.DataFrame(rows)).set_index("policy")
    assert points.loc["hybrid_4h", "p75_cold_start_pct"] < points.loc["fixed_10", "p75_cold_start_pct"]
    # Pareto: the 1-hour hybrid has fewer cold starts than fixed 45 min with no more wasted memory.
    assert points.loc["hybrid_1h", "p75_cold_start_pct"] < points.loc["fixed_45", "p75_cold_start_pct"]
    assert points.loc["hybrid_1h", "wmt_pct_of_fixed10"] <= points.loc["fixed_45", "wmt_pct_of_fixed10"] * 1.05


# ----------------------------------------------------------------------------- fleets under a memory budget

FLEET = {"episode_minutes": 60, "warmup_minutes": 30, "apps_per_fleet": 4, "memory_budget_gb": 0.3}


@pytest.mark.parametrize("eviction", ["lru", "policy"])
def test_fleet_spaces(eviction: str) -> None:
    # The contract checks of fleets run in tests/test_contract.py.
    env = gym.make(ENV_ID, disable_env_checker=True, **FLEET, eviction=eviction).unwrapped
    assert env.observation_space.shape == (4, len(OBS))
    assert env.action_space.shape == (4, 3 if eviction == "policy" else 2)


def _reference_budget(
    before: dict[str, np.ndarray],
    invoked: np.ndarray,
    prewarm: np.ndarray,
    keepalive: np.ndarray,
    prio: np.ndarray,
    minute: int,
    budget_kb: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fleet's minute under a budget, written the obvious way: (loaded, rejected apps, evicted apps)."""
    k = invoked.size
    age = minute - before["busy_until"]
    busy = age <= 0
    window = before["has_run"] & (prewarm <= age) & (age <= prewarm + keepalive) & ~before["evicted"] | busy
    resident = busy | (invoked & before["loaded_last"])
    new = invoked & ~resident
    idle_want = window & ~busy & ~invoked
    klass = np.where(resident, 0, np.where(new, 1, np.where(idle_want, 2, 3)))
    order = sorted(range(k), key=lambda i: (klass[i], -prio[i], -before["busy_until"][i], i))
    loaded = resident.copy()
    used = int(before["memory_kb"][resident].sum())
    for i in order:
        if klass[i] in (1, 2) and used + before["memory_kb"][i] <= budget_kb:
            loaded[i] = True
            used += int(before["memory_kb"][i])
    return loaded, new & ~loaded, idle_want & ~loaded & before["loaded_last"]


@pytest.mark.parametrize("eviction", ["lru", "policy"])
def test_fleet_budget_matches_the_reference_and_counts_everything(eviction: str) -> None:
    b, k, steps = 6, 5, 150
    env = FaaSKeepAliveVectorEnv(
        num_envs=b,
        apps_per_fleet=k,
        memory_budget_gb=0.35,
        eviction=eviction,
        episode_minutes=steps,
        warmup_minutes=120,
    )
    env.reset(seed=21)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    budget_kb = int(0.35 * 1024 * 1024)
    rng = np.random.default_rng(3)
    totals = {"evictions": 0.0, "rejected": 0.0}
    for t in range(steps):
        a = core.apps
        before = {f: getattr(a, f).copy() for f in ("busy_until", "has_run", "loaded_last", "evicted", "memory_kb")}
        counts = upcoming_invocations(core)
        prewarm = rng.integers(0, 4, b * k)
        keepalive = np.where(rng.random(b * k) < 0.5, NEVER, rng.integers(0, 30, b * k))
        prio = rng.random(b * k).astype(np.float32) if eviction == "policy" else np.zeros(b * k, np.float32)
        codes = windows_action(prewarm, keepalive)
        action = batched_action(core, codes, prio)
        _, reward, _, _, info = env.step(action)
        minute = 120 + t
        for f in range(b):
            s = slice(f * k, (f + 1) * k)
            loaded, rejected, evicted = _reference_budget(
                {name: v[s] for name, v in before.items()},
                counts[s] > 0,
                prewarm[s],
                keepalive[s],
                prio[s],
                minute,
                budget_kb,
            )
            np.testing.assert_array_equal(core.apps.loaded_last[s], loaded, err_msg=f"fleet {f} minute {t}")
            assert info["rejected_invocations"][f] == counts[s][rejected].sum()
            assert info["evictions"][f] == evicted.sum()
        # Memory never above the budget; every invocation counted once, as cold, warm or rejected.
        loaded_kb = np.where(core.apps.loaded_last, core.apps.memory_kb, 0).reshape(b, k).sum(axis=1)
        assert np.all(loaded_kb <= budget_kb)
        np.testing.assert_array_equal(loaded_kb, core.state.fleet_loaded_kb)
        np.testing.assert_array_equal(info["invocations"], counts.reshape(b, k).sum(axis=1))
        assert np.all(info["cold_starts"] + info["warm_starts"] + info["rejected_invocations"] == info["invocations"])
        assert np.all(info["warm_starts"] >= 0)
        np.testing.assert_allclose(
            reward, -(info["cold_starts"] + info["rejected_invocations"] + 0.05 * info["wasted_gb_min"])
        )
        totals["evictions"] += info["evictions"].sum()
        totals["rejected"] += info["rejected_invocations"].sum()
    assert totals["evictions"] > 0  # the budget binds in this setting
    assert info["metrics"]["evictions"].sum() == totals["evictions"]
    assert info["metrics"]["rejected_invocations"].sum() == totals["rejected"]


def test_fleet_without_budget_is_k_independent_apps() -> None:
    # A fleet of K apps without a budget steps each app exactly as K one-app sub-envs would
    # (the fleet's apps come from its sub-env's rng one after another, so compare per-app counters).
    env = FaaSKeepAliveVectorEnv(num_envs=2, apps_per_fleet=3, **SMALL)
    obs, _ = env.reset(seed=5)
    assert obs.shape == (2, 3, len(OBS_FIELDS))
    policy = HybridHistogram(env, 240)
    total = np.zeros(2)
    for _ in range(SMALL["episode_minutes"]):
        obs, _, _, trunc, info = env.step(policy.act(obs))
        total += info["invocations"]
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    np.testing.assert_array_equal(total, core.state.counters.invocations.sum(axis=1))
    assert trunc.all()


def test_greedy_dual_priorities_and_clock() -> None:
    env = FaaSKeepAliveVectorEnv(num_envs=1, eviction="policy", **FLEET)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    policy = GreedyDual(env)
    policy.reset(np.arange(1))
    obs = np.zeros((1, 4, len(OBS)), np.float32)
    obs[0, :, OBS["memory"]] = np.array([100.0, 200.0, 100.0, 400.0], np.float32) / 1536.0
    obs[0, :, OBS["invoked_last"]] = [1, 1, 0, 1]
    action = policy.act(obs)
    assert action.shape == (1, 4, 3)
    assert np.all(decode_minutes(action[0, :, 0]) == 0)
    assert np.all(action[0, :, 1] == 1.0)
    np.testing.assert_allclose(policy.priority, [1 / 100, 1 / 200, 0.0, 1 / 400], rtol=1e-5)
    np.testing.assert_allclose(action[0, :, 2], [1.0, 2 / 3, 0.0, 1 / 3], rtol=1e-6)  # ranks: app 2 (unused) last
    # App 0 is evicted: the clock rises to its priority, and its frequency restarts.
    obs[0, :, OBS["invoked_last"]] = [0, 0, 1, 0]
    obs[0, 0, OBS["evicted"]] = 1
    policy.act(obs)
    assert policy.clock[0] == pytest.approx(1 / 100)
    assert policy.priority[2] == pytest.approx(1 / 100 + 1 / 100)
    assert policy.frequency[0] == 0
    assert core.apps_per_fleet == 4


def test_greedy_dual_keeps_the_budget_and_evicts() -> None:
    rows = evaluate("greedy_dual", ENV_ID, held_out_seeds(6), env_kwargs=FLEET)
    assert sum(r["evictions"] for r in rows) > 0
    nolimit = evaluate("greedy_dual", ENV_ID, held_out_seeds(3), env_kwargs=SMALL)
    unload = evaluate("no_unload", ENV_ID, held_out_seeds(3), env_kwargs=SMALL)
    assert [r["return"] for r in nolimit] == [r["return"] for r in unload]  # no budget: never evicts


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("apps_per_fleet", 0, r"apps_per_fleet: got 0; expected a value in \[1, 4096\]"),
        ("memory_budget_gb", -1.0, r"memory_budget_gb: got -1\.0; expected a value in \[0\.001, 1000000\]"),
        ("memory_budget_gb", math.inf, "memory_budget_gb: got inf; expected a finite real number"),
        ("eviction", "fifo", "eviction must be one of"),
    ],
)
def test_impossible_fleet_config_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **{field: value})


def test_features_and_caches_equal_the_full_computation() -> None:
    # core.features equals the observation's columns; the hybrid's cached windows equal a fresh computation;
    # the env's cached window decoding is exercised by every test that changes windows (the reference above).
    env = FaaSKeepAliveVectorEnv(num_envs=16, episode_minutes=80, warmup_minutes=240, apps_per_fleet=2)
    obs, _ = env.reset(seed=11)
    core: FaaSKeepAliveCore = env.core  # type: ignore[assignment]
    cached = HybridHistogram(env, 240)
    cached.reset(np.arange(16))
    for _ in range(80):
        flat = obs.reshape(-1, obs.shape[-1])
        for name, column in core.features([*HybridHistogram.FEATURES, "age", "idle_hazard"]).items():
            np.testing.assert_array_equal(column, flat[:, OBS[name]], err_msg=name)
        fresh = HybridHistogram(env, 240)
        action = cached.act(obs)
        np.testing.assert_array_equal(action, fresh.act(obs))
        obs, *_ = env.step(action)
    with pytest.raises(KeyError, match="unknown observation feature 'evicted'"):
        core.features(["evicted"])  # no budget: no such field


# ----------------------------------------------------------------------------- where the hybrid's memory goes


def test_hybrid_waste_study_attributes_every_wasted_minute() -> None:
    study = hybrid_waste_study(48, 240, 120)
    by_class = study["by_class"]
    assert sum(row["apps"] for row in by_class.values()) == 48
    assert sum(row["wmt_share_of_fixed10_pct"] for row in by_class.values()) == pytest.approx(100.0)
    total = study["hybrid_wmt_pct_of_fixed10"]
    assert sum(row["hybrid_wmt_pct_of_fixed10"] for row in by_class.values()) == pytest.approx(total)
    assert sum(study["hybrid_wmt_pct_of_fixed10_by_branch"].values()) == pytest.approx(total)
    assert sum(study["minutes_per_branch"].values()) == pytest.approx(1.0)
    assert set(study["break_even_share_by_class"]) == set(by_class)
    # The same minutes by designed-CV bucket; the memory-weighted figure is reported beside the paper's.
    by_cv = study["by_cv_bucket"]
    assert sum(row["apps"] for row in by_cv.values()) == 48
    assert sum(row["hybrid_wmt_pct_of_fixed10"] for row in by_cv.values()) == pytest.approx(total)
    assert study["hybrid_wmt_gb_pct_of_fixed10"] > 0


def _mixed_ratio(by_class: dict[str, dict[str, float]], name: str, share: float) -> float:
    """Hybrid WMT / fixed 10 WMT with ``share`` of apps in class ``name``, the rest in proportion (per-app means)."""
    others = [o for o in by_class if o != name]
    rest = sum(by_class[o]["apps"] for o in others)

    def mean(key: str) -> float:
        inside = by_class[name][key] / by_class[name]["apps"]
        outside = sum(by_class[o][key] for o in others) / rest
        return share * inside + (1.0 - share) * outside

    return mean("hybrid_wmt_pct_of_fixed10") / mean("wmt_share_of_fixed10_pct")


def test_break_even_shares_balance_the_two_policies() -> None:
    # Per app: timers waste 0.5 under the hybrid against 1.0 under fixed 10; bursty apps 3.0 against 1.0.
    by_class = {
        "timer_only": {"apps": 10, "wmt_share_of_fixed10_pct": 10.0, "hybrid_wmt_pct_of_fixed10": 5.0},
        "bursty": {"apps": 30, "wmt_share_of_fixed10_pct": 30.0, "hybrid_wmt_pct_of_fixed10": 90.0},
        "memoryless": {"apps": 60, "wmt_share_of_fixed10_pct": 60.0, "hybrid_wmt_pct_of_fixed10": 120.0},
    }
    shares = break_even_shares(by_class)
    # Bursty and memoryless apps, and the rest beside them, waste more under the hybrid: no share balances.
    assert shares["bursty"] is None
    assert shares["memoryless"] is None
    timer_share = shares["timer_only"]
    assert timer_share is not None
    assert 0.0 < timer_share < 1.0
    assert _mixed_ratio(by_class, "timer_only", timer_share) == pytest.approx(1.0)
    assert _mixed_ratio(by_class, "timer_only", timer_share + 0.05) < 1.0 < _mixed_ratio(by_class, "timer_only", 0.1)
    # Rest excess per app (90 - 30 + 120 - 60) / 90 = 4/3, timers -1/2: share = (4/3) / (4/3 + 1/2) = 8/11.
    assert timer_share == pytest.approx(8.0 / 11.0)
