"""What an LLM instance is: the GPU, the model, the serving engine's knobs, and named presets.

An *instance* is one model replica on a tensor-parallel group of
``num_gpus`` identical GPUs (:class:`InstanceSpec` of a :class:`GpuSpec`, a
:class:`ModelSpec` and a :class:`SchedulerSpec`). Every constant is derived
from datasheet numbers and the model's shape:

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
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from cloudgym.envs.core.batch import check_config
from cloudgym.envs.core.llm.cost import CostCoefficients, iteration_time

GB = 1e9
"""Bytes per GB (decimal, as datasheets count)."""


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
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown LLM instance preset {name!r}{hint} (known: {', '.join(PRESETS)})")
    spec = PRESETS[name]
    return dataclasses.replace(spec, **overrides) if overrides else spec
