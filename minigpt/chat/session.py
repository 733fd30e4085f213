"""The conversation itself: messages, sampling settings and the engine, with no terminal in sight.

`ChatSession` holds the conversation (`messages` in TRL's format), the sampling settings and the engine. It
renders the prompt through the chat template, drops the oldest turns when the conversation outgrows the
model's context (the system prompt stays), streams a reply and keeps everything about it on `session.last`
(a `Reply`: prompt ids, generated ids, log-probs, timings, attention when asked) for commands such as /tokens.

A base checkpoint (stage "pretrain") knows no chat template: the session then works in continuation mode,
continuing `<|bos|>` + the conversation as plain text. User text is always ordinary text: typing "<|end|>"
gives the tokens of those seven characters, never the special token. Text that is not valid Unicode (undecodable
bytes that reached Python as lone surrogates, from a terminal, an argument or a loaded file) is stored with
U+FFFD in their place (`clean_text`), so every message can be encoded, tokenized and saved.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..common import MinigptError
from ..infer.engine import Engine, TokenEvent
from ..infer.sampling import SamplingConfig, nth_seed
from ..text.chat_format import render_prompt, unknown_note

CHAT_STAGES = ("sft", "dpo", "rl")  # checkpoints of these stages know the chat template
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with each lone surrogate (an undecodable byte, or a broken escape in JSON) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


@dataclass
class Reply:
    """One assistant reply and everything measured about it (what /tokens, /stats, /probs, /attn read)."""

    prompt_ids: list[int]
    dropped: int = 0  # messages left out of the prompt to fit the context
    seed: int | None = None
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    attention: list[list] | None = None  # per token, per layer (n_head, T_k), when session.capture_attention
    finish_reason: str | None = None  # "stop", "length" or "interrupted"
    slid: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    ended: float | None = None

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"

    @property
    def ttft_s(self) -> float:
        return ((self.first_token or self.ended or self.started) - self.started)

    @property
    def total_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        if len(self.ids) <= 1 or decode <= 0:
            return len(self.ids) / self.total_s if self.total_s > 0 else 0.0
        return (len(self.ids) - 1) / decode

    def add(self, ev: TokenEvent) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.ids.append(ev.token_id)
        self.logprobs.append(ev.logprob)
        self.text += ev.text
        self.slid |= ev.slid
        if ev.attention is not None:
            if self.attention is None:
                self.attention = []
            self.attention.append(ev.attention)
        if ev.finish_reason:
            self.finish_reason = ev.finish_reason


class ChatSession:
    """A conversation with one model: messages + sampling settings + engine.

    `mode` "chat" renders messages through the chat template; "continue" (base models) continues
    `<|bos|>` + the conversation as plain text, each user input on a new line."""

    def __init__(self, engine: Engine, *, sampling: SamplingConfig | None = None, system: str | None = None,
                 mode: str = "chat", use_cache: bool = True, info: dict[str, Any] | None = None):
        if mode not in ("chat", "continue"):
            raise MinigptError(f"--mode {mode}: use chat or continue")
        self.engine, self.tokenizer, self.mode, self.use_cache = engine, engine.tokenizer, mode, use_cache
        self.sampling = sampling or SamplingConfig()
        self.messages: list[dict[str, Any]] = []
        self.info = info or {}  # what the front end shows in /stats (checkpoint path, stage, ...)
        self.capture_attention = False  # /attn sets it: replies then keep each token's attention
        self.last: Reply | None = None
        self.replies = 0  # replies since the start or /clear (reply k is seeded with seed + k)
        self.total_tokens, self.total_seconds = 0, 0.0
        if system:
            self.set_system(system)

    # -------------------------------------------------------------------------------------- conversation

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def set_system(self, text: str) -> None:
        text = clean_text(text)
        if self.system is not None:
            self.messages[0] = {"role": "system", "content": text}
        else:
            self.messages.insert(0, {"role": "system", "content": text})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": clean_text(text)})

    def clear(self) -> None:
        """Forget the conversation; the system prompt stays."""
        self.messages = self.messages[:1] if self.system is not None else []
        self.last, self.replies = None, 0

    def messages_for_save(self) -> list[dict[str, Any]]:
        """The messages as /save writes them: role and content, and `interrupted` on a reply Ctrl-C cut short."""
        return [{k: m[k] for k in ("role", "content", "interrupted") if k in m} for m in self.messages]

    def load_messages(self, messages: list[dict[str, str]]) -> None:
        self.messages = [{**m, "content": clean_text(m["content"])} for m in messages]
        self.last, self.replies = None, 0

    # -------------------------------------------------------------------------------------- prompts

    def stop_ids(self) -> set[int]:
        """Chat mode stops at any special token (a new turn would begin); continuation at <|end|>, <|bos|>."""
        if self.mode == "chat":
            return set(self.tokenizer.specials.values())
        return self.engine.default_stop_ids()

    def plain_text(self, messages: list[dict[str, Any]]) -> str:
        """Continuation mode's text: the system prompt, then each input on a new line with its continuation."""
        text = ""
        for m in messages:
            if m["role"] == "system":
                text += m["content"] + "\n"
            elif m["role"] == "user":
                text += ("\n" if text and not text.endswith("\n") else "") + m["content"]
            else:
                text += m["content"]
        return text

    def render(self, messages: list[dict[str, Any]]) -> list[int]:
        if self.mode == "chat":
            return render_prompt(self.tokenizer, messages)
        return [self.tokenizer.bos_id] + self.tokenizer.encode(self.plain_text(messages))

    def prompt_budget(self) -> int | None:
        """Prompt tokens that leave room for a reply: the context less min(max_new_tokens, a quarter)."""
        limit = self.engine.context_limit
        if limit is None:
            return None
        return max(1, limit - min(self.sampling.max_new_tokens, limit // 4))

    def prompt_ids(self) -> tuple[list[int], int]:
        """The prompt for the next reply and how many of the oldest messages were left out to fit."""
        head = self.messages[:1] if self.system is not None else []
        rest = self.messages[len(head):]
        budget, dropped = self.prompt_budget(), 0
        while True:
            ids = self.render(head + rest[dropped:])
            if budget is None or len(ids) <= budget or dropped >= len(rest) - 1:
                return ids, dropped
            dropped += 1
            while dropped < len(rest) - 1 and rest[dropped]["role"] != "user":  # start on a user turn
                dropped += 1

    # -------------------------------------------------------------------------------------- replies

    def reply_config(self) -> SamplingConfig:
        seed = None if self.sampling.seed is None else nth_seed(self.sampling.seed, self.replies)
        return self.sampling.with_overrides(seed=seed)

    def respond(self, on_text: Callable[[str], None] | None = None,
                on_note: Callable[[str], None] | None = None) -> Reply:
        """Stream a reply to the conversation so far; Ctrl-C ends it early (finish_reason "interrupted").
        The reply joins the history either way; a reply that fails with an error does not."""
        ids, dropped = self.prompt_ids()
        if self.mode == "chat" and self.engine.context_limit is not None and len(ids) > self.prompt_budget():
            raise MinigptError(f"that message takes {len(ids):,} tokens with the chat's template"
                               + (" and system prompt" if self.system else "") + f", more than the "
                               f"{self.prompt_budget():,} the model's {self.engine.context_limit}-token context "
                               "leaves for it beside a reply; shorten it")
        user = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
        if on_note and (note := unknown_note(self.tokenizer, user)):
            on_note(note)
        if dropped and on_note:
            limit = self.engine.context_limit
            on_note(f"context: left out the {dropped} oldest message{'s' * (dropped > 1)} to fit the model's "
                    f"{limit}-token context" + (" (the system prompt stays)" if self.system else ""))
        config = self.reply_config()
        self.replies += 1
        reply = Reply(prompt_ids=ids, dropped=dropped)
        self.last = reply
        stream = None
        try:
            stream = self.engine.stream(ids, config, stop_ids=self.stop_ids(), use_cache=self.use_cache,
                                        capture_attention=self.capture_attention)
            reply.seed = stream.seed
            for ev in stream:
                reply.add(ev)
                if ev.text and on_text:
                    on_text(ev.text)
        except KeyboardInterrupt:
            reply.finish_reason = "interrupted"
            if stream is not None:
                stream.close()
        finally:
            reply.ended = time.perf_counter()
            self.total_tokens += len(reply.ids)
            self.total_seconds += reply.total_s
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.interrupted:
            message["interrupted"] = True
        self.messages.append(message)
        return reply
