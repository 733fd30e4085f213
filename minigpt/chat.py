"""`minigpt chat`: a multi-turn conversation with a checkpoint, in the terminal, piped, or one-shot.

Three layers, so the loop is tested with scripted input and an exact transcript (simonw/llm's approach):
- `ChatSession`: the conversation (`messages` in TRL's format), the sampling settings and the engine. It
  renders the prompt through the chat template, drops the oldest turns when the conversation outgrows the
  model's context (the system prompt stays), streams a reply and keeps everything about it on `session.last`
  (prompt ids, generated ids, log-probs, timings, attention when asked) for commands such as /tokens.
- `run_chat(session, io)`: the one loop. It reads lines through `io`, runs slash commands from the `COMMANDS`
  table and streams replies back through `io`. Ctrl-C during a reply stops it (the partial reply stays in the
  history, marked interrupted); Ctrl-C or Ctrl-D at an empty prompt ends the loop.
- Front ends: `TerminalIO` (prompt-toolkit line editing with a history file, Alt-Enter / Esc Enter for a
  new line, Tab completion of commands; rich output with a spinner until the first token and timings after
  each reply) and `PlainIO` (plain text for pipes, one-shot `-p` and tests).

A base checkpoint (stage "pretrain") knows no chat template: the session then works in continuation mode,
continuing `<|bos|>` + the conversation as plain text. User text is always ordinary text: typing "<|end|>"
gives the tokens of those seven characters, never the special token.

Adding a command from another module:

    from minigpt.chat import command

    @command("probs", "show the top alternatives of each token of the last reply", usage="/probs [N]")
    def _probs(ctx, arg):          # ctx.session (ChatSession), ctx.io (output), ctx.respond()
        ctx.io.show(...)

and list the module in `COMMAND_MODULES` so the CLI imports it before the loop starts.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, TextIO

from .chat_format import render_prompt
from .common import MinigptError
from .engine import Engine, TokenEvent
from .sampling import SamplingConfig

CHAT_STAGES = ("sft", "dpo", "rl")  # checkpoints of these stages know the chat template
COMMAND_MODULES: list[str] = ["minigpt.inspect"]  # modules that register more commands on import (/attn, /probs)
SET_NAMES = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
             "repetition_penalty": "repetition_penalty", "repetition_window": "repetition_window",
             "max_tokens": "max_new_tokens", "max_new_tokens": "max_new_tokens", "seed": "seed"}


# ---------------------------------------------------------------------------------------------- the session


@dataclass
class Reply:
    """One assistant reply and everything measured about it (what /tokens, /stats, /probs, /attn read)."""

    prompt_ids: list[int]
    dropped: int = 0  # messages left out of the prompt to fit the context
    seed: int | None = None
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    attention: list[list] | None = None  # per token, per layer (n_head, T_k), when session.capture_attention
    finish_reason: str | None = None  # "stop", "length" or "interrupted"
    slid: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    ended: float | None = None

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"

    @property
    def ttft_s(self) -> float:
        return ((self.first_token or self.ended or self.started) - self.started)

    @property
    def total_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        if len(self.ids) <= 1 or decode <= 0:
            return len(self.ids) / self.total_s if self.total_s > 0 else 0.0
        return (len(self.ids) - 1) / decode

    def add(self, ev: TokenEvent) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.ids.append(ev.token_id)
        self.logprobs.append(ev.logprob)
        self.text += ev.text
        self.slid |= ev.slid
        if ev.attention is not None:
            if self.attention is None:
                self.attention = []
            self.attention.append(ev.attention)
        if ev.finish_reason:
            self.finish_reason = ev.finish_reason


class ChatSession:
    """A conversation with one model: messages + sampling settings + engine.

    `mode` "chat" renders messages through the chat template; "continue" (base models) continues
    `<|bos|>` + the conversation as plain text, each user input on a new line."""

    def __init__(self, engine: Engine, *, sampling: SamplingConfig | None = None, system: str | None = None,
                 mode: str = "chat", use_cache: bool = True, info: dict[str, Any] | None = None):
        if mode not in ("chat", "continue"):
            raise MinigptError(f"--mode {mode}: use chat or continue")
        self.engine, self.tokenizer, self.mode, self.use_cache = engine, engine.tokenizer, mode, use_cache
        self.sampling = sampling or SamplingConfig()
        self.messages: list[dict[str, Any]] = []
        self.info = info or {}  # what the front end shows in /stats (checkpoint path, stage, ...)
        self.capture_attention = False  # /attn sets it: replies then keep each token's attention
        self.last: Reply | None = None
        self.replies = 0  # replies since the start or /clear (reply k is seeded with seed + k)
        self.total_tokens, self.total_seconds = 0, 0.0
        if system:
            self.set_system(system)

    # -------------------------------------------------------------------------------------- conversation

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def set_system(self, text: str) -> None:
        if self.system is not None:
            self.messages[0] = {"role": "system", "content": text}
        else:
            self.messages.insert(0, {"role": "system", "content": text})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def clear(self) -> None:
        """Forget the conversation; the system prompt stays."""
        self.messages = self.messages[:1] if self.system is not None else []
        self.last, self.replies = None, 0

    def messages_for_save(self) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def load_messages(self, messages: list[dict[str, str]]) -> None:
        self.messages = [dict(m) for m in messages]
        self.last, self.replies = None, 0

    # -------------------------------------------------------------------------------------- prompts

    def stop_ids(self) -> set[int]:
        """Chat mode stops at any special token (a new turn would begin); continuation at <|end|>, <|bos|>."""
        if self.mode == "chat":
            return set(self.tokenizer.specials.values())
        return self.engine.default_stop_ids()

    def plain_text(self, messages: list[dict[str, Any]]) -> str:
        """Continuation mode's text: the system prompt, then each input on a new line with its continuation."""
        text = ""
        for m in messages:
            if m["role"] == "system":
                text += m["content"] + "\n"
            elif m["role"] == "user":
                text += ("\n" if text and not text.endswith("\n") else "") + m["content"]
            else:
                text += m["content"]
        return text

    def render(self, messages: list[dict[str, Any]]) -> list[int]:
        if self.mode == "chat":
            return render_prompt(self.tokenizer, messages)
        return [self.tokenizer.bos_id] + self.tokenizer.encode(self.plain_text(messages))

    def prompt_budget(self) -> int | None:
        """Prompt tokens that leave room for a reply: the context less min(max_new_tokens, a quarter)."""
        limit = self.engine.context_limit
        if limit is None:
            return None
        return max(1, limit - min(self.sampling.max_new_tokens, limit // 4))

    def prompt_ids(self) -> tuple[list[int], int]:
        """The prompt for the next reply and how many of the oldest messages were left out to fit."""
        head = self.messages[:1] if self.system is not None else []
        rest = self.messages[len(head):]
        budget, dropped = self.prompt_budget(), 0
        while True:
            ids = self.render(head + rest[dropped:])
            if budget is None or len(ids) <= budget or dropped >= len(rest) - 1:
                return ids, dropped
            dropped += 1
            while dropped < len(rest) - 1 and rest[dropped]["role"] != "user":  # start on a user turn
                dropped += 1

    # -------------------------------------------------------------------------------------- replies

    def reply_config(self) -> SamplingConfig:
        seed = None if self.sampling.seed is None else self.sampling.seed + self.replies
        return self.sampling.with_overrides(seed=seed)

    def respond(self, on_text: Callable[[str], None] | None = None,
                on_note: Callable[[str], None] | None = None) -> Reply:
        """Stream a reply to the conversation so far; Ctrl-C ends it early (finish_reason "interrupted").
        The reply joins the history either way."""
        ids, dropped = self.prompt_ids()
        if dropped and on_note:
            limit = self.engine.context_limit
            on_note(f"context: left out the {dropped} oldest message{'s' * (dropped > 1)} to fit the model's "
                    f"{limit}-token context" + (" (the system prompt stays)" if self.system else ""))
        config = self.reply_config()
        self.replies += 1
        reply = Reply(prompt_ids=ids, dropped=dropped)
        self.last = reply
        stream = None
        try:
            stream = self.engine.stream(ids, config, stop_ids=self.stop_ids(), use_cache=self.use_cache,
                                        capture_attention=self.capture_attention)
            reply.seed = stream.seed
            for ev in stream:
                reply.add(ev)
                if ev.text and on_text:
                    on_text(ev.text)
        except KeyboardInterrupt:
            reply.finish_reason = "interrupted"
            if stream is not None:
                stream.close()
        finally:
            reply.ended = time.perf_counter()
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.interrupted:
                message["interrupted"] = True
            self.messages.append(message)
            self.total_tokens += len(reply.ids)
            self.total_seconds += reply.total_s
        return reply

    def undo_reply(self) -> bool:
        """Remove the last assistant message (for /regen); False when the conversation does not end in one."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
            return True
        return False


# ---------------------------------------------------------------------------------------------- input/output


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

    def __init__(self, console, history_path: Path, commands: dict[str, "Command"]):
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

        nested: dict[str, Any] = {}
        for name, cmd in commands.items():
            nested["/" + name] = {k: None for k in cmd.complete} if cmd.complete else None
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


# ---------------------------------------------------------------------------------------------- commands


class EndChat(Exception):
    """Raised by a command (/exit) to end the loop."""


@dataclass
class CommandContext:
    session: ChatSession
    io: ChatIO
    commands: dict[str, "Command"]

    def respond(self) -> Reply:
        return respond(self.session, self.io)


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[CommandContext, str], None]
    help: str
    usage: str = ""
    complete: tuple[str, ...] = ()  # words Tab offers after the command (e.g. /set's names)


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *, usage: str = "", complete: Iterable[str] = (), aliases: Iterable[str] = ()):
    """Register a slash command: `handler(ctx, arg)` gets the text after the command name, stripped."""
    def register(handler: Callable[[CommandContext, str], None]):
        cmd = Command(name, handler, help, usage or f"/{name}", tuple(complete))
        COMMANDS[name] = cmd
        for alias in aliases:
            COMMANDS[alias] = dataclasses.replace(cmd, name=alias)
        return handler
    return register


def load_command_modules() -> list[str]:
    """Import the modules in COMMAND_MODULES (they register commands); returns the ones that failed."""
    failed = []
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # a broken plugin should not take the chat down
            failed.append(f"{name}: {e}")
    return failed


# ---------------------------------------------------------------------------------------------- the loop


def respond(session: ChatSession, io: ChatIO) -> Reply:
    io.reply_start()
    reply = session.respond(on_text=io.reply_text, on_note=io.note)
    io.reply_end(reply)
    return reply


def run_chat(session: ChatSession, io: ChatIO, commands: dict[str, Command] | None = None) -> int:
    """Read, run commands or reply, repeat, until end of input, Ctrl-C/Ctrl-D at the prompt, or /exit."""
    commands = COMMANDS if commands is None else commands
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


# ---------------------------------------------------------------------------------------------- entry point


def chat_main(checkpoint: str, *, device: str = "auto", sampling: SamplingConfig | None = None,
              system: str | None = None, prompt: str | None = None, mode: str = "auto", use_cache: bool = True,
              stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """`minigpt chat`: interactive on a terminal; one-shot with `prompt`; line by line when stdin is a pipe."""
    from .checkpoint import load_checkpoint
    from .common import console, minigpt_home, resolve_device

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    ckpt = load_checkpoint(checkpoint, device=resolve_device(device))
    stage = ckpt.config.get("stage", "pretrain")
    if mode == "auto":
        mode = "chat" if stage in CHAT_STAGES else "continue"
    engine = Engine(ckpt.model, ckpt.tokenizer)
    kind = getattr(ckpt.model.config, "kind", "?")
    info = {"checkpoint": str(ckpt.path), "model": f"{kind}, {ckpt.model.num_params() / 1e6:.2f}M parameters, "
            f"stage {stage}", "context": f"{engine.context_limit or 'unbounded'} tokens", "device": str(engine.device)}
    session = ChatSession(engine, sampling=sampling, system=system, mode=mode, use_cache=use_cache, info=info)
    failed = load_command_modules()
    continue_note = (f"this is a base model (stage {stage}): each input is continued as plain text, without chat "
                     "tokens; fine-tune it with sft to chat")
    if prompt is not None or not stdin.isatty():
        io: ChatIO = PlainIO([prompt] if prompt is not None else stdin, stdout, sys.stderr)
        if mode == "continue":
            io.note(continue_note)
        return run_chat(session, io)
    io = TerminalIO(console, minigpt_home() / "chat_history", COMMANDS)
    console.print(f"[bold]minigpt chat[/] · {ckpt.path} · {info['model']} · context {info['context']}")
    console.print("[dim]/help for commands · Enter sends · Alt-Enter (or Esc Enter) new line · Ctrl-C stops a "
                  "reply · Ctrl-D exits[/]")
    for problem in failed:
        io.error(f"command module {problem}")
    if mode == "continue":
        io.note(continue_note)
    return run_chat(session, io)


from . import chat_commands  # noqa: E402,F401 (registers the built-in commands; it imports from this module)
