"""Byte-level BPE training: the pre-split patterns, chunk counting and incremental merges.

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

import collections
import heapq
import itertools
import multiprocessing
import os
import sys
import time
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import regex

from ..common import MinigptError

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


def learn_merges(chunks: dict[str, int], n_merges: int, on_merge: Callable[[int], None] | None = None
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
    AB, C, bV, cV = chr(a) + chr(b), chr(c), b * V, c * V
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


def train_merges(texts: Iterable[str], n_merges: int, pattern: str = DEFAULT_PATTERN, *, progress: bool = True,
                 workers: int | None = None) -> list[tuple[int, int]]:
    """Count the pre-split chunks of `texts` (on `workers` processes), then learn up to `n_merges` merges
    (left id, right id), with rich progress bars for both phases."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..common import console

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
        merges = learn_merges(chunks, n_merges,
                               on_merge=lambda m: show(merging, completed=m, status=f"{m}/{n_merges}"))
        bar.update(merging, completed=len(merges), status=f"{len(merges)}/{n_merges}")
        bar.refresh()
    return merges
