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
    values pushed into about [0.7, 1.2]). `g` is one matrix or a stack of them (..., rows, cols), each
    orthogonalized on its own: one batched product per term instead of one per matrix."""
    a, b, c = NS_COEFFS
    x = g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    batch = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])
    for _ in range(steps):
        A = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(A, A, A, beta=b, alpha=c), x, beta=a)  # a x + (b A + c A^2) x
    x = x.reshape(*batch, *x.shape[-2:])
    return (x.mT if tall else x).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """`algorithm="muon"` groups: momentum (Nesterov) + orthogonalized updates; `"adamw"` groups: AdamW. Both
    apply decoupled weight decay lr * weight_decay * p.

    A Muon group's matrices of the same shape are updated together (stacked, one batched Newton-Schulz, foreach
    updates): a 6-layer model has 24 hidden matrices of 4 shapes, and on a GPU, where a small matrix product
    costs about as much as launching it, one iteration per shape instead of per matrix is several times faster.
    The result is the same as one matrix at a time (a test checks it)."""

    def __init__(self, groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 momentum: float = 0.95, eps: float = 1e-8, ns_steps: int = 5):
        defaults = dict(lr=lr, betas=betas, momentum=momentum, eps=eps, ns_steps=ns_steps, weight_decay=0.0,
                        algorithm="adamw")
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params and group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            if group["algorithm"] == "muon":
                self._muon(params, group)
            else:
                for p in params:
                    self._adamw(p, self.state[p], group)
        return loss

    def _muon(self, params: list[torch.Tensor], group: dict) -> None:
        if not params:
            return
        for p in params:
            if "momentum" not in self.state[p]:
                self.state[p]["momentum"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum"] for p in params]
        grads = [p.grad for p in params]
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, grads)
        updates = torch._foreach_add(grads, bufs, alpha=group["momentum"])  # Nesterov
        by_shape: dict[torch.Size, list[int]] = {}
        for i, p in enumerate(params):
            by_shape.setdefault(p.shape, []).append(i)
        for shape, idx in by_shape.items():
            ortho = orthogonalize(torch.stack([updates[i] for i in idx]), group["ns_steps"])
            scale = 0.2 * math.sqrt(max(shape))
            torch._foreach_add_([params[i] for i in idx], list(ortho.unbind(0)), alpha=-group["lr"] * scale)

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
