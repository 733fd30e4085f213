"""Inspection: attention heatmaps, the token-influence view, next-token probabilities and embedding neighbours.

Owns: `AttentionRecord` (the (n_layer, n_head, T, T) weights of one text, its tokens and where the prompt ends),
`capture` / `record` (one forward through the GPT's explicit attention path: ordinary generation never pays
for it), `stream_influence` (generation through `Engine.stream(capture_attention=True)`, one influence row per
token), and the renderers: a rich terminal heatmap and influence lines, a matplotlib PNG (every layer x head
as thumbnails plus the chosen head large, with token labels and a colour bar) and `save_html`, one
self-contained page (no network at all; minigpt/inspect_page.py).
Also `token_probs` (/probs: one forward over prompt + reply, exact). The matplotlib pictures (the attention grid
and the embedding map) and the embedding lookups live in inspect_plots.py. The chat commands /attn and /probs
register here (chat.COMMAND_MODULES lists this module).

The influence view is the seeds' picture: to predict token t the model's query is token t-1, so its row
weights[layer, head, t-1, :t] says how much each earlier token (t-1 itself included) fed that prediction. The
token being predicted is red, strong influence blue, weak grey; "strong" is sqrt(weight), the same gamma as
the heatmaps' colour scale, because rows spread over dozens of tokens (uniform over 64 keys is 0.016 each) and
a linear scale would paint every diffuse head white. Rows from the engine's KV-cached decoding equal those of
a full forward to ~1e-7 (tests/test_inspect.py), so the page saved after `inspect generate` recomputes them
with one full forward.

Costs on the tiny GPT (4x4x128, block 128; one thread of a shared 2-core machine): one capture over 128 tokens
~20 ms (an ordinary SDPA forward: 14 ms); the PNG 1-2 s (matplotlib); the page is written in ~10 ms (0.37 MB)
and redraws in ~25 ms in Chromium when the layer changes.

Labels: a byte-level BPE token that is part of a UTF-8 character shows its bytes (\\xe5); whitespace is made
visible on axes (space -> "␣", newline -> "↵"). Matplotlib needs a font with CJK glyphs for Chinese labels
(`fc-list :lang=zh`); without one, labels whose glyphs are missing are drawn as #id and a note says so.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .common import MinigptError
from .inspect_page import save_html  # the HTML page (its own module: ~250 lines of inline JS and CSS)

Head = int | str  # a head index, or "mean" (the average over heads)
WEAK, STRONG, CURRENT = (200, 200, 200), (21, 80, 200), "#d32f2f"  # grey, blue, red (the seeds' colours)
BLUES = ((247, 251, 255), (107, 174, 214), (8, 48, 107))  # 0, 0.5, 1 of the heatmap scale (matplotlib Blues)


# ---------------------------------------------------------------------------------------------- labels


def token_text(tokenizer, token_id: int) -> str:
    """The token's own text: special tokens by name, bytes that are not whole UTF-8 characters as \\xNN."""
    if tokenizer.is_special(token_id):
        return next((name for name, i in tokenizer.specials.items() if i == token_id), f"<{token_id}>")
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


def visible(text: str) -> str:
    """Whitespace made visible for axis labels and one-line views."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "␍") or "∅"


# ---------------------------------------------------------------------------------------------- capture


def _no_attention(model) -> MinigptError:
    kind = getattr(getattr(model, "config", None), "kind", type(model).__name__)
    return MinigptError(f"this {kind} model has no attention to inspect (only GPT checkpoints do); "
                        f"`minigpt inspect embeddings` works for every kind")


def require_attention(model) -> None:
    """A one-line error unless the model records attention weights."""
    if not has_attention(model):
        raise _no_attention(model)


def has_attention(model) -> bool:
    """Whether `model.features(idx, attention=[])` records weights (a one-token probe forward)."""
    ref = next(model.parameters())
    found: list = []
    with torch.inference_mode():
        model.features(torch.zeros(1, 1, dtype=torch.long, device=ref.device), attention=found)
    return bool(found)


def capture(model, ids: Sequence[int]) -> torch.Tensor:
    """(n_layer, n_head, T, T) float32 attention weights of one forward over `ids` (explicit path, eval mode):
    row q is what token q attends to, zero above the diagonal, each row summing to 1."""
    ref = next(model.parameters())
    found: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model.features(torch.tensor([list(ids)], dtype=torch.long, device=ref.device), attention=found)
    finally:
        model.train(was_training)
    if not found:
        raise _no_attention(model)
    return torch.stack([a[0].float() for a in found]).cpu()  # (L, H, T, T)


def check_view(n_layer: int, n_head: int, layer: int, head: Head) -> tuple[int, Head]:
    """Normalise a layer (negative counts from the end) and a head; a bad one is a one-line error."""
    L, H = n_layer, n_head
    if not isinstance(layer, int) or not -L <= layer < L:
        raise MinigptError(f"--layer {layer}: this model has {L} layers (0..{L - 1}, or -1 for the last)")
    if head != "mean" and (not isinstance(head, int) or not -H <= head < H):
        raise MinigptError(f"--head {head}: this model has {H} heads per layer (0..{H - 1}, or mean)")
    return layer % L, head if head == "mean" else head % H


@dataclass
class AttentionRecord:
    """The attention of one text. `weights[l, h, q, k]`: how much token q attends to token k in layer l, head h.

    `prompt_len`: tokens [0, prompt_len) were given, the rest generated. `start`: the position of ids[0] in
    the whole text (> 0 when the text outgrew the model's context and only its last block_size tokens fit)."""

    ids: list[int]
    texts: list[str]  # token_text of each id
    weights: torch.Tensor  # (n_layer, n_head, T, T) float32
    prompt_len: int
    start: int = 0

    @property
    def n_layer(self) -> int:
        return self.weights.size(0)

    @property
    def n_head(self) -> int:
        return self.weights.size(1)

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, layer: int, head: Head) -> tuple[int, Head]:
        return check_view(self.n_layer, self.n_head, layer, head)

    def head(self, layer: int, head: Head) -> torch.Tensor:
        """(T, T) weights of one head, or their mean over the layer's heads."""
        layer, head = self.check(layer, head)
        w = self.weights[layer]
        return w.mean(0) if head == "mean" else w[head]

    def influence(self, t: int, layer: int, head: Head) -> torch.Tensor:
        """(t,) how much each earlier token fed the prediction of token t: the row of its query, token t-1."""
        if not 1 <= t < len(self):
            raise MinigptError(f"token {t} has no influence row (tokens 1..{len(self) - 1} do)")
        return self.head(layer, head)[t - 1, :t]


def record(model, tokenizer, ids: Sequence[int], prompt_len: int | None = None) -> AttentionRecord:
    """Capture the attention of `ids`; when they outgrow the context, of their last block_size tokens."""
    ids = [int(i) for i in ids]
    if not ids:
        raise MinigptError("nothing to inspect: the text has no tokens")
    start = max(0, len(ids) - int(model.config.block_size))
    kept = ids[start:]
    prompt = len(ids) if prompt_len is None else prompt_len
    return AttentionRecord(kept, [token_text(tokenizer, i) for i in kept], capture(model, kept),
                           max(0, prompt - start), start)


def parse_head(value: str | int) -> Head:
    """'mean' or an integer (argparse type for --head)."""
    if isinstance(value, int) or value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise MinigptError(f"--head {value}: give a head number or mean") from None


# ---------------------------------------------------------------------------------------------- colours


def _mix(stops: Sequence[tuple[int, int, int]], x: float) -> tuple[int, int, int]:
    x = min(1.0, max(0.0, x)) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    f = x - i
    return tuple(round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1]))  # type: ignore[return-value]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def heat_style(weight: float) -> str:
    """rich style of a heatmap cell: Blues over sqrt(weight)."""
    x = math.sqrt(max(0.0, weight))
    return f"{'black' if x < 0.55 else 'white'} on {_hex(_mix(BLUES, x))}"


def influence_style(weight: float) -> str:
    """rich style of an earlier token in the influence view: grey (weak) to blue (strong), over sqrt(weight)."""
    x = math.sqrt(max(0.0, weight))
    return f"{'black' if x < 0.5 else 'white'} on {_hex(_mix((WEAK, STRONG), x))}"


# ---------------------------------------------------------------------------------------------- terminal


def heatmap_text(rec: AttentionRecord, layer: int, head: Head, *, window: int | None = None,
                 width: int = 100) -> "Any":
    """A rich Text: query rows x key columns of the last `window` tokens (default: as many as fit `width`),
    each cell the weight in % on a Blues background; column "<" holds what went to tokens left of the window."""
    from rich.cells import cell_len
    from rich.text import Text

    layer, head = rec.check(layer, head)
    w = rec.head(layer, head)
    T = len(rec)
    label_w = 14
    fit = max(4, (width - label_w - 6) // 3)
    n = min(T, window or fit)
    lo = T - n
    out = Text()

    def clip(s: str, cells: int, right: bool = False) -> str:
        while cell_len(s) > cells:
            s = s[:-1]
        pad = " " * (cells - cell_len(s))
        return pad + s if right else s + pad

    out.append(" " * label_w + ("  < " if lo else ""), style="dim")
    for k in range(lo, T):
        out.append(clip(visible(rec.texts[k]), 3, right=True), style="bold")
    out.append("\n")
    for q in range(lo, T):
        generated = q >= rec.prompt_len
        out.append(f"{rec.start + q:>4} " + clip(visible(rec.texts[q]), label_w - 5),
                   style="bold green" if generated else "bold")
        if lo:
            rest = float(w[q, :lo].sum())
            out.append(f"{round(100 * rest):3d} " if rest >= 0.005 else "  · ", style="dim")
        for k in range(lo, T):
            if k > q:
                out.append("   ")
                continue
            v = float(w[q, k])
            p = round(100 * v)
            out.append(f"{p:3d}" if p else "  ·", style=heat_style(v))
        out.append("\n")
    out.append(" weight ", style="dim")
    for x in (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0):
        out.append(f"{round(100 * x):3d} ", style=heat_style(x))
    head_name = "mean of heads" if head == "mean" else f"head {head}"
    shown = f"tokens {rec.start + lo}..{rec.start + T - 1}" + (f" of {rec.start + T}" if lo or rec.start else "")
    out.append(f"  % · colour ~ sqrt(weight) · layer {layer}, {head_name} · rows attend to columns · {shown}",
               style="dim")
    if lo:
        out.append(f"\n column < = attention to the {lo} earlier tokens (--window to widen)", style="dim")
    return out


def top_keys(texts: Sequence[str], row: torch.Tensor, key_start: int = 0, k: int = 3, offset: int = 0) -> str:
    """'12:"o" 41% · 3:"h" 22%': the k strongest keys of an attention row, each with its position (plus
    `offset`): the view's text fallback where colours do not show."""
    values, where = torch.topk(row, min(k, row.numel()))
    return " · ".join(f"{offset + key_start + int(i)}:{json.dumps(texts[key_start + int(i)], ensure_ascii=False)} "
                      f"{100 * float(v):.0f}%" for v, i in zip(values, where))


def influence_line(texts: Sequence[str], row: torch.Tensor, target: str, *, key_start: int = 0,
                   window: int = 48, label: str = "", offset: int = 0) -> "Any":
    """One step of the influence view: the (up to `window`) tokens before the target, coloured by `row`
    (their weights; row[j] belongs to texts[key_start + j]), then the target in red, then the top keys.
    `offset`: the position of texts[0] in the whole text (for the positions shown)."""
    from rich.text import Text

    n = row.numel()
    lo = max(0, n - window)
    out = Text(label)
    if lo or key_start or offset:
        out.append("… ", style="dim")
    for j in range(lo, n):
        out.append(texts[key_start + j].replace("\n", "↵"), style=influence_style(float(row[j])))
    out.append(target.replace("\n", "↵") or " ", style=f"bold white on {CURRENT}")
    out.append("   " + top_keys(texts, row, key_start, offset=offset), style="dim")
    return out


def influence_legend() -> "Any":
    from rich.text import Text

    out = Text("colour: ", style="dim")
    out.append(" predicted token ", style=f"bold white on {CURRENT}")
    out.append(" ")
    for x in (1.0, 0.25, 0.05, 0.0):
        out.append(f" {100 * x:g}% ", style=influence_style(x))
    out.append("  earlier tokens by the attention of the query that predicted it (sqrt scale); "
               "then its 3 strongest keys as position:token", style="dim")
    return out


def influence_view(rec: AttentionRecord, layer: int, head: Head, *, window: int = 48,
                   targets: Sequence[int] | None = None) -> "Any":
    """Influence lines for `targets` (default: the generated tokens, else every token after the first)."""
    from rich.console import Group

    layer, head = rec.check(layer, head)
    if targets is None:
        targets = range(max(1, rec.prompt_len), len(rec)) if rec.prompt_len < len(rec) else range(1, len(rec))
    lines = [influence_line(rec.texts, rec.influence(t, layer, head), rec.texts[t], window=window,
                            label=f"{rec.start + t:>4} ", offset=rec.start) for t in targets]
    return Group(*lines, influence_legend())


# ---------------------------------------------------------------------------------------------- generation


@dataclass
class InfluenceStep:
    """One generated token and the attention row that predicted it (from the engine's KV-cached decoding)."""

    token_id: int
    text: str  # token_text(token_id)
    logprob: float
    key_start: int  # position of the row's first key in prompt + generated tokens (> 0 after a slide)
    rows: torch.Tensor  # (n_layer, n_head, n_keys) float32: the query row of the previous token, every layer

    def row(self, layer: int, head: Head) -> torch.Tensor:
        w = self.rows[layer]
        return w.mean(0) if head == "mean" else w[head]


def stream_influence(engine, prompt_ids: Sequence[int], config=None, **kwargs: Any) -> Iterator[InfluenceStep]:
    """Generate through `engine.stream(..., capture_attention=True)`, one InfluenceStep per token."""
    require_attention(engine.model)
    n = len(prompt_ids)
    for ev in engine.stream(prompt_ids, config, capture_attention=True, **kwargs):
        rows = torch.stack([a.float() for a in ev.attention]).cpu()  # (L, H, n_keys)
        yield InfluenceStep(ev.token_id, token_text(engine.tokenizer, ev.token_id), ev.logprob,
                            n + ev.index - rows.size(-1), rows)


# ---------------------------------------------------------------------------------------------- probabilities


@dataclass
class TokenProb:
    token_id: int
    text: str
    prob: float
    alternatives: list[tuple[int, str, float]]  # the top-k tokens of the same distribution (id, text, p)


def token_probs(model, tokenizer, prompt_ids: Sequence[int], reply_ids: Sequence[int], k: int = 5) -> list[TokenProb]:
    """p(token) and the top-k alternatives at each reply position, from one forward over prompt + reply (the
    last block_size tokens): exactly the distributions the reply was sampled from, before any processor."""
    ids = [int(i) for i in prompt_ids] + [int(i) for i in reply_ids]
    ids = ids[max(0, len(ids) - int(model.config.block_size) - 1):]
    n = min(len(reply_ids), len(ids) - 1)
    if n <= 0:
        return []
    ref = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.tensor([ids[:-1]], dtype=torch.long, device=ref.device))[0, -n:]  # (n, V)
    finally:
        model.train(was_training)
    logp = torch.log_softmax(logits.float()[:, :tokenizer.vocab_size], dim=-1).cpu()
    top_p, top_i = torch.topk(logp, min(k, logp.size(-1)), dim=-1)
    out = []
    for j, t in enumerate(ids[-n:]):
        alts = [(int(i), token_text(tokenizer, int(i)), math.exp(float(p))) for p, i in zip(top_p[j], top_i[j])]
        out.append(TokenProb(t, token_text(tokenizer, t), math.exp(float(logp[j, t])), alts))
    return out


def probs_table(rows: Sequence[TokenProb], title: str = "") -> "Any":
    from rich.table import Table
    from rich.text import Text

    table = Table("#", "token", "p", "top alternatives", title=title or None, box=None, pad_edge=False)
    for j, r in enumerate(rows):
        alts = Text()
        for n, (i, text, p) in enumerate(r.alternatives):
            alts.append(("" if not n else " · ") + json.dumps(text, ensure_ascii=False) + f" {100 * p:.1f}%",
                        style="bold" if i == r.token_id else "")
        colour = "green" if r.prob >= 0.5 else "yellow" if r.prob >= 0.1 else "red"
        table.add_row(str(j), Text(json.dumps(r.text, ensure_ascii=False)), Text(f"{100 * r.prob:.1f}%", colour),
                      alts)
    return table


# ---------------------------------------------------------------------------------------------- chat commands


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
    layer = int(numbers[0]) if numbers and numbers[0] != "mean" else n_layer - 1
    head: Head = parse_head(numbers[1]) if len(numbers) > 1 else "mean"
    if numbers and numbers[0] == "mean":
        head = "mean"
    return layer, head, heatmap, html_path


def _register_chat_commands() -> None:
    from .chat import command

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
        if arg and not arg.isdigit():
            raise MinigptError("usage: /probs [K] (K alternatives per token, default 5)")
        model = session.engine.model
        rows = token_probs(model, session.tokenizer, reply.prompt_ids, reply.ids, int(arg or 5))
        if len(reply.prompt_ids) + len(reply.ids) > model.config.block_size + 1:
            ctx.io.note(f"the text outgrew the {model.config.block_size}-token context: these are the model's "
                        f"probabilities over the last {model.config.block_size} tokens")
        total = sum(math.log(max(r.prob, 1e-300)) for r in rows)
        ctx.io.show(probs_table(rows))
        ctx.io.note(f"{len(rows)} tokens · mean log-prob {total / max(1, len(rows)):.3f} · perplexity "
                    f"{math.exp(-total / max(1, len(rows))):.2f}")


_register_chat_commands()


# ---------------------------------------------------------------------------------------------- CLI glue


def describe(ckpt) -> str:
    """'checkpoint …/step_000600 · gpt 4x4x128, block 128 · stage pretrain' for titles."""
    c = ckpt.model.config
    shape = f"{c.n_layer}x{c.n_head}x{c.n_embd}" if hasattr(c, "n_head") else ""
    return f"{ckpt.path} · {c.kind} {shape}, block {c.block_size} · stage {ckpt.config.get('stage', '?')}"


def encode_text(tokenizer, text: str, bos: bool = True) -> list[int]:
    return ([tokenizer.bos_id] if bos else []) + tokenizer.encode(text)


def print_steps(steps: Iterator[InfluenceStep], prompt_ids: Sequence[int], tokenizer, layer: int, head: Head, *,
                window: int, show: Callable[[Any], None]) -> list[InfluenceStep]:
    """Show each generated token as it comes: its context coloured by influence, itself in red."""
    texts = [token_text(tokenizer, i) for i in prompt_ids]
    done = []
    for n, step in enumerate(steps):
        w = step.row(layer, head)
        show(influence_line(texts, w, step.text, key_start=step.key_start, window=window,
                            label=f"{n:>3} p={math.exp(step.logprob):4.2f} "))
        texts.append(step.text)
        done.append(step)
    return done
