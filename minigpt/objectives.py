"""Objectives: the only part of training that differs between stages (DESIGN section 3).

An objective supplies `train_batches(rank, world)` (a stateful iterator), `eval_batches(split)` (the same
fixed batches at every evaluation), `loss(model, batch) -> (loss, metrics)`, `tokens(batch)` (for tokens/s)
and `eval_metrics(split, mean_metrics)` (derived figures such as bits per byte). Pretraining and SFT share
`NextToken`: SFT only differs in its batches, whose targets are -1 outside the assistant's replies.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

from .data import fixed_batches

BatchFactory = Callable[..., Iterator]  # (split, seed, rank, world) -> iterator of batches


class NextToken:
    """Cross-entropy on the next token (targets of -1 are ignored). Reports bits per byte when it knows the
    bytes per token of each split, so models with different vocabularies compare honestly."""

    def __init__(self, make_batches: BatchFactory, *, seed: int, eval_iters: int,
                 bytes_per_token: dict[str, float] | None = None):
        self.make_batches, self.seed, self.eval_iters = make_batches, seed, eval_iters
        self.bytes_per_token = bytes_per_token or {}

    def train_batches(self, rank: int, world: int) -> Iterator:
        return self.make_batches("train", self.seed, rank, world)

    def eval_batches(self, split: str) -> list:
        seed = self.seed + (1 if split == "train" else 2) * 1_000_003
        return fixed_batches(lambda: self.make_batches(split, seed, 0, 1), self.eval_iters)

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        return model(x, y), {}

    def tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    def eval_metrics(self, split: str, metrics: dict[str, float]) -> dict[str, float]:
        if split in self.bytes_per_token:
            metrics["bpb"] = metrics["loss"] / math.log(2) / self.bytes_per_token[split]
        return metrics
