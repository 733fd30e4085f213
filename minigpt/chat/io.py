"""Chat front ends: where lines come from and where replies go.

`ChatIO` is what the loop needs; `TerminalIO` is prompt-toolkit line editing (a history file, Alt-Enter / Esc
Enter for a new line, Tab completion of commands) with rich output (a spinner until the first token, timings
after each reply); `PlainIO` is plain text for pipes, one-shot `-p` and tests.

Ctrl-C at the prompt (`TerminalIO`) clears the line; on an empty line it only arms: a second Ctrl-C within 2 s
exits, as Node's REPL does, so a Ctrl-C meant for a reply that has just ended loses nothing. Ctrl-D exits at
once. Input that is not UTF-8 is never fatal: its bad bytes become U+FFFD, with a note. `confirm(question)` asks
before a command overwrites a file or creates a folder (a pipe cannot answer: no).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, TextIO

from .session import Reply, clean_text

EXIT_WINDOW_S = 2.0  # a second Ctrl-C at the prompt within this many seconds exits


class ChatIO(Protocol):
    def read(self) -> str:
        """The next input line; EOFError (Ctrl-D, end of input) or KeyboardInterrupt (Ctrl-C) ends the chat."""

    def reply_start(self) -> None: ...

    def reply_text(self, text: str) -> None: ...

    def reply_end(self, reply: Reply) -> None: ...

    def note(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def show(self, renderable: Any) -> None: ...

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question (default no)."""


class CtrlC:
    """The prompt's Ctrl-C rule: `pressed()` is True (exit) when the previous press, with no line entered since
    (`reset()`), was within `window` seconds."""

    def __init__(self, window: float = EXIT_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self.armed_at: float | None = None

    def pressed(self) -> bool:
        now = self.clock()
        leave = self.armed_at is not None and now - self.armed_at <= self.window
        self.armed_at = now
        return leave

    def reset(self) -> None:
        self.armed_at = None


def decode_line(line: str | bytes) -> tuple[str, bool]:
    """An input line as text, and whether it had to be repaired (bad UTF-8 bytes -> U+FFFD)."""
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8"), False
        except UnicodeDecodeError:
            return line.decode("utf-8", errors="replace"), True
    cleaned = clean_text(line)
    return cleaned, cleaned != line


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
    """Plain text: lines (str or bytes) from an iterable, replies to `out`, notes and errors to `err`. `echo`
    writes each input after the prompt (a transcript); `stats` adds the timings line after each reply."""

    def __init__(self, lines: Iterable[str | bytes], out: TextIO | None = None, err: TextIO | None = None, *,
                 echo: bool = False, stats: bool = False, prompt: str = "> "):
        self._lines = iter(lines)
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.echo, self.stats, self.prompt = echo, stats, prompt

    def read(self) -> str:
        raw = next(self._lines, None)
        if raw is None:
            raise EOFError
        line, repaired = decode_line(raw)
        line = line.rstrip("\r\n")
        if repaired:
            self.note("note: that input was not valid UTF-8; its bad bytes were replaced with U+FFFD")
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

    def confirm(self, question: str) -> bool:
        return False  # nobody to ask: the command refuses, naming --force


class TerminalIO:
    """prompt-toolkit input (history, multiline, completion) and rich output (spinner, dim timings)."""

    def __init__(self, console, history_path: Path, completions: Mapping[str, Iterable[str]]):
        """`completions`: each command name (without the slash) and the words Tab offers after it."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import NestedCompleter
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        class History(FileHistory):  # undecodable input reaches us as lone surrogates: store them as U+FFFD
            def store_string(self, string: str) -> None:
                super().store_string(clean_text(string))

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
                event.app.exit(exception=KeyboardInterrupt, style="class:aborting")  # read() decides


        nested = {"/" + name: ({w: None for w in words} or None) for name, words in completions.items()}
        self.console = console
        self._status = None
        self._ctrl_c = CtrlC()
        self._session = PromptSession(history=History(str(history_path)), key_bindings=kb, multiline=True,
                                      completer=NestedCompleter.from_nested_dict(nested),
                                      complete_while_typing=True, prompt_continuation="… ")

    def read(self) -> str:
        """The next line. Ctrl-C on an empty line exits only when pressed twice within 2 s (KeyboardInterrupt);
        a Ctrl-C that lands between prompts counts as one at the prompt. One that lands while prompt-toolkit is
        starting (the terminal not yet raw) is a SIGINT, which asyncio's runner may hand back as CancelledError
        instead of KeyboardInterrupt: the same press (it used to end the chat with a traceback)."""
        from asyncio import CancelledError

        from prompt_toolkit.formatted_text import HTML

        while True:
            try:
                line = self._session.prompt(HTML("<ansigreen><b>&gt;</b></ansigreen> "))
                self._ctrl_c.reset()
                return clean_text(line)
            except (KeyboardInterrupt, CancelledError):
                if self._ctrl_c.pressed():
                    raise KeyboardInterrupt from None
                self.note(f"(Ctrl-C again within {EXIT_WINDOW_S:g} s to exit, or Ctrl-D)")

    def confirm(self, question: str) -> bool:
        from prompt_toolkit import prompt

        try:
            return prompt(f"{question} [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            return False

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
