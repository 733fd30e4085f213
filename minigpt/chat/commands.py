"""The built-in chat commands: /help /clear /regen /set /system /save /load /tokens /stats /exit.

Each is a small function registered on the `BUILTIN` table; chat/lens_commands.py adds /attn and /probs to
its own table the same way, and chat/app.py merges the two. A handler gets the `CommandContext` (session, io, command table) and the text after the
command name, and reports problems by raising `MinigptError` (shown as one line; the chat goes on). /save asks
`ctx.may_write` first (no overwriting, no new folders without --force or a yes); /load reads UTF-8 JSONL only.
"""
from __future__ import annotations

import json
from pathlib import Path

from .io import stats_line
from .loop import CommandContext, CommandTable, EndChat
from ..text.chat_format import validate_messages
from ..common import MinigptError, atomic_write_text
from ..infer.sampling import SamplingConfig, parse_value

BUILTIN = CommandTable()
command = BUILTIN.command

# /set NAME -> SamplingConfig field (max_tokens is the OpenAI-style alias of max_new_tokens)
SET_NAMES = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
             "repetition_penalty": "repetition_penalty", "repetition_window": "repetition_window",
             "max_new_tokens": "max_new_tokens", "max_tokens": "max_new_tokens", "seed": "seed",
             "valid_utf8": "valid_utf8"}

@command("help", "list the commands and keys")
def _help(ctx: CommandContext, arg: str) -> None:
    seen = set()
    lines = []
    for cmd in ctx.commands:
        if cmd.handler in seen:
            continue
        seen.add(cmd.handler)
        lines.append(f"  {cmd.usage:<24} {cmd.help}")
    lines += ["keys: Enter sends · Alt-Enter (or Esc then Enter) starts a new line · Tab completes commands",
              "      Ctrl-C stops a reply (at the prompt: clears it; twice within 2 s: exits) · Ctrl-D exits · "
              "// sends a line starting with /"]
    ctx.io.note("\n".join(lines))


@command("clear", "forget the conversation (the system prompt stays)")
def _clear(ctx: CommandContext, arg: str) -> None:
    ctx.session.clear()
    ctx.io.note("conversation cleared" + (" (system prompt kept)" if ctx.session.system else ""))


@command("regen", "replace the last reply with a new one")
def _regen(ctx: CommandContext, arg: str) -> None:
    messages = ctx.session.messages
    answered = len(messages) >= 2 and messages[-1]["role"] == "assistant" and messages[-2]["role"] == "user"
    if not answered and not (messages and messages[-1]["role"] == "user"):
        raise MinigptError("nothing to regenerate: the conversation does not end with your message or a reply to it")
    old = messages.pop() if answered else None
    try:
        ctx.respond()
    except BaseException:
        if old is not None:  # the new reply failed: keep the one it was to replace
            messages.append(old)
        raise


def _settings(cfg: SamplingConfig) -> str:
    return (f"temperature {cfg.temperature:g} · top_k {cfg.top_k} · top_p {cfg.top_p:g} · min_p {cfg.min_p:g} · "
            f"repetition_penalty {cfg.repetition_penalty:g} · repetition_window {cfg.repetition_window} · "
            f"max_new_tokens {cfg.max_new_tokens} · "
            f"seed {'none' if cfg.seed is None else cfg.seed} · valid_utf8 {'on' if cfg.valid_utf8 else 'off'}")


@command("set", "change a sampling setting, or show them all", usage="/set [NAME VALUE]",
         complete=tuple(n for n in SET_NAMES if n != "max_tokens"))
def _set(ctx: CommandContext, arg: str) -> None:
    if not arg:
        ctx.io.note(_settings(ctx.session.sampling))
        return
    name, _, value = arg.partition(" ")
    key = SET_NAMES.get(name.strip().replace("-", "_"))
    if key is None or not value.strip():
        raise MinigptError(f"usage: /set NAME VALUE, NAME one of {', '.join(k for k in SET_NAMES if k != 'max_tokens')}")
    ctx.session.sampling = ctx.session.sampling.with_overrides(**{key: parse_value(key, value.strip())})
    ctx.io.note(f"{name.strip()} = {value.strip()}")


@command("system", "set the system prompt (no text: show it)", usage="/system [TEXT]")
def _system(ctx: CommandContext, arg: str) -> None:
    if not arg:
        ctx.io.note(f"system prompt: {ctx.session.system!r}" if ctx.session.system else "no system prompt")
        return
    ctx.session.set_system(arg)
    ctx.io.note("system prompt set")


@command("save", "write the conversation as one JSONL line {\"messages\": [...]}", usage="/save FILE")
def _save(ctx: CommandContext, arg: str) -> None:
    if not arg:
        raise MinigptError("usage: /save FILE")
    path = Path(arg).expanduser()
    if not ctx.session.messages:  # /load refuses an empty conversation: do not write one
        raise MinigptError("/save: the conversation is empty; say something first")
    ctx.may_write(path)
    line = json.dumps({"messages": ctx.session.messages_for_save()}, ensure_ascii=False)
    try:
        atomic_write_text(path, line + "\n")
    except OSError as e:
        raise MinigptError(f"/save {path}: cannot write ({e.strerror or e})") from None
    ctx.io.note(f"saved {_count(len(ctx.session.messages), 'message')} to {path}")


@command("load", "continue a conversation saved with /save (or any messages JSONL)", usage="/load FILE")
def _load(ctx: CommandContext, arg: str) -> None:
    if not arg:
        raise MinigptError("usage: /load FILE")
    path = Path(arg).expanduser()
    if path.is_dir():
        raise MinigptError(f"/load {path}: is a folder; give a file written by /save")
    if not path.is_file():
        raise MinigptError(f"/load {path}: no such file")
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as e:
        raise MinigptError(f"/load {path}: not UTF-8 text (bad byte at offset {e.start}); give a file written by "
                           "/save, one JSON line per conversation") from None
    except OSError as e:
        raise MinigptError(f"/load {path}: cannot read ({e.strerror or e})") from None
    if not lines:
        raise MinigptError(f"/load {path}: the file is empty")
    try:
        row = json.loads(lines[0])
    except ValueError as e:
        raise MinigptError(f"/load {path}:1: not JSON ({e})") from None
    messages = validate_messages(row.get("messages") if isinstance(row, dict) else None, f"{path}:1")
    ctx.session.load_messages(messages)
    more = f" (the first of {len(lines)} conversations)" if len(lines) > 1 else ""
    ctx.io.note(f"loaded {_count(len(messages), 'message')} from {path}{more}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@command("tokens", "show how the last turn was tokenized (colour-coded, with ids)")
def _tokens(ctx: CommandContext, arg: str) -> None:
    from ..text.chat_format import debug_view

    session, reply = ctx.session, ctx.session.last
    if reply is None:
        raise MinigptError("no reply yet: /tokens shows the last turn's tokens")
    prompt = reply.prompt_ids
    if session.mode == "chat":
        user = session.tokenizer.special_id("<|user|>")
        cut = max((i for i, t in enumerate(prompt) if t == user), default=0)
    else:
        cut = max(0, len(prompt) - 256)
    ids = prompt[cut:] + reply.ids
    mask = [0] * (len(prompt) - cut) + [1] * len(reply.ids)
    view = debug_view(session.tokenizer, ids, mask)
    view.append("\n")
    view.append(f"prompt ids ({len(prompt)} in all, last {len(prompt) - cut}): {prompt[cut:]}\n", style="dim")
    view.append(f"reply ids ({len(reply.ids)}): {reply.ids}", style="dim")
    ctx.io.show(view)
    ctx.io.note("legend: special tokens bold magenta, the model's reply green underlined, the prompt dim")


@command("stats", "model, context use, speed and settings")
def _stats(ctx: CommandContext, arg: str) -> None:
    from rich.table import Table
    from rich.text import Text

    s, reply = ctx.session, ctx.session.last
    table = Table(show_header=False, box=None, pad_edge=False)
    for key, value in s.info.items():
        table.add_row(key, Text(str(value)))  # a checkpoint path may hold [brackets]: not markup
    limit = s.engine.context_limit
    table.add_row("mode", "chat template" if s.mode == "chat" else "continuation (base model)")
    table.add_row("messages", str(len(s.messages)))
    if reply is not None:
        table.add_row("prompt", f"{len(reply.prompt_ids)} tokens of the {limit or 'unbounded'}-token context"
                      + (f" ({reply.dropped} oldest messages left out)" if reply.dropped else ""))
        table.add_row("last reply", stats_line(reply))
    if s.total_seconds > 0:
        table.add_row("session", f"{s.total_tokens} tokens in {s.total_seconds:.1f} s")
    table.add_row("sampling", _settings(s.sampling))
    ctx.io.show(table)


@command("exit", "leave the chat (also Ctrl-D)", aliases=("quit",))
def _exit(ctx: CommandContext, arg: str) -> None:
    raise EndChat
