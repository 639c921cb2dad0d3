"""A slow, obviously-correct per-request simulator of one LLM instance (the reference for envs/core/llm/).

One Python object per request, a deque for the waiting queue and a list for
the running batch, one iteration at a time, the scheduling rules written out
in the order the core's docstring states them. Shares only the iteration-time
formula (``iteration_time``) with the vectorised core.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

from cloudgym.envs.core.llm import InstanceSpec, iteration_time


@dataclasses.dataclass
class Req:
    request: int
    prompt: int
    output: int
    arrival: float
    tag: int = 0
    target: int = 0  # tokens the current prefill must compute
    computed: int = 0
    generated: int = 0
    blocks: int = 0
    first_token: float = -1.0
    last_token: float = 0.0
    max_gap: float = 0.0
    finish: float = math.nan


class ReferenceInstance:
    def __init__(self, spec: InstanceSpec, slots: int) -> None:
        self.spec = spec
        self.slots = slots
        s = spec.scheduler
        self.bs = s.block_tokens
        self.capacity = spec.kv_capacity_blocks
        self.watermark = math.ceil(s.watermark * spec.kv_capacity_blocks)
        self.clock = 0.0
        self.freq = 1.0
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []
        self.partial: Req | None = None
        self.done: list[Req] = []
        self.preemptions = 0
        self.busy = 0.0

    @property
    def kv_used(self) -> int:
        return sum(r.blocks for r in self.running)

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def enqueue(self, req: Req) -> bool:
        if len(self.waiting) + len(self.running) >= self.slots:
            return False
        if self.blocks(req.prompt + req.output) > self.capacity - self.watermark:
            return False
        req.target = req.prompt
        req.last_token = req.arrival
        self.waiting.append(req)
        return True

    def iterate(self) -> None:
        sched = self.spec.scheduler
        decoding = [r for r in self.running if r.computed >= r.target]
        # KV growth of decodes; preempt the newest running request while blocks are short.
        while True:
            need = sum(1 for r in decoding if r.computed + 1 > r.blocks * self.bs)
            if need <= self.capacity - self.kv_used:
                break
            victim = max(self.running, key=lambda r: r.request)
            self.running.remove(victim)
            if victim in decoding:
                decoding.remove(victim)
            if self.partial is victim:
                self.partial = None
            victim.blocks = 0
            victim.target = victim.prompt + victim.generated
            victim.computed = 0
            self.waiting.appendleft(victim)
            self.preemptions += 1
        grow = {id(r) for r in decoding if r.computed + 1 > r.blocks * self.bs}
        budget = sched.max_batched_tokens - len(decoding) if sched.chunked_prefill else sched.max_batched_tokens
        chunks: dict[int, int] = {}
        if self.partial is not None:
            r = self.partial
            c = min(r.target - r.computed, max(budget, 0))
            chunks[id(r)] = c
            budget -= c
            if r.computed + c >= r.target:
                self.partial = None
        prefilled = 0
        while self.waiting and len(self.running) < sched.max_batch_requests and budget > 0 and self.partial is None:
            head = self.waiting[0]
            need_blocks = self.blocks(head.target)
            if head.arrival > self.clock:
                break
            if need_blocks > self.capacity - self.kv_used - len(grow) - self.watermark:
                break
            if not sched.chunked_prefill and prefilled > 0 and prefilled + head.target > budget:
                break
            self.waiting.popleft()
            head.blocks = need_blocks
            self.running.append(head)
            c = min(head.target, budget) if sched.chunked_prefill else head.target
            chunks[id(head)] = c
            if sched.chunked_prefill:
                budget -= c
            prefilled += c
            if c < head.target:
                self.partial = head
        # Cost.
        prefill_tokens = sum(chunks.values())
        pairs = 0
        kv_read = 0
        for r in decoding:
            pairs += r.computed + 1
            kv_read += r.computed + 1
        for r in self.running:
            c = chunks.get(id(r), 0)
            if c > 0:
                pairs += c * r.computed + c * (c + 1) // 2
                kv_read += r.computed + c
        assert prefill_tokens + len(decoding) > 0, "an iteration with nothing to do"
        coef = self.spec.coefficients()
        t = float(iteration_time(coef, prefill_tokens, len(decoding), pairs, kv_read, self.freq).total_s)
        end = self.clock + t
        self.busy += t
        # Apply.
        for r in list(self.running):
            emitted = False
            if r in decoding:
                if id(r) in grow:
                    r.blocks += 1
                r.computed += 1
                emitted = True
            c = chunks.get(id(r), 0)
            if c > 0:
                r.computed += c
                if r.computed >= r.target:
                    emitted = True
            if emitted:
                r.generated += 1
                if r.first_token < 0:
                    r.first_token = end
                else:
                    r.max_gap = max(r.max_gap, end - r.last_token)
                r.last_token = end
                if r.generated >= r.output:
                    r.finish = end
                    r.blocks = 0
                    self.running.remove(r)
                    self.done.append(r)
        self.clock = end

    def advance(self, until: float) -> None:
        while self.clock < until:
            if not self.running:
                if not self.waiting:
                    self.clock = until
                    return
                head_arrival = self.waiting[0].arrival
                if head_arrival > self.clock:
                    self.clock = min(head_arrival, until)
                    continue
            self.iterate()
            assert self.kv_used <= self.capacity


def reference_run(
    spec: InstanceSpec, slots: int, requests: list[tuple[int, int, int, float]], horizon: float
) -> tuple[list[Req], list[bool]]:
    """Route (id, prompt, output, arrival) requests, in arrival order, to one instance; run to ``horizon``."""
    inst = ReferenceInstance(spec, slots)
    accepted = []
    for rid, prompt, output, arrival in requests:
        inst.advance(arrival)
        accepted.append(inst.enqueue(Req(rid, prompt, output, arrival)))
    inst.advance(horizon)
    return inst.done, accepted


def as_arrays(done: list[Req]) -> dict[str, np.ndarray]:
    order = sorted(done, key=lambda r: r.request)
    return {
        "request": np.array([r.request for r in order], np.int64),
        "first_token": np.array([r.first_token for r in order]),
        "finish": np.array([r.finish for r in order]),
        "max_gap": np.array([r.max_gap for r in order]),
        "output": np.array([r.generated for r in order], np.int64),
    }
