"""cloudgym.benchmarks and scripts/bench.py: interleaved windows, replays, kernel workers, SB3 share, quick run.

No timed assertions: the figures live in bench.py's output; these tests
check what is measured against what, in which order, and the structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudgym.benchmarks import (
    KERNELS_ENV_VAR,
    SCALING,
    Replay,
    Series,
    interleave,
    kernel_comparison,
    paired_ratio,
    record,
    sb3_algorithm_for,
    sb3_step_share,
)
from cloudgym.evaluation import make_vector_env
from tests.scripts import load_script

TOY = "ToyCluster-v0"
OVERSUB = "Oversubscription-v0"


class FakeRunner:
    """A runner whose every window takes ``steps`` batch steps in ``seconds``; logs the calls into ``log``."""

    def __init__(self, name: str, batch: int, steps: int, seconds: float, log: list[tuple[str, float]]) -> None:
        self.name, self.batch, self.steps, self.seconds, self.log = name, batch, steps, seconds, log

    def window(self, seconds: float) -> tuple[int, float]:
        self.log.append((self.name, seconds))
        return self.steps, self.seconds

    def close(self) -> None:
        pass


def test_interleave_alternates_rotating_order_after_one_untimed_step_each() -> None:
    log: list[tuple[str, float]] = []
    a = FakeRunner("a", 4, 10, 0.5, log)
    b = FakeRunner("b", 2, 3, 0.25, log)
    c = FakeRunner("c", 1, 1, 1.0, log)
    series = interleave([a, b, c], window_s=0.3, rounds=3)
    assert log[:3] == [("a", 0.0), ("b", 0.0), ("c", 0.0)]
    assert [name for name, _ in log[3:]] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(s == 0.3 for _, s in log[3:])
    # env-steps/s: batch steps x B per second of each window.
    assert series["a"].windows == (80.0, 80.0, 80.0)
    assert series["b"].windows == (24.0, 24.0, 24.0)
    assert paired_ratio(series["a"], series["b"]) == pytest.approx(80 / 24)


def test_interleave_rejects_duplicate_names_and_bad_settings() -> None:
    log: list[tuple[str, float]] = []
    with pytest.raises(ValueError, match="runner names must differ"):
        interleave([FakeRunner("a", 1, 1, 1, log), FakeRunner("a", 1, 1, 1, log)], window_s=0.1, rounds=1)
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        interleave([FakeRunner("a", 1, 1, 1, log)], window_s=0.1, rounds=0)
    with pytest.raises(ValueError, match="window_s must be > 0 s"):
        interleave([FakeRunner("a", 1, 1, 1, log)], window_s=0.0, rounds=1)


def test_series_median_spread_and_paired_ratio_use_the_same_round() -> None:
    fast = Series(windows=(100.0, 50.0, 110.0))  # round 2 was noisy for both
    slow = Series(windows=(10.0, 5.0, 11.0))
    assert fast.median == 100.0
    assert fast.spread == pytest.approx(30 / 100)
    # Per-round ratios are all 10x although the noisy round halves both medians' neighbours.
    assert paired_ratio(fast, slow) == pytest.approx(10.0)
    assert fast.as_dict() == {"median": 100.0, "spread": pytest.approx(0.3), "windows": [100.0, 50.0, 110.0]}


def test_replay_stops_at_the_end_of_the_recording_and_rewinds_before_the_next_window() -> None:
    stepped: list[int] = []
    rewinds: list[int] = []
    replay = Replay("r", 2, [0, 1, 2], stepped.append, lambda: rewinds.append(len(stepped)))
    assert replay.window(0.0)[0] == 1  # at least one step, even in a zero-length window
    steps, _ = replay.window(60.0)  # would run a minute, but the recording ends first
    assert steps == 2
    assert stepped == [0, 1, 2]
    assert rewinds == []
    replay.window(0.0)
    assert rewinds == [3]
    assert stepped == [0, 1, 2, 0]
    assert replay.rewinds == 1
    with pytest.raises(ValueError, match="r: no recorded actions"):
        Replay("r", 1, [], stepped.append, lambda: None)


def test_record_is_the_seeded_random_policy_and_replays_to_the_same_trajectory() -> None:
    rec = record(TOY, 4, window_s=0.0, rounds=5)
    assert len(rec.actions) == 7  # rounds + warm-up + one spare, at least
    again = record(TOY, 4, window_s=0.0, rounds=5)
    assert all(np.array_equal(x, y) for x, y in zip(rec.actions, again.actions))
    env = make_vector_env(TOY, 4)
    env.reset(seed=[0, 1, 2, 3])
    mask = env.action_masks()
    assert mask[np.arange(4), rec.actions[0]].all()  # admissible for the state it was recorded in


def test_kernel_workers_run_each_path_in_its_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the parent has set, the kernels path runs with the variable unset and the other with numpy.
    monkeypatch.setenv(KERNELS_ENV_VAR, "numpy")
    recs = [record(TOY, b, window_s=0.01, rounds=2) for b in (2, 3)]
    out = kernel_comparison(TOY, recs, setup_batch=3, window_s=0.01, rounds=2)
    assert out["setup_batch"] == 3
    assert out["setup"]["kernels"][KERNELS_ENV_VAR] is None
    assert out["setup"]["numpy"][KERNELS_ENV_VAR] == "numpy"
    for path in ("kernels", "numpy"):
        s = out["setup"][path]
        assert s["make_reset_s"] == pytest.approx(s["make_s"] + s["reset_s"])
    assert [row["batch"] for row in out["rows"]] == [2, 3]
    for row in out["rows"]:
        assert len(row["kernels"]["windows"]) == len(row["numpy"]["windows"]) == 2
        assert row["ratio"] > 0


def test_kernel_worker_errors_name_the_worker_and_the_failure() -> None:
    rec = record(TOY, 2, window_s=0.01, rounds=1)
    with pytest.raises(RuntimeError, match="kernels worker failed in 'prepare'"):
        kernel_comparison("NoSuchEnv-v0", [rec], setup_batch=2, window_s=0.01, rounds=1)


def test_sb3_algorithm_follows_masks_and_the_hyperparameter_file() -> None:
    assert sb3_algorithm_for(TOY) == "MaskablePPO"
    assert sb3_algorithm_for("LLMRouter-v0") == "MaskablePPO"
    assert sb3_algorithm_for(OVERSUB) == "PPO"
    assert sb3_algorithm_for("FaaSKeepAlive-v0") == "PPO"


def test_sb3_step_share_times_the_adapter_inside_learn() -> None:
    r = sb3_step_share(TOY, timesteps=1024)
    assert r["algo"] == "MaskablePPO"
    assert r["hyperparams_file"] == "ToyCluster-v0.yaml"
    assert r["timesteps"] >= 1024
    assert 0 < r["step_s"] < r["wall_s"]
    assert r["masks_s"] > 0  # MaskablePPO asks for masks every step
    assert 0 < r["step_share"] < r["env_share"] <= 1


def test_scaling_sweeps_oversubscription_nodes_from_16_to_128() -> None:
    (spec,) = SCALING
    assert (spec.env_id, spec.field, spec.values) == (OVERSUB, "num_nodes", (16, 32, 64, 128))


def test_quick_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script("bench")
    out: dict[str, Any] = bench.main(
        [
            *("--env", TOY, OVERSUB, "--batch", "1", "4", "--quick", "--sb3-share", "--no-extras"),
            "--json",
            str(tmp_path / "bench.json"),
        ]
    )
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(out, default=str))
    rows = out["throughput"]
    assert [(r["env_id"], r["config"], r["batch"]) for r in rows] == [
        (TOY, "default", 1),
        (TOY, "default", 4),
        (OVERSUB, "default", 1),
        (OVERSUB, "default", 4),
    ]
    rounds = out["settings"]["rounds"]
    for r in rows:
        for contender in ("native", "sync", "sb3"):
            assert len(r[contender]["windows"]) == rounds
        assert r["ratio"] > 0
        assert r["sb3_vs_native"] > 0
    assert [k["env_id"] for k in out["kernels"]] == [TOY, OVERSUB]
    assert all(k["setup_batch"] == 4 and [row["batch"] for row in k["rows"]] == [4] for k in out["kernels"])
    (scaling,) = out["scaling"]
    assert [row["value"] for row in scaling["rows"]] == [16, 32]
    assert scaling["ratio_of"] == [32, 16]
    assert scaling["ratio"] > 0
    assert [(s["env_id"], s["algo"]) for s in out["sb3_share"]] == [(TOY, "MaskablePPO"), (OVERSUB, "PPO")]
    printed = capsys.readouterr().out
    for heading in ("SyncVectorEnv", "CLOUDGYM_KERNELS=numpy", "time per node-step", "share of wall time"):
        assert heading in printed


def test_registered_smaller_row_is_measured_beside_the_default() -> None:
    bench = load_script("bench")
    out = bench.main(["--env", "GPUPowerCap-v0", "--batch", "1", "--quick", "--no-kernels", "--no-extras"])
    labels = [(r["config"], r["batch"]) for r in out["throughput"]]
    assert labels == [("default", 1), ("registered", 1)]
    assert out["throughput"][0]["env_kwargs"] == {}
    assert out["throughput"][1]["env_kwargs"]["base_servers"] == 4
