"""A forecasting capping controller for GPUPowerCap-v0, with a safety shield, selected on the tail of the brakes.

POLCA reacts to the row's power now, yet a cap it commands lands 40 s later.
This controller plans for the second its command lands. A linear model,
fitted on logged episodes, forecasts the row's power 40 s ahead from what
POLCA ignores: the power's recent history (its trend), the GPU activity of
each priority class (smoothed and last second), the caps in effect and those
already in flight, the requests in flight and arriving per class; and it
adds the effect of the caps that would be in effect then, one coefficient
per (class, cap level) times that class's demand. Every step the controller
walks a ladder of (HP, LP) cap pairs from uncapped to deepest (LP first,
down to ``lp_limit``; then HP; then the rest of LP) and commands the first
rung whose forecast plus ``margin`` stays within the budget.

**The shield** (optional, part of the shipped agent and counted in its
losses): the forecast is a mean; a sharp rise could beat it. The shield
takes the row's power in the last second plus ``shield_rise`` (a worst-case
rise of the row's power within one capping delay) and, with the model's cap
effects, the change from the caps in effect now to the rung chosen; if that
would pass the budget it moves down the ladder until it would not.
``shield_rise = 0`` turns it off.

Training (``scripts/train_gpu_powercap_forecast.py``): episodes at +20..+40%
oversubscription with randomised load shapes, played by POLCA, by random
held caps and by earlier fits of the controller, give (features, caps
40 s later, power 40 s later) samples; least squares fits the model; the
margin, ladder and shield are then chosen on validation episodes by the
tail of the brakes (no brake and a peak-power CVaR constraint), the least
throughput lost among those that pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.policy import BatchedPolicy

ENV_ID = "GPUPowerCap-v0"
LOADER = "cloudgym.agents.gpu_powercap_forecast:load_policy"

OBS_POWER = 0
"""Observation index of the row power over the last second / budget."""
OBS_LAGS = slice(1, 5)
"""Observation indices of the row power 5, 10, 20 and 40 s ago."""
OBS_CAPS = slice(6, 16)
"""Observation indices of the caps in effect and those landing in 10..40 s (f / f_max, HP and LP pairs)."""
OBS_BRAKE = 16
"""Observation index of the 'powerbrake holds' flag."""
OBS_LOAD = slice(19, 23)
"""Observation indices of the requests in flight and the arrivals per class."""
OBS_ACTIVITY = slice(23, 25)
"""Observation indices of the mean GPU activity of HP and LP servers in the last second."""
FEATURES = (
    "one",
    "power",
    "power_5s",
    "power_10s",
    "power_20s",
    "power_40s",
    "demand_hp_smooth",
    "demand_lp_smooth",
    "demand_hp",
    "demand_lp",
    *(f"cap_{c}_{when}" for when in ("now", "10s", "20s", "30s", "40s") for c in ("hp", "lp")),
    "in_flight_hp",
    "in_flight_lp",
    "arrivals_hp",
    "arrivals_lp",
)
"""What the forecast reads (demand: a class's active power at f_max were its activity unchanged, share of
the budget; smooth: exponential average with time constant SMOOTH_S)."""
SMOOTH_S = 20.0
"""Time constant of the smoothed demand, s (about the horizon over which the load's swings persist)."""
TUNED: tuple[str, ...] = ("margin", "lp_limit", "shield_rise")
"""The scalar parameters beside the fitted model: forecast margin (share of the budget), the deepest LP cap
before HP is capped (index into freq_levels_mhz), the shield's worst-case rise (share of the budget; 0: off)."""


def ladder(levels: int, lp_limit: int) -> np.ndarray:
    """(R, 2) cap pairs (HP, LP level indices) from uncapped to deepest: LP down to ``lp_limit``, then HP down
    to the last level, then LP down to the last level (each rung caps one class one level deeper)."""
    top = levels - 1
    lp_limit = int(np.clip(lp_limit, 0, top))
    rungs = [(0, lp) for lp in range(lp_limit + 1)]
    rungs += [(hp, lp_limit) for hp in range(1, top + 1)]
    rungs += [(top, lp) for lp in range(lp_limit + 1, top + 1)]
    return np.asarray(rungs, np.int64)


class ForecastFeatures:
    """The forecast's inputs for a batch, with the smoothed demand it keeps per sub-env."""

    def __init__(self, config: Any, num_envs: int) -> None:
        server = config.server_power
        self.share = np.array(config.servers_per_class, np.float64) * (server.peak_w - server.idle_w)
        self.share /= config.budget_w  # (2,) a class's active power at activity 1 and f_max / budget
        self.alpha = 1.0 - np.exp(-1.0 / SMOOTH_S)
        self.smooth = np.zeros((num_envs, 2))
        self.fresh = np.ones(num_envs, bool)

    def reset(self, env_ids: np.ndarray) -> None:
        self.fresh[env_ids] = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(B, F) features of this step's observation (updates the smoothed demand)."""
        demand = obs[:, OBS_ACTIVITY] * self.share
        fresh = self.fresh
        self.smooth[fresh] = demand[fresh]
        fresh[:] = False
        self.smooth += self.alpha * (demand - self.smooth)
        b = obs.shape[0]
        return np.concatenate(
            [
                np.ones((b, 1)),
                obs[:, [OBS_POWER]],
                obs[:, OBS_LAGS],
                self.smooth,
                demand,
                obs[:, OBS_CAPS],
                obs[:, OBS_LOAD],
            ],
            axis=1,
        )


class ForecastCapController(BatchedPolicy):
    """Caps each priority class for the second its command lands, from a forecast of the row's power there."""

    name = "forecast"

    def __init__(self, env: CloudGymVectorEnv, params: Mapping[str, Any]) -> None:
        super().__init__(env)
        c = self.config
        if c.per_server_caps:
            raise ValueError("the forecast controller caps per priority class (per_server_caps=False)")
        missing = {"weights", "cap_gain", *TUNED} - set(params)
        if missing:
            raise ValueError(f"controller parameters missing: {sorted(missing)}")
        levels = len(c.freq_levels_mhz)
        self.weights = np.asarray(params["weights"], np.float64)
        gain = np.asarray(params["cap_gain"], np.float64)
        if self.weights.shape != (len(FEATURES),):
            raise ValueError(
                f"weights must have {len(FEATURES)} entries ({', '.join(FEATURES)}), got {self.weights.shape}"
            )
        if gain.shape != (2, levels):
            raise ValueError(f"cap_gain must be (2, {levels}) (class x freq_levels_mhz), got {gain.shape}")
        # A deeper cap never forecasts more power than a shallower one (the fit is noisy for rarely used levels).
        self.gain = np.minimum.accumulate(gain, axis=1)
        self.margin = float(params["margin"])
        self.shield_rise = float(params["shield_rise"])
        if not (np.isfinite(self.margin) and np.isfinite(self.shield_rise) and self.shield_rise >= 0):
            raise ValueError(f"margin must be finite and shield_rise >= 0, got {self.margin}, {self.shield_rise}")
        self.rungs = ladder(levels, round(float(params["lp_limit"])))
        self.features = ForecastFeatures(c, self.num_envs)
        self.shield_overrides = np.zeros(self.num_envs, np.int64)  # steps the shield moved the command deeper

    def reset(self, env_ids: np.ndarray) -> None:
        self.features.reset(env_ids)
        self.shield_overrides[env_ids] = 0

    def cap_effect(self, smooth: np.ndarray, hp: np.ndarray, lp: np.ndarray) -> np.ndarray:
        """Forecast change of row power (share of budget) from caps (HP level, LP level) at class demands (B, 2)."""
        return self.gain[0, hp] * smooth[:, :1] + self.gain[1, lp] * smooth[:, 1:]

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        o = np.asarray(obs, np.float64)
        x = self.features(o)
        smooth = self.features.smooth
        base = x @ self.weights  # (B,) forecast without caps
        effect = self.cap_effect(smooth, self.rungs[None, :, 0], self.rungs[None, :, 1])  # (B, R)
        fits = base[:, None] + effect + self.margin <= 1.0
        last = len(self.rungs) - 1
        rung = np.where(fits.any(axis=1), fits.argmax(axis=1), last)
        if self.shield_rise > 0:
            # From the power now, a worst-case rise, and what the caps change between now and the landing rung.
            level_now = self._levels_now(o)
            now = self.cap_effect(smooth, level_now[:, 0:1], level_now[:, 1:2])
            safe = o[:, [OBS_POWER]] + self.shield_rise + effect - now <= 1.0
            worst = np.where(safe.any(axis=1), safe.argmax(axis=1), last)
            self.shield_overrides += worst > rung
            rung = np.maximum(rung, worst)
        # While the brake holds the activity is that of 288 MHz clocks: stay at the deepest rung.
        rung = np.where(o[:, OBS_BRAKE] > 0, last, rung)
        return self.rungs[rung]

    def _levels_now(self, obs: np.ndarray) -> np.ndarray:
        """(B, 2) level indices of the caps in effect (the observation gives them as f / f_max)."""
        fractions = np.asarray(self.config.freq_levels_mhz) / self.config.freq_levels_mhz[0]
        return np.abs(obs[:, 6:8, None] - fractions[None, None, :]).argmin(axis=2)


def fit_forecast(
    features: np.ndarray, smooth: np.ndarray, caps: np.ndarray, power: np.ndarray, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of the row power 40 s ahead (N,) on the features (N, F) and the caps then (N, 2 levels),
    each cap level's effect scaled by its class's smoothed demand (N, 2); returns (weights (F,), cap_gain (2, L))."""
    n = features.shape[0]
    design = [features]
    for k in range(2):
        onehot = np.zeros((n, levels - 1))
        capped = caps[:, k] > 0
        onehot[np.flatnonzero(capped), caps[capped, k] - 1] = 1.0
        design.append(onehot * smooth[:, k : k + 1])
    coef, *_ = np.linalg.lstsq(np.concatenate(design, axis=1), power, rcond=None)
    f = features.shape[1]
    gain = np.zeros((2, levels))
    gain[0, 1:] = coef[f : f + levels - 1]
    gain[1, 1:] = coef[f + levels - 1 :]
    return coef[:f], gain


def forecast(
    weights: np.ndarray, gain: np.ndarray, features: np.ndarray, smooth: np.ndarray, caps: np.ndarray
) -> np.ndarray:
    """(N,) the model's row power 40 s ahead for features (N, F), smoothed demand (N, 2) and caps then (N, 2)."""
    return features @ weights + (gain[np.array([[0, 1]]), caps] * smooth).sum(axis=1)


def controller_params(weights: np.ndarray, gain: np.ndarray, tuned: Mapping[str, float]) -> dict[str, Any]:
    """The parameters a checkpoint stores (plain lists and floats, YAML-friendly)."""
    return {
        "weights": [float(v) for v in weights],
        "cap_gain": [[float(v) for v in row] for row in gain],
        **{k: float(tuned[k]) for k in TUNED},
    }


def load_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> ForecastCapController:
    """Checkpoint loader: the fitted model and the tuned parameters live in checkpoint.yaml (``params``)."""
    params = info.extra.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{info.path}: checkpoint.yaml has no 'params' mapping")
    return ForecastCapController(env, params)


def random_training_scenario(rng: np.random.Generator) -> dict[str, Any]:
    """A random training scenario: +20..+40% servers and a load shape around the env's default (both trainers)."""
    low = float(rng.uniform(0.55, 0.7))
    return {
        "oversubscription": float(np.round(rng.uniform(0.2, 0.4), 3)),
        "load_level": (low, float(low + rng.uniform(0.1, 0.25))),
        "load_volatility": float(rng.uniform(0.08, 0.16)),
        "load_ramp_s": float(rng.uniform(100.0, 220.0)),
        "load_time_constant_s": float(rng.uniform(40.0, 90.0)),
    }
