"""The state of B LLM clusters (slot tables, queues, clocks, activity) and the completions they report.

Every mutable value of the simulator lives here, as B-first arrays, so an
env nests an :class:`LLMClusterState` in its own state and the base core
snapshots and resets its rows like any other. The simulator itself
(:mod:`~cloudgym.envs.core.llm.batching`) works on flat views of the same
arrays, the (B, N) axes merged into one instance axis
(:meth:`LLMClusterState.flat`, :func:`cloudgym.envs.core.tree.merge_leading`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from cloudgym.envs.core import tree

EMPTY, WAITING, RUNNING = 0, 1, 2
"""Slot status codes."""


@dataclasses.dataclass(frozen=True)
class InstanceActivity:
    """What each instance did since the activity was last taken (for power models and utilisation)."""

    busy_s: np.ndarray  # (B, N) float64, seconds of iterations started in the interval
    compute_s: np.ndarray  # (B, N) float64, compute-bound part of those iterations (at the actual clock), s
    memory_s: np.ndarray  # (B, N) float64, memory-bound part, s
    prefill_tokens: np.ndarray  # (B, N) float64, prompt tokens processed
    decode_tokens: np.ndarray  # (B, N) float64, output tokens decoded (one per decoding request and iteration)
    iterations: np.ndarray  # (B, N) float64, iterations run
    preemptions: np.ndarray  # (B, N) float64, requests preempted (recompute)

    @classmethod
    def zeros(cls, num_envs: int, num_instances: int) -> InstanceActivity:
        return cls(**{f.name: np.zeros((num_envs, num_instances)) for f in dataclasses.fields(cls)})

    def reset_envs(self, env_ids: np.ndarray) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name)[env_ids] = 0.0

    def take(self) -> InstanceActivity:
        """Copies of the accumulators, which are then zeroed."""
        taken = InstanceActivity(**{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)})
        for f in dataclasses.fields(self):
            getattr(self, f.name)[...] = 0.0
        return taken


@dataclasses.dataclass(frozen=True)
class LLMClusterState:
    """B clusters of N instances with S request slots each (B-first arrays; see :class:`LLMCluster`).

    Frozen: the arrays change in place, never get replaced, so the flat views of :meth:`flat` stay valid.
    """

    # per instance
    clock: np.ndarray  # (B, N) float64, end of the instance's last iteration (or the time it idled until), s
    freq_scale: np.ndarray  # (B, N) float64, SM clock / max clock (an input: power capping writes it)
    kv_used: np.ndarray  # (B, N) int64, KV blocks held by running requests
    running: np.ndarray  # (B, N) int64, requests in the running batch
    waiting: np.ndarray  # (B, N) int64, requests in the waiting queue (its length)
    queue_head: np.ndarray  # (B, N) int64, ring position of the oldest waiting request
    partial: np.ndarray  # (B, N) int64, slot of the request whose prompt is part-prefilled (chunked), -1 if none
    last_done: np.ndarray  # (B, N) int64, requests completed by the instance's last iteration (at time clock)
    slot_high: np.ndarray  # (B, N) int64, one past the highest slot in use (slots are taken lowest first)
    queue: np.ndarray  # (B, N, S) int32, ring of waiting slots in admission order
    # per slot
    status: np.ndarray  # (B, N, S) int8, EMPTY / WAITING / RUNNING
    request: np.ndarray  # (B, N, S) int64, caller's request id (increasing with arrival: orders preemption)
    tag: np.ndarray  # (B, N, S) int64, caller's label copied into completions (class, priority)
    prompt: np.ndarray  # (B, N, S) int32, prompt tokens
    output: np.ndarray  # (B, N, S) int32, output tokens the request generates
    target: np.ndarray  # (B, N, S) int32, tokens the current prefill must compute (prompt + tokens generated)
    computed: np.ndarray  # (B, N, S) int32, tokens whose KV is in the cache
    generated: np.ndarray  # (B, N, S) int32, output tokens emitted so far
    blocks: np.ndarray  # (B, N, S) int32, KV blocks held
    arrival: np.ndarray  # (B, N, S) float64, arrival time, s
    first_token: np.ndarray  # (B, N, S) float64, time of the first output token, s (-1 before it)
    last_token: np.ndarray  # (B, N, S) float64, time of the last token before the request's current prefill, s
    # (a decoding request emits a token at the end of each of its instance's iterations, so its previous token
    # always came at the instance's clock; this field is kept for tokens emitted by prefills)
    max_gap: np.ndarray  # (B, N, S) float64, longest time between two consecutive output tokens, s
    estimate: np.ndarray  # (B, N, S) float64, caller's estimate of the output tokens (a predictor's); not simulated
    activity: InstanceActivity  # (B, N) accumulators since the last take_activity()

    @classmethod
    def zeros(cls, num_envs: int, num_instances: int, slots: int) -> LLMClusterState:
        """B empty clusters: clocks at 0, full clock speed, no requests."""
        b, n, s = num_envs, num_instances, slots

        def per_slot(dtype: Any, fill: float = 0) -> np.ndarray:
            return np.full((b, n, s), fill, dtype)

        return cls(
            clock=np.zeros((b, n)),
            freq_scale=np.ones((b, n)),
            kv_used=np.zeros((b, n), np.int64),
            running=np.zeros((b, n), np.int64),
            waiting=np.zeros((b, n), np.int64),
            queue_head=np.zeros((b, n), np.int64),
            partial=np.full((b, n), -1, np.int64),
            last_done=np.zeros((b, n), np.int64),
            slot_high=np.zeros((b, n), np.int64),
            queue=per_slot(np.int32),
            status=per_slot(np.int8),
            request=per_slot(np.int64, -1),
            tag=per_slot(np.int64),
            prompt=per_slot(np.int32),
            output=per_slot(np.int32),
            target=per_slot(np.int32),
            computed=per_slot(np.int32),
            generated=per_slot(np.int32),
            blocks=per_slot(np.int32),
            arrival=per_slot(np.float64),
            first_token=per_slot(np.float64, -1.0),
            last_token=per_slot(np.float64),
            max_gap=per_slot(np.float64),
            estimate=per_slot(np.float64),
            activity=InstanceActivity.zeros(b, n),
        )

    def flat(self) -> LLMClusterState:
        """The same arrays with the (B, N) axes merged into one instance axis: views, made once and kept.

        The simulator runs on these every step; merging afresh each call would cost a walk of the tree.
        """
        flat = self.__dict__.get("_flat")
        if flat is None or not np.may_share_memory(flat.clock, self.clock):  # a copied state carries copied views
            flat = tree.merge_leading(self, 2)
            object.__setattr__(self, "_flat", flat)
        return flat

    def reset_envs(self, env_ids: np.ndarray, start_time: Any = 0.0) -> None:
        """Empty the listed sub-envs' instances, as :meth:`zeros` does; their clocks start at ``start_time``."""
        ids = np.asarray(env_ids, np.int64)
        tree.fill_rows(self, self.clock.shape[0], ids, 0)
        self.clock[ids] = np.asarray(start_time, np.float64).reshape(-1, 1) if np.ndim(start_time) else start_time
        self.freq_scale[ids] = 1.0
        self.partial[ids] = -1
        self.request[ids] = -1
        self.first_token[ids] = -1.0


@dataclasses.dataclass(frozen=True)
class Completions:
    """Requests that completed during an :meth:`LLMCluster.advance` call (flat arrays, one entry each)."""

    env: np.ndarray  # (C,) int64, sub-env
    instance: np.ndarray  # (C,) int64
    request: np.ndarray  # (C,) int64, caller's id
    tag: np.ndarray  # (C,) int64
    prompt: np.ndarray  # (C,) int64
    output: np.ndarray  # (C,) int64, tokens generated (= requested)
    arrival: np.ndarray  # (C,) float64, s
    first_token: np.ndarray  # (C,) float64, s
    finish: np.ndarray  # (C,) float64, s
    max_gap: np.ndarray  # (C,) float64, longest time between tokens, s

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token - self.arrival

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish - self.arrival

    @property
    def tbt_s(self) -> np.ndarray:
        """Mean time between tokens of each request (NaN for one-token outputs)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.output > 1, (self.finish - self.first_token) / (self.output - 1), np.nan)

    def __len__(self) -> int:
        return int(self.env.size)

    @classmethod
    def concat(cls, parts: Sequence[Completions]) -> Completions:
        if not parts:
            ints = np.zeros(0, np.int64)
            floats = np.zeros(0, np.float64)
            return cls(ints, ints, ints, ints, ints, ints, floats, floats, floats, floats)
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))
