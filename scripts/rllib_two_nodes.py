"""Train with RLlib on a two-node Ray cluster started on this machine, on loopback only, then stop it.

    python scripts/rllib_two_nodes.py [--env ToyCluster-v0] [--timesteps 4096] [--timeout 300] [--out runs]

Starts a head node (``ray start --head``) and a worker node (``ray start
--address 127.0.0.1:PORT``), both bound to 127.0.0.1 with one CPU each,
trains PPO with two env runners (one CPU each, so one lands on each node),
prints for each env runner the node it ran on and the env steps it sampled,
and stops both nodes whatever happens (an error, Ctrl-C, or ``--timeout``).
It exits non-zero unless both nodes sampled and no Ray process is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import cloudgym
from cloudgym.agents import rllib
from cloudgym.agents.loopback import LoopbackCluster, loopback_environment, time_limit


@dataclasses.dataclass
class Args:
    env: str
    timesteps: int
    envs_per_runner: int
    timeout: float
    out: Path


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ToyCluster-v0", choices=cloudgym.ALL_ENV_IDS)
    p.add_argument("--timesteps", type=int, default=4096)
    p.add_argument("--envs-per-runner", type=int, default=16)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before everything is stopped")
    p.add_argument("--out", type=Path, default=Path("runs"))
    return Args(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Env steps sampled per node role ({'head': n, 'worker': m})."""
    import ray

    args = parse_args(argv)
    _, params = rllib.load_hyperparams(args.env, "PPO")
    spec = rllib.RunSpec(
        env_id=args.env, hyperparams=params, num_env_runners=2, envs_per_runner=args.envs_per_runner, seed=0
    )
    per_node: dict[str, int] = {}
    cluster = LoopbackCluster()
    with time_limit(args.timeout), loopback_environment(), cluster:
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        nodes = cluster.wait_for_nodes(2)
        roles = {n["NodeID"]: cluster.node_role(n) for n in nodes}
        for node_id, role in roles.items():
            print(f"node {role:<6} {node_id[:12]} at {LoopbackCluster.node_address(nodes, node_id)}")

        def where_sampled(algo: Any) -> None:
            for r in rllib.runner_reports(algo):
                role = roles.get(r.node_id, "unknown")
                per_node[role] = per_node.get(role, 0) + r.env_steps
                print(
                    f"env runner {r.worker_index} (pid {r.pid}) ran on the {role} node ({r.node_id[:12]}): "
                    f"sampled {r.env_steps} env steps from a {r.vector_env} of {r.num_envs} sub-envs"
                )

        result = rllib.train(
            spec,
            timesteps=args.timesteps,
            run_dir=args.out / args.env / "rllib_two_nodes",
            eval_freq=args.timesteps,
            eval_episodes=4,
            on_trained=where_sampled,
        )
        print(
            f"trained {result.timesteps} env steps in {result.seconds:.0f}s; held-out return "
            f"{result.final_metrics['return']:.4g}"
        )
    left = cluster.leftover_processes()
    print(f"env steps sampled per node: {per_node}; Ray processes left: {len(left)}")
    if left or not all(per_node.get(role, 0) > 0 for role in ("head", "worker")):
        sys.exit("FAILED: both nodes must sample and no Ray process may be left")
    return per_node


if __name__ == "__main__":
    main()
