"""Token shards and the batches drawn from them: a text source + a tokenizer -> memory-mapped ids.

`prepare()` tokenizes a source with a batched, multi-process `datasets.map` and streams the ids into
`data/<name>/{train,val}.bin` (uint16 when the vocabulary fits, else uint32) plus `meta.json` with the token
and byte counts that bits per byte needs. Memory stays flat in the corpus size: rows are memory-mapped Arrow
and the shards are written batch by batch. `<name>` (`prepared_name`) is the source's key (for a file or
folder, its name and a hash of its resolved path) and the tokenizer's. A prepared folder holds its own copy of
the tokenizer and is reused while the source's fingerprint and the tokenizer's hash match. `resolve_tokenizer()`
turns `--tokenizer` (auto, char or a file) into a tokenizer, training and caching a BPE under data/tokenizers/
for `auto`.

Concurrency: `prepare` holds the data folder's lock (runlock.py) while it checks, writes and opens the shards, so
two `prepare`s of the same data run one after the other (the second waits, then reuses the first's shards);
shards are written under unique temp names, fsynced and renamed, meta.json last. `Prepared.fingerprint()` (the
meta and the shard sizes) is what a resumed run checks its data against.

Batches: `Prepared.check_block_size` refuses a block size any split is too short for, up front;
`TokenWindows` draws random windows with its own `torch.Generator`, whose state is the whole data
position, so a resumed run sees exactly the batches an uninterrupted run would. Under DDP every rank draws the
global batch and keeps its slice, so N processes see the same data as one process with N times the batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from ..common import MinigptError, atomic_write_text, console, fsync_dir, print0
from .sources import TextSource, open_source

FORMAT_VERSION = 1
DEFAULT_VOCAB = 4096


def default_data_root() -> Path:
    """Where prepared shards and cached tokenizers go: $MINIGPT_DATA, else data/ under the working folder."""
    return Path(os.environ.get("MINIGPT_DATA", "data"))


def tokenizer_cache_path(source: TextSource, vocab_size: int, kind: str = "bpe") -> Path:
    """The one cache name of a tokenizer trained on a source: `minigpt tokenizer train` writes it and
    `--tokenizer auto` reuses it. The source fingerprint is in the name, so an edited corpus trains anew."""
    key = hashlib.sha256(source.fingerprint.encode()).hexdigest()[:8]
    name = f"{source.name}-char-{key}.char" if kind == "char" else f"{source.name}-bpe{vocab_size}-{key}.bpe"
    return default_data_root() / "tokenizers" / name


def resolve_tokenizer(spec: str, source: TextSource, vocab_size: int = DEFAULT_VOCAB):
    """'char' -> a character vocabulary of the source; 'auto' -> a BPE trained on the source's train split (both
    cached by source fingerprint, and size); a path -> that file (minigpt .bpe/.char or a .tiktoken file)."""
    from .tokenizer import load_tokenizer, train_bpe, train_char

    if spec not in ("auto", "char"):
        return load_tokenizer(spec)
    path = tokenizer_cache_path(source, vocab_size, "char" if spec == "char" else "bpe")
    if path.is_file():
        return load_tokenizer(path)
    if spec == "char":  # every character of both splits, like nanoGPT; cached like a BPE
        tokenizer = train_char(doc for split in ("train", "val") for doc in source.documents(split))
        tokenizer.save(path)
        return tokenizer
    print0(f"training a {vocab_size}-token BPE tokenizer on {source.spec} (cached at {path})", markup=False)
    tokenizer = train_bpe(source.documents("train"), vocab_size)
    tokenizer.save(path)
    return tokenizer

@dataclass
class Prepared:
    """A prepared data folder: token shards, their meta, and the tokenizer that made them."""

    path: Path
    meta: dict[str, Any]
    _shards: dict[str, np.memmap] = field(default_factory=dict, repr=False, compare=False)

    def open(self) -> "Prepared":
        """Map both shards now (under the folder's lock): a later re-prepare replaces the files, never these."""
        try:
            for split in ("train", "val"):
                self.shard(split)
        except (OSError, ValueError, KeyError) as e:
            raise MinigptError(f"{self.path}: a shard is missing or damaged ({e}); prepare the data again "
                               "(`minigpt prepare --force`)") from None
        return self

    def shard(self, split: str) -> np.memmap:
        if split not in self._shards:
            self._shards[split] = np.memmap(self.path / f"{split}.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")
        return self._shards[split]

    def fingerprint(self) -> str:
        """sha256 of meta.json (source fingerprint, tokenizer hash, token counts) and the shard sizes."""
        sizes = [(self.path / f"{split}.bin").stat().st_size for split in ("train", "val")]
        return hashlib.sha256(json.dumps([self.meta, sizes], sort_keys=True).encode()).hexdigest()

    def tokens(self, split: str) -> int:
        return int(self.meta["splits"][split]["tokens"])

    def check_block_size(self, block_size: int, splits: tuple[str, ...] = ("train", "val")) -> None:
        """Refuse a block size some split cannot fill, before any model or evaluation work (TokenWindows would
        refuse it only when that split's batches are first drawn, after the other split's evaluation)."""
        for split in splits:
            n = len(self.shard(split))
            if n <= block_size + 1:
                raise MinigptError(f"the {split} split of {self.path} has {n:,} tokens, fewer than --block-size "
                                   f"{block_size} + 2; give a smaller --block-size or more text")

    def bytes_per_token(self, split: str) -> float:
        s = self.meta["splits"][split]
        return s["bytes"] / max(1, s["tokens"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.meta["tokenizer_file"]

    def tokenizer(self):
        from .tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer_path)


def _encode_rows(batch: dict[str, list], indices: list[int], *, tokenizer, rows_are_documents: bool) -> dict:
    """datasets.map function: rows -> token ids. Documents each start with <|bos|>; lines of one text file are
    joined per batch (so the pre-split sees real paragraphs) and only the file's first batch gets <|bos|>."""
    bos = tokenizer.bos_id
    if rows_are_documents:
        texts = batch["text"]
        ids = [[bos] + row for row in tokenizer.encode_batch(texts)]
    else:
        texts = ["".join(batch["text"])]
        ids = [([bos] if indices and indices[0] == 0 else []) + tokenizer.encode(texts[0])]
    return {"ids": ids, "n_tokens": [len(r) for r in ids], "n_bytes": [len(t.encode("utf-8")) for t in texts]}


def _write_shard(encoded, path: Path, dtype: np.dtype) -> int:
    """Stream the `ids` column of an encoded dataset into a memmap file; returns the token count."""
    total = int(np.sum(encoded["n_tokens"], dtype=np.int64)) if len(encoded) else 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        arr = np.memmap(tmp, dtype=dtype, mode="w+", shape=(max(total, 1),))
        pos = 0
        for batch in encoded.select_columns(["ids"]).iter(batch_size=1024):
            for row in batch["ids"]:
                arr[pos:pos + len(row)] = row
                pos += len(row)
        arr.flush()
        del arr
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return total


def prepared_name(source: TextSource, tokenizer) -> str:
    """The folder under data/: the source's key (a file's or folder's carries a hash of its resolved path, so
    two files named alike never overwrite each other's shards) and the tokenizer's hash (two character
    tokenizers of one source never share a folder either)."""
    if tokenizer.kind == "char":
        return f"{source.key}-char-{tokenizer.sha256[:8]}"
    return f"{source.key}-bpe{tokenizer.vocab_size}-{tokenizer.sha256[:8]}"


def prepare(source: TextSource | str, tokenizer, *, out: Path | None = None, num_proc: int | None = None,
            force: bool = False) -> Prepared:
    """Tokenize `source` with `tokenizer` into `out` (default data/<source>-<tokenizer>/); reuse if current.
    Holds the folder's lock throughout: a concurrent prepare of the same data waits, then reuses these shards."""
    from ..runlock import FolderLock

    source = open_source(source) if isinstance(source, str) else source
    out = Path(out) if out else default_data_root() / prepared_name(source, tokenizer)
    with FolderLock(out, "data folder", wait=True):
        current = None if force else _current(out, source, tokenizer)
        if current is not None:
            return current.open()
        for leftover in out.glob(".*.tmp"):  # a killed prepare's partial shard
            leftover.unlink(missing_ok=True)
        return _write_prepared(source, tokenizer, out, num_proc).open()


def _current(out: Path, source: TextSource, tokenizer) -> Prepared | None:
    """The prepared folder when it holds this source tokenized by this tokenizer (a torn meta.json: no)."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if (isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION
            and meta.get("source_fingerprint") == source.fingerprint
            and meta.get("tokenizer_sha256") == tokenizer.sha256
            and all((out / f"{split}.bin").is_file() for split in ("train", "val"))):
        return Prepared(out, meta)
    return None


def _write_prepared(source: TextSource, tokenizer, out: Path, num_proc: int | None) -> Prepared:
    tok_file = "tokenizer.char" if tokenizer.kind == "char" else "tokenizer.bpe"
    (out / "meta.json").unlink(missing_ok=True)  # the shards change first: no meta describes them until the end
    tokenizer.save(out / tok_file)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    if note := source.newline_note():
        print0(escape(note), style="yellow", soft_wrap=True)
    splits = {}
    for split in ("train", "val"):
        data = source.dataset(split)
        if len(data) == 0:
            raise MinigptError(f"--data {source.spec}: the {split} split is empty; give more text")
        procs = num_proc or (min(os.cpu_count() or 1, 8) if data.data.nbytes > 32 << 20 else 1)
        with console.status(escape(f"tokenizing {source.spec} [{split}] with {procs} process(es)")):
            encoded = data.map(_encode_rows, batched=True, batch_size=1000, with_indices=True,
                               remove_columns=data.column_names, num_proc=procs if procs > 1 else None,
                               fn_kwargs={"tokenizer": tokenizer, "rows_are_documents": source.rows_are_documents},
                               desc=None)
            tokens = _write_shard(encoded, out / f"{split}.bin", dtype)
        splits[split] = {"tokens": tokens, "bytes": int(np.sum(encoded["n_bytes"], dtype=np.int64)),
                         "rows": len(data)}
        if tokens <= 1:
            raise MinigptError(f"--data {source.spec}: the {split} split has no text after tokenizing")
    meta = {"format": FORMAT_VERSION, "source": source.spec, "source_fingerprint": source.fingerprint,
            "tokenizer_file": tok_file, "tokenizer_sha256": tokenizer.sha256, "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "splits": splits}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return Prepared(out, meta)


def load_prepared(path: str | Path) -> Prepared:
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise MinigptError(f"{path}: not a prepared data folder (no meta.json); run `minigpt prepare` first")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise MinigptError(f"{meta_path}: unreadable ({e}); prepare the data again "
                           "(`minigpt prepare --force`)") from None
    return Prepared(path, meta).open()


# ---------------------------------------------------------------------------------------------- batches


class TokenWindows:
    """Random (x, y) windows of `block_size` tokens from a shard, an endless stateful iterator.

    The generator's state is the whole position: `state_dict()` after step k, loaded into a fresh iterator,
    continues with batch k+1 exactly. `rank`/`world` slice a global batch so DDP sees single-process data.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, *, seed: int, rank: int = 0,
                 world: int = 1):
        if len(tokens) <= block_size + 1:
            raise MinigptError(f"the data has {len(tokens)} tokens, fewer than --block-size {block_size} + 2; "
                               "give more text or lower --block-size")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> "TokenWindows":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - self.block_size - 1, (self.batch_size * self.world,),
                               generator=self.generator)
        starts = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].numpy()
        rows = np.stack([self.tokens[s:s + self.block_size + 1] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(rows)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])


def fixed_batches(iterator_factory, n: int) -> list:
    """The first n batches of a freshly seeded iterator: the same evaluation batches at every eval."""
    it = iterator_factory()
    return [next(it) for _ in range(n)]
