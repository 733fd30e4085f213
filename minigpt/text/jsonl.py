"""JSON Lines read one line at a time, so that a bad line is reported with its file and line number: what a user
needs to fix it (`datasets` reports a parse error without the line)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..common import MinigptError


def read_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each non-empty line; `where` is "file:line" for error messages."""
    path = Path(path)
    if not path.is_file():
        raise MinigptError(f"{path}: no such file")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MinigptError(f"{path}:{n}: not UTF-8 (bad byte at column {e.start + 1}); convert the file, "
                                   "e.g. `iconv -t UTF-8`") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinigptError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); fix that line") from None
            if not isinstance(record, dict):
                raise MinigptError(f"{path}:{n}: expected a JSON object per line")
            yield f"{path}:{n}", record
