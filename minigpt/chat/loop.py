"""The one chat loop and its slash commands: read a line, run a command or reply, repeat.

`run_chat(session, io, commands)` reads lines through `io`, runs slash commands from a `CommandTable` and streams
replies back through `io`. Ctrl-C during a reply stops it (the partial reply stays in the history, marked
interrupted); Ctrl-C or Ctrl-D at an empty prompt ends the loop. Tested with scripted input and an exact
transcript (simonw/llm's approach).

Commands live in tables, merged explicitly by the caller (chat/app.py), never registered by import side effects:

    EXTRA = CommandTable()

    @EXTRA.command("count", "how many tokens the last reply had", usage="/count")
    def _count(ctx, arg):          # ctx.session (ChatSession), ctx.io (output), ctx.respond()
        ctx.io.note(str(len(ctx.session.last.ids)))

    run_chat(session, io, CommandTable(default_commands(), EXTRA))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..common import MinigptError
from .io import ChatIO
from .session import ChatSession, Reply


class EndChat(Exception):
    """Raised by a command (/exit) to end the loop."""


@dataclass
class CommandContext:
    session: ChatSession
    io: ChatIO
    commands: "CommandTable"

    def respond(self) -> Reply:
        return respond(self.session, self.io)


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[CommandContext, str], None]
    help: str
    usage: str = ""
    complete: tuple[str, ...] = ()  # words Tab offers after the command (e.g. /set's names)


class CommandTable:
    """Slash commands by name. `CommandTable(a, b)` merges tables (later ones win); `@table.command(...)` adds."""

    def __init__(self, *tables: "CommandTable"):
        self.commands: dict[str, Command] = {}
        for table in tables:
            self.commands.update(table.commands)

    def command(self, name: str, help: str, *, usage: str = "", complete: Iterable[str] = (),
                aliases: Iterable[str] = ()):
        """Register a slash command: `handler(ctx, arg)` gets the text after the command name, stripped."""
        def register(handler: Callable[[CommandContext, str], None]):
            cmd = Command(name, handler, help, usage or f"/{name}", tuple(complete))
            self.commands[name] = cmd
            for alias in aliases:
                self.commands[alias] = dataclasses.replace(cmd, name=alias)
            return handler
        return register

    def get(self, name: str) -> Command | None:
        return self.commands.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.commands

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands.values())

    def completions(self) -> dict[str, tuple[str, ...]]:
        """Each command name and the words Tab offers after it (for the terminal front end)."""
        return {name: cmd.complete for name, cmd in self.commands.items()}


def respond(session: ChatSession, io: ChatIO) -> Reply:
    io.reply_start()
    reply = session.respond(on_text=io.reply_text, on_note=io.note)
    io.reply_end(reply)
    return reply


def run_chat(session: ChatSession, io: ChatIO, commands: CommandTable) -> int:
    """Read, run commands or reply, repeat, until end of input, Ctrl-C/Ctrl-D at the prompt, or /exit."""
    ctx = CommandContext(session, io, commands)
    while True:
        try:
            line = io.read()
        except (EOFError, KeyboardInterrupt):
            return 0
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, _, arg = line[1:].partition(" ")
                cmd = commands.get(name.strip())
                if cmd is None:
                    raise MinigptError(f"unknown command /{name.strip()}; /help lists them (// sends a line "
                                       f"starting with /)")
                cmd.handler(ctx, arg.strip())
            elif line.strip():
                session.add_user(line[1:] if line.startswith("//") else line)
                respond(session, io)
        except EndChat:
            return 0
        except MinigptError as e:
            io.error(str(e))
        except KeyboardInterrupt:  # Ctrl-C inside a command: back to the prompt
            io.note("[interrupted]")
