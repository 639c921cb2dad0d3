"""POLCA's controller shape with a safety shield, for GPUPowerCap-v0, selected on the tail of its brakes.

The base policy is POLCA's stage machine (:class:`TwoThresholdCapper`:
low-priority (LP) servers capped above ``t1``, deeper above ``t2``,
high-priority (HP) servers too if the row is still above ``t2`` once the LP
cap has had the 40-s delay to act, relaxation with ``hysteresis``) with its
knobs chosen on validation episodes, and with one input POLCA ignores: the
row's rise over the last 40 s, which adds ``trend`` x the rise to the power
the stage machine escalates on.

**The shield** (part of the shipped agent, counted in its losses) watches
for the rare fast climbs a threshold policy misses: when the row's power
plus ``shield_gain`` x its rise over the last 40 s (the rise, continued for
one more capping delay) passes ``shield_at`` of the budget, it overrides
the stage machine and commands at least ``shield_lp`` for LP and
``shield_hp`` for HP. The command lands a capping delay later, exactly
when the extrapolated climb would reach the budget.

``scripts/train_gpu_powercap_shield.py`` chooses the knobs (POLCA's own
among the candidates) on validation seeds, by the tail of the brakes first
and the throughput lost second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.baselines.gpu_powercap import TwoThresholdCapper
from cloudgym.envs.core.shells import CloudGymVectorEnv

ENV_ID = "GPUPowerCap-v0"
LOADER = "cloudgym.agents.gpu_powercap_shield:load_policy"

PARAMS: tuple[str, ...] = (
    "t1", "t2", "hysteresis", "lp_mild", "lp_deep", "hp", "trend", "shield_gain", "shield_at", "shield_lp",
    "shield_hp",
)  # fmt: skip
"""Thresholds and hysteresis (shares of the budget), cap levels (indices into freq_levels_mhz), the weight of
the 40-s rise in escalation, and the shield: the rise's weight, the power it acts at (share of the budget;
above 10 it never acts) and the LP and HP cap levels it commands at least."""
POLCA = {
    "t1": 0.80, "t2": 0.89, "hysteresis": 0.05, "lp_mild": 3, "lp_deep": 5, "hp": 2, "trend": 0.0,
    "shield_gain": 0.0, "shield_at": 100.0, "shield_lp": 0, "shield_hp": 0,
}  # fmt: skip
"""POLCA itself in this family (levels of the default freq_levels_mhz: 1275, 1110, 1305 MHz; no shield)."""
OBS_POWER, OBS_POWER_40S = 0, 4
"""Observation indices: row power over the last second, and 40 s ago (see the env's table)."""


class ShieldedCapper(TwoThresholdCapper):
    """POLCA's stage machine with chosen knobs, a 40-s trend input and a shield against fast climbs."""

    name = "shielded"

    def __init__(self, env: CloudGymVectorEnv, params: Mapping[str, Any]) -> None:
        super().__init__(env)
        if self.config.per_server_caps:
            raise ValueError("the shielded controller caps per priority class (per_server_caps=False)")
        missing = set(PARAMS) - set(params)
        if missing:
            raise ValueError(f"controller parameters missing: {sorted(missing)}")
        p = {k: float(params[k]) for k in PARAMS}
        if not all(np.isfinite(v) for v in p.values()):
            raise ValueError(f"controller parameters must be finite: {p}")
        top = len(self.config.freq_levels_mhz) - 1
        levels = {k: int(np.clip(round(p[k]), 0, top)) for k in ("lp_mild", "lp_deep", "hp", "shield_lp", "shield_hp")}
        self.t1, self.t2, self.hysteresis = p["t1"], max(p["t2"], p["t1"]), p["hysteresis"]
        self.lp_mild, self.hp_cap = levels["lp_mild"], levels["hp"]
        self.lp_deep = max(levels["lp_deep"], self.lp_mild)
        self.trend, self.shield_gain, self.shield_at = p["trend"], p["shield_gain"], p["shield_at"]
        self.shield_lp, self.shield_hp = levels["shield_lp"], levels["shield_hp"]
        self.shield_steps = np.zeros(self.num_envs, np.int64)  # steps the shield overrode (diagnostic)

    def reset(self, env_ids: np.ndarray) -> None:
        super().reset(env_ids)
        self.shield_steps[env_ids] = 0

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        o = np.asarray(obs, np.float64)
        p = o[:, OBS_POWER]
        rise = np.maximum(p - o[:, OBS_POWER_40S], 0.0)
        hp, lp = self.caps(p + self.trend * rise, p)
        climbing = p + self.shield_gain * rise > self.shield_at
        override = climbing & ((lp < self.shield_lp) | (hp < self.shield_hp))
        self.shield_steps += override
        hp = np.where(climbing, np.maximum(hp, self.shield_hp), hp)
        lp = np.where(climbing, np.maximum(lp, self.shield_lp), lp)
        return np.stack([hp, lp], axis=1).astype(np.int64)


def load_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> ShieldedCapper:
    """Checkpoint loader: the knobs live in checkpoint.yaml (``params``)."""
    params = info.extra.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{info.path}: checkpoint.yaml has no 'params' mapping")
    return ShieldedCapper(env, params)
