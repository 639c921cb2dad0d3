"""Power and energy: GPU and server draw from activity and frequency, integrated over time.

The model (our choice, calibrated to POLCA, Patel et al. ASPLOS 2024, and the
A100 datasheet; see DOMAIN.md section 3):

    P_gpu(a, f) = P_idle + (TDP - P_idle) * a * ((1 - s) + s * (f / f_max) ** alpha)

``a`` is the GPU's activity relative to a compute-saturated kernel at f_max
(0 when idle, about 1 in prefill, lower and steady in decode; short prefill
spikes may exceed 1), ``f`` the SM clock, ``alpha`` the exponent of
clock-dependent power in frequency (POLCA: roughly 2 to 2.5, since voltage
scales with frequency) and ``s`` the share of active power that follows the
SM clock (the rest, HBM and links, does not). DOMAIN.md gives both alpha ~2.3
and "1410 -> ~1110 MHz saves ~20% of peak power": with the idle floor at 20%
of TDP, 0.8 x s x (1 - (1110/1410)^2.3) = 0.2 gives s = 0.59, the default.
Without ``s`` (s = 1) the same cap would save 34% of peak, more than POLCA
measured.

A server draws its GPUs plus the rest (CPUs, memory, fans, NICs): an idle
floor and a part proportional to mean GPU activity. DGX-A100 defaults put
GPUs at about half of the ~6.5 kW server peak, as DOMAIN.md says.

A provisioned row of such servers is protected as POLCA describes: caps
commanded out of band land after a delay (:class:`OutOfBandCaps`), and a
powerbrake behind the budget with a UPS behind the brake
(:class:`PowerBrake`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cloudgym.envs.core.batch import check_config


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuPowerModel:
    """One GPU's power draw as a function of activity and SM frequency."""

    tdp_w: float = 400.0
    """Thermal design power, W (A100-SXM4-80GB: 400 W)."""
    idle_fraction: float = 0.2
    """Idle draw as a share of TDP (POLCA: ~20%)."""
    max_freq_mhz: float = 1410.0
    """Highest SM clock, MHz (A100: 1410)."""
    min_freq_mhz: float = 210.0
    """Lowest SM clock the driver accepts, MHz (A100: 210)."""
    freq_exponent: float = 2.3
    """alpha in (f/f_max)^alpha for clock-dependent power (POLCA: 2 to 2.5)."""
    clock_scaled_share: float = 0.59
    """Share of active (above-idle) power that follows the SM clock; calibrated so 1410 -> 1110 MHz saves 20%."""

    def __post_init__(self) -> None:
        check_config(self.tdp_w > 0, self, f"tdp_w must be positive, got {self.tdp_w}")
        check_config(0 <= self.idle_fraction < 1, self, f"idle_fraction must be in [0, 1), got {self.idle_fraction}")
        check_config(
            0 < self.min_freq_mhz <= self.max_freq_mhz,
            self,
            f"need 0 < min_freq_mhz <= max_freq_mhz, got {self.min_freq_mhz}, {self.max_freq_mhz}",
        )
        check_config(self.freq_exponent >= 1, self, f"freq_exponent must be >= 1, got {self.freq_exponent}")
        check_config(
            0 <= self.clock_scaled_share <= 1,
            self,
            f"clock_scaled_share must be in [0, 1], got {self.clock_scaled_share}",
        )

    @property
    def idle_w(self) -> float:
        return self.tdp_w * self.idle_fraction

    def power_w(self, activity: np.ndarray, freq_mhz: np.ndarray | float) -> np.ndarray:
        """Draw in W; activity is clipped at 0 (never negative power), frequency to the legal range."""
        f = np.clip(freq_mhz, self.min_freq_mhz, self.max_freq_mhz) / self.max_freq_mhz
        a = np.maximum(activity, 0.0)
        clock = (1.0 - self.clock_scaled_share) + self.clock_scaled_share * f**self.freq_exponent
        return self.idle_w + (self.tdp_w - self.idle_w) * a * clock


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerPowerModel:
    """A GPU server: its GPUs plus everything else."""

    gpu: GpuPowerModel = dataclasses.field(default_factory=GpuPowerModel)
    """The GPU model, identical for every GPU of the server."""
    gpus: int = 8
    """GPUs per server (DGX-A100: 8)."""
    other_idle_w: float = 1700.0
    """Non-GPU draw of an idle server, W (CPUs, DRAM, fans, NICs, PSU losses)."""
    other_peak_w: float = 3300.0
    """Non-GPU draw when GPUs are saturated, W: fans and PSU losses rise with GPU power."""

    def __post_init__(self) -> None:
        check_config(self.gpus >= 1, self, f"gpus must be >= 1, got {self.gpus}")
        check_config(
            0 <= self.other_idle_w <= self.other_peak_w,
            self,
            f"need 0 <= other_idle_w <= other_peak_w, got {self.other_idle_w}, {self.other_peak_w}",
        )

    @property
    def idle_w(self) -> float:
        return self.gpus * self.gpu.idle_w + self.other_idle_w

    @property
    def peak_w(self) -> float:
        """Draw with every GPU saturated at f_max (activity 1)."""
        return self.gpus * self.gpu.tdp_w + self.other_peak_w

    def power_w(self, gpu_activity: np.ndarray, freq_mhz: np.ndarray | float) -> np.ndarray:
        """Server draw in W for the mean activity of its GPUs (all at ``freq_mhz``)."""
        gpu_w = self.gpus * self.gpu.power_w(gpu_activity, freq_mhz)
        share = (gpu_w - self.gpus * self.gpu.idle_w) / (self.gpus * (self.gpu.tdp_w - self.gpu.idle_w))
        return gpu_w + self.other_idle_w + (self.other_peak_w - self.other_idle_w) * np.clip(share, 0.0, None)


@dataclasses.dataclass
class EnergyMeter:
    """Energy drawn by each of U units (servers, nodes) of every sub-env this episode."""

    joules: np.ndarray  # (B, U) float64, J drawn since the episode began
    last_w: np.ndarray  # (B, U) float64, W drawn over the last interval

    @classmethod
    def zeros(cls, num_envs: int, units: int) -> EnergyMeter:
        return cls(joules=np.zeros((num_envs, units)), last_w=np.zeros((num_envs, units)))

    def add(self, power_w: np.ndarray, seconds: np.ndarray | float) -> None:
        """Integrate a draw (B, U) held for ``seconds`` (scalar or (B,)); power must not be negative."""
        if np.any(power_w < 0):
            raise ValueError("negative power draw")
        dt = np.asarray(seconds, dtype=np.float64)
        self.last_w[...] = power_w
        self.joules += power_w * (dt[:, None] if dt.ndim == 1 else dt)

    def reset_envs(self, env_ids: np.ndarray) -> None:
        self.joules[env_ids] = 0.0
        self.last_w[env_ids] = 0.0

    def kwh(self) -> np.ndarray:
        """(B,) energy of all units in kWh."""
        return self.joules.sum(axis=1) / 3.6e6


# ----------------------------------------------------------------------------- power protection of a row
# Out-of-band caps and the powerbrake/UPS of a provisioned power domain (POLCA, Patel et al. ASPLOS 2024).
# Each is a frozen model (its constants) beside a state dataclass of B-first arrays, as LLMCluster is.


@dataclasses.dataclass
class CapPipelineState:
    """Power caps of B sub-envs: the level in effect and the commands still in flight."""

    pipeline: np.ndarray  # (B, D, C) int8, slot t mod D holds the command that takes effect at step t (D >= 1)
    level: np.ndarray  # (B, C) int8, cap level in effect this step (0 = uncapped)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutOfBandCaps:
    """Caps of ``controls`` units commanded out of band: the command of step t >= 1 takes effect at step t + delay_s.

    The first command of an episode (step 0) is in effect from its start: the
    unit was under its controller before the episode opened, so that command
    fills the pipeline. With ``delay_s == 0`` a command takes effect at once.
    """

    delay_s: int
    """Steps from a command to its effect (POLCA's out-of-band capping: up to 40 s)."""
    controls: int
    """Cap levels commanded per step (one per priority class, or per server)."""

    def new_state(self, num_envs: int) -> CapPipelineState:
        d = max(self.delay_s, 1)
        return CapPipelineState(
            pipeline=np.zeros((num_envs, d, self.controls), np.int8),
            level=np.zeros((num_envs, self.controls), np.int8),
        )

    def reset_envs(self, state: CapPipelineState, env_ids: np.ndarray) -> None:
        state.pipeline[env_ids] = 0
        state.level[env_ids] = 0

    def issue(self, state: CapPipelineState, rows: np.ndarray, t: np.ndarray, commands: np.ndarray) -> None:
        """Put the commands (B, C) of steps ``t`` (B,) in the pipeline; the level in effect becomes the one due at t.

        ``rows`` is ``arange(B)`` (the caller's, so a step allocates nothing more).
        """
        d = self.delay_s
        first = t == 0
        if first.any() and d > 0:
            state.pipeline[first] = commands[first, None, :]
        if d == 0:
            state.level[...] = commands
        else:
            slot = t % d
            state.level[...] = state.pipeline[rows, slot]
            state.pipeline[rows, slot] = commands

    def landing(self, state: CapPipelineState, rows: np.ndarray, steps: np.ndarray, ahead: int) -> np.ndarray:
        """(B, C) levels that take effect ``ahead`` steps after the last command (``steps`` (B,) taken so far).

        ``ahead`` is clipped to the delay, so ``ahead >= delay_s`` gives the
        last command itself; with no delay, the level in effect. ``rows`` is ``arange(B)``.
        """
        d = self.delay_s
        if d == 0:
            return state.level
        # With delay D, slot (t + k) mod D holds the command that lands at step t + k (k < D).
        return state.pipeline[rows, (steps + min(ahead, d) - 1) % d]


@dataclasses.dataclass
class PowerBrakeState:
    """The powerbrake and UPS of B power domains."""

    countdown: np.ndarray  # (B,) int64, steps until a pending powerbrake engages (-1: none pending)
    left: np.ndarray  # (B,) int64, steps the engaged powerbrake still holds (0: not engaged)
    over_run: np.ndarray  # (B,) int64, consecutive steps the domain has been over budget


@dataclasses.dataclass(frozen=True, kw_only=True)
class PowerBrake:
    """What protects a provisioned power domain (POLCA): a powerbrake behind the budget, a UPS behind the brake.

    A step whose draw (as a share of the budget) exceeds ``threshold`` orders
    the powerbrake unless one is pending or holding; it engages ``delay_s``
    steps later and holds for ``hold_s`` steps (the env throttles every GPU
    while it holds). More than ``ride_through_s`` consecutive steps over
    budget exhaust the UPS and trip the breaker.
    """

    threshold: float
    """Draw, as a share of the budget, above which the powerbrake is ordered."""
    delay_s: int
    """Steps from the over-budget measurement until the brake engages (>= 1)."""
    hold_s: int
    """Steps the engaged brake holds before it releases (>= 1)."""
    ride_through_s: int
    """Consecutive steps over budget the UPS rides through; one more trips the breaker."""

    def new_state(self, num_envs: int) -> PowerBrakeState:
        return PowerBrakeState(
            countdown=np.full(num_envs, -1, np.int64),
            left=np.zeros(num_envs, np.int64),
            over_run=np.zeros(num_envs, np.int64),
        )

    def reset_envs(self, state: PowerBrakeState, env_ids: np.ndarray) -> None:
        state.countdown[env_ids] = -1
        state.left[env_ids] = 0
        state.over_run[env_ids] = 0

    def engage(self, state: PowerBrakeState) -> np.ndarray:
        """Engage the pending brakes whose delay has run out; (B,) bool, the brake holds this step."""
        due = state.countdown == 0
        state.left[due] = self.hold_s
        state.countdown[due] = -1
        return state.left > 0

    def measure(
        self, state: PowerBrakeState, draw: np.ndarray, braked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Account a step's draw (B,) (share of the budget) with ``braked`` from :meth:`engage`.

        Returns (B,) bools: over budget, brake ordered this step, breaker tripped.
        """
        over = draw > self.threshold
        state.over_run[...] = np.where(over, state.over_run + 1, 0)
        tripped = state.over_run > self.ride_through_s
        ordered = over & ~braked & (state.countdown < 0)
        state.countdown[...] = np.where(ordered, self.delay_s, state.countdown)
        state.countdown[...] = np.where(state.countdown > 0, state.countdown - 1, state.countdown)
        state.left[...] = np.where(braked, state.left - 1, state.left)
        return over, ordered, tripped


# ----------------------------------------------------------------------------- GPU activity of LLM phases


@dataclasses.dataclass(frozen=True, kw_only=True)
class LLMPhaseActivity:
    """GPU activity of an LLM instance over an interval, from how long its iterations were compute- or memory-bound.

    POLCA (Patel et al. ASPLOS 2024) and Splitwise characterise the two
    phases of inference: prefill is compute-bound and drives the GPUs to TDP
    (short spikes beyond it), decode is memory-bound with lower, steady power.
    :class:`cloudgym.envs.core.llm.InstanceActivity` gives, per interval, the
    time the instance ran iterations (``busy_s``) and how that time splits
    into compute-bound and memory-bound parts (``compute_s`` at the actual
    clock, ``memory_s``). The activity fed to :class:`GpuPowerModel` is::

        a = min(busy_s / interval, 1) x (decode + (prefill - decode) x compute_s / (compute_s + memory_s))

    so a GPU that decodes all the time sits at ``decode``, one that prefills
    all the time at ``prefill``, and an idle one at 0 (idle power). The busy
    share is capped at one interval: an iteration that starts late in an
    interval is counted whole in it (``LLMCluster`` attributes activity to the
    interval in which an iteration starts).
    """

    prefill: float = 1.05
    """Activity of a compute-bound (prefill) iteration: at TDP with brief excursions beyond (POLCA)."""
    decode: float = 0.45
    """Activity of a memory-bound (decode) iteration: ~56% of TDP with a 20% idle floor (Splitwise: capping
    an H100 to half its TDP costs decode almost nothing, so decode draws about half of TDP)."""

    def __post_init__(self) -> None:
        check_config(0 <= self.decode <= self.prefill, self, f"need 0 <= decode <= prefill, got {self}")

    def activity(
        self, busy_s: np.ndarray, compute_s: np.ndarray, memory_s: np.ndarray, interval_s: float
    ) -> np.ndarray:
        """Activity per instance over an interval of ``interval_s`` seconds (arrays broadcast)."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        busy = np.clip(np.asarray(busy_s, np.float64) / interval_s, 0.0, 1.0)
        c = np.maximum(np.asarray(compute_s, np.float64), 0.0)
        m = np.maximum(np.asarray(memory_s, np.float64), 0.0)
        total = c + m
        compute_share = np.divide(c, total, out=np.zeros_like(total), where=total > 0)
        return busy * (self.decode + (self.prefill - self.decode) * compute_share)


# ----------------------------------------------------------------------------- a fleet under a power budget


def budget_capped_operation(
    *,
    oversubscription_levels: Sequence[float],
    frequency_levels: Sequence[float],
    peak_draw_fraction: float,
    gpu_share_of_server_power: float,
    gpu_idle_fraction: float,
    freq_power_exponent: float,
    freq_throughput_exponent: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(throughput, energy) multipliers (O, F) of a fleet per (oversubscription, clock cap) level.

    A server's draw relative to nameplate at clock share x is d(x) (GPUs at
    ``gpu_share_of_server_power`` of nameplate, idle floor, dynamic part ~
    x^alpha; the rest of the server follows GPU activity). With
    oversubscription o the fleet's peak draw ``peak_draw_fraction x o x
    d(x)`` of the provisioned budget must stay <= 1: above it, POLCA-style
    capping lowers the clock to x' with that draw exactly at budget.
    Throughput scales as (clock)^beta and energy as d(clock).
    """
    gpu = GpuPowerModel(
        tdp_w=1000.0,
        idle_fraction=gpu_idle_fraction,
        max_freq_mhz=1000.0,
        min_freq_mhz=1.0,
        freq_exponent=freq_power_exponent,
    )
    other = 8000.0 * (1 - gpu_share_of_server_power) / gpu_share_of_server_power
    server = ServerPowerModel(gpu=gpu, gpus=8, other_idle_w=0.4 * other, other_peak_w=other)
    grid = np.linspace(0.001, 1.0, 4000)
    draw = server.power_w(np.ones_like(grid), grid * 1000.0) / server.peak_w  # d(x), increasing in x
    levels_o = np.asarray(oversubscription_levels)
    levels_f = np.asarray(frequency_levels)
    target = 1.0 / (peak_draw_fraction * levels_o)  # (O,) largest draw share the budget allows
    capped = np.interp(target, draw, grid, right=1.0)  # (O,) clock where d(x) hits the budget
    clock = np.minimum(levels_f[None, :], capped[:, None])  # (O, F)
    return clock**freq_throughput_exponent, np.interp(clock, grid, draw)
