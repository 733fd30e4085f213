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


# ---------------------------------------------------------------------------------------------- tokenizer


@subcommand
def _add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a BPE tokenizer, show how text splits, describe a tokenizer",
                       description="Byte-level BPE (or characters) trained on your text; encoding runs in tiktoken.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="learn a tokenizer from a text source",
                           description="Learn a byte-level BPE (or a character vocabulary) from a text source's "
                                       "train split and report bytes/token on its val split.")
    t.add_argument("--data", default="pydocs", help="text source: pydocs (built in), a .txt file, a folder, a "
                   ".jsonl/.parquet file with a 'text' field, or a Hub dataset id (default: pydocs)")
    t.add_argument("--vocab-size", type=int, default=4096,
                   help="all ids, the 5 special tokens included; = the model's embedding size (default: 4096)")
    t.add_argument("--kind", choices=("bpe", "char"), default="bpe",
                   help="bpe, or char: one id per character, for nanoGPT-style baselines (default: bpe)")
    t.add_argument("--pattern", default="minigpt", help="pre-split regex, or a name: minigpt (GPT-4's with one "
                   "chunk per Han character), gpt4, gpt2 (default: minigpt)")
    t.add_argument("--out", default=None, help="file to write (default: data/tokenizers/<source>-bpe<vocab>.bpe, "
                   "or <source>-char.char)")
    t.set_defaults(func=_tokenizer_train)
    e = actions.add_parser("encode", help="show how a text splits into tokens (coloured, with ids)")
    e.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    e.add_argument("text", help="the text to encode ('-' reads standard input)")
    e.set_defaults(func=_tokenizer_encode)
    i = actions.add_parser("info", help="vocabulary size, special tokens, compression, longest tokens, merges")
    i.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    i.add_argument("--text", default=None, help="a UTF-8 text file to measure bytes/token on")
    i.add_argument("--top", type=int, default=10, help="how many longest tokens and first merges (default: 10)")
    i.set_defaults(func=_tokenizer_info)


def _tokenizer_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.table import Table

    from .data import default_data_root, open_source
    from .tokenizer import bytes_per_token, resolve_pattern, train_bpe, train_char

    pattern = resolve_pattern(args.pattern)
    source = open_source(args.data)
    name = f"{source.name}-char.char" if args.kind == "char" else f"{source.name}-bpe{args.vocab_size}.bpe"
    out = Path(args.out) if args.out else default_data_root() / "tokenizers" / name
    start = time.perf_counter()
    if args.kind == "char":
        tok = train_char(source.documents("train"))
    else:
        tok = train_bpe(source.documents("train"), args.vocab_size, pattern=pattern)
    elapsed = time.perf_counter() - start
    tok.save(out)
    val = "".join(source.documents("val"))
    table = Table(title=f"{tok.kind} tokenizer trained on {source.spec}", show_header=False)
    table.add_row("vocab size", f"{tok.vocab_size:,} (special tokens {min(tok.specials.values())}.."
                                f"{max(tok.specials.values())})")
    table.add_row("training time", f"{elapsed:.1f} s")
    table.add_row("bytes/token (val)", f"{bytes_per_token(tok, val):.3f} on {len(val.encode()):,} bytes"
                  if val else "no val text")
    table.add_row("file", f"{out} (sha256 {tok.sha256[:12]})")
    console.print(table)
    return 0


def _tokenizer_encode(args: argparse.Namespace) -> int:
    from rich.text import Text

    from .tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    ids = tok.encode(text)
    view = Text()
    for n, i in enumerate(ids):
        piece = tok.token_bytes(i).decode("utf-8", errors="backslashreplace")
        view.append(piece.replace("\n", "↵\n").replace("\t", "→"),
                    style=("black on #8ec07c", "black on #83a5d8")[n % 2])
    console.print(view)
    console.print(f"[dim]ids:[/] {ids}")
    n_bytes = len(text.encode("utf-8"))
    console.print(f"{len(ids)} tokens, {n_bytes} bytes ({n_bytes / max(1, len(ids)):.2f} bytes/token)")
    return 0


def _tokenizer_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .tokenizer import bytes_per_token, load_tokenizer, printable

    tok = load_tokenizer(args.tokenizer)
    table = Table(title=escape(f"tokenizer {args.tokenizer}"), show_header=False)
    table.add_row("kind", tok.kind)
    table.add_row("vocab size", f"{tok.vocab_size:,}")
    table.add_row("special tokens", ", ".join(f"{name} {i}" for name, i in tok.specials.items()))
    if tok.kind == "bpe":
        table.add_row("pre-split pattern", Text(tok.pattern))
    table.add_row("sha256", tok.sha256)
    if args.text:
        path = Path(args.text)
        if not path.is_file():
            raise MinigptError(f"--text {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MinigptError(f"--text {path}: not UTF-8 text") from None
        table.add_row("bytes/token", f"{bytes_per_token(tok, text):.3f} on {path.name}")
    console.print(table)
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    longest = sorted(ordinary, key=lambda i: (-len(tok.token_bytes(i)), i))[:args.top]
    console.print("[bold]longest tokens:[/] " + escape("  ".join(f"{i} {printable(tok.token_bytes(i))}" for i in longest)))
    if tok.kind == "bpe":
        merges = Table("id", "token", "merge of", title=f"first {args.top} merges")
        for i in [i for i in ordinary if len(tok.token_bytes(i)) > 1][:args.top]:
            parts = " + ".join(f"{p} {printable(tok.token_bytes(p))}" for p in tok.merge_parents(i))
            merges.add_row(str(i), Text(printable(tok.token_bytes(i))), Text(parts))
        console.print(merges)
    return 0



# ---------------------------------------------------------------------------------------------- shared flags


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="pydocs", help="text source: pydocs (built in), a .txt file, a folder, "
                   "a .jsonl/.parquet file with a 'text' field, or a Hub dataset id (default: pydocs)")
    p.add_argument("--tokenizer", default="auto", help="auto (train a BPE on the data), char, or a tokenizer "
                   "file (.bpe, .char, .tiktoken) (default: auto)")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size when --tokenizer auto "
                   "(default: 4096)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--model KIND, --preset/--depth for the GPT, and one flag per field of every model config (union)."""
    from .config import add_dataclass_args
    from .models import classes, kinds

    p.add_argument("--model", default=None, choices=kinds(), help="model family (default: gpt)")
    p.add_argument("--preset", default=None, help="GPT size preset: tiny, small, ..., gpt2 (default: tiny)")
    p.add_argument("--depth", type=int, default=None, help="GPT size dial: layers; width and heads follow")
    seen = {"kind", "vocab_size"}
    for kind in kinds():
        cls, _ = classes(kind)
        add_dataclass_args(p, cls, title=f"model ({kind})", exclude=tuple(seen))
        seen.update(_field_names(cls))


def _field_names(cls) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


def _model_config(args: argparse.Namespace, file_values: dict, base: dict | None = None):
    """The model config: preset/depth < --config file < flags; flags of another model kind are refused."""
    from .config import explicit, flag, resolve
    from .models import classes, kinds

    kind = args.model or file_values.get("kind") or (base or {}).get("kind") or "gpt"
    cls, _ = classes(kind)
    mine = set(_field_names(cls))
    others = {f for k in kinds() for f in _field_names(classes(k)[0])} - mine
    stray = sorted(f for f in vars(args) if f in others)
    if stray:
        raise MinigptError(f"{flag(stray[0])} does not apply to --model {kind}; drop it or choose another --model")
    overrides: dict = {}
    if kind == "gpt":
        from .models.gpt import PRESETS, scaled

        if args.preset and args.depth:
            raise MinigptError("--preset and --depth both set the model size; give one of them")
        if args.depth:
            overrides = scaled(args.depth)
        else:
            name = args.preset or ("tiny" if not base else None)
            if name and name not in PRESETS:
                raise MinigptError(f"--preset {name}: unknown; choose one of {', '.join(PRESETS)}")
            overrides = PRESETS[name] if name else {}
    elif args.preset or args.depth:
        raise MinigptError(f"--preset/--depth size the GPT only; size --model {kind} with its own flags")
    values = {**(base or {}), "kind": kind}
    values.setdefault("vocab_size", 256)  # replaced by the tokenizer's size
    return resolve(cls, args, file_values=file_values, base=values, overrides=overrides)


def _train_config(args: argparse.Namespace, file_values: dict, base: dict | None = None):
    from .config import resolve
    from .trainer import TrainConfig

    return resolve(TrainConfig, args, file_values=file_values, base=base)


def _config_file(args: argparse.Namespace) -> dict:
    from .config import load_config_file

    return load_config_file(args.config) if getattr(args, "config", None) else {}


# ---------------------------------------------------------------------------------------------- prepare, pretrain


@subcommand
def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize a text source into train/val token shards",
                       description="Tokenize a source into data/<name>/{train,val}.bin (memory-mapped) + meta.json.")
    _add_data_args(p)
    p.add_argument("--out", default=None, help="output folder (default: data/<source>-<tokenizer>)")
    p.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: by corpus size)")
    p.add_argument("--force", action="store_true", help="re-tokenize even when the shards are current")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from .data import open_source, prepare
    from .pretrain import resolve_tokenizer

    source = open_source(args.data)
    tokenizer = resolve_tokenizer(args.tokenizer, source, args.vocab_size)
    prepared = prepare(source, tokenizer, out=args.out, num_proc=args.num_proc, force=args.force)
    for split, s in prepared.meta["splits"].items():
        console.print(f"{split}: {s['tokens']:,} tokens, {s['bytes']:,} bytes "
                      f"({s['bytes'] / max(1, s['tokens']):.2f} bytes/token)")
    console.print(f"wrote {prepared.path}")
    return 0


@subcommand
def _add_pretrain(sub) -> None:
    from .config import add_dataclass_args
    from .trainer import TrainConfig

    p = sub.add_parser("pretrain", help="train a language model on next-token prediction",
                       description="Train a GPT (or a baseline) on a text source. With no arguments: the tiny GPT "
                                   "on the built-in pydocs corpus, a few minutes on 2 CPU cores.")
    _add_data_args(p)
    p.add_argument("--out", default=None, help="run folder (default: checkpoints/<source>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--config", default=None, help="a TOML or JSON file of config fields (flags override it)")
    p.add_argument("--sample-prompt", default="", help="prompt for the sample printed at each evaluation")
    _add_model_args(p)
    add_dataclass_args(p, TrainConfig, title="training")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from .checkpoint import read_run_info
    from .pretrain import pretrain

    file_values = _config_file(args)
    if args.resume:
        if not args.out:
            raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
        info = read_run_info(args.out)
        if not info:
            raise MinigptError(f"--resume: {args.out} holds no run (no run.json); check the path")
        result = pretrain(resume=True, out=args.out, train_config=_train_config(args, file_values, info.get("train")),
                          sample_prompt=args.sample_prompt)
    else:
        result = pretrain(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          model_config=_model_config(args, file_values), train_config=_train_config(args, file_values),
                          out=args.out, sample_prompt=args.sample_prompt)
    if result.interrupted:
        return 130
    val = result.metrics.get("val/loss")
    console.print(f"[green]done[/]: step {result.step}, val loss {val:.4f}, best {result.best_val:.4f} -> "
                  f"{result.run_dir}")
    return 0


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
