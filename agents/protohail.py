"""A ProtoHAIL-style agent for Oversubscription-v0: prototypes of usage trajectories, imitation, human queries.

After Wang et al., "ProtoHAIL" (arXiv 2401.07033; ProtoRAIL, MLSys 2025):
a **trajectory encoder** (a GRU over a node's last 24 hourly mean and peak
demands, joined with a few static numbers) maps a node to an embedding;
**K prototypes** live in that space; the policy is a **linear head over the
similarities** to them, ``log((d^2 + 1) / (d^2 + 1e-4))`` as in ProtoPNet.
Trained offline on the hindsight expert's demonstrations
(:mod:`cloudgym.agents.oversub_imitation`) with

    imitation (cross-entropy on the expert's level)
    + representativeness (each embedding near its nearest prototype)
    + diversity (prototypes at least ``diversity_margin`` apart)
    + interpretability (each prototype near some real trajectory),

then each prototype is **projected** onto the embedding of its nearest
real trajectory (its anchor, drawn by :func:`plot_prototypes`) and the head
is refit with the prototypes fixed.

**Human in the loop** (:func:`hitl_round`): a budget of queries (10 by
default), half on the prototypes whose region the head is least sure of
(highest mean entropy), half on the riskiest rates the agent proposes on its
own rollouts (the proposed ratio furthest above the worst-case headroom).
A scripted operator answers each with the highest ratio the operators'
rules allow (:func:`cloudgym.baselines.oversubscription.rule_caps`). The
answers are kept as **edits of the prototypes**, applied at decoding: an
answer about prototype j caps the ratio of every state whose nearest
prototype is j (the region that prototype stands for, which is why so few
queries can matter; ``prototype_neighbours`` narrows it to the states near
the prototype); an answer about a state caps the states within the
radius of its ``neighbours`` nearest training rows in embedding space. Then
the round **retrains the head with the answers** (:func:`retrain_with_answers`,
ProtoPNet's last-layer step): cross-entropy against the pre-round agent's
own predictions (self-distillation, the anchor) plus a penalty on the
probability above each answered cap on the states it covers. The level the
agent plays is the lowest of the retrained head's decoding, the pre-round
head's decoding and every cap that covers the state. The update is anchored
by construction: with no answers the gradient is exactly zero and the agent
is the pre-round agent, bit for bit, and an answer can only lower a
decision, never raise one. (An earlier version retrained the whole network
on the expert's labels with the answers as soft penalties and no anchor;
the retraining moved hot node-windows by as much as the answers did, in
either direction.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.agents.oversub_imitation import (
    RISK_QUANTILE,
    STATIC_FEATURES,
    Demonstrations,
    NodePolicy,
    RiskQuantile,
    decode,
    node_features,
)
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.oversubscription import COL_COS, COL_SIN, HISTORY_HOURS, OversubscriptionConfig

ENV_ID = "Oversubscription-v0"
VALIDATION_SEED_BASE = 500_000
"""Validation seeds (decoding and matching choices): 500,000 + i; never the held-out 1,000,000.. ones."""
HEADROOM_COLUMN = 9
"""Column of node_features' static numbers holding the worst-case headroom (sold + threshold - 24 h peak)."""


def exact_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) squared distances computed pair by pair.

    torch.cdist's default switches to a matrix-product formula for large
    inputs, whose rounding depends on the sizes; a cap's radius is the
    distance to a real training row, so the same pair must give the same
    number whether it is measured to set the radius or to apply it.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProtoHAILConfig:
    """Sizes and loss weights of the prototype agent."""

    levels: int = 6
    """Ratio levels (the env's len(ratios))."""
    prototypes: int = 10
    """K, the number of prototypes."""
    embedding: int = 16
    """Dimension of the embedding space."""
    hidden: int = 32
    """GRU state size."""
    rep_weight: float = 0.05
    """Weight of representativeness (mean squared distance of an embedding to its nearest prototype)."""
    div_weight: float = 0.5
    """Weight of diversity (squared shortfall of prototype pairs closer than the margin)."""
    int_weight: float = 0.05
    """Weight of interpretability (mean squared distance of a prototype to its nearest embedding in the batch)."""
    diversity_margin: float = 2.0
    """Prototypes closer than this are pushed apart."""
    rule_offset: int = 0
    """0: the head gives the level. D > 0: the head gives the expert's level minus the worst-case headroom
    rule's, clipped to -D..D (2D + 1 outputs), and the agent plays the rule's level plus the decoded offset."""

    def __post_init__(self) -> None:
        if self.rule_offset < 0 or self.rule_offset >= self.levels:
            raise ValueError(f"rule_offset must be in 0..levels - 1 = {self.levels - 1}, got {self.rule_offset}")

    @property
    def outputs(self) -> int:
        """Size of the head: the levels, or the 2D + 1 offsets from the rule's level."""
        return 2 * self.rule_offset + 1 if self.rule_offset else self.levels


def rule_levels(static: np.ndarray | torch.Tensor, levels: int) -> np.ndarray:
    """(M,) the worst-case headroom rule's level for node_features' static rows (the Headroom baseline's choice)."""
    from cloudgym.baselines.oversubscription import levels_at_most

    ratios = OversubscriptionConfig().ratios
    if len(ratios) != levels:
        raise ValueError(f"the rule's levels come from the default ratios ({len(ratios)}), the agent has {levels}")
    headroom = np.asarray(static[:, HEADROOM_COLUMN], np.float64)
    return levels_at_most(headroom[None], ratios)[0]


class ProtoHAILNet(nn.Module):
    """Trajectory encoder, K prototypes, a linear head over similarities."""

    prior_head_weight: torch.Tensor
    prior_head_bias: torch.Tensor

    def __init__(self, config: ProtoHAILConfig) -> None:
        super().__init__()
        self.config = config
        self.gru = nn.GRU(input_size=2, hidden_size=config.hidden, batch_first=True)
        self.project = nn.Sequential(
            nn.Linear(config.hidden + STATIC_FEATURES, 64), nn.ReLU(), nn.Linear(64, config.embedding)
        )
        self.prototypes = nn.Parameter(torch.randn(config.prototypes, config.embedding))
        self.head = nn.Linear(config.prototypes, config.outputs)
        # The operator's answers (see hitl_round): caps at decoding, empty until a round edits them.
        self.register_buffer("prototype_cap", torch.full((config.prototypes,), -1, dtype=torch.long))
        """(K,) highest level allowed in each prototype's region; -1 where the prototype was not asked about."""
        self.register_buffer("point_embedding", torch.zeros(0, config.embedding))
        """(Q, E) embeddings of the states the operator was asked about."""
        self.register_buffer("point_cap", torch.zeros(0, dtype=torch.long))
        """(Q,) highest level allowed near each asked state."""
        self.register_buffer("point_radius2", torch.zeros(0))
        """(Q,) squared radius around each asked state within which its cap applies."""
        # The heads before each HITL round's retraining (see retrain_with_answers): ceilings at decoding.
        self.register_buffer("prior_head_weight", torch.zeros(0, config.outputs, config.prototypes))
        """(R, outputs, K) the head's weights before each of the R rounds that retrained it."""
        self.register_buffer("prior_head_bias", torch.zeros(0, config.outputs))
        """(R, outputs) the head's biases before each of those rounds."""

    def embed(self, trajectory: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        _, state = self.gru(trajectory)
        return self.project(torch.cat([state[-1], static], dim=1))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """(M, K) squared distances of embeddings to the prototypes."""
        return torch.cdist(z, self.prototypes).pow(2)

    @staticmethod
    def similarity(d2: torch.Tensor) -> torch.Tensor:
        return torch.log((d2 + 1.0) / (d2 + 1e-4))

    def forward(self, trajectory: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.head(self.similarity(self.distances(self.embed(trajectory, static))))

    def thresholds(self, risk_quantile: Any) -> float | np.ndarray | None:
        """The decoding quantile(s) for :func:`decode`: a number, or (down, up) for an agent on the rule's level.

        (down, up): going below the rule's level needs P(expert below the rule) > down; going above it
        needs P(expert below the chosen level) <= up. Two numbers because the two errors cost differently:
        playing the rule where the expert goes lower risks hot windows, playing the rule where it goes
        higher only strands cores.
        """
        if risk_quantile is None or np.ndim(risk_quantile) == 0:
            return risk_quantile
        down, up = (float(x) for x in risk_quantile)
        if not self.config.rule_offset:
            raise ValueError("two decoding quantiles (down, up) need an agent on the rule's level (rule_offset > 0)")
        d = self.config.rule_offset
        return np.array([down] * (d + 1) + [up] * d)

    def levels_from(self, decoded: np.ndarray, static: np.ndarray | torch.Tensor) -> np.ndarray:
        """(M,) levels played for the head's decoded outputs: the outputs themselves, or the rule's level + offset."""
        decoded = np.asarray(decoded, np.int64)
        c = self.config
        if not c.rule_offset:
            return decoded
        return np.clip(rule_levels(static, c.levels) + decoded - c.rule_offset, 0, c.levels - 1).astype(np.int64)

    def output_levels(self, static: np.ndarray | torch.Tensor) -> np.ndarray:
        """(M, outputs) the level each head output stands for on each row."""
        n = len(static)
        grid = np.broadcast_to(np.arange(self.config.outputs), (n, self.config.outputs))
        if not self.config.rule_offset:
            return np.array(grid, np.int64)
        return np.stack([self.levels_from(grid[:, k], static) for k in range(self.config.outputs)], axis=1)

    def answer_caps(self, z: torch.Tensor) -> torch.Tensor:
        """(M,) the highest level the operator's answers allow each embedding (levels - 1 where none covers it).

        A prototype answer covers the states whose nearest prototype it is;
        a state answer covers the states within its radius.
        """
        with torch.no_grad():
            cap = torch.full((len(z),), self.config.levels - 1, dtype=torch.long)
            nearest_cap = self.prototype_cap[self.distances(z).argmin(dim=1)]
            cap = torch.where(nearest_cap >= 0, torch.minimum(cap, nearest_cap), cap)
            if len(self.point_cap):
                inside = exact_squared_distances(z, self.point_embedding) <= self.point_radius2[None, :]
                bound = torch.where(inside, self.point_cap[None, :], self.config.levels - 1).min(dim=1).values
                cap = torch.minimum(cap, bound)
        return cap

    def prior_ceiling(
        self, similarities: torch.Tensor, risk_quantile: RiskQuantile, static: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """(M,) the lowest level any pre-retraining head decodes (levels - 1 when no round retrained the head).

        A retrained head may move probability anywhere; playing no higher
        than every earlier head keeps the promise that an answer never
        raises a decision.
        """
        ceiling = torch.full((len(similarities),), self.config.levels - 1, dtype=torch.long)
        with torch.no_grad():
            for weight, bias in zip(self.prior_head_weight, self.prior_head_bias, strict=True):
                probabilities = torch.softmax(nn.functional.linear(similarities, weight, bias), dim=1).numpy()
                decoded = decode(probabilities, self.thresholds(risk_quantile))
                played = decoded if static is None else self.levels_from(decoded, static)
                ceiling = torch.minimum(ceiling, torch.from_numpy(played))
        return ceiling

    def level_caps(
        self, trajectory: torch.Tensor, static: torch.Tensor, risk_quantile: RiskQuantile = RISK_QUANTILE
    ) -> torch.Tensor:
        """(M,) the highest level each state may play: the operator's answers and the pre-retraining heads."""
        with torch.no_grad():
            z = self.embed(trajectory, static)
            cap = self.answer_caps(z)
            if len(self.prior_head_weight):
                sims = self.similarity(self.distances(z))
                cap = torch.minimum(cap, self.prior_ceiling(sims, risk_quantile, static))
        return cap

    def set_answers(
        self, prototype_cap: np.ndarray, point_embedding: np.ndarray, point_cap: np.ndarray, point_radius2: np.ndarray
    ) -> None:
        """Replace the decoding caps (shapes as the buffers; Q may be any size)."""
        self.prototype_cap = torch.as_tensor(prototype_cap, dtype=torch.long).clone()
        self.point_embedding = torch.as_tensor(point_embedding, dtype=torch.float32).reshape(-1, self.config.embedding)
        self.point_cap = torch.as_tensor(point_cap, dtype=torch.long).reshape(-1).clone()
        self.point_radius2 = torch.as_tensor(point_radius2, dtype=torch.float32).reshape(-1).clone()

    def push_prior_head(self) -> None:
        """Keep the present head as a decoding ceiling (before a round retrains it)."""
        with torch.no_grad():
            self.prior_head_weight = torch.cat([self.prior_head_weight, self.head.weight.detach()[None].clone()])
            self.prior_head_bias = torch.cat([self.prior_head_bias, self.head.bias.detach()[None].clone()])

    def prototype_logits(self) -> torch.Tensor:
        """(K, levels) the head's logits for each prototype itself (similarity 1/1e-4 to itself)."""
        return self.head(self.similarity(self.distances(self.prototypes)))


def losses(
    model: ProtoHAILNet, trajectory: torch.Tensor, static: torch.Tensor, label: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The four terms of the training objective on one batch."""
    c = model.config
    z = model.embed(trajectory, static)
    d2 = model.distances(z)
    logits = model.head(model.similarity(d2))
    pair = torch.cdist(model.prototypes, model.prototypes)
    upper = torch.triu(torch.ones_like(pair, dtype=torch.bool), diagonal=1)
    return {
        "imitation": nn.functional.cross_entropy(logits, label),
        "representativeness": d2.min(dim=1).values.mean(),
        "diversity": torch.relu(c.diversity_margin - pair[upper]).pow(2).mean(),
        "interpretability": d2.min(dim=0).values.mean(),
        "_logits": logits,
    }


def train_protohail(
    data: Demonstrations,
    config: ProtoHAILConfig,
    *,
    epochs: int = 15,
    head_epochs: int = 12,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
    model: ProtoHAILNet | None = None,
    log: Any = print,
) -> tuple[ProtoHAILNet, np.ndarray, list[dict[str, float]]]:
    """Train (or retrain ``model``) on demonstrations; project the prototypes; refit the head.

    Returns the model, the anchor row of each prototype (indices into
    ``data``) and the per-epoch mean of each loss term.
    """
    torch.manual_seed(seed)
    data = targets(data, config)
    if model is None:
        model = ProtoHAILNet(config)
        _init_prototypes(model, data, seed)
    traj, static, label = (torch.from_numpy(a) for a in (data.trajectory, data.static, data.label))
    history: list[dict[str, float]] = []
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(label), generator=generator)
        sums: dict[str, float] = {}
        for start in range(0, len(label), batch_size):
            idx = order[start : start + batch_size]
            terms = losses(model, traj[idx], static[idx], label[idx])
            total = (
                terms["imitation"]
                + config.rep_weight * terms["representativeness"]
                + config.div_weight * terms["diversity"]
                + config.int_weight * terms["interpretability"]
            )
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
            for k, v in terms.items():
                if not k.startswith("_"):
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
        history.append({k: v / len(label) for k, v in sums.items()})
        log("  " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    anchors = project_prototypes(model, data)
    refit_head(model, data, epochs=head_epochs, batch_size=batch_size, lr=lr, seed=seed)
    return model.eval(), anchors, history


def targets(data: Demonstrations, config: ProtoHAILConfig) -> Demonstrations:
    """The demonstrations with the head's targets: the expert's level, or its offset from the rule's (+ D)."""
    if not config.rule_offset:
        return data
    offset = np.clip(data.label - rule_levels(data.static, config.levels), -config.rule_offset, config.rule_offset)
    return dataclasses.replace(data, label=(offset + config.rule_offset).astype(np.int64))


def refit_head(
    model: ProtoHAILNet,
    data: Demonstrations,
    *,
    epochs: int,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
) -> None:
    """Fit the last layer alone, encoder and prototypes fixed (ProtoPNet's final step)."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.from_numpy(data.label)
    optimiser = torch.optim.Adam(model.head.parameters(), lr=lr)
    with torch.no_grad():
        sims = torch.cat([model.similarity(model.distances(z)) for z in _embeddings(model, data)])
    for _ in range(epochs):
        order = torch.randperm(len(label), generator=generator)
        for start in range(0, len(label), batch_size):
            idx = order[start : start + batch_size]
            logits = model.head(sims[idx])
            loss = nn.functional.cross_entropy(logits, label[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()


def _embeddings(model: ProtoHAILNet, data: Demonstrations, chunk: int = 8192) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for start in range(0, len(data), chunk):
            t = torch.from_numpy(data.trajectory[start : start + chunk])
            s = torch.from_numpy(data.static[start : start + chunk])
            out.append(model.embed(t, s))
    return out


def embeddings(model: ProtoHAILNet, data: Demonstrations) -> torch.Tensor:
    return torch.cat(_embeddings(model, data))


def _init_prototypes(model: ProtoHAILNet, data: Demonstrations, seed: int) -> None:
    """Start the prototypes on the embeddings of K trajectories spread over the expert's levels."""
    rng = np.random.default_rng(seed)
    picks = []
    for k in range(model.config.prototypes):
        level = k % model.config.outputs
        rows = np.flatnonzero(data.label == level)
        picks.append(int(rng.choice(rows if rows.size else np.arange(len(data)))))
    sample = Demonstrations(*(getattr(data, f.name)[picks] for f in dataclasses.fields(Demonstrations)))
    with torch.no_grad():
        model.prototypes.copy_(embeddings(model, sample))


def project_prototypes(model: ProtoHAILNet, data: Demonstrations) -> np.ndarray:
    """Move each prototype onto the embedding of its nearest training trajectory; return those rows."""
    z = embeddings(model, data)
    with torch.no_grad():
        nearest = model.distances(z).argmin(dim=0)
        model.prototypes.copy_(z[nearest])
    return nearest.numpy().astype(np.int64)


def assignments(model: ProtoHAILNet, data: Demonstrations) -> np.ndarray:
    """(M,) index of each row's nearest prototype."""
    with torch.no_grad():
        return torch.cat([model.distances(z).argmin(dim=1) for z in _embeddings(model, data)]).numpy()


def prototype_offsets(model: ProtoHAILNet, risk_quantile: RiskQuantile = RISK_QUANTILE) -> np.ndarray:
    """(K,) for an agent on the rule's level (``rule_offset`` D > 0): the offset each prototype adds to it, -D..D."""
    with torch.no_grad():
        decoded = decode(torch.softmax(model.prototype_logits(), dim=1).numpy(), model.thresholds(risk_quantile))
    return decoded - model.config.rule_offset


def prototype_levels(
    model: ProtoHAILNet, risk_quantile: RiskQuantile = RISK_QUANTILE, static: np.ndarray | None = None
) -> np.ndarray:
    """(K,) the level each prototype maps to: the head's, decoded as the agent decodes, under any operator cap.

    An agent on the rule's level needs ``static``, the node_features of each prototype's anchor row
    (the rule's level there is the base the prototype's offset moves).
    """
    if model.config.rule_offset and static is None:
        raise ValueError("an agent on the rule's level needs the anchors' static features to give levels")
    with torch.no_grad():
        decoded = decode(torch.softmax(model.prototype_logits(), dim=1).numpy(), model.thresholds(risk_quantile))
        levels = decoded if static is None else model.levels_from(decoded, static)
        if len(model.prior_head_weight):
            sims = model.similarity(model.distances(model.prototypes))
            ceiling = model.prior_ceiling(sims, risk_quantile, static)
            levels = np.minimum(levels, ceiling.numpy())
    cap = model.prototype_cap.numpy()
    return np.where(cap >= 0, np.minimum(levels, cap), levels)


# ----------------------------------------------------------------------------- human in the loop


@dataclasses.dataclass(frozen=True)
class Query:
    """One question to the operator and its answer."""

    kind: str  # "prototype" or "rate"
    index: int  # the prototype, or the row of the query pool
    proposed: int  # the level the agent proposes there
    allowed: int  # the operator's answer: the highest level the rules allow


def operator_caps(rows: np.ndarray, env_config: OversubscriptionConfig) -> np.ndarray:
    """The scripted operator: the highest level its rules allow for each observation row (M, 55).

    Its rules: the operators' caps (:func:`~cloudgym.baselines.oversubscription.rule_caps`: 1.1 where
    the P95 demand exceeds 0.8, 1.25 on interactive-heavy nodes) and the rule of thumb "keep room for
    the coming VMs to run flat out": no ratio above sold + threshold - the last 24 h peak (in cores).
    """
    from cloudgym.baselines.oversubscription import levels_at_most, rule_caps

    _, static = node_features(rows[None], env_config.hot_threshold)
    headroom = levels_at_most(static[:, HEADROOM_COLUMN][None], env_config.ratios)[0]
    return np.minimum(rule_caps(rows[None], env_config)[0], headroom)


def select_queries(
    model: ProtoHAILNet,
    data: Demonstrations,
    pool: Demonstrations,
    env_config: OversubscriptionConfig,
    *,
    budget: int = 10,
    prototype_share: float = 0.5,
    random: bool = False,
    risk_quantile: RiskQuantile = RISK_QUANTILE,
    seed: int = 0,
) -> list[Query]:
    """Spend the budget: the most uncertain prototypes, then the riskiest proposed rates (or random ones).

    Uncertainty of a prototype: the mean entropy of the head's choice over
    the training rows nearest to it. Risk of a proposal on a pool row: the
    proposed ratio x the row's 24 h peak per sold vCPU (the peak the node
    would reach filled to the ratio with VMs like its present ones); one
    query per prototype region, so the budget spreads over patterns.
    """
    rng = np.random.default_rng(seed)
    k = model.config.prototypes
    n_proto = min(k, round(budget * prototype_share))
    n_rate = budget - n_proto
    with torch.no_grad():
        logits = torch.cat([model.head(model.similarity(model.distances(z))) for z in _embeddings(model, data)])
        entropy = -(torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum(1).numpy()
        pool_logits = torch.cat([model.head(model.similarity(model.distances(z))) for z in _embeddings(model, pool)])
    owner = assignments(model, data)
    uncertainty = np.array([entropy[owner == j].mean() if (owner == j).any() else 0.0 for j in range(k)])
    proto_order = rng.permutation(k) if random else np.argsort(-uncertainty, kind="stable")
    anchor_index = _anchor_rows(model, data)
    anchors_rows = data.rows[anchor_index]
    proposed_proto = prototype_levels(model, risk_quantile, data.static[anchor_index])
    allowed_proto = operator_caps(anchors_rows, env_config)
    queries = [Query("prototype", int(j), int(proposed_proto[j]), int(allowed_proto[j])) for j in proto_order[:n_proto]]
    pool_caps = model.level_caps(
        torch.from_numpy(pool.trajectory), torch.from_numpy(pool.static), risk_quantile
    ).numpy()
    decoded = decode(torch.softmax(pool_logits, dim=1).numpy(), model.thresholds(risk_quantile))
    proposed = np.minimum(model.levels_from(decoded, pool.static), pool_caps)
    ratios = np.asarray(env_config.ratios)
    # How far the proposal sells beyond what would stay cool if the coming VMs ran flat out
    # (only proposals above the lowest ratio: an answer could not lower the others).
    risk = np.where(proposed > 0, ratios[proposed] - pool.static[:, HEADROOM_COLUMN], -np.inf)
    pool_owner = assignments(model, pool)
    order = rng.permutation(len(pool)) if random else np.argsort(-risk, kind="stable")
    allowed_rows = operator_caps(pool.rows, env_config)
    # One rate query per prototype region first (the budget spreads over patterns), then the next riskiest.
    seen: set[int] = set()
    chosen: list[int] = []
    for row in order:
        if len(chosen) < n_rate and int(pool_owner[row]) not in seen:
            seen.add(int(pool_owner[row]))
            chosen.append(int(row))
    chosen += [int(r) for r in order if int(r) not in chosen][: n_rate - len(chosen)]
    queries += [Query("rate", row, int(proposed[row]), int(allowed_rows[row])) for row in chosen]
    return queries


def _anchor_rows(model: ProtoHAILNet, data: Demonstrations) -> np.ndarray:
    """Rows of ``data`` whose embeddings are nearest to each prototype (their anchors once projected)."""
    z = embeddings(model, data)
    with torch.no_grad():
        return model.distances(z).argmin(dim=0).numpy()


def apply_answers(
    model: ProtoHAILNet,
    queries: list[Query],
    data: Demonstrations,
    pool: Demonstrations,
    *,
    neighbours: int = 256,
    prototype_neighbours: int | None = None,
) -> ProtoHAILNet:
    """Edit ``model``'s decoding caps with the operator's answers (in place; returns it). Weights stay as they are.

    A rate answer caps the states within the distance of the queried
    state's ``neighbours``-th nearest training row (in embedding space). A
    prototype answer caps the prototype's whole region (the states nearest
    to it) when ``prototype_neighbours`` is None, else the states within
    the distance of the prototype's ``prototype_neighbours``-th nearest
    training row. A cap only ever lowers the level played (see
    :meth:`ProtoHAILNet.level_caps`), and caps from earlier rounds are kept
    (the tighter one wins).
    """
    prototype_cap = model.prototype_cap.numpy().copy()
    centres: list[torch.Tensor] = []
    counts: list[int] = []
    point_caps: list[int] = []
    for q in (q for q in queries if q.kind == "prototype"):
        if prototype_neighbours is None:
            current = prototype_cap[q.index]
            prototype_cap[q.index] = q.allowed if current < 0 else min(current, q.allowed)
        else:
            centres.append(model.prototypes.detach()[q.index : q.index + 1])
            counts.append(prototype_neighbours)
            point_caps.append(q.allowed)
    rate = [q for q in queries if q.kind == "rate"]
    if rate:
        asked = Demonstrations(*(getattr(pool, f.name)[[q.index for q in rate]] for f in dataclasses.fields(pool)))
        centres.append(embeddings(model, asked))
        counts += [neighbours] * len(rate)
        point_caps += [q.allowed for q in rate]
    points = np.zeros((0, model.config.embedding), np.float32)
    radius2 = np.zeros(0, np.float32)
    if centres:
        z_points = torch.cat(centres)
        with torch.no_grad():
            d2 = exact_squared_distances(z_points, embeddings(model, data))
            ordered = torch.sort(d2, dim=1).values
        kth = torch.tensor([min(c, len(data)) - 1 for c in counts])
        radius2 = ordered[torch.arange(len(kth)), kth].numpy()
        points = z_points.detach().numpy()
    model.set_answers(
        prototype_cap,
        np.concatenate([model.point_embedding.numpy(), points]),
        np.concatenate([model.point_cap.numpy(), np.array(point_caps, np.int64)]),
        np.concatenate([model.point_radius2.numpy(), radius2]),
    )
    return model


def retrain_with_answers(
    model: ProtoHAILNet,
    teacher: ProtoHAILNet,
    rows: Demonstrations,
    *,
    epochs: int = 4,
    answer_weight: float = 1.0,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune ``model``'s head on the operator's answers, anchored to ``teacher`` (in place; ProtoPNet's last layer).

    ``model`` carries the answers as caps (:func:`apply_answers`) and the
    encoder and prototypes of ``teacher``, the agent before the round. The
    loss on ``rows`` is the cross-entropy of the head's level distribution
    against the teacher's own prediction (self-distillation: the round
    keeps what the agent knew, not the expert's labels) plus
    ``answer_weight`` x the mean probability above the answered cap on the
    rows an answer covers. The cross-entropy enters through its gradient,
    softmax(student) - teacher, written out so that it is exactly zero
    where the head is the teacher's: with no answers Adam takes steps of
    exactly zero and the agent stays bit for bit the pre-round one. The
    pre-round head is kept as a decoding ceiling (:meth:`ProtoHAILNet.push_prior_head`),
    so the retrained agent still never plays above the pre-round agent
    or an answer. Returns the number of steps, the mean probability above
    the cap on the covered rows before and after, and the teacher's
    cross-entropy gap (the KL from teacher to student) after.
    """
    model.push_prior_head()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = embeddings(model, rows)
        sims = model.similarity(model.distances(z))
        caps = model.answer_caps(z)
    # (M, outputs) the head's outputs whose level an answer forbids on each row.
    above = torch.from_numpy(model.output_levels(rows.static)) > caps[:, None]
    covered = above.any(dim=1)
    n_covered = max(int(covered.sum()), 1)

    def mass_above() -> float:
        with torch.no_grad():
            return float((torch.softmax(model.head(sims), dim=1) * above).sum() / n_covered)

    before = mass_above()
    optimiser = torch.optim.Adam(model.head.parameters(), lr=lr)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(sims), generator=generator)
        for start in range(0, len(sims), batch_size):
            idx = order[start : start + batch_size]
            with torch.no_grad():
                target = torch.softmax(teacher.head(sims[idx]), dim=1)
            logits = model.head(sims[idx])
            probabilities = torch.softmax(logits, dim=1)
            # d CE(target, softmax(logits)) / d logits = softmax(logits) - target, per row.
            anchor = ((probabilities.detach() - target) * logits).sum(dim=1).mean()
            answers = (probabilities * above[idx]).sum() / n_covered * (len(sims) / len(idx))
            optimiser.zero_grad()
            (anchor + answer_weight * answers).backward()
            optimiser.step()
            steps += 1
    model.eval()
    with torch.no_grad():
        log_student = torch.log_softmax(model.head(sims), dim=1)
        log_teacher = torch.log_softmax(teacher.head(sims), dim=1)
        kl = float((log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean())
    return {
        "steps": steps,
        "covered_rows": int(covered.sum()),
        "mass_above_cap_before": before,
        "mass_above_cap_after": mass_above(),
        "kl_teacher_student": kl,
    }


def hitl_round(
    model: ProtoHAILNet,
    data: Demonstrations,
    pool: Demonstrations,
    env_config: OversubscriptionConfig,
    *,
    budget: int = 10,
    random: bool = False,
    neighbours: int = 256,
    prototype_neighbours: int | None = None,
    risk_quantile: RiskQuantile = RISK_QUANTILE,
    retrain: bool = True,
    retrain_epochs: int = 4,
    answer_weight: float = 1.0,
    seed: int = 0,
    log: Any = print,
) -> tuple[ProtoHAILNet, list[Query]]:
    """Ask ``budget`` queries, answer them with the scripted operator, return a copy of the agent with the answers.

    The copy carries the answers as decoding caps (:func:`apply_answers`)
    and, with ``retrain``, a head fine-tuned on them, anchored to the
    pre-round agent (:func:`retrain_with_answers`, on the training rows and
    the query pool). Either way budget 0 gives back the same agent, decision
    for decision, and an answer never raises a decision. ``random``: the
    control that spends the budget on random prototypes and states.
    """
    import copy

    queries = select_queries(
        model, data, pool, env_config, budget=budget, random=random, risk_quantile=risk_quantile, seed=seed
    )
    for q in queries:
        log(f"  query {q.kind} {q.index}: agent proposes level {q.proposed}, operator allows up to {q.allowed}")
    edited = apply_answers(
        copy.deepcopy(model), queries, data, pool, neighbours=neighbours, prototype_neighbours=prototype_neighbours
    )
    if retrain:
        stats = retrain_with_answers(
            edited,
            model,
            Demonstrations.concatenate([data, pool]),
            epochs=retrain_epochs,
            answer_weight=answer_weight,
            seed=seed,
        )
        log("  retrained the head: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    return edited, queries


@dataclasses.dataclass
class HITLStudy:
    """The prototype agent after a HITL round, and the same round with no queries or random queries."""

    targeted: ProtoHAILNet  # answers to the most uncertain prototypes and riskiest rates
    targeted_queries: list[Query]
    targeted_caps_only: ProtoHAILNet  # the same answers as decoding caps, the head not retrained
    no_queries: ProtoHAILNet  # the same round with a budget of 0
    random_queries: ProtoHAILNet  # the same budget spent on random prototypes and states
    random_queries_asked: list[Query]


def hitl_study(
    model: ProtoHAILNet,
    data: Demonstrations,
    env_config: OversubscriptionConfig,
    *,
    pool_seeds: list[int],
    budget: int = 10,
    neighbours: int = 256,
    prototype_neighbours: int | None = None,
    risk_quantile: RiskQuantile = RISK_QUANTILE,
    retrain_epochs: int = 4,
    answer_weight: float = 1.0,
    seed: int = 0,
    log: Any = print,
) -> HITLStudy:
    """One HITL round from ``model``, with its two controls: no queries, and random queries of the same budget.

    The query pool is the agent's own rollouts on ``pool_seeds`` (training
    seeds): the states it will meet, where it proposes its rates.
    """
    from cloudgym.agents.oversub_imitation import act_levels, collect

    pool = collect(
        {}, pool_seeds, actor=lambda obs: act_levels(model, obs, env_config.hot_threshold, risk_quantile), rng_seed=seed
    )
    log(f"query pool: {len(pool)} node-hours of the agent's own rollouts on seeds {pool_seeds}")
    common: dict[str, Any] = {
        "neighbours": neighbours,
        "prototype_neighbours": prototype_neighbours,
        "risk_quantile": risk_quantile,
        "retrain_epochs": retrain_epochs,
        "answer_weight": answer_weight,
        "seed": seed,
        "log": log,
    }
    log("HITL round (targeted queries):")
    targeted, asked = hitl_round(model, data, pool, env_config, budget=budget, **common)
    log("ablation: the same answers as caps alone, no retraining")
    caps_only, _ = hitl_round(model, data, pool, env_config, budget=budget, **{**common, "retrain": False})
    log("control: the same round, no queries")
    plain, _ = hitl_round(model, data, pool, env_config, budget=0, **common)
    log("control: the same budget on random queries")
    shuffled, random_asked = hitl_round(model, data, pool, env_config, budget=budget, random=True, **common)
    return HITLStudy(targeted, asked, caps_only, plain, shuffled, random_asked)


def evaluate_episodes(
    model: ProtoHAILNet, episodes: int, risk_quantile: RiskQuantile, *, seeds: list[int] | None = None
) -> dict[str, Any]:
    """Mean metrics over the first ``episodes`` held-out seeds (or ``seeds``), and the total of hot node-windows."""
    from cloudgym.agents.oversub_imitation import METRIC_COLUMNS
    from cloudgym.evaluation import evaluate, held_out_seeds

    rows = evaluate(
        lambda env: ProtoHAILPolicy(env, model, risk_quantile),
        ENV_ID,
        seeds if seeds is not None else held_out_seeds(episodes),
        policy_name="agent",
    )
    out: dict[str, Any] = {c: float(np.mean([r[c] for r in rows])) for c in METRIC_COLUMNS}
    out["hot_total"] = round(sum(float(r["hot_node_windows"]) for r in rows))
    return out


def hitl_replicates(
    model: ProtoHAILNet,
    data: Demonstrations,
    env_config: OversubscriptionConfig,
    *,
    seeds: list[int],
    quantiles: list[float],
    episodes: int,
    budget: int = 10,
    neighbours: int = 256,
    prototype_neighbours: int | None = None,
    retrain_epochs: int = 4,
    answer_weight: float = 1.0,
    log: Any = print,
) -> tuple[HITLStudy, dict[str, Any]]:
    """:func:`hitl_study` once per replicate seed, every variant evaluated at each decoding quantile.

    Replicate ``s`` draws its query pool from the agent's rollouts on
    training seeds ``20000 + 4s .. 20000 + 4s + 3`` (and its random queries
    from ``s``), so replicates differ in which states the operator is asked
    about. Hot node-windows are rare for these agents, so the comparison
    reads many held-out episodes and also a riskier decoding, where counts
    are larger. Returns the first replicate's study (the shipped model) and
    ``{f"q{q}": {variant: {metric: mean, "per_seed_hot": [...], ...}}}``.
    """
    studies = []
    for s in seeds:
        log(f"HITL study, replicate seed {s}")
        pool_seeds = [20_000 + 4 * s + i for i in range(4)]
        studies.append(
            hitl_study(
                model,
                data,
                env_config,
                pool_seeds=pool_seeds,
                budget=budget,
                neighbours=neighbours,
                prototype_neighbours=prototype_neighbours,
                retrain_epochs=retrain_epochs,
                answer_weight=answer_weight,
                seed=s,
                log=log,
            )
        )
    summary: dict[str, Any] = {}
    for q in quantiles:
        row: dict[str, Any] = {}
        before = evaluate_episodes(model, episodes, q)
        row["before_round"] = {k: round(v, 4) for k, v in before.items()}
        for variant in ("targeted", "targeted_caps_only", "no_queries", "random_queries"):
            runs = [evaluate_episodes(getattr(st, variant), episodes, q) for st in studies]
            row[variant] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
            row[variant]["per_seed_hot"] = [round(r["hot_node_windows"], 4) for r in runs]
            row[variant]["per_seed_hot_total"] = [r["hot_total"] for r in runs]
            row[variant]["per_seed_saved"] = [round(r["saved_cores"], 2) for r in runs]
        summary[f"q{q:g}"] = row
        log(
            f"decoding quantile {q:g}, {episodes} held-out episodes: hot node-windows / episode "
            + ", ".join(f"{k} {v['hot_node_windows']:.3f}" for k, v in row.items())
            + "; saved cores "
            + ", ".join(f"{k} {v['saved_cores']:.1f}" for k, v in row.items())
        )
    return studies[0], summary


# ----------------------------------------------------------------------------- the policy, checkpoints, picture


class ProtoHAILPolicy(NodePolicy):
    """The prototype agent acting for every node of a batch of clusters (risk-aware decoding, operator caps)."""

    name = "protohail"


def save_protohail(
    model: ProtoHAILNet, anchors: Demonstrations, folder: Path, queries: list[Query], risk_quantile: RiskQuantile
) -> Path:
    """``model.pt``: weights, config, the anchored trajectories (for the picture) and the HITL queries."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "config": dataclasses.asdict(model.config),
            "risk_quantile": risk_quantile,
            "anchor_rows": torch.from_numpy(anchors.rows.astype(np.float32)),
            "anchor_labels": torch.from_numpy(anchors.label.astype(np.int64)),
            "queries": [dataclasses.asdict(q) for q in queries],
        },
        path,
    )
    return path


def load_model(folder: Path) -> tuple[ProtoHAILNet, dict[str, Any]]:
    path = Path(folder) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint weights missing")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = ProtoHAILNet(ProtoHAILConfig(**saved["config"]))
    state = saved["state_dict"]
    # The operator's state answers are a variable number Q of rows: size the buffers before loading.
    model.set_answers(state["prototype_cap"], state["point_embedding"], state["point_cap"], state["point_radius2"])
    # So are the heads kept from before each retraining round (none in checkpoints older than retraining).
    model.prior_head_weight = state.setdefault("prior_head_weight", model.prior_head_weight).clone()
    model.prior_head_bias = state.setdefault("prior_head_bias", model.prior_head_bias).clone()
    model.load_state_dict(state)
    return model.eval(), saved


def load_protohail_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> ProtoHAILPolicy:
    """Checkpoint loader for the prototype agents (named in their checkpoint.yaml)."""
    model, saved = load_model(info.path)
    return ProtoHAILPolicy(env, model, saved["risk_quantile"])


def plot_prototypes(folder: Path, out: Path) -> Path:
    """The K prototypes: each one's anchored 24 h trajectory (mean and peak demand / cores) and its ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, saved = load_model(folder)
    rows = saved["anchor_rows"].numpy()
    _, anchor_static = node_features(rows[None])
    levels = prototype_levels(model, saved["risk_quantile"], anchor_static)
    offsets = prototype_offsets(model, saved["risk_quantile"]) if model.config.rule_offset else None
    ratios = OversubscriptionConfig().ratios
    k = rows.shape[0]
    cols = min(5, k)
    lines = int(np.ceil(k / cols))
    fig, axes = plt.subplots(lines, cols, figsize=(3.0 * cols, 2.4 * lines), squeeze=False, sharey=True)
    hours = np.arange(-HISTORY_HOURS, 0)
    asked = {q["index"] for q in saved.get("queries", []) if q["kind"] == "prototype"}
    for j in range(lines * cols):
        ax = axes[j // cols][j % cols]
        if j >= k:
            ax.axis("off")
            continue
        traj, static = node_features(rows[j][None, None, :])
        ax.fill_between(hours, traj[0, :, 0], color="tab:blue", alpha=0.35, label="hourly mean")
        ax.plot(hours, traj[0, :, 1], color="tab:red", lw=1.2, label="hourly peak")
        ax.axhline(1.0, color="black", lw=0.6, ls="--")
        ax.axhline(static[0, 0], color="tab:green", lw=0.8, ls=":", label="sold / cores")
        mark = " (asked)" if j in asked else ""
        hour = round(float(np.arctan2(rows[j][COL_SIN], rows[j][COL_COS])) / (2 * np.pi) * 24) % 24
        # An agent on the rule's level: the prototype's offset from the rule, and the ratio it gives at its anchor.
        move = "" if offsets is None else f"rule{int(offsets[j]):+d} = "
        ax.set_title(f"P{j} -> {move}ratio {ratios[int(levels[j])]:g}{mark} (at {hour:02d}:00)", fontsize=9)
        ax.set_ylim(0, max(1.6, float(traj[0, :, 1].max()) + 0.1))
        if j % cols == 0:
            ax.set_ylabel("demand / cores")
        if j // cols == lines - 1:
            ax.set_xlabel("hours ago")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{ENV_ID}: prototypes (anchored trajectories) and the ratio each maps to", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def choose_decoding(
    model: ProtoHAILNet, down_grid: list[float], up: float, risk_target: float, validation_seeds: list[int]
) -> tuple[RiskQuantile, list[dict[str, float]]]:
    """The decoding saving the most cores on ``validation_seeds`` with hot node-windows / episode <= ``risk_target``.

    Candidates: (down, ``up``) for each down in ``down_grid`` for an agent on the rule's level, else the
    single quantile down. When none meets the target, the coolest. Returns it and the measured curve.
    """
    curve = []
    for q in down_grid:
        risk: RiskQuantile = (float(q), float(up)) if model.config.rule_offset else float(q)
        r = evaluate_episodes(model, 0, risk, seeds=validation_seeds)
        curve.append({"down": float(q), "saved_cores": round(r["saved_cores"], 3), "hot": r["hot_node_windows"]})
    meets = [c for c in curve if c["hot"] <= risk_target]
    best = max(meets, key=lambda c: c["saved_cores"]) if meets else min(curve, key=lambda c: c["hot"])
    chosen: RiskQuantile = (best["down"], float(up)) if model.config.rule_offset else best["down"]
    return chosen, curve


# ----------------------------------------------------------------------------- HITL at equal capacity


def _with_down(risk_quantile: Any, down: float) -> Any:
    """The decoding ``risk_quantile`` with its going-down quantile replaced (the one number tuned to match cores)."""
    if np.ndim(risk_quantile) == 0:
        return float(down)
    return (float(down), float(risk_quantile[1]))


def matched_quantile(grid: list[float], cores: list[float], target: float) -> float:
    """The going-down quantile at which the agent's saved cores reach ``target``, interpolated on a measured curve.

    ``cores`` were measured at ``grid`` (validation seeds); the curve is made
    non-decreasing (a looser quantile never saves fewer cores in expectation)
    before the linear interpolation; targets outside it get its ends.
    """
    order = np.argsort(grid)
    q = np.asarray(grid, np.float64)[order]
    c = np.maximum.accumulate(np.asarray(cores, np.float64)[order])
    return float(np.interp(target, c, q))


def hitl_equal_capacity(
    model: ProtoHAILNet,
    data: Demonstrations,
    env_config: OversubscriptionConfig,
    *,
    risk_quantile: Any,
    budgets: list[int],
    replicates: list[int],
    grid: list[float],
    validation_seeds: list[int],
    held_out: list[int],
    neighbours: int = 256,
    retrain_epochs: int = 4,
    answer_weight: float = 1.0,
    log: Any = print,
) -> dict[str, Any]:
    """The HITL round against the same agent decoded to the same saved cores, per budget and replicate.

    For each replicate s (its query pool: the agent's rollouts on training
    seeds 20000 + 4s .. + 3) and budget b, the round (targeted queries,
    answers as caps, anchored retraining) is run at ``risk_quantile``; its
    saved cores on ``validation_seeds`` set the target, and the agent
    without the round is decoded at the going-down quantile that reaches
    those cores on the same validation seeds (interpolated on its curve
    over ``grid``). Both are then evaluated on ``held_out``. Returns per
    budget the per-replicate hot node-windows / episode and saved cores of
    both, the gain (without - with) and its mean with a 95% t interval over
    the replicates.
    """
    from scipy import stats

    from cloudgym.agents.oversub_imitation import act_levels, collect

    curve = [evaluate_episodes(model, 0, _with_down(risk_quantile, q), seeds=validation_seeds) for q in grid]
    base_cores = [r["saved_cores"] for r in curve]
    log("agent without the round, validation: " + ", ".join(f"{q:g}: {c:.1f}" for q, c in zip(grid, base_cores)))
    out: dict[str, Any] = {"grid": grid, "grid_validation_cores": [round(c, 2) for c in base_cores]}
    per_budget: dict[int, list[dict[str, float]]] = {b: [] for b in budgets}
    for s in replicates:
        pool_seeds = [20_000 + 4 * s + i for i in range(4)]
        pool = collect(
            {},
            pool_seeds,
            actor=lambda obs: act_levels(model, obs, env_config.hot_threshold, risk_quantile),
            rng_seed=s,
        )
        for b in budgets:
            edited, _ = hitl_round(
                model,
                data,
                pool,
                env_config,
                budget=b,
                neighbours=neighbours,
                risk_quantile=risk_quantile,
                retrain_epochs=retrain_epochs,
                answer_weight=answer_weight,
                seed=s,
                log=lambda _: None,
            )
            target = evaluate_episodes(edited, 0, risk_quantile, seeds=validation_seeds)["saved_cores"]
            q = matched_quantile(grid, base_cores, target)
            with_round = evaluate_episodes(edited, 0, risk_quantile, seeds=held_out)
            without = evaluate_episodes(model, 0, _with_down(risk_quantile, q), seeds=held_out)
            row = {
                "matched_quantile": round(q, 5),
                "validation_cores": round(target, 2),
                "hitl_hot": with_round["hot_node_windows"],
                "hitl_cores": with_round["saved_cores"],
                "matched_hot": without["hot_node_windows"],
                "matched_cores": without["saved_cores"],
            }
            per_budget[b].append(row)
            log(f"replicate {s}, budget {b}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    for b, rows in per_budget.items():
        gain = np.array([r["matched_hot"] - r["hitl_hot"] for r in rows])
        gap = np.array([r["hitl_cores"] / r["matched_cores"] - 1 for r in rows])
        spread = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.nan
        half = float(stats.t.ppf(0.975, max(len(gain) - 1, 1)) * spread)
        out[f"budget_{b}"] = {
            "replicates": [{k: round(float(v), 4) for k, v in r.items()} for r in rows],
            "gain_hot_per_episode": round(float(gain.mean()), 4),
            "gain_ci95": [round(float(gain.mean()) - half, 4), round(float(gain.mean()) + half, 4)],
            "replicates_won": int((gain > 0).sum()),
            "max_abs_core_gap_pct": round(100 * float(np.abs(gap).max()), 2),
        }
        log(f"budget {b}: gain {gain.mean():.4f} hot / episode, 95% CI {out[f'budget_{b}']['gain_ci95']}")
    return out
