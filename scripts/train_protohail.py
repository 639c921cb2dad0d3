"""Train the imitation agents of Oversubscription-v0 offline from the hindsight expert: BC, DAgger, ProtoHAIL (+HITL).

    python scripts/train_protohail.py --algo protohail --ship
    python scripts/train_protohail.py --algo bc --ship
    python scripts/train_protohail.py --algo dagger --ship

The expert's demonstrations (the robust hindsight oracle of the baselines, on training
seeds 0..episodes-1) are collected once and cached under ``<out>/<env>/``.
``protohail`` trains the prototype agent, then runs the human-in-the-loop
round (``--budget`` queries answered by the scripted operator, kept as
decoding caps, then the head retrained on them anchored to the pre-round
agent; ``--retrain-epochs 0`` keeps the caps alone), the same answers as
caps alone (an ablation) and the round's two controls (the same round with no queries, and with
random queries) once per ``--hitl-seeds`` replicate (each with its own query
pool), evaluates every variant on ``--study-episodes`` held-out seeds at the
agent's decoding and at ``--study-quantiles``, and writes two checkpoints:
``protohail`` and ``protohail_hitl`` (the first replicate's round; the
study's table goes in its checkpoint.yaml under ``hitl_study``). Each run folder gets ``model.pt`` and
``checkpoint.yaml`` (the command that reproduces it, the held-out metrics);
``--ship`` copies them to ``agents/checkpoints/Oversubscription-v0/`` where
compare.py finds them. The logic lives in ``cloudgym.agents.oversub_imitation``
and ``cloudgym.agents.protohail``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cloudgym
from cloudgym.agents import oversub_imitation as imitation
from cloudgym.agents import protohail
from cloudgym.agents.checkpoints import ship, write_metadata
from cloudgym.envs.oversubscription import OversubscriptionConfig
from cloudgym.evaluation import held_out_seeds

ENV_ID = "Oversubscription-v0"


@dataclasses.dataclass
class Args:
    algo: str
    episodes: int = 24
    epochs: int = 12
    prototypes: int = 10
    hidden: int = 32
    embedding: int = 16
    rule_offset: int = 0
    rule_episodes: int = 0
    risk_target: float | None = None
    down_grid: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12])
    up_quantile: float = 0.4
    validation_episodes: int = 128
    matching_grid: list[float] = dataclasses.field(
        default_factory=lambda: [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1]
    )
    matching_episodes: int = 32
    equal_capacity: bool = False
    budgets: list[int] = dataclasses.field(default_factory=lambda: [5, 10, 20, 40])
    name: str = "protohail"
    budget: int = 10
    neighbours: int = 256
    prototype_neighbours: int | None = None
    retrain_epochs: int = 4
    answer_weight: float = 1.0
    hitl_seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    study_episodes: int = 256
    study_quantiles: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    risk_quantile: float = imitation.RISK_QUANTILE
    eval_episodes: int = 32
    seed: int = 0
    out: Path = Path("runs")
    ship: bool = False


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", required=True, choices=["bc", "dagger", "protohail"])
    p.add_argument("--episodes", type=int, default=24, help="expert episodes (training seeds 0..N-1)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs over the demonstrations")
    p.add_argument("--prototypes", type=int, default=10, help="K, prototypes of the ProtoHAIL agent")
    p.add_argument("--hidden", type=int, default=32, help="GRU state size of the trajectory encoder")
    p.add_argument("--embedding", type=int, default=16, help="dimension of the prototype space")
    p.add_argument(
        "--rule-offset",
        type=int,
        default=0,
        help="D > 0: the head gives the expert's level minus the headroom rule's, in -D..D (0: the level itself)",
    )
    p.add_argument(
        "--rule-episodes",
        type=int,
        default=0,
        help="extra demonstrations: the headroom rule's rollouts on training seeds 30000.., labelled by the expert",
    )
    p.add_argument(
        "--risk-target",
        type=float,
        default=None,
        help="choose the decoding on validation seeds 500000..: the going-down quantile of --down-grid with the "
        "most saved cores whose hot node-windows / episode stay at or below this (decoding (down, --up-quantile))",
    )
    p.add_argument("--down-grid", type=float, nargs="+", default=[0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12])
    p.add_argument("--up-quantile", type=float, default=0.4, help="quantile for going above the rule's level")
    p.add_argument("--validation-episodes", type=int, default=128, help="validation seeds 500000.. for choices")
    p.add_argument(
        "--matching-grid",
        type=float,
        nargs="+",
        default=[0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1],
        help="going-down quantiles on which the agent without the round is measured to match the round's cores",
    )
    p.add_argument(
        "--matching-episodes", type=int, default=32, help="validation seeds 500000.. used to match saved cores"
    )
    p.add_argument(
        "--equal-capacity",
        action="store_true",
        help="the HITL study against the same agent decoded to the same saved cores (per --budgets, --hitl-seeds)",
    )
    p.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 40], help="query budgets of that study")
    p.add_argument("--name", default="protohail", help="checkpoint folder (the round's is NAME_hitl)")
    p.add_argument("--budget", type=int, default=10, help="queries of the human-in-the-loop round")
    p.add_argument(
        "--neighbours",
        type=int,
        default=256,
        help="a state answer caps the states within its k-th neighbour's distance",
    )
    p.add_argument(
        "--prototype-neighbours",
        type=int,
        default=None,
        help="a prototype answer caps the states within its k-th neighbour's distance (default: its whole region)",
    )
    p.add_argument(
        "--retrain-epochs", type=int, default=4, help="epochs of the round's anchored head retraining (0: caps alone)"
    )
    p.add_argument("--answer-weight", type=float, default=1.0, help="weight of the answers' penalty in the retraining")
    p.add_argument("--hitl-seeds", type=int, nargs="+", default=[0, 1, 2], help="replicates of the HITL study")
    p.add_argument("--study-episodes", type=int, default=256, help="held-out episodes per variant of the HITL study")
    p.add_argument(
        "--study-quantiles", type=float, nargs="+", default=[0.5], help="extra decodings the HITL study reads"
    )
    p.add_argument("--risk-quantile", type=float, default=imitation.RISK_QUANTILE, help="risk-aware decoding")
    p.add_argument("--eval-episodes", type=int, default=32, help="held-out episodes for the final metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--ship", action="store_true", help="copy the checkpoints to agents/checkpoints/<env>/")
    return Args(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # a shared 2-core machine; the GRU and MLP are small
    command = "python scripts/train_protohail.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    started = time.time()
    root = args.out / ENV_ID
    cache = root / f"expert_demos_{args.episodes}ep_seed0.npz"
    data = imitation.expert_demonstrations(cache, args.episodes)
    print(f"{len(data)} expert node-hours from {args.episodes} episodes ({time.time() - started:.0f}s)", flush=True)
    levels = len(OversubscriptionConfig().ratios)
    common = {
        "env_id": ENV_ID,
        "command": command,
        "seed": args.seed,
        "timesteps": len(data),
        "env_kwargs": {},
        "eval_episodes": args.eval_episodes,
        "versions": {"cloudgym": cloudgym.__version__, "numpy": np.__version__, "torch": str(torch.__version__)},
    }
    written: list[Path] = []

    def finish(
        name: str, algo: str, loader: str, hyper: dict[str, object], metrics: dict[str, float], **extra: object
    ) -> None:
        folder = root / name
        write_metadata(
            folder,
            {
                **common,
                "name": name,
                "loader": loader,
                "algo": algo,
                "hyperparams": hyper,
                "train_seconds": round(time.time() - started, 1),
                "final_metrics": metrics,
                "scenario": "default",
                **extra,
            },
        )
        print(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
        written.append(folder)

    if args.algo in ("bc", "dagger"):
        if args.algo == "bc":
            model, _ = imitation.train_bc(data, levels, epochs=args.epochs, seed=args.seed)
        else:
            model, _ = imitation.train_dagger({}, data, levels, epochs=args.epochs, seed=args.seed)
        imitation.save_model(model, root / args.algo, args.risk_quantile, levels=levels, hidden=128)
        metrics = imitation.evaluate_model(model, args.eval_episodes, risk_quantile=args.risk_quantile)
        hyper = {"epochs": args.epochs, "hidden": 128, "risk_quantile": args.risk_quantile}
        finish(args.algo, args.algo.upper(), "cloudgym.agents.oversub_imitation:load_imitation_policy", hyper, metrics)
    else:
        config = protohail.ProtoHAILConfig(
            levels=levels,
            prototypes=args.prototypes,
            hidden=args.hidden,
            embedding=args.embedding,
            rule_offset=args.rule_offset,
        )
        train_data = data
        if args.rule_episodes:
            # The rule's own states, labelled by the expert: where an agent built on the rule will be.
            rule_cache = root / f"rule_demos_{args.rule_episodes}ep_seed30000.npz"
            extra_rows = imitation.rule_demonstrations(rule_cache, args.rule_episodes, first_seed=30_000)
            train_data = imitation.Demonstrations.concatenate([data, extra_rows])
            print(f"{len(extra_rows)} node-hours of the rule's rollouts labelled by the expert", flush=True)
        common["timesteps"] = len(train_data)
        model, anchors, history = protohail.train_protohail(train_data, config, epochs=args.epochs, seed=args.seed)
        print(f"trained in {time.time() - started:.0f}s", flush=True)
        anchor_rows = imitation.Demonstrations(
            *(getattr(train_data, f.name)[anchors] for f in dataclasses.fields(train_data))
        )
        risk: imitation.RiskQuantile = args.risk_quantile
        extra: dict[str, object] = {}
        validation = [protohail.VALIDATION_SEED_BASE + i for i in range(args.validation_episodes)]
        if args.risk_target is not None:
            risk, curve = protohail.choose_decoding(
                model, args.down_grid, args.up_quantile, args.risk_target, validation
            )
            extra["decoding_selection"] = {"risk_target_hot_per_episode": args.risk_target, "validation": curve}
            print(f"decoding chosen on {len(validation)} validation seeds: {risk}", flush=True)
        protohail.save_protohail(model, anchor_rows, root / args.name, [], risk)
        hyper = {
            **dataclasses.asdict(config),
            "epochs": args.epochs,
            "risk_quantile": list(risk) if isinstance(risk, tuple) else risk,
            "rule_episodes": args.rule_episodes,
        }
        base = imitation.evaluate_model(model, args.eval_episodes, risk_quantile=risk)
        finish(
            args.name,
            "ProtoHAIL" if not args.rule_offset else "ProtoHAIL (on the headroom rule's level)",
            "cloudgym.agents.protohail:load_protohail_policy",
            hyper,
            base,
            loss_history=history,
            **extra,
        )
        env_config = OversubscriptionConfig()
        if args.equal_capacity:
            summary = protohail.hitl_equal_capacity(
                model,
                train_data,
                env_config,
                risk_quantile=risk,
                budgets=args.budgets,
                replicates=args.hitl_seeds,
                grid=args.matching_grid,
                validation_seeds=validation[: args.matching_episodes],
                held_out=held_out_seeds(args.study_episodes),
                neighbours=args.neighbours,
                retrain_epochs=args.retrain_epochs,
                answer_weight=args.answer_weight,
            )
            pool_seeds = [20_000 + 4 * args.hitl_seeds[0] + i for i in range(4)]
            pool = imitation.collect(
                {},
                pool_seeds,
                actor=lambda obs: imitation.act_levels(model, obs, env_config.hot_threshold, risk),
                rng_seed=args.hitl_seeds[0],
            )
            targeted, asked = protohail.hitl_round(
                model,
                train_data,
                pool,
                env_config,
                budget=args.budget,
                neighbours=args.neighbours,
                risk_quantile=risk,
                retrain_epochs=args.retrain_epochs,
                answer_weight=args.answer_weight,
                seed=args.hitl_seeds[0],
            )
            study_extra: dict[str, object] = {"hitl_equal_capacity": summary}
            random_asked: list[protohail.Query] = []
        else:
            study, summary = protohail.hitl_replicates(
                model,
                train_data,
                env_config,
                seeds=args.hitl_seeds,
                quantiles=sorted({args.risk_quantile, *args.study_quantiles}),
                episodes=args.study_episodes,
                budget=args.budget,
                neighbours=args.neighbours,
                prototype_neighbours=args.prototype_neighbours,
                retrain_epochs=args.retrain_epochs,
                answer_weight=args.answer_weight,
            )
            targeted, asked, random_asked = study.targeted, study.targeted_queries, study.random_queries_asked
            study_extra = {"hitl_study": summary}
        shipped = imitation.evaluate_model(targeted, args.eval_episodes, risk_quantile=risk)
        # The round edits decoding caps and the head only: the prototypes and their anchors are the base agent's.
        protohail.save_protohail(targeted, anchor_rows, root / f"{args.name}_hitl", asked, risk)
        finish(
            f"{args.name}_hitl",
            "ProtoHAIL+HITL" if not args.rule_offset else "ProtoHAIL (on the headroom rule's level)+HITL",
            "cloudgym.agents.protohail:load_protohail_policy",
            {
                **hyper,
                "budget": args.budget,
                "neighbours": args.neighbours,
                "prototype_neighbours": args.prototype_neighbours,
                "retrain_epochs": args.retrain_epochs,
                "answer_weight": args.answer_weight,
                "study_episodes": args.study_episodes,
            },
            shipped,
            **study_extra,
            queries=[dataclasses.asdict(q) for q in asked],
            **({"random_queries": [dataclasses.asdict(q) for q in random_asked]} if random_asked else {}),
        )
    if args.ship:
        for folder in written:
            ship(folder)
    print(f"done in {time.time() - started:.0f}s")
    return written


if __name__ == "__main__":
    main()
