"""The VM workload: calibration to the Azure 2019 figures, the counter-based noise, the toy, the trace format."""

from __future__ import annotations

import csv
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from cloudgym.envs.workloads import vm

SHARED_TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


@pytest.fixture(scope="module")
def sampled() -> list[vm.VMInstance]:
    return [
        vm.sample_vm_instance(np.random.default_rng(s), physical_cores=768, load_factor=1.5, episode_ticks=2016)
        for s in range(12)
    ]


def _cdf(values: np.ndarray, at: float) -> float:
    return float((values <= at).mean())


def test_lifetimes_cores_and_categories_match_the_trace(sampled: list[vm.VMInstance]) -> None:
    created = [i.take(np.flatnonzero(i.created > 0)) for i in sampled]  # not length-biased like the start
    hours = np.concatenate([(i.departure - i.arrival) / vm.TICKS_PER_HOUR for i in created])
    for bound, share in vm.LIFETIME_CDF[1:-1]:
        assert _cdf(hours, bound) == pytest.approx(share, abs=0.05), f"lifetime <= {bound} h"
    cores = np.concatenate([i.cores for i in created])
    assert cores.mean() == pytest.approx(3.8, abs=0.3)
    for count, share in zip(vm.CORE_COUNTS, vm.CORE_SHARES):
        assert (cores == count).mean() == pytest.approx(share, abs=0.03)
    # Core-hours within the episode by category: delay-insensitive ~58%, interactive ~33%, unknown ~9%.
    core_hours = np.zeros(3)
    for inst in sampled:
        held = inst.cores * (np.minimum(inst.departure, 2016) - inst.arrival)
        core_hours += np.bincount(inst.category, weights=held, minlength=3)
    shares = core_hours / core_hours.sum()
    np.testing.assert_allclose(shares, [0.58, 0.33, 0.09], atol=0.06)


def test_average_and_p95_cpu_cdfs_match_the_trace(sampled: list[vm.VMInstance]) -> None:
    avg, p95 = [], []
    for inst in sampled[:3]:
        new = np.flatnonzero(inst.created > 0)[:700]
        a, p = vm.realised_vm_stats(inst, new)
        avg.append(a)
        p95.append(p)
    avg_all, p95_all = np.concatenate(avg), np.concatenate(p95)
    for pct, share in vm.AVG_CPU_CDF[1:-1]:
        assert _cdf(avg_all, pct / 100) == pytest.approx(share, abs=0.05), f"avg CPU <= {pct}%"
    for pct, share in vm.P95_MAX_CPU_CDF[1:-1]:
        assert _cdf(p95_all, pct / 100) == pytest.approx(share, abs=0.05), f"P95 max CPU <= {pct}%"
    assert 0.05 <= np.median(avg_all) <= 0.09  # DOMAIN: median ~6-8%
    assert 0.12 <= (p95_all > 0.95).mean() <= 0.22  # 15-20% of VMs peak near 100%


def test_hashed_noise_is_unit_variance_with_the_stated_p95() -> None:
    keys = np.arange(200_000, dtype=np.uint32)
    draws = []
    for tick in range(20):
        params = vm.UtilParams(
            log_base=np.zeros(keys.size, np.float32),
            sigma=np.ones(keys.size, np.float32),
            amp_cos=np.zeros(keys.size, np.float32),
            amp_sin=np.zeros(keys.size, np.float32),
            burst_threshold=np.zeros(keys.size, np.uint32),
            burst_level=np.zeros(keys.size, np.float32),
            excursion=np.zeros(keys.size, np.float32),
            vm_key=keys,
            dep_key=keys * np.uint32(7) + np.uint32(1),
        )
        draws.append(np.log(np.maximum(vm.params_utilisation(params, tick), 1e-30)))  # = noise where below 1
    noise = np.concatenate(draws)  # level = exp(noise), clipped at 1: the lower half is exact
    assert np.median(noise) == pytest.approx(0.0, abs=0.01)
    for p, tolerance in ((0.01, 0.1), (0.1, 0.05), (0.25, 0.05)):  # near Gaussian (four uniforms: light tails)
        assert np.quantile(noise, p) == pytest.approx(NormalDist().inv_cdf(p), abs=tolerance)
    # The P95 of the noise, from its symmetric lower tail.
    assert -np.quantile(noise, 0.05) == pytest.approx(vm.NOISE_P95, abs=0.01)


def test_deployments_burst_together_and_utilisation_is_a_pure_function_of_the_tick() -> None:
    rng = np.random.default_rng(3)
    inst = vm.sample_vm_instance(rng, physical_cores=768, load_factor=1.5, episode_ticks=288)
    again = vm.sample_vm_instance(np.random.default_rng(3), physical_cores=768, load_factor=1.5, episode_ticks=288)
    np.testing.assert_array_equal(inst.util.vm_key, again.util.vm_key)
    ticks = np.arange(288)
    bursty = np.flatnonzero(inst.util.burst_threshold > 0)
    dep = inst.deployment[bursty]
    values, counts = np.unique(dep, return_counts=True)
    group = bursty[dep == values[np.argmax(counts)]]
    assert group.size >= 2, "expected a multi-VM bursty deployment"
    bursts = np.stack([inst.readings(int(v), ticks) == inst.util.burst_level[v] for v in group[:2]])
    assert bursts.any()
    np.testing.assert_array_equal(bursts[0], bursts[1])  # one deployment, one burst schedule
    np.testing.assert_array_equal(inst.readings(int(group[0]), ticks), inst.readings(int(group[0]), ticks))


def test_toy_optimum_is_the_largest_cool_ratio() -> None:
    ratios = (1.0, 1.1, 1.2, 1.25, 1.33, 1.5)
    inst = vm.sample_toy_instance(np.random.default_rng(0), num_nodes=4, node_cores=48, episode_ticks=24)
    u = float(np.exp(inst.util.log_base[0]))
    best = vm.toy_optimum(inst, ratios=ratios, num_nodes=4, node_cores=48, threshold=1.0)
    k = best.vms_per_node
    assert k * 4 * u <= 48 + 1e-6
    if best.level + 1 < len(ratios):
        k_next = int(np.floor(ratios[best.level + 1] * 48 / 4 + 1e-9))
        assert k_next * 4 * u > 48  # the next ratio up would run the node hot
    assert best.saved_cores == pytest.approx(4 * max(k * 4 - 48, 0))


# ----------------------------------------------------------------------------- the trace format


def _write_rows(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _tiny_trace(folder: Path) -> tuple[Path, Path]:
    """Two VMs written by hand in the public files' exact layout (no header)."""
    table = _write_rows(
        folder / "vmtable.csv",
        [
            ["vmA", "subX", "depX", 0, 600, 90.0, 30.0, 80.0, "Interactive", "2", "4"],
            ["vmB", "subX", "depY", 300, 900, 50.0, 10.0, 40.0, "Delay-insensitive", ">24", ">64"],
        ],
    )
    readings = _write_rows(
        folder / "vm_cpu_readings-file-1-of-1.csv",
        [
            [0, "vmA", 10.0, 60.0, 20.0],
            [300, "vmA", 5.0, 90.0, 40.0],
            [300, "vmB", 1.0, 50.0, 10.0],
            [600, "vmA", 5.0, 50.0, 30.0],
            [900, "vmB", 1.0, 20.0, 5.0],
        ],
    )
    return table, readings


def test_loader_reads_the_public_format(tmp_path: Path) -> None:
    table, readings = _tiny_trace(tmp_path)
    trace = vm.load_vm_trace(table, readings)
    assert trace.vmid == ("vmA", "vmB")
    np.testing.assert_array_equal(trace.created, [0, 1])
    np.testing.assert_array_equal(trace.ticks, [3, 3])  # readings at created..deleted inclusive
    np.testing.assert_array_equal(trace.cores, [2, 32])
    np.testing.assert_array_equal(trace.category, [vm.INTERACTIVE, vm.DELAY_INSENSITIVE])
    assert trace.readings == 5
    assert trace.filled == 1  # vmB has no reading at 600 s: it repeats its previous one
    np.testing.assert_allclose(trace.pool, [0.2, 0.4, 0.3, 0.1, 0.1, 0.05], rtol=1e-6)


def test_loader_accepts_a_header_row(tmp_path: Path) -> None:
    table, readings = _tiny_trace(tmp_path)
    lines = table.read_text()
    table.write_text(",".join(vm.VMTABLE_COLUMNS) + "\n" + lines)
    lines = readings.read_text()
    readings.write_text(",".join(vm.READINGS_COLUMNS) + "\n" + lines)
    assert vm.load_vm_trace(table, readings).num_vms == 2


@pytest.mark.parametrize(
    ("which", "row", "message"),
    [
        ("table", ["vmC", "s", "d", 0, 300, 1.0, 1.0], "expected 11 fields, got 7"),
        ("table", ["vmC", "s", "d", "soon", 300, 1, 1, 1, "Unknown", "2", "4"], "vmcreated: 'soon' is not an integer"),
        ("table", ["vmC", "s", "d", 600, 300, 1, 1, 1, "Unknown", "2", "4"], "before vmcreated"),
        ("table", ["vmA", "s", "d", 0, 300, 1, 1, 1, "Unknown", "2", "4"], "appears twice"),
        ("table", ["vmC", "s", "d", 0, 300, 1, 1, 1, "Batch", "2", "4"], "vmcategory: 'Batch' is not one"),
        ("table", ["vmC", "s", "d", 0, 300, 1, 1, 1, "Unknown", "3", "4"], "vmcorecountbucket: '3' is not"),
        ("table", ["vmC", "s", "d", 0, 300, 1, 120, 1, "Unknown", "2", "4"], "outside \\[0, 100\\]"),
        ("readings", [900, "vmZ", 1, 2, 1], "not in vmtable.csv"),
        ("readings", [901, "vmA", 1, 2, 1], "not a multiple of 300"),
        ("readings", [3000, "vmA", 1, 2, 1], "outside the VM's lifetime"),
        ("readings", [0, "vmA", 1, 2, 1], "a second reading"),
        ("readings", [600, "vmB", 9, 2, 1], r"min_cpu \(9.0\) exceeds max_cpu"),
        ("readings", [600, "vmB", 1, 2, "nan"], "finite"),
    ],
)
def test_malformed_rows_name_file_line_and_problem(tmp_path: Path, which: str, row: list[object], message: str) -> None:
    table, readings = _tiny_trace(tmp_path)
    target = table if which == "table" else readings
    with target.open("a", newline="") as f:
        csv.writer(f).writerow(row)
    line = len(target.read_text().splitlines())
    with pytest.raises(vm.TraceFormatError, match=message) as err:
        vm.load_vm_trace(table, readings)
    assert err.value.path == target
    assert err.value.line == line
    assert f"{target}, line {line}" in str(err.value)


def test_writer_and_loader_round_trip_a_generated_instance(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    inst = vm.sample_vm_instance(rng, physical_cores=96, load_factor=1.0, episode_ticks=120)
    table, readings = vm.write_vm_trace(tmp_path, inst, rng, episode_ticks=120)
    assert table.name == "vmtable.csv"
    first = next(csv.reader(readings.open()))
    assert len(first) == 5
    assert int(first[0]) % 300 == 0
    trace = vm.load_vm_trace(table, readings)
    alive = np.flatnonzero(np.minimum(inst.departure, 120) > inst.arrival)
    assert trace.num_vms == alive.size
    assert trace.filled == 0
    # Every VM's readings come back (to the 3 decimals of a percentage the writer keeps).
    for j, v in enumerate(alive[:25]):
        ticks = np.arange(inst.arrival[v], min(inst.departure[v], 120))
        got = trace.pool[trace.offset[j] : trace.offset[j] + ticks.size]
        np.testing.assert_allclose(got, inst.readings(int(v), ticks), atol=1e-5)
    # The vmtable's avgcpu is the mean of the written readings.
    np.testing.assert_allclose(
        trace.avgcpu[:25],
        [trace.pool[o : o + n].mean() for o, n in zip(trace.offset[:25], trace.ticks[:25])],
        atol=1e-4,
    )


def test_trace_instance_windows_and_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    inst = vm.sample_vm_instance(rng, physical_cores=96, load_factor=1.0, episode_ticks=3 * vm.TICKS_PER_DAY)
    vm.write_vm_trace(tmp_path, inst, rng, episode_ticks=3 * vm.TICKS_PER_DAY)
    trace = vm.load_vm_trace(tmp_path / "vmtable.csv", tmp_path / "vm_cpu_readings-file-1-of-1.csv")
    episode = vm.trace_instance(trace, np.random.default_rng(0), episode_ticks=vm.TICKS_PER_DAY)
    assert np.all(np.diff(episode.arrival) >= 0)
    assert np.all(episode.departure > 0)
    assert np.all(episode.arrival < vm.TICKS_PER_DAY)
    assert episode.series is not None
    assert episode.series.pool is trace.pool
    half = vm.trace_instance(trace, np.random.default_rng(0), episode_ticks=vm.TICKS_PER_DAY, sample=0.5)
    assert half.num_vms < episode.num_vms


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="../shared/traces is absent")
def test_no_public_vm_trace_sample_is_shared() -> None:
    """The shared folder holds no Azure VM trace (its README says why); the loader is tested on written files."""
    names = {p.name for p in SHARED_TRACES.iterdir()}
    assert "vmtable.csv" not in names, "a VM trace sample appeared in ../shared/traces: add a test that loads it"
