"""The AI-datacenter episode generator: seeded, shock draws that do not move the demand path."""

from __future__ import annotations

import dataclasses

import numpy as np

from cloudgym.envs.workloads.fleet import FleetGenerator, ShockSpec, gpu_roadmap

T = 40


def _generator(**overrides: object) -> FleetGenerator:
    base = FleetGenerator(
        roadmap=gpu_roadmap(2016, T),
        horizon_quarters=T,
        base_year=2016,
        initial_demand=4e6,
        growth_per_quarter=1.0355,
        growth_noise=0.03,
        migration_fraction=0.5,
        distilled_fraction=0.1,
        shocks=ShockSpec(),
        shock_probability=(0.0, 0.0, 0.0, 0.0),
        shock_window=(8, 30),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_same_seed_same_instance() -> None:
    gen = _generator(shock_probability=(0.5, 0.5, 0.5, 0.5))
    a, b = gen.sample(np.random.default_rng(3)), gen.sample(np.random.default_rng(3))
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))


def test_shocks_leave_the_pre_shock_path_and_the_draws_alone() -> None:
    calm = _generator().sample(np.random.default_rng(0))
    forced = _generator(fixed_shock_quarter=(12, 16, 20, 24)).sample(np.random.default_rng(0))
    np.testing.assert_array_equal(forced.shock_quarter, [12, 16, 20, 24])
    np.testing.assert_array_equal(calm.shock_quarter, [-1, -1, -1, -1])
    np.testing.assert_array_equal(calm.demand[:12], forced.demand[:12])
    np.testing.assert_allclose(forced.demand[12:], 3.0 * calm.demand[12])  # jumps to x3 and plateaus
    assert np.all(forced.primary_params[16:] <= calm.primary_params[16:] + 1e-6)
    rel = _generator().roadmap.release_quarter
    np.testing.assert_array_equal(forced.server_tflops[rel < 20], calm.server_tflops[rel < 20])
    last, first = np.flatnonzero(rel < 20)[-1], np.flatnonzero(rel >= 20)[0]
    gamma = 3.0 * 1.05 ** ((rel[first] - 20) / 4)  # x3 the last earlier generation, +5%/year after
    np.testing.assert_allclose(forced.server_tflops[first], gamma * calm.server_tflops[last])
    np.testing.assert_array_equal(forced.price_usd[rel < 24], calm.price_usd[rel < 24])
    assert np.all(forced.price_usd[rel >= 24] <= calm.price_usd[rel >= 24])
