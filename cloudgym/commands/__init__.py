"""The command-line programs, installed with the package as ``cloudgym <command>`` (see :mod:`cloudgym.cli`).

Each module reads top to bottom (a typed args dataclass, ``parse_args``, ``main(argv)``); the files of
the same names under ``scripts/`` in a checkout run them too.
"""
