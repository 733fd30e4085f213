"""Text sources: what `--data` names, resolved to train and val documents through `datasets`.

A source is a built-in corpus (`pydocs`, see corpora/), a text file, a folder of .txt/.md files, a
.jsonl/.json/.parquet/.csv file with a `text` column, or a Hub dataset id (online only). `open_source(spec)`
refuses what cannot work with one line naming the problem; `TextSource.dataset(split)` gives a `datasets.Dataset`
with a `text` column and `documents(split)` the plain texts (for tokenizer training). A spec that looks like a
path (a file suffix, an existing parent folder, more than one `/`) is never sent to the Hub: it is a local path,
and missing is "no such file". A .jsonl file is checked line by line first, so a bad line (not UTF-8, not JSON,
no string "text") is reported with its line number; other row files get their "text" column's type checked.

Splits: a text file is cut near 90% of its bytes (nanoGPT's 90/10 split): at the first line break after that
point, else the last one before it, when one lies within 1% of the text; else after a space there; else at
the character at 90% (a book on one line still splits 90/10). A folder is cut the same way as one text: its
files in the order of a hash of their path inside the folder, the files before the cut train and those after
it val, and the one file the cut falls in split at a line break near it (so val holds ~10% of the bytes
however few or uneven the files). Row datasets use their own validation split when they have one, else a
seeded 5% split; the built-in corpora split by module. The cut depends only on the text, so a split is the
same on every run. `TextSource.key` names prepared data: a file's or folder's name plus a hash of its
resolved path (a/notes.txt, b/notes.txt and notes.csv never share shards), the name alone for the others.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..common import MinigptError, minigpt_home
from . import corpora
from .jsonl import read_jsonl

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
ROW_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
VAL_FRACTION = 0.1
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


def _split_rows(data, split: str):
    """The train or val part of `data`'s rows (lines of a file, or whole files) taken as one text cut near 90%
    of its bytes (see the module docstring); the row the cut falls in is split in two. Memory-flat."""
    import numpy as np
    import pyarrow.compute as pc

    chunks = [c for c in data.data.column("text").chunks if len(c)]
    total = sum(pc.sum(pc.binary_length(c)).as_py() for c in chunks)
    target, k, start = int(total * (1 - VAL_FRACTION)), 0, 0
    for chunk in chunks:  # find row k, the one holding byte `target`, and its first byte `start`
        ends = start + np.cumsum(pc.binary_length(chunk).to_numpy(zero_copy_only=False), dtype=np.int64)
        if ends[-1] > target:
            i = int(np.searchsorted(ends, target, side="right"))
            k, start = k + i, int(ends[i - 1]) if i else start
            break
        k, start = k + len(chunk), int(ends[-1])
    row = data[k]["text"].encode("utf-8")
    j = _cut(row, target - start, max(total // 100, 64), first=k == 0, last=k == len(data) - 1)
    ds = _datasets()

    def rows(a: int, b: int) -> list:
        return [data.select(range(a, b))] if a < b else []

    def piece(part: bytes) -> list:
        return [ds.Dataset.from_dict({"text": [part.decode()]})] if part else []

    parts = rows(0, k) + piece(row[:j]) if split == "train" else piece(row[j:]) + rows(k + 1, len(data))
    return ds.concatenate_datasets(parts) if parts else data.select([])


def _cut(row: bytes, at: int, slack: int, *, first: bool, last: bool) -> int:
    """Where to cut `row` near byte `at`: after a line break (the row's ends count as ones) within `slack`
    bytes after `at`, else before it, else after a space, else at the character holding `at`; never at the
    start of the first row or the end of the last while another cut leaves both parts of the text non-empty."""
    def ok(j: int | None) -> bool:
        return j is not None and (j > 0 or not first) and (j < len(row) or not last)

    nl = row.find(b"\n", at, at + slack)
    after = nl + 1 if nl >= 0 else len(row) if len(row) - at <= slack else None
    before = row.rfind(b"\n", max(0, at - slack), at) + 1 or (0 if at <= slack else None)
    space = re.compile(rb"\s").search(row, at, at + slack)
    char = at
    while char < len(row) and row[char] & 0xC0 == 0x80:  # a UTF-8 continuation byte: not a character start
        char += 1
    return next((j for j in (after, before, space and space.end(), char) if ok(j)), char)


@dataclass
class TextSource:
    """A named text source. `dataset(split)` gives a `datasets.Dataset` with a `text` column;
    `rows_are_documents` is False when rows are lines of one continuous text (a .txt file), True when each row
    is a document. `key` (the name unless open_source gives one) names its prepared data."""

    spec: str
    name: str
    fingerprint: str
    kind: str  # "corpus" | "file" | "folder" | "rows" | "hub"
    path: Path | None = None
    files: tuple[Path, ...] = ()
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def newline_note(self) -> str | None:
        """A note when a text file holds a carriage return: `datasets` reads text files with universal newlines,
        so "\\r\\n" and a lone "\\r" reach the tokenizer and the model as "\\n" (bits per byte count that text)."""
        for f in (self.path,) if self.kind == "file" else self.files if self.kind == "folder" else ():
            with open(f, "rb") as fh:
                if any(b"\r" in chunk for chunk in iter(lambda: fh.read(1 << 24), b"")):
                    return (f"note: {f} has Windows (\\r\\n) or old Mac (\\r) line endings; they are read as \\n "
                            "(as `datasets` reads text files), and the bits per byte count that text")
        return None

    @property
    def rows_are_documents(self) -> bool:
        return self.kind != "file"

    def dataset(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(split)
        ds = _datasets()
        if self.kind == "corpus":
            return ds.Dataset.from_dict({"text": [t for _, t in corpora.documents(self.spec, split)]})
        if self.kind == "file":
            return _split_rows(ds.load_dataset("text", data_files=str(self.path), keep_linebreaks=True,
                                                split="train", cache_dir=_cache_dir()), split)
        if self.kind == "folder":
            files = sorted(self.files, key=lambda f: hashlib.sha256(f.relative_to(self.path).as_posix().encode())
                           .hexdigest())
            return _split_rows(ds.load_dataset("text", data_files=[str(f) for f in files], sample_by="document",
                                               split="train", cache_dir=_cache_dir()), split)
        return self._row_split(split)

    def rows(self) -> tuple[Any, Any | None]:
        """(train, validation or None) `datasets.Dataset`s of a row file or Hub dataset, with every column: the
        "train" split (else the first), and "validation", "val" or "test" when the source has one."""
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
        val_name = next((s for s in ("validation", "val", "test") if s in loaded), None)
        train_name = "train" if "train" in loaded else next((s for s in loaded if s != val_name), val_name)
        return loaded[train_name], (loaded[val_name] if val_name not in (None, train_name) else None)

    def _row_split(self, split: str):
        if self.kind == "rows" and self.path.suffix.lower() == ".jsonl":
            check_jsonl_text(self.path, self.fingerprint)
        train, val = self.rows()
        for part in (train, val) if val is not None else (train,):
            self._check_text_column(part)
        if val is None:
            if len(train) < 2:
                raise MinigptError(f"--data {self.spec}: needs at least 2 rows to hold some out for validation")
            parts = train.train_test_split(test_size=max(1, int(0.05 * len(train))), seed=0)
            train, val = parts["train"], parts["test"]
        chosen = train if split == "train" else val
        return chosen.select_columns(["text"])

    def _check_text_column(self, data) -> None:
        """A string "text" column without nulls, checked from the Arrow schema and null count (no scan)."""
        if "text" not in data.column_names:
            raise MinigptError(f"--data {self.spec}: no 'text' column (columns: {', '.join(data.column_names)}); "
                               "rename the field holding the text to 'text'")
        dtype = getattr(data.features["text"], "dtype", type(data.features["text"]).__name__)
        if dtype not in ("string", "large_string"):
            raise MinigptError(f"--data {self.spec}: the 'text' column holds {dtype}, not strings; give each row "
                               "its text as a string")
        nulls = data.data.column("text").null_count
        if nulls:
            raise MinigptError(f"--data {self.spec}: {nulls} row(s) have no text ('text' is null or missing); drop "
                               "them or give them a string")

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


_CHECKED: set[str] = set()  # fingerprints of .jsonl files already checked in this process


def check_jsonl_text(path: Path, fingerprint: str) -> None:
    """Every line of a .jsonl text source: UTF-8, a JSON object, a string "text"; else one line naming the line."""
    if fingerprint in _CHECKED:
        return
    for where, row in read_jsonl(path):
        n = int(where.rsplit(":", 1)[1])
        if n == 1 and "text" not in row:
            raise MinigptError(f"--data {path}: no 'text' column (columns: {', '.join(row)}); rename the field "
                               "holding the text to 'text'")
        if not isinstance(row.get("text"), str):
            found = ("missing" if "text" not in row else "null" if row["text"] is None
                     else type(row["text"]).__name__)
            raise MinigptError(f"{path}:{n}: 'text' is {found}, not a string; give every row its text as a string")
    _CHECKED.add(fingerprint)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:60] or "data"


def _path_key(path: Path) -> str:
    """A local file's or folder's key: its name (suffix kept) and a hash of its resolved path."""
    where = path.resolve()
    return f"{_slug(where.name)}-{hashlib.sha256(str(where).encode()).hexdigest()[:8]}"


def open_source(spec: str = "pydocs") -> TextSource:
    """Resolve `--data SPEC` to a TextSource, refusing what cannot work with a one-line reason."""
    if spec in corpora.CORPORA:
        return TextSource(spec, spec, corpora.fingerprint(spec), "corpus")
    path = Path(spec).expanduser()
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES))
        if not files:
            raise MinigptError(f"--data {spec}: the folder has no {'/'.join(TEXT_SUFFIXES)} files")
        for f in files:
            check_text_file(f)
        stamp = ";".join(f"{f.relative_to(path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        fp = hashlib.sha256(stamp.encode()).hexdigest()
        if len(files) == 1:  # one file: read and split exactly like that text file (its lines are the rows)
            return TextSource(spec, _slug(path.resolve().name), fp, "file", files[0], files, _path_key(path))
        return TextSource(spec, _slug(path.resolve().name), fp, "folder", path, files, _path_key(path))
    if path.is_file():
        stat = path.stat()
        fp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if path.suffix.lower() in ROW_FORMATS:
            if stat.st_size == 0:
                raise MinigptError(f"{path}: the file is empty")
            return TextSource(spec, _slug(path.stem), fp, "rows", path, key=_path_key(path))
        check_text_file(path)
        return TextSource(spec, _slug(path.stem), fp, "file", path, key=_path_key(path))
    if looks_like_path(spec):
        raise MinigptError(f"--data {spec}: no such file or folder")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise MinigptError(f"--data {spec}: not a file, folder, built-in corpus ({', '.join(corpora.CORPORA)}) or a Hub dataset id")
    return TextSource(spec, _slug(spec.replace("/", "--")), f"hub:{spec}", "hub")


PATH_SUFFIXES = TEXT_SUFFIXES + tuple(ROW_FORMATS) + (".gz", ".zst", ".bz2", ".xz", ".arrow", ".tsv")


def looks_like_path(spec: str) -> bool:
    """A --data value that names a local path even though nothing is there (so it is never sent to the Hub): a
    file suffix (corp/typo.txt), a parent folder that exists (corp/typo), or more than `owner/name`."""
    parts = spec.replace(os.sep, "/").split("/")
    if spec.startswith((".", "~", "/")) or Path(spec).suffix.lower() in PATH_SUFFIXES or len(parts) > 2:
        return True
    return len(parts) == 2 and Path(parts[0]).expanduser().is_dir()
