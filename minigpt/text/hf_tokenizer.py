r"""minigpt tokenizers to and from Hugging Face's `tokenizers` format (tokenizer.json), id for id.

Out (`hf_tokenizer_json`), for a byte-level BPE:
  - model: BPE over GPT-2's byte-to-character alphabet (every byte one printable character), ids = minigpt's
    ranks. The merges are derived from the ranks the way tiktoken -> HF converters do (transformers'
    TikTokenConverter): every split of a token into two shorter tokens, ordered by the token's rank, then by the
    ranks of the two halves. `ignore_merges` takes a pre-split chunk that is itself a token whole, as tiktoken does.
  - pre-tokenizer: Split on minigpt's own pattern (isolated), then ByteLevel without GPT-2's regex. `tokenizers`
    runs Oniguruma, which reads `\p{N}{1,3}+` as `(\p{N}{1,3})+` (all digits in one chunk) where tiktoken reads
    a possessive repeat (chunks of 3), so bounded possessive repeats are written as atomic groups,
    `(?>\p{N}{1,3})`, which mean the same in both (`oniguruma_pattern`; importing reverses it).
  - decoder ByteLevel; the 5 special tokens are added special tokens with minigpt's ids (not in the BPE vocab,
    so no chunk of text can ever become one through `ignore_merges`).
A character tokenizer becomes a WordLevel model over single characters (unknown ones -> `<|unk|>`), decoded
by joining. tests/test_export.py holds both to minigpt's `encode` on 1 MB of mixed text.

Typed special tokens: `tokenizers` matches added tokens in raw text, so `tok.encode("<|end|>")` gives the
special id by default. minigpt never does that; pass `split_special_tokens=True` to get minigpt's ids for any
user text (`tok(text, split_special_tokens=True)`), and `apply_chat_template(..., sanitize_control_tokens=True)`
to keep typed control strings out of the specials in a chat (they are then encoded as text on their own).

`CHAT_TEMPLATE` renders chat_format's template in Jinja: `apply_chat_template(messages,
add_generation_prompt=True)` gives exactly `render_prompt`'s ids.

In (`from_hf_tokenizer`): a GPT-2-style byte-level BPE folder (tokenizer.json, or vocab.json + merges.txt) ->
a minigpt `Tokenizer` with the same ids as ranks (the ids must follow the merge order, as GPT-2's do), the
folder's pre-split regex (GPT-2's for a plain ByteLevel pre-tokenizer), and minigpt's 5 special tokens after them.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..common import MinigptError
from .bpe import GPT2_PATTERN
from .chat_format import ROLES
from .tokenizer import UNK, CharTokenizer, Tokenizer

# apply_chat_template renders this; content goes in verbatim between the role token and <|end|>.
CHAT_TEMPLATE = (
    "{{- '<|bos|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in [" + ", ".join(f"'{r}'" for r in ROLES) + "] -%}"
    "{{- raise_exception('minigpt chats have roles " + ", ".join(ROLES) + " only') -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' + message['content'] + '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


_ATOM = r"\\p\{\w+\}|\\.|\[(?:\\.|[^\]\\])*\]|[^\\\[\](){}|?*+]"  # \p{X}, \x, [class] or one character
_BOUNDED = r"\{\d+(?:,\d*)?\}"


def oniguruma_pattern(pattern: str) -> str:
    """`pattern` for `tokenizers`: each bounded possessive repeat `X{m,n}+` as the atomic group `(?>X{m,n})`."""
    out = re.sub(f"({_ATOM})({_BOUNDED})\\+", r"(?>\1\2)", pattern)
    if re.search(f"{_BOUNDED}\\+", out):
        raise MinigptError("the pre-split pattern repeats a group possessively ('(...){m,n}+'), which Hugging Face's "
                           "regex engine reads differently; rewrite it with an atomic group '(?>...)'")
    return out


def tiktoken_pattern(pattern: str) -> str:
    """The inverse of `oniguruma_pattern` (a pattern read from a tokenizer.json)."""
    return re.sub(f"\\(\\?>({_ATOM})({_BOUNDED})\\)", r"\1\2+", pattern)


@lru_cache(maxsize=1)
def byte_chars() -> tuple[str, ...]:
    """GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the other 68 for U+0100+."""
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return tuple(out)


@lru_cache(maxsize=1)
def _byte_values() -> dict[str, int]:
    return {c: i for i, c in enumerate(byte_chars())}


def byte_string(b: bytes) -> str:
    """A token's bytes as the byte-level string that tokenizer.json and GGUF vocabularies hold."""
    table = byte_chars()
    return "".join(table[x] for x in b)


def string_bytes(s: str, where: str) -> bytes:
    inverse = _byte_values()
    try:
        return bytes(inverse[c] for c in s)
    except KeyError:
        raise MinigptError(f"{where}: token {s!r} is not in the byte-level alphabet; only byte-level BPE "
                           "tokenizers (GPT-2 style) can be imported") from None


# ---------------------------------------------------------------------------------------------- out


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every split (left, right) of each token into two tokens, by the token's rank, then (rank left, rank right)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += sorted(splits, key=lambda lr: (ranks[lr[0]], ranks[lr[1]]))
    return merges


def _added(tokenizer) -> list[dict[str, Any]]:
    return [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for name, i in tokenizer.specials.items()]


def hf_tokenizer_json(tokenizer: Tokenizer | CharTokenizer) -> dict[str, Any]:
    """The tokenizer.json content (a dict; `json.dumps` it) that encodes exactly like `tokenizer`."""
    bos = {"SpecialToken": {"id": "<|bos|>", "type_id": 0}}
    text = [{"Sequence": {"id": "A", "type_id": 0}}]  # tok(text) starts with <|bos|>, as minigpt's prompts do
    post = {"type": "TemplateProcessing", "single": [bos, *text], "pair": [bos, *text, bos, {"Sequence": {
            "id": "B", "type_id": 0}}], "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [tokenizer.bos_id],
                                                                       "tokens": ["<|bos|>"]}}}
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(tokenizer),
            "normalizer": None, "post_processor": post}
    if isinstance(tokenizer, CharTokenizer):
        vocab = {ch: i for i, ch in enumerate(tokenizer.chars)} | {UNK: tokenizer.unk_id}
        return base | {
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated",
                              "invert": False},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
            "decoder": {"type": "Fuse"},
        }
    vocab = {byte_string(t): i for t, i in tokenizer.ranks.items()}
    merges = [[byte_string(a), byte_string(b)] for a, b in bpe_merges(tokenizer.ranks)]
    return base | {
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": oniguruma_pattern(tokenizer.pattern)}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    }


def hf_tokenizer_config(tokenizer, max_length: int) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens' roles, the chat template, the model's context length."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|end|>",
        "unk_token": UNK if isinstance(tokenizer, CharTokenizer) else None,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in _added(tokenizer)},
    }


# ---------------------------------------------------------------------------------------------- in


def _pattern_of(pre: dict | None, where: str) -> str:
    """The pre-split regex of a byte-level pre-tokenizer: GPT-2's, or the Split regex in front of ByteLevel."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return GPT2_PATTERN
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and "Regex" in steps[0].get("pattern", {})
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        return tiktoken_pattern(steps[0]["pattern"]["Regex"])
    raise MinigptError(f"{where}: pre-tokenizer {json.dumps(pre)[:120]} is not GPT-2's byte-level one; "
                       "minigpt imports byte-level BPE tokenizers only")


def _read_bpe(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]], str]:
    """(vocab, merges, pattern) from tokenizer.json, else from vocab.json + merges.txt (GPT-2's pattern)."""
    path = folder / "tokenizer.json"
    if path.is_file():
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec.get("model", {})
        if model.get("type") != "BPE" or spec.get("normalizer") is not None:
            raise MinigptError(f"{path}: a {model.get('type')} model with normalizer {spec.get('normalizer')}; "
                               "minigpt imports byte-level BPE tokenizers (GPT-2 style) only")
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model.get("merges", [])]
        return model["vocab"], merges, _pattern_of(spec.get("pre_tokenizer"), str(path))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(ln.split(" ")) for ln in lines if ln and not ln.startswith("#version")]
        return vocab, merges, GPT2_PATTERN
    raise MinigptError(f"{folder}: no tokenizer.json (nor vocab.json + merges.txt); give a Hugging Face model "
                       "folder with its tokenizer")


def from_hf_tokenizer(folder: str | Path, name: str = "hf") -> Tokenizer:
    """A minigpt Tokenizer with the folder's BPE ids as ranks and minigpt's special tokens after the last id."""
    folder = Path(folder)
    vocab, merges, pattern = _read_bpe(folder)
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)):
        raise MinigptError(f"{folder}: the vocabulary ids are not 0..{n - 1}; minigpt needs contiguous ids")
    by_id = sorted(vocab, key=vocab.__getitem__)
    tokens = [string_bytes(s, str(folder)) for s in by_id]
    last, made = -1, set()
    for a, b in merges:  # tiktoken merges by rank: each new merge result must have a later id than the last
        token = vocab.get(a + b)
        if token is None or (token not in made and token <= last):
            raise MinigptError(f"{folder}: merge {a!r} + {b!r} does not make a later id than the merges before "
                               "it; this tokenizer's ids do not follow its merge order, so ranks cannot keep them")
        if token not in made:
            made.add(token)
            last = token
    return Tokenizer(tokens, pattern, name=name)
