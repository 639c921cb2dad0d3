"""LLM inference instances: roofline iteration time, presets, SLO capacity and a batched continuous-batching simulator.

This package is problem-agnostic: LLMRouter-v0 routes requests to its
instances, GPUPowerCap-v0 runs rows of them under power caps (per-instance
SM frequency, per-interval phase activity), DCLifecycle-v0 asks what a GPU
generation can serve under latency SLOs (:func:`slo_throughput`). It knows
nothing of any env. One idea per module:

* :mod:`.specs`: the hardware, the model, the engine's knobs, an instance
  (:class:`GpuSpec`, :class:`ModelSpec`, :class:`SchedulerSpec`,
  :class:`InstanceSpec`), datasheet presets (:data:`PRESETS`, :func:`preset`,
  :func:`instance`);
* :mod:`.cost`: the roofline time of one iteration (:func:`iteration_time`),
  calibrated to published measurements (``scripts/llm_calibration.py``);
* :mod:`.capacity`: steady-state throughput under TTFT/TBT SLOs in closed
  form (:func:`slo_throughput`, :func:`max_throughput`, :func:`llm_server_rates`);
* :mod:`.state`: the B-first state of B clusters (:class:`LLMClusterState`,
  :class:`InstanceActivity`) and what they complete (:class:`Completions`);
* :mod:`.batching`: one vLLM-style iteration (preemption, chunked prefill,
  admission, cost, tokens, completions) for many instances at once, in numpy
  (the reference);
* :mod:`.kernel`: the same iteration compiled (numba), each instance running
  on its own up to its horizon, bit-identical to :mod:`.batching`;
* :mod:`.cluster`: :class:`LLMCluster`, the API envs use: queue arrivals,
  advance every instance to a time, read what routers and power models need
  (the kernel by default; ``use_kernel=False`` or ``CLOUDGYM_KERNELS=numpy``
  for the numpy path).

``docs/llm_router.md`` (section 6) lists the public API.
"""

from cloudgym.envs.core.llm.capacity import SloThroughput, llm_server_rates, max_throughput, slo_throughput
from cloudgym.envs.core.llm.cluster import LLMCluster
from cloudgym.envs.core.llm.cost import CostCoefficients, IterationCost, iteration_time
from cloudgym.envs.core.llm.specs import (
    A100_80GB,
    GB,
    GPUS,
    H100_80GB,
    H200_141GB,
    LLAMA2_7B,
    LLAMA2_13B,
    LLAMA2_70B,
    LLAMA3_8B,
    LLAMA3_70B,
    MODELS,
    PRESETS,
    GpuSpec,
    InstanceSpec,
    ModelSpec,
    SchedulerSpec,
    instance,
    preset,
)
from cloudgym.envs.core.llm.state import EMPTY, RUNNING, WAITING, Completions, InstanceActivity, LLMClusterState

__all__ = [
    "A100_80GB",
    "EMPTY",
    "GB",
    "GPUS",
    "H100_80GB",
    "H200_141GB",
    "LLAMA2_7B",
    "LLAMA2_13B",
    "LLAMA2_70B",
    "LLAMA3_8B",
    "LLAMA3_70B",
    "MODELS",
    "PRESETS",
    "RUNNING",
    "WAITING",
    "Completions",
    "CostCoefficients",
    "GpuSpec",
    "InstanceActivity",
    "InstanceSpec",
    "IterationCost",
    "LLMCluster",
    "LLMClusterState",
    "ModelSpec",
    "SchedulerSpec",
    "SloThroughput",
    "instance",
    "iteration_time",
    "llm_server_rates",
    "max_throughput",
    "preset",
    "slo_throughput",
]
