"""Pictures and tables from runs: reads metrics.jsonl and draws loss curves (matplotlib, no display needed)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def dump_row(row: dict[str, Any]) -> str:
    """One metrics.jsonl line in strict JSON: a NaN or infinite figure (a diverged step's loss) is written null.
    Python's json would write the bare word NaN, which jq, JavaScript's JSON.parse and other strict readers refuse."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()},
                      allow_nan=False)


def load_row(line: str) -> dict[str, Any]:
    """A metrics.jsonl line read back, a null figure as NaN (all the row says is that it was not a number)."""
    return {k: math.nan if v is None else v for k, v in json.loads(line).items()}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [load_row(line) for line in path.read_text().splitlines() if line.strip()]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Secondary curves, drawn dashed on a right-hand axis when a run logs them.
_RIGHT = {"kl": "KL to the reference (per token)", "val/pref_acc": "accuracy", "val/accuracy": "accuracy"}


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """loss.png in the run folder: the running training loss per logged step and the evaluations' train/val loss
    (RL runs: reward instead of loss). Accuracies (reward model, DPO) and RL's KL go on a right-hand axis."""
    rows = read_metrics(run_dir)
    if not rows:
        return None
    plt = pyplot()
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    key = "reward" if any("reward" in r for r in train) else "loss"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot([r["step"] for r in train], [r[key] for r in train], lw=0.8, alpha=0.6, label=f"train {key} (running)")
    for name, style in ((f"train/{key}", "o-"), (f"val/{key}", "s-"), ("val/greedy_reward", "^-")):
        pts = [(r["step"], r[name]) for r in evals if name in r]
        if pts:
            ax.plot(*zip(*pts), style, ms=3, label=name)
    ax.set_xlabel("step")
    per_token = any("val/bpb" in r for r in evals) or not any("val/accuracy" in r for r in evals)
    ax.set_ylabel("reward" if key == "reward" else "loss (nats/token)" if per_token else "loss")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    right = [(name, [(r["step"], r[name]) for r in (train if name == "kl" else evals) if name in r])
             for name in _RIGHT]
    right = [(name, pts) for name, pts in right if pts]
    if right:
        twin = ax.twinx()
        for i, (name, pts) in enumerate(right):
            twin.plot(*zip(*pts), "--", color=f"C{4 + i}", lw=1, label=name)
        twin.set_ylabel(_RIGHT[right[0][0]])
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table; `align` has one letter per column, l or r (default: all left)."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines)


def plot_comparison(curves: dict[str, list[dict[str, Any]]], out: str | Path, *, key: str = "val_bpb",
                    title: str = "") -> Path:
    """One figure, two panels: `key` (default val bits per byte) against wall time and against training tokens
    (log scale: a bigram sees 50x the tokens of a GPT in the same time), one line per model. `curves` maps a model
    name to points {"time": s, "tokens": n, key: value}. The y range is zoomed on the final values (the first
    quarter of the initial drop is cut off)."""
    plt = pyplot()
    fig, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    firsts, finals, everything = [], [], []
    for i, (name, points) in enumerate(curves.items()):
        pts = [p for p in points if p.get(key) is not None]
        if not pts:
            continue
        firsts.append(pts[0][key])
        finals.append(pts[-1][key])
        everything += [p[key] for p in pts]
        style = dict(color=f"C{i % 10}", marker="o", ms=3, lw=1.4, label=name)
        by_time.plot([p["time"] for p in pts], [p[key] for p in pts], **style)
        later = [p for p in pts if p["tokens"] > 0]
        by_tokens.plot([p["tokens"] for p in later], [p[key] for p in later], **style)
    if everything:
        low, high = min(everything), max(finals) + 0.25 * max(0.0, max(firsts) - max(finals))
        pad = 0.03 * max(high - low, 1e-3)
        by_time.set_ylim(low - pad, min(max(everything), high) + pad)
    label = "val bits per byte" if key == "val_bpb" else key
    by_time.set_xlabel("wall time (s)")
    by_time.set_ylabel(label)
    by_tokens.set_xlabel("training tokens")
    if any(p["tokens"] > 0 for pts in curves.values() for p in pts):
        by_tokens.set_xscale("log")
    for ax in (by_time, by_tokens):
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
