"""ResourcePool, Placements and the best-fit allocator against slow, obvious references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs.core.cluster import Placements, ResourcePool, best_fit, place_sequentially


def reference_best_fit(capacity: np.ndarray, used: np.ndarray, demand: np.ndarray) -> int:
    """One cluster: the fitting node with the least room left in resource 0, lowest index on ties."""
    best, best_room = -1, np.inf
    for node in range(capacity.shape[1]):
        if all(used[r, node] + demand[r] <= capacity[r, node] + 1e-9 for r in range(capacity.shape[0])):
            room = capacity[0, node] - used[0, node] - demand[0]
            if room < best_room:
                best, best_room = node, room
    return best


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    envs=st.integers(1, 6),
    nodes=st.integers(1, 5),
    resources=st.integers(1, 3),
    arrivals=st.integers(1, 6),
)
def test_sequential_best_fit_matches_reference(seed: int, envs: int, nodes: int, resources: int, arrivals: int) -> None:
    rng = np.random.default_rng(seed)
    pool = ResourcePool.zeros(envs, resources, nodes)
    capacity = rng.integers(2, 10, size=(envs, resources, nodes)).astype(float)
    pool.reset_envs(np.arange(envs), capacity)
    table = Placements.empty(envs, resources, arrivals)
    demand = rng.integers(1, 6, size=(envs, arrivals, resources)).astype(float)
    valid = rng.random((envs, arrivals)) < 0.8
    end = rng.integers(1, 5, size=(envs, arrivals)).astype(float)
    item = np.tile(np.arange(arrivals), (envs, 1))
    chosen = place_sequentially(pool, table, demand, valid, end, item)

    for b in range(envs):
        used = np.zeros((resources, nodes))
        for k in range(arrivals):
            expected = reference_best_fit(capacity[b], used, demand[b, k]) if valid[b, k] else -1
            assert chosen[b, k] == expected
            if expected >= 0:
                used[:, expected] += demand[b, k]
        np.testing.assert_allclose(pool.used[b], used)
    np.testing.assert_allclose(pool.used, table.usage(nodes))
    assert np.all(pool.used <= pool.capacity + 1e-9)

    # Departures return exactly what arrived, item by item.
    for now in range(1, 6):
        envs_left, items_left, nodes_left = table.expire(pool, np.full(envs, float(now)))
        for b, k, n in zip(envs_left, items_left, nodes_left):
            assert chosen[b, k] == n
            assert end[b, k] <= now
        np.testing.assert_allclose(pool.used, table.usage(nodes), atol=1e-9)
    np.testing.assert_allclose(pool.used, 0.0, atol=1e-9)
    assert np.all(table.node == -1)


def test_limit_allows_oversubscription_beyond_capacity() -> None:
    pool = ResourcePool.zeros(1, 1, 2)
    pool.reset_envs(np.array([0]), np.array([[[4.0, 4.0]]]))
    limit = pool.capacity * 1.5
    assert best_fit(pool, np.array([[5.0]])).tolist() == [-1]
    assert best_fit(pool, np.array([[5.0]]), limit).tolist() == [0]


def test_eligible_restricts_candidates() -> None:
    pool = ResourcePool.zeros(2, 1, 3)
    pool.reset_envs(np.arange(2), np.full((2, 1, 3), 8.0))
    eligible = np.array([[False, False, True], [False, False, False]])
    assert best_fit(pool, np.full((2, 1), 1.0), eligible=eligible).tolist() == [2, -1]


def test_full_slot_table_raises_instead_of_dropping() -> None:
    pool = ResourcePool.zeros(1, 1, 1)
    pool.reset_envs(np.array([0]), np.array([[[100.0]]]))
    table = Placements.empty(1, 1, 2)
    one = np.array([0])
    table.place(pool, np.array([0, 0]), np.array([0, 0]), np.ones((2, 1)), np.ones(2), np.arange(2))
    with pytest.raises(RuntimeError, match="more live items than the 2 slots"):
        table.place(pool, one, one, np.ones((1, 1)), np.ones(1), one)


def test_ensure_slots_grows_and_keeps_items() -> None:
    pool = ResourcePool.zeros(2, 1, 1)
    pool.reset_envs(np.arange(2), np.full((2, 1, 1), 10.0))
    table = Placements.empty(2, 1, 1)
    table.place(pool, np.array([1]), np.array([0]), np.array([[3.0]]), np.array([5.0]), np.array([7]))
    table.ensure_slots(4)
    assert table.slots == 4
    assert table.item[1].tolist() == [7, -1, -1, -1]
    np.testing.assert_allclose(table.usage(1), pool.used)


def test_vacate_frees_the_listed_slots_as_expire_does() -> None:
    rng = np.random.default_rng(3)
    tables, pools = [], []
    for _ in range(2):
        pool = ResourcePool.zeros(3, 2, 4)
        pool.reset_envs(np.arange(3), np.full((3, 2, 4), 100.0))
        table = Placements.empty(3, 2, 6)
        tables.append(table)
        pools.append(pool)
    demand = rng.integers(1, 5, size=(3, 5, 2)).astype(float)
    end = rng.integers(1, 4, size=(3, 5)).astype(float)
    item = np.tile(np.arange(5), (3, 1))
    for pool, table in zip(pools, tables):
        place_sequentially(pool, table, demand, np.ones((3, 5), bool), end, item)
    now = np.array([1.0, 2.0, 3.0])
    env_ids, items, nodes = tables[0].expire(pools[0], now)
    due_env, due_slot = np.nonzero(tables[1].end <= now[:, None])
    vacated_items, vacated_nodes = tables[1].vacate(pools[1], due_env, due_slot)
    assert env_ids.size > 0
    np.testing.assert_array_equal(due_env, env_ids)
    np.testing.assert_array_equal(vacated_items, items)
    np.testing.assert_array_equal(vacated_nodes, nodes)
    np.testing.assert_array_equal(pools[1].used, pools[0].used)
    for field in ("node", "item", "demand", "end"):
        np.testing.assert_array_equal(getattr(tables[1], field), getattr(tables[0], field))
    np.testing.assert_allclose(pools[1].used, tables[1].usage(4))
