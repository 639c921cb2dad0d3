"""The CEM-trained capping controller of GPUPowerCap-v0: POLCA is a point of its family, training and loading work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloudgym.agents import gpu_powercap_cem as cem
from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, shipped_checkpoints, write_metadata
from cloudgym.evaluation import evaluate, held_out_seeds
from cloudgym.policy import make_policy

ENV_ID = "GPUPowerCap-v0"
SMALL = {"base_servers": 4, "oversubscription": 0.5, "steps_per_episode": 40, "warmup_s": 10, "cap_delay_s": 5}


def test_polcas_knobs_make_the_controller_act_as_polca() -> None:
    seeds = held_out_seeds(3)
    polca = evaluate("polca", ENV_ID, seeds, env_kwargs=SMALL)
    mine = evaluate(lambda env: cem.CemCapController(env, cem.POLCA_PARAMS), ENV_ID, seeds, env_kwargs=SMALL)
    assert [r["return"] for r in mine] == [r["return"] for r in polca]
    assert [r["powerbrakes"] for r in mine] == [r["powerbrakes"] for r in polca]


def test_candidates_batched_together_score_as_they_do_alone() -> None:
    base = np.array([cem.POLCA_PARAMS[name] for name, _, _ in cem.PARAMS])
    never = base.copy()
    never[[3, 4, 5]] = 0.0  # every cap level at f_max: no capping
    together, brakes = cem.episode_returns(np.stack([base, never]), [11, 12], SMALL)
    alone = [cem.episode_returns(c[None], [11, 12], SMALL)[0][0] for c in (base, never)]
    np.testing.assert_allclose(together, alone)
    no_cap = evaluate("no_cap", ENV_ID, [11, 12], env_kwargs=SMALL)
    assert together[1] == pytest.approx(np.mean([r["return"] for r in no_cap]))
    assert brakes[1] == pytest.approx(np.mean([r["powerbrakes"] for r in no_cap]))


def test_training_moves_the_mean_and_the_checkpoint_loads(tmp_path: Path) -> None:
    settings = cem.CemSettings(iterations=2, population=3, elite=1, episodes=1, env_kwargs=SMALL)
    rows: list[dict[str, float]] = []
    params, history = cem.train(settings, seed=1, log=rows.append)
    assert len(history) == 2
    assert rows == history
    for name, low, high in cem.PARAMS:
        assert low <= params[name] <= high
    # Elitism on a fixed episode set: the best score never falls, and it is at least POLCA's (the first candidate).
    best = [h["best_return"] for h in history]
    assert best == sorted(best)
    margin = (settings.margin_pct, settings.margin_cost)

    def score(p: dict[str, float]) -> float:
        return float(cem.episode_returns(np.array([[p[n] for n, _, _ in cem.PARAMS]]), [100_000], SMALL, margin)[0][0])

    assert best[0] >= score(cem.POLCA_PARAMS)
    assert score(params) == best[-1]
    write_metadata(
        tmp_path, {"env_id": ENV_ID, "name": "t", "loader": cem.LOADER, "algo": "CEM", "command": "x", "params": params}
    )
    rows_eval = evaluate(str(tmp_path), ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
    assert rows_eval[0]["policy"] == "t"


def test_bad_settings_and_checkpoints_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "hp.yaml"
    bad.write_text("CEM:\n  iteration: 3\n")
    with pytest.raises(ValueError, match=r"\[CEM\]: unknown keys \['iteration'\]"):
        cem.CemSettings.from_yaml(bad)
    write_metadata(
        tmp_path / "ck", {"env_id": ENV_ID, "name": "t", "loader": cem.LOADER, "algo": "CEM", "command": "x"}
    )
    from cloudgym.evaluation import make_vector_env

    with pytest.raises(ValueError, match="no 'params' mapping"):
        make_policy(ENV_ID, tmp_path / "ck", make_vector_env(ENV_ID, 1, SMALL))
    with pytest.raises(ValueError, match="per priority class"):
        cem.CemCapController(make_vector_env(ENV_ID, 1, {**SMALL, "per_server_caps": True}), cem.POLCA_PARAMS)


def test_the_yaml_section_parses() -> None:
    settings = cem.CemSettings.from_yaml(cem.HYPERPARAMS)
    assert settings.elite <= settings.population


@pytest.mark.skipif(not (CHECKPOINT_ROOT / ENV_ID).is_dir(), reason="no shipped GPUPowerCap-v0 checkpoint")
def test_the_shipped_checkpoint_acts() -> None:
    for ckpt in shipped_checkpoints(ENV_ID):
        rows = evaluate(str(ckpt.path), ENV_ID, held_out_seeds(2), env_kwargs=SMALL)
        assert all(np.isfinite(r["return"]) for r in rows)
        assert (ckpt.path / "checkpoint.yaml").stat().st_size < 2_000_000
