"""The chat template: special tokens, and conversations rendered to token ids with a loss mask.

A conversation renders as `<|bos|>`, then for each message its role token, its content (always encoded as
ordinary text, even when a user types "<|end|>"), and `<|end|>`. SFT trains only on what the assistant says:
the mask is 1 on assistant content and its closing `<|end|>`, 0 elsewhere. A prompt for generation is the
conversation so far plus `<|assistant|>`, so the model continues as the assistant and stops at `<|end|>`.
Pretraining documents also start with `<|bos|>`, so the token means "a new text starts here" in every stage.
How a token looks when shown on its own (`token_text`, `quoted`, `debug_view`) lives here too: a special token
by name, bytes that are not a whole character as \\xNN.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from ..common import MinigptError

# Reserved ids at the top of every vocabulary, in this order. Add one only with a reason.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|bos|>",        # start of a document or conversation
    "<|system|>",     # the system message follows
    "<|user|>",       # a user turn follows
    "<|assistant|>",  # an assistant turn follows; generation is primed with it
    "<|end|>",        # end of a turn; the assistant stops here
)
ROLES = ("system", "user", "assistant")


def role_token(role: str) -> str:
    return f"<|{role}|>"


def validate_messages(messages: Any, where: str = "conversation") -> list[dict[str, str]]:
    """Check the TRL `messages` shape; return it as plain dicts. Errors name `where` (file:line)."""
    if not isinstance(messages, list) or not messages:
        raise MinigptError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MinigptError(f"{where}: message {i} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise MinigptError(f"{where}: message {i} has role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise MinigptError(f"{where}: message {i} content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_conversation(tokenizer, messages: Iterable[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 mask of the same length: 1 exactly on assistant content and its `<|end|>`."""
    ids, mask = [tokenizer.special_id("<|bos|>")], [0]
    end = tokenizer.special_id("<|end|>")
    for m in messages:
        content = tokenizer.encode(m["content"])
        learn = int(m["role"] == "assistant")
        ids += [tokenizer.special_id(role_token(m["role"]))] + content + [end]
        mask += [0] + [learn] * (len(content) + 1)
    return ids, mask


def render_prompt(tokenizer, messages: Iterable[dict[str, str]]) -> list[int]:
    """The conversation so far, then `<|assistant|>`: what the engine continues to get a reply."""
    ids, _ = render_conversation(tokenizer, messages)
    return ids + [tokenizer.special_id("<|assistant|>")]


def prompt_messages(prompt: str | list[dict[str, str]], where: str = "prompt") -> list[dict[str, str]]:
    """A preference/RL prompt given as a plain string (one user turn) or as a list of messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return validate_messages(prompt, where)


def render_completion(tokenizer, prompt: list[dict[str, str]], reply: str) -> tuple[list[int], list[int]]:
    """Prompt + one assistant reply: ids and a mask on the reply (and its `<|end|>`) only."""
    return render_conversation(tokenizer, prompt + [{"role": "assistant", "content": reply}])


def debug_view(tokenizer, ids: list[int], mask: list[int] | None = None):
    """A rich Text showing each token; special tokens bold, trained (mask=1) tokens green, others dim."""
    from rich.text import Text

    text = Text()
    for i, t in enumerate(ids):
        piece = token_text(tokenizer, t)  # a byte of a character as \\xNN, not U+FFFD
        trained = mask is not None and mask[i]
        style = "bold magenta" if tokenizer.is_special(t) else ("green" if trained else "dim")
        text.append(piece, style=style + (" underline" if trained else ""))
    return text


def quoted(text: str) -> str:
    """A token's text (`token_text`) quoted on one line, JSON-style, its \\xNN escapes left single."""
    return json.dumps(text, ensure_ascii=False).replace("\\\\x", "\\x")


def token_text(tokenizer, token_id: int) -> str:
    """The token's own text: special tokens by name, bytes that are not whole UTF-8 characters as \\xNN."""
    if tokenizer.is_special(token_id):
        return next((name for name, i in tokenizer.specials.items() if i == token_id), f"<{token_id}>")
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


def unknown_note(tokenizer, text: str) -> str | None:
    """For a character tokenizer: a note naming the characters of `text` its vocabulary lacks (each becomes
    `<|unk|>`, which the model never saw in training), or None. BPE tokenizers have every byte."""
    if getattr(tokenizer, "kind", None) != "char":
        return None
    known = set(tokenizer.chars)
    missing = list(dict.fromkeys(c for c in text if c not in known))  # in the order they appear
    if not missing:
        return None
    shown = "".join(missing[:10]) + ("..." if len(missing) > 10 else "")
    return (f"note: {len(missing)} character{'s' * (len(missing) > 1)} ({shown!r}) not in this character "
            "tokenizer's vocabulary: each becomes <|unk|>, which the model never saw")
