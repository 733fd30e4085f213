"""Synthetic sequence tasks that tell model families apart, and the small loop that trains on them.

`Recall` (associative recall, the phone-book task): a sequence of P entries "name=number" (one token each: 32
names x 8 numbers = 256 entry tokens; the P names all different), then P questions "name?" (32 more tokens),
one about each entry in a random order; the answer to each question is the number stored with that name.
Nothing about the answer is in the question itself: it has to be looked up, across a gap of 1 to 2P - 1 tokens.
P varies from 1 to 24 (sequences of up to 48 tokens), so short gaps are common and long ones rare. Attention
solves it by matching the question against every entry at once (a GPT with fewer parameters than the LSTM and
GRU reaches ~100% in a few hundred steps); a recurrent network has to squeeze all P entries into its fixed state
as they stream past, and recalls mostly the recent ones.
`RememberFirst` (the cnn-rnn lesson's copy task): one of 8 symbols, a gap of random distractors, a question
mark; the answer is the first symbol.

`fit` is the loop: AdamW (no weight decay), 5% warm-up then cosine decay to a tenth, gradient clipping at 1, a
rich progress bar; a step or a time budget. `compare_task` trains several model kinds at the same parameter
count on a task and reports accuracy against the gap (`minigpt compare --task recall` and lesson 6).
"""
from __future__ import annotations

import math
import string
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..common import MinigptError, console, resolve_device

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B, T), y (B, T) with -1 where nothing is asked, gap


@dataclass(frozen=True)
class Recall:
    name: str = "recall"
    keys: int = 32
    values: int = 8
    max_pairs: int = 24

    @property
    def vocab_size(self) -> int:
        return self.keys * self.values + self.keys  # entries (key, value), then questions (key)

    @property
    def block_size(self) -> int:
        return 2 * self.max_pairs

    @property
    def chance(self) -> float:
        return 1 / self.values

    def batch(self, size: int, generator: torch.Generator, pairs: int | None = None) -> Batch:
        """`size` sequences of `pairs` entries then `pairs` questions, one about each entry in a random order
        (default: a random count of pairs). y holds the number at each question and -1 elsewhere; gap: tokens
        from the entry to its question."""
        p = pairs or int(torch.randint(1, self.max_pairs + 1, (1,), generator=generator))
        names = torch.rand(size, self.keys, generator=generator).argsort(1)[:, :p]  # p different names
        numbers = torch.randint(0, self.values, (size, p), generator=generator)
        asked = torch.rand(size, p, generator=generator).argsort(1)  # which entry each question asks about
        x = torch.cat([names * self.values + numbers, self.keys * self.values + names.gather(1, asked)], 1)
        y = torch.cat([torch.full((size, p), -1), numbers.gather(1, asked)], 1)
        gap = torch.cat([torch.zeros(size, p, dtype=torch.long), p + torch.arange(p) - asked], 1)
        return x, y, gap

    def text(self, token: int) -> str:
        """'c=7' for an entry, 'c?' for a question."""
        names = string.ascii_letters[:self.keys]
        if token < self.keys * self.values:
            return f"{names[token // self.values]}={token % self.values}"
        return f"{names[token - self.keys * self.values]}?"

    def evaluation(self, per_length: int, seed: int = 1) -> list[Batch]:
        """Fixed test batches, one per number of pairs (the same for every model)."""
        g = torch.Generator().manual_seed(seed)
        return [self.batch(per_length, g, p) for p in range(1, self.max_pairs + 1)]


@dataclass(frozen=True)
class RememberFirst:
    """One of `symbols` symbols, `gap` random distractors (1..max_gap, uniform), then a question mark: answer the
    first symbol."""

    name: str = "remember-first"
    symbols: int = 8
    distractors: int = 8
    max_gap: int = 128

    @property
    def vocab_size(self) -> int:
        return self.symbols + self.distractors + 1

    @property
    def block_size(self) -> int:
        return self.max_gap + 2

    def batch(self, size: int, generator: torch.Generator, gap: int | None = None) -> Batch:
        g = gap or int(torch.randint(1, self.max_gap + 1, (1,), generator=generator))
        first = torch.randint(0, self.symbols, (size, 1), generator=generator)
        noise = torch.randint(self.symbols, self.symbols + self.distractors, (size, g), generator=generator)
        x = torch.cat([first, noise, torch.full((size, 1), self.vocab_size - 1)], 1)
        y = torch.full_like(x, -1)
        y[:, -1] = first[:, 0]
        return x, y, torch.full_like(x, g)


TASKS: dict[str, Any] = {"recall": Recall()}


def get_task(name: str):
    if name not in TASKS:
        raise MinigptError(f"--task {name}: unknown; tasks: {', '.join(TASKS)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------------- training


def fit(model: torch.nn.Module, batches: Callable[[torch.Generator], Batch], *, lr: float, steps: int,
        seconds: float | None = None, seed: int = 0, label: str = "training") -> dict[str, Any]:
    """Train on `batches(generator)` for `steps` (or until `seconds` pass): AdamW, warm-up, cosine decay."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.perf_counter()
    model.train()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=1.0, loss=float("nan"))
        for step in range(steps):
            done = step / steps if seconds is None else max(step / steps, (time.perf_counter() - t0) / seconds)
            if done >= 1:
                break
            warm = min(1.0, max(done, (step + 1) / steps) / 0.05)  # the first 5% of the budget: a linear ramp
            for group in opt.param_groups:
                group["lr"] = lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))
            x, y, _ = batches(gen)
            loss = model(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(task, completed=done, loss=losses[-1])
    return {"losses": losses, "steps": len(losses), "seconds": time.perf_counter() - t0}


@torch.no_grad()
def accuracy_by_gap(model: torch.nn.Module, tests: Sequence[Batch]) -> dict[int, float]:
    """Share of right answers (argmax at every asked position) for each gap length."""
    device = next(model.parameters()).device
    model.eval()
    right: dict[int, list[int]] = {}
    for x, y, gap in tests:
        guess = model(x.to(device)).argmax(-1).cpu()
        asked = y >= 0
        for g, ok in zip(gap[asked].tolist(), (guess[asked] == y[asked]).tolist()):
            right.setdefault(g, []).append(ok)
    return {g: sum(v) / len(v) for g, v in sorted(right.items())}


def overall(by_gap: dict[int, float], tests: Sequence[Batch], lo: int = 1, hi: int = 10**9) -> float | None:
    """Accuracy over every question whose gap is in [lo, hi], weighted by how often each gap occurs (None when
    no question has such a gap)."""
    counts: dict[int, int] = {}
    for _, y, gap in tests:
        for g in gap[y >= 0].tolist():
            counts[g] = counts.get(g, 0) + 1
    n = sum(c for g, c in counts.items() if lo <= g <= hi)
    return sum(by_gap[g] * c for g, c in counts.items() if lo <= g <= hi) / n if n else None


# ---------------------------------------------------------------------------------------------- comparing

GAP_BINS = ((1, 2), (3, 4), (5, 8), (9, 12), (13, 16), (17, 24), (25, 32), (33, 47))  # recall's 1..47
LONG = 17  # "a long gap": the entry is more than 16 tokens back


LINE_STYLES = (dict(marker="o", lw=2), dict(marker="s", lw=6, alpha=0.45), dict(marker="^", lw=1.5, ls="--"),
               dict(marker="D", lw=1.5, ls=":"), dict(marker="v", lw=3, alpha=0.6), dict(marker="x", lw=1, ls="-."))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def compare_task(task, config: Any = None, *, steps: int | None = None, out: Any = None,
                 per_length: int = 100, lang: str = "en") -> dict[str, Any]:
    """Train each kind of `config.models` (a runs.compare.CompareConfig) at `config.params` parameters on `task`
    with the same budget: `steps` each, else `config.tokens` tokens each, else `config.seconds` split equally;
    score every model on the same fixed test batches. With `out`: results.json, report.md and accuracy.png.
    `lang` "zh": the progress lines in Chinese (lesson 6 with --lang zh)."""
    from ..models import build_model
    from ..models.sizing import sized
    from ..runs.compare import CompareConfig

    cfg = config or CompareConfig()
    dev = resolve_device(cfg.device)
    tokens_per_step = cfg.batch_size * task.block_size
    n_steps = steps or (math.ceil(cfg.tokens / tokens_per_step) if cfg.tokens else 10**9)
    seconds = None if steps or cfg.tokens else cfg.seconds / len(cfg.models)
    tests = task.evaluation(per_length)
    budget = (f"{steps:,} steps" if steps else f"{n_steps:,} steps ({cfg.tokens:,} tokens)" if cfg.tokens
              else f"{seconds:.0f} s")
    results: dict[str, Any] = {"task": task.name, "params": cfg.params, "batch_size": cfg.batch_size,
                               "seed": cfg.seed, "chance": task.chance, "budget": budget, "models": {}}
    for kind in cfg.models:
        torch.manual_seed(cfg.seed)
        model = build_model(sized(kind, task.vocab_size, task.block_size, cfg.params)).to(dev)
        run = fit(model, lambda g: task.batch(cfg.batch_size, g), lr=cfg.lr_for(kind), steps=n_steps,
                  seconds=seconds, seed=cfg.seed, label=f"{kind} ({model.num_params():,} parameters)")
        by_gap = accuracy_by_gap(model, tests)
        entry = {"params": model.num_params(), "steps": run["steps"], "seconds": round(run["seconds"], 1),
                 "lr": cfg.lr_for(kind), "final_loss": sum(run["losses"][-20:]) / len(run["losses"][-20:]),
                 "accuracy": overall(by_gap, tests), "short": overall(by_gap, tests, 1, 8),
                 "long": overall(by_gap, tests, LONG), "by_gap": by_gap,
                 "bins": [overall(by_gap, tests, lo, hi) for lo, hi in GAP_BINS]}
        results["models"][kind] = entry
        if lang == "zh":
            console.print(f"[bold]{kind}[/] {entry['params']} 个参数，{entry['seconds']:.0f} 秒训练 {entry['steps']} "
                          f"步：准确率 {entry['accuracy']:.1%}（间隔 ≤ 8：{_pct(entry['short'])}，间隔 > {LONG - 1}："
                          f"{_pct(entry['long'])}）", soft_wrap=True)
        else:
            console.print(f"[bold]{kind}[/] {entry['params']:,} parameters, {entry['steps']:,} steps in "
                          f"{entry['seconds']:.0f} s: accuracy {entry['accuracy']:.1%} (gap <= 8: "
                          f"{_pct(entry['short'])}, gap > {LONG - 1}: {_pct(entry['long'])})", soft_wrap=True)
    if out is not None:
        write_task_report(results, out)
    return results


def draw_accuracy(results: dict[str, Any], title: str = "", xlabel: str = "gap (tokens from entry to question)",
                  ylabel: str = "accuracy", fig: Any = None, chance: str = "chance"):
    """Accuracy against the gap, one line per model, the chance level dashed (on `fig`, or a new figure). Each
    model has its own marker, width and dashes, so equal curves (LSTM and GRU near chance) stay visible: a wide
    pale line under a narrow dashed one."""
    from matplotlib.figure import Figure

    fig = fig or Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    mids = [(lo + hi) / 2 for lo, hi in GAP_BINS]
    for i, (kind, e) in enumerate(results["models"].items()):
        acc = [math.nan if a is None else a for a in e["bins"]]
        ax.plot(mids, acc, label=f"{kind} ({e['params'] / 1e3:.0f}K)", **LINE_STYLES[i % len(LINE_STYLES)])
    ax.axhline(results["chance"], color="grey", ls="--", lw=1, label=f"{chance} ({results['chance']:.1%})")
    ax.set(xscale="log", ylim=(0, 1.03), xlabel=xlabel, ylabel=ylabel, title=title or results["task"])
    ax.set_xticks(mids, [f"{lo}-{hi}" for lo, hi in GAP_BINS])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_task_report(results: dict[str, Any], out: Any) -> Any:
    """results.json, accuracy.png and report.md (a table per model) in the folder `out`."""
    import io
    import json
    from pathlib import Path

    from ..common import atomic_write_bytes, atomic_write_text
    from ..train.metrics import markdown_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    buf = io.BytesIO()
    draw_accuracy(results, title=f"{results['task']}: accuracy against the gap").savefig(buf, format="png", dpi=110)
    atomic_write_bytes(out / "accuracy.png", buf.getvalue())
    rows = [[k, f"{e['params']:,}", f"{e['steps']:,}", f"{e['seconds']:.0f} s", f"{e['lr']:g}",
             f"{e['final_loss']:.3f}", _pct(e["accuracy"]), _pct(e["short"]), _pct(e["long"])]
            for k, e in results["models"].items()]
    text = "\n".join([
        f"# minigpt compare --task {results['task']}", "",
        f"Every model sized towards {results['params']:,.0f} parameters (each one's count is in the table), "
        f"trained for {results.get('budget', 'the same budget')} each, batch {results['batch_size']}, seed "
        f"{results['seed']}; accuracy on the same fixed test sequences (chance {results['chance']:.1%}).", "",
        markdown_table(["model", "params", "steps", "time", "lr", "final loss", "accuracy", "gap <= 8",
                        f"gap > {LONG - 1}"],
                       rows, align="lrrrrrrrr"), "", "![accuracy against the gap](accuracy.png)", ""])
    atomic_write_text(out / "report.md", text)
    console.print(f"[green]report[/]: {out / 'report.md'}")
    return out / "report.md"
