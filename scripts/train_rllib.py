"""Runs ``cloudgym train-rllib`` from a checkout: the code is in cloudgym/commands/train_rllib.py."""

from cloudgym.commands.train_rllib import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.train_rllib import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/train_rllib.py"))
