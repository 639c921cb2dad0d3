"""DCLifecycle-v0: config errors, the public simulator's ratios, the accounting invariants (+ test_contract.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs.dc_lifecycle import COST_CATEGORIES, NEVER, CompassRoofline, DCLifecycleCore, DCLifecycleVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds
from tests.envs.small_configs import DC_SMALL

ENV_ID = "DCLifecycle-v0"
# A short, noisy, shocked instance with a sunk building: exercises every code path quickly.
SMALL = DC_SMALL

# The public simulator (Azure/AI-Lifecycle-Compass dc_tco @ f40bd51, default configuration), TCO ratio of
# each refresh policy to its baseline, measured with docs/dc_lifecycle.md's reference command.
SIMULATOR_RATIOS = {
    "extend_1y": 0.8996,
    "extend_2y": 0.8934,
    "extend_3y": 0.8887,
    "extend_4y": 0.8876,
    "extend_5y": 0.8877,
    "replace_all": 3.0830,
    "skip_v100": 1.0004,
    "skip_a100": 1.0351,
    "skip_h100": 1.0409,
    "skip_h200": 1.0520,
    "skip_b100": 0.9972,
    "skip_b200": 1.0000,
}
SIMULATOR_BASELINE_TCO_USD = 4.898e9


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("horizon_quarters", 2, r"DCLifecycleConfig\.horizon_quarters: got 2; expected a value in \[4, 400\]"),
        ("shock_window", (10, 100), "shock_window"),
        (
            "capacity_model",
            "magic",
            r"capacity_model: got 'magic' \(str\); expected one of 'compass_roofline', 'llm_slo'",
        ),
        ("lifetime_years_levels", (3, 4), "must include default_lifetime_years"),
        (
            "oversubscription_levels",
            (0.9,),
            r"oversubscription_levels: element 0: got 0\.9; expected a value in \[1, 10\]",
        ),
        ("building_life_years", 5, r"building_life_years \(5\) must cover horizon_quarters \(60\)"),
    ],
)
def test_impossible_config_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **{field: value})


def test_misspelt_field_and_unknown_scenario_are_named() -> None:
    with pytest.raises(TypeError, match="did you mean 'horizon_quarters'"):
        gym.make(ENV_ID, horizon_quarter=8)
    with pytest.raises(ValueError, match="known: compass, realistic"):
        gym.make(ENV_ID, scenario="optimistic")


# ----------------------------------------------------------------------------- the public simulator


def test_compass_refresh_ratios_match_the_public_simulator() -> None:
    seed = held_out_seeds(1)
    tco = {p: evaluate(p, ENV_ID, seed, env_kwargs={"scenario": "compass"})[0]["tco_usd"] for p in ["baseline"]}
    assert tco["baseline"] == pytest.approx(SIMULATOR_BASELINE_TCO_USD, rel=1e-3)
    for policy, expected in SIMULATOR_RATIOS.items():
        ratio = evaluate(policy, ENV_ID, seed, env_kwargs={"scenario": "compass"})[0]["tco_usd"] / tco["baseline"]
        assert abs(ratio - expected) < 0.02, f"{policy}: {ratio:.4f} vs the simulator's {expected:.4f}"


def test_compass_refresh_policies_serve_everything() -> None:
    rows = evaluate("extend_3y", ENV_ID, held_out_seeds(1), env_kwargs={"scenario": "compass"})
    assert rows[0]["unserved_share"] == 0.0
    assert rows[0]["cost_unserved_penalty_usd"] == 0.0


# ----------------------------------------------------------------------------- accounting


def _random_run(kwargs: dict, seed: int, steps: int, num_envs: int = 4):  # type: ignore[no-untyped-def]
    venv = DCLifecycleVectorEnv(num_envs=num_envs, **kwargs)
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    nvec = venv.single_action_space.nvec
    for _ in range(steps):
        actions = (rng.random((num_envs, nvec.size)) * nvec).astype(np.int64)
        actions[:, 1] = np.maximum(actions[:, 1], 1)  # mostly buy, so that the fleet is not empty
        out = venv.step(actions)
        yield venv, actions, out


@pytest.mark.parametrize("building", ["rent", "sunk"])
def test_breakdown_sums_to_reward_and_episode_return(building: str) -> None:
    kwargs = {**SMALL, "building_model": building}
    returns = np.zeros(4)
    ended = 0
    for venv, _, (_, reward, _, _, info) in _random_run(kwargs, 0, 60):
        if "cost/energy" not in info:
            continue
        valid = info["_cost/energy"]
        total = sum(info[f"cost/{c}"] for c in COST_CATEGORIES)
        scale = venv.config.reward_scale_usd
        np.testing.assert_allclose(-reward[valid] * scale, total[valid], rtol=1e-12)
        assert np.all(total >= 0)
        returns += np.where(valid, reward, 0.0)
        if "episode_stats" in info:
            done = info["_episode_stats"]
            metrics = info["metrics"]
            parts = sum(metrics[f"cost_{c}_usd"] for c in COST_CATEGORIES)
            np.testing.assert_allclose(-info["episode_stats"]["r"][done] * scale, parts[done], rtol=1e-9)
            np.testing.assert_allclose(
                metrics["tco_usd"][done], parts[done] - metrics["cost_unserved_penalty_usd"][done], rtol=1e-9
            )
            ended += int(done.sum())
    assert ended >= 4


def test_a_server_is_paid_over_exactly_its_amortisation_window_even_if_retired_early() -> None:
    venv = DCLifecycleVectorEnv(num_envs=1, horizon_quarters=32, shock_window=(2, 20))
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    venv.reset(seed=0)
    nvec = venv.single_action_space.nvec
    capex = []
    for q in range(32):
        a = np.zeros((1, nvec.size), np.int64)
        a[0, 1] = 1 if q == 0 else 0  # buy once, in quarter 0
        if q == 3:
            a[0, 8 + 0] = 1  # retire the cohort of quarter 0 early
        _, _, _, _, info = venv.step(a)
        capex.append(info["cost/it_capex"][0])
        if q == 3:
            assert core.state.cohort_alive[0, 0] == 0
            assert core.state.cohort_retired_q[0, 0] == 3
            assert info["capacity"][0] == 0.0
    bought = core.state.cohort_bought[0, 0]
    price = core.state.price[0, 0]
    window = core.config.amortization_quarters
    assert bought > 0
    np.testing.assert_allclose(capex[:window], bought * price / window)
    np.testing.assert_allclose(capex[window:], 0.0)
    assert sum(capex) == pytest.approx(bought * price)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), building=st.sampled_from(["rent", "sunk"]))
def test_stranded_power_is_never_negative_and_capacity_counts_only_alive_servers(seed: int, building: str) -> None:
    kwargs = {**SMALL, "building_model": building, "horizon_quarters": 16, "shock_window": (2, 12)}
    for venv, actions, (obs, _, _, _, info) in _random_run(kwargs, seed, 16, num_envs=3):
        core: DCLifecycleCore = venv.core  # type: ignore[assignment]
        s = core.state
        assert np.all(info["stranded_w"] >= 0)
        assert np.all(s.cohort_rack_stranded_w >= 0)
        q = int(core.stats.length[0]) - 1
        # Slow reference: a server counts iff bought at or before q and not retired by q.
        t = np.arange(s.cohort_gen.shape[1])
        bought_by_q = (t[None, :] <= q) & (s.cohort_gen >= 0)
        alive_ref = np.where(bought_by_q & (s.cohort_retired_q > q), s.cohort_bought, 0.0)
        np.testing.assert_array_equal(s.cohort_alive, alive_ref)
        assert np.all(s.cohort_alive[:, q + 1 :] == 0)
        by_gen = np.array(
            [[alive_ref[i, s.cohort_gen[i] == g].sum() for g in range(core.params.roadmap.size)] for i in range(3)]
        )
        np.testing.assert_array_equal(info["servers_by_gen"], by_gen)
        mixed = actions[:, 7] == 0
        freq = actions[:, 6]
        for i in np.flatnonzero(mixed):
            # The env may raise oversubscription to fit the building, so any level's factor may apply.
            gen = np.maximum(s.cohort_gen[i], 0)
            per = s.capacity[i, q, gen] * alive_ref[i]
            factors = core.params.throughput_factor[:, freq[i]]
            assert np.any(np.isclose(info["capacity"][i], per.sum() * factors, rtol=1e-9, atol=1e-9))
        assert np.all(np.isfinite(obs))


def test_no_generation_is_bought_before_its_release() -> None:
    for venv, _, _ in _random_run({**SMALL, "horizon_quarters": 48, "shock_window": (2, 40)}, 3, 48):
        core: DCLifecycleCore = venv.core  # type: ignore[assignment]
        s = core.state
        bought = s.cohort_gen >= 0
        quarters = np.broadcast_to(np.arange(s.cohort_gen.shape[1]), s.cohort_gen.shape)
        assert np.all(core.params.roadmap.release_quarter[s.cohort_gen[bought]] <= quarters[bought])
        # And the observation shows nothing of a generation not yet released.
        obs = venv.core.observe()
        released = obs[:, core.params.obs_slices["released"]] > 0.5
        for block in ("relative_capacity", "price_musd", "server_w_20kw"):
            assert np.all(obs[:, core.params.obs_slices[block]][~released] == 0)


def test_lagging_retirement_and_never_marker() -> None:
    rows = evaluate("replace_all", ENV_ID, held_out_seeds(1), env_kwargs={"scenario": "compass"})
    assert rows[0]["tco_usd"] > 2.5 * SIMULATOR_BASELINE_TCO_USD
    assert NEVER > 10**12


def test_sunk_building_limits_purchases_and_counts_what_it_blocks() -> None:
    kwargs = {**SMALL, "shock_probability": (0.0, 0.0, 0.0, 0.0), "demand_growth_noise": 0.0}
    venv = DCLifecycleVectorEnv(num_envs=1, **kwargs)
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    venv.reset(seed=0)
    nvec = venv.single_action_space.nvec
    for _ in range(24):
        a = np.zeros((1, nvec.size), np.int64)
        a[0, 1] = 1
        venv.step(a)
        gen = np.maximum(core.state.cohort_gen, 0)
        installed = (core.state.cohort_alive * core.params.server_w[gen]).sum()
        assert installed <= core.state.building.provisioned_w[0] * 1.0 + 1e-6  # oversubscription level 0 = 1.0
    assert core.state.counters.blocked_servers[0] > 0
    assert core.state.counters.unserved_total[0] > 0


# ----------------------------------------------------------------------------- the perfect-foresight planner

PLANNER_CASE = {"horizon_quarters": 40, "shock_window": (2, 30)}


@pytest.mark.parametrize("building", ["rent", "sunk"])
def test_perfect_foresight_lp_is_a_lower_bound_of_every_baseline(building: str) -> None:
    from cloudgym.agents.dc_lifecycle_planner import plan_episode
    from cloudgym.evaluation import make_vector_env

    kwargs = {**PLANNER_CASE, "building_model": building, "initial_building_mw": 0.05, "build_lump_mw": 0.1}
    seeds = held_out_seeds(1)
    env = make_vector_env(ENV_ID, 1, kwargs)
    env.reset(seed=seeds)
    bound = plan_episode(env.core, 0).objective_usd  # type: ignore[arg-type]
    totals = {}
    for policy in ("baseline", "extend_3y", "co_optimising", "perfect_foresight"):
        row = evaluate(policy, ENV_ID, seeds, env_kwargs=kwargs)[0]
        totals[policy] = row["tco_usd"] + row["cost_unserved_penalty_usd"]
        assert totals[policy] >= bound * (1 - 1e-6), f"{policy} {totals[policy]:.4g} below the LP bound {bound:.4g}"
    # The executed plan is near its bound under the simulator's rent building (actions are coarser than the LP).
    if building == "rent":
        assert totals["perfect_foresight"] <= 1.10 * bound


# ----------------------------------------------------------------------------- the realistic capacity model

REALISTIC_SMALL = {"scenario": "realistic", "horizon_quarters": 24, "shock_window": (2, 20)}


def test_llm_capacity_grows_with_generation_and_shrinks_with_model_size() -> None:
    from cloudgym.envs.core.llm import llm_server_rates

    venv = DCLifecycleVectorEnv(num_envs=1, scenario="realistic")
    r = venv.core.params.roadmap

    def rates(g: int, params: float) -> tuple[float, float, float]:
        spec = (r.fp16_tflops[g], r.hbm_tb_s[g], r.hbm_gb[g], r.nvlink_gb_s[g], r.tdp_w[g])
        return llm_server_rates(spec, params, 8, 1020, 129, 0.4, 0.1)

    a100, h100, h200 = (r.names.index(n) for n in ("A100", "H100", "H200"))
    for params in (7e9, 7e10):
        assert rates(a100, params)[0] < rates(h100, params)[0] < rates(h200, params)[0]
        assert rates(h100, params)[2] >= rates(h100, params)[0]  # decode-only beats mixed serving
    assert rates(h100, 7e10)[0] < rates(h100, 7e9)[0]


def test_disaggregation_never_lowers_capacity_and_is_neutral_on_one_generation() -> None:
    venv = DCLifecycleVectorEnv(num_envs=2, **REALISTIC_SMALL)
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    venv.reset(seed=[5, 6])
    for q in range(24):
        a = np.zeros((2, core.action_size), np.int64)
        a[:, 1] = 1
        a[:, 4] = 2
        a[:, 0] = q % 2  # alternate newest and previous generation: several generations alive
        venv.step(a)
        zeros = np.zeros(2, np.int64)
        quarter = np.minimum(core.stats.length, 23)
        mixed = core._fleet_capacity(quarter, zeros, zeros, zeros)
        split = core._fleet_capacity(quarter, zeros, zeros, np.ones(2, np.int64))
        assert np.all(split >= mixed - 1e-9)
        one_gen = len(np.unique(core.state.cohort_gen[core.state.cohort_alive > 0])) <= 1
        if one_gen:
            np.testing.assert_allclose(split, mixed)


def test_the_core_replays_the_generators_instance() -> None:
    venv = DCLifecycleVectorEnv(num_envs=3, **REALISTIC_SMALL)
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    venv.reset(seed=12)
    for i in range(3):
        inst = core.instance_for_seed(12, index=i, num_envs=3)  # the episode sub-env i draws
        np.testing.assert_array_equal(core.state.demand[i], inst.demand)
        np.testing.assert_array_equal(core.state.shock_quarter[i], inst.shock_quarter)
        np.testing.assert_array_equal(core.state.price[i], inst.price_usd * core.config.gpus_per_server)
        np.testing.assert_array_equal(core.state.capacity[i], core.params.capacity.tables([inst]).capacity[0])


def test_compass_roofline_gives_the_simulators_h100_figure() -> None:
    venv = DCLifecycleVectorEnv(num_envs=1)
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    inst = core.instance_for_seed(0)
    roofline = core.params.capacity
    assert isinstance(roofline, CompassRoofline)
    per_server = roofline.roofline(inst.hbm_tb_s, inst.server_tflops, np.full(core.config.horizon_quarters, 70e9))
    h100 = core.params.roadmap.names.index("H100")
    assert per_server[0, h100] == pytest.approx(8 * 3440 / 140, rel=1e-9)  # DOMAIN.md: ~197 tokens/s


# ----------------------------------------------------------------------------- the trained agent


def test_shipped_agent_loads_and_plans_the_realistic_preset() -> None:
    from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, read_checkpoint

    folder = CHECKPOINT_ROOT / ENV_ID / "ppo_bc_realistic"
    info = read_checkpoint(folder)
    assert info.scenario == "realistic"
    assert "reward_scale_usd" not in info.env_kwargs  # returns in compare.py are in $M like every baseline's
    assert (folder / "model.zip").stat().st_size < 2_000_000
    seeds = held_out_seeds(2)
    kwargs = {"scenario": "realistic", **info.env_kwargs}
    agent = evaluate(folder, ENV_ID, seeds, env_kwargs=kwargs)
    rand = evaluate("random", ENV_ID, seeds, env_kwargs=kwargs)
    for a, r in zip(agent, rand):
        assert np.isfinite(a["tco_usd"])
        assert a["return"] > r["return"]


def test_behaviour_cloning_fits_the_teacher() -> None:
    from stable_baselines3 import PPO

    from cloudgym.agents.dc_lifecycle_agent import behaviour_clone, demonstrations
    from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
    from cloudgym.evaluation import make_vector_env

    kwargs = {"horizon_quarters": 24, "shock_window": (2, 20), "cohort_actions": False}
    obs, actions, returns = demonstrations("extend_3y", kwargs, episodes=4, seed=0, gamma=0.99)
    assert obs.shape[0] == actions.shape[0] == returns.shape[0] == 4 * 24
    model = PPO("MlpPolicy", SB3VecEnv(make_vector_env(ENV_ID, 2, kwargs)), n_steps=24, batch_size=48, seed=0)
    losses = behaviour_clone(model, obs, actions, returns, epochs=60, lr=3e-3, seed=0)
    assert losses[-1] < 0.2 * losses[0]
    predicted, _ = model.predict(obs, deterministic=True)
    assert np.mean(np.all(predicted == actions, axis=1)) > 0.9


def test_disaggregated_order_is_newest_release_first_then_purchase_order_with_ties() -> None:
    """The simulator's order (a stable sort by -release, then purchase quarter) on random fleets, with generations
    released in the same quarter (a 0.1-year release interval rounds several into one quarter)."""
    venv = DCLifecycleVectorEnv(num_envs=64, release_interval_years=0.1)
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    model = core.params.capacity
    assert isinstance(model, CompassRoofline)
    release = core.params.roadmap.release_quarter
    assert np.unique(release).size < release.size  # ties exist
    venv.reset(seed=3)
    rng = np.random.default_rng(4)
    s, t = core.state, core.config.horizon_quarters
    rows = np.arange(64)
    for _ in range(5):
        s.cohort_gen[:] = np.where(rng.random((64, t)) < 0.7, rng.integers(0, release.size, (64, t)), -1)
        s.cohort_alive[:] = np.where((s.cohort_gen >= 0) & (rng.random((64, t)) < 0.8), rng.integers(1, 50, (64, t)), 0)
        q = rng.integers(0, t, 64)
        factor = rng.random(64) + 0.5
        # The reference: the simulator's key, sorted in full.
        alive = s.cohort_alive > 0
        gen = np.maximum(s.cohort_gen, 0)
        key = np.where(alive, -release[gen] * (t + 1) + np.arange(t)[None, :], np.iinfo(np.int64).max)
        rank = np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1)
        share = np.where(rank < (alive.sum(axis=1) // 2)[:, None], 0.4, 0.6)
        per_server = s.split_capacity[rows[:, None], q[:, None], gen]
        want = (per_server * s.cohort_alive * share * factor[:, None]).sum(axis=1)
        np.testing.assert_array_equal(model.disaggregated(s, rows, q, factor), want)


def test_llm_slo_tables_of_many_episodes_equal_each_episode_alone() -> None:
    """The batched tables (each distinct GPU spec and model size solved once) match one episode at a time,
    with every shock forced so that episodes differ in specs and model sizes."""
    venv = DCLifecycleVectorEnv(num_envs=1, **{**REALISTIC_SMALL, "shock_probability": (0.5, 0.5, 0.5, 0.5)})
    core: DCLifecycleCore = venv.core  # type: ignore[assignment]
    instances = [core.instance_for_seed(seed) for seed in range(12)]
    assert len({int(i.shock_quarter[2]) for i in instances}) > 2  # hardware shocks at several quarters, or none
    batched = core.params.capacity.tables(instances)
    for k, inst in enumerate(instances):
        alone = core.params.capacity.tables([inst])
        for field in ("capacity", "prefill", "decode", "split_capacity"):
            np.testing.assert_array_equal(getattr(batched, field)[k], getattr(alone, field)[0])


# ----------------------------------------------------------------------------- the rolling-horizon (MPC) planner

MPC_CASE = {"scenario": "realistic", "horizon_quarters": 24, "shock_window": (2, 20)}


def _mpc_actions(env_kwargs: dict[str, object], seed: int, quarters: int, tamper_from: int | None) -> np.ndarray:
    """The MPC's actions over the first ``quarters``; with ``tamper_from``, the episode's future from that quarter
    on (demand, capacities, every price and the shock quarters) is rewritten right after the reset."""
    from cloudgym.agents.dc_lifecycle_mpc import MPCPolicy
    from cloudgym.evaluation import make_vector_env

    env = make_vector_env(ENV_ID, 1, env_kwargs)
    obs, _ = env.reset(seed=[seed])
    s = env.core.state  # type: ignore[attr-defined]
    if tamper_from is not None:
        s.demand[:, tamper_from:] *= 30.0  # far past the initial building: a peeking planner orders lumps early
        s.capacity[:, tamper_from:] *= 0.5
        unreleased = env.core.params.roadmap.release_quarter >= tamper_from  # type: ignore[attr-defined]
        s.price[:, unreleased] *= 0.3
        s.shock_quarter[:] = tamper_from
    policy = MPCPolicy(env)
    policy.reset(np.arange(1))
    out = []
    for _ in range(quarters):
        actions = policy.act(obs)
        out.append(actions[0].copy())
        obs, *_ = env.step(actions)
    return np.array(out)


def test_mpc_never_reads_the_future() -> None:
    """Rewriting the episode from quarter 6 on leaves the MPC's first 6 actions unchanged (it must not peek),
    and changes them once quarter 6 is the present (so the rewrite is one the MPC reacts to)."""
    seed = held_out_seeds(1)[0]
    honest = _mpc_actions(MPC_CASE, seed, 8, None)
    tampered = _mpc_actions(MPC_CASE, seed, 8, 6)
    assert honest[:6, :8].any(), "the MPC bought, built or retired nothing: the comparison would be empty"
    np.testing.assert_array_equal(honest[:6], tampered[:6])
    assert (honest[6:] != tampered[6:]).any()


def test_mpc_forecast_is_the_trend_and_the_roadmap() -> None:
    from cloudgym.agents.dc_lifecycle_mpc import forecast, shock_free_capacity
    from cloudgym.evaluation import make_vector_env

    env = make_vector_env(ENV_ID, 1, {**MPC_CASE, "shock_probability": (0.0, 0.0, 0.0, 0.0)})
    env.reset(seed=held_out_seeds(1))
    core = env.core
    calm = shock_free_capacity(core)  # type: ignore[arg-type]
    fc = forecast(core, 0, calm, 8, demand_growth=1.0355, margin=0.0)  # type: ignore[arg-type]
    s = core.state  # type: ignore[attr-defined]
    np.testing.assert_allclose(fc.demand, s.demand[0, 0] * 1.0355 ** np.arange(8))
    # Without shocks the roadmap's capacities are the episode's own, released or not.
    np.testing.assert_allclose(fc.capacity, s.capacity[0, :8], rtol=1e-12)
    np.testing.assert_allclose(fc.price, s.price[0], rtol=1e-12)


def test_mpc_beats_co_optimising_on_the_realistic_preset() -> None:
    from cloudgym.policy import policy_specs

    assert policy_specs(ENV_ID)["mpc"].kind == "baseline"
    seeds = [500_000, 500_001]  # validation seeds
    totals = {}
    for policy in ("co_optimising", "mpc"):
        rows = evaluate(policy, ENV_ID, seeds, env_kwargs=MPC_CASE)
        totals[policy] = sum(r["tco_usd"] + r["cost_unserved_penalty_usd"] for r in rows)
    assert totals["mpc"] < totals["co_optimising"]


def test_mpc_needs_cohort_actions() -> None:
    from cloudgym.agents.dc_lifecycle_mpc import MPCPolicy
    from cloudgym.evaluation import make_vector_env

    with pytest.raises(ValueError, match="mpc needs cohort_actions=True"):
        MPCPolicy(make_vector_env(ENV_ID, 1, {"cohort_actions": False}))


def test_paper_preset_is_deterministic_with_8_mw_blocks() -> None:
    env = gym.make(ENV_ID, scenario="paper", horizon_quarters=8, shock_window=(0, 7))
    core = env.unwrapped.core  # type: ignore[attr-defined]
    assert core.config.build_lump_mw == 8.0
    assert core.config.building_model == "sunk"
    demands = []
    for seed in (1, 2):
        env.reset(seed=seed)
        demands.append(core.state.demand[0].copy())
        assert (core.state.shock_quarter == -1).all()
    np.testing.assert_array_equal(demands[0], demands[1])
    np.testing.assert_allclose(demands[0], 4e6 * 1.0355 ** np.arange(8))


@pytest.mark.slow
def test_dagger_trainer_writes_a_sealed_checkpoint_that_plays(tmp_path: object) -> None:
    from cloudgym.agents.checkpoints import read_checkpoint
    from tests.scripts import load_script

    module = load_script("train_dc_lifecycle_dagger")
    run = module.main(["--name", "tiny", "--rounds", "2", "--episodes", "2", "--epochs", "2", "--val-episodes", "1",
                       "--net", "16", "--out", str(tmp_path)])  # fmt: skip
    info = read_checkpoint(run)
    assert info.scenario == "realistic"
    assert info.extra["dagger"]["teacher"] == "mpc"
    assert len(info.extra["dagger"]["history"]) == 2
    row = evaluate(run, ENV_ID, [500_000], env_kwargs={"scenario": "realistic"})[0]
    assert np.isfinite(row["tco_usd"])


def test_shipped_dagger_agent_loads_and_beats_random_on_realistic() -> None:
    from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, read_checkpoint

    folder = CHECKPOINT_ROOT / ENV_ID / "dagger_mpc_realistic"
    info = read_checkpoint(folder)
    assert info.scenario == "realistic"
    assert info.extra["dagger"]["teacher"] == "mpc"
    assert (folder / "model.zip").stat().st_size < 5_000_000
    seeds = held_out_seeds(2)
    agent = evaluate(folder, ENV_ID, seeds, env_kwargs={"scenario": "realistic"})
    rand = evaluate("random", ENV_ID, seeds, env_kwargs={"scenario": "realistic"})
    for a, r in zip(agent, rand):
        assert a["return"] > r["return"]
