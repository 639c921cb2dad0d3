"""Runs ``cloudgym evaluate`` from a checkout: the code is in cloudgym/commands/evaluate.py."""

from cloudgym.commands.evaluate import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.evaluate import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/evaluate.py"))
