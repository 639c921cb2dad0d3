"""The forecasting capping controller of GPUPowerCap-v0: its ladder, forecast, shield, fit and checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloudgym.agents import gpu_powercap_forecast as fc
from cloudgym.agents.checkpoints import write_metadata
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env

ENV_ID = "GPUPowerCap-v0"
SMALL = {"base_servers": 4, "oversubscription": 0.5, "steps_per_episode": 40, "warmup_s": 10, "cap_delay_s": 5}
LEVELS = 8


def params(margin: float = 0.0, shield_rise: float = 0.0, lp_limit: float = 7.0) -> dict[str, object]:
    """A model that forecasts the row power now, and whose caps each save 1% of the budget per level."""
    weights = np.zeros(len(fc.FEATURES))
    weights[fc.FEATURES.index("power")] = 1.0
    gain = -0.01 * np.tile(np.arange(LEVELS, dtype=np.float64), (2, 1)) / 0.2  # x smoothed demand ~0.2
    return fc.controller_params(weights, gain, {"margin": margin, "lp_limit": lp_limit, "shield_rise": shield_rise})


def obs(batch: int, power: float, activity: float = 0.5) -> np.ndarray:
    o = np.zeros((batch, 26), np.float32)
    o[:, 0] = power
    o[:, 6:16] = 1.0  # no caps in effect or in flight
    o[:, 23:25] = activity
    return o


def test_the_ladder_caps_lp_first_then_hp_then_the_rest_of_lp() -> None:
    rungs = fc.ladder(LEVELS, 5)
    assert rungs[0].tolist() == [0, 0]
    assert rungs[5].tolist() == [0, 5]
    assert rungs[6].tolist() == [1, 5]
    assert rungs[-1].tolist() == [7, 7]
    # Every rung caps exactly one class one level deeper than the one before.
    steps = np.diff(rungs, axis=0)
    assert np.all(steps.sum(axis=1) == 1)
    assert np.all(steps >= 0)
    assert len(rungs) == 1 + 2 * (LEVELS - 1)


def test_the_controller_caps_just_enough_for_its_forecast() -> None:
    env = make_vector_env(ENV_ID, 3, SMALL)
    ctrl = fc.ForecastCapController(env, params())
    ctrl.reset(np.arange(3))
    o = obs(3, 0.9)
    o[1, 0] = 1.005
    o[2, 0] = 1.5  # no rung can hold it: the deepest
    smooth_demand = o[0, 23] * ctrl.features.share  # the first call sets the smoothed demand to this
    act = ctrl.act(o)
    assert act[0].tolist() == [0, 0]
    # 1.005 needs 0.005 of savings: the first LP level saves 0.01 x demand / 0.2 of the budget.
    saved = 0.01 * smooth_demand[1] / 0.2
    need = int(np.ceil(0.005 / saved))
    assert act[1].tolist() == [0, need]
    assert act[2].tolist() == [7, 7]
    env.close()


def test_the_margin_and_the_shield_only_cap_deeper() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    o = obs(1, 0.97)
    depth = []
    for p in (params(), params(margin=0.05), params(shield_rise=0.05)):
        ctrl = fc.ForecastCapController(env, p)
        ctrl.reset(np.arange(1))
        rung = ctrl.act(o)[0]
        depth.append(int(rung.sum()))
        if p["shield_rise"]:
            assert ctrl.shield_overrides[0] == 1
    assert depth[0] < depth[1]
    assert depth[0] < depth[2]
    env.close()


def test_the_deepest_rung_while_the_brake_holds() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    ctrl = fc.ForecastCapController(env, params())
    ctrl.reset(np.arange(1))
    o = obs(1, 0.5)
    o[0, fc.OBS_BRAKE] = 1.0
    assert ctrl.act(o)[0].tolist() == [7, 7]
    env.close()


def test_the_fit_recovers_a_linear_model() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    features = rng.uniform(0, 1, (n, len(fc.FEATURES)))
    features[:, 0] = 1.0
    smooth = rng.uniform(0.1, 0.3, (n, 2))
    caps = rng.integers(0, LEVELS, (n, 2))
    weights = rng.normal(0, 0.1, len(fc.FEATURES))
    gain = np.zeros((2, LEVELS))
    gain[:, 1:] = -np.cumsum(rng.uniform(0.01, 0.1, (2, LEVELS - 1)), axis=1)
    power = fc.forecast(weights, gain, features, smooth, caps)
    w, g = fc.fit_forecast(features, smooth, caps, power, LEVELS)
    np.testing.assert_allclose(w, weights, atol=1e-8)
    np.testing.assert_allclose(g, gain, atol=1e-8)


def test_bad_parameters_are_named() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    p = params()
    with pytest.raises(ValueError, match="missing"):
        fc.ForecastCapController(env, {k: v for k, v in p.items() if k != "margin"})
    with pytest.raises(ValueError, match="weights"):
        fc.ForecastCapController(env, {**p, "weights": [0.0]})
    with pytest.raises(ValueError, match="cap_gain"):
        fc.ForecastCapController(env, {**p, "cap_gain": [[0.0]]})
    with pytest.raises(ValueError, match="shield_rise"):
        fc.ForecastCapController(env, {**p, "shield_rise": -1.0})
    env.close()


def test_a_checkpoint_loads_and_runs(tmp_path: Path) -> None:
    write_metadata(
        tmp_path,
        {"env_id": ENV_ID, "name": "t", "loader": fc.LOADER, "algo": "fit", "command": "x", "params": params(0.05)},
    )
    rows = evaluate(str(tmp_path), ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
    assert len(rows) == 2
    assert all(np.isfinite(r["return"]) for r in rows)
