"""Imitation learning for Oversubscription-v0 in plain torch: demonstrations, node features, BC and DAgger.

Every imitation agent here decides each node's ratio from that node's row of
the observation (one shared network over the nodes, as an operator would
judge one node's trajectory). The expert is the robust hindsight oracle
(:func:`cloudgym.baselines.oversubscription.robust_hindsight_levels`: the
largest ratio that keeps the node cool over the next day whatever VMs
arrive, knowing how its present VMs will run), read only to label states,
never shown to the agent.

* :func:`collect` rolls out the expert (behaviour cloning's data) or a
  learner labelled by the expert (DAgger's), on training seeds;
* :func:`node_features` turns observation rows into a 24-hour trajectory
  (mean and peak demand per hour) and a few static numbers;
* :class:`MLPClassifier`, :func:`train_bc`, :func:`train_dagger`;
* :class:`NodePolicy` acts for a batch of clusters; :func:`load_imitation_policy`
  is the checkpoint loader named in ``checkpoint.yaml``.

The ``imitation`` package is not used: it cannot be installed beside
gymnasium 1.x.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.baselines.oversubscription import robust_hindsight_levels
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.oversubscription import COL_SOLD, HISTORY_HOURS, NODE_FEATURES
from cloudgym.evaluation import evaluate, held_out_seeds, make_vector_env
from cloudgym.policy import BatchedPolicy

ENV_ID = "Oversubscription-v0"
STATIC_FEATURES = 11
"""Static numbers per node: the 7 observation columns after the history, then peak, recent peak, headroom, peak/sold."""

# ----------------------------------------------------------------------------- data


def node_features(obs: np.ndarray, hot_threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(trajectory (M, 24, 2), static (M, 11)) float32 for the M = B x N node rows of ``obs`` (B, N, 55).

    The trajectory is each hour's mean and peak demand / cores, oldest first.
    Static: sold / cores, interactive and hint shares, ratio, time of day
    (sin, cos), then the 24 h peak, the mean of the last 6 hourly peaks, the
    worst-case headroom (sold + threshold - 24 h peak) and the 24 h peak per
    sold vCPU (capped at 2).
    """
    rows = np.asarray(obs, np.float32).reshape(-1, NODE_FEATURES)
    mean = rows[:, :HISTORY_HOURS]
    peaks = rows[:, HISTORY_HOURS : 2 * HISTORY_HOURS]
    sold = rows[:, COL_SOLD]
    peak = peaks.max(axis=1)
    static = np.column_stack(
        [
            rows[:, COL_SOLD:],
            peak,
            peaks[:, -6:].mean(axis=1),
            np.clip(sold + hot_threshold - peak, -1.0, 2.0),
            np.minimum(peak / np.maximum(sold, 0.05), 2.0),
        ]
    ).astype(np.float32)
    return np.stack([mean, peaks], axis=2), static


@dataclasses.dataclass
class Demonstrations:
    """Node rows and the expert's level for each (M rows)."""

    trajectory: np.ndarray  # (M, 24, 2) float32, hourly mean and peak demand / cores
    static: np.ndarray  # (M, 11) float32
    label: np.ndarray  # (M,) int64, the expert's ratio level
    rows: np.ndarray  # (M, 55) float32, the raw observation row (for pictures and rules)

    def __len__(self) -> int:
        return int(self.label.size)

    @staticmethod
    def concatenate(parts: list[Demonstrations]) -> Demonstrations:
        return Demonstrations(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Demonstrations))
        )

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **dataclasses.asdict(self))

    @staticmethod
    def load(path: Path) -> Demonstrations:
        with np.load(path) as data:
            return Demonstrations(**{f.name: data[f.name] for f in dataclasses.fields(Demonstrations)})


Actor = Callable[[np.ndarray], np.ndarray]
"""(obs (B, N, 55)) -> levels (B, N)."""


def collect(
    env_kwargs: dict[str, Any],
    seeds: list[int],
    *,
    actor: Actor | None = None,
    expert_share: float = 0.0,
    horizon_hours: int = 24,
    rng_seed: int = 0,
) -> Demonstrations:
    """One episode per seed; every visited node row labelled with the expert's level.

    ``actor`` None follows the expert (behaviour cloning's data). Otherwise
    each node follows the expert with probability ``expert_share`` and the
    actor else (DAgger's beta-mixture); the label is always the expert's.
    """
    env = make_vector_env(ENV_ID, len(seeds), env_kwargs)
    core = env.core
    threshold = float(env.config.hot_threshold)
    obs, _ = env.reset(seed=seeds)
    rng = np.random.default_rng(rng_seed)
    parts = []
    for _ in range(int(env.config.hours)):
        expert = robust_hindsight_levels(core, horizon_hours)  # type: ignore[arg-type]
        traj, static = node_features(obs, threshold)
        parts.append(Demonstrations(traj, static, expert.reshape(-1).astype(np.int64), obs.reshape(-1, NODE_FEATURES)))
        if actor is None:
            action = expert
        else:
            own = np.asarray(actor(obs))
            action = np.where(rng.random(expert.shape) < expert_share, expert, own)
        obs, _, _, _, _ = env.step(action.astype(np.int64))
    env.close()
    return Demonstrations.concatenate(parts)


# ----------------------------------------------------------------------------- the MLP agent


class MLPClassifier(nn.Module):
    """A node's flattened trajectory and static numbers -> logits over the ratio levels."""

    def __init__(self, levels: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * HISTORY_HOURS + STATIC_FEATURES, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, levels),
        )

    def forward(self, trajectory: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([trajectory.flatten(1), static], dim=1))


def tensors(data: Demonstrations) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.trajectory), torch.from_numpy(data.static), torch.from_numpy(data.label)


def fit_classifier(
    model: nn.Module, data: Demonstrations, *, epochs: int, batch_size: int = 1024, lr: float = 2e-3, seed: int = 0
) -> list[float]:
    """Cross-entropy on the expert's levels; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    traj, static, label = tensors(data)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(label), generator=generator)
        total = 0.0
        for start in range(0, len(label), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(traj[idx], static[idx]), label[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(label))
    return losses


def accuracy(model: nn.Module, data: Demonstrations) -> float:
    traj, static, label = tensors(data)
    with torch.no_grad():
        return float((model(traj, static).argmax(dim=1) == label).float().mean())


RISK_QUANTILE = 0.4
"""Risk-aware decoding: the highest level the expert would choose at least that high with probability >= 60%."""
RiskQuantile = float | tuple[float, float] | None
"""A decoding: None (argmax), one quantile, or (down, up) for the prototype agent on the rule's level."""


def decode(probabilities: np.ndarray, risk_quantile: float | np.ndarray | None) -> np.ndarray:
    """(M,) levels from (M, L) predicted probabilities of the expert's level.

    ``None``: the most likely level. Otherwise the highest level l with
    P(expert level < l) <= risk_quantile: overshooting the expert's ratio
    runs nodes hot, undershooting only strands cores, so the decoding leans
    low where the model is unsure. An (L,) array gives each level its own
    quantile (the prototype agent on the rule's level is stricter about
    going below the rule than above it: see ``ProtoHAILNet.thresholds``).
    """
    if risk_quantile is None:
        return probabilities.argmax(axis=1).astype(np.int64)
    below = np.cumsum(probabilities, axis=1) - probabilities
    if np.ndim(risk_quantile) == 0:
        return ((below <= risk_quantile).sum(axis=1) - 1).astype(np.int64)
    # The highest level of the run of allowed levels from 0 up (level 0 always is: nothing is below it),
    # so a looser quantile above never lets the decoding jump over a level the stricter one forbids.
    allowed = below <= np.asarray(risk_quantile)[None, :]
    return (np.cumprod(allowed, axis=1).sum(axis=1) - 1).astype(np.int64)


class NodePolicy(BatchedPolicy):
    """A per-node classifier acting for every node of every cluster of a batch."""

    name = "imitation"

    def __init__(self, env: CloudGymVectorEnv, model: nn.Module, risk_quantile: RiskQuantile = RISK_QUANTILE) -> None:
        super().__init__(env)
        self.model = model.eval()
        self.threshold = float(env.config.hot_threshold)
        self.risk_quantile = risk_quantile

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return act_levels(self.model, obs, self.threshold, self.risk_quantile)


def act_levels(
    model: nn.Module, obs: np.ndarray, threshold: float = 1.0, risk_quantile: RiskQuantile = RISK_QUANTILE
) -> np.ndarray:
    """(B, N) levels of a per-node model (see :func:`decode`), under the model's ``level_caps`` if it has them.

    ``level_caps(trajectory, static, risk_quantile) -> (M,) levels`` is how the prototype
    agent carries its operator's answers and its pre-retraining heads
    (:func:`cloudgym.agents.protohail.apply_answers`, :func:`cloudgym.agents.protohail.retrain_with_answers`).
    """
    b, n = obs.shape[:2]
    traj, static = node_features(obs, threshold)
    traj_t, static_t = torch.from_numpy(traj), torch.from_numpy(static)
    with torch.no_grad():
        probabilities = torch.softmax(model(traj_t, static_t), dim=1).numpy()
    expand = getattr(model, "thresholds", None)
    quantiles = risk_quantile if expand is None else expand(risk_quantile)
    if isinstance(quantiles, tuple):
        raise ValueError(f"decoding {quantiles}: two quantiles (down, up) need a prototype agent on the rule's level")
    levels = decode(probabilities, quantiles)
    # A model whose head gives offsets from a rule's level maps them to levels (the prototype agent's levels_from).
    to_levels = getattr(model, "levels_from", None)
    if to_levels is not None:
        levels = to_levels(levels, static)
    caps = getattr(model, "level_caps", None)
    if caps is not None:
        levels = np.minimum(levels, caps(traj_t, static_t, risk_quantile).numpy())
    return levels.reshape(b, n)


def train_bc(
    data: Demonstrations, levels: int, *, epochs: int = 20, hidden: int = 128, seed: int = 0
) -> tuple[MLPClassifier, list[float]]:
    torch.manual_seed(seed)
    model = MLPClassifier(levels, hidden)
    losses = fit_classifier(model, data, epochs=epochs, seed=seed)
    return model, losses


def train_dagger(
    env_kwargs: dict[str, Any],
    initial: Demonstrations,
    levels: int,
    *,
    iterations: int = 3,
    episodes_per_iteration: int = 8,
    first_seed: int = 10_000,
    epochs: int = 12,
    hidden: int = 128,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[MLPClassifier, Demonstrations]:
    """DAgger (Ross et al., 2011): BC on the expert's data, then roll out the learner, relabel, aggregate, retrain.

    Iteration i follows the expert on each node with probability 0.5^i
    (beta decays) and is labelled by the expert everywhere it goes.
    """
    model, _ = train_bc(initial, levels, epochs=epochs, hidden=hidden, seed=seed)
    data = initial
    for i in range(1, iterations + 1):
        seeds = list(range(first_seed + (i - 1) * episodes_per_iteration, first_seed + i * episodes_per_iteration))

        def actor(obs: np.ndarray, model: nn.Module = model) -> np.ndarray:
            return act_levels(model.eval(), obs)

        visited = collect(env_kwargs, seeds, actor=actor, expert_share=0.5**i, rng_seed=seed + i)
        data = Demonstrations.concatenate([data, visited])
        model.train()
        losses = fit_classifier(model, data, epochs=epochs, seed=seed + i)
        log(f"dagger iteration {i}: {len(visited)} new rows, {len(data)} in all, loss {losses[-1]:.4f}")
    return model, data


# ----------------------------------------------------------------------------- checkpoints


def save_model(model: nn.Module, folder: Path, risk_quantile: RiskQuantile, **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": config, "risk_quantile": risk_quantile}, path)
    return path


def load_imitation_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> NodePolicy:
    """Checkpoint loader for the BC and DAgger MLPs (``model.pt`` beside checkpoint.yaml)."""
    path = info.path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint weights missing")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = MLPClassifier(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    return NodePolicy(env, model, saved["risk_quantile"])


# ----------------------------------------------------------------------------- running it


def expert_demonstrations(
    cache: Path | None, episodes: int, *, first_seed: int = 0, env_kwargs: dict[str, Any] | None = None
) -> Demonstrations:
    """The expert's episodes on training seeds ``first_seed..first_seed + episodes - 1``, cached as .npz."""
    if cache is not None and cache.exists():
        return Demonstrations.load(cache)
    data = Demonstrations.concatenate(
        [
            collect(dict(env_kwargs or {}), list(range(start, min(start + 16, first_seed + episodes))))
            for start in range(first_seed, first_seed + episodes, 16)
        ]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data.save(cache)
    return data


def rule_demonstrations(cache: Path | None, episodes: int, *, first_seed: int = 30_000) -> Demonstrations:
    """The worst-case headroom rule's episodes on training seeds ``first_seed..``, every state labelled by the expert.

    The states an agent that plays near the rule meets (DAgger's point: learn
    where you will be), cached as .npz.
    """
    from cloudgym.baselines.oversubscription import levels_at_most, peaks
    from cloudgym.envs.oversubscription import OversubscriptionConfig

    if cache is not None and cache.exists():
        return Demonstrations.load(cache)
    config = OversubscriptionConfig()

    def rule(obs: np.ndarray) -> np.ndarray:  # the Headroom baseline, from the observation alone
        return levels_at_most(obs[:, :, COL_SOLD] + config.hot_threshold - peaks(obs).max(axis=2), config.ratios)

    data = Demonstrations.concatenate(
        [
            collect({}, list(range(start, min(start + 12, first_seed + episodes))), actor=rule)
            for start in range(first_seed, first_seed + episodes, 12)
        ]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data.save(cache)
    return data


METRIC_COLUMNS = ("return", "saved_cores", "hot_node_windows", "hot_rate_pct", "rejected_core_hours", "mean_ratio")


def evaluate_model(
    model: nn.Module, episodes: int, *, risk_quantile: RiskQuantile = RISK_QUANTILE, offset: int = 0
) -> dict[str, float]:
    """Mean of the main metrics over held-out episodes (the seeds compare.py uses, from ``offset``)."""
    rows = evaluate(
        lambda env: NodePolicy(env, model, risk_quantile), ENV_ID, held_out_seeds(episodes, offset), policy_name="agent"
    )
    return {c: float(np.mean([r[c] for r in rows])) for c in METRIC_COLUMNS}
