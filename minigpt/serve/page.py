"""The chat page at `/`: one self-contained HTML file (page.html beside this module), no external URL at all.

The page streams replies from `/v1/chat/completions` (with `logprobs`, so every token arrives with its id) and
draws each reply token as a clickable span; a click asks `/v1/minigpt/inspect` for that token and shows its
probability, its top alternatives, and the influence view of `minigpt inspect` (the token red, earlier tokens
grey to blue by the square root of the attention its query paid them), with layer and head pickers (a head or
the mean of the layer's heads). The colours are lens/attention.py's, passed in here, so the two views agree.
The conversation lives in localStorage (per model id) and survives reloads; save and load use the JSONL
messages format that `minigpt chat`'s /save writes (`{"messages": [...]}` on one line).
Test hooks: `body[data-chunks]` counts stream chunks, `body[data-busy]` is 1 while a reply streams, and
`#influence` carries data-layer, data-head and data-signature (a checksum of what it drew).
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..lens.attention import CURRENT, STRONG, WEAK
from .served import Served

TEMPLATE = Path(__file__).with_name("page.html")


@lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def _rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]


def page_config(served: Served) -> dict[str, Any]:
    """What the page needs to know: the model, the server's sampling defaults, whether a key is wanted."""
    e, d = served.engine, served.defaults
    return {"model": served.model_id, "stage": served.stage, "mode": served.mode,
            "kind": getattr(e.model.config, "kind", "?"), "params": e.params, "context": e.context_limit,
            "auth": served.api_key is not None,
            "defaults": {"temperature": d.temperature, "top_p": d.top_p, "max_tokens": d.max_new_tokens,
                         "seed": d.seed},
            "colours": {"weak": list(WEAK), "strong": list(STRONG), "current": "rgb(" + ",".join(
                str(c) for c in _rgb(CURRENT)) + ")"}}


def render_page(served: Served) -> str:
    config = json.dumps(page_config(served), ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(f"minigpt · {served.model_id}")
    return _template().replace("__TITLE__", title).replace("__CONFIG__", config)
