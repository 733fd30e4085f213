"""`minigpt sample` (continue a text, streamed; a grid of settings) and `minigpt chat` (the terminal chat)."""
from __future__ import annotations

import argparse
import sys

from ..common import MinigptError, console, err_console
from .args import add_sampling, load, note_unknown, sampling_config


def register(sub) -> None:
    p = sub.add_parser("sample", help="continue a prompt with a checkpoint (streamed; --grid compares settings)",
                       description="Sample continuations of a prompt, streamed token by token. The prompt is "
                                   "encoded as <|bos|> + its text; no chat template.")
    p.add_argument("prompt", nargs="?", default="", help="text to continue ('-' reads standard input; default: "
                   "empty, i.e. from <|bos|>)")
    p.add_argument("-n", "--num-samples", type=int, default=1, help="how many samples (default: 1)")
    p.add_argument("--batch", action="store_true", help="with -n: decode the samples as one batch sharing one "
                   "prefill, then print them (same output as one after another)")
    p.add_argument("--grid", nargs="+", default=None, metavar="NAME=V1,V2",
                   help="a table of continuations for every combination, e.g. temperature=0.2,0.8,1.2 top_p=0.9,1")
    add_sampling(p)
    p.set_defaults(func=_sample)

    p = sub.add_parser("chat", help="talk to a checkpoint in the terminal (streamed, multi-turn, slash commands)",
                       description="Chat with a fine-tuned checkpoint (a base model is continued as plain text). "
                                   "Enter sends, Alt-Enter (or Esc Enter) inserts a new line, Ctrl-C stops a "
                                   "reply (at the prompt it clears the line; twice within 2 s exits), Ctrl-D "
                                   "exits, /help lists commands. With -p: answer once and exit; with a pipe on "
                                   "stdin: each line is a user turn (slash commands only with --commands), "
                                   "output is plain text.")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-p", "--prompt", default=None, help="ask one question, print the answer, exit")
    p.add_argument("--mode", choices=("auto", "chat", "continue"), default="auto",
                   help="chat template or plain continuation (default: auto, from the checkpoint's stage)")
    p.add_argument("--commands", action="store_true", help="with a pipe or -p: run lines starting with / as "
                   "slash commands (default: they are sent as text)")
    p.add_argument("--force", action="store_true", help="let /save and /attn html overwrite files and create "
                   "folders without asking (default: refuse in a pipe, ask at a terminal)")
    add_sampling(p)
    p.set_defaults(func=_chat)


def _sample(args: argparse.Namespace) -> int:
    import random

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..infer.engine import Engine, collect
    from ..infer.sampling import grid_configs, nth_seed, parse_grid

    config = sampling_config(args)
    grid = parse_grid(args.grid) if args.grid else None
    if args.num_samples < 1:
        raise MinigptError(f"-n {args.num_samples}: give at least 1 sample")
    if grid and args.num_samples > 1:
        raise MinigptError(f"-n {args.num_samples} with --grid: the grid shows one continuation per setting; for "
                           "several, add seeds to it (--grid seed=1,2,3)")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    ckpt = load(args)
    engine = Engine(ckpt.model, ckpt.tokenizer)
    ids = [ckpt.tokenizer.bos_id] + ckpt.tokenizer.encode(prompt)
    note_unknown(ckpt.tokenizer, prompt)
    if config.seed is None:  # one seed for the whole run, printed so the run can be repeated
        config = config.with_overrides(seed=random.SystemRandom().randrange(2**31))
    note = (f"note: the text outgrew the model's {engine.block_size}-token context; the window slid (the model "
            f"saw only the most recent tokens)")
    if grid:
        title = f"prompt {prompt!r}" + ("" if "seed" in grid else f" · seed {config.seed}")  # else: a column
        table = Table(*grid, "continuation", title=escape(title),
                      show_lines=True)
        slid = False
        for values, cfg in grid_configs(config, grid):
            gen = engine.generate(ids, cfg, use_cache=args.use_cache)
            slid |= gen.slid
            table.add_row(*(f"{v:g}" if isinstance(v, float) else str(v) for v in values.values()),
                          Text(gen.text))
        console.print(table)
        if slid:
            err_console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
        return 0

    def footer(gen) -> None:
        t = gen.timings
        console.file.flush()  # the text, then (on stderr) how it went
        batch = f" for the batch of {t.samples}" if t.samples > 1 else ""  # one figure for all the samples
        err_console.print(f"[dim]{len(gen.ids)} tokens · {t.tokens_per_s:.1f} tokens/s{batch} · first token "
                          f"{t.ttft_s * 1000:.0f} ms · {gen.finish_reason}"
                          + (f" · seed {gen.seed}" if gen.seed is not None else "") + "[/]", soft_wrap=True)
        if gen.slid:
            err_console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)

    def show(ev) -> None:  # stream the text as it is sampled
        if ev.text:
            console.file.write(ev.text)
            console.file.flush()

    n = args.num_samples
    if args.batch and n > 1:
        for i, gen in enumerate(engine.generate_many(ids, n, config, use_cache=args.use_cache)):
            console.print(f"[bold]── sample {i + 1}/{n}[/]")
            console.print(Text(prompt, style="bold") + Text(gen.text), soft_wrap=True)  # the text as it is
            footer(gen)
        return 0
    for i in range(n):
        if n > 1:
            console.print(f"[bold]── sample {i + 1}/{n}[/]")
        console.print(Text(prompt, style="bold"), end="", soft_wrap=True)
        stream = engine.stream(ids, config.with_overrides(seed=nth_seed(config.seed, i)), use_cache=args.use_cache)
        gen = collect(stream, on_event=show)[0]
        console.file.write("\n")
        footer(gen)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from ..chat.app import chat_main

    if args.prompt is not None and not args.prompt.strip():
        raise MinigptError("-p: the question is empty; give some text, e.g. -p 'What does len do?'")
    return chat_main(args.checkpoint, device=args.device, sampling=sampling_config(args), system=args.system,
                     prompt=args.prompt, mode=args.mode, use_cache=args.use_cache, commands=args.commands,
                     force=args.force)
