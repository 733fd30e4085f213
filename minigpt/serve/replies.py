"""The engine's token events -> OpenAI's answers: streamed chunks (server-sent events) or one whole response.

`Reply` follows one request: `chunks(event)` gives the chunks a token produces (chat: `delta.content`; the
legacy endpoint: `text`), `finish_chunks(event)` the chunk that closes a choice with its `finish_reason`
("stop" at `<|end|>` or a stop string, "length" at max_tokens), `usage_chunk()` the last chunk when
`stream_options.include_usage` asks, and `response()` the non-streamed body. `usage` counts real tokens:
`prompt_tokens` the rendered prompt, `completion_tokens` every token sampled (a closing `<|end|>` included),
all n choices together.

With `logprobs`, each chat token carries OpenAI's entry `{token, logprob, bytes, top_logprobs: []}` plus
`token_id` (an extension: the page needs the exact ids to inspect a token, and re-encoding the text could give
other ids). Every object also carries `seed`, the run's seed (none when greedy): send it back to reproduce a
sampled answer. Tokens whose text is not complete yet (the first bytes of a Chinese character) or is held back
(a possible stop string) are streamed with empty content, so no token goes unreported.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..infer.engine import TokenEvent
from ..lens.attention import token_text
from .openai import Completion


@dataclass
class Choice:
    text: list[str] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)  # logprob entries, when asked
    offsets: list[int] = field(default_factory=list)  # where each token's text starts (the legacy logprobs)
    length: int = 0  # characters so far
    count: int = 0
    finish_reason: str | None = None


class Reply:
    """The answer to one Completion, built from its events as they arrive."""

    def __init__(self, request: Completion, model_id: str, tokenizer):
        self.request, self.model_id, self.tokenizer = request, model_id, tokenizer
        self.id = ("chatcmpl-" if request.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if request.chat else "text_completion"
        self.choices = [Choice() for _ in range(request.n)]
        self.seed: int | None = None if request.config.greedy else request.config.seed  # a drawn one: at the start

    # ----------------------------------------------------------------------------- events

    def add(self, ev: TokenEvent) -> dict[str, Any] | None:
        """Record one token; return its logprob entry (None unless asked for)."""
        choice = self.choices[ev.sample]
        choice.count += 1
        choice.offsets.append(choice.length)
        choice.text.append(ev.text)
        choice.length += len(ev.text)
        if ev.finish_reason:
            choice.finish_reason = ev.finish_reason
        if not self.request.logprobs:
            return None
        entry = {"token": token_text(self.tokenizer, ev.token_id), "logprob": ev.logprob,
                 "bytes": list(self.tokenizer.token_bytes(ev.token_id)), "top_logprobs": [], "token_id": ev.token_id}
        choice.tokens.append(entry)
        return entry

    def first_chunks(self) -> list[dict[str, Any]]:
        """Chat streams open each choice with the assistant's role."""
        if not self.request.chat:
            return []
        return [self._chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}) for i in range(self.request.n)]

    def chunks(self, ev: TokenEvent) -> list[dict[str, Any]]:
        """Record `ev` and return what to stream for it (nothing for an empty delta unless logprobs are asked)."""
        entry = self.add(ev)
        out = []
        if ev.text or entry is not None:
            if self.request.chat:
                choice = {"index": ev.sample, "delta": {"content": ev.text},
                          "logprobs": None if entry is None else {"content": [entry]}, "finish_reason": None}
            else:
                choice = {"index": ev.sample, "text": ev.text, "finish_reason": None,
                          "logprobs": self._legacy(self.choices[ev.sample], slice(-1, None))}
            out.append(self._chunk(choice))
        if ev.finish_reason:
            out.append(self._finish_chunk(ev.sample, ev.finish_reason))
        return out

    def _finish_chunk(self, index: int, reason: str) -> dict[str, Any]:
        if self.request.chat:
            return self._chunk({"index": index, "delta": {}, "logprobs": None, "finish_reason": reason})
        return self._chunk({"index": index, "text": "", "logprobs": None, "finish_reason": reason})

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._chunk(None), "choices": [], "usage": self.usage()}

    # ----------------------------------------------------------------------------- whole answers

    def usage(self) -> dict[str, int]:
        completion = sum(c.count for c in self.choices)
        prompt = len(self.request.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def response(self) -> dict[str, Any]:
        choices = []
        for i, c in enumerate(self.choices):
            reason = c.finish_reason or "length"
            if self.request.chat:
                logprobs = {"content": c.tokens} if self.request.logprobs else None
                choices.append({"index": i, "message": {"role": "assistant", "content": "".join(c.text)},
                                "logprobs": logprobs, "finish_reason": reason})
            else:
                choices.append({"index": i, "text": "".join(c.text), "logprobs": self._legacy(c, slice(None)),
                                "finish_reason": reason})
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model_id,
                "choices": choices, "usage": self.usage(), "seed": self.seed}

    # ----------------------------------------------------------------------------- helpers

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.request.chat else "text_completion"
        chunk = {"id": self.id, "object": obj, "created": self.created, "model": self.model_id,
                 "choices": [] if choice is None else [choice], "seed": self.seed}
        if self.request.include_usage:
            chunk["usage"] = None
        return chunk

    def _legacy(self, choice: Choice, part: slice) -> dict[str, Any] | None:
        """The legacy endpoint's logprobs of some tokens: parallel lists of tokens, log-probabilities, offsets."""
        if not self.request.logprobs:
            return None
        entries = choice.tokens[part]
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": None, "text_offset": choice.offsets[part], "token_ids": [e["token_id"] for e in entries]}
