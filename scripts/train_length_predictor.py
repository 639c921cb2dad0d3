"""Train the output-length predictor LLMRouter-v0 uses by default, and report its held-out accuracy.

    python scripts/train_length_predictor.py --ship

Trains the MLP of ``cloudgym.agents.length_predictor`` on requests from the
calibrated generators, exports it to numpy (``predictor.npz``) and writes
``predictor.yaml`` beside it: the command, the settings and the held-out
accuracy against the majority bucket and the class prior (on synthetic
requests with and without hints, and on the Azure coding trace when
``--trace`` exists; ``--trace none`` skips it). ``--ship`` also copies both
files to ``agents/checkpoints/LLMRouter-v0/length_predictor/``, where the
env finds them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cloudgym.agents import length_predictor as predictor
from cloudgym.agents.checkpoints import reproduce_command
from cloudgym.envs.workloads import llm as workloads


def parse_args(argv: list[str] | None = None) -> predictor.Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = predictor.Args()
    for field in dataclasses.fields(predictor.Args):
        if field.name == "ship":
            continue
        value = getattr(defaults, field.name)
        kind = type(value) if value is not None and not isinstance(value, Path) else Path
        p.add_argument("--" + field.name.replace("_", "-"), type=kind, default=value)
    p.add_argument("--ship", action="store_true", help=f"also copy the weights and report to {predictor.SHIP_DIR}")
    args = predictor.Args(**vars(p.parse_args(argv)))
    if args.trace is not None and str(args.trace).lower() == "none":
        args.trace = None  # skip the real-trace report
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.time()
    model, report = predictor.train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [args.out] + ([predictor.SHIP_DIR] if args.ship else [])
    command = reproduce_command("python scripts/train_length_predictor.py", argv)
    meta = {
        "what": "output-length bucket predictor for LLMRouter-v0 (MLP, numpy inference in the env)",
        "command": command.strip(),
        "buckets_upper_edges_tokens": list(workloads.BUCKET_EDGES),
        "bucket_mean_tokens": [round(float(t), 2) for t in model.bucket_tokens],
        "train": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(args).items()},
        "train_seconds": round(time.time() - started, 1),
        "held_out": report,
        "versions": {"torch": str(torch.__version__), "numpy": str(np.__version__)},
    }
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "predictor.npz")
        (folder / "predictor.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for name, rows in report.items():
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in rows.items()))
    print(f"wrote {', '.join(str(t) for t in targets)}")
    return targets[-1]


if __name__ == "__main__":
    main()
