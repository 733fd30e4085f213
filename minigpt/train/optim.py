"""The optimizer and the learning-rate schedule: what every stage's training step uses.

AdamW with weight-decay groups (matrices decay; norms, biases and lookup tables do not), fused where torch has
the kernel (CPU and CUDA), or Muon for the hidden matrices with AdamW for the rest (muon.py); and warm-up then
cosine, linear or constant decay, by step or by the share of a wall-clock budget used.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .settings import TrainConfig


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


def muon_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """`param_groups` with the hidden matrices (weights of linear layers other than the output head) moved to
    a Muon group; embeddings, the head and vectors stay with AdamW."""
    heads = {id(p) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in ("lm_head", "head")
             for p in m.parameters()}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    hidden = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - heads - tables
    groups = []
    for g in param_groups(model, weight_decay):
        mine = [p for p in g["params"] if id(p) in hidden]
        rest = [p for p in g["params"] if id(p) not in hidden]
        groups += [{**g, "params": ps, "algorithm": a} for a, ps in (("muon", mine), ("adamw", rest)) if ps]
    return groups


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over `param_groups`, or `MuonAdamW` when cfg.optimizer is "muon". Fused AdamW is one kernel per
    step on CUDA and on CPU (torch >= 2.4); other devices use the foreach implementation."""
    if cfg.optimizer == "muon":
        from .muon import MuonAdamW

        return MuonAdamW(muon_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    fused = device.type in ("cuda", "cpu") and all(p.dtype.is_floating_point for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
