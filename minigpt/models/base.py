"""The one model interface shared by the GPT and every baseline (DESIGN section 3), and the shared loss.

A model is an `nn.Module` with:
- `config`: a dataclass with `kind`, `vocab_size` and `block_size` (the context the model was trained on)
  that round-trips through JSON; it is the single statement of the model's shape;
- `features(idx, *, cache=None, attention=None) -> (B, T, C)` hidden states;
- `logits(h) -> (B, T, V)`: the LM head over features;
- `forward(idx, targets=None, *, cache=None, reduction="mean", attention=None)`: logits without targets,
  loss with them (target -1 is ignored; `reduction="none"` gives per-token loss, 0 where ignored);
- `new_cache(batch, max_len, device, dtype)`: an explicit decoding state the caller owns and passes back in
  (GPT: a preallocated KV cache; RNN: its hidden state), or None when the model has none (MLP, CNN, bigram),
  in which case the engine recomputes over the last `block_size` tokens;
- `flops_per_token()`: forward+backward FLOPs per trained token (6N plus attention), for MFU.

Training concerns (optimizer groups, schedules, MFU bookkeeping) stay in the trainer, never here.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F


class DecodeState(Protocol):
    """What the engine needs from a model's cache: how many tokens it holds, and batch expansion."""

    pos: int

    def repeat(self, n: int) -> "DecodeState":
        """A copy whose batch is each row repeated n times (several samples share one prefill)."""


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over (B, T, V) logits and (B, T) targets; targets of -1 are ignored.

    "mean" averages over the counted tokens; "sum" sums them; "none" returns (B, T) with 0 at ignored places.
    """
    flat = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=-1, reduction="none" if reduction == "none" else reduction)
    return flat.view(targets.shape) if reduction == "none" else flat


class LanguageModel(nn.Module):
    """Base class: subclasses implement `features`, `logits` and (optionally) `new_cache`."""

    config: Any

    def features(self, idx: torch.Tensor, *, cache: Any = None, attention: list | None = None) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache: Any = None,
                reduction: str = "mean", attention: list | None = None) -> torch.Tensor:
        logits = self.logits(self.features(idx, cache=cache, attention=attention))
        if targets is None:
            return logits
        return lm_loss(logits, targets, reduction)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str, dtype: torch.dtype) -> Any:
        return None

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self, non_embedding: bool = False) -> int:
        """Unique parameters (tied weights counted once). `non_embedding` leaves out lookup tables that are
        not also used as a matmul (position tables, untied token tables), as nanoGPT and Kaplan et al. do."""
        matmul = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        lookup = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)} - matmul
        unique = {id(p): p for p in self.parameters()}
        return sum(p.numel() for i, p in unique.items() if not (non_embedding and i in lookup))

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward ~ 6 x matmul parameters). Models add attention."""
        return 6 * self.num_params(non_embedding=True)
