"""The chat's window into the model: /attn (what the last reply attended to) and /probs (its token probabilities).

A table of its own (`LENS`), merged with the built-in commands by chat/app.py, so `minigpt inspect` never loads
the chat UI and the chat loads the lens only through these two commands.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..common import MinigptError
from ..lens.attention import Head, parse_head, record, token_probs
from ..lens.page import save_html
from ..lens.views import heatmap_text, influence_view, probs_table
from .loop import CommandTable

LENS = CommandTable()
command = LENS.command


def _parse_view_args(arg: str, n_layer: int) -> tuple[int, Head, bool, str | None]:
    """'/attn [map] [LAYER] [HEAD|mean] [html FILE]' -> (layer, head, heatmap?, html path)."""
    words = arg.split()
    heatmap, html_path, numbers = False, None, []
    while words:
        w = words.pop(0)
        if w in ("map", "heatmap"):
            heatmap = True
        elif w == "html":
            if not words:
                raise MinigptError("usage: /attn html FILE")
            html_path = words.pop(0)
        elif w == "mean" or w.lstrip("-").isdigit():
            numbers.append(w)
        else:
            raise MinigptError(f"/attn: unexpected {w!r}; usage: /attn [map] [LAYER] [HEAD|mean] [html FILE]")
    if len(numbers) > 2 or (numbers[:1] == ["mean"] and len(numbers) > 1):
        raise MinigptError(f"/attn: {' '.join(numbers)!r} is too many numbers: give LAYER, then HEAD or mean "
                           f"(e.g. /attn {n_layer - 1} mean)")
    layer = int(numbers[0]) if numbers and numbers[0] != "mean" else n_layer - 1
    head: Head = parse_head(numbers[1]) if len(numbers) > 1 else "mean"
    if numbers and numbers[0] == "mean":
        head = "mean"
    return layer, head, heatmap, html_path


@command("attn", "how the last reply's tokens attended to the text before them (layer, head or mean; "
         "map: the heatmap; html FILE: the page)", usage="/attn [map] [L] [H|mean]", complete=("map", "html"))
def _attn(ctx, arg: str) -> None:
    session, reply = ctx.session, ctx.session.last
    if reply is None or not reply.ids:
        raise MinigptError("no reply yet: /attn shows how the last reply's tokens attended")
    model = session.engine.model
    rec = record(model, session.tokenizer, reply.prompt_ids + reply.ids, prompt_len=len(reply.prompt_ids))
    layer, head, heatmap, html_path = _parse_view_args(arg, rec.n_layer)
    layer, head = rec.check(layer, head)
    if html_path:
        ctx.may_write(Path(html_path).expanduser())
        path = save_html(rec, Path(html_path).expanduser(), layer=layer, head=head,
                         title="minigpt attention · last reply")
        ctx.io.note(f"wrote {path}")
        return
    width = getattr(getattr(ctx.io, "console", None), "width", 100)  # the terminal's, or 100 for plain text
    ctx.io.show(heatmap_text(rec, layer, head, width=width) if heatmap
                else influence_view(rec, layer, head, window=40))
    if rec.start:
        ctx.io.note(f"the text outgrew the {len(rec)}-token context: the last {len(rec)} tokens were recomputed")

@command("probs", "each token of the last reply with its probability and the top alternatives",
         usage="/probs [K]")
def _probs(ctx, arg: str) -> None:
    session, reply = ctx.session, ctx.session.last
    if reply is None or not reply.ids:
        raise MinigptError("no reply yet: /probs shows the last reply's token probabilities")
    if arg and not (arg.isdigit() and 1 <= int(arg) <= 50):
        raise MinigptError("usage: /probs [K] (K alternatives per token, 1 to 50, default 5)")
    model = session.engine.model
    rows = token_probs(model, session.tokenizer, reply.prompt_ids, reply.ids, int(arg or 5))
    if len(reply.prompt_ids) + len(reply.ids) > model.config.block_size + 1:
        ctx.io.note(f"the text outgrew the {model.config.block_size}-token context: these are the model's "
                    f"probabilities over the last {model.config.block_size} tokens")
    total = sum(math.log(max(r.prob, 1e-300)) for r in rows)
    ctx.io.show(probs_table(rows))
    ctx.io.note(f"{len(rows)} tokens · mean log-prob {total / max(1, len(rows)):.3f} · perplexity "
                f"{math.exp(-total / max(1, len(rows))):.2f}")
