"""A datacenter building's power: what it provisions, how that bounds the fleet, and what is paid for it.

Two models behind one interface (:class:`BuildingModel`), chosen once from a
config; the dynamics that use them never ask which one they hold:

* :class:`RentedBuilding`, the public simulator's (Azure/AI-Lifecycle-Compass):
  provisioning follows the fleet like a rent, charged on the power installed
  servers need (``installed W / oversubscription``) plus the rack power they
  strand; nothing limits a purchase and nothing is ordered;
* :class:`SunkBuilding`: power arrives in lumps ordered ``lead_quarters``
  ahead and is paid from arrival whether used or not; installed server W may
  not exceed ``oversubscription x provisioned W``, so a purchase beyond it is
  cut, and the oversubscription level can never fall below what the
  installed fleet already needs.

Every quantity is a B-first array over sub-envs (datacenters); ``q`` is each
sub-env's current quarter.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


@dataclasses.dataclass
class BuildingPower:
    """The building of B datacenters."""

    provisioned_w: np.ndarray  # (B,) float64, W provisioned and in service
    arrivals_w: np.ndarray  # (B, T) float64, W ordered to arrive in quarter t

    @classmethod
    def zeros(cls, num_envs: int, quarters: int) -> BuildingPower:
        return cls(provisioned_w=np.zeros(num_envs), arrivals_w=np.zeros((num_envs, quarters)))


class BuildingModel(Protocol):
    """How a building's power is provisioned and paid for (the rows of ``power`` are the sub-envs)."""

    def reset(self, power: BuildingPower, env_ids: np.ndarray) -> None:
        """The building of a new episode, for the listed sub-envs."""

    def open_quarter(self, power: BuildingPower, rows: np.ndarray, q: np.ndarray) -> None:
        """Bring into service what arrives in quarter ``q`` (B,)."""

    def oversubscription(
        self, over_idx: np.ndarray, levels: np.ndarray, installed_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        """(B,) the chosen oversubscription level, raised where the installed fleet needs more."""

    def fit_purchase(
        self,
        wanted: np.ndarray,
        over: np.ndarray,
        installed_w: np.ndarray,
        server_w: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        """(B,) servers of ``server_w`` W each that can be installed of the ``wanted`` ones."""

    def order(self, lumps: np.ndarray, rows: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        """Order ``lumps`` (B,) in quarter ``q``; (B,) W ordered."""

    def stranded_w(
        self,
        rack_stranded_w: np.ndarray,
        alive: np.ndarray,
        installed_w: np.ndarray,
        over: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        """(B,) provisioned W no server uses; ``rack_stranded_w`` and ``alive`` are (B, cohorts)."""

    def paid_w(
        self, installed_w: np.ndarray, over: np.ndarray, stranded_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        """(B,) W the provisioning charges are paid on this quarter."""

    def observe(self, installed_w: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        """(B, 3): one lump's W, W ordered and not yet arrived, installed W, each over provisioned W."""


@dataclasses.dataclass(frozen=True)
class RentedBuilding:
    """The simulator's building: a rent on installed plus stranded power, never a limit."""

    def reset(self, power: BuildingPower, env_ids: np.ndarray) -> None:
        power.provisioned_w[env_ids] = 0.0
        power.arrivals_w[env_ids] = 0.0

    def open_quarter(self, power: BuildingPower, rows: np.ndarray, q: np.ndarray) -> None:
        return None

    def oversubscription(
        self, over_idx: np.ndarray, levels: np.ndarray, installed_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        return over_idx

    def fit_purchase(
        self,
        wanted: np.ndarray,
        over: np.ndarray,
        installed_w: np.ndarray,
        server_w: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        return wanted

    def order(self, lumps: np.ndarray, rows: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        return np.zeros(lumps.shape)  # the rent follows the fleet: nothing to order

    def stranded_w(
        self,
        rack_stranded_w: np.ndarray,
        alive: np.ndarray,
        installed_w: np.ndarray,
        over: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        return (rack_stranded_w * (alive > 0)).sum(axis=1)  # rack power the alive cohorts leave unused

    def paid_w(
        self, installed_w: np.ndarray, over: np.ndarray, stranded_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        return installed_w / over + stranded_w

    def observe(self, installed_w: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        zeros = np.zeros_like(installed_w)
        return np.stack([zeros, zeros, np.ones_like(installed_w)], 1)  # no lumps, nothing pending, fully used


@dataclasses.dataclass(frozen=True, kw_only=True)
class SunkBuilding:
    """Lumps of ``lump_mw`` ordered ``lead_quarters`` ahead, paid from arrival whether used or not."""

    initial_mw: float
    """Provisioned MW at quarter 0."""
    lump_mw: float
    """MW per lump."""
    lead_quarters: int
    """Quarters from ordering a lump to its arrival (0: in service at once)."""

    def reset(self, power: BuildingPower, env_ids: np.ndarray) -> None:
        power.provisioned_w[env_ids] = self.initial_mw * 1e6
        power.arrivals_w[env_ids] = 0.0

    def open_quarter(self, power: BuildingPower, rows: np.ndarray, q: np.ndarray) -> None:
        power.provisioned_w += power.arrivals_w[rows, q]

    def oversubscription(
        self, over_idx: np.ndarray, levels: np.ndarray, installed_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        needed = installed_w / np.maximum(power.provisioned_w, 1e-9)
        fits = levels[None, :] >= needed[:, None] - 1e-12
        lowest_fit = np.where(fits.any(axis=1), np.argmax(fits, axis=1), len(levels) - 1)
        return np.maximum(over_idx, lowest_fit)

    def fit_purchase(
        self,
        wanted: np.ndarray,
        over: np.ndarray,
        installed_w: np.ndarray,
        server_w: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        room_w = np.maximum(over * power.provisioned_w - installed_w, 0.0)
        return np.minimum(wanted, np.floor(room_w / server_w + 1e-9))

    def order(self, lumps: np.ndarray, rows: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        order_w = lumps * self.lump_mw * 1e6
        if self.lead_quarters == 0:
            power.provisioned_w += order_w  # in service at once; purchases this quarter already saw the old building
            return order_w
        arrive = q + self.lead_quarters
        inside = arrive < power.arrivals_w.shape[1]  # arriving after the horizon: never in service
        power.arrivals_w[rows[inside], arrive[inside]] += order_w[inside]
        return order_w

    def stranded_w(
        self,
        rack_stranded_w: np.ndarray,
        alive: np.ndarray,
        installed_w: np.ndarray,
        over: np.ndarray,
        power: BuildingPower,
    ) -> np.ndarray:
        return np.maximum(power.provisioned_w - installed_w / over, 0.0)

    def paid_w(
        self, installed_w: np.ndarray, over: np.ndarray, stranded_w: np.ndarray, power: BuildingPower
    ) -> np.ndarray:
        return power.provisioned_w

    def observe(self, installed_w: np.ndarray, q: np.ndarray, power: BuildingPower) -> np.ndarray:
        prov = np.maximum(power.provisioned_w, 1.0)
        arrivals = power.arrivals_w
        pending = arrivals.sum(axis=1) - np.take_along_axis(np.cumsum(arrivals, axis=1), q[:, None], axis=1)[:, 0]
        lump = np.full_like(prov, self.lump_mw * 1e6)
        return np.stack([lump / prov, pending / prov, installed_w / prov], 1)
