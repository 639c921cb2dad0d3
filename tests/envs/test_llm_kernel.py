"""The compiled LLM instance kernel against the numpy reference it replaces: bit for bit."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

import cloudgym  # noqa: F401  (registers the ids)
from cloudgym.envs import kernels
from cloudgym.envs.core import llm, tree
from cloudgym.envs.core.llm import InstanceSpec, LLMCluster, SchedulerSpec, kernel, preset
from tests.golden.trajectories import digest

from .small_configs import GPU_SMALL
from .test_llm_core import check_state_invariants, tight_instance


def mixed_instances() -> list[InstanceSpec]:
    """Whole and chunked prefill, a tight KV cache (preemption), a small token budget, a roomy A100."""
    return [
        tight_instance(chunked=False),
        tight_instance(chunked=True, max_batch=8, max_tokens=512),
        tight_instance(chunked=True, max_batch=32, max_tokens=2048),
        llm.InstanceSpec(
            gpu=llm.A100_80GB,
            model=llm.LLAMA2_7B,
            scheduler=SchedulerSpec(chunked_prefill=False, max_batch_requests=6, max_batched_tokens=4096),
        ),
    ]


def assert_same_completions(a: llm.Completions, b: llm.Completions) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"completions differ in {name}"


def assert_same_state(a: llm.LLMClusterState, b: llm.LLMClusterState) -> None:
    for x, y in zip(tree.arrays(a), tree.arrays(b), strict=True):
        assert x.dtype == y.dtype
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_kernel_equals_numpy_on_random_clusters(seed: int) -> None:
    """Random arrivals (some ahead of the clock), tags, clocks, horizons that lag: same state and completions."""
    rng = np.random.default_rng(seed)
    specs = mixed_instances()
    b, n, slots = 3, len(specs), 12
    fast = LLMCluster(specs, slots=slots, use_kernel=True)
    slow = LLMCluster(specs, slots=slots, use_kernel=False)
    state = fast.new_state(b)
    state.clock[:] = rng.uniform(0.0, 0.5, (b, n))
    ref = copy.deepcopy(state)
    now = np.zeros(b)
    request = 0
    seen = {"preempted": 0.0, "partial": False, "completed": 0}
    for step in range(60):
        m = int(rng.integers(0, 7))
        env_ids = rng.integers(0, b, m)
        args = (
            env_ids,
            rng.integers(0, n, m),
            np.arange(request, request + m),
            rng.integers(1, 2500, m),
            rng.integers(1, 400, m),
            now[env_ids] + rng.uniform(-0.2, 1.5, m),
        )
        tags = rng.integers(0, 5, m)
        estimate = rng.uniform(0, 500, m)
        request += m
        ok = fast.enqueue(state, *args, tag=tags, estimate=estimate)
        np.testing.assert_array_equal(ok, slow.enqueue(ref, *args, tag=tags, estimate=estimate))
        freq = rng.choice([1.0, 0.8, 0.55], (b, n))
        state.freq_scale[:] = freq
        ref.freq_scale[:] = freq
        now = now + rng.uniform(0.0, 1.0, b)
        until = np.where(rng.random(b) < 0.15, -np.inf, now)  # a row that does not advance this time
        seen["partial"] |= bool((state.partial >= 0).any())
        got, want = fast.advance(state, until), slow.advance(ref, until)
        assert_same_completions(got, want)
        assert_same_state(state, ref)
        check_state_invariants(fast, state)
        seen["completed"] += len(got)
        if step % 9 == 4:
            taken, taken_ref = fast.take_activity(state), slow.take_activity(ref)
            assert_same_state(taken, taken_ref)  # type: ignore[arg-type]
            seen["preempted"] += float(taken.preemptions.sum())
    final = np.full(b, now.max() + 200.0)
    assert_same_completions(fast.advance(state, final), slow.advance(ref, final))
    assert_same_state(state, ref)
    seen["preempted"] += float(state.activity.preemptions.sum())
    # The paths the kernel reimplements were taken: preemption, part-prefilled prompts, completions.
    assert seen["preempted"] > 0
    assert seen["partial"]
    assert seen["completed"] > 0


def test_kernel_pow_is_numpys() -> None:
    """The roofline's p-norm needs numpy's float64 pow, bit for bit (SVML on AVX-512 machines, else libm)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.random(20000), 1.0 + rng.random(20000)])
    p = np.concatenate([np.full(20000, 2.0), np.full(20000, 0.5)])
    np.testing.assert_array_equal(kernel._pow_many(x, p, kernel.pow_mode()), np.power(x, p))


def test_stuck_instance_raises_the_same_error_on_both_paths() -> None:
    """A queue head that can never be admitted with nothing running is a bug worth naming, on both paths."""
    messages = []
    for use_kernel in (True, False):
        cluster = LLMCluster([preset("llama2-7b-a100")], slots=4, use_kernel=use_kernel)
        state = cluster.new_state(2)
        cluster.enqueue(state, np.array([1]), np.array([0]), np.array([7]), np.array([100]), np.array([5]), np.zeros(1))
        state.kv_used[1, 0] = cluster.capacity_blocks[0]  # blocks held by no request: admission can never fit
        with pytest.raises(RuntimeError, match="has work but can run nothing") as err:
            cluster.advance(state, np.array([1.0, 1.0]))
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "instance 0 of sub-env 1" in messages[0]


def test_kernel_switch() -> None:
    spec = [preset("llama2-7b-a100")]
    assert LLMCluster(spec, slots=4).use_kernel
    with kernels.numpy_reference():
        assert not LLMCluster(spec, slots=4).use_kernel
        assert LLMCluster(spec, slots=4, use_kernel=True).use_kernel


def _rollout(env_id: str, kwargs: dict, steps: int) -> list[str]:
    """Digests (bytes of every array) of each step's observation, reward, flags and info."""
    env = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    env.action_space.seed(11)
    obs, _ = env.reset(seed=5)
    out = [digest(obs)]
    for _ in range(steps):
        out.append(digest(env.step(env.action_space.sample())))
    env.close()
    return out


@pytest.mark.parametrize(
    ("env_id", "kwargs", "steps"),
    [
        ("LLMRouter-v0", {"scenario": "chunked", "requests_per_episode": 40}, 90),
        ("LLMRouter-v0", {"scenario": "small"}, 60),
        ("GPUPowerCap-v0", GPU_SMALL, 30),
    ],
)
def test_envs_step_alike_with_kernel_and_numpy(env_id: str, kwargs: dict, steps: int) -> None:
    with kernels.numpy_reference():
        want = _rollout(env_id, kwargs, steps)
    got = _rollout(env_id, kwargs, steps)
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want)):
        assert a == b, f"{env_id}: step {t} differs"


def test_enqueue_kernel_equals_numpy_on_repeats_full_queues_and_misfits() -> None:
    """Repeated pairs queue in order; a full instance and a context larger than the KV cache refuse, on both paths."""
    specs = [tight_instance(chunked=False), preset("llama2-7b-a100")]
    states, results = [], []
    for use_kernel in (True, False):
        cluster = LLMCluster(specs, slots=4, use_kernel=use_kernel)
        state = cluster.new_state(2)
        env_ids = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0])
        inst = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0])
        prompt = np.array([10, 20, 30, 40, 50, 60, 70, 80, 9000])  # the last never fits the tight GPU's cache
        ok = cluster.enqueue(state, env_ids, inst, np.arange(9), prompt, np.full(9, 5), np.linspace(0, 1, 9))
        results.append(ok)
        states.append(state)
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].tolist() == [True, True, True, True, True, True, False, True, False]
    assert_same_state(states[0], states[1])
