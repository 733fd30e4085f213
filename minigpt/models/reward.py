"""RewardModel: any language model's features plus a scalar head (composition, not subclassing).

The score of a sequence is the head applied to the hidden state at its last scored position (the last place
whose target is not -1, i.e. where the model has read the whole reply). Trained with the Bradley-Terry
pairwise loss (objectives.RewardPairwise, objectives.bradley_terry_loss); InstructGPT (Ouyang et al. 2022) section 3.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..config import option


@dataclass
class RewardConfig:
    kind: str = option("reward", "model family")
    base: dict[str, Any] = field(default_factory=dict, metadata={"help": "config of the language model inside",
                                                                  "cli": False})

    @property
    def block_size(self) -> int:
        return int(self.base["block_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.base["vocab_size"])


class RewardModel(nn.Module):
    def __init__(self, config: RewardConfig):
        super().__init__()
        from . import build_model, config_from_dict

        self.config = config
        self.lm = build_model(config_from_dict(config.base))
        width = self.lm.features(torch.zeros(1, 1, dtype=torch.long)).size(-1)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) scores, read at each row's last position whose target is not -1."""
        h = self.lm.features(idx)  # (B, T, C)
        scored = targets != -1
        last = torch.where(scored.any(1), scored.size(1) - 1 - scored.flip(1).float().argmax(1),
                           torch.zeros_like(scored[:, 0], dtype=torch.long))
        return self.head(h[torch.arange(idx.size(0), device=idx.device), last]).squeeze(-1).float()

    def num_params(self) -> int:
        return self.lm.num_params() + sum(p.numel() for p in self.head.parameters())

    def flops_per_token(self) -> int:
        return self.lm.flops_per_token()
