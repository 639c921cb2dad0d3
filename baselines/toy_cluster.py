"""Baselines of ToyCluster-v0: the optimal cheapest-node policy and two packing heuristics."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudgym.policy import BatchedPolicy, register_policy
from cloudgym.reports import EnvReport, Headline, register_report

ENV_ID = "ToyCluster-v0"


def _node_views(obs: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(free share, scaled price) per node from the observation."""
    return obs[:, :num_nodes], obs[:, num_nodes : 2 * num_nodes]


class CheapestFit(BatchedPolicy):
    """The cheapest node where the job fits: optimal when one node holds everything (see the env)."""

    name = "cheapest_fit"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        _, price = _node_views(obs, self.config.num_nodes)
        allowed = np.ones_like(price, bool) if action_mask is None else action_mask
        return np.argmin(np.where(allowed, price, np.inf), axis=1)


class FirstFit(BatchedPolicy):
    """The lowest-numbered node where the job fits (price-blind)."""

    name = "first_fit"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        if action_mask is None:
            return np.zeros(self.num_envs, np.int64)
        return np.argmax(action_mask, axis=1)


class LeastLoaded(BatchedPolicy):
    """The node with the most free cores (spreads load: the worst for energy here)."""

    name = "least_loaded"

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        free, _ = _node_views(obs, self.config.num_nodes)
        allowed = np.ones_like(free, bool) if action_mask is None else action_mask
        return np.argmax(np.where(allowed, free, -np.inf), axis=1)


register_policy(ENV_ID, "cheapest_fit", CheapestFit, description="cheapest node that fits (the known optimum)")
register_policy(ENV_ID, "first_fit", FirstFit, description="lowest-numbered node that fits")
register_policy(ENV_ID, "least_loaded", LeastLoaded, description="node with the most free cores")

register_report(
    EnvReport(
        env_id=ENV_ID,
        episodes=16,
        headline=Headline(column="cost_usd", label="cost", unit="$", higher_is_better=False),
        bound="cheapest_fit",  # the known optimum of this test env: no room above the best heuristic
        tradeoff=("active_node_hours", "cost_usd"),
    )
)
