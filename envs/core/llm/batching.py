"""One iteration of vLLM-style continuous batching, run for many instances at once.

What one iteration of an instance does, in order (vLLM semantics):

* **decode KV growth and preemption**: every running request past its
  prefill emits one token per iteration and grows its KV by one token,
  taking a new block each ``block_tokens`` tokens; when blocks run out, the
  latest-arrived running requests are **preempted** (recompute mode: KV
  freed, request back at the head of the queue, re-prefilled over prompt +
  tokens generated so far);
* **prompt work**: with **chunked prefill** (Sarathi-Serve / vLLM v1)
  decodes are scheduled first and prompt tokens fill the rest of the token
  budget, so at most one prompt per instance is partially prefilled at a time
  (it continues first); then **admission**, in arrival order, of requests
  that have arrived, while the running batch is below ``max_batch_requests``,
  the KV blocks of the request's whole prompt fit above a watermark (vLLM v0
  allocates the prompt's blocks at admission), and the iteration's token
  budget allows (``max_batched_tokens``); the first waiting request that does
  not fit stops admission (no skipping, as vLLM). Without chunked prefill,
  admitted prompts are prefilled whole in a mixed iteration with the decodes
  (Orca-style iteration-level batching);
* **cost**: the iteration's roofline time (:func:`~cloudgym.envs.core.llm.cost.iteration_time`)
  at the instance's SM clock;
* **tokens**: decodes emit their token; the iteration that completes a prompt
  emits the request's first token (or its next one after a preemption);
* **completions**: a request completes when it has generated its requested
  output tokens; its KV blocks and slot are freed.

The k instances of a round each start from their own clock. Dense (k, S)
work is limited to what every decoding request needs each iteration (and to
the slots in use); admissions, prompt chunks, preemptions and completions are
few and handled as sparse (row, slot) lists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from cloudgym.envs.core.llm.cost import CostCoefficients, IterationCost, iteration_time
from cloudgym.envs.core.llm.specs import InstanceSpec
from cloudgym.envs.core.llm.state import EMPTY, RUNNING, WAITING, Completions, LLMClusterState


@dataclasses.dataclass(frozen=True)
class BatchingLimits:
    """Per-instance constants the scheduler reads, (N,) arrays (the instances of a cluster may differ)."""

    num_instances: int
    """Instances per cluster, N."""
    slots: int
    """Request slots per instance, S."""
    coef: CostCoefficients
    """Iteration-time constants, (N,) each."""
    block_tokens: np.ndarray  # (N,) int64, tokens per KV block
    capacity_blocks: np.ndarray  # (N,) int64, KV blocks of the instance
    watermark_blocks: np.ndarray  # (N,) int64, blocks admission keeps free
    max_batch: np.ndarray  # (N,) int64, most requests in the running batch
    max_tokens: np.ndarray  # (N,) int64, token budget of one iteration
    chunked: np.ndarray  # (N,) bool, chunked prefill

    @classmethod
    def of(cls, instances: Sequence[InstanceSpec], slots: int) -> BatchingLimits:
        sched = [s.scheduler for s in instances]
        return cls(
            num_instances=len(instances),
            slots=int(slots),
            coef=CostCoefficients.stack([s.coefficients() for s in instances]),
            block_tokens=np.array([s.block_tokens for s in sched], np.int64),
            capacity_blocks=np.array([s.kv_capacity_blocks for s in instances], np.int64),
            watermark_blocks=np.array(
                [math.ceil(s.scheduler.watermark * s.kv_capacity_blocks) for s in instances], np.int64
            ),
            max_batch=np.array([s.max_batch_requests for s in sched], np.int64),
            max_tokens=np.array([s.max_batched_tokens for s in sched], np.int64),
            chunked=np.array([s.chunked_prefill for s in sched], bool),
        )


@dataclasses.dataclass(frozen=True)
class _PromptWork:
    """The iteration's prompt chunks as sparse lists."""

    rows: np.ndarray  # (P,) int64, row (of the k) of each chunk
    slots: np.ndarray  # (P,) int64, slot of each chunk
    chunk: np.ndarray  # (P,) float64, prompt tokens computed this iteration


def run_iteration(limits: BatchingLimits, flat: LLMClusterState, idx: np.ndarray) -> Completions | None:
    """One iteration of each listed flat instance (sorted indices into a state whose (B, N) axes are merged).

    Writes the iteration into ``flat`` (views of the cluster state) and returns the requests it completed.
    """
    return _Iteration(limits, flat, idx).run()


class _Iteration:
    """The k listed instances of one round, gathered from the flat state dense over the slots in use.

    The phases (:meth:`run`) update the gathered copies and write straight
    into the flat state where they touch only a few (row, slot) pairs;
    :meth:`_write_back` stores the gathered copies.
    """

    def __init__(self, limits: BatchingLimits, v: LLMClusterState, idx: np.ndarray) -> None:
        self.lim, self.v, self.idx = limits, v, idx
        self.k = idx.size
        self.inst = idx % limits.num_instances
        self.bt = limits.block_tokens[self.inst]
        self.clock = v.clock[idx]
        # Slots are taken lowest first: dense work covers only the slots up to the highest in use.
        self.sl = slice(0, int(v.slot_high[idx].max()))
        self.st = v.status[idx, self.sl]
        self.comp = v.computed[idx, self.sl]
        self.tgt = v.target[idx, self.sl]
        self.blk = v.blocks[idx, self.sl]
        self.free = limits.capacity_blocks[self.inst] - v.kv_used[idx]
        self.n_run = v.running[idx]
        self.q_head = v.queue_head[idx]
        self.q_len = v.waiting[idx]
        self.partial = v.partial[idx]
        self.preempted = np.zeros(self.k)
        self.status_changed = False

    def run(self) -> Completions | None:
        decoding, grow = self._preempt_for_kv_growth()
        n_dec = decoding.sum(axis=1)
        prompts = self._schedule_prompts(n_dec)
        cost, n_prefill = self._cost(decoding, n_dec, prompts)
        t_end = self.clock + cost.total_s
        gen, max_gap, done = self._decode(decoding, grow, cost.total_s)
        self._finish_prompts(prompts, t_end, gen, max_gap, done)
        records, n_done = self._complete(done, gen, max_gap, t_end)
        self._write_back(gen, max_gap, t_end, n_done)
        self._account(cost, n_prefill, n_dec)
        return records

    def _preempt_for_kv_growth(self) -> tuple[np.ndarray, np.ndarray]:
        """Decoding requests and those whose next token needs a new KV block; preempt the newest while short.

        Returns (decoding, grow), (k, S') booleans after the preemptions.
        """
        v, idx, sl = self.v, self.idx, self.sl
        st, comp, tgt, blk, free = self.st, self.comp, self.tgt, self.blk, self.free
        partial, n_run, q_head, q_len = self.partial, self.n_run, self.q_head, self.q_len
        decoding = (st == RUNNING) & (comp >= tgt)
        # Decode KV growth: a token past the last block needs a new block; without one, preempt the newest request.
        grow = decoding & (comp >= blk * self.bt[:, None])
        need = grow.sum(axis=1)
        short = need > free
        while short.any():
            r = np.flatnonzero(short)
            victim = np.argmax(np.where(st[r] == RUNNING, v.request[idx[r], sl], -1), axis=1)
            f = idx[r]
            free[r] += blk[r, victim]
            need[r] -= grow[r, victim]
            blk[r, victim] = 0
            st[r, victim] = WAITING
            decoding[r, victim] = False
            grow[r, victim] = False
            tgt[r, victim] = v.prompt[f, victim] + v.generated[f, victim]
            comp[r, victim] = 0
            # A decoding victim's latest token came at the end of the previous iteration, i.e. now.
            v.last_token[f, victim] = np.where(v.generated[f, victim] > 0, self.clock[r], v.last_token[f, victim])
            partial[r] = np.where(partial[r] == victim, -1, partial[r])
            n_run[r] -= 1
            q_head[r] = (q_head[r] - 1) % self.lim.slots
            v.queue[f, q_head[r]] = victim
            q_len[r] += 1
            self.preempted[r] += 1
            self.status_changed = True
            short = need > free
        free -= need
        return decoding, grow

    def _schedule_prompts(self, n_dec: np.ndarray) -> _PromptWork:
        """Prompt work of this iteration: a part-prefilled prompt (chunked mode) continues first, then admissions."""
        pr: list[np.ndarray] = []
        ps: list[np.ndarray] = []
        pc: list[np.ndarray] = []
        chunked = self.lim.chunked[self.inst]
        budget = np.where(chunked, self.lim.max_tokens[self.inst] - n_dec, self.lim.max_tokens[self.inst])
        comp, tgt, partial = self.comp, self.tgt, self.partial
        rows = np.flatnonzero(partial >= 0)
        if rows.size:
            s = partial[rows]
            c = np.minimum(tgt[rows, s] - comp[rows, s], np.maximum(budget[rows], 0))
            keep = c > 0
            pr.append(rows[keep])
            ps.append(s[keep])
            pc.append(c[keep])
            budget[rows] -= c
            finished = comp[rows, s] + c >= tgt[rows, s]
            partial[rows[finished]] = -1
        self._admit(chunked, budget, pr, ps, pc)
        return _PromptWork(
            rows=np.concatenate(pr) if pr else np.zeros(0, np.int64),
            slots=np.concatenate(ps) if ps else np.zeros(0, np.int64),
            chunk=(np.concatenate(pc) if pc else np.zeros(0, np.int64)).astype(np.float64),
        )

    def _admit(
        self,
        chunked: np.ndarray,
        budget: np.ndarray,
        pr: list[np.ndarray],
        ps: list[np.ndarray],
        pc: list[np.ndarray],
    ) -> None:
        """Admissions, FCFS: the queue's head joins while it has arrived and fits; the first misfit stops the row."""
        v, idx, lim, inst = self.v, self.idx, self.lim, self.inst
        st, tgt, blk, free = self.st, self.tgt, self.blk, self.free
        partial, n_run, q_head, q_len = self.partial, self.n_run, self.q_head, self.q_len
        prefilled = np.zeros(self.k, np.int64)
        cand = (q_len > 0) & (n_run < lim.max_batch[inst]) & (budget > 0) & (partial < 0)
        room_floor = lim.watermark_blocks[inst]
        while cand.any():
            r = np.flatnonzero(cand)
            f = idx[r]
            head = v.queue[f, q_head[r]]
            t = tgt[r, head]
            need_blocks = -(-t // self.bt[r])
            ok = v.arrival[f, head] <= self.clock[r]
            ok &= need_blocks <= free[r] - room_floor[r]
            ok &= chunked[r] | (prefilled[r] == 0) | (prefilled[r] + t <= budget[r])
            cand[r[~ok]] = False
            r, head, t, need_blocks = r[ok], head[ok], t[ok], need_blocks[ok]
            if r.size == 0:
                break
            st[r, head] = RUNNING
            blk[r, head] = need_blocks
            free[r] -= need_blocks
            n_run[r] += 1
            c = np.where(chunked[r], np.minimum(t, budget[r]), t)
            pr.append(r)
            ps.append(head)
            pc.append(c)
            budget[r] -= np.where(chunked[r], c, 0)
            prefilled[r] += c
            partial[r] = np.where(c < t, head, partial[r])
            q_head[r] = (q_head[r] + 1) % lim.slots
            q_len[r] -= 1
            self.status_changed = True
            cand[r] = (q_len[r] > 0) & (n_run[r] < lim.max_batch[inst[r]]) & (budget[r] > 0) & (partial[r] < 0)

    def _cost(self, decoding: np.ndarray, n_dec: np.ndarray, prompts: _PromptWork) -> tuple[IterationCost, np.ndarray]:
        """The iteration's time and its parts, and the (k,) prompt tokens it processes."""
        v, idx, k, comp = self.v, self.idx, self.k, self.comp
        p_rows, p_chunk = prompts.rows, prompts.chunk
        p_before = comp[p_rows, prompts.slots].astype(np.float64)
        n_prefill = np.bincount(p_rows, weights=p_chunk, minlength=k)
        ctx_decode = np.where(decoding, comp + 1, 0).sum(axis=1, dtype=np.float64)
        pairs = ctx_decode + np.bincount(p_rows, weights=p_chunk * p_before + p_chunk * (p_chunk + 1) / 2, minlength=k)
        kv_read = ctx_decode + np.bincount(p_rows, weights=p_before + p_chunk, minlength=k)
        if np.any(n_prefill + n_dec == 0):
            bad = int(idx[np.argmax(n_prefill + n_dec == 0)])
            n_inst = self.lim.num_instances
            raise RuntimeError(
                f"instance {bad % n_inst} of sub-env {bad // n_inst} has work but can run nothing "
                f"(running {int(v.running[bad])}, waiting {int(v.waiting[bad])}); a request larger than its KV cache?"
            )
        cost = iteration_time(self.lim.coef.take(self.inst), n_prefill, n_dec, pairs, kv_read, v.freq_scale[idx])
        return cost, n_prefill

    def _decode(
        self, decoding: np.ndarray, grow: np.ndarray, t_iter: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decodes emit one token each; their previous token came at the end of the previous iteration (the clock).

        Returns the gathered (k, S') generated tokens, longest gaps and completion flags.
        """
        v, idx, sl = self.v, self.idx, self.sl
        self.blk += grow
        self.comp += decoding
        gen = v.generated[idx, sl]
        gen += decoding
        max_gap = v.max_gap[idx, sl]
        np.maximum(max_gap, np.where(decoding, t_iter[:, None], 0.0), out=max_gap)
        done = decoding & (gen >= v.output[idx, sl])
        return gen, max_gap, done

    def _finish_prompts(
        self, prompts: _PromptWork, t_end: np.ndarray, gen: np.ndarray, max_gap: np.ndarray, done: np.ndarray
    ) -> None:
        """Prompt chunks: those that finish their prompt emit a token (the first, or the next after a preemption)."""
        v, comp, tgt = self.v, self.comp, self.tgt
        p_rows, p_slots = prompts.rows, prompts.slots
        if not p_rows.size:
            return
        comp[p_rows, p_slots] += prompts.chunk.astype(comp.dtype)
        fin = comp[p_rows, p_slots] >= tgt[p_rows, p_slots]
        fr, fs = p_rows[fin], p_slots[fin]
        if not fr.size:
            return
        f = self.idx[fr]
        end = t_end[fr]
        gen[fr, fs] += 1
        first = v.first_token[f, fs]
        later = first >= 0
        max_gap[fr[later], fs[later]] = np.maximum(max_gap[fr[later], fs[later]], (end - v.last_token[f, fs])[later])
        v.first_token[f[~later], fs[~later]] = end[~later]
        v.last_token[f, fs] = end
        done[fr, fs] = gen[fr, fs] >= v.output[f, fs]

    def _complete(
        self, done: np.ndarray, gen: np.ndarray, max_gap: np.ndarray, t_end: np.ndarray
    ) -> tuple[Completions | None, np.ndarray]:
        """Record the completed requests and free their blocks and slots; (records or None, (k,) completed)."""
        v, idx = self.v, self.idx
        n_done = done.sum(axis=1)
        if not n_done.any():
            return None, n_done
        n_inst = self.lim.num_instances
        dr, ds = np.nonzero(done)
        fr = idx[dr]
        records = Completions(
            env=fr // n_inst,
            instance=fr % n_inst,
            request=v.request[fr, ds],
            tag=v.tag[fr, ds],
            prompt=v.prompt[fr, ds].astype(np.int64),
            output=gen[dr, ds].astype(np.int64),
            arrival=v.arrival[fr, ds],
            first_token=v.first_token[fr, ds],
            finish=t_end[dr],
            max_gap=max_gap[dr, ds],
        )
        self.free += np.where(done, self.blk, 0).sum(axis=1)
        self.blk[dr, ds] = 0
        self.st[dr, ds] = EMPTY
        self.n_run -= n_done
        v.request[fr, ds] = -1
        self.status_changed = True
        return records, n_done

    def _write_back(self, gen: np.ndarray, max_gap: np.ndarray, t_end: np.ndarray, n_done: np.ndarray) -> None:
        """Store the gathered copies in the flat state."""
        v, idx, sl = self.v, self.idx, self.sl
        if self.status_changed:
            v.status[idx, sl] = self.st
            v.target[idx, sl] = self.tgt
        v.computed[idx, sl] = self.comp
        v.generated[idx, sl] = gen
        v.blocks[idx, sl] = self.blk
        v.max_gap[idx, sl] = max_gap
        v.clock[idx] = t_end
        v.kv_used[idx] = self.lim.capacity_blocks[self.inst] - self.free
        v.running[idx] = self.n_run
        v.waiting[idx] = self.q_len
        v.queue_head[idx] = self.q_head
        v.partial[idx] = self.partial
        v.last_done[idx] = n_done
        v.slot_high[idx] = np.where(self.n_run + self.q_len == 0, 0, v.slot_high[idx])

    def _account(self, cost: IterationCost, n_prefill: np.ndarray, n_dec: np.ndarray) -> None:
        """Add the iteration to each instance's activity (attributed to the interval in which it started)."""
        act, idx = self.v.activity, self.idx
        act.busy_s[idx] += cost.total_s
        act.compute_s[idx] += cost.compute_s
        act.memory_s[idx] += cost.memory_s
        act.prefill_tokens[idx] += n_prefill
        act.decode_tokens[idx] += n_dec
        act.iterations[idx] += 1.0
        act.preemptions[idx] += self.preempted
