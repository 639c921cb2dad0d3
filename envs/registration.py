"""Every cloudgym env id, with its single-env and native vector entry points.

``import cloudgym`` runs :func:`register_envs`, so ``gym.make("LLMRouter-v0")``,
``gym.make("cloudgym:LLMRouter-v0")`` and ``gym.make_vec(id, num_envs=n,
vectorization_mode="vector_entry_point")`` all work. Entry points are strings:
registering imports no env module.
"""

from __future__ import annotations

import gymnasium as gym

# id -> module under cloudgym.envs holding the `<Name>Env` and `<Name>VectorEnv` shells
ENV_MODULES: dict[str, tuple[str, str]] = {
    "FaaSKeepAlive-v0": ("faas_keepalive", "FaaSKeepAlive"),
    "LLMRouter-v0": ("llm_router", "LLMRouter"),
    "GPUPowerCap-v0": ("gpu_powercap", "GPUPowerCap"),
    "Oversubscription-v0": ("oversubscription", "Oversubscription"),
    "DCLifecycle-v0": ("dc_lifecycle", "DCLifecycle"),
}
"""The problem envs (shown by compare.py and bench.py by default)."""

TEST_ENV_MODULES: dict[str, tuple[str, str]] = {
    "ToyCluster-v0": ("toy_cluster", "ToyCluster"),
}
"""Small envs with a known optimum, for tests and as the template for a new env."""


def register_envs() -> None:
    for env_id, (module, name) in {**ENV_MODULES, **TEST_ENV_MODULES}.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"cloudgym.envs.{module}:{name}Env",
            vector_entry_point=f"cloudgym.envs.{module}:{name}VectorEnv",
            disable_env_checker=False,
        )
