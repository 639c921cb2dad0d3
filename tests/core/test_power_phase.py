"""LLM phase activity (power.py): prefill near TDP, decode at its plateau, idle at the floor; the bounds hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudgym.envs.core.power import GpuPowerModel, LLMPhaseActivity


def test_phases_map_to_their_activity() -> None:
    phase = LLMPhaseActivity()
    gpu = GpuPowerModel()
    busy, compute, memory = np.array([1.0, 1.0, 0.0, 0.5]), np.array([1.0, 0.0, 0.0, 0.0]), np.array([0, 1.0, 0, 1])
    a = phase.activity(busy, compute, memory, 1.0)
    np.testing.assert_allclose(a, [phase.prefill, phase.decode, 0.0, 0.5 * phase.decode])
    watts = gpu.power_w(a, 1410.0)
    assert watts[0] > gpu.tdp_w  # prefill: at and beyond TDP
    assert 0.5 * gpu.tdp_w < watts[1] < 0.6 * gpu.tdp_w  # decode: ~56% of TDP
    assert watts[2] == pytest.approx(0.2 * gpu.tdp_w)  # idle floor
    # An iteration that started late is counted whole in its interval, but the interval is never over-full.
    assert phase.activity(np.array(1.7), np.array(1.7), np.array(0.0), 1.0) == pytest.approx(phase.prefill)


@settings(max_examples=100, deadline=None)
@given(busy=st.floats(0.0, 3.0), compute=st.floats(0.0, 3.0), memory=st.floats(0.0, 3.0), interval=st.floats(0.1, 5.0))
def test_activity_stays_between_idle_and_prefill(busy: float, compute: float, memory: float, interval: float) -> None:
    phase = LLMPhaseActivity(prefill=1.05, decode=0.45)
    a = float(phase.activity(np.array(busy), np.array(compute), np.array(memory), interval))
    assert 0.0 <= a <= phase.prefill + 1e-12
    if busy == 0.0:
        assert a == 0.0


def test_bad_phase_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="decode <= prefill"):
        LLMPhaseActivity(prefill=0.4, decode=0.5)
    with pytest.raises(ValueError, match="interval_s"):
        LLMPhaseActivity().activity(np.array(1.0), np.array(1.0), np.array(0.0), 0.0)
