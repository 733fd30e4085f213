"""Size the GPT to the budget: measured throughput x seconds = tokens, and a tokens-per-parameter rule.

`choose(vocab_size, seconds, corpus_tokens, ...)` walks a ladder of shapes from small to large, times a few real
training steps of each on this machine (`throughput.step_seconds`, about a second each), and keeps the largest
shape that still sees at least `TOKENS_PER_PARAM` tokens per parameter in the budget. A faster machine (a GPU)
therefore picks a larger model with the same command. The ladder and the rule come from the sweep recorded in
the README ("Choosing the speedrun's model"); `--preset`, `--depth` and the shape flags bypass all of this.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..common import human_count

# (n_layer, n_embd, n_head), smallest first: heads of 32 dims below width 256, of 64 from there.
LADDER: tuple[tuple[int, int, int], ...] = (
    (4, 128, 4), (4, 192, 6), (6, 192, 6), (6, 256, 4), (8, 320, 5), (8, 384, 6), (10, 512, 8), (12, 768, 12),
    (16, 1024, 16), (20, 1280, 20),
)
# Measured here (README, "Choosing the speedrun's model"): at 5 minutes the winner saw 2.0 tokens per parameter
# and the next shapes 1.2 and 0.6; at 15 minutes the winner 4.7 and the runner-up 1.8. 4 is consistent with both.
TOKENS_PER_PARAM = 4.0


@dataclass
class Choice:
    config: Any  # the GPTConfig picked
    tokens: float  # training tokens it will see in the budget, at the measured speed
    tokens_per_s: float
    params: int
    why: str  # one paragraph for the user: what was measured and the rule that decided


def choose(base: Any, seconds: float, corpus_tokens: int, *, batch_size: int, device: str = "auto",
           ratio: float = TOKENS_PER_PARAM, shard=None, train_config: Any = None, world: int = 1) -> Choice:
    """The largest ladder shape (applied to the GPTConfig `base`: vocabulary, block size, options) whose
    budget of tokens is at least `ratio` per parameter; the smallest shape when none is. Steps are timed with
    `train_config`'s optimizer and autocast (the run's own); under torchrun `world` processes each train at the
    timed speed, so the run sees `world` times the tokens of one."""
    from ..models.gpt import GPT
    from .throughput import step_seconds

    tried: list[tuple[Any, float, int]] = []
    for n_layer, n_embd, n_head in LADDER:
        config = replace(base, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
        params = GPT(config).num_params()
        tps = world * batch_size * config.block_size / step_seconds(config, batch_size, device, shard, train_config)
        tried.append((config, tps, params))
        if tps * seconds < ratio * params:
            break
    fits = [t for t in tried if t[1] * seconds >= ratio * t[2]]
    config, tps, params = fits[-1] if fits else tried[0]
    tokens = tps * seconds
    shape = lambda c: f"{c.n_layer}x{c.n_embd}"  # noqa: E731
    measured = ", ".join(f"{shape(c)} {human_count(p)} params {t:,.0f} tok/s ({t * seconds / p:.1f}/param)"
                         for c, t, p in tried)
    rule = f"the largest shape with at least {ratio:g} tokens per parameter"
    if not fits:
        rule += " (none reaches that in this budget: the smallest shape)"
    processes = f" ({world} processes)" if world > 1 else ""
    why = (f"model {shape(config)} ({human_count(params)} parameters): at the measured {tps:,.0f} tokens/s"
           f"{processes} it sees {human_count(tokens)} tokens in {seconds / 60:.1f} min, {tokens / params:.1f} per "
           f"parameter and {tokens / max(1, corpus_tokens):.1f} passes over the {human_count(corpus_tokens)}-token "
           f"corpus. Rule: {rule}. Measured: {measured}.")
    return Choice(config, tokens, tps, params, why)
