"""Runs ``cloudgym bench`` from a checkout: the code is in cloudgym/commands/bench.py."""

from cloudgym.commands.bench import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.bench import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/bench.py"))
