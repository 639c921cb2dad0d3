"""What one instance (or one server of them) sustains under latency SLOs, in closed form.

Steady-state throughput from the iteration-time model without simulating:
:func:`slo_throughput` for one :class:`~cloudgym.envs.core.llm.specs.InstanceSpec`
and request shape, :func:`max_throughput` without SLOs (LLMRouter-v0's load
denominator), :func:`llm_server_rates` per server of any GPU generation and
Llama-like model size (DCLifecycle-v0's capacity).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from cloudgym.envs.core.batch import check_config
from cloudgym.envs.core.llm.cost import iteration_time
from cloudgym.envs.core.llm.specs import GpuSpec, InstanceSpec, ModelSpec, instance


@dataclasses.dataclass(frozen=True)
class SloThroughput:
    """What one instance sustains for a request shape under TTFT/TBT SLOs."""

    tokens_per_s: float
    """Generated (output) tokens per second."""
    requests_per_s: float
    """Completed requests per second."""
    batch: int
    """Concurrent requests in the best feasible batch (0 when no batch meets the SLOs)."""
    tbt_s: float
    """Mean time between tokens at that batch, s."""
    ttft_s: float
    """Iteration time of a whole prompt mixed into that batch (first token without queueing), s."""
    limited_by: str
    """``"tbt"``, ``"ttft"``, ``"kv"`` or ``"max_batch"``: what stops a larger batch (``"infeasible"`` at 0)."""


def slo_throughput(
    spec: InstanceSpec,
    *,
    prompt_tokens: float,
    output_tokens: float,
    ttft_slo_s: float = 0.4,
    tbt_slo_s: float = 0.1,
    freq_scale: float = 1.0,
) -> SloThroughput:
    """Largest steady-state throughput of one instance whose batches meet both SLOs.

    Steady state with ``b`` requests in flight, each of ``prompt_tokens`` in
    and ``output_tokens`` out: every iteration decodes ``b`` tokens and
    prefills ``b x prompt / output`` prompt tokens on average (each request's
    prompt once per ``output`` iterations), over an average context of
    ``prompt + output / 2`` per request. The mean time between tokens is that
    iteration's time; the time to first token is an iteration mixing one
    whole prompt into ``b`` decodes (queueing excluded). Throughput
    ``b / t(b)`` rises with ``b``, so the answer is the largest ``b`` allowed
    by the SLOs, the KV cache (``b x (prompt + output / 2)`` tokens) and the
    engine's batch limit. DCLifecycle-v0 calls this with any
    :class:`GpuSpec` and ``ModelSpec.llama_like(params)``.
    """
    check_config(prompt_tokens >= 1 and output_tokens >= 1, spec, "prompt_tokens and output_tokens must be >= 1")
    check_config(ttft_slo_s > 0 and tbt_slo_s > 0, spec, "SLOs must be positive")
    coef = spec.coefficients()
    p, o = float(prompt_tokens), float(output_tokens)
    context = p + o / 2.0
    kv_limit = int(spec.kv_capacity_tokens // context)
    b_max = min(spec.scheduler.max_batch_requests, kv_limit)
    if b_max < 1:
        return SloThroughput(0.0, 0.0, 0, math.nan, math.nan, "infeasible")
    b = np.arange(1, b_max + 1, dtype=np.float64)
    prefill = b * p / o
    pairs = b * context + prefill * p / 2.0
    tbt = iteration_time(coef, prefill, b, pairs, b * context + prefill, freq_scale).total_s
    ttft = iteration_time(coef, p, b, b * context + p * (p + 1) / 2, b * context + p, freq_scale).total_s
    ok = (tbt <= tbt_slo_s) & (ttft <= ttft_slo_s)
    if not ok[0]:
        return SloThroughput(0.0, 0.0, 0, float(tbt[0]), float(ttft[0]), "infeasible")
    best = int(np.flatnonzero(ok)[-1])  # tbt and ttft grow with b, so the feasible set is a prefix
    if best + 1 < b_max:
        limited = "tbt" if tbt[best + 1] > tbt_slo_s else "ttft"
    else:
        limited = "kv" if kv_limit <= spec.scheduler.max_batch_requests else "max_batch"
    tokens = float(b[best] / tbt[best])
    return SloThroughput(tokens, tokens / o, int(b[best]), float(tbt[best]), float(ttft[best]), limited)


def max_throughput(spec: InstanceSpec, *, prompt_tokens: float, output_tokens: float) -> SloThroughput:
    """Throughput at the largest batch memory and the engine allow, without latency SLOs."""
    return slo_throughput(
        spec, prompt_tokens=prompt_tokens, output_tokens=output_tokens, ttft_slo_s=math.inf, tbt_slo_s=math.inf
    )


@functools.lru_cache(maxsize=8192)
def llm_server_rates(
    gpu: tuple[float, float, float, float, float],
    params: float,
    gpus_per_server: int,
    prompt_tokens: int,
    output_tokens: int,
    ttft_slo_s: float,
    tbt_slo_s: float,
) -> tuple[float, float, float]:
    """(mixed, prefill-only, decode-only) output tokens/s of one server serving a Llama-like model of ``params``.

    ``gpu`` is (dense FP16 TFLOPS, HBM TB/s, HBM GB, NVLink GB/s both ways, TDP W). Mixed is the LLM model's
    SLO throughput; prefill-only packs as many prompts into one iteration as the TTFT SLO allows; decode-only
    runs the largest batch the TBT SLO and the KV cache allow. Zero when the model cannot meet the SLOs.
    """
    tflops, hbm, mem, nvlink, tdp = gpu
    spec_gpu = GpuSpec(name="dc-gen", peak_tflops=tflops, hbm_tbps=hbm, memory_gb=mem, link_gbps=nvlink / 2, tdp_w=tdp)
    try:
        spec = instance(ModelSpec.llama_like(params), spec_gpu, None)
    except ValueError:
        return 0.0, 0.0, 0.0
    per_server = gpus_per_server / spec.num_gpus
    mixed = slo_throughput(
        spec, prompt_tokens=prompt_tokens, output_tokens=output_tokens, ttft_slo_s=ttft_slo_s, tbt_slo_s=tbt_slo_s
    ).tokens_per_s
    p, o = float(prompt_tokens), float(output_tokens)
    limit = max(int(spec.scheduler.max_batch_requests), 1)
    k = np.arange(1, limit + 1, dtype=np.float64)
    prefill_s = np.asarray(spec.prefill_time(k * p))
    ok = prefill_s <= ttft_slo_s
    prefill = float(np.max(np.where(ok, k / prefill_s, 0.0))) * o
    context = p + o / 2
    b = k[k * context <= spec.kv_capacity_tokens]
    decode = 0.0
    if b.size:
        decode_s = np.asarray(spec.decode_time(b, b * context))
        decode = float(np.max(np.where(decode_s <= tbt_slo_s, b / decode_s, 0.0)))
    return mixed * per_server, prefill * per_server, decode * per_server
