"""The shared LLM instance model: calibration, reference equivalence, invariants, SLO capacity."""

from __future__ import annotations

import copy
import dataclasses
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudgym.envs.core import llm, tree
from cloudgym.envs.core.llm import (
    EMPTY,
    RUNNING,
    WAITING,
    GpuSpec,
    InstanceSpec,
    LLMCluster,
    SchedulerSpec,
    preset,
    slo_throughput,
)
from tests.scripts import load_script

from .llm_reference import as_arrays, reference_run

# A GPU with just enough memory for Llama-2-7B plus ~4,100 KV tokens: preemption happens.
TIGHT_GPU = GpuSpec(name="tight", peak_tflops=312.0, hbm_tbps=2.039, memory_gb=19.6, link_gbps=300.0)


def tight_instance(chunked: bool, max_batch: int = 16, max_tokens: int = 1024) -> InstanceSpec:
    return InstanceSpec(
        gpu=TIGHT_GPU,
        model=llm.LLAMA2_7B,
        scheduler=SchedulerSpec(chunked_prefill=chunked, max_batch_requests=max_batch, max_batched_tokens=max_tokens),
    )


def random_requests(rng: np.random.Generator, n: int, rate: float, max_prompt: int, max_output: int) -> list:
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    prompts = rng.integers(1, max_prompt + 1, n)
    outputs = rng.integers(1, max_output + 1, n)
    return [(i, int(prompts[i]), int(outputs[i]), float(arrivals[i])) for i in range(n)]


def run_core(cluster: LLMCluster, plan: list[list[tuple[int, int, int, int, float]]], horizon: float):
    """plan[b] = list of (instance, id, prompt, output, arrival); returns completions and accepted flags."""
    b = len(plan)
    state = cluster.new_state(b)
    accepted = [[] for _ in range(b)]
    done = []
    steps = max(len(p) for p in plan)
    for k in range(steps):
        until = np.array([p[k][4] if k < len(p) else p[-1][4] for p in plan])
        done.append(cluster.advance(state, until))
        check_state_invariants(cluster, state)
        envs = [i for i in range(b) if k < len(plan[i])]
        rows = [plan[i][k] for i in envs]
        ok = cluster.enqueue(
            state,
            np.array(envs),
            np.array([r[0] for r in rows]),
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]),
            np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows]),
        )
        for i, flag in zip(envs, ok):
            accepted[i].append(bool(flag))
    done.append(cluster.advance(state, np.full(b, horizon)))
    check_state_invariants(cluster, state)
    return llm.Completions.concat(done), accepted, state


def check_state_invariants(cluster: LLMCluster, state: llm.LLMClusterState) -> None:
    running = state.status == RUNNING
    waiting = state.status == WAITING
    np.testing.assert_array_equal(state.running, running.sum(axis=2))
    np.testing.assert_array_equal(state.waiting, waiting.sum(axis=2))
    np.testing.assert_array_equal(state.kv_used, np.where(running, state.blocks, 0).sum(axis=2))
    assert np.all(state.kv_used <= cluster.capacity_blocks[None, :]), "KV use above capacity"
    assert np.all(np.where(running, state.computed, 0) <= np.where(running, state.blocks, 0) * 16)
    assert np.all(state.blocks[~running] == 0)
    live = state.status != EMPTY
    assert np.all(state.generated[live] <= state.output[live])
    # The ring holds exactly the waiting slots.
    b, n, s = state.status.shape
    for i in range(b):
        for j in range(n):
            ring = [(state.queue_head[i, j] + q) % s for q in range(state.waiting[i, j])]
            assert sorted(state.queue[i, j, ring].tolist()) == np.flatnonzero(waiting[i, j]).tolist()


@pytest.mark.parametrize("chunked", [False, True])
def test_vectorised_core_equals_the_per_request_reference(chunked: bool) -> None:
    spec = tight_instance(chunked)
    cluster = LLMCluster([spec, spec], slots=10)
    rng = np.random.default_rng(7 + chunked)
    plan = []
    for _ in range(3):
        reqs = random_requests(rng, 90, rate=12.0, max_prompt=700, max_output=250)
        plan.append([(int(rng.integers(0, 2)), *r) for r in reqs])
    horizon = 1e4
    done, accepted, state = run_core(cluster, plan, horizon)
    assert state.activity.preemptions.sum() > 0, "the tight KV cache should force preemptions"
    assert sum(not a for acc in accepted for a in acc) > 0, "slot overflow should reject some requests"
    for b, requests in enumerate(plan):
        for inst in range(2):
            mine = [(r[1], r[2], r[3], r[4]) for r in requests if r[0] == inst]
            ref_done, ref_acc = reference_run(spec, 10, mine, horizon)
            core_acc = [a for r, a in zip(requests, accepted[b]) if r[0] == inst]
            assert core_acc == ref_acc
            sel = (done.env == b) & (done.instance == inst)
            order = np.argsort(done.request[sel])
            ref = as_arrays(ref_done)
            np.testing.assert_array_equal(done.request[sel][order], ref["request"])
            np.testing.assert_array_equal(done.output[sel][order], ref["output"])
            for key in ("first_token", "finish", "max_gap"):
                np.testing.assert_allclose(getattr(done, key)[sel][order], ref[key], rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    chunked=st.booleans(),
    slots=st.integers(2, 12),
    rate=st.floats(1.0, 40.0),
    max_tokens=st.sampled_from([256, 1024, 8192]),
)
def test_invariants_hold_for_any_workload(seed: int, chunked: bool, slots: int, rate: float, max_tokens: int) -> None:
    spec = tight_instance(chunked, max_batch=8, max_tokens=max_tokens)
    cluster = LLMCluster([spec, preset("llama2-7b-a100")], slots=slots)
    rng = np.random.default_rng(seed)
    plan = [
        [(int(rng.integers(0, 2)), *r) for r in random_requests(rng, 40, rate, max_prompt=900, max_output=300)]
        for _ in range(2)
    ]
    done, accepted, state = run_core(cluster, plan, horizon=1e5)
    # Everything accepted completed (the horizon is long), with exactly the tokens it asked for.
    n_accepted = sum(sum(a) for a in accepted)
    assert len(done) == n_accepted
    assert state.running.sum() == 0
    assert state.waiting.sum() == 0
    requested = {(b, r[1]): r[3] for b, p in enumerate(plan) for r in p}
    for b, req, out in zip(done.env, done.request, done.output):
        assert requested[(int(b), int(req))] == out
    assert np.all(done.first_token >= done.arrival)
    assert np.all(done.finish >= done.first_token)
    assert np.all(np.isfinite(done.e2e_s))
    assert np.all(state.kv_used == 0)


def calibration_script() -> ModuleType:
    """scripts/llm_calibration.py, which holds the published measurements and compares the model with them."""
    return load_script("llm_calibration")


def test_latency_model_matches_published_measurements() -> None:
    rows = calibration_script().compare_with_published()
    assert len(rows) >= 12
    errors = np.array([r["error"] for r in rows])
    worst = rows[int(np.argmax(np.abs(errors)))]
    assert np.all(np.abs(errors) < 0.2), f"worst: {worst}"
    assert np.mean(np.abs(errors)) < 0.1


def test_flat_views_are_the_state_arrays_without_copies() -> None:
    # The simulator runs on the state with its (B, N) axes merged: every field must be a view of the original.
    cluster = LLMCluster([preset("llama2-7b-a100")] * 3, slots=5)
    state = cluster.new_state(4)
    flat = state.flat()
    assert state.flat() is flat  # made once, kept
    copied = copy.deepcopy(state)  # a copy's views are made afresh, over the copy's arrays
    assert np.shares_memory(copied.flat().queue, copied.queue)
    assert not np.shares_memory(copied.flat().queue, state.queue)
    for original, view in zip(tree.arrays(state), tree.arrays(flat), strict=True):
        assert view.base is not None
        assert np.shares_memory(original, view)
        assert view.shape == (12, *original.shape[2:])
        np.testing.assert_array_equal(view.reshape(original.shape), original)
    flat.clock[7] = 2.5
    flat.activity.busy_s[7] = 1.5
    flat.status[7, 4] = RUNNING
    assert state.clock[2, 1] == 2.5
    assert state.activity.busy_s[2, 1] == 1.5
    assert state.status[2, 1, 4] == RUNNING


def test_preset_constants_are_derived_from_the_model_shape() -> None:
    m = llm.LLAMA2_7B
    assert m.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288
    assert llm.LLAMA2_70B.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    a100_7b = preset("llama2-7b-a100")
    assert a100_7b.kv_capacity_tokens == pytest.approx((72e9 - 2e9 - 13.48e9) / 524_288, rel=2e-3)
    a100_70b = preset("llama2-70b-4xa100")
    assert a100_70b.kv_capacity_tokens == pytest.approx((4 * 70e9 - 137.96e9) / 327_680, rel=2e-3)
    # Prefill is linear in prompt length (compute-bound): a + b x tokens, b = 2 params / achieved FLOP/s.
    t1, t2 = a100_7b.prefill_time(1024), a100_7b.prefill_time(2048)
    slope = 2 * 6.74e9 / (312e12 * 0.68)
    assert (t2 - t1) / 1024 == pytest.approx(slope, rel=0.08)  # attention adds a little
    # Decode is memory-bound: nearly flat in batch size at small batches.
    assert a100_7b.decode_time(16, 16 * 500) < 1.3 * a100_7b.decode_time(1, 500)


def test_lower_frequency_stretches_prefill_far_more_than_decode() -> None:
    spec = preset("llama2-7b-a100")
    coef = spec.coefficients()
    low = 1110 / 1410
    prefill = [llm.iteration_time(coef, 2048, 0, 2048 * 2049 / 2, 2048, f).total_s for f in (1.0, low)]
    decode = [llm.iteration_time(coef, 0, 8, 8 * 500, 8 * 500, f).total_s for f in (1.0, low)]
    assert prefill[1] / prefill[0] > 1.2
    assert decode[1] / decode[0] < 1.05


def test_slo_throughput_is_feasible_monotone_and_sustainable() -> None:
    spec = preset("llama2-7b-a100")
    strict = slo_throughput(spec, prompt_tokens=1000, output_tokens=200, ttft_slo_s=0.4, tbt_slo_s=0.05)
    loose = slo_throughput(spec, prompt_tokens=1000, output_tokens=200, ttft_slo_s=0.4, tbt_slo_s=0.1)
    free = llm.max_throughput(spec, prompt_tokens=1000, output_tokens=200)
    assert 0 < strict.tokens_per_s < loose.tokens_per_s <= free.tokens_per_s
    assert loose.tbt_s <= 0.1
    assert loose.ttft_s <= 0.4
    assert free.limited_by in ("kv", "max_batch")
    # A bigger, faster GPU serves more; a model that does not fit is refused with a clear message.
    h100 = slo_throughput(preset("llama2-7b-h100"), prompt_tokens=1000, output_tokens=200)
    assert h100.tokens_per_s > loose.tokens_per_s
    big = llm.ModelSpec.llama_like(70e9)
    assert 70 <= big.layers <= 90
    assert big.hidden == 8192
    with pytest.raises(ValueError, match="leaves no KV cache"):
        InstanceSpec(gpu=llm.A100_80GB, model=big, num_gpus=1)
    assert llm.instance(big, llm.A100_80GB).num_gpus == 4
    # An arbitrary GPU (DCLifecycle's roadmap) works too.
    future = GpuSpec(name="future", peak_tflops=2500.0, hbm_tbps=8.0, memory_gb=288.0, link_gbps=900.0)
    assert slo_throughput(llm.instance(big, future), prompt_tokens=1000, output_tokens=200).tokens_per_s > 0
    # Simulated at 90% of that rate with the same requests, one instance keeps its batch and mean TBT near the SLO.
    rate = 0.9 * loose.requests_per_s
    cluster = LLMCluster([dataclasses.replace(spec, scheduler=SchedulerSpec(chunked_prefill=True))], slots=256)
    state = cluster.new_state(1)
    n = 1500
    arrivals = np.arange(n) / rate
    parts = []
    # One-second steps, arrivals of the coming second enqueued ahead of the clock (GPUPowerCap's pattern).
    for t in range(int(arrivals[-1]) + 1):
        parts.append(cluster.advance(state, np.array([float(t)])))
        new = np.flatnonzero((arrivals >= t) & (arrivals < t + 1))
        ok = cluster.enqueue(
            state, np.zeros(new.size, np.int64), np.zeros(new.size, np.int64), new,
            np.full(new.size, 1000), np.full(new.size, 200), arrivals[new],
        )  # fmt: skip
        assert ok.all()
    parts.append(cluster.advance(state, np.array([arrivals[-1] + 200.0])))
    done = llm.Completions.concat(parts)
    assert len(done) == n
    steady = done.arrival > arrivals[-1] / 3
    assert np.mean(done.tbt_s[steady]) < 0.1 * 1.25
    assert np.percentile(done.e2e_s[steady], 90) < 200 * 0.1 * 2.5


def test_activity_accounts_for_every_token_and_second() -> None:
    spec = preset("llama2-7b-a100")
    cluster = LLMCluster([spec], slots=64)
    state = cluster.new_state(2)
    rng = np.random.default_rng(3)
    n = 40
    prompts, outputs = rng.integers(10, 2000, n), rng.integers(1, 300, n)
    envs = np.repeat([0, 1], n // 2)
    cluster.enqueue(state, envs, np.zeros(n, np.int64), np.arange(n), prompts, outputs, np.zeros(n))
    done = cluster.advance(state, np.array([1e4, 1e4]))
    act = cluster.take_activity(state)
    assert len(done) == n
    assert act.preemptions.sum() == 0
    for b in range(2):
        mine = envs == b
        assert act.prefill_tokens[b, 0] == prompts[mine].sum()
        assert act.decode_tokens[b, 0] == (outputs[mine] - 1).sum()
        last = done.finish[done.env == b].max()
        assert act.busy_s[b, 0] == pytest.approx(last, rel=1e-9)  # busy from t=0 to the last completion
        assert act.compute_s[b, 0] <= act.busy_s[b, 0]
    assert cluster.take_activity(state).busy_s.sum() == 0.0  # taking zeroes the accumulators


def test_arrivals_ahead_of_the_clock_wait_for_their_time() -> None:
    cluster = LLMCluster([preset("llama2-7b-a100")], slots=8)
    state = cluster.new_state(1)
    cluster.enqueue(state, np.array([0]), np.array([0]), np.array([0]), np.array([100]), np.array([5]), np.array([3.0]))
    done = cluster.advance(state, np.array([10.0]))
    assert len(done) == 1
    assert done.first_token[0] > 3.0
    assert done.ttft_s[0] == pytest.approx(float(preset("llama2-7b-a100").prefill_time(100)), rel=1e-9)


def test_bad_specs_and_requests_are_named() -> None:
    with pytest.raises(ValueError, match="peak_tflops must be positive"):
        GpuSpec(name="x", peak_tflops=0.0, hbm_tbps=1.0, memory_gb=1.0)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        llm.ModelSpec(name="m", params=1e9, layers=2, hidden=256, heads=6, kv_heads=4, head_dim=64)
    with pytest.raises(ValueError, match="needs link_gbps"):
        InstanceSpec(
            gpu=GpuSpec(name="pcie", peak_tflops=100.0, hbm_tbps=1.0, memory_gb=80.0), model=llm.LLAMA2_7B, num_gpus=2
        )
    with pytest.raises(ValueError, match="did you mean 'llama2-7b-a100'"):
        preset("llama2-7b-a10")
    cluster = LLMCluster([preset("llama2-7b-a100")], slots=4)
    state = cluster.new_state(1)
    with pytest.raises(ValueError, match="at least one prompt token"):
        cluster.enqueue(
            state, np.array([0]), np.array([0]), np.array([0]), np.array([0]), np.array([3]), np.array([0.0])
        )
