"""THE training loop, shared by pretraining, SFT, reward modelling, DPO, RL and every baseline.

What differs between stages is only the `Objective` (its batches and its loss); everything else is here once:
AdamW with weight-decay groups (matrices decay; norms, biases and lookup tables do not), linear warm-up then
cosine/linear decay (by step, or by wall-clock when a time budget is set), gradient accumulation to a target
number of tokens per step, gradient clipping, autocast (bf16 on CUDA, fp16 + GradScaler where bf16 is missing,
fp32 on CPU), optional `torch.compile`, DDP under `torchrun`, evaluation on fixed batches, checkpoints with
exact resume, a rich progress bar (loss, lr, tokens/s, MFU, ETA), metrics.jsonl and a loss-curve PNG.

Exact resume: the checkpoint holds the weights, the optimizer, the CPU/CUDA RNG states and the data iterator's
generator state, and evaluation never touches any of them (fixed eval batches, own sampling generator). On CPU,
N steps straight and N/2 steps then `--resume` to N give bit-identical weights (tests/test_trainer.py, and
tests/test_faults.py kills runs at random points, checkpoint writes included). Ctrl-C finishes the current step,
saves, and prints the command that resumes; SIGTERM (what torchrun sends the ranks that survive one, and Slurm
and `docker stop` send) does the same. Under torchrun the ranks agree each step on whether to stop (one all-reduce of
two numbers), so they stop, and save, at the same step; a resume needs as many processes as the run was saved with.

One writer per run: `train` holds the run folder's lock (runlock.py) from before it reads anything there until it
returns. A resume is refused with one line when what the run was started with has changed: another stage's run,
another tokenizer (sha256), other data or another parent (`data_sha256`, `parent_sha256` in run.json).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from rich.markup import escape

from ..checkpoint import (damaged_step, load_checkpoint, newest_complete, read_run_info, recover_run, save_checkpoint,
                          write_run_info)
from ..common import (Dist, MinigptError, autocast, console, init_distributed, resolve_device, resolve_dtype,
                      seed_everything, sha256_file)
from ..runlock import is_rank_zero, run_lock
from .logger import Logger, truncate_metrics
from .stopping import Interrupt, resume_command
from .metrics import plot_run
from .objectives import EvalContext, Objective
from .optim import lr_at, make_optimizer, set_lr
from .settings import TrainConfig
from .throughput import matmul_peak_flops


# ---------------------------------------------------------------------------------------------- pieces


@dataclass
class Progress:
    """Where a run is: recorded in every checkpoint beside the weights, optimizer, data position and RNG."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val: float = math.inf  # the best evaluation's score: best_by's metric times its sign (lower is better)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    best_val: float  # the best value of `best_by` (inf: none yet)
    interrupted: bool = False
    best_by: str = "val/loss"


def best_by(objective) -> tuple[str, int]:
    """The evaluation metric that picks the run's `best` step, and its sign (1: lower is better): an objective's
    `best_by` (RL's: its held-out reward, higher), else val/loss."""
    return getattr(objective, "best_by", ("val/loss", 1))


def place(cfg: TrainConfig) -> tuple[torch.device, Dist, torch.dtype]:
    """The device, this process's place in a torchrun job (one process per GPU), and the autocast dtype."""
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device, dist, resolve_dtype(cfg.dtype, device)


class Run:
    """One training run's parts: the model (and its compiled/DDP wrapper), optimizer, grad scaler, data
    iterator and progress, with the three things the loop does to them: `step`, `evaluate` and `save`."""

    def __init__(self, model: nn.Module, objective: Objective, cfg: TrainConfig, run_dir: Path, *,
                 tokenizer_path: Path, run_info: dict[str, Any], checkpoint_extra: dict | None):
        self.cfg, self.objective, self.run_dir, self.tokenizer_path = cfg, objective, run_dir, tokenizer_path
        self.device, self.dist, dtype = place(cfg)
        self.raw = model.to(self.device)
        self.optimizer = make_optimizer(self.raw, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
        self.eval_ctx = EvalContext(self.device, self.dist, lambda: autocast(self.device, dtype))
        self.data = objective.train_batches(self.dist.rank, self.dist.world_size)
        self.progress = Progress()
        self.extra = {"stage": run_info.get("stage"), **(checkpoint_extra or {})}
        tokens_per_micro = cfg.batch_size * self.raw.config.block_size * self.dist.world_size
        self.accum = max(1, round((cfg.tokens_per_step or tokens_per_micro) / tokens_per_micro))
        if self.dist.is_main and cfg.tokens_per_step and cfg.tokens_per_step != self.accum * tokens_per_micro:
            console.print(f"note: --tokens-per-step {cfg.tokens_per_step:,} is {self.accum} micro-batch"
                          f"{'es' if self.accum > 1 else ''} of {tokens_per_micro:,} tokens (--batch-size x "
                          f"block{' x GPUs' if self.dist.world_size > 1 else ''}): "
                          f"{self.accum * tokens_per_micro:,} tokens a step", soft_wrap=True)
        if self.dist.is_main and self.device.type == "cpu" and dtype == torch.float16:
            console.print("note: --dtype float16 on a CPU is slow (CPUs have no fast fp16 matrix products); "
                          "bfloat16 or float32 train several times faster here", soft_wrap=True)
        self.model = self._wrap(self.raw)
        self.cpu_group = _cpu_group(self.dist)
        self.peak = matmul_peak_flops(self.device, dtype if self.device.type == "cuda" else torch.float32) \
            * self.dist.world_size

    def _wrap(self, model: nn.Module) -> nn.Module:
        model = torch.compile(model) if self.cfg.compile else model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=getattr(self.objective, "find_unused_parameters", False))
        return model

    def restore(self) -> None:
        """Continue from the run folder's latest checkpoint: weights, optimizer, data position, RNG, progress. A run
        saved by another number of processes is refused: its batches (and its data order) would change."""
        ckpt = load_checkpoint(self.run_dir, with_trainer_state=True, build=lambda _: self.raw)
        if ckpt.config.get("tokenizer_sha256") != sha256_file(self.tokenizer_path):
            raise MinigptError(f"--resume: {ckpt.path} was trained with another tokenizer than {self.tokenizer_path} "
                               "(sha256 differs); a resumed run keeps its checkpoint's tokenizer, so restore that "
                               "file, or start a new run with another --out")
        ts = ckpt.trainer_state
        if ts is None:
            raise MinigptError(f"{ckpt.path}: has no trainer state to resume from; start a new run instead")
        keys = ("step", "tokens", "elapsed", "best_val", "optimizer", "data", "rng_cpu")
        missing = [k for k in keys if k not in ts] if isinstance(ts, dict) else ["step"]
        if missing:
            raise MinigptError(f"{ckpt.path}/trainer_state.json: no {missing[0]!r}; the file is damaged: "
                               f"{damaged_step(ckpt.path, resume=True)}")
        world = ts.get("world_size")  # absent in runs saved before it was recorded: they resume as before
        if world is not None and world != self.dist.world_size:
            n = self.dist.world_size
            raise MinigptError(f"--resume: {self.run_dir} was trained by {world} process{'es' * (world != 1)} and "
                               f"this resume runs {n}; the batch and the data order depend on that number, so "
                               f"resume with {world}: {resume_command(world)}")
        self.raw.to(self.device)
        try:
            self.optimizer.load_state_dict(ts["optimizer"])
            self.data.load_state_dict(ts["data"])
            torch.set_rng_state(ts["rng_cpu"])
            if self.device.type == "cuda" and ts.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(ts["rng_cuda"], self.device)
            if ts.get("scaler"):
                self.scaler.load_state_dict(ts["scaler"])
            self.progress = Progress(**{k: ts[k] for k in ("step", "tokens", "elapsed", "best_val")})
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise MinigptError(f"{ckpt.path}/trainer_state.*: does not fit this run ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}); "
                               f"{damaged_step(ckpt.path, resume=True)}") from None

    def agree(self, used: float | None, stop: bool) -> tuple[float | None, bool]:
        """The share of the budget used and whether to stop, the same on every rank: the largest share and any
        rank's stop. Each rank has its own clock and its own signals; a rank that stopped alone would wait in
        `save` while the others wait in the next step's all-reduce, for ever. On CUDA this goes through a CPU
        (gloo) group, so that it never waits for the GPU."""
        if not self.dist.enabled:
            return used, stop
        import torch.distributed as tdist

        t = torch.tensor([-1.0 if used is None else used, float(stop)], dtype=torch.float64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.cpu_group)
        return (None if used is None else float(t[0])), bool(t[1])

    def step(self, lr: float) -> tuple[torch.Tensor, dict[str, Any]]:
        """One optimizer step over `accum` micro-batches. Returns the mean loss and metrics as they come
        (tensors stay on the device: nothing here waits for it)."""
        set_lr(self.optimizer, lr)
        total, metrics = torch.zeros((), device=self.device), {}
        for micro in range(self.accum):
            batch = next(self.data)
            share = self._share(batch)
            batch = self.eval_ctx.to_device(batch)
            last = micro == self.accum - 1
            sync = self.model.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()
            with sync, self.eval_ctx.autocast():
                loss, found = self.objective.loss(self.model, batch)
            loss = loss * share if share != 1 else loss
            self.scaler.scale(loss / self.accum).backward()
            self.progress.tokens += self.objective.tokens(batch) * self.dist.world_size
            total += loss.detach() / self.accum
            for k, v in found.items():
                metrics[k] = metrics.get(k, 0.0) + v / self.accum
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        return total, metrics

    def _share(self, batch: Any) -> float:
        """What this rank's loss is scaled by: its slice's share of the global micro-batch's weight (targets), times
        the number of ranks. DDP averages the ranks' gradients, so the step is then that of the whole batch's mean,
        as one process with N times the batch takes it. 1 where every slice weighs the same (`uneven_slices` unset:
        pretraining, pairs); SFT's slices hold different numbers of targets."""
        if not (self.dist.enabled and getattr(self.objective, "uneven_slices", False)):
            return 1.0
        import torch.distributed as tdist

        weight = self.objective.weight(batch)
        t = torch.tensor([weight], dtype=torch.float64)
        tdist.all_reduce(t, group=self.cpu_group)  # a CPU number (gloo): no wait for the GPU
        return self.dist.world_size * weight / max(float(t), 1e-12)

    def evaluate(self) -> tuple[dict[str, float], bool]:
        """The objective's evaluation, and whether it is the best so far (by `best_by`: val loss for most)."""
        found = self.objective.evaluate(self.raw, self.eval_ctx)
        name, sign = best_by(self.objective)
        score = sign * found.get(name, sign * math.inf)  # lower is better; progress keeps the best score
        best = score < self.progress.best_val
        if best:
            self.progress.best_val = score
        return found, best

    def save(self, best: bool = False) -> None:
        """A checkpoint of the step just finished (rank 0 writes; every rank waits for it)."""
        if self.dist.is_main:
            state = {**vars(self.progress), "optimizer": self.optimizer.state_dict(), "data": self.data.state_dict(),
                     "rng_cpu": torch.get_rng_state(),
                     "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                     "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                     "world_size": self.dist.world_size}
            save_checkpoint(self.run_dir, self.progress.step, self.raw, self.tokenizer_path, trainer_state=state,
                            extra=self.extra, keep=self.cfg.keep_checkpoints, best=best)
        _barrier(self.dist)

    def mfu(self, tokens_per_s: float) -> float:
        """Model-FLOP utilisation: training FLOPs per second over the measured matmul peak of every process."""
        return tokens_per_s * self.raw.flops_per_token() / self.peak


# ---------------------------------------------------------------------------------------------- the loop


def train(model: nn.Module, objective: Objective, cfg: TrainConfig, run_dir: str | Path, **kw: Any) -> TrainResult:
    """Train `model` on `objective` into `run_dir` (see `_train` for the arguments), holding the run folder's lock
    throughout: a second writer is refused with one line naming this one. Crash leftovers are tidied first."""
    run_dir = Path(run_dir)
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        if is_rank_zero():
            for line in recover_run(run_dir):
                console.print(f"recovered {run_dir}: {line}", markup=False, highlight=False)
        return _train(model, objective, cfg, run_dir, **kw)


def _check_resume(run_dir: Path, run_info: dict[str, Any]) -> None:
    """A resume continues the run it names, on the data and parent it started with, or is refused."""
    stored = read_run_info(run_dir)
    stage = run_info.get("stage")
    if stored.get("stage") not in (None, stage):
        raise MinigptError(f"--resume: {run_dir} is a {stored['stage']} run, not {stage}; continue it with "
                           f"`minigpt {stored['stage']} --out {run_dir} --resume`")
    what = {"data_sha256": f"the data ({run_info.get('data')})", "parent_sha256": f"the parent checkpoint "
            f"({run_info.get('parent')})"}
    for key, name in what.items():
        if stored.get(key) and run_info.get(key) and stored[key] != run_info[key]:
            raise MinigptError(f"--resume: {name} changed since {run_dir} started ({key} differs); restore it, "
                               "or start a new run with another --out")


def _train(model: nn.Module, objective: Objective, cfg: TrainConfig, run_dir: Path, *, tokenizer_path: Path,
           run_info: dict[str, Any], resume: bool = False, on_eval: Callable[[nn.Module], str] | None = None,
           checkpoint_extra: dict | None = None, title: str = "training") -> TrainResult:
    """Train `model` on `objective` into `run_dir`. `run_info` is written to run.json (stage, configs, parent)."""
    seed_everything(cfg.seed)
    run = Run(model, objective, cfg, run_dir, tokenizer_path=tokenizer_path, run_info=run_info,
              checkpoint_extra=checkpoint_extra)
    if resume:
        _check_resume(run_dir, run_info)
        run.restore()
        if run.dist.is_main:
            console.print(f"resuming {escape(str(run_dir))} at step {run.progress.step:,}", soft_wrap=True)
    elif run.dist.is_main and (run_dir / "latest").exists():
        raise MinigptError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")
    if run.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            truncate_metrics(run_dir / "metrics.jsonl", run.progress.step)
        else:  # rows of an attempt that died before its first checkpoint
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        # "cwd": what the relative paths in run.json are relative to (checkpoint.run_path), so --resume works
        # from any folder; a resume keeps the folder the run started in
        cwd = read_run_info(run_dir).get("cwd") if resume else None
        write_run_info(run_dir, {**run_info, "cwd": cwd or os.getcwd(), "train": vars(cfg).copy()})
    start, p = run.progress.step, run.progress
    log = Logger(run_dir / "metrics.jsonl", run.dist, title, cfg, p)
    t_start = time.perf_counter() - p.elapsed
    last_eval: dict[str, float] = {}
    judged_by = best_by(objective)[0]  # the evaluation's figure a diverged run shows first (val/loss for most)
    lr, metrics = 0.0, {}  # the last step's, for the row written when the clock stops the run between log steps
    with Interrupt() as interrupt, log:
        while True:
            elapsed = time.perf_counter() - t_start
            used = None if cfg.max_seconds is None else max(p.step / cfg.max_iters, elapsed / cfg.max_seconds)
            due = p.step % cfg.eval_interval == 0 and not (resume and p.step == start)
            # Every rank decides the same at the same step (Run.agree). A stop request is read once a step: after
            # the evaluation when there is one, so that a Ctrl-C during it stops right after it
            used, stop = run.agree(used, not due and interrupt.requested)
            done = p.step >= cfg.max_iters or (used is not None and used >= 1)
            if done and log.steps:  # the clock ran out between log steps: a row for the steps since the last
                log.train(elapsed, lr, metrics, run, used)
            if done or due:
                last_eval, best = run.evaluate()
                _check_finite(last_eval.get(judged_by, 0.0), judged_by, p.step, cfg, run_dir)  # before a save
                p.elapsed = time.perf_counter() - t_start
                sample = on_eval(run.raw) if on_eval and cfg.sample_tokens > 0 and run.dist.is_main else None
                log.eval(last_eval, sample)
                if p.step > start:
                    run.save(best=best)
                if not done:
                    stop = run.agree(None, interrupt.requested)[1]
            if done or stop:
                break
            lr = lr_at(p.step, cfg, used)
            t_step = time.perf_counter()
            loss, metrics = run.step(lr)
            log.observe(loss, time.perf_counter() - t_step)
            if p.step % cfg.log_interval == 0 or p.step == cfg.max_iters:
                _check_finite(log.train(time.perf_counter() - t_start, lr, metrics, run, used), "the training loss",
                              p.step, cfg, run_dir)
    interrupted = stop and not done
    if interrupted:
        p.elapsed = time.perf_counter() - t_start
        run.save()
    if run.dist.is_main:
        plot_run(run_dir)
        if interrupted and (command := resume_command(run.dist.world_size)):
            console.print(f"[yellow]stopped at step {p.step}; checkpoint saved.[/] Resume with:\n  "
                          f"{escape(command)}", soft_wrap=True)  # one line, to copy
    name, sign = best_by(objective)
    return TrainResult(run_dir, p.step, last_eval, sign * p.best_val, interrupted, name)


class Diverged(MinigptError):
    """A run whose loss stopped being finite: `what` says where and what was kept, the message adds the fix."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. {fix}")
        self.what = what


def _check_finite(value: float, what: str, step: int, cfg: TrainConfig, run_dir: Path) -> None:
    """Stop a diverged run (a learning rate too high, bad data) with one line, before it saves or samples NaN
    weights: every checkpoint already saved is whole. The value is the same on every rank (a mean over ranks)."""
    if math.isfinite(value):
        return
    kept = newest_complete(run_dir)
    raise Diverged(f"training diverged: {what} is {value} at step {step:,} (peak learning rate {cfg.lr:g}); "
                   + (f"{kept} is the last checkpoint, saved before it" if kept else "no checkpoint was saved"),
                   f"Start again with a lower --lr (say {cfg.lr / 4:g}) and another --out")


def _cpu_group(dist: Dist):
    """The process group for the loop's few CPU numbers (`Run.agree`, `Run._share`): the default one when it is
    gloo (CPU), else a gloo group beside it (through NCCL each would need a GPU copy and a wait for the GPU)."""
    if not dist.enabled:
        return None
    import torch.distributed as tdist

    return None if tdist.get_backend() == "gloo" else tdist.new_group(backend="gloo")


def _barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
