"""Response-length predictor for LLMRouter-v0: an output-length bucket from what a router knows (torch).

Jain et al. fine-tune DistilBERT on prompt text to predict an output-length
bucket. Our requests have token counts, not text, so the features are what a
router really has here (:func:`cloudgym.envs.workloads.llm.predictor_features`):
the prompt length, the request's class (the endpoint it came from) and, for
synthetic requests, a small text-proxy hint whose informativeness is a
workload knob (``hint_r2``); the real coding trace has no hint.

Training data come only from the calibrated generators: requests of a
coding/conversation mix with their hints known, and the same with hints
unknown (so the predictor also serves trace replays). The model is a small
MLP trained with cross-entropy; its weights are exported to numpy
(:class:`~cloudgym.envs.workloads.llm.BucketPredictor`), which the env runs
without torch.

Accuracy is reported honestly on held-out data (``predictor.yaml`` beside the
weights): top-1 and within-one-bucket accuracy against the majority bucket
and the class prior, on synthetic requests with and without hints and on the
real Azure coding trace (whose prompt length carries no information on its
output length, so nothing beats the prior there). Train and ship it with
``python scripts/train_length_predictor.py --ship``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cloudgym.agents.checkpoints import CHECKPOINT_ROOT
from cloudgym.envs.workloads import llm as workloads
from cloudgym.envs.workloads.llm import NUM_BUCKETS, NUM_FEATURES, BucketPredictor, LLMRequests

SHIP_DIR = CHECKPOINT_ROOT / "LLMRouter-v0" / "length_predictor"
"""Where the env's default predictor lives (``predictor.npz`` and ``predictor.yaml``)."""


@dataclasses.dataclass
class Args:
    samples: int = 200_000
    epochs: int = 6
    hidden: int = 64
    lr: float = 3e-3
    batch_size: int = 1024
    seed: int = 0
    hint_r2: float = 0.6
    unknown_hint_share: float = 0.3
    trace: Path | None = Path("../shared/traces/AzureLLMInferenceTrace_code.csv")
    out: Path = Path("runs/LLMRouter-v0/length_predictor")
    ship: bool = False


def make_dataset(rng: np.random.Generator, n: int, hint_r2: float, unknown_hint_share: float) -> LLMRequests:
    """Synthetic requests of a 50/50 mix; a share of them with the hint hidden (as in trace replays)."""
    req = workloads.sample_requests(rng, n=n, rate_per_s=1.0, mix=(0.5, 0.5), hint_r2=hint_r2)
    hidden = rng.random(n) < unknown_hint_share
    return dataclasses.replace(req, hint_known=~hidden)


def _without_hints(req: LLMRequests) -> LLMRequests:
    return dataclasses.replace(req, hint_known=np.zeros(len(req), bool))


def build_model(hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, NUM_BUCKETS)
    )


def train(args: Args) -> tuple[BucketPredictor, dict[str, Any]]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = make_dataset(rng, args.samples, args.hint_r2, args.unknown_hint_share)
    x = torch.tensor(workloads.predictor_features(data))
    y = torch.tensor(workloads.output_bucket(data.output_tokens), dtype=torch.long)
    model = build_model(args.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(args.epochs):
        order = torch.randperm(x.shape[0])
        for start in range(0, x.shape[0], args.batch_size):
            batch = order[start : start + args.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    buckets = y.numpy()
    tokens = np.array(
        [data.output_tokens[buckets == k].mean() if np.any(buckets == k) else 1.0 for k in range(NUM_BUCKETS)]
    )
    linear = [m for m in model if isinstance(m, nn.Linear)]
    predictor = BucketPredictor(
        weights=tuple(m.weight.detach().numpy().T.copy() for m in linear),
        biases=tuple(m.bias.detach().numpy().copy() for m in linear),
        bucket_tokens=tokens,
    )
    return predictor, evaluate_predictor(predictor, args)


def accuracy_report(predictor: BucketPredictor, req: LLMRequests) -> dict[str, float]:
    """Top-1 and within-one-bucket accuracy of the predictor and of two baselines (majority, class prior)."""
    truth = workloads.output_bucket(req.output_tokens)
    probs = predictor.probabilities(workloads.predictor_features(req))
    guess = probs.argmax(axis=1)
    prior_probs, _ = workloads.prior_probabilities(req)
    prior_guess = prior_probs.argmax(axis=1)
    majority = np.bincount(truth, minlength=NUM_BUCKETS).argmax()
    expected = probs @ predictor.bucket_tokens
    return {
        "requests": float(len(req)),
        "accuracy": float(np.mean(guess == truth)),
        "within_one_bucket": float(np.mean(np.abs(guess - truth) <= 1)),
        "class_prior_accuracy": float(np.mean(prior_guess == truth)),
        "majority_accuracy": float(np.mean(truth == majority)),
        "expected_tokens_mae": float(np.mean(np.abs(expected - req.output_tokens))),
        "log_length_corr": float(np.corrcoef(np.log(expected), np.log(req.output_tokens))[0, 1]),
    }


def evaluate_predictor(predictor: BucketPredictor, args: Args) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 10_000)  # held out: never seen in training
    held_out = workloads.sample_requests(rng, n=50_000, rate_per_s=1.0, mix=(0.5, 0.5), hint_r2=args.hint_r2)
    report: dict[str, Any] = {
        "synthetic_mix_with_hint": accuracy_report(predictor, held_out),
        "synthetic_mix_without_hint": accuracy_report(predictor, _without_hints(held_out)),
    }
    if args.trace is not None and Path(args.trace).exists():
        trace = workloads.load_azure_llm_trace(args.trace)
        real = workloads.trace_requests(trace, np.random.default_rng(0), n=len(trace), time_scale=1.0)
        report["azure_coding_trace"] = accuracy_report(predictor, real)
    return report
