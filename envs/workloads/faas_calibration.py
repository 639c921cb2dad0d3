"""Calibration report of the synthetic FaaS generator against the published per-app statistics.

``python -m cloudgym.envs.workloads.faas_calibration [--apps 2000] [--days 14] [--first-seed 0]``
prints, beside each target of :mod:`cloudgym.envs.workloads.faas_targets`,
the generator's statistic computed as the dataset's analysis notebook
computes it: per app, all its functions pooled, over the whole horizon
(14 days, the trace's), the inter-arrival CV = Std / Mean of the app's
inter-arrival times (R's ``sd``, denominator n - 1; apps with fewer than 2
inter-arrival times have no CV and drop out of ``stat_ecdf``, as NA). The
trace has one-minute resolution: an arrival is a minute with invocations.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import numpy as np

from cloudgym.envs.workloads.faas import (
    CLASS_NO_TIMER,
    CLASS_TIMER_ONLY,
    MINUTES_PER_DAY,
    AppProcess,
    ProcessArrays,
    process_events,
    sample_app,
)
from cloudgym.envs.workloads.faas_targets import (
    FIG2_FUNCTIONS_PCT,
    FIG3A_ANY_TRIGGER_PCT,
    FIG3B_COMBINATIONS_PCT,
    FIG5_APP_DAILY,
    FIG5A_APP_DAILY_CDF,
    FIG6_ATC,
    FIG6_CV_POINTS,
    FIG6_TIMER_SHARE,
    max_timer_share_with_a_std,
)

CURVES = ("all", "no_timer", "any_timer", "timer_only")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamStats:
    """Per-app statistics of the invoked minutes over a horizon."""

    cv: np.ndarray  # (A,) float64, inter-arrival CV (Std with n - 1 / Mean), NaN with fewer than 2 gaps
    invoked_minutes: np.ndarray  # (A,) int64, minutes with at least one invocation
    invocations: np.ndarray  # (A,) int64, invocations over the horizon


def stream_stats(apps: Sequence[AppProcess], minutes: int) -> StreamStats:
    """Replay ``apps`` for ``minutes`` minutes and return their :class:`StreamStats` (no dense counts kept)."""
    n = len(apps)
    proc = ProcessArrays.of(apps)
    last = np.full(n, -1, np.int64)
    gaps = np.zeros(n, np.int64)
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    invocations = np.zeros(n, np.int64)
    for t in range(minutes):
        rows, counts = process_events(proc, t)
        if rows.size == 0:
            continue
        invocations[rows] += counts
        seen = last[rows] >= 0
        g = (t - last[rows[seen]]).astype(np.float64)
        r = rows[seen]
        gaps[r] += 1
        s1[r] += g
        s2[r] += g * g
        last[rows] = t
    cv = np.full(n, np.nan)
    ok = gaps >= 2
    mean = s1[ok] / gaps[ok]
    var = np.maximum(s2[ok] - gaps[ok] * mean * mean, 0.0) / (gaps[ok] - 1)
    cv[ok] = np.sqrt(var) / mean
    invoked = gaps + (last >= 0)
    return StreamStats(cv=cv, invoked_minutes=invoked, invocations=invocations)


def ecdf_at(values: np.ndarray, points: Sequence[float] = FIG6_CV_POINTS) -> np.ndarray:
    """Empirical CDF of ``values`` (NaN dropped, as ``stat_ecdf``) at ``points``."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.full(len(points), np.nan)
    return np.array([np.mean(v <= p) for p in points])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Calibration:
    """The generator's statistics beside the targets."""

    fig6: dict[str, np.ndarray]  # curve -> (8,) CDF at FIG6_CV_POINTS (all apps over the generator's own mix)
    fig6_all_reweighted: np.ndarray  # (8,) "all" with timer apps weighted to FIG6_TIMER_SHARE
    fig6_apps: dict[str, int]  # curve -> apps with a CV
    combinations_pct: dict[str, float]  # Figure 3(b) combination -> % of apps
    any_trigger_pct: dict[str, float]  # Figure 3(a) letter -> % of apps
    daily_pct: dict[str, float]  # at most hourly / per minute, % of apps
    fig5a_cdf: np.ndarray  # CDF of invocations over the horizon / days at FIG5A_APP_DAILY_CDF's rates
    functions_one_pct: float  # % of apps with one function
    functions_pct: dict[str, float]  # Figure 2 trigger letter -> % of functions
    top_apps_invocation_pct: float  # % of invocations carried by the top 18.6% of apps
    timer_share_fig6: float  # share of apps with a CV that have a timer

    def fig6_gaps(self) -> dict[str, float]:
        """Max |CDF gap| per Figure 6 curve ("all" reweighted, and raw as "all_raw")."""
        out = {c: float(np.max(np.abs(self.fig6[c] - np.array(FIG6_ATC[c])))) for c in CURVES if c != "all"}
        out["all"] = float(np.max(np.abs(self.fig6_all_reweighted - np.array(FIG6_ATC["all"]))))
        out["all_raw"] = float(np.max(np.abs(self.fig6["all"] - np.array(FIG6_ATC["all"]))))
        return out

    def combination_gaps(self) -> dict[str, float]:
        return {c: abs(self.combinations_pct[c] - FIG3B_COMBINATIONS_PCT[c][0]) for c in FIG3B_COMBINATIONS_PCT}


def calibrate(apps: int = 2000, days: int = 14, first_seed: int = 0) -> Calibration:
    """Draw ``apps`` apps (app i from seed first_seed + i), replay ``days`` days and compare with the targets."""
    procs = [sample_app(np.random.default_rng(first_seed + i)) for i in range(apps)]
    stats = stream_stats(procs, days * MINUTES_PER_DAY)
    cls = np.array([a.cv_class for a in procs])
    timer = cls != CLASS_NO_TIMER
    sel = {
        "all": np.ones(apps, bool),
        "no_timer": cls == CLASS_NO_TIMER,
        "any_timer": timer,
        "timer_only": cls == CLASS_TIMER_ONLY,
    }
    fig6 = {c: ecdf_at(stats.cv[m]) for c, m in sel.items()}
    reweighted = FIG6_TIMER_SHARE * fig6["any_timer"] + (1.0 - FIG6_TIMER_SHARE) * fig6["no_timer"]
    has_cv = np.isfinite(stats.cv)
    combos = np.array([a.combination for a in procs])
    daily = stats.invocations / days
    n_functions = sum(len(a.functions) for a in procs)
    return Calibration(
        fig6=fig6,
        fig6_all_reweighted=reweighted,
        fig6_apps={c: int(np.count_nonzero(has_cv & m)) for c, m in sel.items()},
        combinations_pct={c: 100.0 * float(np.mean(combos == c)) for c in FIG3B_COMBINATIONS_PCT},
        any_trigger_pct={k: 100.0 * float(np.mean([k in c for c in combos])) for k in FIG3A_ANY_TRIGGER_PCT},
        daily_pct={
            "at_most_hourly_pct": 100.0 * float(np.mean(daily <= 24)),
            "at_most_per_minute_pct": 100.0 * float(np.mean(daily <= MINUTES_PER_DAY)),
        },
        # A small slack so that exactly k invocations over 14 days count as <= k / 14 a day.
        fig5a_cdf=np.array([np.mean(daily <= x * (1.0 + 1e-9)) for x in FIG5A_APP_DAILY_CDF]),
        functions_one_pct=100.0 * float(np.mean([a.num_functions == 1 for a in procs])),
        functions_pct={k: 100.0 * sum(a.functions.count(k) for a in procs) / n_functions for k in FIG2_FUNCTIONS_PCT},
        top_apps_invocation_pct=100.0
        * float(np.sort(stats.invocations)[::-1][: int(0.186 * apps)].sum() / max(stats.invocations.sum(), 1)),
        timer_share_fig6=float(np.mean(timer[has_cv])) if has_cv.any() else float("nan"),
    )


def report(cal: Calibration) -> str:
    """The calibration as Markdown tables (target beside generator)."""
    lines = ["Figure 6, CDF of the app's inter-arrival CV (ATC target / generator):", ""]
    lines.append("| curve | apps | " + " | ".join(f"CV {p:g}" for p in FIG6_CV_POINTS) + " | max gap |")
    lines.append("|---|---|" + "---|" * (len(FIG6_CV_POINTS) + 1))
    gaps = cal.fig6_gaps()
    for c in CURVES:
        vals = cal.fig6[c]
        cells = " | ".join(f"{t:.2f} / {g:.2f}" for t, g in zip(FIG6_ATC[c], vals))
        gap = gaps["all_raw"] if c == "all" else gaps[c]
        lines.append(f"| {c} | {cal.fig6_apps[c]} | {cells} | {gap:.3f} |")
    cells = " | ".join(f"{t:.2f} / {g:.2f}" for t, g in zip(FIG6_ATC["all"], cal.fig6_all_reweighted))
    lines.append(f"| all, timer apps weighted to {FIG6_TIMER_SHARE:.2f} | - | {cells} | {gaps['all']:.3f} |")
    lines += [
        "",
        f"Share of apps with a CV that have a timer: {cal.timer_share_fig6:.3f} (Figure 6 implies {FIG6_TIMER_SHARE})",
        "",
        f"Apps with a CV (at least 2 inter-arrival times over the horizon): {cal.fig6_apps['all']}; "
        f"Figure 5(a) leaves at most {100.0 * max_timer_share_with_a_std():.1f}% of apps with a timer among "
        "the apps with a CV over 14 days",
        "",
    ]
    lines += ["Figure 3(b), % of apps by trigger combination (ATC target / generator):", ""]
    lines.append("| combination | target | generator | gap |")
    lines.append("|---|---|---|---|")
    for c, gap in cal.combination_gaps().items():
        lines.append(f"| {c} | {FIG3B_COMBINATIONS_PCT[c][0]:.2f} | {cal.combinations_pct[c]:.2f} | {gap:.2f} |")
    lines += ["", "Figure 3(a), % of apps with at least one function of a trigger (ATC target / generator):", ""]
    lines.append("| trigger | target | generator |")
    lines.append("|---|---|---|")
    for k, v in FIG3A_ANY_TRIGGER_PCT.items():
        lines.append(f"| {k} | {v:.2f} | {cal.any_trigger_pct[k]:.2f} |")
    lines += ["", "| statistic | target | generator |", "|---|---|---|"]
    for k, v in FIG5_APP_DAILY.items():
        lines.append(f"| apps {k.replace('_pct', '').replace('_', ' ')} (%) | {v:.1f} | {cal.daily_pct[k]:.1f} |")
    lines.append(f"| apps with one function (%) (Figure 1) | 54.0 | {cal.functions_one_pct:.1f} |")
    lines.append(
        f"| invocations of the top 18.6% of apps (%) (Figure 5(b)) | 99.6 | {cal.top_apps_invocation_pct:.1f} |"
    )
    lines += ["", "Figure 5(a), CDF of the apps' average daily invocations (ATC subset target / generator):", ""]
    lines.append("| invocations a day | target | generator |")
    lines.append("|---|---|---|")
    for (x, v), g in zip(FIG5A_APP_DAILY_CDF.items(), cal.fig5a_cdf):
        lines.append(f"| {x:.3g} | {v:.3f} | {g:.3f} |")
    lines += ["", "Figure 2, % of functions per trigger (ATC target / generator):", ""]
    lines.append("| trigger | target | generator |")
    lines.append("|---|---|---|")
    for k, v in FIG2_FUNCTIONS_PCT.items():
        lines.append(f"| {k} | {v:.1f} | {cal.functions_pct[k]:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(report(calibrate(args.apps, args.days, args.first_seed)))


if __name__ == "__main__":
    main()
