"""LLM inference requests: the Azure LLM trace loader, calibrated generators, output-length buckets.

Two published workload shapes (Patel et al., "Splitwise", ISCA 2024, Azure
LLM inference trace 2023, CC-BY 4.0):

* **coding**: sampled from quantiles of the shared coding trace
  (``../shared/traces/AzureLLMInferenceTrace_code.csv``, 8,819 requests):
  prompt median 1,469 / p99 7,436 tokens (a pile-up at ~7.4k, the service's
  8k window), output median 13 / p99 252 tokens, no correlation between the
  two (Pearson r of the logs -0.005). The quantile tables below were
  computed with ``numpy.percentile(..., method="inverted_cdf")`` on that file;
  between quantiles the generator interpolates log-linearly.
* **conversation**: the published medians (prompt ~1,020, output ~129
  tokens; DOMAIN.md section 2). The conversation trace is not shipped here,
  so the tails are our assumption: log-normal with sigma 0.85 (prompt) and
  0.75 (output), i.e. p99 about 7x and 6x the median.

Requests of a mix draw their class i.i.d. with the mix's shares. Arrivals
form a renewal process at a given mean rate with a given coefficient of
variation of the gaps (gamma; 1 is Poisson). The real trace is far burstier
(gap CV 13, minutes of silence): replay it with :func:`trace_requests`.

**Output-length hints.** A real router predicts output length from the
prompt's text; we have token counts, not text. Each synthetic request
therefore carries a small ``hint`` vector standing in for what a text encoder
extracts: through a Gaussian copula, the output's normal score is
``rho z + sqrt(1 - rho^2) e`` and the hint is ``z`` plus a little noise, so
the hint explains a share ``hint_r2 = rho^2`` of the output's (normal-score)
variance, on top of the request's class. That share is a modelling choice
(default 0.6); the predictor's accuracy follows from it and is reported, not
assumed. Trace requests have no hint (``hint_known`` 0): a predictor then has
only the prompt length, which says nothing about the output here.

Episode generators (:class:`SyntheticRequestGenerator`,
:class:`TraceRequestGenerator`) make one episode's :class:`LLMRequests`, the
same type from both; length predictors (:class:`BucketPredictor`,
:class:`ClassPrior`, :class:`OracleLengths`) give what a router knows of each
request's output length. Nothing here knows an environment; generators take
the caller's ``np.random.Generator`` and return frozen arrays.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cloudgym.envs.numerics import normal_cdf, normal_ppf
from cloudgym.envs.workloads.traces import TraceCache, TraceFormatError, csv_rows, find_trace, parse_int, utc_seconds

REQUEST_CLASSES: tuple[str, ...] = ("coding", "conversation")
"""Request classes, in the order of the one-hot encoding and of mix shares."""

BUCKET_EDGES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
"""Upper edges (exclusive) of the output-length buckets, tokens: [1,16), [16,32), ..., [512, inf)."""
NUM_BUCKETS = len(BUCKET_EDGES) + 1

HINT_DIM = 4
"""Width of the text-proxy hint vector."""
HINT_NOISE = 0.5
"""Standard deviation of the noise on each hint component (the components share one latent)."""


def output_bucket(tokens: np.ndarray) -> np.ndarray:
    """Bucket index of output lengths (0 .. NUM_BUCKETS-1)."""
    return np.searchsorted(np.asarray(BUCKET_EDGES), np.asarray(tokens), side="right")


@dataclasses.dataclass(frozen=True)
class LLMRequests:
    """One episode's requests, in arrival order."""

    arrival_s: np.ndarray  # (T,) float64, arrival time from the episode start, s (non-decreasing)
    prompt_tokens: np.ndarray  # (T,) int64, >= 1
    output_tokens: np.ndarray  # (T,) int64, >= 1, tokens the model generates for it
    request_class: np.ndarray  # (T,) int64, index into REQUEST_CLASSES
    hint: np.ndarray  # (T, HINT_DIM) float32, text-proxy features (zeros when unknown)
    hint_known: np.ndarray  # (T,) bool, whether the hint carries information

    def __len__(self) -> int:
        return int(self.arrival_s.size)


# ----------------------------------------------------------------------------- length distributions


@dataclasses.dataclass(frozen=True)
class QuantileTable:
    """A distribution given by quantiles, sampled by inverse CDF with log-linear interpolation."""

    probs: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        p, v = np.asarray(self.probs), np.asarray(self.values)
        if p.size != v.size or p.size < 2 or p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0):
            raise ValueError("a QuantileTable needs increasing probabilities from 0 to 1, one value each")
        if np.any(v <= 0) or np.any(np.diff(v) < 0):
            raise ValueError("quantile values must be positive and non-decreasing")

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Values at probabilities ``u``."""
        return np.exp(np.interp(u, self.probs, np.log(self.values)))

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        """Values at standard-normal scores ``z`` (a Gaussian copula's marginal)."""
        return self.quantile(normal_cdf(z))


@dataclasses.dataclass(frozen=True)
class LogNormal:
    """A log-normal length distribution given by its median and log-space sigma, clipped to [low, high]."""

    median: float
    sigma: float
    low: float = 1.0
    high: float = 8192.0

    def quantile(self, u: np.ndarray) -> np.ndarray:
        return self.from_normal(normal_ppf(u))

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        return np.clip(self.median * np.exp(self.sigma * np.asarray(z)), self.low, self.high)


LengthDistribution = QuantileTable | LogNormal

_PROBS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)


@dataclasses.dataclass(frozen=True)
class WorkloadShape:
    """Prompt and output length distributions of one request class."""

    name: str
    prompt: LengthDistribution
    output: LengthDistribution


CODING = WorkloadShape(
    name="coding",
    prompt=QuantileTable(
        _PROBS,
        (3, 17, 35, 75, 147, 385, 770, 1075, 1469, 1909, 2433, 3193, 5194, 7315, 7436, 7436, 7436, 7437, 7437),
    ),
    output=QuantileTable(_PROBS, (6, 6, 6, 6, 7, 8, 9, 11, 13, 16, 20, 29, 55, 90, 172, 252, 361, 831, 1899)),
)
"""The Azure 2023 coding trace's lengths (quantiles of the shared file)."""

CONVERSATION = WorkloadShape(
    name="conversation",
    prompt=LogNormal(median=1020.0, sigma=0.85, high=7437.0),
    output=LogNormal(median=129.0, sigma=0.75, high=2048.0),
)
"""The Azure 2023 conversation workload: published medians, assumed log-normal tails."""

SHAPES: dict[str, WorkloadShape] = {"coding": CODING, "conversation": CONVERSATION}


def _grid(n: int = 20_000) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


@functools.lru_cache(maxsize=32)
def mean_lengths(mix: tuple[float, ...]) -> tuple[float, float]:
    """(mean prompt, mean output) tokens of a mix (shares per REQUEST_CLASSES), by quadrature of the quantiles."""
    shares = np.asarray(mix, np.float64) / np.sum(mix)
    u = _grid()
    prompt = sum(s * float(np.mean(np.round(SHAPES[w].prompt.quantile(u)))) for s, w in zip(shares, REQUEST_CLASSES))
    output = sum(s * float(np.mean(np.round(SHAPES[w].output.quantile(u)))) for s, w in zip(shares, REQUEST_CLASSES))
    return prompt, output


@functools.lru_cache(maxsize=32)
def bucket_priors(request_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket probabilities, mean output tokens per bucket) of a class, by quadrature."""
    out = np.maximum(np.round(SHAPES[REQUEST_CLASSES[request_class]].output.quantile(_grid())), 1)
    buckets = output_bucket(out)
    probs = np.bincount(buckets, minlength=NUM_BUCKETS) / out.size
    means = np.array(
        [out[buckets == k].mean() if np.any(buckets == k) else _bucket_middle(k) for k in range(NUM_BUCKETS)]
    )
    return probs, means


def _bucket_middle(k: int) -> float:
    edges = (1, *BUCKET_EDGES, 2 * BUCKET_EDGES[-1])
    return math.sqrt(edges[k] * edges[k + 1])


# ----------------------------------------------------------------------------- generators


def gamma_arrivals(rng: np.random.Generator, n: int, rate_per_s: float, cv: float = 1.0) -> np.ndarray:
    """Arrival times of a renewal process: gamma gaps with mean 1/rate and coefficient of variation cv."""
    if rate_per_s <= 0 or cv <= 0:
        raise ValueError(f"rate_per_s and cv must be positive, got {rate_per_s}, {cv}")
    shape = 1.0 / cv**2
    gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n)
    gaps[0] = 0.0  # the episode starts with its first arrival
    return np.cumsum(gaps)


def sample_requests(
    rng: np.random.Generator,
    *,
    n: int,
    rate_per_s: float,
    mix: Sequence[float] = (0.5, 0.5),
    arrival_cv: float = 1.0,
    hint_r2: float = 0.6,
    max_context_tokens: int = 8192,
) -> LLMRequests:
    """``n`` synthetic requests of a coding/conversation mix arriving at ``rate_per_s`` on average.

    Outputs are clipped so that prompt + output fits ``max_context_tokens`` (a
    model stops at its window; the coding trace never exceeds 8,192).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(mix) != len(REQUEST_CLASSES) or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(
            f"mix must give {len(REQUEST_CLASSES)} non-negative shares ({', '.join(REQUEST_CLASSES)}), got {mix}"
        )
    if not 0 <= hint_r2 <= 1:
        raise ValueError(f"hint_r2 must be in [0, 1], got {hint_r2}")
    arrival = gamma_arrivals(rng, n, rate_per_s, arrival_cv)
    shares = np.asarray(mix, np.float64) / np.sum(mix)
    request_class = rng.choice(len(REQUEST_CLASSES), size=n, p=shares)
    z_prompt = rng.standard_normal(n)
    latent = rng.standard_normal(n)
    noise = rng.standard_normal(n)
    hint_noise = rng.standard_normal((n, HINT_DIM))
    z_output = math.sqrt(hint_r2) * latent + math.sqrt(1.0 - hint_r2) * noise
    prompt = np.zeros(n, np.int64)
    output = np.zeros(n, np.int64)
    for k, name in enumerate(REQUEST_CLASSES):
        sel = request_class == k
        shape = SHAPES[name]
        prompt[sel] = np.round(shape.prompt.from_normal(z_prompt[sel]))
        output[sel] = np.round(shape.output.from_normal(z_output[sel]))
    prompt = np.clip(prompt, 1, max_context_tokens - 1)
    output = np.clip(output, 1, max_context_tokens - prompt)
    hint = (latent[:, None] + HINT_NOISE * hint_noise).astype(np.float32)
    return LLMRequests(
        arrival_s=arrival,
        prompt_tokens=prompt,
        output_tokens=output,
        request_class=request_class.astype(np.int64),
        hint=hint,
        hint_known=np.ones(n, bool),
    )


# ----------------------------------------------------------------------------- the Azure trace


@dataclasses.dataclass(frozen=True)
class LLMTrace:
    """A parsed Azure LLM inference trace (``TIMESTAMP, ContextTokens, GeneratedTokens``)."""

    path: str
    arrival_s: np.ndarray  # (R,) float64, seconds since the first request
    prompt_tokens: np.ndarray  # (R,) int64
    output_tokens: np.ndarray  # (R,) int64
    request_class: int = 0
    """Index in REQUEST_CLASSES of the workload the trace holds (every request is of it)."""

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def mean_rate_per_s(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self) - 1) / span if span > 0 else math.inf

    @property
    def mean_lengths(self) -> tuple[float, float]:
        """(mean prompt, mean output) tokens of the whole trace."""
        return float(self.prompt_tokens.mean()), float(self.output_tokens.mean())


MAX_TOKENS = 1 << 24
"""Largest token count a trace row may give (16,777,216, far above any context window): more is a corrupt field."""

_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TRACES: TraceCache[LLMTrace] = TraceCache(maxsize=8)


def load_azure_llm_trace(path: str | Path, *, request_class: str = "coding") -> LLMTrace:
    """Parse an Azure LLM inference trace CSV (plain, gzip or xz); errors name the file, line, column and problem.

    ``path`` is found by :func:`~cloudgym.envs.workloads.traces.find_trace`
    (absolute, or under ``$CLOUDGYM_TRACES`` or ``../shared/traces``).
    TIMESTAMPs are read as UTC; rows must be in time order with token counts
    in [1, MAX_TOKENS] (the published coding and conversation traces are); a
    row repeating the previous one exactly is refused as a duplicate.
    Arrivals are returned in seconds from the first row; every request is of
    ``request_class`` (one of REQUEST_CLASSES: which workload the file holds).
    Parsed files are cached by path, size and modification time.
    """
    if request_class not in REQUEST_CLASSES:
        raise ValueError(f"request_class must be one of {', '.join(REQUEST_CLASSES)}, got {request_class!r}")
    file = find_trace(path)
    trace = _TRACES.get([file], lambda: _parse_llm_trace(file))
    return dataclasses.replace(trace, request_class=REQUEST_CLASSES.index(request_class))


def _parse_llm_trace(file: Path) -> LLMTrace:
    # Typed arrays, not lists of Python objects: 24 bytes a row while reading, and no copy into numpy.
    times = array.array("d")
    prompts = array.array("q")
    outputs = array.array("q")
    previous: tuple[float, int, int] | None = None
    for line, row in csv_rows(file, _HEADER):
        try:
            t = utc_seconds(row[0])
        except ValueError as exc:
            raise TraceFormatError(file, line, f"{row[0]!r} is not a timestamp ({exc})", "TIMESTAMP") from None
        p = parse_int(file, line, "ContextTokens", row[1], low=1, high=MAX_TOKENS)
        o = parse_int(file, line, "GeneratedTokens", row[2], low=1, high=MAX_TOKENS)
        if previous is not None:
            if t < previous[0]:
                raise TraceFormatError(file, line, f"{row[0].strip()} is earlier than the previous row", "TIMESTAMP")
            if (t, p, o) == previous:
                raise TraceFormatError(file, line, "the row repeats the previous one (a duplicated request)")
        previous = (t, p, o)
        times.append(t)
        prompts.append(p)
        outputs.append(o)
    if not times:
        raise TraceFormatError(file, 2, "no requests after the header")
    arrival = np.frombuffer(times, np.float64)
    return LLMTrace(
        path=str(file),
        arrival_s=arrival - arrival[0],
        prompt_tokens=np.frombuffer(prompts, np.int64),
        output_tokens=np.frombuffer(outputs, np.int64),
    )


def trace_requests(
    trace: LLMTrace,
    rng: np.random.Generator,
    *,
    n: int,
    rate_per_s: float | None = None,
    time_scale: float = 1.0,
) -> LLMRequests:
    """``n`` consecutive requests of a trace from a random start, clock rebased to 0 and scaled.

    With ``rate_per_s`` the window's clock is scaled so its mean arrival rate
    is that rate (``time_scale`` is then ignored); otherwise arrival times are
    multiplied by ``time_scale`` (0.5 = twice as fast). Every request is
    of the trace's ``request_class`` (the shared trace is the coding one), with no hint.
    """
    if n < 2 or n > len(trace):
        raise ValueError(f"n must be in [2, {len(trace)}] for {trace.path}, got {n}")
    start = int(rng.integers(0, len(trace) - n + 1))
    window = slice(start, start + n)
    arrival = trace.arrival_s[window] - trace.arrival_s[start]
    if rate_per_s is not None:
        span = float(arrival[-1])
        scale = (n - 1) / (rate_per_s * span) if span > 0 else 1.0
    else:
        scale = time_scale
    return LLMRequests(
        arrival_s=arrival * scale,
        prompt_tokens=trace.prompt_tokens[window].copy(),
        output_tokens=trace.output_tokens[window].copy(),
        request_class=np.full(n, trace.request_class, np.int64),
        hint=np.zeros((n, HINT_DIM), np.float32),
        hint_known=np.zeros(n, bool),
    )


# ----------------------------------------------------------------------------- episode generators


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticRequestGenerator:
    """Episodes of ``n`` synthetic requests of a coding/conversation mix (:func:`sample_requests`)."""

    n: int
    rate_per_s: float
    mix: tuple[float, ...]
    arrival_cv: float
    hint_r2: float
    max_context_tokens: int

    def sample(self, rng: np.random.Generator) -> LLMRequests:
        return sample_requests(
            rng,
            n=self.n,
            rate_per_s=self.rate_per_s,
            mix=self.mix,
            arrival_cv=self.arrival_cv,
            hint_r2=self.hint_r2,
            max_context_tokens=self.max_context_tokens,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceRequestGenerator:
    """Episodes of ``n`` consecutive requests of a loaded trace from a random start (:func:`trace_requests`).

    The window's clock is scaled to ``rate_per_s`` when it is set, otherwise multiplied by ``time_scale``.
    """

    trace: LLMTrace
    n: int
    rate_per_s: float | None = None
    time_scale: float = 1.0

    def sample(self, rng: np.random.Generator) -> LLMRequests:
        return trace_requests(self.trace, rng, n=self.n, rate_per_s=self.rate_per_s, time_scale=self.time_scale)


# ----------------------------------------------------------------------------- length prediction (numpy inference)


class LengthPredictor(Protocol):
    """What a router knows of each request's output length: bucket probabilities and an expected length."""

    def predict(self, requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
        """(T, K) output-bucket probabilities and (T,) predicted output tokens."""
        ...


def predictor_features(requests: LLMRequests) -> np.ndarray:
    """(T, F) float32 features a router has: log prompt length, class one-hot, hint and whether it is known."""
    n = len(requests)
    one_hot = np.zeros((n, len(REQUEST_CLASSES)), np.float32)
    one_hot[np.arange(n), requests.request_class] = 1.0
    known = requests.hint_known.astype(np.float32)[:, None]
    return np.concatenate(
        [
            (np.log1p(requests.prompt_tokens) / math.log1p(8192)).astype(np.float32)[:, None],
            one_hot,
            requests.hint * known,
            known,
        ],
        axis=1,
    )


NUM_FEATURES = 1 + len(REQUEST_CLASSES) + HINT_DIM + 1


@dataclasses.dataclass(frozen=True)
class BucketPredictor:
    """An MLP (ReLU hidden layers, softmax output) over :func:`predictor_features`, run in numpy.

    Trained with torch by ``cloudgym.agents.length_predictor``, which saves the
    weights with :meth:`save`; ``bucket_tokens`` is the mean output of each
    bucket in the training data (the expected length is their probability-weighted sum).
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    bucket_tokens: np.ndarray  # (K,) float64

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
        """(T, K) bucket probabilities and (T,) expected output tokens (probability-weighted bucket means)."""
        probs = self.probabilities(predictor_features(requests))
        return probs, probs @ self.bucket_tokens

    def save(self, path: str | Path) -> None:
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"b{i}": b for i, b in enumerate(self.biases)}
        arrays |= {"bucket_tokens": self.bucket_tokens, "edges": np.asarray(BUCKET_EDGES)}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> BucketPredictor:
        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(
                f"{file}: no length-predictor weights (train them: python scripts/train_length_predictor.py)"
            )
        with np.load(file) as data:
            if tuple(int(e) for e in data["edges"]) != BUCKET_EDGES:
                raise ValueError(f"{file}: trained for buckets {data['edges'].tolist()}, not {list(BUCKET_EDGES)}")
            layers = sum(1 for k in data.files if k.startswith("w"))
            weights = tuple(data[f"w{i}"].astype(np.float32) for i in range(layers))
            biases = tuple(data[f"b{i}"].astype(np.float32) for i in range(layers))
            if weights[0].shape[0] != NUM_FEATURES or weights[-1].shape[1] != NUM_BUCKETS:
                raise ValueError(f"{file}: layer shapes {[w.shape for w in weights]} do not fit "
                                 f"{NUM_FEATURES} features and {NUM_BUCKETS} buckets")  # fmt: skip
            return cls(weights=weights, biases=biases, bucket_tokens=data["bucket_tokens"].astype(np.float64))


def prior_probabilities(requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) bucket probabilities and (T,) expected tokens knowing only each request's class."""
    probs = np.zeros((len(requests), NUM_BUCKETS))
    tokens = np.zeros(len(requests))
    for k in range(len(REQUEST_CLASSES)):
        sel = requests.request_class == k
        p, means = bucket_priors(k)
        probs[sel] = p
        tokens[sel] = float(p @ means)
    return probs, tokens


def oracle_probabilities(requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) one-hot true buckets and (T,) true output lengths (the upper bound a predictor can reach)."""
    probs = np.zeros((len(requests), NUM_BUCKETS))
    probs[np.arange(len(requests)), output_bucket(requests.output_tokens)] = 1.0
    return probs, requests.output_tokens.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class ClassPrior:
    """Predicts from the request's class alone (:func:`prior_probabilities`)."""

    def predict(self, requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
        return prior_probabilities(requests)


@dataclasses.dataclass(frozen=True)
class OracleLengths:
    """Knows the true output lengths (:func:`oracle_probabilities`): the upper bound of any predictor."""

    def predict(self, requests: LLMRequests) -> tuple[np.ndarray, np.ndarray]:
        return oracle_probabilities(requests)
