"""Nodes x resources: capacity, usage, placement and release, for B clusters at once.

Layouts are resource-major, ``(B, R, N)``: a fit test reduces over the small
resource axis by combining R whole ``(B, N)`` slabs, which numpy does fast,
instead of reducing a tiny last axis.

* :class:`ResourcePool`: what each node has (``capacity``) and what placed
  items hold (``used``); placement limits may differ from capacity (a node
  oversubscribed at ratio r accepts up to r x its cores).
* :class:`Placements`: items (VMs, jobs) that hold a demand on a node until a
  departure time, in a slot table, so that release is exact.
* :func:`best_fit` / :func:`place_sequentially`: the batched allocator. Items
  arriving in the same step are placed one rank at a time (rank k of every
  sub-env in one call), so each placement sees the previous one's usage, as a
  real allocator would.

:func:`place_sequentially` runs a compiled kernel (:mod:`cloudgym.envs.kernels`)
that places each sub-env's items in one pass: a best fit over the nodes per
item (:func:`best_fit_node`, which env kernels call too) and the first free
slot kept as a pointer, moved on past occupied slots, instead of a scan of
the whole slot table per rank. :func:`place_sequentially_numpy` is the numpy
reference it is tested against (same nodes, slots and usage, bit for bit).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cloudgym.envs import kernels

# Placement compares sums of float demands against limits; this much slack
# absorbs rounding so that an item that fits exactly is not rejected.
FIT_TOLERANCE = 1e-9


@dataclasses.dataclass
class ResourcePool:
    """B clusters of N nodes with R resources each."""

    capacity: np.ndarray  # (B, R, N) float64, physical amount of each resource per node (cores, GB, W)
    used: np.ndarray  # (B, R, N) float64, amount held by placed items, same units

    @classmethod
    def zeros(cls, num_envs: int, num_resources: int, num_nodes: int) -> ResourcePool:
        shape = (num_envs, num_resources, num_nodes)
        return cls(capacity=np.zeros(shape), used=np.zeros(shape))

    @property
    def free(self) -> np.ndarray:
        """(B, R, N) capacity not held by any item (negative on an oversubscribed node)."""
        return self.capacity - self.used

    def fits(self, demand: np.ndarray, limit: np.ndarray | None = None) -> np.ndarray:
        """(B, N) whether ``demand`` (B, R) fits on each node under ``limit`` (B, R, N; default capacity)."""
        lim = self.capacity if limit is None else limit
        room = lim - self.used - demand[:, :, None]
        return np.logical_and.reduce(room >= -FIT_TOLERANCE, axis=1)

    def allocate(self, env_ids: np.ndarray, nodes: np.ndarray, demand: np.ndarray) -> None:
        """Add ``demand`` (k, R) to node ``nodes[j]`` of sub-env ``env_ids[j]``; repeated pairs add up."""
        for r in range(self.used.shape[1]):
            np.add.at(self.used[:, r, :], (env_ids, nodes), demand[:, r])

    def release(self, env_ids: np.ndarray, nodes: np.ndarray, demand: np.ndarray) -> None:
        """Return ``demand`` (k, R) held on the listed nodes."""
        for r in range(self.used.shape[1]):
            np.subtract.at(self.used[:, r, :], (env_ids, nodes), demand[:, r])
        # Rounding of many adds and subtracts must not leave a node with negative usage.
        np.maximum(self.used, 0.0, out=self.used)

    def reset_envs(self, env_ids: np.ndarray, capacity: np.ndarray) -> None:
        """Give the listed sub-envs fresh nodes with ``capacity`` (k, R, N) and nothing placed."""
        self.capacity[env_ids] = capacity
        self.used[env_ids] = 0.0


def best_fit(
    pool: ResourcePool, demand: np.ndarray, limit: np.ndarray | None = None, eligible: np.ndarray | None = None
) -> np.ndarray:
    """(B,) node where ``demand`` (B, R) fits leaving the least room in resource 0; -1 when none fits.

    Best fit (tightest node first) packs items onto few nodes and leaves whole
    nodes free for large items; ties go to the lowest node index, so the
    choice is deterministic. ``eligible`` (B, N) restricts the candidates.
    """
    lim = pool.capacity if limit is None else limit
    # The room each node would have left, per resource: what pool.fits tests, computed once for both uses.
    room = lim - pool.used - demand[:, :, None]
    ok = np.logical_and.reduce(room >= -FIT_TOLERANCE, axis=1)
    if eligible is not None:
        ok &= eligible
    room_after = np.where(ok, room[:, 0, :], np.inf)
    node = np.argmin(room_after, axis=1)
    return np.where(ok.any(axis=1), node, -1)


@dataclasses.dataclass
class Placements:
    """A slot table of items that hold resources on a node until they leave."""

    node: np.ndarray  # (B, M) int64, node the item in each slot runs on; -1 marks a free slot
    item: np.ndarray  # (B, M) int64, the env's id of the item (e.g. its index in the instance); -1 when free
    demand: np.ndarray  # (B, R, M) float64, what the item holds, in the pool's units
    end: np.ndarray  # (B, M) float64, time the item leaves, in the env's clock unit

    @classmethod
    def empty(cls, num_envs: int, num_resources: int, slots: int) -> Placements:
        return cls(
            node=np.full((num_envs, slots), -1, np.int64),
            item=np.full((num_envs, slots), -1, np.int64),
            demand=np.zeros((num_envs, num_resources, slots)),
            end=np.full((num_envs, slots), np.inf),
        )

    @property
    def slots(self) -> int:
        return self.node.shape[1]

    def ensure_slots(self, slots: int) -> None:
        """Grow the table to at least ``slots`` per sub-env (only between steps: at reset)."""
        extra = slots - self.slots
        if extra <= 0:
            return
        b, r, _ = self.demand.shape
        self.node = np.concatenate([self.node, np.full((b, extra), -1, np.int64)], axis=1)
        self.item = np.concatenate([self.item, np.full((b, extra), -1, np.int64)], axis=1)
        self.demand = np.concatenate([self.demand, np.zeros((b, r, extra))], axis=2)
        self.end = np.concatenate([self.end, np.full((b, extra), np.inf)], axis=1)

    def clear_envs(self, env_ids: np.ndarray) -> None:
        self.node[env_ids] = -1
        self.item[env_ids] = -1
        self.demand[env_ids] = 0.0
        self.end[env_ids] = np.inf

    def place(
        self,
        pool: ResourcePool,
        env_ids: np.ndarray,
        nodes: np.ndarray,
        demand: np.ndarray,
        end: np.ndarray,
        item: np.ndarray,
    ) -> np.ndarray:
        """Record items (one per entry; env_ids may repeat) and charge their demand (k, R) to the pool.

        Returns the slot of each item. Raises when a sub-env has more live
        items than slots: the table is sized at reset from the instance's
        largest possible concurrency, so this is a bug, never a silent drop.
        """
        k = env_ids.size
        if k == 0:
            return np.zeros(0, np.int64)
        if k == 1 or bool((env_ids[1:] > env_ids[:-1]).all()):
            rank = np.zeros(k, np.int64)  # increasing ids (what place_sequentially passes): one item per sub-env
        else:
            order = np.argsort(env_ids, kind="stable")
            sorted_envs = env_ids[order]
            first = np.searchsorted(sorted_envs, sorted_envs, side="left")
            rank = np.empty(k, np.int64)
            rank[order] = np.arange(k) - first
        free = self.node[env_ids] < 0
        if not rank.any():
            # One item per sub-env (what place_sequentially does): the first free slot, without a sort.
            slot = np.argmax(free, axis=1)
            full = ~free[np.arange(k), slot]
            if full.any():
                bad = int(env_ids[np.argmax(full)])
                raise RuntimeError(f"sub-env {bad}: more live items than the {self.slots} slots sized at reset")
        else:
            # Free slots first, in slot order, for each involved sub-env.
            free_first = np.argsort(~free, axis=1, kind="stable")
            n_free = free.sum(axis=1)
            if np.any(rank >= n_free):
                bad = int(env_ids[np.argmax(rank >= n_free)])
                raise RuntimeError(f"sub-env {bad}: more live items than the {self.slots} slots sized at reset")
            slot = free_first[np.arange(k), rank]
        self.node[env_ids, slot] = nodes
        self.item[env_ids, slot] = item
        self.demand[env_ids, :, slot] = demand
        self.end[env_ids, slot] = end
        pool.allocate(env_ids, nodes, demand)
        return slot

    def expire(self, pool: ResourcePool, now: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Release every item whose end <= now (B,); return (env_ids, items, nodes) of the departed."""
        leaving = self.end <= now[:, None]  # a free slot's end is +inf, so it never leaves
        # Row-major (env, slot) pairs, as np.nonzero gives them; flatnonzero is ~10x faster on a wide table.
        env_ids, slots = np.divmod(np.flatnonzero(leaving), leaving.shape[1])
        items, nodes = self.vacate(pool, env_ids, slots)
        return env_ids, items, nodes

    def vacate(self, pool: ResourcePool, env_ids: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Free the listed occupied slots and return their demand to the pool; (items, nodes) they held.

        For an env that finds its departures itself (e.g. from its own copy
        of the end times); :meth:`expire` finds them by scanning the table.
        """
        nodes = self.node[env_ids, slots]
        items = self.item[env_ids, slots]
        if env_ids.size:
            pool.release(env_ids, nodes, self.demand[env_ids, :, slots])
            self.node[env_ids, slots] = -1
            self.item[env_ids, slots] = -1
            self.demand[env_ids, :, slots] = 0.0
            self.end[env_ids, slots] = np.inf
        return items, nodes

    def usage(self, num_nodes: int) -> np.ndarray:
        """(B, R, N) demand held per node, recomputed from the slots (the slow, obvious reference)."""
        b, r, _ = self.demand.shape
        out = np.zeros((b, r, num_nodes))
        env_ids, slots = np.nonzero(self.node >= 0)
        for res in range(r):
            np.add.at(out[:, res, :], (env_ids, self.node[env_ids, slots]), self.demand[env_ids, res, slots])
        return out


@kernels.jit
def best_fit_node(limit: np.ndarray, used: np.ndarray, b: int, demand: np.ndarray) -> int:  # pragma: no cover
    """:func:`best_fit` for sub-env ``b`` of ``limit``/``used`` (B, R, N) and one item's ``demand`` (R,); -1: none."""
    best, best_room = -1, np.inf
    for node in range(used.shape[2]):
        fits = True
        for r in range(used.shape[1]):
            # As numpy computes it: (limit - used) - demand, compared with >= (a NaN never fits).
            if not (limit[b, r, node] - used[b, r, node]) - demand[r] >= -FIT_TOLERANCE:
                fits = False
                break
        if fits:
            room = (limit[b, 0, node] - used[b, 0, node]) - demand[0]
            if room < best_room:  # strictly: ties go to the lowest index, as np.argmin
                best, best_room = node, room
    return best


@kernels.jit
def next_free_slot(node: np.ndarray, b: int, start: int) -> int:  # pragma: no cover - compiled
    """The first free slot of sub-env ``b`` at or after ``start`` (``node.shape[1]`` when none is)."""
    slot = start
    while slot < node.shape[1] and node[b, slot] >= 0:
        slot += 1
    return slot


@kernels.jit
def _place_sequentially_kernel(
    limit: np.ndarray,
    used: np.ndarray,
    slot_node: np.ndarray,
    slot_item: np.ndarray,
    slot_demand: np.ndarray,
    slot_end: np.ndarray,
    demand: np.ndarray,
    valid: np.ndarray,
    end: np.ndarray,
    item: np.ndarray,
    chosen: np.ndarray,
    slots_out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Every sub-env's items in order; returns -1, or the first sub-env that ran out of slots."""
    b_count, k_count, r_count = demand.shape
    need = np.empty(r_count)
    for b in range(b_count):
        free = next_free_slot(slot_node, b, 0)
        for k in range(k_count):
            if not valid[b, k]:
                continue
            for r in range(r_count):
                need[r] = demand[b, k, r]
            node = best_fit_node(limit, used, b, need)
            chosen[b, k] = node
            if node < 0:
                continue
            if free >= slot_node.shape[1]:
                return b
            slot_node[b, free] = node
            slot_item[b, free] = item[b, k]
            for r in range(r_count):
                slot_demand[b, r, free] = need[r]
                used[b, r, node] += need[r]
            slot_end[b, free] = end[b, k]
            slots_out[b, k] = free
            free = next_free_slot(slot_node, b, free + 1)
    return -1


def place_sequentially(
    pool: ResourcePool,
    placements: Placements,
    demand: np.ndarray,
    valid: np.ndarray,
    end: np.ndarray,
    item: np.ndarray,
    limit: np.ndarray | None = None,
    slots_out: np.ndarray | None = None,
) -> np.ndarray:
    """Best-fit the arrivals of one step, in order per sub-env; (B, K) chosen nodes, -1 where rejected.

    ``demand`` is (B, K, R), ``valid`` (B, K) marks real arrivals (rows are
    padded to the largest K), ``end`` and ``item`` are (B, K). Each item sees
    the usage of the ones before it and takes its sub-env's first free slot.
    ``slots_out`` (B, K), when given, receives each placed item's slot in
    ``placements`` (left as is where nothing was placed), so that an env can
    keep per-slot data of its own beside the table. Raises when a sub-env has
    more live items than slots (the table is sized at reset: a bug).
    """
    if not kernels.enabled():
        return place_sequentially_numpy(pool, placements, demand, valid, end, item, limit, slots_out)
    b, k_max, _ = demand.shape
    chosen = np.full((b, k_max), -1, np.int64)
    out = slots_out if slots_out is not None else np.full((b, k_max), -1, np.int64)
    bad = _place_sequentially_kernel(
        pool.capacity if limit is None else limit,
        pool.used,
        placements.node,
        placements.item,
        placements.demand,
        placements.end,
        np.asarray(demand, np.float64),
        np.asarray(valid, np.bool_),
        np.asarray(end, np.float64),
        np.asarray(item, np.int64),
        chosen,
        out,
    )
    if bad >= 0:
        raise RuntimeError(f"sub-env {bad}: more live items than the {placements.slots} slots sized at reset")
    return chosen


def place_sequentially_numpy(
    pool: ResourcePool,
    placements: Placements,
    demand: np.ndarray,
    valid: np.ndarray,
    end: np.ndarray,
    item: np.ndarray,
    limit: np.ndarray | None = None,
    slots_out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`place_sequentially` in numpy, rank by rank (the reference the kernel is tested against).

    ``demand`` is (B, K, R), ``valid`` (B, K) marks real arrivals (rows are
    padded to the largest K), ``end`` and ``item`` are (B, K). Arrival k of
    every sub-env is placed in one vectorised call after arrival k-1.
    ``slots_out`` (B, K), when given, receives each placed item's slot in
    ``placements`` (left as is where nothing was placed), so that an env can
    keep per-slot data of its own beside the table.
    """
    b, k_max, _ = demand.shape
    chosen = np.full((b, k_max), -1, np.int64)
    by_rank = np.ascontiguousarray(valid.T)
    for k in range(k_max):
        rows = np.flatnonzero(by_rank[k])
        if rows.size == 0:
            continue
        if rows.size == b:
            node = best_fit(pool, demand[:, k, :], limit, None)
        else:
            # Only the sub-envs with a k-th arrival: a best fit over their rows alone (later ranks are sparse).
            sub = ResourcePool(capacity=pool.capacity[rows], used=pool.used[rows])
            node = best_fit(sub, demand[rows, k, :], None if limit is None else limit[rows], None)
        chosen[rows, k] = node
        hit = node >= 0
        envs = rows[hit]
        if envs.size:
            slot = placements.place(pool, envs, node[hit], demand[envs, k, :], end[envs, k], item[envs, k])
            if slots_out is not None:
                slots_out[envs, k] = slot
    return chosen
