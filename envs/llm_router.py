"""LLMRouter-v0: route each arriving LLM request to one of N continuously batching inference instances.

After Jain et al., "Intelligent Router for LLM Workloads: Improving
Performance Through Workload-Aware Load Balancing" (arXiv 2408.13510, 2024;
EuroMLSys 2025 as "Performance Aware LLM Load Balancer for Mixed Workloads").

## Description
A cluster of ``N`` LLM inference instances (by default four Llama-2-7B
replicas, each on one A100-80GB) serves a stream of requests. Every instance
runs vLLM-style continuous batching: a waiting queue, a running batch limited
by its KV-cache memory, admission at each iteration, preemption when the
cache runs out, optional chunked prefill. The shared instance model
(:mod:`cloudgym.envs.core.llm`) simulates each instance iteration by
iteration with a roofline iteration time calibrated to published
measurements, so the effect the paper builds on is real: prefill is
compute-bound and proportional to the prompt, decode is memory-bound, and a
long prompt mixed into a batch of decodes stretches every decoding request's
next token. A router that knows this (and how long each request will
decode) can spread prompts and long decodes so they hurt each other less.

Each step is one routing decision: the request that has just arrived goes to
the chosen instance; the cluster then runs until the next request arrives.
After the last request, the cluster drains (up to ``drain_timeout_s``) so
every accepted request's latency is measured. Measured results (the paper's
comparison reproduced, benchmarks) are in ``docs/llm_router.md``.

## Action Space
``Discrete(N)``: the instance for the arriving request. ``action_masks()``
(what sb3-contrib's MaskablePPO reads) marks instances that can take it (a
free request slot and a KV cache that can hold its prompt). When no instance
can, every action is allowed and the request is rejected whichever is
chosen. A request routed to a masked instance is rejected; requests whose
prompt + output exceed the context window (``max_context_tokens``) are
rejected whatever the action. Rejections are counted and penalised, never
dropped silently.

## Observation Space
``Box(0, inf, (7 N + 12,), float32)``; per instance n (index ``7 n + j``):

| j | observation (instance n)                                                        | scale   |
|---|---------------------------------------------------------------------------------|---------|
| 0 | requests waiting in its queue                                                   | / slots |
| 1 | requests in its running batch                                                   | / slots |
| 2 | prompt tokens still to prefill (queued and part-prefilled)                      | / 1e4   |
| 3 | KV-cache blocks in use                                                          | share   |
| 4 | estimated remaining decode tokens (predicted output minus generated, >= 1 each) | / 1e4   |
| 5 | time until its current iteration ends                                           | / 0.1 s |
| 6 | the paper's heuristic: estimated added latency (new + running) if sent there    | / 10 s  |

then for the arriving request (index ``7 N + i``):

| i      | observation                                                   |
|--------|---------------------------------------------------------------|
| 0      | log(1 + prompt tokens) / log(1 + 8192)                        |
| 1 .. 7 | predicted output-length bucket probabilities (7 buckets)      |
| 8, 9   | request class one-hot (coding, conversation)                  |
| 10     | log(1 + predicted output tokens) / log(1 + 8192)              |
| 11     | recent arrival rate / cluster capacity (an EWMA of the gaps)  |

The predicted bucket comes from ``length_predictor``: the shipped predictor
trained by ``cloudgym.agents.length_predictor`` (``"learned"``), the class
prior (``"prior"``), the true length (``"oracle"``, an upper bound), or a
path to other weights. True output lengths never enter the observation
otherwise.

## Rewards
Minus the latency every request in the system accrued during the step, in
seconds: over an episode these sum to minus the total end-to-end latency of
all requests (so the mean reward per step is minus the mean end-to-end
latency), minus ``reject_penalty_s`` per rejected request. With
``guidance_weight > 0`` the paper's heuristic guides learning: minus that
weight times how much more added latency the heuristic estimates for the
chosen instance than for its best one.

## Starting State
Idle instances at the first arrival; requests drawn by the workload
generator (synthetic coding/conversation mix at ``target_load`` of the
cluster's capacity, or a window of the Azure coding trace).

## Episode End
Terminated after ``requests_per_episode`` routing decisions and the drain.
Each step's info has ``completed`` (requests finished during the step),
``rejected`` and ``accrued_latency_s``; at the episode's end it has every
request's result as (R,) arrays per sub-env (``request_status`` 2 done / 3
rejected / 1 still in flight, ``request_instance``, ``request_ttft_s``,
``request_tbt_s``, ``request_max_gap_s``, ``request_e2e_s``; fixed shapes, so
SyncVectorEnv and the SB3 adapter carry them) and the episode's metrics,
computed exactly from them: end-to-end latency mean/p50/p99, TTFT and TBT
p50/p99, SLO attainment (TTFT <= 0.4 s and mean TBT <= 0.1 s, DynamoLLM's
SLOs), throughput, rejections.

## Arguments
``gym.make("LLMRouter-v0", target_load=0.9, ...)``: any field of
:class:`LLMRouterConfig`; ``scenario="trace"`` etc. for presets (see
:attr:`LLMRouterConfig.SCENARIOS`).

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, ScenarioPresets, check_config
from cloudgym.envs.core.llm import (
    EMPTY,
    PRESETS,
    RUNNING,
    Completions,
    InstanceSpec,
    LLMCluster,
    LLMClusterState,
    iteration_time,
    max_throughput,
)
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields, positive, unit_interval
from cloudgym.envs.workloads.generator import Generator
from cloudgym.envs.workloads.llm import (
    NUM_BUCKETS,
    REQUEST_CLASSES,
    BucketPredictor,
    ClassPrior,
    LengthPredictor,
    LLMRequests,
    LLMTrace,
    OracleLengths,
    SyntheticRequestGenerator,
    TraceRequestGenerator,
    load_azure_llm_trace,
    mean_lengths,
)

DEFAULT_TRACE = "AzureLLMInferenceTrace_code.csv"
"""The shared Azure 2023 coding trace, found under $CLOUDGYM_TRACES or ../shared/traces beside the checkout."""

DEFAULT_PREDICTOR = (
    Path(__file__).resolve().parent.parent
    / "agents"
    / "checkpoints"
    / "LLMRouter-v0"
    / "length_predictor"
    / "predictor.npz"
)
"""Weights of the shipped output-length predictor (trained by ``python scripts/train_length_predictor.py``)."""

WORKLOADS = ("mix", "coding", "conversation", "trace")
"""Kinds of request generator: a synthetic class mix, one class alone, or windows of the Azure coding trace."""

INSTANCE_FEATURES = 7
REQUEST_FEATURES = 12
TOKEN_SCALE = 1e-4
LAG_SCALE_S = 0.1
IMPACT_SCALE_S = 10.0
RATE_EWMA = 0.05
"""Weight of the newest gap in the arrival-rate estimate."""

PENDING, IN_FLIGHT, DONE, REJECTED = 0, 1, 2, 3
"""Per-request status codes in the state's result table."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LLMRouterConfig(ScenarioPresets):
    """Configuration of LLMRouter-v0."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {},
        "coding": {"workload": "coding"},
        "conversation": {"workload": "conversation"},
        "high_load": {"target_load": 0.95},
        "chunked": {"chunked_prefill": True, "max_batched_tokens": 2048},
        "heterogeneous": {"instances": ("llama2-7b-a100",) * 3 + ("llama2-7b-h100",)},
        "hetero_2x2": {"instances": ("llama2-7b-a100",) * 2 + ("llama2-7b-h100",) * 2},
        "conversation90": {"mix": (0.1, 0.9)},
        "coding90": {"mix": (0.9, 0.1)},
        "trace": {"workload": "trace", "target_load": 0.3},
        "oracle_lengths": {"length_predictor": "oracle"},
        "llama70b": {"instances": ("llama2-70b-4xa100",) * 4},
        "small": {"instances": ("llama2-7b-a100",) * 3, "slots": 24, "requests_per_episode": 48},
    }
    """Named presets; ``trace`` is the coding trace with windows scaled to 30% mean load (its bursts reach
    3-5x the mean), ``small`` a reduced size for tests. ``hetero_2x2`` is two A100 and two H100 instances (the
    heuristic reads each instance's own roofline, so it is defined there unchanged); ``conversation90`` and
    ``coding90`` are the 10/90 and 90/10 coding/conversation mixes (the default ``mix`` is 50/50)."""

    instances: tuple[str, ...] = ("llama2-7b-a100",) * 4
    """Instance presets of the cluster, one name per instance (cloudgym.envs.core.llm.PRESETS); may differ."""
    slots: int = 128
    """Request slots per instance (running + waiting); a full instance is masked out."""
    chunked_prefill: bool = False
    """Chunked prefill (Sarathi-Serve / vLLM v1) instead of whole-prompt mixed iterations."""
    max_batched_tokens: int = 8192
    """Token budget per iteration (vLLM max_num_batched_tokens), tokens."""
    max_batch_requests: int = 256
    """Most requests in a running batch (vLLM max_num_seqs)."""
    max_context_tokens: int = 8192
    """Context window: prompt + output above it is rejected, tokens. Llama-2's native window is 4,096, which
    would reject 14% of the coding trace; its service evidently used 8,192 (no request exceeds it), and a
    longer window changes neither the KV bytes nor the FLOPs per token."""
    requests_per_episode: int = 1000
    """Routing decisions (arriving requests) per episode."""
    workload: str = "mix"
    """``"mix"`` (coding + conversation, shares in ``mix``), ``"coding"``, ``"conversation"`` or ``"trace"``."""
    mix: tuple[float, float] = (0.5, 0.5)
    """Shares of coding and conversation requests when ``workload="mix"``."""
    target_load: float = 0.8
    """Mean arrival rate as a share of the cluster's capacity (the sum of each instance's saturation
    throughput for the workload's mean request, cloudgym.envs.core.llm.max_throughput)."""
    arrival_rate_per_s: float | None = None
    """Mean arrival rate, requests/s; overrides target_load when set."""
    arrival_cv: float = 1.0
    """Coefficient of variation of synthetic inter-arrival gaps (gamma renewal; 1 = Poisson)."""
    trace_path: str = DEFAULT_TRACE
    """Azure LLM trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens) for ``workload="trace"``: an absolute path,
    or a name found under $CLOUDGYM_TRACES or ../shared/traces beside the checkout (never the working directory)."""
    trace_request_class: str = "coding"
    """Request class of every request of the trace (one of REQUEST_CLASSES): which workload the file holds."""
    trace_time_scale: float | None = None
    """For traces: multiply the trace's clock by this instead of scaling each window to target_load."""
    hint_r2: float = 0.6
    """Share of the output length's (normal-score) variance the synthetic text-proxy hint explains."""
    length_predictor: str = "learned"
    """``"learned"`` (shipped weights), ``"prior"`` (class only), ``"oracle"`` (true lengths) or a .npz path."""
    reject_penalty_s: float = 30.0
    """Reward penalty per rejected request, in seconds of latency."""
    guidance_weight: float = 0.0
    """Weight of the heuristic-guidance penalty (the paper's heuristic-guided RL); 0 disables it."""
    drain_timeout_s: float = 600.0
    """After the last arrival, run at most this long for the requests in flight, s."""
    ttft_slo_s: float = 0.4
    """Time-to-first-token SLO for the attainment metric, s."""
    tbt_slo_s: float = 0.1
    """Mean time-between-tokens SLO for the attainment metric, s."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Sizes of one sub-env's state (instances x slots, requests of the episode) and of an iteration.
        "slots": at_least(2, 4096),
        "max_batched_tokens": at_least(64, 1 << 20),
        "max_batch_requests": at_least(1, 4096),
        "max_context_tokens": at_least(16, 1 << 20),
        "requests_per_episode": at_least(2, 200_000, why="the episode's requests are drawn at every reset"),
        "mix": at_least(0, 1e6),
        "target_load": positive(5),
        "arrival_rate_per_s": positive(1e6),
        "arrival_cv": Range(1e-3, 100, why="gamma shape 1/cv^2 must stay finite and positive"),
        "trace_time_scale": Range(1e-6, 1e6),
        "hint_r2": unit_interval(),
        "reject_penalty_s": at_least(0, 1e6),
        "guidance_weight": at_least(0, 1e6),
        "drain_timeout_s": positive(1e6),
        "ttft_slo_s": positive(3600),
        "tbt_slo_s": positive(3600),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        check_config(
            2 <= len(self.instances) <= 256, self, f"instances must name 2 to 256 presets, got {self.instances}"
        )
        unknown = [n for n in self.instances if n not in PRESETS]
        check_config(not unknown, self, f"instances: unknown presets {unknown}; known: {', '.join(PRESETS)}")
        check_config(
            self.chunked_prefill or self.max_batched_tokens >= self.max_context_tokens,
            self,
            f"without chunked prefill max_batched_tokens ({self.max_batched_tokens}) must hold the longest prompt "
            f"(max_context_tokens={self.max_context_tokens})",
        )
        check_config(
            self.workload in WORKLOADS,
            self,
            f"workload must be mix, coding, conversation or trace, got {self.workload!r}",
        )
        check_config(
            len(self.mix) == len(REQUEST_CLASSES) and sum(self.mix) > 0,
            self,
            f"mix must be {len(REQUEST_CLASSES)} non-negative shares, got {self.mix}",
        )
        check_config(
            self.trace_request_class in REQUEST_CLASSES,
            self,
            f"trace_request_class must be one of {', '.join(REQUEST_CLASSES)}, got {self.trace_request_class!r}",
        )
        check_config(
            self.length_predictor in ("learned", "prior", "oracle") or self.length_predictor.endswith(".npz"),
            self,
            f"length_predictor must be learned, prior, oracle or a .npz path, got {self.length_predictor!r}",
        )
        if self.length_predictor.endswith(".npz"):
            check_config(
                Path(self.length_predictor).is_file(),
                self,
                f"length_predictor {self.length_predictor!r} is not a file",
            )

    @property
    def mix_shares(self) -> tuple[float, float]:
        """Coding and conversation shares of the workload."""
        shares = {"coding": (1.0, 0.0), "conversation": (0.0, 1.0)}
        return shares.get(self.trace_request_class if self.workload == "trace" else self.workload, self.mix)

    def instance_specs(self) -> list[InstanceSpec]:
        specs = []
        for name in self.instances:
            spec = PRESETS[name]
            sched = dataclasses.replace(
                spec.scheduler,
                chunked_prefill=self.chunked_prefill,
                max_batched_tokens=self.max_batched_tokens,
                max_batch_requests=self.max_batch_requests,
            )
            specs.append(dataclasses.replace(spec, scheduler=sched))
        return specs


def workload_trace(config: LLMRouterConfig) -> LLMTrace | None:
    """The trace the config replays (loaded once per process), or None for a synthetic workload."""
    if config.workload != "trace":
        return None
    return load_azure_llm_trace(config.trace_path, request_class=config.trace_request_class)


def request_generator(config: LLMRouterConfig, trace: LLMTrace | None, rate_per_s: float) -> Generator[LLMRequests]:
    """The episode generator of the config's workload: synthetic requests, or windows of the loaded trace."""
    n = config.requests_per_episode
    if trace is None:
        return SyntheticRequestGenerator(
            n=n,
            rate_per_s=rate_per_s,
            mix=config.mix_shares,
            arrival_cv=config.arrival_cv,
            hint_r2=config.hint_r2,
            max_context_tokens=config.max_context_tokens,
        )
    if config.trace_time_scale is not None:
        return TraceRequestGenerator(trace=trace, n=n, time_scale=config.trace_time_scale)
    return TraceRequestGenerator(trace=trace, n=n, rate_per_s=rate_per_s)


def length_predictor(name: str) -> LengthPredictor:
    """The configured output-length predictor: the shipped weights, a .npz path, the class prior or the truth."""
    if name == "oracle":
        return OracleLengths()
    if name == "prior":
        return ClassPrior()
    return BucketPredictor.load(DEFAULT_PREDICTOR if name == "learned" else name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LLMRouterParams(CoreParams):
    """What LLMRouter-v0 derives once from its config."""

    specs: tuple[InstanceSpec, ...]
    """The instances, with the config's batching knobs."""
    cluster: LLMCluster
    """The cluster model (constants only: its state is :attr:`LLMRouterState.cluster`)."""
    capacity_rps: float
    """Sum over instances of the saturation request rate for the workload's mean request, req/s."""
    arrival_rate: float
    """Mean arrival rate of the episodes' requests, req/s."""
    predictor: LengthPredictor
    """What the router knows of each request's output length."""


@dataclasses.dataclass(frozen=True)
class InstanceSummary:
    """What a router sees of each instance's requests (derived from the state; never stored)."""

    queued_prefill: np.ndarray  # (B, N) float64, prompt tokens still to prefill
    context: np.ndarray  # (B, N) float64, KV tokens of running requests
    remaining: np.ndarray  # (B, N, S') float64, predicted remaining output tokens per request (>= 1; 0 if empty)
    remaining_running: np.ndarray  # (B, N, S') float64, the same for running requests only (S' <= S slots in use)

    @classmethod
    def of(cls, cs: LLMClusterState) -> InstanceSummary:
        """Per-instance aggregates a router can observe, computed once from the slot table."""
        used = slice(0, max(int(cs.slot_high.max()), 1))  # slots above every instance's highest in use are empty
        status, computed = cs.status[:, :, used], cs.computed[:, :, used]
        live = status != EMPTY
        running = status == RUNNING
        remaining = np.where(live, np.maximum(cs.estimate[:, :, used] - cs.generated[:, :, used], 1.0), 0.0)
        return cls(
            queued_prefill=np.where(live, np.maximum(cs.target[:, :, used] - computed, 0), 0).sum(
                axis=2, dtype=np.float64
            ),
            context=np.where(running, computed, 0).sum(axis=2, dtype=np.float64),
            remaining=remaining,
            remaining_running=np.where(running, remaining, 0.0),
        )


def impact_estimates(
    cluster: LLMCluster,
    cs: LLMClusterState,
    now: np.ndarray,
    prompt: np.ndarray,
    predicted_output: np.ndarray,
    summary: InstanceSummary,
) -> np.ndarray:
    """(B, N) the paper's heuristic: estimated added latency (s) of sending a request to each instance.

    The new request's own latency (the current iteration's remainder, the
    prompts queued ahead of it, its prefill mixed into the running batch,
    then its predicted decode at the batch it joins) plus what it adds to
    the requests already running (its prefill stretches their next token;
    its presence slows each later decode iteration, for as many tokens as
    each of them and it still have, by the predicted lengths).
    """
    coef = cluster.coef
    freq = cs.freq_scale
    running = cs.running.astype(np.float64)
    waiting = cs.waiting.astype(np.float64)
    ctx = summary.context
    queued = summary.queued_prefill
    p = prompt.astype(np.float64)[:, None]
    o = np.maximum(predicted_output, 1.0)[:, None]
    it = _iteration_time
    lag = np.maximum(cs.clock - now[:, None], 0.0)
    t_queue = np.where(
        queued > 0, it(coef, queued, 0.0, queued * queued / (2 * np.maximum(waiting, 1)), queued, freq), 0.0
    )
    t_decode_now = it(coef, 0.0, running, ctx + running, ctx + running, freq)
    t_prefill = it(coef, p, running, ctx + running + p * (p + 1) / 2, ctx + running + p, freq)
    later = ctx + queued + running + waiting
    t_without = it(coef, 0.0, running + waiting, later, later, freq)
    t_with = it(coef, 0.0, running + waiting + 1, later + p + o / 2, later + p + o / 2, freq)
    shared = np.minimum(summary.remaining_running, o[:, :, None]).sum(axis=2)
    own = lag + t_queue + t_prefill + (o - 1.0) * t_with
    added = running * np.maximum(t_prefill - t_decode_now, 0.0) + shared * (t_with - t_without)
    return own + added


def _iteration_time(coef: Any, prefill: Any, decode: Any, pairs: Any, kv: Any, freq: Any) -> np.ndarray:
    return iteration_time(coef, prefill, decode, pairs, kv, freq).total_s


@dataclasses.dataclass
class LLMRouterCounters:
    """Per-episode sums and counts (the base zeroes them at every reset)."""

    accepted: np.ndarray  # (B,) int64, requests queued on an instance this episode
    arrival_sum: np.ndarray  # (B,) float64, sum of their arrival times, s
    done_count: np.ndarray  # (B,) int64, requests completed
    done_finish_sum: np.ndarray  # (B,) float64, sum of their finish times, s
    done_tokens: np.ndarray  # (B,) float64, output tokens of completed requests
    latency_prev: np.ndarray  # (B,) float64, latency accrued by all requests up to `now`, s
    rejected: np.ndarray  # (B,) int64, requests rejected this episode
    rejected_context: np.ndarray  # (B,) int64, of which longer than the context window


@dataclasses.dataclass
class LLMRouterState:
    """State of B router episodes (R = requests_per_episode, K = output buckets)."""

    cluster: LLMClusterState  # (B, N[, S]) the instances
    arrival: np.ndarray  # (B, R) float64, arrival time of each request, s
    prompt: np.ndarray  # (B, R) int64, prompt tokens
    output: np.ndarray  # (B, R) int64, output tokens the model will generate (hidden from the router)
    request_class: np.ndarray  # (B, R) int64, index into REQUEST_CLASSES
    pred_probs: np.ndarray  # (B, R, K) float32, predicted output-bucket probabilities
    pred_tokens: np.ndarray  # (B, R) float64, predicted output tokens
    status: np.ndarray  # (B, R) int8, PENDING / IN_FLIGHT / DONE / REJECTED
    routed_to: np.ndarray  # (B, R) int64, instance each request went to (-1 if rejected or pending)
    ttft: np.ndarray  # (B, R) float64, time to first token, s (NaN until done)
    e2e: np.ndarray  # (B, R) float64, end-to-end latency, s (NaN until done)
    tbt: np.ndarray  # (B, R) float64, mean time between tokens, s (NaN for one-token outputs)
    max_gap: np.ndarray  # (B, R) float64, longest time between two tokens, s
    now: np.ndarray  # (B,) float64, current time (arrival of the request to route), s
    last_finish: np.ndarray  # (B,) float64, latest finish time, s
    gap_ewma: np.ndarray  # (B,) float64, smoothed inter-arrival gap, s
    counters: LLMRouterCounters


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(name="e2e_mean_s", unit="s", higher_is_better=False, description="mean end-to-end latency"),
    MetricSpec(name="e2e_p50_s", unit="s", higher_is_better=False, description="median end-to-end latency"),
    MetricSpec(name="e2e_p99_s", unit="s", higher_is_better=False, description="99th percentile end-to-end latency"),
    MetricSpec(name="ttft_p50_s", unit="s", higher_is_better=False, description="median time to first token"),
    MetricSpec(name="ttft_p99_s", unit="s", higher_is_better=False, description="99th percentile time to first token"),
    MetricSpec(
        name="tbt_p50_s", unit="s", higher_is_better=False, description="median of per-request mean time between tokens"
    ),
    MetricSpec(
        name="tbt_p99_s", unit="s", higher_is_better=False, description="99th percentile of per-request mean TBT"
    ),
    MetricSpec(
        name="slo_attainment_pct",
        unit="%",
        higher_is_better=True,
        description="requests with TTFT <= 0.4 s and mean TBT <= 0.1 s (rejected and unfinished count as misses)",
    ),
    MetricSpec(
        name="throughput_tokens_per_s",
        unit="tokens/s",
        higher_is_better=True,
        description="output tokens of completed requests per second of the episode",
    ),
    MetricSpec(name="throughput_rps", unit="req/s", higher_is_better=True, description="completed requests per second"),
    MetricSpec(name="rejected", unit="requests", higher_is_better=False, description="requests rejected"),
    MetricSpec(
        name="in_flight", unit="requests", higher_is_better=False, description="requests unfinished after the drain"
    ),
    MetricSpec(name="preemptions", unit="requests", higher_is_better=False, description="KV-cache preemptions"),
)
"""The episode metrics of LLMRouter-v0."""


class LLMRouterCore(BatchedCore[LLMRouterConfig, LLMRouterParams, LLMRouterState]):
    config_cls = LLMRouterConfig
    state_size_fields = ("instances", "slots", "requests_per_episode")
    has_action_masks = True
    metrics: ClassVar[tuple[MetricSpec, ...]] = METRICS

    # ------------------------------------------------------------------ construction
    def _derive(self, config: LLMRouterConfig) -> LLMRouterParams:
        c = config
        specs = tuple(c.instance_specs())
        n = len(specs)
        cluster = LLMCluster(specs, slots=c.slots)
        trace = workload_trace(c)
        mean_prompt, mean_output = trace.mean_lengths if trace is not None else mean_lengths(c.mix_shares)
        capacity_rps = float(
            sum(max_throughput(s, prompt_tokens=mean_prompt, output_tokens=mean_output).requests_per_s for s in specs)
        )
        arrival_rate = c.arrival_rate_per_s if c.arrival_rate_per_s is not None else c.target_load * capacity_rps
        return LLMRouterParams(
            action_space=spaces.Discrete(n),
            observation_space=spaces.Box(0.0, np.inf, (INSTANCE_FEATURES * n + REQUEST_FEATURES,), np.float32),
            generator=request_generator(c, trace, arrival_rate),
            specs=specs,
            cluster=cluster,
            capacity_rps=capacity_rps,
            arrival_rate=arrival_rate,
            predictor=length_predictor(c.length_predictor),
        )

    def _init_state(self, params: LLMRouterParams) -> LLMRouterState:
        b, r = self.num_envs, self.config.requests_per_episode
        return LLMRouterState(
            cluster=params.cluster.new_state(b),
            arrival=np.zeros((b, r)),
            prompt=np.ones((b, r), np.int64),
            output=np.ones((b, r), np.int64),
            request_class=np.zeros((b, r), np.int64),
            pred_probs=np.zeros((b, r, NUM_BUCKETS), np.float32),
            pred_tokens=np.ones((b, r)),
            status=np.zeros((b, r), np.int8),
            routed_to=np.full((b, r), -1, np.int64),
            ttft=np.full((b, r), np.nan),
            e2e=np.full((b, r), np.nan),
            tbt=np.full((b, r), np.nan),
            max_gap=np.full((b, r), np.nan),
            now=np.zeros(b),
            last_finish=np.zeros(b),
            gap_ewma=np.ones(b),
            counters=LLMRouterCounters(
                accepted=np.zeros(b, np.int64),
                arrival_sum=np.zeros(b),
                done_count=np.zeros(b, np.int64),
                done_finish_sum=np.zeros(b),
                done_tokens=np.zeros(b),
                latency_prev=np.zeros(b),
                rejected=np.zeros(b, np.int64),
                rejected_context=np.zeros(b, np.int64),
            ),
        )

    def _load(self, env_ids: np.ndarray, instances: Sequence[LLMRequests]) -> None:
        s, p = self.state, self.params
        for i, req in zip(env_ids, instances):
            probs, tokens = p.predictor.predict(req)
            s.arrival[i] = req.arrival_s
            s.prompt[i] = req.prompt_tokens
            s.output[i] = req.output_tokens
            s.request_class[i] = req.request_class
            s.pred_probs[i] = probs
            s.pred_tokens[i] = tokens
        p.cluster.reset_envs(s.cluster, env_ids, start_time=s.arrival[env_ids, 0])
        s.status[env_ids] = PENDING
        s.routed_to[env_ids] = -1
        for table in (s.ttft, s.e2e, s.tbt, s.max_gap):
            table[env_ids] = np.nan
        s.now[env_ids] = s.arrival[env_ids, 0]
        s.last_finish[env_ids] = s.arrival[env_ids, 0]
        s.gap_ewma[env_ids] = 1.0 / p.arrival_rate

    # ------------------------------------------------------------------ the request being routed
    def _request_index(self) -> np.ndarray:
        return np.minimum(self.stats.length, self.config.requests_per_episode - 1)

    def action_masks(self) -> np.ndarray:
        r = self._request_index()
        prompt = self.state.prompt[self._env_index, r]
        masks = self.params.cluster.can_admit(self.state.cluster, prompt)
        none = ~masks.any(axis=1)
        masks[none] = True  # nothing can take it: any choice rejects it (counted); masks must allow an action
        return masks

    def _current_request(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s, rows, r = self.state, self._env_index, self._request_index()
        return s.prompt[rows, r], s.output[rows, r], s.pred_tokens[rows, r], s.arrival[rows, r]

    # ------------------------------------------------------------------ dynamics
    def _latency_integral(self, t: np.ndarray) -> np.ndarray:
        """(B,) latency accrued by every accepted request up to time t: sum of (min(finish, t) - arrival)."""
        s, n = self.state, self.state.counters
        cs = s.cluster
        # Only an instance's last iteration can have ended after t (it started before t): its completions pend.
        late = np.where(cs.clock > t[:, None], cs.last_done, 0)
        done_by_t = n.done_count - late.sum(axis=1)
        finish_by_t = n.done_finish_sum - (late * cs.clock).sum(axis=1)
        return (n.accepted - done_by_t) * t - n.arrival_sum + finish_by_t

    def _guidance(self, actions: np.ndarray, prompt: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(B,) how much more added latency the heuristic estimates for the chosen instance than for its best."""
        s = self.state
        impact = impact_estimates(
            self.params.cluster, s.cluster, s.now, prompt, predicted, InstanceSummary.of(s.cluster)
        )
        best = np.where(self.action_masks(), impact, np.inf).min(axis=1)
        return self.config.guidance_weight * np.maximum(impact[self._env_index, actions] - best, 0.0)

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c, cl, n = self.state, self.config, self.params.cluster, self.state.counters
        rows = self._env_index
        r = self._request_index()
        prompt, output, predicted, now = self._current_request()
        guidance = self._guidance(actions, prompt, predicted) if c.guidance_weight > 0 else np.zeros(self.num_envs)
        in_window = prompt + output <= c.max_context_tokens
        admissible = cl.can_admit(s.cluster, prompt)[rows, actions] & in_window
        ids = np.flatnonzero(admissible)
        accepted = np.zeros(self.num_envs, bool)
        accepted[ids] = cl.enqueue(
            s.cluster,
            ids,
            actions[ids],
            r[ids],
            prompt[ids],
            output[ids],
            now[ids],
            tag=s.request_class[ids, r[ids]],
            estimate=predicted[ids],
        )
        rejected = ~accepted
        s.status[rows, r] = np.where(accepted, IN_FLIGHT, REJECTED)
        s.routed_to[rows, r] = np.where(accepted, actions, -1)
        n.accepted += accepted
        n.arrival_sum += np.where(accepted, now, 0.0)
        n.rejected += rejected
        n.rejected_context += ~in_window

        last = r + 1 >= c.requests_per_episode
        following = s.arrival[rows, np.minimum(r + 1, c.requests_per_episode - 1)]
        until = np.where(last, now + c.drain_timeout_s, following)
        s.gap_ewma = np.where(last, s.gap_ewma, (1 - RATE_EWMA) * s.gap_ewma + RATE_EWMA * (following - now))
        info = self._record(cl.advance(s.cluster, until))
        latency = self._latency_integral(until)
        accrued = latency - n.latency_prev
        n.latency_prev = latency
        s.now = until
        reward = -(accrued + c.reject_penalty_s * rejected + guidance)
        info["rejected"] = rejected
        info["accrued_latency_s"] = accrued
        if c.guidance_weight > 0:
            info["guidance_s"] = guidance
        if last.any():
            info.update(self._request_table(last))
        return reward, last, np.zeros(self.num_envs, bool), info

    def _record(self, done: Completions) -> Info:
        """Write completions into the per-request table; the step's completion count for info."""
        s, n, b = self.state, self.state.counters, self.num_envs
        counts = np.bincount(done.env, minlength=b)
        if len(done):
            e, q = done.env, done.request
            s.status[e, q] = DONE
            s.ttft[e, q] = done.ttft_s
            s.e2e[e, q] = done.e2e_s
            s.tbt[e, q] = done.tbt_s
            s.max_gap[e, q] = done.max_gap
            n.done_count += counts
            n.done_finish_sum += np.bincount(e, weights=done.finish, minlength=b)
            n.done_tokens += np.bincount(e, weights=done.output, minlength=b)
            np.maximum.at(s.last_finish, e, done.finish)
        return {"completed": counts}

    def _request_table(self, ended: np.ndarray) -> Info:
        """Per-request results of the episodes that end this step, (B, R) arrays valid where ``ended``."""
        s = self.state
        keep = ended[:, None]
        table = {
            "request_status": np.where(keep, s.status, PENDING).astype(np.int8),
            "request_instance": np.where(keep, s.routed_to, -1),
            "request_ttft_s": np.where(keep, s.ttft, np.nan),
            "request_tbt_s": np.where(keep, s.tbt, np.nan),
            "request_max_gap_s": np.where(keep, s.max_gap, np.nan),
            "request_e2e_s": np.where(keep, s.e2e, np.nan),
        }
        masked: Info = {}
        for key, value in table.items():
            masked[key] = value
            masked[f"_{key}"] = ended
        return masked

    # ------------------------------------------------------------------ observation
    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        s, c, p = self.state, self.config, self.params
        cs = s.cluster
        rows = self._env_index
        r = self._request_index()
        live = (self.stats.length < c.requests_per_episode).astype(np.float64)
        prompt, _, predicted, _ = self._current_request()
        summary = InstanceSummary.of(cs)
        impact = impact_estimates(p.cluster, cs, s.now, prompt, predicted, summary)
        per_instance = np.stack(
            [
                cs.waiting / c.slots,
                cs.running / c.slots,
                summary.queued_prefill * TOKEN_SCALE,
                p.cluster.kv_fraction(cs),
                summary.remaining.sum(axis=2) * TOKEN_SCALE,
                np.maximum(cs.clock - s.now[:, None], 0.0) / LAG_SCALE_S,
                impact * live[:, None] / IMPACT_SCALE_S,
            ],
            axis=2,
        ).reshape(self.num_envs, -1)
        one_hot = np.zeros((self.num_envs, len(REQUEST_CLASSES)))
        one_hot[rows, s.request_class[rows, r]] = 1.0
        log_scale = math.log1p(8192)
        request = (
            np.concatenate(
                [
                    (np.log1p(prompt) / log_scale)[:, None],
                    s.pred_probs[rows, r],
                    one_hot,
                    (np.log1p(predicted) / log_scale)[:, None],
                    np.minimum(1.0 / (s.gap_ewma * p.capacity_rps), 10.0)[:, None],
                ],
                axis=1,
            )
            * live[:, None]
        )
        return np.concatenate([per_instance, request], axis=1).astype(np.float32)

    # ------------------------------------------------------------------ metrics
    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s, c, n = self.state, self.config, self.state.counters
        done = s.status[env_ids] == DONE
        fallback = c.drain_timeout_s  # latency metrics of an episode where nothing completed (never by design)

        def pct(values: np.ndarray, q: float) -> np.ndarray:
            valid = done & ~np.isnan(values)
            any_valid = valid.any(axis=1)
            data = np.where(valid, values, np.nan)
            data[~any_valid] = 0.0
            with np.errstate(all="ignore"):
                out = np.nanpercentile(data, q, axis=1)
            return np.where(any_valid, out, fallback)

        e2e = s.e2e[env_ids]
        count = done.sum(axis=1)
        with np.errstate(all="ignore"):
            e2e_mean = np.where(count > 0, np.where(done, e2e, 0.0).sum(axis=1) / np.maximum(count, 1), fallback)
        tbt = s.tbt[env_ids]  # NaN for one-token outputs: no gap, so no TBT to miss
        meets = done & (s.ttft[env_ids] <= c.ttft_slo_s) & ~(tbt > c.tbt_slo_s)
        span = np.maximum(s.last_finish[env_ids] - s.arrival[env_ids, 0], 1e-9)
        in_flight = (s.status[env_ids] == IN_FLIGHT).sum(axis=1)
        return {
            "e2e_mean_s": e2e_mean,
            "e2e_p50_s": pct(e2e, 50),
            "e2e_p99_s": pct(e2e, 99),
            "ttft_p50_s": pct(s.ttft[env_ids], 50),
            "ttft_p99_s": pct(s.ttft[env_ids], 99),
            "tbt_p50_s": pct(tbt, 50),
            "tbt_p99_s": pct(tbt, 99),
            "slo_attainment_pct": 100.0 * meets.sum(axis=1) / c.requests_per_episode,
            "throughput_tokens_per_s": n.done_tokens[env_ids] / span,
            "throughput_rps": count / span,
            "rejected": n.rejected[env_ids].astype(np.float64),
            "in_flight": in_flight.astype(np.float64),
            "preemptions": s.cluster.activity.preemptions[env_ids].sum(axis=1),
        }


def text_frame(core: LLMRouterCore, i: int) -> str:
    """Sub-env ``i`` as text: each instance's queue, batch and KV cache, the request being routed."""
    s, c, p = core.state, core.config, core.params
    cs = s.cluster
    r = int(min(core.stats.length[i], c.requests_per_episode - 1))
    kv = p.cluster.kv_fraction(cs)[i]
    lines = [f"t={s.now[i]:.2f} s, request {core.stats.length[i]}/{c.requests_per_episode}"]
    for n, spec in enumerate(p.specs):
        lines.append(
            f"  instance {n} ({spec.model.name} on {spec.num_gpus}x {spec.gpu.name}): "
            f"{cs.waiting[i, n]:3d} waiting, {cs.running[i, n]:3d} running, "
            f"KV {100 * kv[n]:5.1f}%, clock {cs.clock[i, n]:.2f} s"
        )
    lines.append(
        f"  next request: {s.prompt[i, r]} prompt tokens, ~{s.pred_tokens[i, r]:.0f} output tokens predicted, "
        f"class {REQUEST_CLASSES[s.request_class[i, r]]}"
    )
    return "\n".join(lines)


class LLMRouterVectorEnv(CloudGymVectorEnv):
    core_cls = LLMRouterCore


class LLMRouterEnv(CloudGymEnv):
    core_cls = LLMRouterCore
