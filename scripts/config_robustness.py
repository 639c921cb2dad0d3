"""Try a fixed corpus of bad config values on every env and count what happened (the table of docs/robustness.md).

    python scripts/config_robustness.py
    python scripts/config_robustness.py --env ToyCluster-v0 --show-accepted

For each env, every config field (and ``num_envs``) is set in turn to each
value of ``cloudgym.config_robustness.corpus`` (wrong types, numeric
strings, 'False', None, NaN, infinities, huge and negative numbers, empty and
wrong-length containers, bad nested mappings, and each end of the field's
declared range with a value just beyond it) on the env's small config; the
env is made with ``gym.make_vec`` (2 sub-envs), reset and stepped 3 times
with random valid actions. The corpus is fixed, so the counts are the same
on every run; the output is a markdown table, then every try that was not
``named`` or ``accepted``. Exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import cloudgym
from cloudgym.config_robustness import Outcome, run_corpus, table


@dataclasses.dataclass
class Args:
    env: list[str]
    show_accepted: bool


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", action="append", choices=cloudgym.ALL_ENV_IDS, help="an env id (default: all; repeat)")
    p.add_argument("--show-accepted", action="store_true", help="also list the values that were accepted")
    args = p.parse_args(argv)
    return Args(env=args.env or list(cloudgym.ALL_ENV_IDS), show_accepted=args.show_accepted)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    trials = run_corpus(args.env)
    print(table(trials))
    bad = [t for t in trials if not t.outcome.ok]
    for t in bad:
        print(f"- {t.outcome.value}: {t.env_id} {t.field}={t.value!r}: {t.detail}")
    if args.show_accepted:
        for t in trials:
            if t.outcome is Outcome.ACCEPTED:
                print(f"- accepted: {t.env_id} {t.field}={t.value!r}")
    print(f"\n{len(trials)} inputs in {time.perf_counter() - start:.0f} s; {len(bad)} not named at make or run cleanly")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
