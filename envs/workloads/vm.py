"""Virtual machines for Oversubscription-v0: a calibrated generator, a toy with a known optimum, Azure-format traces.

Every source produces a :class:`VMInstance`: the VMs that ask for a place in
one cluster during one episode (arrival and departure ticks of 5 minutes,
cores, category, deployment, Workload Intelligence hints) and how each one
uses its cores, as **compact parameters** (:class:`UtilParams`, nine numbers a
VM) or, for a replayed trace, as an offset into one shared pool of readings.
A VM's utilisation at tick ``t`` is a pure function of its parameters and
``t`` (:func:`utilisation`): the noise comes from a counter-based hash of
(VM key, tick) and (deployment key, tick), so no (VMs x readings) array is
ever stored and VMs of one deployment share part of their noise and all of
their bursts.

An env holds one generator object (:class:`SyntheticVMGenerator`,
:class:`ToyVMGenerator` or :class:`TraceVMGenerator`, all
:class:`VMGenerator`): ``sample(rng)`` makes one sub-env's episode and
``utilisation`` computes its VMs' readings from their columns
(:class:`ModelledUtilisation` or :class:`ReplayedUtilisation`), so the env
never asks which kind it holds.

Calibration (``../shared/DOMAIN.md`` section 4, figures of the Azure 2019 VM
trace read from the dataset's notebooks): per-VM average CPU and P95-of-max
CPU CDFs, lifetimes, core-count buckets (see the ``*_CDF`` constants). The
tests measure the generated VMs against these points (within 5 points).

Modelling choices (not published figures; each is a named constant):

* a VM's utilisation is independent of its lifetime by default; the
  published CDFs count VMs, while a node's load is weighted by core-hours,
  which long-lived VMs dominate, so how the two correlate sets how busy
  nodes are. ``lifetime_util_correlation`` couples them by a Gaussian copula
  (every per-VM marginal stays exact): 0 gives a cluster 15% busy at ratio
  1.0 (near the ~15.7% CPU per VM of MARO's samples of this trace), 0.3 27%;
* deployments: 55% single VMs, else 2-16 VMs that arrive together and share
  cores, category, lifetime (within 10%), utilisation level, daily phase,
  part of their noise and their bursts;
* bursty VMs (P95 of max well above their average) reach their P95 level in
  7% of their 5-minute readings; VMs too idle for that peak only inside a
  reading (``max_cpu``), which the node's 5-minute demand does not see;
* interactive VMs follow a daily cycle of +-30-70% around their mean, peaking
  around 14:00 (Resource Central, Cortez et al., SOSP 2017, shows the cycle;
  the amplitude is ours);
* hints: a delay-insensitive VM is contention-tolerant with probability 0.6,
  an interactive one sensitive with probability 0.6; a wrong declaration
  (``hint_error_rate``) reports another class.

Trace format (Azure Public Dataset, VM traces V1/V2): ``vmtable.csv`` rows
``vmid, subscriptionid, deploymentid, vmcreated, vmdeleted, maxcpu, avgcpu,
p95maxcpu, vmcategory, vmcorecountbucket, vmmemorybucket`` and readings rows
``timestamp, vmid, min_cpu, max_cpu, avg_cpu`` (seconds; CPU in percent; no
header in the public files, a header row is accepted). :func:`load_vm_trace`
streams them; :func:`write_vm_trace` writes a generated instance in the same
format.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from cloudgym.envs import kernels
from cloudgym.envs.numerics import hash32, hash32_in_place, normal_cdf_fast
from cloudgym.envs.workloads.traces import (
    MAX_TRACE_SECONDS,
    TraceCache,
    TraceFormatError,
    csv_rows,
    find_trace,
    parse_float,
    parse_int,
)

# ----------------------------------------------------------------------------- time

TICK_SECONDS = 300
"""One reading every 5 minutes, as in the Azure VM traces."""
TICKS_PER_HOUR = 12
TICKS_PER_DAY = 24 * TICKS_PER_HOUR

# ----------------------------------------------------------------------------- calibration (DOMAIN.md section 4)

AVG_CPU_CDF = (
    (0.0, 0.0),
    (1.0, 0.20),
    (5.0, 0.45),
    (10.0, 0.60),
    (20.0, 0.74),
    (40.0, 0.89),
    (60.0, 0.95),
    (100.0, 1.0),
)
"""(per-VM average CPU %, share of VMs at or below it), Azure 2019; linear in between."""
P95_MAX_CPU_CDF = ((0.0, 0.0), (10.0, 0.27), (40.0, 0.44), (60.0, 0.56), (80.0, 0.71), (95.0, 0.85), (100.0, 1.0))
"""(per-VM P95 of 5-minute max CPU %, share of VMs at or below it), Azure 2019: 15% peak above 95%."""
LIFETIME_CDF = ((1.0 / 12.0, 0.0), (1.0, 0.64), (5.0, 0.78), (100.0, 0.90), (720.0, 1.0))
"""(lifetime hours, share of VMs living at most that long), Azure 2019; log-linear in between, 30 days at most."""
CORE_COUNTS = (2, 4, 8, 24)
"""Cores of a VM in each bucket of the trace's vmcorecountbucket (<=2, 2-4, 4-8, 8-24)."""
CORE_SHARES = (0.59, 0.30, 0.08, 0.03)
"""Share of VMs per bucket (Azure 2019); mean 3.74 cores (DOMAIN: ~3.8)."""
CATEGORIES = ("Delay-insensitive", "Interactive", "Unknown")
"""vmcategory values of the trace, in the order of the category codes 0, 1, 2."""
DELAY_INSENSITIVE, INTERACTIVE, UNKNOWN = 0, 1, 2
CATEGORY_GIVEN_LIFETIME = (
    (5.0, (0.72, 0.10, 0.18)),
    (100.0, (0.68, 0.20, 0.12)),
    (math.inf, (0.61, 0.31, 0.08)),
)
"""(lifetime upper bound h, P(category) for VMs below it): long-lived VMs are more often interactive.
Chosen so that core-hours split ~58/33/9 (DOMAIN); tests check the split."""

# ----------------------------------------------------------------------------- modelling choices

LIFETIME_UTIL_CORRELATION = 0.0
"""Default copula correlation between a VM's lifetime and its average-CPU quantile (see the module docstring)."""
AVG_P95_CORRELATION = 0.85
"""Copula correlation between a VM's average CPU and its P95-of-max CPU quantiles."""
SINGLE_VM_DEPLOYMENT_SHARE = 0.55
"""Share of deployments with one VM; the others have 2 + Geometric(0.35) VMs, at most 16."""
MAX_DEPLOYMENT_SIZE = 16
LIFETIME_JITTER_MAX = math.exp(0.4)
"""A VM lives its deployment's lifetime x exp(0.1 z), z clipped to +-4: within 10% typically, 49% at most."""
DEPLOYMENT_NOISE_CORRELATION = 0.6
"""Weight of the deployment's shared noise in a VM's 5-minute noise (the rest is the VM's own)."""
BURST_PROBABILITY_256 = 18
"""Bursty VMs burst in 18/256 = 7% of readings (above 5%, so their P95 is the burst level)."""
BURSTY_SPREAD = 0.30
"""A VM is bursty when its P95 of max exceeds its average by this much and its average can pay for the bursts."""
DAILY_PEAK_HOUR = 14.0
"""Mean hour of day at which interactive deployments peak; each deployment draws its own (sd 2.5 h)."""
DAILY_AMPLITUDE_RANGE = (0.3, 0.7)
"""Relative daily swing of an interactive VM around its mean."""
TOLERANT_GIVEN_DELAY_INSENSITIVE = 0.6
SENSITIVE_GIVEN_INTERACTIVE = 0.6
HINT_NEUTRAL, HINT_TOLERANT, HINT_SENSITIVE = 0, 1, 2
WARMUP_DAYS = 30
"""The cluster starts as it would after 30 days of the same arrival process (the stationary population)."""
FEW_READINGS = 36
"""VMs with fewer readings (3 h) reach their P95-of-max by peaks inside readings, not by bursts."""
EXCURSION_GAIN = 1.0
"""Peaks inside a reading are sized 10% above the gap they fill (the P95 of a sum is below the sum of P95s)."""
MIN_AVG_CPU = 0.001
"""Average CPU of the idlest VMs (a log-normal level needs a positive base)."""

# ----------------------------------------------------------------------------- the counter-based noise

_MIX = np.uint32(0x9E3779B9)
_LOW16 = np.uint32(0xFFFF)
_LOW12 = np.uint32(0xFFF)


def tick_mix(tick: int | np.ndarray) -> np.ndarray:
    """The counter word of a tick (or of an array of ticks), xor-ed into each key before hashing."""
    t = np.asarray(tick, dtype=np.int64)
    return ((t * 0x9E3779B9 + 0x632BE5AB) & 0xFFFFFFFF).astype(np.uint32)


_SQRT6 = math.sqrt(6.0)
_VM_WEIGHT = math.sqrt(1.0 - DEPLOYMENT_NOISE_CORRELATION**2)
# utilisation() adds the two sources in integers with weights 4 and 48 (0.8 : 0.6 once the 12-bit fields
# are put on the 16-bit scale); another correlation needs other integer weights.
assert abs(_VM_WEIGHT - 0.8) < 1e-12, "utilisation()'s integer weights assume DEPLOYMENT_NOISE_CORRELATION = 0.6"
# noise = 0.8 sqrt6 (u1 + u2) / 2^16 + 0.6 sqrt6 (u3 + u4) / 2^12 - offset, the u's integer fields of the two
# hashes: two uniforms summed per source (var 1/6 each, x sqrt 6 -> var 1), mixed by the deployment weight.
_NOISE_SCALE = np.float32(0.2 * _SQRT6 / 65536.0)  # 4 x 0.2 = the VM's weight 0.8; 48 x 0.2 / 16 = 0.6
_NOISE_OFFSET = np.float32((_VM_WEIGHT + DEPLOYMENT_NOISE_CORRELATION) * _SQRT6 * (1.0 - 1.0 / 65536.0))

NOISE_P95 = 1.651
"""95th percentile of the unit-variance hashed noise (a mix of four uniforms; near Gaussian's 1.645).
Measured over 4M draws by the tests."""


@dataclasses.dataclass(frozen=True)
class UtilParams:
    """How each VM uses its cores: nine compact numbers per VM (36 bytes)."""

    log_base: np.ndarray  # (V,) float32, ln(mean level) - sigma^2 / 2 of the non-burst readings
    sigma: np.ndarray  # (V,) float32, log-normal spread of the 5-minute noise
    amp_cos: np.ndarray  # (V,) float32, daily amplitude x cos(phase) (0 for non-interactive VMs)
    amp_sin: np.ndarray  # (V,) float32, daily amplitude x sin(phase)
    burst_threshold: np.ndarray  # (V,) uint32, a reading bursts when the deployment hash's top byte is below it
    burst_level: np.ndarray  # (V,) float32, utilisation during a burst, share of the VM's cores
    excursion: np.ndarray  # (V,) float32, largest peak inside a reading above its average (max_cpu only)
    vm_key: np.ndarray  # (V,) uint32, key of the VM's own noise
    dep_key: np.ndarray  # (V,) uint32, key of the deployment's shared noise and bursts

    FIELDS = (
        "log_base",
        "sigma",
        "amp_cos",
        "amp_sin",
        "burst_threshold",
        "burst_level",
        "excursion",
        "vm_key",
        "dep_key",
    )

    def take(self, index: np.ndarray) -> UtilParams:
        return UtilParams(**{f: getattr(self, f)[index] for f in self.FIELDS})

    @staticmethod
    def concatenate(parts: Sequence[UtilParams]) -> UtilParams:
        return UtilParams(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in UtilParams.FIELDS})


def daily_terms(tick: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of the time of day of a tick, the basis of the daily cycle."""
    angle = 2.0 * np.pi * (np.asarray(tick) % TICKS_PER_DAY) / TICKS_PER_DAY
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def utilisation(
    log_base: np.ndarray,
    sigma: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    vm_key: np.ndarray,
    dep_key: np.ndarray,
    tick: int | np.ndarray,
) -> np.ndarray:
    """Average CPU over 5-minute reading ``tick`` (share of the VM's cores, in [0, 1]), elementwise, float32.

    ``level = exp(log_base + sigma * noise) * (1 + amp_cos cos(day) + amp_sin sin(day))``, replaced by
    ``burst_level`` when the deployment bursts, at most 1. The noise mixes the VM's hash and its
    deployment's; bursts come from the deployment's hash alone, so a deployment bursts together.
    ``tick`` is an int or an integer array that broadcasts against the parameters (a tick per row);
    the parameters share one shape.

    Computed by the compiled kernel (:func:`utilisation_kernel`) when :func:`cloudgym.envs.kernels.enabled`
    and the inputs have the table's dtypes, else by :func:`utilisation_numpy`; both give the same bits.
    """
    if kernels.enabled():
        out = utilisation_kernel(log_base, sigma, amp_cos, amp_sin, burst_threshold, burst_level, vm_key, dep_key, tick)
        if out is not None:
            return out
    return utilisation_numpy(log_base, sigma, amp_cos, amp_sin, burst_threshold, burst_level, vm_key, dep_key, tick)


def utilisation_numpy(
    log_base: np.ndarray,
    sigma: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    vm_key: np.ndarray,
    dep_key: np.ndarray,
    tick: int | np.ndarray,
) -> np.ndarray:
    """:func:`utilisation` in numpy: the reference the kernels are tested against."""
    # Written in place with one scratch buffer: the env evaluates this for every running VM at every reading.
    mix = tick_mix(tick)
    h_vm = np.bitwise_xor(vm_key, mix)
    scratch = np.empty_like(h_vm)
    hash32_in_place(h_vm, scratch)
    h_dep = np.bitwise_xor(dep_key, mix)
    hash32_in_place(h_dep, scratch)
    # Integer sum 4 (u1 + u2) + 48 (u3 + u4): the VM's two 16-bit uniforms (weight 0.8) and the
    # deployment's two 12-bit uniforms (weight 0.6), on one scale (at most 917,400: exact in float32).
    np.right_shift(h_vm, np.uint32(16), out=scratch)
    h_vm &= _LOW16
    h_vm += scratch
    h_vm <<= np.uint32(2)
    np.right_shift(h_dep, np.uint32(12), out=scratch)
    scratch &= _LOW12
    scratch += h_dep & _LOW12
    scratch *= np.uint32(48)
    h_vm += scratch
    level = h_vm.astype(np.float32)
    level *= _NOISE_SCALE
    level -= _NOISE_OFFSET
    level *= sigma
    level += log_base
    np.exp(level, out=level)
    c, s = daily_terms(tick)
    # h_vm is spent: its buffer (the parameters' and the tick's broadcast shape) holds the daily factor.
    daily = h_vm.view(np.float32)
    np.multiply(amp_cos, c, out=daily)
    np.multiply(amp_sin, s, out=scratch.view(np.float32))
    daily += scratch.view(np.float32)
    daily += np.float32(1.0)
    level *= daily
    np.right_shift(h_dep, np.uint32(24), out=scratch)
    np.copyto(level, burst_level, where=scratch < burst_threshold)
    # The same minimum as against the scalar 1, but numpy's array-array loop is ~2x faster.
    daily.fill(1.0)
    np.minimum(level, daily, out=level)
    return level


# ----------------------------------------------------------------------------- the same readings, compiled
# One reading is a hash, an exponential and a few products. The kernels compute each reading in two passes
# around numpy's own float32 np.exp (numba's exp rounds differently in a third of the cases): pass one writes
# the exponent, numpy exponentiates the whole buffer, pass two applies the daily cycle, bursts and the cap.
# Every float32 operation is the reference's, in its order, so the readings are bit-identical.

_NOISE_SCALE_F = float(_NOISE_SCALE)
_NOISE_OFFSET_F = float(_NOISE_OFFSET)
_DAILY_COS, _DAILY_SIN = daily_terms(np.arange(TICKS_PER_DAY))
"""(cos, sin) of each tick of the day, float32: a reading's daily terms depend on its tick modulo a day alone
(the same bits whether numpy computes one tick or an array; tested)."""
_FLOAT32_COLUMNS = ("log_base", "sigma", "amp_cos", "amp_sin", "burst_level")
_UINT32_COLUMNS = ("burst_threshold", "vm_key", "dep_key")


def daily_tables() -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of the daily cycle for each tick of the day, (TICKS_PER_DAY,) float32 each (for kernels)."""
    return _DAILY_COS, _DAILY_SIN


@kernels.jit
def mix_kernel(tick: int) -> np.uint64:  # pragma: no cover - compiled
    """:func:`tick_mix` of one tick, as a uint64 holding 32 bits."""
    return np.uint64((np.int64(tick) * np.int64(0x9E3779B9) + np.int64(0x632BE5AB)) & np.int64(0xFFFFFFFF))


@kernels.jit
def hash32_kernel(x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """:func:`cloudgym.envs.numerics.hash32` of one 32-bit value held in a uint64 (products masked to 32 bits)."""
    low = np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & low
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & low
    x ^= x >> np.uint64(16)
    return x


@kernels.jit
def noise_exponent(
    log_base: float, sigma: float, vm_key: int, dep_key: int, mix: np.uint64
) -> np.float32:  # pragma: no cover
    """Pass one of a reading: ``log_base + sigma * noise`` (float32), to be exponentiated by numpy."""
    h_vm = hash32_kernel(np.uint64(vm_key) ^ mix)
    h_dep = hash32_kernel(np.uint64(dep_key) ^ mix)
    total = ((h_vm & np.uint64(0xFFFF)) + (h_vm >> np.uint64(16))) << np.uint64(2)
    total += (((h_dep >> np.uint64(12)) & np.uint64(0xFFF)) + (h_dep & np.uint64(0xFFF))) * np.uint64(48)
    level = np.float32(total) * np.float32(_NOISE_SCALE_F)
    level = level - np.float32(_NOISE_OFFSET_F)
    level = level * np.float32(sigma)
    return level + np.float32(log_base)


@kernels.jit
def finish_reading(
    level: float,
    amp_cos: float,
    amp_sin: float,
    cos_t: float,
    sin_t: float,
    burst_threshold: int,
    burst_level: float,
    dep_key: int,
    mix: np.uint64,
) -> np.float32:  # pragma: no cover - compiled
    """Pass two: the exponentiated ``level`` (float32) x the daily factor, or the burst level; at most 1."""
    daily = np.float32(amp_cos) * np.float32(cos_t)
    daily = daily + np.float32(amp_sin) * np.float32(sin_t)
    daily = daily + np.float32(1.0)
    out = np.float32(level) * daily
    if (hash32_kernel(np.uint64(dep_key) ^ mix) >> np.uint64(24)) < np.uint64(burst_threshold):
        out = np.float32(burst_level)
    # np.minimum(level, 1): the level unless it is above 1.
    if not out <= np.float32(1.0):
        out = np.float32(1.0)
    return out


@kernels.jit
def _exponents_3d(
    log_base: np.ndarray, sigma: np.ndarray, vm_key: np.ndarray, dep_key: np.ndarray, mix: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    # Parameters (one 3-d shape) and ticks' mixes (another) broadcast against out by indexing a length-1 axis at 0.
    p, t = log_base.shape, mix.shape
    for i in range(out.shape[0]):
        ip, it = (i if p[0] > 1 else 0), (i if t[0] > 1 else 0)
        for j in range(out.shape[1]):
            jp, jt = (j if p[1] > 1 else 0), (j if t[1] > 1 else 0)
            for k in range(out.shape[2]):
                kp, kt = (k if p[2] > 1 else 0), (k if t[2] > 1 else 0)
                out[i, j, k] = noise_exponent(
                    log_base[ip, jp, kp], sigma[ip, jp, kp], vm_key[ip, jp, kp], dep_key[ip, jp, kp],
                    mix[it, jt, kt],
                )  # fmt: skip


@kernels.jit
def _finish_3d(
    out: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    dep_key: np.ndarray,
    mix: np.ndarray,
    cos_t: np.ndarray,
    sin_t: np.ndarray,
) -> None:  # pragma: no cover - compiled
    p, t = amp_cos.shape, mix.shape
    for i in range(out.shape[0]):
        ip, it = (i if p[0] > 1 else 0), (i if t[0] > 1 else 0)
        for j in range(out.shape[1]):
            jp, jt = (j if p[1] > 1 else 0), (j if t[1] > 1 else 0)
            for k in range(out.shape[2]):
                kp, kt = (k if p[2] > 1 else 0), (k if t[2] > 1 else 0)
                out[i, j, k] = finish_reading(
                    out[i, j, k], amp_cos[ip, jp, kp], amp_sin[ip, jp, kp], cos_t[it, jt, kt], sin_t[it, jt, kt],
                    burst_threshold[ip, jp, kp], burst_level[ip, jp, kp], dep_key[ip, jp, kp], mix[it, jt, kt],
                )  # fmt: skip


def _as_3d(a: np.ndarray) -> np.ndarray:
    """``a`` (up to 3-d) as a C-contiguous 3-d array, length-1 axes first."""
    return np.ascontiguousarray(a.reshape((1,) * (3 - a.ndim) + a.shape))


def utilisation_kernel(
    log_base: np.ndarray,
    sigma: np.ndarray,
    amp_cos: np.ndarray,
    amp_sin: np.ndarray,
    burst_threshold: np.ndarray,
    burst_level: np.ndarray,
    vm_key: np.ndarray,
    dep_key: np.ndarray,
    tick: int | np.ndarray,
) -> np.ndarray | None:
    """:func:`utilisation` by the compiled passes; None when the inputs are not the VM table's kind.

    The kernels take the table's dtypes (float32 parameters, uint32 keys, integer ticks), parameters of
    one shape and up to three dimensions; anything else is left to the numpy reference, which defines
    the result.
    """
    arrays = {
        "log_base": np.asarray(log_base),
        "sigma": np.asarray(sigma),
        "amp_cos": np.asarray(amp_cos),
        "amp_sin": np.asarray(amp_sin),
        "burst_threshold": np.asarray(burst_threshold),
        "burst_level": np.asarray(burst_level),
        "vm_key": np.asarray(vm_key),
        "dep_key": np.asarray(dep_key),
    }
    ticks = np.asarray(tick)
    shapes = {a.shape for a in arrays.values()}
    if (
        len(shapes) != 1
        or any(arrays[f].dtype != np.float32 for f in _FLOAT32_COLUMNS)
        or any(arrays[f].dtype != np.uint32 for f in _UINT32_COLUMNS)
        or ticks.dtype.kind not in "iu"
    ):
        return None
    shape = np.broadcast_shapes(ticks.shape, *shapes)
    if len(shape) > 3:
        return None
    # Each input in its own shape (no broadcast copies); the kernels index a length-1 axis at 0.
    p = {f: _as_3d(a) for f, a in arrays.items()}
    t3 = _as_3d(ticks.astype(np.int64, copy=False))
    shape3 = (1,) * (3 - len(shape)) + shape
    if any(len({p["log_base"].shape[d], t3.shape[d], shape3[d]} - {1}) > 1 for d in range(3)):
        return None  # aligned on the right, the inputs broadcast differently: numpy's rules decide
    # Per tick, not per reading: its counter word and daily terms (the tick array is the small one).
    mix = tick_mix(t3).astype(np.uint64)
    day = t3 % TICKS_PER_DAY
    out = np.empty(shape3, np.float32)
    _exponents_3d(p["log_base"], p["sigma"], p["vm_key"], p["dep_key"], mix, out)
    np.exp(out, out=out)
    _finish_3d(
        out, p["amp_cos"], p["amp_sin"], p["burst_threshold"], p["burst_level"], p["dep_key"], mix,
        _DAILY_COS[day], _DAILY_SIN[day],
    )  # fmt: skip
    return out.reshape(shape)


def utilisation_of(params: Mapping[str, np.ndarray], tick: int | np.ndarray) -> np.ndarray:
    """:func:`utilisation` with the parameters given by field name (e.g. a slot table's columns)."""
    return utilisation(
        params["log_base"],
        params["sigma"],
        params["amp_cos"],
        params["amp_sin"],
        params["burst_threshold"],
        params["burst_level"],
        params["vm_key"],
        params["dep_key"],
        tick,
    )


def max_reading(params: UtilParams, average: np.ndarray, tick: int | np.ndarray) -> np.ndarray:
    """Highest CPU inside reading ``tick`` (the trace's max_cpu), from its average and the VM's excursion."""
    mix = tick_mix(tick)
    u = (hash32(params.vm_key ^ mix ^ np.uint32(0x5BD1E995)) & _LOW16).astype(np.float32) / np.float32(65536.0)
    return np.minimum(average + params.excursion * u, np.float32(1.0))


def params_utilisation(params: UtilParams, tick: int | np.ndarray) -> np.ndarray:
    """:func:`utilisation` of every VM in ``params`` at one tick."""
    return utilisation(
        params.log_base,
        params.sigma,
        params.amp_cos,
        params.amp_sin,
        params.burst_threshold,
        params.burst_level,
        params.vm_key,
        params.dep_key,
        tick,
    )


# ----------------------------------------------------------------------------- instances


@dataclasses.dataclass(frozen=True)
class ReplayedSeries:
    """Where each VM's readings lie in a shared pool (a replayed trace); the pool is not copied per VM."""

    pool: np.ndarray  # (P,) float32, average CPU readings of every VM of the trace, share of cores
    offset: np.ndarray  # (V,) int64, index in the pool of the VM's reading at its start tick
    start: np.ndarray  # (V,) int32, episode tick of the VM's first reading (negative: before the episode)
    length: np.ndarray  # (V,) int32, readings the VM has

    FIELDS = ("offset", "start", "length")
    """The per-VM fields (the pool is shared)."""

    def take(self, index: np.ndarray) -> ReplayedSeries:
        return ReplayedSeries(self.pool, self.offset[index], self.start[index], self.length[index])


def replayed_utilisation(
    pool: np.ndarray, offset: np.ndarray, start: np.ndarray, length: np.ndarray, tick: int | np.ndarray
) -> np.ndarray:
    """Average CPU at ``tick`` of VMs replayed from a pool (the last reading holds past the end)."""
    index = np.clip(tick - start, 0, np.maximum(length - 1, 0))
    return pool[offset + index]


@dataclasses.dataclass(frozen=True)
class VMInstance:
    """The VMs that ask for a place in one cluster during one episode, sorted by arrival tick."""

    created: np.ndarray  # (V,) int32, tick the VM was created (negative: before the episode)
    arrival: np.ndarray  # (V,) int32, max(created, 0): 0 marks the starting population, running at the start
    departure: np.ndarray  # (V,) int32, tick the VM leaves (exclusive); may lie past the episode's end
    cores: np.ndarray  # (V,) float32, vCPUs the VM was sold
    category: np.ndarray  # (V,) int8, 0 delay-insensitive, 1 interactive, 2 unknown
    deployment: np.ndarray  # (V,) int32, deployment id (VMs of one deployment are correlated)
    hint_true: np.ndarray  # (V,) int8, 0 neutral, 1 contention-tolerant, 2 contention-sensitive (what it is)
    hint_declared: np.ndarray  # (V,) int8, the same classes as declared (wrong at the hint error rate)
    util: UtilParams  # how each VM uses its cores (synthetic VMs)
    series: ReplayedSeries | None = None  # replayed readings instead of util (trace VMs)

    @property
    def num_vms(self) -> int:
        return int(self.arrival.size)

    def columns(self) -> dict[str, np.ndarray]:
        """Per-VM utilisation columns by name: UtilParams' fields, then (replayed VMs) the series' fields."""
        columns = {f: getattr(self.util, f) for f in UtilParams.FIELDS}
        if self.series is not None:
            columns.update({f: getattr(self.series, f) for f in ReplayedSeries.FIELDS})
        return columns

    def take(self, index: np.ndarray) -> VMInstance:
        return VMInstance(
            created=self.created[index],
            arrival=self.arrival[index],
            departure=self.departure[index],
            cores=self.cores[index],
            category=self.category[index],
            deployment=self.deployment[index],
            hint_true=self.hint_true[index],
            hint_declared=self.hint_declared[index],
            util=self.util.take(index),
            series=None if self.series is None else self.series.take(index),
        )

    def readings(self, vm: int, ticks: np.ndarray) -> np.ndarray:
        """Average CPU of one VM at the given ticks (a slow, obvious path for tests and the trace writer)."""
        out = np.empty(ticks.size, np.float32)
        one = np.array([vm])
        for j, t in enumerate(ticks):
            if self.series is not None:
                s = self.series
                out[j] = replayed_utilisation(s.pool, s.offset[one], s.start[one], s.length[one], int(t))[0]
            else:
                out[j] = params_utilisation(self.util.take(one), int(t))[0]
        return out


def _inverse_cdf(points: Sequence[tuple[float, float]], q: np.ndarray, log: bool = False) -> np.ndarray:
    values = np.array([p[0] for p in points])
    probs = np.array([p[1] for p in points])
    if log:
        return np.exp(np.interp(q, probs, np.log(values)))
    return np.interp(q, probs, values)


def mean_lifetime_hours() -> float:
    """Mean of :data:`LIFETIME_CDF` (log-uniform within each segment)."""
    total = 0.0
    for (a, pa), (b, pb) in itertools.pairwise(LIFETIME_CDF):
        total += (pb - pa) * (b - a) / math.log(b / a)
    return total


def mean_cores() -> float:
    return float(np.dot(CORE_COUNTS, CORE_SHARES))


def mean_deployment_size() -> float:
    sizes = np.arange(2, MAX_DEPLOYMENT_SIZE + 1)
    weights = 0.35 * 0.65 ** (sizes - 2)
    multi = float(np.dot(sizes, weights) + MAX_DEPLOYMENT_SIZE * (1.0 - weights.sum()))
    return SINGLE_VM_DEPLOYMENT_SHARE + (1.0 - SINGLE_VM_DEPLOYMENT_SHARE) * multi


def arrival_rate_per_tick(load_factor: float, physical_cores: float) -> float:
    """Deployments per tick that keep ``load_factor`` x physical cores of vCPUs asked for on average."""
    vm_per_hour = load_factor * physical_cores / (mean_lifetime_hours() * mean_cores())
    return vm_per_hour / TICKS_PER_HOUR / mean_deployment_size()


def util_params_for(
    rng: np.random.Generator,
    avg: np.ndarray,
    p95: np.ndarray,
    interactive: np.ndarray,
    peak_hour: np.ndarray,
    dep_key: np.ndarray,
    readings: np.ndarray,
) -> UtilParams:
    """Compact parameters whose ``readings`` readings have average ``avg`` and P95-of-max ``p95`` (shares of cores).

    A long-lived VM reaches its P95 through its 5-minute level (bursts for a
    bursty VM, else a log-normal spread and the daily cycle) and, beyond what
    a log-normal can carry, through peaks inside a reading. A VM with few
    readings (P95 of a handful of values is nearly their maximum) gets a
    steady level and reaches its P95 through peaks inside readings, sized
    for the expected 95th-percentile order statistic of that many uniforms.
    """
    n = avg.size
    avg = np.clip(avg, MIN_AVG_CPU, 1.0)
    p95 = np.clip(np.maximum(p95, avg), 0.0, 1.0)
    p_burst = BURST_PROBABILITY_256 / 256.0
    few = readings < FEW_READINGS
    bursty = (p95 - avg >= BURSTY_SPREAD) & (avg >= 1.3 * p_burst * p95) & ~few
    amp = np.where(interactive & ~few, rng.uniform(*DAILY_AMPLITUDE_RANGE, size=n), 0.0)
    # Non-burst level of a bursty VM pays for the bursts in its average.
    base = np.where(bursty, (avg - p_burst * p95) / (1.0 - p_burst), avg)
    # The readings' P95 carries at most what a log-normal of spread <= NOISE_P95 gives (x3.9);
    # the rest of the P95-of-max is a peak inside the reading (excursion).
    target = np.where(bursty, base * 1.4, np.where(few, base, np.minimum(p95, 1.0)))
    ratio = np.clip(target / base, 1.0, math.exp(NOISE_P95**2 / 2.0) * 0.999)
    sigma = NOISE_P95 - np.sqrt(np.maximum(NOISE_P95**2 - 2.0 * np.log(ratio), 0.0))
    sigma = np.where(interactive, sigma * 0.6, sigma)  # the daily swing provides part of the spread
    reached = np.where(bursty, p95, base * np.exp(NOISE_P95 * sigma - sigma**2 / 2.0) * (1.0 + amp * 0.7))
    # Expected value of the uniform at the 95th percentile of `readings` draws (linear interpolation).
    k = 0.95 * (np.maximum(readings, 1) - 1)
    quantile = np.where(few, (k + 1.0) / (np.maximum(readings, 1) + 1.0), 0.95)
    excursion = EXCURSION_GAIN * np.maximum(p95 - reached, 0.0) / quantile + 0.02 * avg
    phase = 2.0 * np.pi * peak_hour / 24.0
    return UtilParams(
        log_base=(np.log(base) - sigma**2 / 2.0).astype(np.float32),
        sigma=sigma.astype(np.float32),
        amp_cos=(amp * np.cos(phase)).astype(np.float32),
        amp_sin=(amp * np.sin(phase)).astype(np.float32),
        burst_threshold=np.where(bursty, BURST_PROBABILITY_256, 0).astype(np.uint32),
        burst_level=p95.astype(np.float32),
        excursion=excursion.astype(np.float32),
        vm_key=rng.integers(0, 2**32, size=n, dtype=np.uint32),
        dep_key=dep_key.astype(np.uint32),
    )


def _hints(rng: np.random.Generator, category: np.ndarray, error_rate: float) -> tuple[np.ndarray, np.ndarray]:
    n = category.size
    draw = rng.random(n)
    true = np.full(n, HINT_NEUTRAL, np.int8)
    true[(category == DELAY_INSENSITIVE) & (draw < TOLERANT_GIVEN_DELAY_INSENSITIVE)] = HINT_TOLERANT
    true[(category == INTERACTIVE) & (draw < SENSITIVE_GIVEN_INTERACTIVE)] = HINT_SENSITIVE
    wrong = rng.random(n) < error_rate
    shift = rng.integers(1, 3, size=n).astype(np.int8)  # another of the three classes, uniformly
    declared = np.where(wrong, (true + shift) % 3, true).astype(np.int8)
    return true, declared


def sample_vm_instance(
    rng: np.random.Generator,
    *,
    physical_cores: float,
    load_factor: float,
    episode_ticks: int,
    hint_error_rate: float = 0.0,
    lifetime_util_correlation: float = LIFETIME_UTIL_CORRELATION,
) -> VMInstance:
    """One episode of the calibrated synthetic workload.

    Deployments arrive as a Poisson process from :data:`WARMUP_DAYS` before
    the episode until its end, at the rate that asks for ``load_factor`` x
    ``physical_cores`` vCPUs on average; those still running at tick 0 form
    the starting population (arrival 0, in order of their creation).
    """
    rate = arrival_rate_per_tick(load_factor, physical_cores)
    warmup = WARMUP_DAYS * TICKS_PER_DAY
    span = warmup + episode_ticks
    num_deployments = int(rng.poisson(rate * span))
    created = np.sort(rng.integers(-warmup, episode_ticks, size=num_deployments))
    z_life = rng.standard_normal(num_deployments)
    lifetime_dep = _inverse_cdf(LIFETIME_CDF, normal_cdf_fast(z_life), log=True)
    # Most warm-up deployments have left before tick 0: draw the rest of them only for those that may not have
    # (a VM's lifetime is its deployment's x at most JITTER_MAX, so this keeps every VM that runs at tick 0).
    alive = created + lifetime_dep * TICKS_PER_HOUR * LIFETIME_JITTER_MAX > 0
    created, z_life, lifetime_dep = created[alive], z_life[alive], lifetime_dep[alive]
    d = created.size
    multi = rng.random(d) >= SINGLE_VM_DEPLOYMENT_SHARE
    size = np.where(multi, np.minimum(1 + rng.geometric(0.35, d), MAX_DEPLOYMENT_SIZE), 1)
    # Per-deployment draws: the latent utilisation quantile, cores, phase, keys, category.
    rho = lifetime_util_correlation
    z_avg = rho * z_life + math.sqrt(1.0 - rho**2) * rng.standard_normal(d)
    core_bucket = rng.choice(len(CORE_COUNTS), size=d, p=CORE_SHARES)
    peak_hour = (DAILY_PEAK_HOUR + 2.5 * rng.standard_normal(d)) % 24.0
    dep_key = rng.integers(0, 2**32, size=d, dtype=np.uint32)
    category_draw = rng.random(d)
    category = np.empty(d, np.int8)
    for bound, probs in reversed(CATEGORY_GIVEN_LIFETIME):
        rows = lifetime_dep <= bound
        category[rows] = np.searchsorted(np.cumsum(probs), category_draw[rows], side="right").clip(0, 2)
    # Expand to VMs; keep those still running at tick 0 or created during the episode.
    dep = np.repeat(np.arange(d), size)
    jitter = np.exp(0.1 * np.clip(rng.standard_normal(dep.size), -4.0, 4.0))
    lifetime = np.clip(np.rint(lifetime_dep[dep] * jitter * TICKS_PER_HOUR), 1, 720 * TICKS_PER_HOUR).astype(np.int64)
    start = created[dep]
    keep = np.flatnonzero(start + lifetime > 0)
    dep, lifetime, start = dep[keep], lifetime[keep], start[keep]
    v = dep.size
    z_vm_avg = 0.95 * z_avg[dep] + math.sqrt(1 - 0.95**2) * rng.standard_normal(v)
    z_p95 = AVG_P95_CORRELATION * z_vm_avg + math.sqrt(1 - AVG_P95_CORRELATION**2) * rng.standard_normal(v)
    avg = _inverse_cdf(AVG_CPU_CDF, normal_cdf_fast(z_vm_avg)) / 100.0
    p95 = _inverse_cdf(P95_MAX_CPU_CDF, normal_cdf_fast(z_p95)) / 100.0
    category_vm = category[dep]
    util = util_params_for(rng, avg, p95, category_vm == INTERACTIVE, peak_hour[dep], dep_key[dep], lifetime)
    hint_true, hint_declared = _hints(rng, category_vm, hint_error_rate)
    return VMInstance(
        created=start.astype(np.int32),
        arrival=np.maximum(start, 0).astype(np.int32),
        departure=(start + lifetime).astype(np.int32),
        cores=np.array(CORE_COUNTS, np.float32)[core_bucket[dep]],
        category=category_vm,
        deployment=dep.astype(np.int32),
        hint_true=hint_true,
        hint_declared=hint_declared,
        util=util,
    )


# ----------------------------------------------------------------------------- the toy with a known optimum


@dataclasses.dataclass(frozen=True)
class ToyOptimum:
    """The best ratio of a toy instance and what it earns."""

    level: int  # index of the best ratio in the env's ratio levels
    vms_per_node: int  # VMs a node holds at that ratio
    saved_cores: float  # saved cores of the whole cluster at that ratio (every tick from tick 1 on)


def sample_toy_instance(
    rng: np.random.Generator, *, num_nodes: int, node_cores: int, episode_ticks: int, vm_cores: int = 4
) -> VMInstance:
    """Identical VMs at a constant utilisation (drawn per episode) that all arrive at tick 1 and stay.

    Twice as many VMs as the largest ratio could hold arrive, so every node
    fills to its ratio; with no noise, no daily cycle and no bursts, a node
    holding k VMs has demand ``k * vm_cores * u`` every tick. The optimum is
    the largest ratio whose full node stays at or below the threshold
    (:func:`toy_optimum`): a static policy at that ratio, and the hindsight
    oracle, reach it. (They arrive at tick 1, after the first decision, so
    that the first action's ratios place them.)
    """
    level_u = float(rng.choice([0.55, 0.6, 0.65, 0.7, 0.75, 0.8]))
    v = int(2 * math.ceil(1.5 * node_cores / vm_cores) * num_nodes)
    util = UtilParams(
        log_base=np.full(v, math.log(level_u), np.float32),
        sigma=np.zeros(v, np.float32),
        amp_cos=np.zeros(v, np.float32),
        amp_sin=np.zeros(v, np.float32),
        burst_threshold=np.zeros(v, np.uint32),
        burst_level=np.zeros(v, np.float32),
        excursion=np.zeros(v, np.float32),
        vm_key=rng.integers(0, 2**32, size=v, dtype=np.uint32),
        dep_key=rng.integers(0, 2**32, size=v, dtype=np.uint32),
    )
    return VMInstance(
        created=np.ones(v, np.int32),
        arrival=np.ones(v, np.int32),
        departure=np.full(v, episode_ticks + 1, np.int32),
        cores=np.full(v, float(vm_cores), np.float32),
        category=np.zeros(v, np.int8),
        deployment=np.arange(v, dtype=np.int32),
        hint_true=np.zeros(v, np.int8),
        hint_declared=np.zeros(v, np.int8),
        util=util,
    )


def toy_optimum(
    instance: VMInstance, *, ratios: Sequence[float], num_nodes: int, node_cores: int, threshold: float
) -> ToyOptimum:
    """Best ratio of a toy instance: the largest whose full node's demand stays at or below threshold x cores."""
    c = float(instance.cores[0])
    u = float(np.exp(instance.util.log_base[0]))
    best = ToyOptimum(level=0, vms_per_node=int(node_cores // c), saved_cores=0.0)
    for level, r in enumerate(ratios):
        k = math.floor(r * node_cores / c + 1e-9)
        if k * c * u <= threshold * node_cores + 1e-6:
            best = ToyOptimum(level=level, vms_per_node=k, saved_cores=num_nodes * max(k * c - node_cores, 0.0))
    return best


# ----------------------------------------------------------------------------- Azure trace format

VMTABLE_COLUMNS = (
    "vmid",
    "subscriptionid",
    "deploymentid",
    "vmcreated",
    "vmdeleted",
    "maxcpu",
    "avgcpu",
    "p95maxcpu",
    "vmcategory",
    "vmcorecountbucket",
    "vmmemorybucket",
)
READINGS_COLUMNS = ("timestamp", "vmid", "min_cpu", "max_cpu", "avg_cpu")
CORE_BUCKETS = {"2": 2, "4": 4, "8": 8, "24": 24, ">24": 32}
"""vmcorecountbucket -> vCPUs the env sells the VM (the bucket's upper bound; 32 for '>24')."""
MEMORY_BUCKETS = ("2", "4", "8", "32", "64", ">64")
_MEMORY_FOR_CORES = {2: "4", 4: "8", 8: "32", 24: "64", 32: ">64"}


@dataclasses.dataclass(frozen=True)
class VMTrace:
    """A loaded trace: one row per VM of the vmtable, its readings in one shared pool."""

    vmid: tuple[str, ...]  # (V,) trace ids, in vmtable order
    created: np.ndarray  # (V,) int64, tick of the first reading (vmcreated / 300)
    ticks: np.ndarray  # (V,) int64, readings the VM runs for (through vmdeleted)
    cores: np.ndarray  # (V,) float32, vCPUs from the core-count bucket
    category: np.ndarray  # (V,) int8, index in CATEGORIES
    deployment: np.ndarray  # (V,) int32, deployment index (first-seen order)
    avgcpu: np.ndarray  # (V,) float32, the vmtable's average CPU, share of cores
    p95maxcpu: np.ndarray  # (V,) float32, the vmtable's P95 of max CPU, share of cores
    pool: np.ndarray  # (sum ticks,) float32, avg_cpu readings (share of cores), VM after VM
    offset: np.ndarray  # (V,) int64, index of each VM's first reading in the pool
    readings: int  # reading rows read
    filled: int  # ticks with no reading, filled from the previous reading (or the vmtable average)

    @property
    def num_vms(self) -> int:
        return len(self.vmid)

    @property
    def days(self) -> float:
        return float((self.created + self.ticks).max() - self.created.min()) / TICKS_PER_DAY

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.created, self.ticks, self.cores, self.pool, self.offset)))


def _number(path: Path, line: int, column: str, text: str) -> float:
    return parse_float(path, line, column, text.strip(), low=-math.inf)


def _percent(path: Path, line: int, column: str, text: str) -> float:
    value = _number(path, line, column, text)
    if not 0.0 <= value <= 100.0:
        raise TraceFormatError(path, line, f"{value} is outside [0, 100] (a CPU percentage)", column)
    return value


def _vmtable_row(table: Path, line: int, f: list[str]) -> tuple[int, int, float, int, float, float]:
    """(first tick, ticks, cores, category index, average CPU, P95 of max CPU) of a vmtable row, each checked.

    CPU figures are shares of cores; a malformed field raises an error naming the file and line.
    """
    # Seconds from the trace start, bounded: a corrupt vmdeleted would size the VM's slice of the pool.
    start = parse_int(table, line, "vmcreated", f[3].strip(), low=0, high=MAX_TRACE_SECONDS)
    stop = parse_int(table, line, "vmdeleted", f[4].strip(), low=0, high=MAX_TRACE_SECONDS)
    if stop < start:
        raise TraceFormatError(table, line, f"vmdeleted ({stop}) is before vmcreated ({start})", "vmdeleted")
    maxcpu = _percent(table, line, "maxcpu", f[5].strip())
    avg = _percent(table, line, "avgcpu", f[6].strip())
    p95max = _percent(table, line, "p95maxcpu", f[7].strip())
    if avg > maxcpu + 1e-6:
        raise TraceFormatError(table, line, f"avgcpu ({avg}) exceeds maxcpu ({maxcpu})", "avgcpu")
    if p95max > maxcpu + 1e-6:
        raise TraceFormatError(table, line, f"p95maxcpu ({p95max}) exceeds maxcpu ({maxcpu})", "p95maxcpu")
    cat = f[8].strip()
    if cat not in CATEGORIES:
        raise TraceFormatError(table, line, f"{cat!r} is not one of {', '.join(CATEGORIES)}", "vmcategory")
    bucket = f[9].strip()
    if bucket not in CORE_BUCKETS:
        raise TraceFormatError(table, line, f"{bucket!r} is not one of {', '.join(CORE_BUCKETS)}", "vmcorecountbucket")
    if f[10].strip() not in MEMORY_BUCKETS:
        raise TraceFormatError(
            table, line, f"{f[10].strip()!r} is not one of {', '.join(MEMORY_BUCKETS)}", "vmmemorybucket"
        )
    first = start // TICK_SECONDS
    return (
        first,
        stop // TICK_SECONDS + 1 - first,
        float(CORE_BUCKETS[bucket]),
        CATEGORIES.index(cat),
        avg / 100.0,
        p95max / 100.0,
    )


def load_vm_trace(vmtable: str | Path, readings: str | Path | Sequence[str | Path]) -> VMTrace:
    """Stream an Azure-format VM trace: the vmtable, then reading files (any order of rows).

    Memory is one float32 per reading plus a few numbers per VM: rows are
    parsed one at a time, never held. Each VM's slots in the pool come from
    its vmtable lifetime; a reading outside that lifetime, for an unknown
    VM, or twice for one tick is an error naming the file and line, and so
    is a reading whose avg_cpu lies outside [min_cpu, max_cpu] or a readings
    file with no reading. Ticks with no reading take the previous reading
    (the first one, the vmtable average) and are counted in ``filled``.
    Files may be gzip, xz or bzip2 compressed; paths are found by
    :func:`~cloudgym.envs.workloads.traces.find_trace`.
    """
    table = find_trace(vmtable)
    paths = [find_trace(readings)] if isinstance(readings, str | Path) else [find_trace(p) for p in readings]
    if not paths:
        raise FileNotFoundError(f"no readings files given with {table}")
    index: dict[str, int] = {}
    deployments: dict[str, int] = {}
    created: list[int] = []
    ticks: list[int] = []
    cores: list[float] = []
    category: list[int] = []
    deployment: list[int] = []
    avgcpu: list[float] = []
    p95: list[float] = []
    for line, f in csv_rows(table, VMTABLE_COLUMNS, header=None):
        vmid = f[0].strip()
        if not vmid:
            raise TraceFormatError(table, line, "empty", "vmid")
        if vmid in index:
            raise TraceFormatError(table, line, f"vmid {vmid!r} appears twice (first on an earlier line)", "vmid")
        first, lifetime, vm_cores, vm_category, avg, p95max = _vmtable_row(table, line, f)
        index[vmid] = len(created)
        created.append(first)
        ticks.append(lifetime)
        cores.append(vm_cores)
        category.append(vm_category)
        deployment.append(deployments.setdefault(f[2].strip(), len(deployments)))
        avgcpu.append(avg)
        p95.append(p95max)
    if not index:
        raise TraceFormatError(table, 1, "no VM rows")
    ticks_arr = np.array(ticks, np.int64)
    created_arr = np.array(created, np.int64)
    offset = np.concatenate([[0], np.cumsum(ticks_arr)[:-1]]).astype(np.int64)
    pool = np.full(int(ticks_arr.sum()), np.nan, np.float32)
    offsets = offset.tolist()  # plain ints: the per-row loop indexes them
    count = sum(_read_readings(path, pool, index, created, ticks, offset, offsets, table.name) for path in paths)
    filled = int(np.isnan(pool).sum())
    if filled:
        _fill_forward(pool, offset, ticks_arr, np.array(avgcpu, np.float32))
    return VMTrace(
        vmid=tuple(index),
        created=created_arr,
        ticks=ticks_arr,
        cores=np.array(cores, np.float32),
        category=np.array(category, np.int8),
        deployment=np.array(deployment, np.int32),
        avgcpu=np.array(avgcpu, np.float32),
        p95maxcpu=np.array(p95, np.float32),
        pool=pool,
        offset=offset,
        readings=count,
        filled=filled,
    )


def _read_readings(
    path: Path,
    pool: np.ndarray,
    index: dict[str, int],
    created: list[int],
    ticks: list[int],
    offset: np.ndarray,
    offsets: list[int],
    table: str,
) -> int:
    """Stream one readings file into ``pool`` (VM v's slots from ``offset[v]``, also as ints); returns its rows."""
    chunk = _ReadingChunk()
    for line, f in csv_rows(path, READINGS_COLUMNS, header=None):
        # Fast path for a well-formed row; any doubt goes to _check_reading, which names the problem.
        try:
            ts = int(f[0])
            vm = index[f[1].strip()]
            low, high, avg = float(f[2]), float(f[3]), float(f[4])
        except (ValueError, KeyError):
            _check_reading(path, line, f, index, table)
            raise  # pragma: no cover - _check_reading raises first
        k = ts // TICK_SECONDS - created[vm]
        if ts % TICK_SECONDS or not (0.0 <= low <= avg <= high <= 100.0) or not 0 <= k < ticks[vm]:
            _check_reading(path, line, f, index, table, created[vm], ticks[vm])
        chunk.add(offsets[vm] + k, avg / 100.0, line)
        if len(chunk.slot) >= 65_536:
            chunk.flush(pool, path, trace_ids=list(index), offset=offset)
    chunk.flush(pool, path, trace_ids=list(index), offset=offset)
    if not chunk.rows:
        # An empty file would otherwise leave every VM filled from the vmtable average, silently.
        raise TraceFormatError(path, 1, "no reading rows")
    return chunk.rows


class _ReadingChunk:
    """Readings parsed but not yet written to the pool (written in vectorised chunks, duplicates found there)."""

    def __init__(self) -> None:
        self.slot = array.array("q")
        self.value = array.array("f")
        self.line = array.array("q")
        self.rows = 0

    def add(self, slot: int, value: float, line: int) -> None:
        self.slot.append(slot)
        self.value.append(value)
        self.line.append(line)

    def flush(self, pool: np.ndarray, path: Path, *, trace_ids: list[str], offset: np.ndarray) -> None:
        if not self.slot:
            return
        slots = np.frombuffer(self.slot, np.int64)
        order = np.argsort(slots, kind="stable")
        repeated = np.flatnonzero(np.diff(slots[order]) == 0)
        taken = ~np.isnan(pool[slots])
        bad = [int(order[i + 1]) for i in repeated[:1]] + [int(i) for i in np.flatnonzero(taken)[:1]]
        if bad:
            j = min(bad, key=lambda i: self.line[i])
            vm = int(np.searchsorted(offset, slots[j], side="right") - 1)
            raise TraceFormatError(
                path, int(self.line[j]), f"a second reading for VM {trace_ids[vm]!r} at this timestamp", "timestamp"
            )
        pool[slots] = np.frombuffer(self.value, np.float32)
        self.rows += len(self.slot)
        self.slot, self.value, self.line = array.array("q"), array.array("f"), array.array("q")


def _check_reading(
    path: Path,
    line: int,
    f: list[str],
    index: dict[str, int],
    table: str,
    created: int | None = None,
    ticks: int | None = None,
) -> None:
    """Raise the error a malformed reading row deserves (the slow, precise twin of the loader's fast path)."""
    ts = parse_int(path, line, "timestamp", f[0].strip(), low=0, high=MAX_TRACE_SECONDS)
    if ts % TICK_SECONDS:
        raise TraceFormatError(path, line, f"{ts} is not a multiple of {TICK_SECONDS} s", "timestamp")
    if f[1].strip() not in index:
        raise TraceFormatError(path, line, f"vmid {f[1].strip()!r} is not in {table}", "vmid")
    low = _percent(path, line, "min_cpu", f[2].strip())
    high = _percent(path, line, "max_cpu", f[3].strip())
    avg = _percent(path, line, "avg_cpu", f[4].strip())
    if low > high + 1e-6:
        raise TraceFormatError(path, line, f"min_cpu ({low}) exceeds max_cpu ({high})", "min_cpu")
    if not low - 1e-6 <= avg <= high + 1e-6:
        raise TraceFormatError(path, line, f"avg_cpu ({avg}) is outside [min_cpu {low}, max_cpu {high}]", "avg_cpu")
    if created is not None and ticks is not None and not 0 <= ts // TICK_SECONDS - created < ticks:
        raise TraceFormatError(
            path, line, f"{ts} lies outside the VM's lifetime in {table} (vmcreated..vmdeleted)", "timestamp"
        )


def _fill_forward(pool: np.ndarray, offset: np.ndarray, ticks: np.ndarray, average: np.ndarray) -> None:
    """Replace NaN readings by the VM's previous reading (the first, by the vmtable average)."""
    vm_of = np.repeat(np.arange(ticks.size), ticks)
    first = np.zeros(pool.size, bool)
    first[offset] = True
    missing_first = first & np.isnan(pool)
    pool[missing_first] = average[vm_of[missing_first]]
    valid = ~np.isnan(pool)
    last = np.where(valid, np.arange(pool.size), 0)
    np.maximum.accumulate(last, out=last)
    pool[:] = pool[last]


def trace_instance(
    trace: VMTrace,
    rng: np.random.Generator,
    *,
    episode_ticks: int,
    sample: float = 1.0,
    hint_error_rate: float = 0.0,
) -> VMInstance:
    """An episode replayed from a trace: a window starting at a random whole day, a sample of deployments.

    VMs alive at the window's start arrive at tick 0; each keeps its own
    readings from the shared pool (nothing is copied). ``sample`` keeps each
    deployment with that probability (the public traces hold a region, far
    more than one cluster).
    """
    first = int(trace.created.min())
    last_start = max(int((trace.created + trace.ticks).max()) - episode_ticks, first)
    days = (last_start - first) // TICKS_PER_DAY
    begin = first + int(rng.integers(0, days + 1)) * TICKS_PER_DAY
    kept_deployment = rng.random(int(trace.deployment.max()) + 1) < sample
    end = trace.created + trace.ticks
    chosen = np.flatnonzero(kept_deployment[trace.deployment] & (end > begin) & (trace.created < begin + episode_ticks))
    order = chosen[np.argsort(np.maximum(trace.created[chosen], begin), kind="stable")]
    v = order.size
    category = trace.category[order]
    hint_true, hint_declared = _hints(rng, category, hint_error_rate)
    zeros = np.zeros(v, np.float32)
    util = UtilParams(
        log_base=np.log(np.maximum(trace.avgcpu[order], MIN_AVG_CPU)).astype(np.float32),
        sigma=zeros,
        amp_cos=zeros,
        amp_sin=zeros,
        burst_threshold=np.zeros(v, np.uint32),
        burst_level=zeros,
        excursion=zeros,
        vm_key=np.zeros(v, np.uint32),
        dep_key=np.zeros(v, np.uint32),
    )
    return VMInstance(
        created=(trace.created[order] - begin).astype(np.int32),
        arrival=(np.maximum(trace.created[order], begin) - begin).astype(np.int32),
        departure=(end[order] - begin).astype(np.int32),
        cores=trace.cores[order],
        category=category,
        deployment=trace.deployment[order],
        hint_true=hint_true,
        hint_declared=hint_declared,
        util=util,
        series=ReplayedSeries(
            pool=trace.pool,
            offset=trace.offset[order],
            start=(trace.created[order] - begin).astype(np.int32),
            length=trace.ticks[order].astype(np.int32),
        ),
    )


def _trace_id(rng: np.random.Generator) -> str:
    """An id shaped like the trace's hashed ids (base64 text)."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
    return "".join(alphabet[rng.integers(0, 64, size=44)])


def write_vm_trace(
    folder: str | Path, instance: VMInstance, rng: np.random.Generator, *, episode_ticks: int | None = None
) -> tuple[Path, Path]:
    """Write a synthetic instance as ``vmtable.csv`` and ``vm_cpu_readings-file-1-of-1.csv`` (Azure format).

    Times are shifted so that the first VM starts at 0 s; a VM running past
    ``episode_ticks`` (default: the last departure) is cut there. The
    vmtable's maxcpu, avgcpu and p95maxcpu are computed from the written
    readings, as the public trace's are. Readings are written in timestamp
    order, as in the public files.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    horizon = int(instance.departure.max()) if episode_ticks is None else episode_ticks
    start = instance.arrival.astype(np.int64)
    stop = np.minimum(instance.departure.astype(np.int64), horizon)  # exclusive
    alive = stop > start
    vms = np.flatnonzero(alive)
    ids = [_trace_id(rng) for _ in range(instance.num_vms)]
    subs = [_trace_id(rng) for _ in range(int(instance.deployment.max()) + 1)]
    deps = [_trace_id(rng) for _ in range(int(instance.deployment.max()) + 1)]
    stats = np.zeros((instance.num_vms, 3))  # max, sum of avg, count
    p95s: dict[int, list[float]] = {int(v): [] for v in vms}
    readings = out / "vm_cpu_readings-file-1-of-1.csv"
    with readings.open("w", newline="") as f:
        writer = csv.writer(f)
        for t in range(int(start[vms].min()), int(stop[vms].max())):
            live = vms[(start[vms] <= t) & (stop[vms] > t)]
            if live.size == 0:
                continue
            sub = instance.take(live)
            avg = params_utilisation(sub.util, t) if sub.series is None else _series_at(sub.series, t)
            high = max_reading(sub.util, avg, t)
            low = avg * np.float32(0.6)
            for j, v in enumerate(live):
                a, h = round(float(avg[j]) * 100.0, 3), round(float(high[j]) * 100.0, 3)
                writer.writerow([t * TICK_SECONDS, ids[v], round(float(low[j]) * 100.0, 3), h, a])
                stats[v, 0] = max(stats[v, 0], h)
                stats[v, 1] += a
                stats[v, 2] += 1
                p95s[int(v)].append(h)
    table = out / "vmtable.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        bucket_of = {c: b for b, c in CORE_BUCKETS.items()}
        for v in vms:
            cores = int(instance.cores[v])
            writer.writerow(
                [
                    ids[v],
                    subs[int(instance.deployment[v])],
                    deps[int(instance.deployment[v])],
                    int(start[v]) * TICK_SECONDS,
                    (int(stop[v]) - 1) * TICK_SECONDS,
                    round(stats[v, 0], 3),
                    round(stats[v, 1] / stats[v, 2], 3),
                    round(float(np.percentile(p95s[int(v)], 95)), 3),
                    CATEGORIES[int(instance.category[v])],
                    bucket_of[cores],
                    _MEMORY_FOR_CORES[cores],
                ]
            )
    return table, readings


def _series_at(series: ReplayedSeries, tick: int) -> np.ndarray:
    return replayed_utilisation(series.pool, series.offset, series.start, series.length, tick)


def realised_vm_stats(instance: VMInstance, vms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(average CPU, P95 of max CPU) of each VM over its whole life, from its readings (shares of cores).

    The readings are computed tick by tick for the VMs alive at each tick,
    the way the trace's own per-VM columns come from its readings.
    """
    chosen = np.arange(instance.num_vms) if vms is None else np.asarray(vms, np.int64)
    sub = instance.take(chosen)
    start = sub.arrival.astype(np.int64)
    stop = sub.departure.astype(np.int64)
    t0 = int(start.min())
    highs = np.full((chosen.size, int(stop.max()) - t0), np.nan, np.float32)
    total = np.zeros(chosen.size)
    for t in range(t0, int(stop.max())):
        live = np.flatnonzero((start <= t) & (stop > t))
        if live.size == 0:
            continue
        part = sub.take(live)
        avg = params_utilisation(part.util, t) if part.series is None else _series_at(part.series, t)
        total[live] += avg
        highs[live, t - t0] = max_reading(part.util, avg, t)
    counts = np.maximum(stop - start, 1)
    return total / counts, np.nanpercentile(highs, 95, axis=1)


_TRACES: TraceCache[VMTrace] = TraceCache(maxsize=4)


def trace_files(folder: str | Path) -> tuple[Path, list[Path]]:
    """(vmtable, readings files) of a trace folder: ``vmtable.csv`` and ``vm_cpu_readings*.csv``, each maybe compressed.

    The folder is found by :func:`~cloudgym.envs.workloads.traces.find_trace`; a missing file says where it looked.
    """
    path = find_trace(folder)
    tables = sorted(path.glob("vmtable.csv*"))
    readings = sorted(path.glob("vm_cpu_readings*.csv*"))
    if len(tables) != 1 or not readings:
        raise FileNotFoundError(
            f"{path}: expected one vmtable.csv[.gz|.xz|.bz2] and vm_cpu_readings*.csv[...] files, "
            f"found {[p.name for p in tables]} and {[p.name for p in readings]}"
        )
    return tables[0], readings


def cached_trace(folder: str) -> VMTrace:
    """The trace in ``folder`` (:func:`trace_files`), loaded once per process and version of its files.

    Keyed by each file's resolved path, size and modification time, so a file rewritten in place is read again.
    """
    table, readings = trace_files(folder)
    return _TRACES.get([table, *readings], lambda: load_vm_trace(table, readings))


# ----------------------------------------------------------------------------- generators and their readings


class VMUtilisation(Protocol):
    """How running VMs' readings are computed from their per-VM columns (one kind per generator)."""

    @property
    def series_columns(self) -> tuple[str, ...]:
        """Columns a VM table holds for it beyond UtilParams' fields (those of :meth:`VMInstance.columns`)."""
        ...

    def __call__(self, columns: Mapping[str, np.ndarray], tick: int | np.ndarray) -> np.ndarray:
        """Average CPU (share of cores) at ``tick`` of the VMs whose columns are given (broadcasting)."""
        ...


@dataclasses.dataclass(frozen=True)
class ModelledUtilisation:
    """Synthetic VMs: every reading computed from the VM's compact parameters and the tick."""

    @property
    def series_columns(self) -> tuple[str, ...]:
        return ()

    def __call__(self, columns: Mapping[str, np.ndarray], tick: int | np.ndarray) -> np.ndarray:
        return utilisation_of(columns, tick)


@dataclasses.dataclass(frozen=True, eq=False)
class ReplayedUtilisation:
    """Replayed VMs: every reading looked up in the trace's shared pool through the VM's series columns."""

    pool: np.ndarray  # (P,) float32, the trace's readings (shared, never copied per sub-env)

    @property
    def series_columns(self) -> tuple[str, ...]:
        return ReplayedSeries.FIELDS

    def __call__(self, columns: Mapping[str, np.ndarray], tick: int | np.ndarray) -> np.ndarray:
        return replayed_utilisation(self.pool, columns["offset"], columns["start"], columns["length"], tick)


class VMGenerator(Protocol):
    """Makes one episode's :class:`VMInstance` from a sub-env's rng, and says how its VMs' readings are computed."""

    @property
    def utilisation(self) -> VMUtilisation: ...

    def sample(self, rng: np.random.Generator) -> VMInstance: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticVMGenerator:
    """The workload calibrated to the Azure 2019 VM trace (:func:`sample_vm_instance`)."""

    physical_cores: float
    load_factor: float
    episode_ticks: int
    hint_error_rate: float = 0.0
    lifetime_util_correlation: float = LIFETIME_UTIL_CORRELATION

    @property
    def utilisation(self) -> VMUtilisation:
        return ModelledUtilisation()

    def sample(self, rng: np.random.Generator) -> VMInstance:
        return sample_vm_instance(
            rng,
            physical_cores=self.physical_cores,
            load_factor=self.load_factor,
            episode_ticks=self.episode_ticks,
            hint_error_rate=self.hint_error_rate,
            lifetime_util_correlation=self.lifetime_util_correlation,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyVMGenerator:
    """Identical constant VMs with a known optimal ratio (:func:`sample_toy_instance`, :func:`toy_optimum`)."""

    num_nodes: int
    node_cores: int
    episode_ticks: int

    @property
    def utilisation(self) -> VMUtilisation:
        return ModelledUtilisation()

    def sample(self, rng: np.random.Generator) -> VMInstance:
        return sample_toy_instance(
            rng, num_nodes=self.num_nodes, node_cores=self.node_cores, episode_ticks=self.episode_ticks
        )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TraceVMGenerator:
    """Windows of a loaded trace, replayed (:func:`trace_instance`); load it with :func:`cached_trace`."""

    trace: VMTrace
    episode_ticks: int
    sample_share: float = 1.0
    hint_error_rate: float = 0.0

    @property
    def utilisation(self) -> VMUtilisation:
        return ReplayedUtilisation(self.trace.pool)

    def sample(self, rng: np.random.Generator) -> VMInstance:
        return trace_instance(
            self.trace,
            rng,
            episode_ticks=self.episode_ticks,
            sample=self.sample_share,
            hint_error_rate=self.hint_error_rate,
        )
