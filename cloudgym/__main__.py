"""``python -m cloudgym [command ...]``: the envs, their scenarios and the shipped agents, or a command."""

from cloudgym.cli import console_main

console_main()
