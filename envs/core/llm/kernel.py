"""The compiled LLM instance kernel: every (sub-env, instance) pair iterates on its own up to its horizon.

:meth:`LLMCluster.advance <cloudgym.envs.core.llm.cluster.LLMCluster.advance>`
runs this by default. The numpy path (:mod:`~cloudgym.envs.core.llm.batching`
called in lockstep rounds by ``LLMCluster._advance_numpy``) stays as the
reference: this kernel does, per instance, exactly the arithmetic of its
phases in the same order (preempt for KV growth, schedule the part-prefilled
prompt, admit, cost, decode, finish prompts, complete, write back, account),
so every float64 result is bit-identical to it:

* the sums numpy forms with pairwise or ``bincount`` summation (prompt
  tokens, attention pairs, KV tokens read) are sums of integers below 2**53,
  exact in any order;
* no fused multiply-add (numba does not contract without ``fastmath``);
* ``x ** p`` (the roofline's p-norm) is computed by the same function
  numpy's float64 ``power`` loop calls on this machine. On x86 CPUs with
  AVX-512, numpy calls Intel SVML's ``__svml_pow8_ha``, which differs from
  libm's ``pow`` in the last bit for ~5% of arguments; the kernel calls that
  same exported symbol of numpy's extension module (one lane of eight). Which
  one numpy uses is probed once at import against ``np.power``
  (:func:`pow_mode`); elsewhere it is libm's ``pow``, as numba's ``**``.

Instances do not interact inside an advance, so the lockstep rounds of the
numpy path are only an order: an instance's j-th iteration of the call runs
in round j there. Completions are recorded with their iteration number and
put back in the numpy path's order (round, flat instance, slot), so callers
that sum over them (``np.bincount`` with weights) see the same sums.

Compilation is cached on disk (``cache=True``, numba's ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import warnings
from typing import Any

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from cloudgym.envs import kernels
from cloudgym.envs.core.llm.batching import BatchingLimits
from cloudgym.envs.core.llm.state import EMPTY, RUNNING, WAITING, Completions, LLMClusterState

POW_LIBM, POW_SVML = 0, 1
"""How the kernel computes ``x ** p``: libm's ``pow``, or the SVML routine numpy's AVX-512 loop calls."""

_SVML_SYMBOL = "__svml_pow8_ha"
_LINKED_SYMBOL = "cloudgym_numpy_pow8"
"""The name the kernel calls: numpy's SVML pow when numpy uses it, else a never-called stand-in (see _link)."""


def _link() -> bool:
    """Give the kernel's external pow symbol an address; True when it is numpy's SVML routine.

    The symbol must resolve for the compiled (or cached) kernel to load even
    where it is never called; without SVML it points at a stand-in and
    :func:`pow_mode` keeps the kernel on the libm branch.
    """
    _multiarray_umath = importlib.import_module("numpy._core._multiarray_umath")
    features = getattr(_multiarray_umath, "__cpu_features__", {})
    try:
        address = ctypes.cast(ctypes.CDLL(_multiarray_umath.__file__)[_SVML_SYMBOL], ctypes.c_void_p).value
    except (OSError, AttributeError):
        address = None
    usable = address is not None and bool(features.get("AVX512_SKX", False))
    if not usable:
        # Any resolvable address will do: the kernel never calls the symbol in libm mode.
        address = ctypes.cast(ctypes.pythonapi.Py_IsInitialized, ctypes.c_void_p).value
    llvm_binding.add_symbol(_LINKED_SYMBOL, address)
    return usable


_SVML_LINKED = _link()


@intrinsic
def _svml_pow(typingctx: Any, x: Any, y: Any) -> Any:
    """``x ** y`` by numpy's SVML routine, on lane 0 of an 8-lane call (the other lanes compute 1 ** 1)."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        vec = ir.VectorType(ir.DoubleType(), 8)
        fn = builder.module.globals.get(_LINKED_SYMBOL)
        if fn is None:
            fn = ir.Function(builder.module, ir.FunctionType(vec, [vec, vec]), _LINKED_SYMBOL)
        ones = ir.Constant(vec, [1.0] * 8)
        lane = ir.Constant(ir.IntType(32), 0)
        x, y = (builder.insert_element(ones, a, lane) for a in args)
        out = builder.call(fn, [x, y])
        return builder.extract_element(out, lane)

    return sig, codegen


@numba.njit(cache=True, error_model="numpy")
def _pow(x: float, y: float, mode: int) -> float:
    if mode == POW_SVML:
        return _svml_pow(x, y)  # type: ignore[call-arg]  # numba intrinsics take the typing context implicitly
    return x**y


@numba.njit(cache=True, error_model="numpy")
def _pow_many(x: np.ndarray, y: np.ndarray, mode: int) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = _pow(x[i], y[i], mode)
    return out


def _probe_pow_mode() -> int:
    """The mode whose pow equals ``np.power`` on probe arguments like the roofline's (ratios, their p-norms)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(4096), 1.0 + rng.random(4096), [0.0, 1.0, 0.5, 1e-300]])
    y = np.concatenate([np.full(4096, 2.0), np.full(4096, 0.5), [2.0, 2.0, 3.0, 1.5]])
    y[::7] = 1.0 + 3.0 * rng.random(y[::7].size)
    want = np.power(x, y)
    singles = np.array([np.power(x[i : i + 1], y[i : i + 1])[0] for i in range(0, x.size, 97)])
    for mode in (POW_SVML, POW_LIBM) if _SVML_LINKED else (POW_LIBM,):
        got = _pow_many(x, y, mode)
        if np.array_equal(got, want) and np.array_equal(got[::97], singles):
            return mode
    warnings.warn(
        "cloudgym LLM kernel: no pow the kernel can call equals numpy's float64 power on this machine; "
        "the kernel uses libm's pow, and its iteration times may differ from the numpy path's in the last bit",
        RuntimeWarning,
        stacklevel=2,
    )
    return POW_LIBM


_POW_MODE: int | None = None


def pow_mode() -> int:
    """:data:`POW_SVML` or :data:`POW_LIBM`: the pow numpy's float64 power uses here (probed once)."""
    global _POW_MODE
    if _POW_MODE is None:
        _POW_MODE = _probe_pow_mode()
    return _POW_MODE


def kernel_default() -> bool:
    """Whether clusters use the kernel unless told otherwise: the one switch of every compiled kernel.

    ``CLOUDGYM_KERNELS=numpy`` (or :func:`cloudgym.envs.kernels.set_enabled`) selects the numpy reference.
    """
    return kernels.enabled()


# Columns of the kernel's completion records.
_R_ROUND, _R_FLAT, _R_SLOT, _R_REQUEST, _R_TAG, _R_PROMPT, _R_OUTPUT = range(7)
_R_ARRIVAL, _R_FIRST, _R_FINISH, _R_GAP = range(4)


# The phase helpers of _advance are inlined into it in numba's IR (inline="always"; called, they cost it about
# twice the time). Every array a helper takes still costs a reference count up and down per call, so the helpers
# take only the arrays they use and the rare phases (idle jump, preemption, completions) run only when needed.


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _idle_jump(
    f: int,
    until: float,
    clock: np.ndarray,
    waiting: np.ndarray,
    q_head_a: np.ndarray,
    last_done: np.ndarray,
    queue: np.ndarray,
    arrival: np.ndarray,
) -> tuple[bool, float]:
    """advance(): an idle instance jumps to its queue head's arrival, or to the horizon; (go on, clock)."""
    now = clock[f]
    head_arrival = np.inf
    if waiting[f] > 0:
        head_arrival = arrival[f, queue[f, q_head_a[f]]]
    jump = min(max(head_arrival, now), until)
    if jump > now:
        clock[f] = jump
        last_done[f] = 0
        now = jump
    return head_arrival <= now and now < until, now


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _scan_decode(
    f: int,
    sh: int,
    bt: int,
    status: np.ndarray,
    target: np.ndarray,
    computed: np.ndarray,
    blocks: np.ndarray,
    decoding: np.ndarray,
    grow: np.ndarray,
) -> tuple[int, int, float]:
    """Mark the decoding slots and those whose KV grows a block; (blocks needed, decode count, decode context)."""
    need = 0
    n_dec = 0
    ctx_decode = 0.0
    for s in range(sh):
        dec = status[f, s] == RUNNING and computed[f, s] >= target[f, s]
        decoding[s] = dec
        g = dec and computed[f, s] >= blocks[f, s] * bt
        grow[s] = g
        need += g
        if dec:
            n_dec += 1
            ctx_decode += float(computed[f, s] + 1)
    return need, n_dec, ctx_decode


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _preempt(
    f: int,
    sh: int,
    now: float,
    need: int,
    free: int,
    counts: tuple[int, float, int, int, int, int],
    slot_state: tuple[np.ndarray, ...],
    last_token: np.ndarray,
    decoding: np.ndarray,
    grow: np.ndarray,
) -> tuple[int, int, float, int, int, int, int, float]:
    """Preempt the latest requests until the KV growth fits; (free, n_dec, ctx_decode, n_run, q_head, q_len,
    partial, preempted). Victims come out of the decode count and context again: integers, exact in any order."""
    queue, status, request, _tag, prompt, _output, target, computed, generated, blocks = slot_state
    n_dec, ctx_decode, n_run, q_head, q_len, part = counts
    n_slots = status.shape[1]
    preempted = 0.0
    while need > free:
        victim = 0
        best = np.int64(-1) if status[f, 0] != RUNNING else request[f, 0]
        for s in range(1, sh):
            v = request[f, s] if status[f, s] == RUNNING else np.int64(-1)
            if v > best:
                best = v
                victim = s
        free += blocks[f, victim]
        need -= grow[victim]
        if decoding[victim]:
            n_dec -= 1
            ctx_decode -= float(computed[f, victim] + 1)
        blocks[f, victim] = 0
        status[f, victim] = WAITING
        decoding[victim] = False
        grow[victim] = False
        target[f, victim] = prompt[f, victim] + generated[f, victim]
        computed[f, victim] = 0
        if generated[f, victim] > 0:
            last_token[f, victim] = now
        if part == victim:
            part = -1
        n_run -= 1
        q_head = (q_head - 1) % n_slots
        queue[f, q_head] = victim
        q_len += 1
        preempted += 1.0
    free -= need
    return free, n_dec, ctx_decode, n_run, q_head, q_len, part, preempted


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _schedule(
    f: int,
    now: float,
    budget: np.int64,
    is_chunked: bool,
    bt: int,
    room: tuple[np.int64, np.int64, np.int64],
    queued: tuple[int, int, int, int],
    slots: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    p_slot: np.ndarray,
    p_chunk: np.ndarray,
) -> tuple[np.int64, int, int, int, int, int]:
    """Prompt work into ``p_slot``/``p_chunk``: the part-prefilled prompt first (chunked mode), then admission,
    FCFS, the first head that does not fit stopping it; (free, n_run, q_head, q_len, partial, prompt count)."""
    queue, status, target, computed, blocks, arrival = slots
    free, watermark, batch_limit = room
    n_run, q_head, q_len, part = queued
    n_slots = status.shape[1]
    n_p = 0
    if part >= 0:
        c = min(np.int64(target[f, part] - computed[f, part]), max(budget, np.int64(0)))
        if c > 0:
            p_slot[n_p] = part
            p_chunk[n_p] = c
            n_p += 1
        budget -= c
        if computed[f, part] + c >= target[f, part]:
            part = -1
    prefilled = np.int64(0)
    while q_len > 0 and n_run < batch_limit and budget > 0 and part < 0:
        head = queue[f, q_head]
        t = np.int64(target[f, head])
        need_blocks = -(-t // bt)
        ok = arrival[f, head] <= now
        ok = ok and need_blocks <= free - watermark
        ok = ok and (is_chunked or prefilled == 0 or prefilled + t <= budget)
        if not ok:
            break
        status[f, head] = RUNNING
        blocks[f, head] = need_blocks
        free -= need_blocks
        n_run += 1
        c = min(t, budget) if is_chunked else t
        p_slot[n_p] = head
        p_chunk[n_p] = c
        n_p += 1
        if is_chunked:
            budget -= c
        prefilled += c
        if c < t:
            part = head
        q_head = (q_head + 1) % n_slots
        q_len -= 1
    return free, n_run, q_head, q_len, part, n_p


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _prompt_sums(
    f: int, n_p: int, p_slot: np.ndarray, p_chunk: np.ndarray, computed: np.ndarray
) -> tuple[float, float, float]:
    """The prompt chunks' tokens, attention pairs and KV tokens read (integer sums, exact in any order)."""
    n_prefill = 0.0
    pair_sum = 0.0
    read_sum = 0.0
    for j in range(n_p):
        chunk = float(p_chunk[j])
        before = float(computed[f, p_slot[j]])
        n_prefill += chunk
        pair_sum += chunk * before + chunk * (chunk + 1) / 2
        read_sum += before + chunk
    return n_prefill, pair_sum, read_sum


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _roofline(
    mode: int, tokens: float, pairs: float, kv_read: float, freq: float, c: tuple[float, ...]
) -> tuple[float, float, float]:
    """The roofline of iteration_time, operation for operation, ``c`` the instance's coefficients;
    (total, compute, memory)."""
    fpt, fpp, fps, wbytes, kvb, bps, overlap, overhead, comm_tok = c
    compute = (fpt * tokens + fpp * pairs) / (fps * freq)
    memory = (wbytes + kvb * kv_read) / bps
    comm = comm_tok * tokens
    p = overlap
    hi = max(compute, memory)
    lo = min(compute, memory)
    joined = hi * _pow(1.0 + _pow(lo / (hi if hi > 0 else 1.0), p, mode), 1.0 / p, mode)
    total = overhead + joined + comm
    return total, compute, memory


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _emit(
    f: int,
    sh: int,
    n_p: int,
    total: float,
    t_end: float,
    scratch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    slots: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    times: tuple[np.ndarray, ...],
) -> bool:
    """Decode one token each (the previous one came at the clock), then the prompt chunks that finish their
    prompt emit one; marks ``done``, True when any request finished."""
    decoding, grow, done, p_slot, p_chunk = scratch
    output, target, computed, generated, blocks = slots
    first_token, last_token, max_gap = times
    any_done = False
    for s in range(sh):
        if decoding[s]:
            blocks[f, s] += grow[s]
            computed[f, s] += 1
            generated[f, s] += 1
            if total > max_gap[f, s]:
                max_gap[f, s] = total
            finished = generated[f, s] >= output[f, s]
            done[s] = finished
            any_done |= finished
        else:
            done[s] = False
    for j in range(n_p):
        s = p_slot[j]
        computed[f, s] += p_chunk[j]
        if computed[f, s] >= target[f, s]:
            generated[f, s] += 1
            if first_token[f, s] >= 0:
                max_gap[f, s] = max(max_gap[f, s], t_end - last_token[f, s])
            else:
                first_token[f, s] = t_end
            last_token[f, s] = t_end
            finished = generated[f, s] >= output[f, s]
            done[s] = finished
            any_done |= finished
    return any_done


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _complete(
    f: int,
    sh: int,
    rnd: int,
    t_end: float,
    free: np.int64,
    done: np.ndarray,
    records: tuple[int, np.ndarray, np.ndarray],
    slot_state: tuple[np.ndarray, ...],
    times: tuple[np.ndarray, ...],
) -> tuple[int, np.int64, int, np.ndarray, np.ndarray]:
    """Completions: record (doubling the record arrays when full), free blocks and slots;
    (completed, free, records, int records, float records)."""
    _queue, status, request, tag, prompt, _output, _target, _computed, generated, blocks = slot_state
    arrival, first_token, _last_token, max_gap = times
    n_rec, rec_i, rec_f = records
    n_done = 0
    for s in range(sh):
        if not done[s]:
            continue
        if n_rec == rec_i.shape[0]:
            cap = 2 * rec_i.shape[0]
            grown_i = np.empty((cap, 7), np.int64)
            grown_f = np.empty((cap, 4), np.float64)
            grown_i[:n_rec] = rec_i[:n_rec]
            grown_f[:n_rec] = rec_f[:n_rec]
            rec_i, rec_f = grown_i, grown_f
        rec_i[n_rec, _R_ROUND] = rnd
        rec_i[n_rec, _R_FLAT] = f
        rec_i[n_rec, _R_SLOT] = s
        rec_i[n_rec, _R_REQUEST] = request[f, s]
        rec_i[n_rec, _R_TAG] = tag[f, s]
        rec_i[n_rec, _R_PROMPT] = prompt[f, s]
        rec_i[n_rec, _R_OUTPUT] = generated[f, s]
        rec_f[n_rec, _R_ARRIVAL] = arrival[f, s]
        rec_f[n_rec, _R_FIRST] = first_token[f, s]
        rec_f[n_rec, _R_FINISH] = t_end
        rec_f[n_rec, _R_GAP] = max_gap[f, s]
        n_rec += 1
        n_done += 1
        free += blocks[f, s]
        blocks[f, s] = 0
        status[f, s] = EMPTY
        request[f, s] = -1
    return n_done, free, n_rec, rec_i, rec_f


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _coef_at(coef: tuple[np.ndarray, ...], i: int) -> tuple[float, ...]:
    """Instance ``i``'s roofline coefficients."""
    fpt, fpp, fps, wbytes, kvb, bps, overlap, overhead, comm_tok = coef
    return fpt[i], fpp[i], fps[i], wbytes[i], kvb[i], bps[i], overlap[i], overhead[i], comm_tok[i]


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _account(f: int, spent: tuple[float, float, float, float, int, float], activity: tuple[np.ndarray, ...]) -> None:
    """The activity of the interval the iteration started in."""
    busy_s, compute_s, memory_s, prefill_tok, decode_tok, iterations, preemptions = activity
    total, compute, memory, n_prefill, n_dec, preempted = spent
    busy_s[f] += total
    compute_s[f] += compute
    memory_s[f] += memory
    prefill_tok[f] += n_prefill
    decode_tok[f] += n_dec
    iterations[f] += 1.0
    preemptions[f] += preempted


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _advance(
    horizon: np.ndarray,
    num_instances: int,
    mode: int,
    limits: tuple[np.ndarray, ...],
    coef: tuple[np.ndarray, ...],
    inst_state: tuple[np.ndarray, ...],
    slot_state: tuple[np.ndarray, ...],
    times: tuple[np.ndarray, ...],
    activity: tuple[np.ndarray, ...],
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Run every flat instance whose clock lags its horizon; (bad instance or -1, records, int and float records).

    The phases mirror ``batching._Iteration`` step for step (see its methods for the why of each rule).
    """
    block_tokens, capacity_blocks, watermark_blocks, max_batch, max_tokens, chunked = limits
    clock, freq, kv_used, running, waiting, q_head_a, partial_a, last_done, slot_high = inst_state
    queue, status, _request, _tag, _prompt, output, target, computed, generated, blocks = slot_state
    arrival, _first_token, last_token, _max_gap = times
    n_flat, n_slots = status.shape
    decoding, grow, done = np.zeros(n_slots, np.bool_), np.zeros(n_slots, np.bool_), np.zeros(n_slots, np.bool_)
    p_slot, p_chunk = np.zeros(n_slots + 1, np.int64), np.zeros(n_slots + 1, np.int64)
    rec_i, rec_f, n_rec = np.empty((64, 7), np.int64), np.empty((64, 4), np.float64), 0
    for f in range(n_flat):
        until = horizon[f // num_instances]
        i = f % num_instances
        bt = block_tokens[i]
        c_i = _coef_at(coef, i)
        rnd = 0
        while clock[f] < until:
            now = clock[f]
            if running[f] == 0:
                go, now = _idle_jump(f, until, clock, waiting, q_head_a, last_done, queue, arrival)
                if not go:
                    break
            sh = slot_high[f]
            free = capacity_blocks[i] - kv_used[f]
            need, n_dec, ctx_decode = _scan_decode(f, sh, bt, status, target, computed, blocks, decoding, grow)
            n_run, q_head, q_len, part, preempted = running[f], q_head_a[f], waiting[f], partial_a[f], 0.0
            if need > free:
                counts = (n_dec, ctx_decode, n_run, q_head, q_len, part)
                free, n_dec, ctx_decode, n_run, q_head, q_len, part, preempted = _preempt(
                    f, sh, now, need, free, counts, slot_state, last_token, decoding, grow
                )
            else:
                free -= need
            budget = max_tokens[i] - n_dec if chunked[i] else max_tokens[i]
            room, queued = (free, watermark_blocks[i], max_batch[i]), (n_run, q_head, q_len, part)
            slots = (queue, status, target, computed, blocks, arrival)
            free, n_run, q_head, q_len, part, n_p = _schedule(
                f, now, budget, chunked[i], bt, room, queued, slots, p_slot, p_chunk
            )
            n_prefill, pair_sum, read_sum = _prompt_sums(f, n_p, p_slot, p_chunk, computed)
            pairs = ctx_decode + pair_sum
            kv_read = ctx_decode + read_sum
            if n_prefill + n_dec == 0:
                return f, n_rec, rec_i[:n_rec], rec_f[:n_rec]
            total, compute, memory = _roofline(mode, n_prefill + float(n_dec), pairs, kv_read, freq[f], c_i)
            t_end = now + total
            scratch = (decoding, grow, done, p_slot, p_chunk)
            n_done = 0
            if _emit(f, sh, n_p, total, t_end, scratch, (output, target, computed, generated, blocks), times[1:]):
                n_done, free, n_rec, rec_i, rec_f = _complete(
                    f, sh, rnd, t_end, free, done, (n_rec, rec_i, rec_f), slot_state, times
                )
            n_run -= n_done
            # Write back the per-instance values, then the activity of the interval the iteration started in.
            clock[f] = t_end
            kv_used[f] = capacity_blocks[i] - free
            running[f], waiting[f], q_head_a[f], partial_a[f], last_done[f] = n_run, q_len, q_head, part, n_done
            if n_run + q_len == 0:
                slot_high[f] = 0
            _account(f, (total, compute, memory, n_prefill, n_dec, preempted), activity)
            rnd += 1
    return -1, n_rec, rec_i[:n_rec], rec_f[:n_rec]


@numba.njit(cache=True, nogil=True)
def _enqueue(
    num_instances: int,
    block_tokens: np.ndarray,
    room_blocks: np.ndarray,
    flat: np.ndarray,
    new: tuple[np.ndarray, ...],
    slot_state: tuple[np.ndarray, ...],
    times: tuple[np.ndarray, ...],
    estimate: np.ndarray,
    slot_high: np.ndarray,
    queue_head: np.ndarray,
    waiting: np.ndarray,
) -> np.ndarray:
    """``LLMCluster.enqueue`` one request at a time, in the given order (pairs are independent, so the numpy
    path's rank-by-rank order comes to the same); (m,) accepted."""
    n_request, n_tag, n_prompt, n_output, n_arrival, n_estimate = new
    queue, status, request, tag, prompt, output, target, computed, generated, blocks = slot_state
    arrival, first_token, last_token, max_gap = times
    n_slots = status.shape[1]
    accepted = np.zeros(flat.size, np.bool_)
    for j in range(flat.size):
        f = flat[j]
        i = f % num_instances
        # fits_ever: the whole context's blocks within the room above the watermark.
        if -(-(n_prompt[j] + n_output[j]) // block_tokens[i]) > room_blocks[i]:
            continue
        slot = -1
        for s in range(n_slots):
            if status[f, s] == EMPTY:
                slot = s
                break
        if slot < 0:
            continue
        status[f, slot] = WAITING
        request[f, slot] = n_request[j]
        tag[f, slot] = n_tag[j]
        prompt[f, slot] = n_prompt[j]
        output[f, slot] = n_output[j]
        target[f, slot] = n_prompt[j]
        computed[f, slot] = 0
        generated[f, slot] = 0
        blocks[f, slot] = 0
        arrival[f, slot] = n_arrival[j]
        first_token[f, slot] = -1.0
        last_token[f, slot] = n_arrival[j]
        max_gap[f, slot] = 0.0
        estimate[f, slot] = n_estimate[j]
        slot_high[f] = max(slot_high[f], slot + 1)
        queue[f, (queue_head[f] + waiting[f]) % n_slots] = slot
        waiting[f] += 1
        accepted[j] = True
    return accepted


@dataclasses.dataclass(frozen=True)
class Requests:
    """Arrivals to queue (flat instance index and what ``LLMCluster.enqueue`` stores), (m,) each."""

    flat: np.ndarray  # int64, sub-env x N + instance
    request: np.ndarray  # int64
    tag: np.ndarray  # int64
    prompt: np.ndarray  # int64
    output: np.ndarray  # int64
    arrival: np.ndarray  # float64, s
    estimate: np.ndarray  # float64


def enqueue(limits: BatchingLimits, flat: LLMClusterState, new: Requests) -> np.ndarray:
    """Queue the arrivals on their instances of the flat state; (m,) True where accepted (``LLMCluster.enqueue``)."""
    accepted: np.ndarray = _enqueue(
        limits.num_instances,
        limits.block_tokens,
        limits.capacity_blocks - limits.watermark_blocks,
        new.flat,
        (new.request, new.tag, new.prompt, new.output, new.arrival, new.estimate),
        tuple(getattr(flat, name) for name in _SLOT_FIELDS),
        (flat.arrival, flat.first_token, flat.last_token, flat.max_gap),
        flat.estimate,
        flat.slot_high,
        flat.queue_head,
        flat.waiting,
    )
    return accepted


_COEF_FIELDS = (
    "flops_per_token",
    "flops_per_pair",
    "flops_per_s",
    "weight_bytes",
    "kv_bytes_per_token",
    "bytes_per_s",
    "overlap",
    "overhead_s",
    "comm_s_per_token",
)
_INSTANCE_FIELDS = (
    "clock",
    "freq_scale",
    "kv_used",
    "running",
    "waiting",
    "queue_head",
    "partial",
    "last_done",
    "slot_high",
)
_SLOT_FIELDS = ("queue", "status", "request", "tag", "prompt", "output", "target", "computed", "generated", "blocks")
"""The kernel's tuples of arrays, in the order it unpacks them."""


def advance(limits: BatchingLimits, flat: LLMClusterState, until: np.ndarray) -> Completions:
    """Run every instance of the flat state until its clock reaches ``until`` (B,) or it idles; what completed."""
    c, a = limits.coef, flat.activity
    bad, _, rec_i, rec_f = _advance(
        np.ascontiguousarray(until, np.float64),
        limits.num_instances,
        pow_mode(),
        (
            limits.block_tokens,
            limits.capacity_blocks,
            limits.watermark_blocks,
            limits.max_batch,
            limits.max_tokens,
            limits.chunked,
        ),
        tuple(getattr(c, name) for name in _COEF_FIELDS),
        tuple(getattr(flat, name) for name in _INSTANCE_FIELDS),
        tuple(getattr(flat, name) for name in _SLOT_FIELDS),
        (flat.arrival, flat.first_token, flat.last_token, flat.max_gap),
        (a.busy_s, a.compute_s, a.memory_s, a.prefill_tokens, a.decode_tokens, a.iterations, a.preemptions),
    )
    if bad >= 0:
        n = limits.num_instances
        raise RuntimeError(
            f"instance {bad % n} of sub-env {bad // n} has work but can run nothing "
            f"(running {int(flat.running[bad])}, waiting {int(flat.waiting[bad])}); a request larger than its KV cache?"
        )
    # The numpy path reports round by round, each round by flat instance then slot: the kernel's records are by
    # instance then iteration (round), so a stable sort on the round restores that order.
    order = np.argsort(rec_i[:, _R_ROUND], kind="stable")
    ri, rf = rec_i[order], rec_f[order]
    flat_ids = ri[:, _R_FLAT]
    return Completions(
        env=flat_ids // limits.num_instances,
        instance=flat_ids % limits.num_instances,
        request=ri[:, _R_REQUEST],
        tag=ri[:, _R_TAG],
        prompt=ri[:, _R_PROMPT],
        output=ri[:, _R_OUTPUT],
        arrival=rf[:, _R_ARRIVAL],
        first_token=rf[:, _R_FIRST],
        finish=rf[:, _R_FINISH],
        max_gap=rf[:, _R_GAP],
    )
