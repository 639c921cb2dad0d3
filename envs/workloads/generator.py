"""The generator contract: what makes one problem instance from one sub-env's random generator.

An environment derives one generator from its config (a synthetic sampler, a
trace replayer or a toy with a known optimum); the batched core calls
``sample`` once per sub-env at every reset, with that sub-env's own
``np.random.Generator``, and hands the instances to the env. An env core
never asks which kind of generator it holds.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np

InstanceT_co = TypeVar("InstanceT_co", covariant=True)


class Generator(Protocol[InstanceT_co]):
    """Makes one episode's problem instance (a frozen dataclass of arrays) from a sub-env's rng."""

    def sample(self, rng: np.random.Generator) -> InstanceT_co: ...
