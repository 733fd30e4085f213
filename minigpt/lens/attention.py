"""Attention capture: what each token attended to, and the probabilities behind each generated token.

Owns: `AttentionRecord` (the (n_layer, n_head, T, T) weights of one text, its tokens and where the prompt ends),
`capture` / `record` (one forward through the GPT's explicit attention path: ordinary generation never pays
for it), `stream_influence` (generation through `Engine.stream(capture_attention=True)`, one influence row per
token) and `token_probs` (/probs: one forward over prompt + reply, exact). Everything here is data; the
renderers live beside it: lens/views.py (rich terminal heatmap and influence lines), lens/plots.py (matplotlib:
every layer x head as thumbnails plus the chosen head large; the embedding map) and lens/page.py (one
self-contained HTML page, no network at all). The chat commands /attn and /probs are chat/lens_commands.py.

The influence view is the seeds' picture: to predict token t the model's query is token t-1, so its row
weights[layer, head, t-1, :t] says how much each earlier token (t-1 itself included) fed that prediction. The
token being predicted is red, strong influence blue, weak grey; "strong" is sqrt(weight), the same gamma as
the heatmaps' colour scale, because rows spread over dozens of tokens (uniform over 64 keys is 0.016 each) and
a linear scale would paint every diffuse head white. Rows from the engine's KV-cached decoding equal those of
a full forward to ~1e-7 (tests/test_inspect.py), so the page saved after `inspect generate` recomputes them
with one full forward.

Costs on the tiny GPT (4x4x128, block 128; one thread of a shared 2-core machine): one capture over 128 tokens
~20 ms (an ordinary SDPA forward: 14 ms); the PNG 1-2 s (matplotlib); the page is written in ~10 ms (0.37 MB)
and redraws in ~25 ms in Chromium when the layer changes.

Labels: a byte-level BPE token that is part of a UTF-8 character shows its bytes (\\xe5); whitespace is made
visible on axes (space -> "␣", newline -> "↵"). Matplotlib needs a font with CJK glyphs for Chinese labels
(`fc-list :lang=zh`); without one, labels whose glyphs are missing are drawn as #id and a note says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..common import MinigptError
from ..text.chat_format import token_text  # noqa: F401 - re-exported: the views, plots and server use it from here

Head = int | str  # a head index, or "mean" (the average over heads)
WEAK, STRONG, CURRENT = (200, 200, 200), (21, 80, 200), "#d32f2f"  # grey, blue, red (the seeds' colours)
BLUES = ((247, 251, 255), (107, 174, 214), (8, 48, 107))  # 0, 0.5, 1 of the heatmap scale (matplotlib Blues)


# ---------------------------------------------------------------------------------------------- labels


def visible(text: str) -> str:
    """Whitespace made visible for axis labels and one-line views."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "␍") or "∅"


# ---------------------------------------------------------------------------------------------- capture


def _no_attention(model) -> MinigptError:
    kind = getattr(getattr(model, "config", None), "kind", type(model).__name__)
    return MinigptError(f"this {kind} model has no attention to inspect (only GPT checkpoints do); "
                        f"`minigpt inspect embeddings` works for every kind")


def require_attention(model) -> None:
    """A one-line error unless the model records attention weights."""
    if not has_attention(model):
        raise _no_attention(model)


def has_attention(model) -> bool:
    """Whether `model.features(idx, attention=[])` records weights (a one-token probe forward)."""
    ref = next(model.parameters())
    found: list = []
    with torch.inference_mode():
        model.features(torch.zeros(1, 1, dtype=torch.long, device=ref.device), attention=found)
    return bool(found)


def capture(model, ids: Sequence[int]) -> torch.Tensor:
    """(n_layer, n_head, T, T) float32 attention weights of one forward over `ids` (explicit path, eval mode):
    row q is what token q attends to, zero above the diagonal, each row summing to 1."""
    ref = next(model.parameters())
    found: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model.features(torch.tensor([list(ids)], dtype=torch.long, device=ref.device), attention=found)
    finally:
        model.train(was_training)
    if not found:
        raise _no_attention(model)
    return torch.stack([a[0].float() for a in found]).cpu()  # (L, H, T, T)


def check_view(n_layer: int, n_head: int, layer: int, head: Head) -> tuple[int, Head]:
    """Normalise a layer (negative counts from the end) and a head; a bad one is a one-line error."""
    L, H = n_layer, n_head
    if not isinstance(layer, int) or not -L <= layer < L:
        raise MinigptError(f"--layer {layer}: this model has {L} layers (0..{L - 1}, or -1 for the last)")
    if head != "mean" and (not isinstance(head, int) or not -H <= head < H):
        raise MinigptError(f"--head {head}: this model has {H} heads per layer (0..{H - 1}, or mean)")
    return layer % L, head if head == "mean" else head % H


@dataclass
class AttentionRecord:
    """The attention of one text. `weights[l, h, q, k]`: how much token q attends to token k in layer l, head h.

    `prompt_len`: tokens [0, prompt_len) were given, the rest generated. `start`: the position of ids[0] in
    the whole text (> 0 when the text outgrew the model's context and only its last block_size tokens fit)."""

    ids: list[int]
    texts: list[str]  # token_text of each id
    weights: torch.Tensor  # (n_layer, n_head, T, T) float32
    prompt_len: int
    start: int = 0

    @property
    def n_layer(self) -> int:
        return self.weights.size(0)

    @property
    def n_head(self) -> int:
        return self.weights.size(1)

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, layer: int, head: Head) -> tuple[int, Head]:
        return check_view(self.n_layer, self.n_head, layer, head)

    def head(self, layer: int, head: Head) -> torch.Tensor:
        """(T, T) weights of one head, or their mean over the layer's heads."""
        layer, head = self.check(layer, head)
        w = self.weights[layer]
        return w.mean(0) if head == "mean" else w[head]

    def influence(self, t: int, layer: int, head: Head) -> torch.Tensor:
        """(t,) how much each earlier token fed the prediction of token t: the row of its query, token t-1."""
        if not 1 <= t < len(self):
            raise MinigptError(f"token {t} has no influence row (tokens 1..{len(self) - 1} do)")
        return self.head(layer, head)[t - 1, :t]


def record(model, tokenizer, ids: Sequence[int], prompt_len: int | None = None) -> AttentionRecord:
    """Capture the attention of `ids`; when they outgrow the context, of their last block_size tokens."""
    ids = [int(i) for i in ids]
    if not ids:
        raise MinigptError("nothing to inspect: the text has no tokens")
    start = max(0, len(ids) - int(model.config.block_size))
    kept = ids[start:]
    prompt = len(ids) if prompt_len is None else prompt_len
    return AttentionRecord(kept, [token_text(tokenizer, i) for i in kept], capture(model, kept),
                           max(0, prompt - start), start)


def parse_head(value: str | int) -> Head:
    """'mean' or an integer (argparse type for --head)."""
    if isinstance(value, int) or value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise MinigptError(f"--head {value}: give a head number or mean") from None

# ---------------------------------------------------------------------------------------------- generation


@dataclass
class InfluenceStep:
    """One generated token and the attention row that predicted it (from the engine's KV-cached decoding)."""

    token_id: int
    text: str  # token_text(token_id)
    logprob: float
    key_start: int  # position of the row's first key in prompt + generated tokens (> 0 after a slide)
    rows: torch.Tensor  # (n_layer, n_head, n_keys) float32: the query row of the previous token, every layer

    def row(self, layer: int, head: Head) -> torch.Tensor:
        w = self.rows[layer]
        return w.mean(0) if head == "mean" else w[head]


def stream_influence(engine, prompt_ids: Sequence[int], config=None, **kwargs: Any) -> Iterator[InfluenceStep]:
    """Generate through `engine.stream(..., capture_attention=True)`, one InfluenceStep per token."""
    require_attention(engine.model)
    n = len(prompt_ids)
    for ev in engine.stream(prompt_ids, config, capture_attention=True, **kwargs):
        rows = torch.stack([a.float() for a in ev.attention]).cpu()  # (L, H, n_keys)
        yield InfluenceStep(ev.token_id, token_text(engine.tokenizer, ev.token_id), ev.logprob,
                            n + ev.index - rows.size(-1), rows)


def generation_record(model, tokenizer, prompt_ids: Sequence[int], steps: Sequence[InfluenceStep]) -> AttentionRecord:
    """The attention of prompt + generated tokens for a page or a picture: one forward over the last block_size
    tokens, with each generated token's predicting row replaced by the row decoding used (`steps`). They are the
    same until the text outgrows the context; after a slide each token was predicted from its own window, which
    one forward cannot give (a key before the page's first token drops out of its row)."""
    rec = record(model, tokenizer, [*prompt_ids, *(s.token_id for s in steps)], prompt_len=len(prompt_ids))
    for i, s in enumerate(steps):
        q = len(prompt_ids) + i - 1 - rec.start  # the query that predicted token i, in the page's window
        if q < 0:
            continue
        rec.weights[:, :, q, :] = 0
        first = max(rec.start, s.key_start)  # keys before the page's first token are not on it
        rec.weights[:, :, q, first - rec.start:q + 1] = s.rows[..., first - s.key_start:]
    return rec


# ---------------------------------------------------------------------------------------------- probabilities


@dataclass
class TokenProb:
    token_id: int
    text: str
    prob: float
    alternatives: list[tuple[int, str, float]]  # the top-k tokens of the same distribution (id, text, p)


def token_probs(model, tokenizer, prompt_ids: Sequence[int], reply_ids: Sequence[int], k: int = 5) -> list[TokenProb]:
    """p(token) and the top-k alternatives at each reply position, from one forward over prompt + reply (the
    last block_size tokens): exactly the distributions the reply was sampled from, before any processor."""
    ids = [int(i) for i in prompt_ids] + [int(i) for i in reply_ids]
    ids = ids[max(0, len(ids) - int(model.config.block_size) - 1):]
    n = min(len(reply_ids), len(ids) - 1)
    if n <= 0:
        return []
    ref = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.tensor([ids[:-1]], dtype=torch.long, device=ref.device))[0, -n:]  # (n, V)
    finally:
        model.train(was_training)
    logp = torch.log_softmax(logits.float()[:, :tokenizer.vocab_size], dim=-1).cpu()
    top_p, top_i = torch.topk(logp, min(k, logp.size(-1)), dim=-1)
    out = []
    for j, t in enumerate(ids[-n:]):
        alts = [(int(i), token_text(tokenizer, int(i)), math.exp(float(p))) for p, i in zip(top_p[j], top_i[j])]
        out.append(TokenProb(t, token_text(tokenizer, t), math.exp(float(logp[j, t])), alts))
    return out


# ---------------------------------------------------------------------------------------------- CLI glue


def describe(ckpt) -> str:
    """'checkpoint …/step_000600 · gpt 4x4x128, block 128 · stage pretrain' for titles."""
    c = ckpt.model.config
    shape = f"{c.n_layer}x{c.n_head}x{c.n_embd}" if hasattr(c, "n_head") else ""
    return f"{ckpt.path} · {c.kind} {shape}, block {c.block_size} · stage {ckpt.config.get('stage', '?')}"


def encode_text(tokenizer, text: str, bos: bool = True) -> list[int]:
    return ([tokenizer.bos_id] if bos else []) + tokenizer.encode(text)
