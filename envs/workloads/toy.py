"""A stream of small jobs for the ToyCluster-v0 test env, with a known optimum.

One job arrives per step, holding 1..``max_job_cores`` cores for
1..``max_job_duration`` steps; each node has its own energy price for the
episode. Nodes are sized so that one node can hold everything that can run at
once, which makes "always use the cheapest node" optimal (see the env's
docstring for the proof and :func:`optimal_cost_usd` for the value).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ToyJobs:
    """One episode of ToyCluster-v0."""

    cores: np.ndarray  # (T,) int64, cores job t asks for
    duration: np.ndarray  # (T,) int64, steps job t runs for
    price: np.ndarray  # (N,) float64, $/kWh of each node this episode


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyJobGenerator:
    """Uniform job sizes and durations, one uniform energy price per node."""

    steps: int
    num_nodes: int
    max_job_cores: int
    max_job_duration: int
    price_range: tuple[float, float]

    def sample(self, rng: np.random.Generator) -> ToyJobs:
        return ToyJobs(
            cores=rng.integers(1, self.max_job_cores + 1, size=self.steps),
            duration=rng.integers(1, self.max_job_duration + 1, size=self.steps),
            price=rng.uniform(self.price_range[0], self.price_range[1], size=self.num_nodes),
        )


def optimal_cost_usd(jobs: ToyJobs, *, idle_w: float, core_w: float, step_hours: float) -> float:
    """Energy cost of running every job on the cheapest node: a lower bound every policy pays at least."""
    steps = jobs.cores.size
    running_cores = np.zeros(steps)
    for t in range(steps):
        running_cores[t : t + int(jobs.duration[t])] += jobs.cores[t]
    watts = np.where(running_cores > 0, idle_w, 0.0) + core_w * running_cores
    return float(jobs.price.min() * watts.sum() * step_hours / 1000.0)
