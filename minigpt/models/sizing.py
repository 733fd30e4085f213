"""Size any model kind by parameter count, so a comparison (`minigpt compare --params 1M`) is fair.

`sized(kind, vocab_size, block_size, target_params)` keeps every shape field at its default except one width
and picks the width whose parameter count (all unique parameters, embeddings included, as `num_params()`
reports) is closest to the target:

    gpt           n_embd in multiples of the head size (16), n_head = n_embd / 16, n_layer fixed at 4
    mlp           n_hidden      (context 8, n_embd 32, 2 hidden layers)
    cnn           n_embd        (6 blocks, kernel 2: receptive field 64)
    rnn/lstm/gru  n_hidden      (n_embd 64, 2 layers)
    bigram        nothing to scale: always V^2 parameters (returned as is, whatever the target)

Any other field can be pinned with keywords, e.g. `sized("gpt", 65, 64, 1e6, n_layer=6)` or
`sized("mlp", 65, 64, 2e5, context=16)`. Parameters grow monotonically with the width, so a doubling then
bisection search finds the closest width in ~20 model builds; models are built for their shapes alone
(`shapes_only`: no memory, no init). Granularity: one unit of width, except the GPT, whose step of 16 moves the
count by about 2 x 16 / n_embd (e.g. +-25% steps at n_embd 64, +-11% at 144); pin n_layer to land closer there.

A large vocabulary can make a target impossible: the token table and the output layer grow with it whatever the
width (an RNN's fixed 64-wide embedding of 6,964 Chinese characters is 446K parameters), so `sized` would return
a 1-unit model far over the target. `narrowest` (MIN_WIDTH: one GPT head, 16 units or channels for the others) and
`vocab_params` let a caller (`minigpt compare`) refuse such a target up front instead of training degenerate models.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import build_model, classes, config_from_dict, shapes_only

WIDTH_FIELD = {"gpt": "n_embd", "mlp": "n_hidden", "cnn": "n_embd", "rnn": "n_hidden", "lstm": "n_hidden",
               "gru": "n_hidden"}
GPT_HEAD_SIZE = 16
GPT_LAYERS = 4
MIN_WIDTH = 16  # the narrowest model worth comparing: one GPT head of 16, or 16 hidden units / channels
_MAX_UNITS = 1 << 20


def count_params(config: Any) -> int:
    """Parameters of the model `config` describes, without allocating its weights."""
    with shapes_only():
        return build_model(config).num_params()


def vocab_params(config: Any) -> int:
    """Parameters that grow with the vocabulary (token table and output layer, whatever a kind calls them): the
    count at `config.vocab_size` less the count at a vocabulary of one."""
    return count_params(config) - count_params(dataclasses.replace(config, vocab_size=1))


def narrowest(kind: str, vocab_size: int, block_size: int, **fixed: Any) -> Any:
    """The config of `kind` at MIN_WIDTH (the bigram as it is): the least a comparison can train of it."""
    classes(kind)
    base = {"kind": kind, "vocab_size": vocab_size, "block_size": block_size, **fixed}
    if kind == "gpt":
        base.setdefault("n_layer", GPT_LAYERS)
        base.setdefault("n_head", max(1, MIN_WIDTH // GPT_HEAD_SIZE))
    if kind in WIDTH_FIELD:
        base.setdefault(WIDTH_FIELD[kind], MIN_WIDTH)
    return config_from_dict(base)


def sized(kind: str, vocab_size: int, block_size: int, target_params: float, **fixed: Any) -> Any:
    """The config of `kind` whose parameter count is closest to `target_params` (see the module docstring)."""
    classes(kind)  # unknown kind -> MinigptError naming the choices
    base = {"kind": kind, "vocab_size": vocab_size, "block_size": block_size, **fixed}
    if kind not in WIDTH_FIELD:
        return config_from_dict(base)
    field = WIDTH_FIELD[kind]
    if kind == "gpt":
        base.setdefault("n_layer", GPT_LAYERS)
        fixed_heads = base.get("n_head")

        def config(units: int) -> Any:
            if fixed_heads:
                return config_from_dict({**base, field: units * fixed_heads})
            return config_from_dict({**base, field: units * GPT_HEAD_SIZE, "n_head": units})
    else:
        def config(units: int) -> Any:
            return config_from_dict({**base, field: units})

    cache: dict[int, int] = {}

    def count(units: int) -> int:
        if units not in cache:
            cache[units] = count_params(config(units))
        return cache[units]

    hi = 1
    while count(hi) < target_params and hi < _MAX_UNITS:
        hi *= 2
    lo = hi // 2  # count(lo) < target <= count(hi), or lo == 0 when even 1 unit is too many
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < target_params:
            lo = mid
        else:
            hi = mid
    best = hi if lo < 1 or abs(count(hi) - target_params) <= abs(count(lo) - target_params) else lo
    return config(best)
