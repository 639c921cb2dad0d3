"""The roofline time of one continuous-batching iteration.

One iteration runs every scheduled request through the model once: ``P``
prompt (prefill) tokens and ``D`` decode tokens (one per decoding request).
With ``A`` attention (query, key) pairs and ``K`` KV-cache tokens read::

    t_compute = (2 params (P + D) + attn_flops_per_pair A) / (g x peak x mfu x f/f_max)
    t_memory  = (W + kv_bytes_per_token K) / (g x hbm_bandwidth x mbu)
    t_comm    = [g > 1] 2 layers (allreduce_latency + 2 (g-1)/g (P + D) hidden bytes / (link_bw x link_eff))
    t         = overhead + (t_compute^p + t_memory^p)^(1/p) + t_comm

A roofline: prefill (large ``P``) is compute-bound and grows linearly with
prompt length; decode (``P = 0``, small ``D``) is memory-bound (weights plus
the batch's KV cache are read once per iteration) and nearly flat in batch
size until the ridge (about 130 decoding requests for 7B on an A100). The
p-norm (p = 2) replaces the sharp ``max`` of the ideal roofline: measured
kernels near the ridge are slower than either bound alone. Only compute
scales with the SM clock ``f`` (HBM has its own clock), so a lower frequency
stretches prefill far more than decode, as POLCA and Splitwise measure.
Prefill/decode interference is then real, not averaged: an iteration that
mixes a 1,500-token prefill into 30 decodes takes ~110 ms instead of ~12 ms,
and all 30 decoding requests wait for it.

Calibration (``overhead``, ``mfu``, ``mbu``, ``p``, ``allreduce_latency``, the
defaults of :class:`~cloudgym.envs.core.llm.specs.InstanceSpec`): fitted by
hand to published single-request measurements (TensorRT-LLM v0.5, lmdeploy
v0.1 and NeMo benchmark tables on A100-80GB, vLLM nightly on H200); every
point is within 30% and most within 15%; ``python scripts/llm_calibration.py``
prints the comparison and ``docs/llm_router.md`` discusses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class CostCoefficients:
    """Constants of the iteration-time model, scalars or per-instance arrays (N,)."""

    flops_per_token: np.ndarray  # FLOP per processed token (2 x params)
    flops_per_pair: np.ndarray  # FLOP per attention (query, key) pair
    flops_per_s: np.ndarray  # achieved FLOP/s of the group at f_max (g x peak x mfu)
    weight_bytes: np.ndarray  # bytes of weights read per iteration
    kv_bytes_per_token: np.ndarray  # bytes of KV cache per token read
    bytes_per_s: np.ndarray  # achieved HBM bytes/s of the group (g x bandwidth x mbu)
    overlap: np.ndarray  # p of the compute/memory p-norm
    overhead_s: np.ndarray  # fixed time per iteration, tensor-parallel all-reduce latency included, s
    comm_s_per_token: np.ndarray  # all-reduce transfer time per token in the iteration, s

    @classmethod
    def stack(cls, coefs: Sequence[CostCoefficients]) -> CostCoefficients:
        """Per-instance arrays (N,) from N scalar sets."""
        return cls(
            **{f.name: np.array([getattr(c, f.name) for c in coefs], np.float64) for f in dataclasses.fields(cls)}
        )

    def take(self, index: np.ndarray) -> CostCoefficients:
        """The coefficients of the listed instances (fancy index into per-instance arrays)."""
        return CostCoefficients(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True)
class IterationCost:
    """Time of a batch of iterations and its parts, s (arrays shaped like the inputs)."""

    total_s: np.ndarray
    compute_s: np.ndarray  # at the given frequency
    memory_s: np.ndarray
    comm_s: np.ndarray


def iteration_time(
    coef: CostCoefficients,
    prefill_tokens: Any,
    decode_tokens: Any,
    attention_pairs: Any,
    kv_read_tokens: Any,
    freq_scale: Any,
) -> IterationCost:
    """Roofline time of iterations (see the module docstring); inputs broadcast against each other.

    ``prefill_tokens`` and ``decode_tokens`` are processed in the iteration,
    ``attention_pairs`` the (query, key) pairs its attention computes,
    ``kv_read_tokens`` the KV-cache tokens it reads, ``freq_scale`` the SM
    clock as a share of the maximum (compute time scales with 1 / freq_scale).
    """
    tokens = np.asarray(prefill_tokens, np.float64) + np.asarray(decode_tokens, np.float64)
    compute = (coef.flops_per_token * tokens + coef.flops_per_pair * np.asarray(attention_pairs, np.float64)) / (
        coef.flops_per_s * np.asarray(freq_scale, np.float64)
    )
    memory = (coef.weight_bytes + coef.kv_bytes_per_token * np.asarray(kv_read_tokens, np.float64)) / coef.bytes_per_s
    comm = coef.comm_s_per_token * tokens
    p = coef.overlap
    # (a^p + b^p)^(1/p) computed as m (1 + (n/m)^p)^(1/p) with m the larger: no overflow, exact at p = inf limits.
    hi = np.maximum(compute, memory)
    lo = np.minimum(compute, memory)
    joined = hi * (1.0 + (lo / np.where(hi > 0, hi, 1.0)) ** p) ** (1.0 / p)
    total = coef.overhead_s + joined + comm
    return IterationCost(total_s=total, compute_s=compute, memory_s=memory, comm_s=comm)
