"""Runs ``cloudgym compare`` from a checkout: the code is in cloudgym/commands/compare.py."""

from cloudgym.commands.compare import *  # noqa: F403  (Args, parse_args, main)
from cloudgym.commands.compare import main

if __name__ == "__main__":
    from cloudgym.cli import run

    raise SystemExit(run(main, prog="scripts/compare.py"))
