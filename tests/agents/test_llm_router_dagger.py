"""LLMRouter-v0's DAgger router: the oracle's per-decision scores, the equivariant scorer, fitting, the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cloudgym.agents import llm_router_dagger as dagger
from cloudgym.agents.checkpoints import UntrustedCheckpointError, load_policy, write_metadata
from cloudgym.baselines.llm_router import LookaheadOracle, WorkloadAwareHeuristic
from cloudgym.envs.llm_router import LLMRouterVectorEnv

N = 4
OBS = 7 * N + 12


def random_weights(rng: np.random.Generator, hidden: int = 16, residual: float = 1.0) -> dagger.ScorerWeights:
    f = 2 * 7 + 1 + 12
    return dagger.ScorerWeights(
        w1=rng.normal(size=(f, hidden)).astype(np.float32),
        b1=rng.normal(size=hidden).astype(np.float32),
        w2=rng.normal(size=(hidden, hidden)).astype(np.float32),
        b2=rng.normal(size=hidden).astype(np.float32),
        w3=(residual * rng.normal(size=(hidden, 1))).astype(np.float32),
        b3=np.zeros(1, np.float32),
        log_scale=np.asarray(np.log(50.0), np.float32),
    )


def test_scorer_is_equivariant_to_the_instances_order() -> None:
    rng = np.random.default_rng(0)
    w = random_weights(rng)
    obs = rng.random((6, OBS)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    permuted = np.concatenate([obs[:, : 7 * N].reshape(6, N, 7)[:, perm].reshape(6, -1), obs[:, 7 * N :]], axis=1)
    np.testing.assert_allclose(w.logits(permuted, N), w.logits(obs, N)[:, perm], rtol=1e-5, atol=1e-5)


def test_zero_residual_routes_exactly_like_the_heuristic() -> None:
    env = LLMRouterVectorEnv(num_envs=4, requests_per_episode=60)
    router = dagger.DaggerRouter(env, random_weights(np.random.default_rng(1), residual=0.0))
    heuristic = WorkloadAwareHeuristic(env)
    obs, _ = env.reset(seed=5)
    for _ in range(60):
        mask = env.action_masks()
        expected = heuristic.act(obs, mask)
        np.testing.assert_array_equal(router.act(obs, mask), expected)
        obs, *_ = env.step(expected)


def test_full_horizon_score_of_the_heuristics_choice_is_its_return() -> None:
    """The branch of the heuristic's own choice, rolled to the end, is the heuristic's episode exactly."""
    env = LLMRouterVectorEnv(num_envs=3, scenario="small")
    oracle = LookaheadOracle(env, horizon=10_000)
    heuristic = WorkloadAwareHeuristic(env)
    obs, _ = env.reset(seed=7)
    for _ in range(5):  # a few steps in, so the branches start from a busy cluster
        obs, *_ = env.step(heuristic.act(obs, env.action_masks()))
    mask = env.action_masks()
    first = heuristic.act(obs, mask)
    scores = oracle.scores()
    np.testing.assert_array_equal(oracle.act(obs, mask), np.argmax(np.where(mask, scores, -np.inf), axis=1))
    total = np.zeros(3)
    done = np.zeros(3, bool)
    actions = first
    while not done.all():
        obs, reward, terminated, _, _ = env.step(actions)
        total += np.where(done, 0.0, reward)
        done |= terminated
        actions = heuristic.act(obs, env.action_masks())
    np.testing.assert_allclose(scores[np.arange(3), first], total, rtol=1e-9)


@pytest.mark.slow
def test_fit_learns_a_rule_the_heuristic_misses() -> None:
    """The oracle's best instance is the one with the most waiting requests; the fitted scorer finds it."""
    rng = np.random.default_rng(2)
    data = dagger.Labelled()
    for _ in range(4):
        obs = rng.random((256, OBS)).astype(np.float32)
        waiting = obs[:, : 7 * N].reshape(256, N, 7)[:, :, 0]
        score = -np.ones((256, N))
        score[np.arange(256), np.argmax(waiting, axis=1)] = 0.0
        data.add(obs, np.ones((256, N), bool), score)
    args = dagger.DaggerArgs(epochs=40, hidden=32, lr=3e-3, heuristic_scale=1.0)
    _, stats = dagger.fit(data, args, N)
    assert stats["train_heuristic_regret_s"] > 0.5  # the heuristic (least impact) is right ~1 time in 4
    assert stats["train_argmax_regret_s"] < 0.1


def test_checkpoint_round_trip_and_tampering(tmp_path: Path) -> None:
    w = random_weights(np.random.default_rng(3))
    w.save(tmp_path / "model.npz")
    write_metadata(
        tmp_path,
        {
            "env_id": "LLMRouter-v0",
            "name": "dagger_test",
            "loader": "cloudgym.agents.llm_router_dagger:load_dagger_policy",
            "algo": "DAgger",
            "command": "test",
            "scenario": "default",
        },
    )
    assert yaml.safe_load((tmp_path / "checkpoint.yaml").read_text())["files"]["model.npz"]
    env = LLMRouterVectorEnv(num_envs=2, requests_per_episode=20)
    policy = load_policy(tmp_path, env)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(policy.act(obs, None), np.argmax(w.logits(obs, N), axis=1))
    (tmp_path / "model.npz").write_bytes((tmp_path / "model.npz").read_bytes() + b"x")
    with pytest.raises(UntrustedCheckpointError):
        load_policy(tmp_path, env)


def test_paired_summary_counts_wins_and_brackets_the_change() -> None:
    base = [{"seed": s, "e2e_mean_s": 10.0 + s % 3, "slo_attainment_pct": 70.0} for s in range(20)]
    other = [{"seed": s, "e2e_mean_s": r["e2e_mean_s"] * (0.95 if s < 15 else 1.01), "slo_attainment_pct": 71.0}
             for s, r in enumerate(base)]  # fmt: skip
    out = dagger.paired_summary(base, other)
    assert out["seeds_won"] == 15
    assert out["ci_low_pct"] < out["change_pct"] < out["ci_high_pct"] < 0
    assert out["slo_change_pts"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two common seeds"):
        dagger.paired_summary(base[:1], other[:1])


def test_signal_correlation_reports_every_horizon() -> None:
    out = dagger.signal_correlation({"scenario": "small"}, [0, 1, 2], horizons=(5,), points=2)
    assert set(out) >= {"pairs", "true_sd_s", "h1", "h5"}
    assert out["pairs"] > 0
    assert -1.0 <= out["h5"]["pearson"] <= 1.0


def test_fit_warm_starts_from_init_weights() -> None:
    """With no epochs, a warm-started fit returns the init learner unchanged (what --init continues from)."""
    rng = np.random.default_rng(4)
    w = random_weights(rng, hidden=8)
    data = dagger.Labelled()
    data.add(rng.random((16, OBS)).astype(np.float32), np.ones((16, N), bool), rng.random((16, N)))
    out, _ = dagger.fit(data, dagger.DaggerArgs(epochs=0, hidden=8), N, init=w)
    obs = rng.random((5, OBS)).astype(np.float32)
    np.testing.assert_allclose(out.logits(obs, N), w.logits(obs, N), rtol=1e-6)
    with pytest.raises(ValueError, match="do not match the scorer's shape"):
        dagger.fit(data, dagger.DaggerArgs(epochs=0, hidden=16), N, init=w)
