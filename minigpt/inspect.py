"""Inspection: attention heatmaps, the token-influence view, next-token probabilities and embedding neighbours.

Owns: `AttentionRecord` (the (n_layer, n_head, T, T) weights of one text, its tokens and where the prompt ends),
`capture` / `record` (one forward through the GPT's explicit attention path: ordinary generation never pays
for it), `stream_influence` (generation through `Engine.stream(capture_attention=True)`, one influence row per
token), and the renderers: a rich terminal heatmap and influence lines, a matplotlib PNG (every layer x head
as thumbnails plus the chosen head large, with token labels and a colour bar) and `save_html`, one
self-contained page (no network at all; minigpt/inspect_page.py).
Also `token_probs` (/probs: one forward over prompt + reply, exact) and `nearest_tokens` / `save_embedding_png`
(cosine neighbours and a 2-D PCA of the token embedding table). The chat commands /attn and /probs register
here (chat.COMMAND_MODULES lists this module).

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
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .common import MinigptError, atomic_write_bytes
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


# ---------------------------------------------------------------------------------------------- PNG


_CJK_NAMES = ("Noto Sans CJK", "Noto Serif CJK", "Source Han", "WenQuanYi", "Droid Sans Fallback", "AR PL",
              "SimHei", "Microsoft YaHei", "PingFang", "Hiragino", "Heiti", "Songti", "Arial Unicode")


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of an installed font with Chinese glyphs (fc-list :lang=zh, then matplotlib's list)."""
    from matplotlib import font_manager

    if shutil.which("fc-list"):
        try:
            found = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            found = ""
        for line in found.splitlines():
            path = line.split(":")[0].strip()
            if path:
                try:
                    font_manager.fontManager.addfont(path)
                    return font_manager.FontProperties(fname=path).get_name()
                except (OSError, RuntimeError, ValueError):
                    continue
    for f in font_manager.fontManager.ttflist:
        if any(name.lower() in f.name.lower() for name in _CJK_NAMES):
            return f.name
    return None


class _Labeller:
    """Axis labels that the fonts can draw; a label with a missing glyph becomes #id (and is counted)."""

    def __init__(self):
        from matplotlib import font_manager
        from matplotlib.ft2font import FT2Font

        self.cjk = cjk_font()
        self.families = ["DejaVu Sans"] + ([self.cjk] if self.cjk else [])
        self.covered: set[int] = set()
        for fam in self.families:
            try:
                path = font_manager.findfont(font_manager.FontProperties(family=fam), fallback_to_default=False)
                self.covered |= set(FT2Font(path).get_charmap())
            except (ValueError, RuntimeError, OSError):
                continue
        self.replaced = 0

    def __call__(self, text: str, token_id: int) -> str:
        label = visible(text)
        if all(ord(ch) in self.covered for ch in label):
            return label
        self.replaced += 1
        return f"#{token_id}"

    def note(self) -> str | None:
        if not self.replaced:
            return None
        why = "no font with Chinese glyphs is installed (fc-list :lang=zh is empty; e.g. apt-get install " \
              "fonts-noto-cjk)" if not self.cjk else f"the fonts ({', '.join(self.families)}) lack some glyphs"
        return f"{self.replaced} token labels are shown as #id: {why}"


_THUMB = 1.05  # inches per thumbnail


def _png_inches(n_layer: int, n_head: int) -> tuple[float, float]:
    return _THUMB * (n_head + 1) + 7.5 + 0.6, max(_THUMB * n_layer + 0.9, 7.6)


def png_size(n_layer: int, n_head: int, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of `save_png`'s image for a model of this shape."""
    w, h = _png_inches(n_layer, n_head)
    return round(w * dpi), round(h * dpi)


def save_png(rec: AttentionRecord, path: str | Path, layer: int, head: Head, *, window: int = 48,
             title: str = "", dpi: int = 100) -> list[str]:
    """Every layer x head (and each layer's mean) as thumbnails, the chosen one large with token labels and a
    colour bar, over the last `window` tokens. Returns notes (e.g. labels drawn as ids)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    layer, head = rec.check(layer, head)
    T, L, H = len(rec), rec.n_layer, rec.n_head
    lo = max(0, T - window)
    n = T - lo
    labeller = _Labeller()
    labels = [labeller(rec.texts[i], rec.ids[i]) for i in range(lo, T)]
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    import matplotlib

    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#f0f0f0")
    fig_w, fig_h = _png_inches(L, H)
    grid_w, big_w = _THUMB * (H + 1), fig_w - _THUMB * (H + 1) - 0.6
    thumb = _THUMB
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    fonts = {"family": labeller.families}
    left = fig.add_gridspec(L, H + 1, left=0.03, right=grid_w / (grid_w + big_w + 0.6) - 0.01, top=1 - 0.7 / fig_h,
                            bottom=max(0.02, 1 - (0.7 + thumb * L) / fig_h), wspace=0.08, hspace=0.25)
    for li in range(L):
        for h in range(H + 1):
            ax = fig.add_subplot(left[li, h])
            m = rec.weights[li].mean(0) if h == H else rec.weights[li, h]
            ax.imshow(np.ma.array(m[lo:, lo:].numpy(), mask=mask), cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            chosen = li == layer and (h == H if head == "mean" else h == head)
            for side in ax.spines.values():
                side.set_edgecolor(CURRENT if chosen else "#999999")
                side.set_linewidth(2.5 if chosen else 0.5)
            if li == 0:
                ax.set_title("mean" if h == H else f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"layer {li}", fontsize=8)
    side = min(fig_h - 1.7, big_w - 1.6)  # inches: the large heatmap is square, top-aligned with the grid
    left_in, bottom_in = grid_w + 0.95, fig_h - 0.75 - side
    ax = fig.add_axes((left_in / fig_w, bottom_in / fig_h, side / fig_w, side / fig_h))
    cax = fig.add_axes(((left_in + side + 0.15) / fig_w, bottom_in / fig_h, 0.16 / fig_w, side / fig_h))
    big = rec.head(layer, head)[lo:, lo:].numpy()
    im = ax.imshow(np.ma.array(big, mask=mask), cmap=cmap, norm=norm, interpolation="nearest")
    size = 9 if n <= 24 else 7 if n <= 48 else 5 if n <= 80 else 4
    ax.set_xticks(range(n), labels, rotation=90, fontsize=size, fontdict=fonts)
    ax.set_yticks(range(n), labels, fontsize=size, fontdict=fonts)
    ax.set_xlabel("key (attended to)", fontsize=9)
    ax.set_ylabel("query (attending)", fontsize=9)
    gen = rec.prompt_len - lo
    if 0 < gen < n:  # a line where the generated tokens begin
        ax.axhline(gen - 0.5, color=CURRENT, linewidth=0.8)
        ax.axvline(gen - 0.5, color=CURRENT, linewidth=0.8)
    name = "mean of heads" if head == "mean" else f"head {head}"
    ax.set_title(f"layer {layer}, {name}" + (f" · last {n} of {T} tokens" if lo else ""), fontsize=10)
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("attention weight (sqrt scale)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title or "attention", fontsize=11, x=0.02, ha="left", fontfamily=labeller.families)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return [note for note in [labeller.note()] if note]


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


# ---------------------------------------------------------------------------------------------- embeddings


def embedding_table(model) -> torch.Tensor:
    """(V, C) token embeddings: the GPT's transformer.wte, a baseline's wte, else its first embedding table."""
    import torch.nn as nn

    for owner in (getattr(model, "transformer", None), model):
        table = getattr(owner, "wte", None) if owner is not None else None
        if isinstance(table, nn.Embedding):
            return table.weight.detach().float().cpu()
    found = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if found is None:
        kind = getattr(getattr(model, "config", None), "kind", type(model).__name__)
        raise MinigptError(f"this {kind} model has no token embedding table to inspect")
    return found.weight.detach().float().cpu()


def find_token(tokenizer, word: str) -> tuple[int, str | None]:
    """The token id for `word` (or '#ID'); tries ' word' too (BPE keeps the leading space). (id, note)."""
    if word.startswith("#") and word[1:].isdigit():
        i = int(word[1:])
        if not 0 <= i < tokenizer.vocab_size:
            raise MinigptError(f"--token {word}: ids go 0..{tokenizer.vocab_size - 1}")
        return i, None
    if word in tokenizer.specials:
        return tokenizer.specials[word], None
    for candidate in (word, " " + word):
        ids = tokenizer.encode(candidate)
        if len(ids) == 1:
            return ids[0], (f"{word!r} is not one token; using {candidate!r}" if candidate != word else None)
    parts = " + ".join(json.dumps(token_text(tokenizer, i), ensure_ascii=False) for i in tokenizer.encode(word))
    raise MinigptError(f"--token {word!r} is {len(tokenizer.encode(word))} tokens ({parts}); give one of them, "
                       f"or #ID")


def nearest_tokens(model, tokenizer, token_id: int, k: int = 10) -> list[tuple[int, str, float]]:
    """The k tokens whose embeddings have the highest cosine similarity with token_id's (specials left out)."""
    table = embedding_table(model)[:tokenizer.vocab_size]
    unit = torch.nn.functional.normalize(table, dim=-1)
    sims = unit @ unit[token_id]
    sims[token_id] = -math.inf
    for i in tokenizer.specials.values():
        if i < sims.numel():
            sims[i] = -math.inf
    values, where = torch.topk(sims, min(k, sims.numel() - 1))
    return [(int(i), token_text(tokenizer, int(i)), float(v)) for v, i in zip(values, where) if v > -math.inf]


def frequent_tokens(tokenizer, n: int) -> list[int]:
    """A proxy for the n most frequent tokens: a BPE's first merges (low rank = frequent pair), then single
    printable bytes; a character vocabulary's characters."""
    ordinary = [i for i in range(tokenizer.vocab_size) if not tokenizer.is_special(i)]
    if getattr(tokenizer, "kind", "") == "bpe":
        merges = [i for i in ordinary if len(tokenizer.token_bytes(i)) > 1]
        printable = [i for i in ordinary if len(tokenizer.token_bytes(i)) == 1 and 32 < i < 127]
        return (merges + printable)[:n]
    return [i for i in ordinary if token_text(tokenizer, i) != "\ufffd"][:n]


def pca_2d(vectors: torch.Tensor) -> torch.Tensor:
    """(N, 2) coordinates on the two principal axes (exact SVD of the centred rows; signs fixed)."""
    x = vectors.double() - vectors.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]  # (2, C)
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))  # largest loading positive
    return (x @ (axes * signs).T).float()


def save_embedding_png(model, tokenizer, path: str | Path, *, count: int = 200, highlight: Sequence[int] = (),
                       title: str = "", dpi: int = 100) -> list[str]:
    """A labelled 2-D PCA of the `count` most frequent tokens' embeddings; `highlight` ids drawn in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = embedding_table(model)
    ids = frequent_tokens(tokenizer, count)
    ids += [i for i in highlight if i not in ids]
    if len(ids) < 3:
        raise MinigptError("too few tokens to project; the vocabulary is nearly empty")
    xy = pca_2d(table[ids]).numpy()
    labeller = _Labeller()
    fig = Figure(figsize=(10, 8), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    marked = set(highlight)
    colours = [CURRENT if i in marked else "#1565c0" for i in ids]
    ax.scatter(xy[:, 0], xy[:, 1], s=8, c=colours, alpha=0.6)
    for (x, y), i in zip(xy, ids):
        ax.annotate(labeller(token_text(tokenizer, i), i), (x, y), fontsize=7 if i not in marked else 9,
                    color=CURRENT if i in marked else "#222", fontfamily=labeller.families,
                    xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title or f"token embeddings: PCA of {len(ids)} frequent tokens", fontsize=11)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buf.getvalue())
    return [note for note in [labeller.note()] if note]


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
