"""cloudgym.envs: the environments, their shared batched core and their workloads."""

from cloudgym.envs.registration import ENV_MODULES, TEST_ENV_MODULES, register_envs

__all__ = ["ENV_MODULES", "TEST_ENV_MODULES", "register_envs"]
