"""Runs ``cloudgym sweep`` from a checkout: the code is in cloudgym/commands/sweep.py."""

from cloudgym.commands.sweep import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.sweep import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/sweep.py"))
