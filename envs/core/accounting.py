"""Money and counts, accounted per category so that nothing is unaccounted for.

A :class:`Ledger` charges amounts to named categories (IT capex, energy, SLA
penalty, ...) for every sub-env; each step's charges and the episode's totals
are kept separately, so an env can put the step's breakdown in info and a test
can check that the breakdown sums to the reward.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Ledger:
    """Charges per category for B sub-envs."""

    categories: tuple[str, ...]  # names of the C categories, in column order
    step: np.ndarray  # (B, C) float64, charged in the current step
    total: np.ndarray  # (B, C) float64, charged since the episode began

    @classmethod
    def zeros(cls, num_envs: int, categories: tuple[str, ...]) -> Ledger:
        if len(set(categories)) != len(categories):
            raise ValueError(f"duplicate ledger categories: {categories}")
        c = len(categories)
        return cls(categories=tuple(categories), step=np.zeros((num_envs, c)), total=np.zeros((num_envs, c)))

    def column(self, category: str) -> int:
        try:
            return self.categories.index(category)
        except ValueError:
            raise KeyError(f"unknown ledger category {category!r}; known: {', '.join(self.categories)}") from None

    def begin_step(self) -> None:
        self.step[...] = 0.0

    def charge(self, category: str, amount: np.ndarray) -> None:
        """Add ``amount`` (B,) to a category for this step and the episode; must be finite."""
        amount = np.asarray(amount, dtype=np.float64)
        if not np.all(np.isfinite(amount)):
            raise ValueError(f"non-finite charge to {category!r}")
        c = self.column(category)
        self.step[:, c] += amount
        self.total[:, c] += amount

    def step_total(self) -> np.ndarray:
        return self.step.sum(axis=1)

    def episode_total(self) -> np.ndarray:
        return self.total.sum(axis=1)

    def step_breakdown(self, prefix: str = "cost/") -> dict[str, np.ndarray]:
        """Info entries: one (B,) array per category for this step's charges."""
        return {f"{prefix}{name}": self.step[:, i].copy() for i, name in enumerate(self.categories)}

    def reset_envs(self, env_ids: np.ndarray) -> None:
        self.step[env_ids] = 0.0
        self.total[env_ids] = 0.0
