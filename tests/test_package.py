"""The package: one `cloudgym` namespace, every id registered, the env library on numpy, gymnasium and numba alone."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import gymnasium as gym

import cloudgym


def test_every_env_id_has_both_entry_points() -> None:
    assert cloudgym.ALL_ENV_IDS == cloudgym.ENV_IDS + cloudgym.TEST_ENV_IDS
    for env_id in cloudgym.ALL_ENV_IDS:
        spec = gym.spec(env_id)
        assert str(spec.entry_point).startswith("cloudgym.envs.")
        assert str(spec.vector_entry_point).startswith("cloudgym.envs.")
        made = gym.make(f"cloudgym:{env_id}")
        assert made.spec is not None
        assert made.spec.id == env_id


def test_only_the_cloudgym_top_level_name_is_installed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    top_level = importlib.metadata.distribution("cloudgym").read_text("top_level.txt") or ""
    assert top_level.split() == ["cloudgym"]
    for generic in ("envs", "agents", "baselines", "scripts"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0, f"a generic top-level module {generic!r} is importable"
        assert "ModuleNotFoundError" in result.stderr


def test_env_library_needs_only_numpy_gymnasium_and_numba(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every env is made, reset and stepped with torch, SB3, pandas, matplotlib, scipy, yaml and ray blocked."""
    script = textwrap.dedent(
        """
        import sys
        BLOCKED = ("torch", "stable_baselines3", "sb3_contrib", "pandas", "matplotlib", "scipy", "yaml", "ray")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None
        sys.meta_path.insert(0, Block())
        import gymnasium as gym, numpy as np
        import cloudgym
        from cloudgym.policy import make_policy
        for env_id in cloudgym.ALL_ENV_IDS:
            env = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
            obs, _ = env.reset(seed=0)
            policy = make_policy(env_id, "random", env)
            for _ in range(3):
                mask = env.action_masks() if env.core.has_action_masks else None
                obs, *_ = env.step(policy.act(obs, mask))
            single = gym.make(env_id)
            single.reset(seed=0)
            single.step(single.action_space.sample())
        print("ok", len(cloudgym.ALL_ENV_IDS))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
