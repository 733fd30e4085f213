"""GPT-specific tests: parity with Hugging Face GPT-2, attention capture, KV-cache edge cases, every
architecture variant, presets, initialisation and the FLOPs estimate. Shared interface tests: test_models.py."""
from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minigpt.common import MinigptError
from minigpt.models import shapes_only
from minigpt.models.base import load_state, state_dict_for_save
from minigpt.models.elementwise import _ReLU2, apply_rope, rms_norm, rope_tables
from minigpt.models.gpt import GPT, PRESETS, GPTConfig, KVCache, gpt2_compat, scaled
from minigpt.models.hf import from_hf_gpt2, hf_gpt2_config

V, T = 50, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**overrides) -> GPTConfig:
    return GPTConfig(**{"vocab_size": V, "block_size": T, "n_layer": 2, "n_head": 2, "n_embd": 32, **overrides})


def make(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(small(**overrides)).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # off the (partly zero) initialisation, so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def tokens(B: int = 2, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: move them so the test sees every tensor
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_logits(model, idx):
    with torch.no_grad():
        return model(idx).logits


def test_hf_gpt2_parity(hf_gpt2):
    ours = from_hf_gpt2(hf_gpt2.state_dict(), hf_gpt2_config(hf_gpt2.config)).eval()
    assert ours.config.tie_embeddings and ours.config.positions == "learned"
    assert ours.num_params() == sum(p.numel() for p in hf_gpt2.parameters())
    idx = torch.randint(0, 100, (3, 32))
    torch.testing.assert_close(ours(idx), hf_logits(hf_gpt2, idx), atol=1e-4, rtol=0)
    # cached decoding from imported weights agrees too
    cache = ours.new_cache(3, 32)
    stepped = torch.cat([ours(idx[:, :20], cache=cache), ours(idx[:, 20:], cache=cache)], dim=1)
    torch.testing.assert_close(stepped, hf_logits(hf_gpt2, idx), atol=1e-4, rtol=0)


def test_hf_gpt2_from_module_and_hub_style_safetensors(hf_gpt2, tmp_path):
    idx = torch.randint(0, 100, (2, 32))
    expected = hf_logits(hf_gpt2, idx)
    torch.testing.assert_close(from_hf_gpt2(hf_gpt2).eval()(idx), expected, atol=1e-4, rtol=0)
    # the hub's files: no `transformer.` prefix, no lm_head (tied), no config given (shape read from tensors)
    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in hf_gpt2.state_dict().items()
          if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))}
    save_file(sd, str(tmp_path / "model.safetensors"))
    imported = from_hf_gpt2(tmp_path / "model.safetensors", n_head=4).eval()
    torch.testing.assert_close(imported(idx), expected, atol=1e-4, rtol=0)
    # a folder with config.json as from save_pretrained; overrides crop the position table
    hf_gpt2.config.to_json_file(str(tmp_path / "config.json"))
    cropped = from_hf_gpt2(tmp_path, block_size=16).eval()
    assert cropped.config.block_size == 16 and cropped.config.n_head == 4
    torch.testing.assert_close(cropped(idx[:, :16]), expected[:, :16], atol=1e-4, rtol=0)


def test_hf_import_errors(hf_gpt2, tmp_path):
    with pytest.raises(MinigptError, match="only .safetensors"):
        (tmp_path / "w.bin").write_bytes(b"x")
        from_hf_gpt2(tmp_path / "w.bin")
    with pytest.raises(MinigptError, match="exceeds"):
        from_hf_gpt2(hf_gpt2, block_size=64)


# ---------------------------------------------------------------------------------------------- attention


def float64_attention(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention weights recomputed in float64 from the weights, by hand (no SDPA, no shared
    attention code); the residual stream between layers goes through the blocks, also in float64."""
    c = model.config
    m = copy.deepcopy(model).double()
    B, L = idx.shape
    x = m.transformer.wte(idx)
    if c.positions == "learned":
        x = x + m.transformer.wpe.weight[:L]
    freq = 1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * freq  # (L, hd/2)
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]  # (L, 1, hd/2)

    def rotate(t):  # (B, L, nh, hd)
        a, b = t[..., : c.head_dim // 2], t[..., c.head_dim // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    out = []
    for block in m.transformer.h:
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(c.n_embd, dim=2)
        q, k = (t.view(B, L, c.n_head, c.head_dim) for t in (q, k))
        if c.qk_norm:
            q, k = (t / t.pow(2).mean(-1, keepdim=True).add(c.norm_eps).sqrt() for t in (q, k))
        if c.positions == "rope":
            q, k = rotate(q), rotate(k)
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c.head_dim)
        out.append(s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf")).softmax(-1))
        rope = (torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1))  # the block's table layout
        x = block(x, rope if c.positions == "rope" else None, None, None, None)
    return out


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_attention_capture(positions):
    model = make(positions=positions)
    idx = tokens(2)
    weights: list[torch.Tensor] = []
    logits = model(idx, attention=weights)
    assert len(weights) == model.config.n_layer
    torch.testing.assert_close(logits, model(idx), atol=1e-5, rtol=0)  # explicit path == SDPA path
    for att in weights:
        assert att.shape == (2, model.config.n_head, T, T) and not att.requires_grad
        torch.testing.assert_close(att.sum(-1), torch.ones(2, model.config.n_head, T))
        assert (att.masked_select(torch.ones(T, T, dtype=torch.bool).triu(1)) == 0).all()
    for att, exact in zip(weights, float64_attention(model, idx)):
        torch.testing.assert_close(att.double(), exact, atol=1e-5, rtol=0)


def test_attention_capture_during_cached_decoding():
    model = make()
    idx = tokens(2)
    full: list[torch.Tensor] = []
    model(idx, attention=full)
    cache = model.new_cache(2, T)
    start = 0
    for n in (6, 1, 1, 8):  # prefill, two single steps, then a chunk onto a non-empty cache
        part: list[torch.Tensor] = []
        model(idx[:, start:start + n], cache=cache, attention=part)
        for layer, att in enumerate(part):
            assert att.shape == (2, model.config.n_head, n, start + n)
            torch.testing.assert_close(att, full[layer][:, :, start:start + n, :start + n], atol=1e-6, rtol=0)
        start += n


# ---------------------------------------------------------------------------------------------- hand-written ops


def test_hand_written_backwards_match_autograd():
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w, 1e-5), (x, w))
    assert torch.autograd.gradcheck(lambda x: rms_norm(x, None, 1e-5), (x,))
    assert torch.autograd.gradcheck(_ReLU2.apply, (x,))
    cos, sin = rope_tables(8, 5, 8, 10000.0)
    assert torch.autograd.gradcheck(lambda x: apply_rope(x, cos.double(), sin.double()), (x[:, :3],))
    # and the forward values against the plain formulas
    torch.testing.assert_close(rms_norm(x, w, 1e-5), F.rms_norm(x, (8,), w, 1e-5))
    torch.testing.assert_close(_ReLU2.apply(x), F.relu(x).square())
    ang = torch.arange(5, 8, dtype=torch.float64)[:, None, None] / 10000.0 ** (torch.arange(0, 8, 2) / 8)
    a, b = x[..., :4], x[..., 4:]
    torch.testing.assert_close(apply_rope(x[:, :3], cos.double(), sin.double()),
                               torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], -1)[:, :3])


def test_under_torch_compile_the_plain_formulas_are_traced(monkeypatch):
    """While torch.compile traces, each piece is the plain formula (inductor fuses it and derives the backward):
    no hand-written autograd.Function in the graph, same values, same gradients."""
    from minigpt.models.elementwise import relu2

    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = rope_tables(8, 0, 3, 10000.0)
    pieces = (relu2, lambda t: rms_norm(t, None, 1e-5), lambda t: apply_rope(t[:, :3], cos.double(), sin.double()))
    hand_written = lambda y: "BackwardCFunction" in [c.__name__ for c in type(y.grad_fn).__mro__]  # noqa: E731
    eager = [(f(x), torch.autograd.grad(f(x).sum(), x)[0]) for f in pieces]
    assert all(hand_written(y) for y, _ in eager)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for f, (y, g) in zip(pieces, eager):
        y2 = f(x)
        assert not hand_written(y2)
        torch.testing.assert_close(y2, y)
        torch.testing.assert_close(torch.autograd.grad(y2.sum(), x)[0], g)


# ---------------------------------------------------------------------------------------------- variants


VARIANTS = list(itertools.product(["rope", "learned"], ["rmsnorm", "layernorm"], ["relu2", "gelu", "gelu_tanh", "swiglu"]))


@pytest.mark.parametrize("positions,norm,activation", VARIANTS)
def test_variant_causal_and_cached_equals_full(positions, norm, activation):
    model = make(positions=positions, norm=norm, activation=activation, bias=norm == "layernorm",
                 qk_norm=activation != "gelu", tie_embeddings=activation == "gelu_tanh", logit_softcap=15.0)
    idx = tokens(2)
    full = model(idx)
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % V
    torch.testing.assert_close(model(changed)[:, :9], full[:, :9], atol=1e-5, rtol=0)
    cache = model.new_cache(2, T)
    out = torch.cat([model(idx[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 11), (11, T))], dim=1)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=0)


_CHUNK_MODELS = {False: make(), True: make(positions="learned")}


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, T - 1), max_size=6, unique=True), learned=st.booleans())
def test_any_chunking_of_cached_decoding_equals_full_forward(cuts, learned):
    model = _CHUNK_MODELS[learned]
    idx = tokens(2)
    bounds = [0, *sorted(cuts), T]
    cache = model.new_cache(2, T)
    with torch.no_grad():
        out = torch.cat([model(idx[:, a:b], cache=cache) for a, b in zip(bounds, bounds[1:])], dim=1)
        torch.testing.assert_close(out, model(idx), atol=1e-5, rtol=0)


def test_rope_runs_past_block_size_but_learned_positions_refuse():
    rope = make(positions="rope")
    long = tokens(1, 2 * T)
    full = rope(long)  # rotary angles are computed on the fly past the table
    cache = rope.new_cache(1, 2 * T)
    torch.testing.assert_close(torch.cat([rope(long[:, :T], cache=cache), rope(long[:, T:], cache=cache)], 1),
                               full, atol=1e-5, rtol=0)
    learned = make(positions="learned")
    with pytest.raises(MinigptError, match="block-size"):
        learned(long)
    cache = learned.new_cache(1, 2 * T)
    learned(long[:, :T], cache=cache)
    with pytest.raises(MinigptError, match="block-size"):
        learned(long[:, T:T + 1], cache=cache)


def test_cache_overflow_and_api():
    model = make()
    cache = model.new_cache(3, 8, "cpu", torch.float32)
    assert isinstance(cache, KVCache) and cache.batch == 3 and cache.max_len == 8 and cache.pos == 0
    assert cache.k.shape == (2, 3, 2, 8, 16)
    model(tokens(3, 8), cache=cache)
    with pytest.raises(MinigptError, match="overflow"):
        model(tokens(3, 1), cache=cache)
    assert cache.pos == 8  # a refused call changes nothing
    with pytest.raises(MinigptError, match="3 sequences"):
        model(tokens(2, 1), cache=model.new_cache(3, 8))
    cache.pos = 4  # rewind: decode again from position 4
    torch.testing.assert_close(model(tokens(3, 8)[:, 4:], cache=cache), model(tokens(3, 8))[:, 4:], atol=1e-5, rtol=0)


def test_bf16_autocast_training_step_and_cached_decoding():
    """Under CPU autocast the attention takes the explicit path (faster than SDPA's bf16 kernel on CPU)."""
    model = make().train()
    idx = tokens()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, tokens(seed=2))
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.h[0].attn.c_attn.weight.grad is not None
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(idx).float()
        cache = model.new_cache(2, T)  # float32 cache, bf16 activations
        stepped = torch.cat([model(idx[:, :7], cache=cache), model(idx[:, 7:8], cache=cache),
                             model(idx[:, 8:], cache=cache)], dim=1).float()
    torch.testing.assert_close(stepped, full, atol=0.1, rtol=0.05)
    torch.testing.assert_close(full, model(idx), atol=0.3, rtol=0.1)


def test_tied_weights_save_and_load(tmp_path):
    model = make(tie_embeddings=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    sd = state_dict_for_save(model)
    assert "lm_head.weight" not in sd and "transformer.wte.weight" in sd
    save_file(sd, str(tmp_path / "m.safetensors"))
    other = make(seed=1, tie_embeddings=True)
    load_state(other, load_file(str(tmp_path / "m.safetensors")))
    assert other.lm_head.weight is other.transformer.wte.weight
    torch.testing.assert_close(other(tokens()), model(tokens()), atol=0, rtol=0)
    untied = make(seed=2)
    with pytest.raises(MinigptError, match="tie_embeddings"):
        load_state(model, state_dict_for_save(untied) | {"transformer.wte.weight": torch.zeros(V, 32)})


# ---------------------------------------------------------------------------------------------- config, presets


def test_config_validation_names_the_flag():
    with pytest.raises(MinigptError, match="--n-head"):
        small(n_embd=30, n_head=4)
    with pytest.raises(MinigptError, match="--norm"):
        small(norm="batchnorm")
    with pytest.raises(MinigptError, match="--activation"):
        small(activation="tanh")
    with pytest.raises(MinigptError, match="--positions"):
        small(positions="alibi")
    with pytest.raises(MinigptError, match="--n-head"):
        small(n_embd=30, n_head=10)  # rope needs an even head size
    small(n_embd=30, n_head=10, positions="learned")
    with pytest.raises(MinigptError, match="--dropout"):
        small(dropout=1.0)
    with pytest.raises(MinigptError, match="--depth"):
        scaled(0)


def test_presets_and_param_counts():
    counts = {}
    for name, preset in PRESETS.items():
        with shapes_only():  # no memory, no init time
            model = GPT(GPTConfig(**{"vocab_size": 2048, **preset}))
        counts[name] = model.num_params()
    assert counts["tiny"] < 2e6 < counts["small"] < counts["medium"] < counts["base"]
    with shapes_only():
        gpt2 = GPT(GPTConfig(**PRESETS["gpt2"]))
    assert gpt2.num_params() == 124_439_808  # GPT-2 small, as transformers counts it
    assert gpt2.num_params(non_embedding=True) == 124_439_808 - 1024 * 768  # nanoGPT's 123.65M
    for depth in (1, 4, 12):
        GPTConfig(vocab_size=V, **scaled(depth))
    assert scaled(12) == dict(n_layer=12, n_embd=768, n_head=12)


def test_gpt2_compat_is_gpt2():
    c = GPTConfig(vocab_size=V, **gpt2_compat)
    assert (c.positions, c.norm, c.bias, c.activation, c.tie_embeddings, c.qk_norm, c.zero_init) == \
        ("learned", "layernorm", True, "gelu_tanh", True, False, False)


def test_init():
    torch.manual_seed(0)
    gpt2 = GPT(GPTConfig(vocab_size=1000, n_layer=2, n_embd=128, n_head=4, block_size=64, **gpt2_compat))
    assert abs(gpt2.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 5e-4
    assert abs(gpt2.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / 2) < 3e-4
    assert (gpt2.transformer.h[0].attn.c_attn.bias == 0).all() and (gpt2.transformer.ln_f.weight == 1).all()
    modern = GPT(GPTConfig(vocab_size=1000, n_layer=2, n_embd=128, n_head=4, block_size=64, zero_init=True))
    for block in modern.transformer.h:
        assert (block.attn.c_proj.weight == 0).all() and (block.mlp.c_proj.weight == 0).all()
    assert (modern.lm_head.weight == 0).all()
    idx = torch.randint(0, 1000, (2, 64))
    assert modern(idx, idx).item() == pytest.approx(math.log(1000), abs=1e-5)  # exactly uniform at the start


def test_flops_per_token():
    model = make()
    c = model.config
    n = model.num_params(non_embedding=True)
    assert n == model.num_params() - V * c.n_embd  # untied: the token table is a lookup; the head is a matmul
    assert model.flops_per_token() == 6 * n + 12 * c.n_layer * c.n_embd * c.block_size


def test_dropout_trains_and_eval_is_deterministic():
    model = make(dropout=0.5)
    idx = tokens()
    torch.testing.assert_close(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))
    assert torch.allclose(model.eval()(idx), model(idx))
