"""One walker over a state tree: dataclasses, dicts, tuples and numpy arrays nested in any mix.

Every environment's state is such a tree, with ``B`` (the number of
sub-envs) as the first axis of each per-sub-env array. The base core and
the envs use these helpers for what they all need of a tree: its B-first
arrays in a fixed order (row snapshots for autoreset), copies and writes of
rows, resetting rows of episode counters, byte counts, and flat views that
merge leading axes (``(B, N, S)`` as ``(B * N, S)``) without copying.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

TreeT = TypeVar("TreeT")


def _children(tree: Any) -> Iterator[Any]:
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        for field in dataclasses.fields(tree):
            yield getattr(tree, field.name)
    elif isinstance(tree, Mapping):
        yield from tree.values()
    elif isinstance(tree, tuple | list):
        yield from tree


def arrays(tree: Any) -> Iterator[np.ndarray]:
    """Every numpy array in the tree, depth first in field (or insertion) order."""
    if isinstance(tree, np.ndarray):
        yield tree
        return
    for child in _children(tree):
        yield from arrays(child)


def batched(tree: Any, num_envs: int) -> list[np.ndarray]:
    """The arrays whose first axis has ``num_envs`` rows: the per-sub-env part of a state."""
    return [a for a in arrays(tree) if a.ndim >= 1 and a.shape[0] == num_envs]


def take_rows(tree: Any, num_envs: int, rows: np.ndarray) -> list[np.ndarray]:
    """Copies of ``rows`` of every B-first array (see :func:`put_rows`)."""
    return [a[rows].copy() for a in batched(tree, num_envs)]


def put_rows(tree: Any, num_envs: int, rows: np.ndarray, values: list[np.ndarray]) -> None:
    """Write rows taken by :func:`take_rows` back; the tree's layout must not have changed."""
    targets = batched(tree, num_envs)
    if len(targets) != len(values):
        raise RuntimeError(f"state layout changed: {len(targets)} batched arrays now, {len(values)} saved")
    for target, value in zip(targets, values):
        target[rows] = value


def fill_rows(tree: Any, num_envs: int, rows: np.ndarray, value: float = 0) -> None:
    """Set ``rows`` of every B-first array to ``value`` (episode counters at reset)."""
    for a in batched(tree, num_envs):
        a[rows] = value


def nbytes(tree: Any) -> int:
    """Bytes held by every array of the tree."""
    return sum(a.nbytes for a in arrays(tree))


def _merged(a: np.ndarray, lead: int) -> np.ndarray:
    view = a.view()
    view.shape = (math.prod(a.shape[:lead]), *a.shape[lead:])  # raises rather than copy
    return view


def merge_leading(tree: TreeT, lead: int) -> TreeT:
    """The same dataclass tree with each array's first ``lead`` axes merged into one, as views.

    Writes through the views change the original arrays (a layout the
    views cannot express raises instead of copying). Arrays with fewer
    than ``lead`` axes are passed through.
    """
    if isinstance(tree, np.ndarray):
        return _merged(tree, lead) if tree.ndim >= lead else tree  # type: ignore[return-value]
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        values = {f.name: merge_leading(getattr(tree, f.name), lead) for f in dataclasses.fields(tree)}
        return type(tree)(**values)
    if isinstance(tree, Mapping):
        return type(tree)({k: merge_leading(v, lead) for k, v in tree.items()})  # type: ignore[call-arg]
    return tree
