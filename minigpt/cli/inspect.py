"""`minigpt inspect attention | generate | embeddings`: look inside a checkpoint (terminal, PNG, HTML page)."""
from __future__ import annotations

import argparse
import sys

from ..common import MinigptError, console
from .args import (add_checkpoint, add_device, add_sampling, at_least, file_path, load, note_unknown,
                   sampling_config)


def register(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a checkpoint: attention heatmaps, token influence, embeddings",
                       description="Attention of a GPT checkpoint in the terminal, as a PNG or as a self-contained "
                                   "HTML page; the token-influence view of a generation; embedding neighbours.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def view_args(q: argparse.ArgumentParser) -> None:  # the same view flags for attention and generate
        q.add_argument("--layer", type=int, default=-1, help="layer to show; negative counts from the end "
                       "(default: -1, the last)")
        q.add_argument("--head", default="mean", help="head number, or mean: the average over the layer's heads "
                       "(default: mean)")
        q.add_argument("--window", type=at_least(1), default=None, help="show the last N tokens (default: what "
                       "fits the terminal; 48 in the PNG, in the influence view)")
        q.add_argument("--no-bos", dest="bos", action="store_false", help="do not start the text with <|bos|>")
        q.add_argument("--html", type=file_path, default=None, metavar="FILE", help="also write a self-contained "
                       "HTML page (pick layer and head, hover tokens, the influence view)")
        q.add_argument("--png", type=file_path, default=None, metavar="FILE", help="also write every layer x head "
                       "as thumbnails and the chosen head large (the last --window tokens) to a PNG")

    a = actions.add_parser("attention", help="a query x key heatmap of a text (terminal, --png, --html)",
                           description="Run the text through the checkpoint and show one layer's head (or the "
                                       "mean of its heads) as a query x key heatmap.")
    add_checkpoint(a)
    add_device(a)
    a.add_argument("text", help="the text ('-' reads standard input)")
    view_args(a)
    a.add_argument("--view", choices=("heatmap", "influence"), default="heatmap",
                   help="heatmap, or influence: each token after the first with the earlier tokens coloured by "
                        "how much its prediction attended to them (default: heatmap)")
    a.set_defaults(func=_inspect_attention)
    g = actions.add_parser("generate", help="generate, showing what each new token attended to",
                           description="Generate through the engine with attention capture and show, for each "
                                       "new token, the earlier tokens coloured by how much its prediction "
                                       "attended to them (red: the new token; blue: strong; grey: weak).")
    g.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty, from <|bos|>)")
    add_sampling(g, shown={"max_new_tokens": 32})  # one line per token: a shorter default
    view_args(g)
    g.set_defaults(func=_inspect_generate)
    e = actions.add_parser("embeddings", help="nearest tokens by embedding cosine; --png: a 2-D PCA map",
                           description="Token embeddings of any checkpoint with an embedding table.")
    add_checkpoint(e)
    add_device(e)
    e.add_argument("--token", default=None, metavar="WORD", help="a token (its text, or #ID) to find neighbours of")
    e.add_argument("--top", type=at_least(1), default=10, help="how many neighbours (default: 10)")
    e.add_argument("--png", type=file_path, default=None, metavar="FILE",
                   help="write a labelled PCA map of frequent tokens")
    e.add_argument("--count", type=at_least(2), default=200, help="tokens in the PCA map (default: 200)")
    e.set_defaults(func=_inspect_embeddings)


def _inspect_attention(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ..lens import attention as insp
    from ..lens import plots, views
    from ..lens.page import save_html

    ckpt = load(args)
    text = sys.stdin.read() if args.text == "-" else args.text
    note_unknown(ckpt.tokenizer, text)
    rec = insp.record(ckpt.model, ckpt.tokenizer, insp.encode_text(ckpt.tokenizer, text, args.bos))
    layer, head = rec.check(args.layer, insp.parse_head(args.head))
    if args.view == "influence":
        console.print(views.influence_view(rec, layer, head, window=args.window or 48))
    else:
        console.print(views.heatmap_text(rec, layer, head, window=args.window, width=console.width))
    if rec.start:
        console.print(f"[dim]the text is longer than the {len(rec)}-token context: its last {len(rec)} tokens "
                      f"were run[/]")
    title = f"attention · {insp.describe(ckpt)}"
    if args.png:
        for note in plots.save_png(rec, args.png, layer, head, window=args.window or 48, title=title):
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"wrote {escape(args.png)}")
    if args.html:
        save_html(rec, args.html, layer=layer, head=head, title="minigpt attention", info=insp.describe(ckpt))
        console.print(f"wrote {escape(args.html)}")
    return 0


def _inspect_generate(args: argparse.Namespace) -> int:
    import random

    from rich.markup import escape

    from ..lens import attention as insp
    from ..lens import plots, views
    from ..lens.page import save_html
    from ..infer.engine import Engine

    config = sampling_config(args)
    if config.seed is None and not config.greedy:
        config = config.with_overrides(seed=random.SystemRandom().randrange(2**31))
    ckpt = load(args)
    model, tok = ckpt.model, ckpt.tokenizer
    insp.require_attention(model)
    c = model.config
    layer, head = insp.check_view(c.n_layer, c.n_head, args.layer, insp.parse_head(args.head))
    note_unknown(tok, args.prompt)
    ids = insp.encode_text(tok, args.prompt, args.bos)
    console.print(f"[dim]{escape(insp.describe(ckpt))} · layer {layer}, "
                  f"{'mean of heads' if head == 'mean' else f'head {head}'}[/]")
    steps = views.print_steps(insp.stream_influence(Engine(model, tok), ids, config, use_cache=args.use_cache),
                             ids, tok, layer, head, window=args.window or 48, show=console.print)
    console.print(views.influence_legend())
    console.print(f"[dim]{len(steps)} tokens" + (f" · seed {config.seed}" if config.seed is not None else "")
                  + "[/]")
    if args.html or args.png:  # the rows decoding used, as the lines above show them
        rec = insp.generation_record(model, tok, ids, steps)
        if args.png:
            for note in plots.save_png(rec, args.png, layer, head, window=args.window or 48,
                                      title=f"generation · {insp.describe(ckpt)}"):
                console.print(f"[yellow]note:[/] {escape(note)}")
            console.print(f"wrote {escape(args.png)}")
        if args.html:
            save_html(rec, args.html, layer=layer, head=head, title="minigpt generation",
                           info=insp.describe(ckpt))
            console.print(f"wrote {escape(args.html)}")
    return 0


def _inspect_embeddings(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..lens import attention as insp
    from ..lens import plots

    if not args.token and not args.png:
        raise MinigptError("give --token WORD (nearest tokens) and/or --png FILE (a PCA map)")
    ckpt = load(args)
    model, tok = ckpt.model, ckpt.tokenizer
    marked: list[int] = []
    if args.token:
        token_id, note = plots.find_token(tok, args.token)
        if note:
            console.print(f"[dim]{escape(note)}[/]")
        rows = plots.nearest_tokens(model, tok, token_id, args.top)
        table = Table("#", "id", "token", "cosine", title=escape(f"nearest to {insp.token_text(tok, token_id)!r} "
                                                                  f"(id {token_id})"))
        for n, (i, text, cos) in enumerate(rows, 1):
            table.add_row(str(n), str(i), Text(repr(text)), f"{cos:+.3f}")
        console.print(table)
        marked = [token_id] + [i for i, _, _ in rows]
    if args.png:
        for note in plots.save_embedding_png(model, tok, args.png, count=args.count, highlight=marked,
                                            title=f"token embeddings · {insp.describe(ckpt)}"):
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"wrote {escape(args.png)}")
    return 0
