"""Recurrent language models: Elman RNN (tanh), LSTM and GRU, one module; the cell is the config's `kind`.

Elman, "Finding Structure in Time", 1990; Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997; Cho et
al., "Learning Phrase Representations using RNN Encoder-Decoder", 2014 (GRU); as a character model, Karpathy's
char-rnn (2015). Token embedding -> stacked torch nn.RNN / nn.LSTM / nn.GRU (cuDNN on CUDA) -> linear head.

The three kinds share `RNNConfig` and `RNN`; `LSTMConfig` and `GRUConfig` only change the default `kind`,
so `kind` alone names the cell (no second field that could disagree with it), round-trips through JSON, and
`build_model` picks the cell from it.

Receptive field: unbounded in principle (everything consumed so far lives in the state), but the model is
trained by backpropagation through `block_size` steps from a zero state, so dependencies longer than
block_size are not learned directly. Decoding carries an explicit `RNNState`: constant memory and
O(1) work per new token, however long the text; the engine can run past block_size through it.

Trade-offs: the recurrence is sequential in T (training parallelises over the batch only), and gradients
through many tanh steps vanish (the LSTM/GRU gates are the fix). Init: orthogonal recurrent matrices per
gate (Saxe et al. 2014), LSTM forget-gate bias 1 (Jozefowicz et al. 2015), a small head so the initial loss
is ~ ln V. At V=65, block 64 with the defaults (n_embd 64, n_hidden 256, n_layer 2): rnn 234,881, gru 662,913,
lstm 876,929 parameters (1.38, 3.95 and 5.24 MFLOPs per trained token).

FLOPs per token: 6 x (all weights except the token table): each input and recurrent weight multiplies once
per time step, i.e. once per token, so recurrence is covered by 6N; gate nonlinearities (O(n_hidden)) are
left out as negligible.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import check, option
from .base import LanguageModel

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # stacked gate blocks in torch's weight_ih / weight_hh


@dataclass
class RNNConfig:
    kind: str = option("rnn", "model family; for recurrent models the cell: rnn (tanh), lstm or gru")
    vocab_size: int = option(65, "vocabulary size (set from the tokenizer when training)")
    block_size: int = option(64, "training window (backprop-through-time length); decoding can run past it")
    n_embd: int = option(64, "token embedding width")
    n_hidden: int = option(256, "hidden state width of each recurrent layer")
    n_layer: int = option(2, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout on embeddings, between layers and on the output during training")

    def __post_init__(self) -> None:
        check(self.kind in CELLS, "kind", f"recurrent kinds are {', '.join(CELLS)}; got {self.kind!r}")
        check(self.vocab_size >= 1, "vocab_size", "must be at least 1")
        check(self.block_size >= 1, "block_size", "must be at least 1")
        check(self.n_embd >= 1, "n_embd", "must be at least 1")
        check(self.n_hidden >= 1, "n_hidden", "must be at least 1")
        check(self.n_layer >= 1, "n_layer", "must be at least 1")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")

    @property
    def cell(self) -> str:
        return self.kind


@dataclass
class LSTMConfig(RNNConfig):
    kind: str = option("lstm", "model family; for recurrent models the cell: rnn (tanh), lstm or gru")


@dataclass
class GRUConfig(RNNConfig):
    kind: str = option("gru", "model family; for recurrent models the cell: rnn (tanh), lstm or gru")


@dataclass
class RNNState:
    """The decoding state the caller owns: h (and c for an LSTM), each (n_layer, B, n_hidden).

    `features(idx, cache=state)` continues from it and updates it in place (h, c replaced, pos += T).
    The stored tensors are detached: a call is a truncated-BPTT boundary.
    """

    h: torch.Tensor
    c: torch.Tensor | None = None
    pos: int = 0  # tokens consumed so far (unlike a KV cache, setting it back does not rewind the state)
    bounded = False  # a fixed-size summary of everything read (models.base.DecodeState)

    @property
    def batch(self) -> int:
        return self.h.size(1)

    @property
    def max_len(self) -> int:
        """Unbounded: the state does not grow with the text."""
        return sys.maxsize

    def repeat(self, n: int) -> "RNNState":
        """A copy with each batch row repeated n times (row b becomes rows b*n .. b*n+n-1)."""
        c = None if self.c is None else self.c.repeat_interleave(n, dim=1)
        return RNNState(self.h.repeat_interleave(n, dim=1), c, self.pos)

    def select(self, rows: torch.Tensor) -> "RNNState":
        """The state of only these batch rows, in this order."""
        c = None if self.c is None else self.c.index_select(1, rows)
        return RNNState(self.h.index_select(1, rows), c, self.pos)


class RNN(LanguageModel):
    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.rnn = CELLS[c.cell](c.n_embd, c.n_hidden, c.n_layer, batch_first=True,
                                 dropout=c.dropout if c.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.n_hidden, c.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        c = self.config
        nn.init.normal_(self.wte.weight, 0.0, 1.0)
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.normal_(p, 0.0, 1.0 / math.sqrt(p.shape[1]))
            elif name.startswith("weight_hh"):
                for block in p.chunk(GATES[c.cell], dim=0):  # one (H, H) matrix per gate
                    nn.init.orthogonal_(block)
            else:
                nn.init.zeros_(p)
                if c.cell == "lstm" and name.startswith("bias_ih"):
                    nn.init.ones_(p[c.n_hidden:2 * c.n_hidden])  # gate order i, f, g, o: remember by default
        nn.init.normal_(self.lm_head.weight, 0.0, 0.1 / math.sqrt(c.n_hidden))
        nn.init.zeros_(self.lm_head.bias)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str, dtype: torch.dtype) -> RNNState:
        """A zero state for `batch` rows; `max_len` is unused (the state does not grow)."""
        c = self.config
        h = torch.zeros(c.n_layer, batch, c.n_hidden, device=device, dtype=dtype)
        return RNNState(h, torch.zeros_like(h) if c.cell == "lstm" else None)

    def features(self, idx: torch.Tensor, *, cache: RNNState | None = None,
                 attention: list | None = None) -> torch.Tensor:
        x = self.drop(self.wte(idx))  # (B, T, n_embd)
        if cache is None:
            out, _ = self.rnn(x)  # starts from a zero state
        else:
            h = cache.h.to(x.dtype)
            hx = (h, cache.c.to(x.dtype)) if cache.c is not None else h
            out, hn = self.rnn(x, hx)
            if isinstance(hn, tuple):
                cache.h, cache.c = hn[0].detach(), hn[1].detach()
            else:
                cache.h = hn.detach()
            cache.pos += idx.size(1)
        return self.drop(out)  # (B, T, n_hidden)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)
