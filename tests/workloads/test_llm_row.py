"""The row load generator of GPUPowerCap-v0: load curves, warped arrivals, round-robin routing, lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs.workloads.llm import sample_requests
from cloudgym.envs.workloads.llm_row import (
    HIGH,
    LOW,
    RowLoadGenerator,
    azure_lengths,
    sample_load_curve,
    sample_row_requests,
    unit_renewal,
    warp_arrivals,
)


def fixed_lengths(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A generator-independent length sampler: prompt 100..999, output 1..99."""
    return rng.integers(100, 1000, n), rng.integers(1, 100, n)


@settings(max_examples=50, deadline=None)
@given(
    rates=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=20),
    points=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
)
def test_warped_points_land_where_the_cumulative_rate_reaches_them(rates: list[float], points: list[float]) -> None:
    rate = np.asarray(rates)
    total = rate.sum()
    tau = np.sort(np.asarray(points)) * total * 1.2  # some beyond the horizon
    t = warp_arrivals(tau, rate)
    inside = tau < total
    assert np.all(np.isinf(t[~inside]))
    # Slow reference: walk second by second.
    for x, got in zip(tau[inside], t[inside]):
        acc, second = 0.0, 0
        while acc + rate[second] <= x:
            acc += rate[second]
            second += 1
        assert got == pytest.approx(second + (x - acc) / rate[second], abs=1e-9)
    assert np.all(np.diff(t[inside]) >= 0)  # order is kept


def test_warp_rejects_non_positive_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        warp_arrivals(np.array([0.5]), np.array([1.0, 0.0]))


def test_unit_renewal_has_unit_rate_and_the_asked_cv() -> None:
    rng = np.random.default_rng(0)
    for cv in (0.5, 1.0, 2.0):
        times = unit_renewal(rng, 20_000.0, cv)
        gaps = np.diff(times)
        assert times.size == pytest.approx(20_000, rel=0.05 * max(cv, 1))
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)
        assert times[-1] < 20_000.0


def test_load_curve_level_volatility_and_ramp() -> None:
    rng = np.random.default_rng(1)
    flat = sample_load_curve(rng, 200_000, level_range=(0.5, 0.5), volatility=0.2, time_constant_s=30.0)
    logs = np.log(flat)
    assert logs.mean() == pytest.approx(np.log(0.5), abs=0.02)
    assert logs.std() == pytest.approx(0.2, rel=0.05)
    lag = np.corrcoef(logs[:-30], logs[30:])[0, 1]
    assert lag == pytest.approx(np.exp(-1.0), abs=0.03)  # OU autocorrelation at one time constant
    ramp = sample_load_curve(
        rng, 300, level_range=(1.0, 1.0), volatility=0.0, time_constant_s=60.0, ramp_from=0.5, ramp_s=100.0
    )
    np.testing.assert_allclose(ramp[:101], 0.5 + 0.5 * np.arange(101) / 100.0)
    np.testing.assert_allclose(ramp[100:], 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level_range": (0.0, 1.0)}, "level_range"),
        ({"volatility": -0.1}, "volatility"),
        ({"ramp_from": 1.5}, "ramp_from"),
    ],
)
def test_load_curve_bad_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"level_range": (0.5, 0.8), "volatility": 0.1, "time_constant_s": 60.0}
    with pytest.raises(ValueError, match=message):
        sample_load_curve(np.random.default_rng(0), 10, **{**base, **kwargs})  # type: ignore[arg-type]


def test_row_requests_follow_the_curve_and_round_robin_within_each_class() -> None:
    rng = np.random.default_rng(2)
    steps = 400
    load = np.linspace(0.5, 1.5, steps)
    req = sample_row_requests(
        rng, steps=steps, instances=(3, 5), peak_rate_per_instance=2.0, load=load, lengths=fixed_lengths
    )
    assert np.all(np.diff(req.arrival_s) >= 0)
    assert req.arrival_s.min() >= 0
    assert req.arrival_s.max() < steps
    for cls, (first, n) in ((HIGH, (0, 3)), (LOW, (3, 5))):
        mine = req.priority == cls
        expected = n * 2.0 * load.sum()
        assert mine.sum() == pytest.approx(expected, rel=4 / np.sqrt(expected))
        # Round-robin: the k-th request of the class goes to instance first + k mod n.
        np.testing.assert_array_equal(req.instance[mine], first + np.arange(mine.sum()) % n)
    # Arrivals follow the curve: the second half carries more than the first.
    bounds = req.step_bounds(steps)
    per_second = np.diff(bounds)
    assert per_second.sum() == len(req)
    assert per_second[steps // 2 :].sum() > 1.4 * per_second[: steps // 2].sum()
    np.testing.assert_array_equal(req.load, load)


def test_row_requests_bad_input_is_named() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="instances"):
        sample_row_requests(
            rng, steps=5, instances=(0, 0), peak_rate_per_instance=1.0, load=np.ones(5), lengths=fixed_lengths
        )
    with pytest.raises(ValueError, match="one value per step"):
        sample_row_requests(
            rng, steps=5, instances=(1, 1), peak_rate_per_instance=1.0, load=np.ones(4), lengths=fixed_lengths
        )


def test_azure_lengths_use_the_shared_generator_and_fit_the_context() -> None:
    sample = azure_lengths((0.5, 0.5), 4096)
    prompt, output = sample(np.random.default_rng(3), 20_000)
    assert prompt.min() >= 1
    assert output.min() >= 1
    assert np.all(prompt + output <= 4096)
    # Medians of the 50/50 coding (1,469 in, 13 out) / conversation (1,020 in, 129 out) mix.
    assert 1000 <= np.median(prompt) <= 1500
    assert 13 <= np.median(output) <= 129
    empty = sample(np.random.default_rng(3), 0)
    assert empty[0].size == 0
    assert empty[1].size == 0
    # The lengths are the shared generator's, draw for draw.
    shared = sample_requests(np.random.default_rng(4), n=500, rate_per_s=1.0, mix=(0.5, 0.5), max_context_tokens=4096)
    mine = sample(np.random.default_rng(4), 500)
    np.testing.assert_array_equal(mine[0], shared.prompt_tokens)
    np.testing.assert_array_equal(mine[1], shared.output_tokens)


def test_the_row_generator_draws_the_curve_then_the_requests_from_one_rng() -> None:
    kwargs = {"level_range": (0.6, 0.8), "volatility": 0.3, "time_constant_s": 20.0, "ramp_from": 0.5, "ramp_s": 50.0}
    generator = RowLoadGenerator(
        steps=120, instances=(2, 3), peak_rate_per_instance=1.5, load_cap=0.7, lengths=fixed_lengths, **kwargs
    )
    req = generator.sample(np.random.default_rng(5))
    rng = np.random.default_rng(5)
    load = np.minimum(sample_load_curve(rng, 120, **kwargs), 0.7)  # type: ignore[arg-type]
    expected = sample_row_requests(
        rng, steps=120, instances=(2, 3), peak_rate_per_instance=1.5, load=load, lengths=fixed_lengths
    )
    assert load.max() == 0.7  # the cap bites on this curve
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "priority", "instance", "load"):
        np.testing.assert_array_equal(getattr(req, field), getattr(expected, field))
