"""OpenAI's wire format, both ways: request bodies -> a checked `Completion` to run, and errors in OpenAI's shape.

Requests (`POST /v1/chat/completions`, `POST /v1/completions`): the body must be UTF-8 JSON holding an object.
Mapped sampler fields: `temperature`, `top_p`, `max_tokens` (or `max_completion_tokens`), `stop` (a string or a
list), `seed`, `n` (1-8 samples sharing one prefill); minigpt's own `top_k`, `min_p` and `repetition_penalty`
are accepted as extensions. A field left out takes the server's default (`minigpt serve --temperature ...`,
from SamplingConfig). Values are checked twice: their JSON type here, their range by SamplingConfig itself,
whose one-line message becomes the error's (`--max-new-tokens: must be ...` reads `max_tokens: must be ...`).
`stream`, `stream_options.include_usage` and `logprobs` (chat) are honoured. Fields that would change the
answer but that minigpt cannot honour (penalties by presence or frequency, `logit_bias`, tools and
`tool_choice`, a `response_format` other than text, audio, top alternatives in `top_logprobs`, `echo`,
`best_of`) get a 400 saying so; any other field is ignored, as `model` is: one server serves one model, whatever
name a client sends (many send their own default), and /v1/models says which.

Chat messages: roles `system`, `user`, `assistant` (`developer`, OpenAI's newer name for system, is taken as
system); `content` a string or a list of `{"type": "text", "text": ...}` parts. They are rendered by the
checkpoint's chat template (`render_prompt`, through ChatSession so the terminal chat and the server agree),
where user text is always ordinary text, never special tokens. A base checkpoint (stage pretrain) has no template:
chat is answered as a continuation of the conversation's plain text (as `minigpt chat` does); /v1/models says so.
A prompt that fills the model's context is a 400 `context_length_exceeded`, not a silent cut; a shorter one gets
at most the room it leaves (`max_tokens` is cut to it, and a reply that reaches it ends with "length").
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ..common import MinigptError
from ..config import flag
from ..infer.sampling import SamplingConfig
from ..text.chat_format import validate_messages

MAX_N = 8
# request field -> SamplingConfig field, and the JSON type it must have
SAMPLING = {"temperature": ("temperature", float), "top_p": ("top_p", float), "max_tokens": ("max_new_tokens", int),
            "max_completion_tokens": ("max_new_tokens", int), "seed": ("seed", int), "top_k": ("top_k", int),
            "min_p": ("min_p", float), "repetition_penalty": ("repetition_penalty", float)}
# fields minigpt cannot honour, with the value that means "not used" and what to do instead
UNSUPPORTED = {"presence_penalty": (0, "use repetition_penalty (1.1-1.3) instead"),
               "frequency_penalty": (0, "use repetition_penalty (1.1-1.3) instead"),
               "logit_bias": (None, "leave it out"), "tools": (None, "this model cannot call tools"),
               "functions": (None, "this model cannot call functions"), "echo": (False, "leave it out"),
               "best_of": (1, "ask for n samples instead"), "suffix": (None, "leave it out"),
               "top_logprobs": (0, "POST /v1/minigpt/inspect gives any token's top alternatives"),
               "tool_choice": ("none", "this model cannot call tools"),
               "function_call": ("none", "this model cannot call functions"),
               "response_format": ({"type": "text"}, "this model writes plain text only; leave it out"),
               "modalities": (["text"], "this model reads and writes text only"),
               "audio": (None, "this model reads and writes text only"),
               "prediction": (None, "leave it out")}


class ApiError(Exception):
    """An error answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Completion:
    """A checked request, ready for the worker."""

    chat: bool  # /v1/chat/completions (else /v1/completions)
    prompt_ids: list[int]
    config: SamplingConfig
    stop_ids: set[int]
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400 that says what was wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(f"the request body is not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8") from None
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError as e:
        raise ApiError(f"the request body is not valid JSON ({e}); send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object, e.g. {\"messages\": [...]}")
    return body


def _typed(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """body[name] checked against a JSON type (int also accepts 3.0; float accepts ints; bool is neither)."""
    value = body.get(name)
    if value is None:
        return default
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float)
                                                                          and value.is_integer()))
        value = int(value) if ok else value
    elif kind is float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
        raise ApiError(f"{name}: must be {want}, got {json.dumps(value)}", param=name)
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError("stop: must be a non-empty string or a list of them", param="stop")
    return tuple(stops)


def sampling(body: dict[str, Any], defaults: SamplingConfig) -> SamplingConfig:
    """The request's SamplingConfig: the server's defaults, with the fields the request sets."""
    for name, (unused, advice) in UNSUPPORTED.items():
        if body.get(name) not in (None, unused, [], {}):
            raise ApiError(f"{name} is not supported by minigpt; {advice}", param=name)
    changes: dict[str, Any] = {}
    for name, (field, kind) in SAMPLING.items():
        value = _typed(body, name, kind)
        if value is not None:
            changes[field] = value
    stops = _stops(body)
    if stops:
        changes["stop"] = stops
    try:
        return dataclasses.replace(defaults, **changes)
    except MinigptError as e:
        field = str(e).split(":", 1)[0]
        name = next((n for n, (f, _) in SAMPLING.items() if flag(f) == field and n in body), field.lstrip("-"))
        raise ApiError(str(e).replace(field, name, 1), param=name) from None


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """`messages`, checked and normalised (text parts joined, developer -> system)."""
    messages = body.get("messages")
    if messages is None:
        raise ApiError("messages: required; send a list like [{\"role\": \"user\", \"content\": \"hi\"}]",
                       param="messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages: must be a non-empty list of {\"role\", \"content\"} objects", param="messages")
    out: list[Any] = []
    for i, m in enumerate(messages):
        if isinstance(m, dict):
            m = dict(m)
            if "content" in m:
                m["content"] = _text_content(m["content"], i)
            if m.get("role") == "developer":
                m["role"] = "system"
        out.append(m)
    try:
        return validate_messages(out, "messages")
    except MinigptError as e:
        raise ApiError(str(e), param="messages") from None


def _text_content(content: Any, i: int) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(f"messages: message {i} has a {kind!r} content part; this model reads text parts only",
                           param="messages")
        parts.append(part["text"])
    return "".join(parts)


def completion_prompt(body: dict[str, Any], tokenizer, vocab_size: int) -> list[int]:
    """/v1/completions' `prompt`: a string (encoded after <|bos|>, as `minigpt sample` does), a list holding one
    string, or a list of token ids."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return [tokenizer.bos_id] + tokenizer.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        bad = next((i for i in prompt if not 0 <= i < vocab_size), None)
        if bad is not None:
            raise ApiError(f"prompt: token id {bad} is outside the vocabulary (0..{vocab_size - 1})", param="prompt")
        return list(prompt)
    raise ApiError("prompt: must be a string, or a list of token ids (one prompt per request)", param="prompt")


def fit_context(config: SamplingConfig, prompt_ids: list[int], limit: int | None, param: str) -> SamplingConfig:
    """The request's sampling with max_tokens cut to the room the prompt leaves in the context (the reply then
    ends with finish_reason "length"), so the engine never slides its window past the start of the prompt; a
    prompt that leaves no room is a 400 `context_length_exceeded`."""
    if limit is None:
        return config
    room = limit - len(prompt_ids)
    if room < 1:
        advice = "drop the oldest turns" if param == "messages" else "shorten the prompt"
        raise ApiError(f"this model's context is {limit} tokens and the {param} "
                       f"{'take' if param == 'messages' else 'takes'} {len(prompt_ids)}, leaving "
                       f"no room for a reply; {advice}", param=param, code="context_length_exceeded")
    return config if config.max_new_tokens <= room else dataclasses.replace(config, max_new_tokens=room)


def options(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """n, stream, stream_options.include_usage and logprobs, checked."""
    n = _typed(body, "n", int, 1)
    if not 1 <= n <= MAX_N:
        raise ApiError(f"n: must be between 1 and {MAX_N}, got {n}", param="n")
    stream = _typed(body, "stream", bool, False)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ApiError("stream_options: must be an object like {\"include_usage\": true}", param="stream_options")
    include_usage = _typed(stream_options, "include_usage", bool, False)
    if stream_options and not stream:
        raise ApiError("stream_options: only allowed with \"stream\": true", param="stream_options")
    if chat:
        logprobs = _typed(body, "logprobs", bool, False)
    else:  # the legacy endpoint's logprobs is a count of alternatives; 0 = the sampled tokens' own only
        count = _typed(body, "logprobs", int)
        if count:
            raise ApiError(f"logprobs: {count} alternatives are not supported; give 0 (the sampled tokens' own "
                           "log-probabilities), or POST /v1/minigpt/inspect for alternatives", param="logprobs")
        logprobs = count == 0
    return {"n": n, "stream": stream, "include_usage": include_usage, "logprobs": logprobs}
