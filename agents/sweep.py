"""Ray Tune sweeps over RLlib training runs: a YAML-declared space, one row per trial, the env's plots.

A sweep file (see ``scripts/sweep.py``)::

    env: FaaSKeepAlive-v0
    algo: PPO
    timesteps: 20000          # env steps per trial
    eval_episodes: 16         # held-out episodes each trial is evaluated on
    envs_per_runner: 16
    max_concurrent: 2         # trials at once (each takes one CPU)
    num_samples: 1            # Tune's num_samples: repeats of the grid / random draws
    env_kwargs: {}            # the base env config every trial starts from
    hyperparams: {}           # the base RLlib hyperparameters
    space:                    # what varies: seed, hyperparams.<key>, env_kwargs.<field>
      seed: [0, 1]                                  # a list: grid search
      hyperparams.lr: {loguniform: [1.0e-4, 1.0e-2]}  # a distribution: random search
      env_kwargs.some_reward_weight: {choice: [0.5, 1.0, 2.0]}

Each trial trains in its own Tune trial process (sampling in-process, no
further actors), saves its checkpoint (``checkpoint.yaml`` + ``rl_module/``,
loadable by evaluate.py and compare.py) in its trial folder, then is
evaluated on the held-out seeds compare.py uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cloudgym.agents import rllib

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")
SPACE_PREFIXES = ("hyperparams.", "env_kwargs.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A parsed sweep file."""

    env_id: str
    algo: str = "PPO"
    timesteps: int = 20_000
    eval_episodes: int = 16
    envs_per_runner: int = 16
    max_concurrent: int = 2
    num_samples: int = 1
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    space: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None


def read_sweep(path: Path) -> SweepSpec:
    """Parse and check a sweep file, naming the file and key on any problem."""
    import cloudgym

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at top level")
    fields = {f.name for f in dataclasses.fields(SweepSpec)} - {"path", "env_id"}
    unknown = sorted(set(data) - fields - {"env"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: env, {', '.join(sorted(fields))}")
    if data.get("env") not in cloudgym.ALL_ENV_IDS:
        raise ValueError(f"{path}: env must be one of {', '.join(cloudgym.ALL_ENV_IDS)}, got {data.get('env')!r}")
    for key in ("env_kwargs", "hyperparams", "space"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"{path}: {key} must be a mapping")
    spec = SweepSpec(
        env_id=data.pop("env"), path=path, **{k: v for k, v in data.items() if k in fields and v is not None}
    )
    if spec.algo not in rllib.ALGORITHMS:
        raise ValueError(f"{path}: algo must be one of {', '.join(rllib.ALGORITHMS)}, got {spec.algo!r}")
    for key in ("timesteps", "eval_episodes", "envs_per_runner", "max_concurrent", "num_samples"):
        value = getattr(spec, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
    if not spec.space:
        raise ValueError(f"{path}: space is empty: nothing to sweep")
    for key, value in spec.space.items():
        if key != "seed" and not key.startswith(SPACE_PREFIXES):
            raise ValueError(f"{path}: space key {key!r} must be 'seed', 'hyperparams.<key>' or 'env_kwargs.<field>'")
        _domain(key, value, path)  # checks the value's form
    hyper = {**spec.hyperparams, **{k.split(".", 1)[1]: None for k in spec.space if k.startswith("hyperparams.")}}
    rllib.check_hyperparams(spec.algo, hyper, where=str(path))
    return spec


def _domain(key: str, value: Any, path: Path | None) -> Any:
    """A Tune search domain from the YAML form: a list (grid) or {distribution: args}."""
    from ray import tune

    where = f"{path}: space[{key!r}]"
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: an empty grid")
        return tune.grid_search(value)
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{where}: give a list (grid) or one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {value!r}")
    ((kind, args),) = value.items()
    if kind == "grid" or kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: {kind} takes a non-empty list")
        return tune.grid_search(args) if kind == "grid" else tune.choice(args)
    if kind in ("uniform", "loguniform", "randint"):
        if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, int | float) for a in args)):
            raise ValueError(f"{where}: {kind} takes [low, high]")
        low, high = args
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ValueError(f"{where}: {kind} needs low < high (and low > 0 for loguniform), got {args}")
        return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](low, high)
    raise ValueError(f"{where}: unknown distribution {kind!r}; known: {', '.join(DISTRIBUTIONS)}")


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param_space: one entry per swept key (flat, dotted names)."""
    return {key: _domain(key, value, spec.path) for key, value in spec.space.items()}


def trial_run_spec(spec: SweepSpec, config: Mapping[str, Any]) -> rllib.RunSpec:
    """The RLlib run of one trial: the base settings with the trial's sampled values."""
    env_kwargs = dict(spec.env_kwargs)
    hyperparams = dict(spec.hyperparams)
    seed = 0
    for key, value in config.items():
        if key == "seed":
            seed = int(value)
        elif key.startswith("hyperparams."):
            hyperparams[key.split(".", 1)[1]] = _plain(value)
        elif key.startswith("env_kwargs."):
            env_kwargs[key.split(".", 1)[1]] = _plain(value)
    _, defaults = rllib.load_hyperparams(spec.env_id, spec.algo)
    return rllib.RunSpec(
        env_id=spec.env_id,
        algo=spec.algo,
        env_kwargs=env_kwargs,
        hyperparams={**defaults, **hyperparams},
        num_env_runners=0,
        envs_per_runner=spec.envs_per_runner,
        seed=seed,
    )


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def run_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """Tune's trainable: train one RLlib run, save its checkpoint, evaluate it on held-out seeds, report."""
    from ray import tune

    from cloudgym.agents.checkpoints import write_metadata
    from cloudgym.evaluation import evaluate, held_out_seeds
    from cloudgym.reports import results_frame

    run = trial_run_spec(spec, config)
    trial_dir = Path(tune.get_context().get_trial_dir())
    name = f"trial_{tune.get_context().get_trial_id()}"
    result = rllib.train(
        run,
        timesteps=spec.timesteps,
        run_dir=trial_dir,
        eval_freq=max(spec.timesteps // 4, 1),
        eval_episodes=spec.eval_episodes,
        log=lambda _: None,
    )
    command = f"python scripts/sweep.py --space {spec.path} (trial {name})"
    write_metadata(
        trial_dir,
        rllib.checkpoint_metadata(run, result, name=name, command=command, eval_episodes=spec.eval_episodes),
    )
    # The held-out episodes again, one row each, for the plots (the final evaluation of train() averaged them).
    # This trial wrote the checkpoint itself a moment ago, so its RLlib (pickled) format is trusted.
    rows = evaluate(
        trial_dir,
        run.env_id,
        held_out_seeds(spec.eval_episodes),
        env_kwargs=run.env_kwargs,
        trust_checkpoint=True,
    )
    results_frame(rows).to_csv(trial_dir / "eval.csv", index=False)
    tune.report({**{k: float(v) for k, v in rllib.row_means(rows).items()}, "timesteps": float(result.timesteps)})
