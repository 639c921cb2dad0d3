"""Train GPUPowerCap-v0's capping controller with the cross-entropy method, evaluate it held out, ship it.

    python scripts/train_gpu_powercap_cem.py [--name cem] [--ship]

Runs the CEM of ``cloudgym.agents.gpu_powercap_cem`` on POLCA's controller
shape (hyperparameters: section ``CEM`` of
``agents/hyperparams/GPUPowerCap-v0.yaml``), logs every iteration to
TensorBoard, evaluates the best parameters on the held-out seeds and writes
``checkpoint.yaml`` (the parameters, the command, the held-out metrics) under
``runs/``; ``--ship`` copies it to ``agents/checkpoints/GPUPowerCap-v0/<name>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

import cloudgym
from cloudgym.agents import gpu_powercap_cem as cem
from cloudgym.agents.checkpoints import reproduce_command, safe_name, ship, write_metadata
from cloudgym.envs.core.shells import CloudGymVectorEnv
from cloudgym.envs.gpu_powercap import GPUPowerCapConfig
from cloudgym.evaluation import evaluate, held_out_seeds, metric_names, summarise, write_eval_scalars

ENV_ID = cem.ENV_ID


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", type=safe_name, default="cem", help="run name")
    parser.add_argument("--seed", type=int, default=0, help="training seed (episodes and CEM sampling)")
    parser.add_argument("--hyperparams", type=Path, default=cem.HYPERPARAMS, help="YAML with a CEM section")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="runs folder")
    parser.add_argument("--ship", action="store_true", help="copy the checkpoint into agents/checkpoints")
    args = parser.parse_args(argv)
    settings = cem.CemSettings.from_yaml(args.hyperparams)
    run_dir = args.out / ENV_ID / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir))
    started = time.time()
    episode_steps = GPUPowerCapConfig(**dict(settings.env_kwargs)).steps_per_episode
    steps_per_iteration = settings.population * settings.episodes * episode_steps

    def log(row: dict[str, float]) -> None:
        step = int(row["iteration"]) * steps_per_iteration
        for key, value in row.items():
            if key != "iteration":
                writer.add_scalar(f"cem/{key}", value, step)
        print(
            f"iteration {int(row['iteration'])}: mean return {row['current_mean_return']:.2f} "
            f"(brakes {row['current_mean_brakes']:.2f}), best so far {row['best_return']:.2f} "
            f"(brakes {row['best_brakes']:.2f})",
            flush=True,
        )

    params, history = cem.train(settings, args.seed, log)
    elapsed = time.time() - started
    timesteps = settings.iterations * steps_per_iteration

    def factory(env: CloudGymVectorEnv) -> cem.CemCapController:
        return cem.CemCapController(env, params)

    rows = evaluate(factory, ENV_ID, held_out_seeds(settings.eval_episodes), env_kwargs=settings.env_kwargs)
    metrics = metric_names(ENV_ID, settings.env_kwargs)
    write_eval_scalars(writer, rows, timesteps, metrics)
    writer.close()
    final = {c: summarise(rows, c)[0] for c in ["return", *metrics]}
    command = reproduce_command("python scripts/train_gpu_powercap_cem.py", argv)
    write_metadata(
        run_dir,
        {
            "env_id": ENV_ID,
            "name": args.name,
            "loader": cem.LOADER,
            "algo": "CEM",
            "command": command.strip(),
            "seed": args.seed,
            "timesteps": timesteps,
            "env_kwargs": dict(settings.env_kwargs),
            "hyperparams_file": args.hyperparams.name,
            "hyperparams": {
                f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "env_kwargs"
            },
            "params": params,
            "train_seconds": round(elapsed, 1),
            "final_metrics": {k: float(v) for k, v in final.items()},
            "eval_history": [
                {"step": (i + 1) * steps_per_iteration, "return": h["current_mean_return"]}
                for i, h in enumerate(history)
            ],
            "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__},
        },
    )
    print(f"{ENV_ID} CEM {timesteps} env steps in {elapsed:.0f}s -> {run_dir}")
    print("params: " + ", ".join(f"{k}={v:.3f}" for k, v in params.items()))
    print("held-out: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
    if args.ship:
        ship(run_dir, args.name)
    return run_dir


if __name__ == "__main__":
    main()
