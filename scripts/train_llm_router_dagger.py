"""Train LLMRouter-v0's DAgger router from the hindsight lookahead oracle's per-decision scores.

    OMP_NUM_THREADS=1 python scripts/train_llm_router_dagger.py --ship

Runs :func:`cloudgym.agents.llm_router_dagger.train` (the learner routes,
the oracle scores every instance on a share of its states, the learner is
refitted on all scored states by minimising its expected regret), then
writes ``model.npz`` and ``checkpoint.yaml`` to ``--out`` (and, with
``--ship``, to ``agents/checkpoints/LLMRouter-v0/<name>/``). Training seeds
are 0 .. 50,000 (see ``DaggerArgs.seed_base``), never held-out seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

import cloudgym
from cloudgym.agents import llm_router_dagger as dagger
from cloudgym.agents.checkpoints import reproduce_command, write_metadata
from cloudgym.agents.checkpoints import ship as ship_checkpoint

LOADER = "cloudgym.agents.llm_router_dagger:load_dagger_policy"


def parse_args(argv: list[str] | None) -> tuple[dagger.DaggerArgs, str, Path, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = dagger.DaggerArgs()
    for field in dataclasses.fields(dagger.DaggerArgs):
        value = getattr(defaults, field.name)
        if isinstance(value, tuple):
            p.add_argument("--" + field.name.replace("_", "-"), nargs="+", default=list(value))
        else:
            p.add_argument("--" + field.name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--name", default="dagger")
    p.add_argument("--out", type=Path, default=Path("runs/LLMRouter-v0/dagger"))
    p.add_argument("--ship", action="store_true")
    ns = vars(p.parse_args(argv))
    name, out, ship = ns.pop("name"), ns.pop("out"), ns.pop("ship")
    ns["scenarios"] = tuple(ns["scenarios"])
    return dagger.DaggerArgs(**ns), name, out, ship


def main(argv: list[str] | None = None) -> Path:
    torch.set_num_threads(1)
    args, name, out, ship = parse_args(argv)
    out.mkdir(parents=True, exist_ok=True)

    def keep(r: int, w: dagger.ScorerWeights) -> None:
        w.save(out / f"round{r}.npz")  # every round's learner, for selection on validation seeds

    weights, history, seconds = dagger.train(args, on_round=keep)
    weights.save(out / "model.npz")
    decisions = sum(int(h.get("states", 0)) for h in history if "e2e_mean_s" in h) * args.label_every
    info = {
        "env_id": dagger.ENV_ID,
        "name": name,
        "loader": LOADER,
        "algo": "DAgger (lookahead-oracle scores, expected-regret loss)",
        "command": reproduce_command("python scripts/train_llm_router_dagger.py", argv),
        "scenario": "default",
        "seed": args.seed,
        "timesteps": decisions,
        "env_kwargs": {},
        "hyperparams": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(args).items()},
        "train_seconds": round(seconds, 1),
        "train_history": [{k: float(np.round(v, 5)) for k, v in h.items()} for h in history],
        "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__},
    }
    write_metadata(out, info)
    print(f"wrote {out}", flush=True)
    return ship_checkpoint(out, name) if ship else out


if __name__ == "__main__":
    main()
