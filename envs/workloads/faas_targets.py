"""Published per-app statistics of the Azure Functions 2019 trace: the synthetic generator's calibration targets.

Source: the dataset's own analysis, repository Azure/AzurePublicDataset,
``analysis/AzureFunctionsDataset2019-Trace_Analysis.md`` and the figures in
``analysis/AzureFunctionsDataset2019_figs/`` (the paper is Shahrad et al.,
"Serverless in the Wild", USENIX ATC 2020). "ATC" is the paper's data,
"released" the public trace's apps; the generator targets ATC.

How the points were read
------------------------
* Figure 6 (``fig6-1.png``, 960 x 384 px, drawn by ggplot ``stat_ecdf``):
  digitised by pixel colour. The grid lines give the axes (x: CV 0 at
  column 78, 1 at 151, 2 at 225, 4 at 372, 6 at 519, 8 at 666, so 73.5 px
  per unit; y: CDF 1.0 at row 21, 0.8 at 83, 0.6 at 145, so 310 px per
  unit and 0 at row 331). At each CV the rows of the curve's colour (ggplot
  hue_pal: all apps #F8766D, only timers #7CAE00, at least one timer
  #00BFC4, no timers #C77CFF; RGB distance < 60) in that column were read.
  Where the solid (ATC) and dashed (released) curves are apart, the dashed
  one lies above for "all apps" and "no timers"; the lower cluster is
  taken. At CV 0 the value is read one column right of the axis (CV 0.014),
  the bottom of the rise (the point mass at 0). Reading error: +-0.01.
* Figure 3(a) and 3(b) (``figure3a.png``, ``figure3b.png``): tables,
  copied.

The four curves of Figure 6 are not independent: "all apps" is the
mixture of "no timers" and "at least one timer" weighted by the share of
Figure 6's apps that have a timer. Solving the mixture at each read point
gives that share as 0.53-0.55 (:data:`FIG6_TIMER_SHARE`), while Figure 3(a)
says 29.15% of all apps have a timer: Figure 6's population is not all
apps (the analysis reads precomputed ``IAT_stats_atc.csv`` whose selection
it does not state; about 65% of no-timer apps are missing from it). The
calibration report therefore prints "all apps" twice: over the generator's
own apps (trigger mix of Figure 3) and reweighted to Figure 6's timer share.

The missing apps are not the ones without a defined Std. The notebook's CV
is ``Std / Mean`` of each app's inter-arrival times; R's ``sd`` of fewer than
2 IATs is NA and ``stat_ecdf`` drops it, so Figure 6 leaves out apps invoked
at most twice over the stats' window (which neither the notebook nor the
dataset's description states). Over the trace's 14 days, Figure 5(a)
(:data:`FIG5A_APP_DAILY_CDF`) puts 6.1% of apps at <= 2 invocations: even if
every one of them had no timer, Figure 6's timer share would be at most
29.15 / (100 - 6.1) = 31% (:func:`max_timer_share_with_a_std`), not 54%.
"""

from __future__ import annotations

FIG6_CV_POINTS = (0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0)
"""The CVs at which Figure 6's curves are read and tested."""

FIG6_ATC: dict[str, tuple[float, ...]] = {
    # CDF at FIG6_CV_POINTS, read as the module docstring says.
    "all": (0.21, 0.45, 0.57, 0.72, 0.85, 0.90, 0.93, 0.945),
    "no_timer": (0.11, 0.23, 0.35, 0.55, 0.76, 0.845, 0.885, 0.91),
    "any_timer": (0.30, 0.635, 0.76, 0.86, 0.93, 0.95, 0.965, 0.97),
    "timer_only": (0.47, 0.845, 0.935, 0.977, 0.994, 0.997, 0.997, 1.0),
}
"""Figure 6 (ATC, solid lines): CDF of the apps' inter-arrival-time CV, per curve."""

FIG6_RELEASED: dict[str, tuple[float, ...]] = {
    # The dashed curves where they separate from the solid ones (upper pixel cluster), same columns.
    "all": (0.22, 0.465, 0.571, 0.732, 0.852, 0.903, 0.935, 0.945),
    "no_timer": (0.116, 0.25, 0.348, 0.548, 0.781, 0.861, 0.897, 0.913),
    "any_timer": (0.329, 0.645, 0.765, 0.861, 0.932, 0.952, 0.968, 0.974),
    "timer_only": (0.519, 0.848, 0.945, 0.977, 0.994, 0.997, 1.0, 1.0),
}
"""Figure 6 (released, dashed lines), for reference."""

FIG6_TIMER_SHARE = 0.54
"""Share of Figure 6's apps with a timer implied by its own curves: (all - no_timer) / (any_timer - no_timer),
0.53-0.55 at CV 0.5-4 (the mean, rounded)."""

FIG3A_ANY_TRIGGER_PCT = {"H": 64.07, "T": 29.15, "Q": 23.70, "S": 6.83, "E": 5.79, "O": 3.09, "o": 6.28}
"""Figure 3(a), ATC: % of apps with at least one function of each trigger (H http, T timer, Q queue,
S storage, E event, O orchestration, o others)."""

FIG3B_COMBINATIONS_PCT: dict[str, tuple[float, float]] = {
    "H": (43.27, 47.54),
    "T": (13.36, 11.90),
    "Q": (9.47, 7.65),
    "HT": (4.59, 4.43),
    "HQ": (4.22, 3.85),
    "E": (3.01, 3.02),
    "S": (2.80, 2.49),
    "TQ": (2.57, 1.89),
    "HTQ": (2.48, 2.21),
    "Ho": (1.69, 1.86),
    "HS": (1.05, 1.01),
    "HO": (1.03, 0.96),
    "HTo": (0.84, 1.21),
}
"""Figure 3(b): % of apps by exact trigger combination, (ATC, released); the 13 most popular (90.40% of ATC apps)."""

FIG2_FUNCTIONS_PCT = {"H": 55.0, "Q": 15.2, "E": 2.2, "O": 6.9, "T": 15.6, "S": 2.8, "o": 2.2}
"""Figure 2, ATC: % of functions per trigger."""

OTHER_COMBINATIONS = ("HE", "HQS", "HTS", "QS", "TS", "TE", "QE", "HTQS", "HQo", "O", "o", "HQO")
"""Our choice: the combinations that share the 9.6% of apps outside Figure 3(b)'s 13, equally (the figure
names none of them; each is a plausible mix of the triggers Figure 3(a) counts)."""

FIG5_APP_DAILY = {"at_most_hourly_pct": 45.0, "at_most_per_minute_pct": 81.0}
"""Figure 5(a) / paper section 3: % of apps invoked at most once per hour / once per minute on average."""

FIG5A_APP_DAILY_CDF: dict[float, float] = {
    1.0 / 14.0: 0.037,
    2.0 / 14.0: 0.061,
    3.0 / 14.0: 0.082,
    0.5: 0.129,
    0.95: 0.170,
    1.0: 0.214,
    3.0: 0.299,
    10.0: 0.384,
    100.0: 0.554,
    1000.0: 0.789,
}
"""Figure 5(a) (``fig5a-1.png``), ATC subset, applications (solid red): CDF of the average daily invocations
(invocations over 14 days / 14) at these rates. Digitised as Figure 6: grid lines give the axes (x: 10^4 at
column 488, 10^7 at 723, so 78.33 px per decade; y: CDF 0 at row 331, 1 at row 37), the curve's colour
(#F8766D) read one or two columns right of each step; of the two clusters where solid and dashed part, the
upper (ATC) one. Reading error +-0.01. 1/14, 2/14, 3/14: apps invoked at most 1, 2, 3 times in 14 days."""


def max_timer_share_with_a_std() -> float:
    """Largest share of apps with a timer among apps with a defined IAT Std over 14 days (Figure 6's population
    if it were Figure 3's apps less those with fewer than 2 IATs): every app invoked at most twice (Figure 5(a))
    assumed timerless."""
    return FIG3A_ANY_TRIGGER_PCT["T"] / 100.0 / (1.0 - FIG5A_APP_DAILY_CDF[2.0 / 14.0])


def mixed_timer_curve() -> tuple[float, ...]:
    """Figure 6's CDF for apps with a timer and another trigger, solved from "any timer" and "timer only".

    Weights from Figure 3: 29.15% of apps have a timer (3(a)), 13.36% are
    timer-only (3(b)); the rest of the timer apps are mixed.
    """
    any_t, only_t = FIG3A_ANY_TRIGGER_PCT["T"], FIG3B_COMBINATIONS_PCT["T"][0]
    mixed = any_t - only_t
    out = []
    for a, o in zip(FIG6_ATC["any_timer"], FIG6_ATC["timer_only"]):
        out.append(min(max((a * any_t - o * only_t) / mixed, 0.0), 1.0))
    # A CDF never decreases (the solve can, within the reading error).
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return tuple(out)
