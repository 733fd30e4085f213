"""Baselines beyond the shared model tests: what each one is supposed to compute.

The bigram table learns the empirical bigram distribution; the MLP and CNN see exactly their receptive field;
recurrent models decode through their state, one token at a time and past block_size; `sized()` hits a
parameter budget.
"""
from __future__ import annotations

import json

import pytest
import torch

from minigpt.common import MinigptError
from minigpt.config import to_dict
from minigpt.models import build_model, config_from_dict
from minigpt.models.rnn import RNNState
from minigpt.models.sizing import WIDTH_FIELD, count_params, sized

RECURRENT = ["rnn", "lstm", "gru"]


# ---------------------------------------------------------------------------------------------- bigram


def test_bigram_learns_the_empirical_bigram_distribution():
    """Cross-entropy over all pairs is convex in the table and minimised exactly where softmax(row a) equals
    the normalised counts of what follows a. We sample 6,000 tokens from a Markov chain whose transitions are
    all >= 6%, so every pair occurs (>= 53 times) and the optimum is interior (finite logits); full-batch Adam
    then reaches it: measured error 5e-4 after 100 steps, 3e-7 after 300. The tolerance, 1e-3, leaves a wide
    margin yet fails a model that learned the true chain instead (0.037 away) or the unigram (0.16 away)."""
    V, N = 6, 6000
    g = torch.Generator().manual_seed(0)
    P = torch.rand(V, V, generator=g) + 0.2
    P = P / P.sum(1, keepdim=True)
    seq = torch.empty(N, dtype=torch.long)
    seq[0] = 0
    for i in range(1, N):
        seq[i] = torch.multinomial(P[seq[i - 1]], 1, generator=g)
    counts = torch.zeros(V, V)
    counts.index_put_((seq[:-1], seq[1:]), torch.ones(N - 1), accumulate=True)
    assert (counts > 0).all()
    empirical = counts / counts.sum(1, keepdim=True)

    torch.manual_seed(0)
    model = build_model(config_from_dict({"kind": "bigram", "vocab_size": V, "block_size": 8}))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = seq[None, :-1], seq[None, 1:]
    for _ in range(300):
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    learned = torch.softmax(model.table.weight.detach(), dim=-1)
    torch.testing.assert_close(learned, empirical, rtol=0, atol=1e-3)
    assert (empirical - P).abs().max() > 1e-2  # the tolerance tells the counts from the true chain
    # the loss reached is the empirical conditional entropy, the floor for any bigram model
    entropy = -(counts * empirical.log()).sum() / counts.sum()
    assert abs(loss.item() - entropy.item()) < 1e-4


# ---------------------------------------------------------------------------------------------- receptive field


@pytest.mark.parametrize("values", [
    {"kind": "mlp", "context": 5},
    {"kind": "mlp", "context": 1, "n_layer": 3, "activation": "gelu"},
    {"kind": "cnn", "n_layer": 3, "kernel_size": 3},  # dilations 1, 2, 4: 1 + 2 * 7 = 15
    {"kind": "cnn", "n_layer": 4, "kernel_size": 2, "dilation_cycle": 2},  # 1, 2, 1, 2: 1 + 6 = 7
])
def test_logits_depend_on_exactly_the_receptive_field(values):
    T, t = 32, 24
    torch.manual_seed(0)
    config = config_from_dict({"vocab_size": 20, "block_size": T, "n_embd": 16, **values})
    expected = {"mlp": values.get("context"), "cnn": None}[values["kind"]]
    if values["kind"] == "cnn":
        expected = 1 + (config.kernel_size - 1) * sum(config.dilations)
        assert config.dilations[:2] == [1, 2]
    assert config.receptive_field == expected
    model = build_model(config).eval()
    idx = torch.randint(0, 20, (1, T))
    with torch.no_grad():
        base = model(idx)[0, t]
        for s in range(T):
            changed = idx.clone()
            changed[0, s] = (changed[0, s] + 1) % 20
            out = model(changed)[0, t]
            inside = t - config.receptive_field < s <= t
            same = torch.allclose(out, base, rtol=0, atol=1e-6)
            assert same != inside, f"position {s} {'inside' if inside else 'outside'} the field of {t}"


def test_mlp_context_must_fit_the_block():
    with pytest.raises(MinigptError, match="--context"):
        config_from_dict({"kind": "mlp", "vocab_size": 10, "block_size": 4, "context": 8})


# ---------------------------------------------------------------------------------------------- recurrent


def _recurrent(kind: str, **values):
    torch.manual_seed(0)
    config = config_from_dict({"kind": kind, "vocab_size": 30, "block_size": 12, "n_embd": 16, "n_hidden": 24,
                               **values})
    return build_model(config).eval()


@pytest.mark.parametrize("kind", RECURRENT)
def test_recurrent_kind_names_the_cell_and_round_trips(kind):
    model = _recurrent(kind)
    cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    assert type(model.rnn) is cell and model.config.cell == kind
    again = config_from_dict(json.loads(json.dumps(to_dict(model.config))))
    assert again == model.config and type(build_model(again).rnn) is cell


@pytest.mark.parametrize("kind", RECURRENT)
def test_stateful_decoding_one_token_at_a_time_equals_full_forward(kind):
    model = _recurrent(kind)
    idx = torch.randint(0, 30, (3, 12))
    with torch.no_grad():
        full = model(idx)
        state = model.new_cache(3, 12, "cpu", torch.float32)
        steps = [model(idx[:, t:t + 1], cache=state) for t in range(12)]
    assert isinstance(state, RNNState) and state.pos == 12 and state.batch == 3
    assert (state.c is not None) == (kind == "lstm")
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", RECURRENT)
def test_decoding_runs_past_block_size_through_the_state(kind):
    model = _recurrent(kind, n_layer=2)
    T = 3 * model.config.block_size + 5  # 41 tokens through a model trained on windows of 12
    idx = torch.randint(0, 30, (2, T))
    with torch.no_grad():
        full = model(idx)  # no cache: one pass from a zero state
        state = model.new_cache(2, T, "cpu", torch.float32)
        parts = [model(idx[:, :12], cache=state)]  # prefill one block
        h_shape = state.h.shape
        parts += [model(idx[:, 12:20], cache=state)]  # a chunk
        parts += [model(idx[:, t:t + 1], cache=state) for t in range(20, T)]  # then token by token
    assert state.pos == T and state.h.shape == h_shape  # constant-size state
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", RECURRENT)
def test_state_repeat_continues_every_copy_identically(kind):
    model = _recurrent(kind)
    idx = torch.randint(0, 30, (2, 10))
    with torch.no_grad():
        state = model.new_cache(2, 10, "cpu", torch.float32)
        model(idx[:, :6], cache=state)
        wide = state.repeat(3)  # rows a, a, a, b, b, b
        assert wide.batch == 6 and wide.pos == 6 and state.batch == 2
        out = model(idx[:, 6:].repeat_interleave(3, dim=0), cache=wide)
        ref = model(idx[:, 6:], cache=state)
    torch.testing.assert_close(out, ref.repeat_interleave(3, dim=0), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sizing


@pytest.mark.parametrize("kind", sorted(WIDTH_FIELD))
@pytest.mark.parametrize("target", [200_000, 1_000_000])
def test_sized_lands_within_ten_percent(kind, target):
    config = sized(kind, 65, 64, target)
    assert config.kind == kind and config.vocab_size == 65 and config.block_size == 64
    n = count_params(config)
    assert abs(n - target) / target < 0.10, f"{kind}: {n:,} params for a target of {target:,}"
    if target == 200_000:  # counting on the meta device agrees with a real build
        assert n == build_model(config).num_params()


def test_sized_keeps_pinned_fields_and_bigram_is_fixed():
    assert sized("gpt", 65, 64, 1e6, n_layer=2).n_layer == 2
    assert sized("mlp", 65, 64, 2e5, context=16).context == 16
    bigram = sized("bigram", 65, 64, 1e6)
    assert bigram.kind == "bigram" and count_params(bigram) == 65 * 65
    with pytest.raises(MinigptError, match="unknown model kind"):
        sized("transformer-xl", 65, 64, 1e6)
