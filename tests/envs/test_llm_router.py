"""LLMRouter-v0: request accounting invariants, known optima, trace replay, predictor (+ test_contract.py)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgym.baselines.llm_router import replay_benchmark
from cloudgym.envs.core.llm import PRESETS
from cloudgym.envs.llm_router import (
    DONE,
    IN_FLIGHT,
    PENDING,
    REJECTED,
    LLMRouterConfig,
    LLMRouterCore,
    LLMRouterVectorEnv,
)
from cloudgym.envs.workloads import llm as workloads
from cloudgym.evaluation import evaluate, held_out_seeds
from cloudgym.policy import make_policy

ENV_ID = "LLMRouter-v0"
SMALL = {"scenario": "small"}
TRACE = Path("../shared/traces/AzureLLMInferenceTrace_code.csv")
needs_trace = pytest.mark.skipif(not TRACE.exists(), reason=f"{TRACE} is absent (shared traces not checked out)")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instances": ("llama2-7b-a100",)}, r"instances must name 2 to 256 presets"),
        ({"instances": ("llama2-7b-a100", "llama9-a100")}, r"instances: unknown presets \['llama9-a100'\]"),
        ({"mix": (0.5, -0.1)}, r"LLMRouterConfig\.mix: element 1: got -0\.1; expected a value in \[0, 1000000\]"),
        ({"workload": "chat"}, "workload must be"),
        ({"max_batched_tokens": 2048}, "must hold the longest prompt"),
        ({"length_predictor": "bert"}, "length_predictor must be"),
        ({"target_load": 0.0}, r"target_load: got 0\.0; expected a value in \(0, 5\]"),
    ],
)
def test_impossible_config_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **kwargs)


def test_misspelt_config_field_and_unknown_scenario_are_named() -> None:
    with pytest.raises(TypeError, match="did you mean 'target_load'"):
        gym.make(ENV_ID, target_lod=0.5)
    with pytest.raises(ValueError, match="unknown LLMRouterConfig scenario"):
        LLMRouterConfig.scenario("busy")
    with pytest.raises(FileNotFoundError, match=r"looked in: /nonexistent/trace\.csv"):
        gym.make(ENV_ID, workload="trace", trace_path="/nonexistent/trace.csv")


# ----------------------------------------------------------------------------- invariants


def run_episode_checked(venv: LLMRouterVectorEnv, actions: str, seed: int) -> dict:
    """One episode per sub-env, checking every invariant at every step; returns final metrics per sub-env."""
    core: LLMRouterCore = venv.core  # type: ignore[assignment]
    c = core.config
    b = venv.num_envs
    obs, _ = venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    returns = np.zeros(b)
    penalties = np.zeros(b)
    metrics: dict[str, np.ndarray] = {}
    finished = np.zeros(b, bool)
    completed = np.zeros(b, np.int64)
    policy = make_policy(ENV_ID, "heuristic", venv)
    while not finished.all():
        mask = venv.action_masks()
        assert mask.any(axis=1).all(), "masks must allow an action"
        if actions == "any":  # ignores the mask: rejections follow
            a = rng.integers(0, core.params.cluster.num_instances, b)
        else:
            a = policy.act(obs, mask)
        obs, reward, terminated, _, info = venv.step(a)
        assert venv.single_observation_space.contains(obs[0])
        assert np.all(np.isfinite(obs))
        s = core.state
        cs = s.cluster
        assert np.all(cs.kv_used <= core.params.cluster.capacity_blocks[None, :]), "KV use above capacity"
        assert np.all(cs.running + cs.waiting <= c.slots)
        # Every request is pending, in flight, done or rejected; in-flight ones are exactly those in the cluster.
        counts = [(s.status == k).sum(axis=1) for k in (PENDING, IN_FLIGHT, DONE, REJECTED)]
        assert np.all(sum(counts) == c.requests_per_episode)
        live = ~finished
        np.testing.assert_array_equal(counts[1][live], core.params.cluster.in_system(cs)[live])
        np.testing.assert_array_equal(counts[3][live], s.counters.rejected[live])
        completed += np.where(live, info["completed"], 0)
        np.testing.assert_array_equal(completed[live], counts[2][live])
        returns += np.where(live, reward, 0.0)
        penalties += np.where(live & info["rejected"], c.reject_penalty_s, 0.0)
        if "episode_stats" in info:
            for name, column in info["metrics"].items():
                ended = info["_metrics"] & live
                assert np.all(np.isfinite(column[ended])), name
                metrics.setdefault(name, np.full(b, np.nan))[ended] = column[ended]
            ended = info["_episode_stats"] & live
            for i in np.flatnonzero(ended):
                done = s.status[i] == DONE
                # The per-request table in info is the state's, and the metrics follow from it exactly.
                np.testing.assert_array_equal(info["request_status"][i], s.status[i])
                e2e = info["request_e2e_s"][i][info["request_status"][i] == DONE]
                assert metrics["e2e_mean_s"][i] == pytest.approx(e2e.mean(), rel=1e-12)
                assert metrics["e2e_p99_s"][i] == pytest.approx(np.percentile(e2e, 99), rel=1e-12)
                # The return is minus the latency of every request (+ penalties): accounting is exact.
                in_flight_accrual = np.sum(s.now[i] - s.arrival[i, s.status[i] == IN_FLIGHT])
                latency = np.nansum(s.e2e[i, done]) + in_flight_accrual
                assert -returns[i] == pytest.approx(latency + penalties[i], rel=1e-9, abs=1e-6)
                assert metrics["rejected"][i] == np.sum(s.status[i] == REJECTED)
            finished |= terminated
    return metrics


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    load=st.floats(0.3, 2.0),
    chunked=st.booleans(),
    slots=st.integers(2, 12),
    actions=st.sampled_from(["policy", "any"]),
    predictor=st.sampled_from(["learned", "prior", "oracle"]),
)
def test_every_request_is_accounted_for(
    seed: int, load: float, chunked: bool, slots: int, actions: str, predictor: str
) -> None:
    venv = LLMRouterVectorEnv(
        num_envs=2,
        instances=("llama2-7b-a100", "llama2-7b-h100"),
        slots=slots,
        requests_per_episode=40,
        target_load=load,
        chunked_prefill=chunked,
        max_batched_tokens=1024 if chunked else 8192,
        length_predictor=predictor,
        max_context_tokens=4096,
    )
    metrics = run_episode_checked(venv, actions, seed)
    assert np.all(metrics["in_flight"] == 0)  # the drain finished everything


def test_generated_tokens_equal_requested_for_completed_requests() -> None:
    # The env's completion table comes from the core's completions, whose output tokens are checked here.
    cluster_seen = []
    venv = LLMRouterVectorEnv(num_envs=2, instances=("llama2-7b-a100",) * 2, requests_per_episode=60)
    core = venv.core
    advance = core.params.cluster.advance

    def spy(state, until):  # type: ignore[no-untyped-def]
        done = advance(state, until)
        cluster_seen.append(done)
        return done

    core.params.cluster.advance = spy  # type: ignore[method-assign]
    venv.reset(seed=3)
    for _ in range(60):
        venv.step(np.zeros(2, np.int64))
    done = [d for d in cluster_seen if len(d)]
    envs = np.concatenate([d.env for d in done])
    requests = np.concatenate([d.request for d in done])
    outputs = np.concatenate([d.output for d in done])
    assert envs.size == 120
    np.testing.assert_array_equal(outputs, core.state.output[envs, requests])


def test_masks_mark_full_instances_and_full_clusters_reject() -> None:
    venv = LLMRouterVectorEnv(num_envs=1, instances=("llama2-7b-a100",) * 2, slots=2, arrival_rate_per_s=1e4)
    venv.reset(seed=0)
    core = venv.core
    rejected = 0
    for _ in range(12):
        mask = venv.action_masks()
        cs = core.state.cluster
        full = cs.running[0] + cs.waiting[0] >= 2
        if full.all():
            assert mask[0].all()  # nothing admits: any action, and the request is rejected
        else:
            np.testing.assert_array_equal(mask[0], ~full)
        _, _, _, _, info = venv.step(np.array([int(np.argmax(mask[0]))]))
        rejected += int(info["rejected"][0])
    assert rejected > 0
    assert core.state.counters.rejected[0] == rejected


@needs_trace
def test_requests_beyond_the_context_window_are_rejected_and_counted() -> None:
    # The trace keeps its real lengths (synthetic requests are generated within the window).
    venv = LLMRouterVectorEnv(num_envs=2, workload="trace", max_context_tokens=2048, requests_per_episode=80)
    venv.reset(seed=5)
    s = venv.core.state
    too_long = (s.prompt + s.output > 2048).sum(axis=1)
    assert too_long.sum() > 0
    for _ in range(80):
        venv.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(s.counters.rejected_context, too_long)
    assert np.all(s.counters.rejected >= too_long)


# ----------------------------------------------------------------------------- known optima


def isolated_latency(spec_name: str, prompt: int, output: int) -> float:
    """End-to-end latency of a request alone on an idle instance, from the cost model in closed form."""
    spec = PRESETS[spec_name]
    first = float(spec.prefill_time(prompt))
    ctx = prompt + np.arange(1, output)
    return first + float(np.sum(spec.decode_time(1, ctx - 1)))


def test_sparse_arrivals_reach_the_closed_form_latency_and_the_fast_instance_wins() -> None:
    # Requests far apart: each runs alone. The optimum sends every request to the H100; the heuristic does.
    kwargs = {
        "instances": ("llama2-7b-a100", "llama2-7b-h100"),
        "arrival_rate_per_s": 0.01,
        "requests_per_episode": 12,
        "length_predictor": "oracle",
    }
    seeds = held_out_seeds(3)
    rows = {p: evaluate(p, ENV_ID, seeds, env_kwargs=kwargs) for p in ("heuristic", "round_robin")}
    core = LLMRouterVectorEnv(num_envs=1, **kwargs).core
    for i, seed in enumerate(seeds):
        req = core.instance_for_seed(seed)
        optimum = np.mean(
            [isolated_latency("llama2-7b-h100", p, o) for p, o in zip(req.prompt_tokens, req.output_tokens)]
        )
        assert rows["heuristic"][i]["e2e_mean_s"] == pytest.approx(optimum, rel=1e-6)
        assert rows["round_robin"][i]["e2e_mean_s"] > optimum * 1.1  # half its requests run on the slower A100


def test_routers_rank_as_in_the_paper_on_the_default_mix() -> None:
    seeds = held_out_seeds(4)
    kwargs = {"requests_per_episode": 400}
    mean = {
        p: np.mean([r["e2e_mean_s"] for r in evaluate(p, ENV_ID, seeds, env_kwargs=kwargs)])
        for p in ("random", "round_robin", "least_outstanding_tokens", "heuristic")
    }
    assert mean["heuristic"] < mean["least_outstanding_tokens"] < mean["random"]
    assert mean["round_robin"] < mean["random"]


# ----------------------------------------------------------------------------- workloads


@needs_trace
def test_trace_loader_reads_the_shared_coding_trace() -> None:
    trace = workloads.load_azure_llm_trace(TRACE)
    assert len(trace) == 8819
    assert trace.mean_rate_per_s == pytest.approx(2.57, abs=0.05)
    assert np.median(trace.prompt_tokens) == 1469
    assert np.median(trace.output_tokens) == 13
    assert np.all(np.diff(trace.arrival_s) >= 0)
    window = workloads.trace_requests(trace, np.random.default_rng(0), n=500, rate_per_s=10.0)
    assert (len(window) - 1) / window.arrival_s[-1] == pytest.approx(10.0)
    assert not window.hint_known.any()


@needs_trace
def test_trace_replay_runs_end_to_end() -> None:
    rows = evaluate(
        "heuristic", ENV_ID, held_out_seeds(2), env_kwargs={"workload": "trace", "requests_per_episode": 200}
    )
    for row in rows:
        assert row["episode_length"] == 200
        assert row["in_flight"] == 0
        assert np.isfinite(row["e2e_mean_s"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIME,ContextTokens,GeneratedTokens\n", "line 1: unexpected header .*column 1 is 'TIME'"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,5\n2023-11-16 18:17:0x,3,2\n",
            "line 3, column TIMESTAMP: .* is not a timestamp",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,ten,5\n",
            "line 2, column ContextTokens: 'ten' is not an integer",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,0\n",
            "line 2, column GeneratedTokens: '0' is outside",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04.0,10,5\n2023-11-16 18:17:03.0,10,5\n",
            "line 3, column TIMESTAMP: .* is earlier",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04.0,10\n", "line 2: expected 3 fields"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests after the header"),
    ],
)
def test_malformed_trace_rows_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(workloads.TraceFormatError, match=message):
        workloads.load_azure_llm_trace(path)


def test_generators_match_their_calibration() -> None:
    rng = np.random.default_rng(0)
    req = workloads.sample_requests(rng, n=60_000, rate_per_s=5.0, mix=(0.3, 0.7), arrival_cv=2.0)
    coding = req.request_class == 0
    assert coding.mean() == pytest.approx(0.3, abs=0.01)
    assert np.median(req.prompt_tokens[coding]) == pytest.approx(1469, rel=0.04)
    assert np.median(req.output_tokens[coding]) == pytest.approx(13, abs=1)
    assert np.percentile(req.output_tokens[coding], 99) == pytest.approx(252, rel=0.1)
    assert np.median(req.prompt_tokens[~coding]) == pytest.approx(1020, rel=0.04)
    assert np.median(req.output_tokens[~coding]) == pytest.approx(129, rel=0.04)
    gaps = np.diff(req.arrival_s)
    assert 1 / gaps.mean() == pytest.approx(5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.05)
    assert np.all(req.prompt_tokens + req.output_tokens <= 8192)
    # The hint carries the configured share of the output's information.
    weak = workloads.sample_requests(np.random.default_rng(1), n=20_000, rate_per_s=1.0, hint_r2=0.1)
    strong = workloads.sample_requests(np.random.default_rng(1), n=20_000, rate_per_s=1.0, hint_r2=0.9)
    corr = [np.corrcoef(r.hint[:, 0], np.log(r.output_tokens))[0, 1] for r in (weak, strong)]
    assert corr[0] < 0.35 < corr[1]


def test_shipped_length_predictor_beats_the_prior_where_there_is_signal(tmp_path: Path) -> None:
    core = LLMRouterVectorEnv(num_envs=1).core
    predictor = core.params.predictor
    assert isinstance(predictor, workloads.BucketPredictor)
    req = workloads.sample_requests(np.random.default_rng(99), n=20_000, rate_per_s=1.0)
    truth = workloads.output_bucket(req.output_tokens)
    learned = predictor.probabilities(workloads.predictor_features(req)).argmax(axis=1)
    prior = workloads.prior_probabilities(req)[0].argmax(axis=1)
    assert np.mean(learned == truth) > np.mean(prior == truth) + 0.05
    # Round trip through the file format; a file for other buckets is refused.
    predictor.save(tmp_path / "p.npz")
    again = workloads.BucketPredictor.load(tmp_path / "p.npz")
    np.testing.assert_allclose(
        again.probabilities(np.zeros((2, workloads.NUM_FEATURES))),
        predictor.probabilities(np.zeros((2, workloads.NUM_FEATURES))),
    )
    with pytest.raises(FileNotFoundError, match="length-predictor weights"):
        workloads.BucketPredictor.load(tmp_path / "missing.npz")


def test_oracle_predictor_shows_the_true_bucket() -> None:
    venv = LLMRouterVectorEnv(num_envs=2, length_predictor="oracle", requests_per_episode=20)
    obs, _ = venv.reset(seed=2)
    core = venv.core
    n = core.params.cluster.num_instances
    bucket = workloads.output_bucket(core.state.output[:, 0])
    probs = obs[:, 7 * n + 1 : 7 * n + 8]
    np.testing.assert_array_equal(probs.argmax(axis=1), bucket)
    np.testing.assert_allclose(probs.max(axis=1), 1.0)


def test_replay_benchmark_quick_runs() -> None:
    out = replay_benchmark(quick=True)
    assert out["requests"] == 16 * 200
    assert out["requests_per_s"] > 0
    assert np.isfinite(out["mean_e2e_s"])


def test_sync_vector_env_over_single_envs_carries_the_info() -> None:
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID, disable_env_checker=True, **SMALL) for _ in range(2)])
    sync.reset(seed=0)
    ended = False
    for _ in range(50):
        _, _, terminated, _, info = sync.step(np.zeros(2, np.int64))
        if terminated.any():
            ended = True
            assert info["request_e2e_s"].shape == (2, 48)
            break
    assert ended


@pytest.mark.skipif(not TRACE.exists(), reason="../shared/traces is absent")
def test_trace_request_class_labels_the_trace_requests() -> None:
    with pytest.raises(ValueError, match="trace_request_class must be one of coding, conversation"):
        LLMRouterConfig(workload="trace", trace_request_class="chat")
    for name, index in (("coding", 0), ("conversation", 1)):
        core = LLMRouterVectorEnv(num_envs=1, workload="trace", trace_request_class=name, requests_per_episode=50).core
        requests = core.instance_for_seed(3)
        assert np.all(requests.request_class == index)


# ----------------------------------------------------------------------------- workload presets (issue 18)


@pytest.mark.parametrize(("scenario", "conversation_share"), [("conversation90", 0.9), ("coding90", 0.1)])
def test_mix_presets_draw_their_class_shares(scenario: str, conversation_share: float) -> None:
    env = gym.make_vec(
        ENV_ID,
        num_envs=1,
        vectorization_mode="vector_entry_point",
        scenario=scenario,
        requests_per_episode=4000,
    )
    req = env.core.instance_for_seed(3)  # type: ignore[attr-defined]
    share = float(np.mean(req.request_class == workloads.REQUEST_CLASSES.index("conversation")))
    assert abs(share - conversation_share) < 0.02  # binomial sd at n=4000 is under 0.005
    env.close()


def test_hetero_2x2_heuristic_prefers_the_faster_idle_instance() -> None:
    env = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", scenario="hetero_2x2")
    core: LLMRouterCore = env.core  # type: ignore[assignment]
    assert [s.gpu.name for s in core.params.specs].count("H100-SXM5-80GB") == 2
    # Capacity (the load knob's denominator) counts each instance's own throughput: above four A100s.
    a100 = gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point")
    assert core.params.capacity_rps > 1.3 * a100.core.params.capacity_rps  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=0)
    impact = obs[:, : 7 * 4].reshape(2, 4, 7)[:, :, 6]
    assert np.all(impact[:, 2:].max(axis=1) < impact[:, :2].min(axis=1))  # idle cluster: H100s estimate less
    env.close()
    a100.close()
