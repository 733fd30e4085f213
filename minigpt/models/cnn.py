"""A causal dilated 1-D convolution stack, WaveNet style.

van den Oord et al., "WaveNet: A Generative Model for Raw Audio", 2016: causal convolutions (the input is
padded on the left only, so position t never sees t+1), dilations doubling per layer (1, 2, 4, ...) so the
receptive field grows exponentially with depth, gated activations tanh(f) * sigmoid(g), and residual
connections. Two changes for text: a token embedding in front and a linear head behind, and a pre-norm
LayerNorm per block (as in a GPT), which makes deep stacks train at GPT-like learning rates; WaveNet's
separate skip-connection sum is folded into the residual stream.

Receptive field: 1 + (kernel_size - 1) * sum(dilations). With `dilation_cycle` 0 the dilations are
1, 2, ..., 2^(n_layer-1); a cycle c restarts them at 1 every c layers (WaveNet stacks 1..512 several times).
The defaults (kernel 2, 6 layers) give 1 + 63 = 64 tokens = the default block_size.

Trade-offs: fully parallel over T in training like a GPT, linear in T, no position table; but the window
is hard (nothing beyond the receptive field matters), every position pays for the whole stack, and there
is no state to carry, so decoding recomputes the last block_size tokens (`new_cache` returns None).
At V=65, block 64 with the defaults (n_embd 128, 6 layers, kernel 2) it has 512,321 parameters
(504,001 outside the token table): 6 x 504,001 = 3.0 MFLOPs per trained token.

FLOPs per token: 6 x (all weights except the token table). A conv weight multiplies once per output
position, exactly like a Linear weight, so the 6N rule covers the convolutions too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check, option
from .base import LanguageModel


@dataclass
class CNNConfig:
    kind: str = option("cnn", "model family")
    vocab_size: int = option(65, "vocabulary size (set from the tokenizer when training)")
    block_size: int = option(64, "training window in tokens")
    n_embd: int = option(128, "channels of the residual stream")
    n_layer: int = option(6, "number of dilated residual blocks")
    kernel_size: int = option(2, "taps per dilated convolution (WaveNet uses 2)")
    dilation_cycle: int = option(0, "restart dilations at 1 every this many layers; 0: 1, 2, 4, ... throughout")
    dropout: float = option(0.0, "dropout on each block's output during training")

    def __post_init__(self) -> None:
        check(self.kind == "cnn", "kind", f"CNNConfig is for kind 'cnn', got {self.kind!r}")
        check(self.vocab_size >= 1, "vocab_size", "must be at least 1")
        check(self.block_size >= 1, "block_size", "must be at least 1")
        check(self.n_embd >= 1, "n_embd", "must be at least 1")
        check(self.n_layer >= 1, "n_layer", "must be at least 1")
        check(self.kernel_size >= 1, "kernel_size", "must be at least 1")
        check(self.dilation_cycle >= 0, "dilation_cycle", "must be 0 (no restart) or positive")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")

    @property
    def dilations(self) -> list[int]:
        cycle = self.dilation_cycle or self.n_layer
        return [2 ** (i % cycle) for i in range(self.n_layer)]

    @property
    def receptive_field(self) -> int:
        """Tokens that can influence position t: t-receptive_field+1 .. t."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


class CausalBlock(nn.Module):
    """x + out(tanh(f) * sigmoid(g)), with [f, g] = dilated causal conv of LayerNorm(x)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.out = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, T)
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)  # LayerNorm over channels, per position
        f, g = self.conv(F.pad(h, (self.left_pad, 0))).chunk(2, dim=1)  # each (B, C, T); left pad = causal
        return x + self.drop(self.out(torch.tanh(f) * torch.sigmoid(g)))


class CNN(LanguageModel):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.blocks = nn.ModuleList(CausalBlock(c.n_embd, c.kernel_size, d, c.dropout) for d in c.dilations)
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Gated convs keep PyTorch's fan-in init; each residual output is scaled by 1/sqrt(n_layer) so the
        # stream's variance stays O(1) with depth; the head starts with logit std ~0.1 (loss ~ ln V).
        nn.init.normal_(self.wte.weight, 0.0, 1.0)
        for block in self.blocks:
            nn.init.normal_(block.out.weight, 0.0, 1.0 / math.sqrt(self.config.n_embd * self.config.n_layer))
            nn.init.zeros_(block.out.bias)
        nn.init.normal_(self.lm_head.weight, 0.0, 0.1 / math.sqrt(self.config.n_embd))
        nn.init.zeros_(self.lm_head.bias)

    def features(self, idx: torch.Tensor, *, cache=None, attention: list | None = None) -> torch.Tensor:
        x = self.wte(idx).transpose(1, 2)  # (B, C, T): Conv1d wants channels first
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x.transpose(1, 2))  # (B, T, C)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)
