"""The elementwise pieces of the modern GPT block, with hand-written backward passes: RMSNorm, ReLU^2, rotary.

Eager PyTorch on CPU runs each op as its own pass over memory, and autograd's generic backward of the composite
formulas takes 2-5x more passes than needed (relu(x).square() alone cost ~2 ms per layer at the recipe shape, 4x
the version here). Without gradients (evaluation, decoding) each is the plain formula instead: an
autograd.Function costs ~10 us per call, about a fifth of a decode step of the tiny model. Under torch.compile
each is the plain formula too: inductor fuses it with its neighbours and derives a fused backward, which beats
the hand-written one (an autograd.Function is an opaque region it cannot fuse across). tests/test_gpt.py checks
each against autograd (gradcheck).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _RMSNorm(torch.autograd.Function):
    """y = x / sqrt(mean(x^2) + eps) (* weight), over the last dim."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat if weight is None else xhat * weight

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        grad_weight = None
        if weight is not None:
            if ctx.needs_input_grad[1]:
                grad_weight = (g * xhat).reshape(-1, g.size(-1)).sum(0)
            g = g * weight
        # d xhat/dx = rstd * (I - xhat xhat^T / C)
        m = (g * xhat).mean(-1, keepdim=True)
        return torch.addcmul(g, xhat, m, value=-1).mul_(rstd), grad_weight, None


def _plain() -> bool:
    """Use the plain formula: no gradient needed, or torch.compile is tracing (it fuses the formula itself)."""
    return not torch.is_grad_enabled() or torch.compiler.is_compiling()


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    if _plain():  # torch's kernel, without autograd.Function's ~10 us per call
        return F.rms_norm(x, (x.size(-1),), weight, eps)
    return _RMSNorm.apply(x, weight, eps)


class RMSNorm(nn.Module):
    """Parameter-free RMSNorm (as nanochat and modded-nanogpt): a learned gain would only rescale the input of
    the linear layer that always follows it, which can learn that scale itself; dropping it saves three passes
    over memory per norm."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, None, self.eps)


class _ReLU2(torch.autograd.Function):
    """relu(x)^2 (So et al. 2021, "Primer"), keeping relu(x) for the backward: d/dx = 2 relu(x)."""

    @staticmethod
    def forward(ctx, x):
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return (g * r).mul_(2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (..., hd/2) each
    return torch.cat((x2, x1), dim=-1).mul_(sin).addcmul_(x, cos)  # x*cos + (x2, x1)*(-sin, sin)


class _Rope(torch.autograd.Function):
    """Rotary embedding (Su et al. 2021), Llama's layout: pairs (x[i], x[i + hd/2]) turn by position * freq[i].
    `cos` = (cos, cos) and `sin` = (-sin, sin) along the head dim. A rotation's backward is the inverse rotation."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved_tensors
        return _rotate(g, cos, -sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, heads, hd) by the tables from `rope_tables` (cast to x's dtype)."""
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return _rotate(x, cos, sin) if _plain() else _Rope.apply(x, cos, sin)


def rope_tables(head_dim: int, start: int, end: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, cos) and (-sin, sin) of positions [start, end), each (T, 1, head_dim) to broadcast over heads. On the
    meta device (`models.shapes_only`) only their shapes: `arange` there imports torch._dynamo, as `normal_` does."""
    if torch.device(device or torch.get_default_device()).type == "meta":
        shape = (end - start, 1, head_dim)
        return torch.empty(shape, device="meta"), torch.empty(shape, device="meta")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.outer(torch.arange(start, end, dtype=torch.float64, device=device), inv_freq)  # (T, hd/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), -1).float()[:, None, :], torch.cat((-sin, sin), -1).float()[:, None, :]


def relu2(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2, the MLP activation of the default options."""
    return F.relu(x).square() if _plain() else _ReLU2.apply(x)
