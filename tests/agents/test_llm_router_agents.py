"""LLMRouter-v0's trained parts: the heuristic-guided policy, its YAML, the length predictor, learning sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO

from cloudgym.agents.llm_router_policy import IMPACT_COLUMN, INSTANCE_FEATURES, InstanceScorer, InstanceScoringPolicy
from cloudgym.agents.sb3 import SB3Policy, load_hyperparams
from cloudgym.envs.core.sb3_vec_env import SB3VecEnv
from cloudgym.envs.llm_router import LLMRouterVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds
from tests.scripts import load_script

ENV_ID = "LLMRouter-v0"


def test_yaml_resolves_the_custom_policy_and_names_a_bad_one(tmp_path: Path) -> None:
    run, kwargs, _ = load_hyperparams(ENV_ID, "MaskablePPO")
    assert run["policy"] is InstanceScoringPolicy
    assert kwargs["policy_kwargs"]["hidden"] == 64
    bad = tmp_path / "hp.yaml"
    bad.write_text("MaskablePPO:\n  policy: cloudgym.agents.nowhere:Policy\n")
    with pytest.raises(ValueError, match="cannot be imported"):
        load_hyperparams(ENV_ID, "MaskablePPO", bad)


def test_untrained_policy_is_the_heuristic_and_equivariant() -> None:
    env = LLMRouterVectorEnv(num_envs=8, requests_per_episode=50)
    run, kwargs, _ = load_hyperparams(ENV_ID, "MaskablePPO")
    model = MaskablePPO(run["policy"], SB3VecEnv(env), device="cpu", seed=0, **kwargs)
    agent = SB3Policy(env, model.policy)
    heuristic_obs, _ = env.reset(seed=3)
    n = env.core.params.cluster.num_instances
    for _ in range(30):
        mask = env.action_masks()
        f = heuristic_obs[:, : INSTANCE_FEATURES * n].reshape(8, n, INSTANCE_FEATURES)
        expected = np.argmin(np.where(mask, f[:, :, IMPACT_COLUMN], np.inf), axis=1)
        np.testing.assert_array_equal(agent.act(heuristic_obs, mask), expected)
        heuristic_obs, *_ = env.step(expected)
    # Permuting the instances permutes the logits (the residual, once trained, keeps this).
    scorer = InstanceScorer(INSTANCE_FEATURES * 4 + 12, 4)
    for p in scorer.residual.parameters():
        torch.nn.init.normal_(p)
    obs = torch.rand(5, INSTANCE_FEATURES * 4 + 12)
    perm = torch.tensor([2, 0, 3, 1])
    inst = obs[:, : INSTANCE_FEATURES * 4].reshape(5, 4, INSTANCE_FEATURES)
    permuted = torch.cat([inst[:, perm].reshape(5, -1), obs[:, INSTANCE_FEATURES * 4 :]], dim=1)
    torch.testing.assert_close(scorer.forward_actor(permuted), scorer.forward_actor(obs)[:, perm])
    torch.testing.assert_close(scorer.forward_critic(permuted), scorer.forward_critic(obs))


def test_length_predictor_trains_and_reports_honestly(tmp_path: Path) -> None:
    out = load_script("train_length_predictor").main(
        ["--samples", "20000", "--epochs", "2", "--out", str(tmp_path), "--trace", "none"]
    )
    assert (out / "predictor.npz").exists()
    import yaml

    report = yaml.safe_load((out / "predictor.yaml").read_text())["held_out"]
    with_hint = report["synthetic_mix_with_hint"]
    assert with_hint["accuracy"] > with_hint["class_prior_accuracy"] > with_hint["majority_accuracy"]
    without = report["synthetic_mix_without_hint"]
    assert without["accuracy"] < with_hint["accuracy"]  # the hint is where the signal is
    # The env runs the saved weights.
    env = LLMRouterVectorEnv(num_envs=2, length_predictor=str(out / "predictor.npz"), requests_per_episode=10)
    obs, _ = env.reset(seed=0)
    n = env.core.params.cluster.num_instances
    np.testing.assert_allclose(
        obs[:, INSTANCE_FEATURES * n + 1 : INSTANCE_FEATURES * n + 8].sum(axis=1), 1.0, rtol=1e-5
    )


@pytest.mark.slow
def test_a_short_maskable_ppo_run_beats_random() -> None:
    # Two instances, one much slower (A100 vs H100 for Llama-2-7B): routing to the fast one is learnable.
    kwargs = {"instances": ("llama2-7b-a100", "llama2-7b-h100"), "requests_per_episode": 48, "target_load": 0.4}
    torch.set_num_threads(1)  # tiny networks: intra-op threads only cost time (6x on a loaded 2-core host)
    torch.manual_seed(0)
    env = SB3VecEnv(LLMRouterVectorEnv(num_envs=16, **kwargs))
    model = MaskablePPO(
        "MlpPolicy", env, n_steps=48, batch_size=256, n_epochs=5, learning_rate=1e-3, gamma=0.9, seed=0, device="cpu"
    )
    model.learn(total_timesteps=8_000)
    seeds = held_out_seeds(16)
    trained = evaluate(lambda e: SB3Policy(e, model.policy), ENV_ID, seeds, env_kwargs=kwargs)
    random = evaluate("random", ENV_ID, seeds, env_kwargs=kwargs)
    assert np.mean([r["e2e_mean_s"] for r in trained]) < 0.95 * np.mean([r["e2e_mean_s"] for r in random])
