"""`POST /v1/minigpt/inspect`: one reply token's probability, its top alternatives and its attention, as JSON.

The chat page calls it when a reply token is clicked. The body names the text exactly:
`{"messages": [...]}` (the conversation before the reply, rendered as chat completions renders it) or
`{"prompt": "..."}` (as /v1/completions), then `"reply_ids"` (the sampled ids, from the stream's `token_id`s),
`"index"` (which reply token) and optionally `"top"` (alternatives, default 5, at most 20).

Everything comes from minigpt.lens: `token_probs` (one forward over prompt + reply: the distribution the token
was drawn from, before temperature or top-p) and `record` (one forward through the explicit attention path),
whose `influence(t, layer, head)` rows are what `minigpt inspect` draws: for token t, the attention of its
query, token t-1, over every earlier token. All layers and heads come back at once (4 x 4 x 128 floats for the
tiny GPT), so the page switches layer and head without asking again. Both forwards run on the worker thread,
queued with the generations. Texts longer than the model's context keep their last block_size tokens
(`start` says where they begin), as the inspector does.
"""
from __future__ import annotations

from typing import Any

from ..lens.attention import record, token_probs
from .openai import ApiError

MAX_TOP = 20


def parse_inspect(body: dict[str, Any], vocab_size: int) -> tuple[list[int], int, int]:
    """(reply_ids, index, top) from the request, checked; the prompt is the caller's (it knows the template)."""
    reply = body.get("reply_ids")
    if not isinstance(reply, list) or not reply or not all(isinstance(i, int) and not isinstance(i, bool)
                                                           for i in reply):
        raise ApiError("reply_ids: must be a non-empty list of token ids (the token_id of each streamed token)",
                       param="reply_ids")
    bad = next((i for i in reply if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise ApiError(f"reply_ids: token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                       param="reply_ids")
    index = body.get("index", len(reply) - 1)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(reply):
        raise ApiError(f"index: must be an integer in 0..{len(reply) - 1}, got {index!r}", param="index")
    top = body.get("top", 5)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise ApiError(f"top: must be an integer in 1..{MAX_TOP}, got {top!r}", param="top")
    return reply, index, top


def token_view(model, tokenizer, prompt_ids: list[int], reply_ids: list[int], index: int, top: int = 5,
               attention: bool = True) -> dict[str, Any]:
    """The data the page shows for reply token `index`: its probability and alternatives, and (for models with
    attention) every layer and head's influence row over the tokens before it."""
    reply = reply_ids[:index + 1]
    prob = token_probs(model, tokenizer, prompt_ids, reply, k=top)[-1]
    out: dict[str, Any] = {
        "index": index,
        "token": {"id": prob.token_id, "text": prob.text, "prob": prob.prob},
        "alternatives": [{"id": i, "text": text, "prob": p} for i, text, p in prob.alternatives],
        "attention": None,
    }
    if attention:
        rec = record(model, tokenizer, prompt_ids + reply, prompt_len=len(prompt_ids))
        t = len(rec) - 1  # the clicked token, counted from rec.start
        rows = [[[round(float(w), 5) for w in rec.influence(t, layer, head)] for head in range(rec.n_head)]
                for layer in range(rec.n_layer)]
        out["attention"] = {"tokens": rec.texts, "start": rec.start, "prompt_len": rec.prompt_len,
                            "n_layer": rec.n_layer, "n_head": rec.n_head, "rows": rows}
    return out
