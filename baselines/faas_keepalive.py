"""Baselines of FaaSKeepAlive-v0: fixed keep-alive, no unloading, the hybrid histogram policy, FaasCache's
greedy-dual (for fleets under a memory budget) and a hindsight oracle.

All are batched ``act(obs)`` policies over the env's observation (the oracle
also reads the core's upcoming invocations, as hindsight). The module also
registers the env's comparison report (the paper's Figure 15 as a plot) and
its 14-day, 50,000-app replay benchmark.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudgym.benchmarks import Benchmark, peak_rss_mb, register_benchmark
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.faas_keepalive import (
    CV_SCALE,
    MINUTE_CODES,
    NEVER,
    OBS,
    WINDOW_SCALE_MIN,
    FaaSKeepAliveCore,
    batched_action,
    decode_count,
    decode_minutes,
    windows_action,
)
from cloudgym.envs.workloads.faas import (
    CLASS_MIXED_TIMER,
    CLASS_NO_TIMER,
    CLASS_TIMER_ONLY,
    MAX_MEMORY_MB,
    ProcessArrays,
)
from cloudgym.policy import BatchedPolicy, register_policy
from cloudgym.reports import EnvReport, Headline, pyplot, register_report, save_figure

if TYPE_CHECKING:
    import pandas as pd

ENV_ID = "FaaSKeepAlive-v0"
FIXED_KEEPALIVE_MIN = (10, 20, 30, 45, 60, 90, 120)
"""The fixed keep-alive windows of the paper's sweep, minutes."""
HYBRID_RANGES_MIN = (60, 120, 180, 240)
"""The hybrid policy's histogram ranges, minutes (1 to 4 hours)."""


class FixedKeepAlive(BatchedPolicy):
    """Keep the image loaded for a fixed time after each execution; never pre-warm (the state of the practice)."""

    name = "fixed"

    def __init__(self, env: CloudGymVectorEnv, keepalive_min: float) -> None:
        super().__init__(env)
        apps = env.core.num_apps  # type: ignore[attr-defined]
        self.action = batched_action(env.core, windows_action(np.zeros(apps), np.full(apps, keepalive_min)))

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        return self.action.copy()


class HybridHistogram(BatchedPolicy):
    """The hybrid histogram policy of Shahrad et al. (ATC 2020, section 4.2), batched over apps.

    From the app's idle-time histogram (1-minute bins over ``range_min``,
    plus an out-of-bound counter), read from the observation:

    1. if more than ``oob_threshold`` of the idle times were OOB, the app is
       too rare for the histogram: a time-series forecast f of the next idle
       time (the env's log-space EWMA, the forecast of an ARIMA(0,1,1) model,
       standing in for the paper's ARIMA) keeps the image loaded over
       [(1 - forecast_margin) f, (1 + forecast_margin) f];
    2. else if the histogram is not representative (fewer than
       ``min_idle_times`` idle times in range, or the CV of its bin counts
       below ``cv_threshold``): no pre-warm, keep alive for the whole range;
    3. else pre-warm at floor((1 - margin) x p5) and keep alive until
       ceil((1 + margin) x p99) minutes after the execution ended.

    ``min_idle_times`` is our choice (the paper gives no number); the other
    constants are the paper's.
    """

    name = "hybrid"

    def __init__(
        self,
        env: CloudGymVectorEnv,
        range_min: int = 240,
        *,
        min_idle_times: int = 5,
        cv_threshold: float = 2.0,
        margin: float = 0.1,
        oob_threshold: float = 0.5,
        forecast_margin: float = 0.15,
    ) -> None:
        super().__init__(env)
        if env.config.histogram_range_min != range_min:
            raise ValueError(
                f"the hybrid policy with a {range_min}-minute range reads that histogram from the observation: "
                f"make the env with histogram_range_min={range_min} (got {env.config.histogram_range_min}); "
                "evaluate() and compare.py do this for the registered hybrid_* policies"
            )
        self.range_min = range_min
        self.min_idle_times = min_idle_times
        self.cv_threshold = cv_threshold
        self.margin = margin
        self.oob_threshold = oob_threshold
        self.forecast_margin = forecast_margin
        self._cache: tuple[list[np.ndarray], np.ndarray] | None = None

    FEATURES = ("idle_times", "oob_share", "cv", "p5", "p99", "idle_forecast")
    """The observation features the policy reads (the histogram summary and the forecast)."""

    def reset(self, env_ids: np.ndarray) -> None:
        self._cache = None

    def windows(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pre-warm, keep-alive, branch) per app in whole minutes; branch 0 histogram, 1 fallback, 2 forecast.

        ``obs`` is (..., F); the results are flat over its leading axes.
        """
        flat = obs.reshape(-1, obs.shape[-1])
        return self.windows_of({name: flat[:, OBS[name]] for name in self.FEATURES})

    def windows_of(self, features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`windows` from the (N,) feature columns named in FEATURES."""
        prewarm, keepalive, use_forecast, representative = self._windows(features)
        branch = np.where(use_forecast, 2, np.where(representative, 0, 1))
        return prewarm, keepalive, branch

    def _windows(self, features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pre-warm, keep-alive, forecast branch, histogram branch) per app: :meth:`windows_of`'s arithmetic."""
        oob = features["oob_share"]
        n_in = np.rint(decode_count(features["idle_times"], whole=False) * (1.0 - oob))
        use_forecast = oob > self.oob_threshold
        representative = n_in >= self.min_idle_times
        representative &= features["cv"] >= np.float32(self.cv_threshold * CV_SCALE)
        representative &= ~use_forecast
        # Pre-warm and end of the keep-alive, minutes after the execution ended (float32: whole minutes are exact).
        prewarm = np.zeros(oob.shape, np.float32)
        end = np.full(oob.shape, np.float32(self.range_min))
        rows = np.flatnonzero(representative)
        prewarm[rows] = np.floor(np.float32(1.0 - self.margin) * decode_minutes(features["p5"][rows]))
        end[rows] = np.ceil(np.float32(1.0 + self.margin) * decode_minutes(features["p99"][rows]))
        rows = np.flatnonzero(use_forecast)
        forecast = decode_minutes(features["idle_forecast"][rows], whole=False)
        prewarm[rows] = np.floor(np.float32(1.0 - self.forecast_margin) * forecast)
        end[rows] = np.ceil(np.float32(1.0 + self.forecast_margin) * forecast)
        end -= prewarm
        return prewarm, np.maximum(end, 0.0, out=end), use_forecast, representative

    def codes_of(self, features: Mapping[str, np.ndarray], *, owned: bool = False) -> np.ndarray:
        """(N, 2) window codes from the feature columns, recomputed only for apps whose features changed.

        The windows are a pure function of the six features, so the last
        features and codes are kept and compared (the features change only
        for apps that recorded an idle time). The policy keeps copies of the
        features; ``owned=True`` says the arrays are the caller's fresh copies
        (as :meth:`FaaSKeepAliveCore.features` returns), kept without copying.
        """
        current = [np.array(features[name], np.float32, copy=not owned) for name in self.FEATURES]
        cache = self._cache
        if cache is None or cache[0][0].shape != current[0].shape:
            rows = np.arange(current[0].shape[0])
            codes = np.zeros((current[0].shape[0], 2), np.float32)
        else:
            previous, codes = cache
            differs = previous[0] != current[0]
            for i in range(1, len(self.FEATURES)):
                differs |= previous[i] != current[i]
            rows = np.flatnonzero(differs)
        if rows.size:
            prewarm, keepalive, _, _ = self._windows({name: current[i][rows] for i, name in enumerate(self.FEATURES)})
            codes[rows, 0] = MINUTE_CODES[np.minimum(prewarm.astype(np.int64), WINDOW_SCALE_MIN)]
            codes[rows, 1] = MINUTE_CODES[np.minimum(keepalive.astype(np.int64), WINDOW_SCALE_MIN)]
        self._cache = (current, codes)
        return codes

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        flat = obs.reshape(-1, obs.shape[-1])
        codes = self.codes_of({name: flat[:, OBS[name]] for name in self.FEATURES})
        return batched_action(self.env.core, codes.copy())


def upcoming_invocations(core: FaaSKeepAliveCore) -> np.ndarray:
    """(N,) invocations of each app in the minute about to be stepped: hindsight, for the oracle only."""
    return core.apps.source.peek(core.app_minute())


class HindsightOracle(BatchedPolicy):
    """Loads the image exactly in the minutes the app is invoked (it knows the next minute's invocations).

    A lower bound on both axes: no wasted memory and only the cold start of
    an app's first execution ever (an image that never ran cannot be
    pre-warmed in this env's model).
    """

    name = "oracle"

    def __init__(self, env: CloudGymVectorEnv) -> None:
        super().__init__(env)
        if not isinstance(env.core, FaaSKeepAliveCore):
            raise TypeError(f"the oracle needs a FaaSKeepAlive-v0 env, got {type(env.core).__name__}")
        self.core: FaaSKeepAliveCore = env.core

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        core = self.core
        age = np.maximum(core.app_minute() - core.apps.busy_until, 0).astype(np.float64)
        age = np.minimum(age, 10 * 40320.0)
        invoked = upcoming_invocations(core) > 0
        # Window [age, age] loads the image this minute; [age + 1, age + 1] keeps it unloaded.
        codes = windows_action(np.where(invoked, age, age + 1.0), np.zeros(core.num_apps))
        return batched_action(self.env.core, codes, invoked.astype(np.float32))


class GreedyDual(BatchedPolicy):
    """FaasCache's greedy-dual keep-alive (Fuerst and Sharma, ASPLOS 2021), for fleets under a memory budget.

    Images are never unloaded by a timer (pre-warm 0, keep-alive forever);
    when the fleet's budget is full the env evicts the idle image of lowest
    priority (``eviction='policy'``; the third action component). An app's
    priority is set when it is invoked: clock + frequency x cost / size,
    with frequency the invocation-minutes since its image was last loaded
    (reset when it is evicted), size its memory (MB) and cost 1 (the env
    weighs every cold start the same; it models no per-app cold-start
    latency, the paper's cost). The fleet's clock rises to the priority of
    each image evicted. Priorities go to the env as ranks within the fleet
    (in [0, 1]); the env breaks ties least recently used first. Without a
    budget nothing is evicted and the policy is ``no_unload``.
    """

    name = "greedy_dual"

    def __init__(self, env: CloudGymVectorEnv) -> None:
        super().__init__(env)
        if not isinstance(env.core, FaaSKeepAliveCore):
            raise TypeError(f"greedy_dual needs a FaaSKeepAlive-v0 env, got {type(env.core).__name__}")
        self.core: FaaSKeepAliveCore = env.core
        apps, k = self.core.num_apps, self.core.apps_per_fleet
        self.fleets, self.k = self.num_envs, k
        self.frequency = np.zeros(apps)
        self.priority = np.zeros(apps)
        self.was_evicted = np.zeros(apps, bool)
        self.clock = np.zeros(self.num_envs)
        self.codes = windows_action(np.zeros(apps), np.full(apps, float(NEVER)))

    def reset(self, env_ids: np.ndarray) -> None:
        rows = self.core.app_rows(np.asarray(env_ids, np.int64))
        self.frequency[rows] = 0.0
        self.priority[rows] = 0.0
        self.was_evicted[rows] = False
        self.clock[np.asarray(env_ids, np.int64)] = 0.0

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> np.ndarray:
        flat = obs.reshape(-1, obs.shape[-1])
        evicted = flat[:, OBS["evicted"]] > 0 if flat.shape[1] > OBS["evicted"] else np.zeros(flat.shape[0], bool)
        # The clock rises to the priority of the images evicted in the last minute.
        newly = evicted & ~self.was_evicted
        if newly.any():
            lost = np.where(newly, self.priority, -np.inf).reshape(self.fleets, self.k).max(axis=1)
            np.maximum(self.clock, lost, out=self.clock)
        self.frequency[evicted] = 0.0
        self.was_evicted = evicted
        invoked = flat[:, OBS["invoked_last"]] > 0
        self.frequency[invoked] += 1.0
        size_mb = np.maximum(flat[:, OBS["memory"]].astype(np.float64) * MAX_MEMORY_MB, 1.0)
        clock = np.repeat(self.clock, self.k)
        self.priority = np.where(invoked, clock + self.frequency / size_mb, self.priority)
        # Ranks within each fleet (higher priority, higher rank): the env only compares them.
        order = np.argsort(self.priority.reshape(self.fleets, self.k), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(self.k)[None, :], axis=1)
        keep = (ranks.reshape(-1) / max(self.k - 1, 1)).astype(np.float32)
        return batched_action(self.core, self.codes, keep)


def _fixed(minutes: int) -> Any:
    def factory(env: CloudGymVectorEnv) -> FixedKeepAlive:
        return FixedKeepAlive(env, minutes)

    return factory


def _hybrid(range_min: int) -> Any:
    def factory(env: CloudGymVectorEnv) -> HybridHistogram:
        return HybridHistogram(env, range_min)

    return factory


for _minutes in FIXED_KEEPALIVE_MIN:
    register_policy(ENV_ID, f"fixed_{_minutes}", _fixed(_minutes), description=f"fixed keep-alive {_minutes} min")
register_policy(
    ENV_ID, "no_unload", _fixed(int(NEVER)), description="never unload an image once it ran (keep-alive forever)"
)
for _range in HYBRID_RANGES_MIN:
    register_policy(
        ENV_ID,
        f"hybrid_{_range // 60}h",
        _hybrid(_range),
        description=f"hybrid histogram policy, {_range // 60} h range (Shahrad et al. 2020)",
        env_kwargs={"histogram_range_min": _range},
    )
register_policy(
    ENV_ID,
    "greedy_dual",
    GreedyDual,
    description="FaasCache greedy-dual: keep forever, evict lowest clock + frequency / size under a budget",
    env_kwargs={"eviction": "policy"},
)
register_policy(
    ENV_ID, "oracle", HindsightOracle, description="hindsight: loaded exactly when invoked (lower bound)", kind="oracle"
)


# ----------------------------------------------------------------------------- the paper's figure


def paper_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, policy): 75th-percentile app cold-start % and WMT normalised to fixed_10 (= 100%).

    The percentile is over apps invoked in their episode (an app never
    invoked has no cold-start percentage). ``wmt_pct_of_fixed10`` is the
    paper's wasted memory time as we read Shahrad et al. section 5: the time
    an app's image is loaded while it executes nothing, summed over apps
    (every image weighs the same) and normalised to fixed 10's sum
    (``loaded_idle_min``; frames without that column fall back to GB-min).
    ``wmt_gb_pct_of_fixed10`` weights each app by its memory (GB-min), the
    env's reward. Rows without fixed_10 in the same scenario get NaN.
    """
    import pandas as pd

    out = []
    paper_column = "loaded_idle_min" if "loaded_idle_min" in frame.columns else "wasted_gb_min"
    for scenario, rows in frame.groupby("scenario", sort=False):
        reference = rows.loc[rows["policy"] == "fixed_10", paper_column].sum()
        reference_gb = rows.loc[rows["policy"] == "fixed_10", "wasted_gb_min"].sum()
        for policy, prow in rows.groupby("policy", sort=False):
            invoked = prow[prow["invocations"] > 0]
            out.append(
                {
                    "scenario": scenario,
                    "policy": policy,
                    "p75_cold_start_pct": float(np.percentile(invoked["cold_start_pct"], 75))
                    if len(invoked)
                    else math.nan,
                    "wmt_pct_of_fixed10": 100.0 * float(prow[paper_column].sum()) / reference
                    if reference > 0
                    else math.nan,
                    "wmt_gb_pct_of_fixed10": 100.0 * float(prow["wasted_gb_min"].sum()) / reference_gb
                    if reference_gb > 0
                    else math.nan,
                    "mean_return": float(prow["return"].mean()),
                    "apps": len(prow),
                }
            )
    return pd.DataFrame(out)


def plot_paper_figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Figure 15 of the paper: p75 app cold-start % vs normalised WMT, fixed sweep and hybrid ranges as curves."""
    plt = pyplot()

    points = paper_points(frame)
    files = []
    for scenario, pts in points.groupby("scenario", sort=False):
        if "fixed_10" not in set(pts["policy"]):
            continue
        by_name = pts.set_index("policy")
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        fixed = [f"fixed_{m}" for m in FIXED_KEEPALIVE_MIN if f"fixed_{m}" in by_name.index]
        hybrid = [f"hybrid_{r // 60}h" for r in HYBRID_RANGES_MIN if f"hybrid_{r // 60}h" in by_name.index]
        for names, style, label in ((fixed, "o-", "fixed keep-alive"), (hybrid, "s-", "hybrid histogram")):
            if names:
                sel = by_name.loc[names]
                ax.plot(sel["wmt_pct_of_fixed10"], sel["p75_cold_start_pct"], style, label=label)
                for name, row in sel.iterrows():
                    tag = str(name).split("_", 1)[1]
                    ax.annotate(
                        tag,
                        (row["wmt_pct_of_fixed10"], row["p75_cold_start_pct"]),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        known = set(fixed) | set(hybrid) | {"random"}
        # Every other policy (greedy-dual, shipped agents, ...) gets its own marker and colour, so that two
        # points on top of each other (greedy-dual without a budget sits on no_unload) stay distinguishable.
        others = iter(zip(itertools.cycle("^vDPh<>"), itertools.cycle(["C3", "C2", "C4", "C5", "C6", "C8", "C9"])))
        for name, row in by_name.iterrows():
            if name in known:
                continue
            special = {"oracle": ("*", "k"), "no_unload": ("x", "k")}.get(str(name))
            marker, colour = special if special is not None else next(others)
            ax.plot(
                row["wmt_pct_of_fixed10"],
                row["p75_cold_start_pct"],
                marker=marker,
                color=colour,
                linestyle="none",
                markersize=9,
                label=str(name),
            )
        ax.set_xlabel("wasted memory time, % of fixed 10-min keep-alive")
        ax.set_ylabel("app cold starts, 75th percentile (%)")
        ax.set_title(f"{ENV_ID} ({scenario}): cold starts vs wasted memory")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = save_figure(fig, out_dir / f"{ENV_ID}_{scenario}_coldstart_vs_wmt.png")
        files.append(path)
    return files


register_report(
    EnvReport(
        env_id=ENV_ID,
        episodes=256,
        full_episodes=1024,
        headline=Headline(label="episode return (cold starts and idle memory, weighted)"),
        bound="oracle",
        paper_policy="hybrid_4h",
        plots=(plot_paper_figure,),
        tradeoff=("wasted_gb_min", "cold_start_pct"),
    )
)


# ----------------------------------------------------------------------------- the replay benchmark


REPLAY_WORKERS = 2
"""Processes the replay benchmark splits its apps across ("on 2 cores")."""


def replay_slice(first_seed: int, apps: int, minutes: int) -> dict[str, Any]:
    """Hybrid (4 h) over ``apps`` synthetic apps, app i from seed ``first_seed + i``, for ``minutes`` minutes.

    One process, one batched env. Returns the per-app episode totals
    (``cold_starts``, ``invocations``, ``wasted_gb_min``: (apps,) arrays) and
    this process's costs (``reset_s``, ``replay_s``, ``cpu_s``,
    ``peak_rss_mb``). Sub-env i is seeded with its own seed (a seed list), so
    an app's results do not depend on which slice replays it.

    Drives the batched core directly: the policy reads the six features it
    needs (``core.features``, equal to the observation's columns) and
    ``core.step`` takes its actions without the gym boundary's validation
    (``env.step`` checks shape, dtype and range of every action, and builds
    the whole observation, which this policy does not read); the core skips
    tracking the idle hazard and survival features (``track_idle_hazard =
    False``), which only the full observation holds and which it would
    compute from the histograms if asked.
    """
    from cloudgym.envs.faas_keepalive import FaaSKeepAliveVectorEnv

    cpu_started = time.process_time()
    started = time.perf_counter()
    env = FaaSKeepAliveVectorEnv(num_envs=apps, episode_minutes=minutes, warmup_minutes=0)
    env.reset(seed=list(range(first_seed, first_seed + apps)))
    core = env.core
    assert isinstance(core, FaaSKeepAliveCore)
    core.track_idle_hazard = False
    policy = HybridHistogram(env, 240)
    policy.reset(np.arange(apps))
    reset_s = time.perf_counter() - started
    stepping = time.perf_counter()
    info: dict[str, Any] = {}
    for _ in range(minutes):
        codes = policy.codes_of(core.features(HybridHistogram.FEATURES), owned=True)
        _, _, _, info = core.step(batched_action(core, codes))
    replay_s = time.perf_counter() - stepping
    metrics = info["metrics"]  # the last minute ends every app's episode
    return {
        "cold_starts": metrics["cold_starts"],
        "invocations": metrics["invocations"],
        "wasted_gb_min": metrics["wasted_gb_min"],
        "reset_s": reset_s,
        "replay_s": replay_s,
        "cpu_s": time.process_time() - cpu_started,
        "peak_rss_mb": peak_rss_mb(),
    }


def _replay_slice_args(args: tuple[int, int, int]) -> dict[str, Any]:
    return replay_slice(*args)


def replay_apps(apps: int, minutes: int, workers: int = REPLAY_WORKERS) -> dict[str, Any]:
    """:func:`replay_slice` over apps 0..apps-1 (seeds 0..apps-1) split into ``workers`` processes.

    The apps are independent sub-envs, so each worker replays a contiguous
    slice of them with their own seeds and the per-app results are those of
    one process replaying them all (tested). Returns the per-app arrays
    concatenated in app order, the wall time of the whole run (``wall_s``,
    worker start included), the CPU time of all processes (``cpu_s``), the
    peak resident memory summed over the processes (``peak_rss_mb``: the
    parent's plus each worker's, an upper bound since forked workers share
    the parent's pages) and the slowest worker's reset and replay times.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cpu_started = time.process_time()
    started = time.perf_counter()
    bounds = np.linspace(0, apps, min(workers, apps) + 1).round().astype(int)
    slices = [(int(lo), int(hi - lo), minutes) for lo, hi in itertools.pairwise(bounds.tolist())]
    if len(slices) == 1:
        parts = [replay_slice(*slices[0])]
        workers_cpu = 0.0
        workers_rss = 0.0
    else:
        import multiprocessing

        # fork: a worker starts in milliseconds with the library already imported (spawn where there is no fork).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(len(slices)) as pool:
            parts = pool.map(_replay_slice_args, slices)
            pool.close()
            pool.join()
        workers_cpu = sum(part["cpu_s"] for part in parts)
        workers_rss = sum(part["peak_rss_mb"] for part in parts)
    wall_s = time.perf_counter() - started
    parent_cpu = time.process_time() - cpu_started
    out: dict[str, Any] = {
        name: np.concatenate([part[name] for part in parts]) for name in ("cold_starts", "invocations", "wasted_gb_min")
    }
    out.update(
        workers=len(slices),
        wall_s=wall_s,
        cpu_s=parent_cpu + workers_cpu,
        peak_rss_mb=peak_rss_mb() + workers_rss,
        reset_s=max(part["reset_s"] for part in parts),
        replay_s=max(part["replay_s"] for part in parts),
    )
    return out


def replay_benchmark(quick: bool) -> dict[str, float]:
    """Hybrid (4 h) over a 14-day, 50,000-app synthetic fleet in 2 processes, one minute a step (quick: 200 apps, 6 h).

    See :func:`replay_apps` and :func:`replay_slice`.
    """
    apps, minutes = (200, 360) if quick else (50_000, 14 * 1440)
    run = replay_apps(apps, minutes, REPLAY_WORKERS)
    invocations = float(run["invocations"].sum())
    return {
        "apps": float(apps),
        "minutes": float(minutes),
        "workers": float(run["workers"]),
        "total_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "reset_s": run["reset_s"],
        "replay_s": run["replay_s"],
        "app_minutes_per_s": apps * minutes / run["wall_s"],
        "invocations": invocations,
        "cold_start_pct": 100.0 * float(run["cold_starts"].sum()) / max(invocations, 1.0),
        "wasted_gb_min": float(run["wasted_gb_min"].sum()),
        "peak_rss_mb": run["peak_rss_mb"],
    }


register_benchmark(
    Benchmark(
        env_id=ENV_ID,
        name="hybrid_replay_14d_50k",
        description=(
            "hybrid (4 h) policy over 50,000 synthetic apps (app i: seed i) for 14 days at 1-minute ticks "
            "(20,160 steps), the apps split across 2 worker processes (25,000 each; per-app results identical "
            "to one process); each drives core.step directly with the policy on the features it reads (no "
            "gym-boundary validation, idle-hazard tracking off); total_s is wall time, cpu_s all processes' "
            "CPU, peak_rss_mb summed over processes"
        ),
        run=replay_benchmark,
    )
)


# ----------------------------------------------------------------------------- where the hybrid's memory goes

APP_CLASSES = ("strict_timer", "timer_only_jittered", "mixed_timer", "no_timer_periodic", "no_timer")
"""Classes of synthetic apps: strictly periodic timer-only apps, other timer-only apps, apps with a timer and
another trigger, no-timer apps whose stream is periodic (designed CV 0) and the other no-timer apps."""
CV_BUCKETS = ((0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 10.0), (10.0, math.inf))
"""Buckets of the designed inter-arrival CV: (low, high], the first one CV exactly 0."""
BRANCHES = ("histogram", "fallback", "forecast")


def app_classes(core: FaaSKeepAliveCore) -> np.ndarray:
    """(N,) class of each synthetic app (:data:`APP_CLASSES`), from its Figure 6 curve and designed CV."""
    proc = core.apps.source
    if not isinstance(proc, ProcessArrays):
        raise TypeError(f"app classes need the synthetic workload's processes, got {type(proc).__name__}")
    cls, cv = proc.cv_class.reshape(-1), proc.target_cv.reshape(-1)
    out = np.full(cls.size, "no_timer", dtype=object)
    out[(cls == CLASS_NO_TIMER) & (cv == 0)] = "no_timer_periodic"
    out[cls == CLASS_MIXED_TIMER] = "mixed_timer"
    out[cls == CLASS_TIMER_ONLY] = "timer_only_jittered"
    out[(cls == CLASS_TIMER_ONLY) & (cv == 0)] = "strict_timer"
    return out


def cv_buckets(core: FaaSKeepAliveCore) -> np.ndarray:
    """(N,) label of each synthetic app's designed-CV bucket (:data:`CV_BUCKETS`)."""
    proc = core.apps.source
    if not isinstance(proc, ProcessArrays):
        raise TypeError(f"CV buckets need the synthetic workload's processes, got {type(proc).__name__}")
    cv = proc.target_cv.reshape(-1)
    out = np.full(cv.size, "", dtype=object)
    for low, high in CV_BUCKETS:
        sel = cv == 0 if high == 0 else (cv > low) & (cv <= high)
        out[sel] = "0" if high == 0 else f"({low:g}, {high:g}]"
    return out


def hybrid_waste_study(
    apps: int, warmup_minutes: int, episode_minutes: int, seeds: np.ndarray | None = None
) -> dict[str, Any]:
    """Hybrid (4 h) against fixed 10 min on the same held-out apps: p75 cold-start %, WMT, per branch and class.

    Each minute the hybrid's branch (representative histogram, not-representative
    fallback, OOB forecast) is read from the observation, so its wasted memory
    is attributed to the branch that set the windows. ``seeds``: the apps' seeds (default the held-out ones).
    """
    from cloudgym.envs.faas_keepalive import FaaSKeepAliveVectorEnv
    from cloudgym.evaluation import held_out_seeds

    def run(hybrid: bool) -> dict[str, np.ndarray]:
        env = FaaSKeepAliveVectorEnv(num_envs=apps, warmup_minutes=warmup_minutes, episode_minutes=episode_minutes)
        obs, _ = env.reset(seed=held_out_seeds(apps) if seeds is None else [int(s) for s in seeds])
        core = env.core
        assert isinstance(core, FaaSKeepAliveCore)
        policy: BatchedPolicy = HybridHistogram(env, 240) if hybrid else FixedKeepAlive(env, 10)
        probe = HybridHistogram(env, 240)
        totals = {name: np.zeros(apps) for name in ("cold", "inv", "waste", "idle")}
        memory_gb = core.state.apps.memory_gb.reshape(-1)
        branch_minutes, branch_waste = np.zeros((apps, 3)), np.zeros((apps, 3))
        start_branch = probe.windows(obs)[2]
        rows = np.arange(apps)
        for _ in range(episode_minutes):
            branch = probe.windows(obs)[2]
            obs, _, _, _, info = env.step(policy.act(obs))
            totals["cold"] += info["cold_starts"]
            totals["inv"] += info["invocations"]
            totals["waste"] += info["wasted_gb_min"]
            totals["idle"] += info["wasted_gb_min"] / memory_gb
            branch_minutes[rows, branch] += 1
            branch_waste[rows, branch] += info["wasted_gb_min"] / memory_gb
        return {
            **totals,
            "cls": app_classes(core),
            "cvb": cv_buckets(core),
            "start": start_branch,
            "bm": branch_minutes,
            "bw": branch_waste,
        }

    def p75(cold: np.ndarray, inv: np.ndarray) -> float:
        invoked = inv > 0
        return float(np.percentile(100.0 * cold[invoked] / inv[invoked], 75)) if invoked.any() else math.nan

    fixed, hybrid = run(False), run(True)
    # The paper's normalisation (paper_points): loaded idle minutes summed over apps; GB-min as a second figure.
    reference = float(fixed["idle"].sum())
    out: dict[str, Any] = {
        "apps": apps,
        "warmup_minutes": warmup_minutes,
        "episode_minutes": episode_minutes,
        "p75_cold_pct": {"fixed_10": p75(fixed["cold"], fixed["inv"]), "hybrid_4h": p75(hybrid["cold"], hybrid["inv"])},
        "hybrid_wmt_pct_of_fixed10": 100.0 * float(hybrid["idle"].sum()) / reference,
        "hybrid_wmt_gb_pct_of_fixed10": 100.0 * float(hybrid["waste"].sum()) / float(fixed["waste"].sum()),
        "apps_per_branch_at_start": {b: float(np.mean(hybrid["start"] == i)) for i, b in enumerate(BRANCHES)},
        "minutes_per_branch": {b: float(hybrid["bm"][:, i].sum() / hybrid["bm"].sum()) for i, b in enumerate(BRANCHES)},
        "hybrid_wmt_pct_of_fixed10_by_branch": {
            b: 100.0 * float(hybrid["bw"][:, i].sum()) / reference for i, b in enumerate(BRANCHES)
        },
        "by_class": {},
        "by_cv_bucket": {},
    }

    def row(sel: np.ndarray) -> dict[str, float]:
        return {
            "apps": int(sel.sum()),
            "p75_cold_pct_fixed_10": p75(fixed["cold"][sel], fixed["inv"][sel]),
            "p75_cold_pct_hybrid_4h": p75(hybrid["cold"][sel], hybrid["inv"][sel]),
            "wmt_share_of_fixed10_pct": 100.0 * float(fixed["idle"][sel].sum()) / reference,
            "hybrid_wmt_pct_of_fixed10": 100.0 * float(hybrid["idle"][sel].sum()) / reference,
            "fallback_minutes": float(hybrid["bm"][sel, 1].sum() / max(hybrid["bm"][sel].sum(), 1.0)),
        }

    for name in APP_CLASSES:
        out["by_class"][name] = row(hybrid["cls"] == name)
    for low, high in CV_BUCKETS:
        label = "0" if high == 0 else f"({low:g}, {high:g}]"
        out["by_cv_bucket"][label] = row(hybrid["cvb"] == label)
    out["break_even_share_by_class"] = break_even_shares(out["by_class"])
    return out


def break_even_shares(by_class: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    """Share of apps in each class at which the hybrid's WMT equals fixed 10's, the other classes kept in proportion.

    ``by_class`` is :func:`hybrid_waste_study`'s: per class its app count and
    both policies' WMT. Each class's per-app mean WMT under either policy is
    held fixed and only the mix moves, so this answers "how many apps of this
    kind would the workload need for the paper's direction", a question the
    published marginals leave open. ``None``: no share reaches it (the class
    and the rest waste more, or both less, under the hybrid).
    """
    counts = {name: float(row["apps"]) for name, row in by_class.items()}
    fixed = {name: float(row["wmt_share_of_fixed10_pct"]) for name, row in by_class.items()}
    hybrid = {name: float(row["hybrid_wmt_pct_of_fixed10"]) for name, row in by_class.items()}
    shares: dict[str, float | None] = {}
    for name in by_class:
        others = [o for o in by_class if o != name and counts[o] > 0]
        if counts[name] == 0 or not others:
            shares[name] = None
            continue
        # Per-app excess of the hybrid over fixed 10, in the class and in the rest pooled.
        excess_class = (hybrid[name] - fixed[name]) / counts[name]
        excess_rest = sum(hybrid[o] - fixed[o] for o in others) / sum(counts[o] for o in others)
        if (excess_class > 0) == (excess_rest > 0):  # same side (equal ones too): no mix balances
            shares[name] = None
            continue
        shares[name] = excess_rest / (excess_rest - excess_class)
    return shares
