"""cloudgym: Gymnasium environments for cloud and datacenter resource management.

``import cloudgym`` registers every env id with Gymnasium.
"""

from cloudgym.envs.registration import ENV_MODULES, TEST_ENV_MODULES, register_envs

__version__ = "0.1.0"

register_envs()

ENV_IDS: tuple[str, ...] = tuple(ENV_MODULES)
"""The problem envs, in the order the README lists them."""
TEST_ENV_IDS: tuple[str, ...] = tuple(TEST_ENV_MODULES)
"""Envs with a known optimum, for tests and as a template."""
ALL_ENV_IDS: tuple[str, ...] = ENV_IDS + TEST_ENV_IDS

__all__ = ["ALL_ENV_IDS", "ENV_IDS", "TEST_ENV_IDS", "__version__"]
