"""A capping controller for GPUPowerCap-v0 whose thresholds and cap levels are learned from the env's reward.

POLCA's controller has hand-set knobs: two power thresholds (80%, 89%), a
hysteresis (5%), the cap of low-priority (LP) servers at each threshold
(1275, 1110 MHz) and of high-priority (HP) servers (1305 MHz). The agent
keeps that shape (a stage per sub-env, escalation on thresholds, HP capped
only once the LP cap has had the out-of-band delay to act, relaxation with
hysteresis) and adds one input POLCA lacks: the rise of the row's power over
the last 40 s, one capping delay, weighted by ``trend`` (the risk it acts on
is ``p + trend x max(p - p_40s_ago, 0)``). The eight parameters are trained
with the cross-entropy method (CEM, Rubinstein 1999) on the env's episode
return, less a cost for episodes whose peak power comes within
``margin_pct`` of the budget (brakes are rare: a finite training set
under-samples the rises behind them): every iteration samples a population of parameter vectors from a
diagonal Gaussian, runs each on the same training episodes (common random
numbers; all candidates x episodes step together as one batched vector env),
and refits the Gaussian to the elite. Every candidate plays the same fixed
set of training episodes, so scores compare across iterations and the best
candidate ever scored ships (POLCA's own knobs are the first one). Held-out
seeds are never used for training. ``python scripts/train_gpu_powercap_cem.py
--ship`` trains and ships it.

Hyperparameters: section ``CEM`` of ``agents/hyperparams/GPUPowerCap-v0.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.baselines.gpu_powercap import TwoThresholdCapper
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import make_vector_env

ENV_ID = "GPUPowerCap-v0"
LOADER = "cloudgym.agents.gpu_powercap_cem:load_policy"
HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams" / f"{ENV_ID}.yaml"

PARAMS: tuple[tuple[str, float, float], ...] = (
    ("t1", 0.70, 1.00),
    ("t2", 0.75, 1.05),
    ("hysteresis", 0.0, 0.15),
    ("lp_mild", 0.0, 7.0),
    ("lp_deep", 0.0, 7.0),
    ("hp", 0.0, 7.0),
    ("trend", 0.0, 2.0),
    ("relax_trend", 0.0, 1.0),
)
"""(name, low, high) of each parameter: thresholds as shares of the budget, cap levels as indices into
freq_levels_mhz (rounded), the weight of the 40-s rise in the escalation risk and in the relaxation test."""
POLCA_PARAMS = {
    "t1": 0.80, "t2": 0.89, "hysteresis": 0.05, "lp_mild": 3.0, "lp_deep": 5.0, "hp": 2.0, "trend": 0.0,
    "relax_trend": 0.0,
}  # fmt: skip
"""POLCA itself in this family (levels of the default freq_levels_mhz: 1275, 1110, 1305 MHz): CEM's start."""

OBS_POWER, OBS_POWER_40S = 0, 4
"""Observation indices: row power over the last second, and 40 s ago (see the env's table)."""


class CemCapController(TwoThresholdCapper):
    """POLCA's two-threshold controller with learned knobs; parameters may differ per sub-env (for training)."""

    name = "cem"

    def __init__(self, env: CloudGymVectorEnv, params: Mapping[str, Any]) -> None:
        super().__init__(env)
        if self.config.per_server_caps:
            raise ValueError("the CEM controller caps per priority class (per_server_caps=False)")
        missing = {p for p, _, _ in PARAMS} - set(params)
        if missing:
            raise ValueError(f"controller parameters missing: {sorted(missing)}")
        b = self.num_envs
        top = len(self.config.freq_levels_mhz) - 1
        p = {k: np.broadcast_to(np.asarray(params[k], np.float64), (b,)).copy() for k, _, _ in PARAMS}
        self.t1, self.t2, self.hysteresis = p["t1"], np.maximum(p["t2"], p["t1"]), p["hysteresis"]
        self.lp_mild = np.clip(np.rint(p["lp_mild"]), 0, top).astype(np.int64)
        self.lp_deep = np.maximum(np.clip(np.rint(p["lp_deep"]), 0, top).astype(np.int64), self.lp_mild)
        self.hp_cap = np.clip(np.rint(p["hp"]), 0, top).astype(np.int64)
        self.trend, self.relax_trend = p["trend"], p["relax_trend"]

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        o = np.asarray(obs, np.float64)
        p = o[:, OBS_POWER]
        rise = np.maximum(p - o[:, OBS_POWER_40S], 0.0)
        hp, lp = self.caps(p + self.trend * rise, p + self.relax_trend * rise)
        return np.stack([hp, lp], axis=1)


def load_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> CemCapController:
    """Checkpoint loader: the learned parameters live in checkpoint.yaml (``params``)."""
    params = info.extra.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{info.path}: checkpoint.yaml has no 'params' mapping")
    return CemCapController(env, params)


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True, kw_only=True)
class CemSettings:
    """The ``CEM`` section of the env's hyperparameter YAML."""

    iterations: int = 12
    """CEM iterations."""
    population: int = 16
    """Parameter vectors sampled per iteration."""
    elite: int = 4
    """Best vectors the Gaussian is refitted to."""
    episodes: int = 4
    """Training episodes every candidate plays (the same fixed set in every iteration)."""
    init_std: float = 0.25
    """Initial standard deviation, as a share of each parameter's range."""
    min_std: float = 0.02
    """Floor of the standard deviation, as a share of each parameter's range (keeps exploring)."""
    margin_pct: float = 1.0
    """Headroom below the budget the trainer asks for, % of the budget (see margin_cost)."""
    margin_cost: float = 50.0
    """Score lost per percent-point an episode's peak power passes 100 - margin_pct: brakes are rare, and a
    finite set of training episodes under-samples the rises that cause them; a candidate that skims the
    budget on them would brake on others."""
    eval_episodes: int = 8
    """Held-out episodes of the final evaluation."""
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Config fields of the training env (default: the env's defaults, the +30% row)."""

    @classmethod
    def from_yaml(cls, path: Path) -> CemSettings:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        section = dict(data.get("CEM") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"{path} [CEM]: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**section)


def episode_returns(
    candidates: np.ndarray, seeds: Sequence[int], env_kwargs: Mapping[str, Any], margin: tuple[float, float] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """(mean score, mean powerbrakes) of each candidate (K, P) over the same episodes, all in one vector env.

    The score is the episode return minus ``margin = (margin_pct, margin_cost)``'s cost of the episode's peak
    power above ``100 - margin_pct`` % of the budget (no cost with the default).
    """
    margin_pct, margin_cost = margin
    k, e = candidates.shape[0], len(seeds)
    env = make_vector_env(ENV_ID, k * e, env_kwargs)
    per_env = np.repeat(candidates, e, axis=0)  # sub-env i runs candidate i // e on seed i % e
    controller = CemCapController(env, {name: per_env[:, j] for j, (name, _, _) in enumerate(PARAMS)})
    obs, _ = env.reset(seed=[int(seeds[i % e]) for i in range(k * e)])
    controller.reset(np.arange(k * e))
    returns = np.full(k * e, np.nan)
    brakes = np.full(k * e, np.nan)
    while np.isnan(returns).any():
        obs, _, terminated, truncated, info = env.step(controller.act(obs))
        ended = (terminated | truncated) & np.isnan(returns)
        if ended.any():
            over = np.maximum(info["metrics"]["peak_power_pct"][ended] - (100.0 - margin_pct), 0.0)
            returns[ended] = info["episode_stats"]["r"][ended] - margin_cost * over
            brakes[ended] = info["metrics"]["powerbrakes"][ended]
    env.close()
    return returns.reshape(k, e).mean(axis=1), brakes.reshape(k, e).mean(axis=1)


def train(settings: CemSettings, seed: int, log: Any = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Run CEM; returns the best parameters ever scored and one history row per iteration.

    Every candidate plays the same ``episodes`` training episodes (seeds below
    the held-out range), so scores are comparable across iterations and the
    best one ever seen is kept (elitism). POLCA's knobs are the first
    candidate: the result scores at least as well as POLCA on them.
    """
    low = np.array([lo for _, lo, _ in PARAMS])
    high = np.array([hi for _, _, hi in PARAMS])
    span = high - low
    mean = np.array([POLCA_PARAMS[name] for name, _, _ in PARAMS])
    std = settings.init_std * span
    rng = np.random.default_rng(seed)
    seeds = [seed * 100_000 + j for j in range(settings.episodes)]  # training episodes, never held-out ones
    best, best_score, best_brakes = mean.copy(), -np.inf, np.nan
    history: list[dict[str, float]] = []
    for it in range(settings.iterations):
        candidates = np.clip(mean + std * rng.standard_normal((settings.population, len(PARAMS))), low, high)
        candidates[0] = mean  # the current mean is always scored
        scores, brakes = episode_returns(
            candidates, seeds, settings.env_kwargs, (settings.margin_pct, settings.margin_cost)
        )
        top = int(np.argmax(scores))
        if scores[top] > best_score:
            best, best_score, best_brakes = candidates[top].copy(), float(scores[top]), float(brakes[top])
        elite = candidates[np.argsort(-scores)[: settings.elite]]
        mean = elite.mean(axis=0)
        std = np.maximum(elite.std(axis=0), settings.min_std * span)
        row = {
            "iteration": float(it + 1),
            "best_return": best_score,
            "best_brakes": best_brakes,
            "mean_candidate_return": float(scores.mean()),
            "current_mean_return": float(scores[0]),
            "current_mean_brakes": float(brakes[0]),
            **{f"param/{name}": float(v) for (name, _, _), v in zip(PARAMS, best)},
        }
        history.append(row)
        if log is not None:
            log(row)
    return {name: float(v) for (name, _, _), v in zip(PARAMS, best)}, history
