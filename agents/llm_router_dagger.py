"""A router for LLMRouter-v0 learnt by DAgger from the hindsight lookahead oracle's per-decision scores.

Why not PPO on the env's reward: one routing decision's effect is tiny next
to the latency noise of the next thousands of arrivals, so the per-step
reward hands each decision that noise (docs/llm_router.md). The simulator
can instead compute each decision's effect almost exactly: copy the state
into one branch per instance, send the request there, replay the *same*
next ``horizon`` requests under the paper's heuristic in every branch, and
compare the latency accrued (:meth:`LookaheadOracle.scores`). Every branch
shares the future, so the differences between branches are the decision's
counterfactual effect with common random numbers: the per-decision signal.
Its correlation with the decision's effect on the whole episode is measured
by :func:`signal_correlation` (docs/llm_router.md).

The learner never sees the future: it is a permutation-equivariant scorer
of the observation only (what a real router sees), trained by DAgger: the
current learner routes (the first round starts as the paper's heuristic),
the oracle scores every instance on a share of the states it visits, and
the learner is refitted on all scored states so far by minimising its
expected regret (softmax of its logits times each instance's regret
against the oracle's best). Logits are ``-scale x impact_n + g(x_n)`` as in
:mod:`cloudgym.agents.llm_router_policy`, with ``g`` zero at the start, so
round 0 *is* the heuristic.

Inference is numpy (weights in ``model.npz``, read with
``allow_pickle=False``), loaded through the registered loader
:func:`load_dagger_policy`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cloudgym.agents.checkpoints import CheckpointInfo
from cloudgym.baselines.llm_router import LookaheadOracle
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.evaluation import make_vector_env
from cloudgym.policy import BatchedPolicy

ENV_ID = "LLMRouter-v0"
INSTANCE_FEATURES = 7
IMPACT_COLUMN = 6


def instance_inputs(obs: np.ndarray, num_instances: int) -> np.ndarray:
    """(B, N, F) per-instance inputs: own features, own minus the instances' mean, impact minus the least, request.

    Everything is relative across instances or shared, so the scorer is
    equivariant to the instances' order.
    """
    b, n = obs.shape[0], num_instances
    inst = obs[:, : INSTANCE_FEATURES * n].reshape(b, n, INSTANCE_FEATURES).astype(np.float32)
    request = obs[:, INSTANCE_FEATURES * n :].astype(np.float32)
    centred = inst - inst.mean(axis=1, keepdims=True)
    impact = inst[:, :, IMPACT_COLUMN]
    gap = (impact - impact.min(axis=1, keepdims=True))[:, :, None]
    shared = np.broadcast_to(request[:, None, :], (b, n, request.shape[1]))
    return np.concatenate([inst, centred, gap, shared], axis=2)


@dataclasses.dataclass(frozen=True)
class ScorerWeights:
    """A 3-layer MLP shared by all instances plus the heuristic's temperature (numpy, for inference)."""

    w1: np.ndarray  # (F, H) float32
    b1: np.ndarray  # (H,) float32
    w2: np.ndarray  # (H, H) float32
    b2: np.ndarray  # (H,) float32
    w3: np.ndarray  # (H, 1) float32
    b3: np.ndarray  # (1,) float32
    log_scale: np.ndarray  # () float32, log of the weight on minus the heuristic's estimate

    def logits(self, obs: np.ndarray, num_instances: int) -> np.ndarray:
        """(B, N) routing logits of observations (B, 7 N + 12)."""
        x = instance_inputs(obs, num_instances)
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        h = np.maximum(h @ self.w2 + self.b2, 0.0)
        residual = (h @ self.w3 + self.b3)[:, :, 0]
        impact = obs[:, : INSTANCE_FEATURES * num_instances].reshape(obs.shape[0], num_instances, -1)[:, :, 6]
        return -float(np.exp(self.log_scale)) * impact + residual

    def save(self, path: Path) -> None:
        np.savez(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: Path) -> ScorerWeights:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{f.name: np.asarray(data[f.name], np.float32) for f in dataclasses.fields(cls)})


class DaggerRouter(BatchedPolicy):
    """Routes to the admissible instance of highest learnt logit; sees only the observation."""

    name = "dagger_router"

    def __init__(self, env: CloudGymVectorEnv, weights: ScorerWeights) -> None:
        super().__init__(env)
        self.num_instances = int(env.single_action_space.n)  # type: ignore[attr-defined]
        self.weights = weights

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        logits = self.weights.logits(np.asarray(obs), self.num_instances)
        if action_mask is not None:
            logits = np.where(action_mask, logits, -np.inf)
        return np.argmax(logits, axis=1)


def load_dagger_policy(info: CheckpointInfo, env: CloudGymVectorEnv) -> DaggerRouter:
    """Checkpoint loader (``model.npz`` beside checkpoint.yaml)."""
    path = info.path / "model.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint weights missing")
    return DaggerRouter(env, ScorerWeights.load(path))


# ----------------------------------------------------------------------------- training (torch)


def _torch_scorer(in_dim: int, hidden: int, heuristic_scale: float) -> Any:
    import torch
    from torch import nn

    class Scorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
            self.log_scale = nn.Parameter(torch.tensor(math.log(heuristic_scale)))
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)  # the residual starts at zero: round 0 is the heuristic
            nn.init.zeros_(last.bias)

        def forward(self, x: torch.Tensor, impact: torch.Tensor) -> torch.Tensor:
            return -self.log_scale.exp() * impact + self.net(x).squeeze(-1)

    return Scorer()


def _weights_of(model: Any) -> ScorerWeights:
    layers = [m for m in model.net if hasattr(m, "weight")]
    arr = [(lay.weight.detach().numpy().T.copy(), lay.bias.detach().numpy().copy()) for lay in layers]
    return ScorerWeights(
        w1=arr[0][0],
        b1=arr[0][1],
        w2=arr[1][0],
        b2=arr[1][1],
        w3=arr[2][0],
        b3=arr[2][1],
        log_scale=np.asarray(model.log_scale.detach().numpy(), np.float32),
    )


def _load_into(model: Any, weights: ScorerWeights) -> None:
    import torch

    layers = [m for m in model.net if hasattr(m, "weight")]
    pairs = [(weights.w1, weights.b1), (weights.w2, weights.b2), (weights.w3, weights.b3)]
    if [tuple(lay.weight.shape) for lay in layers] != [w.T.shape for w, _ in pairs]:
        raise ValueError("init weights do not match the scorer's shape (hidden size or observation width differ)")
    with torch.no_grad():
        for lay, (w, b) in zip(layers, pairs):
            lay.weight.copy_(torch.as_tensor(w.T))
            lay.bias.copy_(torch.as_tensor(b))
        model.log_scale.copy_(torch.as_tensor(weights.log_scale))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DaggerArgs:
    """Hyperparameters of DAgger from the lookahead oracle."""

    scenarios: tuple[str, ...] = ("default", "conversation90", "coding90", "trace", "hetero_2x2")
    """compare.py scenarios (LLMRouterConfig presets) cycled through, one per episode batch."""
    rounds: int = 3
    """DAgger rounds (round 0 routes with the heuristic)."""
    envs_per_round: int = 32
    """Training episodes per scenario and round (seeds from ``seed_base``; never held-out seeds)."""
    label_every: int = 4
    """Score one decision in this many (every decision is routed by the learner)."""
    horizon: int = 50
    """Requests replayed per branch for the per-decision score."""
    hidden: int = 64
    heuristic_scale: float = 50.0
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 512
    seed_base: int = 0
    """Training seeds: seed_base + round x 10,000 + scenario x 1,000 + i."""
    seed: int = 0
    init: str = ""
    """Weights (.npz) of a learner to continue from: it routes round 0 and warm-starts every fit ("" = none)."""


@dataclasses.dataclass
class Labelled:
    """Scored states: observations, masks and the oracle's per-instance scores (reward over the horizon, s)."""

    obs: list[np.ndarray] = dataclasses.field(default_factory=list)
    mask: list[np.ndarray] = dataclasses.field(default_factory=list)
    score: list[np.ndarray] = dataclasses.field(default_factory=list)

    def add(self, obs: np.ndarray, mask: np.ndarray, score: np.ndarray) -> None:
        self.obs.append(obs.astype(np.float32))
        self.mask.append(mask.astype(bool))
        self.score.append(score.astype(np.float64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.obs), np.concatenate(self.mask), np.concatenate(self.score)


def collect(
    weights: ScorerWeights | None,
    env_kwargs: Mapping[str, Any],
    seeds: Sequence[int],
    args: DaggerArgs,
    data: Labelled,
) -> dict[str, float]:
    """Run the learner (the heuristic if ``weights`` is None) on ``seeds``; score every ``label_every``-th state."""
    from cloudgym.baselines.llm_router import WorkloadAwareHeuristic

    env = make_vector_env(ENV_ID, len(seeds), env_kwargs)
    policy: BatchedPolicy = WorkloadAwareHeuristic(env) if weights is None else DaggerRouter(env, weights)
    oracle = LookaheadOracle(env, horizon=args.horizon)
    obs, _ = env.reset(seed=list(seeds))
    done = np.zeros(env.num_envs, bool)
    step, chosen_regret, states = 0, 0.0, 0
    info: dict[str, Any] = {}
    while not done.all():
        mask = env.action_masks()
        actions = policy.act(obs, mask)
        if step % args.label_every == 0:
            score = oracle.scores()
            data.add(obs, mask, score)
            best = np.where(mask, score, -np.inf).max(axis=1)
            chosen_regret += float((best - score[np.arange(len(seeds)), actions]).sum())
            states += len(seeds)
        obs, _, terminated, _, info = env.step(actions)
        done |= terminated
        step += 1
    e2e = float(np.mean(info["metrics"]["e2e_mean_s"]))
    env.close()
    oracle.branches.close()
    return {"e2e_mean_s": e2e, "regret_s": chosen_regret / max(states, 1), "states": float(states)}


def fit(
    data: Labelled, args: DaggerArgs, num_instances: int, init: ScorerWeights | None = None
) -> tuple[ScorerWeights, dict[str, float]]:
    """Minimise the expected regret of the softmax over the learner's logits on every scored state.

    ``init`` warm-starts the network (else its residual starts at zero: the heuristic).
    """
    import torch

    torch.manual_seed(args.seed)
    obs, mask, score = data.arrays()
    x = torch.as_tensor(instance_inputs(obs, num_instances))
    impact = torch.as_tensor(obs[:, : INSTANCE_FEATURES * num_instances].reshape(len(obs), num_instances, -1)[:, :, 6])
    best = np.where(mask, score, -np.inf).max(axis=1, keepdims=True)
    regret = torch.as_tensor(np.where(mask, best - score, 0.0), dtype=torch.float32)
    allowed = torch.as_tensor(mask)
    model = _torch_scorer(x.shape[2], args.hidden, args.heuristic_scale)
    if init is not None:
        _load_into(model, init)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    loss_value = float("nan")
    for _ in range(args.epochs):
        order = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(x), args.batch_size):
            idx = order[start : start + args.batch_size]
            logits = model(x[idx], impact[idx]).masked_fill(~allowed[idx], -1e9)
            loss = (torch.softmax(logits, dim=1) * regret[idx]).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        loss_value = total / count
    weights = _weights_of(model)
    chosen = np.argmax(np.where(mask, weights.logits(obs, num_instances), -np.inf), axis=1)
    heuristic = np.argmin(np.where(mask, impact.numpy(), np.inf), axis=1)
    rows = np.arange(len(obs))
    reg = regret.numpy()
    return weights, {
        "train_expected_regret_s": loss_value,
        "train_argmax_regret_s": float(reg[rows, chosen].mean()),
        "train_heuristic_regret_s": float(reg[rows, heuristic].mean()),
        "states": float(len(obs)),
    }


def train(
    args: DaggerArgs, log: Any = print, on_round: Any = None
) -> tuple[ScorerWeights, list[dict[str, float]], float]:
    """DAgger rounds over the scenarios; returns the last weights, per-round logs and the wall seconds.

    ``on_round(r, weights)`` (if given) sees each round's refitted weights, e.g. to keep them.
    """
    from cloudgym.envs.llm_router import LLMRouterConfig

    sizes = {len(LLMRouterConfig.scenario(s).instances) for s in args.scenarios}
    if len(sizes) != 1:
        raise ValueError(f"DAgger scenarios must share one instance count (one scorer input), got {sorted(sizes)}")
    started = time.perf_counter()
    data = Labelled()
    init = ScorerWeights.load(Path(args.init)) if args.init else None
    weights: ScorerWeights | None = init
    history: list[dict[str, float]] = []
    n = sizes.pop()
    for r in range(args.rounds):
        for k, scenario in enumerate(args.scenarios):
            seeds = [args.seed_base + r * 10_000 + k * 1_000 + i for i in range(args.envs_per_round)]
            stats = collect(weights, {"scenario": scenario}, seeds, args, data)
            log(f"round {r} {scenario}: learner e2e {stats['e2e_mean_s']:.3f} s, regret {stats['regret_s']:.4f} s, "
                f"{time.perf_counter() - started:.0f} s")  # fmt: skip
            history.append({"round": float(r), "scenario": float(k), **stats})
        weights, fit_stats = fit(data, args, n, init)
        log(f"round {r} fit: {fit_stats}")
        if on_round is not None:
            on_round(r, weights)
        history.append({"round": float(r), **fit_stats})
    assert weights is not None
    return weights, history, time.perf_counter() - started


def signal_correlation(
    env_kwargs: Mapping[str, Any], seeds: Sequence[int], horizons: Sequence[int], points: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Correlation of short-horizon branch scores with the episode-level effect of the same decision.

    On each seed's heuristic trajectory, ``points`` decision times are drawn;
    at each, every instance is tried and the rest of the episode (drain
    included) played under the heuristic: the difference of a branch's total
    from the heuristic's own choice is the true episode-level effect of
    deviating there. The same difference over ``h`` requests, and over the
    one step the env's reward covers, are the candidate signals.
    """
    from cloudgym.baselines.llm_router import WorkloadAwareHeuristic

    env = make_vector_env(ENV_ID, len(seeds), env_kwargs)
    length = env.config.requests_per_episode
    # The same decision times in every sub-env: each costs one batched roll to the episode's end.
    rng = np.random.default_rng(seed)
    at = np.sort(rng.choice(np.arange(length // 20, length - length // 20), size=points, replace=False))
    heuristic = WorkloadAwareHeuristic(env)
    oracles = {h: LookaheadOracle(env, horizon=h) for h in (1, *horizons)}
    full = LookaheadOracle(env, horizon=length + 10)  # to the episode's end
    obs, _ = env.reset(seed=list(seeds))
    out: dict[int, list[np.ndarray]] = {h: [] for h in oracles}
    truth: list[np.ndarray] = []
    for step in range(length):
        mask = env.action_masks()
        actions = heuristic.act(obs, mask)
        if step in at:
            rows = np.arange(len(seeds))
            ref = full.scores()
            base = ref[np.arange(len(seeds)), actions][:, None]
            keep = mask & (np.arange(mask.shape[1])[None, :] != actions[:, None])
            truth.append((ref - base)[rows][keep[rows]])
            for h, oracle in oracles.items():
                sc = oracle.scores()
                out[h].append((sc - sc[np.arange(len(seeds)), actions][:, None])[rows][keep[rows]])
        obs, _, _, _, _ = env.step(actions)
    true = np.concatenate(truth)
    result: dict[str, Any] = {"pairs": int(true.size), "true_sd_s": float(true.std())}
    for h, parts in out.items():
        est = np.concatenate(parts)
        result[f"h{h}"] = {
            "pearson": float(np.corrcoef(est, true)[0, 1]),
            "sign_agreement": float(np.mean(np.sign(est) == np.sign(true))),
        }
    env.close()
    return result


def paired_summary(base: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``other`` against ``base`` paired by seed: mean E2E change (%), its 95% CI (paired t), seeds won, SLO change.

    Rows are evaluation rows (``seed``, ``e2e_mean_s``, ``slo_attainment_pct``); the change of each seed is
    relative to the base's mean over the paired seeds, so the CI is that of a mean difference.
    """
    from scipy import stats

    a = {int(r["seed"]): r for r in base}
    b = {int(r["seed"]): r for r in other}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f"paired_summary needs at least two common seeds, got {len(seeds)}")
    x = np.array([float(a[s]["e2e_mean_s"]) for s in seeds])
    y = np.array([float(b[s]["e2e_mean_s"]) for s in seeds])
    d = y - x
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    slo = np.array([float(b[s]["slo_attainment_pct"]) - float(a[s]["slo_attainment_pct"]) for s in seeds])
    return {
        "seeds": float(len(seeds)),
        "base_e2e_s": float(x.mean()),
        "other_e2e_s": float(y.mean()),
        "change_pct": float(100 * d.mean() / x.mean()),
        "ci_low_pct": float(100 * (d.mean() - half) / x.mean()),
        "ci_high_pct": float(100 * (d.mean() + half) / x.mean()),
        "seeds_won": float(np.sum(d < 0)),
        "slo_change_pts": float(slo.mean()),
    }


def _paired_cli(argv: Sequence[str]) -> None:
    """``python -m cloudgym.agents.llm_router_dagger BASE.csv OTHER.csv``: print :func:`paired_summary`."""
    import csv

    if len(argv) != 2:
        raise SystemExit("usage: python -m cloudgym.agents.llm_router_dagger BASE.csv OTHER.csv")
    rows = []
    for path in argv:
        with Path(path).open() as f:
            rows.append(list(csv.DictReader(f)))
    summary = paired_summary(rows[0], rows[1])
    print(", ".join(f"{k}={v:.3f}" for k, v in summary.items()))


if __name__ == "__main__":
    import sys

    _paired_cli(sys.argv[1:])
