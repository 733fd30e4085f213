"""The Bengio MLP language model: embed a fixed window of previous tokens, concatenate, MLP, next-token logits.

Bengio, Ducharme, Vincent & Jauvin, "A Neural Probabilistic Language Model", JMLR 2003 (as rebuilt in
Karpathy's makemore, parts 2-4). Position t sees exactly tokens t-context+1 .. t (receptive field =
`context`); at the start of a sequence the missing tokens are a learned "before the start" embedding (row V
of the table, never a real token id), so it stays causal and needs no real token as padding.

Vectorised over a whole (B, T) sequence: left-pad by context-1 pad ids, embed once, then `unfold` gives every
position's window as a view, (B, T, context, n_embd) -> (B, T, context*n_embd), and one matmul runs all T
windows. No recurrence and no attention: training is as parallel as a GPT's, and cost is linear in T.

Trade-offs: the window is hard; nothing beyond `context` tokens can matter, and a window's first-layer
weights are position-specific (context*n_embd*n_hidden of them), so widening the window grows the model
linearly. At V=65, block 64 with the defaults (context 8, n_embd 32, n_hidden 256, n_layer 2) it has
150,401 parameters (148,289 outside the lookup table) and 6 x 148,289 = 0.89 MFLOPs per trained
token.

FLOPs per token: 6 x (all weights except the lookup table); each weight multiplies once per position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check, option
from .base import LanguageModel

ACTIVATIONS = ("tanh", "gelu")


@dataclass
class MLPConfig:
    kind: str = option("mlp", "model family")
    vocab_size: int = option(65, "vocabulary size (set from the tokenizer when training)")
    block_size: int = option(64, "training window in tokens; must hold at least `context` tokens")
    context: int = option(8, "tokens the model sees: position t uses tokens t-context+1 .. t")
    n_embd: int = option(32, "embedding width per token in the window")
    n_hidden: int = option(256, "width of each hidden layer")
    n_layer: int = option(2, "number of hidden layers")
    activation: str = option("tanh", "hidden nonlinearity: tanh (Bengio 2003) or gelu")
    dropout: float = option(0.0, "dropout on the hidden layers during training")

    def __post_init__(self) -> None:
        check(self.kind == "mlp", "kind", f"MLPConfig is for kind 'mlp', got {self.kind!r}")
        check(self.vocab_size >= 1, "vocab_size", "must be at least 1")
        check(self.block_size >= 1, "block_size", "must be at least 1")
        check(self.context >= 1, "context", "must be at least 1")
        check(self.context <= self.block_size, "context",
              f"must be <= --block-size ({self.block_size}): the engine only keeps block_size tokens")
        check(self.n_embd >= 1, "n_embd", "must be at least 1")
        check(self.n_hidden >= 1, "n_hidden", "must be at least 1")
        check(self.n_layer >= 1, "n_layer", "must be at least 1")
        check(self.activation in ACTIVATIONS, "activation", f"choose one of {', '.join(ACTIVATIONS)}")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")

    @property
    def receptive_field(self) -> int:
        return self.context


class MLP(LanguageModel):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.pad_id = c.vocab_size  # row V: "before the start of the sequence"
        self.wte = nn.Embedding(c.vocab_size + 1, c.n_embd)
        widths = [c.context * c.n_embd] + [c.n_hidden] * c.n_layer
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = torch.tanh if c.activation == "tanh" else F.gelu
        self.drop = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.n_hidden, c.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Embeddings ~ N(0, 1) (makemore); hidden layers: Kaiming normal with the nonlinearity's gain
        # (5/3 for tanh) so activations neither saturate nor vanish; the head is scaled so logits start with
        # std ~0.1 whatever the width, giving an initial loss ~ ln V.
        nn.init.normal_(self.wte.weight, 0.0, 1.0)
        gain = 5.0 / 3.0 if self.config.activation == "tanh" else math.sqrt(2.0)
        for layer in self.hidden:
            nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(layer.in_features))
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.lm_head.weight, 0.0, 0.1 / math.sqrt(self.config.n_hidden))
        nn.init.zeros_(self.lm_head.bias)

    def features(self, idx: torch.Tensor, *, cache=None, attention: list | None = None) -> torch.Tensor:
        B, T = idx.shape
        k = self.config.context
        padded = F.pad(idx, (k - 1, 0), value=self.pad_id)  # (B, T+k-1)
        emb = self.wte(padded)  # (B, T+k-1, E)
        windows = emb.unfold(1, k, 1)  # (B, T, E, k): window t covers padded[t : t+k] = idx[t-k+1 .. t]
        x = windows.transpose(2, 3).reshape(B, T, k * self.config.n_embd)  # (B, T, k*E), oldest first
        for layer in self.hidden:
            x = self.drop(self.act(layer(x)))
        return x  # (B, T, n_hidden)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)
