"""`TrainConfig`: every knob of the training loop, one field and one flag each (`--max-iters`, `--lr`, ...).

The stages start from their own defaults (finetune.STAGE_DEFAULTS, the speedrun's recipe); flags and config files
override them. Validation names the flag to change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    optimizer: Literal["adamw", "muon"] = option("adamw", "adamw, or muon: orthogonalized momentum for the hidden "
                                                          "matrices (AdamW for embeddings, head, norms)")
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
    compile: bool | None = option(None, "torch.compile the model: faster steps after a warm-up of 10-20 s. Unset: "
                                        "pretraining a GPT compiles when given --max-seconds of 300 or more on a "
                                        "device that can (CUDA; a CPU with a C++ compiler), other runs do not")

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
