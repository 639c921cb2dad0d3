"""Train the learned keep-alive agent of FaaSKeepAlive-v0 (HazardMLP), evaluate it held out, ship it.

    python scripts/train_faas_keepalive_agent.py --name hazard_mlp --ship

Collects minutes from training seeds, fits the cost-weighted MLP of
``cloudgym.agents.faas_keepalive`` (hyperparameters: section ``HazardMLP`` of
``agents/hyperparams/FaaSKeepAlive-v0.yaml``), evaluates it on the held-out
seeds and writes ``model.pt`` and ``checkpoint.yaml`` (the command, the
weights it was trained at, the held-out metrics) under ``runs/``; ``--ship``
copies them to ``agents/checkpoints/FaaSKeepAlive-v0/<name>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

import cloudgym
from cloudgym.agents import faas_keepalive as agent
from cloudgym.agents.checkpoints import reproduce_command, safe_name, ship, write_metadata
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.faas_keepalive import FaaSKeepAliveVectorEnv
from cloudgym.evaluation import evaluate, held_out_seeds, summarise

ENV_ID = agent.ENV_ID


@dataclasses.dataclass
class Args:
    name: str
    seed: int
    out: Path
    ship: bool


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", type=safe_name, default="hazard_mlp", help="run name")
    p.add_argument("--seed", type=int, default=0, help="training seed (evaluation uses held-out seeds)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="runs folder")
    p.add_argument("--ship", action="store_true", help="copy to agents/checkpoints/FaaSKeepAlive-v0/<name>")
    args = Args(**vars(p.parse_args(argv)))
    hp = agent.load_section()
    torch.set_num_threads(1)  # the machine's cores are shared
    started = time.time()
    x, y, w = agent.collect(hp, args.seed)
    model, losses = agent.fit(hp, x, y, w, args.seed)
    elapsed = time.time() - started
    run_dir = args.out / ENV_ID / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run_dir / "model.pt")  # saved before evaluation, so a failure there loses nothing
    env = FaaSKeepAliveVectorEnv(num_envs=1, **hp.env_kwargs)
    # The weights the agent was trained at go into the checkpoint's env_kwargs (compare.py runs it there).
    env_kwargs = {
        **hp.env_kwargs,
        "cold_start_weight": env.config.cold_start_weight,
        "memory_weight": env.config.memory_weight,
    }

    def factory(venv: CloudGymVectorEnv) -> agent.HazardPolicy:
        return agent.HazardPolicy(venv, model)

    rows = evaluate(factory, ENV_ID, held_out_seeds(hp.eval_episodes), env_kwargs=env_kwargs, policy_name="agent")
    final = {c: summarise(rows, c)[0] for c in rows[0] if c not in ("env_id", "policy", "seed", "scenario")}
    command = reproduce_command("python scripts/train_faas_keepalive_agent.py", argv)
    write_metadata(
        run_dir,
        {
            "env_id": ENV_ID,
            "name": args.name,
            "loader": agent.LOADER,
            "algo": "HazardMLP",
            "command": command,
            "seed": args.seed,
            "timesteps": int(x.shape[0]),
            "env_kwargs": env_kwargs,
            "scenario": "default",  # the compare.py scenario it was trained on (default env kwargs)
            "hyperparams_file": agent.HYPERPARAMS.name,
            "hyperparams": {**dataclasses.asdict(hp), "hidden": list(hp.hidden)},
            "eval_episodes": hp.eval_episodes,
            "train_seconds": round(elapsed, 1),
            "train_loss": [round(v, 6) for v in losses],
            "positive_share": float(y.mean()),
            "final_metrics": {k: float(v) for k, v in final.items()},
            "eval_history": [{"step": float(x.shape[0]), **{k: float(v) for k, v in final.items()}}],
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__, "torch": str(torch.__version__)},
        },
    )
    env.close()
    print(f"{ENV_ID} HazardMLP on {x.shape[0]} minutes ({y.mean():.3f} invoked) in {elapsed:.0f}s -> {run_dir}")
    print(f"loss per epoch {losses}; held-out return {final['return']:.4g}")
    if args.ship:
        ship(run_dir, args.name)
    return run_dir


if __name__ == "__main__":
    main()
