"""Held-out measurements for the report cards: chat answers scored per prompt, with bootstrap intervals, and bits
per byte of a model on another corpus's validation split.

`answer(ckpt, prompts)` replies greedily to held-out prompts (one batch through the engine) and scores each reply
by token F1 against the reference, exact match, and the family's pass/fail rule (`chat_tasks.correct`: identity
replies must state the fact, out-of-world questions must be declined); `in_conversation(prompts)` asks the same
prompts second in a chat, after one earlier exchange. `mean_ci` and `paired_ci` are percentile
bootstrap 95% intervals (Efron & Tibshirani 1993): paired, because every model answers the same prompts, so a
difference between two models is resampled on the same draws for both; and by cluster (`cluster_of`), because the
prompts about one held-out function, or one identity phrasing in its variants, stand or fall together. `corpus_bpb`
scores every token of a source's val split in non-overlapping windows (no sampling: the same number each time).
"""
from __future__ import annotations

import math
import random
from typing import Any, Sequence

import numpy as np
import torch

from ..text import chat_tasks
from ..text.chat_format import render_prompt

BOOTSTRAP = 2000


def heldout_prompts(facts: chat_tasks.Facts) -> list[dict[str, Any]]:
    """Every built-in held-out prompt, in a fixed order: each held-out function's recall, context, details and
    follow-up questions and every held-out identity and out-of-world phrasing. All of them, not a sample: one
    batched greedy pass over the 1,403 takes ~8 s per model on 2 cores, and the first 200/150/100 function
    questions the report card once took left its intervals 1.5x wider (README "What changed since")."""
    return [p for p in chat_tasks.prompts(facts) if p["split"] == "val"]


def in_conversation(prompts: Sequence[dict[str, Any]], facts: chat_tasks.Facts,
                    seed: int = 0) -> list[dict[str, Any]]:
    """The same prompts, each asked second in a chat: after one earlier exchange, a training question from memory,
    about the model or out of its world with its reference reply (a seeded draw; no pasted function, so the
    two fit the context). What a user sees from the second question on (`chat_tasks.sessions`)."""
    earlier = [r["messages"] for r in chat_tasks.conversations(facts, 1)
               if r["split"] == "train" and r["family"] in ("recall", "identity", "unknown")]
    rng = random.Random(seed)
    return [{**p, "prompt": rng.choice(earlier) + list(p["prompt"])} for p in prompts]


def answer(ckpt, prompts: Sequence[dict[str, Any]], facts: chat_tasks.Facts, *, max_new_tokens: int = 64,
           batch: int = 64) -> list[dict[str, Any]]:
    """Greedy replies to `prompts` with their scores: {"reply", "f1", "exact", "correct"} per prompt."""
    from ..infer.engine import Engine
    from ..train.rewards import f1

    engine, tok = Engine(ckpt.model, ckpt.tokenizer), ckpt.tokenizer
    ids = [render_prompt(tok, p["prompt"]) for p in prompts]
    stops = set(tok.specials.values())  # a chat reply ends at any special token, as in `minigpt chat`
    replies: list[str] = []
    for i in range(0, len(ids), batch):
        gens = engine.generate_batch(ids[i:i + batch], temperature=0.0, max_new_tokens=max_new_tokens,
                                     stop_ids=stops)
        replies += [g.text.strip() for g in gens]
    out = []
    for p, reply in zip(prompts, replies):
        out.append({"reply": reply, "f1": f1(reply, p["reference"]),
                    "exact": float(chat_tasks.exact_match(reply, p["reference"])),
                    "correct": float(chat_tasks.correct(p, reply, facts))})
    return out


def cluster_of(prompt: dict[str, Any]) -> str:
    """What a held-out prompt's answer is not independent of: its function (recall, context, details and
    follow-up questions about one held-out function), its hand-written phrasing (an identity question in its
    variants, "Who are you?" and "Hey, who are you?"), its how-to task (one answer to its three questions), or
    else its own text."""
    return prompt.get("entry") or prompt.get("phrasing") or prompt.get("task") or repr(prompt["prompt"])


def mean_ci(values: Sequence[float], clusters: Sequence[Any] | None = None,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap 95% interval. With `clusters` (a label per value)
    whole clusters are resampled (the cluster bootstrap): values that share one are not independent evidence,
    and resampling them one by one would make the interval too narrow."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if clusters is None:
        sums, sizes = x, np.ones_like(x)
    else:
        first: dict[Any, int] = {}  # cluster -> its number, in order of first appearance
        index = np.asarray([first.setdefault(c, len(first)) for c in clusters])
        sums, sizes = np.bincount(index, weights=x), np.bincount(index).astype(np.float64)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(BOOTSTRAP, len(sums)))
    means = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_ci(before: Sequence[float], after: Sequence[float], clusters: Sequence[Any] | None = None,
              seed: int = 0) -> tuple[float, float, float]:
    """(mean difference after - before, low, high) over the same prompts, paired bootstrap 95% interval (by
    cluster when `clusters` is given)."""
    if len(before) != len(after):
        raise ValueError("paired scores need the same prompts on both sides")
    return mean_ci(np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64), clusters, seed)


@torch.no_grad()
def corpus_bpb(model, tokenizer, source: str = "pydocs", split: str = "val") -> dict[str, float]:
    """Loss (nats/token) and bits per byte of `model` on every token of `source`'s `split`, tokenized with the
    model's own tokenizer, in non-overlapping windows of its block size."""
    from ..text.shards import prepare
    from ..text.sources import open_source

    prepared = prepare(open_source(source), tokenizer)
    tokens = torch.from_numpy(prepared.shard(split).astype(np.int64))
    block, was_training = model.config.block_size, model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    n = (len(tokens) - 1) // block
    for i in range(0, n, 16):  # 16 windows per forward
        rows = [tokens[j * block:(j + 1) * block + 1] for j in range(i, min(n, i + 16))]
        batch = torch.stack(rows).to(device)
        loss = model(batch[:, :-1], batch[:, 1:], reduction="sum")
        total, count = total + float(loss), count + batch[:, 1:].numel()
    model.train(was_training)
    loss = total / max(1, count)
    return {"loss": loss, "bpb": loss / math.log(2) / prepared.bytes_per_token(split), "tokens": count}
