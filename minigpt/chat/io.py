"""Chat front ends: where lines come from and where replies go.

`ChatIO` is what the loop needs; `TerminalIO` is prompt-toolkit line editing (a history file, Alt-Enter / Esc
Enter for a new line, Tab completion of commands) with rich output (a spinner until the first token, timings
after each reply); `PlainIO` is plain text for pipes, one-shot `-p` and tests.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, TextIO

from .session import Reply


class ChatIO(Protocol):
    def read(self) -> str:
        """The next input line; EOFError (Ctrl-D, end of input) or KeyboardInterrupt (Ctrl-C) ends the chat."""

    def reply_start(self) -> None: ...

    def reply_text(self, text: str) -> None: ...

    def reply_end(self, reply: Reply) -> None: ...

    def note(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def show(self, renderable: Any) -> None: ...


def stats_line(reply: Reply) -> str:
    parts = [f"{len(reply.ids)} tokens", f"{reply.tokens_per_s:.1f} tokens/s",
             f"first token {reply.ttft_s * 1000:.0f} ms"]
    if reply.interrupted:
        parts.append("interrupted")
    elif reply.finish_reason == "length":
        parts.append("stopped at max_tokens")
    if reply.slid:
        parts.append("context window slid")
    return " · ".join(parts)


class PlainIO:
    """Plain text: lines from an iterable, replies to `out`, notes and errors to `err`. `echo` writes each
    input after the prompt (a transcript); `stats` adds the timings line after each reply."""

    def __init__(self, lines: Iterable[str], out: TextIO | None = None, err: TextIO | None = None, *,
                 echo: bool = False, stats: bool = False, prompt: str = "> "):
        self._lines = iter(lines)
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.echo, self.stats, self.prompt = echo, stats, prompt

    def read(self) -> str:
        line = next(self._lines, None)
        if line is None:
            raise EOFError
        line = line.rstrip("\r\n")
        if self.echo:
            self.out.write(f"{self.prompt}{line}\n")
        return line

    def reply_start(self) -> None:
        pass

    def reply_text(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def reply_end(self, reply: Reply) -> None:
        self.out.write("\n")
        self.out.flush()
        if reply.interrupted:
            self.note("[interrupted]")
        if self.stats:
            self.note(f"[{stats_line(reply)}]")

    def note(self, message: str) -> None:
        self.err.write(message + "\n")
        self.err.flush()

    def error(self, message: str) -> None:
        self.err.write(f"error: {message}\n")
        self.err.flush()

    def show(self, renderable: Any) -> None:
        from rich.console import Console

        Console(file=self.out, no_color=True, highlight=False, width=100, color_system=None).print(renderable)


class TerminalIO:
    """prompt-toolkit input (history, multiline, completion) and rich output (spinner, dim timings)."""

    def __init__(self, console, history_path: Path, completions: Mapping[str, Iterable[str]]):
        """`completions`: each command name (without the slash) and the words Tab offers after it."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import NestedCompleter
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        kb = KeyBindings()

        @kb.add("enter")
        def _send(event):
            event.current_buffer.validate_and_handle()

        @kb.add("escape", "enter")  # Alt-Enter sends Esc Enter in most terminals
        def _newline(event):
            event.current_buffer.insert_text("\n")

        @kb.add("c-c")
        def _interrupt(event):
            buffer = event.current_buffer
            if buffer.text:
                buffer.reset()  # Ctrl-C with text typed: drop the line, stay in the chat
            else:
                event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

        nested = {"/" + name: ({w: None for w in words} or None) for name, words in completions.items()}
        self.console = console
        self._status = None
        self._session = PromptSession(history=FileHistory(str(history_path)), key_bindings=kb, multiline=True,
                                      completer=NestedCompleter.from_nested_dict(nested),
                                      complete_while_typing=True, prompt_continuation="… ")

    def read(self) -> str:
        from prompt_toolkit.formatted_text import HTML

        return self._session.prompt(HTML("<ansigreen><b>&gt;</b></ansigreen> "))

    def reply_start(self) -> None:
        self._status = self.console.status("[dim]thinking…[/]", spinner="dots")
        self._status.start()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def reply_text(self, text: str) -> None:
        self._stop_spinner()
        self.console.file.write(text)
        self.console.file.flush()

    def reply_end(self, reply: Reply) -> None:
        self._stop_spinner()
        self.console.file.write("\n")
        self.console.print(f"[dim]{stats_line(reply)}[/]")

    def note(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]{escape(message)}[/]")

    def error(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[red]error:[/] {escape(message)}")

    def show(self, renderable: Any) -> None:
        self.console.print(renderable)
