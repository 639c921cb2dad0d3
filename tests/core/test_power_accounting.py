"""Power models never draw negative power and never rise under a cap; meters and ledgers add up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs.core.accounting import Ledger
from cloudgym.envs.core.power import EnergyMeter, GpuPowerModel, ServerPowerModel


@settings(max_examples=100, deadline=None)
@given(
    activity=st.floats(-1.0, 2.0),
    f1=st.floats(100.0, 2000.0),
    f2=st.floats(100.0, 2000.0),
)
def test_gpu_power_is_non_negative_and_monotone_in_frequency(activity: float, f1: float, f2: float) -> None:
    gpu = GpuPowerModel()
    p1, p2 = gpu.power_w(np.array(activity), f1), gpu.power_w(np.array(activity), f2)
    assert p1 >= 0
    assert p2 >= 0
    if f1 <= f2:
        assert p1 <= p2 + 1e-9  # a lower cap never raises power
    assert gpu.power_w(np.array(0.0), f1) == pytest.approx(gpu.idle_w)


def test_a100_calibration_matches_polca() -> None:
    gpu = GpuPowerModel()
    # POLCA: 1410 -> ~1110 MHz saves ~20% of peak power.
    saving = 1 - gpu.power_w(np.array(1.0), 1110.0) / gpu.power_w(np.array(1.0), 1410.0)
    assert 0.15 <= saving <= 0.25
    server = ServerPowerModel()
    assert 6000 <= server.peak_w <= 7000  # DGX-A100 ~6.5 kW
    assert 0.4 <= server.gpus * server.gpu.tdp_w / server.peak_w <= 0.6  # GPUs ~half of server power
    assert server.power_w(np.array(0.0), 1410.0) == pytest.approx(server.idle_w)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tdp_w": 0}, "tdp_w"), ({"idle_fraction": 1.5}, "idle_fraction"), ({"min_freq_mhz": 2000}, "min_freq")],
)
def test_power_config_errors_are_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpuPowerModel(**kwargs)


def test_energy_meter_integrates_and_rejects_negative_power() -> None:
    meter = EnergyMeter.zeros(2, 3)
    meter.add(np.full((2, 3), 1000.0), np.array([3600.0, 1800.0]))
    np.testing.assert_allclose(meter.kwh(), [3.0, 1.5])
    with pytest.raises(ValueError, match="negative"):
        meter.add(np.full((2, 3), -1.0), 1.0)
    meter.reset_envs(np.array([0]))
    np.testing.assert_allclose(meter.kwh(), [0.0, 1.5])


def test_ledger_breakdown_sums_to_totals() -> None:
    ledger = Ledger.zeros(3, ("capex", "energy"))
    for step in range(4):
        ledger.begin_step()
        ledger.charge("capex", np.array([1.0, 2.0, 3.0]))
        ledger.charge("energy", np.full(3, float(step)))
        breakdown = ledger.step_breakdown()
        np.testing.assert_allclose(breakdown["cost/capex"] + breakdown["cost/energy"], ledger.step_total())
    np.testing.assert_allclose(ledger.episode_total(), [4 + 6, 8 + 6, 12 + 6])
    with pytest.raises(KeyError, match="unknown ledger category"):
        ledger.charge("typo", np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        ledger.charge("capex", np.array([np.nan, 0, 0]))
    with pytest.raises(ValueError, match="duplicate"):
        Ledger.zeros(1, ("a", "a"))
