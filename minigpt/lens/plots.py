"""The pictures of `minigpt inspect`, drawn with matplotlib (Agg, no display): the attention grid PNG (every
layer x head as thumbnails, the chosen head large with token labels and a colour bar) and the embedding map (a
2-D PCA of the most frequent tokens), plus the embedding-table lookups they share with the CLI (nearest tokens
by cosine similarity). Chinese labels need a font with CJK glyphs (`fc-list :lang=zh`); without one, labels
whose glyphs are missing are drawn as #id and a note says so.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..common import MinigptError, atomic_write_bytes
from .attention import CURRENT, AttentionRecord, Head, token_text, visible


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
