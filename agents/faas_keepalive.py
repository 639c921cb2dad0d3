"""A learned keep-alive agent for FaaSKeepAlive-v0: cost-sensitive learning of the keep-or-unload decision.

Trained and shipped by ``python scripts/train_faas_keepalive_agent.py --name hazard_mlp --ship``.

Why this agent: the workload does not react to the policy, so the windows
chosen for a minute change only that minute's reward (a contextual bandit),
and both actions' rewards are known once the minute is over: keeping the
image loaded costs memory_weight x GB if the app is not invoked, unloading
it costs cold_start_weight if it is (a full-information bandit). The agent
is a small MLP on the observation trained, on minutes the env generates from
training seeds (never the held-out ones), by logistic loss with exactly
those costs as sample weights: invoked minutes weigh cold_start_weight,
idle ones memory_weight x GB. The minimiser of that weighted loss is
positive exactly where keeping the image is the cheaper side, so the agent
keeps it loaded iff its output is >= 0: direct minimisation of the
episode's cost on training data, which for a bandit is what policy
optimisation reduces to. The model is trained at one pair of weights (the
checkpoint's env_kwargs) and refuses an env with others.

The windows encode the minute's decision: load -> (pre-warm 0, keep-alive
forever); unload -> (pre-warm = age + 1, keep-alive 0). An image that never
ran cannot be loaded in this env, so nothing is asked for it.

Hyperparameters: section ``HazardMLP`` of ``agents/hyperparams/FaaSKeepAlive-v0.yaml``.
The checkpoint (``model.pt``, ~20 KB) ships in
``agents/checkpoints/FaaSKeepAlive-v0/<name>/`` with the command that made it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.faas_keepalive import (
    MINUTE_CODES,
    OBS,
    OBS_FIELDS,
    WINDOW_SCALE_MIN,
    FaaSKeepAliveVectorEnv,
    batched_action,
    decode_minutes,
)
from cloudgym.envs.workloads.faas import MAX_MEMORY_MB
from cloudgym.policy import BatchedPolicy

ENV_ID = "FaaSKeepAlive-v0"
LOADER = "cloudgym.agents.faas_keepalive:load_hazard_policy"
HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams" / f"{ENV_ID}.yaml"


class HazardModel(nn.Module):
    """Score of keeping the image loaded in the minute being decided (>= 0: keep), from the observation."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class HazardPolicy(BatchedPolicy):
    """Keep the image loaded this minute iff the model's score is >= 0 (see the module docstring)."""

    name = "hazard_mlp"

    def __init__(self, env: CloudGymVectorEnv, model: HazardModel, weights: tuple[float, float] | None = None) -> None:
        super().__init__(env)
        env_weights = (float(env.config.cold_start_weight), float(env.config.memory_weight))
        if weights is not None and not np.allclose(weights, env_weights):
            raise ValueError(
                f"this agent was trained at (cold_start_weight, memory_weight) = {weights}; the env has "
                f"{env_weights}: make the env with the checkpoint's env_kwargs (compare.py does)"
            )
        self.model = model.eval()

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """Score per app of (..., F) observations (the model reads the first len(OBS_FIELDS) features)."""
        flat = obs.reshape(-1, obs.shape[-1])[:, : len(OBS_FIELDS)]
        with torch.no_grad():
            return self.model(torch.as_tensor(np.ascontiguousarray(flat), dtype=torch.float32)).numpy()

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        load = self.scores(obs) >= 0.0
        flat = obs.reshape(-1, obs.shape[-1])
        age = np.minimum(decode_minutes(flat[:, OBS["age"]]).astype(np.int64), WINDOW_SCALE_MIN - 1)
        out = np.empty((flat.shape[0], 2), np.float32)
        out[:, 0] = np.where(load, np.float32(0.0), MINUTE_CODES[age + 1])
        out[:, 1] = np.where(load, np.float32(1.0), np.float32(0.0))
        return batched_action(self.env.core, out)


def load_hazard_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> HazardPolicy:
    """Checkpoint loader (``loader:`` in checkpoint.yaml)."""
    weights = info.path / "model.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: checkpoint weights missing")
    hidden = tuple(int(h) for h in info.hyperparams["hidden"])
    model = HazardModel(len(OBS_FIELDS), hidden)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    kwargs = info.env_kwargs
    return HazardPolicy(env, model, (float(kwargs["cold_start_weight"]), float(kwargs["memory_weight"])))


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True, kw_only=True)
class HazardHyperparams:
    """Section ``HazardMLP`` of the env's hyperparameter YAML."""

    apps_per_batch: int = 256
    """Training apps simulated together (one sub-env each)."""
    batches: int = 6
    """Batches of apps (each on its own training seed)."""
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Env config fields (the workload the model learns)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the MLP."""
    learning_rate: float = 1e-3
    epochs: int = 3
    minibatch: int = 4096
    eval_episodes: int = 64


def load_section(path: Path = HYPERPARAMS) -> HazardHyperparams:
    data = yaml.safe_load(path.read_text()) or {}
    if "HazardMLP" not in data:
        raise KeyError(f"{path}: no section HazardMLP")
    section = dict(data["HazardMLP"] or {})
    known = {f.name for f in dataclasses.fields(HazardHyperparams)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{path} [HazardMLP]: unknown keys {unknown}; known: {sorted(known)}")
    if "hidden" in section:
        section["hidden"] = tuple(section["hidden"])
    return HazardHyperparams(**section)


def collect(hp: HazardHyperparams, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations, whether the app was invoked in the minute that followed, and the cost of the wrong choice.

    The policy that drives the env does not matter (the workload ignores
    it); minutes in which the app was already executing are dropped (the
    image is loaded whatever the decision), as are apps that never ran
    (nothing to decide). The cost of a wrong choice is cold_start_weight for
    an invoked minute and memory_weight x GB for an idle one.
    """
    xs, ys, ws = [], [], []
    seeds = np.random.SeedSequence(seed).generate_state(hp.batches)
    for batch_seed in seeds:
        env = FaaSKeepAliveVectorEnv(num_envs=hp.apps_per_batch, **hp.env_kwargs)
        config = env.config
        obs, _ = env.reset(seed=int(batch_seed))
        action = np.zeros((hp.apps_per_batch, 2), np.float32)
        for _ in range(config.episode_minutes):
            nxt, _, _, _, info = env.step(action)
            keep = (obs[:, OBS["busy"]] == 0) & (obs[:, OBS["has_run"]] == 1)
            invoked = info["invocations"][keep] > 0
            memory_gb = obs[keep, OBS["memory"]].astype(np.float64) * MAX_MEMORY_MB / 1024.0
            xs.append(np.ascontiguousarray(obs[keep]))
            ys.append(invoked.astype(np.float32))
            ws.append(np.where(invoked, config.cold_start_weight, config.memory_weight * memory_gb).astype(np.float32))
            obs = nxt
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def fit(
    hp: HazardHyperparams, x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int
) -> tuple[HazardModel, list[float]]:
    """Minimise the cost-weighted logistic loss (weights normalised to mean 1 for a stable step size)."""
    torch.manual_seed(seed)
    model = HazardModel(x.shape[1], hp.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=hp.learning_rate)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    wt = torch.as_tensor(w / w.mean())
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(hp.epochs):
        order = torch.randperm(xt.shape[0], generator=generator)
        total = 0.0
        for start in range(0, xt.shape[0], hp.minibatch):
            idx = order[start : start + hp.minibatch]
            loss = nn.functional.binary_cross_entropy_with_logits(model(xt[idx]), yt[idx], weight=wt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / xt.shape[0])
    return model, losses
