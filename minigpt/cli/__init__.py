"""The `minigpt` command. One module per command group, each `register(sub)` adding its parsers; the handlers
import their library modules lazily (building the parser imports torch, for the model and sampling flags, about
1 s; datasets, matplotlib, transformers and the web stack load only in the commands that use them). This is the
only place where errors become exit codes: a `MinigptError` prints one line (`error: ...`) and exits 2; Ctrl-C
exits 130 after the library has saved what it must.
"""
from __future__ import annotations

import argparse
import sys

from rich.markup import escape

from .. import __version__, common
from ..common import MinigptError, err_console
from . import export, generate, inspect, learn, runs, serve, tokenizer, train
from .args import apply_config_file

# `minigpt --help` lists the groups' commands in this order
GROUPS = (tokenizer, train, generate, inspect, serve, export, runs, learn)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigpt",
        description="From raw text to a GPT you can chat with: tokenizer, pretraining, SFT, DPO, RL, "
                    "sampling, chat, attention inspection and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def _note_warnings() -> None:
    """minigpt's own warnings (a tokenizer short of merges, ...) print as one "note:" line, without the source
    line Python adds; other libraries' keep Python's format."""
    import warnings
    from pathlib import Path

    package, default = Path(__file__).resolve().parents[1], warnings.showwarning
    if getattr(default, "minigpt", False):  # installed by an earlier main() in this process
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(package):
            err_console.print(f"[yellow]note:[/] {escape(str(message))}", soft_wrap=True)
        else:
            default(message, category, filename, lineno, file, line)
    show.minigpt = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    _note_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    common.CLI_ARGS = list(sys.argv[1:] if argv is None else argv)
    try:
        if getattr(args, "config", None):
            args = apply_config_file(args, argv, parser)
        return int(args.func(args) or 0)
    except MinigptError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    finally:
        common.CLI_ARGS = None


if __name__ == "__main__":
    sys.exit(main())
