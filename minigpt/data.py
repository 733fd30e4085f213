"""Text sources, token shards and batch iterators.

Sources (all read through `datasets`): `pydocs` (the built-in corpus, see pydocs.py), a text file, a folder of
.txt/.md files, a .jsonl/.json/.parquet/.csv file with a `text` column, or a Hub dataset id (online only).
`prepare()` tokenizes a source with a batched, multi-process `datasets.map` and streams the ids into
`data/<name>/{train,val}.bin` (uint16 when the vocabulary fits, else uint32) plus `meta.json` with the token
and byte counts that bits per byte needs. Memory stays flat in the corpus size: rows are memory-mapped Arrow
and the shards are written batch by batch. A prepared folder holds its own copy of the tokenizer and is reused
while the source's fingerprint and the tokenizer's hash match.

Splits: a text file is cut at the first line break after 90% of its bytes (nanoGPT's 90/10 split, made
line-exact); a folder sends every 10th file (by a hash of its name) to val; row datasets use their own
validation split when they have one, else a seeded 5% split; pydocs splits by module.

Batches: `TokenWindows` draws random windows with its own `torch.Generator`, whose state is the whole data
position, so a resumed run sees exactly the batches an uninterrupted run would. Under DDP every rank draws the
global batch and keeps its slice, so N processes see the same data as one process with N times the batch.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .common import MinigptError, atomic_write_text, console, minigpt_home

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
ROW_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
VAL_FRACTION = 0.1
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------- sources


def _datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _cache_dir() -> str:
    return str(minigpt_home() / "datasets")


def check_text_file(path: Path) -> None:
    """Refuse empty, binary and non-UTF-8 files with one line naming the file (one streaming pass)."""
    if path.stat().st_size == 0:
        raise MinigptError(f"{path}: the file is empty; give a text file with some content")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, blank = 0, True
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if b"\x00" in chunk:
                raise MinigptError(f"{path}: looks binary (NUL byte near byte {offset + chunk.index(0)}); "
                                   "give a UTF-8 text file")
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise MinigptError(f"{path}: not UTF-8 (bad byte at offset {offset + e.start}); "
                                   "convert it, e.g. `iconv -t UTF-8`") from None
            blank = blank and not text.strip()
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise MinigptError(f"{path}: not UTF-8 (truncated character at the end); convert it to UTF-8") from None
    if blank:
        raise MinigptError(f"{path}: contains only whitespace; give a text file with some content")


def _line_split_point(path: Path) -> int:
    """Number of lines in the train part: lines that start before 90% of the file's bytes."""
    cut = int(path.stat().st_size * (1 - VAL_FRACTION))
    lines = 0
    with open(path, "rb") as f:
        while f.tell() < cut:
            chunk = f.read(min(1 << 20, cut - f.tell()))
            lines += chunk.count(b"\n")
        # the line containing the cut belongs to train
        return lines + 1


@dataclass
class TextSource:
    """A named text source. `dataset(split)` gives a `datasets.Dataset` with a `text` column; `whole_document`
    is False when rows are lines of one continuous text (a .txt file), True when each row is a document."""

    spec: str
    name: str
    fingerprint: str
    kind: str  # "pydocs" | "file" | "folder" | "rows" | "hub"
    path: Path | None = None
    files: tuple[Path, ...] = ()

    @property
    def rows_are_documents(self) -> bool:
        return self.kind != "file"

    def dataset(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(split)
        ds = _datasets()
        if self.kind == "pydocs":
            from . import pydocs

            return ds.Dataset.from_dict({"text": [t for _, t in pydocs.documents(split)]})
        if self.kind == "file":
            full = ds.load_dataset("text", data_files=str(self.path), keep_linebreaks=True, split="train",
                                   cache_dir=_cache_dir())
            n_train = min(_line_split_point(self.path), len(full) - 1)
            return full.select(range(n_train) if split == "train" else range(n_train, len(full)))
        if self.kind == "folder":
            files = [f for f in self.files if _folder_split(f, self.files) == split]
            return ds.load_dataset("text", data_files=[str(f) for f in files], sample_by="document", split="train",
                                   cache_dir=_cache_dir())
        return self._row_split(split)

    def _row_split(self, split: str):
        ds = _datasets()
        try:
            if self.kind == "rows":
                loaded = ds.load_dataset(ROW_FORMATS[self.path.suffix], data_files=str(self.path), cache_dir=_cache_dir())
            else:
                loaded = ds.load_dataset(self.spec, cache_dir=_cache_dir())
        except MinigptError:
            raise
        except Exception as e:  # datasets raises many types; the user needs one line
            raise MinigptError(f"--data {self.spec}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                               "check the path, or your network for a Hub id") from None
        train = loaded["train"] if "train" in loaded else loaded[next(iter(loaded))]
        if "text" not in train.column_names:
            raise MinigptError(f"--data {self.spec}: no 'text' column (columns: {', '.join(train.column_names)}); "
                               "rename the field holding the text to 'text'")
        val_name = next((s for s in ("validation", "val", "test") if s in loaded), None)
        if val_name is None:
            if len(train) < 2:
                raise MinigptError(f"--data {self.spec}: needs at least 2 rows to hold some out for validation")
            parts = train.train_test_split(test_size=max(1, int(0.05 * len(train))), seed=0)
            train, val = parts["train"], parts["test"]
        else:
            val = loaded[val_name]
        chosen = train if split == "train" else val
        return chosen.select_columns(["text"])

    def documents(self, split: str) -> Iterator[str]:
        """Plain-text documents of a split (for tokenizer training). Lines of a text file come joined in
        blocks of about 1 MB so the pre-split never sees an artificial boundary mid-paragraph."""
        data = self.dataset(split)
        if self.rows_are_documents:
            for batch in data.iter(batch_size=256):
                yield from batch["text"]
            return
        for batch in data.iter(batch_size=10_000):
            yield "".join(batch["text"])


def _folder_split(path: Path, files: tuple[Path, ...]) -> str:
    if len(files) == 1:
        return "train"
    h = hashlib.sha256(path.name.encode("utf-8")).digest()[0]
    if any(hashlib.sha256(f.name.encode("utf-8")).digest()[0] % 10 == 0 for f in files):
        return "val" if h % 10 == 0 else "train"
    return "val" if path == files[-1] else "train"  # too few files for the hash to pick one


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:60] or "data"


def open_source(spec: str = "pydocs") -> TextSource:
    """Resolve `--data SPEC` to a TextSource, refusing what cannot work with a one-line reason."""
    if spec == "pydocs":
        import sysconfig

        fp = f"pydocs:{sys.version.split()[0]}:{sysconfig.get_paths()['stdlib']}"
        return TextSource(spec, "pydocs", fp, "pydocs")
    path = Path(spec).expanduser()
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES))
        if not files:
            raise MinigptError(f"--data {spec}: the folder has no {'/'.join(TEXT_SUFFIXES)} files")
        for f in files:
            check_text_file(f)
        stamp = ";".join(f"{f.relative_to(path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        return TextSource(spec, _slug(path.resolve().name), hashlib.sha256(stamp.encode()).hexdigest(), "folder",
                          path, files)
    if path.is_file():
        stat = path.stat()
        fp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if path.suffix.lower() in ROW_FORMATS:
            if stat.st_size == 0:
                raise MinigptError(f"{path}: the file is empty")
            return TextSource(spec, _slug(path.stem), fp, "rows", path)
        check_text_file(path)
        return TextSource(spec, _slug(path.stem), fp, "file", path)
    if os.sep in spec and not re.fullmatch(r"[\w.-]+/[\w.-]+", spec) or spec.startswith((".", "~")):
        raise MinigptError(f"--data {spec}: no such file or folder")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise MinigptError(f"--data {spec}: not a file, folder, 'pydocs' or a Hub dataset id")
    return TextSource(spec, _slug(spec.replace("/", "--")), f"hub:{spec}", "hub")


# ---------------------------------------------------------------------------------------------- prepare


@dataclass
class Prepared:
    """A prepared data folder: token shards, their meta, and the tokenizer that made them."""

    path: Path
    meta: dict[str, Any]

    def shard(self, split: str) -> np.memmap:
        return np.memmap(self.path / f"{split}.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")

    def tokens(self, split: str) -> int:
        return int(self.meta["splits"][split]["tokens"])

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
    tmp = path.with_suffix(".bin.tmp")
    arr = np.memmap(tmp, dtype=dtype, mode="w+", shape=(max(total, 1),))
    pos = 0
    for batch in encoded.select_columns(["ids"]).iter(batch_size=1024):
        for row in batch["ids"]:
            arr[pos:pos + len(row)] = row
            pos += len(row)
    arr.flush()
    del arr
    os.replace(tmp, path)
    return total


def default_data_root() -> Path:
    return Path(os.environ.get("MINIGPT_DATA", "data"))


def prepared_name(source: TextSource, tokenizer) -> str:
    if tokenizer.kind == "char":
        return f"{source.name}-char"
    return f"{source.name}-bpe{tokenizer.vocab_size}-{tokenizer.sha256[:8]}"


def prepare(source: TextSource | str, tokenizer, *, out: Path | None = None, num_proc: int | None = None,
            force: bool = False) -> Prepared:
    """Tokenize `source` with `tokenizer` into `out` (default data/<source>-<tokenizer>/); reuse if current."""
    source = open_source(source) if isinstance(source, str) else source
    out = Path(out) if out else default_data_root() / prepared_name(source, tokenizer)
    meta_path = out / "meta.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        if (meta.get("format") == FORMAT_VERSION and meta.get("source_fingerprint") == source.fingerprint
                and meta.get("tokenizer_sha256") == tokenizer.sha256):
            return Prepared(out, meta)
    out.mkdir(parents=True, exist_ok=True)
    tok_file = "tokenizer.char" if tokenizer.kind == "char" else "tokenizer.bpe"
    tokenizer.save(out / tok_file)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    splits = {}
    for split in ("train", "val"):
        data = source.dataset(split)
        if len(data) == 0:
            raise MinigptError(f"--data {source.spec}: the {split} split is empty; give more text")
        procs = num_proc or (min(os.cpu_count() or 1, 8) if data.data.nbytes > 32 << 20 else 1)
        with console.status(f"tokenizing {source.spec} [{split}] with {procs} process(es)"):
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
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return Prepared(out, meta)


def load_prepared(path: str | Path) -> Prepared:
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise MinigptError(f"{path}: not a prepared data folder (no meta.json); run `minigpt prepare` first")
    return Prepared(path, json.loads(meta_path.read_text()))


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
