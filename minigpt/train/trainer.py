"""THE training loop, shared by pretraining, SFT, reward modelling, DPO, RL and every baseline.

What differs between stages is only the `Objective` (its batches and its loss); everything else is here once:
AdamW with weight-decay groups (matrices decay; norms, biases and lookup tables do not), linear warm-up then
cosine/linear decay (by step, or by wall-clock when a time budget is set), gradient accumulation to a target
number of tokens per step, gradient clipping, autocast (bf16 on CUDA, fp16 + GradScaler where bf16 is missing,
fp32 on CPU), optional `torch.compile`, DDP under `torchrun`, evaluation on fixed batches, checkpoints with
exact resume, a rich progress bar (loss, lr, tokens/s, MFU, ETA), metrics.jsonl and a loss-curve PNG.

Exact resume: the checkpoint holds the weights, the optimizer, the CPU/CUDA RNG states and the data iterator's
generator state, and evaluation never touches any of them (fixed eval batches, own sampling generator). On CPU,
N steps straight and N/2 steps then `--resume` to N give bit-identical weights (tests/test_trainer.py).
Ctrl-C finishes the current step, saves, and prints the command that resumes.
"""
from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..common import Dist, MinigptError, atomic_write_text, console, init_distributed, minigpt_home, resolve_device, resolve_dtype, seed_everything
from ..config import check, option


@dataclass
class TrainConfig:
    max_iters: int = option(2000, "optimizer steps to train for")
    batch_size: int = option(12, "sequences per micro-batch on each process")
    tokens_per_step: int | None = option(None, "tokens per optimizer step over all processes; gradient "
                                               "accumulation makes up the difference (default: one micro-batch)")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float = option(1e-4, "learning rate at the end of the decay")
    warmup_iters: int = option(100, "linear warm-up steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "decay after warm-up")
    weight_decay: float = option(0.1, "AdamW weight decay on matrices (not on norms, biases, embeddings)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.99, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 disables)")
    eval_interval: int = option(250, "evaluate (and checkpoint) every N steps")
    eval_iters: int = option(20, "batches per evaluation, on train and on val")
    log_interval: int = option(10, "write a metrics row every N steps")
    sample_tokens: int = option(64, "tokens of sample text printed at each evaluation (0: none)")
    max_seconds: float | None = option(None, "wall-clock budget in seconds; the schedule follows elapsed time")
    keep_checkpoints: int = option(2, "how many recent step_* folders to keep (the best is always kept)")
    seed: int = option(1337, "random seed (weights, data order, dropout)")
    device: str = option("auto", "cpu, cuda, cuda:N, mps or auto")
    dtype: str = option("auto", "autocast dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    compile: bool = option(False, "torch.compile the model (faster steps after a warm-up of some seconds)")

    def __post_init__(self) -> None:
        check(self.max_iters >= 1, "max_iters", "must be at least 1")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        check(self.lr > 0, "lr", "must be positive")
        check(0 <= self.min_lr <= self.lr, "min_lr", "must be between 0 and --lr")
        check(self.warmup_iters >= 0, "warmup_iters", "must be >= 0")
        check(self.eval_interval >= 1, "eval_interval", "must be at least 1")
        check(self.eval_iters >= 1, "eval_iters", "must be at least 1")
        check(self.log_interval >= 1, "log_interval", "must be at least 1")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must be in [0, 1)")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be positive")


class Objective(Protocol):
    """What a stage supplies. Batches are tuples/dicts of tensors; iterators have state_dict()/load_state_dict()."""

    def train_batches(self, rank: int, world: int) -> Iterator: ...

    def eval_batches(self, split: str, rank: int, world: int) -> list: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def tokens(self, batch: Any) -> int: ...

    def eval_metrics(self, split: str, metrics: dict[str, float]) -> dict[str, float]: ...


# ---------------------------------------------------------------------------------------------- pieces


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Warm-up to cfg.lr, then decay to cfg.min_lr. `progress` (0..1) overrides step/max_iters (time budgets)."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if progress is None:
        progress = (step - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        return cfg.lr
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr + shape * (cfg.lr - cfg.min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices decay; norms, biases and embedding tables (tied or not) do not."""
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # fused AdamW is one kernel per step on CUDA and on CPU (torch >= 2.4); fall back to foreach elsewhere.
    fused = device.type in ("cuda", "cpu") and all(p.dtype.is_floating_point for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=fused or None)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """This machine's dense matmul FLOP/s for MFU: measured at each start (best of a few 1024^3 matmuls on CPU,
    ~50 ms) and remembered under MINIGPT_HOME as the best ever seen, since a measurement taken while the
    machine is busy reads low, and a peak is what the hardware can do."""
    key = f"{device.type}:{torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}:" \
          f"{dtype}:{torch.get_num_threads()}"
    cache = minigpt_home() / "peak_flops.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator(device=device).manual_seed(0)  # never touch the global RNG (exact resume)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    best = math.inf
    for _ in range(5 if device.type == "cpu" else 20):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    measured = 2 * n**3 / best
    if measured > known.get(key, 0.0):
        known[key] = measured
        atomic_write_text(cache, json.dumps(known, indent=1))
    return known[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class _Interrupt:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_Interrupt":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("\n[yellow]Ctrl-C: saving a checkpoint after this step (Ctrl-C again to stop now)[/]")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def resume_command() -> str:
    args = sys.argv[1:]
    return shlex.join(["minigpt", *args, *([] if "--resume" in args else ["--resume"])])


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    best_val: float
    interrupted: bool = False


def train(model: nn.Module, objective: Objective, cfg: TrainConfig, run_dir: str | Path, *, tokenizer_path: Path,
          run_info: dict[str, Any], resume: bool = False, on_eval: Callable[[nn.Module], str] | None = None,
          checkpoint_extra: dict | None = None, title: str = "training") -> TrainResult:
    """Train `model` on `objective` into `run_dir`. `run_info` is written to run.json (stage, configs, parent)."""
    from ..checkpoint import write_run_info
    from .metrics import plot_run

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    dtype = resolve_dtype(cfg.dtype, device)
    seed_everything(cfg.seed)
    raw_model = model
    ts = None
    if resume:
        ckpt = load_checkpoint(run_dir, with_trainer_state=True, build=lambda _: raw_model.to("cpu"))
        if ckpt.trainer_state is None:
            raise MinigptError(f"{ckpt.path}: has no trainer state to resume from; start a new run instead")
        ts = ckpt.trainer_state
    raw_model.to(device)
    optimizer = make_optimizer(raw_model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    train_iter = objective.train_batches(dist.rank, dist.world_size)
    state = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val": math.inf}
    if ts is not None:
        optimizer.load_state_dict(ts["optimizer"])
        train_iter.load_state_dict(ts["data"])
        torch.set_rng_state(ts["rng_cpu"])
        if device.type == "cuda" and ts.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ts["rng_cuda"], device)
        if ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        state.update({k: ts[k] for k in ("step", "tokens", "elapsed", "best_val")})
        if dist.is_main:
            _truncate_metrics(run_dir / "metrics.jsonl", state["step"])
    elif dist.is_main and (run_dir / "latest").exists():
        raise MinigptError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_info(run_dir, {**run_info, "train": vars(cfg).copy()})
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    tokens_per_micro = cfg.batch_size * raw_model.config.block_size * dist.world_size
    accum = max(1, round((cfg.tokens_per_step or tokens_per_micro) / tokens_per_micro))
    flops_per_token = raw_model.flops_per_token()
    peak = matmul_peak_flops(device, dtype if device.type == "cuda" else torch.float32) * dist.world_size
    eval_cache: dict[str, list] = {}

    def evaluate() -> dict[str, float]:
        if hasattr(objective, "evaluate"):  # objectives that measure by generating (RL)
            return objective.evaluate(raw_model)
        out: dict[str, float] = {}
        model.eval()
        with torch.no_grad(), autocast:
            for split in ("train", "val"):
                if split not in eval_cache:
                    eval_cache[split] = objective.eval_batches(split, dist.rank, dist.world_size)
                totals: dict[str, float] = {}
                for batch in eval_cache[split]:  # this rank's slice of each global eval batch
                    loss, metrics = objective.loss(raw_model, to_device(batch, device))
                    for k, v in {"loss": float(loss), **metrics}.items():
                        totals[k] = totals.get(k, 0.0) + v
                totals = _all_reduce_mean(totals, len(eval_cache[split]) * dist.world_size, dist)
                out.update({f"{split}/{k}": v for k, v in objective.eval_metrics(split, totals).items()})
        model.train()
        return out

    def save(step: int, best: bool = False) -> None:
        if dist.is_main:
            trainer_state = {**state, "optimizer": optimizer.state_dict(), "data": train_iter.state_dict(),
                             "rng_cpu": torch.get_rng_state(),
                             "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                             "scaler": scaler.state_dict() if scaler.is_enabled() else None}
            save_checkpoint(run_dir, step, raw_model, tokenizer_path, trainer_state=trainer_state,
                            extra={"stage": run_info.get("stage"), **(checkpoint_extra or {})},
                            keep=cfg.keep_checkpoints, best=best)
        _barrier(dist)

    metrics_file = open(run_dir / "metrics.jsonl", "a") if dist.is_main else None
    log = _Logger(metrics_file, dist)
    progress = _progress(title, cfg.max_iters, enabled=dist.is_main)
    start_step, step = state["step"], state["step"]
    last_eval: dict[str, float] = {}
    interrupted = False
    model.train()
    t_start = time.perf_counter() - state["elapsed"]
    with _Interrupt() as interrupt, progress:
        task = progress.add_task(title, total=None if cfg.max_seconds else cfg.max_iters, completed=step, loss=math.nan, lr=0.0, tps=0.0, mfu=0.0)
        t_last, tokens_last, interval_loss, interval_start = time.perf_counter(), state["tokens"], 0.0, step
        while True:
            elapsed = time.perf_counter() - t_start
            out_of_time = cfg.max_seconds is not None and elapsed >= cfg.max_seconds
            done = step >= cfg.max_iters or out_of_time
            if (step % cfg.eval_interval == 0 and not (resume and step == start_step)) or done:
                last_eval = evaluate()
                is_best = last_eval.get("val/loss", math.inf) < state["best_val"]
                if is_best:
                    state["best_val"] = last_eval["val/loss"]
                sample = on_eval(raw_model) if on_eval and cfg.sample_tokens > 0 and dist.is_main else None
                log.eval(step, state, last_eval, sample, progress)
                state["elapsed"] = time.perf_counter() - t_start
                if step > start_step:
                    save(step, best=is_best)
            if done or interrupt.requested:
                interrupted = interrupt.requested and not done
                if interrupted:
                    state["elapsed"] = time.perf_counter() - t_start
                    save(step)
                break
            progress_frac = None if cfg.max_seconds is None else max(step / cfg.max_iters, elapsed / cfg.max_seconds)
            lr = lr_at(step, cfg, progress_frac)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_metrics: dict[str, float] = {}
            for micro in range(accum):
                batch = to_device(next(train_iter), device)
                sync = contextlib.nullcontext() if not dist.enabled or micro == accum - 1 else model.no_sync()
                with sync, autocast:
                    loss, metrics = objective.loss(model, batch)
                scaler.scale(loss / accum).backward()
                state["tokens"] += objective.tokens(batch) * dist.world_size
                interval_loss = interval_loss + loss.detach() / accum
                for k, v in metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v / accum
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip))
                step_metrics["grad_norm"] = grad_norm
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state["step"] = step
            if step % cfg.log_interval == 0 or step == cfg.max_iters:
                now = time.perf_counter()
                tps = (state["tokens"] - tokens_last) / max(now - t_last, 1e-9)
                steps = max(1, step - interval_start) * dist.world_size
                row = {"loss": _all_reduce_mean({"loss": float(interval_loss)}, steps, dist)["loss"], "lr": lr,
                       "tokens_per_s": tps, "mfu": tps * flops_per_token / peak, **step_metrics}
                log.train(step, state, now - t_start, row)
                total = cfg.max_iters  # under a time budget: the steps the clock will allow, at this pace
                if progress_frac:
                    total = min(cfg.max_iters, max(step, round(step / progress_frac)))
                progress.update(task, completed=step, total=total, loss=row["loss"], lr=lr, tps=tps,
                                mfu=100 * row["mfu"])
                t_last, tokens_last, interval_loss, interval_start = now, state["tokens"], 0.0, step
        progress.update(task, completed=step)
    state["elapsed"] = time.perf_counter() - t_start
    if metrics_file:
        metrics_file.close()
    if dist.is_main:
        with contextlib.suppress(Exception):
            plot_run(run_dir)
        if interrupted:
            console.print(f"[yellow]stopped at step {step}; checkpoint saved.[/] Resume with:\n  {resume_command()}")
    return TrainResult(run_dir, step, last_eval, state["best_val"], interrupted)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (a killed run may have written some)."""
    if not path.is_file():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_text(path, "".join(r + "\n" for r in rows))


def _all_reduce_mean(totals: dict[str, float], count: int, dist: Dist) -> dict[str, float]:
    if dist.enabled:
        import torch.distributed as tdist

        keys = sorted(totals)
        t = torch.tensor([totals[k] for k in keys], dtype=torch.float64)
        tdist.all_reduce(t)
        totals = dict(zip(keys, t.tolist()))
    return {k: v / count for k, v in totals.items()}


def _barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()


class _Logger:
    """metrics.jsonl rows (rank 0 only) and the eval lines printed above the progress bar."""

    def __init__(self, file, dist: Dist) -> None:
        self.file, self.dist = file, dist

    def _write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def train(self, step: int, state: dict, elapsed: float, row: dict) -> None:
        self._write({"step": step, "kind": "train", "time": round(elapsed, 3), "tokens": state["tokens"],
                     **{k: round(v, 6) for k, v in row.items()}})

    def eval(self, step: int, state: dict, metrics: dict, sample: str | None, progress) -> None:
        self._write({"step": step, "kind": "eval", "time": round(state["elapsed"], 3), "tokens": state["tokens"],
                     **{k: round(v, 6) for k, v in metrics.items()}, **({"sample": sample} if sample else {})})
        if not self.dist.is_main:
            return
        parts = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        progress.console.print(f"[bold]step {step}[/] {parts}")
        if sample:
            progress.console.print(sample, style="dim", markup=False, highlight=False)


def _progress(title: str, total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                               "{task.fields[tps]:,.0f} tok/s  MFU {task.fields[mfu]:.0f}%"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled,
                    transient=False)
