"""The `minigpt` command: argparse subcommands, each a thin layer that parses flags, builds configs and calls
one library function. This is the only place where errors become exit codes: a `MinigptError` prints one line
(`error: ...`) and exits 2; Ctrl-C exits 130 after the library has saved what it must.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .common import MinigptError, console


# ---------------------------------------------------------------------------------------------- subcommands
# Each `_add_<name>(sub)` registers one subcommand and binds its handler with set_defaults(func=...).
# Handlers import their library modules lazily so `minigpt --help` stays instant.

_SUBCOMMANDS: list = []


def subcommand(add):
    """Register a function `add(subparsers)` that defines one subcommand (help lists them in this order)."""
    _SUBCOMMANDS.append(add)
    return add



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigpt",
        description="From raw text to a GPT you can chat with: tokenizer, pretraining, SFT, DPO, RL, "
                    "sampling, chat, attention inspection and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MinigptError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
