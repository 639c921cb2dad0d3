"""Out-of-band caps and the powerbrake/UPS of a provisioned row (core/power.py), on their own."""

from __future__ import annotations

import numpy as np
import pytest

from cloudgym.envs.core.power import OutOfBandCaps, PowerBrake


@pytest.mark.parametrize("delay", [0, 1, 4])
def test_a_command_lands_delay_steps_later_and_the_first_fills_the_pipeline(delay: int) -> None:
    caps = OutOfBandCaps(delay_s=delay, controls=1)
    state = caps.new_state(1)
    commands = [3, 0, 5, 0, 0, 0, 0, 0, 0, 0]
    levels = []
    for t, command in enumerate(commands):
        caps.issue(state, np.arange(1), np.array([t]), np.array([[command]], np.int8))
        levels.append(int(state.level[0, 0]))
        # The last command is what lands delay steps on (with no delay, what is in effect).
        assert caps.landing(state, np.arange(1), np.array([t + 1]), delay)[0, 0] == (command if delay else levels[-1])
    expected = [3] * (delay + 1) + [0] * (len(commands) - delay - 1)  # step 0's command from the start
    expected[2 + delay] = 5
    assert levels == expected
    caps.reset_envs(state, np.array([0]))
    assert not state.pipeline.any()
    assert not state.level.any()


def test_the_brake_engages_after_its_delay_holds_and_the_ups_trips() -> None:
    brake = PowerBrake(threshold=1.0, delay_s=2, hold_s=3, ride_through_s=4)
    state = brake.new_state(1)
    held, ordered, tripped = [], [], []
    for _ in range(6):
        braked = brake.engage(state)
        _, order, trip = brake.measure(state, np.array([1.2]), braked)
        held.append(bool(braked[0]))
        ordered.append(bool(order[0]))
        tripped.append(bool(trip[0]))
    assert ordered == [True, False, False, False, False, True]  # ordered again once the hold ends
    assert held == [False, False, True, True, True, False]
    assert tripped == [False, False, False, False, True, True]  # the fifth second over budget
    brake.reset_envs(state, np.array([0]))
    assert state.countdown[0] == -1
    assert state.left[0] == 0
    assert state.over_run[0] == 0
