"""The model interface, tested the same way for every registered kind (GPT and each baseline).

A kind gets a small config from `config_from_dict({"kind", "vocab_size", "block_size", **SMALL[kind]})`, so a new
baseline is covered as soon as it is registered; its defaults must be small enough, or it gets a SMALL entry.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minigpt.config import to_dict
from minigpt.models import build_model, config_from_dict, kinds, shapes_only
from minigpt.models.base import load_state, state_dict_for_save

V, T = 50, 16
SMALL: dict[str, dict] = {
    "gpt": dict(n_layer=2, n_head=2, n_embd=32),
}
KINDS = kinds()


pytestmark = pytest.mark.usefixtures("one_thread")


def make_config(kind: str, **overrides):
    return config_from_dict({"kind": kind, "vocab_size": V, "block_size": T, **SMALL.get(kind, {}), **overrides})


def make(kind: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(make_config(kind, **overrides)).eval()


def tokens(B: int = 2, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, length), generator=torch.Generator().manual_seed(seed))


def perturb_(model: torch.nn.Module, seed: int = 3) -> None:
    """Move every weight off its initial value (zero-initialised layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes(kind):
    model = make(kind)
    idx = tokens(3)
    h = model.features(idx)
    assert h.dim() == 3 and h.shape[:2] == (3, T)
    assert model.logits(h).shape == (3, T, V)
    assert model(idx).shape == (3, T, V)
    loss = model(idx, tokens(3, seed=2))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.num_params() > 0 and model.flops_per_token() > 0
    assert model.block_size == T


@pytest.mark.parametrize("kind", KINDS)
def test_initial_loss_near_uniform(kind):
    model = make(kind)
    loss = model(tokens(8), tokens(8, seed=2)).item()
    assert abs(loss - math.log(V)) < 0.12 * math.log(V), (loss, math.log(V))


@pytest.mark.parametrize("kind", KINDS)
def test_causality(kind):
    model = make(kind)
    perturb_(model)
    idx = tokens(2)
    full = model(idx)
    for t in (0, 5, T - 2):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1 + torch.arange(2)) % V
        out = model(changed)
        torch.testing.assert_close(out[:, :t + 1], full[:, :t + 1], atol=1e-5, rtol=0)
        assert not torch.allclose(out[:, t + 1], full[:, t + 1]), "the changed token should change its own logits"


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_one_batch(kind):
    """A batch every kind can learn (each next token is a fixed function of the current one)."""
    model = make(kind).train()
    perm = torch.randperm(V, generator=torch.Generator().manual_seed(0))
    idx = torch.empty(4, T + 1, dtype=torch.long)
    idx[:, 0] = torch.tensor([1, 7, 13, 29])
    for t in range(T):
        idx[:, t + 1] = perm[idx[:, t]]
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    first = model(x, y).item()
    for _ in range(200):
        loss = model(x, y)
        if loss.item() < 0.2:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2, (first, loss.item())


@pytest.mark.parametrize("kind", KINDS)
def test_reduction_none_matches_manual_cross_entropy(kind):
    model = make(kind)
    perturb_(model)
    idx, targets = tokens(2), tokens(2, seed=2)
    targets[0, 3] = targets[1, 0] = targets[1, -1] = -1
    per_token = model(idx, targets, reduction="none")
    assert per_token.shape == (2, T)
    logits = model(idx)
    keep = targets != -1
    manual = F.cross_entropy(logits[keep], targets[keep], reduction="none")
    torch.testing.assert_close(per_token[keep], manual)
    assert (per_token[~keep] == 0).all()
    torch.testing.assert_close(model(idx, targets), manual.mean())
    torch.testing.assert_close(model(idx, targets, reduction="sum"), manual.sum())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_only_targets_gives_the_same_loss_and_gradients(kind, reduction):
    """The head computed only where there is a target (fine-tuning's shortcut) changes no number: the loss and
    every parameter's gradient equal the full head's."""
    model = make(kind)
    perturb_(model)
    idx, targets = tokens(3), tokens(3, seed=2)
    targets[:, : T // 2] = -1  # a prompt with no targets, as in SFT, DPO and RL rows
    targets[2, -2] = -1

    def run(only: bool):
        model.zero_grad()
        loss = model(idx, targets, reduction=reduction, only_targets=only)
        weights = torch.rand(loss.shape, generator=torch.Generator().manual_seed(0))  # a different one per token
        (loss * weights).sum().backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (full, full_grads), (only, only_grads) = run(False), run(True)
    torch.testing.assert_close(only, full)
    assert full_grads.keys() == only_grads.keys() and full_grads
    for name in full_grads:
        # the same sums in another order (a matmul over fewer rows): float32 rounding apart
        scale = full_grads[name].abs().max().item()
        torch.testing.assert_close(only_grads[name], full_grads[name], rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m: f"{name}: {m}")


def cached_kinds() -> list[str]:
    return [k for k in KINDS if make(k).new_cache(1, T, "cpu", torch.float32) is not None]


@pytest.mark.parametrize("kind", cached_kinds())
@pytest.mark.parametrize("chunks", [[1] * T, [5, 1, 3, 7], [T]], ids=["one-by-one", "chunks", "prefill"])
def test_cached_decoding_equals_full_forward(kind, chunks):
    model = make(kind)
    perturb_(model)
    idx = tokens(2)
    full = model(idx)
    cache = model.new_cache(2, T, "cpu", torch.float32)
    assert cache.pos == 0
    outs, start = [], 0
    for n in chunks:
        outs.append(model(idx[:, start:start + n], cache=cache))
        start += n
        assert cache.pos == start
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", cached_kinds())
def test_cache_repeat(kind):
    """One prefill shared by several samples: repeat(n) gives row i to rows i*n .. i*n+n-1, and is a copy."""
    model = make(kind)
    perturb_(model)
    prompt, n, P = tokens(2), 3, 6
    cache = model.new_cache(2, T, "cpu", torch.float32)
    model(prompt[:, :P], cache=cache)
    big = cache.repeat(n)
    assert big.pos == P
    rest = tokens(2 * n, T - P, seed=5)  # each of the 6 samples continues differently
    seqs = torch.cat([prompt[:, :P].repeat_interleave(n, dim=0), rest], dim=1)
    full = model(seqs)
    out = torch.cat([model(rest[:, :4], cache=big), model(rest[:, 4:], cache=big)], dim=1)
    torch.testing.assert_close(out, full[:, P:], atol=1e-5, rtol=0)
    # the original cache is untouched by decoding its copy
    torch.testing.assert_close(model(prompt[:, P:], cache=cache), model(prompt)[:, P:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_build_for_shapes_alone_has_the_real_shapes_and_no_memory(kind):
    with shapes_only():
        probe = build_model(make_config(kind))
    real = make(kind)
    assert {n: t.shape for n, t in probe.state_dict().items()} == {n: t.shape for n, t in real.state_dict().items()}
    assert all(t.is_meta for t in probe.state_dict().values()) and probe.num_params() == real.num_params()
    assert not torch.empty(1).is_meta  # the meta device ends with the block


def test_loading_a_checkpoint_does_not_import_the_compiler(tmp_path):
    """load_checkpoint checks the shapes on a model built on the meta device; PyTorch runs `normal_` and `arange` on
    meta tensors through Python reference ops whose first call imports torch._dynamo (1.0 s of every chat start)."""
    import subprocess
    import sys

    from conftest import make_checkpoint

    run = make_checkpoint(tmp_path, "sft")
    code = ("import sys; from minigpt.checkpoint import load_checkpoint; "
            f"load_checkpoint({str(run)!r}); print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", KINDS)
def test_config_json_round_trip(kind):
    config = make_config(kind)
    assert config.kind == kind
    again = config_from_dict(json.loads(json.dumps(to_dict(config))))
    assert again == config and type(again) is type(config)


@pytest.mark.parametrize("kind", KINDS)
def test_safetensors_round_trip(kind, tmp_path):
    model = make(kind, seed=0)
    perturb_(model)
    path = tmp_path / "model.safetensors"
    save_file(state_dict_for_save(model), str(path))
    other = make(kind, seed=1)
    load_state(other, load_file(str(path)), strict=True)
    idx = tokens(2)
    torch.testing.assert_close(other(idx), model(idx), atol=0, rtol=0)
