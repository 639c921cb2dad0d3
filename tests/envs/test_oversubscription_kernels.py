"""The compiled kernels of Oversubscription-v0 and the cluster model against their numpy references, bit for bit.

Each kernel's numpy implementation stays as the slow reference (``CLOUDGYM_KERNELS=numpy`` runs it
everywhere); these tests run both in one process and compare every bit they produce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs import kernels
from cloudgym.envs.core import tree
from cloudgym.envs.core.cluster import Placements, ResourcePool, place_sequentially, place_sequentially_numpy
from cloudgym.envs.oversubscription import OversubscriptionConfig, OversubscriptionCore
from cloudgym.envs.workloads import vm


def _episode(config: OversubscriptionConfig, seed: int, b: int, hours: int, on: bool) -> list[np.ndarray]:
    """Everything a run shows and keeps: per step obs, reward and info, and the whole state at the end.

    Sub-env 0 restarts after two hours, so the batch also steps sub-envs at different hours.
    """
    kernels.set_enabled(on)
    try:
        core = OversubscriptionCore(b, config)
        core.seed(seed)
        core.reset_envs(np.arange(b))
        rng = np.random.default_rng(seed)
        out = [core.observe()]
        for h in range(hours):
            if h == 2:
                core.reset_envs(np.array([0]))
            reward, _, _, info = core.step(rng.integers(0, len(config.ratios), (b, config.num_nodes)))
            out += [reward, core.observe(), *(np.asarray(v) for v in info.values() if not isinstance(v, dict))]
        out += list(tree.batched((core.stats, core.state), b))
        return out
    finally:
        kernels.set_enabled(True)


def _assert_same_bits(kernel: list[np.ndarray], reference: list[np.ndarray]) -> None:
    assert len(kernel) == len(reference)
    for i, (a, r) in enumerate(zip(kernel, reference)):
        assert a.dtype == r.dtype, f"array {i}"
        assert a.shape == r.shape, f"array {i}"
        assert a.tobytes() == r.tobytes(), f"array {i}: {np.count_nonzero(a != r)} entries differ"


BUSY = {"node_cores": 16, "start_level": 3, "lifetime_util_correlation": 0.6, "load_factor": 4.0}


@pytest.mark.parametrize(
    ("kwargs", "seed"),
    [
        ({"hours": 5}, 1),
        ({"hours": 5, "num_nodes": 4, **BUSY}, 2),
        ({"hours": 5, "num_nodes": 9, **BUSY, "workload_hints": True, "hint_error_rate": 0.2}, 3),
        ({"hours": 4, "num_nodes": 40, "workload_hints": True}, 4),
        ({"scenario": "toy"}, 5),
    ],
)
def test_kernel_trajectories_equal_numpy(kwargs: dict[str, Any], seed: int) -> None:
    config = (
        OversubscriptionConfig.scenario(kwargs["scenario"])
        if "scenario" in kwargs
        else OversubscriptionConfig(**kwargs)
    )
    hours = min(config.hours, 5)
    kernel = _episode(config, seed, 3, hours, on=True)
    _assert_same_bits(kernel, _episode(config, seed, 3, hours, on=False))


def test_kernel_trajectories_equal_numpy_on_a_replayed_trace(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    inst = vm.sample_vm_instance(
        rng, physical_cores=64, load_factor=3.0, episode_ticks=3 * vm.TICKS_PER_DAY, lifetime_util_correlation=0.6
    )
    vm.write_vm_trace(tmp_path, inst, rng, episode_ticks=3 * vm.TICKS_PER_DAY)
    config = OversubscriptionConfig(num_nodes=4, **BUSY, workload="trace", trace_dir=str(tmp_path), hours=6)
    _assert_same_bits(_episode(config, 5, 2, 6, on=True), _episode(config, 5, 2, 6, on=False))


def test_numpy_reference_is_selectable() -> None:
    assert kernels.enabled()
    with kernels.numpy_reference():
        assert not kernels.enabled()
    assert kernels.enabled()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), envs=st.integers(1, 5), nodes=st.integers(1, 7), arrivals=st.integers(1, 12))
def test_placement_kernel_equals_numpy(seed: int, envs: int, nodes: int, arrivals: int) -> None:
    """Random pools with items already placed (gaps in the slot table), then a batch of arrivals."""
    results = []
    for place in (place_sequentially, place_sequentially_numpy):
        r = np.random.default_rng(seed)
        pool = ResourcePool.zeros(envs, 2, nodes)
        pool.reset_envs(np.arange(envs), r.integers(4, 12, size=(envs, 2, nodes)).astype(float))
        table = Placements.empty(envs, 2, 2 * arrivals + 4)
        for round_ in range(3):
            demand = r.uniform(0.5, 4.0, size=(envs, arrivals, 2))
            valid = r.random((envs, arrivals)) < 0.8
            end = r.integers(round_ + 1, round_ + 4, size=(envs, arrivals)).astype(float)
            item = r.integers(0, 100, size=(envs, arrivals))
            limit = pool.capacity * r.choice([1.0, 1.5])
            slots = np.full((envs, arrivals), -1, np.int64)
            chosen = place(pool, table, demand, valid, end, item, limit, slots_out=slots)
            results += [chosen, slots, pool.used.copy(), table.node.copy(), table.demand.copy(), table.end.copy()]
            table.expire(pool, np.full(envs, float(round_ + 1)))
    half = len(results) // 2
    _assert_same_bits(results[:half], results[half:])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(["vms", "rows", "outer", "one"]))
def test_utilisation_kernel_equals_numpy(seed: int, shape: str) -> None:
    rng = np.random.default_rng(seed)
    inst = vm.sample_vm_instance(rng, physical_cores=96, load_factor=2.0, episode_ticks=vm.TICKS_PER_DAY)
    p = inst.util
    columns = [p.log_base, p.sigma, p.amp_cos, p.amp_sin, p.burst_threshold, p.burst_level, p.vm_key, p.dep_key]
    tick: int | np.ndarray = int(rng.integers(-5000, 5000))
    if shape == "rows":  # a tick per VM
        tick = rng.integers(-5000, 5000, size=inst.num_vms)
    elif shape == "outer":  # (1, V, 1) parameters x (1, 1, W) ticks, as the history and look-ahead use
        columns = [c[None, :, None] for c in columns]
        tick = rng.integers(-5000, 5000) + np.arange(30)[None, None, :]
    elif shape == "one":  # a single VM, the shape the trace writer asks for
        columns = [c[:1] for c in columns]
    kernel = vm.utilisation_kernel(*columns, tick)
    reference = vm.utilisation_numpy(*columns, tick)
    assert kernel is not None
    _assert_same_bits([kernel], [reference])


def test_numpy_sum_adds_in_numpys_order() -> None:
    rng = np.random.default_rng(0)
    for n in [*range(40), 127, 128, 129, 300, 1000]:
        a = rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 4, n)
        assert kernels.numpy_sum(a, 0, n) == a.sum(), n


def test_daily_terms_depend_on_the_tick_of_the_day_alone() -> None:
    cos_day, sin_day = vm.daily_tables()
    ticks = np.arange(-3 * vm.TICKS_PER_DAY, 3 * vm.TICKS_PER_DAY)
    c, s = vm.daily_terms(ticks)
    np.testing.assert_array_equal(c, cos_day[ticks % vm.TICKS_PER_DAY])
    np.testing.assert_array_equal(s, sin_day[ticks % vm.TICKS_PER_DAY])
    for t in (-7, 0, 100, 5000):
        assert vm.daily_terms(t) == (cos_day[t % vm.TICKS_PER_DAY], sin_day[t % vm.TICKS_PER_DAY])
