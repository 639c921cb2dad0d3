"""ToyCluster-v0: place jobs on nodes with different energy prices (a test env with a known optimum).

## Description
A small cluster of ``num_nodes`` nodes, each paying its own energy price for
the episode. One job arrives per step (cores, duration in steps); the policy
picks the node it runs on. A node draws idle power while it hosts any job plus
power per busy core. The env exists to exercise the shared core and every
shell with an optimum known in closed form, and to show, in one short file,
how a cloudgym env is written (README: "Adding an environment").

Known optimum: nodes are sized so that one node can hold everything that can
run at once (``node_cores >= max_job_cores * max_job_duration``). Then every
policy pays at least ``min price x (core energy + idle energy of one node
whenever anything runs)``, and "always the cheapest node" pays exactly that;
``cloudgym.envs.workloads.toy.optimal_cost_usd`` computes it per episode.

## Action Space
``Discrete(num_nodes)``: the node for the arriving job. A job that does not
fit on the chosen node is rejected, counted and charged ``reject_penalty_usd``;
``action_masks()`` marks the nodes where it fits (sb3-contrib's MaskablePPO
reads it).

## Observation Space
``Box(0, 1, (3 * num_nodes + 2,), float32)``:

| index            | observation                                          |
|------------------|------------------------------------------------------|
| 0 .. N-1         | free cores of node n / node_cores                    |
| N .. 2N-1        | price of node n, scaled to [0, 1] over price_range   |
| 2N .. 3N-1       | 1 if node n hosts a job (pays idle power), else 0    |
| 3N               | cores of the arriving job / max_job_cores            |
| 3N+1             | duration of the arriving job / max_job_duration      |

## Rewards
Minus ten times the step's cost in dollars (the scale keeps PPO's value
loss small): energy of every node over the step at its price, plus the
rejection penalty. The step's breakdown is in
``info["cost/energy"]`` and ``info["cost/rejection"]`` (dollars).

## Starting State
An empty cluster; prices and the job stream are drawn by the generator.

## Episode End
Terminated after ``steps_per_episode`` jobs have arrived.

## Arguments
``gym.make("ToyCluster-v0", num_nodes=4, ...)``: any field of :class:`ToyClusterConfig`.

## Version History
* v0: initial version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from gymnasium import spaces

from cloudgym.envs.core.accounting import Ledger
from cloudgym.envs.core.batch import BatchedCore, CoreParams, Info, MetricSpec, check_config
from cloudgym.envs.core.cluster import Placements, ResourcePool
from cloudgym.envs.core.power import EnergyMeter
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv
from cloudgym.envs.fields import Range, at_least, check_fields, positive
from cloudgym.envs.workloads.toy import ToyJobGenerator, ToyJobs

REWARD_PER_USD = 10.0
"""Reward units per dollar of cost."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyClusterConfig:
    """Configuration of ToyCluster-v0."""

    num_nodes: int = 4
    """Nodes in the cluster."""
    node_cores: int = 32
    """Cores per node."""
    steps_per_episode: int = 64
    """Jobs per episode (one per step)."""
    max_job_cores: int = 4
    """Largest job, cores."""
    max_job_duration: int = 8
    """Longest job, steps."""
    step_hours: float = 1.0
    """Length of a step, hours."""
    idle_w: float = 200.0
    """Draw of a node that hosts at least one job, W."""
    core_w: float = 25.0
    """Extra draw per busy core, W."""
    price_range: tuple[float, float] = (0.10, 0.50)
    """Range of the per-node energy price, $/kWh."""
    reject_penalty_usd: float = 0.50
    """Charge for a job that did not fit where it was sent, $."""

    FIELD_RANGES: ClassVar[Mapping[str, Range]] = {
        # Upper bounds keep one sub-env's arrays (nodes, jobs of the episode, running jobs) small.
        "num_nodes": at_least(2, 4096),
        "node_cores": at_least(1, 1 << 20),
        "steps_per_episode": at_least(1, 1_000_000),
        "max_job_cores": at_least(1),
        "max_job_duration": at_least(1, 100_000, why="running jobs per node are held for this many steps"),
        "step_hours": positive(8760, why="at most a year per step"),
        # Powers and prices far beyond any real server, still finite in an episode's sums.
        "idle_w": at_least(0, 1e6),
        "core_w": at_least(0, 1e5),
        "price_range": positive(1e3),
        "reject_penalty_usd": at_least(0, 1e9),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        check_config(
            self.max_job_cores <= self.node_cores,
            self,
            f"max_job_cores must be in [1, node_cores={self.node_cores}], got {self.max_job_cores}",
        )
        low, high = self.price_range
        check_config(low < high, self, f"price_range must satisfy 0 < low < high, got {self.price_range}")

    @property
    def optimum_is_known(self) -> bool:
        """Whether one node holds everything that can run at once (the closed-form optimum applies)."""
        return self.node_cores >= self.max_job_cores * self.max_job_duration


@dataclasses.dataclass
class ToyClusterCounters:
    """Per-episode counters (the base zeroes them at every reset)."""

    rejected: np.ndarray  # (B,) int64, jobs rejected this episode
    active_node_steps: np.ndarray  # (B,) int64, node-steps with at least one job


@dataclasses.dataclass
class ToyClusterState:
    """State of B toy clusters."""

    cores: np.ndarray  # (B, T) float64, cores of each job of the episode
    duration: np.ndarray  # (B, T) int64, steps each job runs
    price: np.ndarray  # (B, N) float64, $/kWh of each node
    pool: ResourcePool  # (B, 1, N): cores per node
    jobs: Placements  # (B, M): running jobs
    energy: EnergyMeter  # (B, N): J per node this episode
    ledger: Ledger  # (B, 2): energy and rejection charges, $
    counters: ToyClusterCounters


class ToyClusterCore(BatchedCore[ToyClusterConfig, CoreParams, ToyClusterState]):
    config_cls = ToyClusterConfig
    state_size_fields = ("num_nodes", "steps_per_episode", "max_job_duration")
    has_action_masks = True
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec(
            name="cost_usd", unit="$", higher_is_better=False, description="energy cost plus rejection penalties"
        ),
        MetricSpec(name="energy_kwh", unit="kWh", higher_is_better=False, description="energy drawn by all nodes"),
        MetricSpec(name="rejected_jobs", unit="jobs", higher_is_better=False, description="jobs that did not fit"),
        MetricSpec(
            name="active_node_hours",
            unit="node-h",
            higher_is_better=False,
            description="hours nodes spent hosting jobs",
        ),
    )

    def _derive(self, config: ToyClusterConfig) -> CoreParams:
        n = config.num_nodes
        return CoreParams(
            action_space=spaces.Discrete(n),
            observation_space=spaces.Box(0.0, 1.0, (3 * n + 2,), np.float32),
            generator=ToyJobGenerator(
                steps=config.steps_per_episode,
                num_nodes=n,
                max_job_cores=config.max_job_cores,
                max_job_duration=config.max_job_duration,
                price_range=config.price_range,
            ),
        )

    def _init_state(self, params: CoreParams) -> ToyClusterState:
        c, b = self.config, self.num_envs
        n, t = c.num_nodes, c.steps_per_episode
        return ToyClusterState(
            cores=np.zeros((b, t)),
            duration=np.zeros((b, t), np.int64),
            price=np.zeros((b, n)),
            pool=ResourcePool.zeros(b, 1, n),
            jobs=Placements.empty(b, 1, c.max_job_duration),
            energy=EnergyMeter.zeros(b, n),
            ledger=Ledger.zeros(b, ("energy", "rejection")),
            counters=ToyClusterCounters(rejected=np.zeros(b, np.int64), active_node_steps=np.zeros(b, np.int64)),
        )

    def _load(self, env_ids: np.ndarray, instances: Sequence[ToyJobs]) -> None:
        s, c = self.state, self.config
        s.cores[env_ids] = [jobs.cores for jobs in instances]
        s.duration[env_ids] = [jobs.duration for jobs in instances]
        s.price[env_ids] = [jobs.price for jobs in instances]
        s.pool.reset_envs(env_ids, np.full((env_ids.size, 1, c.num_nodes), float(c.node_cores)))
        s.jobs.clear_envs(env_ids)
        s.energy.reset_envs(env_ids)
        s.ledger.reset_envs(env_ids)

    def _current_job(self) -> tuple[np.ndarray, np.ndarray]:
        t = np.minimum(self.stats.length, self.config.steps_per_episode - 1)
        rows = self._env_index
        return self.state.cores[rows, t], self.state.duration[rows, t]

    def action_masks(self) -> np.ndarray:
        cores, _ = self._current_job()
        return self.state.pool.fits(cores[:, None])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Info]:
        s, c = self.state, self.config
        s.ledger.begin_step()
        now = self.stats.length.astype(np.float64)
        cores, duration = self._current_job()
        fits = s.pool.fits(cores[:, None])[self._env_index, actions]
        placed = np.flatnonzero(fits)
        s.jobs.place(
            s.pool,
            placed,
            actions[placed],
            cores[placed, None],
            now[placed] + duration[placed],
            self.stats.length[placed],
        )
        s.counters.rejected += ~fits
        s.ledger.charge("rejection", np.where(fits, 0.0, c.reject_penalty_usd))

        used = s.pool.used[:, 0, :]
        active = used > 0
        watts = np.where(active, c.idle_w, 0.0) + c.core_w * used
        s.energy.add(watts, c.step_hours * 3600.0)
        s.ledger.charge("energy", (watts * s.price).sum(axis=1) * c.step_hours / 1000.0)
        s.counters.active_node_steps += active.sum(axis=1)
        s.jobs.expire(s.pool, now + 1.0)

        terminated = self.stats.length + 1 >= c.steps_per_episode
        reward = -REWARD_PER_USD * s.ledger.step_total()
        info = {**s.ledger.step_breakdown(), "rejected": ~fits}
        return reward, terminated, np.zeros(self.num_envs, bool), info

    def render_text(self, index: int) -> str:
        return text_frame(self, index)

    def observe(self) -> np.ndarray:
        s, c = self.state, self.config
        cores, duration = self._current_job()
        low, high = c.price_range
        return np.concatenate(
            [
                s.pool.free[:, 0, :] / c.node_cores,
                (s.price - low) / (high - low),
                (s.pool.used[:, 0, :] > 0).astype(np.float64),
                (cores / c.max_job_cores)[:, None],
                (duration / c.max_job_duration)[:, None],
            ],
            axis=1,
        ).astype(np.float32)

    def _episode_metrics(self, env_ids: np.ndarray) -> dict[str, np.ndarray]:
        s, c = self.state, self.config
        return {
            "cost_usd": s.ledger.episode_total()[env_ids],
            "energy_kwh": s.energy.kwh()[env_ids],
            "rejected_jobs": s.counters.rejected[env_ids].astype(np.float64),
            "active_node_hours": s.counters.active_node_steps[env_ids] * c.step_hours,
        }


def text_frame(core: ToyClusterCore, i: int) -> str:
    """Sub-env ``i`` as text: each node's cores and price, the arriving job."""
    s, c = core.state, core.config
    cores, duration = core._current_job()
    lines = [f"step {core.stats.length[i]}/{c.steps_per_episode}, cost so far ${s.ledger.episode_total()[i]:.3f}"]
    for n in range(c.num_nodes):
        used = s.pool.used[i, 0, n]
        bar = "#" * round(8 * used / c.node_cores)
        lines.append(f"  node {n}: {used:4.0f}/{c.node_cores} cores [{bar:<8}] ${s.price[i, n]:.3f}/kWh")
    lines.append(f"  arriving job: {cores[i]:.0f} cores for {duration[i]} steps")
    return "\n".join(lines)


class ToyClusterVectorEnv(CloudGymVectorEnv):
    core_cls = ToyClusterCore


class ToyClusterEnv(CloudGymEnv):
    core_cls = ToyClusterCore
