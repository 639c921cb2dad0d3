"""A batched LLM serving cluster: N continuously batching instances, B clusters simulated at once.

``B`` sub-envs x ``N`` instances x ``S`` request slots, vLLM-style, simulated
iteration by iteration (:mod:`~cloudgym.envs.core.llm.batching`) and
vectorised across all (B, N) instances: a waiting queue (FCFS ring of slots)
and a running batch per instance. Times per request: time to first token
(TTFT), time between tokens (mean over the request, and the longest gap,
which is where interference shows), end-to-end latency. Per instance,
per-interval activity (busy, compute and memory time, prompt and decode
tokens, iterations, preemptions) for power models, and a per-instance
``freq_scale`` (f / f_max) input.

An iteration that starts before the target time of :meth:`LLMCluster.advance`
runs to completion (a GPU does not stop mid-forward): instance clocks may
pass the target by less than one iteration, and activity is attributed to the
interval in which its iteration started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cloudgym.envs.core.llm import kernel
from cloudgym.envs.core.llm.batching import BatchingLimits, run_iteration
from cloudgym.envs.core.llm.specs import InstanceSpec
from cloudgym.envs.core.llm.state import (
    EMPTY,
    RUNNING,
    WAITING,
    Completions,
    InstanceActivity,
    LLMClusterState,
)


class LLMCluster:
    """N instances (possibly different) with S request slots each; simulates B clusters at once.

    Usage::

        cluster = LLMCluster([preset("llama2-7b-a100")] * 4, slots=128)
        state = cluster.new_state(num_envs)
        cluster.enqueue(state, env_ids, instances, request, prompt, output, arrival)  # route arrivals
        done = cluster.advance(state, until)  # run every instance up to time until (B,)

    The cluster holds only constants; every mutable value is in the
    :class:`LLMClusterState` (B-first arrays), so envs snapshot and reset
    rows as their core requires.
    """

    def __init__(self, instances: Sequence[InstanceSpec], slots: int, *, use_kernel: bool | None = None) -> None:
        """``use_kernel``: advance with the compiled kernel (:mod:`~cloudgym.envs.core.llm.kernel`) or the numpy
        reference (bit-identical, slower); None reads ``CLOUDGYM_KERNELS`` (``numpy`` for the reference)."""
        if len(instances) < 1:
            raise ValueError("an LLM cluster needs at least one instance")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.instances = tuple(instances)
        self.num_instances = len(self.instances)
        self.slots = int(slots)
        self.limits = BatchingLimits.of(self.instances, self.slots)
        self.use_kernel = kernel.kernel_default() if use_kernel is None else bool(use_kernel)
        # The per-instance constants routers read too (the same arrays as the limits').
        self.coef = self.limits.coef
        self.block_tokens = self.limits.block_tokens
        self.capacity_blocks = self.limits.capacity_blocks
        self.watermark_blocks = self.limits.watermark_blocks

    # ------------------------------------------------------------------ state
    def new_state(self, num_envs: int) -> LLMClusterState:
        return LLMClusterState.zeros(num_envs, self.num_instances, self.slots)

    def reset_envs(self, state: LLMClusterState, env_ids: np.ndarray, start_time: Any = 0.0) -> None:
        """Empty the listed sub-envs' instances; their clocks start at ``start_time`` (scalar or (k,))."""
        state.reset_envs(env_ids, start_time)

    # ------------------------------------------------------------------ routing
    def blocks_for(self, tokens: Any, instances: Any) -> np.ndarray:
        """KV blocks that ``tokens`` occupy on the given instances."""
        bt = self.block_tokens[np.asarray(instances)]
        return -(-np.asarray(tokens, np.int64) // bt)

    def fits_ever(self, prompt: Any, output: Any, instances: Any) -> np.ndarray:
        """Whether a request's whole context (prompt + output) fits the instances' KV cache above the watermark."""
        inst = np.asarray(instances)
        room = self.capacity_blocks[inst] - self.watermark_blocks[inst]
        return self.blocks_for(np.asarray(prompt) + np.asarray(output), inst) <= room

    def can_admit(self, state: LLMClusterState, prompt: np.ndarray) -> np.ndarray:
        """(B, N) instances with a free slot whose KV cache can ever hold a prompt of ``prompt`` (B,) tokens.

        Uses only what a router knows (the prompt, not the output).
        """
        free_slot = state.running + state.waiting < self.slots
        room = self.capacity_blocks - self.watermark_blocks
        need = -(-np.asarray(prompt, np.int64)[:, None] // self.block_tokens[None, :])
        return free_slot & (need + 1 <= room[None, :])

    def enqueue(
        self,
        state: LLMClusterState,
        env_ids: np.ndarray,
        instances: np.ndarray,
        request: np.ndarray,
        prompt: np.ndarray,
        output: np.ndarray,
        arrival: np.ndarray,
        tag: np.ndarray | None = None,
        estimate: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append arrivals to the waiting queues of (sub-env, instance) pairs; (m,) True where accepted.

        A request is refused (False) when its instance has no free slot or its
        whole context could never fit the instance's KV cache; the caller
        counts it as rejected. Pairs may repeat: they are queued in the given
        order. Arrival times may lie ahead of the instance's clock (the
        request is admitted only once its instance reaches it). ``tag`` (an
        integer label) and ``estimate`` (e.g. a predicted output length) are
        carried for the caller; the simulation does not read them.
        """
        env_ids = np.asarray(env_ids, np.int64)
        m = env_ids.size
        accepted = np.zeros(m, bool)
        if m == 0:
            return accepted
        instances = np.asarray(instances, np.int64)
        prompt = np.asarray(prompt, np.int64)
        output = np.asarray(output, np.int64)
        request = np.asarray(request, np.int64)
        arrival = np.asarray(arrival, np.float64)
        if np.any(prompt < 1) or np.any(output < 1):
            raise ValueError("requests need at least one prompt token and one output token")
        tag_arr = np.zeros(m, np.int64) if tag is None else np.asarray(tag, np.int64)
        estimate_arr = np.zeros(m) if estimate is None else np.asarray(estimate, np.float64)
        flat = env_ids * self.num_instances + instances
        if self.use_kernel:
            requests = kernel.Requests(flat, request, tag_arr, prompt, output, arrival, estimate_arr)
            return kernel.enqueue(self.limits, state.flat(), requests)
        possible = self.fits_ever(prompt, output, instances)
        # Pairs that repeat are queued rank by rank, so each sees the slots the previous one took.
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        rank = np.empty(m, np.int64)
        rank[order] = np.arange(m) - np.searchsorted(sorted_flat, sorted_flat, side="left")
        views = state.flat()
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero((rank == r) & possible)
            if sel.size == 0:
                continue
            f = flat[sel]
            free = views.status[f] == EMPTY
            has = free.any(axis=1)
            sel, f = sel[has], f[has]
            slot = np.argmax(free[has], axis=1)
            views.status[f, slot] = WAITING
            views.request[f, slot] = request[sel]
            views.tag[f, slot] = tag_arr[sel]
            views.prompt[f, slot] = prompt[sel]
            views.output[f, slot] = output[sel]
            views.target[f, slot] = prompt[sel]
            views.computed[f, slot] = 0
            views.generated[f, slot] = 0
            views.blocks[f, slot] = 0
            views.arrival[f, slot] = arrival[sel]
            views.first_token[f, slot] = -1.0
            views.last_token[f, slot] = arrival[sel]
            views.max_gap[f, slot] = 0.0
            views.estimate[f, slot] = estimate_arr[sel]
            views.slot_high[f] = np.maximum(views.slot_high[f], slot + 1)
            tail = (views.queue_head[f] + views.waiting[f]) % self.slots
            views.queue[f, tail] = slot
            views.waiting[f] += 1
            accepted[sel] = True
        return accepted

    # ------------------------------------------------------------------ simulation
    def advance(self, state: LLMClusterState, until: np.ndarray) -> Completions:
        """Run every instance, iteration by iteration, until its clock reaches ``until`` (B,) or it idles.

        An instance with nothing to do (or only requests that have not arrived
        yet) idles forward. Returns the requests that completed, in the order
        of the numpy path's rounds (round, then sub-env and instance, then slot).
        The compiled kernel runs each instance on its own up to its horizon;
        the numpy reference (``use_kernel=False``) runs them in lockstep rounds.
        """
        if self.use_kernel:
            return kernel.advance(self.limits, state.flat(), until)
        return self._advance_numpy(state, until)

    def _advance_numpy(self, state: LLMClusterState, until: np.ndarray) -> Completions:
        """The reference: iterations of all (sub-env, instance) pairs that still lag run together, a round at a time."""
        views = state.flat()
        target = np.repeat(np.asarray(until, np.float64), self.num_instances)
        records: list[Completions] = []
        while True:
            lagging = views.clock < target
            if not lagging.any():
                break
            rows = np.flatnonzero(lagging)
            clock = views.clock[rows]
            idle = views.running[rows] == 0
            if idle.any():
                # Idle instances jump to the next arrival in their queue, or to the target.
                r_idle = rows[idle]
                head_arrival = np.full(r_idle.size, np.inf)
                queued = views.waiting[r_idle] > 0
                if queued.any():
                    rq = r_idle[queued]
                    head_arrival[queued] = views.arrival[rq, views.queue[rq, views.queue_head[rq]]]
                jump = np.minimum(np.maximum(head_arrival, clock[idle]), target[r_idle])
                moved = jump > clock[idle]
                views.clock[r_idle[moved]] = jump[moved]
                views.last_done[r_idle[moved]] = 0
                # Those whose head has arrived by now start an iteration this round.
                startable = head_arrival <= views.clock[r_idle]
                active = np.concatenate([rows[~idle], r_idle[startable & (views.clock[r_idle] < target[r_idle])]])
            else:
                active = rows
            if active.size == 0:
                continue
            done = run_iteration(self.limits, views, np.sort(active))
            if done is not None:
                records.append(done)
        return Completions.concat(records)

    # ------------------------------------------------------------------ views for routers and power models
    def take_activity(self, state: LLMClusterState) -> InstanceActivity:
        """The activity accumulated since the last call (copies), and zero the accumulators."""
        return state.activity.take()

    def queued_prefill_tokens(self, state: LLMClusterState) -> np.ndarray:
        """(B, N) prompt tokens still to prefill: waiting requests' prompts and part-done prefills."""
        todo = np.where(state.status != EMPTY, state.target - state.computed, 0)
        return np.maximum(todo, 0).sum(axis=2)

    def context_tokens(self, state: LLMClusterState) -> np.ndarray:
        """(B, N) KV-cache tokens held by running requests."""
        return np.where(state.status == RUNNING, state.computed, 0).sum(axis=2)

    def kv_fraction(self, state: LLMClusterState) -> np.ndarray:
        """(B, N) share of KV blocks in use."""
        return state.kv_used / self.capacity_blocks[None, :]

    def in_system(self, state: LLMClusterState) -> np.ndarray:
        """(B,) requests queued or running in each sub-env."""
        return (state.running + state.waiting).sum(axis=1)
