"""Pictures and tables from runs: reads metrics.jsonl and draws loss curves (matplotlib, no display needed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """loss.png in the run folder: training loss per logged step, eval train/val loss (and bits per byte)."""
    rows = read_metrics(run_dir)
    if not rows:
        return None
    plt = _plt()
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.6, label="train (running)")
    for key, style in (("train/loss", "o-"), ("val/loss", "s-")):
        pts = [(r["step"], r[key]) for r in evals if key in r]
        if pts:
            ax.plot(*zip(*pts), style, ms=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
