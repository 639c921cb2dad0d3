"""Oversubscription-v0: set each node's vCPU oversubscription ratio every hour, trading saved cores for hot nodes.

## Description
A sub-env is a cluster of ``num_nodes`` physical nodes of ``node_cores``
cores hosting VMs over ``hours`` hours (a week by default), with CPU
readings every 5 minutes as in the Azure VM traces. VMs arrive (singly or as
deployments of correlated VMs) and depart; the allocator places each
arriving VM, in arrival order, by **best fit** (the node left with the least
room, ties to the lowest index: `cloudgym.envs.core.cluster.best_fit`) among
the nodes whose sold vCPUs plus the VM's stay within that node's current
ratio x its physical cores; a VM that fits nowhere is rejected and counted.
Every hour the policy sets each node's ratio. A lowered ratio stops new
placements on the node; it never evicts a VM.

Selling more vCPUs than cores recovers the cores VMs buy but leave idle;
when co-located VMs peak together the node runs **hot**. A node-hour is a
*hot node-window* when the node's peak 5-minute demand (the sum over its
VMs of cores x average CPU of the reading) exceeds ``hot_threshold`` x its
physical cores. With ``workload_hints``, VMs declare themselves
contention-tolerant or sensitive (Workload Intelligence, Huang et al., SC
2025), wrongly at ``hint_error_rate``: a truly tolerant VM's demand counts
``tolerant_weight`` toward heat, and the truly sensitive share of a node's
sold vCPUs lowers its threshold by up to ``sensitive_tightening``; the
observation shows the *declared* shares.

The paper: Wang et al., "ProtoHAIL" (arXiv 2401.07033, 2024; published as
ProtoRAIL, MLSys 2025) learn the per-node rate by offline imitation with
prototypes and a few human queries, against static rates, on private
first-party data. This env poses the same problem on a workload calibrated
to the public Azure 2019 VM trace; ``docs/oversubscription.md`` has the
measured comparison (baselines, hindsight experts, the prototype agent).

## Action Space
``MultiDiscrete([len(ratios)] * num_nodes)``: the index of each node's ratio
in ``ratios`` (default 1.0, 1.1, 1.2, 1.25, 1.33, 1.5) for the next hour.

## Observation Space
``Box(shape=(num_nodes, 55), float32)``, one row per node:

| column  | observation                                                        | range     |
|---------|--------------------------------------------------------------------|-----------|
| 0..23   | mean demand / physical cores of each of the last 24 hours, oldest first | [0, max ratio] |
| 24..47  | peak 5-minute demand / physical cores of each of the last 24 hours | [0, max ratio] |
| 48      | sold vCPUs / physical cores                                        | [0, max ratio] |
| 49      | interactive share of the sold vCPUs                                | [0, 1]    |
| 50      | declared contention-tolerant share of the sold vCPUs (0 without hints) | [0, 1] |
| 51      | declared contention-sensitive share of the sold vCPUs (0 without hints) | [0, 1] |
| 52      | the node's current ratio                                           | [1, max ratio] |
| 53, 54  | sin and cos of the time of day of the coming hour                  | [-1, 1]   |

Hours before the episode's start read as zero demand.

## Rewards
Per hour: saved cores (sold vCPUs above physical cores summed over nodes,
averaged over the hour's 12 readings: the cores a ratio of 1.0 would have
needed extra nodes for) minus ``risk_weight`` x the hour's hot
node-windows. ``info`` carries ``saved_cores``, ``hot_node_windows``,
``placed_vms`` and ``rejected_vms`` of the step.

## Starting State
The cluster is empty and every ratio is ``ratios[0]``; the VMs running when
the episode starts (the stationary population of the arrival process, or
those alive at the replay window's start) ask to be placed at tick 0, in the
order they were created, under the first action's ratios.

## Episode End
Truncated after ``hours`` steps (the week ends; the process would go on).

## Arguments
``gym.make("Oversubscription-v0", num_nodes=16, ...)``: any field of
:class:`OversubscriptionConfig`; ``scenario=`` one of
``OversubscriptionConfig.SCENARIOS``. ``workload="toy"`` gives
identical constant VMs with a known optimal ratio
(:func:`cloudgym.envs.workloads.vm.toy_optimum`); ``workload="trace"``
replays an Azure-format trace from ``trace_dir``.

State per sub-env: compact per-VM parameters of the episode's VMs, a slot
table of running VMs and 24 hours of per-node history; utilisation is
computed from the parameters and a counter-based hash, never stored per
reading (a replayed trace keeps one float32 per reading, shared by all
sub-envs). ``core.bytes_per_env()`` measures it (figures in the docs).

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
from gymnasium import spaces

from cloudgym.envs import kernels
from cloudgym.envs.core import tree
from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, ScenarioPresets, check_config
from cloudgym.envs.core.cluster import Placements, ResourcePool, best_fit_node, next_free_slot, place_sequentially
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields, positive, unit_interval
from cloudgym.envs.workloads.vm import (
    HINT_SENSITIVE,
    HINT_TOLERANT,
    INTERACTIVE,
    TICKS_PER_HOUR,
    ModelledUtilisation,
    ReplayedUtilisation,
    SyntheticVMGenerator,
    ToyVMGenerator,
    TraceVMGenerator,
    UtilParams,
    VMGenerator,
    VMInstance,
    VMUtilisation,
    cached_trace,
    daily_tables,
    finish_reading,
    mix_kernel,
    noise_exponent,
    trace_files,
)

HISTORY_HOURS = 24
"""Hours of per-node demand history in the observation."""
NODE_FEATURES = 2 * HISTORY_HOURS + 7
"""Columns of a node's row in the observation."""
COL_SOLD, COL_INTERACTIVE, COL_TOLERANT, COL_SENSITIVE, COL_RATIO, COL_SIN, COL_COS = range(2 * HISTORY_HOURS, 55)
PENDING, RUNNING, REJECTED, DEPARTED, NOT_RUNNING_AT_START = 0, 1, 2, 3, 4
"""Status of a VM of the episode (``state.vms.status``); the last marks starting VMs that did not fit at reset."""
TRAIT_INTERACTIVE, TRAIT_TOLERANT, TRAIT_SENSITIVE, TRAIT_TRULY_SENSITIVE = range(4)
"""Rows of ``state.traits``: vCPUs per node of interactive, declared tolerant, declared and truly sensitive VMs."""


MAX_CORE_HOURS = 1 << 24
"""Most vCPU-hours an episode may ask for (num_nodes x node_cores x hours x load_factor): 65x the default,
whose reset draws its VMs in a fraction of a second."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OversubscriptionConfig(ScenarioPresets):
    """Configuration of Oversubscription-v0."""

    SCENARIOS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {},
        "workload_hints": {"workload_hints": True},
        "noisy_hints": {"workload_hints": True, "hint_error_rate": 0.2},
        "strict_threshold": {"hot_threshold": 0.9},
        "uncorrelated": {"lifetime_util_correlation": 0.0},
        "toy": {"workload": "toy", "num_nodes": 4, "hours": 24},
    }

    num_nodes: int = 16
    """Physical nodes in the cluster."""
    node_cores: int = 48
    """Physical cores per node."""
    hours: int = 168
    """Episode length, hours (one decision per hour; 12 readings of 5 minutes each)."""
    ratios: tuple[float, ...] = (1.0, 1.1, 1.2, 1.25, 1.33, 1.5)
    """Oversubscription ratios a node may take (sold vCPUs / physical cores), increasing."""
    start_level: int = 0
    """Index in ratios of every node's ratio when the episode starts; the starting population was placed under it."""
    load_factor: float = 2.0
    """vCPUs the arriving VMs ask for on average, as a multiple of the cluster's physical cores."""
    lifetime_util_correlation: float = 0.3
    """Copula correlation of a VM's lifetime and average CPU (0: independent, cluster 15% busy at 1.0; 0.3: 27%)."""
    hot_threshold: float = 1.0
    """A node-hour is hot when its peak 5-minute demand exceeds this x its physical cores."""
    risk_weight: float = 1000.0
    """Reward cost of one hot node-window, in saved cores for an hour."""
    workload: str = "azure"
    """'azure' (generator calibrated to the Azure 2019 VM trace), 'toy' (known optimum) or 'trace' (replay)."""
    trace_dir: str | None = None
    """Folder with vmtable.csv and vm_cpu_readings*.csv (workload='trace')."""
    trace_sample: float = 1.0
    """Share of the trace's deployments each episode keeps (workload='trace')."""
    workload_hints: bool = False
    """VMs declare themselves contention-tolerant or sensitive (Workload Intelligence)."""
    hint_error_rate: float = 0.0
    """Probability that a VM declares a class other than its true one."""
    tolerant_weight: float = 0.5
    """Share of a truly tolerant VM's demand that counts toward heat (with hints)."""
    sensitive_tightening: float = 0.2
    """Threshold reduction (x cores) of a node whose sold vCPUs are all truly sensitive (with hints)."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Sizes of one sub-env: nodes x their history, the ticks of an episode, and (with load_factor) how
        # many VMs a reset draws (their product is bounded below).
        "num_nodes": at_least(1, 1024),
        "node_cores": at_least(2, 1024),
        "hours": at_least(1, 8784, why="a (leap) year of hourly decisions"),
        "ratios": at_least(1, 10),
        "start_level": at_least(0),
        "load_factor": positive(10),
        "lifetime_util_correlation": unit_interval(high_open=True),
        "hot_threshold": Range(0, 2, low_open=True),
        "risk_weight": at_least(0, 1e9),
        "trace_sample": unit_interval(low_open=True),
        "hint_error_rate": unit_interval(),
        "tolerant_weight": unit_interval(),
        "sensitive_tightening": at_least(0),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        r = self.ratios
        check_config(1 <= len(r) <= 64, self, f"ratios must hold 1 to 64 ratios, got {len(r)}")
        check_config(
            all(a < b for a, b in itertools.pairwise(r)),
            self,
            f"ratios must be increasing and >= 1.0, got {r}",
        )
        check_config(
            self.start_level < len(r),
            self,
            f"start_level must index ratios (0..{len(r) - 1}), got {self.start_level}",
        )
        # The VMs a reset draws grow with the cluster's core-hours times load_factor.
        demand = self.num_nodes * self.node_cores * self.hours * self.load_factor
        check_config(
            demand <= MAX_CORE_HOURS,
            self,
            f"num_nodes x node_cores x hours x load_factor = {demand:,.0f} vCPU-hours per episode, more than "
            f"{MAX_CORE_HOURS:,} (a reset draws VMs for all of them)",
        )
        check_config(
            self.workload in GENERATORS,
            self,
            f"workload must be one of {', '.join(GENERATORS)}, got {self.workload!r}",
        )
        if self.workload == "trace":
            check_config(self.trace_dir is not None, self, "workload='trace' needs trace_dir")
            try:  # found as the loader will find it (CLOUDGYM_TRACES, compressed files), never from the cwd
                trace_files(str(self.trace_dir))
            except (FileNotFoundError, NotADirectoryError) as missing:
                raise ValueError(f"{type(self).__name__}.trace_dir: {missing}") from None
        check_config(
            self.sensitive_tightening < self.hot_threshold,
            self,
            f"sensitive_tightening must be in [0, hot_threshold={self.hot_threshold}), got {self.sensitive_tightening}",
        )

    @property
    def episode_ticks(self) -> int:
        return self.hours * TICKS_PER_HOUR

    @property
    def max_ratio(self) -> float:
        return float(self.ratios[-1])


def _synthetic(c: OversubscriptionConfig) -> VMGenerator:
    return SyntheticVMGenerator(
        physical_cores=float(c.num_nodes * c.node_cores),
        load_factor=c.load_factor,
        episode_ticks=c.episode_ticks,
        hint_error_rate=c.hint_error_rate,
        lifetime_util_correlation=c.lifetime_util_correlation,
    )


def _toy(c: OversubscriptionConfig) -> VMGenerator:
    return ToyVMGenerator(num_nodes=c.num_nodes, node_cores=c.node_cores, episode_ticks=c.episode_ticks)


def _trace(c: OversubscriptionConfig) -> VMGenerator:
    return TraceVMGenerator(
        trace=cached_trace(str(c.trace_dir)),
        episode_ticks=c.episode_ticks,
        sample_share=c.trace_sample,
        hint_error_rate=c.hint_error_rate,
    )


GENERATORS: Mapping[str, Callable[[OversubscriptionConfig], VMGenerator]] = {
    "azure": _synthetic,
    "toy": _toy,
    "trace": _trace,
}
"""The VM generator each ``workload`` names, built from the config (``envs/workloads/vm.py``)."""


def _observation_bounds(c: OversubscriptionConfig) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the observation, (N, 55) float32 each (see the table in the module docstring)."""
    high = np.full(NODE_FEATURES, c.max_ratio, np.float32)
    high[[COL_INTERACTIVE, COL_TOLERANT, COL_SENSITIVE, COL_SIN, COL_COS]] = 1.0
    low = np.zeros(NODE_FEATURES, np.float32)
    low[COL_RATIO] = c.ratios[0]
    low[[COL_SIN, COL_COS]] = -1.0
    return np.tile(low, (c.num_nodes, 1)), np.tile(high, (c.num_nodes, 1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class OversubscriptionParams(CoreParams):
    """What Oversubscription-v0 derives once from its config."""

    ratios: np.ndarray  # (R,) float64, the ratio of each level
    obs_low: np.ndarray  # (N, 55) float32, lower bound of the observation (it is clipped into the space)
    obs_high: np.ndarray  # (N, 55) float32, upper bound
    utilisation: VMUtilisation  # how the generator's VMs' readings are computed from their columns


_UTIL_DTYPES = {
    f: (np.uint32 if f in ("burst_threshold", "vm_key", "dep_key") else np.float32) for f in UtilParams.FIELDS
}
_COLUMN_DTYPES = {**_UTIL_DTYPES, "offset": np.int64, "start": np.int32, "length": np.int32}
# The slots compute readings from these (excursion only shapes the trace's max_cpu).
SLOT_UTIL_FIELDS = tuple(f for f in UtilParams.FIELDS if f != "excursion")


def _grow(array: np.ndarray, size: int, fill: float | int) -> np.ndarray:
    """``array`` (B, V, ...) padded along axis 1 to ``size`` with ``fill``."""
    extra = size - array.shape[1]
    if extra <= 0:
        return array
    pad = np.full((array.shape[0], extra, *array.shape[2:]), fill, array.dtype)
    return np.concatenate([array, pad], axis=1)


def _columns(b: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {f: np.zeros((b, 1), _COLUMN_DTYPES[f]) for f in names}


@dataclasses.dataclass
class VMTable:
    """The episode's VMs of B sub-envs, padded to the largest V (sorted by arrival tick)."""

    created: np.ndarray  # (B, V) int32, tick the VM was created (negative: before the episode)
    arrival: np.ndarray  # (B, V) int32, tick the VM asks to be placed (padding: past the episode)
    departure: np.ndarray  # (B, V) int32, tick the VM leaves (exclusive)
    cores: np.ndarray  # (B, V) float32, vCPUs sold to the VM
    traits: np.ndarray  # (B, V, 4) float32, its vCPUs counted in each trait row (interactive, hints)
    heat_weight: np.ndarray  # (B, V) float32, share of its demand that counts toward heat
    status: np.ndarray  # (B, V) int8, PENDING, RUNNING, REJECTED or DEPARTED
    util: dict[str, np.ndarray]  # utilisation column (VMInstance.columns) -> (B, V) array

    @classmethod
    def empty(cls, b: int, columns: Sequence[str]) -> VMTable:
        return cls(
            created=np.zeros((b, 1), np.int32),
            arrival=np.full((b, 1), np.iinfo(np.int32).max, np.int32),
            departure=np.zeros((b, 1), np.int32),
            cores=np.zeros((b, 1), np.float32),
            traits=np.zeros((b, 1, 4), np.float32),
            heat_weight=np.ones((b, 1), np.float32),
            status=np.zeros((b, 1), np.int8),
            util=_columns(b, columns),
        )

    def grow(self, size: int) -> None:
        """Room for ``size`` VMs per sub-env (new rows are padding)."""
        self.created = _grow(self.created, size, 0)
        self.arrival = _grow(self.arrival, size, np.iinfo(np.int32).max)
        self.departure = _grow(self.departure, size, 0)
        self.cores = _grow(self.cores, size, 0.0)
        self.traits = _grow(self.traits, size, 0.0)
        self.heat_weight = _grow(self.heat_weight, size, 1.0)
        self.status = _grow(self.status, size, PENDING)
        self.util = {f: _grow(a, size, 0) for f, a in self.util.items()}

    def load(self, i: int, inst: VMInstance, config: OversubscriptionConfig) -> None:
        """Write an instance's VMs into row ``i`` (the rest of the row becomes padding)."""
        v = inst.num_vms
        hints = 1.0 if config.workload_hints else 0.0
        self.created[i] = 0
        self.created[i, :v] = inst.created
        self.arrival[i] = np.iinfo(np.int32).max
        self.arrival[i, :v] = inst.arrival
        self.departure[i] = 0
        self.departure[i, :v] = inst.departure
        self.cores[i] = 0.0
        self.cores[i, :v] = inst.cores
        self.traits[i] = 0.0
        self.traits[i, :v, TRAIT_INTERACTIVE] = inst.cores * (inst.category == INTERACTIVE)
        self.traits[i, :v, TRAIT_TOLERANT] = hints * inst.cores * (inst.hint_declared == HINT_TOLERANT)
        self.traits[i, :v, TRAIT_SENSITIVE] = hints * inst.cores * (inst.hint_declared == HINT_SENSITIVE)
        self.traits[i, :v, TRAIT_TRULY_SENSITIVE] = hints * inst.cores * (inst.hint_true == HINT_SENSITIVE)
        self.heat_weight[i] = 1.0
        if config.workload_hints:
            self.heat_weight[i, :v] = np.where(inst.hint_true == HINT_TOLERANT, config.tolerant_weight, 1.0)
        self.status[i] = PENDING
        for f, values in inst.columns().items():
            self.util[f][i] = 0
            self.util[f][i, :v] = values


@dataclasses.dataclass
class StepSlots:
    """The slots one step's hour can use, as flat copies in slot-table order (scratch of one step, not state).

    The slots running a VM when the hour starts, plus each sub-env's first
    ``arrivals`` free slots (a VM takes the first free slot, so the hour's
    placements land in these or in slots its departures free). The 12
    readings, departures and node sums work on these contiguous 1-D copies
    instead of the (B, M) table's ``[:, :high]`` view: no free slot past the
    high-water mark or gap between running VMs is computed, and numpy needs
    no loop over rows. The copies keep the table's row-major order, so every
    node's demand adds up its VMs in the same order as a pass over the table
    (free slots fall in their sub-env's dummy bin 0). The step's departures
    and placements update them.
    """

    position: np.ndarray  # (L,) int64, sub-env x M + slot, increasing
    env: np.ndarray  # (L,) int64, the sub-env of each
    bins: np.ndarray  # (L,) int64, sub-env x (N + 1) + node + 1 of the VM there (+ 0: a free slot)
    end: np.ndarray  # (L,) float64, tick the VM there leaves (+inf: free)
    util: dict[str, np.ndarray]  # utilisation column -> (L,) array
    heat_weight: np.ndarray  # (L,) float32
    cores: np.ndarray  # (L,) float32

    @classmethod
    def gather(cls, slots: Placements, params: SlotParams, usable: np.ndarray, width: int, num_nodes: int) -> StepSlots:
        """Copies of the slots at flat indices ``usable`` of the table's first ``width`` slots (B, width)."""
        env, slot = np.divmod(usable, width)
        position = env * slots.slots + slot
        return cls(
            position=position,
            env=env,
            bins=env * (num_nodes + 1) + np.take(slots.node[:, :width], usable) + 1,
            end=np.take(slots.end, position),
            util={f: np.take(a, position) for f, a in params.util.items()},
            heat_weight=np.take(params.heat_weight, position),
            cores=np.take(params.cores, position),
        )

    def index_of(self, position: np.ndarray) -> np.ndarray:
        """Where table positions (sub-env x M + slot) lie here; raises if one is missing (a bug)."""
        at = np.searchsorted(self.position, position)
        ok = at < self.position.size
        if not ok.all() or not np.array_equal(self.position[at], position):
            raise RuntimeError("a placement landed in a slot outside the step's usable slots")
        return at


@dataclasses.dataclass
class SlotParams:
    """Per-slot copies of the running VMs' parameters (beside ``state.slots``), so a reading needs no gather."""

    util: dict[str, np.ndarray]  # utilisation column (SLOT_UTIL_FIELDS, then replay's) -> (B, M) array
    heat_weight: np.ndarray  # (B, M) float32
    cores: np.ndarray  # (B, M) float32, vCPUs of the VM placed there (stale in a free slot: its node bin is a dummy)

    @classmethod
    def empty(cls, b: int, columns: Sequence[str]) -> SlotParams:
        return cls(
            util=_columns(b, columns), heat_weight=np.ones((b, 1), np.float32), cores=np.zeros((b, 1), np.float32)
        )

    def grow(self, size: int) -> None:
        self.util = {f: _grow(a, size, 0) for f, a in self.util.items()}
        self.heat_weight = _grow(self.heat_weight, size, 1.0)
        self.cores = _grow(self.cores, size, 0.0)

    def copy_from(
        self,
        vms: VMTable,
        env: np.ndarray,
        vm: np.ndarray,
        slot: np.ndarray,
        into: tuple[StepSlots, np.ndarray] | None = None,
    ) -> None:
        """Copy the parameters of VMs ``vm`` of sub-envs ``env`` into their slots (placement).

        ``into``: also into a step's copies, at the given indices (:meth:`StepSlots.index_of`).
        """
        # Flat indices into the C-ordered (B, V) and (B, M) tables: one gather and one scatter per field.
        from_vm = env * vms.cores.shape[1] + vm
        to_slot = env * self.cores.shape[1] + slot
        pairs = [(vms.util[f], self.util[f]) for f in self.util]
        pairs += [(vms.heat_weight, self.heat_weight), (vms.cores, self.cores)]
        copies: list[np.ndarray] = []
        if into is not None:
            copies = [*(into[0].util[f] for f in self.util), into[0].heat_weight, into[0].cores]
        for i, (source, table) in enumerate(pairs):
            values = np.take(source, from_vm)
            np.put(table, to_slot, values)
            if into is not None:
                np.put(copies[i], into[1], values)


@dataclasses.dataclass
class OversubscriptionCounters:
    """Per-episode sums (the base zeroes them at every reset)."""

    saved_core_ticks: np.ndarray  # (B,) float64, sum over readings of sold vCPUs above cores (all nodes)
    sold_core_ticks: np.ndarray  # (B,) float64, sum over readings of sold vCPUs
    demand_core_ticks: np.ndarray  # (B,) float64, sum over readings of demand, cores
    booked_core_ticks: np.ndarray  # (B,) float64, vCPU-ticks booked by placements (to departure or episode end)
    rejected_core_ticks: np.ndarray  # (B,) float64, vCPU-ticks the rejected VMs asked for
    placed_vms: np.ndarray  # (B,) int64
    rejected_vms: np.ndarray  # (B,) int64
    not_running_at_start: np.ndarray  # (B,) int64, starting VMs that did not fit under the start ratio
    hot_windows: np.ndarray  # (B,) int64, hot node-hours so far
    worst_overload: np.ndarray  # (B,) float64, largest (heat - threshold x cores) / cores so far, >= 0
    ratio_sum: np.ndarray  # (B,) float64, sum of the chosen ratios over node-hours

    @classmethod
    def zeros(cls, b: int) -> OversubscriptionCounters:
        ints = ("placed_vms", "rejected_vms", "not_running_at_start", "hot_windows")
        return cls(**{f.name: np.zeros(b, np.int64 if f.name in ints else np.float64) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class OversubscriptionState:
    """State of B clusters."""

    vms: VMTable  # (B, V): the episode's VMs
    num_vms: np.ndarray  # (B,) int64, VMs in the episode (rows of vms beyond are padding)
    arrivals_at: np.ndarray  # (B, T+1) int64, index of the first VM arriving at or after each tick
    pool: ResourcePool  # (B, 1, N): physical cores (capacity) and sold vCPUs (used)
    traits: ResourcePool  # (B, 4, N): vCPUs of running VMs per trait row (capacity unused)
    slots: Placements  # (B, 1, M): running VMs, their node, vCPUs and departure tick
    slot_params: SlotParams  # (B, M): their utilisation parameters
    slot_high: np.ndarray  # (B,) int64, one past the highest slot used this episode (new VMs take the first free)
    level: np.ndarray  # (B, N) int64, index of each node's current ratio
    hist_mean: np.ndarray  # (B, N, 24) float32, hourly mean demand / cores, oldest first
    hist_max: np.ndarray  # (B, N, 24) float32, hourly peak 5-minute demand / cores
    counters: OversubscriptionCounters


def slot_view(slots: Placements, width: int) -> Placements:
    """The first ``width`` slots of a table, as views (writes go through to the table)."""
    return Placements(
        node=slots.node[:, :width],
        item=slots.item[:, :width],
        demand=slots.demand[:, :, :width],
        end=slots.end[:, :width],
    )


class TickPlacement(NamedTuple):
    """What one tick's placement did; (B, K) arrays over the tick's arrivals."""

    placed: np.ndarray  # bool, arrival k of sub-env b was placed
    vm: np.ndarray  # int64, its VM index (-1: padding)
    node: np.ndarray  # int64, its node (-1: rejected)
    slot: np.ndarray  # int64, its slot in the table (-1: rejected)
    cores: np.ndarray  # float64, its vCPUs (those of VM 0 in padding)
    departure: np.ndarray  # int32, its departure tick (that of VM 0 in padding)


def place_arrivals(
    vms: VMTable,
    arrivals_at: np.ndarray,
    pool: ResourcePool,
    slots: Placements,
    high: np.ndarray,
    tick: np.ndarray,
    limit: np.ndarray,
) -> TickPlacement:
    """Best-fit placement of the arrivals of ``tick`` (B,) on ``pool``/``slots`` (after the tick's departures).

    ``vms`` and ``arrivals_at`` are the state's VM table and arrival index;
    ``high`` (B,) is the slot high-water mark, updated: a VM takes the
    first free slot, so slots past it are empty and free slots are looked
    for only below it (plus this tick's arrivals). The real step and the
    hindsight look-ahead (on copies of the pool and slots) both use it.
    """
    b = tick.shape[0]
    rows = np.arange(b)
    width = max(1, int(high.max()))
    first = arrivals_at[rows, tick]
    count = arrivals_at[rows, tick + 1] - first
    k_max = int(count.max())
    if k_max == 0:
        empty = np.zeros((b, 0), np.int64)
        return TickPlacement(empty.astype(bool), empty, empty, empty, empty.astype(np.float64), empty)
    valid = np.arange(k_max)[None, :] < count[:, None]
    vm = np.where(valid, first[:, None] + np.arange(k_max)[None, :], 0)
    flat_vm = (rows * vms.cores.shape[1])[:, None] + vm  # np.take on flat indices: no index grids
    cores = np.take(vms.cores, flat_vm).astype(np.float64)
    departure = np.take(vms.departure, flat_vm)
    slot = np.full((b, k_max), -1, np.int64)
    node = place_sequentially(
        pool,
        slot_view(slots, min(slots.slots, width + k_max)),
        cores[:, :, None],
        valid,
        departure.astype(np.float64),
        vm,
        limit,
        slots_out=slot,
    )
    np.maximum(high, slot.max(axis=1) + 1, out=high)  # -1 where none was placed leaves the mark
    return TickPlacement(valid & (node >= 0), np.where(valid, vm, -1), node, slot, cores, departure)


# ----------------------------------------------------------------------------- the hour, compiled
# The numpy step (OversubscriptionCore._step_numpy) makes some twenty numpy calls per tick for departures,
# best fit rank by rank, readings and node sums. The kernels below do one hour of one sub-env per pass:
# _hour_placements runs the 12 ticks' departures and arrivals and records, for every (tick, slot), the VM
# there; readings are then computed for all 12 ticks at once (_hour_exponents, numpy's np.exp,
# _hour_readings). Placement never depends on readings, so the split changes no number. Every sum adds in
# the numpy step's order (node sums slot by slot, counters in numpy's pairwise order), so the trajectories
# are bit-identical (tests/envs/test_oversubscription_kernels.py). The per-(tick, slot) arrays of a sub-env
# start at base[b] and hold width[b] slots per tick: the slots in use when the hour starts plus its arrivals.
# kernel_hour drives them for one step (OversubscriptionCore._step calls it when the kernels are on).


@kernels.jit
def _tick_departures(
    b: int,
    w: int,
    now: float,
    free: int,
    vm_traits: np.ndarray,
    status: np.ndarray,
    used: np.ndarray,
    traits_used: np.ndarray,
    slot_node: np.ndarray,
    slot_item: np.ndarray,
    slot_demand: np.ndarray,
    slot_end: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Vacate sub-env ``b``'s slots (of the first ``w``) whose VM leaves by ``now``: the first free slot after."""
    for slot in range(w):
        if slot_end[b, slot] <= now:
            node, v = slot_node[b, slot], slot_item[b, slot]
            used[b, 0, node] -= slot_demand[b, 0, slot]
            for r in range(4):
                traits_used[b, r, node] -= np.float64(vm_traits[b, v, r])
            status[b, v] = DEPARTED
            slot_node[b, slot] = -1
            slot_item[b, slot] = -1
            slot_demand[b, 0, slot] = 0.0
            slot_end[b, slot] = np.inf
            if slot < free:
                free = slot
    # ResourcePool.release clamps at zero after its subtractions: rounding never leaves negative use.
    for node in range(used.shape[2]):
        if not used[b, 0, node] >= 0.0:
            used[b, 0, node] = 0.0
        for r in range(4):
            if not traits_used[b, r, node] >= 0.0:
                traits_used[b, r, node] = 0.0
    return free


@kernels.jit
def _tick_arrivals(
    b: int,
    t: int,
    w: int,
    free: int,
    logged: int,
    episode_ticks: int,
    arrivals_at: np.ndarray,
    departure: np.ndarray,
    cores: np.ndarray,
    vm_traits: np.ndarray,
    status: np.ndarray,
    used: np.ndarray,
    limit: np.ndarray,
    traits_used: np.ndarray,
    slot_node: np.ndarray,
    slot_item: np.ndarray,
    slot_demand: np.ndarray,
    slot_end: np.ndarray,
    slot_high: np.ndarray,
    need: np.ndarray,
    booked_terms: np.ndarray,
    rejected_terms: np.ndarray,
    placed_now: np.ndarray,
    rejected_now: np.ndarray,
    log: np.ndarray,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """Best fit of sub-env ``b``'s arrivals at tick ``t``: (placements logged, first free slot).

    The placements logged are -1 - b when the sub-env ran out of slots.
    """
    first = arrivals_at[b, t]
    count = arrivals_at[b, t + 1] - first
    for k in range(count):
        v = first + k
        need[0] = np.float64(cores[b, v])
        span = np.float64(min(np.int64(departure[b, v]), np.int64(episode_ticks)) - t)
        node = best_fit_node(limit, used, b, need)
        if node < 0:
            status[b, v] = REJECTED
            rejected_terms[k] = need[0] * span
            rejected_now[b] += 1
            continue
        if free >= w:
            return -1 - b, free
        slot_node[b, free] = node
        slot_item[b, free] = v
        slot_demand[b, 0, free] = need[0]
        slot_end[b, free] = np.float64(departure[b, v])
        used[b, 0, node] += need[0]
        # Traits are added in the same order as the numpy step's (after the tick's departures).
        for r in range(4):
            traits_used[b, r, node] += np.float64(vm_traits[b, v, r])
        status[b, v] = RUNNING
        log[logged, 0], log[logged, 1], log[logged, 2] = b, v, free
        logged += 1
        slot_high[b] = max(slot_high[b], free + 1)
        booked_terms[k] = need[0] * span
        placed_now[b] += 1
        free = next_free_slot(slot_node, b, free + 1)
    return logged, free


@kernels.jit
def _hour_placements(
    first_tick: np.ndarray,
    episode_ticks: int,
    k_max: np.ndarray,
    arrivals_at: np.ndarray,
    departure: np.ndarray,
    cores: np.ndarray,
    vm_traits: np.ndarray,
    status: np.ndarray,
    used: np.ndarray,
    limit: np.ndarray,
    traits_used: np.ndarray,
    slot_node: np.ndarray,
    slot_item: np.ndarray,
    slot_demand: np.ndarray,
    slot_end: np.ndarray,
    slot_high: np.ndarray,
    width: np.ndarray,
    base: np.ndarray,
    occupant: np.ndarray,
    occupant_node: np.ndarray,
    sold: np.ndarray,
    sensitive: np.ndarray,
    booked: np.ndarray,
    rejected_ticks: np.ndarray,
    placed_now: np.ndarray,
    rejected_now: np.ndarray,
    log: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Departures and best-fit arrivals of the hour, tick by tick; placements logged as (sub-env, VM, slot).

    Returns the number of placements, or -1 - b when sub-env b ran out of slots.
    """
    num_envs, num_nodes = used.shape[0], used.shape[2]
    k_top = max(1, int(k_max.max()))
    booked_terms = np.zeros(k_top)
    rejected_terms = np.zeros(k_top)
    need = np.zeros(1)
    logged = 0
    for b in range(num_envs):
        w, at = width[b], base[b]
        free = next_free_slot(slot_node, b, 0)
        for j in range(TICKS_PER_HOUR):
            t = first_tick[b] + j
            free = _tick_departures(
                b, w, np.float64(t), free, vm_traits, status, used, traits_used, slot_node, slot_item, slot_demand,
                slot_end,
            )  # fmt: skip
            logged, free = _tick_arrivals(
                b, t, w, free, logged, episode_ticks, arrivals_at, departure, cores, vm_traits, status, used, limit,
                traits_used, slot_node, slot_item, slot_demand, slot_end, slot_high, need, booked_terms,
                rejected_terms, placed_now, rejected_now, log,
            )  # fmt: skip
            if logged < 0:
                return logged
            if k_max[j] > 0:
                # The numpy step sums (B, k_max) products padded with zeros, pairwise: the same order here.
                count = arrivals_at[b, t + 1] - arrivals_at[b, t]
                booked[b] += kernels.numpy_sum(booked_terms, 0, k_max[j])
                rejected_ticks[b] += kernels.numpy_sum(rejected_terms, 0, k_max[j])
                booked_terms[:count] = 0.0
                rejected_terms[:count] = 0.0
            for slot in range(w):
                node = slot_node[b, slot]
                occupant[at + j * w + slot] = slot_item[b, slot] if node >= 0 else -1
                occupant_node[at + j * w + slot] = node
            for node in range(num_nodes):
                sold[b, j, node] = used[b, 0, node]
                sensitive[b, j, node] = traits_used[b, TRAIT_TRULY_SENSITIVE, node]
    return logged


@kernels.jit
def _hour_exponents(
    first_tick: np.ndarray,
    width: np.ndarray,
    base: np.ndarray,
    occupant: np.ndarray,
    log_base: np.ndarray,
    sigma: np.ndarray,
    vm_key: np.ndarray,
    dep_key: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Pass one of the hour's readings (modelled VMs): each occupied (tick, slot)'s exponent; 0 where free."""
    mix = np.empty(TICKS_PER_HOUR, np.uint64)
    for b in range(width.size):
        w, at = width[b], base[b]
        for j in range(TICKS_PER_HOUR):
            mix[j] = mix_kernel(first_tick[b] + j)
        # Slot by slot, its 12 ticks inside: a slot's VM rarely changes within the hour, so its parameters
        # are read once instead of once a tick.
        for slot in range(w):
            last = -1
            lb, sg, vk, dk = np.float32(0.0), np.float32(0.0), np.uint32(0), np.uint32(0)
            for j in range(TICKS_PER_HOUR):
                i = at + j * w + slot
                v = occupant[i]
                if v < 0:
                    out[i] = 0.0
                    continue
                if v != last:
                    lb, sg, vk, dk, last = log_base[b, v], sigma[b, v], vm_key[b, v], dep_key[b, v], v
                out[i] = noise_exponent(lb, sg, vk, dk, mix[j])  # type: ignore[arg-type]  # numpy scalars in numba


@kernels.jit
def _hour_replayed(
    first_tick: np.ndarray,
    width: np.ndarray,
    base: np.ndarray,
    occupant: np.ndarray,
    pool: np.ndarray,
    offset: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """The hour's readings of replayed VMs (``replayed_utilisation``): the pool's reading, the last one past the end."""
    for b in range(width.size):
        w, at = width[b], base[b]
        for j in range(TICKS_PER_HOUR):
            t = first_tick[b] + j
            for slot in range(w):
                i = at + j * w + slot
                v = occupant[i]
                if v >= 0:
                    index = min(max(t - np.int64(start[b, v]), 0), max(np.int64(length[b, v]) - 1, 0))
                    out[i] = pool[offset[b, v] + index]


@kernels.jit
def _hour_node_demand(
    modelled: bool,
    hints: bool,
    b: int,
    w: int,
    at: int,
    occupant: np.ndarray,
    occupant_node: np.ndarray,
    level: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    dep_key: np.ndarray,
    cores: np.ndarray,
    heat_weight: np.ndarray,
    mix: np.ndarray,
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    demand: np.ndarray,
    heat: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Sub-env ``b``'s (12, N) node demand and heat of the hour, into ``demand`` and ``heat`` (overwritten)."""
    demand[:] = 0.0
    heat[:] = 0.0
    # Slot by slot with the 12 ticks inside: each tick's node sums still add their VMs in slot order.
    for slot in range(w):
        for j in range(TICKS_PER_HOUR):
            i = at + j * w + slot
            v = occupant[i]
            if v < 0:
                continue
            u = level[i]
            if modelled:
                u = finish_reading(
                    u, amp_cos[b, v], amp_sin[b, v], cos_t[j], sin_t[j],
                    burst_threshold[b, v], burst_level[b, v], dep_key[b, v], mix[j],
                )  # fmt: skip
            contrib = np.float32(u) * cores[b, v]
            node = occupant_node[i]
            demand[j, node] += np.float64(contrib)
            if hints:
                heat[j, node] += np.float64(contrib * heat_weight[b, v])


@kernels.jit
def _hour_node_sums(
    hints: bool,
    b: int,
    demand: np.ndarray,
    heat: np.ndarray,
    sold: np.ndarray,
    sensitive: np.ndarray,
    node_cores: float,
    hot_threshold: float,
    tightening: float,
    terms: np.ndarray,
    hour_sum: np.ndarray,
    hour_max: np.ndarray,
    hot: np.ndarray,
    saved: np.ndarray,
    worst_overload: np.ndarray,
    sold_core_ticks: np.ndarray,
    demand_core_ticks: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Sub-env ``b``'s hot nodes, saved cores and the hour's sums from its (12, N) node demand and heat."""
    num_nodes = hour_sum.shape[1]
    for j in range(TICKS_PER_HOUR):
        worst = -np.inf
        for node in range(num_nodes):
            load = heat[j, node] if hints else demand[j, node]
            if hints:
                s = sold[b, j, node]
                share = sensitive[b, j, node] / s if s > 0 else 0.0
                limit = (hot_threshold - tightening * share) * node_cores
            else:
                limit = hot_threshold * node_cores
            over = load - limit
            if over > 1e-9:
                hot[b, node] = True
            if node == 0 or over > worst:
                worst = over
            hour_sum[b, node] += demand[j, node]
            if not hour_max[b, node] >= demand[j, node]:
                hour_max[b, node] = demand[j, node]
            excess = sold[b, j, node] - node_cores
            terms[node] = excess if excess >= 0.0 else 0.0
        worst /= node_cores
        if not worst_overload[b] >= worst:
            worst_overload[b] = worst
        saved[b] += kernels.numpy_sum(terms, 0, num_nodes)
        sold_core_ticks[b] += kernels.numpy_sum(sold[b, j], 0, num_nodes)
        demand_core_ticks[b] += kernels.numpy_sum(demand[j], 0, num_nodes)


@kernels.jit
def _hour_readings(
    modelled: bool,
    hints: bool,
    first_tick: np.ndarray,
    width: np.ndarray,
    base: np.ndarray,
    occupant: np.ndarray,
    occupant_node: np.ndarray,
    level: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    dep_key: np.ndarray,
    cores: np.ndarray,
    heat_weight: np.ndarray,
    cos_day: np.ndarray,
    sin_day: np.ndarray,
    sold: np.ndarray,
    sensitive: np.ndarray,
    node_cores: float,
    hot_threshold: float,
    tightening: float,
    hour_sum: np.ndarray,
    hour_max: np.ndarray,
    hot: np.ndarray,
    saved: np.ndarray,
    worst_overload: np.ndarray,
    sold_core_ticks: np.ndarray,
    demand_core_ticks: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Pass two: each tick's node demand and heat, hot nodes, saved cores and the hour's sums (as _step_numpy)."""
    num_nodes = hour_sum.shape[1]
    demand = np.zeros((TICKS_PER_HOUR, num_nodes))
    heat = np.zeros((TICKS_PER_HOUR, num_nodes))
    terms = np.zeros(num_nodes)
    mix = np.empty(TICKS_PER_HOUR, np.uint64)
    cos_t = np.empty(TICKS_PER_HOUR, np.float32)
    sin_t = np.empty(TICKS_PER_HOUR, np.float32)
    day = cos_day.size
    for b in range(width.size):
        for j in range(TICKS_PER_HOUR):
            t = first_tick[b] + j
            mix[j] = mix_kernel(t)
            cos_t[j], sin_t[j] = cos_day[t % day], sin_day[t % day]
        _hour_node_demand(
            modelled, hints, b, width[b], base[b], occupant, occupant_node, level, amp_cos, amp_sin,
            burst_threshold, burst_level, dep_key, cores, heat_weight, mix, cos_t, sin_t, demand, heat,
        )  # fmt: skip
        _hour_node_sums(
            hints, b, demand, heat, sold, sensitive, node_cores, hot_threshold, tightening, terms, hour_sum,
            hour_max, hot, saved, worst_overload, sold_core_ticks, demand_core_ticks,
        )  # fmt: skip


def kernel_hour(
    config: OversubscriptionConfig,
    utilisation: ModelledUtilisation | ReplayedUtilisation,
    s: OversubscriptionState,
    length: np.ndarray,
    limit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One step's hour by the compiled kernels, on state ``s`` at hours ``length`` (B,) under ``limit`` (B, 1, N).

    Returns what ``OversubscriptionCore._end_hour`` books: (B, N) sums and
    peaks of node demand, (B, N) hot nodes, (B,) saved core-ticks, placed and
    rejected VMs; ``s`` and its counters are updated as by ``_step_numpy``.
    """
    c, counters = config, s.counters
    b, n = length.shape[0], c.num_nodes
    first = length * TICKS_PER_HOUR
    if int(first.max()) + TICKS_PER_HOUR > c.episode_ticks:
        raise RuntimeError(f"a sub-env stepped past its episode's {c.hours} hours")
    ticks = first[:, None] + np.arange(TICKS_PER_HOUR + 1)
    arrived = np.take_along_axis(s.arrivals_at, ticks, axis=1)
    counts = np.diff(arrived, axis=1)  # (B, 12) arrivals per tick
    arrivals = arrived[:, -1] - arrived[:, 0]
    width = np.minimum(s.slot_high + arrivals, s.slots.slots)
    base = np.zeros(b, np.int64)
    np.cumsum(width[:-1] * TICKS_PER_HOUR, out=base[1:])
    size = int(base[-1] + width[-1] * TICKS_PER_HOUR)
    occupant = np.empty(size, np.int64)
    occupant_node = np.empty(size, np.int64)
    sold = np.empty((b, TICKS_PER_HOUR, n))
    sensitive = np.empty((b, TICKS_PER_HOUR, n))
    placed_now = np.zeros(b, np.int64)
    rejected_now = np.zeros(b, np.int64)
    log = np.empty((int(arrivals.sum()), 3), np.int64)
    logged = _hour_placements(
        first, c.episode_ticks, counts.max(axis=0), s.arrivals_at, s.vms.departure, s.vms.cores, s.vms.traits,
        s.vms.status, s.pool.used, limit, s.traits.used, s.slots.node, s.slots.item, s.slots.demand,
        s.slots.end, s.slot_high, width, base, occupant, occupant_node, sold, sensitive,
        counters.booked_core_ticks, counters.rejected_core_ticks, placed_now, rejected_now, log,
    )  # fmt: skip
    if logged < 0:
        raise RuntimeError(f"sub-env {-1 - logged}: more live items than the {s.slots.slots} slots sized at reset")
    if logged:
        e, v, sl = log[:logged].T
        s.slot_params.copy_from(s.vms, e, v, sl)
    util = s.vms.util
    level = np.empty(size, np.float32)
    modelled = isinstance(utilisation, ModelledUtilisation)
    if isinstance(utilisation, ModelledUtilisation):
        _hour_exponents(
            first, width, base, occupant, util["log_base"], util["sigma"], util["vm_key"], util["dep_key"], level
        )
        np.exp(level, out=level)
    else:
        _hour_replayed(
            first, width, base, occupant, utilisation.pool, util["offset"], util["start"], util["length"], level
        )
    hour_sum = np.zeros((b, n))
    hour_max = np.zeros((b, n))
    hot = np.zeros((b, n), bool)
    saved = np.zeros(b)
    _hour_readings(
        modelled, c.workload_hints, first, width, base, occupant, occupant_node, level,
        util["amp_cos"], util["amp_sin"], util["burst_threshold"], util["burst_level"], util["dep_key"],
        s.vms.cores, s.vms.heat_weight, *daily_tables(), sold, sensitive,
        float(c.node_cores), float(c.hot_threshold), float(c.sensitive_tightening),
        hour_sum, hour_max, hot, saved, counters.worst_overload, counters.sold_core_ticks,
        counters.demand_core_ticks,
    )  # fmt: skip
    return hour_sum, hour_max, hot, saved, placed_now, rejected_now


def _max_concurrency(instance: VMInstance, episode_ticks: int) -> int:
    """Most VMs of the instance alive at once during the episode (bounds the running VMs: sizes the slots)."""
    if instance.num_vms == 0:
        return 1
    ticks = np.arange(episode_ticks)
    arrived = np.searchsorted(instance.arrival, ticks, side="right")
    departed = np.searchsorted(np.sort(instance.departure), ticks, side="right")
    return max(int((arrived - departed).max()), 1)


METRICS = (
    MetricSpec(
        name="saved_cores",
        unit="cores",
        higher_is_better=True,
        description="sold vCPUs above physical cores, summed over nodes, time-averaged",
    ),
    MetricSpec(
        name="hot_node_windows",
        unit="node-h",
        higher_is_better=False,
        description="node-hours whose peak 5-minute demand exceeded the threshold x cores",
    ),
    MetricSpec(name="hot_rate_pct", unit="%", higher_is_better=False, description="hot node-windows / node-hours"),
    MetricSpec(
        name="accepted_core_hours",
        unit="core-h",
        higher_is_better=True,
        description="vCPU-hours of the placed VMs (within the episode)",
    ),
    MetricSpec(
        name="rejected_core_hours",
        unit="core-h",
        higher_is_better=False,
        description="vCPU-hours the rejected VMs asked for (within the episode)",
    ),
    MetricSpec(name="rejected_vms", unit="VMs", higher_is_better=False, description="VMs that fit on no node"),
    MetricSpec(
        name="worst_overload_pct",
        unit="% of cores",
        higher_is_better=False,
        description="largest 5-minute heat demand above the threshold, per physical core",
    ),
    MetricSpec(name="mean_ratio", unit="x", higher_is_better=None, description="mean ratio over node-hours"),
    MetricSpec(
        name="utilisation_pct",
        unit="%",
        higher_is_better=True,
        description="mean CPU demand / physical cores of the cluster",
    ),
)
"""Oversubscription-v0's episode metrics (``info["metrics"]``)."""


class OversubscriptionCore(BatchedCore[OversubscriptionConfig, OversubscriptionParams, OversubscriptionState]):
    config_cls = OversubscriptionConfig
    state_size_fields = ("num_nodes", "hours")
    metrics: ClassVar[tuple[MetricSpec, ...]] = METRICS

    # ------------------------------------------------------------------ params and state
    def _derive(self, config: OversubscriptionConfig) -> OversubscriptionParams:
        generator = GENERATORS[config.workload](config)
        low, high = _observation_bounds(config)
        return OversubscriptionParams(
            action_space=spaces.MultiDiscrete(np.full(config.num_nodes, len(config.ratios), np.int64)),
            observation_space=spaces.Box(low, high, dtype=np.float32),
            generator=generator,
            ratios=np.asarray(config.ratios, np.float64),
            obs_low=low,
            obs_high=high,
            utilisation=generator.utilisation,
        )

    def _init_state(self, params: OversubscriptionParams) -> OversubscriptionState:
        c, b, n = self.config, self.num_envs, self.config.num_nodes
        series = params.utilisation.series_columns
        return OversubscriptionState(
            vms=VMTable.empty(b, (*UtilParams.FIELDS, *series)),
            num_vms=np.zeros(b, np.int64),
            arrivals_at=np.zeros((b, c.episode_ticks + 1), np.int64),
            pool=ResourcePool.zeros(b, 1, n),
            traits=ResourcePool.zeros(b, 4, n),
            slots=Placements.empty(b, 1, 1),
            slot_params=SlotParams.empty(b, (*SLOT_UTIL_FIELDS, *series)),
            slot_high=np.zeros(b, np.int64),
            level=np.zeros((b, n), np.int64),
            hist_mean=np.zeros((b, n, HISTORY_HOURS), np.float32),
            hist_max=np.zeros((b, n, HISTORY_HOURS), np.float32),
            counters=OversubscriptionCounters.zeros(b),
        )

    @property
    def max_episode_steps(self) -> int:
        return self.config.hours

    def bytes_per_env(self) -> float:
        """Bytes of state per sub-env (every B-first array, divided by B); the replayed pool is shared."""
        return sum(a.nbytes for a in tree.batched(self.state, self.num_envs)) / self.num_envs

    # ------------------------------------------------------------------ episodes
    def _load(self, env_ids: np.ndarray, instances: Sequence[VMInstance]) -> None:
        s, c = self.state, self.config
        largest = max(inst.num_vms for inst in instances)
        if largest > s.vms.arrival.shape[1]:
            s.vms.grow(int(np.ceil(largest / 256) * 256))
        concurrency = max(_max_concurrency(inst, c.episode_ticks) for inst in instances)
        if concurrency > s.slots.slots:
            size = int(np.ceil(concurrency / 64) * 64)
            s.slots.ensure_slots(size)
            s.slot_params.grow(size)
        ticks = np.arange(c.episode_ticks + 1)
        for i, inst in zip(env_ids, instances):
            s.vms.load(i, inst, c)
            s.num_vms[i] = inst.num_vms
            s.arrivals_at[i] = np.searchsorted(inst.arrival, ticks, side="left")
        s.pool.reset_envs(env_ids, np.full((env_ids.size, 1, c.num_nodes), float(c.node_cores)))
        s.traits.reset_envs(env_ids, np.zeros((env_ids.size, 4, c.num_nodes)))
        s.slots.clear_envs(env_ids)
        s.slot_high[env_ids] = 0
        s.level[env_ids] = c.start_level
        s.hist_mean[env_ids] = 0.0
        s.hist_max[env_ids] = 0.0
        self._place_starting_population(env_ids)

    def _place_starting_population(self, env_ids: np.ndarray) -> None:
        """Place the VMs running at the start (arrival 0) under the start ratio, and fill 24 h of history.

        The cluster is taken over while running: its starting population was
        placed, by the same best-fit allocator in creation order, under
        ``ratios[start_level]``; the observation's history shows the last 24
        hours of those VMs on their nodes (each from its creation). Starting
        VMs that did not fit are marked NOT_RUNNING_AT_START and counted in
        ``counters.not_running_at_start`` (the cluster had turned them away
        before the episode; no policy's metrics count them).
        """
        s, c, counters = self.state, self.config, self.state.counters
        k = env_ids.size
        count = s.arrivals_at[env_ids, 1]
        k_max = int(count.max())
        if k_max == 0:
            return
        pool = ResourcePool(capacity=s.pool.capacity[env_ids].copy(), used=np.zeros((k, 1, c.num_nodes)))
        slots = Placements.empty(k, 1, s.slots.slots)
        valid = np.arange(k_max)[None, :] < count[:, None]
        vm = np.where(valid, np.arange(k_max)[None, :], 0)
        cores = np.take_along_axis(s.vms.cores[env_ids], vm, axis=1).astype(np.float64)
        departure = np.take_along_axis(s.vms.departure[env_ids], vm, axis=1).astype(np.float64)
        slot = np.full((k, k_max), -1, np.int64)
        limit = np.full((k, 1, c.num_nodes), c.ratios[c.start_level] * c.node_cores)
        node = place_sequentially(pool, slots, cores[:, :, None], valid, departure, vm, limit, slots_out=slot)
        s.pool.used[env_ids] = pool.used
        s.slots.node[env_ids] = slots.node
        s.slots.item[env_ids] = slots.item
        s.slots.demand[env_ids] = slots.demand
        s.slots.end[env_ids] = slots.end
        occupied = slots.node >= 0
        s.slot_high[env_ids] = np.where(occupied.any(axis=1), s.slots.slots - np.argmax(occupied[:, ::-1], axis=1), 0)
        placed = valid & (node >= 0)
        j, kk = np.nonzero(placed)
        e, v, sl = env_ids[j], vm[j, kk], slot[j, kk]
        s.vms.status[e, v] = RUNNING
        s.slot_params.copy_from(s.vms, e, v, sl)
        s.traits.allocate(e, node[j, kk], s.vms.traits[e, v].astype(np.float64))
        span = np.minimum(departure, c.episode_ticks)
        counters.booked_core_ticks[env_ids] += (cores * span * placed).sum(axis=1)
        counters.placed_vms[env_ids] += placed.sum(axis=1)
        missed = valid & ~placed
        jm, km = np.nonzero(missed)
        s.vms.status[env_ids[jm], vm[jm, km]] = NOT_RUNNING_AT_START
        counters.not_running_at_start[env_ids] += missed.sum(axis=1)
        # Tick 0's arrivals are the starting population: the first step places no one twice.
        s.arrivals_at[env_ids, 0] = count
        self._fill_history(env_ids)

    def _fill_history(self, env_ids: np.ndarray) -> None:
        """The last 24 hours of demand of the VMs now running on each node, from their creation on."""
        s, c = self.state, self.config
        k, n = env_ids.size, c.num_nodes
        w = max(1, int(s.slot_high[env_ids].max()))
        cores = s.slots.demand[env_ids, 0, :w]
        if not (cores > 0).any():
            return
        item = np.maximum(s.slots.item[env_ids, :w], 0)
        created = np.take_along_axis(s.vms.created[env_ids], item, axis=1)
        base = (np.arange(k) * n)[:, None] + np.maximum(s.slots.node[env_ids, :w], 0)
        columns = {f: a[env_ids, :w][:, :, None] for f, a in s.slot_params.util.items()}
        ticks_back = HISTORY_HOURS * TICKS_PER_HOUR
        demand = np.zeros((k, n, ticks_back))
        flat = (base[:, :, None] * TICKS_PER_HOUR + np.arange(TICKS_PER_HOUR)[None, None, :]).ravel()
        for lo in range(0, ticks_back, TICKS_PER_HOUR):
            ticks = np.arange(lo, lo + TICKS_PER_HOUR) - ticks_back  # negative: before the start
            t3 = np.broadcast_to(ticks[None, None, :], (k, 1, TICKS_PER_HOUR))
            u = self.params.utilisation(columns, t3)
            weight = cores[:, :, None] * (t3 >= created[:, :, None])
            hour = np.bincount(flat, weights=(u * weight).ravel(), minlength=k * n * TICKS_PER_HOUR)
            demand[:, :, lo : lo + TICKS_PER_HOUR] = hour.reshape(k, n, TICKS_PER_HOUR)
        hourly = demand.reshape(k, n, HISTORY_HOURS, TICKS_PER_HOUR)
        s.hist_mean[env_ids] = hourly.mean(axis=3) / c.node_cores
        s.hist_max[env_ids] = hourly.max(axis=3) / c.node_cores

    # ------------------------------------------------------------------ the allocator
    def ratio_limits(self, level: np.ndarray) -> np.ndarray:
        """(B, 1, N) vCPUs each node may sell at ``level`` (B, N)."""
        return (self.params.ratios[level] * self.config.node_cores)[:, None, :]

    # ------------------------------------------------------------------ the step
    def _step_slots(self) -> StepSlots:
        """Flat copies of the slots the coming hour can use (see :class:`StepSlots`)."""
        s, c = self.state, self.config
        first = self.stats.length * TICKS_PER_HOUR
        last = np.minimum(first + TICKS_PER_HOUR, c.episode_ticks)
        arrivals = np.maximum(
            s.arrivals_at[self._env_index, last] - s.arrivals_at[self._env_index, first.clip(0, last)], 0
        )
        # The k-th free slot lies below high-water mark + k: the hour's placements stay within this width.
        width = int(min(s.slots.slots, max(1, int((s.slot_high + arrivals).max()))))
        free = s.slots.node[:, :width] < 0
        free_rank = np.cumsum(free, axis=1, dtype=np.int32)
        usable = np.flatnonzero(~free | (free_rank <= arrivals[:, None]))
        return StepSlots.gather(s.slots, s.slot_params, usable, width, c.num_nodes)

    def _depart(self, step_slots: StepSlots, tick: np.ndarray, shared_tick: int | None) -> None:
        """Free the slots whose VM leaves at ``tick`` (B,) and mark their VMs DEPARTED."""
        s, c = self.state, self.config
        now = step_slots.end.dtype.type(shared_tick) if shared_tick is not None else tick[step_slots.env]
        due = np.flatnonzero(step_slots.end <= now)
        env = step_slots.env[due]
        vms, nodes = s.slots.vacate(s.pool, env, step_slots.position[due] - env * s.slots.slots)
        step_slots.end[due] = np.inf
        step_slots.bins[due] = env * (c.num_nodes + 1)
        if env.size:
            s.vms.status[env, vms] = DEPARTED
            s.traits.release(env, nodes, s.vms.traits[env, vms].astype(np.float64))

    def _arrive(self, step_slots: StepSlots, tick: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Place the arrivals of ``tick`` (B,), book them in the counters: (placed, rejected) VMs, (B,) each."""
        s, c, counters = self.state, self.config, self.state.counters
        placed, vm, node, slot, cores, departure = place_arrivals(
            s.vms, s.arrivals_at, s.pool, s.slots, s.slot_high, tick, limit
        )
        if not vm.size:
            return np.zeros(self.num_envs, np.int64), np.zeros(self.num_envs, np.int64)
        asked = vm >= 0
        span = np.minimum(departure, c.episode_ticks) - tick[:, None]
        rejected = asked & ~placed
        e, k = np.nonzero(placed)
        if e.size:
            v, sl = vm[e, k], slot[e, k]
            s.vms.status[e, v] = RUNNING
            at = step_slots.index_of(e * s.slots.slots + sl)
            s.slot_params.copy_from(s.vms, e, v, sl, (step_slots, at))
            step_slots.bins[at] = e * (c.num_nodes + 1) + node[e, k] + 1
            step_slots.end[at] = departure[e, k]
            s.traits.allocate(e, node[e, k], s.vms.traits[e, v].astype(np.float64))
        er, kr = np.nonzero(rejected)
        if er.size:
            s.vms.status[er, vm[er, kr]] = REJECTED
        counters.booked_core_ticks += (cores * span * placed).sum(axis=1)
        counters.rejected_core_ticks += (cores * span * rejected).sum(axis=1)
        return placed.sum(axis=1), rejected.sum(axis=1)

    def _readings(self, tick: int | np.ndarray, step_slots: StepSlots) -> tuple[np.ndarray, np.ndarray]:
        """(demand, heat demand), each (B, N) cores, of the running VMs at ``tick`` (an int, or (L,) per slot)."""
        c = self.config
        contrib = self.params.utilisation(step_slots.util, tick)
        contrib *= step_slots.cores
        # Bin b * (N + 1) + node + 1 per slot: a free slot falls in its sub-env's bin 0.
        shape = (self.num_envs, c.num_nodes + 1)
        demand = np.bincount(step_slots.bins, weights=contrib, minlength=shape[0] * shape[1]).reshape(shape)[:, 1:]
        if not c.workload_hints:
            return demand, demand
        contrib *= step_slots.heat_weight
        heat = np.bincount(step_slots.bins, weights=contrib, minlength=shape[0] * shape[1]).reshape(shape)[:, 1:]
        return demand, heat

    def _thresholds(self, sold: np.ndarray, truly_sensitive: np.ndarray) -> np.ndarray:
        """(B, N) heat limit of each node, cores: threshold x cores, lowered by its truly sensitive share."""
        c = self.config
        if not c.workload_hints:
            return np.full(sold.shape, c.hot_threshold * c.node_cores)
        share = np.divide(truly_sensitive, sold, out=np.zeros_like(sold), where=sold > 0)
        return (c.hot_threshold - c.sensitive_tightening * share) * c.node_cores

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        utilisation = self.params.utilisation
        if not (kernels.enabled() and isinstance(utilisation, ModelledUtilisation | ReplayedUtilisation)):
            return self._step_numpy(actions)
        # The compiled hour (kernel_hour): bit-identical to _step_numpy, the reference.
        s = self.state
        s.level[:] = actions
        limit = self.ratio_limits(s.level)
        s.counters.ratio_sum += self.params.ratios[s.level].sum(axis=1)
        return self._end_hour(*kernel_hour(self.config, utilisation, s, self.stats.length, limit))

    def _step_numpy(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        """The hour in numpy, tick by tick: the reference the kernels are tested against."""
        s, c, counters = self.state, self.config, self.state.counters
        b, n = self.num_envs, c.num_nodes
        s.level[:] = actions
        limit = self.ratio_limits(s.level)
        counters.ratio_sum += self.params.ratios[s.level].sum(axis=1)
        hour_sum = np.zeros((b, n))
        hour_max = np.zeros((b, n))
        hot = np.zeros((b, n), bool)
        saved = np.zeros(b)
        placed_now = np.zeros(b, np.int64)
        rejected_now = np.zeros(b, np.int64)
        step_slots = self._step_slots()
        # Sub-envs usually share the hour (they start and end together): a scalar tick is cheaper to broadcast.
        shared_hour = bool((self.stats.length == self.stats.length[0]).all())
        for j in range(TICKS_PER_HOUR):
            tick = self.stats.length * TICKS_PER_HOUR + j
            shared_tick = int(tick[0]) if shared_hour else None
            self._depart(step_slots, tick, shared_tick)
            placed, rejected = self._arrive(step_slots, tick, limit)
            placed_now += placed
            rejected_now += rejected
            demand, heat = self._readings(shared_tick if shared_tick is not None else tick[step_slots.env], step_slots)
            sold = s.pool.used[:, 0, :]
            over = heat - self._thresholds(sold, s.traits.used[:, TRAIT_TRULY_SENSITIVE, :])
            hot |= over > 1e-9
            np.maximum(counters.worst_overload, over.max(axis=1) / c.node_cores, out=counters.worst_overload)
            hour_sum += demand
            np.maximum(hour_max, demand, out=hour_max)
            saved += np.maximum(sold - c.node_cores, 0.0).sum(axis=1)
            counters.sold_core_ticks += sold.sum(axis=1)
            counters.demand_core_ticks += demand.sum(axis=1)
        return self._end_hour(hour_sum, hour_max, hot, saved, placed_now, rejected_now)

    def _end_hour(
        self,
        hour_sum: np.ndarray,
        hour_max: np.ndarray,
        hot: np.ndarray,
        saved: np.ndarray,
        placed_now: np.ndarray,
        rejected_now: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        """Book the hour (sums and peaks of node demand (B, N), hot nodes, saved core-ticks and VMs (B,))."""
        s, c, counters = self.state, self.config, self.state.counters
        b = self.num_envs
        counters.saved_core_ticks += saved
        counters.placed_vms += placed_now
        counters.rejected_vms += rejected_now
        s.hist_mean[:, :, :-1] = s.hist_mean[:, :, 1:]
        s.hist_max[:, :, :-1] = s.hist_max[:, :, 1:]
        s.hist_mean[:, :, -1] = hour_sum / (TICKS_PER_HOUR * c.node_cores)
        s.hist_max[:, :, -1] = hour_max / c.node_cores
        hot_count = hot.sum(axis=1)
        counters.hot_windows += hot_count
        saved_cores = saved / TICKS_PER_HOUR
        info = {
            "saved_cores": saved_cores,
            "hot_node_windows": hot_count,
            "placed_vms": placed_now,
            "rejected_vms": rejected_now,
        }
        return saved_cores - c.risk_weight * hot_count, np.zeros(b, bool), np.zeros(b, bool), info

    # ------------------------------------------------------------------ observation and metrics
    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        s, c = self.state, self.config
        sold = s.pool.used[:, 0, :]
        safe = np.maximum(sold, 1e-9)
        hour = 2.0 * np.pi * ((self.stats.length % 24) / 24.0)
        b, n = self.num_envs, c.num_nodes
        columns = np.stack(
            [
                sold / c.node_cores,
                s.traits.used[:, TRAIT_INTERACTIVE, :] / safe,
                s.traits.used[:, TRAIT_TOLERANT, :] / safe,
                s.traits.used[:, TRAIT_SENSITIVE, :] / safe,
                self.params.ratios[s.level],
                np.broadcast_to(np.sin(hour)[:, None], (b, n)),
                np.broadcast_to(np.cos(hour)[:, None], (b, n)),
            ],
            axis=2,
        )
        obs = np.concatenate([s.hist_mean, s.hist_max, columns.astype(np.float32)], axis=2)
        # Rounding of sums of cores can leave a share a hair above 1; the space is closed.
        return np.clip(obs, self.params.obs_low, self.params.obs_high)

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        counters, c = self.state.counters, self.config
        hours = self.stats.length[env_ids].astype(np.float64)
        ticks = hours * TICKS_PER_HOUR
        node_hours = hours * c.num_nodes
        return {
            "saved_cores": counters.saved_core_ticks[env_ids] / ticks,
            "hot_node_windows": counters.hot_windows[env_ids].astype(np.float64),
            "hot_rate_pct": 100.0 * counters.hot_windows[env_ids] / node_hours,
            "accepted_core_hours": counters.booked_core_ticks[env_ids] / TICKS_PER_HOUR,
            "rejected_core_hours": counters.rejected_core_ticks[env_ids] / TICKS_PER_HOUR,
            "rejected_vms": counters.rejected_vms[env_ids].astype(np.float64),
            "worst_overload_pct": 100.0 * counters.worst_overload[env_ids],
            "mean_ratio": counters.ratio_sum[env_ids] / node_hours,
            "utilisation_pct": 100.0 * counters.demand_core_ticks[env_ids] / (ticks * c.num_nodes * c.node_cores),
        }


def text_frame(core: OversubscriptionCore, i: int) -> str:
    """Sub-env ``i`` as text: each node's ratio, sold vCPUs against its cores, last hour's mean and peak."""
    s, c = core.state, core.config
    lines = [
        f"hour {core.stats.length[i]}/{c.hours}, {s.counters.hot_windows[i]} hot node-hour(s), "
        f"{s.counters.placed_vms[i]} VMs placed, {s.counters.rejected_vms[i]} rejected"
    ]
    for n in range(c.num_nodes):
        ratio = c.ratios[s.level[i, n]]
        lines.append(
            f"  node {n:2d}: ratio {ratio:.2f}, {s.pool.used[i, 0, n]:5.0f} vCPUs sold on "
            f"{s.pool.capacity[i, 0, n]:.0f} cores, last hour mean {100 * s.hist_mean[i, n, -1]:5.1f}% "
            f"peak {100 * s.hist_max[i, n, -1]:5.1f}%"
        )
    return "\n".join(lines)


class OversubscriptionVectorEnv(CloudGymVectorEnv):
    core_cls = OversubscriptionCore


class OversubscriptionEnv(CloudGymEnv):
    core_cls = OversubscriptionCore
