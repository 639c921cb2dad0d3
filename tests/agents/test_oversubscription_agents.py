"""Oversubscription-v0 agents: features, demonstrations, BC/DAgger, the prototype agent, its HITL round, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudgym.agents import oversub_imitation as imitation
from cloudgym.agents import protohail
from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, load_policy, shipped_checkpoints, write_metadata
from cloudgym.baselines.oversubscription import levels_at_most, robust_hindsight_levels, rule_caps
from cloudgym.envs.oversubscription import OversubscriptionConfig
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env

torch.set_num_threads(1)  # small models; the test machine has 2 cores

ENV_ID = "Oversubscription-v0"
TINY = {"num_nodes": 3, "node_cores": 16, "hours": 6}


@pytest.fixture(scope="module")
def demos() -> imitation.Demonstrations:
    return imitation.collect(TINY, [0, 1, 2])


def test_node_features_lay_out_the_trajectory_and_headroom() -> None:
    env = make_vector_env(ENV_ID, 2, TINY)
    obs, _ = env.reset(seed=0)
    traj, static = imitation.node_features(obs)
    assert traj.shape == (6, 24, 2)
    assert static.shape == (6, imitation.STATIC_FEATURES)
    rows = obs.reshape(-1, 55)
    np.testing.assert_array_equal(traj[:, :, 0], rows[:, :24])
    np.testing.assert_array_equal(traj[:, :, 1], rows[:, 24:48])
    expected = np.clip(rows[:, 48] + 1.0 - rows[:, 24:48].max(axis=1), -1, 2)
    np.testing.assert_allclose(static[:, protohail.HEADROOM_COLUMN], expected, rtol=1e-6)


def test_risk_aware_decoding_leans_low_when_unsure() -> None:
    p = np.array([[0.1, 0.0, 0.0, 0.0, 0.2, 0.7], [0.0, 0.0, 0.5, 0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(imitation.decode(p, None), [5, 2])
    np.testing.assert_array_equal(imitation.decode(p, 0.05), [0, 2])  # 10% chance the expert is at 1.0
    np.testing.assert_array_equal(imitation.decode(p, 0.25), [4, 2])
    np.testing.assert_array_equal(imitation.decode(p, 0.35), [5, 2])
    np.testing.assert_array_equal(imitation.decode(p, 0.5), [5, 5])


def test_demonstrations_are_labelled_by_the_robust_expert(demos: imitation.Demonstrations) -> None:
    assert len(demos) == 3 * 6 * 3
    env = make_vector_env(ENV_ID, 3, TINY)
    env.reset(seed=[0, 1, 2])
    first = robust_hindsight_levels(env.core, 24).reshape(-1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(demos.label[:9], first)
    # A learner that always follows the expert visits exactly the expert's states.
    followed = imitation.collect(TINY, [0, 1, 2], actor=lambda obs: np.zeros(obs.shape[:2], np.int64), expert_share=1.0)
    np.testing.assert_array_equal(followed.label, demos.label)
    np.testing.assert_array_equal(followed.rows, demos.rows)


def test_bc_fits_the_expert_and_dagger_aggregates(demos: imitation.Demonstrations) -> None:
    model, losses = imitation.train_bc(demos, 6, epochs=40, hidden=32)
    assert losses[-1] < losses[0]
    majority = np.bincount(demos.label).max() / len(demos)
    assert imitation.accuracy(model, demos) >= majority
    dagger, data = imitation.train_dagger(
        TINY, demos, 6, iterations=1, episodes_per_iteration=2, epochs=5, hidden=32, log=lambda _: None
    )
    assert len(data) == len(demos) + 2 * 6 * 3
    assert isinstance(dagger, imitation.MLPClassifier)


@pytest.fixture(scope="module")
def trained(demos: imitation.Demonstrations) -> tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]]:
    config = protohail.ProtoHAILConfig(prototypes=4, embedding=8, hidden=8)
    return protohail.train_protohail(demos, config, epochs=8, head_epochs=4, batch_size=16, log=lambda _: None)


def test_protohail_trains_on_four_terms_and_anchors_prototypes(
    demos: imitation.Demonstrations, trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]]
) -> None:
    model, anchors, history = trained
    assert set(history[0]) == {"imitation", "representativeness", "diversity", "interpretability"}
    assert history[-1]["imitation"] < history[0]["imitation"]
    # Interpretability: every prototype sits exactly on the embedding of a real trajectory, its anchor.
    z = protohail.embeddings(model, demos)
    np.testing.assert_allclose(model.prototypes.detach().numpy(), z[anchors].numpy(), atol=1e-6)
    assert np.all((anchors >= 0) & (anchors < len(demos)))
    levels = protohail.prototype_levels(model)
    assert levels.shape == (4,)
    assert np.all((levels >= 0) & (levels < 6))


def _levels(model: protohail.ProtoHAILNet, data: imitation.Demonstrations) -> np.ndarray:
    """The levels the agent plays on the rows of ``data`` (its decoding under its operator caps)."""
    return imitation.act_levels(model, data.rows[None], 1.0, 0.4)[0]


@pytest.fixture(scope="module")
def pool(trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]]) -> imitation.Demonstrations:
    model = trained[0]
    return imitation.collect(TINY, [7, 8], actor=lambda obs: imitation.act_levels(model, obs))


def test_hitl_queries_spend_the_budget_on_the_operators_answers(
    demos: imitation.Demonstrations,
    pool: imitation.Demonstrations,
    trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]],
) -> None:
    model = trained[0]
    config = OversubscriptionConfig(**TINY)
    queries = protohail.select_queries(model, demos, pool, config, budget=6)
    assert len(queries) == 6
    assert [q.kind for q in queries].count("prototype") == 3
    caps = protohail.operator_caps(pool.rows, config)
    for q in queries:
        if q.kind == "rate":
            assert q.allowed == caps[q.index]
            assert q.proposed > 0  # an answer could lower it
    # The operator is the rules plus the headroom rule of thumb.
    _, static = imitation.node_features(pool.rows[None])
    headroom = levels_at_most(static[:, protohail.HEADROOM_COLUMN][None], config.ratios)[0]
    np.testing.assert_array_equal(caps, np.minimum(rule_caps(pool.rows[None], config)[0], headroom))


def test_hitl_round_without_queries_leaves_the_agent_unchanged(
    demos: imitation.Demonstrations,
    pool: imitation.Demonstrations,
    trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]],
) -> None:
    model = trained[0]
    config = OversubscriptionConfig(**TINY)
    plain, asked = protohail.hitl_round(model, demos, pool, config, budget=0, log=lambda _: None)
    assert asked == []
    assert plain is not model
    assert len(plain.prior_head_weight) == 1  # the round did retrain its head...
    for name, value in model.named_parameters():  # ...and with no answers the anchor held every weight, bit for bit
        torch.testing.assert_close(dict(plain.named_parameters())[name], value, rtol=0, atol=0)
    both = imitation.Demonstrations.concatenate([demos, pool])
    np.testing.assert_array_equal(_levels(plain, both), _levels(model, both))
    # The retraining takes real steps: the anchor (not a skipped loop) is what keeps the weights.
    student = copy.deepcopy(model)
    stats = protohail.retrain_with_answers(student, model, both, epochs=2, batch_size=16)
    assert stats["steps"] == 2 * int(np.ceil(len(both) / 16))
    assert stats["covered_rows"] == 0
    assert stats["kl_teacher_student"] == 0.0
    torch.testing.assert_close(student.head.weight, model.head.weight, rtol=0, atol=0)
    # Fitting the expert's labels instead (the pre-anchor retraining) would have moved the head.
    refit = copy.deepcopy(model)
    protohail.refit_head(refit, demos, epochs=1, batch_size=16)
    assert not torch.equal(refit.head.weight, model.head.weight)


def test_a_retrained_head_never_plays_above_the_pre_round_head(
    demos: imitation.Demonstrations,
    pool: imitation.Demonstrations,
    trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]],
) -> None:
    model = trained[0]
    both = imitation.Demonstrations.concatenate([demos, pool])
    student = copy.deepcopy(model)
    student.push_prior_head()
    with torch.no_grad():  # a head that would sell the highest ratio everywhere
        student.head.weight.zero_()
        student.head.bias.copy_(torch.tensor([0.0, 0, 0, 0, 0, 50]))
    np.testing.assert_array_equal(_levels(student, both), _levels(model, both))
    np.testing.assert_array_equal(protohail.prototype_levels(student), protohail.prototype_levels(model))
    with torch.no_grad():  # and one that sells the lowest everywhere plays it
        student.head.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0, 0]))
    assert np.all(_levels(student, both) == 0)


@pytest.mark.parametrize("prototype_neighbours", [None, 8])
def test_hitl_answers_only_ever_lower_decisions(
    demos: imitation.Demonstrations,
    pool: imitation.Demonstrations,
    trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]],
    prototype_neighbours: int | None,
) -> None:
    model = trained[0]
    config = OversubscriptionConfig(**TINY)
    queries = protohail.select_queries(model, demos, pool, config, budget=6)
    both = imitation.Demonstrations.concatenate([demos, pool])
    before = _levels(model, both)
    rng = np.random.default_rng(0)
    for trial in range(4):
        # Any answers (here random ones, some above the proposal) never raise a level anywhere.
        answers = [dataclasses.replace(q, allowed=int(rng.integers(0, 6))) for q in queries]
        edited = protohail.apply_answers(
            copy.deepcopy(model), answers, demos, pool, neighbours=8, prototype_neighbours=prototype_neighbours
        )
        after = _levels(edited, both)
        assert np.all(after <= before), f"trial {trial}: an answer raised a decision"
        # The answers edit the decoding caps only; the network's weights stay the pre-round ones.
        for name, value in model.named_parameters():
            torch.testing.assert_close(dict(edited.named_parameters())[name], value, rtol=0, atol=0)
        # Retraining the head on them moves probability off the answered levels, and still raises nothing.
        stats = protohail.retrain_with_answers(edited, model, both, epochs=3, batch_size=16, answer_weight=5.0)
        if stats["covered_rows"]:
            assert stats["mass_above_cap_after"] < stats["mass_above_cap_before"]
            assert not torch.equal(edited.head.weight, model.head.weight)
        assert np.all(_levels(edited, both) <= after), f"trial {trial}: retraining raised a decision"
        assert np.all(protohail.prototype_levels(edited) <= protohail.prototype_levels(model))
    # Answers allowing only the lowest ratio: the queried states and prototype regions play it.
    strict = [dataclasses.replace(q, allowed=0) for q in queries]
    edited = protohail.apply_answers(
        copy.deepcopy(model), strict, demos, pool, neighbours=8, prototype_neighbours=prototype_neighbours
    )
    after = _levels(edited, both)
    asked_rows = [len(demos) + q.index for q in strict if q.kind == "rate"]
    assert np.all(after[asked_rows] == 0)
    if prototype_neighbours is None:
        asked_protos = [q.index for q in strict if q.kind == "prototype"]
        owner = protohail.assignments(model, both)
        assert np.all(after[np.isin(owner, asked_protos)] == 0)
        assert np.all(protohail.prototype_levels(edited)[asked_protos] == 0)
    else:
        anchors = protohail._anchor_rows(model, demos)  # the prototypes sit on these rows (projected)
        assert np.all(after[anchors[[q.index for q in strict if q.kind == "prototype"]]] == 0)
    assert (after < before).any()
    # Caps accumulate over rounds: the tighter answer wins.
    loose = [dataclasses.replace(q, allowed=5) for q in queries]
    protohail.apply_answers(edited, loose, demos, pool, neighbours=8, prototype_neighbours=prototype_neighbours)
    np.testing.assert_array_equal(_levels(edited, both), after)


def test_checkpoint_round_trip_and_picture(
    tmp_path: Path,
    demos: imitation.Demonstrations,
    pool: imitation.Demonstrations,
    trained: tuple[protohail.ProtoHAILNet, np.ndarray, list[dict[str, float]]],
) -> None:
    base, anchors, _ = trained
    # A HITL agent: a prototype answer and two state answers travel with the weights.
    answers = [
        protohail.Query("prototype", 1, 5, 2),
        protohail.Query("rate", 0, 5, 0),
        protohail.Query("rate", 3, 5, 1),
    ]
    model = protohail.apply_answers(copy.deepcopy(base), answers, demos, pool, neighbours=8)
    protohail.retrain_with_answers(model, base, demos, epochs=1, batch_size=64)  # and the pre-retraining head
    rows = imitation.Demonstrations(*(getattr(demos, f.name)[anchors] for f in dataclasses.fields(demos)))
    protohail.save_protohail(model, rows, tmp_path, answers, 0.4)
    loaded, _ = protohail.load_model(tmp_path)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0)
    assert len(loaded.point_cap) == 2
    assert len(loaded.prior_head_weight) == 1
    write_metadata(
        tmp_path,
        {
            "env_id": ENV_ID,
            "name": "proto_test",
            "loader": "cloudgym.agents.protohail:load_protohail_policy",
            "algo": "ProtoHAIL",
            "command": "pytest",
        },
    )
    env = make_vector_env(ENV_ID, 2, TINY)
    obs, _ = env.reset(seed=0)
    policy = load_policy(tmp_path, env)
    assert policy.name == "proto_test"
    np.testing.assert_array_equal(policy.act(obs), imitation.act_levels(model, obs, 1.0, 0.4))
    picture = protohail.plot_prototypes(tmp_path, tmp_path / "protos.png")
    assert picture.stat().st_size > 10_000


@pytest.mark.parametrize("ckpt", shipped_checkpoints(ENV_ID), ids=lambda c: c.name)
def test_shipped_checkpoints_load_act_and_are_small(ckpt: object) -> None:
    info = ckpt  # CheckpointInfo
    assert info.path.parent == CHECKPOINT_ROOT / ENV_ID  # type: ignore[attr-defined]
    for f in info.path.iterdir():  # type: ignore[attr-defined]
        assert f.stat().st_size < 2_000_000, f"{f} is too large to ship"
    assert info.command.startswith("python scripts/")  # type: ignore[attr-defined]
    rows = evaluate(info.path, ENV_ID, held_out_seeds(1), env_kwargs={"hours": 2})  # type: ignore[attr-defined]
    assert np.isfinite(rows[0]["return"])


@pytest.mark.slow
def test_ppo_trains_through_train_py_with_scaled_rewards(tmp_path: Path) -> None:
    """scripts/train.py's normalize_reward run key (this env's PPO uses it)."""
    import importlib.util

    import yaml

    hyper = tmp_path / "hp.yaml"
    hyper.write_text(
        yaml.safe_dump(
            {
                "PPO": {
                    "num_envs": 2,
                    "total_timesteps": 64,
                    "eval_freq": 64,
                    "eval_episodes": 1,
                    "normalize_reward": True,
                    "env_kwargs": {**TINY, "hours": 4},
                    "n_steps": 16,
                    "batch_size": 32,
                    "n_epochs": 1,
                }
            }
        )
    )
    spec = importlib.util.spec_from_file_location("train_script", Path(__file__).parents[2] / "scripts" / "train.py")
    assert spec is not None
    assert spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    sys.modules["train_script"] = train  # dataclasses of a module need it registered
    spec.loader.exec_module(train)
    run = train.main(
        ["--env", ENV_ID, "--algo", "PPO", "--hyperparams", str(hyper), "--out", str(tmp_path), "--no-progress"]
    )
    policy = load_policy(run, make_vector_env(ENV_ID, 2, {**TINY, "hours": 4}))
    env = make_vector_env(ENV_ID, 2, {**TINY, "hours": 4})
    obs, _ = env.reset(seed=0)
    actions = np.asarray(policy.act(obs))
    assert actions.shape == (2, 3)


# ----------------------------------------------------------------------------- the agent on the rule's level


def test_decoding_with_a_quantile_per_level_never_jumps_over_a_forbidden_level() -> None:
    p = np.array([[0.1, 0.0, 0.2, 0.7, 0.0], [0.0, 0.02, 0.08, 0.3, 0.6], [0.0, 0.0, 0.0, 1.0, 0.0]])
    # A scalar quantile is the old decoding exactly; the same number per level gives the same levels.
    np.testing.assert_array_equal(imitation.decode(p, np.full(5, 0.25)), imitation.decode(p, 0.25))
    # Strict up to the middle level (0.05), loose above it (0.5): row 0 stays at level 0 (10% of the mass is
    # below level 1) although the loose quantile alone would allow level 3; row 1 goes to 4 (40% below <= 0.5).
    q = np.array([0.05, 0.05, 0.05, 0.5, 0.5])
    np.testing.assert_array_equal(imitation.decode(p, q), [0, 4, 3])
    assert imitation.decode(p[:1], np.array([1.0, 1.0, 1.0, 0.5, 0.5]))[0] == 3


@pytest.fixture(scope="module")
def on_rule(demos: imitation.Demonstrations) -> protohail.ProtoHAILNet:
    config = protohail.ProtoHAILConfig(prototypes=4, embedding=8, hidden=8, rule_offset=2)
    model, _, _ = protohail.train_protohail(demos, config, epochs=4, head_epochs=2, batch_size=16, log=lambda _: None)
    return model


def test_agent_on_the_rule_plays_the_rule_plus_its_offset(
    demos: imitation.Demonstrations, on_rule: protohail.ProtoHAILNet
) -> None:
    from cloudgym.baselines.oversubscription import Headroom

    assert on_rule.head.out_features == 5
    # Its targets are the expert's level minus the rule's, clipped to -2..2, stored as 0..4.
    rule = protohail.rule_levels(demos.static, 6)
    target = protohail.targets(demos, on_rule.config).label
    np.testing.assert_array_equal(target, np.clip(demos.label - rule, -2, 2) + 2)
    # A head sure of offset 0 everywhere is the Headroom baseline, decision for decision.
    model = copy.deepcopy(on_rule)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0]))
    env = make_vector_env(ENV_ID, 2, TINY)
    obs, _ = env.reset(seed=[3, 4])
    for _ in range(3):
        played = imitation.act_levels(model, obs, 1.0, (0.05, 0.4))
        np.testing.assert_array_equal(played, Headroom(env).act(obs))
        obs, *_ = env.step(played)
    # Sure of +2: two levels above the rule, clipped to the top level.
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0]))
    np.testing.assert_array_equal(imitation.act_levels(model, obs, 1.0, 0.4), np.minimum(Headroom(env).act(obs) + 2, 5))
    # Two quantiles need an agent on the rule's level.
    with pytest.raises(ValueError, match="rule_offset"):
        protohail.ProtoHAILNet(protohail.ProtoHAILConfig(prototypes=2)).thresholds((0.1, 0.4))
    with pytest.raises(ValueError, match="rule_offset"):
        protohail.ProtoHAILConfig(rule_offset=6)


def test_hitl_on_the_rule_level_agent_only_lowers_decisions(
    demos: imitation.Demonstrations, on_rule: protohail.ProtoHAILNet
) -> None:
    config = OversubscriptionConfig(**TINY)
    risk = (0.1, 0.4)
    pool = imitation.collect(TINY, [7, 8], actor=lambda obs: imitation.act_levels(on_rule, obs, 1.0, risk))
    both = imitation.Demonstrations.concatenate([demos, pool])
    before = imitation.act_levels(on_rule, both.rows[None], 1.0, risk)[0]
    queries = protohail.select_queries(on_rule, demos, pool, config, budget=4, risk_quantile=risk)
    strict = [dataclasses.replace(q, allowed=0) for q in queries]
    edited = protohail.apply_answers(copy.deepcopy(on_rule), strict, demos, pool, neighbours=8)
    stats = protohail.retrain_with_answers(edited, on_rule, both, epochs=2, batch_size=16, answer_weight=5.0)
    after = imitation.act_levels(edited, both.rows[None], 1.0, risk)[0]
    assert np.all(after <= before)
    assert np.all(after[[len(demos) + q.index for q in strict if q.kind == "rate"]] == 0)
    if stats["covered_rows"]:
        assert stats["mass_above_cap_after"] < stats["mass_above_cap_before"]
    # No answers: the round gives back the same agent.
    plain, _ = protohail.hitl_round(on_rule, demos, pool, config, budget=0, risk_quantile=risk, log=lambda _: None)
    np.testing.assert_array_equal(imitation.act_levels(plain, both.rows[None], 1.0, risk)[0], before)


def test_matched_quantile_interpolates_a_monotone_curve() -> None:
    grid, cores = [0.02, 0.05, 0.1], [100.0, 200.0, 240.0]
    assert protohail.matched_quantile(grid, cores, 150.0) == pytest.approx(0.035)
    assert protohail.matched_quantile(grid, cores, 50.0) == 0.02
    assert protohail.matched_quantile(grid, cores, 300.0) == 0.1
    # A noisy dip (a looser decoding measured fewer cores) is flattened, not inverted.
    assert protohail.matched_quantile([0.02, 0.05, 0.1], [100.0, 90.0, 200.0], 95.0) == 0.02


@pytest.mark.slow
def test_choose_decoding_takes_the_most_cores_within_the_risk_target(on_rule: protohail.ProtoHAILNet) -> None:
    seeds = [protohail.VALIDATION_SEED_BASE]
    chosen, curve = protohail.choose_decoding(on_rule, [0.01, 0.5], 0.3, 1e9, seeds)
    best = max(curve, key=lambda c: c["saved_cores"])
    assert chosen == (best["down"], 0.3)
    # No candidate meets an impossible target: the coolest one.
    chosen, curve = protohail.choose_decoding(on_rule, [0.01, 0.5], 0.3, -1.0, seeds)
    assert chosen == (min(curve, key=lambda c: c["hot"])["down"], 0.3)
