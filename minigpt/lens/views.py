"""Terminal views of attention: the query x key heatmap, the influence lines (red / blue / grey) and /probs tables.

Colour scales: heatmap cells use matplotlib's Blues at sqrt(weight); influence uses the seeds' grey -> blue,
also at sqrt(weight) (see lens/attention.py for why), with the token being predicted in red.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch

from ..text.chat_format import quoted
from .attention import BLUES, CURRENT, STRONG, WEAK, AttentionRecord, Head, InfluenceStep, TokenProb, token_text, visible


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
    return " · ".join(f"{offset + key_start + int(i)}:{quoted(texts[key_start + int(i)])} "
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


def probs_table(rows: Sequence[TokenProb], title: str = "") -> "Any":
    from rich.table import Table
    from rich.text import Text

    table = Table("#", "token", "p", "top alternatives", title=title or None, box=None, pad_edge=False)
    for j, r in enumerate(rows):
        alts = Text()
        for n, (i, text, p) in enumerate(r.alternatives):
            alts.append(("" if not n else " · ") + quoted(text) + f" {100 * p:.1f}%",
                        style="bold" if i == r.token_id else "")
        colour = "green" if r.prob >= 0.5 else "yellow" if r.prob >= 0.1 else "red"
        table.add_row(str(j), Text(quoted(r.text)), Text(f"{100 * r.prob:.1f}%", colour),
                      alts)
    return table


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
