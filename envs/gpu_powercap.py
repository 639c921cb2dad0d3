"""GPUPowerCap-v0: power oversubscription and GPU frequency capping in an LLM inference row (after POLCA).

## Description
Patel et al., "Characterizing Power Management Opportunities for LLMs in the
Cloud" (POLCA, ASPLOS 2024) observe that LLM inference rows rarely draw their
provisioned power, so a row can host about 30% more servers if a controller
caps GPU clocks when power climbs, through out-of-band controls that take up
to 40 s, and never lets the powerbrake fire. This env is that row.

**The row.** ``base_servers`` DGX-A100 servers (POLCA: 40) set the power
budget, ``base_servers x 6.5 kW`` (each server's peak); ``oversubscription``
adds up to 50% more servers under the same budget. Each server runs
Llama-2-70B on its eight A100s (one tensor-parallel instance of the shared
LLM model, :mod:`cloudgym.envs.core.llm`: continuous batching, KV cache,
roofline iteration time in which only compute scales with the SM clock). A
share ``hp_share`` of the servers serves high-priority (HP) requests, the
rest low-priority (LP) ones; a round-robin balancer per class spreads that
class's requests over its servers.

**Load.** Requests have the prompt and output lengths of the shared Azure
LLM trace generator (coding and conversation shapes, 50/50;
:mod:`cloudgym.envs.workloads.llm`; prompts beyond Llama-2's 4,096-token
window are truncated) and arrive along a load curve shared by the whole row
(:mod:`cloudgym.envs.workloads.llm_row`): an episode is a busy period, its
level drawn in ``load_level`` x ``peak_rate_per_server``, the load climbing
from half of it at the start of the warm-up to it 150 s later, with
Ornstein-Uhlenbeck swings (volatility 0.1, time constant 60 s).

**Power.** Every second, each instance's iterations say how long it was
compute-bound (prefill) and memory-bound (decode);
:class:`~cloudgym.envs.core.power.LLMPhaseActivity` turns that into GPU
activity (prefill 1.05: TDP and brief excursions beyond it; decode 0.45:
~56% of TDP), and the shared :class:`~cloudgym.envs.core.power.GpuPowerModel`
and :class:`~cloudgym.envs.core.power.ServerPowerModel` into watts: idle at
20% of TDP, 1410 -> 1110 MHz saves 20% of peak, GPUs about half of a
server's 6.5 kW. A lower clock stretches prefill (compute) far more than
decode, and lowers the draw of every busy second.

**Controls.** Every step the agent commands an SM clock cap per priority
class (or per server); a command lands ``cap_delay_s`` (40) seconds later,
as POLCA's out-of-band capping does (the first command of an episode is in
effect from its start: the row was under its controller before the episode
opened). When the row's power over a second
exceeds the budget, the powerbrake engages ``brake_delay_s`` (5) seconds
later: every GPU of the row runs at 288 MHz for ``brake_hold_s`` (15)
seconds. More than ``ups_ride_through_s`` (10) consecutive seconds over
budget trips the breaker and ends the episode.

**Calibration.** The load is calibrated to POLCA's production figures
(DOMAIN.md section 3): rows peak at ~79% of provisioned power and rise by
at most ~11.8% of it within 40 s. What the env measures against those
figures and against POLCA's headline (zero powerbrakes at +30% servers,
within ~1% and ~2% of HP and LP throughput), with the commands that
measure it, is in ``docs/gpu_powercap.md``.

Not modelled: sub-second power (telemetry here is 1-s averages, POLCA's
100 ms), reactive power capping, temperature, and requests that time out.

## Action Space
``MultiDiscrete([L, L])``: the cap level of HP and LP servers, an index into
``freq_levels_mhz`` (default 1410, 1350, 1305, 1275, 1200, 1110, 1005,
900 MHz; 0 = uncapped). With ``per_server_caps=True``:
``MultiDiscrete([L] * num_servers)`` (HP servers first).

## Observation Space
``Box(0, 10, (26,), float32)`` (plus 4 entries per server with ``per_server_caps``):

| index   | observation                                                                |
|---------|----------------------------------------------------------------------------|
| 0       | row power over the last second / budget                                    |
| 1 .. 4  | row power / budget 5, 10, 20 and 40 s ago                                  |
| 5       | highest row power / budget over the last 41 s                              |
| 6, 7    | clock cap in effect, HP and LP (f / f_max; per-server mode: class mean)    |
| 8 .. 15 | caps already commanded that land in 10, 20, 30 and 40 s (HP, LP pairs)     |
| 16      | 1 while the powerbrake holds                                               |
| 17      | 1 while a powerbrake is pending (engages within brake_delay_s)             |
| 18      | consecutive seconds over budget / ups_ride_through_s                       |
| 19, 20  | requests in flight per HP / LP server / slots per server                   |
| 21, 22  | arrivals in the last second per HP / LP server / peak_rate_per_server      |
| 23, 24  | mean GPU activity of HP / LP servers in the last second                    |
| 25      | share of the episode elapsed                                               |
| 26 ..   | per server (per-server mode): cap in effect, latest command, power / peak, in flight / slots |

## Rewards
Per step, weighting HP by ``hp_weight`` (2) and LP by 1, per server of the
row: ``token_reward`` (0.01) per output token served, minus ``latency_cost``
(0.1) per request in the system (queued or running: Little's law makes its
sum the requests' total latency); minus ``brake_penalty`` (500) when a
powerbrake engages, ``braked_cost`` (1) per second it holds, and
``trip_penalty`` (5000) if the breaker trips. A normal 150-s episode earns
about 200, so one brake costs more than two episodes of served work: POLCA
treats the powerbrake as a catastrophe to be avoided, not a cost to trade.

## Starting State
The row has served ``warmup_s`` (30) seconds of its load uncapped; no brake
is pending. The first step's command is in effect from the start (the row
was under its controller before the episode opened; without this, a busy
+30% row opens uncapped and no controller could act within 40 s); later
commands land ``cap_delay_s`` after they are issued. With ``track_reference=True`` an uncapped copy
of the row (same requests, every GPU at f_max, no power limit) starts from
the same state and runs beside it for the relative metrics.

## Episode End
Terminated when the breaker trips; truncated after ``steps_per_episode``
(150) one-second steps. Episode metrics (``info["metrics"]``): powerbrakes,
breaker trips, throughput loss and p50/p99 end-to-end latency change per
class against the uncapped reference row (NaN without ``track_reference``),
absolute p50/p99 latencies (requests still in flight count their age),
peak and mean power, energy, tokens served, rejections, capped time.

## Arguments
``gym.make("GPUPowerCap-v0", oversubscription=0.3, ...)``: any field of
:class:`GPUPowerCapConfig`; ``scenario="+30%"`` (``"+0%"`` ... ``"+50%"``)
sets the level with the reference row on.

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core import tree
from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, ScenarioPresets, check_config
from cloudgym.envs.core.histogram import NUM_LATENCY_BINS, histogram_quantile, latency_bins
from cloudgym.envs.core.llm import EMPTY, PRESETS, Completions, LLMCluster, LLMClusterState
from cloudgym.envs.core.power import (
    CapPipelineState,
    EnergyMeter,
    GpuPowerModel,
    LLMPhaseActivity,
    OutOfBandCaps,
    PowerBrake,
    PowerBrakeState,
    ServerPowerModel,
)
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields, positive
from cloudgym.envs.workloads.llm_row import HIGH, LOW, RowLoadGenerator, RowRequests, azure_lengths

CLASSES = ("hp", "lp")
"""Priority classes in index order (HIGH = 0, LOW = 1)."""

OBS_HIGH = 10.0
"""Upper bound of every observation entry."""
POWER_HISTORY_S = 41
"""Seconds of row power the state keeps (now and 40 s back: one out-of-band capping delay)."""
OBS_POWER_LAGS = (5, 10, 20, 40)
"""Seconds back at which the observation shows the row's power."""
OBS_PIPELINE_AHEAD = (10, 20, 30, 40)
"""Seconds ahead at which the observation shows the caps already commanded (clipped to the delay)."""
OBS_BASE = 1 + len(OBS_POWER_LAGS) + 1 + 2 + 2 * len(OBS_PIPELINE_AHEAD) + 3 + 2 + 2 + 2 + 1
"""Observation entries shared by both action modes (see the docstring's table)."""
LOAD_CAP = 4.0
"""The load curve is clipped at this multiple of the peak rate (it bounds the request arrays)."""
MAX_REQUESTS = 1 << 24
"""Most requests an episode's arrays may hold per sub-env (about half a GB of state)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPUPowerCapConfig(ScenarioPresets):
    """Configuration of GPUPowerCap-v0 (every power in W, every time in s, every frequency in MHz)."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "+0%": {"oversubscription": 0.0, "track_reference": True},
        "+10%": {"oversubscription": 0.1, "track_reference": True},
        "+20%": {"oversubscription": 0.2, "track_reference": True},
        "+30%": {"oversubscription": 0.3, "track_reference": True},
        "+40%": {"oversubscription": 0.4, "track_reference": True},
        "+50%": {"oversubscription": 0.5, "track_reference": True},
    }
    """Extra servers under the same budget, each level with the uncapped reference row for the relative metrics."""

    base_servers: int = 40
    """Servers the row's power was provisioned for (POLCA: 40 DGX-A100); budget = base_servers x server peak."""
    oversubscription: float = 0.3
    """Extra servers under the same budget, as a share of base_servers (0 to 0.5; POLCA's headline: 0.3)."""
    hp_share: float = 0.5
    """Share of the row's servers (and of its traffic) that serves high-priority requests (our choice)."""
    instance: str = "llama2-70b-8xa100"
    """The LLM instance (model on a tensor-parallel GPU group) a server runs as many of as its GPUs hold."""
    gpus_per_server: int = 8
    """GPUs per server (DGX-A100: 8); a server runs gpus_per_server / instance GPUs model instances."""
    slots_per_instance: int = 24
    """Requests an instance holds at once (running + queued); an arrival at a full one is rejected and counted."""
    steps_per_episode: int = 150
    """Episode length in 1-s steps."""
    warmup_s: int = 30
    """Seconds the row serves its load uncapped before the episode starts (so it starts busy, not empty)."""
    peak_rate_per_server: float = 2.2
    """Request rate per server at load level 1, requests/s (calibrated: the row peaks at ~79% of budget at +0%)."""
    load_level: tuple[float, float] = (0.6, 0.8)
    """Range of the episode's mean load, as a share of the peak rate (drawn uniformly per episode)."""
    load_volatility: float = 0.1
    """Stationary standard deviation of the log load around the episode's level."""
    load_time_constant_s: float = 60.0
    """Time constant of the load's swings (Ornstein-Uhlenbeck), s."""
    load_ramp_from: float = 0.5
    """The load climbs from this share of the episode's level to the level (traffic approaching a busy period)..."""
    load_ramp_s: float = 150.0
    """...over this many seconds from the start of the warm-up."""
    arrival_cv: float = 1.0
    """Coefficient of variation of the gaps between arrivals of a class (1: Poisson, given the load curve)."""
    workload_mix: tuple[float, float] = (0.5, 0.5)
    """Shares of (coding, conversation) requests (Azure LLM trace 2023 shapes)."""
    prefill_activity: float = 1.05
    """GPU activity while compute-bound (prefill): TDP and a little beyond (POLCA)."""
    decode_activity: float = 0.45
    """GPU activity while memory-bound (decode): ~56% of TDP with the 20% idle floor."""
    freq_levels_mhz: tuple[float, ...] = (1410.0, 1350.0, 1305.0, 1275.0, 1200.0, 1110.0, 1005.0, 900.0)
    """SM clock caps an action picks from, highest (uncapped) first; includes POLCA's 1305, 1275 and 1110."""
    per_server_caps: bool = False
    """Actions cap each server separately instead of each priority class."""
    cap_delay_s: int = 40
    """Out-of-band capping delay: a cap commanded at step t >= 1 takes effect at step t + cap_delay_s (POLCA: <= 40 s);
    the first step's command is in effect from the start (the row was under it before the episode opened)."""
    brake_threshold: float = 1.0
    """Row power (share of budget) above which the powerbrake engages."""
    brake_delay_s: int = 5
    """Seconds from the over-budget measurement until the brake throttles the GPUs (POLCA: within 5 s)."""
    brake_freq_mhz: float = 288.0
    """SM clock of every GPU of the row while the powerbrake holds (POLCA: ~288 MHz)."""
    brake_hold_s: int = 15
    """Seconds the powerbrake holds once engaged before it releases (our choice)."""
    ups_ride_through_s: int = 10
    """Consecutive seconds over budget the UPS rides through; one more trips the breaker (POLCA: ~10 s)."""
    track_reference: bool = False
    """Also simulate the uncapped row (same requests, every GPU at f_max, no power limit) for the relative metrics."""
    hp_weight: float = 2.0
    """Weight of high-priority work and latency in the reward (low priority: 1)."""
    token_reward: float = 0.01
    """Reward per output token served (weighted by class), per server."""
    latency_cost: float = 0.1
    """Cost per request-second spent in the system (queued or running, weighted by class), per server."""
    brake_penalty: float = 500.0
    """Cost of each powerbrake engagement (more than two normal episodes' reward: a catastrophe)."""
    braked_cost: float = 1.0
    """Cost per second the powerbrake holds."""
    trip_penalty: float = 5000.0
    """Cost of tripping the breaker (the episode ends)."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Sizes: servers x instances x slots and the seconds of an episode size one sub-env's arrays (the
        # request arrays together are bounded below through max_requests).
        "base_servers": at_least(2, 1024),
        "oversubscription": Range(0, 0.5, why="0% to 50% extra servers"),
        "hp_share": Range(0, 1, low_open=True, high_open=True),
        "gpus_per_server": at_least(1, 64),
        "slots_per_instance": at_least(1, 4096),
        "steps_per_episode": at_least(1, 86_400, why="a day of 1-s steps"),
        "warmup_s": at_least(0, 300, why="the warm-up is simulated second by second at every reset"),
        "peak_rate_per_server": positive(1000),
        "load_level": positive(LOAD_CAP, why="the load curve is clipped at LOAD_CAP x the peak rate"),
        "load_volatility": at_least(0, 3, why="std of the log load; beyond, the rates over- or underflow"),
        "load_time_constant_s": Range(0.1, 1e6),
        "load_ramp_from": Range(0, 1, low_open=True),
        "load_ramp_s": at_least(0, 1e6),
        "arrival_cv": Range(0.01, 10, why="gamma shape 1/cv^2 must stay finite and positive"),
        "workload_mix": at_least(0, 1e6),
        "prefill_activity": at_least(0, 2),
        "decode_activity": at_least(0, 2),
        "freq_levels_mhz": positive(1e4),
        # Delays and holds are arrays and counters in seconds: an hour is far beyond POLCA's tens of seconds.
        "cap_delay_s": at_least(0, 3600),
        "brake_threshold": positive(10),
        "brake_delay_s": at_least(1, 3600),
        "brake_freq_mhz": positive(1e4),
        "brake_hold_s": at_least(1, 3600),
        "ups_ride_through_s": at_least(0, 3600),
        # Reward weights: finite per step and summed over an episode.
        "hp_weight": at_least(0, 1e6),
        "token_reward": at_least(0, 1e6),
        "latency_cost": at_least(0, 1e6),
        "brake_penalty": at_least(0, 1e9),
        "braked_cost": at_least(0, 1e6),
        "trip_penalty": at_least(0, 1e9),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        check_config(
            self.instance in PRESETS,
            self,
            f"unknown instance preset {self.instance!r} (known: {', '.join(PRESETS)})",
        )
        gpus = PRESETS[self.instance].num_gpus
        check_config(
            self.gpus_per_server >= gpus and self.gpus_per_server % gpus == 0,
            self,
            f"gpus_per_server ({self.gpus_per_server}) must be a multiple of the instance's {gpus} GPUs",
        )
        low, high = self.load_level
        check_config(low <= high, self, f"load_level must satisfy 0 < low <= high, got {self.load_level}")
        check_config(
            len(self.workload_mix) == 2 and sum(self.workload_mix) > 0,
            self,
            f"workload_mix must give two non-negative shares (coding, conversation), got {self.workload_mix}",
        )
        check_config(
            self.decode_activity <= self.prefill_activity,
            self,
            "need 0 <= decode_activity <= prefill_activity",
        )
        levels = np.asarray(self.freq_levels_mhz)
        gpu = self.gpu_power
        check_config(
            bool(1 <= levels.size <= 64 and levels[0] == gpu.max_freq_mhz and np.all(np.diff(levels) < 0)),
            self,
            f"freq_levels_mhz must start at f_max ({gpu.max_freq_mhz}) and decrease (1 to 64 clocks), "
            f"got {self.freq_levels_mhz}",
        )
        check_config(
            levels[-1] >= gpu.min_freq_mhz,
            self,
            f"freq_levels_mhz must stay >= {gpu.min_freq_mhz} MHz, got {self.freq_levels_mhz}",
        )
        check_config(
            gpu.min_freq_mhz <= self.brake_freq_mhz <= gpu.max_freq_mhz,
            self,
            f"brake_freq_mhz must be in [{gpu.min_freq_mhz}, {gpu.max_freq_mhz}], got {self.brake_freq_mhz}",
        )
        # The episode's request arrays hold max_requests entries per sub-env (~30 bytes each).
        check_config(
            self.max_requests <= MAX_REQUESTS,
            self,
            f"base_servers x (1 + oversubscription) x peak_rate_per_server x (warmup_s + steps_per_episode) "
            f"x {LOAD_CAP} (with arrival_cv's margin) sizes the episode's request arrays: {self.max_requests:,} "
            f"requests, more than {MAX_REQUESTS:,}",
        )

    # ------------------------------------------------------------------ derived constants
    @property
    def num_servers(self) -> int:
        """Servers in the row: base_servers x (1 + oversubscription), rounded."""
        return round(self.base_servers * (1.0 + self.oversubscription))

    @property
    def servers_per_class(self) -> tuple[int, int]:
        """(HP, LP) servers; HP servers come first in the row."""
        hp = min(max(round(self.num_servers * self.hp_share), 1), self.num_servers - 1)
        return hp, self.num_servers - hp

    @property
    def instances_per_server(self) -> int:
        return self.gpus_per_server // PRESETS[self.instance].num_gpus

    @property
    def gpu_power(self) -> GpuPowerModel:
        gpu = PRESETS[self.instance].gpu
        return GpuPowerModel(tdp_w=gpu.tdp_w, max_freq_mhz=gpu.max_freq_mhz)

    @property
    def server_power(self) -> ServerPowerModel:
        """The server's power model: its GPUs plus the rest (DGX-A100 defaults of the shared model)."""
        return ServerPowerModel(gpu=self.gpu_power, gpus=self.gpus_per_server)

    @property
    def budget_w(self) -> float:
        """Provisioned power of the row: base_servers x the server's peak draw."""
        return self.base_servers * self.server_power.peak_w

    @property
    def horizon_s(self) -> int:
        """Seconds of load an episode draws: the warm-up, then the episode's steps."""
        return self.warmup_s + self.steps_per_episode

    @property
    def max_requests(self) -> int:
        """Capacity of the per-episode request arrays (the load curve is capped at 4x the peak rate)."""
        mean = self.num_servers * self.peak_rate_per_server * self.horizon_s * LOAD_CAP
        return int(mean + 10.0 * math.sqrt(mean) * max(self.arrival_cv, 1.0) + 64)


@dataclasses.dataclass
class EpisodeRequests:
    """The episode's requests of B rows, as the generator drew them (warm-up included), replayed second by second.

    R, the width of the request arrays, is the most requests an episode has drawn so far (it grows at a reset
    that draws more, never past the config's ``max_requests``): a row is sized for the load curve capped at 4x
    the peak rate, five times what an episode usually draws, and B rows of that would be written at every reset.
    """

    arrival: np.ndarray  # (B, R) float32, arrival time of each request of the episode, s (inf past the last)
    prompt: np.ndarray  # (B, R) int16, prompt tokens
    output: np.ndarray  # (B, R) int16, output tokens
    instance: np.ndarray  # (B, R) int16, model instance the round-robin balancer sends it to
    step_first: np.ndarray  # (B, H + 1) int32, index of the first request arriving in each second (H = warm-up + T)
    load: np.ndarray  # (B, H) float32, the load curve (share of the peak rate; hidden from the agent)

    @classmethod
    def zeros(cls, num_envs: int, horizon_s: int) -> EpisodeRequests:
        b, h = num_envs, horizon_s
        return cls(
            arrival=np.zeros((b, 0), np.float32),
            prompt=np.zeros((b, 0), np.int16),
            output=np.zeros((b, 0), np.int16),
            instance=np.zeros((b, 0), np.int16),
            step_first=np.zeros((b, h + 1), np.int32),
            load=np.zeros((b, h), np.float32),
        )

    def write(self, env_ids: np.ndarray, reqs: Sequence[RowRequests], max_requests: int) -> None:
        """Put each episode's requests in its row of ``env_ids`` (arrivals in float32, kept inside the horizon);
        raises when an episode drew more than ``max_requests``."""
        counts = [len(req) for req in reqs]
        most = max(counts)
        if most > max_requests:  # ~10 standard deviations above the most a capped load curve gives
            raise RuntimeError(f"episode drew {most} requests, more than the {max_requests} the state may hold")
        if most > self.arrival.shape[1]:
            self._widen(min(max_requests, most + most // 8))  # headroom: a later episode rarely widens again
        h = self.load.shape[1]
        last = np.nextafter(np.float32(h), np.float32(0))
        seconds = np.arange(h + 1, dtype=np.float32)
        # One row at a time: a row is thousands of requests, so each copy is a memcpy and the loop costs little
        # (measured: 3x faster at B=256 than padding all rows into (k, R) blocks and writing those).
        for env, req, m in zip(env_ids, reqs, counts):
            arrival = np.minimum(req.arrival_s.astype(np.float32), last)
            self.arrival[env, :m] = arrival
            self.arrival[env, m:] = np.inf
            self.prompt[env, :m] = req.prompt_tokens
            self.output[env, :m] = req.output_tokens
            self.instance[env, :m] = req.instance
            self.step_first[env] = np.searchsorted(arrival, seconds, side="left")
            self.load[env] = req.load

    def _widen(self, width: int) -> None:
        """Give every row room for ``width`` requests (the new columns are padding: inf arrivals, zero tokens)."""
        b, r = self.arrival.shape
        for name in ("arrival", "prompt", "output", "instance"):
            old = getattr(self, name)
            new = np.full((b, width), np.inf, old.dtype) if name == "arrival" else np.zeros((b, width), old.dtype)
            new[:, :r] = old
            setattr(self, name, new)


@dataclasses.dataclass
class RowTelemetry:
    """What the row's sensors read over the last seconds (zeroed at reset, then filled by the warm-up)."""

    power_history: np.ndarray  # (B, POWER_HISTORY_S) float64, row power / budget of the last seconds (ring by step)
    power_last: np.ndarray  # (B, N) float64, draw of each server in the last step, W
    activity_last: np.ndarray  # (B, N) float64, GPU activity of each server in the last step
    arrivals_last: np.ndarray  # (B, 2) int64, requests that arrived in the last step per class

    @classmethod
    def zeros(cls, num_envs: int, num_servers: int) -> RowTelemetry:
        b, n = num_envs, num_servers
        return cls(
            power_history=np.zeros((b, POWER_HISTORY_S)),
            power_last=np.zeros((b, n)),
            activity_last=np.zeros((b, n)),
            arrivals_last=np.zeros((b, 2), np.int64),
        )


@dataclasses.dataclass
class GPUPowerCapCounters:
    """What an episode did (the base zeroes it at every reset); row 0 is the policy's, row 1 the uncapped reference."""

    tokens: np.ndarray  # (B, 2, 2) float64, output tokens of completed requests per (row, class)
    completed: np.ndarray  # (B, 2, 2) int64, requests completed per (row, class)
    rejected: np.ndarray  # (B, 2, 2) int64, arrivals refused (server full) per (row, class)
    latency_hist: np.ndarray  # (B, 2, 2, NUM_LATENCY_BINS) int32, end-to-end latencies of completed requests
    generated_start: np.ndarray  # (B, 2, 2) float64, tokens generated before the episode by requests still in flight
    generated_last: np.ndarray  # (B, 2, 2) float64, output tokens generated so far (completed + in flight)
    arrived: np.ndarray  # (B, 2) int64, requests that arrived per class
    brakes: np.ndarray  # (B,) int64, powerbrake engagements
    braked_s: np.ndarray  # (B,) int64, seconds under the powerbrake
    over_budget_s: np.ndarray  # (B,) int64, seconds with row power over budget
    tripped: np.ndarray  # (B,) bool, the breaker tripped (the episode ended)
    capped_server_s: np.ndarray  # (B,) int64, server-seconds below f_max (caps or brake)
    peak_power: np.ndarray  # (B,) float64, highest row power / budget
    power_sum: np.ndarray  # (B,) float64, sum of row power / budget over the episode's steps
    energy: EnergyMeter  # (B, N) J per server of the policy's row
    reference_energy: EnergyMeter  # (B, N) J per server of the uncapped reference row (zeros without it)

    @classmethod
    def zeros(cls, num_envs: int, num_servers: int) -> GPUPowerCapCounters:
        b, n = num_envs, num_servers
        return cls(
            tokens=np.zeros((b, 2, 2)),
            completed=np.zeros((b, 2, 2), np.int64),
            rejected=np.zeros((b, 2, 2), np.int64),
            latency_hist=np.zeros((b, 2, 2, NUM_LATENCY_BINS), np.int32),
            generated_start=np.zeros((b, 2, 2)),
            generated_last=np.zeros((b, 2, 2)),
            arrived=np.zeros((b, 2), np.int64),
            brakes=np.zeros(b, np.int64),
            braked_s=np.zeros(b, np.int64),
            over_budget_s=np.zeros(b, np.int64),
            tripped=np.zeros(b, bool),
            capped_server_s=np.zeros(b, np.int64),
            peak_power=np.zeros(b),
            power_sum=np.zeros(b),
            energy=EnergyMeter.zeros(b, n),
            reference_energy=EnergyMeter.zeros(b, n),
        )


@dataclasses.dataclass
class GPUPowerCapState:
    """State of B rows."""

    requests: EpisodeRequests  # (B, R) and (B, H): the episode's instance
    llm: LLMClusterState  # (B, M or 2M, S): the row's M instances, then (track_reference) the reference row's
    caps: CapPipelineState  # (B, D, C): caps in effect and in flight
    brake: PowerBrakeState  # (B,): the powerbrake and the UPS
    telemetry: RowTelemetry
    counters: GPUPowerCapCounters


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPUPowerCapParams(CoreParams):
    """What a config fixes: the row's layout, its models and the request generator."""

    num_servers: int
    """N, servers in the policy's row."""
    instances_per_server: int
    num_instances: int
    """M = N x instances_per_server, model instances of one row."""
    servers_per_class: tuple[int, int]
    """(HP, LP) servers; HP servers come first."""
    rows: int
    """Rows simulated: 1, or 2 with the uncapped reference row (instances M .. 2M - 1)."""
    server_class: np.ndarray  # (N,) int64, HIGH or LOW
    instance_class: np.ndarray  # (M,) int64, HIGH or LOW (instances of server j are j*ips .. j*ips + ips - 1)
    class_onehot: np.ndarray  # (M, 2) float64, which class each instance of a row serves
    server_onehot: np.ndarray  # (N, 2) float64, which class each server serves
    class_weights: np.ndarray  # (2,) float64, reward weight of (HP, LP) work and latency
    levels_mhz: np.ndarray  # (L,) float64, cap levels, f_max first
    f_max: float
    budget_w: float
    """Provisioned power of the row, W."""
    cluster: LLMCluster
    """Every instance of the simulated rows."""
    server_model: ServerPowerModel
    phase: LLMPhaseActivity
    caps: OutOfBandCaps
    brake: PowerBrake


def derive_params(c: GPUPowerCapConfig) -> GPUPowerCapParams:
    """The spaces, layout, models and generator of a config."""
    n, ips = c.num_servers, c.instances_per_server
    server_class = np.where(np.arange(n) < c.servers_per_class[0], HIGH, LOW)
    instance_class = np.repeat(server_class, ips)
    spec = PRESETS[c.instance]
    rows = 2 if c.track_reference else 1
    levels_mhz = np.asarray(c.freq_levels_mhz, np.float64)
    num_controls = n if c.per_server_caps else 2
    generator = RowLoadGenerator(
        steps=c.horizon_s,
        instances=(c.servers_per_class[0] * ips, c.servers_per_class[1] * ips),
        peak_rate_per_instance=c.peak_rate_per_server / ips,
        level_range=c.load_level,
        volatility=c.load_volatility,
        time_constant_s=c.load_time_constant_s,
        ramp_from=c.load_ramp_from,
        ramp_s=c.load_ramp_s,
        load_cap=LOAD_CAP,
        lengths=azure_lengths(c.workload_mix, spec.model.max_context_tokens),
        arrival_cv=c.arrival_cv,
    )
    return GPUPowerCapParams(
        action_space=spaces.MultiDiscrete(np.full(num_controls, len(levels_mhz))),
        observation_space=spaces.Box(0.0, OBS_HIGH, (OBS_BASE + (4 * n if c.per_server_caps else 0),), np.float32),
        generator=generator,
        num_servers=n,
        instances_per_server=ips,
        num_instances=n * ips,
        servers_per_class=c.servers_per_class,
        rows=rows,
        server_class=server_class,
        instance_class=instance_class,
        class_onehot=np.stack([instance_class == HIGH, instance_class == LOW], 1).astype(np.float64),
        server_onehot=np.stack([server_class == HIGH, server_class == LOW], 1).astype(np.float64),
        class_weights=np.array([c.hp_weight, 1.0]),
        levels_mhz=levels_mhz,
        f_max=float(levels_mhz[0]),
        budget_w=c.budget_w,
        cluster=LLMCluster([spec] * (n * ips * rows), slots=c.slots_per_instance),
        server_model=c.server_power,
        phase=LLMPhaseActivity(prefill=c.prefill_activity, decode=c.decode_activity),
        caps=OutOfBandCaps(delay_s=c.cap_delay_s, controls=num_controls),
        brake=PowerBrake(
            threshold=c.brake_threshold,
            delay_s=c.brake_delay_s,
            hold_s=c.brake_hold_s,
            ride_through_s=c.ups_ride_through_s,
        ),
    )


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(name="powerbrakes", unit="events", higher_is_better=False, description="powerbrake engagements"),
    MetricSpec(
        name="breaker_trips", unit="trips", higher_is_better=False, description="UPS ride-through exceeded (0/1)"
    ),
    *(
        MetricSpec(
            name=f"{c}_throughput_loss_pct",
            unit="%",
            higher_is_better=False,
            description=f"{c.upper()} output tokens served vs the uncapped row on the same requests",
        )
        for c in CLASSES
    ),
    *(
        MetricSpec(
            name=f"{c}_{q}_latency_change_pct",
            unit="%",
            higher_is_better=False,
            description=f"{c.upper()} {q} end-to-end latency vs the uncapped row",
        )
        for c in CLASSES
        for q in ("p50", "p99")
    ),
    *(
        MetricSpec(
            name=f"{c}_{q}_latency_s",
            unit="s",
            higher_is_better=False,
            description=f"{c.upper()} {q} end-to-end latency (in-flight requests count their age at the end)",
        )
        for c in CLASSES
        for q in ("p50", "p99")
    ),
    MetricSpec(name="peak_power_pct", unit="%", higher_is_better=None, description="highest row power / budget"),
    MetricSpec(name="mean_power_pct", unit="%", higher_is_better=None, description="mean row power / budget"),
    MetricSpec(name="energy_kwh", unit="kWh", higher_is_better=False, description="energy drawn by the row"),
    MetricSpec(
        name="served_ktokens", unit="k tokens", higher_is_better=True, description="output tokens served (both)"
    ),
    MetricSpec(
        name="rejected_requests", unit="requests", higher_is_better=False, description="arrivals at a full server"
    ),
    MetricSpec(
        name="capped_pct", unit="%", higher_is_better=False, description="server-seconds below f_max (cap/brake)"
    ),
    MetricSpec(name="braked_s", unit="s", higher_is_better=False, description="seconds under the powerbrake"),
)
"""Episode metrics (``info["metrics"]``), relative ones against the uncapped reference row."""


class GPUPowerCapCore(BatchedCore[GPUPowerCapConfig, GPUPowerCapParams, GPUPowerCapState]):
    config_cls = GPUPowerCapConfig
    state_size_fields = (
        "base_servers",
        "oversubscription",
        "gpus_per_server",
        "slots_per_instance",
        "peak_rate_per_server",
        "warmup_s",
        "steps_per_episode",
        "cap_delay_s",
    )
    metrics: ClassVar[tuple[MetricSpec, ...]] = METRICS

    # ------------------------------------------------------------------ setup
    def _derive(self, config: GPUPowerCapConfig) -> GPUPowerCapParams:
        return derive_params(config)

    def _init_state(self, params: GPUPowerCapParams) -> GPUPowerCapState:
        c, p, b = self.config, params, self.num_envs
        return GPUPowerCapState(
            requests=EpisodeRequests.zeros(b, c.horizon_s),
            llm=p.cluster.new_state(b),
            caps=p.caps.new_state(b),
            brake=p.brake.new_state(b),
            telemetry=RowTelemetry.zeros(b, p.num_servers),
            counters=GPUPowerCapCounters.zeros(b, p.num_servers),
        )

    @property
    def max_episode_steps(self) -> int:
        return self.config.steps_per_episode

    # ------------------------------------------------------------------ episodes
    def _load(self, env_ids: np.ndarray, instances: Sequence[RowRequests]) -> None:
        s, p = self.state, self.params
        s.requests.write(env_ids, instances, self.config.max_requests)
        p.cluster.reset_envs(s.llm, env_ids, 0.0)
        p.caps.reset_envs(s.caps, env_ids)
        p.brake.reset_envs(s.brake, env_ids)
        tree.fill_rows(s.telemetry, self.num_envs, env_ids, 0)
        self._warm_up(env_ids)
        self._open_episode(env_ids)

    def _warm_up(self, env_ids: np.ndarray) -> None:
        """Serve the first warmup_s seconds of load uncapped on the listed rows (the policy's row only)."""
        s, c, p = self.state, self.config, self.params
        tel = s.telemetry
        # Seconds before the warm-up read the idle draw (the row was empty).
        tel.power_history[env_ids] = p.num_servers * p.server_model.idle_w / p.budget_w
        tel.power_last[env_ids] = p.server_model.idle_w
        until = np.full(self.num_envs, -np.inf)
        for second in range(c.warmup_s):
            self._enqueue_arrivals(np.full(env_ids.size, second), env_ids, rows=1)
            until[env_ids] = second + 1.0
            self._account_completions(p.cluster.advance(s.llm, until))
            activity = self._server_activity(self._take_activity(env_ids)[:, : p.num_instances])
            power = p.server_model.power_w(activity, p.f_max)
            tel.power_last[env_ids] = power
            tel.activity_last[env_ids] = activity
            tel.power_history[env_ids, second % POWER_HISTORY_S] = power.sum(axis=1) / p.budget_w
        if 0 < c.warmup_s < POWER_HISTORY_S:
            # Seconds before a short warm-up read what the row drew at its end (as if it had been that busy).
            recent = tel.power_history[env_ids, max(c.warmup_s - 10, 0) : c.warmup_s].mean(axis=1)
            tel.power_history[env_ids, c.warmup_s :] = recent[:, None]
        # The history ring is indexed by episode step: rotate so the last warm-up second sits just before step 0.
        tel.power_history[env_ids] = np.roll(tel.power_history[env_ids], -(c.warmup_s % POWER_HISTORY_S), axis=1)

    def _open_episode(self, env_ids: np.ndarray) -> None:
        """After the warm-up: the reference row starts equal to the row, and the episode's accounts start."""
        s, p, cnt = self.state, self.params, self.state.counters
        m = p.num_instances
        if p.rows == 2:
            # Every instance array, its activity too (just taken or reset, so zero in both rows).
            for arr in tree.arrays(s.llm):
                arr[env_ids, m:] = arr[env_ids, :m]
            cnt.rejected[env_ids, 1] = cnt.rejected[env_ids, 0]
        # The episode counts what completes from now on; tokens already generated by requests in flight are not its.
        for arr in (cnt.tokens, cnt.completed, cnt.latency_hist):
            arr[env_ids] = 0
        cnt.generated_start[env_ids] = self._generated_tokens()[env_ids]
        cnt.generated_last[env_ids] = 0.0
        # Requests still in flight, and those refused, count as the episode's arrivals: every arrival is then
        # completed, in flight or rejected from the first step on.
        live = (s.llm.status[env_ids, :m] != EMPTY).sum(axis=2) @ p.class_onehot
        cnt.arrived[env_ids] = live.astype(np.int64) + cnt.rejected[env_ids, 0]

    def _take_activity(self, env_ids: np.ndarray) -> np.ndarray:
        """(k, rows x M) GPU activity of every instance of the listed sub-envs since it was last taken (zeroes it)."""
        act = self.state.llm.activity
        out = self.params.phase.activity(act.busy_s[env_ids], act.compute_s[env_ids], act.memory_s[env_ids], 1.0)
        tree.fill_rows(act, self.num_envs, env_ids, 0.0)
        return out

    def _server_activity(self, instance_activity: np.ndarray) -> np.ndarray:
        """(k, N) mean GPU activity of each server from its instances' (k, M) (instances have equal GPU counts)."""
        k, p = instance_activity.shape[0], self.params
        return instance_activity.reshape(k, p.num_servers, p.instances_per_server).mean(axis=2)

    # ------------------------------------------------------------------ dynamics
    def server_freq_mhz(self) -> np.ndarray:
        """(B, N) SM clock of each server of the policy's row this step (caps in effect, or the brake)."""
        s, p = self.state, self.params
        levels = s.caps.level if self.config.per_server_caps else s.caps.level[:, p.server_class]
        return np.where((s.brake.left > 0)[:, None], self.config.brake_freq_mhz, p.levels_mhz[levels])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c, p = self.state, self.config, self.params
        cnt = s.counters
        t = self.stats.length  # (B,) step index within each episode
        clock = t + c.warmup_s  # this step covers cluster time [clock, clock + 1)

        # 1. Caps: this step's command enters the out-of-band pipeline, the one due lands; a due powerbrake engages.
        p.caps.issue(s.caps, self._env_index, t, np.asarray(actions, np.int8))
        braked = p.brake.engage(s.brake)
        freq = self.server_freq_mhz()
        s.llm.freq_scale[:, : p.num_instances] = np.repeat(freq, p.instances_per_server, axis=1) / p.f_max

        # 2. Serve: this step's arrivals go to their instances (and to the same instances of the reference row),
        # then every instance runs its iterations up to the end of the step.
        self._enqueue_arrivals(clock, self._env_index, rows=p.rows)
        self._account_completions(p.cluster.advance(s.llm, (clock + 1).astype(np.float64)))

        # 3. Power of every server from its instances' activity and its clock; then the brake and the UPS.
        row_share = self._meter_power(t, freq)
        over, start_brake, tripped = p.brake.measure(s.brake, row_share, braked)
        cnt.over_budget_s += over
        cnt.brakes += start_brake
        cnt.braked_s += braked
        cnt.tripped |= tripped

        # 4. Reward: served work and time in system per class, weighted by priority, against brakes and trips.
        new_tokens = self._new_tokens()
        reward = (
            self._reward(new_tokens) - c.brake_penalty * start_brake - c.braked_cost * braked - c.trip_penalty * tripped
        )
        n_hp = p.servers_per_class[0]
        info = {
            "row_power_pct": 100.0 * row_share,
            "braked": braked,
            "brake_started": start_brake,
            "hp_freq_mhz": freq[:, :n_hp].mean(axis=1),
            "lp_freq_mhz": freq[:, n_hp:].mean(axis=1),
            "tokens_served": new_tokens.sum(axis=1),
        }
        return reward, tripped, np.zeros(self.num_envs, bool), info

    def _meter_power(self, t: np.ndarray, freq: np.ndarray) -> np.ndarray:
        """Draw, energy and telemetry of this step at clocks ``freq`` (B, N); returns the row's draw / budget (B,)."""
        s, p = self.state, self.params
        tel, cnt = s.telemetry, s.counters
        m = p.num_instances
        instance_activity = self._take_activity(self._env_index)
        activity = self._server_activity(instance_activity[:, :m])
        power = p.server_model.power_w(activity, freq)
        cnt.energy.add(power, 1.0)
        tel.activity_last[...] = activity
        tel.power_last[...] = power
        row_share = power.sum(axis=1) / p.budget_w
        if p.rows == 2:
            reference = p.server_model.power_w(self._server_activity(instance_activity[:, m:]), p.f_max)
            cnt.reference_energy.add(reference, 1.0)
        tel.power_history[self._env_index, t % POWER_HISTORY_S] = row_share
        cnt.peak_power[...] = np.maximum(cnt.peak_power, row_share)
        cnt.power_sum += row_share
        cnt.capped_server_s += (freq < p.f_max).sum(axis=1)
        return row_share

    def _new_tokens(self) -> np.ndarray:
        """(B, 2) output tokens the policy's row generated this step per class."""
        cnt = self.state.counters
        generated = self._generated_tokens() - cnt.generated_start
        new_tokens = generated[:, 0] - cnt.generated_last[:, 0]
        cnt.generated_last[...] = generated
        return new_tokens

    def _reward(self, new_tokens: np.ndarray) -> np.ndarray:
        """(B,) served work less time in the system, per server, each class weighted by its priority."""
        s, c, p = self.state, self.config, self.params
        in_system = (s.llm.running + s.llm.waiting)[:, : p.num_instances] @ p.class_onehot
        work = (new_tokens * p.class_weights).sum(axis=1) * c.token_reward / p.num_servers
        latency = (in_system * p.class_weights).sum(axis=1) * c.latency_cost / p.num_servers
        return work - latency

    def _enqueue_arrivals(self, second: np.ndarray, env_ids: np.ndarray, rows: int) -> None:
        """Send the requests arriving in cluster second ``second`` (k,) of sub-envs ``env_ids`` (k,) to instances."""
        s, p, cnt = self.state, self.params, self.state.counters
        req, arrivals_last = s.requests, s.telemetry.arrivals_last
        first = req.step_first[env_ids, second]
        counts = req.step_first[env_ids, second + 1] - first
        total = int(counts.sum())
        arrivals_last[env_ids] = 0
        if total == 0:
            return
        env = np.repeat(env_ids, counts)
        idx = np.repeat(first, counts) + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        inst = req.instance[env, idx].astype(np.int64)
        cls = p.instance_class[inst]
        prompt = req.prompt[env, idx].astype(np.int64)
        output = req.output[env, idx].astype(np.int64)
        arrival = req.arrival[env, idx].astype(np.float64)
        arrivals_last += np.bincount(env * 2 + cls, minlength=arrivals_last.size).reshape(arrivals_last.shape)
        cnt.arrived[env_ids] += arrivals_last[env_ids]
        for row in range(rows):
            ok = p.cluster.enqueue(s.llm, env, inst + row * p.num_instances, idx, prompt, output, arrival, tag=cls)
            refused = ~ok
            if refused.any():
                flat = (env[refused] * 2 + row) * 2 + cls[refused]
                cnt.rejected += np.bincount(flat, minlength=cnt.rejected.size).reshape(cnt.rejected.shape)

    def _account_completions(self, done: Completions) -> None:
        if len(done) == 0:
            return
        cnt = self.state.counters
        row = (done.instance >= self.params.num_instances).astype(np.int64)
        cls = done.tag
        # bincount instead of np.add.at (same sums: token counts are whole numbers, exact in float64).
        cell = (done.env * 2 + row) * 2 + cls
        size = cnt.tokens.size
        cnt.tokens += np.bincount(cell, weights=done.output, minlength=size).reshape(cnt.tokens.shape)
        cnt.completed += np.bincount(cell, minlength=size).reshape(cnt.completed.shape)
        flat = cell * NUM_LATENCY_BINS + latency_bins(done.e2e_s)
        counts = np.bincount(flat, minlength=cnt.latency_hist.size).reshape(cnt.latency_hist.shape)
        cnt.latency_hist += counts.astype(np.int32)

    def _generated_tokens(self) -> np.ndarray:
        """(B, 2, 2) output tokens generated so far per (row, class): completed requests plus those in flight."""
        s, p = self.state, self.params
        m = p.num_instances
        live = np.where(s.llm.status != EMPTY, s.llm.generated, 0).sum(axis=2).astype(np.float64)  # (B, rows x M)
        out = s.counters.tokens.copy()
        for row in range(p.rows):
            out[:, row] += live[:, row * m : (row + 1) * m] @ p.class_onehot
        return out

    # ------------------------------------------------------------------ observation
    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        s, c, p = self.state, self.config, self.params
        tel = s.telemetry
        rows_b, t = self._env_index, self.stats.length
        now = tel.power_history[rows_b, (t - 1) % POWER_HISTORY_S]
        lags = [tel.power_history[rows_b, (t - 1 - lag) % POWER_HISTORY_S] for lag in OBS_POWER_LAGS]
        level_frac = p.levels_mhz / p.f_max
        servers = np.array(p.servers_per_class, np.float64)

        def by_class(per_server: np.ndarray) -> np.ndarray:
            return per_server if not c.per_server_caps else (per_server @ p.server_onehot) / servers

        ahead = [by_class(level_frac[p.caps.landing(s.caps, rows_b, t, k)]) for k in OBS_PIPELINE_AHEAD]
        in_flight = (s.llm.running + s.llm.waiting)[:, : p.num_instances]
        slots = c.slots_per_instance * p.instances_per_server
        parts = [
            now[:, None],
            np.stack(lags, axis=1),
            tel.power_history.max(axis=1)[:, None],
            by_class(level_frac[s.caps.level]),
            *ahead,
            (s.brake.left > 0)[:, None].astype(np.float64),
            (s.brake.countdown >= 0)[:, None].astype(np.float64),
            (s.brake.over_run / max(c.ups_ride_through_s, 1))[:, None],
            (in_flight @ p.class_onehot) / servers / slots,
            tel.arrivals_last / servers / c.peak_rate_per_server,
            (tel.activity_last @ p.server_onehot) / servers,
            (t / c.steps_per_episode)[:, None],
        ]
        if c.per_server_caps:
            parts += [
                level_frac[s.caps.level],
                level_frac[p.caps.landing(s.caps, rows_b, t, c.cap_delay_s)],  # the last command
                tel.power_last / p.server_model.peak_w,
                in_flight.reshape(self.num_envs, p.num_servers, p.instances_per_server).sum(axis=2) / slots,
            ]
        # Every entry is a share or a ratio near 1; a burst of arrivals is the only one that could pass OBS_HIGH.
        return np.clip(np.concatenate(parts, axis=1), 0.0, OBS_HIGH).astype(np.float32)

    # ------------------------------------------------------------------ metrics
    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s, c, p = self.state, self.config, self.params
        cnt = s.counters
        steps = np.maximum(self.stats.length[env_ids].astype(np.float64), 1.0)
        end = self.stats.length[env_ids] + float(c.warmup_s)
        generated = (self._generated_tokens() - cnt.generated_start)[env_ids]
        hist = cnt.latency_hist[env_ids].astype(np.int64) + self._in_flight_histogram(env_ids, end)
        nan = np.full(env_ids.size, np.nan)
        out: dict[str, np.ndarray] = {
            "powerbrakes": cnt.brakes[env_ids].astype(np.float64),
            "breaker_trips": cnt.tripped[env_ids].astype(np.float64),
        }
        for k, name in enumerate(CLASSES):
            reference = generated[:, 1, k]
            loss = np.divide(reference - generated[:, 0, k], reference, out=nan.copy(), where=reference > 0)
            out[f"{name}_throughput_loss_pct"] = 100.0 * loss if p.rows == 2 else nan
            for q, share in (("p50", 0.5), ("p99", 0.99)):
                mine = histogram_quantile(hist[:, 0, k], share)
                out[f"{name}_{q}_latency_s"] = mine
                change = 100.0 * (mine / histogram_quantile(hist[:, 1, k], share) - 1.0)
                out[f"{name}_{q}_latency_change_pct"] = change if p.rows == 2 else nan
        out["peak_power_pct"] = 100.0 * cnt.peak_power[env_ids]
        out["mean_power_pct"] = 100.0 * cnt.power_sum[env_ids] / steps
        out["energy_kwh"] = cnt.energy.kwh()[env_ids]
        out["served_ktokens"] = generated[:, 0].sum(axis=1) / 1e3
        out["rejected_requests"] = cnt.rejected[env_ids, 0].sum(axis=1).astype(np.float64)
        out["capped_pct"] = 100.0 * cnt.capped_server_s[env_ids] / (steps * p.num_servers)
        out["braked_s"] = cnt.braked_s[env_ids].astype(np.float64)
        return out

    def _in_flight_histogram(self, env_ids: np.ndarray, end: np.ndarray) -> np.ndarray:
        """(k, 2, 2, bins) ages at the episode's end of requests still queued or running (censored latencies)."""
        s, p = self.state, self.params
        m = p.num_instances
        live = s.llm.status[env_ids] != EMPTY
        age = end[:, None, None] - s.llm.arrival[env_ids]
        e, inst, _ = np.nonzero(live)
        flat = ((e * 2 + inst // m) * 2 + p.instance_class[inst % m]) * NUM_LATENCY_BINS + latency_bins(age[live])
        return np.bincount(flat, minlength=env_ids.size * 4 * NUM_LATENCY_BINS).reshape(
            env_ids.size, 2, 2, NUM_LATENCY_BINS
        )


def text_frame(core: GPUPowerCapCore, i: int) -> str:
    """Sub-env ``i`` as text: row power against the budget, the brake, each class's clock and load."""
    s, p = core.state, core.params
    t = int(core.stats.length[i])
    share = s.telemetry.power_history[i, (t - 1) % s.telemetry.power_history.shape[1]] if t else 0.0
    freq = core.server_freq_mhz()[i]
    n_hp = p.servers_per_class[0]
    braking = s.brake.left[i] > 0
    lines = [
        f"second {t}, row power {100 * share:5.1f}% of budget {p.budget_w / 1e3:.1f} kW"
        f"{', POWERBRAKE' if braking else ''}, {s.counters.brakes[i]} brake(s) so far",
        f"  high priority: {n_hp} servers at {freq[:n_hp].mean():.0f} MHz, "
        f"{s.telemetry.arrivals_last[i, 0]} arrivals last second",
        f"  low priority:  {freq.size - n_hp} servers at {freq[n_hp:].mean():.0f} MHz, "
        f"{s.telemetry.arrivals_last[i, 1]} arrivals last second",
        f"  caps in effect (level per class, 0 = none): {s.caps.level[i].tolist()}",
    ]
    return "\n".join(lines)


class GPUPowerCapVectorEnv(CloudGymVectorEnv):
    core_cls = GPUPowerCapCore


class GPUPowerCapEnv(CloudGymEnv):
    core_cls = GPUPowerCapCore
