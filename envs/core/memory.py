"""Bounds on the size of a batch, checked at make before the batch's state is allocated.

A :class:`~cloudgym.envs.core.batch.BatchedCore` first builds its state for
one sub-env, counts its bytes and refuses a ``num_envs`` whose state would
pass :func:`max_state_bytes`, naming ``num_envs`` and the config fields that
size a sub-env's state. Without it, a large ``num_envs`` (or a config whose
one sub-env is big, times many sub-envs) ends in a MemoryError at best and
in the kernel's OOM killer at worst, after minutes of allocation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cloudgym.envs.core import tree

MAX_NUM_ENVS = 1 << 16
"""Most sub-envs in one batch: each draws its instance in Python at reset (tens of microseconds to
milliseconds each), so beyond this a reset takes minutes; 10**8 of them hung in their seed roots."""

MAX_STATE_BYTES = 8 << 30
"""Default limit of a batch's state, bytes (8 GiB: a third of a 24 GB machine, leaving room for the
instances drawn at reset, the observations and a learner)."""

MAX_STATE_BYTES_ENV = "CLOUDGYM_MAX_STATE_BYTES"
"""Environment variable that overrides :data:`MAX_STATE_BYTES` (an integer number of bytes)."""


def max_state_bytes() -> int:
    """The limit in force: ``$CLOUDGYM_MAX_STATE_BYTES`` if set, else :data:`MAX_STATE_BYTES`."""
    text = os.environ.get(MAX_STATE_BYTES_ENV)
    if text is None or not text.strip():
        return MAX_STATE_BYTES
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(f"{MAX_STATE_BYTES_ENV} must be a positive integer number of bytes, got {text!r}") from None
    if limit < 1:
        raise ValueError(f"{MAX_STATE_BYTES_ENV} must be a positive integer number of bytes, got {text!r}")
    return limit


def check_num_envs(num_envs: Any) -> int:
    """``num_envs`` as an int, or a TypeError/ValueError naming it and what is allowed."""
    if isinstance(num_envs, bool | np.bool_) or not isinstance(num_envs, int | np.integer):
        raise TypeError(f"num_envs: got {num_envs!r} ({type(num_envs).__name__}); expected an integer")
    if not 1 <= num_envs <= MAX_NUM_ENVS:
        raise ValueError(f"num_envs must be a positive integer in [1, {MAX_NUM_ENVS}], got {num_envs!r}")
    return int(num_envs)


def row_bytes(params: Any, state: Any) -> int:
    """Bytes of one sub-env: its state (built for num_envs = 1) and the per-sub-env arrays of its params."""
    return tree.nbytes(state) + sum(a.nbytes for a in tree.batched(params, 1))


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def check_state_bytes(core_name: str, num_envs: int, per_env_bytes: int, size_fields: Sequence[str]) -> None:
    """Refuse ``num_envs`` sub-envs of ``per_env_bytes`` each beyond :func:`max_state_bytes`."""
    limit = max_state_bytes()
    total = num_envs * per_env_bytes
    if total <= limit:
        return
    fields = f"the config fields {', '.join(size_fields)}" if size_fields else "the config"
    raise ValueError(
        f"{core_name}: num_envs={num_envs} sub-envs of {per_env_bytes:,} bytes each (sized by {fields}) "
        f"would hold {_gib(total)} of state; the limit is {_gib(limit)} ({limit:,} bytes). Use fewer sub-envs "
        f"or smaller values of those fields, or raise the limit with {MAX_STATE_BYTES_ENV}=<bytes>"
    )
