"""The shielded capping controller of GPUPowerCap-v0: POLCA at POLCA's knobs, the trend, the shield, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloudgym.agents import gpu_powercap_shield as sh
from cloudgym.agents.checkpoints import write_metadata
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env

ENV_ID = "GPUPowerCap-v0"
SMALL = {"base_servers": 4, "oversubscription": 0.5, "steps_per_episode": 40, "warmup_s": 10, "cap_delay_s": 5}


def obs(power: float, power_40s: float) -> np.ndarray:
    o = np.zeros((1, 26), np.float32)
    o[0, 0] = power
    o[0, 4] = power_40s
    return o


def test_polcas_knobs_make_the_controller_act_as_polca() -> None:
    seeds = held_out_seeds(3)
    polca = evaluate("polca", ENV_ID, seeds, env_kwargs=SMALL)
    mine = evaluate(lambda env: sh.ShieldedCapper(env, sh.POLCA), ENV_ID, seeds, env_kwargs=SMALL)
    assert [r["return"] for r in mine] == [r["return"] for r in polca]
    assert [r["powerbrakes"] for r in mine] == [r["powerbrakes"] for r in polca]


def test_the_trend_escalates_a_climbing_row_earlier() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    flat = sh.ShieldedCapper(env, sh.POLCA)
    trending = sh.ShieldedCapper(env, {**sh.POLCA, "trend": 0.5})
    for ctrl in (flat, trending):
        ctrl.reset(np.arange(1))
    o = obs(0.78, 0.70)  # below T1, but 8 points up in 40 s: 0.78 + 0.5 x 0.08 = 0.82 > T1
    assert flat.act(o)[0].tolist() == [0, 0]
    assert trending.act(o)[0].tolist() == [0, 3]
    env.close()


def test_the_shield_overrides_on_a_fast_climb_only() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    params = {**sh.POLCA, "shield_gain": 1.0, "shield_at": 0.98, "shield_lp": 5, "shield_hp": 2}
    ctrl = sh.ShieldedCapper(env, params)
    ctrl.reset(np.arange(1))
    # 0.85 with no rise: the stage machine's own answer (LP mild), no override.
    assert ctrl.act(obs(0.85, 0.85))[0].tolist() == [0, 3]
    assert ctrl.shield_steps[0] == 0
    # 0.85 up from 0.70: extrapolated to 1.00 > 0.98 -> at least LP 1110 and HP 1305.
    assert ctrl.act(obs(0.85, 0.70))[0].tolist() == [2, 5]
    assert ctrl.shield_steps[0] == 1
    env.close()


def test_bad_parameters_are_named() -> None:
    env = make_vector_env(ENV_ID, 1, SMALL)
    with pytest.raises(ValueError, match="missing"):
        sh.ShieldedCapper(env, {k: v for k, v in sh.POLCA.items() if k != "trend"})
    with pytest.raises(ValueError, match="finite"):
        sh.ShieldedCapper(env, {**sh.POLCA, "t1": float("nan")})
    env.close()


def test_a_checkpoint_loads_and_acts_as_its_knobs(tmp_path: Path) -> None:
    write_metadata(
        tmp_path,
        {"env_id": ENV_ID, "name": "t", "loader": sh.LOADER, "algo": "grid", "command": "x", "params": sh.POLCA},
    )
    rows = evaluate(str(tmp_path), ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
    polca = evaluate("polca", ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
    assert [r["return"] for r in rows] == [r["return"] for r in polca]


def test_the_paired_comparison_counts_and_bounds_the_difference() -> None:
    from tests.scripts import load_script

    paired = load_script("paired_gpu_powercap").paired
    mine = np.array([1.0, 2.0, 3.0, 3.0])
    polca = np.array([2.0, 2.5, 3.5, 3.0])
    res = paired(mine, polca)
    assert res["diff"] == pytest.approx(-0.5)
    assert (res["won"], res["lost"], res["tied"]) == (3, 0, 1)
    assert res["ci_low"] < res["diff"] < res["ci_high"]
    # Paired t: mean +- t(0.975, 3) x sd / sqrt(4) of the differences (-1, -0.5, -0.5, 0).
    half = 3.182446305284263 * np.std([-1.0, -0.5, -0.5, 0.0], ddof=1) / 2.0
    assert res["ci_high"] == pytest.approx(-0.5 + half)
