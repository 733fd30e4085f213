"""Muon for the hidden matrices, AdamW for everything else, as one `torch.optim.Optimizer`.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; used by modded-nanogpt and nanochat) keeps a
momentum of each 2-D weight's gradient and replaces the update by the nearest semi-orthogonal matrix, computed
with five steps of a quintic Newton-Schulz iteration on the normalised momentum:

    X <- a X + (b A + c A^2) X,   A = X X^T,   (a, b, c) = (3.4445, -4.7750, 2.0315)

so every direction of the update moves by about the same amount, whatever the gradient's conditioning. The
update is scaled by 0.2 * sqrt(max(rows, cols)) so its RMS matches AdamW's (Liu et al. 2025, "Muon is
scalable"), which lets one learning rate and one weight decay serve both kinds of parameters. Matrices that are
lookup tables or the output head (embeddings, lm_head) and every vector (norms, biases) use AdamW, as in both
codebases above. Groups carry `algorithm` ("muon" or "adamw"); all state is tensors, so exact resume works
through `state_dict()` like any torch optimizer.
"""
from __future__ import annotations

import math

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)


@torch.no_grad()
def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (the quintic Newton-Schulz iteration; exact singular vectors, singular
    values pushed into about [0.7, 1.2])."""
    a, b, c = NS_COEFFS
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """`algorithm="muon"` groups: momentum (Nesterov) + orthogonalized updates; `"adamw"` groups: AdamW. Both
    apply decoupled weight decay lr * weight_decay * p."""

    def __init__(self, groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 momentum: float = 0.95, eps: float = 1e-8, ns_steps: int = 5):
        defaults = dict(lr=lr, betas=betas, momentum=momentum, eps=eps, ns_steps=ns_steps, weight_decay=0.0,
                        algorithm="adamw")
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                if group["algorithm"] == "muon":
                    self._muon(p, state, group)
                else:
                    self._adamw(p, state, group)
        return loss

    @staticmethod
    def _muon(p: torch.Tensor, state: dict, group: dict) -> None:
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(p)
        buf = state["momentum"]
        buf.mul_(group["momentum"]).add_(p.grad)
        update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
        scale = 0.2 * math.sqrt(max(p.size(0), p.size(1)))
        p.add_(orthogonalize(update, group["ns_steps"]), alpha=-group["lr"] * scale)

    @staticmethod
    def _adamw(p: torch.Tensor, state: dict, group: dict) -> None:
        if "exp_avg" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = float(state["step"])
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** step))
