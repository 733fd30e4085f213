"""The training loop's output: metrics.jsonl rows (rank 0), the evaluation lines and the rich progress bar, and
the trimming of metrics.jsonl back to the checkpoint a run resumes from."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import OMP_WAIT
from ..common import Dist, MinigptError, atomic_write_text, console
from .metrics import dump_row, read_metrics
from .settings import TrainConfig
from .stopping import resume_command


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (a killed run may have written some), and any line a
    kill tore in the middle of a write (not JSON, or not ended by a newline)."""
    if not path.is_file():
        return
    rows = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines(keepends=True):
        try:
            row = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            row = None
        if isinstance(row, dict) and row.get("step", 0) <= step:
            rows.append(line)
    atomic_write_text(path, "".join(rows))


class Logger:
    """The loop's output: metrics.jsonl rows (rank 0), the eval lines and the rich progress bar. Used as a
    context manager around the loop; `observe(loss)` every step, `train(...)` at log steps, `eval(...)`."""

    def __init__(self, path: Path, dist: Dist, title: str, cfg: TrainConfig, progress: Any):
        self.path, self.dist, self.title, self.cfg, self.p = path, dist, title, cfg, progress
        self.loss, self.steps, self.in_steps = 0.0, 0, 0.0
        self.t_last, self.tokens_last = time.perf_counter(), progress.tokens
        self.best_tps, self.warned = 0.0, False

    def __enter__(self) -> "Logger":
        self.file = open(self.path, "a") if self.dist.is_main else None
        self.bar = _progress_bar(enabled=self.dist.is_main)
        self.bar.__enter__()
        self.task = self.bar.add_task(self.title, total=None if self.cfg.max_seconds else self.cfg.max_iters,
                                      completed=self.p.step, stats=self._last_stats())
        return self

    def _last_stats(self) -> str:
        """The bar's figures before this attempt's first row: a resumed run's last train row (a finished run
        resumed shows its last loss, not nan), or nothing yet."""
        if not (self.file and self.p.step):
            return ""
        rows = read_metrics(self.path.parent)  # whole rows (truncate_metrics)
        last = next((r for r in reversed(rows) if r.get("kind") == "train"), None)
        if last is None or "loss" not in last:
            return ""
        return _stats(last["loss"], last.get("lr", 0.0), last.get("tokens_per_s", 0.0), 100 * last.get("mfu", 0.0))

    def __exit__(self, *exc) -> None:
        self.bar.update(self.task, completed=self.p.step)
        self.bar.__exit__(*exc)
        if self.file:
            self.file.close()

    def _write(self, row: dict) -> None:
        if not self.file:
            return
        try:
            self.file.write(dump_row(row) + "\n")
            self.file.flush()
        except OSError as e:  # e.g. the disk is full: stop with one line; the last checkpoint is whole
            again = resume_command() or "rerun the command"
            raise MinigptError(f"{self.path}: cannot write a metrics row ({e.strerror or e}); free some space, "
                               f"then resume from the last checkpoint: {again}") from None

    def observe(self, loss: torch.Tensor, seconds: float) -> None:
        """Every step: its loss (kept on the device) and how long `Run.step` took."""
        self.loss, self.steps, self.in_steps = self.loss + loss, self.steps + 1, self.in_steps + seconds

    def train(self, elapsed: float, lr: float, metrics: dict[str, Any], run: Any, used: float | None) -> float:
        """A metrics row: mean loss since the last row (over every rank; returned), lr, tokens/s, MFU and the last
        step's metrics. Under a time budget the bar's total is the steps the clock will allow at this pace."""
        now = time.perf_counter()
        tps = (self.p.tokens - self.tokens_last) / max(self.in_steps, 1e-9)  # training speed: evaluations excluded
        loss = run.eval_ctx.mean({"loss": float(self.loss)}, max(1, self.steps))["loss"]
        row = {"loss": loss, "lr": lr, "tokens_per_s": tps, "mfu": run.mfu(tps),
               "loop_share": 1 - self.in_steps / max(now - self.t_last, 1e-9),  # time outside the steps
               **{k: float(v) for k, v in metrics.items()}}
        self._write({"step": self.p.step, "kind": "train", "time": round(elapsed, 3), "tokens": self.p.tokens,
                     **{k: round(v, 6) for k, v in row.items()}})
        total = self.cfg.max_iters
        if used:
            total = min(self.cfg.max_iters, max(self.p.step, round(self.p.step / used)))
        self.bar.update(self.task, completed=self.p.step, total=total,
                        stats=_stats(loss, lr, tps, 100 * row["mfu"]))
        if run.device.type == "cpu":  # spinning OpenMP threads only slow down CPU training
            self._watch_speed(tps)
        self.loss, self.steps, self.in_steps, self.t_last, self.tokens_last = 0.0, 0, 0.0, now, self.p.tokens
        return loss

    def _watch_speed(self, tps: float) -> None:
        """Say once why training slowed down 3x, when OpenMP's threads spin (minigpt/__init__.py)."""
        self.best_tps = max(self.best_tps, tps)
        if OMP_WAIT == "spin" and tps < self.best_tps / 3 and not self.warned and self.dist.is_main:
            self.warned = True
            self.bar.console.print("[yellow]note:[/] training slowed down 3x: another program is using the CPU "
                                   "while minigpt's OpenMP threads spin-wait; on a shared machine run with "
                                   "OMP_WAIT_POLICY=PASSIVE for a steady speed")

    def eval(self, metrics: dict[str, float], sample: str | None) -> None:
        self._write({"step": self.p.step, "kind": "eval", "time": round(self.p.elapsed, 3), "tokens": self.p.tokens,
                     **{k: round(v, 6) for k, v in metrics.items()}, **({"sample": sample} if sample else {})})
        if not self.dist.is_main:
            return
        self.bar.console.print(f"[bold]step {self.p.step}[/] " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if sample:
            self.bar.console.print(sample, style="dim", markup=False, highlight=False)


def _stats(loss: float, lr: float, tps: float, mfu: float) -> str:
    return f"loss {loss:.4f}  lr {lr:.2e}  {tps:,.0f} tok/s  MFU {mfu:.0f}%"


def _progress_bar(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled,
                    transient=False)
