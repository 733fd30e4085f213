"""`minigpt tokenizer train|encode|info`: learn a byte-level BPE (or characters), see how text splits, describe one."""
from __future__ import annotations

import argparse
import os
import sys

from ..common import MinigptError, console
from .args import DATA_HELP, at_least, note_unknown


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer, encode text with one, or describe one (train, "
                       "encode, info)",
                       description="Byte-level BPE (or characters) trained on your text; encoding runs in tiktoken.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="learn a tokenizer from a text source",
                           description="Learn a byte-level BPE (or a character vocabulary) from a text source's "
                                       "train split and report bytes/token on its val split.")
    t.add_argument("--data", default="pydocs", help=f"{DATA_HELP} (default: pydocs)")
    t.add_argument("--vocab-size", type=int, default=4096,
                   help="all ids, the 5 special tokens included; = the model's embedding size (default: 4096)")
    t.add_argument("--kind", choices=("bpe", "char"), default="bpe",
                   help="bpe, or char: one id per character, for nanoGPT-style baselines (default: bpe)")
    t.add_argument("--pattern", default="minigpt", help="pre-split regex, or a name: minigpt (GPT-4's with one "
                   "chunk per Han character), gpt4, gpt2 (default: minigpt)")
    t.add_argument("--out", default=None, help="file to write (default: the cache file that --tokenizer auto "
                   "looks for, data/tokenizers/<source>-bpe<vocab>-<hash>.bpe, or <source>-char-<hash>.char)")
    t.set_defaults(func=_tokenizer_train)
    e = actions.add_parser("encode", help="show how a text splits into tokens (coloured, with ids)")
    e.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    e.add_argument("text", help="the text to encode ('-' reads standard input)")
    e.set_defaults(func=_tokenizer_encode)
    i = actions.add_parser("info", help="vocabulary size, special tokens, compression, longest tokens, merges")
    i.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    i.add_argument("--text", default=None, help="a UTF-8 text file to measure bytes/token on")
    i.add_argument("--top", type=at_least(1), default=10, help="how many longest tokens and first merges (default: 10)")
    i.set_defaults(func=_tokenizer_info)


def _tokenizer_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..text.shards import tokenizer_cache_path
    from ..text.sources import open_source
    from ..text.bpe import resolve_pattern
    from ..text.tokenizer import bytes_per_token, train_bpe, train_char

    pattern = resolve_pattern(args.pattern)
    source = open_source(args.data)
    out = Path(args.out) if args.out else tokenizer_cache_path(source, args.vocab_size, args.kind)
    corpus = {f.resolve() for f in (*source.files, *([source.path] if source.path else []))}
    if out.is_dir():
        raise MinigptError(f"--out {out}: is a folder; give a file name, e.g. --out {out / 'my.bpe'}")
    if out.resolve() in corpus:
        raise MinigptError(f"--out {out}: that is the corpus the tokenizer learns from (--data {args.data}); "
                           "write the tokenizer to another file")
    if not args.out and args.kind == "bpe" and args.pattern != "minigpt":  # not what --tokenizer auto would use
        out = out.with_name(f"{out.stem}-{args.pattern if args.pattern in ('gpt2', 'gpt4') else 'custom'}.bpe")
    if note := source.newline_note():
        console.print(escape(note), style="yellow", soft_wrap=True)
    start = time.perf_counter()
    if args.kind == "char":  # like nanoGPT (and `--tokenizer char`): every character of both splits
        tok = train_char(doc for split in ("train", "val") for doc in source.documents(split))
    else:
        tok = train_bpe(source.documents("train"), args.vocab_size, pattern=pattern)
    elapsed = time.perf_counter() - start
    tok.save(out)
    val = "".join(source.documents("val"))
    table = Table(title=escape(f"{tok.kind} tokenizer trained on {source.spec}"), show_header=False)
    table.add_row("vocab size", f"{tok.vocab_size:,} (special tokens {min(tok.specials.values())}.."
                                f"{max(tok.specials.values())})")
    table.add_row("training time", f"{elapsed:.1f} s")
    table.add_row("bytes/token (val)", f"{bytes_per_token(tok, val):.3f} on {len(val.encode()):,} bytes"
                  if val else "no val text")
    table.add_row("file", Text(f"{out} (sha256 {tok.sha256[:12]})"))
    console.print(table)
    return 0


def _tokenizer_encode(args: argparse.Namespace) -> int:
    from rich.text import Text

    from ..text.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    text = utf8_text(sys.stdin.buffer.read() if args.text == "-" else os.fsencode(args.text),
                     "standard input" if args.text == "-" else "the text")
    note_unknown(tok, text)
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


def utf8_text(data: bytes, what: str) -> str:
    """Bytes a user gave (an argument, standard input) as text, or one line naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinigptError(f"{what} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); give UTF-8 "
                           "text, e.g. convert it with `iconv -t UTF-8`") from None


def _tokenizer_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..text.tokenizer import bytes_per_token, load_tokenizer, printable

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
        table.add_row("bytes/token", Text(f"{bytes_per_token(tok, text):.3f} on {path.name}"))
    console.print(table)
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    if tok.kind == "char":
        console.print("[bold]characters:[/] " + escape(printable(tok.chars.encode("utf-8", "surrogatepass"))))
        return 0
    longest = Table("id", "bytes", "token", title=f"{args.top} longest tokens")
    for i in sorted(ordinary, key=lambda i: (-len(tok.token_bytes(i)), i))[:args.top]:
        shown = printable(tok.token_bytes(i))
        longest.add_row(str(i), str(len(tok.token_bytes(i))), Text(shown if len(shown) < 60 else shown[:57] + "..."))
    console.print(longest)
    merges = Table("id", "token", "merge of", title=f"first {args.top} merges")
    for i in [i for i in ordinary if len(tok.token_bytes(i)) > 1][:args.top]:
        parts = " + ".join(f"{p} {printable(tok.token_bytes(p))}" for p in tok.merge_parents(i))
        merges.add_row(str(i), Text(printable(tok.token_bytes(i))), Text(parts))
    console.print(merges)
    return 0
