"""The shared, problem-agnostic batched cluster model (see batch.py for the contract)."""

from cloudgym.envs.core.batch import BatchedCore, MetricSpec, make_config
from cloudgym.envs.core.shells import CloudGymEnv, CloudGymVectorEnv

__all__ = ["BatchedCore", "CloudGymEnv", "CloudGymVectorEnv", "MetricSpec", "make_config"]
