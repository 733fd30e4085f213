"""The bigram model: a (V, V) table whose row `a` holds the logits of the token that follows `a`.

The floor of every comparison (Karpathy's makemore, part 1). Training it with cross-entropy is maximum
likelihood for a first-order Markov chain, so softmax(table) converges to the normalised bigram counts of
the training data (tests/test_baselines.py checks this). Receptive field: 1 token. Parameters: V^2
(4,225 at V=65; 16.8M at V=4,096), fixed by the vocabulary: `models.sizing.sized` cannot scale it.

`features` are the table rows themselves ((B, T, V), C = V) and the head is the identity, so a reward model
can still put a scalar head on its features. `new_cache` returns None: the engine recomputes, which for a
window of one token costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import check, option
from .base import LanguageModel


@dataclass
class BigramConfig:
    kind: str = option("bigram", "model family")
    vocab_size: int = option(65, "vocabulary size (set from the tokenizer when training)")
    block_size: int = option(64, "training window in tokens (the model itself looks at 1 token)")

    def __post_init__(self) -> None:
        check(self.kind == "bigram", "kind", f"BigramConfig is for kind 'bigram', got {self.kind!r}")
        check(self.vocab_size >= 1, "vocab_size", "must be at least 1")
        check(self.block_size >= 1, "block_size", "must be at least 1")

    @property
    def receptive_field(self) -> int:
        return 1


class Bigram(LanguageModel):
    def __init__(self, config: BigramConfig) -> None:
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)
        # Near-uniform start: initial loss ~ ln V (+ 0.02^2 / 2); zeros would tie every row exactly.
        nn.init.normal_(self.table.weight, 0.0, 0.02)

    def features(self, idx: torch.Tensor, *, cache=None, attention: list | None = None) -> torch.Tensor:
        return self.table(idx)  # (B, T, V): the row of next-token logits for each token

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def flops_per_token(self) -> int:
        """A row lookup is not a matmul (6N counts 0 here); we count the per-token work on one row of V
        logits, forward (gather, softmax) and backward (softmax gradient, scatter-add): about 6V."""
        return 6 * self.config.vocab_size
