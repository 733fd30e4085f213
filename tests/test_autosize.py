"""Sizing the GPT to a time budget (train/autosize.py): the rule on measured speeds, and the pretrain path."""
from __future__ import annotations

import pytest

from minigpt.models.gpt import GPT, GPTConfig
from minigpt.train import autosize, throughput


@pytest.fixture
def speeds(monkeypatch):
    """step_seconds from a table keyed by (n_layer, n_embd), in place of timing real steps."""
    table: dict[tuple[int, int], float] = {}
    monkeypatch.setattr(throughput, "step_seconds", lambda c, b, d="auto", shard=None, train_config=None: table[(c.n_layer, c.n_embd)])
    return table


def params(n_layer: int, n_embd: int, n_head: int, base: GPTConfig) -> int:
    return GPT(GPTConfig(**{**base.__dict__, "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head})).num_params()


def test_choose_keeps_the_largest_shape_with_enough_tokens_per_parameter(speeds):
    base = GPTConfig(vocab_size=512, block_size=32)
    batch, seconds = 4, 100.0
    tokens_per_step = batch * base.block_size
    p0, p1, p2 = (params(*shape, base) for shape in autosize.LADDER[:3])
    # tokens in the budget: 5, 4.5 and 3 per parameter of each shape (with ratio 4: the second one wins)
    for (n_layer, n_embd, _), p, per in zip(autosize.LADDER[:3], (p0, p1, p2), (5.0, 4.5, 3.0)):
        speeds[(n_layer, n_embd)] = tokens_per_step * seconds / (per * p)
    choice = autosize.choose(base, seconds, corpus_tokens=10_000, batch_size=batch, ratio=4.0)
    assert (choice.config.n_layer, choice.config.n_embd) == autosize.LADDER[1][:2]
    assert choice.params == p1 and choice.tokens == pytest.approx(4.5 * p1)
    assert choice.config.vocab_size == 512 and choice.config.block_size == 32  # the base's own fields are kept
    assert "at least 4 tokens per parameter" in choice.why and "4.5 per parameter" in choice.why
    assert len(speeds) == 3  # the ladder stops at the first shape that misses the rule


def test_choose_falls_back_to_the_smallest_shape(speeds):
    base = GPTConfig(vocab_size=512, block_size=32)
    n_layer, n_embd, n_head = autosize.LADDER[0]
    speeds[(n_layer, n_embd)] = 10.0  # far too slow for any shape to reach the ratio
    choice = autosize.choose(base, 10.0, corpus_tokens=10_000, batch_size=4)
    assert (choice.config.n_layer, choice.config.n_embd, choice.config.n_head) == (n_layer, n_embd, n_head)
    assert choice.params == params(n_layer, n_embd, n_head, base)
    assert "none reaches that in this budget" in choice.why  # said, not implied by "the largest shape with ..."


def test_choose_counts_the_tokens_of_every_process(speeds):
    """Under torchrun each of `world` processes trains at the timed speed: the run sees world times the tokens,
    so a shape one process could not feed is picked for two."""
    base = GPTConfig(vocab_size=512, block_size=32)
    batch, seconds = 4, 100.0
    for shape, per in zip(autosize.LADDER[:3], (3.0, 2.5, 1.5)):  # tokens per parameter for one process
        speeds[shape[:2]] = batch * base.block_size * seconds / (per * params(*shape, base))
    alone = autosize.choose(base, seconds, corpus_tokens=10_000, batch_size=batch, ratio=4.0)
    assert (alone.config.n_layer, alone.config.n_embd) == autosize.LADDER[0][:2] and "none reaches" in alone.why
    two = autosize.choose(base, seconds, corpus_tokens=10_000, batch_size=batch, ratio=4.0, world=2)
    assert (two.config.n_layer, two.config.n_embd) == autosize.LADDER[1][:2]
    assert two.tokens == pytest.approx(2 * 2.5 * params(*autosize.LADDER[1], base))
    assert "(2 processes)" in two.why and "none reaches" not in two.why
