"""The results table's statistics, bounds, where agents run, and the reference lines training logs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from cloudgym import reports
from cloudgym.agents.checkpoints import CHECKPOINT_ROOT, CheckpointInfo
from cloudgym.evaluation import evaluate, held_out_seeds
from cloudgym.reports import EnvReport, Headline, PlannedRun, cached_evaluate, plan_runs, results_table
from cloudgym.stats import headroom_captured, paired_difference, sample_std
from tests.envs.small_configs import GPU_SMALL

# ----------------------------------------------------------------------------- statistics with known answers


def test_paired_difference_of_a_known_offset_per_seed() -> None:
    rng = np.random.default_rng(7)
    heuristic = rng.normal(100.0, 30.0, size=40)  # seed-to-seed spread far larger than the offsets
    offset = np.linspace(-1.0, 5.0, 40)  # known per seed: mean 2.0, 33 seeds above 0
    d = paired_difference(heuristic + offset, heuristic, higher_is_better=True)
    assert d.n == 40
    assert d.mean == pytest.approx(2.0)
    half = scipy_stats.t.ppf(0.975, 39) * np.std(offset, ddof=1) / math.sqrt(40)
    assert (d.ci_low, d.ci_high) == pytest.approx((2.0 - half, 2.0 + half))
    assert d.won == int((offset > 0).sum())
    assert d.lost == int((offset < 0).sum())
    assert d.excludes_zero
    # The same numbers when lower is better: the policy now loses where the offset is positive.
    worse = paired_difference(heuristic + offset, heuristic, higher_is_better=False)
    assert worse.mean == pytest.approx(2.0)
    assert worse.won == d.lost
    assert worse.lost == d.won


def test_headroom_captured_of_a_known_share() -> None:
    rng = np.random.default_rng(3)
    heuristic = rng.normal(50.0, 10.0, size=64)
    gap = rng.uniform(2.0, 4.0, size=64)  # the bound is better on every seed (lower is better here)
    bound = heuristic - gap
    policy = heuristic - 0.25 * gap  # takes a quarter of the room on every seed
    h = headroom_captured(policy, heuristic, bound, higher_is_better=False)
    assert h.captured == pytest.approx(0.25)
    assert h.gap == pytest.approx(gap.mean())
    assert h.ci_low <= 0.25 <= h.ci_high
    assert h.ci_high - h.ci_low < 1e-9 + 1e-6
    noisy = policy + rng.normal(0.0, 0.5, size=64)
    hn = headroom_captured(noisy, heuristic, bound, higher_is_better=False)
    assert hn.ci_low < hn.captured < hn.ci_high
    assert headroom_captured(heuristic, heuristic, bound, higher_is_better=False).captured == pytest.approx(0.0)
    assert headroom_captured(bound, heuristic, bound, higher_is_better=False).captured == pytest.approx(1.0)


def test_no_headroom_when_the_bound_is_not_better() -> None:
    x = np.arange(10.0)
    h = headroom_captured(x + 1, x, x - 1, higher_is_better=True)  # the "bound" is worse
    assert not h.defined
    assert math.isnan(h.captured)


def test_paired_interval_covers_the_true_difference_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    trials = 2000
    for _ in range(trials):
        base = rng.normal(0.0, 20.0, size=12)
        d = paired_difference(base + rng.normal(1.5, 2.0, size=12), base, higher_is_better=True)
        covered += d.ci_low <= 1.5 <= d.ci_high
    assert 0.93 <= covered / trials <= 0.97


def test_statistics_refuse_unpaired_input() -> None:
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="at least one seed"):
        paired_difference([], [], higher_is_better=True)


def test_one_standard_deviation_convention() -> None:
    assert sample_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0], ddof=1))
    from cloudgym.evaluation import summarise

    rows = [{"x": v} for v in (1.0, 2.0, 3.0, 4.0)]
    assert summarise(rows, "x")[1] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0], ddof=1))


# ----------------------------------------------------------------------------- the results table

FAKE = "Fake-v0"


@pytest.fixture
def fake_report(monkeypatch: pytest.MonkeyPatch) -> EnvReport:
    report = EnvReport(
        env_id=FAKE,
        headline=Headline(column="cost", label="cost", unit="$", higher_is_better=False),
        bound="oracle",
        paper_policy="paper",
    )
    monkeypatch.setitem(reports._REPORTS, FAKE, report)
    return report


def _frame(values: dict[str, tuple[str, np.ndarray]]) -> pd.DataFrame:
    rows = []
    for policy, (kind, costs) in values.items():
        for i, cost in enumerate(costs):
            rows.append(
                {"env_id": FAKE, "policy": policy, "seed": 1_000_000 + i, "return": -cost, "cost": cost}
                | {"scenario": "default", "kind": kind}
            )
    return pd.DataFrame(rows)


def test_results_table_reports_the_constructed_offsets(fake_report: EnvReport) -> None:
    rng = np.random.default_rng(5)
    best = rng.normal(100.0, 25.0, size=32)
    frame = _frame(
        {
            "random": ("baseline", best + 50.0),
            "paper": ("baseline", best + 10.0),  # the paper's policy, not the best heuristic here
            "best": ("baseline", best),
            "agent": ("agent", best - 2.0),  # 2 below the best on every seed
            "oracle": ("oracle", best - 8.0),  # the bound: 8 below, so the agent takes a quarter
        }
    )
    table = results_table(frame)
    agent_line = next(line for line in table.splitlines() if line.startswith("| agent |"))
    relative = -2.0 / best.mean()
    assert f"{100 * relative:+.1f}%" in agent_line
    assert "32/32" in agent_line
    assert "| 25% [25, 25] |" in agent_line
    assert "| best | best heuristic | " in table
    assert "| oracle | bound (hindsight), used for headroom |" in table
    assert "Against the paper's policy (paper, not the best heuristic here): agent vs paper:" in table
    assert "won 32/32" in table


def test_results_table_leaves_out_policies_not_run_on_every_seed(fake_report: EnvReport) -> None:
    frame = _frame({"best": ("baseline", np.arange(8.0)), "oracle": ("oracle", np.arange(8.0) - 1)})
    partial = _frame({"agent": ("agent", np.arange(4.0))})
    table = results_table(pd.concat([frame, partial]))
    assert "| agent |" not in table


# ----------------------------------------------------------------------------- where agents run, bounds


def _checkpoint(name: str, scenario: str | None) -> CheckpointInfo:
    return CheckpointInfo(
        path=Path("/nowhere") / name,
        env_id=FAKE,
        name=name,
        loader="",
        algo="",
        env_kwargs={},
        timesteps=0,
        command="",
        hyperparams={},
        eval_history=[],
        final_metrics={},
        files={},
        extra={},
        scenario=scenario,
        trained_on=(scenario,) if scenario else (),
    )


def test_agents_run_where_they_were_trained(monkeypatch: pytest.MonkeyPatch, fake_report: EnvReport) -> None:
    from cloudgym import policy as policy_module
    from cloudgym.policy import PolicySpec

    specs = {
        n: PolicySpec(env_id=FAKE, name=n, factory=lambda env: None, description=n, kind=k, in_comparison=c)  # type: ignore[arg-type, return-value]
        for n, k, c in (("best", "baseline", True), ("oracle", "oracle", False))
    }
    monkeypatch.setitem(policy_module._REGISTRY, FAKE, specs)
    two = dataclasses.replace(fake_report, scenarios={"a": {}, "b": {"x": 1}}, bound_in_demo=False)
    monkeypatch.setitem(reports._REPORTS, FAKE, two)
    monkeypatch.setattr(reports, "shipped_checkpoints", lambda env_id: [_checkpoint("ag", "b")])
    runs = [r for r in plan_runs(FAKE) if r.policy != "random"]
    assert [(r.scenario, r.policy) for r in runs] == [("a", "best"), ("b", "best"), ("b", "ag")]
    assert [c.name for c in reports.agents_not_run(FAKE, "a")] == ["ag"]
    full = plan_runs(FAKE, full=True)
    assert ("a", "oracle") in [(r.scenario, r.policy) for r in full]  # bounds run with --full even if not in_comparison
    monkeypatch.setitem(reports._REPORTS, FAKE, dataclasses.replace(fake_report, scenarios={"a": {}, "b": {"x": 1}}))
    monkeypatch.setitem(reports._REPORTS, FAKE, dataclasses.replace(reports._REPORTS[FAKE], agents_everywhere=True))
    labels = [r.policy for r in plan_runs(FAKE) if r.kind == "agent"]
    assert labels == ["ag (trained on b)", "ag"]


def test_every_shipped_checkpoint_records_a_scenario_of_its_env() -> None:
    for folder in sorted(CHECKPOINT_ROOT.glob("*/*/checkpoint.yaml")):
        from cloudgym.agents.checkpoints import read_checkpoint

        info = read_checkpoint(folder.parent)
        assert info.trained_on, folder
        assert set(info.trained_on) <= set(reports.get_report(info.env_id).scenarios), folder


def test_evaluate_runs_a_checkpoint_on_its_training_scenario() -> None:
    path = CHECKPOINT_ROOT / "DCLifecycle-v0" / "ppo_bc_realistic"
    seeds = held_out_seeds(1)
    plain = evaluate(path, "DCLifecycle-v0", seeds)
    kwargs = reports.get_report("DCLifecycle-v0").scenarios["realistic"]
    realistic = evaluate(path, "DCLifecycle-v0", seeds, env_kwargs=kwargs)
    assert plain[0]["scenario"] == "realistic"
    assert plain[0]["return"] == realistic[0]["return"]


def test_bound_rows_come_back_from_the_cache(tmp_path: Path) -> None:
    run = PlannedRun("ToyCluster-v0", "default", {}, "cheapest_fit", "cheapest_fit", "oracle")
    seeds = held_out_seeds(3)
    first, hits = cached_evaluate(run, seeds[:2], tmp_path)
    assert hits == 0
    again, hits = cached_evaluate(run, seeds, tmp_path)
    assert hits == 2
    assert again[:2] == first
    assert again == evaluate("cheapest_fit", "ToyCluster-v0", seeds, policy_name="cheapest_fit")
    other = dataclasses.replace(run, env_kwargs={"num_nodes": 3})
    assert cached_evaluate(other, seeds[:1], tmp_path)[1] == 0  # other kwargs: another key


def test_power_foresight_reads_the_reference_rows_future() -> None:
    """The bound's foreseen uncapped power is what the reference row then draws, second by second."""
    from cloudgym.baselines.gpu_powercap import PowerForesight
    from cloudgym.evaluation import make_vector_env

    env = make_vector_env("GPUPowerCap-v0", 3, GPU_SMALL)
    obs, _ = env.reset(seed=[4, 5, 6])
    policy = PowerForesight(env)
    policy.reset(np.arange(3))
    drawn = []
    for _ in range(GPU_SMALL["steps_per_episode"]):
        obs, *_ = env.step(policy.act(obs))
        core = env.core
        drawn.append(core.state.counters.reference_energy.last_w.sum(axis=1) / core.params.budget_w)
    np.testing.assert_allclose(policy.future[:, : len(drawn)], np.stack(drawn, axis=1), rtol=1e-12)


def test_power_foresight_needs_the_reference_row() -> None:
    from cloudgym.baselines.gpu_powercap import PowerForesight
    from cloudgym.evaluation import make_vector_env

    env = make_vector_env("GPUPowerCap-v0", 1, {**GPU_SMALL, "track_reference": False})
    with pytest.raises(ValueError, match="track_reference=True"):
        PowerForesight(env)


# ----------------------------------------------------------------------------- TensorBoard reference lines


@pytest.mark.slow
def test_training_logs_reference_lines_and_a_layout(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from tests.scripts import load_script

    train = load_script("train")
    args = ["--env", "ToyCluster-v0", "--algo", "PPO", "--timesteps", "1024", "--eval-freq", "512"]
    run_dir = train.main([*args, "--eval-episodes", "3", "--out", str(tmp_path), "--name", "t", "--no-progress"])
    scalars: dict[str, list[int]] = {}
    layout = None
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.step for e in acc.Scalars(tag)]
        if "custom_scalars__config__" in acc.Tags()["tensors"]:
            proto = acc.Tensors("custom_scalars__config__")[0].tensor_proto
            layout = layout_pb2.Layout.FromString(proto.string_val[0])
    assert len(scalars["eval/return"]) >= 3
    ref = scalars["ref/cheapest_fit/return"]
    assert ref[0] == scalars["eval/return"][0]
    assert ref[-1] == scalars["eval/return"][-1]
    assert len(ref) == 2
    assert layout is not None
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["return"] == ["^eval/return$", "^ref/[^/]+/return$"]
    assert "cost_usd" in charts


def test_full_run_rewrites_only_its_envs_readme_section(tmp_path: Path) -> None:
    from tests.scripts import load_script

    compare = load_script("compare")
    readme = tmp_path / "README.md"
    kept = "<!-- env:DCLifecycle-v0 -->\nkept as it was\n<!-- /env:DCLifecycle-v0 -->\n"
    readme.write_text(f"# title\n\n{compare.README_BEGIN}\n{kept}{compare.README_END}\n\nafter\n")
    args = ["--env", "ToyCluster-v0", "--full", "--episodes", "3", "--no-cache", "--out", str(tmp_path / "out")]
    compare.main([*args, "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("# title\n")
    assert text.endswith("after\n")
    assert "kept as it was" in text
    assert text.index("<!-- env:ToyCluster-v0 -->") > text.index("<!-- /env:DCLifecycle-v0 -->")
    assert "##### ToyCluster-v0 · `default` · cost ($) ↓ · 3 held-out seeds" in text
    assert "*Written by `python scripts/compare.py --env ToyCluster-v0 --full" in text
    compare.main([*args, "--readme", str(readme)])  # a second run replaces its section, never duplicates it
    assert readme.read_text().count("<!-- env:ToyCluster-v0 -->") == 1


def test_readme_needs_full_and_markers(tmp_path: Path) -> None:
    from tests.scripts import load_script

    compare = load_script("compare")
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        compare.parse_args(["--readme", str(readme)])
    with pytest.raises(SystemExit):
        compare.parse_args(["--full", "--readme", str(readme)])


def test_ship_copies_the_yaml_and_the_loaders_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudgym.agents import checkpoints

    run = tmp_path / "runs" / "agent"
    run.mkdir(parents=True)
    (run / "model.zip").write_bytes(b"weights")
    (run / "events.out.tfevents.1").write_bytes(b"logs")
    checkpoints.write_metadata(
        run,
        {"env_id": "ToyCluster-v0", "name": "agent", "loader": checkpoints.SB3_LOADER, "algo": "PPO", "command": "x"},
    )
    monkeypatch.setattr(checkpoints, "CHECKPOINT_ROOT", tmp_path / "shipped")
    target = checkpoints.ship(run, "renamed")
    assert target == tmp_path / "shipped" / "ToyCluster-v0" / "renamed"
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint.yaml", "model.zip"]
    assert checkpoints.read_checkpoint(target).scenario == "default"  # write_metadata recorded where it trained


def test_a_checkpoint_may_list_the_scenarios_it_was_trained_on(tmp_path: Path) -> None:
    from cloudgym.agents.checkpoints import read_checkpoint

    head = "env_id: ToyCluster-v0\nname: x\nloader: l\nalgo: a\ncommand: c\n"
    (tmp_path / "checkpoint.yaml").write_text(head + "scenario: [default, other]\n")
    info = read_checkpoint(tmp_path)
    assert info.scenario == "default"
    assert info.trained_on == ("default", "other")
    (tmp_path / "checkpoint.yaml").write_text(head + "scenario: 3\n")
    with pytest.raises(ValueError, match="'scenario' must be a scenario name or a list"):
        read_checkpoint(tmp_path)
