"""The one chat loop and its slash commands: read a line, run a command or reply, repeat.

`run_chat(session, io, commands)` reads lines through `io`, runs slash commands from a `CommandTable` and streams
replies back through `io`. Ctrl-C during a reply stops it (the partial reply stays in the history, marked
interrupted); end of input, Ctrl-D, or (terminal) Ctrl-C twice at the prompt ends the loop. With `commands=None`
every line is a user turn (piped input without --commands). The loop never dies on input: a command's error is
one line, and any unexpected error saves the conversation under $MINIGPT_HOME/chats/ and says where (`rescue`).
Commands that write files (/save, /attn html) go through `CommandContext.may_write`: no overwriting and no new
folders unless --force, or the user says yes. Tested with scripted input and an exact transcript (simonw/llm's
approach).

Commands live in tables, merged explicitly by the caller (chat/app.py), never registered by import side effects:

    EXTRA = CommandTable()

    @EXTRA.command("count", "how many tokens the last reply had", usage="/count")
    def _count(ctx, arg):          # ctx.session (ChatSession), ctx.io (output), ctx.respond()
        ctx.io.note(str(len(ctx.session.last.ids)))

    run_chat(session, io, CommandTable(default_commands(), EXTRA))
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..common import MinigptError, atomic_write_text, minigpt_home
from .io import ChatIO
from .session import ChatSession, Reply


class EndChat(Exception):
    """Raised by a command (/exit) to end the loop."""


@dataclass
class CommandContext:
    session: ChatSession
    io: ChatIO
    commands: "CommandTable"
    force: bool = False  # --force: commands may overwrite files and create folders without asking
    told_slash: bool = False  # said once that piped /lines are text

    def respond(self) -> Reply:
        return respond(self.session, self.io)

    def may_write(self, path: Path) -> None:
        """Refuse to overwrite a file or create a folder unless --force, or the user (at a terminal) says yes."""
        if path.is_dir():
            raise MinigptError(f"{path}: is a folder; give a file name")
        if self.force:
            return
        if not path.parent.is_dir() and not self.io.confirm(f"{path.parent} does not exist; create it?"):
            raise MinigptError(f"{path.parent}: no such folder; create it first, or start the chat with --force")
        if path.exists() and not self.io.confirm(f"{path} exists; overwrite it?"):
            raise MinigptError(f"{path}: already exists; give another name, or start the chat with --force")


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


def run_chat(session: ChatSession, io: ChatIO, commands: CommandTable | None, *, force: bool = False,
             piped: bool = False) -> int:
    """Read, run commands or reply, repeat, until end of input, Ctrl-D, Ctrl-C twice at the prompt, or /exit.
    `commands` None: every line is a user turn. Returns 0, or 1 when reading input keeps failing; `piped`
    (input from a pipe or -p): also 1 when any line failed, and a reader that went away (`| head`) ends it."""
    ctx = CommandContext(session, io, commands or CommandTable(), force)
    failed_reads, failed = 0, False
    while True:
        try:
            line = io.read()
        except (EOFError, KeyboardInterrupt):
            return 1 if failed and piped else 0
        except Exception as e:  # the front end failed: keep the conversation, try again (3 times)
            rescue(ctx, e)
            failed_reads += 1
            if failed_reads >= 3:
                return 1
            continue
        failed_reads = 0
        try:
            _handle(ctx, line, with_commands=commands is not None)
        except EndChat:
            return 1 if failed and piped else 0
        except MinigptError as e:
            io.error(str(e))
            failed = True
        except KeyboardInterrupt:  # Ctrl-C inside a command: back to the prompt
            io.note("[interrupted]")
        except BrokenPipeError:
            if piped:  # nobody reads the replies any more: stop, quietly (stdout pointed at /dev/null for exit)
                with contextlib.suppress(Exception):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
            rescue(ctx, BrokenPipeError())
        except Exception as e:  # a bug, not the user's doing: keep the conversation and go on
            rescue(ctx, e)
            failed = True


def _handle(ctx: CommandContext, line: str, *, with_commands: bool) -> None:
    """One input line: a slash command, or a user turn and its reply."""
    if with_commands and line.startswith("/") and not line.startswith("//"):
        name, _, arg = line[1:].partition(" ")
        cmd = ctx.commands.get(name.strip())
        if cmd is None:
            raise MinigptError(f"unknown command /{name.strip()}; /help lists them (// sends a line starting with /)")
        cmd.handler(ctx, arg.strip())
    elif line.strip():
        if not with_commands and line.startswith("/") and not ctx.told_slash:
            ctx.io.note("note: lines starting with / are sent as text here; add --commands to run slash commands")
            ctx.told_slash = True
        before = len(ctx.session.messages)
        ctx.session.add_user(line[1:] if with_commands and line.startswith("//") else line)
        try:
            respond(ctx.session, ctx.io)
        except BaseException:  # no reply: the turn is not kept either, so the history stays a conversation
            del ctx.session.messages[before:]
            raise


def rescue(ctx: CommandContext, error: Exception) -> Path | None:
    """Save the conversation (a /load-able JSONL line) and the traceback under $MINIGPT_HOME/chats/, and say so."""
    try:
        folder = minigpt_home() / "chats"
        path = folder / time.strftime("rescued-%Y%m%d-%H%M%S.jsonl")
        atomic_write_text(path, json.dumps({"messages": ctx.session.messages_for_save()}, ensure_ascii=False) + "\n")
        atomic_write_text(path.with_suffix(".traceback.txt"), "".join(traceback.format_exception(error)))
    except Exception as e:  # noqa: BLE001 - the report below is all that is left
        ctx.io.error(f"unexpected {type(error).__name__}: {error}; the conversation could not be saved ({e})")
        return None
    ctx.io.error(f"unexpected {type(error).__name__}: {error}; the conversation is saved in {path} (/load it to "
                 f"continue; details in {path.with_suffix('.traceback.txt').name}); the chat goes on")
    return path
