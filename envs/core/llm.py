"""LLM inference instances: roofline iteration time, presets, and a batched continuous-batching simulator.

This module is problem-agnostic: LLMRouter-v0 routes requests to its
instances, GPUPowerCap-v0 runs rows of them under power caps (per-instance
SM frequency, per-interval phase activity), DCLifecycle-v0 asks what a GPU
generation can serve under latency SLOs (:func:`slo_throughput`). It knows
nothing of any env.

What is modelled
================

**Hardware and model** (:class:`GpuSpec`, :class:`ModelSpec`,
:class:`InstanceSpec`). An *instance* is one model replica on a
tensor-parallel group of ``num_gpus`` identical GPUs. Every constant is
derived from datasheet numbers and the model's shape:

* weight bytes ``W = params x bytes_per_value`` (FP16/BF16: 2 bytes);
* KV-cache bytes per token ``= 2 (K and V) x layers x kv_heads x head_dim x
  bytes_per_value``;
* FLOPs per processed token ``= 2 x params`` (one multiply-add per weight;
  Kaplan et al. 2020; the embedding lookup has no FLOPs but the LM head does,
  a ~2% difference for Llama-2-7B that we ignore), plus attention FLOPs per
  (query, key) pair ``= 4 x layers x heads x head_dim`` (QK^T and AV, one
  multiply-add each per head dimension);
* KV capacity in tokens ``= (num_gpus x memory x memory_utilization - W -
  num_gpus x activation_reserve) / KV bytes per token`` (vLLM's
  ``gpu_memory_utilization`` default 0.9), in blocks of ``block_tokens``
  (vLLM's paged attention, 16 tokens).

Worked numbers (defaults below):

=========================  ==============  ==============  =================
quantity                   Llama-2-7B      Llama-2-13B     Llama-2-70B (GQA)
=========================  ==============  ==============  =================
params                     6.74e9          13.0e9          68.98e9
layers x heads x head_dim  32 x 32 x 128   40 x 40 x 128   80 x 64 x 128
KV heads                   32              40              8
weights (FP16)             13.5 GB         26.0 GB         138 GB
KV bytes / token           512 KiB         800 KiB         320 KiB
FLOPs / token              13.5 GFLOP      26.0 GFLOP      138 GFLOP
=========================  ==============  ==============  =================

On one A100-80GB (312 TFLOP/s dense BF16, 2.039 TB/s HBM2e) Llama-2-7B holds
(72 - 13.5 - 2) GB / 512 KiB = 107,700 KV tokens; on 4 x A100-80GB,
Llama-2-70B holds (4 x 72 - 138 - 8) GB / 320 KiB = 433,000.

**Iteration time** (:func:`iteration_time`). One iteration of continuous
batching runs every scheduled request through the model once: ``P`` prompt
(prefill) tokens and ``D`` decode tokens (one per decoding request). With
``A`` attention (query, key) pairs and ``K`` KV-cache tokens read::

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

Calibration (``overhead``, ``mfu``, ``mbu``, ``p``, ``allreduce_latency``):
fitted by hand to the published single-request measurements in
:data:`PUBLISHED_LATENCIES` (TensorRT-LLM v0.5, lmdeploy v0.1 and NeMo
benchmark tables on A100-80GB, vLLM nightly on H200); every point is within
30% and most within 15%; ``python -m cloudgym.envs.core.llm`` prints the
comparison and ``docs/llm_router.md`` discusses it.

**Continuous batching** (:class:`LLMCluster`, :class:`LLMClusterState`).
``B`` sub-envs x ``N`` instances x ``S`` request slots, vLLM-style, simulated
iteration by iteration and vectorised across all (B, N) instances:

* a waiting queue (FCFS ring of slots) and a running batch per instance;
* admission at each iteration start, in arrival order, of requests that have
  arrived, while the running batch is below ``max_batch_requests``, the KV
  blocks of the request's whole prompt fit above a watermark (vLLM v0
  allocates the prompt's blocks at admission), and the iteration's token
  budget allows (``max_batched_tokens``); the first waiting request that does
  not fit stops admission (no skipping, as vLLM);
* decode: every running request past its prefill emits one token per
  iteration and grows its KV by one token, taking a new block each
  ``block_tokens`` tokens; when blocks run out, the latest-arrived running
  requests are **preempted** (recompute mode: KV freed, request back at the
  head of the queue, re-prefilled over prompt + tokens generated so far);
* **chunked prefill** (optional, Sarathi-Serve / vLLM v1): decodes are
  scheduled first, prompt tokens fill the rest of the token budget, so at
  most one prompt per instance is partially prefilled at a time; without it,
  admitted prompts are prefilled whole in a mixed iteration with the decodes
  (Orca-style iteration-level batching);
* the iteration that completes a prompt emits the request's first token; a
  request completes when it has generated its requested output tokens.

Times per request: time to first token (TTFT), time between tokens (mean
over the request, and the longest gap, which is where interference shows),
end-to-end latency. Per instance, per-interval activity (busy, compute and
memory time, prompt and decode tokens, iterations, preemptions) for power
models, and a per-instance ``freq_scale`` (f / f_max) input.

An iteration that starts before the target time of :meth:`LLMCluster.advance`
runs to completion (a GPU does not stop mid-forward): instance clocks may
pass the target by less than one iteration, and activity is attributed to the
interval in which its iteration started.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cloudgym.envs.core.batch import check_config

GB = 1e9
"""Bytes per GB (decimal, as datasheets count)."""

# ----------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """One accelerator, from its datasheet (dense FP16/BF16 tensor throughput, no sparsity)."""

    name: str
    """Label, e.g. ``"A100-SXM4-80GB"``."""
    peak_tflops: float
    """Dense FP16/BF16 tensor-core throughput at the maximum SM clock, TFLOP/s."""
    hbm_tbps: float
    """HBM bandwidth, TB/s."""
    memory_gb: float
    """HBM capacity, GB (decimal)."""
    link_gbps: float = 0.0
    """NVLink bandwidth per GPU and direction, GB/s (0: no NVLink; tensor parallelism then needs it)."""
    tdp_w: float = 400.0
    """Board power limit, W."""
    max_freq_mhz: float = 1410.0
    """Highest SM clock, MHz (peak_tflops is quoted there)."""

    def __post_init__(self) -> None:
        check_config(self.peak_tflops > 0, self, f"{self.name}: peak_tflops must be positive, got {self.peak_tflops}")
        check_config(self.hbm_tbps > 0, self, f"{self.name}: hbm_tbps must be positive, got {self.hbm_tbps}")
        check_config(self.memory_gb > 0, self, f"{self.name}: memory_gb must be positive, got {self.memory_gb}")
        check_config(self.link_gbps >= 0, self, f"{self.name}: link_gbps must be >= 0, got {self.link_gbps}")
        check_config(self.tdp_w > 0 and self.max_freq_mhz > 0, self, f"{self.name}: tdp_w and max_freq_mhz must be > 0")


A100_80GB = GpuSpec(
    name="A100-SXM4-80GB", peak_tflops=312.0, hbm_tbps=2.039, memory_gb=80.0, link_gbps=300.0, tdp_w=400.0,
    max_freq_mhz=1410.0,
)  # fmt: skip
"""NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s BF16 dense, 2,039 GB/s, NVLink 3 600 GB/s bidirectional."""
H100_80GB = GpuSpec(
    name="H100-SXM5-80GB", peak_tflops=989.0, hbm_tbps=3.35, memory_gb=80.0, link_gbps=450.0, tdp_w=700.0,
    max_freq_mhz=1980.0,
)  # fmt: skip
"""NVIDIA H100 SXM5 80GB datasheet: 989 TFLOP/s BF16 dense, 3.35 TB/s, NVLink 4 900 GB/s bidirectional."""
H200_141GB = GpuSpec(
    name="H200-SXM-141GB", peak_tflops=989.0, hbm_tbps=4.8, memory_gb=141.0, link_gbps=450.0, tdp_w=700.0,
    max_freq_mhz=1980.0,
)  # fmt: skip
"""NVIDIA H200 SXM datasheet: H100 compute with 141 GB HBM3e at 4.8 TB/s."""

GPUS: dict[str, GpuSpec] = {g.name: g for g in (A100_80GB, H100_80GB, H200_141GB)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer's shape (what its cost depends on)."""

    name: str
    """Label, e.g. ``"Llama-2-7B"``."""
    params: float
    """Parameter count (all weights, embeddings included)."""
    layers: int
    """Transformer blocks."""
    hidden: int
    """Model (residual stream) width."""
    heads: int
    """Query heads per layer."""
    kv_heads: int
    """Key/value heads per layer (< heads with grouped-query attention)."""
    head_dim: int
    """Width of one head."""
    bytes_per_value: int = 2
    """Bytes per weight and per KV value (FP16/BF16: 2)."""
    max_context_tokens: int = 4096
    """Longest prompt + output the model accepts, tokens (Llama-2: 4,096)."""

    def __post_init__(self) -> None:
        check_config(self.params > 0, self, f"{self.name}: params must be positive, got {self.params}")
        for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "bytes_per_value", "max_context_tokens"):
            value = getattr(self, field)
            check_config(int(value) == value and value >= 1, self, f"{self.name}: {field} must be a positive integer")
        check_config(
            self.heads % self.kv_heads == 0, self, f"{self.name}: heads ({self.heads}) must be a multiple of kv_heads"
        )

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_value

    @property
    def kv_bytes_per_token(self) -> float:
        """2 (K and V) x layers x KV heads x head dim x bytes per value."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value

    @property
    def flops_per_token(self) -> float:
        """2 x params: one multiply-add per weight per processed token."""
        return 2.0 * self.params

    @property
    def attention_flops_per_pair(self) -> float:
        """4 x layers x heads x head dim per (query, key) pair: QK^T and AV, one multiply-add each."""
        return 4.0 * self.layers * self.heads * self.head_dim

    @classmethod
    def llama_like(cls, params: float, *, kv_heads: int = 8, max_context_tokens: int = 8192) -> ModelSpec:
        """A Llama-shaped model of any size (for DCLifecycle's growing models).

        Width and depth follow a power-law fit through Llama-2-7B (4096 x 32
        layers) and Llama-2-70B (8192 x 80): ``hidden ~ params^0.301``,
        ``layers ~ params^0.398``; heads of width 128, their count rounded to a
        multiple of ``kv_heads`` (grouped-query attention with 8 KV heads, as
        Llama-2-70B and every Llama-3 model use).
        """
        check_config(params > 0, cls, f"params must be positive, got {params}")
        ratio = params / 6.74e9
        kv = max(1, int(kv_heads))
        heads = max(kv, round(4096 * ratio**0.301 / 128 / kv) * kv)
        layers = max(1, round(32 * ratio**0.398))
        return cls(
            name=f"llama-like-{params / 1e9:.3g}B",
            params=float(params),
            layers=layers,
            hidden=heads * 128,
            heads=heads,
            kv_heads=kv,
            head_dim=128,
            max_context_tokens=max_context_tokens,
        )


LLAMA2_7B = ModelSpec(name="Llama-2-7B", params=6.74e9, layers=32, hidden=4096, heads=32, kv_heads=32, head_dim=128)
"""Llama-2-7B (Touvron et al. 2023): multi-head attention, 4,096-token context."""
LLAMA2_13B = ModelSpec(name="Llama-2-13B", params=13.0e9, layers=40, hidden=5120, heads=40, kv_heads=40, head_dim=128)
"""Llama-2-13B: multi-head attention, 4,096-token context."""
LLAMA2_70B = ModelSpec(name="Llama-2-70B", params=68.98e9, layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128)
"""Llama-2-70B: grouped-query attention with 8 KV heads, 4,096-token context."""
LLAMA3_8B = ModelSpec(
    name="Llama-3-8B",
    params=8.03e9,
    layers=32,
    hidden=4096,
    heads=32,
    kv_heads=8,
    head_dim=128,
    max_context_tokens=8192,
)
"""Llama-3(.1)-8B: grouped-query attention (8 KV heads); used only to compare with vLLM's published H200 runs."""
LLAMA3_70B = ModelSpec(
    name="Llama-3-70B", params=70.6e9, layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128,
    max_context_tokens=8192,
)  # fmt: skip
"""Llama-3-70B: the Llama-2-70B shape with a larger vocabulary."""

MODELS: dict[str, ModelSpec] = {m.name: m for m in (LLAMA2_7B, LLAMA2_13B, LLAMA2_70B, LLAMA3_8B, LLAMA3_70B)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchedulerSpec:
    """The serving engine's batching knobs (vLLM's names and defaults where they exist)."""

    max_batch_requests: int = 256
    """Most requests in the running batch (vLLM ``max_num_seqs``)."""
    max_batched_tokens: int = 8192
    """Token budget of one iteration (vLLM ``max_num_batched_tokens``): with chunked prefill, decodes plus
    prompt chunks; without, the prompt tokens admitted in one iteration (the first admission always runs)."""
    chunked_prefill: bool = False
    """Split prompts into chunks that share iterations with decodes (Sarathi-Serve, vLLM v1)."""
    block_tokens: int = 16
    """KV-cache block size, tokens (vLLM paged attention)."""
    watermark: float = 0.01
    """Share of KV blocks admission keeps free, to damp preemption (vLLM: 1%)."""
    memory_utilization: float = 0.9
    """Share of GPU memory the engine may use for weights, activations and KV (vLLM ``gpu_memory_utilization``)."""
    activation_reserve_gb: float = 2.0
    """Per-GPU memory for activations and CUDA graphs, kept out of the KV cache, GB (our estimate)."""

    def __post_init__(self) -> None:
        check_config(self.max_batch_requests >= 1, self, "max_batch_requests must be >= 1")
        check_config(self.max_batched_tokens >= 1, self, "max_batched_tokens must be >= 1")
        check_config(self.block_tokens >= 1, self, "block_tokens must be >= 1")
        check_config(0 <= self.watermark < 1, self, f"watermark must be in [0, 1), got {self.watermark}")
        check_config(0 < self.memory_utilization <= 1, self, "memory_utilization must be in (0, 1]")
        check_config(self.activation_reserve_gb >= 0, self, "activation_reserve_gb must be >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """One model replica on a tensor-parallel group of GPUs, with its calibrated efficiencies."""

    gpu: GpuSpec
    """The accelerator (all GPUs of the group are alike)."""
    model: ModelSpec
    """The served model."""
    num_gpus: int = 1
    """Tensor-parallel degree g: weights, KV and FLOPs are split over g GPUs."""
    compute_efficiency: float = 0.68
    """Model FLOPs utilisation of large prefill matmuls (fit: 2,048-token prefills on A100, ~0.68)."""
    memory_efficiency: float = 0.80
    """Achieved share of peak HBM bandwidth when streaming weights and KV (fit: batch-1 decode, ~0.8)."""
    overlap_exponent: float = 2.0
    """p of the p-norm that joins compute and memory time (inf would be the ideal roofline's max)."""
    overhead_s: float = 0.002
    """Fixed per-iteration time: scheduling, sampling, launches, s."""
    overhead_per_layer_s: float = 2e-5
    """Extra per-iteration time per transformer block, s."""
    allreduce_latency_s: float = 2.5e-5
    """Latency of one tensor-parallel all-reduce (two per layer and iteration when num_gpus > 1), s."""
    link_efficiency: float = 0.75
    """Achieved share of NVLink bandwidth in ring all-reduce."""
    scheduler: SchedulerSpec = dataclasses.field(default_factory=SchedulerSpec)
    """Batching knobs of the serving engine."""

    def __post_init__(self) -> None:
        check_config(self.num_gpus >= 1, self, f"num_gpus must be >= 1, got {self.num_gpus}")
        check_config(
            self.num_gpus == 1 or self.gpu.link_gbps > 0,
            self,
            f"tensor parallelism over {self.num_gpus} x {self.gpu.name} needs link_gbps > 0",
        )
        for field in ("compute_efficiency", "memory_efficiency", "link_efficiency"):
            value = getattr(self, field)
            check_config(0 < value <= 1, self, f"{field} must be in (0, 1], got {value}")
        check_config(self.overlap_exponent >= 1, self, "overlap_exponent must be >= 1")
        check_config(self.overhead_s >= 0 and self.overhead_per_layer_s >= 0, self, "overheads must be >= 0")
        check_config(self.allreduce_latency_s >= 0, self, "allreduce_latency_s must be >= 0")
        check_config(
            self.kv_capacity_blocks >= 1,
            self,
            f"{self.model.name} ({self.model.weight_bytes / GB:.1f} GB) leaves no KV cache on "
            f"{self.num_gpus} x {self.gpu.name}; use more GPUs (num_gpus)",
        )

    @property
    def name(self) -> str:
        return f"{self.model.name}/{self.num_gpus}x{self.gpu.name}"

    @property
    def kv_capacity_tokens(self) -> int:
        """KV-cache tokens the instance can hold (whole blocks)."""
        return self.kv_capacity_blocks * self.scheduler.block_tokens

    @property
    def kv_capacity_blocks(self) -> int:
        s, g = self.scheduler, self.num_gpus
        free = g * (self.gpu.memory_gb * s.memory_utilization - s.activation_reserve_gb) * GB - self.model.weight_bytes
        return max(int(free // (self.model.kv_bytes_per_token * s.block_tokens)), 0)

    def coefficients(self) -> CostCoefficients:
        """The constants of :func:`iteration_time` for this instance (scalars)."""
        m, g = self.model, self.num_gpus
        comm_per_token = 0.0
        comm_fixed = 0.0
        if g > 1:
            link = self.gpu.link_gbps * GB * self.link_efficiency
            comm_per_token = 2 * m.layers * 2 * (g - 1) / g * m.hidden * m.bytes_per_value / link
            comm_fixed = 2 * m.layers * self.allreduce_latency_s
        return CostCoefficients(
            flops_per_token=np.array(m.flops_per_token, np.float64),
            flops_per_pair=np.array(m.attention_flops_per_pair, np.float64),
            flops_per_s=np.array(g * self.gpu.peak_tflops * 1e12 * self.compute_efficiency, np.float64),
            weight_bytes=np.array(m.weight_bytes, np.float64),
            kv_bytes_per_token=np.array(m.kv_bytes_per_token, np.float64),
            bytes_per_s=np.array(g * self.gpu.hbm_tbps * 1e12 * self.memory_efficiency, np.float64),
            overlap=np.array(self.overlap_exponent, np.float64),
            overhead_s=np.array(self.overhead_s + self.overhead_per_layer_s * m.layers + comm_fixed, np.float64),
            comm_s_per_token=np.array(comm_per_token, np.float64),
        )

    # -- single-request views (the a + b x tokens form, for docs, estimates and tests)
    def prefill_time(self, prompt_tokens: Any, decode_batch: Any = 0, context_tokens: Any = 0) -> Any:
        """Seconds of an iteration prefilling a whole prompt beside ``decode_batch`` decodes of ``context_tokens``."""
        p = np.asarray(prompt_tokens, np.float64)
        d = np.asarray(decode_batch, np.float64)
        kv = np.asarray(context_tokens, np.float64)
        return iteration_time(self.coefficients(), p, d, kv + p * (p + 1) / 2, kv + p, 1.0).total_s

    def decode_time(self, batch: Any, context_tokens: Any) -> Any:
        """Seconds of one decode-only iteration of ``batch`` requests holding ``context_tokens`` KV tokens in all."""
        d = np.asarray(batch, np.float64)
        kv = np.asarray(context_tokens, np.float64) + d
        return iteration_time(self.coefficients(), 0.0, d, kv, kv, 1.0).total_s


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


def instance(model: str | ModelSpec, gpu: str | GpuSpec, num_gpus: int | None = None, **kwargs: Any) -> InstanceSpec:
    """An instance by model and GPU (names from :data:`MODELS` / :data:`GPUS` or specs).

    ``num_gpus=None`` picks the smallest power of two whose memory holds the
    weights and leaves at least half as much again for the KV cache.
    """
    m = MODELS[model] if isinstance(model, str) else model
    g = GPUS[gpu] if isinstance(gpu, str) else gpu
    if num_gpus is None:
        num_gpus = 1
        while num_gpus * g.memory_gb * GB * 0.9 < 1.5 * m.weight_bytes and num_gpus < 64:
            num_gpus *= 2
    return InstanceSpec(gpu=g, model=m, num_gpus=num_gpus, **kwargs)


PRESETS: dict[str, InstanceSpec] = {
    "llama2-7b-a100": InstanceSpec(gpu=A100_80GB, model=LLAMA2_7B, num_gpus=1),
    "llama2-7b-h100": InstanceSpec(gpu=H100_80GB, model=LLAMA2_7B, num_gpus=1),
    "llama2-13b-a100": InstanceSpec(gpu=A100_80GB, model=LLAMA2_13B, num_gpus=1),
    "llama2-70b-4xa100": InstanceSpec(gpu=A100_80GB, model=LLAMA2_70B, num_gpus=4),
    "llama2-70b-8xa100": InstanceSpec(gpu=A100_80GB, model=LLAMA2_70B, num_gpus=8),
    "llama2-70b-4xh100": InstanceSpec(gpu=H100_80GB, model=LLAMA2_70B, num_gpus=4),
    "llama2-70b-8xh100": InstanceSpec(gpu=H100_80GB, model=LLAMA2_70B, num_gpus=8),
}
"""Named instances: Llama-2-7B on one A100-80GB or H100, Llama-2-70B on 4 or 8 A100s or H100s (and 13B)."""


def preset(name: str, **overrides: Any) -> InstanceSpec:
    """A named preset, optionally with fields replaced (``scheduler=SchedulerSpec(chunked_prefill=True)``)."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown LLM instance preset {name!r}{hint} (known: {', '.join(PRESETS)})")
    spec = PRESETS[name]
    return dataclasses.replace(spec, **overrides) if overrides else spec


# ----------------------------------------------------------------------------- SLO-aware capacity


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


# ----------------------------------------------------------------------------- the batched simulator

EMPTY, WAITING, RUNNING = 0, 1, 2
"""Slot status codes."""


@dataclasses.dataclass
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


@dataclasses.dataclass
class LLMClusterState:
    """B clusters of N instances with S request slots each (B-first arrays; see :class:`LLMCluster`)."""

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

    def __init__(self, instances: Sequence[InstanceSpec], slots: int) -> None:
        if len(instances) < 1:
            raise ValueError("an LLM cluster needs at least one instance")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.instances = tuple(instances)
        self.num_instances = len(self.instances)
        self.slots = int(slots)
        self.coef = CostCoefficients.stack([s.coefficients() for s in self.instances])
        sched = [s.scheduler for s in self.instances]
        self.block_tokens = np.array([s.block_tokens for s in sched], np.int64)
        self.capacity_blocks = np.array([s.kv_capacity_blocks for s in self.instances], np.int64)
        self.watermark_blocks = np.array(
            [math.ceil(s.scheduler.watermark * s.kv_capacity_blocks) for s in self.instances], np.int64
        )
        self.max_batch = np.array([s.max_batch_requests for s in sched], np.int64)
        self.max_tokens = np.array([s.max_batched_tokens for s in sched], np.int64)
        self.chunked = np.array([s.chunked_prefill for s in sched], bool)

    # ------------------------------------------------------------------ state
    def new_state(self, num_envs: int) -> LLMClusterState:
        b, n, s = num_envs, self.num_instances, self.slots

        def per_slot(dtype: Any, fill: float = 0) -> np.ndarray:
            return np.full((b, n, s), fill, dtype)

        state = LLMClusterState(
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
        return state

    def reset_envs(self, state: LLMClusterState, env_ids: np.ndarray, start_time: Any = 0.0) -> None:
        """Empty the listed sub-envs' instances; their clocks start at ``start_time`` (scalar or (k,))."""
        ids = np.asarray(env_ids, np.int64)
        state.clock[ids] = np.asarray(start_time, np.float64).reshape(-1, 1) if np.ndim(start_time) else start_time
        state.freq_scale[ids] = 1.0
        for name in ("kv_used", "running", "waiting", "queue_head", "last_done", "slot_high"):
            getattr(state, name)[ids] = 0
        state.partial[ids] = -1
        for name in ("queue", "status", "tag", "prompt", "output", "target", "computed", "generated", "blocks"):
            getattr(state, name)[ids] = 0
        state.request[ids] = -1
        state.arrival[ids] = 0.0
        state.first_token[ids] = -1.0
        state.last_token[ids] = 0.0
        state.max_gap[ids] = 0.0
        state.estimate[ids] = 0.0
        state.activity.reset_envs(ids)

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
        possible = self.fits_ever(prompt, output, instances)
        # Pairs that repeat are queued rank by rank, so each sees the slots the previous one took.
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        rank = np.empty(m, np.int64)
        rank[order] = np.arange(m) - np.searchsorted(sorted_flat, sorted_flat, side="left")
        views = _FlatViews(state, self.num_instances, self.slots)
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

        Iterations of all (sub-env, instance) pairs that still lag are run
        together, one round at a time; an instance with nothing to do (or only
        requests that have not arrived yet) idles forward. Returns the
        requests that completed.
        """
        views = _FlatViews(state, self.num_instances, self.slots)
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
            done = self._iterate(views, np.sort(active))
            if done is not None:
                records.append(done)
        return Completions.concat(records)

    def _iterate(self, v: _FlatViews, idx: np.ndarray) -> Completions | None:
        """One iteration of each listed flat instance (each starts at its own clock).

        Dense (k, S) work is limited to what every decoding request needs each
        iteration; admissions, prompt chunks, preemptions and completions are
        few and handled as sparse (row, slot) lists.
        """
        n_inst, slots = self.num_instances, self.slots
        k = idx.size
        inst = idx % n_inst
        bt = self.block_tokens[inst]
        clock = v.clock[idx]
        # Slots are taken lowest first: dense work covers only the slots up to the highest in use.
        sl = slice(0, int(v.slot_high[idx].max()))
        st = v.status[idx, sl]
        comp = v.computed[idx, sl]
        tgt = v.target[idx, sl]
        blk = v.blocks[idx, sl]
        free = self.capacity_blocks[inst] - v.kv_used[idx]
        n_run = v.running[idx]
        q_head = v.queue_head[idx]
        q_len = v.waiting[idx]
        partial = v.partial[idx]
        preempted = np.zeros(k)
        status_changed = False

        decoding = (st == RUNNING) & (comp >= tgt)
        # Decode KV growth: a token past the last block needs a new block; without one, preempt the newest request.
        grow = decoding & (comp >= blk * bt[:, None])
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
            v.last_token[f, victim] = np.where(v.generated[f, victim] > 0, clock[r], v.last_token[f, victim])
            partial[r] = np.where(partial[r] == victim, -1, partial[r])
            n_run[r] -= 1
            q_head[r] = (q_head[r] - 1) % slots
            v.queue[f, q_head[r]] = victim
            q_len[r] += 1
            preempted[r] += 1
            status_changed = True
            short = need > free
        free -= need
        n_dec = decoding.sum(axis=1)

        # Prompt work of this iteration as sparse lists: (row, slot, chunk tokens, tokens computed before).
        pr: list[np.ndarray] = []
        ps: list[np.ndarray] = []
        pc: list[np.ndarray] = []
        chunked = self.chunked[inst]
        budget = np.where(chunked, self.max_tokens[inst] - n_dec, self.max_tokens[inst])
        rows = np.flatnonzero(partial >= 0)
        if rows.size:  # a part-prefilled prompt (chunked mode) continues first
            s = partial[rows]
            c = np.minimum(tgt[rows, s] - comp[rows, s], np.maximum(budget[rows], 0))
            keep = c > 0
            pr.append(rows[keep])
            ps.append(s[keep])
            pc.append(c[keep])
            budget[rows] -= c
            finished = comp[rows, s] + c >= tgt[rows, s]
            partial[rows[finished]] = -1
        # Admissions, FCFS: the queue's head joins while it has arrived and fits; the first misfit stops the row.
        prefilled = np.zeros(k, np.int64)
        cand = (q_len > 0) & (n_run < self.max_batch[inst]) & (budget > 0) & (partial < 0)
        room_floor = self.watermark_blocks[inst]
        while cand.any():
            r = np.flatnonzero(cand)
            f = idx[r]
            head = v.queue[f, q_head[r]]
            t = tgt[r, head]
            need_blocks = -(-t // bt[r])
            ok = v.arrival[f, head] <= clock[r]
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
            q_head[r] = (q_head[r] + 1) % slots
            q_len[r] -= 1
            status_changed = True
            cand[r] = (q_len[r] > 0) & (n_run[r] < self.max_batch[inst[r]]) & (budget[r] > 0) & (partial[r] < 0)

        # Cost of the iteration.
        p_rows = np.concatenate(pr) if pr else np.zeros(0, np.int64)
        p_slots = np.concatenate(ps) if ps else np.zeros(0, np.int64)
        p_chunk = (np.concatenate(pc) if pc else np.zeros(0, np.int64)).astype(np.float64)
        p_before = comp[p_rows, p_slots].astype(np.float64)
        n_prefill = np.bincount(p_rows, weights=p_chunk, minlength=k)
        ctx_decode = np.where(decoding, comp + 1, 0).sum(axis=1, dtype=np.float64)
        pairs = ctx_decode + np.bincount(p_rows, weights=p_chunk * p_before + p_chunk * (p_chunk + 1) / 2, minlength=k)
        kv_read = ctx_decode + np.bincount(p_rows, weights=p_before + p_chunk, minlength=k)
        if np.any(n_prefill + n_dec == 0):
            bad = int(idx[np.argmax(n_prefill + n_dec == 0)])
            raise RuntimeError(
                f"instance {bad % n_inst} of sub-env {bad // n_inst} has work but can run nothing "
                f"(running {int(v.running[bad])}, waiting {int(v.waiting[bad])}); a request larger than its KV cache?"
            )
        cost = iteration_time(self.coef.take(inst), n_prefill, n_dec, pairs, kv_read, v.freq_scale[idx])
        t_iter = cost.total_s
        t_end = clock + t_iter

        # Decodes: one token each; their previous token came at the end of the previous iteration (the clock).
        blk += grow
        comp += decoding
        gen = v.generated[idx, sl]
        gen += decoding
        max_gap = v.max_gap[idx, sl]
        np.maximum(max_gap, np.where(decoding, t_iter[:, None], 0.0), out=max_gap)
        done = decoding & (gen >= v.output[idx, sl])
        # Prompt chunks: those that finish their prompt emit a token (the first, or the next after a preemption).
        if p_rows.size:
            comp[p_rows, p_slots] += p_chunk.astype(comp.dtype)
            fin = comp[p_rows, p_slots] >= tgt[p_rows, p_slots]
            fr, fs = p_rows[fin], p_slots[fin]
            if fr.size:
                f = idx[fr]
                end = t_end[fr]
                gen[fr, fs] += 1
                first = v.first_token[f, fs]
                later = first >= 0
                max_gap[fr[later], fs[later]] = np.maximum(
                    max_gap[fr[later], fs[later]], (end - v.last_token[f, fs])[later]
                )
                v.first_token[f[~later], fs[~later]] = end[~later]
                v.last_token[f, fs] = end
                done[fr, fs] = gen[fr, fs] >= v.output[f, fs]

        n_done = done.sum(axis=1)
        records = None
        if n_done.any():
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
            free += np.where(done, blk, 0).sum(axis=1)
            blk[dr, ds] = 0
            st[dr, ds] = EMPTY
            n_run -= n_done
            v.request[fr, ds] = -1
            status_changed = True

        # Write back.
        if status_changed:
            v.status[idx, sl] = st
            v.target[idx, sl] = tgt
        v.computed[idx, sl] = comp
        v.generated[idx, sl] = gen
        v.blocks[idx, sl] = blk
        v.max_gap[idx, sl] = max_gap
        v.clock[idx] = t_end
        v.kv_used[idx] = self.capacity_blocks[inst] - free
        v.running[idx] = n_run
        v.waiting[idx] = q_len
        v.queue_head[idx] = q_head
        v.partial[idx] = partial
        v.last_done[idx] = n_done
        v.slot_high[idx] = np.where(n_run + q_len == 0, 0, v.slot_high[idx])
        act = v.activity
        act.busy_s[idx] += t_iter
        act.compute_s[idx] += cost.compute_s
        act.memory_s[idx] += cost.memory_s
        act.prefill_tokens[idx] += n_prefill
        act.decode_tokens[idx] += n_dec
        act.iterations[idx] += 1.0
        act.preemptions[idx] += preempted
        return records

    # ------------------------------------------------------------------ views for routers and power models
    def take_activity(self, state: LLMClusterState) -> InstanceActivity:
        """The activity accumulated since the last call (copies), and zero the accumulators."""
        act = state.activity
        taken = InstanceActivity(**{f.name: getattr(act, f.name).copy() for f in dataclasses.fields(act)})
        for f in dataclasses.fields(act):
            getattr(act, f.name)[...] = 0.0
        return taken

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


class _FlatViews:
    """Views of a state with the (B, N) axes merged into one flat instance axis (no copies)."""

    def __init__(self, state: LLMClusterState, num_instances: int, slots: int) -> None:
        b = state.clock.shape[0]
        f = b * num_instances
        for name in (
            "clock", "freq_scale", "kv_used", "running", "waiting", "queue_head", "partial", "last_done", "slot_high",
        ):  # fmt: skip
            setattr(self, name, getattr(state, name).reshape(f))
        for name in (
            "queue", "status", "request", "tag", "prompt", "output", "target", "computed", "generated", "blocks",
            "arrival", "first_token", "last_token", "max_gap", "estimate",
        ):  # fmt: skip
            setattr(self, name, getattr(state, name).reshape(f, slots))
        act = state.activity
        self.activity = InstanceActivity(
            **{fld.name: getattr(act, fld.name).reshape(f) for fld in dataclasses.fields(act)}
        )

    clock: np.ndarray
    freq_scale: np.ndarray
    kv_used: np.ndarray
    running: np.ndarray
    waiting: np.ndarray
    queue_head: np.ndarray
    partial: np.ndarray
    last_done: np.ndarray
    slot_high: np.ndarray
    queue: np.ndarray
    status: np.ndarray
    request: np.ndarray
    tag: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    target: np.ndarray
    computed: np.ndarray
    generated: np.ndarray
    blocks: np.ndarray
    arrival: np.ndarray
    first_token: np.ndarray
    last_token: np.ndarray
    max_gap: np.ndarray
    estimate: np.ndarray
    activity: InstanceActivity


# ----------------------------------------------------------------------------- published measurements


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishedLatency:
    """One published single-request latency measurement to compare the model with."""

    source: str
    """Where it was published."""
    instance: InstanceSpec
    """Model, GPU and tensor-parallel degree measured."""
    what: str
    """``"ttft"`` (prefill of ``prompt`` tokens, first token), ``"tbt"`` (one decode iteration of ``batch``
    requests at ``context`` tokens each) or ``"e2e"`` (prompt then ``output`` tokens at batch ``batch``)."""
    prompt: int = 0
    output: int = 0
    batch: int = 1
    context: int = 0
    measured_s: float


_TRT05 = "TensorRT-LLM v0.5 docs/source/performance.md, low-latency table (A100 FP16, batch 1)"
_LMD = "lmdeploy v0.1.0a1 docs/en/benchmark/a100_fp16.md, static inference (A100-80G)"
_NEMO = "NVIDIA NeMo Framework docs, performance/llama.html, Llama-2 inference (TRT-LLM, A100 80GB SXM4)"
_VLLM = "vLLM nightly performance benchmark (buildkite vllm/performance-benchmark), latency tests on H200"

PUBLISHED_LATENCIES: tuple[PublishedLatency, ...] = (
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=128, measured_s=0.016),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=2048, measured_s=0.133),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=128, measured_s=0.047),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=2048, measured_s=0.377),
    PublishedLatency(source=_LMD, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=2048, measured_s=0.139),
    PublishedLatency(source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=2048, measured_s=0.402),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-7b-a100"], what="tbt", batch=1, context=192, measured_s=0.010
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-7b-a100"], what="tbt", batch=64, context=64, measured_s=0.012
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="tbt", batch=1, context=192, measured_s=0.029
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="tbt", batch=64, context=64, measured_s=0.037
    ),
    PublishedLatency(
        source=_NEMO, instance=PRESETS["llama2-7b-a100"], what="e2e", prompt=128, output=20, batch=1, measured_s=0.234
    ),
    PublishedLatency(
        source=_NEMO, instance=PRESETS["llama2-7b-a100"], what="e2e", prompt=128, output=20, batch=8, measured_s=0.3295
    ),
    PublishedLatency(
        source=_VLLM,
        instance=InstanceSpec(gpu=H200_141GB, model=LLAMA3_8B, num_gpus=1),
        what="e2e",
        prompt=32,
        output=128,
        batch=8,
        measured_s=0.8334,
    ),
    PublishedLatency(
        source=_VLLM,
        instance=InstanceSpec(gpu=H200_141GB, model=LLAMA3_70B, num_gpus=4),
        what="e2e",
        prompt=32,
        output=128,
        batch=8,
        measured_s=2.0775,
    ),
)
"""Published measurements of single requests (or a fixed batch) on known hardware; see docs/llm_router.md."""


def modelled_latency(m: PublishedLatency) -> float:
    """What the iteration-time model predicts for a published measurement's setting, s."""
    spec = m.instance
    if m.what == "ttft":
        return float(spec.prefill_time(m.prompt))
    if m.what == "tbt":
        return float(spec.decode_time(m.batch, m.batch * m.context))
    if m.what == "e2e":
        # The batch's prompts are prefilled together, then output - 1 decode iterations at growing context.
        first = float(spec.prefill_time(m.batch * m.prompt))
        ctx = m.prompt + np.arange(1, m.output)
        rest = float(np.sum(spec.decode_time(m.batch, m.batch * ctx)))
        return first + rest
    raise ValueError(f"unknown measurement kind {m.what!r}")


def compare_with_published() -> list[dict[str, Any]]:
    """One row per published measurement: setting, measured and modelled seconds, relative error."""
    rows = []
    for m in PUBLISHED_LATENCIES:
        model = modelled_latency(m)
        rows.append(
            {
                "source": m.source,
                "instance": m.instance.name,
                "what": m.what,
                "prompt": m.prompt,
                "output": m.output,
                "batch": m.batch,
                "context": m.context,
                "measured_s": m.measured_s,
                "modelled_s": model,
                "error": model / m.measured_s - 1.0,
            }
        )
    return rows


def _main() -> None:  # pragma: no cover - a printout for the docs
    print(f"{'instance':<32} {'what':<5} {'prompt':>6} {'out':>4} {'batch':>5} {'measured':>9} {'model':>9} {'err':>6}")
    for r in compare_with_published():
        print(
            f"{r['instance']:<32} {r['what']:<5} {r['prompt']:>6} {r['output']:>4} {r['batch']:>5} "
            f"{r['measured_s'] * 1e3:>7.1f}ms {r['modelled_s'] * 1e3:>7.1f}ms {r['error']:>+6.0%}"
        )
    sources = sorted({r["source"] for r in compare_with_published()})
    print("\nsources:\n" + "\n".join(f"  - {s}" for s in sources))


if __name__ == "__main__":  # pragma: no cover
    _main()
