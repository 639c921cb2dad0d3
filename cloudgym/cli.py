"""The ``cloudgym`` command: ``cloudgym <command> [args]``, installed with the package.

    cloudgym                   the envs, their scenarios and the shipped agents (also ``python -m cloudgym``)
    cloudgym evaluate ...      evaluate a baseline or a checkpoint on held-out seeds
    cloudgym compare ...       every policy of an env side by side, tables and plots
    cloudgym train ...         train an SB3 agent
    cloudgym train-rllib ...   train an RLlib agent (needs the rllib extra)
    cloudgym sweep ...         a Ray Tune sweep (needs the rllib extra)
    cloudgym bench ...         the benchmarks

A mistake in what a command is given (an unknown policy, a malformed
--env-kwargs, a config value out of range, a checkpoint that would need
trust) ends with one line naming it, not a traceback; ``CLOUDGYM_DEBUG=1``
shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": ("cloudgym.commands.evaluate", "evaluate a baseline or a checkpoint on held-out seeds"),
    "compare": ("cloudgym.commands.compare", "every policy of an env side by side: tables, plots, TensorBoard"),
    "train": ("cloudgym.commands.train", "train a Stable-Baselines3 agent"),
    "train-rllib": ("cloudgym.commands.train_rllib", "train an RLlib agent (the rllib extra)"),
    "sweep": ("cloudgym.commands.sweep", "a Ray Tune sweep over RLlib runs (the rllib extra)"),
    "bench": ("cloudgym.commands.bench", "throughput benchmarks"),
}
"""Subcommand -> (module with ``main(argv)``, one line of help)."""

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, FileNotFoundError, ImportError)
"""What a command raises for a mistake in its input; reported in one line."""


def yaml_mapping(text: str) -> dict[str, Any]:
    """An argparse type: a YAML mapping (``--env-kwargs "{num_nodes: 6}"``), its parse error named in one line."""
    import argparse

    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not valid YAML ({str(exc).splitlines()[0]}): {text!r}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{num_nodes: 6}}', got {text!r}")
    return value


def run(main: Callable[[list[str] | None], Any], argv: Sequence[str] | None = None, prog: str = "cloudgym") -> int:
    """Run a command's ``main``; a user error becomes one line on stderr and exit status 2."""
    try:
        main(None if argv is None else list(argv))
    except USER_ERRORS as exc:
        if os.environ.get("CLOUDGYM_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


def overview() -> str:
    """The registered envs with their scenarios, and the shipped agents with how to evaluate them."""
    import cloudgym
    from cloudgym.envs import registration

    lines = ["cloudgym envs (gym.make(id, scenario=name, **config fields)):"]
    for env_id, (module, name) in {**registration.ENV_MODULES, **registration.TEST_ENV_MODULES}.items():
        env_module = importlib.import_module(f"cloudgym.envs.{module}")
        config = getattr(env_module, f"{name}Config")
        scenarios = ", ".join(getattr(config, "SCENARIOS", {})) or "-"
        lines.append(f"  {env_id:<21} scenarios: {scenarios}")
    try:
        from cloudgym.agents.checkpoints import shipped_checkpoints
    except ImportError:  # the train extra brings pyyaml, which reading checkpoints needs
        lines.append("shipped agents: install cloudgym[train] to list and run them")
        return "\n".join(lines)
    lines.append("shipped agents (cloudgym evaluate --env ID --policy FOLDER):")
    for env_id in cloudgym.ENV_IDS:
        for info in shipped_checkpoints(env_id):
            lines.append(f"  {env_id:<21} {info.name:<18} {info.algo:<12} {info.path}")
    lines.append("commands: " + ", ".join(COMMANDS) + " (cloudgym COMMAND --help)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("list", "envs"):
        print(overview())
        return 0
    if args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"cloudgym: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"cloudgym {name}"  # argparse's usage lines name the command as it was typed
    return run(module.main, rest, prog=f"cloudgym {name}")


def console_main() -> None:
    """The ``cloudgym`` console script."""
    sys.exit(main())
