"""The one model interface shared by the GPT and every baseline (DESIGN section 3), and the shared loss.

A model is an `nn.Module` with:
- `config`: a dataclass with `kind`, `vocab_size` and `block_size` (the context the model was trained on)
  that round-trips through JSON; it is the single statement of the model's shape;
- `features(idx, *, cache=None, attention=None) -> (B, T, C)` hidden states;
- `logits(h) -> (B, T, V)`: the LM head over features;
- `forward(idx, targets=None, *, cache=None, reduction="mean", attention=None, only_targets=False)`: logits
  without targets, loss with them (target -1 is ignored; `reduction="none"` gives per-token loss, 0 where
  ignored; `only_targets` runs the head only where a target is set: see `LanguageModel.forward`);
- `new_cache(batch, max_len, device, dtype)`: an explicit decoding state the caller owns and passes back in
  (GPT: a preallocated KV cache; RNN: its hidden state), or None when the model has none (MLP, CNN, bigram),
  in which case the engine recomputes over the last `block_size` tokens;
- `flops_per_token()`: forward+backward FLOPs per trained token (6N plus attention), for MFU.

Saving: `state_dict_for_save(model)` drops tied aliases (safetensors refuses tensors that share memory) and
`load_state(model, sd)` puts them back before a strict `load_state_dict`.

Training concerns (optimizer groups, schedules, MFU bookkeeping) stay in the trainer, never here.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import MinigptError


class DecodeState(Protocol):
    """A model's decoding state (what `new_cache` returns), owned by the caller and passed back into `features`,
    which reads it and advances it in place. What the engine relies on:

    - `pos`: tokens consumed so far;
    - `bounded`: True for a state that keeps one entry per token up to `max_len` (the GPT's KV cache: the text
      must fit, so the engine slides its window), False for a fixed-size summary of everything read (a
      recurrent state: any length fits and nothing ever slides);
    - `max_len`: the most tokens a bounded state holds;
    - `repeat(n)`: a state whose batch is each row repeated n times (n samples share one prefill);
    - `select(rows)`: a state of only those batch rows, in that order (finished samples leave the batch).
    """

    pos: int
    bounded: bool

    @property
    def max_len(self) -> int: ...

    def repeat(self, n: int) -> "DecodeState": ...

    def select(self, rows: torch.Tensor) -> "DecodeState": ...


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
                reduction: str = "mean", attention: list | None = None, only_targets: bool = False) -> torch.Tensor:
        """Logits (B, T, V) without targets; the loss with them. `only_targets`: compute the head and the loss only
        at the positions with a target (not -1), the same numbers for less work when most positions have none
        (fine-tuning: the prompt of an SFT, DPO or RL row is 60-80% of it, and the head over a 4,096-token
        vocabulary is about as costly as the tiny model's blocks; RL's step measured 1.7x faster). It picks the
        positions by a mask, so the shape depends on the data: a host sync on a GPU, a graph break compiled."""
        h = self.features(idx, cache=cache, attention=attention)
        if targets is None:
            return self.logits(h)
        if not only_targets:
            return lm_loss(self.logits(h), targets, reduction)
        keep = targets != -1
        loss = lm_loss(self.logits(h[keep]), targets[keep], reduction)  # (N,) for "none"
        if reduction != "none":
            return loss
        return torch.zeros(targets.shape, dtype=loss.dtype, device=loss.device).masked_scatter(keep, loss)

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


# ---------------------------------------------------------------------------------------------- saving


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper (its state dict keys lack the `_orig_mod.` prefix)."""
    return getattr(model, "_orig_mod", model)


def tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that share one tensor (e.g. a tied token table and head), first name first."""
    groups: dict[int, list[str]] = {}
    for name, t in _unwrap(model).named_parameters(remove_duplicate=False):
        groups.setdefault(id(t), []).append(name)
    for name, t in _unwrap(model).named_buffers(remove_duplicate=False):
        groups.setdefault(id(t), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once, contiguous: what `safetensors.torch.save_file` accepts
    (it refuses aliases). Tied weights keep their first name; `load_state` restores the others."""
    aliases = {name for names in tied_names(model) for name in names[1:]}
    return {k: v.contiguous() for k, v in _unwrap(model).state_dict().items() if k not in aliases}


def load_state(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True):
    """Inverse of `state_dict_for_save`: fill each tied alias from its saved partner, then `load_state_dict`."""
    sd = dict(state_dict)
    for names in tied_names(model):
        present = [n for n in names if n in sd]
        if not present:
            continue
        for n in present[1:]:
            if not torch.equal(sd[n], sd[present[0]]):
                raise MinigptError(f"{n} and {present[0]} differ in the saved weights but are one tensor in this "
                                   f"model; the checkpoint was saved with untied weights (check tie_embeddings)")
        for n in names:
            sd.setdefault(n, sd[present[0]])
    return _unwrap(model).load_state_dict(sd, strict=strict)
