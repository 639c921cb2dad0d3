"""Small configs of the slower envs, shared by their own tests and the contract tests."""

from __future__ import annotations

GPU_SMALL = {
    "base_servers": 4,
    "oversubscription": 0.5,
    "steps_per_episode": 25,
    "warmup_s": 10,
    "cap_delay_s": 5,
    "track_reference": True,
}
"""Six servers, 25-s episodes."""
DC_SMALL = {
    "horizon_quarters": 24,
    "shock_window": (2, 20),
    "demand_growth_noise": 0.05,
    "shock_probability": (0.5, 0.5, 0.5, 0.5),
    "building_model": "sunk",
    "initial_building_mw": 0.05,
    "build_lump_mw": 0.05,
}
"""A short, noisy, shocked instance with a sunk building: exercises every code path quickly."""
