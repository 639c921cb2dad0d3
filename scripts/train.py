"""Runs ``cloudgym train`` from a checkout: the code is in cloudgym/commands/train.py."""

from cloudgym.commands.train import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.train import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/train.py"))
