"""GPT: a decoder-only transformer in one file, with GPT-2's architecture and minigpt's modern default.

Owns `GPTConfig` (every architectural choice is one field and one flag), the size `PRESETS` and `scaled(depth)`,
`KVCache` (the explicit decoding state the engine owns), `GPT` itself.
The Hugging Face mapping (GPT-2 import) lives in models/hf.py, the elementwise pieces with their hand-written
backward passes in models/elementwise.py. Training concerns (optimizer groups, schedules, MFU) live in train/.

Two architectures share the code. `gpt2_compat` is GPT-2 (learned positions, LayerNorm with biases, GELU-tanh,
tied head) and matches `transformers` to 1e-5 given the same weights. The default is the modern recipe of
nanochat and Llama-era models: rotary positions, RMSNorm without parameters, QK-norm, ReLU^2 MLP, no biases,
untied head (GPT-2's initialisation; see `init_weights`). On the reference CPU recipe (Tiny Shakespeare
characters, 4x4x128, block 64, batch 12, AdamW 1e-3, 2000 steps) it reaches validation loss 1.67 where the
GPT-2 architecture reaches 1.89, at the same FLOPs per token (1000 steps: 1.79 vs 2.12). Ablations at 1000 steps
(against a zero-initialised variant at 1.87): no QK-norm +0.04; LayerNorm, or a logit softcap of 15, within 0.01.

Speed (scripts/bench_model_step.py, recipe shape, one step incl. fused AdamW, idle 2 cores): eager fp32 the
default costs ~5% more per step than GPT-2's layout (QK-norms, rotations; the hand-written backwards of
elementwise.py halve that cost), torch.compile erases the difference (+4-6%). In the whole training loop
(scripts/bench_train.py) both run at 1.12-1.15x the reference trainer's tokens/s. Under CPU bf16 autocast
(AVX512-BF16) the step is 1.4x (eager) to 1.9x (compiled) faster than the reference's fp32 step.

Attention runs through `F.scaled_dot_product_attention` (flash kernels on CPU and CUDA). Passing `attention=[]`
switches to the explicit softmax(QK^T / sqrt(d)) path, and each block appends its detached (B, n_head, T_q, T_k)
weights to the list; ordinary calls never pay for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import MinigptError
from ..config import check, option
from .base import LanguageModel
from .elementwise import RMSNorm, apply_rope, relu2, rms_norm, rope_tables

NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")
ACTIVATIONS = ("relu2", "gelu", "gelu_tanh", "swiglu")


@dataclass
class GPTConfig:
    kind: str = option("gpt", "model family")
    vocab_size: int = option(50304, "vocabulary size (training takes it from the tokenizer)")
    block_size: int = option(256, "context length in tokens that the model trains on")
    n_layer: int = option(4, "number of transformer blocks")
    n_head: int = option(4, "attention heads per block (n_embd must divide by it)")
    n_embd: int = option(128, "width of the residual stream")
    mlp_hidden: int | None = option(None, "MLP hidden width; default 4*n_embd, or for swiglu 8/3*n_embd rounded "
                                          "up to a multiple of 64 (about the same parameters)")
    dropout: float = option(0.0, "dropout on embeddings, attention weights and residual branches")
    bias: bool = option(False, "biases in linear layers and LayerNorm (GPT-2: yes)")
    norm: Literal["rmsnorm", "layernorm"] = option("rmsnorm", "normalisation: rmsnorm (no parameters) or layernorm "
                                                               "(a gain, and a bias with --bias; GPT-2)")
    norm_eps: float = option(1e-5, "epsilon of the normalisation layers")
    positions: Literal["rope", "learned"] = option("rope", "rotary position embeddings, or a learned table (GPT-2)")
    rope_theta: float = option(10000.0, "rotary base frequency")
    activation: Literal["relu2", "gelu", "gelu_tanh", "swiglu"] = option(
        "relu2", "MLP activation: relu2 (ReLU squared), gelu, gelu_tanh (GPT-2), swiglu (gated SiLU)")
    qk_norm: bool = option(True, "RMS-normalise queries and keys per head (stabler attention logits)")
    tie_embeddings: bool = option(False, "share the token embedding with the output head (GPT-2: yes)")
    logit_softcap: float | None = option(None, "squash logits as c*tanh(logits/c); none to turn off")
    zero_init: bool = option(False, "start residual projections and the untied head at zero (nanochat) instead "
                                    "of GPT-2's N(0, 0.02/sqrt(2*n_layer)); with AdamW it trained worse here")

    def __post_init__(self) -> None:
        check(self.kind == "gpt", "kind", f"GPTConfig is for kind 'gpt', not {self.kind!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name,
                  f"must be a positive integer, got {getattr(self, name)!r}")
        check(self.n_embd % self.n_head == 0, "n_head",
              f"n_embd={self.n_embd} must divide by n_head={self.n_head}; pick a divisor")
        check(self.norm in NORMS, "norm", f"unknown {self.norm!r}; use one of {', '.join(NORMS)}")
        check(self.positions in POSITIONS, "positions", f"unknown {self.positions!r}; use one of {', '.join(POSITIONS)}")
        check(self.activation in ACTIVATIONS, "activation",
              f"unknown {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        check(self.positions != "rope" or self.head_dim % 2 == 0, "n_head",
              f"rotary positions need an even head size; n_embd/n_head = {self.head_dim}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.norm_eps > 0, "norm_eps", "must be positive")
        check(self.rope_theta > 0, "rope_theta", "must be positive")
        check(self.mlp_hidden is None or self.mlp_hidden >= 1, "mlp_hidden", "must be a positive integer or none")
        check(self.logit_softcap is None or self.logit_softcap > 0, "logit_softcap", "must be positive or none")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.activation == "swiglu":
            return -(-8 * self.n_embd // 3 // 64) * 64
        return 4 * self.n_embd


# The option values that make the architecture GPT-2 (Radford et al. 2019; nanoGPT's model.py).
gpt2_compat: dict[str, Any] = dict(positions="learned", norm="layernorm", norm_eps=1e-5, bias=True,
                                   activation="gelu_tanh", tie_embeddings=True, qk_norm=False, logit_softcap=None,
                                   zero_init=False, mlp_hidden=None)

# Sizes. "blocks" = parameters in the transformer blocks with the default options (12 * n_layer * n_embd^2; the
# norms have none); the token table and the untied head add vocab_size * n_embd each.
PRESETS: dict[str, dict[str, Any]] = {
    # 4x4x128, block 128: blocks 0.79M (1.3M in all at a 2k vocab). Trains in minutes on 2 CPU cores.
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
    # 6x6x384, block 256 (nanoGPT's Shakespeare-char shape): blocks 10.6M. An hour or so on a laptop CPU.
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    # 8x8x512, block 512: blocks 25.2M. A GPU, or a patient night on CPU.
    "medium": dict(n_layer=8, n_head=8, n_embd=512, block_size=512),
    # 12x12x768, block 1024, GPT-2 small's shape with the modern options: blocks 84.9M (162M in all at V=50304).
    "base": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    # GPT-2 small exactly: 124.4M parameters (85.1M in blocks with their LayerNorms and biases, 38.6M in the
    # tied 50257 x 768 token table, 0.8M positions). `from_hf_gpt2` loads OpenAI's weights into it.
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, **gpt2_compat),
}


def scaled(depth: int) -> dict[str, int]:
    """One size dial (nanochat's): `depth` layers, width 64*depth, heads of 64 dims. depth 4 ~ 3.1M
    parameters in the blocks, 8 ~ 25M, 12 ~ 85M, 20 ~ 393M (12 * n_embd^2 per layer, so ~49k * depth^3)."""
    check(isinstance(depth, int) and depth >= 1, "depth", f"must be a positive integer, got {depth!r}")
    return dict(n_layer=depth, n_embd=64 * depth, n_head=depth)


# ---------------------------------------------------------------------------------------------- KV cache


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to `max_len` positions.

    `k`, `v`: (n_layer, B, n_head, max_len, head_dim); positions [0, pos) are filled. `GPT.features(idx,
    cache=c)` writes the new tokens at pos.. pos+T-1 and advances `pos` by T. Set `pos` back to rewind. New
    tokens see every cached one and each other causally, so a prompt can be fed in chunks of any size. Decode
    under torch.no_grad(): the writes are in place. Overflowing max_len (or block_size with learned positions)
    raises MinigptError; sliding a window is the engine's job.

    `pad` (B,), when set, holds prompts of different lengths in one batch: row b's first pad[b] slots are
    left padding that no query attends to, and its token at cache column j has position j - pad[b], so every row
    computes exactly what it would alone (the engine's batched generation over many prompts).
    """

    k: torch.Tensor
    v: torch.Tensor
    pos: int = 0
    pad: torch.Tensor | None = None
    bounded = True  # one entry per token, up to max_len (models.base.DecodeState)

    @property
    def batch(self) -> int:
        return self.k.size(1)

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def repeat(self, n: int) -> "KVCache":
        """A copy whose batch is each row repeated n times (row i becomes rows i*n .. i*n+n-1)."""
        pad = None if self.pad is None else self.pad.repeat_interleave(n)
        return KVCache(self.k.repeat_interleave(n, dim=1), self.v.repeat_interleave(n, dim=1), self.pos, pad)

    def select(self, rows: torch.Tensor) -> "KVCache":
        """The cache of only these batch rows, in this order."""
        pad = None if self.pad is None else self.pad.index_select(0, rows)
        return KVCache(self.k.index_select(1, rows), self.v.index_select(1, rows), self.pos, pad)


# ---------------------------------------------------------------------------------------------- layers


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout as a plain call, skipped when off: decoding one token runs ~100 small ops, and a module per
    dropout site would add a call each."""
    return F.dropout(x, p, True) if training and p else x


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
    return RMSNorm(config.norm_eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qk_norm, self.eps, self.dropout = config.qk_norm, config.norm_eps, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv: tuple[torch.Tensor, torch.Tensor, int] | None, mask: torch.Tensor | None,
                attention: list | None) -> torch.Tensor:
        B, T, C = x.shape
        nh, hd = self.n_head, self.head_dim
        qkv = self.c_attn(x).view(B, T, 3 * nh, hd)  # (B, T, 3*nh, hd): queries, keys, values of every head
        qk, v = qkv.split((2 * nh, nh), dim=2)  # (B, T, 2*nh, hd), (B, T, nh, hd)
        if self.qk_norm:  # queries and keys together: half the kernel launches
            qk = rms_norm(qk, None, self.eps)
        if rope is not None:
            qk = apply_rope(qk, *rope)
        if qk.dtype != v.dtype:  # autocast may have upcast the norm or rotation
            qk = qk.to(v.dtype)
        q, k = qk.transpose(1, 2).split(nh, dim=1)  # (B, nh, T, hd) each
        v = v.transpose(1, 2)  # (B, nh, T, hd)
        causal = True
        if kv is not None:
            k_cache, v_cache, pos = kv  # (B, nh, max_len, hd) each
            k_cache[:, :, pos:pos + T] = k
            v_cache[:, :, pos:pos + T] = v
            k, v = k_cache[:, :, :pos + T], v_cache[:, :, :pos + T]  # (B, nh, pos+T, hd)
            if k.dtype != q.dtype:
                k, v = k.to(q.dtype), v.to(q.dtype)
            causal = pos == 0  # with earlier tokens cached, `mask` (or nothing, for T=1) says what to see
        dropout = self.dropout if self.training else 0.0
        # SDPA, except when the weights are wanted, or for bf16/fp16 on CPU, where torch's flash kernel is
        # 3x slower than the explicit maths at the recipe shape (and 1.5x at T=256, hd=64)
        if attention is None and (q.device.type != "cpu" or q.dtype == torch.float32):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                               is_causal=causal and mask is None)
        else:
            y = self._explicit(q, k, v, mask, causal, dropout, attention)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh*hd): heads side by side
        return _dropout(self.c_proj(y), self.dropout, self.training)

    def _explicit(self, q, k, v, mask, causal, dropout, attention: list | None) -> torch.Tensor:
        """softmax(QK^T / sqrt(hd)) V, the same maths as SDPA; appends the weights to `attention` if given."""
        T, S = q.size(-2), k.size(-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, nh, T, S)
        if mask is None and causal:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(q.dtype)
        if attention is not None:
            attention.append(att.detach())
        return F.dropout(att, dropout, self.training) @ v  # (B, nh, T, hd)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.activation = config.activation
        gated = 2 if config.activation == "swiglu" else 1
        self.c_fc = nn.Linear(config.n_embd, gated * config.hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, hidden) or (B, T, 2*hidden) for swiglu
        if self.activation == "relu2":
            h = relu2(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        elif self.activation == "gelu":
            h = F.gelu(h)
        else:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return _dropout(self.c_proj(h), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.ln_2, self.mlp = make_norm(config), MLP(config)

    def forward(self, x, rope, kv, mask, attention):
        x = x + self.attn(self.ln_1(x), rope, kv, mask, attention)
        return x + self.mlp(self.ln_2(x))


# ---------------------------------------------------------------------------------------------- the model


class GPT(LanguageModel):
    """Token (+ learned position) embedding, n_layer pre-norm blocks, final norm, linear head.

    Parameter names follow nanoGPT and Hugging Face GPT-2 (transformer.h.0.attn.c_attn.weight, ...).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=make_norm(config),
        ))
        if config.positions == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        if config.positions == "rope":  # not saved: recomputed from the config
            cos, sin = rope_tables(config.head_dim, 0, config.block_size, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's: weights N(0, 0.02), biases 0, norm gains 1, residual projections N(0, 0.02/sqrt(2*n_layer)) so
        the residual stream's variance does not grow with depth. `zero_init` (nanochat's choice, made for Muon)
        starts the residual projections and an untied head at 0: every block starts as the identity and the
        initial loss is exactly ln V. With AdamW on the recipe shape it ended 0.08 nats worse after 1000 steps
        (zero head); zero projections alone were even with GPT-2's init (1.797 vs 1.794), so the default is GPT-2's."""
        c = self.config
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.zeros_(p) if c.zero_init else nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))
            else:
                nn.init.normal_(p, 0.0, 0.02)
        if c.zero_init and not c.tie_embeddings:
            nn.init.zeros_(self.lm_head.weight)

    def features(self, idx: torch.Tensor, *, cache: KVCache | None = None,
                 attention: list | None = None) -> torch.Tensor:
        B, T = idx.shape
        pos = 0 if cache is None else cache.pos
        pad = None if cache is None else cache.pad
        self._check_room(B, pos, T, cache)
        x = self.transformer.wte(idx)  # (B, T, C)
        if pad is None:
            x, rope, mask = self._positions(x, pos, T)
        else:
            x, rope, mask = self._padded_positions(x, pos, T, pad)
        x = _dropout(x, self.config.dropout, self.training)
        for i, block in enumerate(self.transformer.h):
            kv = None if cache is None else (cache.k[i], cache.v[i], pos)
            x = block(x, rope, kv, mask, attention)
        if cache is not None:
            cache.pos = pos + T
        return self.transformer.ln_f(x)

    def _positions(self, x: torch.Tensor, pos: int, T: int):
        """Positions pos .. pos+T-1 for every row: learned embeddings added, rotary tables, and the mask for new
        tokens after cached ones (None when plain causal attention is right)."""
        c = self.config
        if c.positions == "learned":
            x = x + self.transformer.wpe.weight[pos:pos + T]  # (T, C) broadcast over the batch
        rope = None
        if c.positions == "rope":
            if pos + T <= self.rope_cos.size(0):
                rope = (self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T])
            else:  # past the trained context (rope only): compute the angles on the fly
                rope = rope_tables(c.head_dim, pos, pos + T, c.rope_theta, x.device)
        mask = None
        if pos > 0 and T > 1:  # new token i (absolute pos+i) sees cached keys and new keys up to itself
            mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(pos)  # (T, pos+T)
        return x, rope, mask

    def _padded_positions(self, x: torch.Tensor, pos: int, T: int, pad: torch.Tensor):
        """As `_positions` for left-padded rows (KVCache.pad): row b's cache column j is its position j - pad[b];
        its padding is masked from every query (a padding query sees only itself, so no softmax row is empty)."""
        c = self.config
        cols = torch.arange(pos, pos + T, device=x.device)  # (T,) cache columns of the new tokens
        positions = (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
        if c.positions == "learned":
            x = x + self.transformer.wpe(positions)
        rope = None
        if c.positions == "rope":
            table = (self.rope_cos, self.rope_sin)
            if pos + T > self.rope_cos.size(0):
                table = rope_tables(c.head_dim, 0, pos + T, c.rope_theta, x.device)
            rope = (table[0][positions], table[1][positions])  # (B, T, 1, hd) each
        keys = torch.arange(pos + T, device=x.device)[None, None, :]  # (1, 1, S)
        visible = (keys >= pad[:, None, None]) & (keys <= cols[None, :, None])  # (B, T, S): own text, causal
        mask = (visible | (keys == cols[None, :, None]))[:, None]  # (B, 1, T, S)
        return x, rope, mask

    def _check_room(self, B: int, pos: int, T: int, cache: KVCache | None) -> None:
        if cache is not None and B != cache.batch:
            raise MinigptError(f"KV cache holds {cache.batch} sequences but {B} were given; use cache.repeat(n)")
        if cache is not None and pos + T > cache.max_len:
            raise MinigptError(f"KV cache overflow: {pos} cached + {T} new tokens > max_len {cache.max_len}; "
                               f"make a larger cache with new_cache(), or slide the window")
        longest = pos + T - (0 if cache is None or cache.pad is None else int(cache.pad.min()))
        if self.config.positions == "learned" and longest > self.config.block_size:
            raise MinigptError(f"position {longest - 1} is beyond --block-size {self.config.block_size} "
                               f"(learned positions stop there); keep at most {self.config.block_size} tokens")

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(h)  # (B, T, V)
        cap = self.config.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `max_len` tokens (defaults: the model's device/dtype)."""
        c = self.config
        if batch < 1 or max_len < 1:
            raise MinigptError(f"new_cache: batch ({batch}) and max_len ({max_len}) must be positive")
        ref = self.lm_head.weight
        shape = (c.n_layer, batch, c.n_head, max_len, c.head_dim)
        kw = dict(device=device or ref.device, dtype=dtype or ref.dtype)
        return KVCache(torch.zeros(shape, **kw), torch.zeros(shape, **kw), 0)

    def flops_per_token(self) -> int:
        """6N (forward 2N + backward 4N for the N matmul weights) plus attention's QK^T and AV: 12 * n_layer *
        n_embd * block_size per token at full context (the PaLM appendix B / nanoGPT estimate)."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_embd * c.block_size
