"""`minigpt chat`: a checkpoint, a session, the built-in commands and a front end, put together.

Interactive on a terminal (prompt-toolkit + rich), one answer with `-p`, or one user turn per line when standard
input is a pipe. The commands are the built-in ones (commands.py) and the inspection ones (lens_commands.py).
Input that does not come from a person at a terminal (a pipe, `-p`) is user turns only: a line starting with /
is sent as text unless `commands=True` (--commands), so a piped file cannot run /save or /attn html. Piped
bytes that are not UTF-8 are repaired (U+FFFD), never fatal.
"""
from __future__ import annotations

import sys
from typing import TextIO

from ..infer.engine import Engine
from ..infer.sampling import SamplingConfig
from .commands import BUILTIN
from .io import ChatIO, PlainIO, TerminalIO
from .lens_commands import LENS
from .loop import CommandTable, run_chat
from .session import CHAT_STAGES, ChatSession


def default_commands() -> CommandTable:
    """Every command `minigpt chat` offers: the built-in ones and /attn, /probs."""
    return CommandTable(BUILTIN, LENS)


def chat_main(checkpoint: str, *, device: str = "auto", sampling: SamplingConfig | None = None,
              system: str | None = None, prompt: str | None = None, mode: str = "auto", use_cache: bool = True,
              stdin: TextIO | None = None, stdout: TextIO | None = None, commands: bool = False,
              force: bool = False) -> int:
    """`minigpt chat`: interactive on a terminal; one-shot with `prompt`; line by line when stdin is a pipe.
    `commands`: run slash commands from a pipe or -p too; `force`: /save and /attn html may overwrite files and
    create folders without asking."""
    from ..checkpoint import load_checkpoint
    from rich.markup import escape

    from ..common import console, minigpt_home, resolve_device

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    ckpt = load_checkpoint(checkpoint, device=resolve_device(device)).writer()
    stage = ckpt.config.get("stage", "pretrain")
    if mode == "auto":
        mode = "chat" if stage in CHAT_STAGES else "continue"
    engine = Engine(ckpt.model, ckpt.tokenizer)
    kind = getattr(ckpt.model.config, "kind", "?")
    info = {"checkpoint": str(ckpt.path), "model": f"{kind}, {ckpt.model.num_params() / 1e6:.2f}M parameters, "
            f"stage {stage}", "context": f"{engine.context_limit or 'unbounded'} tokens", "device": str(engine.device)}
    session = ChatSession(engine, sampling=sampling, system=system, mode=mode, use_cache=use_cache, info=info)
    table = default_commands()
    continue_note = (f"this is a base model (stage {stage}): each input is continued as plain text, without chat "
                     "tokens; fine-tune it with sft to chat") if stage not in CHAT_STAGES else \
        f"--mode continue: each input is continued as plain text, without the {stage} model's chat template"
    if prompt is not None or not stdin.isatty():
        lines = [prompt] if prompt is not None else getattr(stdin, "buffer", stdin)  # bytes: repaired, not fatal
        io: ChatIO = PlainIO(lines, stdout, sys.stderr)
        io.note(f"loaded {ckpt.path} (stage {stage}, step {ckpt.step})")
        if mode == "continue":
            io.note(continue_note)
        return run_chat(session, io, table if commands else None, force=force, piped=True)
    io = TerminalIO(console, minigpt_home() / "chat_history", table.completions())
    console.print(f"[bold]minigpt chat[/] · {escape(str(ckpt.path))} (step {ckpt.step}) · {info['model']} · "
                  f"context {info['context']}")
    console.print("[dim]/help for commands · Enter sends · Alt-Enter (or Esc Enter) new line · Ctrl-C stops a "
                  "reply · Ctrl-D (or Ctrl-C twice) exits[/]")
    if mode == "continue":
        io.note(continue_note)
    return run_chat(session, io, table, force=force)
